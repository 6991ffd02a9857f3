import Engine
import Executor
import ExecutorCore
import Foundation
import Hummingbird
import ModelRunner
import NIOCore
import ServingAPI

/// `POST /v1/completions` and `POST /v1/chat/completions`: whole answers and streams.
extension OpenAIServer {
    func generate(_ request: Request, endpoint: Endpoint) async -> Response {
        guard gate.enter() else {
            return error(RequestError("the server is shutting down: running requests finish, new ones are refused", status: 503, type: "ServiceUnavailableError"))
        }
        var streaming = false
        defer { if !streaming { gate.leave() } }

        var request = request
        let bytes: ByteBuffer
        switch await body(of: &request) {
        case let .failure(error): return self.error(error)
        case let .success(body): bytes = body
        }
        let resolved: ResolvedRequest
        do {
            resolved = try InferenceRequest.decode(bytes.readableBytesView, endpoint: endpoint)
                .resolve(defaults: .openAI(for: endpoint), contextLimit: engine.contextLimit, models: configuration.modelNames)
        } catch {
            return self.error(error)
        }
        var prompts: [[Int32]] = []
        for (i, prompt) in resolved.prompts.enumerated() {
            do {
                prompts.append(try engine.tokens(for: prompt))
            } catch {
                let field = endpoint == .chatCompletions ? "messages" : resolved.prompts.count > 1 ? "prompt[\(i)]" : "prompt"
                var failure = Self.requestError(error)
                failure.field = failure.status == 400 ? field : nil
                return self.error(failure)
            }
        }
        let job: GenerationJob
        do {
            job = try await GenerationJob(engine: engine, request: resolved, prompts: prompts)
        } catch {
            var failure = Self.requestError(error)
            if failure.status == 400 { failure.field = endpoint == .chatCompletions ? "messages" : "prompt" }
            return self.error(failure)
        }
        let answer = Answer(
            id: (endpoint == .chatCompletions ? "chatcmpl-" : "cmpl-") + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased(),
            created: Int(Date().timeIntervalSince1970), model: configuration.modelNames[0], endpoint: endpoint, request: resolved,
            tokenizer: engine.tokenizer, prompts: prompts)

        if resolved.stream {
            streaming = true
            // Leaves the gate and aborts the job when the body is done with, written or not
            // (a client gone before the head was written never runs the body).
            let cleanup = StreamCleanup(job: job, gate: gate)
            return Response(
                status: .ok,
                headers: [.contentType: "text/event-stream", .cacheControl: "no-cache", .connection: "close"],
                body: ResponseBody { [request] writer in
                    withExtendedLifetime(cleanup) {}
                    do {
                        try await request.body.consumeWithInboundCloseHandler { _ in
                            try await answer.stream(job, to: &writer)
                        } onInboundClosed: {
                            job.abort()
                        }
                    } catch {
                        job.abort()  // the client went away mid-stream: free its blocks
                        throw error
                    }
                    try await writer.finish(nil)
                })
        }

        let results: [Result<GenerationResult, GenerationError>]
        do {
            results = try await request.body.consumeWithInboundCloseHandler { _ in await job.results() } onInboundClosed: { job.abort() }
        } catch {
            job.abort()
            return self.error(RequestError("the request ended early: \(error)", status: 500, type: "InternalServerError"))
        }
        var done: [GenerationResult] = []
        for result in results {
            switch result {
            case let .success(r): done.append(r)
            case let .failure(e): return self.error(Self.requestError(e))
            }
        }
        // The inbound-close watch ends the connection after the answer: say so.
        var response = endpoint == .chatCompletions ? json(answer.chatCompletion(done)) : json(answer.completion(done))
        response.headers[.connection] = "close"
        return response
    }
}

/// Ends a streamed request's part in the server when its response body is released: the
/// job is aborted (harmless once it finished) and the drain gate counts it out.
final class StreamCleanup: Sendable {
    let job: GenerationJob
    let gate: DrainGate
    init(job: GenerationJob, gate: DrainGate) {
        self.job = job
        self.gate = gate
    }

    deinit {
        job.abort()
        gate.leave()
    }
}

/// Builds one request's answer bodies: whole, or chunk by chunk.
struct Answer: Sendable {
    let id: String
    let created: Int
    let model: String
    let endpoint: Endpoint
    let request: ResolvedRequest
    let tokenizer: Tokenizer
    let prompts: [[Int32]]

    var isChat: Bool { endpoint == .chatCompletions }

    func promptIndex(ofChoice choice: Int) -> Int { choice / request.n }

    func usage(completionTokens: Int) -> OpenAI.Usage {
        OpenAI.Usage(prompt: prompts.map(\.count).reduce(0, +), completion: completionTokens)
    }

    /// A prompt's text for `echo`.
    func promptText(_ p: Int) -> String {
        if case let .raw(text) = request.prompts[p] { return text }
        return tokenizer.decode(prompts[p], renderSpecial: true)
    }

    func piece(_ token: Int32) -> (String, [UInt8]) {
        let bytes = tokenizer.bytes(of: token, renderSpecial: true)
        return (String(decoding: bytes, as: UTF8.self), bytes)
    }

    // MARK: Whole answers

    func completion(_ results: [GenerationResult]) -> OpenAI.Completion {
        let choices = results.enumerated().map { i, r in
            let prefix = request.echo ? promptText(promptIndex(ofChoice: i)) : ""
            return OpenAI.CompletionChoice(
                index: i, text: prefix + r.text,
                logprobs: completionLogprobs(tokens: r.tokens, own: r.tokenLogprobs, top: r.logprobs, offset: prefix.unicodeScalars.count),
                finish_reason: OpenAI.finishReason(r.finishReason))
        }
        return OpenAI.Completion(
            id: id, created: created, model: model, choices: choices, usage: usage(completionTokens: results.map(\.tokens.count).reduce(0, +)))
    }

    func chatCompletion(_ results: [GenerationResult]) -> OpenAI.ChatCompletion {
        let choices = results.enumerated().map { i, r in
            OpenAI.ChatChoice(
                index: i, message: .init(content: r.text), logprobs: chatLogprobs(tokens: r.tokens, own: r.tokenLogprobs, top: r.logprobs),
                finish_reason: OpenAI.finishReason(r.finishReason))
        }
        return OpenAI.ChatCompletion(
            id: id, created: created, model: model, choices: choices, usage: usage(completionTokens: results.map(\.tokens.count).reduce(0, +)))
    }

    func completionLogprobs(tokens: [Int32], own: [Float], top: [[TokenLogprob]], offset: Int) -> OpenAI.CompletionLogprobs? {
        guard let k = request.logprobs else { return nil }
        var out = OpenAI.CompletionLogprobs()
        var position = offset
        for (i, token) in tokens.enumerated() {
            let text = piece(token).0
            out.tokens.append(text)
            out.token_logprobs.append(i < own.count ? OpenAI.finite(own[i]) : nil)
            var alternatives: [String: Float] = [:]
            if i < top.count { for alt in top[i].prefix(k) { alternatives[piece(alt.token).0] = OpenAI.finite(alt.logprob) } }
            out.top_logprobs.append(alternatives)
            out.text_offset.append(position)
            position += text.unicodeScalars.count  // Python's string offsets count code points
        }
        return out
    }

    func chatLogprobs(tokens: [Int32], own: [Float], top: [[TokenLogprob]]) -> OpenAI.ChatLogprobs? {
        guard let k = request.logprobs else { return nil }
        return OpenAI.ChatLogprobs(content: tokens.enumerated().map { i, token in
            let (text, bytes) = piece(token)
            let alternatives: [OpenAI.TopLogprob] = i < top.count ? top[i].prefix(k).map { alt in
                let (t, b) = piece(alt.token)
                return OpenAI.TopLogprob(token: t, logprob: OpenAI.finite(alt.logprob), bytes: b)
            } : []
            return OpenAI.ChatTokenLogprob(token: text, logprob: OpenAI.finite(i < own.count ? own[i] : 0), bytes: bytes, top_logprobs: alternatives)
        })
    }

    // MARK: Streams

    /// Writes server-sent events as the engine produces them, then `data: [DONE]`.
    func stream(_ job: GenerationJob, to writer: inout any ResponseBodyWriter) async throws {
        var completionTokens = 0
        var failure: GenerationError?
        // Where each choice's next text starts (completions' `text_offset`, in code points).
        var offsets = (0..<job.ids.count).map { request.echo ? promptText(promptIndex(ofChoice: $0)).unicodeScalars.count : 0 }
        if isChat {
            // The role first, for every choice.
            for choice in 0..<job.ids.count {
                try await send(chunk([.init(index: choice, delta: .init(role: "assistant", content: ""), logprobs: nil, finish_reason: nil)]), to: &writer)
            }
        } else if request.echo {
            for choice in 0..<job.ids.count {
                try await send(OpenAI.Completion(
                    id: id, created: created, model: model,
                    choices: [.init(index: choice, text: promptText(promptIndex(ofChoice: choice)), logprobs: nil, finish_reason: nil)], usage: nil), to: &writer)
            }
        }
        for await event in job.events {
            switch event {
            case let .delta(choice, delta):
                completionTokens += delta.tokens.count
                if isChat {
                    try await send(chunk([.init(
                        index: choice, delta: .init(content: delta.text),
                        logprobs: chatLogprobs(tokens: delta.tokens, own: delta.tokenLogprobs, top: delta.logprobs), finish_reason: nil)]), to: &writer)
                } else {
                    try await send(OpenAI.Completion(
                        id: id, created: created, model: model,
                        choices: [.init(
                            index: choice, text: delta.text,
                            logprobs: completionLogprobs(tokens: delta.tokens, own: delta.tokenLogprobs, top: delta.logprobs, offset: offsets[choice]),
                            finish_reason: nil)], usage: nil), to: &writer)
                    offsets[choice] += delta.text.unicodeScalars.count
                }
            case let .done(choice, .success(result)):
                let reason = OpenAI.finishReason(result.finishReason)
                if isChat {
                    try await send(chunk([.init(index: choice, delta: .init(), logprobs: nil, finish_reason: reason)]), to: &writer)
                } else {
                    try await send(OpenAI.Completion(
                        id: id, created: created, model: model, choices: [.init(index: choice, text: "", logprobs: nil, finish_reason: reason)],
                        usage: nil), to: &writer)
                }
            case let .done(_, .failure(error)):
                if failure == nil {
                    failure = error
                    try await send(OpenAI.ErrorBody(OpenAIServer.requestError(error)), to: &writer)
                }
                job.abort()
            }
        }
        if request.includeUsage && failure == nil {
            let usage = usage(completionTokens: completionTokens)
            if isChat {
                try await send(OpenAI.ChatChunk(id: id, created: created, model: model, choices: [], usage: usage), to: &writer)
            } else {
                try await send(OpenAI.Completion(id: id, created: created, model: model, choices: [], usage: usage), to: &writer)
            }
        }
        try await writer.write(ByteBuffer(string: "data: [DONE]\n\n"))
    }

    func chunk(_ choices: [OpenAI.ChatChunkChoice]) -> OpenAI.ChatChunk {
        OpenAI.ChatChunk(id: id, created: created, model: model, choices: choices)
    }

    func send(_ value: some Encodable, to writer: inout any ResponseBodyWriter) async throws {
        try await writer.write(ByteBuffer(string: "data: " + OpenAI.json(value) + "\n\n"))
    }
}
