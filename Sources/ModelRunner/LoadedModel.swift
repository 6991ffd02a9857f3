public import Kernels
public import ExecutorCore

/// Options for loading a model into one worker.
public struct ModelOptions: Sendable, Equatable {
    public var threads: Int
    public var mode: NumericMode
    /// Memory for the KV cache; the number of blocks follows from it.
    public var kvCacheBytes: Int
    /// Tokens per KV block.
    public var blockSize: Int
    /// Most tokens in one forward pass (longer prompts are split into chunks).
    public var maxBatchTokens: Int
    /// KV blocks to allocate; nil: as many as `kvCacheBytes` holds. Every rank of a grid
    /// gets the same count (the smallest worker's), since they share block tables.
    public var kvBlocks: Int?
    /// The pipeline stage this instance runs, of `pipelineStages`.
    public var pipelineStage: Int
    public var pipelineStages: Int
    /// Layers per stage; nil: an even split.
    public var pipelineLayers: [Int]?

    /// What the KV cache stores: half precision in fast mode, float32 in precise mode.
    public var cacheElement: CacheElement { .default(for: mode) }

    public init(
        threads: Int = 1, mode: NumericMode = .fast, kvCacheBytes: Int = 256 << 20, blockSize: Int = 16, maxBatchTokens: Int = 512,
        kvBlocks: Int? = nil, pipelineStage: Int = 0, pipelineStages: Int = 1, pipelineLayers: [Int]? = nil
    ) {
        self.threads = threads
        self.mode = mode
        self.kvCacheBytes = kvCacheBytes
        self.blockSize = blockSize
        self.maxBatchTokens = maxBatchTokens
        self.kvBlocks = kvBlocks
        self.pipelineStage = pipelineStage
        self.pipelineStages = pipelineStages
        self.pipelineLayers = pipelineLayers
    }
}

/// A model file loaded for inference: configuration, tokenizer, chat template and the
/// forward pass with its KV cache.
public final class LoadedModel {
    public let file: GGUFFile
    public let configuration: LlamaConfiguration
    public let tokenizer: Tokenizer
    /// nil when the file has no template; the error when it has one Cohort cannot render.
    public let chatTemplate: Result<ChatTemplate, ChatTemplate.UnsupportedTemplate>?
    public let model: LlamaModel
    public let options: ModelOptions

    /// Opens and checks `path`, then (for a whole model) touches every weight page,
    /// reporting progress from 0 to 1, so that the first step does not pay for page faults.
    ///
    /// With a tensor-parallel `group`, this instance holds only its rank's shard; with
    /// `options.pipelineStages` > 1, only the layers of its stage.
    public init(
        path: String, options: ModelOptions, group: (any TensorParallelGroup)? = nil, progress: (Double) -> Void = { _ in }
    ) throws {
        let file = try GGUFFile(path: path)
        var configuration = try LlamaConfiguration(file: file)
        let weights = try LlamaWeights(file: file, configuration: &configuration)
        let tokenizer = try Tokenizer(file: file)
        guard tokenizer.vocabularySize == configuration.vocabularySize else {
            throw GGUFError.invalidValue(
                key: "tokenizer.ggml.tokens", expected: "\(configuration.vocabularySize) tokens (the embedding's rows)",
                found: "\(tokenizer.vocabularySize)")
        }
        if let source = try file.optionalString(ChatTemplate.key) {
            do {
                func text(_ id: Int32?) -> String { id.map { tokenizer.tokens[Int($0)] } ?? "" }
                chatTemplate = .success(try ChatTemplate(source: source, bosToken: text(tokenizer.bosID), eosToken: text(tokenizer.eosID)))
            } catch {
                chatTemplate = .failure(error)
            }
        } else {
            chatTemplate = nil
        }
        let shard = try TensorShard.plan(configuration, rank: group?.rank ?? 0, ranks: group?.ranks ?? 1)
        let stages = try PipelineStage.plan(
            layers: configuration.layers, stages: options.pipelineStages, layerCounts: options.pipelineLayers)
        guard stages.indices.contains(options.pipelineStage) else {
            throw LayoutError("pipeline stage \(options.pipelineStage) is outside 0..<\(stages.count)")
        }
        let stage = stages[options.pipelineStage]
        let blockBytes = PagedKVCache.bytesPerBlock(
            layers: stage.layers.count, blockSize: options.blockSize, kvDimensions: shard.local(configuration).kvDimensions,
            element: options.cacheElement)
        let blocks = options.kvBlocks ?? max(1, options.kvCacheBytes / blockBytes)
        guard blocks >= 1 else { throw LayoutError("a KV cache needs at least one block, got \(blocks)") }

        // A whole model reads every page: fault them in now, or, when the model packs its
        // matrices (reading, then releasing, each), only ask for read-ahead. A shard reads
        // only its own pages and leaves the rest of the file out of its resident set.
        if (group?.ranks ?? 1) == 1 && stages.count == 1 {
            if PackedWeights.isUsed(for: options.mode) { file.mappedFile.prefetch(0..<file.mappedFile.bytes.count) } else { Self.touchPages(file, progress: progress) }
        }
        progress(1)
        self.file = file
        self.configuration = configuration
        self.tokenizer = tokenizer
        self.options = options
        self.model = try LlamaModel(
            weights: weights, configuration: configuration, cacheBlocks: blocks, blockSize: options.blockSize,
            maxBatchTokens: options.maxBatchTokens, mode: options.mode, threads: options.threads, shard: shard, group: group,
            stage: stage)
    }

    private static func touchPages(_ file: GGUFFile, progress: (Double) -> Void) {
        let bytes = file.mappedFile.bytes
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        file.mappedFile.prefetch(0..<bytes.count)
        let chunk = 4 << 20
        var sink: UInt8 = 0
        var offset = 0
        while offset < bytes.count {
            let end = min(bytes.count, offset + chunk)
            var page = offset
            while page < end {
                sink &+= base.load(fromByteOffset: page, as: UInt8.self)
                page += 4096
            }
            offset = end
            progress(Double(offset) / Double(bytes.count))
        }
        withExtendedLifetime(sink) {}
    }
}
