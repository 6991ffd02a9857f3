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
    /// Per generated token, its own log-probability (empty unless logprobs were asked for).
    public var tokenLogprobs: [Float]
    public var timings: Timings

    public init(
        promptTokens: [Int32], tokens: [Int32], text: String, finishReason: FinishReason, logprobs: [[TokenLogprob]],
        tokenLogprobs: [Float] = [], timings: Timings
    ) {
        self.promptTokens = promptTokens
        self.tokens = tokens
        self.text = text
        self.finishReason = finishReason
        self.logprobs = logprobs
        self.tokenLogprobs = tokenLogprobs
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
    /// Whose fault it is, which decides what a server answers (400, 503, 500).
    public enum Kind: Sendable, Equatable {
        /// The request itself: a bad field, a prompt too long (HTTP 400).
        case invalidRequest
        /// The engine is at its queue limit: try again later (HTTP 503).
        case queueFull
        /// The engine is draining or shut down and admits nothing new (HTTP 503).
        case unavailable
        /// The engine failed (a worker died or hung): every request fails (HTTP 500).
        case engineFailed
    }

    public var description: String
    public var kind: Kind
    /// The worker rank that failed, when one did.
    public var rank: Int?

    public init(_ description: String, kind: Kind = .invalidRequest, rank: Int? = nil) {
        self.description = description
        self.kind = kind
        self.rank = rank
    }
}
