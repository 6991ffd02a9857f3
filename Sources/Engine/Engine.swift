public import ExecutorCore
public import ModelRunner
public import Executor
public import Launchers
public import ServiceLifecycle
import Synchronization
import Metrics

/// Turns many requests into a stream of batched steps over the executor (the engine
/// around Aphrodite's and vLLM's executors).
///
/// Requests are queued as they arrive (`submit`, `generate`) and dealt to the virtual
/// engine with the least work; each virtual engine has its own `Scheduler` over an equal
/// share of the KV blocks and at most one step in flight, so with P pipeline stages and P
/// virtual engines, P batches move through the stages at once (the seed's design: one
/// scheduler, one cache share and one lock per stage). Between steps the engine yields,
/// so new requests and aborts get in; a finished or aborted request's blocks return at
/// once and its id travels with the next step.
///
/// As a swift-service-lifecycle `Service`, `run()` serves until graceful shutdown, which
/// stops admitting, finishes the running requests, and shuts the executor down. Without a
/// running service, `generate` drives the steps itself until its request is done.
public actor Engine: Service {
    public struct Configuration: Sendable {
        /// Groups of requests with a step in flight at once (use the pipeline depth).
        public var virtualEngines: Int
        /// Most requests running at once per virtual engine (vLLM's `--max-num-seqs`).
        public var maxSequences: Int
        /// Most requests queued beyond the running places (`maxSequences` per virtual engine,
        /// all engines together); one more is refused at once (`GenerationError.Kind.queueFull`)
        /// instead of waiting without bound. nil: no limit.
        public var maxWaiting: Int?

        public init(virtualEngines: Int = 1, maxSequences: Int = 256, maxWaiting: Int? = nil) {
            self.virtualEngines = virtualEngines
            self.maxSequences = maxSequences
            self.maxWaiting = maxWaiting
        }
    }

    /// Output of a request as it appears: text that is final (stop strings cannot take it
    /// back), with the tokens generated since the previous delta and their log-probabilities.
    public struct Delta: Sendable {
        public var text: String
        public var tokens: [Int32]
        /// Per token, its own log-probability and the best alternatives (empty unless asked for).
        public var tokenLogprobs: [Float]
        public var logprobs: [[TokenLogprob]]
    }

    /// One request: prompt tokens, sampling, and where its output goes as it appears (called
    /// on the engine's thread: hand it on, do not block).
    public struct Request: Sendable {
        public var promptTokens: [Int32]
        public var parameters: SamplingParameters
        public var onOutput: @Sendable (Delta) -> Void

        public init(promptTokens: [Int32], parameters: SamplingParameters, onOutput: @escaping @Sendable (Delta) -> Void = { _ in }) {
            self.promptTokens = promptTokens
            self.parameters = parameters
            self.onOutput = onOutput
        }
    }

    private let executor: ModelExecutor
    /// The engine runs on a thread of its own, never on the cooperative pool.
    private nonisolated let stepThread = StepThread()
    public nonisolated var unownedExecutor: UnownedSerialExecutor { stepThread.asUnownedSerialExecutor() }
    public nonisolated let configuration: Configuration
    /// The longest a request may grow (prompt and output): one engine's share of the cache.
    public nonisolated let contextLimit: Int
    /// Whether the cache share, not the model's context, sets `contextLimit` (a request that
    /// reaches it finishes with `kvCacheFull`, not `length`).
    private let cacheBoundsContext: Bool
    private let metrics = EngineMetrics()
    private var schedulers: [Scheduler]
    private var runs: [UInt64: SequenceRun] = [:]
    private var engineOf: [UInt64: Int] = [:]
    private var results: [UInt64: Result<GenerationResult, GenerationError>] = [:]
    /// Callers of `result(of:)` waiting their turn: resumed when their result is in, or
    /// when the loop driving steps ended and one of them should drive.
    private var waiters: [UInt64: CheckedContinuation<Void, Never>] = [:]
    private var nextID: UInt64 = 1
    /// Whether requests are admitted; cleared at once by graceful shutdown (from outside the actor).
    private nonisolated let admitting = Mutex(true)
    private var accepting: Bool { admitting.withLock { $0 } }
    /// Loops running steps (a service and callers of `generate` may overlap; each step is
    /// atomic on the actor, so they simply take turns).
    private var drivers = 0
    private var isDriving: Bool { drivers > 0 }
    /// Loops asleep until work arrives.
    private var sleepers: [CheckedContinuation<Void, Never>] = []
    /// Set once a step failed: the executor is gone and every later call fails with it.
    private var failure: GenerationError?

    /// Takes over `executor` (the engine shuts it down). A configuration the cache cannot
    /// serve makes every request fail with the reason.
    public init(executor: sending ModelExecutor, configuration: Configuration = Configuration()) {
        let configuration = Configuration(
            virtualEngines: max(1, configuration.virtualEngines), maxSequences: max(1, configuration.maxSequences),
            maxWaiting: configuration.maxWaiting.map { max(0, $0) })
        let share = max(1, executor.kvBlocks / configuration.virtualEngines)
        if executor.kvBlocks / configuration.virtualEngines < 1 {
            failure = GenerationError(
                "\(executor.kvBlocks) KV blocks cannot be shared by \(configuration.virtualEngines) virtual engines; raise --kv-cache-mb")
        }
        let model = executor.loaded.model
        encoder = executor.encoder
        self.executor = executor
        self.configuration = configuration
        contextLimit = min(model.maxContext, share * model.cache.blockSize)
        // `maxContext` is already capped by the whole cache: compare with the file's context.
        cacheBoundsContext = contextLimit < executor.loaded.configuration.contextLength
        schedulers = (0..<configuration.virtualEngines).map { v in
            Scheduler(
                maxSequences: configuration.maxSequences, maxBatchTokens: model.maxBatchTokens,
                allocator: BlockAllocator(blockCount: share, blockSize: model.cache.blockSize, firstBlock: Int32(v * share)))
        }
    }

    /// Loads a model and starts an engine over it.
    public static func load(
        modelPath: String, options: ExecutorOptions, launcher: (any Launcher)? = nil, configuration: Configuration = Configuration(),
        progress: @escaping @Sendable (Double) -> Void = { _ in }
    ) async throws -> Engine {
        guard configuration.virtualEngines >= 1, configuration.maxSequences >= 1 else {
            throw GenerationError(
                "expected ≥ 1 virtual engine and ≥ 1 sequence per engine, found \(configuration.virtualEngines) and \(configuration.maxSequences)")
        }
        let executor = try ModelExecutor(modelPath: modelPath, options: options, launcher: launcher, progress: progress)
        return Engine(executor: executor, configuration: configuration)
    }

    deinit { stepThread.stop() }

    // MARK: - Requests

    /// Token ids of a prompt (chat template applied for `.chat`), on the caller's thread: a
    /// long prompt never holds up the steps.
    /// - Throws: before tokenizing, when the text is certainly too long: `b` bytes make at
    ///   least `b / maxTokenBytes` tokens (a 50 MB line is refused at once, not after
    ///   minutes of tokenizing).
    public nonisolated func tokens(for prompt: Prompt) throws(GenerationError) -> [Int32] {
        let bytes = prompt.textBytes, perToken = encoder.tokenizer.maxTokenBytes
        guard bytes / perToken < contextLimit else {
            throw GenerationError(
                "the prompt has \(bytes) bytes of text, so at least \(bytes / perToken) tokens (a token holds at most \(perToken) bytes); "
                    + "this engine holds at most \(contextLimit - 1) prompt tokens per request")
        }
        return try encoder.tokens(for: prompt)
    }

    public nonisolated var tokenizer: Tokenizer { encoder.tokenizer }
    private nonisolated let encoder: PromptEncoder
    public var loadSeconds: Double { executor.loadSeconds }
    /// Where each rank runs, by rank (empty for one rank).
    public var placement: [Placement.Assignment] { executor.placement }
    /// Where the driver's time went, when the model runs over a grid of processes.
    public var gridStatistics: GridStatistics? { executor.layout.worldSize > 1 ? executor.statistics : nil }
    /// The most worker processes that loaded at once, when a limit was set.
    public var mostConcurrentWorkerLoads: Int? { executor.mostConcurrentWorkerLoads }
    /// The worker processes' ids, by rank (1, 2, …).
    public var workerPIDs: [Int32] { executor.workerPIDs }
    /// KV blocks free across the virtual engines, and all of them.
    public var freeKVBlocks: Int { schedulers.map(\.allocator.freeBlocks).reduce(0, +) }
    public var totalKVBlocks: Int { schedulers.map(\.allocator.blockCount).reduce(0, +) }
    /// Requests running (admitted to a batch) and waiting for a place.
    public var runningRequests: Int { schedulers.map(\.running.count).reduce(0, +) }
    public var waitingRequests: Int { schedulers.map(\.waiting.count).reduce(0, +) }
    /// Why the engine failed, once it has: every later request fails with it.
    public var failureReason: GenerationError? { failure }
    /// Requests preempted (and later recomputed) because KV blocks ran out.
    public var preemptions: Int { schedulers.map(\.preemptionCount).reduce(0, +) }

    /// Queues a request; returns its id.
    /// - Throws: when the request is invalid or the engine no longer admits requests.
    public func submit(_ request: Request) throws(GenerationError) -> UInt64 {
        if let failure { throw failure }
        guard accepting else { throw GenerationError("the engine is shutting down and admits no new requests", kind: .unavailable) }
        try check(request)
        // Requests beyond the running places wait; at the limit, one more is refused.
        let places = configuration.maxSequences * configuration.virtualEngines
        if let limit = configuration.maxWaiting, runningRequests + waitingRequests - places >= limit {
            throw GenerationError(
                "the engine's queue is full: \(runningRequests) requests run in \(places) places and \(waitingRequests) wait "
                    + "(at most \(limit) may); try again later",
                kind: .queueFull)
        }
        let id = nextID
        nextID += 1
        // The virtual engine with the least work takes it.
        let v = schedulers.indices.min { schedulers[$0].running.count + schedulers[$0].waiting.count
            < schedulers[$1].running.count + schedulers[$1].waiting.count }!
        schedulers[v].add(id: id, prompt: request.promptTokens, parameters: request.parameters)
        runs[id] = SequenceRun(id: id, promptTokens: request.promptTokens, parameters: request.parameters, onOutput: request.onOutput,
                               tokenizer: executor.tokenizer, cacheBoundsContext: cacheBoundsContext)
        engineOf[id] = v
        metrics.admitted(promptTokens: request.promptTokens.count)
        updateGauges()
        wake()
        return id
    }

    /// Ends a request now; its blocks return at once and its result so far is final, with
    /// finish reason `abort`. Unknown or finished ids are ignored.
    public func abort(_ id: UInt64) {
        guard let v = engineOf[id], var run = runs[id] else { return }
        schedulers[v].finish(id)
        run.abort()
        complete(id, with: .success(run.result(loadSeconds: executor.loadSeconds)))
        updateGauges()
    }

    /// The result of request `id`, once it is done. Without a service loop, callers take
    /// turns driving the steps: one drives until its own request is done, then hands over
    /// to a waiting caller (so a finished caller is never held back driving for others,
    /// and a closed-loop client submits its next request at once).
    public func result(of id: UInt64) async throws -> GenerationResult {
        guard runs[id] != nil || results[id] != nil else {
            throw GenerationError("no request \(id): expected the id of a submitted request whose result was not yet taken")
        }
        while true {
            if let result = results.removeValue(forKey: id) { return try result.get() }
            if isDriving {
                await withCheckedContinuation { waiters[id] = $0 }
            } else {
                defer { handOver() }
                try await drive(.request(id))
            }
        }
    }

    /// After a caller's drive ends: wakes one waiting caller to drive the rest.
    private func handOver() {
        guard !isDriving, let id = waiters.keys.first, let waiter = waiters.removeValue(forKey: id) else { return }
        waiter.resume()
    }

    /// Submits a request and waits for its result.
    public func generate(_ request: Request) async throws -> GenerationResult {
        try await result(of: submit(request))
    }

    /// Submits every request, then waits for all; results in request order.
    public func generate(batch requests: [Request]) async throws -> [GenerationResult] {
        var ids: [UInt64] = []
        for request in requests { ids.append(try submit(request)) }
        var out: [GenerationResult] = []
        for id in ids { out.append(try await result(of: id)) }
        return out
    }


    private func check(_ request: Request) throws(GenerationError) {
        do { try request.parameters.validate() } catch { throw GenerationError(error.description) }
        let vocabulary = executor.loaded.configuration.vocabularySize
        guard !request.promptTokens.isEmpty else { throw GenerationError("the prompt is empty: expected at least one token") }
        for id in request.promptTokens where id < 0 || Int(id) >= vocabulary {
            throw GenerationError("prompt token \(id) is outside the vocabulary 0..<\(vocabulary)")
        }
        guard request.promptTokens.count < contextLimit else {
            throw GenerationError(
                "the prompt has \(request.promptTokens.count) tokens; this engine holds at most \(contextLimit - 1) prompt tokens per request "
                    + "(context \(executor.loaded.configuration.contextLength), KV cache \(executor.kvBlocks * executor.loaded.model.cache.blockSize) tokens "
                    + "over \(configuration.virtualEngines) virtual engines)")
        }
    }

    private func complete(_ id: UInt64, with result: Result<GenerationResult, GenerationError>) {
        if case let .success(done) = result { metrics.finished(done) }
        runs[id] = nil
        engineOf[id] = nil
        results[id] = result
        waiters.removeValue(forKey: id)?.resume()
    }

    // MARK: - Service

    /// Serves requests until graceful shutdown: then admits no more, finishes the running
    /// ones, and shuts the executor down. When the executor fails, every request fails with
    /// its reason and the service waits for shutdown without throwing.
    ///
    /// Cancelled (SIGINT in a service group), it stops at once: running requests end with
    /// finish reason `abort`, and the executor and its workers shut down.
    public func run() async throws {
        await withTaskCancellationHandler {
            await withGracefulShutdownHandler {
                do {
                    try await drive(.serve)
                } catch {
                    // A failed executor (a worker died or hung) failed every request and
                    // fails every later one with its reason; the service stays up so the
                    // process around it (a server's health endpoint) can report it.
                    executor.shutdown()
                    try? await gracefulShutdown()
                    return
                }
                executor.shutdown()
            } onGracefulShutdown: {
                self.admitting.withLock { $0 = false }
                Task { await self.wake() }
            }
        } onCancel: {
            self.admitting.withLock { $0 = false }
            Task { await self.abortAll() }
        }
    }

    /// Ends every request now (finish reason `abort`) and wakes the loop so it can end.
    private func abortAll() {
        for id in Array(runs.keys) { abort(id) }
        wake()
    }


    private func wake() {
        let waking = sleepers
        sleepers.removeAll()
        for sleeper in waking { sleeper.resume() }
    }

    /// Stops admitting and shuts the executor down once running requests are done. For
    /// callers that drive the engine through `generate`.
    public func shutdown() async {
        admitting.withLock { $0 = false }
        if !isDriving { executor.shutdown() }
    }

    private var hasWork: Bool { schedulers.contains { $0.hasWork } || executor.hasStepsInFlight }

    // MARK: - Steps

    enum Goal {
        /// Serve until graceful shutdown and no work is left.
        case serve
        /// Run until this request is done.
        case request(UInt64)
    }

    private func holds(_ goal: Goal) -> Bool {
        switch goal {
        case .serve: accepting || hasWork
        case let .request(id): runs[id] != nil
        }
    }

    /// Runs steps while `goal` holds, sleeping while there is nothing to run.
    private func drive(_ goal: Goal) async throws {
        drivers += 1
        defer { drivers -= 1 }
        while holds(goal) {
            if let failure { throw failure }
            if hasWork {
                try step()
                await Task.yield()  // let new requests and aborts in
            } else {
                try pauseWorkers()
                await withCheckedContinuation { sleepers.append($0) }
            }
        }
        // A failure here is recorded for later calls, but this caller's request is done.
        if !hasWork { try? pauseWorkers() }
    }

    /// With nothing to run, the workers leave their execution loop (the seed's
    /// `stop_remote_worker_execution_loop`); the next step puts them back.
    private func pauseWorkers() throws {
        guard failure == nil, executor.isExecutionLoopRunning else { return }
        do { try executor.stopExecutionLoop() } catch { throw fail(error) }
    }

    /// Every rank's health: alive, stuck or dead, its last step and heartbeat age.
    public var health: [RankHealth] { executor.health() }

    /// Whether the workers are in their execution loop (they leave it while the engine is idle).
    public var workersLooping: Bool { executor.isExecutionLoopRunning }

    /// The executor failed (a worker died, say): every request fails with it.
    private func fail(_ error: any Error) -> GenerationError {
        var failure = error as? GenerationError ?? GenerationError("\(error)", kind: .engineFailed, rank: (error as? WorkerFailure)?.rank)
        failure.kind = .engineFailed
        self.failure = failure
        for id in Array(runs.keys) { complete(id, with: .failure(failure)) }
        return failure
    }

    private func updateGauges() {
        metrics.update(running: runningRequests, waiting: waitingRequests,
                       cacheUsage: 1 - Double(freeKVBlocks) / Double(max(1, totalKVBlocks)))
    }

    /// Submits a step for every idle virtual engine with work, then takes the oldest output.
    private func step() throws {
        do {
            // The executor keeps the one queue of steps in flight, with their virtual engines.
            for v in schedulers.indices where !executor.hasStepInFlight(virtualEngine: v) {
                guard let sequences = schedulers[v].schedule() else {
                    if schedulers[v].hasWork {
                        throw GenerationError(
                            "virtual engine \(v) cannot schedule its \(schedulers[v].running.count + schedulers[v].waiting.count) requests "
                                + "with \(schedulers[v].allocator.freeBlocks) of \(schedulers[v].allocator.blockCount) KV blocks free")
                    }
                    continue
                }
                try executor.submit(virtualEngine: v, sequences: sequences, finishedRequestIDs: schedulers[v].takeFinishedIDs())
            }
            guard executor.hasStepsInFlight else { return }
            let (v, output) = try executor.receive()
            for sample in output.samples {
                // A request aborted while its step was in flight: nothing to do.
                let id = sample.sequenceID
                // In place: a copy out of the dictionary would copy the request's tokens and
                // text on every token.
                guard runs[id]?.accept(sample, contextLimit: contextLimit) != nil, let run = runs[id] else { continue }
                schedulers[v].append(sample.token, to: id)
                if run.isDone {
                    schedulers[v].finish(id)
                    complete(id, with: .success(run.result(loadSeconds: executor.loadSeconds)))
                }
            }
            metrics.generated(tokens: output.samples.count)
            updateGauges()
        } catch {
            throw fail(error)
        }
    }
}
