public import ExecutorCore

/// Which part of a Llama model one tensor-parallel rank holds.
///
/// KV heads are split as evenly as possible, first ranks taking the extra ones (9 query
/// heads over 3 KV heads at TP 2: 2 + 1 KV-head groups, with their query heads); the FFN
/// and the vocabulary are split as evenly as the 32-value blocks allow. Q, K, V, gate and
/// up are column-parallel (row shards of the matrices); the attention output and down
/// projections are row-parallel (column shards) and need one all-reduce each per layer;
/// the embedding and output head are vocabulary-parallel.
public struct TensorShard: Sendable, Equatable {
    public let rank: Int
    public let ranks: Int
    public let kvHeads: Range<Int>
    public let feedForward: Range<Int>
    public let vocabulary: Range<Int>

    /// The whole model (TP 1).
    public static func whole(_ c: LlamaConfiguration) -> TensorShard {
        TensorShard(rank: 0, ranks: 1, kvHeads: 0..<c.kvHeads, feedForward: 0..<c.feedForwardSize, vocabulary: 0..<c.vocabularySize)
    }

    init(rank: Int, ranks: Int, kvHeads: Range<Int>, feedForward: Range<Int>, vocabulary: Range<Int>) {
        self.rank = rank
        self.ranks = ranks
        self.kvHeads = kvHeads
        self.feedForward = feedForward
        self.vocabulary = vocabulary
    }

    /// The shard of `rank` among `ranks`.
    /// - Throws: when there are more ranks than KV heads or the FFN cannot be split on blocks.
    public static func plan(_ c: LlamaConfiguration, rank: Int, ranks: Int) throws(LayoutError) -> TensorShard {
        guard ranks >= 1, rank >= 0, rank < ranks else {
            throw LayoutError("tensor-parallel rank \(rank) is outside 0..<\(ranks)")
        }
        guard ranks <= c.kvHeads else {
            throw LayoutError("TP \(ranks) is larger than the model's \(c.kvHeads) KV heads: every tensor-parallel rank needs at least one")
        }
        func split(_ count: Int, unit: Int) -> Range<Int> {
            let units = count / unit
            let base = units / ranks, extra = units % ranks
            let begin = rank * base + min(rank, extra)
            let end = begin + base + (rank < extra ? 1 : 0)
            return (begin * unit)..<(rank == ranks - 1 ? count : end * unit)
        }
        guard c.feedForwardSize % 32 == 0, c.feedForwardSize / 32 >= ranks else {
            throw LayoutError("TP \(ranks) cannot split an FFN of \(c.feedForwardSize) into 32-value blocks, one or more per rank")
        }
        return TensorShard(
            rank: rank, ranks: ranks, kvHeads: split(c.kvHeads, unit: 1), feedForward: split(c.feedForwardSize, unit: 32),
            vocabulary: split(c.vocabularySize, unit: 1))
    }

    /// The configuration this shard computes with: its own heads and FFN width.
    public func local(_ c: LlamaConfiguration) -> LlamaConfiguration {
        var local = c
        let group = c.attentionHeads / c.kvHeads
        local.kvHeads = kvHeads.count
        local.attentionHeads = kvHeads.count * group
        local.feedForwardSize = feedForward.count
        return local
    }

    /// Largest vocabulary share of any rank (the all-gather stride of logits).
    public func maxVocabularyShare(_ c: LlamaConfiguration) -> Int { (c.vocabularySize + ranks - 1) / ranks }
}
