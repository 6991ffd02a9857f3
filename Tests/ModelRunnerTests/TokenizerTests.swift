import ExecutorTestSupport
import ModelRunner
import Testing

@Suite struct TokenizerTests {
    func tokenizer() throws -> Tokenizer {
        let path = try TinyLlama().write()
        defer { TemporaryFiles.remove(path) }
        return try Tokenizer(file: GGUFFile(path: path))
    }

    @Test("merges apply by rank and special-token text becomes the special token")
    func mergesAndSpecials() throws {
        let t = try tokenizer()
        let the = Int32(256 + 2), start = Int32(256 + 3), end = Int32(256 + 4)
        // " the" → "Ġt" + "he" → "Ġthe".
        #expect(t.encode(" the", parseSpecial: false) == [the])
        #expect(t.encode("<|im_start|> the<|im_end|>", parseSpecial: true) == [start, the, end])
        // Without parseSpecial the text is ordinary bytes.
        #expect(t.encode("<|im_end|>", parseSpecial: false).count == "<|im_end|>".utf8.count)
        #expect(t.endOfGenerationIDs.contains(end) && t.endOfGenerationIDs.contains(256 + 5))
    }

    @Test("decoding inverts encoding for any UTF-8 text")
    func roundTrip() throws {
        let t = try tokenizer()
        for s in ["", "abc  def", "naïve café 🙂 日本", "tabs\t\nnew", "x1234y"] {
            #expect(t.decode(t.encode(s, parseSpecial: false)) == s)
        }
    }

    @Test("the streaming decoder never splits a code point")
    func streaming() throws {
        let t = try tokenizer()
        var decoder = StreamingDecoder(tokenizer: t)
        let text = "a🙂é日"
        var pieces: [String] = []
        for id in t.encode(text, parseSpecial: false) { pieces.append(decoder.append(id)) }
        pieces.append(decoder.finish())
        #expect(pieces.joined() == text)
        #expect(!pieces.contains { $0.contains("\u{FFFD}") })
        #expect(pieces.filter { !$0.isEmpty }.count == 4)
    }

    @Test("smollm pre-tokenization splits digits, contractions, spaces and punctuation like llama.cpp")
    func preTokenizer() {
        func words(_ s: String) -> [String] {
            let scalars = Array(s.unicodeScalars)
            return PreTokenizer.smollm.split(scalars).map { String(String.UnicodeScalarView(scalars[$0])) }
        }
        #expect(words("I'm 123 ok") == ["I", "'m", " ", "1", "2", "3", " ok"])
        #expect(words("a  b") == ["a", " ", " b"])
        #expect(words("hi!!  ") == ["hi", "!!", "  "])
    }
}

@Suite struct ChatTemplateTests {
    @Test("renders SmolLM2's template exactly as Jinja does")
    func matchesJinja() throws {
        let fixture = try #require(try Fixtures.json("chat.json") as? [String: Any])
        let template = try ChatTemplate(source: try #require(fixture["template"] as? String))
        #expect(template.defaultSystemMessage == "You are a helpful AI assistant named SmolLM, trained by Hugging Face")
        let cases = try #require(fixture["cases"] as? [[String: Any]])
        #expect(cases.count >= 8)
        for c in cases {
            let messages = try #require(c["messages"] as? [[String: String]]).map {
                ChatMessage(role: $0["role"]!, content: $0["content"]!)
            }
            let add = try #require(c["add_generation_prompt"] as? Bool)
            #expect(template.render(messages, addGenerationPrompt: add) == c["rendered"] as? String)
        }
    }

    @Test("a template outside the ChatML family is an error that quotes it")
    func unsupported() {
        let llama3 = "{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>' }}{% endfor %}"
        #expect {
            _ = try ChatTemplate(source: llama3)
        } throws: { error in
            "\(error)".contains("<|start_header_id|>")
        }
    }
}
