import ExecutorCore
import ExecutorTestSupport
import Kernels
import ModelRunner
import Testing

/// Pipeline stages (and tensor-parallel shards within each stage, one thread per rank,
/// joined by real shared-memory communicators), against the whole model: stage after
/// stage, each stage's rank 0 hands its hidden states to the next.
@Suite struct PipelineParallelTests {
    @Test("an even split gives the extra layers to the stages before the last")
    func evenSplit() throws {
        #expect(try PipelineStage.plan(layers: 30, stages: 3).map(\.layers) == [0..<10, 10..<20, 20..<30])
        #expect(try PipelineStage.plan(layers: 5, stages: 2).map(\.layers) == [0..<3, 3..<5])
        #expect(try PipelineStage.plan(layers: 7, stages: 3).map(\.layers) == [0..<2, 2..<5, 5..<7])
        #expect(try PipelineStage.plan(layers: 8, stages: 3).map(\.layers) == [0..<3, 3..<6, 6..<8])
        #expect(try PipelineStage.plan(layers: 5, stages: 1).map(\.layers) == [0..<5])
        let explicit = try PipelineStage.plan(layers: 30, stages: 3, layerCounts: [12, 10, 8])
        #expect(explicit.map(\.layers) == [0..<12, 12..<22, 22..<30])
        #expect(explicit.map(\.isFirst) == [true, false, false] && explicit.map(\.isLast) == [false, false, true])
    }

    @Test("a balanced split gives the last stage fewer layers for the output head's work")
    func balancedSplit() throws {
        // SmolLM2-135M: the head (49152 × 576) weighs as much as 8 layers, and counts half.
        let c = LlamaConfiguration(layers: 30, hiddenSize: 576, feedForwardSize: 1536, attentionHeads: 9, kvHeads: 3, vocabularySize: 49152)
        #expect(try PipelineStage.balancedLayerCounts(c, stages: 1) == [30])
        #expect(try PipelineStage.balancedLayerCounts(c, stages: 2) == [17, 13])
        let three = try PipelineStage.balancedLayerCounts(c, stages: 3)
        #expect(three.reduce(0, +) == 30 && three[2] < three[0], "\(three)")
        #expect(throws: LayoutError.self) { try PipelineStage.balancedLayerCounts(c, stages: 31) }
    }

    @Test("impossible pipeline splits are named")
    func impossibleSplits() {
        #expect(throws: LayoutError("PP 31 is larger than the model's 30 layers: every pipeline stage needs at least one")) {
            try PipelineStage.plan(layers: 30, stages: 31)
        }
        #expect(throws: LayoutError("the pipeline layer split 10,10,9 adds up to 29 layers; the model has 30")) {
            try PipelineStage.plan(layers: 30, stages: 3, layerCounts: [10, 10, 9])
        }
        #expect(throws: LayoutError("the pipeline layer split 15,15 has 2 stages; expected 3, one per pipeline stage")) {
            try PipelineStage.plan(layers: 30, stages: 3, layerCounts: [15, 15])
        }
        #expect(throws: LayoutError("the pipeline layer split 30,0 gives a stage no layers; every stage needs at least one")) {
            try PipelineStage.plan(layers: 30, stages: 2, layerCounts: [30, 0])
        }
    }

    @Test("the KV cache is sized to the smallest worker of the grid")
    func gridBlocks() throws {
        let c = LlamaConfiguration(layers: 30, hiddenSize: 576, feedForwardSize: 1536, attentionHeads: 9, kvHeads: 3, vocabularySize: 49152)
        let whole = try ModelGrid(configuration: c, layout: .single)
        let perBlock = PagedKVCache.bytesPerBlock(layers: 30, blockSize: 16, kvDimensions: 192, element: .f16)
        #expect(whole.kvBlocks(budgetBytes: 64 << 20, blockSize: 16, element: .f16) == (64 << 20) / perBlock)
        // PP 2 with 20 + 10 layers and TP 2 (2 + 1 KV heads): the 20-layer, 2-head ranks hold the fewest.
        let grid = try ModelGrid(configuration: c, layout: try ParallelLayout(tensorParallel: 2, pipelineParallel: 2), layerCounts: [20, 10])
        let smallest = PagedKVCache.bytesPerBlock(layers: 20, blockSize: 16, kvDimensions: 128, element: .f16)
        #expect(grid.kvBlocks(budgetBytes: 64 << 20, blockSize: 16, element: .f16) == (64 << 20) / smallest)
    }

    struct Shape: Sendable, CustomStringConvertible {
        var heads: Int, kvHeads: Int, hidden: Int, ffn: Int, layers: Int
        var matrixType: TensorType = .q4_1
        var architecture = "llama"
        var headDimensions: Int? = nil
        var description: String {
            "\(architecture): \(heads) heads / \(kvHeads) KV\(headDimensions.map { " of \($0)" } ?? ""), hidden \(hidden), FFN \(ffn), \(layers) layers, \(matrixType)"
        }
    }

    static let shapes = [
        Shape(heads: 6, kvHeads: 3, hidden: 192, ffn: 128, layers: 3),  // TP 2 splits KV heads 2 + 1
        Shape(heads: 4, kvHeads: 4, hidden: 128, ffn: 128, layers: 5),  // GQA 1, odd layer count
        Shape(heads: 8, kvHeads: 2, hidden: 256, ffn: 96, layers: 4),  // GQA 4
        // K-quants: TP 2 and 3 cut rows of 256 (one super-block) into 128 + 128 and
        // 128 + 64 + 64, and FFN rows of 512 into 192 + 160 + 160: converted shards.
        Shape(heads: 8, kvHeads: 4, hidden: 256, ffn: 512, layers: 3, matrixType: .q4_K),
        Shape(heads: 8, kvHeads: 4, hidden: 256, ffn: 512, layers: 3, matrixType: .q6_K),
        // Biases and half-split rotation; TP 3 over 2 KV heads replicates them, and the
        // middle rank's query heads read both.
        Shape(heads: 6, kvHeads: 2, hidden: 192, ffn: 128, layers: 3, architecture: "qwen2"),
        // Per-head Q/K norms, heads wider than hidden / heads.
        Shape(heads: 4, kvHeads: 2, hidden: 64, ffn: 96, layers: 3, architecture: "qwen3", headDimensions: 32),
    ]

    /// Stages alone change no arithmetic: their logits are bit-identical. Tensor parallelism
    /// sums in another order; in `.precise` that stays within 1e-4 (the issue's bound), while
    /// `.fast` re-quantizes activations to 8 bits after every layer, so a last-bit difference
    /// can flip a rounding and grow over the layers: a looser bound there.
    @Test("every TP × PP grid up to 3 × 3 gives the logits of one worker", arguments: shapes, NumericMode.allCases)
    func matchesSingleWorker(shape: Shape, mode: NumericMode) throws {
        var tiny = TinyLlama()
        tiny.attentionHeads = shape.heads
        tiny.kvHeads = shape.kvHeads
        tiny.hiddenSize = shape.hidden
        tiny.feedForwardSize = shape.ffn
        tiny.layers = shape.layers
        tiny.matrixType = shape.matrixType
        tiny.architecture = shape.architecture
        tiny.headDimensions = shape.headDimensions
        let path = try tiny.write()
        defer { TemporaryFiles.remove(path) }
        let reference = try GridLogits.run(path, tp: 1, pp: 1, mode: mode)
        let vocabulary = tiny.vocabularySize
        #expect(reference.allSatisfy { $0.count == vocabulary })
        for tp in 1...3 where tp <= shape.heads && shape.ffn / 32 >= tp {
            for pp in 1...3 where tp * pp > 1 {
                let got = try GridLogits.run(path, tp: tp, pp: pp, mode: mode)
                let bound = tp == 1 ? 0 : mode == .precise ? 1e-4 : 2e-2
                for (g, want) in zip(got, reference) {
                    #expect(Tolerance.relativeL2(g, want) <= bound, "\(shape), TP \(tp) × PP \(pp), \(mode)")
                }
            }
        }
    }

    /// Fast mode runs converted copies of these formats (8-bit activations, Q8_0 or Q4_1
    /// weights; Q5_0 as stored, in panels where they run); precise mode decodes them exactly. The two must agree as closely as they
    /// do on a format the kernels read as stored.
    @Test("fast mode on converted K-quant and 5-bit weights stays as close to precise mode as Q4_1 does",
          arguments: [TensorType.q2_K, .q3_K, .q4_K, .q5_K, .q6_K, .q5_0, .q5_1])
    func convertedFormatsNearPrecise(type: TensorType) throws {
        let got = try Self.fastPreciseGap(type)
        #expect(got <= max(2 * Self.q41Gap, 0.02), "\(type): fast vs precise \(got), Q4_1's \(Self.q41Gap)")
    }

    static let q41Gap = (try? fastPreciseGap(.q4_1)) ?? .nan

    /// The largest relative L2 gap between fast-mode and precise-mode logits of a tiny model.
    static func fastPreciseGap(_ matrixType: TensorType) throws -> Double {
        var tiny = TinyLlama()
        tiny.hiddenSize = 256
        tiny.feedForwardSize = 256
        tiny.matrixType = matrixType
        let path = try tiny.write()
        defer { TemporaryFiles.remove(path) }
        let fast = try GridLogits.run(path, tp: 1, pp: 1, mode: .fast)
        let precise = try GridLogits.run(path, tp: 1, pp: 1, mode: .precise)
        return zip(fast, precise).map { Tolerance.relativeL2($0, $1) }.max() ?? .nan
    }
}
