#if canImport(Glibc)
import Glibc
#endif
internal import CSystem
import ExecutorCore
import Synchronization

/// Starts workers as child processes on this machine (`cohort worker …`).
///
/// Every child inherits the read end of one lifeline pipe as fd 3; the driver keeps the
/// only write end. When the driver dies, even by SIGKILL, the kernel closes it and every
/// worker sees end-of-file and exits at once. Workers also ask for SIGTERM on parent death,
/// whose handler removes the shared-memory names they were given before exiting.
public final class LocalProcessLauncher: Launcher {
    /// The executable that runs `worker` (default: this process's own binary).
    public let executable: String
    /// The driver's end of the lifeline, while open.
    private let lifelineWriteEnd = Mutex<Int32>(-1)

    /// The fd number the lifeline has in every worker.
    public static let lifelineDescriptor: Int32 = 3

    public var lifelineArguments: [String] {
        ["--lifeline-fd", "\(Self.lifelineDescriptor)", "--parent-pid", "\(getpid())"]
    }

    public init(executable: String? = nil) {
        self.executable = executable ?? Self.ownExecutable()
    }

    static func ownExecutable() -> String {
        var buffer = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buffer, buffer.count - 1)
        return n > 0 ? String(decoding: buffer[..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) : CommandLine.arguments[0]
    }

    /// Starts `workers` processes of `executable` on this machine.
    /// - Throws: `LaunchError` naming the worker and the system error; processes already
    ///   started are killed first.
    public func launch(
        workers: Int, arguments: (Int) -> [String], environment: (Int) -> [String: String]
    ) throws(LaunchError) -> [LaunchedProcess] {
        let machine = Self.hostName()
        return try launchChildren(indices: Array(0..<workers), arguments: arguments, environment: environment).map {
            LaunchedProcess(
                worker: Placement.LaunchedWorker(machineID: machine, address: "127.0.0.1", processID: $0.pid, deviceIDs: []),
                handle: $0)
        }
    }

    static func hostName() -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        gethostname(&buffer, buffer.count - 1)
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    func launchChildren(indices: [Int], arguments: (Int) -> [String], environment: (Int) -> [String: String]) throws(LaunchError) -> [ChildProcess] {
        var fds: [Int32] = [-1, -1]
        guard cohort_pipe_cloexec(&fds) == 0 else { throw LaunchError("cannot create the lifeline pipe: \(String(cString: strerror(errno)))") }
        lifelineWriteEnd.withLock { $0 = fds[1] }
        defer { Glibc.close(fds[0]) }
        var started: [ChildProcess] = []
        for index in indices {
            do throws(LaunchError) {
                started.append(try spawn(index: index, arguments: arguments(index), environment: environment(index), lifeline: fds[0]))
            } catch {
                for child in started { child.kill(timeout: 5) }
                releaseLifeline()
                throw error
            }
        }
        return started
    }

    private func spawn(index: Int, arguments: [String], environment: [String: String], lifeline: Int32) throws(LaunchError) -> ChildProcess {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, lifeline, Self.lifelineDescriptor)

        var env = [String: String]()
        var p = environ
        while let entry = p.pointee {
            let s = String(cString: entry)
            if let eq = s.firstIndex(of: "=") { env[String(s[..<eq])] = String(s[s.index(after: eq)...]) }
            p += 1
        }
        for (k, v) in environment { env[k] = v }
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        let envp = env.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, executable, &actions, nil, argv, envp)
        guard rc == 0 else { throw LaunchError("cannot start worker \(index) (\(executable)): \(String(cString: strerror(rc)))") }
        return ChildProcess(index: index, pid: pid)
    }

    /// Closes the lifeline's write end: every worker that is still running exits.
    public func releaseLifeline() {
        lifelineWriteEnd.withLock { fd in
            if fd >= 0 {
                Glibc.close(fd)
                fd = -1
            }
        }
    }
}

/// A worker that could not be started.
public struct LaunchError: Error, Equatable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
