/// A chat message: `role` is "system", "user" or "assistant".
public struct ChatMessage: Sendable, Equatable {
    public var role: String
    public var content: String
    public init(role: String, content: String) {
        self.role = role
        self.content = content
    }
}

/// Renders a conversation the way the model's `tokenizer.chat_template` (Jinja) would.
///
/// Cohort does not embed a Jinja engine yet. It recognises template families by their
/// structure and renders them natively; today that is ChatML (`<|im_start|>role\n…<|im_end|>\n`),
/// including a default system message that the template inserts when the conversation
/// has none (SmolLM2 does). Any other template is an error that names it, never a guess.
public struct ChatTemplate: Sendable, Equatable {
    public enum Family: String, Sendable { case chatML }

    public let family: Family
    /// Inserted as the first system message when the conversation starts without one.
    public let defaultSystemMessage: String?
    public let source: String

    /// The GGUF key holding the template.
    static let key = "tokenizer.chat_template"

    public struct UnsupportedTemplate: Error, CustomStringConvertible {
        public let source: String
        public var description: String {
            let excerpt = source.count > 120 ? String(source.prefix(120)) + "…" : source
            return "unsupported chat template (Cohort renders the ChatML family; use --raw to send the prompt as is): \(excerpt)"
        }
    }

    /// Recognises `source`.
    /// - Throws: `UnsupportedTemplate` naming the template when it is not a known family.
    public init(source: String) throws(UnsupportedTemplate) {
        self.source = source
        let compact = source.filter { !$0.isWhitespace }
        let chatMLTurn = "'<|im_start|>'+message['role']+'\\n'+message['content']+'<|im_end|>'+'\\n'"
        let turnWithNewlines = "'<|im_start|>'+message['role']+'\n'+message['content']+'<|im_end|>'+'\n'"
        let compactTurn = chatMLTurn.filter { !$0.isWhitespace }, compactTurnNewlines = turnWithNewlines.filter { !$0.isWhitespace }
        guard compact.contains(compactTurn) || compact.contains(compactTurnNewlines),
              compact.contains("'<|im_start|>assistant")
        else { throw UnsupportedTemplate(source: source) }
        family = .chatML
        defaultSystemMessage = try Self.defaultSystemBlock(in: source)
    }

    /// The literal that `{% if loop.first and messages[0]['role'] != 'system' %}{{ '…' }}{% endif %}` emits.
    private static func defaultSystemBlock(in source: String) throws(UnsupportedTemplate) -> String? {
        guard let condition = source.firstRange(of: "messages[0]['role'] != 'system'") else { return nil }
        let rest = source[condition.upperBound...]
        guard let open = rest.firstRange(of: "{{"), let close = rest[open.upperBound...].firstRange(of: "}}") else {
            throw UnsupportedTemplate(source: source)
        }
        let expression = rest[open.upperBound..<close.lowerBound].trimmingCharacters(in: " ")
        guard let literal = Self.stringLiteral(expression) else { throw UnsupportedTemplate(source: source) }
        let prefix = "<|im_start|>system\n", suffix = "<|im_end|>\n"
        guard literal.hasPrefix(prefix), literal.hasSuffix(suffix) else { throw UnsupportedTemplate(source: source) }
        return String(literal.dropFirst(prefix.count).dropLast(suffix.count))
    }

    /// Value of a single-quoted Jinja string literal, with its escapes.
    static func stringLiteral(_ s: Substring) -> String? {
        guard s.count >= 2, let quote = s.first, quote == "'" || quote == "\"", s.last == quote else { return nil }
        var out = ""
        var escaped = false
        for c in s.dropFirst().dropLast() {
            if escaped {
                switch c {
                case "n": out.append("\n")
                case "t": out.append("\t")
                default: out.append(c)
                }
                escaped = false
            } else if c == "\\" {
                escaped = true
            } else {
                out.append(c)
            }
        }
        return escaped ? nil : out
    }

    /// The prompt text for `messages`, ending with the assistant's turn opener when
    /// `addGenerationPrompt` is set.
    public func render(_ messages: [ChatMessage], addGenerationPrompt: Bool = true) -> String {
        var out = ""
        if let defaultSystemMessage, messages.first?.role != "system", !messages.isEmpty {
            out += "<|im_start|>system\n\(defaultSystemMessage)<|im_end|>\n"
        }
        for m in messages { out += "<|im_start|>\(m.role)\n\(m.content)<|im_end|>\n" }
        if addGenerationPrompt { out += "<|im_start|>assistant\n" }
        return out
    }
}

extension Substring {
    func trimmingCharacters(in set: Character) -> Substring {
        var s = self
        while s.first == set { s = s.dropFirst() }
        while s.last == set { s = s.dropLast() }
        return s
    }
}
