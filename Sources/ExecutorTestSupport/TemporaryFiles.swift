#if canImport(Glibc)
import Glibc
#endif

/// Unique paths under the system temporary directory for test files.
public enum TemporaryFiles {
    public struct WriteError: Error, CustomStringConvertible {
        public let description: String
    }

    public static func path(_ name: String) -> String {
        let dir = String(cString: getenv("TMPDIR") ?? strdup("/tmp"))
        return "\(dir)/cohort-test-\(getpid())-\(UInt64.random(in: 0...UInt64.max))-\(name)"
    }

    public static func write(_ bytes: [UInt8], to path: String) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw WriteError(description: "cannot create \(path): errno \(errno)") }
        defer { close(fd) }
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress! + offset, bytes.count - offset) }
            guard n > 0 else { throw WriteError(description: "cannot write \(path): errno \(errno)") }
            offset += n
        }
    }

    public static func remove(_ path: String) { unlink(path) }
}
