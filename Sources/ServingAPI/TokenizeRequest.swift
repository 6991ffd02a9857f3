public import Executor
import Foundation
import ModelRunner

/// vLLM's `/tokenize` and `/detokenize` bodies.
public enum TokenizeRequest {
    /// `{"prompt": TEXT}` (tokenized as is) or `{"messages": [...]}` (through the chat template);
    /// `model` and `add_special_tokens` are accepted.
    public static func decode(_ data: some Collection<UInt8>) throws(RequestError) -> Prompt {
        let object = try JSONValue.object(data, fields: ["prompt", "messages", "model", "add_special_tokens"])
        switch (object["prompt"], object["messages"]) {
        case let (.string(text)?, nil):
            return .raw(text)
        case let (nil, .array(list)?) where !list.isEmpty:
            return .messages(try list.enumerated().map { i, value throws(RequestError) in try Body.message(value, index: i) })
        case let (prompt?, nil):
            throw .invalid("prompt", expected: "a string", found: prompt.description)
        case let (nil, messages?):
            throw .invalid("messages", expected: #"a non-empty list of {"role", "content"} objects"#, found: messages.description)
        case (nil, nil):
            throw RequestError("expected 'prompt' (text) or 'messages' (a chat), found neither", field: "prompt")
        case (_?, _?):
            throw RequestError("expected 'prompt' or 'messages', found both", field: "messages")
        }
    }

    /// `{"tokens": [IDS]}`.
    public static func decodeTokens(_ data: some Collection<UInt8>) throws(RequestError) -> [Int32] {
        let object = try JSONValue.object(data, fields: ["tokens", "model"])
        guard case let .array(list)? = object["tokens"] else {
            throw .invalid("tokens", expected: "a list of token ids", found: object["tokens"]?.description ?? "nothing")
        }
        return try list.map { value throws(RequestError) in
            guard case let .number(d) = value, d == d.rounded(), d >= 0, d <= Double(Int32.max) else {
                throw .invalid("tokens", expected: "token ids (integers ≥ 0)", found: value.description)
            }
            return Int32(d)
        }
    }
}

extension JSONValue {
    /// A JSON object holding only `fields`.
    static func object(_ data: some Collection<UInt8>, fields: [String]) throws(RequestError) -> [String: JSONValue] {
        guard case let .object(object)? = try? JSONDecoder().decode(JSONValue.self, from: Data(data)) else {
            throw RequestError("expected a JSON object, found \(describe(data))")
        }
        if let unknown = object.keys.sorted().first(where: { !fields.contains($0) }) {
            throw RequestError("unknown field '\(unknown)'; expected some of \(fields.joined(separator: ", "))", field: unknown)
        }
        return object
    }
}
