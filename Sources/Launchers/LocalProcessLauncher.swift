#if canImport(Glibc)
import Glibc
#endif
internal import CPlatform
import ExecutorCore
import Synchronization

/// Starts workers as child processes on this machine (`cohort worker …`).
///
/// Every child inherits the read end of one lifeline pipe as fd 3; the driver keeps the
/// only write end. When the driver dies, even by SIGKILL, the kernel closes it and every
/// worker sees end-of-file, removes the shared-memory names it was given, and exits at once.
///
/// No parent-death signal (`PR_SET_PDEATHSIG`): Linux sends it when the *thread* that
/// spawned the child ends, and the thread that starts a grid is often one of Swift's
/// cooperative pool threads, which libdispatch retires after seconds idle. Workers then got
/// SIGTERM mid-run while the driver was alive (a CI run saw "worker rank 1 exited with
/// status 0"). The lifeline depends on the process, not a thread.
public final class LocalProcessLauncher: Launcher {
    /// The driver's end of the lifeline, while open.
    private let lifelineWriteEnd = Mutex<Int32>(-1)

    /// The fd number the lifeline has in every worker.
    public static let lifelineDescriptor: Int32 = 3

    /// The worker arguments that hand a child its lifeline and the driver's pid.
    var lifelineArguments: [String] {
        ["--lifeline-fd", "\(Self.lifelineDescriptor)", "--parent-pid", "\(getpid())"]
    }

    public init() {}

    /// Starts `workers` children of this process on this machine.
    /// - Throws: `LaunchError` naming the worker and the system error; processes already
    ///   started are killed first.
    public func launch(workers: Int, join: JoinInstructions) throws(LaunchError) -> [(any WorkerProcessHandle)?] {
        try launchChildren(
            executable: join.executable, indices: Array(0..<workers),
            arguments: { join.arguments(joinToken: $0 + 1) + lifelineArguments }, environment: { _ in join.environment })
    }

    func launchChildren(executable: String, indices: [Int], arguments: (Int) -> [String], environment: (Int) -> [String: String]) throws(LaunchError) -> [ChildProcess] {
        var fds: [Int32] = [-1, -1]
        guard cohort_pipe_cloexec(&fds) == 0 else { throw LaunchError("cannot create the lifeline pipe: \(String(cString: strerror(errno)))") }
        lifelineWriteEnd.withLock { $0 = fds[1] }
        defer { Glibc.close(fds[0]) }
        var started: [ChildProcess] = []
        for index in indices {
            do throws(LaunchError) {
                started.append(try Self.spawn(
                    executable: executable, index: index, arguments: arguments(index), environment: environment(index), lifeline: fds[0]))
            } catch {
                for child in started { child.kill(timeout: 5) }
                releaseLifeline()
                throw error
            }
        }
        return started
    }

    /// Starts `executable` with this process's environment plus `environment`; `lifeline`
    /// becomes the child's fd 3 and `standardInput` its fd 0.
    static func spawn(
        executable: String, index: Int, arguments: [String], environment: [String: String], lifeline: Int32?,
        standardInput: Int32? = nil
    ) throws(LaunchError) -> ChildProcess {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if let lifeline { posix_spawn_file_actions_adddup2(&actions, lifeline, Self.lifelineDescriptor) }
        if let standardInput { posix_spawn_file_actions_adddup2(&actions, standardInput, 0) }

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
