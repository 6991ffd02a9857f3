#if canImport(Glibc)
import Glibc
#endif
import ExecutorCore
import Synchronization

/// Workers placed by a Ray cluster, as the seed places its GPU workers: `cohort generate
/// --launcher ray --ray-address HOST:PORT` joins the cluster as a driver, creates a
/// placement group with one bundle per rank (`--threads` CPUs each; GPUs later) whose bundle
/// 0 is pinned to this node (Ray's `node:ADDRESS` resource: the driver's rank runs here),
/// waits for it with a progress line and a deadline that names what the cluster lacks, and
/// creates one supervisor actor in each other bundle. A supervisor starts `cohort worker` on
/// its node with the secret on its standard input and a lifeline pipe: when the actor dies
/// (the driver killed it, or Ray did because the driver died) the worker exits. The workers
/// then join the driver over Cohort's own channels: Ray carries placement and lifecycle only.
///
/// Ray's C++ API lives in `libcohort_ray.so` (`scripts/build-ray.sh`, built against PyPI's
/// `ray[cpp]`), loaded at run time: the build needs no Ray. Ray's workers load the same
/// library from its directory (the job's code search path), so every node needs it, the
/// `cohort` binary and the model at the same paths, and the driver must run on a node of the
/// cluster (Ray connects a driver through its node's raylet).
public final class RayLauncher: Launcher {
    public let clusterAddress: String
    /// This node's address in the cluster (the driver's `--host-ip`).
    public let nodeAddress: String
    public let library: String
    public let cpusPerWorker: Int
    /// How long the placement group may take to be placed.
    public let placementTimeout: Double
    private let api: RayAPI
    private let holding = Mutex<Bool>(false)

    public static let libraryName = "libcohort_ray.so"
    public static let libraryEnvironment = "COHORT_RAY_LIBRARY"

    public init(clusterAddress: String, nodeAddress: String, library: String, cpusPerWorker: Int, placementTimeout: Double = 120) throws(LaunchError) {
        self.clusterAddress = clusterAddress
        self.nodeAddress = nodeAddress
        self.library = library
        self.cpusPerWorker = cpusPerWorker
        self.placementTimeout = placementTimeout
        api = try RayAPI.load(library)
    }

    /// The bridge library: `COHORT_RAY_LIBRARY`, else `ray/libcohort_ray.so` in the
    /// executable's build directory or one above it (`.build/ray/`, where the script puts it).
    public static func findLibrary(executable: String) -> String? {
        if let path = getenv(libraryEnvironment).map({ String(cString: $0) }), !path.isEmpty { return path }
        var directory = executable
        for _ in 0..<4 {
            guard let slash = directory.lastIndex(of: "/") else { break }
            directory = String(directory[..<slash])
            for candidate in ["\(directory)/\(libraryName)", "\(directory)/ray/\(libraryName)"] where access(candidate, R_OK) == 0 {
                return candidate
            }
        }
        return nil
    }

    public func launch(workers: Int, join: JoinInstructions) throws(LaunchError) -> [(any WorkerProcessHandle)?] {
        guard workers > 0 else { return [] }
        // Ray aborts the process (no error to catch) when no cluster answers: look first.
        try Self.checkReachable(clusterAddress)
        var error = [CChar](repeating: 0, count: 2048)
        let directory = String(library[..<(library.lastIndex(of: "/") ?? library.startIndex)])
        guard api.connect(clusterAddress, nodeAddress, directory.isEmpty ? "." : directory, &error, Int32(error.count)) == 0 else {
            throw LaunchError("cannot join the Ray cluster at \(clusterAddress): \(String(filled: error))")
        }
        holding.withLock { $0 = true }
        do throws(LaunchError) {
            try place(bundles: workers + 1)
            for token in 1...workers {
                var info = [CChar](repeating: 0, count: 256)
                let argv = [join.executable] + join.arguments(joinToken: token)
                let status = withCStrings(argv) { pointers in
                    api.startWorker(Int32(token), Double(cpusPerWorker), pointers, Int32(argv.count), join.secretHex, 120_000, &info, Int32(info.count), &error, Int32(error.count))
                }
                guard status == 0 else {
                    throw LaunchError("Ray could not start worker \(token) (bundle \(token) of the placement group): \(String(filled: error))")
                }
            }
        } catch {
            finished(orderly: false)
            throw error
        }
        // The driver watches the workers' links; Ray watches the actors.
        return Array(repeating: nil, count: workers)
    }

    /// Creates the placement group and waits for Ray to place it, with a progress line.
    private func place(bundles: Int) throws(LaunchError) {
        var error = [CChar](repeating: 0, count: 2048)
        let name = "cohort-\(getpid())-\(MonotonicClock.now())"
        guard api.createGroup(Int32(bundles), Double(cpusPerWorker), nodeAddress, name, &error, Int32(error.count)) == 0 else {
            throw LaunchError("Ray refused the placement group of \(bundles) bundles: \(String(filled: error))")
        }
        let started = MonotonicClock.now()
        var nextReport = started + 5
        while true {
            switch api.waitGroup(1, &error, Int32(error.count)) {
            case 1: return
            case 0: break
            default: throw LaunchError("waiting for Ray's placement group: \(String(filled: error))")
            }
            let now = MonotonicClock.now()
            let wanted = "\(bundles) bundles of {CPU: \(cpusPerWorker)} (bundle 0 on this node, \(nodeAddress))"
            if now - started >= placementTimeout {
                throw LaunchError(
                    "Ray did not place \(wanted) within \(Int(placementTimeout)) s: the cluster lacks the resources. "
                        + Self.clusterStatus(clusterAddress))
            }
            if now >= nextReport {
                let line = Array("cohort: waiting for Ray to place \(wanted): \(Int(now - started)) s of \(Int(placementTimeout)) s\n".utf8)
                _ = line.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
                nextReport = now + 5
            }
        }
    }

    /// What `ray status` says the cluster has and lacks, when the `ray` command is at hand.
    static func clusterStatus(_ address: String) -> String {
        guard let ray = try? RemoteShellLauncher.resolve("ray"), let pipe = popen(
            "timeout 20 \(DetachedLauncher.quoted(ray)) status --address \(DetachedLauncher.quoted(address)) 2>/dev/null", "r")
        else { return "(`ray status` shows what it has)" }
        var output: [UInt8] = [], chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = fread(&chunk, 1, chunk.count, pipe)
            if n <= 0 { break }
            output += chunk[..<n]
        }
        pclose(pipe)
        let lines = String(decoding: output, as: UTF8.self).split(separator: "\n").map {
            String($0.drop { $0 == " " }.reversed().drop { $0 == " " }.reversed())
        }
        // The totals and the demands Ray cannot meet.
        var picked: [String] = [], section = ""
        for line in lines {
            if line.hasSuffix(":") { section = line; continue }
            if section == "Total Usage:" && (line.contains("CPU") || line.contains("GPU")) { picked.append("in use " + line) }
            if section == "Pending Demands:" && !line.isEmpty && !line.hasPrefix("(no") { picked.append("pending " + line) }
        }
        return picked.isEmpty ? "(`ray status --address \(address)` shows what it has)" : "Ray says: " + picked.joined(separator: "; ")
    }

    /// A TCP connection to the cluster's GCS within 5 s, or an error naming the address.
    static func checkReachable(_ address: String) throws(LaunchError) {
        guard let colon = address.lastIndex(of: ":"), let port = UInt16(address[address.index(after: colon)...]) else {
            throw LaunchError("--ray-address must be HOST:PORT (the cluster's GCS, as `ray start` prints it), found '\(address)'")
        }
        var host = String(address[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard connects(host: host, port: port, timeoutMilliseconds: 5000) else {
            throw LaunchError("no Ray cluster answers at \(address) (a TCP connection to its GCS failed within 5 s): start one with `ray start --head`")
        }
    }

    /// Whether a TCP connection to `host:port` opens within the timeout.
    static func connects(host: String, port: UInt16, timeoutMilliseconds: Int32) -> Bool {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, "\(port)", &hints, &list) == 0, let first = list else { return false }
        defer { freeaddrinfo(list) }
        var entry: UnsafeMutablePointer<addrinfo>? = first
        while let info = entry {
            entry = info.pointee.ai_next
            let fd = socket(info.pointee.ai_family, info.pointee.ai_socktype | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { continue }
            defer { close(fd) }
            if Glibc.connect(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0 { return true }
            guard errno == EINPROGRESS else { continue }
            var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            guard poll(&p, 1, timeoutMilliseconds) == 1 else { continue }
            var failure: Int32 = 0
            var length = socklen_t(MemoryLayout<Int32>.size)
            if getsockopt(fd, SOL_SOCKET, SO_ERROR, &failure, &length) == 0 && failure == 0 { return true }
        }
        return false
    }

    public func releaseLifeline() {}

    /// Kills the supervisor actors (a worker still running exits as its lifeline closes),
    /// removes the placement group and leaves the cluster (once).
    public func finished(orderly: Bool) {
        guard holding.withLock({ (held: inout Bool) -> Bool in defer { held = false }; return held }) else { return }
        api.release()
        api.disconnect()
    }
}

/// The bridge's functions, looked up once.
struct RayAPI: Sendable {
    typealias Connect = @convention(c) (UnsafePointer<CChar>, UnsafePointer<CChar>, UnsafePointer<CChar>, UnsafeMutablePointer<CChar>, Int32) -> Int32
    typealias CreateGroup = @convention(c) (Int32, Double, UnsafePointer<CChar>, UnsafePointer<CChar>, UnsafeMutablePointer<CChar>, Int32) -> Int32
    typealias WaitGroup = @convention(c) (Int32, UnsafeMutablePointer<CChar>, Int32) -> Int32
    typealias StartWorker = @convention(c) (
        Int32, Double, UnsafePointer<UnsafePointer<CChar>?>, Int32, UnsafePointer<CChar>, Int32,
        UnsafeMutablePointer<CChar>, Int32, UnsafeMutablePointer<CChar>, Int32) -> Int32
    typealias Release = @convention(c) () -> Void
    typealias Disconnect = @convention(c) () -> Void

    let connect: Connect
    let createGroup: CreateGroup
    let waitGroup: WaitGroup
    let startWorker: StartWorker
    let release: Release
    let disconnect: Disconnect

    static func load(_ path: String) throws(LaunchError) -> RayAPI {
        guard let handle = dlopen(path, RTLD_NOW | RTLD_GLOBAL) else {
            let reason = dlerror().map { String(cString: $0) } ?? "unknown error"
            throw LaunchError("--launcher ray needs Cohort's Ray bridge (\(path), built by scripts/build-ray.sh against pip's ray[cpp]): \(reason)")
        }
        func symbol<T>(_ name: String, as type: T.Type) throws(LaunchError) -> T {
            guard let address = dlsym(handle, name) else {
                throw LaunchError("\(path) has no \(name): rebuild it with scripts/build-ray.sh")
            }
            return unsafeBitCast(address, to: type)
        }
        return RayAPI(
            connect: try symbol("cohort_ray_connect", as: Connect.self),
            createGroup: try symbol("cohort_ray_create_group", as: CreateGroup.self),
            waitGroup: try symbol("cohort_ray_wait_group", as: WaitGroup.self),
            startWorker: try symbol("cohort_ray_start_worker", as: StartWorker.self),
            release: try symbol("cohort_ray_release", as: Release.self),
            disconnect: try symbol("cohort_ray_disconnect", as: Disconnect.self))
    }
}

/// Calls `body` with `strings` as a C array of C strings.
func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>) -> R) -> R {
    let copies = strings.map { strdup($0) }
    defer { copies.forEach { free($0) } }
    let pointers = copies.map { UnsafePointer($0) }
    return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
}
