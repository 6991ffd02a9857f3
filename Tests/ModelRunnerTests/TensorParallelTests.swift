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
        #expect(throws: LayoutError("TP 10 is larger than the model's 9 query heads: every tensor-parallel rank needs at least one")) {
            try TensorShard.plan(c, rank: 0, ranks: 10)
        }
    }

    @Test("beyond the KV-head count, query heads are split and each rank holds a copy of the KV heads they read")
    func replicatedKVHeads() throws {
        // Qwen2.5-0.5B: 14 query heads over 2 KV heads of 64.
        let c = LlamaConfiguration(
            architecture: .qwen2, layers: 24, hiddenSize: 896, feedForwardSize: 4864, attentionHeads: 14, kvHeads: 2, vocabularySize: 151_936)
        let three = try (0..<3).map { try TensorShard.plan(c, rank: $0, ranks: 3) }
        #expect(three.map(\.queryHeads) == [0..<5, 5..<10, 10..<14])
        #expect(three.map(\.kvHeads) == [0..<1, 0..<2, 1..<2])
        // Rank 1's heads 5, 6 read KV head 0 and 7, 8, 9 read KV head 1.
        #expect(three.map { $0.headGroups(c) } == [[0..<5], [0..<2, 2..<5], [0..<4]])
        #expect(three.map { $0.local(c).kvDimensions } == [64, 128, 64])
        let fourteen = try (0..<14).map { try TensorShard.plan(c, rank: $0, ranks: 14) }
        #expect(fourteen.allSatisfy { $0.queryHeads.count == 1 && $0.kvHeads.count == 1 && $0.headGroups(c) == [0..<1] })
        #expect(fourteen.map(\.kvHeads.lowerBound) == Array(repeating: 0, count: 7) + Array(repeating: 1, count: 7))
        // Up to the KV-head count nothing changes: whole groups per rank.
        let two = try (0..<2).map { try TensorShard.plan(c, rank: $0, ranks: 2) }
        #expect(two.map(\.queryHeads) == [0..<7, 7..<14] && two.map { $0.headGroups(c) } == [[0..<7], [0..<7]])
        // Heads of 16 values: a cut after the first head is not on a 32-value block.
        let narrow = LlamaConfiguration(layers: 2, hiddenSize: 48, feedForwardSize: 96, attentionHeads: 3, kvHeads: 1, vocabularySize: 300)
        #expect(throws: LayoutError(
            "TP 3 would start rank 1's query heads at value 16 of the attention output, which is not on a 32-value block (heads of 16)")) {
            try TensorShard.plan(narrow, rank: 0, ranks: 3)
        }
    }
}
