/// A chat message: `role` is "system", "user", "assistant" (or "tool").
public struct ChatMessage: Sendable, Equatable {
    public var role: String
    public var content: String
    public init(role: String, content: String) {
        self.role = role
        self.content = content
    }
}

/// Renders a conversation with the model's `tokenizer.chat_template`, as Hugging Face's
/// `apply_chat_template` does: Jinja (see `JinjaTemplate`) with `trim_blocks` and
/// `lstrip_blocks`, given `messages`, `add_generation_prompt`, `bos_token` and `eos_token`.
///
/// A template Cohort cannot parse is an error at load that quotes the construct; one that
/// refuses a conversation (`raise_exception`, as Gemma's does for a system message) is an
/// error at render naming the template's own message.
public struct ChatTemplate: Sendable {
    public let source: String
    private let template: JinjaTemplate
    /// The text of the BOS and EOS tokens, which templates may print.
    public let bosToken: String
    public let eosToken: String

    /// The GGUF key holding the template.
    static let key = "tokenizer.chat_template"

    public struct UnsupportedTemplate: Error, CustomStringConvertible {
        public let source: String
        public let error: JinjaError
        public var description: String {
            "the model's chat template cannot be used (use --raw to send the prompt as is): \(error)"
        }
    }

    /// A conversation the template refused, or a template that failed while rendering.
    public struct RenderError: Error, CustomStringConvertible {
        public let error: JinjaError
        public var description: String { "the chat template refused the conversation: \(error.message)" }
    }

    /// Parses `source`.
    /// - Throws: `UnsupportedTemplate` quoting what Cohort's Jinja does not run.
    public init(source: String, bosToken: String = "", eosToken: String = "") throws(UnsupportedTemplate) {
        self.source = source
        self.bosToken = bosToken
        self.eosToken = eosToken
        do {
            template = try JinjaTemplate(source: source, options: .huggingFace)
        } catch {
            throw UnsupportedTemplate(source: source, error: error)
        }
    }

    /// The prompt text for `messages`, ending with the assistant's turn opener when
    /// `addGenerationPrompt` is set.
    public func render(_ messages: [ChatMessage], addGenerationPrompt: Bool = true) throws(RenderError) -> String {
        let context: [String: JinjaValue] = [
            "messages": .array(messages.map { .object(["role": .string($0.role), "content": .string($0.content)]) }),
            "add_generation_prompt": .bool(addGenerationPrompt),
            "bos_token": .string(bosToken),
            "eos_token": .string(eosToken),
        ]
        do {
            return try template.render(context)
        } catch {
            throw RenderError(error: error)
        }
    }
}
