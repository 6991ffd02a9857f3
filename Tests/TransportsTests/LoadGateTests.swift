import Foundation
import Synchronization
import Testing
import Transports

@Suite struct LoadGateTests {
    @Test("never more than the limit inside at once, and waiters get in as others leave", arguments: [1, 2, 3])
    func limit(limit: Int) throws {
        let gate = try LoadGate.create(limit: limit)
        defer { gate.close() }
        let inside = Mutex(0), most = Mutex(0), done = Mutex(0), errors = Mutex<[String]>([])
        let workers = 6
        for _ in 0..<workers {
            Thread {
                defer { done.withLock { $0 += 1 } }
                do {
                    let handle = try LoadGate.attach(name: gate.name)  // as a worker process would
                    defer { handle.close() }
                    try handle.enter()
                    let now = inside.withLock { $0 += 1; return $0 }
                    most.withLock { $0 = max($0, now) }
                    usleep(20_000)  // a load long enough for the others to queue
                    inside.withLock { $0 -= 1 }
                    handle.leave()
                } catch {
                    errors.withLock { $0.append("\(error)") }
                }
            }.start()
        }
        while done.withLock({ $0 }) < workers { usleep(1_000) }
        #expect(errors.withLock { $0 } == [])
        #expect(most.withLock { $0 } == limit)
        #expect(gate.mostInside == limit)
    }

    @Test("a waiter gives up when its check throws")
    func giveUp() throws {
        let gate = try LoadGate.create(limit: 1)
        defer { gate.close() }
        try gate.enter()
        struct DriverGone: Error {}
        var checks = 0
        #expect(throws: DriverGone.self) {
            try gate.enter {
                checks += 1
                if checks == 3 { throw DriverGone() }
            }
        }
    }
}

/// The load gate across machines: the same limit, served over TCP by the driver.
@Suite struct TCPLoadGateTests {
    @Test("never more than the limit loading at once over TCP; a rank that dies inside frees its place", arguments: [1, 2])
    func limit(limit: Int) throws {
        let secret = InstanceSecret.random()
        let gate = try TCPLoadGate(limit: limit, host: "127.0.0.1", secret: secret)
        defer { gate.close() }
        let inside = Mutex(0), most = Mutex(0), done = Mutex(0), errors = Mutex<[String]>([])
        // The first rank enters and vanishes without a word (a worker killed while loading).
        let lost = try TCPLoadGate.enter(host: gate.host, port: gate.port, rank: 9, secret: secret)
        usleep(50_000)
        lost.close()
        let ranks = 5
        for rank in 1...ranks {
            Thread {
                defer { done.withLock { $0 += 1 } }
                do {
                    let ticket = try TCPLoadGate.enter(host: gate.host, port: gate.port, rank: rank, secret: secret)
                    let now = inside.withLock { $0 += 1; return $0 }
                    most.withLock { $0 = max($0, now) }
                    usleep(30_000)
                    inside.withLock { $0 -= 1 }
                    ticket.close()
                } catch {
                    errors.withLock { $0.append("\(error)") }
                }
            }.start()
        }
        let deadline = Date().addingTimeInterval(20)
        while done.withLock({ $0 }) < ranks && Date() < deadline { usleep(1_000) }
        #expect(done.withLock { $0 } == ranks, "ranks still waiting: the lost rank's place was never freed?")
        #expect(errors.withLock { $0 } == [])
        #expect(most.withLock { $0 } == limit)
        #expect(gate.mostInside == limit)
    }

    @Test("a process without the instance secret is never let in")
    func stranger() throws {
        let gate = try TCPLoadGate(limit: 1, host: "127.0.0.1", secret: InstanceSecret.random())
        defer { gate.close() }
        #expect(throws: (any Error).self) {
            _ = try TCPLoadGate.enter(host: gate.host, port: gate.port, rank: 1, secret: InstanceSecret.random())
        }
        #expect(gate.mostInside == 0)
    }
}
