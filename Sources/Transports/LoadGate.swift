internal import CPlatform
#if canImport(Glibc)
import Glibc
#endif

/// A counting semaphore in shared memory that worker processes pass through to load their
/// model: at most `limit` inside at once (the seed's `max_concurrent_workers`, which there
/// raises NotImplementedError). It also records the most that were ever inside.
///
/// Layout: magic, limit; inside (u64, changed by compare-and-swap); most inside (u64);
/// wake-up epoch and sleepers (u32) for the process-shared futex.
public final class LoadGate: @unchecked Sendable {
    // @unchecked: every shared word is accessed atomically.
    private let segment: SharedMemorySegment
    public let limit: Int
    /// How often a waiting process wakes to run its `check`.
    public var checkInterval = 0.05

    static let magic: UInt32 = 0x4554_4147  // "GATE"
    enum Layout { static let magic = 0, limit = 4, inside = 8, most = 16, epoch = 24, sleepers = 28, size = 64 }

    public var name: String { segment.name }

    /// Creates a gate for `limit` processes at once.
    public static func create(limit: Int) throws(SharedMemoryError) -> LoadGate {
        guard limit >= 1 else { throw .invalidConfiguration("a load limit ≥ 1, found \(limit)") }
        let segment = try SharedMemorySegment.create(size: Layout.size)
        segment.base.storeBytes(of: UInt32(limit), toByteOffset: Layout.limit, as: UInt32.self)
        cohort_atomic_store(segment.base.advanced(by: Layout.magic).assumingMemoryBound(to: UInt32.self), magic)
        return LoadGate(segment: segment, limit: limit)
    }

    public static func attach(name: String) throws(SharedMemoryError) -> LoadGate {
        let segment = try SharedMemorySegment.attach(name: name, minimumSize: Layout.size)
        let magic = cohort_atomic_load(segment.base.advanced(by: Layout.magic).assumingMemoryBound(to: UInt32.self))
        let limit = Int(segment.base.load(fromByteOffset: Layout.limit, as: UInt32.self))
        guard magic == Self.magic, limit >= 1 else {
            segment.close()
            throw .layoutMismatch(name: name, expected: "a load gate", found: "magic \(String(magic, radix: 16)), limit \(limit)")
        }
        return LoadGate(segment: segment, limit: limit)
    }

    private init(segment: SharedMemorySegment, limit: Int) {
        self.segment = segment
        self.limit = limit
    }

    public func close() { segment.close() }
    public func unlinkName() { segment.unlinkName() }

    /// The most processes that were ever inside at once.
    public var mostInside: Int { Int(cohort_atomic_load64(word64(Layout.most))) }

    /// Waits until fewer than `limit` are inside, then enters. `check` runs every
    /// `checkInterval` while waiting (it throws to give up: the driver died, say).
    public func enter(check: () throws -> Void = {}) throws {
        let inside = word64(Layout.inside), epoch = word32(Layout.epoch), sleepers = word32(Layout.sleepers)
        while true {
            let now = cohort_atomic_load64(inside)
            if now < UInt64(limit) {
                guard cohort_atomic_compare_exchange64(inside, now, now + 1) != 0 else { continue }
                var most = cohort_atomic_load64(word64(Layout.most))
                while most < now + 1 && cohort_atomic_compare_exchange64(word64(Layout.most), most, now + 1) == 0 {
                    most = cohort_atomic_load64(word64(Layout.most))
                }
                return
            }
            let seen = cohort_atomic_load(epoch)
            _ = cohort_atomic_fetch_add(sleepers, 1)
            if cohort_atomic_load64(inside) >= UInt64(limit) {
                _ = cohort_futex_wait_shared(epoch, seen, Int64(checkInterval * 1e9))
            }
            _ = cohort_atomic_fetch_add(sleepers, UInt32.max)
            try check()
        }
    }

    /// Leaves, letting one waiting process in.
    public func leave() {
        _ = cohort_atomic_fetch_add64(word64(Layout.inside), UInt64.max)
        _ = cohort_atomic_fetch_add(word32(Layout.epoch), 1)
        if cohort_atomic_load(word32(Layout.sleepers)) > 0 { cohort_futex_wake_shared(word32(Layout.epoch)) }
    }

    private func word32(_ offset: Int) -> UnsafeMutablePointer<UInt32> {
        segment.base.advanced(by: offset).assumingMemoryBound(to: UInt32.self)
    }

    private func word64(_ offset: Int) -> UnsafeMutablePointer<UInt64> {
        segment.base.advanced(by: offset).assumingMemoryBound(to: UInt64.self)
    }
}
