import ExecutorCore
import Transports
#if canImport(Glibc)
import Glibc
#endif

/// How a driver reaches its worker processes: every command to all workers, one reply
/// from each, in order. Over shared-memory rings on one machine (`RingCommandChannel`),
/// over TCP wherever the workers run (`TCPCommandChannel`). `WorkerGroup` is the same
/// over either.
protocol CommandChannel: AnyObject {
    /// Where worker `index` (rank index + 1) finds the channel.
    func address(ofWorker index: Int) -> WorkerConfiguration.CommandChannelAddress
    /// After launch: waits until every worker is connected (`check` finds dead ones).
    func connect(timeout: Double, check: () throws -> Void) throws
    /// Sends a command to every worker; returns its sequence number.
    func publish(_ bytes: UnsafeRawBufferPointer, timeout: Double, check: () throws -> Void) throws -> UInt64
    /// Every worker's reply to command `sequence`, in worker order (commands are gathered in
    /// the order they were published).
    /// - Throws: `ChannelTimeout` naming the first worker that did not answer in time.
    func gather<T>(_ sequence: UInt64, timeout: Double, check: () throws -> Void, _ decode: (Int, UnsafeRawBufferPointer) throws -> T) throws -> [T]
    /// Every worker is in: nothing else may attach from now on.
    func seal()
    func close()
}

/// Worker `worker` (0-based) did not answer within the deadline.
struct ChannelTimeout: Error {
    let worker: Int
}

/// The channel over shared memory: one broadcast ring read by every worker, one reply ring
/// per worker. Workers acknowledge a command after writing its reply, so the driver waits
/// on one acknowledgement and then reads replies that are already there.
final class RingCommandChannel: CommandChannel {
    let broadcast: SharedMemoryRing
    let replies: [SharedMemoryRing]

    init(workers: Int, slotBytes: Int, checkInterval: Double, spinPolls spin: Int) throws {
        broadcast = try SharedMemoryRing.create(readers: workers, slots: 4, slotBytes: slotBytes, spinPolls: spin)
        var replies: [SharedMemoryRing] = []
        do {
            for _ in 0..<workers {
                replies.append(try SharedMemoryRing.create(readers: 1, slots: 4, slotBytes: slotBytes, spinPolls: spin))
            }
        } catch {
            broadcast.close()
            replies.forEach { $0.close() }
            throw error
        }
        self.replies = replies
        for ring in [broadcast] + replies { ring.checkInterval = checkInterval }
    }

    /// Every worker also gets every ring name of the group: if the driver dies while workers
    /// start, any worker that started removes them all.
    func address(ofWorker index: Int) -> WorkerConfiguration.CommandChannelAddress {
        .rings(broadcast: broadcast.name, reply: replies[index].name, group: [broadcast.name] + replies.map(\.name))
    }
    func connect(timeout: Double, check: () throws -> Void) throws {}

    func publish(_ bytes: UnsafeRawBufferPointer, timeout: Double, check: () throws -> Void) throws -> UInt64 {
        try broadcast.write(bytes, timeout: timeout, check: check)
    }

    func gather<T>(_ sequence: UInt64, timeout: Double, check: () throws -> Void, _ decode: (Int, UnsafeRawBufferPointer) throws -> T) throws -> [T] {
        do {
            try broadcast.waitForAcknowledgement(of: sequence, timeout: timeout, check: check)
        } catch SharedMemoryError.timedOut {
            throw ChannelTimeout(worker: broadcast.readersBehind(sequence).first ?? 0)
        }
        var results: [T] = []
        results.reserveCapacity(replies.count)
        for (i, ring) in replies.enumerated() {
            do {
                results.append(try ring.read(reader: 0, timeout: timeout, check: check) { try decode(i, $0) })
            } catch SharedMemoryError.timedOut {
                throw ChannelTimeout(worker: i)
            }
        }
        return results
    }

    func seal() {
        // Workers remove the names once all are attached (`markAttached`); make sure.
        broadcast.unlinkName()
        replies.forEach { $0.unlinkName() }
    }

    func close() {
        broadcast.close()
        replies.forEach { $0.close() }
    }
}

/// The channel over TCP: the driver binds a listener (the kernel picks the port, which the
/// workers get in their configuration), every worker connects presenting its rank and the
/// instance secret, and commands and replies are framed messages on its connection.
/// Anything that is not one of this group's workers is refused and logged.
final class TCPCommandChannel: CommandChannel {
    let listener: TCPListener
    let secret: InstanceSecret
    let workers: Int
    private var connections: [TCPConnection?]
    private var published: UInt64 = 0

    init(workers: Int, host: String, secret: InstanceSecret) throws {
        listener = try TCPListener(host: host)
        self.secret = secret
        self.workers = workers
        connections = Array(repeating: nil, count: workers)
    }

    func address(ofWorker index: Int) -> WorkerConfiguration.CommandChannelAddress { .tcp(host: listener.host, port: listener.port) }

    func connect(timeout: Double, check: () throws -> Void) throws {
        while connections.contains(where: { $0 == nil }) {
            let connection = try listener.accept(rank: 0, secret: secret, timeout: timeout, check: check)
            let index = connection.peerRank - 1
            guard connections.indices.contains(index), connections[index] == nil else {
                listener.log("refused \(connection.peer): rank \(connection.peerRank) is not an unconnected worker of 1...\(workers)")
                connection.close()
                continue
            }
            connections[index] = connection
        }
    }

    func publish(_ bytes: UnsafeRawBufferPointer, timeout: Double, check: () throws -> Void) throws -> UInt64 {
        for connection in connections {
            try connection!.send(bytes, timeout: timeout, check: check)
        }
        published += 1
        return published - 1
    }

    func gather<T>(_ sequence: UInt64, timeout: Double, check: () throws -> Void, _ decode: (Int, UnsafeRawBufferPointer) throws -> T) throws -> [T] {
        var results: [T] = []
        results.reserveCapacity(workers)
        for (i, connection) in connections.enumerated() {
            do {
                results.append(try connection!.receive(timeout: timeout, check: check) { try decode(i, $0) })
            } catch TCPError.timedOut {
                throw ChannelTimeout(worker: i)
            }
        }
        return results
    }

    func seal() {}

    func close() { connections.forEach { $0?.close() } }
}
