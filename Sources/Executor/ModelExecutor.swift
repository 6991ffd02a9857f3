public import ExecutorCore
public import Launchers
public import ModelRunner
import Collectives
import Metrics
import Synchronization
import Transports
import WorkerRuntime
#if canImport(Glibc)
import Glibc
#endif

/// The executor: one model over a TP × PP grid of ranks. Rank 0 (stage 0, tensor rank 0)
/// runs in this process on the caller's thread; ranks 1…N−1 run wherever a launcher put
/// them (`WorkerGroup`). TP × PP = 1 is the same code with no worker processes.
///
/// The grid is wired once as a static graph of channels (the compiled mode):
///
///     driver ──step ring──▶ every rank
///     stage 0 ─hidden─▶ stage 1 ─hidden─▶ … ─▶ last stage (tensor rank 0 samples)
///     every worker ──reply ring──▶ driver
///
/// Start-up follows the seed: launch and join (placement), pre-flight, `initialize`,
/// `initializeDevice`, `loadModel` (at most `maxParallelLoadingWorkers` at once, rank 0
/// included), then every rank's KV block count and the smallest for all.
///
/// `submit` returns as soon as rank 0's part is done, so with P stages up to P steps (from
/// P virtual engines) are in flight at once; `receive` returns their outputs in submission
/// order. The lifecycle (`ExecutorLifecycle`) is one value: its transitions say what to do,
/// and it holds the one queue of steps in flight. Any failure shuts the whole grid down
/// and names the rank.
public final class ModelExecutor {
    public let loaded: LoadedModel
    public let loadSeconds: Double
    public let layout: ParallelLayout
    /// KV blocks of every rank (the smallest rank's count).
    public let kvBlocks: Int
    private let rank0: ModelWorker
    /// Ranks 1…N−1 (nil at world size 1).
    private let workers: WorkerGroup?

    /// Where each rank runs, by rank, as the seed orders them (empty for one rank).
    public var placement: [Placement.Assignment] { workers?.assignments ?? [] }
    private var lifecycle = ExecutorLifecycle()
    private var resources: GridResources
    /// Rank 0's tensor-parallel group (nil at TP 1).
    private let rank0Group: (any TensorParallelGroup)?
    /// The worker whose reply carries the samples (tensor rank 0 of the last stage); nil
    /// when that is rank 0 itself (PP 1).
    private let samplingWorker: Int?
    private var rank0Outputs: [StepOutput] = []
    /// The most worker processes that loaded at once, when a limit was set.
    public let mostConcurrentWorkerLoads: Int?
    /// Where the driver's time went, summed over steps.
    public private(set) var statistics = GridStatistics()
    /// What rank 0 is doing, for messages from its waits (a collective, a stage link).
    private let activity = Activity()

    final class Activity: Sendable, CustomStringConvertible {
        /// The step rank 0 runs (UInt64.max: still starting).
        let step = Atomic<UInt64>(.max)
        var description: String {
            let step = step.load(ordering: .relaxed)
            return step == .max ? "start-up" : "step \(step)"
        }
    }

    /// Rank 0's step time (`cohort_rank_step_seconds{rank="0"}`).
    private let rank0StepTimer = Metrics.Timer(label: "cohort_rank_step_seconds", dimensions: [("rank", "0")])
    /// The last step rank 0 finished.
    private var rank0LastStep: UInt64?
    /// The failure that ended the executor, with the rank to blame.
    private var failure: (any Error)?

    /// What the grid holds besides the processes: shared-memory groups and stage channels,
    /// the load gate, TCP rendezvous. Closed once.
    struct GridResources {
        var communicators: [SharedMemoryCommunicator] = []
        /// The stage channels' addresses, by boundary (stage s to s + 1).
        var channelAddresses: [WorkerConfiguration.CommunicatorAddress] = []
        /// The channels the driver holds: the rings it made, and its own end of the first.
        var channels: [StageChannel] = []
        /// The load limit's gate: in shared memory when every rank runs on the driver's
        /// machine, else served over TCP.
        var loadGate: LoadGate?
        var tcpLoadGate: TCPLoadGate?
        var loadGateAddress: WorkerConfiguration.CommunicatorAddress? {
            if let loadGate { return .sharedMemory(name: loadGate.name) }
            return tcpLoadGate.map { .tcp(host: $0.host, port: $0.port) }
        }
        var isClosed = false
        /// Set on close: a rendezvous still serving (start-up failed) stops.
        let closed = Flag()

        final class Flag: Sendable {
            private let value = Atomic(false)
            var isSet: Bool { value.load(ordering: .relaxed) }
            func set() { value.store(true, ordering: .relaxed) }
        }

        mutating func close() {
            guard !isClosed else { return }
            isClosed = true
            closed.set()
            communicators.forEach { $0.close() }
            channels.forEach { $0.close() }
            loadGate?.close()
            tcpLoadGate?.close()
        }
    }

    /// Loads the model into every rank and starts the executor.
    /// - Throws: before any process starts when the layout cannot split this model; later,
    ///   naming the rank (and machine) that failed, after stopping every worker.
    public init(
        modelPath: String, options: ExecutorOptions, launcher: (any Launcher)? = nil, progress: @escaping @Sendable (Double) -> Void = { _ in }
    ) throws {
        let start = MonotonicClock.now()
        try lifecycle.start()
        let file = try GGUFFile(path: modelPath)
        var configuration = try LlamaConfiguration(file: file)
        _ = try LlamaWeights(file: file, configuration: &configuration)
        let layout = try options.layout
        var options = options
        if options.pipelineLayers == nil && options.balancedPipeline {
            options.pipelineLayers = try PipelineStage.balancedLayerCounts(configuration, stages: layout.pipelineParallel)
        }
        let grid = try ModelGrid(configuration: configuration, layout: layout, layerCounts: options.pipelineLayers)  // checks the split
        self.layout = layout

        var resources = GridResources()
        let secret = InstanceSecret.random()
        let tcp = layout.tensorParallel > 1 && options.collectives == .tcp
        let bindHost = options.hostIP ?? "127.0.0.1"
        /// Each stage's group as its ranks find it.
        var groups: [WorkerConfiguration.CommunicatorAddress] = []
        /// Whether a rank runs on the driver's machine (shared memory reaches only those).
        var isLocal: (Int) -> Bool = { _ in true }
        /// Shared-memory names and rendezvous: made once every worker joined (a driver
        /// killed before then leaves no name behind). A group or stage channel whose ranks
        /// all run on the driver's machine meets in shared memory, any other over TCP.
        func prepare(_ plan: Placement.Plan?) throws {
            if let plan {
                let machines = plan.assignments.map(\.machineID)
                isLocal = { machines[$0] == machines[0] }
            }
            let closed = resources.closed
            /// A TCP rendezvous for `ranks`, bound by the driver and served while they load.
            func rendezvous(ranks: Int) throws -> WorkerConfiguration.CommunicatorAddress {
                let rendezvous = try TCPRendezvous(host: bindHost, secret: secret)
                Threads.detach {
                    try? rendezvous.serve(ranks: ranks, timeout: 600) {
                        if closed.isSet { throw ExecutorError("the executor closed") }
                    }
                }
                return .tcp(host: rendezvous.host, port: rendezvous.port)
            }
            do {
                if let limit = options.maxParallelLoadingWorkers {
                    if (0..<layout.worldSize).allSatisfy(isLocal) {
                        resources.loadGate = try LoadGate.create(limit: limit)
                    } else {
                        resources.tcpLoadGate = try TCPLoadGate(limit: limit, host: bindHost, secret: secret)
                    }
                }
                if layout.tensorParallel > 1 {
                    for stage in 0..<layout.pipelineParallel {
                        let ranks = (0..<layout.tensorParallel).map { layout.rank(stage: stage, tensorRank: $0) }
                        if options.collectives == .mpi {
                            // Every rank splits MPI_COMM_WORLD by its stage.
                            groups.append(.mpi(color: stage))
                        } else if tcp || !ranks.allSatisfy(isLocal) {
                            groups.append(try rendezvous(ranks: layout.tensorParallel))
                        } else {
                            let communicator = try SharedMemoryCommunicator.create(ranks: layout.tensorParallel, capacity: 1 << 18)
                            resources.communicators.append(communicator)
                            groups.append(.sharedMemory(name: communicator.name))
                        }
                    }
                }
                let spinPolls = CPUAffinity.ringSpinPolls(processes: layout.worldSize, threadsPerProcess: options.threads)
                for stage in 0..<(layout.pipelineParallel - 1) {
                    let ranks = [layout.rank(stage: stage, tensorRank: 0)]
                        + (0..<layout.tensorParallel).map { layout.rank(stage: stage + 1, tensorRank: $0) }
                    if ranks.allSatisfy(isLocal) {
                        let channel = try StageChannel.create(
                            readers: layout.tensorParallel, maxTokens: options.maxBatchTokens, hiddenSize: configuration.hiddenSize,
                            spinPolls: spinPolls)
                        resources.channels.append(channel)
                        resources.channelAddresses.append(.sharedMemory(name: channel.ring!.name))
                    } else {
                        resources.channelAddresses.append(try rendezvous(ranks: layout.tensorParallel + 1))
                    }
                }
            } catch {
                resources.close()
                throw error
            }
        }

        // Launch and join: ranks 1…N−1, configured with one message each.
        let identity = try ModelFileIdentity(path: modelPath)
        var workers: WorkerGroup?
        if layout.worldSize == 1 {
            try prepare(nil)
        } else {
            let stageLayers = grid.stages.map(\.layers.count)
            do {
                workers = try WorkerGroup(
                    workers: layout.worldSize - 1, secret: secret,
                    configuration: .init(
                        executable: options.workerExecutable, threadsPerProcess: options.threads, layout: layout, hostIP: options.hostIP,
                        stepDeadline: StepDeadline(fixed: options.stepTimeout)),
                    launcher: launcher, prepare: prepare
                ) { rank, context in
                    let channels = resources.channelAddresses
                    let stage = layout.stage(ofRank: rank), tensorRank = layout.tensorRank(ofRank: rank)
                    let shard = WorkerConfiguration.ModelShard(
                        path: modelPath, fileSize: identity.size, headerDigest: identity.headerDigest, threads: options.threads,
                        precise: options.precise, kvCacheMiB: options.kvCacheMiB, maxBatchTokens: options.maxBatchTokens,
                        pipelineLayers: options.pipelineLayers,
                        shardBytes: identity.size * Int64(stageLayers[stage]) / Int64(max(1, configuration.layers)) / Int64(layout.tensorParallel))
                    return WorkerConfiguration(
                        context: context, model: shard, commands: .tcp(host: "", port: 0),
                        communicator: groups.isEmpty ? nil : groups[stage],
                        previousStage: stage > 0 ? channels[stage - 1] : nil,
                        nextStage: stage < layout.pipelineParallel - 1 && tensorRank == 0 ? channels[stage] : nil,
                        loadGate: resources.loadGateAddress)
                }
            } catch {
                _ = lifecycle.fail(rank: (error as? WorkerFailure)?.rank, reason: "\(error)")
                resources.close()
                throw error
            }
        }
        self.workers = workers

        // The seed's start-up, every phase posted to the processes while rank 0 does its part.
        let activity = self.activity
        let watch: @Sendable () throws -> Void = { [workers] in try workers?.checkAlive(during: activity.description) }
        var rank0: ModelWorker?
        var rank0Group: (any TensorParallelGroup)?
        var kvBlocks = 0
        do {
            try lifecycle.enter(.preflight)
            let preflight = try workers?.post(.preflight, what: "the pre-flight")
            _ = try preflight.map { try workers!.replies(to: $0) }

            try lifecycle.enter(.initializing)
            let initialized = try workers?.post(.initialize, what: "initialize")
            let context = WorkerContext(
                rank: 0, localRank: 0, worldSize: layout.worldSize, layout: layout, rendezvous: workers?.rendezvousHost ?? "127.0.0.1",
                environment: workers?.rank0Environment ?? [Placement.Environment.instanceID: Self.instanceID])
            _ = try initialized.map { try workers!.replies(to: $0) }

            // Rank 0's device is the driver's own process: nothing to pin.
            try lifecycle.enter(.initializingDevices)
            _ = try workers.map { try $0.replies(to: $0.post(.initializeDevice, what: "initializeDevice")) }

            try lifecycle.enter(.loading)
            let loading = try workers?.post(.loadModel, what: "loading the model")
            if let group = groups.first {  // rank 0's peers join as they start loading
                rank0Group = try WorkerRuntime.joinGroup(
                    group, rank: 0, ranks: layout.tensorParallel, secret: secret, listenHost: bindHost, watchdog: watch)
            }
            // Rank 0 sends to stage 1: through the ring it made, or over TCP (joined here, as the group).
            var next: StageChannel?
            switch resources.channelAddresses.first {
            case .sharedMemory?: next = resources.channels.first
            case let address?:
                let end = try StageChannel.join(address, as: .sender, readers: layout.tensorParallel, secret: secret, listenHost: bindHost)
                resources.channels.append(end)
                next = end
            case nil: next = nil
            }
            let worker = ModelWorker(
                modelPath: modelPath, options: options.modelOptions(stage: 0), group: rank0Group,
                links: StageLinks(next: next, check: watch), progress: progress)
            try worker.initialize(context)
            do {
                try resources.loadGate?.enter(check: watch)
                defer { resources.loadGate?.leave() }
                let ticket = try resources.tcpLoadGate.map {
                    try TCPLoadGate.enter(host: $0.host, port: $0.port, rank: 0, secret: secret, check: watch)
                }
                defer { ticket?.close() }
                try worker.loadNow()
            }
            rank0 = worker
            _ = try loading.map { try workers!.replies(to: $0) }

            try lifecycle.enter(.sizingCache)
            let asking = try workers?.post(.availableKVBlocks, what: "availableKVBlocks")
            var blocks = [try worker.availableKVBlocksNow()]
            if let asking {
                blocks += try workers!.replies(to: asking).enumerated().map { i, reply in
                    guard case let .blocks(_, count) = reply else {
                        throw ExecutorError("rank \(i + 1) answered availableKVBlocks with \(reply), expected a block count")
                    }
                    return Int(count)
                }
            }
            kvBlocks = blocks.min() ?? 0
            guard kvBlocks >= 1 else {
                throw ExecutorError("rank \(blocks.firstIndex(of: kvBlocks) ?? 0) holds no KV block in --kv-cache-mb \(options.kvCacheMiB); raise it")
            }

            try lifecycle.enter(.initializingCache)
            let sizing = try workers?.post(.initializeCache(blocksPerVirtualEngine: kvBlocks, virtualEngines: 1), what: "initializeCache")
            try worker.initializeCacheNow(blocksPerVirtualEngine: kvBlocks, virtualEngines: 1)
            _ = try sizing.map { try workers!.replies(to: $0) }
            try lifecycle.started()
        } catch {
            let cause = workers?.failure ?? error
            _ = lifecycle.fail(rank: (cause as? WorkerFailure)?.rank, reason: "\(cause)")
            workers?.shutdown()
            rank0?.shutdown()
            (rank0Group as? TCPCommunicator)?.close()
            resources.close()
            throw cause
        }
        // Every rank is attached: nothing else may attach.
        resources.communicators.forEach { $0.unlinkName() }
        resources.channels.forEach { $0.ring?.unlinkName() }
        mostConcurrentWorkerLoads = resources.loadGate?.mostInside ?? resources.tcpLoadGate?.mostInside
        resources.loadGate?.close()
        resources.loadGate = nil
        resources.tcpLoadGate?.close()
        resources.tcpLoadGate = nil
        self.resources = resources
        self.rank0 = rank0!
        self.rank0Group = rank0Group
        self.kvBlocks = kvBlocks
        loaded = rank0!.loaded!
        let sampler = layout.rank(stage: layout.pipelineParallel - 1, tensorRank: 0)
        samplingWorker = sampler == 0 ? nil : sampler - 1
        loadSeconds = MonotonicClock.now() - start
    }

    /// `COHORT_INSTANCE_ID` when set, as the seed honours its environment.
    static var instanceID: String {
        if let value = getenv(WorkerGroup.instanceIDEnvironment), value.pointee != 0 { return String(cString: value) }
        return String(UInt64.random(in: 0...UInt64.max), radix: 16)
    }

    // MARK: - Steps

    /// Sends a step on its way, numbering it; returns once rank 0's part is done (later
    /// stages may still be working).
    public func submit(virtualEngine: Int, sequences: [StepRequest.Sequence], finishedRequestIDs: [UInt64]) throws {
        let action: ExecutorLifecycle.SubmitAction
        do { action = try lifecycle.submit(virtualEngine: virtualEngine) } catch { throw failure ?? ExecutorError(error.description) }
        let stepNumber: UInt64 = switch action {
        case let .send(step), let .resumeLoopThenSend(step): step
        }
        let request = StepRequest(
            step: stepNumber, virtualEngine: Int32(virtualEngine), sequences: sequences, finishedRequestIDs: finishedRequestIDs)
        // A bad step must not reach ranks already in their collectives; nothing is sent yet,
        // so the executor stays usable.
        try rank0.validateNow(request)
        do {
            // After an idle stop, as the seed's execute_model does.
            if case .resumeLoopThenSend = action { try workers?.startExecutionLoop() }
            let start = MonotonicClock.nanoseconds()
            let collectivesBefore = rank0.collectiveNanoseconds
            try workers?.broadcast(request)
            lifecycle.sent(virtualEngine: virtualEngine)
            statistics.maxStepsInFlight = max(statistics.maxStepsInFlight, lifecycle.inFlight.count)
            let sent = MonotonicClock.nanoseconds()
            // Rank 0's collectives wait as long as the workers' step deadline (the group
            // measures the steps; at world size 1 nothing waits on a peer).
            if let workers { rank0Group?.timeout = workers.stepDeadlineSeconds(tokens: request.sequences.tokenCount) }
            activity.step.store(request.step, ordering: .relaxed)
            let output = try rank0.executeNow(request)
            rank0StepTimer.recordNanoseconds(MonotonicClock.nanoseconds() - sent)
            rank0LastStep = request.step
            if samplingWorker == nil { rank0Outputs.append(output) }
            if Self.isDecode(request) {
                statistics.decodeSteps += 1
                statistics.broadcastSeconds += Double(sent - start) * 1e-9
                statistics.rank0Seconds += Double(MonotonicClock.nanoseconds() - sent) * 1e-9
                statistics.collectiveSeconds += Double(rank0.collectiveNanoseconds - collectivesBefore) * 1e-9
            }
        } catch {
            throw fail(error, step: request.step)
        }
    }

    /// The output of the oldest step in flight and its virtual engine (waits for it).
    public func receive() throws -> (virtualEngine: Int, output: StepOutput) {
        let oldest: ExecutorLifecycle.InFlightStep
        do { oldest = try lifecycle.receive() } catch { throw failure ?? ExecutorError(error.description) }
        guard let workers else { return (oldest.virtualEngine, rank0Outputs.removeFirst()) }
        let start = MonotonicClock.nanoseconds()
        do {
            let outputs = try workers.collect(step: oldest.step)
            statistics.receiveSeconds += Double(MonotonicClock.nanoseconds() - start) * 1e-9
            return (oldest.virtualEngine, samplingWorker.map { outputs[$0] } ?? rank0Outputs.removeFirst())
        } catch {
            throw fail(error, step: oldest.step)
        }
    }

    /// Whether any step was submitted and not yet received.
    public var hasStepsInFlight: Bool { !lifecycle.inFlight.isEmpty }

    /// Whether `virtualEngine` has a step in flight.
    public func hasStepInFlight(virtualEngine: Int) -> Bool { lifecycle.inFlight.contains { $0.virtualEngine == virtualEngine } }

    /// Takes the workers out of their execution loop while there is nothing to run (the
    /// seed's `stop_remote_worker_execution_loop`): they stay up and answer health checks;
    /// the next `submit` puts them back. Idempotent.
    /// - Throws: with steps still in flight, or when a worker fails to answer.
    public func stopExecutionLoop() throws {
        let action: ExecutorLifecycle.PauseAction
        do { action = try lifecycle.pause() } catch { throw failure ?? ExecutorError(error.description) }
        guard action == .stopLoop else { return }
        do { try workers?.stopExecutionLoop() } catch { throw fail(error, step: nil) }
    }

    /// Whether the workers are in their execution loop.
    public var isExecutionLoopRunning: Bool { lifecycle.isLooping }

    /// A step of single-token decodes only (the steady state the statistics describe).
    static func isDecode(_ request: StepRequest) -> Bool {
        !request.sequences.isEmpty && request.sequences.tokenCount == request.sequences.count
    }

    // MARK: - Health

    /// Every rank's health: alive, stuck or dead, its last step and heartbeat age.
    public func health() -> [RankHealth] {
        var ranks = [RankHealth(
            rank: 0, machine: Machine.hostName(), processID: getpid(), status: .alive, lastStep: rank0LastStep, heartbeatAge: nil)]
        ranks += workers?.health() ?? []
        if let failure = failure as? WorkerFailure, let rank = failure.rank, ranks.indices.contains(rank) {
            switch failure {
            case .silent, .stuck: ranks[rank].status = .stuck(failure.description)
            default: ranks[rank].status = .dead(failure.description)
            }
        }
        return ranks
    }

    /// The worker processes' ids, by rank (1, 2, …); empty at world size 1.
    public var workerPIDs: [Int32] { workers?.members.map(\.pid) ?? [] }

    /// Every rank's placement (rank 0 first); empty at world size 1.
    public var assignments: [Placement.Assignment] { workers?.assignments ?? [] }

    // MARK: - Failure and shutdown

    /// Records the failure (the group's own, naming a rank, when it has one), stops every
    /// worker, and returns the error to throw.
    private func fail(_ error: any Error, step: UInt64?) -> any Error {
        var cause = workers?.failure ?? error
        // Rank 0 lost a peer (a socket closed): the monitor names it with its exit soon.
        if workers?.failure == nil, error is CollectiveError, let found = workers?.awaitFailure(during: activity.description) {
            cause = found
        }
        // Rank 0 found a tensor-parallel peer stuck in a collective: name it as a rank.
        if case let .peerStuck(ranks, operation, seconds)? = error as? CollectiveError, let first = ranks.first, workers?.failure == nil {
            let rank = layout.rank(stage: 0, tensorRank: first)
            let member = workers?.members[rank - 1]
            cause = WorkerFailure.stuck(
                rank: rank, pid: member?.pid ?? 0, machine: member?.machine ?? "?",
                waitingFor: "\(operation) of step \(step.map(String.init) ?? "?")", seconds: seconds,
                basis: workers?.stepDeadlineExplanation ?? "")
        }
        failure = cause
        if lifecycle.fail(rank: (cause as? WorkerFailure)?.rank, reason: "\(cause)") == .shutDownWorkers { release() }
        return cause
    }

    /// Stops the workers and unmaps everything. Idempotent.
    public func shutdown() {
        // After a failure the workers were stopped then; a second shutdown has nothing to do.
        if lifecycle.shutdown() == .shutDownWorkers { release() }
    }

    private func release() {
        guard !resources.isClosed else { return }
        workers?.shutdown()
        rank0.shutdown()
        (rank0Group as? TCPCommunicator)?.close()
        resources.close()
    }

    deinit { shutdown() }

    // MARK: - Prompts

    public var tokenizer: Tokenizer { loaded.tokenizer }

    /// Token ids of a prompt.
    public func tokens(for prompt: Prompt) throws(GenerationError) -> [Int32] { try encoder.tokens(for: prompt) }

    /// Turns prompts into token ids; Sendable, so callers tokenize on their own threads.
    public var encoder: PromptEncoder { PromptEncoder(tokenizer: loaded.tokenizer, chatTemplate: loaded.chatTemplate) }
}

/// A prompt's token ids: the chat template applied for chat prompts, special-token text
/// parsed for raw text, token ids checked against the vocabulary.
public struct PromptEncoder: Sendable {
    public let tokenizer: Tokenizer
    public let chatTemplate: Result<ChatTemplate, ChatTemplate.UnsupportedTemplate>?

    public func tokens(for prompt: Prompt) throws(GenerationError) -> [Int32] {
        switch prompt {
        case let .tokens(ids):
            for id in ids where id < 0 || Int(id) >= tokenizer.vocabularySize {
                throw GenerationError("prompt token \(id) is outside the vocabulary 0..<\(tokenizer.vocabularySize)")
            }
            return ids
        case let .raw(text):
            return tokenizer.encode(text, parseSpecial: true)
        case let .chat(user, system):
            var messages: [ChatMessage] = []
            if let system { messages.append(ChatMessage(role: "system", content: system)) }
            messages.append(ChatMessage(role: "user", content: user))
            return try tokens(for: .messages(messages))
        case let .messages(messages):
            guard let chatTemplate else {
                throw GenerationError("the model file has no chat template (tokenizer.chat_template); use --raw")
            }
            switch chatTemplate {
            case let .failure(error):
                throw GenerationError(error.description)
            case let .success(template):
                let text: String
                do {
                    text = try template.render(messages)
                } catch {
                    throw GenerationError(error.description, kind: .invalidRequest)
                }
                var ids = tokenizer.encode(text, parseSpecial: true)
                // A template that prints `bos_token` (Llama 3's does) and a tokenizer that adds
                // BOS would start with two: keep one, as Hugging Face's rendering has.
                if let bos = tokenizer.bosID, ids.count >= 2, ids[0] == bos, ids[1] == bos { ids.removeFirst() }
                return ids
            }
        }
    }
}

/// Where the driver's time went in a grid, summed over its decode steps (steps whose
/// sequences all decode one token: prompt chunks would swamp the steady state).
public struct GridStatistics: Sendable, Equatable {
    public var decodeSteps = 0
    /// Most steps ever in flight at once (pipelining: up to one per virtual engine).
    public var maxStepsInFlight = 0
    /// Writing steps into the ring (the control plane's send side).
    public var broadcastSeconds = 0.0
    /// Rank 0's part of each step (its stage's layers, its collectives included).
    public var rank0Seconds = 0.0
    /// Rank 0 in all-reduces and all-gathers, waiting for its peers included.
    public var collectiveSeconds = 0.0
    /// Gathering the replies: waiting for the later stages, then reading the replies.
    public var receiveSeconds = 0.0

    public init() {}
}
