#if canImport(Glibc)
import Glibc
#endif
internal import CPlatform
public import Transports
public import ExecutorCore

/// Collectives among the ranks of one machine through one shared-memory segment: sum
/// all-reduce, all-gather and broadcast of float32 buffers of any size (split into chunks
/// of `capacity` floats).
///
/// Segment layout (64-byte lines): header (magic, version, ranks, capacity); barrier words
/// (generation, arrivals, sleepers); per rank its pid and the last barrier it reached;
/// then two buffer sets, each one slot of `capacity` floats per rank and a result region.
///
/// All-reduce per chunk: every rank copies its part into its slot; barrier; rank r sums
/// its 1/ranks of the elements over all slots, in rank order, into the result region;
/// barrier; every rank copies the result out. Summing in rank order makes every rank's
/// result identical, bit for bit, to a serial sum in that order. Successive operations
/// alternate between the two buffer sets, so no barrier is needed before a set is
/// reused: a rank can only write a set again after every rank passed the barriers of
/// the operation in between, which come after its last read of that set.
///
/// Waits spin briefly, yield, then sleep on a process-shared futex, checking every 50 ms
/// that the ranks not yet arrived are alive: a dead peer fails the collective at once,
/// naming its rank and pid; one that does not arrive within `timeout` is named as stuck.
public final class SharedMemoryCommunicator: @unchecked Sendable {
    // @unchecked: one thread uses a communicator handle at a time (its rank's worker);
    // the shared words are accessed atomically and slots are handed over by barriers.

    public let rank: Int
    public let ranks: Int
    /// Floats per slot: larger buffers go in chunks.
    public let capacity: Int
    /// Longest wait for the other ranks at a barrier.
    public var timeout: Double = .infinity
    /// Called every time a wait wakes without its peers (every 50 ms): throws to end the
    /// wait (the driver's rank 0 passes its health check, which names a stuck or dead rank).
    public var watchdog: (@Sendable () throws -> Void)?
    private let segment: SharedMemorySegment
    /// The buffer set the next operation uses (every rank flips it in step).
    private var bufferSet = 0

    static let magic: UInt32 = 0x4D4F_4343  // "CCOM"
    static let layoutVersion: UInt32 = 1

    enum Layout {
        static let magic = 0, version = 4, ranks = 8, capacity = 16
        static let generation = 64, arrived = 68, sleepers = 72
        static let perRank = 128
        static func pid(_ r: Int) -> Int { perRank + 64 * r }
        static func reached(_ r: Int) -> Int { perRank + 64 * r + 4 }
        static func dataStart(ranks: Int) -> Int { perRank + 64 * ranks }
        static func size(ranks: Int, capacity: Int) -> Int { dataStart(ranks: ranks) + 2 * (ranks + 1) * capacity * 4 }
    }

    // MARK: - Life cycle

    /// Creates the segment (as rank 0).
    public static func create(ranks: Int, capacity: Int = 1 << 20) throws(SharedMemoryError) -> SharedMemoryCommunicator {
        guard ranks >= 1, capacity >= 16, capacity % 16 == 0 else {
            throw .invalidConfiguration("ranks ≥ 1 and a capacity that is a positive multiple of 16 floats; got \(ranks), \(capacity)")
        }
        let segment = try SharedMemorySegment.create(size: Layout.size(ranks: ranks, capacity: capacity))
        let base = segment.base
        base.storeBytes(of: UInt32(ranks), toByteOffset: Layout.ranks, as: UInt32.self)
        base.storeBytes(of: UInt64(capacity), toByteOffset: Layout.capacity, as: UInt64.self)
        base.storeBytes(of: layoutVersion, toByteOffset: Layout.version, as: UInt32.self)
        cohort_atomic_store(base.advanced(by: Layout.magic).assumingMemoryBound(to: UInt32.self), magic)
        return SharedMemoryCommunicator(segment: segment, rank: 0, ranks: ranks, capacity: capacity)
    }

    /// Attaches as `rank` to a segment made by `create`.
    public static func attach(name: String, rank: Int) throws(SharedMemoryError) -> SharedMemoryCommunicator {
        let segment = try SharedMemorySegment.attach(name: name, minimumSize: Layout.perRank)
        let base = segment.base
        let magic = cohort_atomic_load(base.advanced(by: Layout.magic).assumingMemoryBound(to: UInt32.self))
        let version = base.load(fromByteOffset: Layout.version, as: UInt32.self)
        let ranks = Int(base.load(fromByteOffset: Layout.ranks, as: UInt32.self))
        let capacity = Int(base.load(fromByteOffset: Layout.capacity, as: UInt64.self))
        guard magic == Self.magic, version == layoutVersion, ranks >= 1, capacity >= 16, capacity <= 1 << 30,
              Layout.size(ranks: ranks, capacity: capacity) == segment.size, rank >= 0, rank < ranks
        else {
            segment.close()
            throw .layoutMismatch(name: name, expected: "a communicator of \(ranks) ranks with rank \(rank) among them",
                                  found: "magic \(String(magic, radix: 16)), version \(version), \(capacity) floats in \(segment.size) bytes")
        }
        return SharedMemoryCommunicator(segment: segment, rank: rank, ranks: ranks, capacity: capacity)
    }

    private init(segment: SharedMemorySegment, rank: Int, ranks: Int, capacity: Int) {
        self.segment = segment
        self.rank = rank
        self.ranks = ranks
        self.capacity = capacity
        cohort_atomic_store(word(Layout.pid(rank)), UInt32(bitPattern: getpid()))
    }

    public var name: String { segment.name }
    public func close() { segment.close() }
    public func unlinkName() { segment.unlinkName() }

    // MARK: - Collectives

    /// Time this rank spent in all-reduces and all-gathers (waiting for peers included), and
    /// how many it ran: what a step pays for tensor parallelism.
    public private(set) var collectiveNanoseconds: Int64 = 0
    public private(set) var collectiveCount = 0

    /// buffer ← Σ over ranks of every rank's buffer (same count on every rank).
    public func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws(CollectiveError) {
        let start = MonotonicClock.nanoseconds()
        defer { account(since: start) }
        var offset = 0
        while offset < buffer.count {
            let n = min(capacity, buffer.count - offset)
            slot(rank).update(from: buffer.baseAddress! + offset, count: n)
            try barrier("all-reduce")
            // My share of the elements, on 16-float boundaries.
            let units = (n + 15) / 16
            let begin = min(n, units * rank / ranks * 16), end = min(n, units * (rank + 1) / ranks * 16)
            if begin < end {
                let out = result + begin
                out.update(from: slot(0) + begin, count: end - begin)
                for r in 1..<ranks { Self.add(slot(r) + begin, into: out, count: end - begin) }
            }
            try barrier("all-reduce")
            (buffer.baseAddress! + offset).update(from: result, count: n)
            bufferSet ^= 1
            offset += n
        }
    }

    /// output ← the inputs of ranks 0, 1, … concatenated (`output.count == ranks × input.count`).
    public func allGather(_ input: UnsafeBufferPointer<Float>, into output: UnsafeMutableBufferPointer<Float>) throws(CollectiveError) {
        precondition(output.count == ranks * input.count, "all-gather output must hold ranks × input")
        let start = MonotonicClock.nanoseconds()
        defer { account(since: start) }
        var offset = 0
        while offset < input.count || (offset == 0 && input.isEmpty) {
            let n = min(capacity, input.count - offset)
            if n > 0 { slot(rank).update(from: input.baseAddress! + offset, count: n) }
            try barrier("all-gather")
            for r in 0..<ranks where n > 0 { (output.baseAddress! + r * input.count + offset).update(from: slot(r), count: n) }
            bufferSet ^= 1
            offset += max(n, 1)
        }
    }

    /// buffer ← root's buffer.
    public func broadcast(_ buffer: UnsafeMutableBufferPointer<Float>, root: Int) throws(CollectiveError) {
        precondition(root >= 0 && root < ranks, "root \(root) outside 0..<\(ranks)")
        var offset = 0
        while offset < buffer.count {
            let n = min(capacity, buffer.count - offset)
            if rank == root { slot(root).update(from: buffer.baseAddress! + offset, count: n) }
            try barrier("broadcast")
            if rank != root { (buffer.baseAddress! + offset).update(from: slot(root), count: n) }
            bufferSet ^= 1
            offset += n
        }
    }

    private func account(since start: Int64) {
        collectiveNanoseconds += MonotonicClock.nanoseconds() - start
        collectiveCount += 1
    }

    // MARK: - Barrier

    /// Waits until every rank has reached this barrier.
    public func barrier(_ operation: String = "barrier") throws(CollectiveError) {
        if ranks == 1 { return }
        let generation = cohort_atomic_load(word(Layout.generation))
        cohort_atomic_store(word(Layout.reached(rank)), generation &+ 1)
        if cohort_atomic_fetch_add(word(Layout.arrived), 1) + 1 == UInt32(ranks) {
            cohort_atomic_store(word(Layout.arrived), 0)
            cohort_atomic_store(word(Layout.generation), generation &+ 1)
            if cohort_atomic_load(word(Layout.sleepers)) > 0 { cohort_futex_wake_shared(word(Layout.generation)) }
            return
        }
        let passed = { cohort_atomic_load(self.word(Layout.generation)) != generation }
        for _ in 0..<200 {
            if passed() { return }
            cohort_cpu_relax()
        }
        let yieldUntil = MonotonicClock.now() + 50e-6
        while MonotonicClock.now() < yieldUntil {
            if passed() { return }
            sched_yield()
        }
        let deadline = MonotonicClock.now() + timeout
        while !passed() {
            _ = cohort_atomic_fetch_add(word(Layout.sleepers), 1)
            if !passed() { _ = cohort_futex_wait_shared(word(Layout.generation), generation, 50_000_000) }
            _ = cohort_atomic_fetch_add(word(Layout.sleepers), UInt32.max)
            if passed() { return }
            let missing = (0..<ranks).filter { cohort_atomic_load(word(Layout.reached($0))) != generation &+ 1 }
            for r in missing {
                let pid = Int32(bitPattern: cohort_atomic_load(word(Layout.pid(r))))
                if pid != 0 && !Self.isAlive(pid) { throw .peerDied(rank: r, pid: pid, operation: operation) }
            }
            if let watchdog {
                do { try watchdog() } catch { throw .watchdog(operation: operation, reason: "\(error)") }
            }
            if MonotonicClock.now() > deadline { throw .peerStuck(ranks: missing, operation: operation, seconds: timeout) }
        }
    }

    /// False once a process has ended (gone, or a zombie waiting to be reaped).
    static func isAlive(_ pid: Int32) -> Bool {
        let fd = open("/proc/\(pid)/stat", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return false }
        defer { Glibc.close(fd) }
        var buffer = [UInt8](repeating: 0, count: 512)
        let n = read(fd, &buffer, buffer.count)
        guard n > 0, let close = buffer[..<n].lastIndex(of: UInt8(ascii: ")")), close + 2 < n else { return false }
        let state = buffer[close + 2]
        return state != UInt8(ascii: "Z") && state != UInt8(ascii: "X")
    }

    // MARK: - Memory

    private func word(_ offset: Int) -> UnsafeMutablePointer<UInt32> {
        segment.base.advanced(by: offset).assumingMemoryBound(to: UInt32.self)
    }

    private func slot(_ r: Int) -> UnsafeMutablePointer<Float> {
        let set = bufferSet * (ranks + 1) * capacity * 4
        return segment.base.advanced(by: Layout.dataStart(ranks: ranks) + set + r * capacity * 4).assumingMemoryBound(to: Float.self)
    }

    private var result: UnsafeMutablePointer<Float> { slot(ranks) }

    @inline(__always)
    static func add(_ x: UnsafePointer<Float>, into y: UnsafeMutablePointer<Float>, count: Int) {
        let rx = UnsafeRawPointer(x), ry = UnsafeMutableRawPointer(y)
        var i = 0
        while i + 8 <= count {
            let v = ry.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self) + rx.loadUnaligned(fromByteOffset: i * 4, as: SIMD8<Float>.self)
            ry.storeBytes(of: v, toByteOffset: i * 4, as: SIMD8<Float>.self)
            i += 8
        }
        while i < count {
            y[i] += x[i]
            i += 1
        }
    }
}

/// A collective that could not complete; names the peer rank.
public enum CollectiveError: Error, Equatable, CustomStringConvertible {
    case peerDied(rank: Int, pid: Int32, operation: String)
    case peerStuck(ranks: [Int], operation: String, seconds: Double)
    /// A peer over TCP closed its connection or failed (a TCP peer's pid is not known here).
    case peerLost(rank: Int, operation: String, reason: String)
    /// The communicator's watchdog ended the wait (it names the rank to blame).
    case watchdog(operation: String, reason: String)

    public var description: String {
        switch self {
        case let .watchdog(operation, reason): "\(operation) stopped waiting: \(reason)"
        case let .peerDied(rank, pid, operation): "\(operation) failed: rank \(rank) (pid \(pid)) died"
        case let .peerLost(rank, operation, reason): "\(operation) failed: rank \(rank) is gone (\(reason))"
        case let .peerStuck(ranks, operation, seconds): "\(operation) failed: rank\(ranks.count == 1 ? "" : "s") \(ranks.map(String.init).joined(separator: ", ")) did not arrive within \(seconds) s"
        }
    }
}

extension SharedMemoryCommunicator: TensorParallelGroup {}
