#if canImport(Glibc)
import Glibc
#endif
internal import CPlatform
import ExecutorCore
import Synchronization

/// This process's place in an Open MPI world. Open MPI is loaded when a run asks for it
/// (`libmpi.so.40`, from Debian's `openmpi-bin`), so the build needs no MPI and one binary
/// runs with or without it. MPI is used for placement and start-up only: who is where, and
/// one broadcast of the driver's address and the instance secret; steps and tensors travel
/// on Cohort's own channels.
public final class MPIWorld: Sendable {
    public let rank: Int
    public let size: Int
    /// MPI's name for this process's machine.
    public let processorName: String

    public static let library = "libmpi.so.40"

    /// Whether Open MPI's `mpirun` started this process.
    public static var isUnderMPIRun: Bool { getenv("OMPI_COMM_WORLD_SIZE") != nil }

    private static let shared = Mutex<MPIWorld?>(nil)
    /// Whether this process's part ended in order: at exit it then calls MPI_Finalize (a
    /// fence with every rank). Otherwise it exits without finalizing, with its failure
    /// status: mpirun ends every rank of a job one of whose processes exits non-zero, a
    /// stuck one included, and nothing waits for a rank that will never finalize. (MPI_Abort
    /// would do the same, a second later: Open MPI waits a second after its own SIGTERM.)
    private static let orderly = Atomic<Bool>(false)

    /// Marks this process's part as ended in order (or not).
    public static func setOrderly(_ value: Bool) { orderly.store(value, ordering: .relaxed) }

    static func atExit() {
        if orderly.load(ordering: .relaxed) { cohort_mpi_finalize() }
    }

    private init(rank: Int, size: Int, processorName: String) {
        self.rank = rank
        self.size = size
        self.processorName = processorName
    }

    /// Loads and initializes MPI once per process; finalized at exit when it ended in order.
    public static func initialize() throws(LaunchError) -> MPIWorld {
        try shared.withLock { (world: inout MPIWorld?) throws(LaunchError) -> MPIWorld in
            if let world { return world }
            var error = [CChar](repeating: 0, count: 512)
            guard cohort_mpi_load(library, &error, Int32(error.count)) == 0 else {
                throw LaunchError("--launcher mpi needs Open MPI (\(library), Debian's openmpi-bin): \(String(filled: error))")
            }
            var rank: Int32 = 0, size: Int32 = 0
            guard cohort_mpi_init(&rank, &size, &error, Int32(error.count)) == 0 else {
                throw LaunchError("MPI_Init failed: \(String(filled: error))")
            }
            var name = [CChar](repeating: 0, count: 257)
            _ = cohort_mpi_processor_name(&name, Int32(name.count))
            atexit { MPIWorld.atExit() }
            let made = MPIWorld(rank: Int(rank), size: Int(size), processorName: String(filled: name))
            world = made
            return made
        }
    }

    /// Sends `bytes` from `root` to every rank (the others pass anything; all get root's).
    public func broadcast(_ bytes: [UInt8], root: Int = 0) throws(LaunchError) -> [UInt8] {
        var error = [CChar](repeating: 0, count: 512)
        var count = UInt64(bytes.count)
        guard cohort_mpi_bcast(&count, 8, Int32(root), &error, Int32(error.count)) == 0 else {
            throw LaunchError("MPI_Bcast failed: \(String(filled: error))")
        }
        guard count <= 1 << 20 else { throw LaunchError("MPI_Bcast: expected at most 1 MiB from rank \(root), found \(count) bytes") }
        var buffer = rank == root ? bytes : [UInt8](repeating: 0, count: Int(count))
        guard cohort_mpi_bcast(&buffer, Int32(count), Int32(root), &error, Int32(error.count)) == 0 else {
            throw LaunchError("MPI_Bcast failed: \(String(filled: error))")
        }
        return buffer
    }
}

/// What rank 0 of an MPI world tells the others: where the driver listens and the instance
/// secret, or why the run cannot start (every rank then exits with the reason).
public enum MPIJoin: Sendable, Equatable {
    case join(driverAddress: String, secretHex: String)
    case refused(String)

    var bytes: [UInt8] {
        switch self {
        case let .join(address, secret): Array("join\n\(address)\n\(secret)".utf8)
        case let .refused(reason): Array("refused\n\(reason)".utf8)
        }
    }

    init(_ bytes: [UInt8]) throws(LaunchError) {
        let lines = String(decoding: bytes, as: UTF8.self).split(separator: "\n", maxSplits: 2, omittingEmptySubsequences: false)
        switch lines.first {
        case "join" where lines.count == 3: self = .join(driverAddress: String(lines[1]), secretHex: String(lines[2]))
        case "refused" where lines.count >= 2: self = .refused(lines.dropFirst().joined(separator: "\n"))
        default:
            throw LaunchError("from MPI rank 0: expected 'join' with an address and a secret, or 'refused' with a reason; found \(bytes.count) other bytes")
        }
    }

    /// A non-driver rank's side: waits for rank 0's word.
    public static func receive(in world: MPIWorld) throws(LaunchError) -> MPIJoin {
        try MPIJoin(world.broadcast([]))
    }

    /// Rank 0's side.
    public func send(in world: MPIWorld) throws(LaunchError) {
        _ = try world.broadcast(bytes)
    }
}

/// Workers that `mpirun` already started with the driver: `mpirun -np N cohort generate
/// --launcher mpi …` runs the same command N times; MPI rank 0 is the driver and ranks
/// 1…N−1 become its workers (join token = MPI rank). Their machines and addresses come
/// from each worker's hello; the driver broadcasts its address and the secret once.
public final class MPILauncher: Launcher {
    public let world: MPIWorld
    /// Whether the other ranks got rank 0's word (they wait for it in a broadcast).
    private let told = Atomic<Bool>(false)

    /// The driver's side (MPI rank 0): its run counts as orderly until a worker fails or
    /// the start-up does.
    public init(world: MPIWorld) {
        self.world = world
        MPIWorld.setOrderly(true)
    }

    public func launch(workers: Int, join: JoinInstructions) throws(LaunchError) -> [(any WorkerProcessHandle)?] {
        told.store(true, ordering: .relaxed)
        guard world.size - 1 == workers else {
            let reason = "mpirun started \(world.size) processes, and this grid (--tp × --pp) has \(workers + 1) ranks: "
                + "run it with mpirun -np \(workers + 1)"
            try MPIJoin.refused(reason).send(in: world)
            throw LaunchError(reason)
        }
        try MPIJoin.join(driverAddress: join.driverAddress, secretHex: join.secretHex).send(in: world)
        // mpirun watches the processes; the driver watches their links.
        return Array(repeating: nil, count: workers)
    }

    /// Tells the waiting ranks the run will not start, unless they were told already (the
    /// driver failed before launching: without a word they would wait in MPI forever).
    public func refuseIfWaiting(_ reason: String) {
        MPIWorld.setOrderly(false)
        guard !told.exchange(true, ordering: .relaxed) else { return }
        try? MPIJoin.refused(reason).send(in: world)
    }

    public func releaseLifeline() {}

    /// mpirun ends the job: the workers wait in MPI_Finalize for the driver's.
    public var stopsWorkersItself: Bool { true }

    public func finished(orderly: Bool) { MPIWorld.setOrderly(orderly) }
}

/// Workers started by `mpirun` on the machines of a host list (`cohort generate --launcher
/// mpi --hosts a:2,b:2 …`): the driver runs `mpirun -np W … cohort worker --driver ADDRESS
/// --mpi`, and hands the secret to MPI rank 0 of the workers on `mpirun`'s standard input
/// (which forwards it there only); that rank broadcasts it to the others.
public final class MPIRunLauncher: Launcher {
    public let hosts: [RemoteShellLauncher.Host]
    public let driverHost: String
    /// `mpirun`, and how it reaches other machines (`plm_rsh_agent`: ssh by default).
    public let mpirun: String
    public let agent: String?
    private let process = Mutex<ChildProcess?>(nil)

    public init(hosts: [RemoteShellLauncher.Host], driverHost: String, mpirun: String = "mpirun", agent: String? = nil) {
        self.hosts = hosts
        self.driverHost = driverHost
        self.mpirun = mpirun
        self.agent = agent
    }

    /// `mpirun`'s arguments for `workers` workers.
    public func arguments(workers: Int, join: JoinInstructions) throws(LaunchError) -> [String] {
        let placed = try RemoteShellLauncher(hosts: hosts, driverHost: driverHost).workerHosts(workers)
        var counts: [(String, Int)] = []
        for host in placed {
            if counts.last?.0 == host { counts[counts.count - 1].1 += 1 } else { counts.append((host, 1)) }
        }
        var arguments = getuid() == 0 ? ["--allow-run-as-root"] : []
        // Each machine's daemon binds its first rank to core 0 unless told not to.
        arguments += ["--bind-to", "none", "-np", "\(workers)", "--host", counts.map { "\($0.0):\($0.1)" }.joined(separator: ",")]
        if let agent { arguments += ["--mca", "plm_rsh_agent", agent] }
        arguments += [join.executable, "worker", "--driver", join.driverAddress, "--mpi"]
        return arguments
    }

    public func launch(workers: Int, join: JoinInstructions) throws(LaunchError) -> [(any WorkerProcessHandle)?] {
        let executable = try RemoteShellLauncher.resolve(mpirun)
        let arguments = try arguments(workers: workers, join: join)
        var fds: [Int32] = [-1, -1]
        guard cohort_pipe_cloexec(&fds) == 0 else { throw LaunchError("cannot create a pipe for mpirun: \(String(cString: strerror(errno)))") }
        defer { close(fds[0]) }
        let child: ChildProcess
        do throws(LaunchError) {
            child = try LocalProcessLauncher.spawn(
                executable: executable, index: 0, arguments: arguments, environment: [:], lifeline: nil, standardInput: fds[0])
        } catch {
            close(fds[1])
            throw error
        }
        process.withLock { $0 = child }
        let line = Array((join.secretHex + "\n").utf8)
        let written = line.withUnsafeBytes { write(fds[1], $0.baseAddress, $0.count) }
        close(fds[1])
        guard written == line.count else {
            child.kill(timeout: 5)
            throw LaunchError("cannot hand mpirun the secret: \(String(cString: strerror(errno)))")
        }
        return Array(repeating: nil, count: workers)
    }

    public func checkStarting() throws(LaunchError) {
        if let child = process.withLock({ $0 }), let t = child.termination() {
            throw LaunchError("mpirun (pid \(child.pid)) \(t) before every worker joined the driver (its messages above say why)")
        }
    }

    public func releaseLifeline() {}

    /// Ends `mpirun` before the driver reports: after an orderly stop it has up to 10 s to
    /// see its workers finalize; after a failure it gets SIGTERM at once (it ends its job on
    /// every machine) and half a second, then SIGKILL (a machine it cannot reach must not
    /// hold the driver up; that machine's workers exit when their driver link goes quiet).
    /// Its own messages about the job come before the driver's error this way.
    public func finished(orderly: Bool) {
        guard let child = process.withLock({ let child = $0; $0 = nil; return child }) else { return }
        if orderly && child.wait(timeout: 10) != nil { return }
        kill(child.pid, SIGTERM)
        if child.wait(timeout: 0.5) == nil { child.kill(timeout: 5) }
    }
}
