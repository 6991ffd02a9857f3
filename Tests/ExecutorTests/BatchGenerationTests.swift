import Engine
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
        let requests: [Engine.Request] = (0..<5).map { i in
            let prompt = (0..<(2 + i * 4)).map { Int32(($0 * 29 + i * 7) % 250 + 3) }
            var parameters = SamplingParameters(temperature: i % 2 == 0 ? 0 : 0.9, ignoreEndOfGeneration: true, maxTokens: 3 + 2 * i)
            parameters.seed = UInt64(100 + i)
            return .init(promptTokens: prompt, parameters: parameters)
        }
        let options = ExecutorOptions(threads: 1, precise: true, kvCacheMiB: 4, maxBatchTokens: 8)
        let single = try await Engine.load(modelPath: path, options: options)
        var alone: [[Int32]] = []
        for r in requests { alone.append(try await single.generate(r).tokens) }
        await single.shutdown()
        #expect(alone.map(\.count) == requests.map(\.parameters.maxTokens))
        for engines in [1, 2] {
            let engine = try await Engine.load(modelPath: path, options: options, configuration: .init(virtualEngines: engines))
            let batched = try await engine.generate(batch: requests)
            await engine.shutdown()
            #expect(batched.map(\.tokens) == alone, "\(engines) virtual engines")
        }
    }

    @Test("under a tight block budget, preemption and recompute give the unconstrained tokens; so do chunked prefill and one sequence at a time")
    func constrainedEqualsUnconstrained() async throws {
        // 8 layers × K and V × 64 floats: 4 KiB per token, so 1 MiB holds 256 tokens (16 blocks).
        var tiny = TinyLlama()
        tiny.layers = 8
        tiny.kvHeads = 4
        let path = try tiny.write()
        defer { TemporaryFiles.remove(path) }
        let requests: [Engine.Request] = (0..<6).map { (i: Int) -> Engine.Request in
            let prompt: [Int32] = (0..<(20 + 7 * i)).map { (t: Int) -> Int32 in Int32((t * 13 + i) % 250 + 3) }
            return .init(promptTokens: prompt, parameters: SamplingParameters(temperature: 0, ignoreEndOfGeneration: true, maxTokens: 30))
        }
        func run(kvMiB: Int, maxBatchTokens: Int = 512, maxSequences: Int = 256) async throws -> (tokens: [[Int32]], preemptions: Int) {
            let engine = try await Engine.load(
                modelPath: path, options: ExecutorOptions(threads: 1, precise: true, kvCacheMiB: kvMiB, maxBatchTokens: maxBatchTokens),
                configuration: .init(maxSequences: maxSequences))
            let results = try await engine.generate(batch: requests)
            let preemptions = await engine.preemptions
            await engine.shutdown()
            return (results.map(\.tokens), preemptions)
        }
        let free = try await run(kvMiB: 16)
        #expect(free.tokens.allSatisfy { $0.count == 30 } && free.preemptions == 0)
        // The six requests grow to 380 tokens together; 256 fit.
        let tight = try await run(kvMiB: 1)
        #expect(tight.tokens == free.tokens)
        #expect(tight.preemptions > 0)
        #expect(try await run(kvMiB: 16, maxBatchTokens: 8).tokens == free.tokens, "chunked prefill")
        #expect(try await run(kvMiB: 16, maxSequences: 1).tokens == free.tokens, "one at a time")
    }
}
