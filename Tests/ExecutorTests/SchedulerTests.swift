import Engine
import Executor
import ExecutorCore
import ModelRunner
import Testing

/// The scheduler alone: admission, chunked prefill, preemption, aborts, fairness.
@Suite struct SchedulerTests {
    func scheduler(blocks: Int = 64, blockSize: Int = 4, maxSequences: Int = 8, maxBatchTokens: Int = 8) -> Scheduler {
        Scheduler(maxSequences: maxSequences, maxBatchTokens: maxBatchTokens, allocator: BlockAllocator(blockCount: blocks, blockSize: blockSize))
    }

    func prompt(_ n: Int, _ base: Int32 = 10) -> [Int32] { (0..<Int32(n)).map { base + $0 } }

    /// The next step, which must exist.
    func next(_ s: inout Scheduler) throws -> [StepRequest.Sequence] {
        let step = s.schedule()
        return try #require(step)
    }

    @Test("decodes come first, then prompt chunks within the token budget, first come first served")
    func chunkedPrefillMixesWithDecodes() throws {
        var s = scheduler()
        s.add(id: 1, prompt: prompt(5), parameters: .init())
        s.add(id: 2, prompt: prompt(12), parameters: .init())
        let first = try next(&s)
        #expect(first.map(\.id) == [1, 2] && first.map(\.tokens.count) == [5, 3])
        #expect(first.map(\.sample) == [true, false] && first[1].startPosition == 0)
        s.append(99, to: 1)
        let second = try next(&s)
        #expect(second.map(\.id) == [1, 2] && second.map(\.tokens) == [[99], Array(prompt(12)[3..<10])])
        #expect(second[0].startPosition == 5 && second[1].startPosition == 3 && second[1].sample == false)
        let third = try next(&s)
        #expect(third.map(\.tokens.count) == [2] && third[0].sample, "request 1 waits for its token; 2 finishes its prompt")
    }

    @Test("at most maxSequences run; the rest wait in arrival order")
    func admissionLimit() throws {
        var s = scheduler(maxSequences: 2, maxBatchTokens: 64)
        for id in 1...4 { s.add(id: UInt64(id), prompt: prompt(3), parameters: .init()) }
        #expect(try next(&s).map(\.id) == [1, 2])
        #expect(s.waiting.map(\.id) == [3, 4])
        s.finish(1)
        s.append(7, to: 2)
        #expect(try next(&s).map(\.id) == [2, 3])
        let finished = s.takeFinishedIDs()
        #expect(finished == [1])
    }

    @Test("when blocks run out the newest running request is preempted, then recomputed with its generated tokens")
    func preemption() throws {
        // 4 blocks of 4 tokens; two requests of 8 prompt tokens take 2 blocks each.
        var s = scheduler(blocks: 4, maxBatchTokens: 64)
        s.add(id: 1, prompt: prompt(8), parameters: .init())
        s.add(id: 2, prompt: prompt(8, 50), parameters: .init())
        #expect(try next(&s).map(\.id) == [1, 2])
        #expect(s.allocator.freeBlocks == 0)
        s.append(100, to: 1)
        s.append(200, to: 2)
        // Both now hold 9 tokens: their next tokens need a third block each, and none is free.
        let step = try next(&s)
        #expect(step.map(\.id) == [1] && step[0].tokens == [100])
        #expect(s.waiting.map(\.id) == [2] && s.preemptionCount == 1)
        let preempted = try #require(s.entry(2))
        #expect(preempted.computed == 0 && preempted.table.isEmpty && preempted.tokens == prompt(8, 50) + [200])
        // Once request 1 ends, request 2 is recomputed: prompt and generated token in one chunk.
        s.finish(1)
        let recompute = try next(&s)
        #expect(recompute.map(\.id) == [2] && recompute[0].tokens == prompt(8, 50) + [200] && recompute[0].sample)
    }

    @Test("an abort frees the request's blocks at once and is reported with the next step")
    func abortFreesBlocks() throws {
        var s = scheduler(blocks: 8)
        s.add(id: 1, prompt: prompt(8), parameters: .init())
        s.add(id: 2, prompt: prompt(3), parameters: .init())
        _ = try next(&s)
        #expect(s.allocator.freeBlocks < 8)
        let one = s.finish(1), two = s.finish(2)
        #expect(one && two)
        #expect(s.allocator.freeBlocks == 8 && !s.hasWork)
        let reported = s.takeFinishedIDs(), again = s.takeFinishedIDs()
        #expect(reported == [1, 2] && again == [])
        let unknown = s.finish(3)
        #expect(!unknown)
    }

    @Test("no request waits forever while new ones keep arriving")
    func noStarvation() throws {
        var s = scheduler(blocks: 16, maxSequences: 2, maxBatchTokens: 16)
        s.add(id: 1, prompt: prompt(3), parameters: .init())
        var next: UInt64 = 2
        var admittedAt: [UInt64: Int] = [:]
        for step in 0..<60 {
            // Two new requests per step, each running 3 steps.
            for _ in 0..<2 {
                s.add(id: next, prompt: prompt(3), parameters: .init())
                next += 1
            }
            guard let scheduled = s.schedule() else { continue }
            for sequence in scheduled where admittedAt[sequence.id] == nil { admittedAt[sequence.id] = step }
            for sequence in scheduled where sequence.sample {
                s.append(1, to: sequence.id)
                if let entry = s.entry(sequence.id), entry.tokens.count >= 6 { s.finish(sequence.id) }
            }
        }
        // First come, first served: admission order is arrival order.
        let admitted = admittedAt.keys.sorted()
        #expect(admitted == Array(1...UInt64(admitted.count)))
        #expect(admittedAt[1] == 0 && admitted.count > 20)
    }
}
