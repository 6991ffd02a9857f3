public import Kernels
public import ExecutorCore

/// Which contiguous layers one pipeline stage runs.
///
/// The first stage embeds tokens, the last applies the final norm and the output head and
/// samples; every stage in between takes the previous stage's hidden states and hands its
/// own on. Each stage keeps the KV cache of its own layers only.
public struct PipelineStage: Sendable, Equatable, CustomStringConvertible {
    public let index: Int
    public let count: Int
    public let layers: Range<Int>

    public init(index: Int, count: Int, layers: Range<Int>) {
        self.index = index
        self.count = count
        self.layers = layers
    }

    /// The whole model as one stage.
    public static func whole(layers: Int) -> PipelineStage { PipelineStage(index: 0, count: 1, layers: 0..<layers) }

    public var isFirst: Bool { index == 0 }
    public var isLast: Bool { index == count - 1 }

    public var description: String { "stage \(index) of \(count) (layers \(layers.lowerBound)..<\(layers.upperBound))" }

    /// Splits `layers` layers over `stages` stages: `layerCounts` when given (one count per
    /// stage, adding up to `layers`), otherwise evenly, the extra layers going to the stages
    /// before the last one (the last also runs the output head), as vLLM does.
    /// - Throws: naming what was expected and found when the split cannot exist.
    public static func plan(layers: Int, stages: Int, layerCounts: [Int]? = nil) throws(LayoutError) -> [PipelineStage] {
        guard stages >= 1 else { throw LayoutError("pipeline-parallel size must be ≥ 1, got \(stages)") }
        guard stages <= layers else {
            throw LayoutError("PP \(stages) is larger than the model's \(layers) layers: every pipeline stage needs at least one")
        }
        var counts: [Int]
        if let layerCounts {
            let list = layerCounts.map(String.init).joined(separator: ",")
            guard layerCounts.count == stages else {
                throw LayoutError("the pipeline layer split \(list) has \(layerCounts.count) stages; expected \(stages), one per pipeline stage")
            }
            guard layerCounts.allSatisfy({ $0 >= 1 }) else {
                throw LayoutError("the pipeline layer split \(list) gives a stage no layers; every stage needs at least one")
            }
            guard layerCounts.reduce(0, +) == layers else {
                throw LayoutError("the pipeline layer split \(list) adds up to \(layerCounts.reduce(0, +)) layers; the model has \(layers)")
            }
            counts = layerCounts
        } else {
            counts = Array(repeating: layers / stages, count: stages)
            for i in 0..<(layers % stages) { counts[max(0, stages - 2 - i)] += 1 }
        }
        var start = 0
        return counts.enumerated().map { index, n in
            defer { start += n }
            return PipelineStage(index: index, count: stages, layers: start..<(start + n))
        }
    }
}

extension PipelineStage {
    /// Layer counts that balance the stages' work rather than their layer counts: the last
    /// stage also runs the output head (vocabulary × hidden weights, as much as several
    /// layers for a small model), so it gets fewer layers. A layer costs its weights for
    /// every token; the head only for tokens whose logits are sampled, which in a request
    /// whose prompt is as long as its output is about half of them, so it counts half its
    /// weights. (Counting all of it put 19 + 11 layers on SmolLM2's two stages, and the
    /// first stage, which also runs the engine in the driver, became the bottleneck:
    /// 17 + 13 measured 0.85–0.97× of TP 1 with 2 threads at concurrency 16, 19 + 11
    /// 0.65–0.7×.) The split minimises the largest stage (contiguous ranges, ≥ 1 layer each).
    public static func balancedLayerCounts(_ c: LlamaConfiguration, stages: Int) throws(LayoutError) -> [Int] {
        _ = try plan(layers: c.layers, stages: stages)  // the same limits as any split
        let layer = Double(c.hiddenSize * (c.queryDimensions * 2 + c.kvDimensions * 2) + 3 * c.hiddenSize * c.feedForwardSize)
        let head = Double(c.vocabularySize * c.hiddenSize) / 2
        // best[s][n]: the smallest largest-stage cost with n layers over the first s stages.
        let L = c.layers
        var best = Array(repeating: Array(repeating: Double.infinity, count: L + 1), count: stages + 1)
        var cut = Array(repeating: Array(repeating: 0, count: L + 1), count: stages + 1)
        best[0][0] = 0
        for s in 1...stages {
            for n in s...L {
                for k in 1...(n - s + 1) {  // layers of stage s
                    let cost = Double(k) * layer + (s == stages ? head : 0)
                    let value = max(best[s - 1][n - k], cost)
                    if value < best[s][n] {
                        best[s][n] = value
                        cut[s][n] = k
                    }
                }
            }
        }
        var counts: [Int] = []
        var n = L
        for s in stride(from: stages, through: 1, by: -1) {
            counts.append(cut[s][n])
            n -= cut[s][n]
        }
        return counts.reversed()
    }
}

/// The TP × PP grid of one model: every rank's tensor shard and pipeline stage, checked
/// before any worker starts.
public struct ModelGrid: Sendable, Equatable {
    public let configuration: LlamaConfiguration
    public let layout: ParallelLayout
    public let stages: [PipelineStage]
    public let shards: [TensorShard]

    /// - Throws: when TP exceeds the query heads (or FFN blocks), PP exceeds the layers, or
    ///   `layerCounts` does not add up.
    public init(configuration: LlamaConfiguration, layout: ParallelLayout, layerCounts: [Int]? = nil) throws(LayoutError) {
        self.configuration = configuration
        self.layout = layout
        stages = try PipelineStage.plan(layers: configuration.layers, stages: layout.pipelineParallel, layerCounts: layerCounts)
        var shards: [TensorShard] = []
        for rank in 0..<layout.tensorParallel {
            shards.append(try TensorShard.plan(configuration, rank: rank, ranks: layout.tensorParallel))
        }
        self.shards = shards
    }

    /// KV blocks every rank can hold within `bytes` of cache memory each: the smallest
    /// worker's count (the stage with the most layers, the shard with the most KV heads).
    /// A plan: the executor's start-up asks every rank and arrives at the same count.
    public func kvBlocks(budgetBytes bytes: Int, blockSize: Int, element: CacheElement) -> Int {
        var blocks = Int.max
        for stage in stages {
            for shard in shards {
                let perBlock = PagedKVCache.bytesPerBlock(
                    layers: stage.layers.count, blockSize: blockSize, kvDimensions: shard.local(configuration).kvDimensions,
                    element: element)
                blocks = min(blocks, bytes / perBlock)
            }
        }
        return max(1, blocks)
    }
}
