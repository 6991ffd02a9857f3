public import ExecutorCore
public import ModelRunner
import Kernels
import Synchronization

/// A worker that runs the model, or its part of a TP × PP grid, in this process: the forward
/// pass of its stage's layers (its tensor shard of them) over its paged KV cache and, on
/// tensor rank 0 of the last stage, sampling for every sequence that asks for a token (the
/// other ranks return empty outputs). Between stages, hidden states travel through its
/// `StageLinks`: received from the previous stage, sent on by tensor rank 0.
///
/// It keeps, per sequence id, what sampling needs across steps (penalty history and the
/// request's random stream) and drops it when the id comes back in `finishedRequestIDs`.
/// Steps arrive one at a time (one thread runs a rank's steps), so the state is owned by
/// whichever step runs.
public final class ModelWorker: Sendable {
    public let modelPath: String
    public let options: ModelOptions
    /// The tensor-parallel group this worker's shard belongs to (nil: the whole model).
    private let group: SendableGroup?
    private let links: StageLinks
    private let progress: @Sendable (Double) -> Void
    private let state = Mutex<State?>(nil)

    struct SequenceState {
        var history: PenaltyHistory
        var random: RandomStream
        var sampled = false
    }

    /// @unchecked: reached only through the worker's mutex.
    final class State: @unchecked Sendable {
        let loaded: LoadedModel
        var sampler: Sampler
        var batch = ForwardBatch()
        var sequences: [UInt64: SequenceState] = [:]
        /// KV blocks steps may use: all of the cache until `initializeCache` sets the
        /// executor's count (the smallest rank's, so every rank agrees on block ids).
        var blocks: Int
        /// Logits on the last stage, hidden states on the others.
        let output: UnsafeMutablePointer<Float>

        init(loaded: LoadedModel) {
            self.loaded = loaded
            sampler = Sampler(vocabularySize: loaded.configuration.vocabularySize)
            blocks = loaded.model.cache.blockCount
            let width = loaded.model.stage.isLast ? loaded.configuration.vocabularySize : loaded.configuration.hiddenSize
            output = .allocate(capacity: width * loaded.model.maxBatchTokens)
        }

        deinit { output.deallocate() }
    }

    public init(
        modelPath: String, options: ModelOptions, group: (any TensorParallelGroup)? = nil, links: StageLinks = StageLinks(),
        progress: @escaping @Sendable (Double) -> Void = { _ in }
    ) {
        self.modelPath = modelPath
        self.options = options
        self.group = group.map(SendableGroup.init)
        self.links = links
        self.progress = progress
    }

    /// A communicator handle used only by this worker's steps, which never overlap.
    struct SendableGroup: @unchecked Sendable {
        let group: any TensorParallelGroup
    }

    /// The loaded model (after `loadModel`).
    public var loaded: LoadedModel? { state.withLock { $0?.loaded } }

    // MARK: - Start-up

    /// Checks this worker's shard fits the grid it is told about.
    public func initialize(_ context: WorkerContext) throws {
        let ranks = group?.group.ranks ?? 1, stages = options.pipelineStages
        guard context.layout.tensorParallel == ranks, context.layout.pipelineParallel == stages else {
            throw ExecutorError("this worker holds a TP \(ranks) shard of a PP \(stages) stage: expected TP \(ranks) × PP \(stages), found \(context.layout)")
        }
    }

    /// Loads this worker's shard of the model.
    public func loadNow() throws {
        let loaded = try LoadedModel(path: modelPath, options: options, group: group?.group, progress: progress)
        state.withLock { $0 = State(loaded: loaded) }
    }

    /// KV blocks this worker can hold in the memory budget left after loading.
    public func availableKVBlocksNow() throws -> Int {
        try withState { $0.loaded.model.cache.blockCount }
    }

    /// The cache was allocated from the memory budget at load (blocks cost resident memory
    /// only once written); from now on steps may use the executor's count, the smallest
    /// rank's, which the virtual engines share (the engine gives each its part).
    public func initializeCacheNow(blocksPerVirtualEngine: Int, virtualEngines: Int) throws {
        try withState { s in
            let available = s.loaded.model.cache.blockCount, wanted = blocksPerVirtualEngine * virtualEngines
            guard blocksPerVirtualEngine >= 1, virtualEngines >= 1, wanted <= available else {
                throw ExecutorError(
                    "initializeCache: expected at most \(available) KV blocks in all, found \(virtualEngines) × \(blocksPerVirtualEngine)")
            }
            s.blocks = wanted
        }
    }

    /// Runs this worker's part of a step; tensor rank 0 of the last stage returns the
    /// samples, every other rank an empty output.
    public func executeNow(_ step: StepRequest) throws -> StepOutput {
        let tensorRank = group?.group.rank ?? 0
        return try withState { s in
            try Self.run(step, on: s, sample: tensorRank == 0 && s.loaded.model.stage.isLast, links: links, tensorRank: tensorRank)
        }
    }

    /// Drops the model and cache. Idempotent.
    public func shutdown() {
        state.withLock { $0 = nil }
    }

    /// Time this worker's group has spent in collectives (0 without one).
    public var collectiveNanoseconds: Int64 { group?.group.collectiveNanoseconds ?? 0 }

    private func withState<T>(_ body: (State) throws -> T) throws -> T {
        try state.withLock { s in
            guard let s else { throw ExecutorError("the worker has no model loaded (loadModel not run, or shut down)") }
            return try body(s)
        }
    }

    // MARK: - Steps

    /// Checks a step against this worker's model and cache without running it (the driver
    /// calls it before broadcasting, so that a bad step never reaches the other ranks).
    public func validateNow(_ step: StepRequest) throws {
        try withState { s in
            try Self.validate(step, model: s.loaded.model, vocabulary: s.loaded.configuration.vocabularySize, blocks: s.blocks)
        }
    }

    static func validate(_ step: StepRequest, model: LlamaModel, vocabulary: Int, blocks: Int) throws {
        let sequences = step.sequences
        for i in sequences.indices {
            let id = sequences.ids[i], start = sequences.startPositions[i], count = sequences.tokenCount(i)
            guard count > 0, start >= 0 else {
                throw ExecutorError("sequence \(id): expected at least one token at a position ≥ 0, found \(count) tokens at \(start)")
            }
            let end = Int(start) + count, covered = sequences.blockTable(i).count * model.cache.blockSize
            guard end <= model.maxContext, covered >= end else {
                throw ExecutorError("sequence \(id): positions up to \(end) need \(end) cached tokens, "
                    + "the block table covers \(covered) and the context \(model.maxContext)")
            }
        }
        // Whole columns at once: every token, every block.
        if let t = sequences.allTokens.first(where: { $0 < 0 || Int($0) >= vocabulary }) {
            let i = sequences.indices.first { sequences.tokens($0).contains(t) }!
            throw ExecutorError("sequence \(sequences.ids[i]): token \(t) is outside the vocabulary 0..<\(vocabulary)")
        }
        if let b = sequences.allBlocks.first(where: { $0 < 0 || Int($0) >= blocks }) {
            let i = sequences.indices.first { sequences.blockTable($0).contains(b) }!
            throw ExecutorError("sequence \(sequences.ids[i]): KV block \(b) is outside 0..<\(blocks)")
        }
        let tokens = sequences.tokenCount
        for copy in step.blockCopies {
            for b in [copy.source, copy.destination] where b < 0 || Int(b) >= blocks {
                throw ExecutorError("block copy \(copy.source) → \(copy.destination): KV block \(b) is outside 0..<\(blocks)")
            }
        }
        guard tokens <= model.maxBatchTokens else {
            throw ExecutorError("step \(step.step) has \(tokens) tokens; this worker runs at most \(model.maxBatchTokens) per step")
        }
    }

    static func run(_ step: StepRequest, on s: State, sample: Bool, links: StageLinks, tensorRank: Int) throws -> StepOutput {
        let model = s.loaded.model
        let vocabulary = s.loaded.configuration.vocabularySize
        // Validate the whole step before changing any state.
        try validate(step, model: model, vocabulary: vocabulary, blocks: s.blocks)
        for id in step.finishedRequestIDs { s.sequences[id] = nil }
        // Cache operations come before the step that relies on them (copy-on-write forks).
        for copy in step.blockCopies { model.cache.copyBlock(from: Int(copy.source), to: Int(copy.destination)) }
        s.batch.removeAll()
        let sequences = step.sequences
        for i in sequences.indices {
            let id = sequences.ids[i]
            if s.sequences[id] == nil {
                s.sequences[id] = SequenceState(
                    history: PenaltyHistory(prompt: []), random: RandomStream(seed: sequences.sampling(i).seed ?? .random(in: 0...UInt64.max)))
            }
            // Tokens before the first sample are the prompt; later ones were sampled here.
            if !s.sequences[id]!.sampled { s.sequences[id]!.history.addPrompt(sequences.tokens(i)) }
            s.batch.append(sequences.tokens(i), startPosition: Int(sequences.startPositions[i]), blockTable: sequences.blockTable(i),
                           wantLogits: sequences.sample(i))
        }
        if !s.batch.tokens.isEmpty { try forward(step.step, s.batch, model: model, output: s.output, links: links, tensorRank: tensorRank) }
        var samples = StepOutput.Samples()
        guard sample else { return StepOutput(step: step.step, samples: samples) }
        var row = 0
        for i in sequences.indices where sequences.sample(i) {
            let id = sequences.ids[i]
            var state = s.sequences[id]!
            let sampled = s.sampler.sample(
                logits: s.output + row * vocabulary, parameters: sequences.sampling(i), history: state.history, random: &state.random)
            state.history.record(sampled.token)
            state.sampled = true
            s.sequences[id] = state
            samples.append(sequenceID: id, token: sampled.token, logprob: sampled.logprob, top: sampled.top)
            row += 1
        }
        return StepOutput(step: step.step, samples: samples)
    }

    /// This stage's forward pass: from the previous stage's hidden states (or the tokens),
    /// on to the next stage (tensor rank 0 sends) or into logits.
    static func forward(
        _ step: UInt64, _ batch: ForwardBatch, model: LlamaModel, output: UnsafeMutablePointer<Float>, links: StageLinks, tensorRank: Int
    ) throws {
        let stage = model.stage, hidden = model.configuration.hiddenSize, tokens = batch.tokens.count
        if stage.isFirst {
            try model.forward(batch, hiddenStates: nil, output: output)
        } else {
            guard let previous = links.previous else { throw ExecutorError("\(stage) has no channel from the previous stage") }
            try previous.receive(
                reader: tensorRank, step: step, tokens: tokens, hiddenSize: hidden, timeout: links.timeout, check: links.check
            ) { states in
                try model.forward(batch, hiddenStates: states, output: output)
            }
        }
        if !stage.isLast && tensorRank == 0 {
            guard let next = links.next else { throw ExecutorError("\(stage) has no channel to the next stage") }
            try next.send(step: step, tokens: tokens, hiddenSize: hidden, output, timeout: links.timeout, check: links.check)
        }
    }
}

/// A worker's ends of the pipeline's hidden-state channels (none at PP 1).
public struct StageLinks: Sendable {
    /// From the previous stage; nil on the first stage.
    public var previous: StageChannel?
    /// To the next stage; used by tensor rank 0 of every stage but the last.
    public var next: StageChannel?
    /// Longest wait for the other end (nil: until `check` throws).
    public var timeout: Double?
    /// Called while waiting; throws when the other end is known dead.
    public var check: @Sendable () throws -> Void

    public init(previous: StageChannel? = nil, next: StageChannel? = nil, timeout: Double? = nil, check: @escaping @Sendable () throws -> Void = {}) {
        self.previous = previous
        self.next = next
        self.timeout = timeout
        self.check = check
    }
}
