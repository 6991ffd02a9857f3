#if canImport(Glibc)
import Glibc
#endif

/// A whole file mapped read-only into memory. Tensors are views into this mapping; the
/// mapping lives as long as any owner holds this object.
public final class MappedFile: @unchecked Sendable {
    // @unchecked: the mapping is PROT_READ and never remapped, so concurrent reads are safe.

    public let path: String
    public let bytes: UnsafeRawBufferPointer

    /// Maps `path`.
    /// - Throws: `GGUFError.unreadable` naming the path and the system's reason.
    public init(path: String) throws(GGUFError) {
        self.path = path
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .unreadable(path: path, reason: String(cString: strerror(errno))) }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw .unreadable(path: path, reason: String(cString: strerror(errno))) }
        guard (info.st_mode & S_IFMT) == S_IFREG else { throw .unreadable(path: path, reason: "not a regular file") }
        let size = Int(info.st_size)
        if size == 0 {
            bytes = UnsafeRawBufferPointer(start: nil, count: 0)
            return
        }
        let address = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0)
        guard let address, address != MAP_FAILED else {
            throw .unreadable(path: path, reason: "mmap failed: \(String(cString: strerror(errno)))")
        }
        bytes = UnsafeRawBufferPointer(start: address, count: size)
    }

    deinit {
        if let base = bytes.baseAddress { munmap(UnsafeMutableRawPointer(mutating: base), bytes.count) }
    }

    /// Asks the kernel to read the file ahead (used while loading with a progress bar).
    public func prefetch(_ range: Range<Int>) {
        guard let base = bytes.baseAddress, !range.isEmpty else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let start = range.lowerBound / page * page
        madvise(UnsafeMutableRawPointer(mutating: base + start), range.upperBound - start, MADV_WILLNEED)
    }

    /// Drops this process's pages of `byteCount` bytes at `address` (inside the mapping)
    /// from its resident set: read again, they come back from the page cache. For tensors
    /// this process reads from a copy instead (packed weights). Only whole pages inside the
    /// range go.
    public func release(_ address: UnsafeRawPointer, byteCount: Int) {
        // Only the mapping's own pages: a converted copy elsewhere is never released.
        guard let base = bytes.baseAddress, byteCount > 0, address >= base, address < base + bytes.count else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let lower = max(address - base, 0), upper = min(address - base + byteCount, bytes.count)
        let start = (lower + page - 1) / page * page, end = upper / page * page
        guard start < end else { return }
        madvise(UnsafeMutableRawPointer(mutating: base + start), end - start, MADV_DONTNEED)
    }
}
