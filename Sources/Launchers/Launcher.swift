import ExecutorCore

/// Starts worker processes wherever it puts them and, where it can, hands back a handle to
/// watch and stop each. It is used for placement and process lifecycle only: every worker
/// it starts joins the driver by itself (`JoinInstructions`), says where it runs, and gets
/// its rank and configuration from the driver. Implementations: `LocalProcessLauncher`
/// (children of the driver) now; MPI (`mpirun`) and Ray (actors) plug in here.
public protocol Launcher: Sendable {
    /// Starts `workers` workers; worker `i` joins with token `i + 1`. Returns one entry per
    /// worker: a handle when this launcher can watch the process (nil: the driver watches
    /// the worker's link alone).
    func launch(workers: Int, join: JoinInstructions) throws(LaunchError) -> [(any WorkerProcessHandle)?]

    /// Ends whatever extra tie the launcher keeps to its workers (a lifeline): workers that
    /// are still running exit by themselves.
    func releaseLifeline()

    /// Whether the workers' own runtime ends them with the driver (MPI ranks wait in
    /// MPI_Finalize for the driver's): after an orderly stop the driver neither waits for
    /// them to exit nor kills them.
    var stopsWorkersItself: Bool { get }

    /// The group is shut down, or its start-up failed: `orderly` when no worker failed.
    /// Called once the workers' links are closed; may be called more than once.
    func finished(orderly: Bool)

    /// Called while the driver waits for workers to join: throws when they never will
    /// (what started them has ended).
    func checkStarting() throws(LaunchError)
}

extension Launcher {
    public var stopsWorkersItself: Bool { false }
    public func finished(orderly: Bool) {}
    public func checkStarting() throws(LaunchError) {}
}

/// How a worker reaches its driver: the whole of what a launcher passes on.
public struct JoinInstructions: Sendable, Equatable {
    /// The binary whose `worker` subcommand runs a worker.
    public var executable: String
    /// The driver's rendezvous, `HOST:PORT` (`[IPv6]:PORT`).
    public var driverAddress: String
    /// The instance secret, as hex: passed in the environment, never on a command line.
    public var secretHex: String

    public init(executable: String, driverAddress: String, secretHex: String) {
        self.executable = executable
        self.driverAddress = driverAddress
        self.secretHex = secretHex
    }

    /// The `cohort` arguments of the worker with join token `token`.
    public func arguments(joinToken token: Int) -> [String] {
        ["worker", "--driver", driverAddress, "--join", "\(token)"]
    }

    public var environment: [String: String] { [Placement.Environment.secret: secretHex] }
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
