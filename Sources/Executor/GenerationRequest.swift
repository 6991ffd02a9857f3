public import ExecutorCore
public import ModelRunner

/// What to generate from.
public enum Prompt: Sendable, Equatable {
    /// A user message, wrapped in the model's chat template (with an optional system message).
    case chat(user: String, system: String?)
    /// Text sent as is; special-token text such as `<|im_start|>` becomes that token.
    case raw(String)
    /// Token ids sent as is.
    case tokens([Int32])
    /// A conversation (system, user and assistant turns), wrapped in the chat template.
    case messages([ChatMessage])

    /// Bytes of text the prompt carries (the chat template adds more).
    public var textBytes: Int {
        switch self {
        case let .chat(user, system): user.utf8.count + (system?.utf8.count ?? 0)
        case let .raw(text): text.utf8.count
        case .tokens: 0
        case let .messages(messages): messages.reduce(0) { $0 + $1.content.utf8.count }
        }
    }
}

/// The result of one request.
public struct GenerationResult: Sendable, Equatable {
    public var promptTokens: [Int32]
    /// Generated ids, including a final end-of-generation token when one was produced.
    public var tokens: [Int32]
    public var text: String
    public var finishReason: FinishReason
    /// Per generated token, the best alternatives (empty unless asked for).
    public var logprobs: [[TokenLogprob]]
    public var timings: Timings

    public init(
        promptTokens: [Int32], tokens: [Int32], text: String, finishReason: FinishReason, logprobs: [[TokenLogprob]], timings: Timings
    ) {
        self.promptTokens = promptTokens
        self.tokens = tokens
        self.text = text
        self.finishReason = finishReason
        self.logprobs = logprobs
        self.timings = timings
    }

    public struct Timings: Sendable, Equatable {
        public var loadSeconds: Double
        public var prefillSeconds: Double
        public var decodeSeconds: Double
        public var prefillTokens: Int
        /// Forward passes after the prefill (one per generated token but the first).
        public var decodeTokens: Int
        public var prefillTokensPerSecond: Double { prefillSeconds > 0 ? Double(prefillTokens) / prefillSeconds : 0 }
        public var decodeTokensPerSecond: Double { decodeSeconds > 0 ? Double(decodeTokens) / decodeSeconds : 0 }

        public init(loadSeconds: Double, prefillSeconds: Double, decodeSeconds: Double, prefillTokens: Int, decodeTokens: Int) {
            self.loadSeconds = loadSeconds
            self.prefillSeconds = prefillSeconds
            self.decodeSeconds = decodeSeconds
            self.prefillTokens = prefillTokens
            self.decodeTokens = decodeTokens
        }
    }
}

/// A request that cannot run; the message says what was expected and found.
public struct GenerationError: Error, Equatable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
