public import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// `scripts/hosts.sh` from a test: hosts h1…hN up for the test's life, commands on them,
/// and the Cohort processes each one runs.
public struct SimulatedHosts: Sendable {
    /// The package's root (this file is Sources/ExecutorTestSupport/SimulatedHosts.swift).
    public static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    public static var script: String { root + "/scripts/hosts.sh" }
    public static var agent: String { root + "/scripts/host-agent" }
    public static var available: Bool { getuid() == 0 && (access("/usr/sbin/ip", X_OK) == 0 || access("/sbin/ip", X_OK) == 0) }
    public static func address(_ i: Int) -> String { "198.18.7.\(i)" }
    /// Whether Open MPI's mpirun and library are here (`make setup` installs them).
    public static var hasOpenMPI: Bool {
        access("/usr/bin/mpirun", X_OK) == 0 && access("/usr/lib/x86_64-linux-gnu/libmpi.so.40", R_OK) == 0
    }

    /// Cohort's Ray bridge, when `scripts/build-ray.sh` built it and the `ray` command is
    /// here (`make setup` installs ray[cpp] and builds it, as root).
    public static var rayLibrary: String? {
        let library = root + "/.build/ray/libcohort_ray.so"
        guard access(library, R_OK) == 0, shell(["/bin/sh", "-c", "command -v ray"]).0 == 0 else { return nil }
        return library
    }

    /// The Ray cluster `hosts.sh ray-up` starts: its GCS on h1.
    public static var rayAddress: String { address(1) + ":6379" }

    public let names: [String]

    /// Brings up `count` fresh hosts (any left by an earlier run go first).
    public init(_ count: Int) throws {
        names = (1...count).map { "h\($0)" }
        _ = Self.shell([Self.script, "down"])
        let (status, output) = Self.shell([Self.script, "up", "\(count)"])
        guard status == 0 else { throw SimulatedHostError(message: "hosts.sh up \(count) exited with \(status): \(output)") }
    }

    /// `count` hosts for a run under `launcher`, with a Ray cluster over them for ray.
    public init(_ count: Int, for launcher: String) throws {
        try self.init(count)
        if launcher == "ray" {
            do { try startRay() } catch {
                down()
                throw error
            }
        }
    }

    public func down() { _ = Self.shell([Self.script, "down"]) }

    /// Every launcher this machine can run a grid under: ssh; with Open MPI, mpi (mpirun
    /// started by the driver), mpirun (the driver is MPI rank 0 of the user's mpirun) and
    /// `mpiCollectives`; with Ray's bridge built, ray.
    public static var launchers: [String] {
        ["ssh"] + (hasOpenMPI ? ["mpi", "mpirun", mpiCollectives] : []) + (rayLibrary == nil ? [] : ["ray"])
    }

    /// Under the user's mpirun, with MPI's all-reduce for the tensor-parallel groups.
    public static let mpiCollectives = "mpirun --collectives mpi"

    /// The command on h1 that runs `cohortCommand` (the binary, then `generate` or `bench
    /// generate` and its flags; a --tp × --pp of 4 ranks) with two ranks on each of h1 and h2
    /// under `launcher` (one of `launchers`; ray needs the cluster of `init(_:for:)`).
    public func twoRanksEach(launcher: String, _ cohortCommand: [String]) -> [String] {
        let hostIP = ["--host-ip", Self.address(1)]
        switch launcher {
        case "ray":
            return command(on: "h1", ["env", "RAY_AUTH_MODE=disabled"] + cohortCommand + [
                "--launcher", "ray", "--ray-address", Self.rayAddress, "--ray-library", Self.rayLibrary ?? "",
            ] + hostIP)
        case "mpirun", Self.mpiCollectives:
            return command(on: "h1", [
                "mpirun", "--allow-run-as-root", "--bind-to", "none", "-np", "4", "--host", "h1:2,h2:2", "--mca", "plm_rsh_agent", Self.agent,
            ] + cohortCommand + ["--launcher", "mpi"] + (launcher == Self.mpiCollectives ? ["--collectives", "mpi"] : []))
        default:
            return command(on: "h1", cohortCommand + [
                "--launcher", launcher, "--hosts", "h1:2,h2:2", "--ssh-command", Self.agent,
            ] + hostIP)
        }
    }

    /// `arguments` run on `host` (the last process of the chain is the command itself).
    public func command(on host: String, _ arguments: [String]) -> [String] {
        [Self.script, "run", host, "exec " + arguments.map(shellQuoted).joined(separator: " ")]
    }

    /// Live Cohort processes on `host` (its network namespace), by pid.
    public func cohortProcesses(on host: String, role: String? = nil) -> [Int32] {
        let (_, output) = Self.shell(["ip", "netns", "pids", "cohort-\(host)"])
        return output.split(separator: "\n").compactMap { Int32($0) }.filter { pid in
            guard Self.isRunning(pid), let line = try? String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8) else { return false }
            let arguments = line.split(separator: "\0").map(String.init)
            return arguments.first?.hasSuffix("/cohort") == true && (role == nil || arguments.dropFirst().first == role)
        }
    }

    public func cohortProcesses() -> [Int32] { names.flatMap { cohortProcesses(on: $0) } }

    /// Waits until `host` runs `count` workers; their pids.
    public func waitForWorkers(on host: String, count: Int, within seconds: Double, role: String = "worker") throws -> [Int32] {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            let workers = cohortProcesses(on: host, role: role)
            if workers.count >= count { return workers }
            usleep(20_000)
        }
        throw SimulatedHostError(message: "\(host) did not run \(count) workers within \(seconds) s")
    }

    /// Waits until no host runs a Cohort process; what is left.
    public func waitUntilNoCohortProcesses(within seconds: Double) -> [Int32] {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline && !cohortProcesses().isEmpty { usleep(20_000) }
        return cohortProcesses()
    }

    /// Starts a Ray cluster over the hosts: the head on h1, a node on each other host.
    public func startRay(cpus: Int = 2) throws {
        let (status, output) = Self.shell([Self.script, "ray-up", "\(cpus)"])
        guard status == 0 else { throw SimulatedHostError(message: "hosts.sh ray-up exited with \(status): \(output)") }
    }

    /// Ray's C++ worker processes on any host (each runs one actor: Cohort's supervisors).
    public func rayActorProcesses() -> [Int32] {
        names.flatMap { host in
            Self.shell(["ip", "netns", "pids", "cohort-\(host)"]).1.split(separator: "\n").compactMap { Int32($0) }.filter { pid in
                guard Self.isRunning(pid), let line = try? String(contentsOfFile: "/proc/\(pid)/cmdline", encoding: .utf8) else { return false }
                return line.split(separator: "\0").first?.hasSuffix("cpp/default_worker") == true
            }
        }
    }

    /// The CPUs Ray has reserved or in use across the cluster (placement groups, actors), from
    /// `ray status`; nil when it does not answer.
    public func rayCPUsInUse() -> Double? {
        let (status, output) = Self.shell(["env", "RAY_AUTH_MODE=disabled", "ray", "status", "--address", Self.rayAddress])
        guard status == 0 else { return nil }
        // "Total Usage:" is followed by " 3.0/4.0 CPU (…)".
        let lines = output.split(separator: "\n")
        guard let i = lines.firstIndex(where: { $0.hasPrefix("Total Usage") }), i + 1 < lines.count,
              let used = lines[i + 1].split(separator: "/").first.flatMap({ Double($0.trimmingCharacters(in: .whitespaces)) })
        else { return nil }
        return used
    }

    /// Waits until Ray runs no actor and holds no CPU on any host; what is left, described.
    public func waitUntilRayIsIdle(within seconds: Double) -> String? {
        let deadline = Date().addingTimeInterval(seconds)
        var left: String?
        repeat {
            let actors = rayActorProcesses(), cpus = rayCPUsInUse()
            left = actors.isEmpty && cpus == 0 ? nil : "actor processes \(actors), CPUs in use \(cpus.map { "\($0)" } ?? "unknown")"
            if left == nil { return nil }
            usleep(200_000)
        } while Date() < deadline
        return left
    }

    /// Takes host `i`'s link to the bridge down or up.
    public func setLink(of i: Int, up: Bool) {
        _ = Self.shell(["ip", "link", "set", "cohortv\(i)", up ? "up" : "down"])
    }

    /// The MPI rank of a process mpirun started (from its environment), or nil.
    public static func mpiRank(of pid: Int32) -> Int? {
        guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/environ") else { return nil }
        let prefix = "OMPI_COMM_WORLD_RANK="
        return data.split(separator: 0).lazy.map { String(decoding: $0, as: UTF8.self) }
            .first { $0.hasPrefix(prefix) }.flatMap { Int($0.dropFirst(prefix.count)) }
    }

    public static func isRunning(_ pid: Int32) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8) else { return false }
        let state = stat.split(separator: ")").last?.split(separator: " ").first
        return state != "Z" && state != "X"
    }

    /// Runs a command to its end; its status and output (stdout and stderr).
    public static func shell(_ arguments: [String]) -> (Int32, String) {
        guard let run = try? TestProcess(arguments, mergeErrors: true), let result = try? run.finish(within: 60) else { return (-1, "") }
        return (result.status, result.output)
    }
}

public struct SimulatedHostError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}

/// `s` in single quotes for a shell.
public func shellQuoted(_ s: String) -> String {
    "'" + s.split(separator: "'", omittingEmptySubsequences: false).joined(separator: "'\\''") + "'"
}

/// A process whose output is read as it comes (its children may hold the pipes open long
/// after it ended).
public final class TestProcess: @unchecked Sendable {
    // @unchecked: the buffers are behind mutexes; `process` is used by the test's thread.
    public let process = Process()
    private let output = Buffer()
    private let errors = Buffer()

    final class Buffer: Sendable {
        let bytes = Mutex<[UInt8]>([])
    }

    public init(_ arguments: [String], mergeErrors: Bool = false) throws {
        let path = arguments[0].contains("/") ? arguments[0] : "/usr/bin/env"
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = path == "/usr/bin/env" ? arguments : Array(arguments.dropFirst())
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = mergeErrors ? out : err
        process.standardInput = FileHandle.nullDevice
        try process.run()
        Self.drain(out.fileHandleForReading, into: output)
        if !mergeErrors { Self.drain(err.fileHandleForReading, into: errors) }
    }

    static func drain(_ handle: FileHandle, into buffer: Buffer) {
        let fd = handle.fileDescriptor
        Thread.detachNewThread {
            var chunk = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = read(fd, &chunk, chunk.count)
                if n <= 0 { break }
                buffer.bytes.withLock { $0 += chunk[..<n] }
            }
            _ = handle  // kept open until the read ends
        }
    }

    public struct Result: Sendable {
        public var status: Int32
        public var output: String
        public var errors: String
    }

    /// Waits for the process (killing it after `seconds`); its status and the output so far.
    /// Never waits unbounded: a process that ended but was not yet reaped counts as ended.
    public func finish(within seconds: Double) throws -> Result {
        let pid = process.processIdentifier
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning && SimulatedHosts.isRunning(pid) && Date() < deadline { usleep(5_000) }
        if process.isRunning && SimulatedHosts.isRunning(pid) {
            kill(pid, SIGKILL)
            throw SimulatedHostError(message: "\(process.arguments ?? []) did not end within \(seconds) s")
        }
        // Foundation reaps it on a thread of its own: give it a moment to record the status.
        let reaped = Date().addingTimeInterval(2)
        while process.isRunning && Date() < reaped { usleep(5_000) }
        usleep(100_000)  // the last of its output
        return Result(
            status: process.isRunning ? -1 : process.terminationStatus,
            output: String(decoding: output.bytes.withLock { $0 }, as: UTF8.self),
            errors: String(decoding: errors.bytes.withLock { $0 }, as: UTF8.self))
    }
}

/// The /dev/shm names a process maps and that still exist ("/cohort-…"; a removed one shows
/// as "… (deleted)" and is left out).
public func sharedMemoryNames(mappedBy pid: Int32) -> [String] {
    let maps = (try? String(contentsOfFile: "/proc/\(pid)/maps", encoding: .utf8)) ?? ""
    return Array(Set(maps.split(separator: "\n").compactMap { line in
        line.split(separator: " ").last.flatMap { $0.hasPrefix("/dev/shm/") ? String($0.dropFirst("/dev/shm".count)) : nil }
    }))
}
