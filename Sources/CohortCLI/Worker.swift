import ArgumentParser
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

    @Option(help: "The launcher's token for this worker (1, 2, …); the driver assigns its rank.")
    var join: Int

    @Option(help: "An inherited pipe whose end-of-file means the driver died (local launcher).")
    var lifelineFd: Int32?

    @Option(help: "The driver's pid: a worker whose parent is already gone exits (local launcher).")
    var parentPid: Int32?

    @Flag(help: "Read the instance secret as one line of hex on standard input (a remote shell's launch).")
    var secretStdin = false

    func validate() throws {
        guard join >= 1 else { throw ValidationError("--join must be ≥ 1, got \(join)") }
        _ = try WorkerRuntime.JoinArguments.parseAddress(driver)
    }

    func run() throws {
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
        let status = WorkerRuntime.run(.init(
            driverHost: address.host, driverPort: address.port, joinToken: join, secret: secret, lifelineDescriptor: lifelineFd,
            parentPID: parentPid, build: Build.current))
        if status != 0 { throw ExitCode(status) }
    }
}
