public import ExecutorCore

/// Which part of a Llama model one tensor-parallel rank holds.
///
/// Up to the KV-head count, KV heads are split as evenly as possible, first ranks taking
/// the extra ones (9 query heads over 3 KV heads at TP 2: 2 + 1 KV-head groups, with their
/// query heads). Beyond it, as vLLM does, query heads are split as evenly as possible and
/// each rank holds a copy of every KV head its query heads read (14 query heads over 2 KV
/// heads at TP 3: 5 + 5 + 4 query heads; the middle rank reads both KV heads). The FFN and
/// the vocabulary are split as evenly as the 32-value blocks allow. Q, K, V, gate and up
/// are column-parallel (row shards of the matrices, biases split with them); the attention
/// output and down projections are row-parallel (column shards) and need one all-reduce
/// each per layer; the embedding and output head are vocabulary-parallel.
public struct TensorShard: Sendable, Equatable {
    public let rank: Int
    public let ranks: Int
    /// The query heads this rank computes (global indices).
    public let queryHeads: Range<Int>
    /// The KV heads those query heads read (global indices); neighbours may share one.
    public let kvHeads: Range<Int>
    public let feedForward: Range<Int>
    public let vocabulary: Range<Int>

    /// The whole model (TP 1).
    public static func whole(_ c: LlamaConfiguration) -> TensorShard {
        TensorShard(
            rank: 0, ranks: 1, queryHeads: 0..<c.attentionHeads, kvHeads: 0..<c.kvHeads, feedForward: 0..<c.feedForwardSize,
            vocabulary: 0..<c.vocabularySize)
    }

    init(rank: Int, ranks: Int, queryHeads: Range<Int>, kvHeads: Range<Int>, feedForward: Range<Int>, vocabulary: Range<Int>) {
        self.rank = rank
        self.ranks = ranks
        self.queryHeads = queryHeads
        self.kvHeads = kvHeads
        self.feedForward = feedForward
        self.vocabulary = vocabulary
    }

    /// The shard of `rank` among `ranks`.
    /// - Throws: when there are more ranks than query heads, a rank's heads would not start
    ///   on a 32-value block of the attention output, or the FFN cannot be split on blocks.
    public static func plan(_ c: LlamaConfiguration, rank: Int, ranks: Int) throws(LayoutError) -> TensorShard {
        guard ranks >= 1, rank >= 0, rank < ranks else {
            throw LayoutError("tensor-parallel rank \(rank) is outside 0..<\(ranks)")
        }
        guard ranks <= c.attentionHeads else {
            throw LayoutError("TP \(ranks) is larger than the model's \(c.attentionHeads) query heads: every tensor-parallel rank needs at least one")
        }
        func split(_ count: Int, unit: Int, rank: Int) -> Range<Int> {
            let units = count / unit
            let base = units / ranks, extra = units % ranks
            let begin = rank * base + min(rank, extra)
            let end = begin + base + (rank < extra ? 1 : 0)
            return (begin * unit)..<(rank == ranks - 1 ? count : end * unit)
        }
        guard c.feedForwardSize % 32 == 0, c.feedForwardSize / 32 >= ranks else {
            throw LayoutError("TP \(ranks) cannot split an FFN of \(c.feedForwardSize) into 32-value blocks, one or more per rank")
        }
        let group = c.attentionHeads / c.kvHeads
        let queryHeads: Range<Int>, kvHeads: Range<Int>
        if ranks <= c.kvHeads {
            kvHeads = split(c.kvHeads, unit: 1, rank: rank)
            queryHeads = (kvHeads.lowerBound * group)..<(kvHeads.upperBound * group)
        } else {
            queryHeads = split(c.attentionHeads, unit: 1, rank: rank)
            kvHeads = (queryHeads.lowerBound / group)..<((queryHeads.upperBound - 1) / group + 1)
        }
        // The attention output is cut by columns at head boundaries: those must fall on blocks.
        for r in 0..<ranks {
            let heads = ranks <= c.kvHeads
                ? split(c.kvHeads, unit: 1, rank: r).lowerBound * group : split(c.attentionHeads, unit: 1, rank: r).lowerBound
            guard heads * c.headDimensions % 32 == 0 else {
                throw LayoutError(
                    "TP \(ranks) would start rank \(r)'s query heads at value \(heads * c.headDimensions) of the attention output, which is not on a 32-value block (heads of \(c.headDimensions))")
            }
        }
        return TensorShard(
            rank: rank, ranks: ranks, queryHeads: queryHeads, kvHeads: kvHeads, feedForward: split(c.feedForwardSize, unit: 32, rank: rank),
            vocabulary: split(c.vocabularySize, unit: 1, rank: rank))
    }

    /// The configuration this shard computes with: its own heads and FFN width.
    public func local(_ c: LlamaConfiguration) -> LlamaConfiguration {
        var local = c
        local.kvHeads = kvHeads.count
        local.attentionHeads = queryHeads.count
        local.feedForwardSize = feedForward.count
        return local
    }

    /// For each of this shard's KV heads, the range of its own query heads (local indices)
    /// that read it. Uniform (`group` each) up to the KV-head count; beyond, the first and
    /// last may be shorter.
    public func headGroups(_ c: LlamaConfiguration) -> [Range<Int>] {
        let group = c.attentionHeads / c.kvHeads
        return kvHeads.map { kv in
            let global = max(kv * group, queryHeads.lowerBound)..<min((kv + 1) * group, queryHeads.upperBound)
            return (global.lowerBound - queryHeads.lowerBound)..<(global.upperBound - queryHeads.lowerBound)
        }
    }

    /// Largest vocabulary share of any rank (the all-gather stride of logits).
    public func maxVocabularyShare(_ c: LlamaConfiguration) -> Int { (c.vocabularySize + ranks - 1) / ranks }
}
