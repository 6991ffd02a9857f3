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
