import ExecutorCore
import ModelRunner
import Testing

/// How tensor-parallel shards split a model. (Their logits against the whole model, in
/// every TP × PP grid, are checked in `PipelineParallelTests`.)
@Suite struct TensorParallelTests {
    @Test("shards split KV heads, FFN blocks and the vocabulary as evenly as possible")
    func plans() throws {
        let c = LlamaConfiguration(layers: 30, hiddenSize: 576, feedForwardSize: 1536, attentionHeads: 9, kvHeads: 3, vocabularySize: 49152)
        let two = try (0..<2).map { try TensorShard.plan(c, rank: $0, ranks: 2) }
        #expect(two.map(\.kvHeads) == [0..<2, 2..<3])
        #expect(two.map(\.feedForward) == [0..<768, 768..<1536])
        #expect(two.map(\.vocabulary) == [0..<24576, 24576..<49152])
        #expect(two[1].local(c).attentionHeads == 3 && two[0].local(c).attentionHeads == 6)
        #expect(throws: LayoutError("TP 4 is larger than the model's 3 KV heads: every tensor-parallel rank needs at least one")) {
            try TensorShard.plan(c, rank: 0, ranks: 4)
        }
    }
}
