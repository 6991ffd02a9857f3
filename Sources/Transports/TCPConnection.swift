#if canImport(Glibc)
import Glibc
#endif
import ExecutorCore

/// The secret every process of one executor instance shares (32 random bytes). A TCP peer
/// that cannot present it is refused. It travels to workers in their environment
/// (`COHORT_SECRET`, hex), never on a command line that `ps` shows.
public struct InstanceSecret: Sendable, Equatable {
    public let bytes: [UInt8]

    public static let byteCount = 32
    public static let environmentName = Placement.Environment.secret

    public static func random() -> InstanceSecret {
        var g = SystemRandomNumberGenerator()
        return InstanceSecret(checked: (0..<byteCount).map { _ in UInt8.random(in: 0...255, using: &g) })
    }

    private init(checked bytes: [UInt8]) { self.bytes = bytes }

    /// - Throws: unless `hex` is 64 hexadecimal digits.
    public init(hex: String) throws(TCPError) {
        let digits = Array(hex.utf8)
        guard digits.count == 2 * Self.byteCount else {
            throw .invalid("an instance secret of \(2 * Self.byteCount) hex digits, found \(digits.count) characters")
        }
        var bytes: [UInt8] = []
        for i in stride(from: 0, to: digits.count, by: 2) {
            guard let byte = UInt8(String(decoding: digits[i..<(i + 2)], as: UTF8.self), radix: 16) else {
                throw .invalid("an instance secret of hex digits, found '\(String(decoding: digits[i..<(i + 2)], as: UTF8.self))'")
            }
            bytes.append(byte)
        }
        self.bytes = bytes
    }

    public var hex: String { bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined() }

    /// Constant-time comparison (a peer learns nothing from how fast it is refused).
    func matches(_ other: UnsafeRawBufferPointer) -> Bool {
        guard other.count == bytes.count else { return false }
        var difference: UInt8 = 0
        for i in 0..<bytes.count { difference |= bytes[i] ^ other[i] }
        return difference == 0
    }
}

/// Why a TCP operation failed; names the peer.
public enum TCPError: Error, Equatable, CustomStringConvertible {
    case invalid(String)
    case system(call: String, errno: Int32, peer: String)
    case refused(peer: String, reason: String)
    case closed(peer: String)
    case timedOut(waitingFor: String, seconds: Double)
    case tooLarge(peer: String, bytes: Int, limit: Int)

    public var description: String {
        switch self {
        case let .invalid(s): "invalid TCP configuration: expected \(s)"
        case let .system(call, e, peer): "\(call) (\(peer)) failed: \(String(cString: strerror(e)))"
        case let .refused(peer, reason): "\(peer) refused the connection: \(reason)"
        case let .closed(peer): "\(peer) closed the connection"
        case let .timedOut(what, seconds): "timed out after \(seconds) s waiting for \(what)"
        case let .tooLarge(peer, bytes, limit): "\(peer) announced a \(bytes)-byte message; at most \(limit) are accepted"
        }
    }
}

/// A framed, authenticated TCP stream between two processes of one executor instance.
///
/// The connecting side opens with a hello (magic "CTCP", protocol version, its rank, the
/// instance secret); the accepting side answers "CTOK" and its rank, or closes after
/// logging the refusal. Then each message is a little-endian u32 length and the payload.
/// Sockets use TCP_NODELAY, sends never raise SIGPIPE, and every wait polls with a timeout
/// and a `check` (a peer found dead ends it), like the shared-memory rings.
public final class TCPConnection: @unchecked Sendable {
    // @unchecked: one thread uses a connection at a time (its owner's step loop).
    public let fd: Int32
    /// The peer's rank (from the handshake).
    public internal(set) var peerRank: Int
    /// "rank N at host:port", for messages.
    public internal(set) var peer: String
    /// Largest message accepted.
    public var maxMessageBytes = 1 << 30
    /// How often waits call their `check`.
    public var checkInterval = 0.05
    private var buffer: UnsafeMutableRawPointer
    private var capacity: Int
    private var isClosed = false


    init(fd: Int32, peerRank: Int, peer: String) {
        self.fd = fd
        self.peerRank = peerRank
        self.peer = peer
        capacity = 1 << 16
        buffer = .allocate(byteCount: capacity, alignment: 64)
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        // Non-blocking: every wait is a poll with a timeout and a liveness check.
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
    }

    deinit {
        close()
        buffer.deallocate()
    }

    /// Closes the socket. Idempotent.
    public func close() {
        guard !isClosed else { return }
        isClosed = true
        Glibc.close(fd)
    }

    // MARK: - Connecting

    /// Connects to `host:port` as `rank` and proves `secret` without sending it (`Handshake`):
    /// a hello, the acceptor's challenge (which proves the acceptor holds the secret too),
    /// this side's proof, and the acceptor's OK.
    public static func connect(
        host: String, port: UInt16, rank: Int, secret: InstanceSecret, timeout: Double = 10
    ) throws -> TCPConnection {
        let address = "\(host):\(port)"
        var (socketAddress, length) = try socketAddress(host: host, port: port)
        let deadline = MonotonicClock.now() + timeout
        var fd: Int32 = -1
        // The listener may not be up yet (a peer still starting): retry until the deadline.
        while true {
            fd = socket(Int32(socketAddress.ss_family), Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { throw TCPError.system(call: "socket", errno: errno, peer: address) }
            let rc = withUnsafePointer(to: &socketAddress) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, length) }
            }
            if rc == 0 { break }
            let e = errno
            Glibc.close(fd)
            guard e == ECONNREFUSED || e == EINTR, MonotonicClock.now() < deadline else {
                throw e == ECONNREFUSED ? TCPError.timedOut(waitingFor: "a listener at \(address)", seconds: timeout)
                    : TCPError.system(call: "connect", errno: e, peer: address)
            }
            usleep(10_000)
        }
        let connection = TCPConnection(fd: fd, peerRank: -1, peer: address)
        let handshake = Handshake.Connector(secret: secret, rank: rank)
        do {
            try handshake.hello.withUnsafeBytes { try connection.writeAll($0, timeout: timeout) }
            var challenge = [UInt8](repeating: 0, count: Handshake.challengeBytes)
            try challenge.withUnsafeMutableBytes { try connection.readAll($0, timeout: timeout, check: {}) }
            let (proof, acceptorRank) = try handshake.answer(challenge)
            try proof.withUnsafeBytes { try connection.writeAll($0, timeout: timeout) }
            var answer = [UInt8](repeating: 0, count: 4)
            try answer.withUnsafeMutableBytes { try connection.readAll($0, timeout: timeout, check: {}) }
            guard answer == Handshake.okMagic else { throw HandshakeError.refused("expected CTOK, found \(answer.map { String($0, radix: 16) })") }
            connection.peerRank = acceptorRank
            connection.peer = "rank \(acceptorRank) at \(address)"
            return connection
        } catch TCPError.closed {
            connection.close()
            throw TCPError.refused(peer: address, reason: "it closed the connection during the handshake (wrong instance secret or protocol version)")
        } catch let error as HandshakeError {
            connection.close()
            throw TCPError.refused(peer: address, reason: error.description)
        } catch {
            connection.close()
            throw error
        }
    }

    /// A numeric IPv4 or IPv6 host and a port as a socket address and its length.
    static func socketAddress(host: String, port: UInt16) throws(TCPError) -> (sockaddr_storage, socklen_t) {
        var storage = sockaddr_storage()
        var v4 = in_addr(), v6 = in6_addr()
        if inet_pton(AF_INET, host, &v4) == 1 {
            withUnsafeMutablePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { a in
                    a.pointee.sin_family = sa_family_t(AF_INET)
                    a.pointee.sin_port = port.bigEndian
                    a.pointee.sin_addr = v4
                }
            }
            return (storage, socklen_t(MemoryLayout<sockaddr_in>.size))
        }
        if inet_pton(AF_INET6, host, &v6) == 1 {
            withUnsafeMutablePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { a in
                    a.pointee.sin6_family = sa_family_t(AF_INET6)
                    a.pointee.sin6_port = port.bigEndian
                    a.pointee.sin6_addr = v6
                }
            }
            return (storage, socklen_t(MemoryLayout<sockaddr_in6>.size))
        }
        throw .invalid("a numeric IPv4 or IPv6 address, found '\(host)'")
    }

    /// The port of an IPv4 or IPv6 socket address.
    static func port(_ storage: inout sockaddr_storage) -> UInt16 {
        let family = Int32(storage.ss_family)
        return withUnsafePointer(to: &storage) { p in
            family == AF_INET6
                ? p.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin6_port) }
                : p.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { UInt16(bigEndian: $0.pointee.sin_port) }
        }
    }

    // MARK: - Inspecting

    /// Whether a message (or end-of-file) is waiting, after up to `seconds`.
    public func isReadable(within seconds: Double) -> Bool {
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        return poll(&p, 1, Int32(max(0, seconds * 1000))) > 0
    }

    /// The local address of this connection: the one that routes to the peer.
    public var localAddress: String {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard rc == 0 else { return "unknown" }
        return Self.numericHost(&storage)
    }

    /// The numeric host of an IPv4 or IPv6 socket address.
    static func numericHost(_ storage: inout sockaddr_storage) -> String {
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        let family = Int32(storage.ss_family)
        withUnsafePointer(to: &storage) { p in
            if family == AF_INET6 {
                p.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { a in
                    var addr = a.pointee.sin6_addr
                    inet_ntop(AF_INET6, &addr, &text, socklen_t(text.count))
                }
            } else {
                p.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { a in
                    var addr = a.pointee.sin_addr
                    inet_ntop(AF_INET, &addr, &text, socklen_t(text.count))
                }
            }
        }
        return String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    // MARK: - Messages

    /// Sends one message.
    public func send(_ bytes: UnsafeRawBufferPointer, timeout: Double? = nil, check: () throws -> Void = {}) throws {
        var header = UInt32(bytes.count).littleEndian
        try withUnsafeBytes(of: &header) { h in try writeAll(h, more: bytes, timeout: timeout, check: check) }
    }

    /// Receives one message and passes it to `body` (valid only inside it).
    public func receive<T>(timeout: Double? = nil, check: () throws -> Void = {}, _ body: (UnsafeRawBufferPointer) throws -> T) throws -> T {
        var header: UInt32 = 0
        try withUnsafeMutableBytes(of: &header) { try readAll($0, timeout: timeout, check: check) }
        let count = Int(UInt32(littleEndian: header))
        guard count <= maxMessageBytes else { throw TCPError.tooLarge(peer: peer, bytes: count, limit: maxMessageBytes) }
        reserve(count)
        try readAll(UnsafeMutableRawBufferPointer(start: buffer, count: count), timeout: timeout, check: check)
        return try body(UnsafeRawBufferPointer(start: buffer, count: count))
    }

    private func reserve(_ count: Int) {
        guard count > capacity else { return }
        buffer.deallocate()
        capacity = max(count, capacity * 2)
        buffer = .allocate(byteCount: capacity, alignment: 64)
    }

    // MARK: - I/O

    /// Sends `data` to `output` as one message while receiving one message of exactly
    /// `target.count` bytes from `input` into `target`, both at once (a ring step: with
    /// large messages, sending first and then receiving would deadlock once the socket
    /// buffers fill).
    public static func exchange(
        sending data: UnsafeRawBufferPointer, to output: TCPConnection,
        receivingInto target: UnsafeMutableRawBufferPointer, from input: TCPConnection,
        timeout: Double? = nil, check: () throws -> Void = {}
    ) throws {
        var header = UInt32(data.count).littleEndian
        var incoming: UInt32 = 0
        let deadline = timeout.map { MonotonicClock.now() + $0 }
        var lastCheck = MonotonicClock.now()
        try withUnsafeBytes(of: &header) { header in
            try withUnsafeMutableBytes(of: &incoming) { incomingHeader in
                var sendParts = [header, data].filter { $0.count > 0 }
                var receivedHeader = 0, received = 0
                while !sendParts.isEmpty || received < target.count || receivedHeader < 4 {
                    var progress = false
                    if !sendParts.isEmpty {
                        let n = try output.sendSome(sendParts)
                        if n > 0 {
                            progress = true
                            drop(n, from: &sendParts)
                        }
                    }
                    if receivedHeader < 4 {
                        let n = try input.receiveSome(UnsafeMutableRawBufferPointer(rebasing: incomingHeader[receivedHeader...]))
                        receivedHeader += n
                        progress = progress || n > 0
                        let announced = Int(UInt32(littleEndian: incomingHeader.loadUnaligned(as: UInt32.self)))
                        if receivedHeader == 4 && announced != target.count {
                            throw TCPError.invalid("a \(target.count)-byte message from \(input.peer), found one of \(announced) bytes")
                        }
                    } else if received < target.count {
                        let n = try input.receiveSome(UnsafeMutableRawBufferPointer(rebasing: target[received...]))
                        received += n
                        progress = progress || n > 0
                    }
                    if progress { continue }
                    // Nothing moved: wait until either socket is ready.
                    var fds = [
                        pollfd(fd: output.fd, events: sendParts.isEmpty ? 0 : Int16(POLLOUT), revents: 0),
                        pollfd(fd: input.fd, events: Int16(POLLIN), revents: 0),
                    ]
                    var slice = output.checkInterval
                    if let deadline {
                        let left = deadline - MonotonicClock.now()
                        guard left > 0 else {
                            throw TCPError.timedOut(waitingFor: "an exchange with \(output.peer) and \(input.peer)", seconds: timeout!)
                        }
                        slice = min(slice, left)
                    }
                    // The check runs on time, not only on a quiet poll: a peer's socket that
                    // reports an error makes every poll return at once.
                    let ready = poll(&fds, 2, Int32(max(1, slice * 1000)))
                    if ready == 0 || MonotonicClock.now() - lastCheck >= output.checkInterval {
                        lastCheck = MonotonicClock.now()
                        try check()
                    }
                    if ready > 0 && sendParts.isEmpty && fds[0].revents & Int16(POLLERR | POLLHUP) != 0 {
                        throw TCPError.closed(peer: output.peer)
                    }
                }
            }
        }
    }

    /// Sends what the socket takes now; returns the byte count (0 when it would block).
    private func sendSome(_ parts: [UnsafeRawBufferPointer]) throws(TCPError) -> Int {
        var vectors = parts.map { iovec(iov_base: UnsafeMutableRawPointer(mutating: $0.baseAddress), iov_len: $0.count) }
        var message = msghdr()
        let n = vectors.withUnsafeMutableBufferPointer { v in
            message.msg_iov = v.baseAddress
            message.msg_iovlen = v.count
            return sendmsg(fd, &message, Int32(MSG_NOSIGNAL))
        }
        if n >= 0 { return n }
        if errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR { return 0 }
        throw errno == EPIPE || errno == ECONNRESET ? .closed(peer: peer) : .system(call: "send", errno: errno, peer: peer)
    }

    /// Receives what has arrived; returns the byte count (0 when nothing is there yet).
    private func receiveSome(_ target: UnsafeMutableRawBufferPointer) throws(TCPError) -> Int {
        guard target.count > 0 else { return 0 }
        let n = recv(fd, target.baseAddress!, target.count, 0)
        if n > 0 { return n }
        if n == 0 { throw .closed(peer: peer) }
        if errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR { return 0 }
        throw errno == ECONNRESET ? .closed(peer: peer) : .system(call: "recv", errno: errno, peer: peer)
    }

    func writeAll(
        _ first: UnsafeRawBufferPointer, more second: UnsafeRawBufferPointer = UnsafeRawBufferPointer(start: nil, count: 0),
        timeout: Double? = nil, check: () throws -> Void = {}
    ) throws(TCPError) {
        var parts = [first, second].filter { $0.count > 0 }
        let deadline = timeout.map { MonotonicClock.now() + $0 }
        while !parts.isEmpty {
            let n = try sendSome(parts)
            if n > 0 {
                Self.drop(n, from: &parts)
            } else {
                try wait(for: Int16(POLLOUT), deadline: deadline, timeout: timeout, what: "\(peer) to take more bytes", check: check)
            }
        }
    }

    /// Removes the first `count` bytes (already sent) from `parts`.
    static func drop(_ count: Int, from parts: inout [UnsafeRawBufferPointer]) {
        var left = count
        while left > 0, let part = parts.first {
            if left >= part.count {
                left -= part.count
                parts.removeFirst()
            } else {
                parts[0] = UnsafeRawBufferPointer(rebasing: part[left...])
                left = 0
            }
        }
    }

    func readAll(_ target: UnsafeMutableRawBufferPointer, timeout: Double? = nil, check: () throws -> Void) throws(TCPError) {
        var offset = 0
        let deadline = timeout.map { MonotonicClock.now() + $0 }
        while offset < target.count {
            let n = recv(fd, target.baseAddress! + offset, target.count - offset, Int32(MSG_DONTWAIT))
            if n > 0 {
                offset += n
                continue
            }
            if n == 0 { throw .closed(peer: peer) }
            if errno == EINTR { continue }
            guard errno == EAGAIN || errno == EWOULDBLOCK else {
                throw errno == ECONNRESET ? .closed(peer: peer) : .system(call: "recv", errno: errno, peer: peer)
            }
            try wait(for: Int16(POLLIN), deadline: deadline, timeout: timeout, what: "a message from \(peer)", check: check)
        }
    }

    /// Polls until the socket is ready, calling `check` every `checkInterval`.
    private func wait(for events: Int16, deadline: Double?, timeout: Double?, what: String, check: () throws -> Void) throws(TCPError) {
        while true {
            var slice = checkInterval
            if let deadline {
                let left = deadline - MonotonicClock.now()
                guard left > 0 else { throw .timedOut(waitingFor: what, seconds: timeout!) }
                slice = min(slice, left)
            }
            var p = pollfd(fd: fd, events: events, revents: 0)
            let rc = poll(&p, 1, Int32(max(1, slice * 1000)))
            if rc > 0 { return }
            if rc < 0 && errno != EINTR { throw .system(call: "poll", errno: errno, peer: peer) }
            do { try check() } catch let error as TCPError { throw error } catch {
                throw .refused(peer: peer, reason: "\(error)")
            }
        }
    }
}

/// A listening socket bound once (port 0: the kernel picks a free port, which is then
/// published; it is never closed and re-bound, so nobody can take it in between).
public final class TCPListener: @unchecked Sendable {
    public let fd: Int32
    public let host: String
    public let port: UInt16
    /// Where refusals are reported (a foreign process, a wrong secret, a silent peer).
    public var log: @Sendable (String) -> Void = { message in
        var line = "cohort: " + message + "\n"
        line.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
    }

    public init(host: String = "127.0.0.1", port: UInt16 = 0) throws(TCPError) {
        var (address, addressLength) = try TCPConnection.socketAddress(host: host, port: port)
        let fd = socket(Int32(address.ss_family), Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw .system(call: "socket", errno: errno, peer: "\(host):\(port)") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, addressLength) }
        }
        // Non-blocking: `accept` drains the backlog into its handshakes without waiting.
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        guard bound == 0, listen(fd, 128) == 0 else {
            let e = errno
            Glibc.close(fd)
            throw .system(call: "bind/listen", errno: e, peer: "\(host):\(port)")
        }
        var actual = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &actual) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        self.fd = fd
        self.host = host
        self.port = TCPConnection.port(&actual)
    }

    deinit {
        for p in pending { p.connection.close() }
        for connection in ready { connection.close() }
        close(fd)
    }

    /// Handshakes in progress: strangers and peers still proving the secret, carried over
    /// from one `accept` to the next.
    private var pending: [PendingHandshake] = []
    /// Peers whose handshake finished, in order, for this and the next calls to `accept`.
    private var ready: [TCPConnection] = []

    struct PendingHandshake {
        let connection: TCPConnection
        var handshake: Handshake.Acceptor
        let deadline: Double
    }

    /// Accepts the next peer that proves `secret` (`Handshake`), answering with `rank`.
    /// Handshakes run side by side, each with `handshakeTimeout`: anything else (another
    /// protocol, a wrong secret, a replayed handshake, silence) is logged with its address
    /// and closed, and holds up no one. Gives up after `timeout`.
    public func accept(
        rank: Int, secret: InstanceSecret, timeout: Double = 30, handshakeTimeout: Double = 2, check: () throws -> Void = {}
    ) throws -> TCPConnection {
        let deadline = MonotonicClock.now() + timeout
        var lastCheck = MonotonicClock.now()
        var chunk = [UInt8](repeating: 0, count: 256)
        while true {
            if !ready.isEmpty { return ready.removeFirst() }
            let now = MonotonicClock.now()
            for (i, p) in pending.enumerated().reversed() where p.deadline <= now {
                log("refused a connection from \(p.connection.peer): no Cohort handshake within \(handshakeTimeout) s")
                p.connection.close()
                pending.remove(at: i)
            }
            guard now < deadline else { throw TCPError.timedOut(waitingFor: "a peer to connect to \(host):\(port)", seconds: timeout) }
            var fds = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0)] + pending.map { pollfd(fd: $0.connection.fd, events: Int16(POLLIN), revents: 0) }
            let nearest = pending.map(\.deadline).min() ?? deadline
            let slice = max(0.001, min(0.05, nearest - now, deadline - now))
            let events = poll(&fds, nfds_t(fds.count), Int32(slice * 1000))
            if events <= 0 || MonotonicClock.now() - lastCheck >= 0.05 {
                lastCheck = MonotonicClock.now()
                try check()
            }
            guard events > 0 else { continue }
            // Handshakes first (their indices are those of the poll), then new connections.
            for i in stride(from: pending.count - 1, through: 0, by: -1) where fds[i + 1].revents != 0 {
                let n = chunk.withUnsafeMutableBytes { recv(pending[i].connection.fd, $0.baseAddress, $0.count, 0) }
                if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) { continue }
                let p = pending.remove(at: i)
                guard n > 0 else {
                    log("refused a connection from \(p.connection.peer): it closed the connection during the handshake")
                    p.connection.close()
                    continue
                }
                var handshake = p.handshake
                switch handshake.receive(chunk[..<n]) {
                case .needMore:
                    pending.insert(PendingHandshake(connection: p.connection, handshake: handshake, deadline: p.deadline), at: i)
                case let .send(bytes):
                    do {
                        try bytes.withUnsafeBytes { try p.connection.writeAll($0, timeout: 0.5) }
                        pending.insert(PendingHandshake(connection: p.connection, handshake: handshake, deadline: p.deadline), at: i)
                    } catch {
                        log("refused a connection from \(p.connection.peer): \(error)")
                        p.connection.close()
                    }
                case let .refuse(reason):
                    log("refused a connection from \(p.connection.peer): \(reason)")
                    p.connection.close()
                case let .accept(peerRank, reply):
                    do {
                        try reply.withUnsafeBytes { try p.connection.writeAll($0, timeout: 0.5) }
                    } catch {
                        log("refused a connection from \(p.connection.peer): \(error)")
                        p.connection.close()
                        continue
                    }
                    p.connection.peerRank = peerRank
                    p.connection.peer = "rank \(peerRank) at \(p.connection.peer)"
                    ready.append(p.connection)
                }
            }
            if fds[0].revents != 0 { acceptWaiting(rank: rank, secret: secret, deadline: MonotonicClock.now() + handshakeTimeout) }
        }
    }

    /// Takes every connection waiting in the backlog into `pending`.
    private func acceptWaiting(rank: Int, secret: InstanceSecret, deadline: Double) {
        while true {
            var address = sockaddr_storage()
            var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let peerFD = withUnsafeMutablePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.accept(fd, $0, &length) }
            }
            guard peerFD >= 0 else { return }
            _ = fcntl(peerFD, F_SETFD, FD_CLOEXEC)  // the connection's init makes it non-blocking
            let peerHost = TCPConnection.numericHost(&address)
            let from = "\(peerHost.contains(":") ? "[\(peerHost)]" : peerHost):\(TCPConnection.port(&address))"
            pending.append(PendingHandshake(
                connection: TCPConnection(fd: peerFD, peerRank: -1, peer: from), handshake: Handshake.Acceptor(secret: secret, rank: rank),
                deadline: deadline))
        }
    }
}
