import ExecutorCore
import ModelRunner
import Collectives
import Transports

/// A model's TP × PP grid over processes on this machine, wired once as a static graph of
/// shared-memory channels (the compiled mode):
///
///     driver ──step ring──▶ every rank
///     stage 0 ─hidden─▶ stage 1 ─hidden─▶ … ─▶ last stage (tensor rank 0 samples)
///     every worker ──reply ring──▶ driver
///
/// Rank 0 (stage 0, tensor rank 0) runs in the driver's process, on the caller's thread;
/// every other rank is a `cohort worker` process. Each stage's ranks share a
/// `SharedMemoryCommunicator` for their all-reduces; tensor rank 0 of each stage sends its
/// hidden states to all ranks of the next. A step costs one ring write, rank 0's part of
/// the forward pass, and the gather of the replies: no per-rank call.
///
/// `submit` returns as soon as rank 0's part is done, so with P stages up to P steps
/// (from P virtual engines) are in flight at once; `receive` returns their outputs in
/// submission order. Any failure shuts the whole grid down and names the rank.
final class WorkerGrid {
    let layout: ParallelLayout
    let rank0: ModelWorker
    let workers: WorkerGroup
    /// KV blocks of every rank (the smallest rank's count).
    let kvBlocks: Int
    /// Rank 0's tensor-parallel group (nil at TP 1).
    private let rank0Group: (any TensorParallelGroup)?
    /// Shared-memory groups, one per stage (empty with TCP collectives or TP 1).
    private let communicators: [SharedMemoryCommunicator]
    private let channels: [StageChannel]
    /// The worker whose reply carries the samples (tensor rank 0 of the last stage); nil
    /// when that is rank 0 itself (PP 1).
    private let samplingWorker: Int?
    private var inFlight: [StepRequest] = []
    /// The most worker processes that loaded at once, when a limit was set.
    let mostConcurrentWorkerLoads: Int?
    /// Where the driver's time went, summed over steps.
    private(set) var statistics = GridStatistics()
    private var rank0Outputs: [StepOutput] = []

    /// Starts the worker processes, then takes every rank through the seed's start-up
    /// (`Startup`): contexts, devices, loading (at most `maxParallelLoadingWorkers` at once,
    /// rank 0 here included), and the KV cache sized to the smallest rank.
    /// - Throws: before any process starts when the layout cannot split this model.
    init(modelPath: String, options: ExecutorOptions, progress: @escaping @Sendable (Double) -> Void) async throws {
        let file = try GGUFFile(path: modelPath)
        var configuration = try LlamaConfiguration(file: file, architecture: try file.string("general.architecture"))
        _ = try LlamaWeights(file: file, configuration: &configuration)
        let layout = try options.layout
        var options = options
        if options.pipelineLayers == nil && options.balancedPipeline {
            options.pipelineLayers = try PipelineStage.balancedLayerCounts(configuration, stages: layout.pipelineParallel)
        }
        _ = try ModelGrid(configuration: configuration, layout: layout, layerCounts: options.pipelineLayers)  // checks the split
        self.layout = layout

        var communicators: [SharedMemoryCommunicator] = []
        var channels: [StageChannel] = []
        let spinPolls = CPUAffinity.ringSpinPolls(processes: layout.worldSize, threadsPerProcess: options.threads)
        let loadGate = try options.maxParallelLoadingWorkers.map { try LoadGate.create(limit: $0) }
        /// Each stage's group as workers find it: a segment name or a TCP rendezvous address.
        var groupAddresses: [String] = []
        let secret = InstanceSecret.random()
        let tcp = layout.tensorParallel > 1 && options.collectives == .tcp
        func closeAll() {
            communicators.forEach { $0.close() }
            channels.forEach { $0.ring.close() }
            loadGate?.close()
        }
        do {
            if layout.tensorParallel > 1 {
                for _ in 0..<layout.pipelineParallel {
                    if tcp {
                        // The driver binds each group's rendezvous and serves it while the ranks load.
                        let rendezvous = try TCPRendezvous(secret: secret)
                        groupAddresses.append("tcp://\(rendezvous.host):\(rendezvous.port)")
                        Background.run { try rendezvous.serve(ranks: layout.tensorParallel, timeout: 120) }
                    } else {
                        let communicator = try SharedMemoryCommunicator.create(ranks: layout.tensorParallel, capacity: 1 << 18)
                        communicators.append(communicator)
                        groupAddresses.append(communicator.name)
                    }
                }
            }
            for _ in 0..<(layout.pipelineParallel - 1) {
                channels.append(try StageChannel.create(
                    readers: layout.tensorParallel, maxTokens: options.maxBatchTokens, hiddenSize: configuration.hiddenSize,
                    spinPolls: spinPolls))
            }
        } catch {
            closeAll()
            throw error
        }
        let workers: WorkerGroup
        do {
            workers = try WorkerGroup(
                workers: layout.worldSize - 1,
                configuration: .init(executable: options.workerExecutable, stepTimeout: 120, threadsPerProcess: options.threads),
                environment: tcp ? [InstanceSecret.environmentName: secret.hex] : [:]
            ) { index in
                let rank = index + 1
                let stage = layout.stage(ofRank: rank), tensorRank = layout.tensorRank(ofRank: rank)
                return WorkerProcess.ModelShard(
                    path: modelPath, options: options,
                    communicator: groupAddresses.isEmpty ? nil : groupAddresses[stage],
                    previousStage: stage > 0 ? channels[stage - 1].ring.name : nil,
                    nextStage: stage < layout.pipelineParallel - 1 && tensorRank == 0 ? channels[stage].ring.name : nil,
                    loadGate: loadGate?.name
                ).arguments
            }
        } catch {
            closeAll()
            throw error
        }
        // One machine: every rank's rendezvous is loopback; each worker's context carries
        // what its environment says (instance id, CPU set, threads).
        let contexts = (0..<layout.worldSize).map { rank in
            WorkerContext(
                rank: rank, localRank: rank, worldSize: layout.worldSize, layout: layout, rendezvous: "127.0.0.1",
                environment: rank == 0 ? [Placement.Environment.instanceID: workers.instanceID] : workers.environments[rank - 1])
        }
        let ranks = GridRanks(
            layout: layout, processes: workers, loadGate: loadGate,
            makeRank0: { group in
                ModelWorker(
                    modelPath: modelPath, options: options.modelOptions(stage: 0), group: group,
                    links: StageLinks(next: channels.first, timeout: workers.configuration.stepTimeout, check: { try workers.checkAlive() }),
                    progress: progress)
            },
            rank0Group: {
                if tcp { return try WorkerProcess.joinGroup(groupAddresses[0], rank: 0, ranks: layout.tensorParallel, secret: secret).group }
                return communicators.first
            })
        do {
            kvBlocks = try await Startup.run(
                ranks, contexts: contexts, maxParallelLoadingWorkers: options.maxParallelLoadingWorkers, virtualEngines: 1)
        } catch {
            workers.shutdown()
            await ranks.rank0?.shutdown()
            (ranks.rank0Group as? TCPCommunicator)?.close()
            closeAll()
            throw workers.failure ?? error
        }
        // Every rank is attached: nothing else may attach.
        communicators.forEach { $0.unlinkName() }
        channels.forEach { $0.ring.unlinkName() }
        mostConcurrentWorkerLoads = loadGate?.mostInside
        loadGate?.close()
        self.rank0 = ranks.rank0!
        self.workers = workers
        self.communicators = communicators
        self.rank0Group = ranks.rank0Group
        self.channels = channels
        let sampler = layout.rank(stage: layout.pipelineParallel - 1, tensorRank: 0)
        samplingWorker = sampler == 0 ? nil : sampler - 1
    }

    /// The start-up phases over the grid: each posts the command to the worker processes,
    /// does rank 0's part here meanwhile, then gathers the processes' answers.
    final class GridRanks: StartupPhases {
        let layout: ParallelLayout
        let processes: WorkerGroup
        let loadGate: LoadGate?
        let makeRank0: ((any TensorParallelGroup)?) -> ModelWorker
        let joinRank0Group: () throws -> (any TensorParallelGroup)?
        private(set) var rank0: ModelWorker?
        private(set) var rank0Group: (any TensorParallelGroup)?

        init(
            layout: ParallelLayout, processes: WorkerGroup, loadGate: LoadGate?,
            makeRank0: @escaping ((any TensorParallelGroup)?) -> ModelWorker, rank0Group: @escaping () throws -> (any TensorParallelGroup)?
        ) {
            self.layout = layout
            self.processes = processes
            self.loadGate = loadGate
            self.makeRank0 = makeRank0
            self.joinRank0Group = rank0Group
        }

        func initialize(_ contexts: [WorkerContext]) async throws {
            let pending = try processes.post(.initialize(contexts), what: "initialize")
            guard contexts.first?.rank == 0, contexts[0].layout == layout else {
                throw ExecutorError("initialize: expected rank 0's context for \(layout) first, found \(contexts.first.map { "rank \($0.rank) of \($0.layout)" } ?? "none")")
            }
            _ = try processes.replies(to: pending)
        }

        func initializeDevices() async throws {
            // Rank 0's device is the driver's own process: nothing to pin.
            _ = try processes.replies(to: try processes.post(.initializeDevice, what: "initializeDevice"))
        }

        func loadModels(maxConcurrent: Int?) async throws {
            // The gate was created with the limit; rank 0 passes through it like the others.
            let pending = try processes.post(.loadModel, what: "loading the model")
            let group = try joinRank0Group()  // its peers join as they start loading
            rank0Group = group
            let worker = makeRank0(group)
            do {
                try loadGate?.enter { try processes.checkAlive() }
                defer { loadGate?.leave() }
                try worker.loadNow()
            }
            rank0 = worker
            _ = try processes.replies(to: pending)
        }

        func availableKVBlocks() async throws -> [Int] {
            let pending = try processes.post(.availableKVBlocks, what: "availableKVBlocks")
            let mine = try rank0Worker().availableKVBlocksNow()
            let theirs = try processes.replies(to: pending).enumerated().map { i, reply in
                guard case let .blocks(_, count) = reply else {
                    throw ExecutorError("rank \(i + 1) answered availableKVBlocks with \(reply), expected a block count")
                }
                return Int(count)
            }
            return [mine] + theirs
        }

        func initializeCaches(blocksPerVirtualEngine: Int, virtualEngines: Int) async throws {
            let pending = try processes.post(
                .initializeCache(blocksPerVirtualEngine: blocksPerVirtualEngine, virtualEngines: virtualEngines), what: "initializeCache")
            try rank0Worker().initializeCacheNow(blocksPerVirtualEngine: blocksPerVirtualEngine, virtualEngines: virtualEngines)
            _ = try processes.replies(to: pending)
        }

        private func rank0Worker() throws -> ModelWorker {
            guard let rank0 else { throw ExecutorError("rank 0 has no model loaded (loadModels first)") }
            return rank0
        }
    }

    /// Sends a step through the grid and runs rank 0's part of it; returns once rank 0 is
    /// done (later stages may still be working).
    func submit(_ request: StepRequest) throws {
        // A bad step must not reach ranks already in their collectives; nothing is sent yet,
        // so the grid stays usable.
        try rank0.validateNow(request)
        do {
            try workers.startExecutionLoop()  // after an idle stop, as the seed's execute_model does
            let start = MonotonicClock.nanoseconds()
            let collectivesBefore = rank0Group?.collectiveNanoseconds ?? 0
            try workers.broadcast(request)
            inFlight.append(request)
            statistics.maxStepsInFlight = max(statistics.maxStepsInFlight, inFlight.count)
            let sent = MonotonicClock.nanoseconds()
            let output = try rank0.executeNow(request)
            if samplingWorker == nil { rank0Outputs.append(output) }
            if Self.isDecode(request) {
                statistics.decodeSteps += 1
                statistics.broadcastSeconds += Double(sent - start) * 1e-9
                statistics.rank0Seconds += Double(MonotonicClock.nanoseconds() - sent) * 1e-9
                statistics.collectiveSeconds += Double((rank0Group?.collectiveNanoseconds ?? 0) - collectivesBefore) * 1e-9
            }
        } catch {
            workers.shutdown()
            throw workers.failure ?? error
        }
    }

    /// Takes the worker processes out of their execution loop (they stay up and refuse
    /// steps); the next `submit` puts them back. Idempotent.
    /// - Throws: with steps still in flight, or when a worker fails to answer.
    func stopExecutionLoop() throws {
        guard inFlight.isEmpty else {
            throw ExecutorError("the execution loop stops between steps: \(inFlight.count) step(s) still in flight")
        }
        do { try workers.stopExecutionLoop() } catch {
            workers.shutdown()
            throw workers.failure ?? error
        }
    }

    var isLooping: Bool { workers.isLooping }

    /// The output of the oldest step in flight (waits for it).
    func receive() throws -> StepOutput {
        precondition(!inFlight.isEmpty, "receive() without a step in flight")
        let request = inFlight.removeFirst()
        let start = MonotonicClock.nanoseconds()
        let outputs = try workers.collect(request)
        if Self.isDecode(request) { statistics.receiveSeconds += Double(MonotonicClock.nanoseconds() - start) * 1e-9 }
        if let samplingWorker { return outputs[samplingWorker] }
        return rank0Outputs.removeFirst()
    }

    /// A step of single-token decodes only (the steady state the statistics describe).
    static func isDecode(_ request: StepRequest) -> Bool {
        !request.sequences.isEmpty && request.sequences.tokenCount == request.sequences.count
    }

    /// Stops the workers and unmaps everything. Idempotent.
    nonisolated(nonsending) func shutdown() async {
        workers.shutdown()
        await rank0.shutdown()
        communicators.forEach { $0.close() }
        (rank0Group as? TCPCommunicator)?.close()
        channels.forEach { $0.ring.close() }
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
