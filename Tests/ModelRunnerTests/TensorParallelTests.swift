import Collectives
import ExecutorCore
import ExecutorTestSupport
import Foundation
import Kernels
import ModelRunner
import Synchronization
import Testing

/// Tensor-parallel shards, one thread per rank, joined by a real shared-memory communicator,
/// against the whole model.
@Suite struct TensorParallelTests {
    struct Shape: Sendable, CustomStringConvertible {
        var heads: Int, kvHeads: Int, hidden: Int, ffn: Int
        var description: String { "\(heads) heads / \(kvHeads) KV, hidden \(hidden), FFN \(ffn)" }
    }

    static let shapes = [
        Shape(heads: 6, kvHeads: 3, hidden: 192, ffn: 128),  // TP 2 splits KV heads 2 + 1
        Shape(heads: 4, kvHeads: 4, hidden: 128, ffn: 128),  // GQA ratio 1
        Shape(heads: 8, kvHeads: 2, hidden: 256, ffn: 96),  // GQA ratio 4, FFN split 2 + 1 blocks
    ]

    /// Logits of the last prompt token and of one decode step after it, for one rank count.
    func logits(_ path: String, ranks: Int, mode: NumericMode) throws -> [[Float]] {
        let prompt: [Int32] = [5, 77, 200, 3, 14, 15, 92, 65, 35]
        let root = ranks > 1 ? try SharedMemoryCommunicator.create(ranks: ranks, capacity: 4096) : nil
        defer { root?.close() }
        let results = Mutex<[[Float]]>([])
        let errors = Mutex<[String]>([])
        let done = Mutex(0)
        for rank in 0..<ranks {
            Thread {
                defer { done.withLock { $0 += 1 } }
                do {
                    let group = try root.map { rank == 0 ? $0 : try SharedMemoryCommunicator.attach(name: $0.name, rank: rank) }
                    let loaded = try LoadedModel(
                        path: path, options: ModelOptions(threads: 1, mode: mode, kvCacheBytes: 1 << 20, blockSize: 4, maxBatchTokens: 16),
                        group: group)
                    let vocabulary = loaded.configuration.vocabularySize
                    var allocator = BlockAllocator(blockCount: loaded.model.cache.blockCount, blockSize: 4)
                    var table: [Int32] = []
                    _ = allocator.reserve(&table, tokens: prompt.count + 1)
                    var out = [Float](repeating: 0, count: vocabulary)
                    var batch = ForwardBatch()
                    batch.append(prompt, startPosition: 0, blockTable: table, wantLogits: true)
                    try out.withUnsafeMutableBufferPointer { try loaded.model.forward(batch, logits: $0.baseAddress!) }
                    let first = out
                    batch.removeAll()
                    batch.append([42], startPosition: prompt.count, blockTable: table, wantLogits: true)
                    try out.withUnsafeMutableBufferPointer { try loaded.model.forward(batch, logits: $0.baseAddress!) }
                    if rank == 0 { results.withLock { $0 = [first, out] } }
                } catch {
                    errors.withLock { $0.append("rank \(rank): \(error)") }
                }
            }.start()
        }
        while done.withLock({ $0 }) < ranks { usleep(1_000) }
        let failures = errors.withLock { $0 }
        try #require(failures.isEmpty, "\(failures)")
        return results.withLock { $0 }
    }

    @Test("TP 2 and 3 give the logits of TP 1 up to reduction order", arguments: shapes, NumericMode.allCases)
    func matchesSingleRank(shape: Shape, mode: NumericMode) throws {
        var tiny = TinyLlama()
        tiny.attentionHeads = shape.heads
        tiny.kvHeads = shape.kvHeads
        tiny.hiddenSize = shape.hidden
        tiny.feedForwardSize = shape.ffn
        tiny.layers = 3
        let path = try tiny.write()
        defer { TemporaryFiles.remove(path) }
        let reference = try logits(path, ranks: 1, mode: mode)
        for ranks in [2, 3] where ranks <= shape.kvHeads && shape.ffn / 32 >= ranks {
            let sharded = try logits(path, ranks: ranks, mode: mode)
            for (got, want) in zip(sharded, reference) {
                #expect(Tolerance.relativeL2(got, want) < 1e-4, "\(shape), TP \(ranks), \(mode)")
            }
        }
    }

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
