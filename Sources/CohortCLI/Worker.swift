import ArgumentParser
import Launchers
import Transports
import WorkerRuntime
#if canImport(Glibc)
import Glibc
#endif

/// Runs one worker process: started by a launcher (the driver's own, `mpirun`, a Ray
/// actor, a shell), it joins the driver and receives everything else from it.
struct Worker: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a worker process that joins a driver (the instance secret comes in COHORT_SECRET, or on stdin).",
        shouldDisplay: false)

    @Option(help: "The driver's rendezvous, HOST:PORT or [IPv6]:PORT.")
    var driver: String

    @Option(help: "The launcher's token for this worker (1, 2, …); the driver assigns its rank. With --mpi: MPI rank + 1.")
    var join: Int?

    @Option(help: "An inherited pipe whose end-of-file means the driver died (local launcher).")
    var lifelineFd: Int32?

    @Option(help: "The driver's pid: a worker whose parent is already gone exits (local launcher).")
    var parentPid: Int32?

    @Flag(help: "Read the instance secret as one line of hex on standard input (a remote shell's launch).")
    var secretStdin = false

    @Flag(help: "Started by mpirun for a driver outside the MPI world: MPI rank 0 reads the secret on stdin and broadcasts it.")
    var mpi = false

    func validate() throws {
        if let join, join < 1 { throw ValidationError("--join must be ≥ 1, got \(join)") }
        if join == nil && !mpi { throw ValidationError("--join TOKEN is required (unless --mpi: then the MPI rank gives it)") }
        _ = try WorkerRuntime.JoinArguments.parseAddress(driver)
    }

    func run() throws {
        if mpi {
            let world: MPIWorld
            do { world = try MPIWorld.initialize() } catch { throw ValidationError(error.description) }
            let message: MPIJoin
            do {
                if world.rank == 0 {
                    let line = readLine(strippingNewline: true) ?? ""
                    message = line.isEmpty
                        ? .refused("mpirun gave MPI rank 0 no secret on standard input")
                        : .join(driverAddress: driver, secretHex: line)
                    try message.send(in: world)
                } else {
                    message = try MPIJoin.receive(in: world)
                }
            } catch {
                throw ValidationError("MPI rank \(world.rank): \(error)")
            }
            let status = Self.run(message, world: world, joinToken: world.rank + 1)
            MPIWorld.setOrderly(status == 0)
            if status != 0 { throw ExitCode(status) }
            return
        }
        let hex: String, source: String
        if secretStdin {
            guard let line = readLine(strippingNewline: true) else {
                throw ValidationError("--secret-stdin: expected the instance secret as a line of hex on standard input, found end-of-file")
            }
            (hex, source) = (line, "the secret on standard input")
        } else {
            guard let value = getenv(InstanceSecret.environmentName) else {
                throw ValidationError("a worker needs the instance secret in \(InstanceSecret.environmentName) (or --secret-stdin); it is not set")
            }
            (hex, source) = (String(cString: value), InstanceSecret.environmentName)
        }
        let secret: InstanceSecret
        do { secret = try InstanceSecret(hex: hex) } catch {
            throw ValidationError("\(source): \(error)")
        }
        let address = try WorkerRuntime.JoinArguments.parseAddress(driver)
        let status = WorkerRuntime.run(WorkerRuntime.JoinArguments(
            driverHost: address.host, driverPort: address.port, joinToken: join ?? 1, secret: secret, lifelineDescriptor: lifelineFd,
            parentPID: parentPid, build: Build.current))
        if status != 0 { throw ExitCode(status) }
    }

    /// A rank of `mpirun -np N cohort … --launcher mpi` other than 0: waits for the driver's
    /// word, then serves as the worker with join token `joinToken`. Its exit status.
    static func runMPIRank(_ world: MPIWorld, joinToken: Int) -> Int32 {
        do {
            let status = run(try MPIJoin.receive(in: world), world: world, joinToken: joinToken)
            MPIWorld.setOrderly(status == 0)
            return status
        } catch {
            Output.standardError("cohort (MPI rank \(world.rank)): \(error)\n")
            return 1
        }
    }

    /// Joins the driver rank 0 named, or reports why not. The machine is the one MPI names.
    static func run(_ message: MPIJoin, world: MPIWorld, joinToken: Int) -> Int32 {
        let rank = world.rank
        switch message {
        case let .refused(reason):
            Output.standardError("cohort (MPI rank \(rank)): \(reason)\n")
            return 1
        case let .join(address, hex):
            do {
                let secret = try InstanceSecret(hex: hex)
                let (host, port) = try WorkerRuntime.JoinArguments.parseAddress(address)
                return WorkerRuntime.run(WorkerRuntime.JoinArguments(
                    driverHost: host, driverPort: port, joinToken: joinToken, secret: secret, build: Build.current,
                    machineID: world.processorName))
            } catch {
                Output.standardError("cohort (MPI rank \(rank)): \(error)\n")
                return 1
            }
        }
    }
}
