import Engine
import Executor
import ExecutorTestSupport
import Foundation
import Kernels
import ModelRunner
import Testing

/// A K-quant Llama-family file as users make them: the reference model dequantized to F32
/// by the `gguf` package and quantized to Q4_K_M by llama.cpp (`scripts/make-q4km.sh`).
/// SmolLM2's rows of 576 are not whole K-quant super-blocks, so llama.cpp falls back to
/// Q5_0 and Q8_0 there; the down projections (rows of 1536) are Q4_K and Q6_K, with the
/// `llama` architecture's adjacent-pair rotation. Checked against llama.cpp's own runs of
/// the same file (`make_llamacpp_fixtures.py smollm2-q4km`).
@Suite(.serialized, .enabled(if: isOptimizedBuild, "runs the real model: use a release build (make test-release)"))
struct KQuantLlamaTests {
    static let modelPath = ReferenceModel.cacheDirectory + "/SmolLM2-135M-Instruct.Q4_K_M.gguf"
    static let fixture = "llamacpp_smollm2-q4km.json"

    func requireModel() throws {
        try #require(FileManager.default.fileExists(atPath: Self.modelPath), "\(Self.modelPath) missing: run scripts/make-q4km.sh")
    }

    @Test("llama.cpp's Q4_K_M of SmolLM2 loads as llama with Q4_K and Q6_K down projections")
    func configuration() throws {
        try requireModel()
        let file = try GGUFFile(path: Self.modelPath)
        var c = try LlamaConfiguration(file: file)
        let weights = try LlamaWeights(file: file, configuration: &c)
        #expect(c.architecture == .llama && c.layers == 30 && c.hiddenSize == 576)
        #expect(Set(weights.layers.map(\.down.type)) == [.q4_K, .q6_K])
        #expect(Set(file.tensors.map(\.type)).isSuperset(of: [.q4_K, .q6_K, .q5_0, .q8_0]))
    }

    @Test("the default mode agrees with llama.cpp up to its first step with a top-two margin below 1.0")
    func fastAgreesWithLlamaCpp() async throws {
        try requireModel()
        try await ReferenceFixtures.expectAgreesWithLlamaCpp(Self.modelPath, fixture: Self.fixture, prompts: 6, steps: 30)
    }

    @Test("token ids equal llama.cpp's on the same strings as the Q4_1 file")
    func tokenizerMatchesLlamaCpp() throws {
        try requireModel()
        try ReferenceFixtures.expectTokenIDs(try Tokenizer(file: GGUFFile(path: Self.modelPath)), fixture: Self.fixture, cases: 15)
    }
}
