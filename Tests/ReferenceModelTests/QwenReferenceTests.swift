import Engine
import Executor
import ExecutorCore
import ExecutorTestSupport
import Foundation
import Kernels
import ModelRunner
import Testing

/// Checks on the second reference model, Qwen2.5-Coder-0.5B-Instruct (`qwen2`: Q/K/V
/// biases, half-split rotation, 14 query heads over 2 KV heads, a Q5_0/Q8_0/Q4_K/Q6_K mix,
/// the `qwen2` pre-tokenizer), against fixtures made by `scripts/fixtures/… qwen`:
/// llama.cpp's token ids and greedy runs, and a float64 numpy model.
@Suite(.serialized, .enabled(if: isOptimizedBuild, "runs the real model: use a release build (make test-release)"))
struct QwenReferenceTests {
    static let modelPath = ReferenceModel.qwenPath

    func requireModel() throws {
        try #require(FileManager.default.fileExists(atPath: Self.modelPath), "Qwen2.5 model missing at \(Self.modelPath): run scripts/fetch-qwen.sh")
    }

    @Test("the file loads as qwen2 with its shape, biases and tensor types")
    func configuration() throws {
        try requireModel()
        let file = try GGUFFile(path: Self.modelPath)
        var c = try LlamaConfiguration(file: file)
        let weights = try LlamaWeights(file: file, configuration: &c)
        #expect(c.architecture == .qwen2 && c.layers == 24 && c.hiddenSize == 896 && c.attentionHeads == 14 && c.kvHeads == 2)
        #expect(c.feedForwardSize == 4864 && c.vocabularySize == 151_936 && c.ropeTheta == 1e6 && c.rmsNormEpsilon == 1e-6)
        #expect(!weights.tiedOutput && weights.output.type == .q8_0)
        #expect(weights.layers.allSatisfy { $0.queryBias?.count == 896 && $0.keyBias?.count == 128 && $0.valueBias?.count == 128 })
        #expect(Set(file.tensors.map(\.type)) == [.f32, .q5_0, .q8_0, .q4_K, .q6_K])
    }

    @Test("token ids equal llama.cpp's for code, digits, long whitespace, punctuation, scripts and emoji")
    func tokenizerMatchesLlamaCpp() throws {
        try requireModel()
        try ReferenceFixtures.expectTokenIDs(try Tokenizer(file: GGUFFile(path: Self.modelPath)), fixture: "llamacpp_qwen.json", cases: 20)
    }

    /// No Llama 3 file is cached: its pre-tokenizer runs on Qwen2.5's vocabulary, as the
    /// fixture script made it for llama.cpp (`make_llama3_tokenizer_fixture.py`).
    @Test("with the llama-bpe (Llama 3) pre-tokenizer, token ids equal llama.cpp's")
    func llamaBPEMatchesLlamaCpp() throws {
        try requireModel()
        let qwen = try GGUFFile(path: Self.modelPath)
        var writer = GGUFWriter()
        for (key, value) in qwen.metadata where key.hasPrefix("tokenizer.ggml.") && key != "tokenizer.ggml.pre" { writer.set(key, value) }
        writer.set("tokenizer.ggml.pre", .string("llama-bpe"))
        let path = try writer.write(named: "llama-bpe-vocabulary")
        defer { TemporaryFiles.remove(path) }
        try ReferenceFixtures.expectTokenIDs(try Tokenizer(file: GGUFFile(path: path)), fixture: "llamacpp_llama_bpe.json", cases: 20, roundTrip: false)
    }

    @Test("--precise greedy continuations equal the float64 reference")
    func preciseMatchesFloatReference() async throws {
        try requireModel()
        let engine = try await Engine.load(modelPath: Self.modelPath, options: ExecutorOptions(threads: 2, precise: true))
        // Four of the eight prompts: precise mode decodes every weight row per step.
        let cases = try ReferenceFixtures.greedyCases("float_reference_qwen.json").prefix(4)
        #expect(cases.count == 4)
        for c in cases {
            #expect(try await ReferenceFixtures.greedy(engine, c.promptTokens, steps: c.tokens.count) == c.tokens)
        }
        await engine.shutdown()
    }

    @Test("--precise logits equal the float64 reference within 1e-3")
    func preciseLogits() throws {
        try requireModel()
        let loaded = try LoadedModel(path: Self.modelPath, options: ModelOptions(threads: 2, mode: .precise))
        let differences = try ReferenceFixtures.logitDifferences(loaded, suffix: "_qwen")
        #expect(differences.count >= 2 && differences.allSatisfy { $0 < 1e-3 }, "max |Δlogit| per prompt: \(differences)")
    }

    @Test("the default mode agrees with llama.cpp up to its first step with a top-two margin below 1.0")
    func fastAgreesWithLlamaCpp() async throws {
        try requireModel()
        try await ReferenceFixtures.expectAgreesWithLlamaCpp(Self.modelPath, fixture: "llamacpp_qwen.json", prompts: 6, steps: 20)
    }

    /// TP 3 over 2 KV heads replicates them (the middle rank reads both); TP 2 cuts the
    /// Q6_K/Q4_K down projections (rows of 4864) inside a super-block.
    @Test("--tp 2, --tp 3, --pp 2 and --tp 2 --pp 2 give one worker's --precise greedy tokens", arguments: [(2, 1), (3, 1), (1, 2), (2, 2)])
    func gridTokens(tp: Int, pp: Int) throws {
        try requireModel()
        let prompt = try #require(try ReferenceFixtures.greedyCases("float_reference_qwen.json").first).promptTokens
        let one = try ReferenceFixtures.processTokens(Self.modelPath, tp: 1, pp: 1, prompt: prompt, steps: 16)
        #expect(one.count == 16)
        #expect(try ReferenceFixtures.processTokens(Self.modelPath, tp: tp, pp: pp, prompt: prompt, steps: 16) == one, "TP \(tp) × PP \(pp)")
    }

    @Test("the chat template (Jinja, default system message) renders and tokenizes like the llama.cpp fixture's prompt")
    func chatPromptTokens() async throws {
        try requireModel()
        let engine = try await Engine.load(modelPath: Self.modelPath, options: ExecutorOptions(threads: 1))
        let cases = try ReferenceFixtures.greedyCases("llamacpp_qwen.json")
        #expect(try await engine.tokens(for: .chat(user: "Write a Python function that reverses a string.", system: nil)) == cases[0].promptTokens)
        #expect(try await engine.tokens(for: .chat(user: "What is the capital of France?", system: nil)) == cases[3].promptTokens)
        await engine.shutdown()
    }

    @Test("`cohort generate` asked for a Python function answers with code")
    func answersWithCode() throws {
        try requireModel()
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
            .appendingPathComponent("cohort")
        p.arguments = ["generate", "--model", Self.modelPath, "--prompt", "Write a Python function that reverses a string.",
                       "--temperature", "0", "--max-tokens", "60", "--threads", "2"]
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        #expect(p.terminationStatus == 0)
        #expect(text.contains("```python") && text.contains("def reverse_string("), "\(text)")
    }
}
