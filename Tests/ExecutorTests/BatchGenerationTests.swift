import Executor
import ExecutorCore
import ExecutorTestSupport
import ModelRunner
import Testing

/// Batched generation on one in-process worker: requests batched together (and dealt over
/// virtual engines) give exactly what each gives alone.
@Suite struct BatchGenerationTests {
    @Test("a batch gives each request's tokens alone, greedy and seeded, over 1 and 2 virtual engines")
    func batchEqualsAlone() async throws {
        let path = try TinyLlama().write()
        defer { TemporaryFiles.remove(path) }
        let executor = try await LocalExecutor(
            modelPath: path, options: ExecutorOptions(threads: 1, precise: true, kvCacheMiB: 4, maxBatchTokens: 8))
        let requests: [LocalExecutor.BatchRequest] = (0..<5).map { i in
            let prompt = (0..<(2 + i * 4)).map { Int32(($0 * 29 + i * 7) % 250 + 3) }
            var parameters = SamplingParameters(temperature: i % 2 == 0 ? 0 : 0.9, ignoreEndOfGeneration: true, maxTokens: 3 + 2 * i)
            parameters.seed = UInt64(100 + i)
            return .init(promptTokens: prompt, parameters: parameters)
        }
        var alone: [[Int32]] = []
        for r in requests { alone.append(try await executor.generate(promptTokens: r.promptTokens, parameters: r.parameters).tokens) }
        #expect(alone.map(\.count) == requests.map(\.parameters.maxTokens))
        for engines in [1, 2] {
            let batched = try await executor.generate(batch: requests, virtualEngines: engines)
            #expect(batched.map(\.tokens) == alone, "\(engines) virtual engines")
        }
        await executor.shutdown()
    }

    @Test("a batch the KV cache cannot hold fails with the numbers, and frees its blocks")
    func cacheFull() async throws {
        let path = try TinyLlama().write()
        defer { TemporaryFiles.remove(path) }
        // 1 MiB of cache at 512 B per token (2 layers × K and V × 32 floats): 2048 tokens.
        let executor = try await LocalExecutor(
            modelPath: path, options: ExecutorOptions(threads: 1, kvCacheMiB: 1, maxBatchTokens: 64))
        let blocks = executor.loaded.model.cache.blockCount
        let long = LocalExecutor.BatchRequest(
            promptTokens: Array(repeating: 7, count: 200),
            parameters: SamplingParameters(temperature: 0, ignoreEndOfGeneration: true, maxTokens: 40))
        let count = blocks * 16 / 200 + 2
        await #expect {
            _ = try await executor.generate(batch: Array(repeating: long, count: count), virtualEngines: 1)
        } throws: { error in
            "\(error)".contains("the KV cache is full")
        }
        // Every block came back: one request still runs.
        let one = try await executor.generate(batch: [long], virtualEngines: 1)
        #expect(one[0].tokens.count == 40)
        await executor.shutdown()
    }
}
