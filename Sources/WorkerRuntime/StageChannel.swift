public import Transports
public import ExecutorCore
import Collectives

/// The hidden-state link from one pipeline stage to the next: the sending stage's tensor
/// rank 0 writes, every tensor rank of the next stage reads. Within the driver's machine it
/// is a shared-memory ring (one copy in, no system call on the way); when either stage runs
/// on another machine it is one TCP connection from the sender to each reader, met through
/// a rendezvous the driver serves and authenticated with the instance secret.
///
/// It is wired once when the workers start (the compiled channel graph: driver → stage 0 →
/// … → last stage → driver), so handing a step's activations on costs no call through the
/// driver. Each message carries the step number and its shape, and the receiver checks
/// them: a step can never run on another step's states.
///
/// Message: step (u64), tokens (u32), hidden size (u32), then tokens × hidden float32.
public struct StageChannel: @unchecked Sendable {
    // @unchecked: one writer and fixed readers; each side is used by one thread.
    enum Backend {
        case ring(SharedMemoryRing)
        case tcp(TCPStageLink)
    }

    let backend: Backend
    static let headerBytes = 16

    public init(ring: SharedMemoryRing) { backend = .ring(ring) }

    /// The ring, when the channel is one.
    public var ring: SharedMemoryRing? {
        if case let .ring(ring) = backend { return ring }
        return nil
    }

    /// A new shared-memory channel for `readers` receiving ranks and steps of up to
    /// `maxTokens` × `hiddenSize`.
    public static func create(
        readers: Int, maxTokens: Int, hiddenSize: Int, slots: Int = 4, spinPolls: Int = 200
    ) throws(SharedMemoryError) -> StageChannel {
        StageChannel(ring: try SharedMemoryRing.create(
            readers: readers, slots: slots, slotBytes: headerBytes + maxTokens * hiddenSize * MemoryLayout<Float>.size,
            spinPolls: spinPolls))
    }

    public static func attach(name: String) throws(SharedMemoryError) -> StageChannel {
        StageChannel(ring: try SharedMemoryRing.attach(name: name))
    }

    /// Which end of a channel a rank holds.
    public enum End: Sendable, Equatable {
        /// The sending stage's tensor rank 0.
        case sender
        /// The receiving stage's tensor rank `index` (of `readers`).
        case reader(Int)
    }

    /// Joins the channel at `address` as `end`: attaches to the ring, or meets the other
    /// end at the TCP rendezvous (listening on `listenHost`, this rank's address).
    public static func join(
        _ address: WorkerConfiguration.CommunicatorAddress, as end: End, readers: Int, secret: InstanceSecret,
        listenHost: String, timeout: Double = 60
    ) throws -> StageChannel {
        switch address {
        case let .sharedMemory(name): return try attach(name: name)
        case let .tcp(host, port):
            return StageChannel(backend: .tcp(try TCPStageLink.join(
                end: end, readers: readers, rendezvousHost: host, rendezvousPort: port, secret: secret, listenHost: listenHost,
                timeout: timeout)))
        case .mpi:
            throw ExecutorError("a pipeline stage channel meets in shared memory or over TCP; the driver sent an MPI group address")
        }
    }

    init(backend: Backend) { self.backend = backend }

    /// Sends the hidden states of `step` ([tokens, hiddenSize]).
    public func send(
        step: UInt64, tokens: Int, hiddenSize: Int, _ states: UnsafePointer<Float>, timeout: Double? = nil, check: () throws -> Void = {}
    ) throws {
        let bytes = tokens * hiddenSize * MemoryLayout<Float>.size
        func fill(_ slot: UnsafeMutableRawBufferPointer) {
            slot.storeBytes(of: step, toByteOffset: 0, as: UInt64.self)
            slot.storeBytes(of: UInt32(tokens), toByteOffset: 8, as: UInt32.self)
            slot.storeBytes(of: UInt32(hiddenSize), toByteOffset: 12, as: UInt32.self)
            (slot.baseAddress! + Self.headerBytes).copyMemory(from: states, byteCount: bytes)
        }
        switch backend {
        case let .ring(ring):
            try ring.write(timeout: timeout, check: check) { slot in
                guard Self.headerBytes + bytes <= slot.count else {
                    throw SharedMemoryError.messageTooLarge(bytes: Self.headerBytes + bytes, slotBytes: slot.count)
                }
                fill(slot)
                return Self.headerBytes + bytes
            }
        case let .tcp(link):
            try link.send(bytes: Self.headerBytes + bytes, timeout: timeout, check: check, fill)
        }
    }

    /// Waits for the hidden states of `step` and passes them to `body` (the message is
    /// released when `body` returns).
    /// - Throws: `ExecutorError` when the message is for another step or shape.
    public func receive<T>(
        reader: Int, step: UInt64, tokens: Int, hiddenSize: Int, timeout: Double? = nil, check: () throws -> Void = {},
        _ body: (UnsafePointer<Float>) throws -> T
    ) throws -> T {
        func checked(_ message: UnsafeRawBufferPointer) throws -> T {
            guard message.count >= Self.headerBytes else {
                throw ExecutorError("hidden states for step \(step): expected a \(Self.headerBytes)-byte header, found \(message.count) bytes")
            }
            let gotStep = message.loadUnaligned(fromByteOffset: 0, as: UInt64.self)
            let gotTokens = Int(message.loadUnaligned(fromByteOffset: 8, as: UInt32.self))
            let gotHidden = Int(message.loadUnaligned(fromByteOffset: 12, as: UInt32.self))
            guard gotStep == step, gotTokens == tokens, gotHidden == hiddenSize,
                  message.count == Self.headerBytes + tokens * hiddenSize * MemoryLayout<Float>.size
            else {
                throw ExecutorError(
                    "hidden states: expected step \(step) with \(tokens) × \(hiddenSize) floats, "
                        + "found step \(gotStep) with \(gotTokens) × \(gotHidden) in \(message.count) bytes")
            }
            return try body((message.baseAddress! + Self.headerBytes).assumingMemoryBound(to: Float.self))
        }
        switch backend {
        case let .ring(ring): return try ring.read(reader: reader, timeout: timeout, check: check, checked)
        case let .tcp(link): return try link.receive(timeout: timeout, check: check, checked)
        }
    }

    /// Closes this end (the ring's mapping, or the sockets). Idempotent.
    public func close() {
        switch backend {
        case let .ring(ring): ring.close()
        case let .tcp(link): link.close()
        }
    }
}

/// A stage channel's TCP end: the sender holds one connection per reader, a reader one.
final class TCPStageLink: @unchecked Sendable {
    // @unchecked: one thread uses an end at a time.
    let connections: [TCPConnection]
    private var message: [UInt8] = []

    init(connections: [TCPConnection]) { self.connections = connections }

    /// Rank 0 of the meeting is the sender, rank 1 + i reader i; every rank registers its
    /// listener, then the sender connects to each reader.
    static func join(
        end: StageChannel.End, readers: Int, rendezvousHost: String, rendezvousPort: UInt16, secret: InstanceSecret,
        listenHost: String, timeout: Double
    ) throws -> TCPStageLink {
        let rank: Int
        switch end {
        case .sender: rank = 0
        case let .reader(index):
            guard index >= 0, index < readers else { throw ExecutorError("stage channel reader \(index) of \(readers)") }
            rank = 1 + index
        }
        let listener = try TCPListener(host: listenHost)  // closed when the meeting is over (deinit)
        let table = try TCPRendezvous.register(
            rank: rank, ranks: readers + 1, listener: listener, host: rendezvousHost, port: rendezvousPort, secret: secret,
            timeout: timeout)
        if rank == 0 {
            var connections: [TCPConnection] = []
            do {
                for (host, port) in table.dropFirst() {
                    connections.append(try TCPConnection.connect(host: host, port: port, rank: 0, secret: secret, timeout: timeout))
                }
            } catch {
                connections.forEach { $0.close() }
                throw error
            }
            return TCPStageLink(connections: connections)
        }
        let sender = try listener.accept(rank: rank, secret: secret, timeout: timeout)
        guard sender.peerRank == 0 else {
            sender.close()
            throw ExecutorError("stage channel: expected the sending stage (rank 0 of the meeting) to connect, found rank \(sender.peerRank)")
        }
        return TCPStageLink(connections: [sender])
    }

    func send(bytes: Int, timeout: Double?, check: () throws -> Void, _ fill: (UnsafeMutableRawBufferPointer) -> Void) throws {
        if message.count != bytes { message = [UInt8](repeating: 0, count: bytes) }
        message.withUnsafeMutableBytes(fill)
        try message.withUnsafeBytes { bytes in
            for connection in connections { try connection.send(bytes, timeout: timeout, check: check) }
        }
    }

    func receive<T>(timeout: Double?, check: () throws -> Void, _ body: (UnsafeRawBufferPointer) throws -> T) throws -> T {
        try connections[0].receive(timeout: timeout, check: check, body)
    }

    func close() { connections.forEach { $0.close() } }
}
