import Engine
import Executor
import ExecutorCore
import ExecutorTestSupport
import Foundation
import Synchronization
import ServiceLifecycle
import ServiceLifecycleTestKit
import Testing

/// The engine over a real in-process worker and tiny model: as a service, with aborts.
@Suite struct EngineTests {
    static func options() -> ExecutorOptions { ExecutorOptions(threads: 1, precise: true, kvCacheMiB: 4, maxBatchTokens: 16) }

    static func request(_ seed: Int, maxTokens: Int) -> Engine.Request {
        .init(
            promptTokens: (0..<(5 + seed)).map { Int32(($0 * 31 + seed) % 250 + 3) },
            parameters: SamplingParameters(temperature: 0, ignoreEndOfGeneration: true, maxTokens: maxTokens))
    }

    @Test("as a service: requests from concurrent callers complete; graceful shutdown finishes running ones and admits no more")
    func gracefulShutdown() async throws {
        let path = try TinyLlama().write()
        defer { TemporaryFiles.remove(path) }
        let engine = try await Engine.load(modelPath: path, options: Self.options(), configuration: .init(maxSequences: 2))
        try await testGracefulShutdown { trigger in
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await engine.run() }
                // Concurrent callers while the service runs.
                let early = try await withThrowingTaskGroup(of: GenerationResult.self) { callers in
                    for i in 0..<3 { callers.addTask { try await engine.generate(Self.request(i, maxTokens: 6)) } }
                    return try await callers.reduce(into: []) { $0.append($1) }
                }
                #expect(early.map(\.tokens.count) == [6, 6, 6])
                // Four more in flight (two run, two wait), then shutdown.
                var ids: [UInt64] = []
                for i in 0..<4 { ids.append(try await engine.submit(Self.request(i, maxTokens: 40))) }
                trigger.triggerGracefulShutdown()
                await #expect(throws: GenerationError.self) { _ = try await engine.submit(Self.request(9, maxTokens: 4)) }
                for id in ids {
                    let result = try await engine.result(of: id)
                    #expect(result.tokens.count == 40 && result.finishReason == .length)
                }
                try await group.waitForAll()  // run() returned
            }
        }
        #expect(await engine.freeKVBlocks == engine.totalKVBlocks)
    }

    @Test("an abort ends a running request at once with what it has, and its blocks return")
    func abort() async throws {
        let path = try TinyLlama().write()
        defer { TemporaryFiles.remove(path) }
        let engine = try await Engine.load(modelPath: path, options: Self.options())
        let total = await engine.totalKVBlocks
        let long = try await engine.submit(Self.request(1, maxTokens: 200))
        let short = try await engine.submit(Self.request(2, maxTokens: 30))
        // The short request's caller drives the steps; the long one is aborted meanwhile.
        let waiting = Task { try await engine.result(of: short) }
        while await engine.freeKVBlocks == total { await Task.yield() }
        try await Task.sleep(for: .milliseconds(20))
        await engine.abort(long)
        let aborted = try await engine.result(of: long)
        #expect(aborted.finishReason == .abort && aborted.tokens.count < 200)
        #expect(try await waiting.value.tokens.count == 30)
        #expect(await engine.freeKVBlocks == total)
        await engine.shutdown()
    }

    @Test("without a service, a caller whose request is done returns at once and another caller drives the rest")
    func callersTakeTurnsDriving() async throws {
        let path = try TinyLlama().write()
        defer { TemporaryFiles.remove(path) }
        let engine = try await Engine.load(modelPath: path, options: Self.options())
        // A closed-loop client: a short request, then another short one; meanwhile a long one runs.
        // Whoever drives first, the client's second request must finish while the long one still runs.
        actor Order { var names: [String] = []; func add(_ name: String) { names.append(name) } }
        let order = Order()
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                _ = try await engine.generate(Self.request(1, maxTokens: 3))
                _ = try await engine.generate(Self.request(2, maxTokens: 3))
                await order.add("client")
            }
            group.addTask {
                _ = try await engine.generate(Self.request(3, maxTokens: 120))
                await order.add("long")
            }
            try await group.waitForAll()
        }
        #expect(await order.names == ["client", "long"])
        await engine.shutdown()
    }
}

/// Run alone (`make test` does): it measures how late a timer on the cooperative pool
/// fires, which any other test holding pool threads would disturb.
@Suite struct EngineResponsivenessTests {
    @Test("steps run on the engine's own thread: a timer task keeps its schedule while 16 sequences decode")
    func responsiveDuringSteps() async throws {
        let path = try TinyLlama().write()
        defer { TemporaryFiles.remove(path) }
        let engine = try await Engine.load(
            modelPath: path, options: ExecutorOptions(threads: 1, precise: true, kvCacheMiB: 16, maxBatchTokens: 256))
        // Other blocking work holds every cooperative thread but one (as a server's
        // handlers might): the timer below and an engine on the pool would share that one.
        final class Flag: Sendable { let on = Atomic(true) }
        let blocking = Flag()
        let blockers = (1..<max(2, ProcessInfo.processInfo.activeProcessorCount)).map { _ in
            Task { while blocking.on.load(ordering: .relaxed) { usleep(500) } }
        }
        defer { blocking.on.store(false, ordering: .relaxed) }
        let decoding = Task { try await engine.generate(batch: (0..<16).map { EngineTests.request($0 * 7, maxTokens: 40) }) }
        // Ticks every 10 ms on the cooperative pool; how late each one fires.
        let clock = ContinuousClock()
        var lateness: [Duration] = []
        var next = clock.now
        while lateness.count < 100 {
            next += .milliseconds(10)
            try await Task.sleep(until: next, clock: clock)
            lateness.append(clock.now - next)
        }
        let results = try await decoding.value
        blocking.on.store(false, ordering: .relaxed)
        for blocker in blockers { await blocker.value }
        await engine.shutdown()
        #expect(results.allSatisfy { $0.tokens.count == 40 })
        let sorted = lateness.sorted()
        // Within 5 ms of schedule, but for the odd tick the kernel gives to the other threads.
        #expect(sorted[94] < .milliseconds(5), "lateness p95 \(sorted[94]), max \(sorted.last!)")
    }
}
