import ExecutorCore
import Executor
public import ModelRunner
import Foundation

/// Where a request came in: decides which fields it may hold and what `prompt` means.
public enum Endpoint: String, Sendable, Equatable {
    /// `POST /v1/completions`: `prompt` is text (or token ids) sent as is.
    case completions = "/v1/completions"
    /// `POST /v1/chat/completions`: `messages` through the model's chat template.
    case chatCompletions = "/v1/chat/completions"
    /// A line of `--prompts-file`: `prompt` is a user message for the chat template unless
    /// `"raw": true`; `messages` and `prompt_tokens` as well.
    case promptsFile = "--prompts-file"

    static let userInfoKey = CodingUserInfoKey(rawValue: "cohort.endpoint")!
}

/// One request, as every way in spells it: an OpenAI completions or chat body, or a line of
/// `--prompts-file`. Decoding checks each field's type and names the field and the value
/// found; `resolve` checks the values and turns the request into engine requests.
///
/// Numbers decode as numbers (`"temperature": 0` is 0, never `false`), an integer field
/// refuses `2.5` instead of truncating it, and an unknown field is an error that lists the
/// fields this endpoint takes (a misspelt `max_token` is not silently ignored).
public struct InferenceRequest: Sendable, Equatable {
    public var endpoint: Endpoint
    public var model: String?
    public var prompt: PromptInput?
    public var messages: [ChatMessage]?
    public var promptTokens: [Int32]?
    public var raw: Bool?
    public var system: String?
    public var maxTokens: Int?
    public var maxCompletionTokens: Int?
    public var temperature: Float?
    public var topP: Float?
    public var topK: Int?
    public var minP: Float?
    public var presencePenalty: Float?
    public var frequencyPenalty: Float?
    public var repetitionPenalty: Float?
    public var n: Int?
    public var stop: [String]?
    public var seed: Int64?
    /// Completions (and prompts files): how many alternatives per token. Chat: 0 or 1 from
    /// `"logprobs": false|true`, with the count in `topLogprobs`.
    public var logprobs: Int?
    public var topLogprobs: Int?
    public var echo: Bool?
    public var ignoreEOS: Bool?
    public var stream: Bool?
    public var includeUsage: Bool?
    public var user: String?

    /// `prompt` of a completions request.
    public enum PromptInput: Sendable, Equatable {
        case text(String)
        case texts([String])
        case tokens([Int32])
        case tokenLists([[Int32]])
    }

    public init(endpoint: Endpoint) { self.endpoint = endpoint }

    /// Decodes a JSON body (or one line of a prompts file).
    /// - Throws: `RequestError` naming the field, the value found and what is expected.
    public static func decode(_ data: some Collection<UInt8>, endpoint: Endpoint) throws(RequestError) -> InferenceRequest {
        let decoder = JSONDecoder()
        decoder.userInfo[Endpoint.userInfoKey] = endpoint
        do {
            return try decoder.decode(Body.self, from: Data(data)).request
        } catch let error as RequestError {
            throw error
        } catch let DecodingError.dataCorrupted(context) {
            let reason = (context.underlyingError as? NSError)?.userInfo[NSDebugDescriptionErrorKey] as? String ?? context.debugDescription
            throw RequestError("expected a JSON object, found text that is not JSON (\(reason))")
        } catch let DecodingError.typeMismatch(_, context) where context.codingPath.isEmpty {
            throw RequestError("expected a JSON object, found \(JSONValue.describe(data))")
        } catch {
            throw RequestError("expected a JSON object: \(error)")
        }
    }

    /// Fields each endpoint takes.
    static func fields(for endpoint: Endpoint) -> [String] {
        let sampling = [
            "max_tokens", "temperature", "top_p", "top_k", "min_p", "presence_penalty", "frequency_penalty",
            "repetition_penalty", "stop", "seed", "logprobs", "ignore_eos", "model", "user",
        ]
        switch endpoint {
        case .completions: return sampling + ["prompt", "n", "echo", "stream", "stream_options"]
        case .chatCompletions:
            return sampling + ["messages", "n", "max_completion_tokens", "top_logprobs", "stream", "stream_options"]
        case .promptsFile: return sampling + ["prompt", "raw", "system", "messages", "prompt_tokens", "n", "max_completion_tokens"]
        }
    }
}

/// A request the server or the CLI refuses: the message names the field, the value and what
/// is allowed. HTTP answers it with `status` and an OpenAI error body.
public struct RequestError: Error, Equatable, CustomStringConvertible, Sendable {
    public var message: String
    /// The field at fault (OpenAI's `param`), when one is.
    public var field: String?
    /// 400 for a bad request, 404 for an unknown model, 401, 503, 500.
    public var status: Int
    /// OpenAI's error `type`.
    public var type: String

    public init(_ message: String, field: String? = nil, status: Int = 400, type: String = "invalid_request_error") {
        self.message = message
        self.field = field
        self.status = status
        self.type = type
    }

    public var description: String { message }

    public static func invalid(_ name: String, expected: String, found: String) -> RequestError {
        RequestError("'\(name)' must be \(expected), found \(found)", field: name)
    }
}

// MARK: - Decoding

/// The body as decoded: one private type so `InferenceRequest` stays a plain value.
struct Body: Decodable {
    let request: InferenceRequest

    struct Key: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
        init(_ name: String) { stringValue = name }
    }

    init(from decoder: any Decoder) throws {
        let endpoint = decoder.userInfo[Endpoint.userInfoKey] as? Endpoint ?? .completions
        let c = try decoder.container(keyedBy: Key.self)
        let allowed = InferenceRequest.fields(for: endpoint)
        if let unknown = c.allKeys.map(\.stringValue).sorted().first(where: { !allowed.contains($0) }) {
            throw RequestError(
                "unknown field '\(unknown)' for \(endpoint.rawValue); expected some of \(allowed.sorted().joined(separator: ", "))",
                field: unknown)
        }
        var r = InferenceRequest(endpoint: endpoint)
        let fields = Fields(container: c)
        r.model = try fields.string("model")
        r.user = try fields.string("user")
        r.maxTokens = try fields.integer("max_tokens")
        r.maxCompletionTokens = try fields.integer("max_completion_tokens")
        r.temperature = try fields.number("temperature")
        r.topP = try fields.number("top_p")
        r.topK = try fields.integer("top_k")
        r.minP = try fields.number("min_p")
        r.presencePenalty = try fields.number("presence_penalty")
        r.frequencyPenalty = try fields.number("frequency_penalty")
        r.repetitionPenalty = try fields.number("repetition_penalty")
        r.n = try fields.integer("n")
        r.seed = try fields.integer("seed")
        r.echo = try fields.bool("echo")
        r.ignoreEOS = try fields.bool("ignore_eos")
        r.stream = try fields.bool("stream")
        r.raw = try fields.bool("raw")
        r.system = try fields.string("system")
        r.topLogprobs = try fields.integer("top_logprobs")
        if endpoint == .chatCompletions {
            r.logprobs = try fields.bool("logprobs").map { $0 ? 1 : 0 }
        } else {
            r.logprobs = try fields.integer("logprobs")
        }
        if c.contains(Key("stop")) {
            if let one = try? c.decode(String.self, forKey: Key("stop")) {
                r.stop = [one]
            } else if let many = try? c.decode([String].self, forKey: Key("stop")) {
                r.stop = many
            } else if try c.decodeNil(forKey: Key("stop")) {
                r.stop = nil
            } else {
                throw fields.mismatch("stop", expected: "a string or a list of strings")
            }
        }
        if c.contains(Key("stream_options")) {
            guard let options = try? c.decode([String: Bool].self, forKey: Key("stream_options")),
                  options.keys.allSatisfy({ $0 == "include_usage" })
            else { throw fields.mismatch("stream_options", expected: #"an object {"include_usage": true|false}"#) }
            r.includeUsage = options["include_usage"]
        }
        if c.contains(Key("prompt")) {
            if endpoint == .promptsFile {
                r.prompt = try fields.string("prompt").map { .text($0) }
            } else if let text = try? c.decode(String.self, forKey: Key("prompt")) {
                r.prompt = .text(text)
            } else if let texts = try? c.decode([String].self, forKey: Key("prompt")), !texts.isEmpty {
                r.prompt = .texts(texts)
            } else if let ids = try? c.decode([Int32].self, forKey: Key("prompt")), !ids.isEmpty {
                r.prompt = .tokens(ids)
            } else if let lists = try? c.decode([[Int32]].self, forKey: Key("prompt")), !lists.isEmpty {
                r.prompt = .tokenLists(lists)
            } else {
                throw fields.mismatch(
                    "prompt", expected: "a string, a non-empty list of strings, a list of token ids or a list of lists of token ids")
            }
        }
        if c.contains(Key("prompt_tokens")) {
            guard let ids = try? c.decode([Int32].self, forKey: Key("prompt_tokens")), !ids.isEmpty else {
                throw fields.mismatch("prompt_tokens", expected: "a non-empty list of token ids")
            }
            r.promptTokens = ids
        }
        if c.contains(Key("messages")) {
            guard let list = try? c.decode([JSONValue].self, forKey: Key("messages")), !list.isEmpty else {
                throw fields.mismatch("messages", expected: #"a non-empty list of {"role", "content"} objects"#)
            }
            r.messages = try list.enumerated().map { i, value throws(RequestError) in try Self.message(value, index: i) }
        }
        request = r
    }

    /// One chat message: `role` and `content`, a string or a list of `{"type": "text", "text"}` parts.
    static func message(_ value: JSONValue, index: Int) throws(RequestError) -> ChatMessage {
        let name = "messages[\(index)]"
        guard case let .object(fields) = value else {
            throw .invalid(name, expected: #"an object {"role", "content"}"#, found: value.description)
        }
        guard case let .string(role)? = fields["role"] else {
            throw .invalid("\(name).role", expected: "a string (system, user, assistant or tool)", found: fields["role"]?.description ?? "nothing")
        }
        guard ["system", "user", "assistant", "tool", "developer"].contains(role) else {
            throw .invalid("\(name).role", expected: "one of system, user, assistant, tool, developer", found: "'\(role)'")
        }
        switch fields["content"] {
        case let .string(text)?:
            return ChatMessage(role: role == "developer" ? "system" : role, content: text)
        case let .array(parts)?:
            var text = ""
            for (j, part) in parts.enumerated() {
                guard case let .object(p) = part, case .string("text")? = p["type"], case let .string(piece)? = p["text"] else {
                    throw .invalid(
                        "\(name).content[\(j)]", expected: #"a text part {"type": "text", "text": …} (only text is supported)"#,
                        found: part.description)
                }
                text += piece
            }
            return ChatMessage(role: role == "developer" ? "system" : role, content: text)
        default:
            throw .invalid("\(name).content", expected: "a string or a list of text parts", found: fields["content"]?.description ?? "nothing")
        }
    }
}

/// Typed reads of the body's fields: a type mismatch names the field and the value found.
struct Fields {
    let container: KeyedDecodingContainer<Body.Key>

    func mismatch(_ name: String, expected: String) -> RequestError {
        let found = (try? container.decode(JSONValue.self, forKey: Body.Key(name)))?.description ?? "an unreadable value"
        return .invalid(name, expected: expected, found: found)
    }

    private func read<T: Decodable>(_ name: String, as type: T.Type, expected: String) throws(RequestError) -> T? {
        let key = Body.Key(name)
        guard container.contains(key) else { return nil }
        if (try? container.decodeNil(forKey: key)) == true { return nil }
        guard let value = try? container.decode(T.self, forKey: key) else { throw mismatch(name, expected: expected) }
        return value
    }

    func string(_ name: String) throws(RequestError) -> String? { try read(name, as: String.self, expected: "a string") }
    func bool(_ name: String) throws(RequestError) -> Bool? { try read(name, as: Bool.self, expected: "true or false") }

    func number(_ name: String) throws(RequestError) -> Float? {
        guard let value = try read(name, as: Double.self, expected: "a number") else { return nil }
        guard value.isFinite, abs(value) <= Double(Float.greatestFiniteMagnitude) else {
            throw .invalid(name, expected: "a finite number", found: "\(value)")
        }
        return Float(value)
    }

    func integer<I: FixedWidthInteger & Decodable>(_ name: String) throws(RequestError) -> I? {
        try read(name, as: I.self, expected: I.bitWidth >= 64 ? "an integer" : "an integer in \(I.min)…\(I.max)")
    }
}

/// Any JSON value: what a field held, to say so in an error.
enum JSONValue: Decodable, Equatable, CustomStringConvertible {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if c.decodeNil() {
            self = .null
        } else if let b = try? c.decode(Bool.self) {
            self = .bool(b)
        } else if let d = try? c.decode(Double.self) {
            self = .number(d)
        } else if let s = try? c.decode(String.self) {
            self = .string(s)
        } else if let a = try? c.decode([JSONValue].self) {
            self = .array(a)
        } else {
            self = .object(try c.decode([String: JSONValue].self))
        }
    }

    /// Compact JSON-like text, cut at 60 characters.
    var description: String {
        let full: String = switch self {
        case .null: "null"
        case let .bool(b): "\(b)"
        case let .number(d): d == d.rounded() && abs(d) < 1e15 ? "\(Int64(d))" : "\(d)"
        case let .string(s): "\"\(s)\""
        case let .array(a): "[" + a.map(\.description).joined(separator: ", ") + "]"
        case let .object(o): "{" + o.keys.sorted().map { "\"\($0)\": \(o[$0]!.description)" }.joined(separator: ", ") + "}"
        }
        return full.count > 60 ? String(full.prefix(57)) + "…" : full
    }

    static func describe(_ data: some Collection<UInt8>) -> String {
        (try? JSONDecoder().decode(JSONValue.self, from: Data(data)))?.description ?? "'\(String(decoding: data.prefix(60), as: UTF8.self))'"
    }
}
