#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// The load gate across machines (`--max-parallel-loading-workers` when ranks run on more
/// than one machine): the driver serves it, and every rank that loads holds one connection
/// to it. A rank connects (proving the instance secret), waits for the gate's one-byte
/// grant, loads, and closes the connection: the gate then grants the next waiting rank, in
/// arrival order. A rank that dies while loading closes its connection too, so its place is
/// never lost. `LoadGate` is the same gate in shared memory for ranks on one machine.
public final class TCPLoadGate: Sendable {
    public let limit: Int
    public let host: String
    public let port: UInt16
    private let shared = Shared()
    private let thread: Threads.Handle

    final class Shared: Sendable {
        let state = Mutex<State>(State())
    }

    struct State {
        var closed = false
        var most = 0
    }

    /// Starts serving on `host` for `limit` loads at once.
    public init(limit: Int, host: String, secret: InstanceSecret) throws {
        guard limit >= 1 else { throw TCPError.refused(peer: host, reason: "a load limit ≥ 1, found \(limit)") }
        let listener = try TCPListener(host: host)
        self.limit = limit
        self.host = listener.host
        port = listener.port
        let shared = self.shared
        thread = Threads.start { Self.serve(listener, secret: secret, limit: limit, shared: shared) }
    }

    /// The most ranks that were ever loading at once.
    public var mostInside: Int { shared.state.withLock { $0.most } }

    /// Stops serving (the ranks still connected are let go). Safe to call more than once.
    public func close() {
        let first = shared.state.withLock { (state: inout State) -> Bool in
            defer { state.closed = true }
            return !state.closed
        }
        if first { Threads.join(thread) }
    }

    private static func serve(_ listener: TCPListener, secret: InstanceSecret, limit: Int, shared: Shared) {
        var waiting: [TCPConnection] = [], inside: [TCPConnection] = []
        defer { (waiting + inside).forEach { $0.close() } }
        let grant: [UInt8] = [1]
        while !shared.state.withLock({ $0.closed }) {
            // New ranks (strangers are refused and logged by the listener).
            if let connection = try? listener.accept(rank: 0, secret: secret, timeout: 0.02) { waiting.append(connection) }
            // A rank inside that closed its connection has loaded (or died): its place frees.
            inside.removeAll { connection in
                var p = pollfd(fd: connection.fd, events: Int16(POLLIN), revents: 0)
                guard poll(&p, 1, 0) > 0 else { return false }
                connection.close()
                return true
            }
            while inside.count < limit, !waiting.isEmpty {
                let next = waiting.removeFirst()
                if (try? grant.withUnsafeBytes({ try next.send($0, timeout: 5) })) != nil {
                    inside.append(next)
                    let count = inside.count
                    shared.state.withLock { $0.most = max($0.most, count) }
                } else {
                    next.close()
                }
            }
        }
    }

    /// A rank's side: connects as `rank`, waits for the grant (running `check` meanwhile: it
    /// throws to give up), and returns the connection to close once loaded.
    public static func enter(
        host: String, port: UInt16, rank: Int, secret: InstanceSecret, check: () throws -> Void = {}
    ) throws -> TCPConnection {
        let connection = try TCPConnection.connect(host: host, port: port, rank: rank, secret: secret, timeout: 30)
        do {
            let granted = try connection.receive(timeout: nil, check: check) { $0.first }
            guard granted == 1 else {
                throw TCPError.refused(peer: connection.peer, reason: "expected the load gate's grant (1), found \(granted.map(String.init) ?? "nothing")")
            }
            return connection
        } catch {
            connection.close()
            throw error
        }
    }
}
