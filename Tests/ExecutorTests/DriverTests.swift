import Executor
import ExecutorCore
import Synchronization
import Testing

/// An in-process worker that does no model work but records what the driver asks of it.
final class RecordingWorker: Worker {
    final class Shared: Sendable {
        let loadsInFlight = Mutex(0)
        let maxLoadsInFlight = Mutex(0)
        let events = Mutex<[String]>([])
        let clock = ContinuousClock()
    }

    let shared: Shared
    let blocks: Int
    let stepDuration: Duration
    let context = Mutex<WorkerContext?>(nil)
    let cache = Mutex<(blocks: Int, engines: Int)?>(nil)
    let shutdowns = Mutex(0)
    let healthy: Bool

    init(shared: Shared, blocks: Int = 100, stepDuration: Duration = .zero, healthy: Bool = true) {
        self.shared = shared
        self.blocks = blocks
        self.stepDuration = stepDuration
        self.healthy = healthy
    }

    var rank: Int { context.withLock { $0?.rank ?? -1 } }

    func record(_ event: String) { shared.events.withLock { $0.append(event) } }

    func initialize(_ context: WorkerContext) async throws {
        self.context.withLock { $0 = context }
        record("init \(context.rank)")
    }

    func initializeDevice() async throws { record("device \(rank)") }

    func loadModel() async throws {
        let now = shared.loadsInFlight.withLock { $0 += 1; return $0 }
        shared.maxLoadsInFlight.withLock { $0 = max($0, now) }
        try await Task.sleep(for: .milliseconds(20))
        shared.loadsInFlight.withLock { $0 -= 1 }
        record("load \(rank)")
    }

    func availableKVBlocks() async throws -> Int { blocks }

    func initializeCache(blocksPerVirtualEngine: Int, virtualEngines: Int) async throws {
        cache.withLock { $0 = (blocksPerVirtualEngine, virtualEngines) }
    }

    /// When set, this worker's step for that virtual engine waits (up to 5 s) until the
    /// event has been recorded.
    let waitFor = Mutex<(virtualEngine: Int32, event: String)?>(nil)

    let looping = Mutex(true)
    func startExecutionLoop() async throws { looping.withLock { $0 = true }; record("loop on \(rank)") }
    func stopExecutionLoop() async throws { looping.withLock { $0 = false }; record("loop off \(rank)") }

    func execute(_ step: StepRequest) async throws -> StepOutput? {
        guard looping.withLock({ $0 }) else { throw ExecutorError("rank \(rank): a step while the execution loop is stopped") }
        record("start \(rank) ve\(step.virtualEngine)")
        if let (engine, event) = waitFor.withLock({ $0 }), step.virtualEngine == engine {
            let deadline = ContinuousClock.now + .seconds(5)
            while !shared.events.withLock({ $0.contains(event) }) {
                guard ContinuousClock.now < deadline else { throw ExecutorError("\(event) never happened while this step ran") }
                try await Task.sleep(for: .milliseconds(1))
            }
        }
        if stepDuration > .zero { try await Task.sleep(for: stepDuration) }
        record("end \(rank) ve\(step.virtualEngine)")
        let last = context.withLock { $0!.isLastStage }
        return last ? StepOutput(step: step.step, samples: [.init(sequenceID: 1, token: Int32(rank))]) : nil
    }

    func checkHealth() async throws {
        if !healthy { throw ExecutorError("device lost") }
    }

    func shutdown() async { shutdowns.withLock { $0 += 1 } }
}

@Suite struct DriverTests {
    func contexts(_ layout: ParallelLayout) -> [WorkerContext] {
        (0..<layout.worldSize).map {
            WorkerContext(rank: $0, localRank: $0, worldSize: layout.worldSize, layout: layout, rendezvous: "127.0.0.1:1", environment: [:])
        }
    }

    @Test("start runs init, device and load in order and never more loads at once than allowed", arguments: [1, 2, 3])
    func loadingLimit(limit: Int) async throws {
        let shared = RecordingWorker.Shared()
        let layout = try ParallelLayout(tensorParallel: 3, pipelineParallel: 2)
        let workers = (0..<6).map { RecordingWorker(shared: shared, blocks: 100 + $0) }
        let driver = Driver(layout: layout, workers: workers, maxParallelLoadingWorkers: limit)
        try await driver.start(contexts: contexts(layout))
        #expect(shared.maxLoadsInFlight.withLock { $0 } == limit)
        let events = shared.events.withLock { $0 }
        let lastInit = events.lastIndex { $0.hasPrefix("init") }!, firstDevice = events.firstIndex { $0.hasPrefix("device") }!
        let lastDevice = events.lastIndex { $0.hasPrefix("device") }!, firstLoad = events.firstIndex { $0.hasPrefix("load") }!
        #expect(lastInit < firstDevice && lastDevice < firstLoad)
        // KV cache: the smallest worker (100 blocks) over 2 virtual engines.
        #expect(await driver.blocksPerVirtualEngine == 50)
        #expect(workers.allSatisfy { $0.cache.withLock { $0! } == (50, 2) })
        await driver.shutdown()
    }

    @Test("a step reaches every rank and the result comes from the last stage")
    func syncStep() async throws {
        let layout = try ParallelLayout(tensorParallel: 2, pipelineParallel: 2)
        let workers = (0..<4).map { _ in RecordingWorker(shared: .init()) }
        let driver = Driver(layout: layout, workers: workers)
        try await driver.start(contexts: contexts(layout))
        let output = try await driver.execute(StepRequest(step: 7, sequences: []))
        #expect(output.step == 7 && [2, 3].contains(output.samples[0].token))
        await driver.shutdown()
    }

    @Test("the execution loop stops on every worker and the next step starts it again")
    func executionLoop() async throws {
        let shared = RecordingWorker.Shared()
        let layout = try ParallelLayout(tensorParallel: 2, pipelineParallel: 2)
        let workers = (0..<4).map { _ in RecordingWorker(shared: shared) }
        let driver = Driver(layout: layout, workers: workers)
        try await driver.start(contexts: contexts(layout))
        try await driver.stopExecutionLoop()
        try await driver.stopExecutionLoop()  // idempotent
        #expect(await !driver.isLooping && workers.allSatisfy { !$0.looping.withLock { $0 } })
        #expect(shared.events.withLock { $0.filter { $0.hasPrefix("loop off") }.count } == 4)
        try await driver.checkHealth()  // stopped workers are still up
        _ = try await driver.execute(StepRequest(step: 1, sequences: []))
        #expect(await driver.isLooping && workers.allSatisfy { $0.looping.withLock { $0 } })
        try await driver.stopExecutionLoop()
        _ = try await driver.execute(StepRequest(step: 2, virtualEngine: 1, sequences: []), virtualEngine: 1)
        #expect(shared.events.withLock { $0.filter { $0.hasPrefix("loop on") }.count } == 8)
        await driver.shutdown()
    }

    @Test("virtual engines overlap across pipeline stages")
    func pipelining() async throws {
        let shared = RecordingWorker.Shared()
        let layout = try ParallelLayout(tensorParallel: 1, pipelineParallel: 2)
        let workers = (0..<2).map { _ in RecordingWorker(shared: shared, stepDuration: .milliseconds(20)) }
        let driver = Driver(layout: layout, workers: workers)
        try await driver.start(contexts: contexts(layout))
        // Engine 0's stage-1 step and engine 1's stage-0 step each wait until the other has
        // started: only a driver that overlaps them completes; a serial one times out.
        workers[0].waitFor.withLock { $0 = (1, "start 1 ve0") }
        workers[1].waitFor.withLock { $0 = (0, "start 0 ve1") }
        let first = Task { try await driver.execute(StepRequest(step: 1, virtualEngine: 0, sequences: []), virtualEngine: 0) }
        while !shared.events.withLock({ $0.contains("end 0 ve0") }) { try await Task.sleep(for: .milliseconds(1)) }
        let second = try await driver.execute(StepRequest(step: 1, virtualEngine: 1, sequences: []), virtualEngine: 1)
        _ = try await first.value
        #expect(second.samples.first?.token == 1)
        await driver.shutdown()
    }

    @Test("health reflects reality, naming the rank; shutdown twice is safe; steps after shutdown fail")
    func healthAndShutdown() async throws {
        let layout = try ParallelLayout(tensorParallel: 2)
        let workers = [RecordingWorker(shared: .init()), RecordingWorker(shared: .init(), healthy: false)]
        let driver = Driver(layout: layout, workers: workers)
        try await driver.start(contexts: contexts(layout))
        await #expect(throws: ExecutorError("rank 1 is unhealthy: device lost")) { try await driver.checkHealth() }
        await driver.shutdown()
        await driver.shutdown()
        #expect(workers.allSatisfy { $0.shutdowns.withLock { $0 } == 1 })
        await #expect(throws: ExecutorError.self) { _ = try await driver.execute(StepRequest(step: 1, sequences: [])) }
    }

    @Test("a cache too small for the virtual engines fails start, and workers are shut down")
    func tooFewBlocks() async throws {
        let layout = try ParallelLayout(pipelineParallel: 2)
        let workers = [RecordingWorker(shared: .init(), blocks: 1), RecordingWorker(shared: .init(), blocks: 50)]
        let driver = Driver(layout: layout, workers: workers)
        await #expect(throws: ExecutorError.self) { try await driver.start(contexts: contexts(layout)) }
        #expect(workers.allSatisfy { $0.shutdowns.withLock { $0 } == 1 })
    }
}

