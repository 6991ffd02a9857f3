import ExecutorCore
#if canImport(Glibc)
import Glibc
#endif

/// What a process can learn about the machine it runs on.
public enum Machine {
    public static func hostName() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        gethostname(&buffer, buffer.count - 1)
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// The first IPv4 address of an interface that is up and not loopback (nil: none).
    public static func firstNonLoopbackAddress() -> String? {
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0 else { return nil }
        defer { freeifaddrs(list) }
        var entry = list
        while let e = entry {
            defer { entry = e.pointee.ifa_next }
            let flags = Int32(e.pointee.ifa_flags)
            guard let address = e.pointee.ifa_addr, address.pointee.sa_family == sa_family_t(AF_INET),
                  flags & Int32(IFF_UP) != 0, flags & Int32(IFF_LOOPBACK) == 0 else { continue }
            var text = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
            var v4 = address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee.sin_addr }
            guard inet_ntop(AF_INET, &v4, &text, socklen_t(text.count)) != nil else { continue }
            return String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
        return nil
    }

    /// `MemAvailable` from /proc/meminfo, in bytes (0 when unknown).
    public static func availableMemory() -> Int64 {
        guard let text = try? readText("/proc/meminfo") else { return 0 }
        for line in text.split(separator: "\n") where line.hasPrefix("MemAvailable:") {
            let fields = line.split(separator: " ")
            if fields.count >= 2, let kib = Int64(fields[1]) { return kib * 1024 }
        }
        return 0
    }

    public static func readText(_ path: String) throws -> String {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw ExecutorError("cannot open \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = read(fd, &chunk, chunk.count)
            if n <= 0 { break }
            bytes += chunk[..<n]
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// Which build a process runs: Cohort's wire version and the size of its executable. The
/// driver refuses a worker of another build by name (mixed versions would disagree on
/// messages and numerics).
public enum Build {
    /// The build of `executable` (default: this process's own).
    public static func of(executable: String? = nil) -> String {
        let path = executable ?? ownExecutable()
        var info = stat()
        let size = stat(path, &info) == 0 ? Int64(info.st_size) : -1
        return "wire \(Wire.version), executable \(size) bytes"
    }

    public static var current: String { of() }

    public static func ownExecutable() -> String {
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        return n > 0 ? String(decoding: buffer[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) : CommandLine.arguments[0]
    }
}

/// The model file as a number pair every machine can check: its size and a digest of its
/// first MiB (the GGUF header, metadata and tensor table of small models).
public struct ModelFileIdentity: Sendable, Equatable {
    public var size: Int64
    public var headerDigest: UInt64

    public static let headerBytes = 1 << 20

    /// - Throws: naming the path when the file cannot be read.
    public init(path: String) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw ExecutorError("the model file \(path) cannot be opened: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw ExecutorError("cannot stat the model file \(path)") }
        size = Int64(info.st_size)
        var buffer = [UInt8](repeating: 0, count: Self.headerBytes)
        var total = 0
        while total < buffer.count {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress! + total, $0.count - total) }
            if n <= 0 { break }
            total += n
        }
        // FNV-1a over the header, 8 bytes at a time.
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325
        buffer.withUnsafeBytes { raw in
            var i = 0
            while i + 8 <= total {
                hash = (hash ^ raw.loadUnaligned(fromByteOffset: i, as: UInt64.self)) &* 0x100_0000_01B3
                i += 8
            }
            while i < total {
                hash = (hash ^ UInt64(raw[i])) &* 0x100_0000_01B3
                i += 1
            }
        }
        headerDigest = hash
    }
}

/// A worker's checks before it loads anything: the model file is the driver's, and the
/// machine has memory for the shard and its KV budget.
enum Preflight {
    static func check(_ shard: WorkerConfiguration.ModelShard, machine: String) throws {
        let identity: ModelFileIdentity
        do { identity = try ModelFileIdentity(path: shard.path) } catch {
            throw ExecutorError("pre-flight on \(machine): \(error)")
        }
        guard identity.size == shard.fileSize, identity.headerDigest == shard.headerDigest else {
            throw ExecutorError(
                "pre-flight on \(machine): the model file \(shard.path) differs from the driver's: expected \(shard.fileSize) bytes "
                    + "with header digest \(String(shard.headerDigest, radix: 16)), found \(identity.size) bytes with \(String(identity.headerDigest, radix: 16))")
        }
        let needed = shard.shardBytes + Int64(shard.kvCacheMiB) << 20
        let available = Machine.availableMemory()
        guard available == 0 || available >= needed else {
            throw ExecutorError(
                "pre-flight on \(machine): this rank needs \(needed >> 20) MiB (weights \(shard.shardBytes >> 20) MiB, KV cache \(shard.kvCacheMiB) MiB), "
                    + "the machine has \(available >> 20) MiB available")
        }
    }
}
