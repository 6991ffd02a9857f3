import Executor
import ExecutorCore
import ModelRunner
import ServingAPI
import Testing

@Suite struct InferenceRequestTests {
    func decode(_ json: String, _ endpoint: Endpoint = .completions) throws(RequestError) -> InferenceRequest {
        try InferenceRequest.decode(Array(json.utf8), endpoint: endpoint)
    }

    func resolve(_ json: String, _ endpoint: Endpoint = .completions) throws(RequestError) -> ResolvedRequest {
        try decode(json, endpoint).resolve(defaults: .openAI(for: endpoint), contextLimit: 100, models: ["tiny"])
    }

    func message(_ json: String, _ endpoint: Endpoint = .completions) -> String? {
        do {
            _ = try resolve(json, endpoint)
            return nil
        } catch {
            return error.message
        }
    }

    @Test("0 and 1 are numbers, never booleans; a boolean field refuses 1")
    func numbersAreNumbers() throws {
        let r = try resolve(#"{"prompt": "hi", "temperature": 0, "top_p": 1, "min_p": 0, "seed": 1, "max_tokens": 1}"#)
        #expect(r.parameters.temperature == 0 && r.parameters.topP == 1 && r.parameters.minP == 0)
        #expect(r.parameters.seed == 1 && r.parameters.maxTokens == 1)
        #expect(message(#"{"prompt": "hi", "raw": 1}"#, .promptsFile) == "'raw' must be true or false, found 1")
        #expect(message(#"{"prompt": "hi", "echo": 0}"#) == "'echo' must be true or false, found 0")
    }

    @Test("an integer field refuses 2.5 and strings; a number field refuses strings and names the value")
    func integers() {
        #expect(message(#"{"prompt": "hi", "max_tokens": 2.5}"#) == "'max_tokens' must be an integer, found 2.5")
        #expect(message(#"{"prompt": "hi", "n": "2"}"#) == "'n' must be an integer, found \"2\"")
        #expect(message(#"{"prompt": "hi", "temperature": "hot"}"#) == "'temperature' must be a number, found \"hot\"")
        #expect(message(#"{"prompt": "hi", "temperature": 3e39}"#)?.hasPrefix("'temperature' must be a finite number") == true)
    }

    @Test("values out of range name the field, the value and what is allowed")
    func ranges() {
        #expect(message(#"{"prompt": "hi", "top_p": 2}"#) == "'top_p' must be a number in (0, 1], found 2.0")
        #expect(message(#"{"prompt": "hi", "n": 0}"#) == "'n' must be an integer in 1…256, found 0")
        #expect(message(#"{"prompt": "hi", "logprobs": 21}"#) == "'logprobs' must be an integer in 0…20, found 21")
        #expect(message(#"{"prompt": "hi", "seed": -2}"#) == "'seed' must be an integer ≥ 0, or -1 for a random seed, found -2")
        #expect(message(#"{"prompt": "hi", "max_tokens": 0}"#) == "'max_tokens' must be an integer ≥ 1, found 0")
        #expect(message(#"{"prompt": "hi", "stop": [""]}"#) == "'stop' must be non-empty strings, found \"\"")
        #expect(message(#"{"prompt": "hi", "stop": 3}"#) == "'stop' must be a string or a list of strings, found 3")
    }

    @Test("unknown fields are refused with the list of known ones; not JSON and not an object are named")
    func shapes() {
        #expect(message(#"{"prompt": "hi", "max_token": 3}"#)?.hasPrefix("unknown field 'max_token' for /v1/completions; expected some of echo") == true)
        #expect(message(#"{"messages": [], "echo": true}"#, .chatCompletions)?.hasPrefix("unknown field 'echo'") == true)
        #expect(message("nope")?.hasPrefix("expected a JSON object, found text that is not JSON") == true)
        #expect(message("[1, 2]") == "expected a JSON object, found [1, 2]")
    }

    @Test("prompt as text, texts, token ids or lists of them; n choices per prompt with their own seeds")
    func promptForms() throws {
        #expect(try resolve(#"{"prompt": "a"}"#).prompts == [.raw("a")])
        #expect(try resolve(#"{"prompt": ["a", "b"]}"#).prompts == [.raw("a"), .raw("b")])
        #expect(try resolve(#"{"prompt": [1, 2]}"#).prompts == [.tokens([1, 2])])
        #expect(try resolve(#"{"prompt": [[1], [2, 3]]}"#).prompts == [.tokens([1]), .tokens([2, 3])])
        #expect(message(#"{"prompt": [[1], []]}"#) == "'prompt[1]' must be a non-empty list of token ids, found []")
        #expect(message(#"{"prompt": {"a": 1}}"#)?.hasPrefix("'prompt' must be a string, a non-empty list of strings") == true)
        #expect(message(#"{"max_tokens": 3}"#)?.hasPrefix("'prompt' is required") == true)
        let r = try resolve(#"{"prompt": "a", "n": 3, "seed": 7}"#)
        #expect(r.n == 3 && (0..<3).map { r.parameters(choice: $0).seed } == [7, 8, 9])
        #expect(message(#"{"prompt": ["a", "b"], "n": 200}"#)?.hasPrefix("2 prompts × n = 200 make 400 completions") == true)
    }

    @Test("OpenAI's defaults over HTTP: temperature 1, no filters, 16 tokens for completions, up to the context for chat")
    func defaults() throws {
        let c = try resolve(#"{"prompt": "a"}"#)
        #expect(c.parameters.temperature == 1 && c.parameters.topK == 0 && c.parameters.topP == 1 && c.parameters.minP == 0)
        #expect(c.parameters.maxTokens == 16)
        let chat = try resolve(#"{"messages": [{"role": "user", "content": "hi"}]}"#, .chatCompletions)
        #expect(chat.parameters.maxTokens == 100 && chat.prompts == [.messages([ChatMessage(role: "user", content: "hi")])])
        #expect(try resolve(#"{"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 5}"#, .chatCompletions)
            .parameters.maxTokens == 5)
        #expect(message(#"{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "max_completion_tokens": 5}"#, .chatCompletions)?
            .hasPrefix("'max_tokens' (4) and 'max_completion_tokens' (5) disagree") == true)
    }

    @Test("chat messages: text parts join, roles are checked, logprobs is a boolean with top_logprobs")
    func chat() throws {
        let r = try resolve(
            #"{"messages": [{"role": "developer", "content": "be brief"}, {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}], "logprobs": true, "top_logprobs": 3}"#,
            .chatCompletions)
        #expect(r.prompts == [.messages([ChatMessage(role: "system", content: "be brief"), ChatMessage(role: "user", content: "ab")])])
        #expect(r.logprobs == 3 && r.parameters.logprobs == 3)
        #expect(try resolve(#"{"messages": [{"role": "user", "content": "a"}], "logprobs": true}"#, .chatCompletions).logprobs == 0)
        #expect(message(#"{"messages": [{"role": "user", "content": "a"}], "logprobs": 2}"#, .chatCompletions) == "'logprobs' must be true or false, found 2")
        #expect(message(#"{"messages": [{"role": "user", "content": "a"}], "top_logprobs": 2}"#, .chatCompletions) == "'top_logprobs' needs \"logprobs\": true")
        #expect(message(#"{"messages": [{"role": "wizard", "content": "a"}]}"#, .chatCompletions)
            == "'messages[0].role' must be one of system, user, assistant, tool, developer, found 'wizard'")
        #expect(message(#"{"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}"#, .chatCompletions)?
            .hasPrefix("'messages[0].content[0]' must be a text part") == true)
        #expect(message(#"{"messages": []}"#, .chatCompletions)?.hasPrefix("'messages' must be a non-empty list") == true)
    }

    @Test("an unknown model is a 404 naming the served ones; stream_options needs stream")
    func modelAndStream() {
        do {
            _ = try resolve(#"{"prompt": "a", "model": "gpt-4"}"#)
            Issue.record("expected an error")
        } catch {
            #expect(error.status == 404 && error.message == "the model 'gpt-4' does not exist; this server serves 'tiny'")
        }
        #expect(message(#"{"prompt": "a", "stream_options": {"include_usage": true}}"#) == "'stream_options' needs \"stream\": true")
        #expect((try? resolve(#"{"prompt": "a", "stream": true, "stream_options": {"include_usage": true}}"#))?.includeUsage == true)
    }

    @Test("prompts-file lines: prompt is a chat message unless raw; system only with prompt")
    func promptsFileLines() throws {
        func lines(_ json: String) throws(RequestError) -> ResolvedRequest {
            try decode(json, .promptsFile).resolve(
                defaults: RequestDefaults(parameters: SamplingParameters(maxTokens: 9), maxTokens: 9), contextLimit: 100, models: ["tiny"])
        }
        #expect(try lines(#"{"prompt": "hi", "system": "s"}"#).prompts == [.chat(user: "hi", system: "s")])
        #expect(try lines(#"{"prompt": "hi", "raw": true}"#).prompts == [.raw("hi")])
        #expect(try lines(#"{"prompt_tokens": [3, 4]}"#).prompts == [.tokens([3, 4])])
        #expect(try lines(#"{"prompt_tokens": [3]}"#).parameters.maxTokens == 9)
        #expect(throws: RequestError.self) { try lines(#"{"prompt": "hi", "raw": true, "system": "s"}"#) }
        #expect(throws: RequestError.self) { try lines(#"{"prompt": "hi", "stream": true}"#) }
    }
}
