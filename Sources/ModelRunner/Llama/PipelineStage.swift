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

/// The TP × PP grid of one model: every rank's tensor shard and pipeline stage, checked
/// before any worker starts.
public struct ModelGrid: Sendable, Equatable {
    public let configuration: LlamaConfiguration
    public let layout: ParallelLayout
    public let stages: [PipelineStage]
    public let shards: [TensorShard]

    /// - Throws: when TP exceeds the KV heads (or FFN blocks), PP exceeds the layers, or
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
    public func kvBlocks(budgetBytes bytes: Int, blockSize: Int) -> Int {
        var blocks = Int.max
        for stage in stages {
            for shard in shards {
                let perBlock = PagedKVCache.bytesPerBlock(
                    layers: stage.layers.count, blockSize: blockSize, kvDimensions: shard.local(configuration).kvDimensions)
                blocks = min(blocks, bytes / perBlock)
            }
        }
        return max(1, blocks)
    }
}
