import ExecutorTestSupport
import Kernels
import ModelRunner
import Testing

@Suite struct LlamaModelTests {
    /// Loads a tiny model and returns the logits for each (tokens, start) chunk run as one batch per call.
    final class Harness {
        let loaded: LoadedModel
        var allocator: BlockAllocator
        var logits: [Float]

        init(_ tiny: TinyLlama, mode: NumericMode, threads: Int = 2, maxBatchTokens: Int = 64) throws {
            let path = try tiny.write()
            defer { TemporaryFiles.remove(path) }
            loaded = try LoadedModel(
                path: path, options: ModelOptions(threads: threads, mode: mode, kvCacheBytes: 4 << 20, blockSize: 4, maxBatchTokens: maxBatchTokens))
            allocator = BlockAllocator(blockCount: loaded.model.cache.blockCount, blockSize: 4)
            logits = [Float](repeating: 0, count: tiny.vocabularySize * maxBatchTokens)
        }

        var vocabulary: Int { loaded.configuration.vocabularySize }

        /// Runs chunks (sequence table, tokens, start) in one step; returns one logits row per chunk.
        func step(_ chunks: [(table: [Int32], tokens: [Int32], start: Int)]) throws -> [[Float]] {
            var batch = ForwardBatch()
            for c in chunks { batch.append(c.tokens, startPosition: c.start, blockTable: c.table, wantLogits: true) }
            try logits.withUnsafeMutableBufferPointer { try loaded.model.forward(batch, logits: $0.baseAddress!) }
            return (0..<chunks.count).map { Array(logits[($0 * vocabulary)..<(($0 + 1) * vocabulary)]) }
        }

        func table(tokens: Int) -> [Int32] {
            var t: [Int32] = []
            precondition(allocator.reserve(&t, tokens: tokens))
            return t
        }
    }

    static let prompt: [Int32] = [5, 77, 200, 3, 14, 15, 92, 65, 35, 89, 79, 32, 38, 46]

    @Test("decoding token by token equals one full prefill", arguments: [TensorType.q4_0, .q4_1, .q8_0, .f16, .bf16, .f32], NumericMode.allCases)
    func incrementalEqualsFull(type: TensorType, mode: NumericMode) throws {
        var tiny = TinyLlama()
        tiny.matrixType = type
        tiny.embeddingType = type
        tiny.tiedOutput = type != .q4_0
        let h = try Harness(tiny, mode: mode)
        let n = Self.prompt.count
        let full = try h.step([(h.table(tokens: n), Self.prompt, 0)])[0]
        let table = h.table(tokens: n)
        var last: [Float] = []
        for i in 0..<n { last = try h.step([(table, [Self.prompt[i]], i)])[0] }
        #expect(Tolerance.relativeL2(last, full) < 1e-5, "\(type) \(mode)")
        #expect(full.allSatisfy { $0.isFinite })
    }

    @Test("sequences batched together equal each run alone; chunked prefill equals whole")
    func batchingAndChunking() throws {
        let h = try Harness(TinyLlama(), mode: .precise)
        let a = Array(Self.prompt[0..<9]), b = Array(Self.prompt[3..<14])
        let aloneA = try h.step([(h.table(tokens: 9), a, 0)])[0]
        let aloneB = try h.step([(h.table(tokens: 11), b, 0)])[0]
        // Sequence A decodes its last token while B prefills, in one step.
        let tableA = h.table(tokens: 9), tableB = h.table(tokens: 11)
        _ = try h.step([(tableA, Array(a[0..<8]), 0)])
        let mixed = try h.step([(tableA, [a[8]], 8), (tableB, Array(b[0..<5]), 0)])
        let chunked = try h.step([(tableB, Array(b[5..<11]), 5)])[0]
        #expect(Tolerance.relativeL2(mixed[0], aloneA) < 1e-5)
        #expect(Tolerance.relativeL2(chunked, aloneB) < 1e-5)
    }

    @Test("results do not depend on the thread count", arguments: [1, 3])
    func threadCountInvariant(threads: Int) throws {
        let one = try Harness(TinyLlama(), mode: .fast, threads: 1)
        let many = try Harness(TinyLlama(), mode: .fast, threads: threads)
        let x = try one.step([(one.table(tokens: 14), Self.prompt, 0)])[0]
        let y = try many.step([(many.table(tokens: 14), Self.prompt, 0)])[0]
        #expect(x == y)
    }
}

@Suite struct BlockAllocatorTests {
    @Test("reserving grows tables block by block and release returns every block")
    func reserveRelease() {
        var a = BlockAllocator(blockCount: 4, blockSize: 16)
        var t1: [Int32] = [], t2: [Int32] = []
        #expect(a.reserve(&t1, tokens: 17) && t1.count == 2)
        #expect(a.reserve(&t2, tokens: 32) && t2.count == 2)
        #expect(!a.reserve(&t1, tokens: 33))
        #expect(t1.count == 2 && a.freeBlocks == 0)
        a.release(&t1)
        #expect(a.freeBlocks == 2 && t1.isEmpty)
        a.share(t2)
        a.release(&t2)
        #expect(a.freeBlocks == 2)
    }
}

@Suite struct PipelineStageWeightTests {
    @Test("only the last pipeline stage packs the output head (an earlier stage only looks up embeddings)",
          .enabled(if: PackedWeights.isSupported, "this CPU runs no panel kernels"), arguments: [true, false])
    func outputPackedOnLastStage(tied: Bool) throws {
        var tiny = TinyLlama()
        tiny.tiedOutput = tied
        let path = try tiny.writer().write(named: "stages")
        defer { TemporaryFiles.remove(path) }
        for stage in 0..<2 {
            let options = ModelOptions(threads: 1, mode: .fast, kvCacheBytes: 1 << 20, pipelineStage: stage, pipelineStages: 2)
            let weights = try LoadedModel(path: path, options: options).model.weights
            #expect((weights.output.packed != nil) == (stage == 1), "stage \(stage), tied \(tied)")
            #expect(weights.layers.allSatisfy { $0.gate.packed != nil }, "stage \(stage)")
        }
    }
}

@Suite struct CorruptWeightTests {
    /// A tiny model in Q5_1 (converted to Q8_0 in fast mode) whose `blk.1.ffn_down` has a
    /// NaN scale in row 5's third block (columns 64…95).
    func corruptModel() throws -> String {
        var tiny = TinyLlama()
        tiny.matrixType = .q5_1
        var writer = tiny.writer()
        let blocksPerRow = tiny.feedForwardSize / 32, blockBytes = TensorType.q5_1.byteCount(values: 32)!
        writer.modifyTensor("blk.1.ffn_down.weight") { bytes in
            let at = (5 * blocksPerRow + 2) * blockBytes
            bytes[at] = 0x00
            bytes[at + 1] = 0x7E  // half-precision NaN
        }
        return try writer.write(named: "corrupt-weights")
    }

    @Test("a weight that decodes to NaN in a converted matrix fails the load naming tensor, row and column",
          arguments: [(1, 0), (2, 1)])
    func nanWeightIsALoadError(stages: Int, stage: Int) throws {
        let path = try corruptModel()
        defer { TemporaryFiles.remove(path) }
        let options = ModelOptions(threads: 1, mode: .fast, kvCacheBytes: 1 << 20, pipelineStage: stage, pipelineStages: stages)
        do {
            _ = try LoadedModel(path: path, options: options)
            Issue.record("a NaN weight loaded without an error")
        } catch let error as GGUFError {
            #expect("\(error)".contains("blk.1.ffn_down.weight") && "\(error)".contains("nan at row 5, column 64"), "\(error)")
        }
        // Precise mode reads the matrix as stored (no conversion): it loads, as llama.cpp does.
        _ = try LoadedModel(path: path, options: ModelOptions(threads: 1, mode: .precise, kvCacheBytes: 1 << 20))
    }
}
