import Collectives
import ExecutorTestSupport
import Foundation
import Synchronization
import Testing

@Suite struct SharedMemoryCommunicatorTests {
    /// Runs `body(communicator)` on one thread per rank, each with its own attached handle.
    func onRanks(_ ranks: Int, capacity: Int = 1 << 20, _ body: @escaping @Sendable (SharedMemoryCommunicator) throws -> Void) throws -> [String] {
        let root = try SharedMemoryCommunicator.create(ranks: ranks, capacity: capacity)
        defer { root.close() }
        let handles = [root] + (try (1..<ranks).map { try SharedMemoryCommunicator.attach(name: root.name, rank: $0) })
        let errors = Mutex<[String]>([])
        let done = Mutex(0)
        for handle in handles {
            Thread {
                do { try body(handle) } catch { errors.withLock { $0.append("rank \(handle.rank): \(error)") } }
                done.withLock { $0 += 1 }
            }.start()
        }
        while done.withLock({ $0 }) < ranks { usleep(1_000) }
        return errors.withLock { $0 }
    }

    @Test("all-reduce equals a serial sum in rank order, bit for bit, from 1 float to 16 MiB", arguments: [2, 3, 4])
    func allReduce(ranks: Int) throws {
        for count in [1, 7, 1000, 4 << 20] {
            let inputs = (0..<ranks).map { randomFloats(count, seed: UInt64($0 * 7 + count)) }
            let expected = serialSum(inputs)
            let results = Mutex<[[Float]]>(Array(repeating: [], count: ranks))
            let errors = try onRanks(ranks) { c in
                var buffer = inputs[c.rank]
                try buffer.withUnsafeMutableBufferPointer { try c.allReduceSum($0) }
                results.withLock { $0[c.rank] = buffer }
            }
            #expect(errors == [])
            #expect(results.withLock { $0 }.allSatisfy { $0 == expected }, "\(ranks) ranks, \(count) floats")
        }
    }

    @Test("all-gather concatenates in rank order; broadcast copies the root's buffer", arguments: [2, 3])
    func gatherAndBroadcast(ranks: Int) throws {
        for count in [1, 33, 70_000] {
            let inputs = (0..<ranks).map { randomFloats(count, seed: UInt64($0 + 100)) }
            let gathered = Mutex<[[Float]]>(Array(repeating: [], count: ranks))
            let broadcasted = Mutex<[[Float]]>(Array(repeating: [], count: ranks))
            let errors = try onRanks(ranks, capacity: 4096) { c in
                var out = [Float](repeating: .nan, count: ranks * count)
                try inputs[c.rank].withUnsafeBufferPointer { input in
                    try out.withUnsafeMutableBufferPointer { try c.allGather(input, into: $0) }
                }
                gathered.withLock { $0[c.rank] = out }
                var buffer = inputs[c.rank]
                try buffer.withUnsafeMutableBufferPointer { try c.broadcast($0, root: ranks - 1) }
                broadcasted.withLock { $0[c.rank] = buffer }
            }
            #expect(errors == [])
            #expect(gathered.withLock { $0 }.allSatisfy { $0 == inputs.flatMap { $0 } })
            #expect(broadcasted.withLock { $0 }.allSatisfy { $0 == inputs[ranks - 1] })
        }
    }

    @Test("a rank that never arrives is named; the others fail instead of hanging")
    func missingRank() throws {
        let errors = try onRanks(3) { c in
            c.timeout = 0.3
            if c.rank == 2 { return }  // never joins
            var buffer: [Float] = [1, 2, 3]
            try buffer.withUnsafeMutableBufferPointer { try c.allReduceSum($0) }
        }
        #expect(errors.count == 2)
        #expect(errors.allSatisfy { $0.contains("rank 2 did not arrive within 0.3 s") }, "\(errors)")
    }

    @Test("attaching with a rank outside the communicator fails with what was found")
    func badAttach() throws {
        let c = try SharedMemoryCommunicator.create(ranks: 2, capacity: 16)
        defer { c.close() }
        #expect(throws: (any Error).self) { try SharedMemoryCommunicator.attach(name: c.name, rank: 2) }
    }
}
