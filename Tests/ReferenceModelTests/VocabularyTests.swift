import Executor
import ExecutorTestSupport
import Foundation
import ModelRunner
import Testing

/// llama.cpp's own tokenizer test vectors (`test-tokenizer-0`) on the vocabularies of real
/// models: Llama 3 (`llama-bpe`, 128,256 tokens), Llama 2 (SentencePiece, 32,000), Phi-3
/// (SentencePiece), Qwen2, GPT-2 and StarCoder. Each vocabulary-only GGUF comes with the
/// strings llama.cpp tokenizes (`.inp`: whitespace runs, code, digits, accents, CJK, emoji)
/// and the ids it expects (`.out`); `scripts/fetch-vocabularies.sh` fetches them from
/// llama-cpp-python's source distribution. As there: no BOS, special tokens not parsed.
@Suite(.enabled(if: isOptimizedBuild, "loads vocabularies of 128K tokens: use a release build (make test-release)"))
struct VocabularyTests {
    static let directory = ReferenceModel.cacheDirectory + "/vocab"

    /// The test strings and their expected ids, in order.
    static func cases(_ name: String) throws -> [(text: String, ids: [Int32])] {
        let base = directory + "/ggml-vocab-\(name).gguf"
        try #require(FileManager.default.fileExists(atPath: base + ".out"), "\(base).out missing: run scripts/fetch-vocabularies.sh")
        let input = try String(contentsOfFile: base + ".inp", encoding: .utf8).components(separatedBy: "\n__ggml_vocab_test__\n")
        var lines = try String(contentsOfFile: base + ".out", encoding: .utf8).components(separatedBy: "\n")
        if lines.last == "" { lines.removeLast() }
        try #require(input.count >= lines.count, "\(name): \(lines.count) expected outputs for \(input.count) inputs")
        return lines.enumerated().map { i, line in (input[i], line.split(separator: " ").map { Int32($0)! }) }
    }

    @Test("token ids equal llama.cpp's test vectors", arguments: ["llama-bpe", "llama-spm", "phi-3", "qwen2", "gpt-2", "starcoder"])
    func matchesLlamaCpp(name: String) throws {
        let cases = try Self.cases(name)
        #expect(cases.count >= 40)
        let tokenizer = try Tokenizer(file: GGUFFile(path: Self.directory + "/ggml-vocab-\(name).gguf"))
        var mismatches = 0
        for c in cases {
            let got = tokenizer.encode(c.text, parseSpecial: false, addBOS: false)
            if got != c.ids { mismatches += 1 }
            #expect(got == c.ids, "\(name): \(c.text.debugDescription)")
        }
        #expect(mismatches == 0, "\(name): \(mismatches) of \(cases.count) strings differ")
    }

    @Test("Llama 3's vocabulary: its special tokens, BOS added by default, and a round trip")
    func llama3() throws {
        let tokenizer = try Tokenizer(file: GGUFFile(path: Self.directory + "/ggml-vocab-llama-bpe.gguf"))
        let ids = tokenizer.encode("<|begin_of_text|>Hello<|eot_id|>", parseSpecial: true, addBOS: false)
        #expect(ids == [128_000, 9906, 128_009])
        #expect(tokenizer.encode("Hello", parseSpecial: false).first == 128_000)
        for c in try Self.cases("llama-bpe") {
            #expect(tokenizer.decode(c.ids) == c.text, "\(c.text.debugDescription)")
        }
    }
}
