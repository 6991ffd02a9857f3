import Engine
import Executor
import ExecutorCore
import ExecutorTestSupport
import Foundation
import Kernels
import Launchers
import ModelRunner
import Testing
import WorkerRuntime

/// TP × PP grids of real worker processes (`cohort worker`) on tiny generated models,
/// through the executor's batched generation.
@Suite(.serialized) struct WorkerGridTests {
    static var cohort: String { WorkerGroupTests.cohort }

    /// A model with an odd layer count, 3 KV heads (TP 2 splits them 2 + 1) and an FFN of
    /// 4 blocks.
    static func model() throws -> String {
        var tiny = TinyLlama()
        tiny.layers = 5
        tiny.attentionHeads = 6
        tiny.kvHeads = 3
        tiny.hiddenSize = 96
        tiny.feedForwardSize = 128
        return try tiny.write()
    }

    static func options(tp: Int = 1, pp: Int = 1, layers: [Int]? = nil) -> ExecutorOptions {
        // Batches of at most 8 tokens: prompts are prefilled in chunks.
        ExecutorOptions(
            threads: 1, precise: true, kvCacheMiB: 4, maxBatchTokens: 8, tensorParallel: tp, pipelineParallel: pp,
            pipelineLayers: layers, workerExecutable: cohort)
    }

    /// Prompts of different lengths (1 to 19 tokens: one to three prefill chunks) with
    /// different lengths of output.
    static var requests: [Engine.Request] {
        (0..<6).map { i in
        let prompt = (0..<(1 + i * 18 / 5)).map { Int32(($0 * 37 + i * 11) % 250 + 3) }
        return .init(
            promptTokens: prompt, parameters: SamplingParameters(temperature: 0, ignoreEndOfGeneration: true, maxTokens: 4 + i))
        }
    }

    @Test("every grid up to TP 2 × PP 3 gives one worker's tokens for a batch, with one step in flight per virtual engine")
    func gridsMatchOneWorker() async throws {
        let path = try Self.model()
        defer { TemporaryFiles.remove(path) }
        // The reference: each request alone, on one in-process worker.
        let single = try await Engine.load(modelPath: path, options: Self.options())
        var expected: [[Int32]] = []
        for r in Self.requests { expected.append(try await single.generate(r).tokens) }
        await single.shutdown()
        #expect(expected.map(\.count) == Self.requests.map(\.parameters.maxTokens))

        for (tp, pp, layers) in [(1, 2, nil), (1, 3, [1, 3, 1]), (2, 1, nil), (2, 2, nil), (2, 3, nil)] as [(Int, Int, [Int]?)] {
            let engine = try await Engine.load(
                modelPath: path, options: Self.options(tp: tp, pp: pp, layers: layers), configuration: .init(virtualEngines: pp))
            let results = try await engine.generate(batch: Self.requests)
            let statistics = try #require(await engine.gridStatistics)
            await engine.shutdown()
            #expect(results.map(\.tokens) == expected, "TP \(tp) × PP \(pp)")
            // With P stages and P virtual engines, P steps were in flight at once.
            #expect(statistics.maxStepsInFlight == pp, "TP \(tp) × PP \(pp)")
        }
    }

    @Test("an idle engine takes the workers out of their execution loop and the next request puts them back")
    func idleStopsTheLoop() async throws {
        let path = try Self.model()
        defer { TemporaryFiles.remove(path) }
        let engine = try await Engine.load(modelPath: path, options: Self.options(pp: 2), configuration: .init(virtualEngines: 2))
        let first = try await engine.generate(batch: Self.requests)
        #expect(await !engine.workersLooping)
        let pids = await engine.workerPIDs
        let again = try await engine.generate(batch: Self.requests)
        #expect(again.map(\.tokens) == first.map(\.tokens))
        #expect(await engine.workerPIDs == pids)
        #expect(await !engine.workersLooping)
        await engine.shutdown()
    }

    @Test("a worker killed in a pipeline fails the batch within a second, naming its rank; no process is left")
    func killedStage() async throws {
        let path = try Self.model()
        defer { TemporaryFiles.remove(path) }
        let executor = try await Engine.load(modelPath: path, options: Self.options(pp: 3), configuration: .init(virtualEngines: 3))
        let pids = await executor.workerPIDs
        #expect(pids.count == 2)
        kill(pids[1], SIGKILL)  // rank 2: the last stage
        let start = Date()
        await #expect {
            _ = try await executor.generate(batch: Self.requests)
        } throws: { error in
            "\(error)".contains("worker rank 2 (pid \(pids[1]) on \(Machine.hostName())) was killed by signal 9")
        }
        #expect(Date().timeIntervalSince(start) < 1.5)
        await executor.shutdown()
        for pid in pids { #expect(kill(pid, 0) != 0, "pid \(pid) still exists") }
    }

    @Test("over TCP collectives, a killed tensor-parallel peer fails the step within a second, naming its rank")
    func killedTCPPeer() async throws {
        let path = try Self.model()
        defer { TemporaryFiles.remove(path) }
        var options = Self.options(tp: 2)
        options.collectives = .tcp
        let executor = try await Engine.load(modelPath: path, options: options)
        // The grid works over TCP first.
        let before = try await executor.generate(batch: Array(Self.requests.prefix(2)))
        #expect(before.map(\.tokens.count) == [4, 5])
        let pids = await executor.workerPIDs
        kill(pids[0], SIGKILL)
        let start = Date()
        await #expect {
            _ = try await executor.generate(batch: Self.requests)
        } throws: { error in
            "\(error)".contains("rank 1")
        }
        #expect(Date().timeIntervalSince(start) < 1.5)
        await executor.shutdown()
        #expect(kill(pids[0], 0) != 0)
    }

    /// Long generations to interrupt.
    static var longRequests: [Engine.Request] {
        (0..<2).map { i in
            .init(promptTokens: [Int32(3 + i), 4, 5],
                  parameters: SamplingParameters(temperature: 0, ignoreEndOfGeneration: true, maxTokens: 100_000))
        }
    }

    /// Starts a long batch on `engine`, lets it run, applies `signal` to rank `rank`, and
    /// returns the error and how long it took to come.
    static func interrupt(_ engine: Engine, rank: Int, with signal: Int32) async throws -> (error: String, seconds: Double) {
        let running = Task { try await engine.generate(batch: Self.longRequests) }
        try await Task.sleep(for: .milliseconds(300))
        let pids = await engine.workerPIDs
        kill(pids[rank - 1], signal)
        let start = Date()
        do {
            _ = try await running.value
            return ("no error", Date().timeIntervalSince(start))
        } catch {
            return ("\(error)", Date().timeIntervalSince(start))
        }
    }

    func gone(_ pids: [Int32]) -> Bool {
        pids.allSatisfy { !WorkerGroupTests().isRunning($0) }
    }

    @Test("a stopped rank (TP over shm, TP over TCP, a PP stage) ends the run within 2 s, naming rank and step; health says stuck; nothing is left",
          arguments: ["shm", "tcp", "pp"])
    func stoppedRank(collectives: String) async throws {
        let path = try Self.model()
        defer { TemporaryFiles.remove(path) }
        var options = collectives == "pp" ? Self.options(pp: 2) : Self.options(tp: 3)
        if collectives == "tcp" { options.collectives = .tcp }
        let engine = try await Engine.load(modelPath: path, options: options, configuration: .init(virtualEngines: options.pipelineParallel))
        let pids = await engine.workerPIDs
        let before = Set(try FileManager.default.contentsOfDirectory(atPath: "/dev/shm"))
        let (error, seconds) = try await Self.interrupt(engine, rank: 1, with: SIGSTOP)
        #expect(error.contains("worker rank 1 (pid \(pids[0])") && error.contains("is stuck during step "), "\(error)")
        #expect(seconds < 2, "\(collectives): \(seconds) s")
        let health = await engine.health
        guard case .stuck = health[1].status else { Issue.record("rank 1: \(health[1])"); return }
        await engine.shutdown()
        try await Task.sleep(for: .milliseconds(300))
        #expect(gone(pids))
        let after = Set(try FileManager.default.contentsOfDirectory(atPath: "/dev/shm"))
        #expect(after.subtracting(before).isEmpty)
    }

    @Test("over TCP collectives at TP 3, a killed rank 1 is named (not the rank waiting on it) within 1 s")
    func killedTCPRankNamed() async throws {
        let path = try Self.model()
        defer { TemporaryFiles.remove(path) }
        var options = Self.options(tp: 3)
        options.collectives = .tcp
        let engine = try await Engine.load(modelPath: path, options: options)
        let pids = await engine.workerPIDs
        let (error, seconds) = try await Self.interrupt(engine, rank: 1, with: SIGKILL)
        #expect(error.contains("worker rank 1 (pid \(pids[0]) on \(Machine.hostName())) was killed by signal 9"), "\(error)")
        #expect(seconds < 1)
        let health = await engine.health
        guard case let .dead(reason) = health[1].status, reason.contains("killed by signal 9") else { Issue.record("\(health[1])"); return }
        #expect(health[0].status == .alive && health[2].rank == 2)
        await engine.shutdown()
        try await Task.sleep(for: .milliseconds(300))
        #expect(gone(pids))
    }

    @Test("pre-flight: a rank whose machine lacks the memory for its shard and KV budget fails start-up by rank and machine, before loading")
    func preflightMemory() async throws {
        let path = try Self.model()
        defer { TemporaryFiles.remove(path) }
        var options = Self.options(tp: 2)
        options.kvCacheMiB = 1 << 30  // a petabyte of KV cache
        let start = Date()
        #expect {
            _ = try ModelExecutor(modelPath: path, options: options)
        } throws: { error in
            let text = "\(error)"
            return text.contains("worker rank 1 (pid ") && text.contains("the pre-flight: pre-flight on ")
                && text.contains("MiB available")
        }
        #expect(Date().timeIntervalSince(start) < 5)
    }

    /// Launches a copy of `cohort` one byte longer than the driver's: another build.
    struct OtherBuildLauncher: Launcher {
        let copy: String
        func launch(workers: Int, join: JoinInstructions) throws(LaunchError) -> [(any WorkerProcessHandle)?] {
            var other = join
            other.executable = copy
            return try LocalProcessLauncher().launch(workers: workers, join: other)
        }
        func releaseLifeline() {}
    }

    @Test("a worker of another build is refused at join, naming its token, pid, machine and both builds")
    func otherBuildRefused() throws {
        let copy = TemporaryFiles.path("cohort")
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: Self.cohort)))
        bytes.append(0)
        try TemporaryFiles.write(bytes, to: copy)
        chmod(copy, 0o755)
        defer { TemporaryFiles.remove(copy) }
        #expect {
            _ = try WorkerGroup(workers: 1, configuration: .init(executable: Self.cohort), launcher: OtherBuildLauncher(copy: copy))
        } throws: { error in
            let text = "\(error)"
            return text.contains("worker with join token 1 (pid ") && text.contains("runs another build: expected wire ")
                && text.contains("executable \(bytes.count) bytes")
        }
    }

    @Test("--max-parallel-loading-workers is honoured by the worker processes")
    func loadingLimit() async throws {
        let path = try Self.model()
        defer { TemporaryFiles.remove(path) }
        var options = Self.options(tp: 2, pp: 2)  // three worker processes
        options.maxParallelLoadingWorkers = 1
        let engine = try await Engine.load(modelPath: path, options: options)
        #expect(await engine.mostConcurrentWorkerLoads == 1)
        let result = try await engine.generate(Self.requests[0])
        #expect(result.tokens.count == Self.requests[0].parameters.maxTokens)
        await engine.shutdown()
    }

    @Test("the KV cache is sized by asking every rank: the stage with the most layers holds the fewest blocks")
    func kvSizedToSmallestRank() async throws {
        let path = try Self.model()
        defer { TemporaryFiles.remove(path) }
        var options = Self.options(pp: 2, layers: [4, 1])
        options.kvCacheMiB = 1
        let engine = try await Engine.load(modelPath: path, options: options)
        // What the ranks reported equals the planner's estimate for the 4-layer stage.
        let c = try LlamaConfiguration(file: GGUFFile(path: path))
        let plan = try ModelGrid(configuration: c, layout: try options.layout, layerCounts: [4, 1])
        let perBlock = PagedKVCache.bytesPerBlock(layers: 4, blockSize: 16, kvDimensions: c.kvDimensions, element: .f32)
        #expect(await engine.totalKVBlocks == plan.kvBlocks(budgetBytes: 1 << 20, blockSize: 16, element: .f32))
        #expect(await engine.totalKVBlocks == (1 << 20) / perBlock)
        #expect((1 << 20) / perBlock < (1 << 20) / PagedKVCache.bytesPerBlock(layers: 1, blockSize: 16, kvDimensions: c.kvDimensions, element: .f32))
        let result = try await engine.generate(Self.requests[5])
        #expect(result.tokens.count == Self.requests[5].parameters.maxTokens)
        await engine.shutdown()
    }

    @Test("impossible grids fail before any worker starts, naming what is missing")
    func impossibleGrids() throws {
        let path = try Self.model()
        defer { TemporaryFiles.remove(path) }
        for (options, message) in [
            (Self.options(pp: 6), "PP 6 is larger than the model's 5 layers"),
            (Self.options(pp: 2, layers: [2, 2]), "the pipeline layer split 2,2 adds up to 4 layers; the model has 5"),
            (Self.options(tp: 7, pp: 2), "TP 7 is larger than the model's 6 query heads"),
            (Self.options(tp: 4), "TP 4 would start rank 3's query heads at value 80 of the attention output"),
        ] {
            #expect {
                _ = try ModelExecutor(modelPath: path, options: options)
            } throws: { error in
                "\(error)".contains(message)
            }
        }
    }
}
