#if canImport(Glibc)
import Glibc
#endif
public import Transports
public import ExecutorCore
import Synchronization

/// Collectives over TCP, for ranks on different machines (the same interface as
/// `SharedMemoryCommunicator`): ranks form a ring, each connected to the next.
///
/// All-reduce is the ring algorithm (reduce-scatter, then all-gather: each rank sends and
/// receives 2·(n−1)/n of the buffer, whatever n): every chunk is summed along the ring by
/// one rank and then copied to all, so every rank ends with bit-identical values (the
/// summation order differs from a serial sum, within float rounding). All-gather passes
/// the pieces n − 1 times around the ring. Each ring step sends and receives at once, so
/// messages of any size move without deadlock.
///
/// Ranks meet through a `TCPRendezvous` (the executor's driver binds it and publishes its
/// address): each rank binds its own ring listener, registers it, receives every rank's
/// address, connects to the next rank and accepts the previous one, all authenticated
/// with the instance secret. A peer that dies closes its sockets: the collective fails at
/// once naming its rank; one that stops answering is reported stuck after `timeout`.
public final class TCPCommunicator: @unchecked Sendable {
    // @unchecked: one thread uses a communicator at a time (its rank's worker).
    public let rank: Int
    public let ranks: Int
    /// Longest wait for a peer in one ring step (by default none: the driver watches).
    public var timeout: Double = .infinity
    /// Called while a ring step waits without progress (every 50 ms): throws to end the
    /// wait (the driver's rank 0 passes its health check, which names a stuck or dead rank).
    public var watchdog: (@Sendable () throws -> Void)?
    private let next: TCPConnection?
    private let previous: TCPConnection?
    private var scratch: [Float] = []
    /// Time in collectives (waiting for peers included) and how many ran.
    public private(set) var collectiveNanoseconds: Int64 = 0
    public private(set) var collectiveCount = 0

    private init(rank: Int, ranks: Int, next: TCPConnection?, previous: TCPConnection?) {
        self.rank = rank
        self.ranks = ranks
        self.next = next
        self.previous = previous
    }

    /// Joins the group of `ranks` as `rank` through the rendezvous at `host:port`, with this
    /// rank's ring listener on `listenHost`.
    public static func join(
        rank: Int, ranks: Int, rendezvousHost: String, rendezvousPort: UInt16, secret: InstanceSecret,
        listenHost: String = "127.0.0.1", timeout: Double = 30
    ) throws -> TCPCommunicator {
        guard ranks >= 1, rank >= 0, rank < ranks else { throw TCPError.invalid("rank \(rank) in 0..<\(ranks)") }
        let listener = try TCPListener(host: listenHost)
        let table = try TCPRendezvous.register(
            rank: rank, ranks: ranks, listener: listener, host: rendezvousHost, port: rendezvousPort, secret: secret, timeout: timeout)
        guard ranks > 1 else { return TCPCommunicator(rank: rank, ranks: 1, next: nil, previous: nil) }
        let nextRank = (rank + 1) % ranks, previousRank = (rank + ranks - 1) % ranks
        let (host, port) = table[nextRank]
        // Connect forward on a thread of its own while accepting from behind: every rank
        // does the same, and each handshake needs both ends to take part at once.
        let forward = Forward()
        let thread = Threads.start {
            forward.result.withLock {
                $0 = Result { try TCPConnection.connect(host: host, port: port, rank: rank, secret: secret, timeout: timeout) }
            }
        }
        let previous: TCPConnection
        do { previous = try listener.accept(rank: rank, secret: secret, timeout: timeout) } catch {
            Threads.join(thread)
            (try? forward.result.withLock { try $0?.get() })?.close()
            throw error
        }
        Threads.join(thread)
        let next = try forward.result.withLock { try $0!.get() }
        guard previous.peerRank == previousRank, next.peerRank == nextRank else {
            throw TCPError.invalid("ring neighbours \(previousRank) and \(nextRank), found \(previous.peerRank) and \(next.peerRank)")
        }
        return TCPCommunicator(rank: rank, ranks: ranks, next: next, previous: previous)
    }

    /// Closes the ring's sockets (a peer then fails its next collective). Idempotent.
    public func close() {
        next?.close()
        previous?.close()
    }

    // MARK: - Collectives

    /// buffer ← Σ over ranks of every rank's buffer (same count on every rank).
    public func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws(CollectiveError) {
        guard ranks > 1, let next, let previous else { return }
        let start = MonotonicClock.nanoseconds()
        defer { account(since: start) }
        let n = ranks, count = buffer.count
        func chunk(_ c: Int) -> Range<Int> { (c * count / n)..<((c + 1) * count / n) }
        if scratch.count < (count + n - 1) / n { scratch = [Float](repeating: 0, count: (count + n - 1) / n) }
        let base = buffer.baseAddress!
        if n == 2 {
            // Two ranks: one exchange of the whole buffer, then a local sum, is half the round
            // trips of the ring's reduce-scatter + all-gather (a decode step's buffers are a few
            // KB: latency, not bytes, bounds them across machines). a + b == b + a in IEEE
            // arithmetic, so both ranks hold the same bits, as the ring gives.
            if scratch.count < count { scratch = [Float](repeating: 0, count: count) }
            try scratch.withUnsafeMutableBufferPointer { scratch throws(CollectiveError) in
                try step("all-reduce", send: UnsafeRawBufferPointer(start: base, count: count * 4),
                         receive: UnsafeMutableRawBufferPointer(start: scratch.baseAddress!, count: count * 4), next, previous)
                SharedMemoryCommunicator.add(scratch.baseAddress!, into: base, count: count)
            }
            return
        }
        try scratch.withUnsafeMutableBufferPointer { scratch throws(CollectiveError) in
            // Reduce-scatter: after n − 1 steps this rank holds the sum of chunk rank + 1.
            for s in 0..<(n - 1) {
                let out = chunk((rank - s + n) % n), into = chunk((rank - s - 1 + n) % n)
                try step("all-reduce", send: UnsafeRawBufferPointer(start: base + out.lowerBound, count: out.count * 4),
                         receive: UnsafeMutableRawBufferPointer(start: scratch.baseAddress!, count: into.count * 4), next, previous)
                SharedMemoryCommunicator.add(scratch.baseAddress!, into: base + into.lowerBound, count: into.count)
            }
            // All-gather: pass the finished chunks around.
            for s in 0..<(n - 1) {
                let out = chunk((rank + 1 - s + n) % n), into = chunk((rank - s + n) % n)
                try step("all-reduce", send: UnsafeRawBufferPointer(start: base + out.lowerBound, count: out.count * 4),
                         receive: UnsafeMutableRawBufferPointer(start: base + into.lowerBound, count: into.count * 4), next, previous)
            }
        }
    }

    /// output ← the inputs of ranks 0, 1, … concatenated (`output.count == ranks × input.count`).
    public func allGather(_ input: UnsafeBufferPointer<Float>, into output: UnsafeMutableBufferPointer<Float>) throws(CollectiveError) {
        precondition(output.count == ranks * input.count, "all-gather output must hold ranks × input")
        let m = input.count
        if m > 0 { (output.baseAddress! + rank * m).update(from: input.baseAddress!, count: m) }
        guard ranks > 1, let next, let previous else { return }
        let start = MonotonicClock.nanoseconds()
        defer { account(since: start) }
        let n = ranks
        for s in 0..<(n - 1) {
            let out = (rank - s + n) % n, into = (rank - s - 1 + n) % n
            try step("all-gather", send: UnsafeRawBufferPointer(start: output.baseAddress.map { $0 + out * m }, count: m * 4),
                     receive: UnsafeMutableRawBufferPointer(start: output.baseAddress.map { $0 + into * m }, count: m * 4), next, previous)
        }
    }

    private func step(
        _ operation: String, send: UnsafeRawBufferPointer, receive: UnsafeMutableRawBufferPointer,
        _ next: TCPConnection, _ previous: TCPConnection
    ) throws(CollectiveError) {
        do {
            try TCPConnection.exchange(
                sending: send, to: next, receivingInto: receive, from: previous, timeout: timeout.isFinite ? timeout : nil,
                check: { try watchdog?() })
        } catch let error as TCPError {
            switch error {
            case let .closed(peer):
                throw .peerLost(rank: peer == next.peer ? next.peerRank : previous.peerRank, operation: operation, reason: "\(error)")
            case .timedOut:
                throw .peerStuck(ranks: [previous.peerRank], operation: operation, seconds: timeout)
            default:
                throw .peerLost(rank: previous.peerRank, operation: operation, reason: "\(error)")
            }
        } catch {
            // The watchdog: it names the rank to blame.
            throw .watchdog(operation: operation, reason: "\(error)")
        }
    }

    private func account(since start: Int64) {
        collectiveNanoseconds += MonotonicClock.nanoseconds() - start
        collectiveCount += 1
    }
}

extension TCPCommunicator: TensorParallelGroup {}

/// The forward connection of a ring join, made on a thread of its own.
final class Forward: Sendable {
    let result = Mutex<Result<TCPConnection, any Error>?>(nil)
}

/// Where the ranks of a TCP group meet: a listener bound once (its port is published, never
/// chosen by bind-and-release) that takes every rank's ring address and sends back the
/// table. Anything that cannot present the instance secret is refused and logged.
public final class TCPRendezvous: @unchecked Sendable {
    public let listener: TCPListener
    public let secret: InstanceSecret
    public var host: String { listener.host }
    public var port: UInt16 { listener.port }

    public init(host: String = "127.0.0.1", secret: InstanceSecret) throws {
        listener = try TCPListener(host: host)
        self.secret = secret
    }

    /// A rank's side: registers `listener`'s address as `rank` of `ranks` at the rendezvous
    /// `host:port` and returns every rank's listener address, in rank order.
    public static func register(
        rank: Int, ranks: Int, listener: TCPListener, host: String, port: UInt16, secret: InstanceSecret, timeout: Double
    ) throws -> [(host: String, port: UInt16)] {
        let registration = try TCPConnection.connect(host: host, port: port, rank: rank, secret: secret, timeout: timeout)
        defer { registration.close() }
        try Array("\(listener.host):\(listener.port)".utf8).withUnsafeBytes { try registration.send($0, timeout: timeout) }
        let table = try registration.receive(timeout: timeout) { bytes in
            String(decoding: bytes, as: UTF8.self).split(separator: "\n").map(String.init)
        }
        guard table.count == ranks else {
            throw TCPError.invalid("an address table of \(ranks) ranks from the rendezvous, found \(table.count)")
        }
        return try table.enumerated().map { r, entry in
            // HOST:PORT, the host possibly IPv6 (the port follows the last colon).
            guard let colon = entry.lastIndex(of: ":"), let port = UInt16(entry[entry.index(after: colon)...]) else {
                throw TCPError.invalid("host:port for rank \(r), found '\(entry)'")
            }
            return (String(entry[..<colon]), port)
        }
    }

    /// Serves one group: waits for all `ranks` registrations, then answers each with the
    /// table of ring addresses in rank order.
    public func serve(ranks: Int, timeout: Double = 60, check: () throws -> Void = {}) throws {
        var addresses = [String?](repeating: nil, count: ranks)
        var connections: [TCPConnection] = []
        defer { connections.forEach { $0.close() } }
        while connections.count < ranks {
            let connection = try listener.accept(rank: -1, secret: secret, timeout: timeout, check: check)
            let r = connection.peerRank
            guard r >= 0, r < ranks, addresses[r] == nil else {
                listener.log("refused a registration from \(connection.peer): rank \(r) is outside 0..<\(ranks) or already registered")
                connection.close()
                continue
            }
            addresses[r] = try connection.receive(timeout: timeout) { String(decoding: $0, as: UTF8.self) }
            connections.append(connection)
        }
        let table = Array(addresses.map { $0! }.joined(separator: "\n").utf8)
        for connection in connections { try table.withUnsafeBytes { try connection.send($0, timeout: timeout) } }
    }
}
