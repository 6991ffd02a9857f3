import Collectives
import Foundation
import Testing

/// All-reduce between this process and `cohort collective-peer` processes.
@Suite(.serialized) struct CollectivePeerTests {
    func peer(_ name: String, rank: Int, iterations: Int) throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: WorkerGroupTests.cohort)
        p.arguments = ["collective-peer", "--name", name, "--rank", "\(rank)", "--count", "1000", "--iterations", "\(iterations)"]
        try p.run()
        return p
    }

    @Test("all-reduce across processes sums every rank's buffer")
    func acrossProcesses() throws {
        let c = try SharedMemoryCommunicator.create(ranks: 3, capacity: 256)
        defer { c.close() }
        let peers = try [peer(c.name, rank: 1, iterations: 5), peer(c.name, rank: 2, iterations: 5)]
        for _ in 0..<5 {
            var buffer = [Float](repeating: 1, count: 1000)
            try buffer.withUnsafeMutableBufferPointer { try c.allReduceSum($0) }
            #expect(buffer.allSatisfy { $0 == 1 + 2 + 3 })
        }
        for p in peers {
            p.waitUntilExit()
            #expect(p.terminationStatus == 0)
        }
    }

    @Test("a peer killed mid-run fails the collective within 1 s, naming its rank and pid")
    func peerDies() throws {
        let c = try SharedMemoryCommunicator.create(ranks: 2, capacity: 256)
        defer { c.close() }
        let p = try peer(c.name, rank: 1, iterations: 1_000_000)
        var buffer = [Float](repeating: 1, count: 1000)
        try buffer.withUnsafeMutableBufferPointer { try c.allReduceSum($0) }  // the peer is in
        kill(p.processIdentifier, SIGKILL)
        let start = Date()
        var failure: CollectiveError?
        do {
            for _ in 0..<1_000_000 { try buffer.withUnsafeMutableBufferPointer { try c.allReduceSum($0) } }
        } catch let error as CollectiveError {
            failure = error
        }
        #expect(Date().timeIntervalSince(start) < 1)
        #expect(failure == .peerDied(rank: 1, pid: p.processIdentifier, operation: "all-reduce"))
        p.waitUntilExit()
    }
}
