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

    @Test("special tokens are cut out longest first over the whole text, as llama.cpp partitions them")
    func specialTokensLongestFirst() throws {
        var w = GGUFWriter()
        w.set("general.architecture", .string("llama"))
        w.set("tokenizer.ggml.model", .string("gpt2"))
        w.set("tokenizer.ggml.pre", .string("smollm"))
        let bytes = (0..<256).map { String(Character(ByteLevelTable.scalar(UInt8($0)))) }
        // Control tokens: a short one, and a longer one that starts inside the short one's text.
        let tokens = bytes + ["<|a", "a|>bc", "<e>", "<e><e>"]
        w.set("tokenizer.ggml.tokens", .array(tokens.map { .string($0) }))
        w.set("tokenizer.ggml.token_type", .array(tokens.indices.map { .int32($0 < 256 ? 1 : 3) }))
        w.set("tokenizer.ggml.merges", .array([]))
        w.set("tokenizer.ggml.add_bos_token", .bool(false))
        let path = try w.write(named: "tokenizer")
        defer { TemporaryFiles.remove(path) }
        let t = try Tokenizer(file: GGUFFile(path: path))
        let short = Int32(256), long = Int32(257), e = Int32(258), ee = Int32(259)
        let lt = Int32(UInt8(ascii: "<")), bar = Int32(UInt8(ascii: "|")), x = Int32(UInt8(ascii: "x"))
        // "<|a|>bc": the longer "a|>bc" wins although "<|a" starts first.
        #expect(t.encode("<|a|>bc", parseSpecial: true) == [lt, bar, long])
        #expect(t.encode("x<|a", parseSpecial: true) == [x, short])
        // Three "<e>": the pair takes the first two, the single one the rest.
        #expect(t.encode("<e><e><e>", parseSpecial: true) == [ee, e])
        #expect(t.encode("<e>x<e><e>", parseSpecial: true) == [e, x, ee])
    }

    /// A tokenizer over the letters a, b, c with `count` random merges of existing tokens.
    static func randomMerges(_ count: Int, seed: UInt64) throws -> (Tokenizer, merges: [(String, String)]) {
        var random = RandomStream(seed: seed)
        var vocabulary = ["a", "b", "c"], merges: [(String, String)] = []
        while merges.count < count {
            let l = vocabulary[Int(random.unit() * Double(vocabulary.count)) % vocabulary.count]
            let r = vocabulary[Int(random.unit() * Double(vocabulary.count)) % vocabulary.count]
            guard !vocabulary.contains(l + r) else { continue }
            merges.append((l, r))
            vocabulary.append(l + r)
        }
        var w = GGUFWriter()
        w.set("general.architecture", .string("llama"))
        w.set("tokenizer.ggml.model", .string("gpt2"))
        w.set("tokenizer.ggml.pre", .string("smollm"))
        let bytes = (0..<256).map { String(Character(ByteLevelTable.scalar(UInt8($0)))) }
        let tokens = bytes + vocabulary.dropFirst(3)
        w.set("tokenizer.ggml.tokens", .array(tokens.map { .string($0) }))
        w.set("tokenizer.ggml.token_type", .array(tokens.map { _ in .int32(1) }))
        w.set("tokenizer.ggml.merges", .array(merges.map { .string("\($0.0) \($0.1)") }))
        w.set("tokenizer.ggml.add_bos_token", .bool(false))
        let path = try w.write(named: "tokenizer")
        defer { TemporaryFiles.remove(path) }
        return (try Tokenizer(file: GGUFFile(path: path)), merges)
    }

    /// The textbook merge loop: scan every pair, merge the lowest rank (leftmost on ties).
    static func naiveBPE(_ text: String, _ merges: [(String, String)]) -> [String] {
        var symbols = text.map(String.init)
        let rank = Dictionary(merges.enumerated().map { ("\($0.element.0) \($0.element.1)", $0.offset) }) { a, _ in a }
        while symbols.count > 1 {
            var best: (rank: Int, index: Int)?
            for j in 0..<(symbols.count - 1) {
                if let r = rank["\(symbols[j]) \(symbols[j + 1])"], r < (best?.rank ?? .max) { best = (r, j) }
            }
            guard let best else { break }
            symbols[best.index] += symbols[best.index + 1]
            symbols.remove(at: best.index + 1)
        }
        return symbols
    }

    @Test("merging through a priority queue gives the textbook merge loop's tokens on random words and tables", arguments: [1, 2, 3])
    func heapMergesEqualNaive(seed: UInt64) throws {
        let (t, merges) = try Self.randomMerges(40, seed: seed)
        var random = RandomStream(seed: seed + 100)
        for length in [1, 2, 3, 5, 8, 13, 40, 200] {
            for _ in 0..<20 {
                let word = String((0..<length).map { _ in "abc".randomElement(using: &random)! })
                let expected = Self.naiveBPE(word, merges)
                let got = t.encode(word, parseSpecial: false).map { String(decoding: t.bytes(of: $0), as: UTF8.self) }
                #expect(got == expected, "\(word)")
            }
        }
        // A long run of one letter, the case that was quadratic, merges as the textbook does.
        let long = String(repeating: "a", count: 1001)
        let got = t.encode(long, parseSpecial: false).map { String(decoding: t.bytes(of: $0), as: UTF8.self) }
        #expect(got == Self.naiveBPE(long, merges))
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

    @Test("llama-bpe takes a word that is a token whole before merging (llama.cpp's ignore_merges) and adds BOS by default; qwen2 merges")
    func llama3IgnoresMerges() throws {
        func tokenizer(pre: String) throws -> Tokenizer {
            var w = GGUFWriter()
            var tokens: [GGUFValue] = (0..<256).map { .string(String(Character(ByteLevelTable.scalar(UInt8($0))))) }
            tokens += [.string("he"), .string("Ġhello"), .string("<|begin_of_text|>")]
            w.set("tokenizer.ggml.model", .string("gpt2"))
            w.set("tokenizer.ggml.pre", .string(pre))
            w.set("tokenizer.ggml.tokens", .array(tokens))
            w.set("tokenizer.ggml.token_type", .array((0..<259).map { .int32($0 == 258 ? 3 : 1) }))
            w.set("tokenizer.ggml.merges", .array([.string("h e")]))  // no merges reach "Ġhello"
            w.set("tokenizer.ggml.bos_token_id", .uint32(258))
            let path = try w.write(named: "merges-vocabulary")
            defer { TemporaryFiles.remove(path) }
            return try Tokenizer(file: GGUFFile(path: path))
        }
        let llama3 = try tokenizer(pre: "llama-bpe"), qwen2 = try tokenizer(pre: "qwen2")
        #expect(llama3.addBOS && !qwen2.addBOS)
        #expect(llama3.encode(" hello", parseSpecial: false, addBOS: false) == [257])
        let g = Int32(0x20), l = Int32(UInt8(ascii: "l")), o = Int32(UInt8(ascii: "o"))
        // Byte tokens are in byte order here, so byte b has id b.
        #expect(qwen2.encode(" hello", parseSpecial: false) == [g, 256, l, l, o])
        #expect(llama3.encode(" hello", parseSpecial: false) == [258, 257])
    }

    @Test("llama-bpe and qwen2 pre-tokenization split as Python's regex does with their patterns", arguments: [PreTokenizer.llama3, .qwen2])
    func llama3Patterns(pre: PreTokenizer) throws {
        let cases = try #require(try Fixtures.json("pretokenizer_splits.json") as? [[String: Any]])
        #expect(cases.count >= 25)
        for c in cases {
            let text = try #require(c["text"] as? String)
            let scalars = Array(text.unicodeScalars)
            let words = pre.split(scalars).map { String(String.UnicodeScalarView(scalars[$0])) }
            #expect(words == c[pre == .llama3 ? "llama3" : "qwen2"] as? [String], "\(pre): \(text.debugDescription)")
        }
    }
}

/// SentencePiece vocabularies (Llama 2, Mistral, TinyLlama): a vocabulary written by
/// `scripts/fixtures/make_sentencepiece_fixture.py` and llama.cpp's ids for it.
@Suite struct SentencePieceTests {
    func tokenizer() throws -> (Tokenizer, [[String: Any]]) {
        let fixture = try #require(try Fixtures.json("llamacpp_sentencepiece.json") as? [String: Any])
        var w = GGUFWriter()
        w.set("general.architecture", .string("llama"))
        w.set("tokenizer.ggml.model", .string("llama"))
        w.set("tokenizer.ggml.tokens", .array(try #require(fixture["tokens"] as? [String]).map { .string($0) }))
        w.set("tokenizer.ggml.scores", .array(try #require(fixture["scores"] as? [Double]).map { .float32(Float($0)) }))
        w.set("tokenizer.ggml.token_type", .array(try #require(fixture["types"] as? [Int]).map { .int32(Int32($0)) }))
        w.set("tokenizer.ggml.bos_token_id", .uint32(1))
        w.set("tokenizer.ggml.eos_token_id", .uint32(2))
        let path = try w.write(named: "spm-vocabulary")
        defer { TemporaryFiles.remove(path) }
        return (try Tokenizer(file: GGUFFile(path: path)), try #require(fixture["cases"] as? [[String: Any]]))
    }

    @Test("token ids equal llama.cpp's: space prefix, merges by score with ties, byte fallback, special tokens")
    func matchesLlamaCpp() throws {
        let (t, cases) = try tokenizer()
        #expect(t.model == .sentencePiece && t.addBOS)
        #expect(cases.count >= 25)
        for c in cases {
            let text = try #require(c["text"] as? String)
            #expect(t.encode(text, parseSpecial: true).map(Int.init) == c["special"] as? [Int], "\(text.debugDescription)")
            #expect(t.encode(text, parseSpecial: false).map(Int.init) == c["plain"] as? [Int], "\(text.debugDescription)")
        }
    }

    @Test("decoding turns ▁ into spaces and byte tokens into their bytes")
    func decodes() throws {
        let (t, _) = try tokenizer()
        for text in ["hello world", "café 日本 🙂 is it", "  two  spaces\n"] {
            // The space prefix stays: it is the text the model saw.
            #expect(t.decode(t.encode(text, parseSpecial: false)) == " " + text)
        }
    }
}

@Suite struct ChatTemplateTests {
    @Test("renders SmolLM2's template exactly as Jinja does")
    func matchesJinja() throws {
        let fixture = try #require(try Fixtures.json("chat.json") as? [String: Any])
        let template = try ChatTemplate(source: try #require(fixture["template"] as? String))
        let cases = try #require(fixture["cases"] as? [[String: Any]])
        #expect(cases.count >= 8)
        for c in cases {
            let messages = try #require(c["messages"] as? [[String: String]]).map {
                ChatMessage(role: $0["role"]!, content: $0["content"]!)
            }
            let add = try #require(c["add_generation_prompt"] as? Bool)
            #expect(try template.render(messages, addGenerationPrompt: add) == c["rendered"] as? String)
        }
    }

    @Test("Llama 3's template renders with bos_token, headers and the generation prompt")
    func llama3() throws {
        let source = """
            {% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}
            """
        let template = try ChatTemplate(source: source, bosToken: "<|begin_of_text|>", eosToken: "<|eot_id|>")
        let text = try template.render([ChatMessage(role: "system", content: " Be brief. "), ChatMessage(role: "user", content: "Hi")])
        #expect(text == "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
    }

    @Test("a construct Cohort's Jinja does not run is an error at load that quotes it; raise_exception is one at render")
    func errors() throws {
        #expect {
            _ = try ChatTemplate(source: "{% for m in messages %}{{ m.content | wordwrap }}{% endfor %}")
        } throws: { error in
            "\(error)".contains("wordwrap")
        }
        let strict = try ChatTemplate(source: "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}ok")
        #expect(try strict.render([ChatMessage(role: "user", content: "hi")]) == "ok")
        #expect {
            _ = try strict.render([ChatMessage(role: "system", content: "x")])
        } throws: { error in
            "\(error)" == "the chat template refused the conversation: System role not supported"
        }
    }
}
