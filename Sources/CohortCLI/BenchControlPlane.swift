import ArgumentParser
import Executor
import ExecutorCore
import Launchers
import WorkerRuntime
#if canImport(Glibc)
import Glibc
#endif

struct BenchControlPlane: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "control-plane",
        abstract: "Per-step broadcast + gather latency through real worker processes that do no model work; the last line is JSON.")

    @Option(help: "Worker processes.")
    var workers = 4

    @Option(help: "Approximate size of each encoded step request.")
    var payloadBytes = 4400

    @Option(help: "Measured steps (after 200 warm-up steps).")
    var steps = 5000

    @Option(help: "shm (shared-memory rings) or tcp (a connection per worker over loopback).")
    var transport = "shm"

    @Option(help: """
        local (children of this process), detached (own sessions, not children: they join by address and \
        secret) or ssh (on the machines of --hosts, through --ssh-command; TCP between machines).
        """)
    var launcher = "local"

    @Option(help: "With --launcher ssh: HOST:SLOTS,… where the workers go (the driver takes a slot on its own host).")
    var hosts: String?

    @Option(help: "With --launcher ssh: the remote shell command and its options.")
    var sshCommand = ModelArguments.defaultSSHCommand

    @Option(help: "With --launcher ssh: the address workers reach this driver at.")
    var hostIP: String?

    @Option(help: "text or json.")
    var output: Generate.OutputFormat = .json

    func validate() throws {
        guard workers >= 1 && workers <= 64 else { throw ValidationError("--workers must be between 1 and 64, got \(workers)") }
        guard payloadBytes >= 64 && payloadBytes <= 1 << 20 else {
            throw ValidationError("--payload-bytes must be between 64 and 1048576, got \(payloadBytes)")
        }
        guard steps >= 10 else { throw ValidationError("--steps must be ≥ 10, got \(steps)") }
        guard ["shm", "tcp"].contains(transport) else { throw ValidationError("--transport must be shm or tcp, got '\(transport)'") }
        guard ["local", "detached", "ssh"].contains(launcher) else { throw ValidationError("--launcher must be local, detached or ssh, got '\(launcher)'") }
        if launcher == "ssh" {
            guard let hosts else { throw ValidationError("--launcher ssh needs --hosts HOST:SLOTS,…") }
            guard hostIP != nil else { throw ValidationError("--launcher ssh needs --host-ip: the address workers on other machines reach this one at") }
            do { _ = try RemoteShellLauncher(hosts: RemoteShellLauncher.parseHosts(hosts), driverHost: Machine.hostName()).workerHosts(workers) } catch {
                throw ValidationError(error.description)
            }
        }
    }

    struct Report: Encodable {
        let transport: String
        let machines: Int
        let workers: Int
        let payload_bytes: Int
        let steps: Int
        let median_us: Double
        let p90_us: Double
        let p99_us: Double
    }

    func run() throws {
        let chosen: (any Launcher)? = switch launcher {
        case "detached": DetachedLauncher()
        case "ssh": RemoteShellLauncher(
                hosts: try RemoteShellLauncher.parseHosts(hosts ?? ""), shell: sshCommand.split(separator: " ").map(String.init),
                driverHost: Machine.hostName())
        default: nil
        }
        // Workers on other machines are reached over TCP whatever --transport says.
        let group = try WorkerGroup(
            workers: workers,
            configuration: .init(transport: transport == "tcp" ? .tcp(host: hostIP ?? "127.0.0.1") : .sharedMemory, hostIP: hostIP),
            launcher: chosen)
        defer { group.shutdown() }
        // A decode-like step: sequences of one token with block tables, padded to the size asked.
        var sequences: [StepRequest.Sequence] = []
        var writer = WireWriter()
        repeat {
            let n = sequences.count
            sequences.append(.init(id: UInt64(n), tokens: [Int32(n)], startPosition: 100, blockTable: Array(0..<8)))
            StepRequest(step: 0, sequences: sequences).encode(into: &writer)
        } while writer.bytes.count < payloadBytes
        var latencies: [Double] = []
        latencies.reserveCapacity(steps)
        // Built once, renumbered each step: building a step is the scheduler's time, not
        // the control plane's.
        var request = StepRequest(step: 0, sequences: sequences)
        for step in 0..<(steps + 200) {
            request.step = UInt64(step)
            let start = MonotonicClock.now()
            _ = try group.step(request)
            if step >= 200 { latencies.append((MonotonicClock.now() - start) * 1e6) }
        }
        func percentile(_ p: Double) -> Double { Percentile.of(latencies, p) }
        let report = Report(
            transport: group.configuration.transport == .sharedMemory ? "shm" : "tcp",
            machines: Set(group.assignments.map(\.machineID)).count, workers: workers, payload_bytes: writer.bytes.count, steps: steps,
            median_us: percentile(0.5), p90_us: percentile(0.9), p99_us: percentile(0.99))
        if output == .text {
            Output.standardOutput("\(workers) workers, \(writer.bytes.count)-byte steps: median \(Int(report.median_us)) µs, p90 \(Int(report.p90_us)) µs, p99 \(Int(report.p99_us)) µs\n")
        }
        Output.standardOutput(try JSONOutput.line(report) + "\n")
    }
}
