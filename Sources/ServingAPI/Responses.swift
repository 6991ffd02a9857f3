public import ExecutorCore
import Foundation

/// The OpenAI API's answer bodies, as its clients parse them (snake_case keys, `object`
/// names, `usage` in every whole answer).
public enum OpenAI {
    public struct Usage: Encodable, Sendable, Equatable {
        public var prompt_tokens: Int
        public var completion_tokens: Int
        public var total_tokens: Int
        public init(prompt: Int, completion: Int) {
            prompt_tokens = prompt
            completion_tokens = completion
            total_tokens = prompt + completion
        }
    }

    // MARK: Completions

    /// Completions' log-probabilities: per token its text, its own log-probability, the
    /// best alternatives by text, and where it starts in the choice's text.
    public struct CompletionLogprobs: Encodable, Sendable {
        public var tokens: [String] = []
        public var token_logprobs: [Float?] = []
        public var top_logprobs: [[String: Float]?] = []
        public var text_offset: [Int] = []
        public init() {}
    }

    public struct CompletionChoice: Encodable, Sendable {
        public var index: Int
        public var text: String
        public var logprobs: CompletionLogprobs?
        public var finish_reason: String?
        public init(index: Int, text: String, logprobs: CompletionLogprobs?, finish_reason: String?) {
            self.index = index
            self.text = text
            self.logprobs = logprobs
            self.finish_reason = finish_reason
        }

        public func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(index, forKey: .index)
            try c.encode(text, forKey: .text)
            try c.encode(logprobs, forKey: .logprobs)  // null, not absent, as OpenAI sends it
            try c.encode(finish_reason, forKey: .finish_reason)
        }

        enum CodingKeys: String, CodingKey { case index, text, logprobs, finish_reason }
    }

    /// A whole answer (`object: "text_completion"`) or, streaming, one chunk of it.
    public struct Completion: Encodable, Sendable {
        public var id: String
        public var object = "text_completion"
        public var created: Int
        public var model: String
        public var choices: [CompletionChoice]
        public var usage: Usage?
        public init(id: String, created: Int, model: String, choices: [CompletionChoice], usage: Usage?) {
            self.id = id
            self.created = created
            self.model = model
            self.choices = choices
            self.usage = usage
        }
    }

    // MARK: Chat

    public struct TopLogprob: Encodable, Sendable {
        public var token: String
        public var logprob: Float
        public var bytes: [UInt8]
        public init(token: String, logprob: Float, bytes: [UInt8]) {
            self.token = token
            self.logprob = logprob
            self.bytes = bytes
        }
    }

    public struct ChatTokenLogprob: Encodable, Sendable {
        public var token: String
        public var logprob: Float
        public var bytes: [UInt8]
        public var top_logprobs: [TopLogprob]
        public init(token: String, logprob: Float, bytes: [UInt8], top_logprobs: [TopLogprob]) {
            self.token = token
            self.logprob = logprob
            self.bytes = bytes
            self.top_logprobs = top_logprobs
        }
    }

    public struct ChatLogprobs: Encodable, Sendable {
        public var content: [ChatTokenLogprob]
        public init(content: [ChatTokenLogprob]) { self.content = content }
    }

    public struct ChatMessageBody: Encodable, Sendable {
        public var role: String
        public var content: String
        public init(role: String = "assistant", content: String) {
            self.role = role
            self.content = content
        }
    }

    public struct ChatChoice: Encodable, Sendable {
        public var index: Int
        public var message: ChatMessageBody
        public var logprobs: ChatLogprobs?
        public var finish_reason: String

        public init(index: Int, message: ChatMessageBody, logprobs: ChatLogprobs?, finish_reason: String) {
            self.index = index
            self.message = message
            self.logprobs = logprobs
            self.finish_reason = finish_reason
        }

        public func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(index, forKey: .index)
            try c.encode(message, forKey: .message)
            try c.encode(logprobs, forKey: .logprobs)
            try c.encode(finish_reason, forKey: .finish_reason)
        }

        enum CodingKeys: String, CodingKey { case index, message, logprobs, finish_reason }
    }

    public struct ChatCompletion: Encodable, Sendable {
        public var id: String
        public var object = "chat.completion"
        public var created: Int
        public var model: String
        public var choices: [ChatChoice]
        public var usage: Usage
        public init(id: String, created: Int, model: String, choices: [ChatChoice], usage: Usage) {
            self.id = id
            self.created = created
            self.model = model
            self.choices = choices
            self.usage = usage
        }
    }

    public struct ChatDelta: Encodable, Sendable {
        public var role: String?
        public var content: String?
        public init(role: String? = nil, content: String? = nil) {
            self.role = role
            self.content = content
        }
    }

    public struct ChatChunkChoice: Encodable, Sendable {
        public var index: Int
        public var delta: ChatDelta
        public var logprobs: ChatLogprobs?
        public var finish_reason: String?

        public init(index: Int, delta: ChatDelta, logprobs: ChatLogprobs?, finish_reason: String?) {
            self.index = index
            self.delta = delta
            self.logprobs = logprobs
            self.finish_reason = finish_reason
        }

        public func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(index, forKey: .index)
            try c.encode(delta, forKey: .delta)
            try c.encode(logprobs, forKey: .logprobs)
            try c.encode(finish_reason, forKey: .finish_reason)
        }

        enum CodingKeys: String, CodingKey { case index, delta, logprobs, finish_reason }
    }

    /// One streamed chunk (`object: "chat.completion.chunk"`).
    public struct ChatChunk: Encodable, Sendable {
        public var id: String
        public var object = "chat.completion.chunk"
        public var created: Int
        public var model: String
        public var choices: [ChatChunkChoice]
        public var usage: Usage?
        public init(id: String, created: Int, model: String, choices: [ChatChunkChoice], usage: Usage? = nil) {
            self.id = id
            self.created = created
            self.model = model
            self.choices = choices
            self.usage = usage
        }
    }

    // MARK: Models, tokenize, errors

    public struct Model: Encodable, Sendable {
        public var id: String
        public var object = "model"
        public var created: Int
        public var owned_by = "cohort"
        public var max_model_len: Int
        public init(id: String, created: Int, max_model_len: Int) {
            self.id = id
            self.created = created
            self.max_model_len = max_model_len
        }
    }

    public struct ModelList: Encodable, Sendable {
        public var object = "list"
        public var data: [Model]
        public init(data: [Model]) { self.data = data }
    }

    /// `{"error": {"message", "type", "param", "code"}}`, with nulls present.
    public struct ErrorBody: Encodable, Sendable {
        public struct Detail: Encodable, Sendable {
            public var message: String
            public var type: String
            public var param: String?
            public var code: Int?

            public func encode(to encoder: any Encoder) throws {
                var c = encoder.container(keyedBy: CodingKeys.self)
                try c.encode(message, forKey: .message)
                try c.encode(type, forKey: .type)
                try c.encode(param, forKey: .param)
                try c.encode(code, forKey: .code)
            }

            enum CodingKeys: String, CodingKey { case message, type, param, code }
        }

        public var error: Detail

        public init(_ error: RequestError) {
            self.error = Detail(message: error.message, type: error.type, param: error.field, code: error.status)
        }
    }

    /// The finish reason on the wire: OpenAI's `stop` and `length`, and, as vLLM does,
    /// `abort`; `kv_cache_full` is Cohort's own (the request's share of the KV cache, not
    /// its `max_tokens` or the model's context, ended it).
    public static func finishReason(_ reason: FinishReason) -> String { reason.rawValue }

    /// A log-probability JSON can carry: −∞ (and NaN) become −9999, as vLLM sends them.
    public static func finite(_ logprob: Float) -> Float { logprob.isFinite ? logprob : -9999 }

    /// Compact JSON, as one SSE `data:` line or one answer. Every float it is given is
    /// finite (`finite`); should encoding fail all the same, the text is an error body.
    public static func json(_ value: some Encodable) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes]
        guard let data = try? encoder.encode(value) else {
            return #"{"error": {"message": "the answer could not be encoded as JSON", "type": "InternalServerError", "param": null, "code": 500}}"#
        }
        return String(decoding: data, as: UTF8.self)
    }
}
