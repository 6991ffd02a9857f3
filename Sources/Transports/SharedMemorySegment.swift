#if canImport(Glibc)
import Glibc
#endif

/// A POSIX shared-memory segment mapped read-write: created under a fresh unguessable name
/// (`/cohort-` plus 128 random bits) with mode 0600 and `O_EXCL`, or attached by name.
/// The creator removes the name on close (or earlier, with `unlinkName`).
public final class SharedMemorySegment: @unchecked Sendable {
    // @unchecked: the mapping never changes; what lives in it is synchronised by its users.

    public let name: String
    public let base: UnsafeMutableRawPointer
    public let size: Int
    private let owner: Bool
    private var closed = false

    /// Creates and maps a zero-filled segment of `size` bytes.
    public static func create(size: Int) throws(SharedMemoryError) -> SharedMemorySegment {
        var random = SystemRandomNumberGenerator()
        let name = "/cohort-" + (0..<2).map { _ in
            let hex = String(random.next() as UInt64, radix: 16)
            return String(repeating: "0", count: 16 - hex.count) + hex
        }.joined()
        let fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw .system(call: "shm_open \(name)", errno: errno) }
        defer { Glibc.close(fd) }
        guard ftruncate(fd, off_t(size)) == 0 else {
            shm_unlink(name)
            throw .system(call: "ftruncate \(name) to \(size) bytes", errno: errno)
        }
        do {
            return SharedMemorySegment(name: name, base: try map(fd: fd, size: size, name: name), size: size, owner: true)
        } catch {
            shm_unlink(name)
            throw error
        }
    }

    /// Maps an existing segment, whole.
    public static func attach(name: String, minimumSize: Int) throws(SharedMemoryError) -> SharedMemorySegment {
        let fd = shm_open(name, O_RDWR | O_CLOEXEC, 0)
        guard fd >= 0 else { throw .system(call: "shm_open \(name)", errno: errno) }
        defer { Glibc.close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw .system(call: "fstat \(name)", errno: errno) }
        let size = Int(info.st_size)
        guard size >= minimumSize else {
            throw .layoutMismatch(name: name, expected: "at least \(minimumSize) bytes", found: "\(size) bytes")
        }
        return SharedMemorySegment(name: name, base: try map(fd: fd, size: size, name: name), size: size, owner: false)
    }

    private static func map(fd: Int32, size: Int, name: String) throws(SharedMemoryError) -> UnsafeMutableRawPointer {
        let p = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
        guard let p, p != MAP_FAILED else { throw .system(call: "mmap \(name)", errno: errno) }
        return p
    }

    private init(name: String, base: UnsafeMutableRawPointer, size: Int, owner: Bool) {
        self.name = name
        self.base = base
        self.size = size
        self.owner = owner
    }

    /// Removes the name (the mapping stays valid); nothing else can attach afterwards.
    public func unlinkName() { shm_unlink(name) }

    /// Unmaps; the creator also removes the name. Idempotent.
    public func close() {
        guard !closed else { return }
        closed = true
        munmap(base, size)
        if owner { shm_unlink(name) }
    }

    deinit { close() }
}
