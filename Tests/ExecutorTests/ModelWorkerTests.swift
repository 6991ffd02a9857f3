import WorkerRuntime
import ExecutorCore
import ExecutorTestSupport
import Kernels
import ModelRunner
import Testing

@Suite struct ModelWorkerTests {
    @Test("bad step requests are rejected with what was expected, never run")
    func badSteps() async throws {
        let path = try TinyLlama().write()
        defer { TemporaryFiles.remove(path) }
        let worker = ModelWorker(modelPath: path, options: ModelOptions(threads: 1, kvCacheBytes: 1 << 20, blockSize: 4))
        try worker.initialize(WorkerContext(rank: 0, localRank: 0, worldSize: 1, layout: .single, rendezvous: "", environment: [:]))
        try worker.loadNow()
        let blocks = try worker.availableKVBlocksNow()
        func step(_ sequence: StepRequest.Sequence) -> StepRequest { StepRequest(step: 0, sequences: [sequence]) }
        let bad: [(StepRequest.Sequence, String)] = [
            (.init(id: 1, tokens: [], startPosition: 0, blockTable: [0]), "at least one token"),
            (.init(id: 1, tokens: [99_999], startPosition: 0, blockTable: [0]), "outside the vocabulary"),
            (.init(id: 1, tokens: [1, 2, 3, 4, 5], startPosition: 0, blockTable: [0]), "block table covers 4"),
            (.init(id: 1, tokens: [1], startPosition: 0, blockTable: [Int32(blocks)]), "outside 0..<\(blocks)"),
        ]
        for (sequence, message) in bad {
            #expect { _ = try worker.executeNow(step(sequence)) } throws: { "\($0)".contains(message) }
            #expect { try worker.validateNow(step(sequence)) } throws: { "\($0)".contains(message) }
        }
        // More tokens than one step may carry (three prompts of 200 within the context of 256).
        var prompts: [StepRequest.Sequence] = []
        for i in 0..<3 {
            let first = Int32(i * 50)
            let table = Array(first..<(first + 50))
            prompts.append(StepRequest.Sequence(id: UInt64(10 + i), tokens: [Int32](repeating: 1, count: 200), startPosition: 0, blockTable: table))
        }
        let crowded = StepRequest(step: 0, sequences: prompts)
        #expect { try worker.validateNow(crowded) } throws: { "\($0)".contains("has 600 tokens; this worker runs at most 512 per step") }
        // A good step still works afterwards, and samples only where asked.
        let output = try worker.executeNow(StepRequest(step: 1, sequences: [
            .init(id: 2, tokens: [1, 2], startPosition: 0, blockTable: [0], sample: true),
            .init(id: 3, tokens: [3], startPosition: 0, blockTable: [1], sample: false),
        ]))
        #expect(output.samples.map(\.sequenceID) == [2])
        #expect { _ = try worker.executeNow(StepRequest(step: 2, sequences: [], blockCopies: [.init(source: 0, destination: Int32(blocks))])) }
            throws: { "\($0)".contains("KV block \(blocks) is outside") }
        worker.shutdown()
    }

    @Test("block copies run before the step: a sequence decoding over a copied block sees the original's keys")
    func blockCopies() async throws {
        let path = try TinyLlama().write()
        defer { TemporaryFiles.remove(path) }
        let worker = ModelWorker(modelPath: path, options: ModelOptions(threads: 1, mode: .precise, kvCacheBytes: 1 << 20, blockSize: 4))
        try worker.loadNow()
        let greedy = SamplingParameters(temperature: 0, logprobs: 3)
        func decode(_ id: UInt64, table: [Int32], copies: [StepRequest.BlockCopy], step: UInt64) async throws -> [TokenLogprob] {
            let request = StepRequest(step: step, sequences: [.init(id: id, tokens: [42], startPosition: 3, blockTable: table, sampling: greedy)],
                                      blockCopies: copies)
            return try #require(try worker.executeNow(request).samples.first?.top)
        }
        // Prompt of 3 tokens into block 0, then decode one token on block 0 and on a copy in block 5.
        _ = try worker.executeNow(StepRequest(step: 0, sequences: [.init(id: 1, tokens: [7, 8, 9], startPosition: 0, blockTable: [0], sample: false)]))
        let original = try await decode(1, table: [0], copies: [], step: 1)
        let copied = try await decode(2, table: [5], copies: [.init(source: 0, destination: 5)], step: 2)
        #expect(copied == original)
        // Without the copy, block 6 holds no prompt and the result differs.
        let uncopied = try await decode(3, table: [6], copies: [], step: 3)
        #expect(uncopied != original)
        worker.shutdown()
    }
}
