public import ExecutorCore
import Synchronization

/// The executor's driver for one model: it brings workers up in the seed's order, sizes
/// the KV cache to the smallest worker, runs steps across the TP × PP grid, and shuts down.
///
/// Workers are given in rank order (see `Placement.assign`). `start` runs, on all workers:
/// `initialize`, then `initializeDevice`, then `loadModel` with at most
/// `maxParallelLoadingWorkers` loads at once, then sizes the cache to the minimum of
/// `availableKVBlocks`, one cache per virtual engine.
///
/// Steps: `execute` runs a step on every rank and returns the last stage's output.
/// `execute(_:virtualEngine:)` is the pipelined path: a step holds each stage's lock
/// only while that stage runs, so with P stages up to P virtual engines overlap.
public actor Driver {
    public enum State: Sendable, Equatable {
        case created, starting, running, failed(String), shutDown
    }

    public let layout: ParallelLayout
    public let workers: [any Worker]
    public let maxParallelLoadingWorkers: Int?
    public let virtualEngines: Int
    public private(set) var state = State.created
    /// KV blocks per virtual engine after `start`.
    public private(set) var blocksPerVirtualEngine = 0
    private let stageLocks: [AsyncLock]

    public init(layout: ParallelLayout, workers: [any Worker], maxParallelLoadingWorkers: Int? = nil, virtualEngines: Int? = nil) {
        precondition(workers.count == layout.worldSize, "\(layout) needs \(layout.worldSize) workers, got \(workers.count)")
        self.layout = layout
        self.workers = workers
        self.maxParallelLoadingWorkers = maxParallelLoadingWorkers
        self.virtualEngines = virtualEngines ?? layout.pipelineParallel
        stageLocks = (0..<layout.pipelineParallel).map { _ in AsyncLock() }
    }

    // MARK: - Start

    /// Brings every worker up and sizes the KV cache.
    public func start(contexts: [WorkerContext]) async throws {
        guard state == .created else { throw ExecutorError("start: expected a new driver, found state \(state)") }
        precondition(contexts.count == workers.count, "one context per worker")
        state = .starting
        do {
            blocksPerVirtualEngine = try await Startup.run(
                InProcessWorkers(driver: self), contexts: contexts, maxParallelLoadingWorkers: maxParallelLoadingWorkers,
                virtualEngines: virtualEngines)
            state = .running
        } catch {
            state = .failed("\(error)")
            await shutdownWorkers()
            throw error
        }
    }

    /// The start-up phases over the driver's workers, each a fan-out to all of them.
    struct InProcessWorkers: StartupPhases {
        let driver: Driver

        func initialize(_ contexts: [WorkerContext]) async throws {
            _ = try await driver.runAll { worker, rank in try await worker.initialize(contexts[rank]) }
        }

        func initializeDevices() async throws {
            _ = try await driver.runAll { worker, _ in try await worker.initializeDevice() }
        }

        func loadModels(maxConcurrent: Int?) async throws {
            _ = try await driver.runAll(maxConcurrent: maxConcurrent) { worker, _ in try await worker.loadModel() }
        }

        func availableKVBlocks() async throws -> [Int] {
            try await driver.runAll { worker, _ in try await worker.availableKVBlocks() }
        }

        func initializeCaches(blocksPerVirtualEngine: Int, virtualEngines: Int) async throws {
            _ = try await driver.runAll { worker, _ in
                try await worker.initializeCache(blocksPerVirtualEngine: blocksPerVirtualEngine, virtualEngines: virtualEngines)
            }
        }
    }

    // MARK: - Fan-out

    /// Runs `operation` on every worker (at most `maxConcurrent` at once) and returns the
    /// results in rank order. The first error cancels the rest and is rethrown.
    public func runAll<T: Sendable>(
        maxConcurrent: Int? = nil, _ operation: @Sendable @escaping (any Worker, Int) async throws -> T
    ) async throws -> [T] {
        let limit = max(1, min(maxConcurrent ?? workers.count, workers.count))
        let workers = self.workers
        return try await withThrowingTaskGroup(of: (Int, T).self) { group in
            var results = [T?](repeating: nil, count: workers.count)
            var next = 0
            // Rank 0 (the driver's own worker) starts last in the seed; order does not
            // matter for correctness here, so start in rank order up to the limit.
            while next < limit {
                let rank = next
                group.addTask { (rank, try await operation(workers[rank], rank)) }
                next += 1
            }
            while let (rank, value) = try await group.next() {
                results[rank] = value
                if next < workers.count {
                    let rank = next
                    group.addTask { (rank, try await operation(workers[rank], rank)) }
                    next += 1
                }
            }
            return results.map { $0! }
        }
    }

    // MARK: - Steps

    /// Whether the workers are in their execution loop (taking steps).
    public private(set) var isLooping = true

    /// Takes every worker out of its execution loop: they stay up, answer health checks
    /// and refuse steps. The next `execute` starts the loop again (as the seed's
    /// `execute_model` does); so does `startExecutionLoop`. Idempotent.
    public func stopExecutionLoop() async throws {
        try checkRunning()
        guard isLooping else { return }
        _ = try await runAll { worker, _ in try await worker.stopExecutionLoop() }
        isLooping = false
    }

    /// Puts every worker back into its execution loop. Idempotent.
    public func startExecutionLoop() async throws {
        try checkRunning()
        guard !isLooping else { return }
        _ = try await runAll { worker, _ in try await worker.startExecutionLoop() }
        isLooping = true
    }

    /// Checks the driver runs and puts the workers back into their loop if an idle stop
    /// took them out (as the seed's `execute_model` does): one actor hop per step.
    private func prepareStep() async throws {
        try checkRunning()
        try await startExecutionLoop()
    }

    /// Runs one step on every rank; returns the last stage's output.
    public func execute(_ step: StepRequest) async throws -> StepOutput {
        try await prepareStep()
        let outputs = try await runAll { worker, _ in try await worker.execute(step) }
        return try lastStageOutput(outputs, step: step)
    }

    /// Runs one step of `virtualEngine`, stage by stage, holding each stage's lock only
    /// while that stage runs: steps of other virtual engines use the other stages meanwhile.
    public nonisolated func execute(_ step: StepRequest, virtualEngine: Int) async throws -> StepOutput {
        try await prepareStep()
        guard virtualEngine >= 0 && virtualEngine < virtualEngines, Int(step.virtualEngine) == virtualEngine else {
            throw ExecutorError("virtual engine \(virtualEngine) (step says \(step.virtualEngine)): expected one of 0..<\(virtualEngines)")
        }
        var output: StepOutput?
        for stage in 0..<layout.pipelineParallel {
            let ranks = layout.ranks(ofStage: stage)
            let workers = self.workers
            let outputs = try await stageLocks[stage].withLock {
                try await withThrowingTaskGroup(of: StepOutput?.self) { group in
                    for rank in ranks { group.addTask { try await workers[rank].execute(step) } }
                    var collected: [StepOutput?] = []
                    for try await o in group { collected.append(o) }
                    return collected
                }
            }
            if stage == layout.pipelineParallel - 1 { output = outputs.compactMap { $0 }.first }
        }
        guard let output else { throw ExecutorError("step \(step.step): the last stage returned no output") }
        return output
    }

    private func lastStageOutput(_ outputs: [StepOutput?], step: StepRequest) throws -> StepOutput {
        for rank in layout.ranks(ofStage: layout.pipelineParallel - 1) {
            if let o = outputs[rank] { return o }
        }
        throw ExecutorError("step \(step.step): the last stage returned no output")
    }

    private func checkRunning() throws {
        guard state == .running else { throw ExecutorError("expected a running executor, found state \(state)") }
    }

    /// Asks every worker whether it can work; reports the first that cannot, by rank.
    public func checkHealth() async throws {
        try checkRunning()
        do {
            _ = try await runAll { worker, rank in
                do { try await worker.checkHealth() } catch { throw ExecutorError("rank \(rank) is unhealthy: \(error)") }
            }
        } catch {
            state = .failed("\(error)")
            throw error
        }
    }

    // MARK: - Shutdown

    /// Shuts every worker down. Idempotent, safe from any state; never from a finalizer.
    public func shutdown() async {
        guard state != .shutDown else { return }
        await shutdownWorkers()
        state = .shutDown
    }

    private func shutdownWorkers() async {
        await withTaskGroup(of: Void.self) { group in
            for worker in workers { group.addTask { await worker.shutdown() } }
        }
    }
}

/// An executor call that cannot proceed; the message names what was expected and found.
public struct ExecutorError: Error, Equatable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// A first-in-first-out lock for async code (one per pipeline stage).
final class AsyncLock: Sendable {
    private let state = Mutex<(locked: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    func withLock<T: Sendable>(_ body: () async throws -> T) async throws -> T {
        await acquire()
        defer { release() }
        return try await body()
    }

    private func acquire() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let resumeNow = state.withLock { s -> Bool in
                if !s.locked {
                    s.locked = true
                    return true
                }
                s.waiters.append(continuation)
                return false
            }
            if resumeNow { continuation.resume() }
        }
    }

    private func release() {
        let next = state.withLock { s -> CheckedContinuation<Void, Never>? in
            if s.waiters.isEmpty {
                s.locked = false
                return nil
            }
            return s.waiters.removeFirst()  // the lock passes straight to the next waiter
        }
        next?.resume()
    }
}
