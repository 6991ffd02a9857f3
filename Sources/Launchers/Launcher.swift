public import ExecutorCore

/// Starts worker processes and hands back, for each, where it runs: machine id, address,
/// process id and device ids (`Placement.LaunchedWorker`), plus a handle to watch and stop
/// it. Implementations: `LocalProcessLauncher` now; MPI (`mpirun`) and Ray (C++ API actors)
/// plug in here without touching the executor.
public protocol Launcher: Sendable {
    /// Starts one worker per entry of `workers`: `arguments(i)` are the `cohort` arguments of
    /// worker `i`, `environment(i)` is added to its environment.
    func launch(
        workers: Int, arguments: (Int) -> [String], environment: (Int) -> [String: String]
    ) throws(LaunchError) -> [LaunchedProcess]

    /// Ends the lifeline of every worker started: they exit by themselves.
    func releaseLifeline()

    /// The worker arguments that tell a worker how to notice the driver's death (for local
    /// processes: the inherited lifeline descriptor and the driver's pid).
    var lifelineArguments: [String] { get }
}

/// A started worker: where it runs and how to watch it.
public struct LaunchedProcess: Sendable {
    public var worker: Placement.LaunchedWorker
    public var handle: any WorkerProcessHandle

    public init(worker: Placement.LaunchedWorker, handle: any WorkerProcessHandle) {
        self.worker = worker
        self.handle = handle
    }
}

/// Watches and stops one worker process, wherever it runs.
public protocol WorkerProcessHandle: Sendable {
    var pid: Int32 { get }
    /// How the process ended, or nil while it runs.
    func termination() -> ChildProcess.Termination?
    /// Waits up to `timeout` seconds for it to end by itself.
    func wait(timeout: Double) -> ChildProcess.Termination?
    /// Ends it now and reaps it.
    func kill(timeout: Double)
}

extension ChildProcess: WorkerProcessHandle {}
