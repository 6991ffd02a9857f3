import Collectives
import ExecutorTestSupport
import Foundation
import Synchronization
import Testing
import Transports

/// The ring collectives over real loopback TCP sockets, one thread per rank, meeting
/// through a real rendezvous.
@Suite struct TCPCommunicatorTests {
    /// Runs `body(communicator)` on one thread per rank after a rendezvous; returns the
    /// errors by rank and what the rendezvous logged.
    func onRanks(
        _ ranks: Int, before: @escaping @Sendable (TCPRendezvous) throws -> Void = { _ in },
        _ body: @escaping @Sendable (TCPCommunicator) throws -> Void
    ) throws -> (errors: [String], log: [String]) {
        let secret = InstanceSecret.random()
        let rendezvous = try TCPRendezvous(secret: secret)
        let log = Mutex<[String]>([])
        rendezvous.listener.log = { message in log.withLock { $0.append(message) } }
        let errors = Mutex<[String]>([])
        let done = Mutex(0)
        Thread {
            do { try rendezvous.serve(ranks: ranks, timeout: 20) } catch { errors.withLock { $0.append("rendezvous: \(error)") } }
        }.start()
        try before(rendezvous)
        for rank in 0..<ranks {
            Thread {
                defer { done.withLock { $0 += 1 } }
                do {
                    let c = try TCPCommunicator.join(
                        rank: rank, ranks: ranks, rendezvousHost: "127.0.0.1", rendezvousPort: rendezvous.port, secret: secret, timeout: 20)
                    defer { c.close() }
                    c.timeout = 5
                    try body(c)
                } catch {
                    errors.withLock { $0.append("rank \(rank): \(error)") }
                }
            }.start()
        }
        while done.withLock({ $0 }) < ranks { usleep(1_000) }
        return (errors.withLock { $0 }, log.withLock { $0 })
    }

    @Test("ring all-reduce equals a serial sum on every rank, bit-identical across ranks, from 1 float to 16 MiB", arguments: [2, 3, 4])
    func allReduce(ranks: Int) throws {
        for count in [1, 7, 1000, 4 << 20] {
            let inputs = (0..<ranks).map { randomFloats(count, seed: UInt64($0 * 7 + count)) }
            let expected = serialSum(inputs)
            let results = Mutex<[[Float]]>(Array(repeating: [], count: ranks))
            let (errors, _) = try onRanks(ranks) { c in
                var buffer = inputs[c.rank]
                try buffer.withUnsafeMutableBufferPointer { try c.allReduceSum($0) }
                results.withLock { $0[c.rank] = buffer }
            }
            #expect(errors == [])
            let got = results.withLock { $0 }
            #expect(got.allSatisfy { $0 == got[0] }, "\(ranks) ranks, \(count) floats: ranks disagree")
            #expect(Tolerance.relativeL2(got[0], expected) < 1e-6, "\(ranks) ranks, \(count) floats")
        }
    }

    @Test("ring all-gather concatenates in rank order", arguments: [2, 3])
    func allGather(ranks: Int) throws {
        for count in [1, 33, 70_000] {
            let inputs = (0..<ranks).map { randomFloats(count, seed: UInt64($0 + 100)) }
            let gathered = Mutex<[[Float]]>(Array(repeating: [], count: ranks))
            let (errors, _) = try onRanks(ranks) { c in
                var out = [Float](repeating: .nan, count: ranks * count)
                try inputs[c.rank].withUnsafeBufferPointer { input in
                    try out.withUnsafeMutableBufferPointer { try c.allGather(input, into: $0) }
                }
                gathered.withLock { $0[c.rank] = out }
            }
            #expect(errors == [])
            #expect(gathered.withLock { $0 }.allSatisfy { $0 == inputs.flatMap { $0 } }, "\(ranks) ranks, \(count) floats")
        }
    }

    @Test("a peer that goes away fails the collective at once, naming its rank")
    func peerGone() throws {
        let start = Mutex<Date?>(nil)
        let (errors, _) = try onRanks(3) { c in
            if c.rank == 1 {
                c.close()  // what the kernel does to a killed process's sockets
                return
            }
            usleep(100_000)
            start.withLock { $0 = $0 ?? Date() }
            var buffer = [Float](repeating: 1, count: 1000)
            try buffer.withUnsafeMutableBufferPointer { try c.allReduceSum($0) }
        }
        let elapsed = Date().timeIntervalSince(try #require(start.withLock { $0 }))
        #expect(errors.count == 2, "\(errors)")
        #expect(errors.allSatisfy { $0.contains("rank 1 is gone") || $0.contains("rank 2 is gone") }, "\(errors)")
        #expect(errors.contains { $0.contains("rank 1 is gone") }, "\(errors)")
        #expect(elapsed < 1, "took \(elapsed) s")
    }

    @Test("a foreign process and a wrong secret are refused and logged; the group still forms")
    func foreignRefused() throws {
        let sums = Mutex<[Float]>([])
        let (errors, log) = try onRanks(2, before: { rendezvous in
            // Another protocol entirely…
            let raw = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = rendezvous.port.bigEndian
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(raw, $0, 16) } }
            let request = Array("GET / HTTP/1.1\r\nHost: cohort.example\r\nAccept: */*\r\n\r\n".utf8)
            _ = request.withUnsafeBytes { send(raw, $0.baseAddress, $0.count, 0) }
            // …and a Cohort peer with another instance's secret: the rendezvous cannot prove
            // the secret it expects, so that peer goes without sending a proof.
            #expect {
                _ = try TCPConnection.connect(host: "127.0.0.1", port: rendezvous.port, rank: 0, secret: .random(), timeout: 5)
            } throws: { "\($0)".contains("it could not prove the instance secret") }
            close(raw)
        }) { c in
            var buffer: [Float] = [Float(c.rank + 1)]
            try buffer.withUnsafeMutableBufferPointer { try c.allReduceSum($0) }
            sums.withLock { $0.append(buffer[0]) }
        }
        #expect(errors == [])
        #expect(sums.withLock { $0 } == [3, 3])
        #expect(log.contains { $0.contains("not the Cohort protocol") }, "\(log)")
        #expect(log.contains { $0.contains("closed the connection during the handshake") }, "\(log)")
    }
}
