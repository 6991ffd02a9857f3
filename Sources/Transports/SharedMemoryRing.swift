#if canImport(Glibc)
import Glibc
#endif
internal import CPlatform
import ExecutorCore

/// A ring of fixed-size message slots in POSIX shared memory: one writer, `readers`
/// readers, each reader acknowledging every message (vLLM's `shm_broadcast` idea).
///
/// The writer may reuse a slot only when every reader has acknowledged the message in it,
/// so no message is lost or repeated. Waiting spins briefly (`spinLimit` polls, which the
/// creator chooses for every party: see `spinPolls(parties:cores:)`), yields the
/// core for up to 50 µs, then sleeps on a process-shared futex: readers on the write epoch,
/// the writer on the acknowledgement epoch. Each side counts its sleepers so the other wakes it only when
/// someone sleeps.
///
/// Shared memory layout (64-byte lines): header (magic, version, readers, slots, slot
/// bytes, spin polls); write sequence + write epoch + sleeping readers; acknowledgement epoch +
/// sleeping writer; one read sequence per reader; then the slots, each a u32 length and
/// the payload. Names are `/cohort-` plus 128 random bits, created exclusively with mode
/// 0600, so only this user can attach and nobody can guess the name.
public final class SharedMemoryRing: @unchecked Sendable {
    // @unchecked: every shared word is accessed through sequentially consistent atomics;
    // slot payloads are handed over by the write/read sequences (a slot is written only
    // when all readers acknowledged it, and read only after the writer published it).
    // One thread at a time plays the writer, and one thread at a time each reader.

    public let readers: Int
    public let slots: Int
    public let slotBytes: Int
    /// Polls of the shared word before yielding (from the ring's header; may be changed locally).
    public var spinLimit: Int
    /// Seconds of yielding the core (sched_yield) before sleeping on the futex.
    public var yieldSeconds = 50e-6

    private let segment: SharedMemorySegment
    private let base: UnsafeMutableRawPointer

    static let magic: UInt32 = 0x474E_5243  // "CRNG"
    static let layoutVersion: UInt32 = 2

    /// How long the parties of a ring should spin before yielding: a few hundred polls
    /// (about a microsecond) when every party has a core of its own, a few dozen when
    /// parties outnumber cores, where a spinning waiter only delays the peer that needs its
    /// core. bench control-plane, 4.4 KB steps on 2 cores: 2 workers (3 processes) 8.0 µs
    /// a step with 200 polls, 7.1 with 20, 16.3 with 2000; 4 workers 12.9 against 11.4;
    /// 1 worker (2 processes) 3.2 with 200 against 3.9-4.9 with 20.
    public static func spinPolls(parties: Int, cores: Int) -> Int { parties <= cores ? 200 : 20 }

    // MARK: - Life cycle

    /// Creates a new ring (the writer's side) under a fresh unguessable name.
    public static func create(
        readers: Int, slots: Int = 8, slotBytes: Int = 64 << 10, spinPolls: Int = 200
    ) throws(SharedMemoryError) -> SharedMemoryRing {
        guard readers >= 1, slots >= 2, slotBytes >= 8, slotBytes <= 1 << 30, spinPolls >= 0, spinPolls <= 1 << 20 else {
            throw .invalidConfiguration(
                "readers ≥ 1, slots ≥ 2, 8 ≤ slot bytes ≤ 1 GiB, 0 ≤ spin polls ≤ 2^20; got \(readers), \(slots), \(slotBytes), \(spinPolls)")
        }
        let segment = try SharedMemorySegment.create(size: Layout.size(readers: readers, slots: slots, slotBytes: slotBytes))
        let base = segment.base
        base.storeBytes(of: UInt32(readers), toByteOffset: Layout.readers, as: UInt32.self)
        base.storeBytes(of: UInt32(slots), toByteOffset: Layout.slots, as: UInt32.self)
        base.storeBytes(of: UInt64(slotBytes), toByteOffset: Layout.slotBytes, as: UInt64.self)
        base.storeBytes(of: UInt32(spinPolls), toByteOffset: Layout.spinPolls, as: UInt32.self)
        base.storeBytes(of: layoutVersion, toByteOffset: Layout.version, as: UInt32.self)
        cohort_atomic_store(base.advanced(by: Layout.magic).assumingMemoryBound(to: UInt32.self), magic)
        return SharedMemoryRing(segment: segment, readers: readers, slots: slots, slotBytes: slotBytes)
    }

    /// Attaches to an existing ring by name (a reader's side, or a writer in another process).
    public static func attach(name: String) throws(SharedMemoryError) -> SharedMemoryRing {
        let segment = try SharedMemorySegment.attach(name: name, minimumSize: Layout.headerSize)
        let base = segment.base
        func fail(_ expected: String, _ found: String) -> SharedMemoryError {
            segment.close()
            return .layoutMismatch(name: name, expected: expected, found: found)
        }
        let foundMagic = cohort_atomic_load(base.advanced(by: Layout.magic).assumingMemoryBound(to: UInt32.self))
        guard foundMagic == magic else { throw fail("magic CRNG", String(foundMagic, radix: 16)) }
        let version = base.load(fromByteOffset: Layout.version, as: UInt32.self)
        guard version == layoutVersion else { throw fail("layout version \(layoutVersion)", "\(version)") }
        let readers = Int(base.load(fromByteOffset: Layout.readers, as: UInt32.self))
        let slots = Int(base.load(fromByteOffset: Layout.slots, as: UInt32.self))
        let slotBytes = Int(base.load(fromByteOffset: Layout.slotBytes, as: UInt64.self))
        guard readers >= 1, slots >= 2, slotBytes >= 8, slotBytes <= 1 << 30,
              Layout.size(readers: readers, slots: slots, slotBytes: slotBytes) == segment.size
        else { throw fail("a consistent header", "\(readers) readers, \(slots) slots of \(slotBytes) bytes in \(segment.size) bytes") }
        return SharedMemoryRing(segment: segment, readers: readers, slots: slots, slotBytes: slotBytes)
    }

    private init(segment: SharedMemorySegment, readers: Int, slots: Int, slotBytes: Int) {
        self.segment = segment
        self.base = segment.base
        self.readers = readers
        self.slots = slots
        self.slotBytes = slotBytes
        spinLimit = Int(segment.base.load(fromByteOffset: Layout.spinPolls, as: UInt32.self))
        writeSequence = cohort_atomic_load64(segment.base.advanced(by: Layout.writeSequence).assumingMemoryBound(to: UInt64.self))
    }

    public var name: String { segment.name }

    /// Unmaps the ring; the creator also removes the name. Idempotent.
    public func close() { segment.close() }

    /// Removes the name now (after every peer attached), so nothing else can attach and
    /// nothing is left behind if this process dies. The mapping stays valid.
    public func unlinkName() { segment.unlinkName() }

    /// Counts this process as attached; the peer that completes `expected` attachments
    /// removes the name, so it disappears as soon as everyone is in, whoever dies later.
    public func markAttached(expected: Int) {
        if Int(cohort_atomic_fetch_add(word32(Layout.attached), 1)) + 1 == expected { unlinkName() }
    }

    // MARK: - Writer

    private var writeSequence: UInt64

    /// Publishes one message: `fill` writes at most `slotBytes` bytes into the slot and
    /// returns how many it wrote. Waits (up to `timeout` seconds; nil: forever) while the
    /// oldest slot is still unacknowledged.
    /// - Returns: the message's sequence number.
    @discardableResult
    public func write(
        timeout: Double? = nil, check: () throws -> Void = {}, _ fill: (UnsafeMutableRawBufferPointer) throws -> Int
    ) throws -> UInt64 {
        let seq = writeSequence
        try waitUntil(timeout: timeout, epoch: Layout.acknowledgeEpoch, sleepers: Layout.writerSleeping, check: check,
                      waitingFor: { "all \(self.readers) readers to acknowledge message \(seq &- UInt64(self.slots))" }) {
            oldestUnacknowledged() + UInt64(slots) > seq
        }
        let slot = slotAddress(seq)
        let length = try fill(UnsafeMutableRawBufferPointer(start: slot + 8, count: slotBytes))
        guard length >= 0, length <= slotBytes else { throw SharedMemoryError.messageTooLarge(bytes: length, slotBytes: slotBytes) }
        slot.storeBytes(of: UInt32(length), as: UInt32.self)
        writeSequence = seq + 1
        cohort_atomic_store64(word64(Layout.writeSequence), seq + 1)
        _ = cohort_atomic_fetch_add(word32(Layout.writeEpoch), 1)
        if cohort_atomic_load(word32(Layout.readersSleeping)) > 0 { cohort_futex_wake_shared(word32(Layout.writeEpoch)) }
        return seq
    }

    /// Publishes a copy of `bytes`.
    @discardableResult
    public func write(_ bytes: UnsafeRawBufferPointer, timeout: Double? = nil, check: () throws -> Void = {}) throws -> UInt64 {
        guard bytes.count <= slotBytes else { throw SharedMemoryError.messageTooLarge(bytes: bytes.count, slotBytes: slotBytes) }
        return try write(timeout: timeout, check: check) { slot in
            if let source = bytes.baseAddress { slot.baseAddress!.copyMemory(from: source, byteCount: bytes.count) }
            return bytes.count
        }
    }

    // MARK: - Readers

    /// Reads reader `reader`'s next message: waits (up to `timeout` seconds; nil: forever)
    /// until it is published, passes it to `consume`, then acknowledges it.
    ///
    /// While it sleeps it calls `check` every `checkInterval` seconds; an error thrown
    /// there (a peer found dead) ends the wait.
    public func read<T>(
        reader: Int, timeout: Double? = nil, check: () throws -> Void = {}, _ consume: (UnsafeRawBufferPointer) throws -> T
    ) throws -> T {
        precondition(reader >= 0 && reader < readers, "reader \(reader) outside 0..<\(readers)")
        let sequenceWord = word64(Layout.readSequence(reader))
        let seq = cohort_atomic_load64(sequenceWord)
        try waitUntil(timeout: timeout, epoch: Layout.writeEpoch, sleepers: Layout.readersSleeping, check: check,
                      waitingFor: { "message \(seq) for reader \(reader)" }) {
            cohort_atomic_load64(word64(Layout.writeSequence)) > seq
        }
        let slot = slotAddress(seq)
        let length = Int(slot.load(as: UInt32.self))
        let result = try consume(UnsafeRawBufferPointer(start: slot + 8, count: min(length, slotBytes)))
        cohort_atomic_store64(sequenceWord, seq + 1)
        _ = cohort_atomic_fetch_add(word32(Layout.acknowledgeEpoch), 1)
        // Only the last reader to acknowledge a message wakes the writer: one wake-up per
        // message, not one per reader.
        if cohort_atomic_load(word32(Layout.writerSleeping)) > 0 && oldestUnacknowledged() > seq {
            cohort_futex_wake_shared(word32(Layout.acknowledgeEpoch))
        }
        return result
    }

    /// The first message some reader has not acknowledged yet.
    private func oldestUnacknowledged() -> UInt64 {
        var oldest = UInt64.max
        for r in 0..<readers { oldest = Swift.min(oldest, cohort_atomic_load64(word64(Layout.readSequence(r)))) }
        return oldest
    }

    /// Readers that have not acknowledged message `seq` yet.
    public func readersBehind(_ seq: UInt64) -> [Int] {
        (0..<readers).filter { cohort_atomic_load64(word64(Layout.readSequence($0))) <= seq }
    }

    /// Waits until every reader has acknowledged message `seq` (readers acknowledge when
    /// their `consume` returns, so work done inside it is finished too).
    public func waitForAcknowledgement(of seq: UInt64, timeout: Double? = nil, check: () throws -> Void = {}) throws {
        try waitUntil(timeout: timeout, epoch: Layout.acknowledgeEpoch, sleepers: Layout.writerSleeping, check: check,
                      waitingFor: { "readers \(self.readersBehind(seq)) to acknowledge message \(seq)" }) {
            oldestUnacknowledged() > seq
        }
    }

    /// Messages published so far.
    public var published: UInt64 { cohort_atomic_load64(word64(Layout.writeSequence)) }

    // MARK: - Waiting

    /// How often a sleeping wait wakes to run its `check`.
    public var checkInterval = 0.05

    private func waitUntil(
        timeout: Double?, epoch: Int, sleepers: Int, check: () throws -> Void, waitingFor: () -> String, _ ready: () -> Bool
    ) throws {
        if ready() { return }
        // Spin on the atomic load alone, without `pause`: measured on this project's VM
        // (bench control-plane, 2 workers), pause-spinning gave 23-27 µs a step and a bare
        // spin 14-18 µs (pause is ~65 cycles on AMD, and a guest's pause loop can make the
        // hypervisor deschedule its vCPU).
        for _ in 0..<spinLimit {
            if ready() { return }
        }
        // Then yield the core for a short while: a peer that shares it runs at once, and
        // nobody burns a core another process needs (processes may outnumber cores).
        if yieldSeconds > 0 {
            let yieldUntil = MonotonicClock.now() + yieldSeconds
            repeat {
                sched_yield()
                if ready() { return }
            } while MonotonicClock.now() < yieldUntil
        }
        let deadline = timeout.map { MonotonicClock.now() + $0 }
        let epochWord = word32(epoch), sleepersWord = word32(sleepers)
        while true {
            _ = cohort_atomic_fetch_add(sleepersWord, 1)
            let seen = cohort_atomic_load(epochWord)
            if ready() {
                _ = cohort_atomic_fetch_add(sleepersWord, UInt32.max)
                return
            }
            var sleep = checkInterval
            if let deadline {
                let left = deadline - MonotonicClock.now()
                guard left > 0 else {
                    _ = cohort_atomic_fetch_add(sleepersWord, UInt32.max)
                    throw SharedMemoryError.timedOut(waitingFor: waitingFor(), seconds: timeout!)
                }
                sleep = Swift.min(sleep, left)
            }
            _ = cohort_futex_wait_shared(epochWord, seen, Int64(sleep * 1e9))
            _ = cohort_atomic_fetch_add(sleepersWord, UInt32.max)
            if ready() { return }
            try check()
        }
    }

    // MARK: - Layout

    enum Layout {
        static let magic = 0, version = 4, readers = 8, slots = 12, slotBytes = 16, spinPolls = 24
        static let writeSequence = 64, writeEpoch = 72, readersSleeping = 76
        static let acknowledgeEpoch = 128, writerSleeping = 132, attached = 136
        static let headerSize = 192
        static func readSequence(_ reader: Int) -> Int { headerSize + 64 * reader }
        static func dataStart(readers: Int) -> Int { headerSize + 64 * readers }
        static func slotStride(_ slotBytes: Int) -> Int { (8 + slotBytes + 63) / 64 * 64 }
        static func size(readers: Int, slots: Int, slotBytes: Int) -> Int {
            dataStart(readers: readers) + slots * slotStride(slotBytes)
        }
    }

    private func word32(_ offset: Int) -> UnsafeMutablePointer<UInt32> {
        base.advanced(by: offset).assumingMemoryBound(to: UInt32.self)
    }

    private func word64(_ offset: Int) -> UnsafeMutablePointer<UInt64> {
        base.advanced(by: offset).assumingMemoryBound(to: UInt64.self)
    }

    private func slotAddress(_ seq: UInt64) -> UnsafeMutableRawPointer {
        base + Layout.dataStart(readers: readers) + Int(seq % UInt64(slots)) * Layout.slotStride(slotBytes)
    }
}


