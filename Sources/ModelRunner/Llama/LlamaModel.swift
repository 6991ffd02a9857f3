public import Kernels
public import ExecutorCore

/// The Llama forward pass on the CPU: embedding, `layers` × (RMSNorm, GQA attention with
/// RoPE over the paged KV cache, RMSNorm, SwiGLU MLP), final norm, output head.
///
/// A model owns its scratch, cache and thread pool and runs on one thread at a time (its
/// worker's); nothing in `forward` allocates. Shapes per step, T = batch tokens:
/// x, xn: [T, hidden]; q: [T, heads·hd]; k, v: [T, kvHeads·hd]; gate, up: [T, ffn].
public final class LlamaModel {
    /// The whole model's configuration.
    public let configuration: LlamaConfiguration
    /// What this instance computes: its shard's heads and FFN width (the whole model at TP 1).
    public let local: LlamaConfiguration
    public let shard: TensorShard
    /// The layers this instance runs (all of them at PP 1).
    public let stage: PipelineStage
    /// The tensor-parallel group (nil at TP 1).
    public let group: (any TensorParallelGroup)?
    /// Every rank's vocabulary range, to assemble gathered logits.
    private let vocabularyRanges: [Range<Int>]
    public let weights: LlamaWeights
    /// Packed copies of the matrices (fast mode on CPUs with the panel kernels), kept alive
    /// as long as `weights` points into them.
    private let packedWeights: PackedWeights?
    /// Copies of matrices whose format the kernels do not read as stored (see
    /// `ConvertedWeights`), kept alive as long as `weights` points into them.
    private let convertedWeights: ConvertedWeights
    public let cache: PagedKVCache
    public let mode: NumericMode
    public let maxBatchTokens: Int
    /// Longest sequence (prompt + output) this model instance can attend over.
    public let maxContext: Int
    public let pool: ThreadPool
    private let matmul: MatMul
    private let scratch: Scratch
    /// For each local KV head, the local query heads that read it.
    private let headGroups: [Range<Int>]
    /// Rotary frequency divisors (empty when the file has none).
    private let ropeFactors: [Float]

    public init(
        weights: LlamaWeights, configuration: LlamaConfiguration, cacheBlocks: Int, blockSize: Int,
        maxBatchTokens: Int, mode: NumericMode, threads: Int, shard: TensorShard? = nil, group: (any TensorParallelGroup)? = nil,
        stage: PipelineStage? = nil
    ) throws(GGUFError) {
        let shard = shard ?? .whole(configuration)
        let stage = stage ?? .whole(layers: configuration.layers)
        precondition(stage.layers.upperBound <= configuration.layers, "\(stage) is outside the model's \(configuration.layers) layers")
        precondition((group?.ranks ?? 1) == shard.ranks, "a shard of \(shard.ranks) ranks needs a group of that size")
        self.configuration = configuration
        self.shard = shard
        self.group = shard.ranks > 1 ? group : nil
        self.local = shard.local(configuration)
        self.vocabularyRanges = (0..<shard.ranks).map { (try? TensorShard.plan(configuration, rank: $0, ranks: shard.ranks))?.vocabulary ?? 0..<0 }
        self.stage = stage
        // A converted matrix is read from its copy: the mapping's pages of it can go.
        let mapping = weights.file.mappedFile
        let converted = ConvertedWeights { source, count in mapping.release(source, byteCount: count) }
        let mine = try weights.staged(stage).prepared(shard, configuration: configuration, mode: mode, storage: converted, output: stage.isLast)
        self.convertedWeights = converted
        if PackedWeights.isUsed(for: mode) {
            // Fast mode reads the copies: the mapping's pages of each matrix go once it is copied.
            let storage = PackedWeights { source, count in mapping.release(source, byteCount: count) }
            self.weights = mine.packed(into: storage, converted: converted, output: stage.isLast)
            self.packedWeights = storage
        } else {
            self.weights = mine
            self.packedWeights = nil
        }
        self.mode = mode
        self.maxBatchTokens = maxBatchTokens
        self.maxContext = min(configuration.contextLength, cacheBlocks * blockSize)
        let c = local
        cache = PagedKVCache(
            layers: stage.layers.count, blockCount: cacheBlocks, blockSize: blockSize, kvHeads: c.kvHeads,
            headDimensions: c.headDimensions, element: .default(for: mode))
        pool = ThreadPool(threads: threads)
        matmul = MatMul(
            maxTokens: maxBatchTokens,
            maxColumns: max(c.hiddenSize, c.feedForwardSize, c.queryDimensions).roundedUp(to: 32))
        headGroups = shard.headGroups(configuration)
        ropeFactors = weights.ropeFactors ?? []
        scratch = Scratch(
            configuration: c, maxTokens: maxBatchTokens, maxContext: maxContext, maxGroup: headGroups.map(\.count).max() ?? 1, threads: threads,
            vocabularyShare: shard.ranks > 1 && stage.isLast ? shard.maxVocabularyShare(configuration) : 0, ranks: shard.ranks)
    }

    // MARK: - Forward

    /// Runs one batched step of the whole model and writes `batch.logitTokens.count` rows
    /// of `vocabularySize` logits into `logits`.
    /// - Precondition: the batch fits `maxBatchTokens`, positions fit `maxContext`, token ids
    ///   are in the vocabulary and block tables cover every position (checked by the caller).
    /// - Throws: only when a tensor-parallel collective fails (a peer died or is stuck).
    public func forward(_ batch: ForwardBatch, logits: UnsafeMutablePointer<Float>) throws {
        precondition(stage.count == 1, "\(stage) needs forward(_:hiddenStates:output:)")
        try forward(batch, hiddenStates: nil, output: logits)
    }

    /// Runs this pipeline stage's part of one batched step.
    ///
    /// The first stage embeds `batch.tokens`; later stages start from `hiddenStates`, the
    /// previous stage's output ([T, hidden]). The last stage writes `batch.logitTokens.count`
    /// rows of logits into `output`; earlier stages write their hidden states ([T, hidden]).
    /// - Precondition: `hiddenStates` is nil exactly on the first stage; as for `forward(_:logits:)`.
    public func forward(_ batch: ForwardBatch, hiddenStates input: UnsafePointer<Float>?, output: UnsafeMutablePointer<Float>) throws {
        precondition(stage.isFirst == (input == nil), "\(stage): hidden states are the input of every stage but the first")
        let c = local
        let T = batch.tokens.count
        precondition(T > 0 && T <= maxBatchTokens, "batch of \(T) tokens exceeds \(maxBatchTokens)")
        let D = c.hiddenSize, hd = c.headDimensions, H = c.attentionHeads, KVH = c.kvHeads
        let qDim = c.queryDimensions, kvDim = c.kvDimensions, F = c.feedForwardSize
        let s = scratch
        let bs = cache.blockSize
        let pairs = c.rotaryDimensions / 2

        batch.tokens.withUnsafeBufferPointer { tokens in
            batch.positions.withUnsafeBufferPointer { positions in
                for t in 0..<T {
                    let token = Int(tokens[t])
                    precondition(token >= 0 && token < c.vocabularySize, "token \(token) outside the vocabulary")
                    if stage.isFirst {  // later stages start from the previous stage's states
                        if shard.vocabulary.contains(token) {
                            let row = weights.tokenEmbedding.row(token - shard.vocabulary.lowerBound)
                            Dequantize.row(weights.tokenEmbedding.type, from: row, into: s.x + t * D, count: D)
                        } else {
                            (s.x + t * D).update(repeating: 0, count: D)  // another rank holds this row
                        }
                    }
                    ropeFactors.withUnsafeBufferPointer { factors in
                        RoPE.table(position: Int(positions[t]), rotaryDimensions: c.rotaryDimensions, base: c.ropeTheta, scale: c.ropeScale,
                                   factors: factors.isEmpty ? nil : factors.baseAddress, cos: s.cos + t * pairs, sin: s.sin + t * pairs)
                    }
                }
            }
        }
        if let input {
            s.x.update(from: input, count: T * D)
        } else {
            try allReduce(s.x, count: T * D)
        }
        // Cache slot of every token of the batch.
        batch.positions.withUnsafeBufferPointer { positions in
            batch.sequenceOfToken.withUnsafeBufferPointer { sequenceOf in
                batch.blockTables.withUnsafeBufferPointer { tables in
                    batch.tableStart.withUnsafeBufferPointer { tableStart in
                        for t in 0..<T {
                            let p = Int(positions[t])
                            precondition(p < maxContext, "position \(p) exceeds the context of \(maxContext)")
                            let table = Int(tableStart[Int(sequenceOf[t])])
                            s.slots[t] = tables[table + p / bs] * Int32(bs) + Int32(p % bs)
                        }
                    }
                }
            }
        }

        for (layerIndex, layer) in weights.layers.enumerated() {
            // Attention block.
            layer.attentionNorm.withUnsafeBufferPointer { norm in
                for t in 0..<T {
                    VectorMath.rmsNorm(s.x + t * D, weight: norm.baseAddress!, epsilon: c.rmsNormEpsilon, into: s.xn + t * D, count: D)
                }
            }
            matmul.run(
                input: s.xn, inputStride: D, tokens: T,
                Projection(layer.query, into: s.q), Projection(layer.key, into: s.k), Projection(layer.value, into: s.v),
                mode: mode, pool: pool)
            if let bias = layer.queryBias { addBias(bias, to: s.q, tokens: T) }
            if let bias = layer.keyBias { addBias(bias, to: s.k, tokens: T) }
            if let bias = layer.valueBias { addBias(bias, to: s.v, tokens: T) }
            if let norm = layer.queryNorm { normalizeHeads(s.q, heads: T * H, weight: norm) }
            if let norm = layer.keyNorm { normalizeHeads(s.k, heads: T * KVH, weight: norm) }
            let layout = configuration.architecture.ropeLayout
            for t in 0..<T {
                RoPE.apply(s.q + t * qDim, heads: H, headDimensions: hd, pairs: pairs, layout: layout, cos: s.cos + t * pairs, sin: s.sin + t * pairs)
                RoPE.apply(s.k + t * kvDim, heads: KVH, headDimensions: hd, pairs: pairs, layout: layout, cos: s.cos + t * pairs, sin: s.sin + t * pairs)
                let slot = Int(s.slots[t])
                cache.store(layer: layerIndex, slot: slot, key: s.k + t * kvDim, value: s.v + t * kvDim)
            }
            attention(layer: layerIndex, batch: batch)
            matmul.run(input: s.attention, inputStride: qDim, tokens: T, Projection(layer.attentionOutput, into: s.xn),
                       mode: mode, pool: pool)
            try allReduce(s.xn, count: T * D)
            VectorMath.add(s.xn, into: s.x, count: T * D)

            // Feed-forward block.
            layer.feedForwardNorm.withUnsafeBufferPointer { norm in
                for t in 0..<T {
                    VectorMath.rmsNorm(s.x + t * D, weight: norm.baseAddress!, epsilon: c.rmsNormEpsilon, into: s.xn + t * D, count: D)
                }
            }
            matmul.run(input: s.xn, inputStride: D, tokens: T, Projection(layer.gate, into: s.gate), Projection(layer.up, into: s.up),
                       mode: mode, pool: pool)
            VectorMath.swiglu(s.gate, up: s.up, count: T * F)
            matmul.run(input: s.gate, inputStride: F, tokens: T, Projection(layer.down, into: s.xn), mode: mode, pool: pool)
            try allReduce(s.xn, count: T * D)
            VectorMath.add(s.xn, into: s.x, count: T * D)
        }

        guard stage.isLast else {
            output.update(from: s.x, count: T * D)
            return
        }
        let logits = output
        // Final norm and output head, only for the tokens whose logits are wanted.
        let wanted = batch.logitTokens.count
        guard wanted > 0 else { return }
        weights.outputNorm.withUnsafeBufferPointer { norm in
            batch.logitTokens.withUnsafeBufferPointer { rows in
                for (i, t) in rows.enumerated() {
                    VectorMath.rmsNorm(s.x + Int(t) * D, weight: norm.baseAddress!, epsilon: c.rmsNormEpsilon, into: s.xn + i * D, count: D)
                }
            }
        }
        guard let group else {
            matmul.run(input: s.xn, inputStride: D, tokens: wanted, Projection(weights.output, into: logits), mode: mode, pool: pool)
            return
        }
        // Vocabulary-parallel head: each rank computes its share, padded to the largest
        // share, then the shares are gathered and laid out row by row.
        let share = shard.maxVocabularyShare(configuration)
        matmul.run(input: s.xn, inputStride: D, tokens: wanted, Projection(weights.output, into: s.localLogits, stride: share),
                   mode: mode, pool: pool)
        try group.allGather(
            UnsafeBufferPointer(start: s.localLogits, count: wanted * share),
            into: UnsafeMutableBufferPointer(start: s.gatheredLogits, count: shard.ranks * wanted * share))
        let vocabulary = configuration.vocabularySize
        for (r, range) in vocabularyRanges.enumerated() {
            for w in 0..<wanted {
                (logits + w * vocabulary + range.lowerBound).update(from: s.gatheredLogits + (r * wanted + w) * share, count: range.count)
            }
        }
    }

    /// Adds `bias` to each of `tokens` rows of `bias.count` floats.
    private func addBias(_ bias: [Float], to rows: UnsafeMutablePointer<Float>, tokens: Int) {
        bias.withUnsafeBufferPointer { b in
            for t in 0..<tokens { VectorMath.add(b.baseAddress!, into: rows + t * b.count, count: b.count) }
        }
    }

    /// RMS-normalizes each of `heads` consecutive head vectors in place (Q/K norms).
    private func normalizeHeads(_ x: UnsafeMutablePointer<Float>, heads: Int, weight: [Float]) {
        weight.withUnsafeBufferPointer { w in
            let hd = w.count
            withUnsafeTemporaryAllocation(of: Float.self, capacity: hd) { scratch in
                for h in 0..<heads {
                    VectorMath.rmsNorm(x + h * hd, weight: w.baseAddress!, epsilon: local.rmsNormEpsilon, into: scratch.baseAddress!, count: hd)
                    (x + h * hd).update(from: scratch.baseAddress!, count: hd)
                }
            }
        }
    }

    /// Sums a buffer over the tensor-parallel group (nothing at TP 1).
    private func allReduce(_ buffer: UnsafeMutablePointer<Float>, count: Int) throws {
        try group?.allReduceSum(UnsafeMutableBufferPointer(start: buffer, count: count))
    }

    /// Causal grouped-query attention of every batch token over its sequence's cached keys
    /// and values (positions 0…its own), split over the pool by (token, KV head). The query
    /// heads of a group are scored together, so each cached key and value is read once per
    /// token rather than once per query head.
    private func attention(layer: Int, batch: ForwardBatch) {
        let c = local
        let T = batch.tokens.count
        let hd = c.headDimensions, KVH = c.kvHeads, qDim = c.queryDimensions
        let groups = headGroups
        let bs = cache.blockSize
        let scale = 1 / Float(hd).squareRoot()
        let s = scratch
        let cache = self.cache
        let element = cache.element
        batch.positions.withUnsafeBufferPointer { positions in
            batch.sequenceOfToken.withUnsafeBufferPointer { sequenceOf in
                batch.blockTables.withUnsafeBufferPointer { tables in
                    batch.tableStart.withUnsafeBufferPointer { tableStart in
                        let chunks = pool.chunkCount(items: T * KVH)
                        groups.withUnsafeBufferPointer { groups in
                        pool.run(chunks: chunks) { chunk, thread in
                            let scores = s.scores + thread * s.maxContext * s.maxGroup
                            let items = ThreadPool.slice(of: T * KVH, part: chunk, parts: chunks)
                            // Where an item's (token, KV head) cached keys or values start at its
                            // sequence's token j, a multiple of the block size: a head's vectors in
                            // one block are one run.
                            func run(_ item: Int, _ j: Int, values: Bool) -> UnsafeMutableRawPointer {
                                let t = item / KVH
                                let block = Int(tables[Int(tableStart[Int(sequenceOf[t])]) + j / bs])
                                return values
                                    ? cache.values(layer: layer, block: block, head: item % KVH)
                                    : cache.keys(layer: layer, block: block, head: item % KVH)
                            }
                            func blockCount(_ item: Int) -> Int { (Int(positions[item / KVH]) + bs) / bs }
                            // The cache of many sequences is far larger than the CPU's caches, so
                            // blocks are fetched two ahead of their use along one stream: this item's
                            // key blocks, its value blocks, then the next item's key blocks.
                            func prefetch(_ item: Int, stream position: Int) {
                                var item = item, position = position, n = blockCount(item)
                                if position >= 2 * n {
                                    item += 1
                                    position -= 2 * n
                                    guard item < items.upperBound else { return }
                                    n = blockCount(item)
                                }
                                let values = position >= n
                                let j = (values ? position - n : position) * bs
                                let length = Int(positions[item / KVH]) + 1
                                Attention.prefetch(
                                    run(item, j, values: values), element: element, stride: hd, rows: min(bs, length - j),
                                    headDimensions: hd)
                            }
                            if let first = items.first {
                                prefetch(first, stream: 0)
                                prefetch(first, stream: 1)
                            }
                            for item in items {
                                let t = item / KVH, kvHead = item % KVH
                                // The query heads that read this KV head: a run of them.
                                let heads = groups[kvHead], group = heads.count
                                let q = s.q + t * qDim + heads.lowerBound * hd
                                let out = s.attention + t * qDim + heads.lowerBound * hd
                                let length = Int(positions[t]) + 1
                                let n = blockCount(item)
                                for b in 0..<n {
                                    prefetch(item, stream: b + 2)
                                    Attention.scores(
                                        queries: q, group: group, headDimensions: hd, keys: run(item, b * bs, values: false),
                                        element: element, keyStride: hd, count: min(bs, length - b * bs), scale: scale,
                                        into: scores + b * bs, stride: s.maxContext)
                                }
                                for i in 0..<group { VectorMath.softmax(scores + i * s.maxContext, count: length) }
                                out.update(repeating: 0, count: group * hd)
                                for b in 0..<n {
                                    prefetch(item, stream: n + b + 2)
                                    Attention.accumulateValues(
                                        weights: scores + b * bs, stride: s.maxContext, group: group, headDimensions: hd,
                                        values: run(item, b * bs, values: true), element: element, valueStride: hd,
                                        count: min(bs, length - b * bs), into: out)
                                }
                            }
                        }
                        }
                    }
                }
            }
        }
    }
}

// MARK: - Scratch

extension LlamaModel {
    /// Every buffer a step needs, allocated once for the largest batch.
    final class Scratch {
        let x, xn, q, k, v, attention, gate, up, cos, sin, scores, localLogits, gatheredLogits: UnsafeMutablePointer<Float>
        let slots: UnsafeMutablePointer<Int32>
        let maxContext: Int
        /// Most query heads that read one KV head.
        let maxGroup: Int
        private var owned: [UnsafeMutablePointer<Float>] = []

        init(
            configuration c: LlamaConfiguration, maxTokens T: Int, maxContext: Int, maxGroup: Int, threads: Int, vocabularyShare: Int, ranks: Int
        ) {
            self.maxContext = maxContext
            self.maxGroup = maxGroup
            var owned: [UnsafeMutablePointer<Float>] = []
            func buffer(_ count: Int) -> UnsafeMutablePointer<Float> {
                // Not initialised: every buffer is written before it is read, and untouched
                // pages (logit rows of a full batch, say) then cost no resident memory.
                let p = UnsafeMutablePointer<Float>.allocate(capacity: max(count, 1))
                owned.append(p)
                return p
            }
            x = buffer(T * c.hiddenSize)
            xn = buffer(T * max(c.hiddenSize, c.queryDimensions))
            q = buffer(T * c.queryDimensions)
            k = buffer(T * c.kvDimensions)
            v = buffer(T * c.kvDimensions)
            attention = buffer(T * c.queryDimensions)
            gate = buffer(T * c.feedForwardSize)
            up = buffer(T * c.feedForwardSize)
            cos = buffer(T * c.rotaryDimensions / 2)
            sin = buffer(T * c.rotaryDimensions / 2)
            scores = buffer(threads * maxContext * maxGroup)
            localLogits = buffer(T * vocabularyShare)
            gatheredLogits = buffer(ranks * T * vocabularyShare)
            slots = .allocate(capacity: T)
            self.owned = owned
        }

        deinit {
            for p in owned { p.deallocate() }
            slots.deallocate()
        }
    }
}

extension Int {
    func roundedUp(to multiple: Int) -> Int { (self + multiple - 1) / multiple * multiple }
}
