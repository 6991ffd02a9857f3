public import ExecutorCore
public import Executor
import Foundation

/// A checked request: the prompts to run, the sampling for each, and how to answer.
public struct ResolvedRequest: Sendable, Equatable {
    /// One per prompt (a completions request may list several).
    public var prompts: [Prompt]
    /// Sampling for every choice; choice `i` of a seeded request uses `seed + i`.
    public var parameters: SamplingParameters
    /// Choices per prompt.
    public var n: Int
    public var stream: Bool
    /// Streaming: a last chunk with the usage.
    public var includeUsage: Bool
    /// Completions: the prompt's text before the completion.
    public var echo: Bool
    /// Alternatives to report per token; nil when log-probabilities were not asked for.
    public var logprobs: Int?

    /// Sampling for choice `index`: its own seed when the request has one.
    public func parameters(choice index: Int) -> SamplingParameters {
        var p = parameters
        if let seed = p.seed { p.seed = seed &+ UInt64(index) }
        return p
    }
}

/// What a request gets when it does not say: OpenAI's defaults over HTTP, the command's
/// flags for `--prompts-file`.
public struct RequestDefaults: Sendable {
    public var parameters: SamplingParameters
    /// `max_tokens` when absent: nil means up to the context limit (OpenAI's chat default).
    public var maxTokens: Int?

    public init(parameters: SamplingParameters, maxTokens: Int?) {
        self.parameters = parameters
        self.maxTokens = maxTokens
    }

    /// OpenAI's: temperature 1, no top-k, top-p or min-p filtering; 16 tokens for completions.
    public static func openAI(for endpoint: Endpoint) -> RequestDefaults {
        RequestDefaults(
            parameters: SamplingParameters(temperature: 1, topK: 0, topP: 1, minP: 0),
            maxTokens: endpoint == .completions ? 16 : nil)
    }
}

extension InferenceRequest {
    /// Most prompts × choices one request may start.
    public static let maxChoices = 256

    /// Checks the values and builds what the engine runs.
    /// - Parameters:
    ///   - defaults: values for fields the request leaves out.
    ///   - contextLimit: the most tokens a request may grow to (stands in for an absent `max_tokens`).
    ///   - models: the names this server answers to; a request naming another model is refused (404).
    /// - Throws: `RequestError` naming the field, the value and what is allowed.
    public func resolve(defaults: RequestDefaults, contextLimit: Int, models: [String]) throws(RequestError) -> ResolvedRequest {
        if let model, !models.contains(model) {
            throw RequestError(
                "the model '\(model)' does not exist; this server serves \(models.map { "'\($0)'" }.joined(separator: ", "))",
                field: "model", status: 404, type: "NotFoundError")
        }
        var p = defaults.parameters
        if let maxTokens, let maxCompletionTokens, maxTokens != maxCompletionTokens {
            throw RequestError(
                "'max_tokens' (\(maxTokens)) and 'max_completion_tokens' (\(maxCompletionTokens)) disagree; give one", field: "max_tokens")
        }
        p.maxTokens = maxCompletionTokens ?? maxTokens ?? defaults.maxTokens ?? contextLimit
        p.temperature = temperature ?? p.temperature
        p.topP = topP ?? p.topP
        p.topK = topK ?? p.topK
        p.minP = minP ?? p.minP
        p.presencePenalty = presencePenalty ?? p.presencePenalty
        p.frequencyPenalty = frequencyPenalty ?? p.frequencyPenalty
        p.repetitionPenalty = repetitionPenalty ?? p.repetitionPenalty
        p.ignoreEndOfGeneration = ignoreEOS ?? p.ignoreEndOfGeneration
        if let stop { p.stopStrings = stop }
        if let seed {
            guard seed >= -1 else { throw .invalid("seed", expected: "an integer ≥ 0, or -1 for a random seed", found: "\(seed)") }
            p.seed = seed == -1 ? nil : UInt64(seed)
        }
        // Log-probabilities: the engine reports the chosen token's with at least one alternative.
        var reported: Int?
        switch endpoint {
        case .chatCompletions:
            if let topLogprobs {
                guard (0...20).contains(topLogprobs) else { throw .invalid("top_logprobs", expected: "an integer in 0…20", found: "\(topLogprobs)") }
                guard logprobs == 1 else { throw RequestError("'top_logprobs' needs \"logprobs\": true", field: "top_logprobs") }
            }
            if logprobs == 1 { reported = topLogprobs ?? 0 }
        case .completions, .promptsFile:
            if let logprobs {
                guard (0...20).contains(logprobs) else { throw .invalid("logprobs", expected: "an integer in 0…20", found: "\(logprobs)") }
                reported = endpoint == .promptsFile && logprobs == 0 ? nil : logprobs
            }
        }
        p.logprobs = reported.map { max(1, $0) } ?? 0
        do { try p.validate() } catch {
            let field = error.field.replacingOccurrences(of: "-", with: "_")
            throw .invalid(field, expected: error.allowed, found: error.value)
        }
        let n = self.n ?? 1
        guard n >= 1 && n <= Self.maxChoices else { throw .invalid("n", expected: "an integer in 1…\(Self.maxChoices)", found: "\(n)") }
        if includeUsage != nil && stream != true {
            throw RequestError("'stream_options' needs \"stream\": true", field: "stream_options")
        }

        let prompts = try self.prompts()
        guard prompts.count * n <= Self.maxChoices else {
            throw RequestError(
                "\(prompts.count) prompts × n = \(n) make \(prompts.count * n) completions; at most \(Self.maxChoices) per request", field: "n")
        }
        return ResolvedRequest(
            prompts: prompts, parameters: p, n: n, stream: stream ?? false, includeUsage: includeUsage ?? false, echo: echo ?? false,
            logprobs: reported)
    }

    private func prompts() throws(RequestError) -> [Prompt] {
        switch endpoint {
        case .completions:
            switch prompt {
            case nil: throw RequestError("'prompt' is required: a string, a list of strings or token ids", field: "prompt")
            case let .text(text)?: return [.raw(text)]
            case let .texts(texts)?: return texts.map { .raw($0) }
            case let .tokens(ids)?: return [.tokens(ids)]
            case let .tokenLists(lists)?:
                if let i = lists.firstIndex(where: \.isEmpty) {
                    throw .invalid("prompt[\(i)]", expected: "a non-empty list of token ids", found: "[]")
                }
                return lists.map { .tokens($0) }
            }
        case .chatCompletions:
            guard let messages else { throw RequestError(#"'messages' is required: a list of {"role", "content"} objects"#, field: "messages") }
            return [.messages(messages)]
        case .promptsFile:
            let given = [("prompt", prompt != nil), ("messages", messages != nil), ("prompt_tokens", promptTokens != nil)].filter(\.1).map(\.0)
            guard given.count == 1 else {
                throw RequestError(
                    "expected exactly one of 'prompt', 'messages' or 'prompt_tokens', found \(given.isEmpty ? "none" : given.joined(separator: ", "))")
            }
            if system != nil && prompt == nil { throw RequestError("'system' goes with 'prompt'; put a system message in 'messages'", field: "system") }
            if raw != nil && prompt == nil { throw RequestError("'raw' goes with 'prompt'", field: "raw") }
            if case let .text(text)? = prompt {
                if raw == true {
                    if system != nil { throw RequestError("'system' needs the chat template; it cannot be used with 'raw'", field: "system") }
                    return [.raw(text)]
                }
                return [.chat(user: text, system: system)]
            }
            if let messages { return [.messages(messages)] }
            return [.tokens(promptTokens ?? [])]
        }
    }
}
