#if canImport(Glibc)
import Glibc
#endif
import ExecutorCore

/// Starts workers in sessions of their own that are not the driver's children (`sh -c
/// 'setsid cohort worker … &'`), as a cluster's launcher would: nothing ties them to the
/// driver but their link to it, so they prove a worker needs no parent to join, serve, and
/// exit when the driver dies. It cannot watch them: the driver watches their links.
public struct DetachedLauncher: Launcher {
    public init() {}

    public func launch(workers: Int, join: JoinInstructions) throws(LaunchError) -> [(any WorkerProcessHandle)?] {
        for token in 1...workers {
            let command = ([join.executable] + join.arguments(joinToken: token)).map(Self.quoted).joined(separator: " ")
            let script = "setsid \(command) </dev/null >/dev/null 2>&1 &"
            let shell = try LocalProcessLauncher.spawn(
                executable: "/bin/sh", index: token - 1, arguments: ["-c", script], environment: join.environment, lifeline: nil)
            // The shell exits at once, leaving the worker to init.
            _ = shell.wait(timeout: 10)
        }
        return Array(repeating: nil, count: workers)
    }

    public func releaseLifeline() {}

    /// `s` in single quotes for the shell.
    static func quoted(_ s: String) -> String {
        "'" + s.split(separator: "'", omittingEmptySubsequences: false).joined(separator: "'\\''") + "'"
    }
}
