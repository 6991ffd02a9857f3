import ArgumentParser
import Engine
import Executor
import Foundation
import ExecutorCore
import Launchers
import Transports
import WorkerRuntime
import MetricsExporter
#if canImport(Glibc)
import Glibc
#endif

/// Flags shared by every command that loads a model.
struct ModelArguments: ParsableArguments {
    @Option(help: "Path to a GGUF model (default: the cached reference model).")
    var model: String?

    @Option(help: "Worker threads.")
    var threads: Int = ExecutorOptions.defaultThreads

    @Flag(help: "Float32 activations on dequantized weights (slower; matches a float reference).")
    var precise = false

    @Option(help: """
        How tensor-parallel ranks exchange activations: shm (shared memory, one machine), tcp (a ring of \
        TCP sockets), or mpi (MPI's own all-reduce; under mpirun with --launcher mpi). Groups with ranks \
        on other machines use tcp when shm is asked for.
        """)
    var collectives = ExecutorOptions.CollectiveTransport.sharedMemory.rawValue

    @Option(help: "Most worker processes loading the model at once (default: all).")
    var maxParallelLoadingWorkers: Int?

    @Option(name: .customLong("kv-cache-mb"), help: "KV cache memory in MiB.")
    var kvCacheMiB = 256

    @Option(help: """
        Most tokens in one step (prompt chunks and decodes together); longer prompts are prefilled in chunks \
        (default: 512 shared among the pipeline's stages, e.g. 256 each with --pp 2).
        """)
    var maxNumBatchedTokens: Int?

    /// The step budget. With P stages, P virtual engines have a step in flight each: a
    /// smaller chunk per step keeps the pipeline's bubbles short when a large prefill
    /// enters it (SmolLM2, PP 2, 16 concurrent 64 + 64-token requests: 710-731 output tok/s
    /// with 512 tokens a step, 711-764 with 256 and 764-808 with 128; TTFT p50 halves).
    var stepTokens: Int { maxNumBatchedTokens ?? max(64, 512 / pipelineParallel) }

    @Option(name: .customLong("tp"), help: "Tensor-parallel ranks per pipeline stage.")
    var tensorParallel = 1

    @Option(name: .customLong("pp"), help: "Pipeline stages (rank 0 runs here, every other rank of the TP × PP grid in a worker process).")
    var pipelineParallel = 1

    @Option(
        name: .customLong("pp-layers"),
        help: "Layers per pipeline stage, comma-separated (default: an even split), e.g. 10,10,10; or 'balanced': even work, the output head counted on the last stage.")
    var pipelineLayers: String?

    @Option(help: """
        Seconds a step may take before the rank that has not answered is named stuck \
        (default: 10× the recent p99 step time, per step and per token, at least 1 s).
        """)
    var stepTimeout: Double?

    @Option(help: """
        The address workers on other machines reach this driver at, IPv4 or IPv6 \
        (default: $COHORT_HOST_IP, else loopback: every worker on this machine).
        """)
    var hostIP: String?

    @Option(help: """
        How worker processes start: local (children of this process), ssh (on the machines of --hosts, \
        through --ssh-command), mpi (under mpirun -np N, MPI rank 0 drives; or mpirun started here \
        on the machines of --hosts), or ray (actors in a placement group of the Ray cluster at \
        --ray-address). Every machine needs the same binary and model paths.
        """)
    var launcher = "local"

    @Option(help: "The Ray cluster for --launcher ray: its GCS address HOST:PORT, as `ray start --head` prints it (default: $RAY_ADDRESS).")
    var rayAddress: String?

    @Option(help: "Cohort's Ray bridge, built by scripts/build-ray.sh (default: $COHORT_RAY_LIBRARY, else .build/ray/libcohort_ray.so beside the binary's build).")
    var rayLibrary: String?

    @Option(help: "How long Ray may take to place the workers' placement group, in seconds.")
    var rayPlacementTimeout: Double = 120

    @Option(help: "Where ranks go with --launcher ssh or mpi, as mpirun's --host: HOST:SLOTS,… (the driver takes a slot on its own host).")
    var hosts: String?

    @Option(help: "The remote shell for --launcher ssh (the command, then its options; the host and the worker's command follow), and mpirun's plm_rsh_agent for --launcher mpi --hosts.")
    var sshCommand = Self.defaultSSHCommand

    @Option(help: "Serve Prometheus metrics at http://127.0.0.1:PORT/metrics while the command runs.")
    var metricsPort: UInt16?

    /// `--host-ip`, else `COHORT_HOST_IP`.
    var driverAddress: String? {
        hostIP ?? getenv("COHORT_HOST_IP").map { String(cString: $0) }.flatMap { $0.isEmpty ? nil : $0 }
    }

    func validate() throws {
        if let stepTimeout, !(stepTimeout > 0 && stepTimeout <= 86_400) {
            throw ValidationError("--step-timeout must be between 0 and 86400 seconds, got \(stepTimeout)")
        }
        if let address = driverAddress, !Self.isNumericAddress(address) {
            throw ValidationError("--host-ip (or COHORT_HOST_IP) must be a numeric IPv4 or IPv6 address, got '\(address)'")
        }
        switch launcher {
        case "local":
            if hosts != nil { throw ValidationError("--hosts places workers for --launcher ssh; the local launcher starts them on this machine") }
        case "mpi" where MPIWorld.isUnderMPIRun:
            if hosts != nil { throw ValidationError("--hosts: under mpirun, mpirun's own --host places the ranks") }
        case "ssh", "mpi":
            guard let hosts else { throw ValidationError("--launcher \(launcher) needs --hosts HOST:SLOTS,… (where the ranks go)") }
            do {
                // Enough slots for the grid, before anything starts.
                let launcher = RemoteShellLauncher(hosts: try RemoteShellLauncher.parseHosts(hosts), driverHost: Machine.hostName())
                _ = try launcher.workerHosts(tensorParallel * pipelineParallel - 1)
            } catch {
                throw ValidationError(error.description)
            }
            guard driverAddress != nil else {
                throw ValidationError("--launcher \(launcher) needs --host-ip (or COHORT_HOST_IP): the address workers on other machines reach this one at")
            }
            guard !sshCommand.split(separator: " ").isEmpty else { throw ValidationError("--ssh-command is empty") }
        case "ray":
            if hosts != nil { throw ValidationError("--hosts places workers for --launcher ssh or mpi; with ray the cluster places them") }
            guard resolvedRayAddress != nil else {
                throw ValidationError("--launcher ray needs --ray-address HOST:PORT (or RAY_ADDRESS): the Ray cluster's GCS, as `ray start --head` prints it")
            }
            guard driverAddress != nil else {
                throw ValidationError("--launcher ray needs --host-ip (or COHORT_HOST_IP): this node's address in the Ray cluster, where workers reach the driver")
            }
            guard rayPlacementTimeout > 0 && rayPlacementTimeout <= 86_400 else {
                throw ValidationError("--ray-placement-timeout must be between 0 and 86400 seconds, got \(rayPlacementTimeout)")
            }
        default:
            throw ValidationError("--launcher must be local, ssh, mpi or ray, got '\(launcher)'")
        }
        guard threads >= 1 && threads <= 256 else {
            throw ValidationError("--threads must be between 1 and 256, got \(threads)")
        }
        guard tensorParallel >= 1 && tensorParallel <= 64 else {
            throw ValidationError("--tp must be between 1 and 64, got \(tensorParallel)")
        }
        guard pipelineParallel >= 1 && pipelineParallel <= 64 else {
            throw ValidationError("--pp must be between 1 and 64, got \(pipelineParallel)")
        }
        if let pipelineLayers, pipelineLayers != "balanced" {
            let layers = try Self.parseLayerList(pipelineLayers)
            guard layers.count == pipelineParallel else {
                throw ValidationError("--pp-layers lists \(layers.count) stages (\(pipelineLayers)); --pp is \(pipelineParallel): give one count per stage")
            }
        }
        guard let transport = ExecutorOptions.CollectiveTransport(rawValue: collectives) else {
            throw ValidationError("--collectives must be shm, tcp or mpi, got '\(collectives)'")
        }
        if transport == .mpi && !(launcher == "mpi" && MPIWorld.isUnderMPIRun) {
            throw ValidationError(
                "--collectives mpi needs every rank in one MPI world: run `mpirun -np N cohort generate --launcher mpi --collectives mpi …` "
                    + "(with --launcher \(launcher)\(MPIWorld.isUnderMPIRun ? "" : ", not under mpirun"), the driver is outside any MPI world)")
        }
        if let maxParallelLoadingWorkers, maxParallelLoadingWorkers < 1 {
            throw ValidationError("--max-parallel-loading-workers must be ≥ 1, got \(maxParallelLoadingWorkers)")
        }
        if let maxNumBatchedTokens, maxNumBatchedTokens < 1 || maxNumBatchedTokens > 1 << 16 {
            throw ValidationError("--max-num-batched-tokens must be between 1 and 65536, got \(maxNumBatchedTokens)")
        }
        guard kvCacheMiB >= 1 && kvCacheMiB <= 1 << 20 else {
            throw ValidationError("--kv-cache-mb must be between 1 and 1048576, got \(kvCacheMiB)")
        }
        if model == nil, access(ReferenceModel.defaultPath, R_OK) != 0 {
            throw ValidationError(
                "no --model given and the reference model is missing at \(ReferenceModel.defaultPath); "
                    + "fetch it with `\(ReferenceModel.fetchCommand)` (or `make setup`)")
        }
    }

    var path: String { model ?? ReferenceModel.defaultPath }

    /// The launcher the flags name (nil: the executor's default, children of this process).
    /// Under `mpirun`, every rank but 0 becomes a worker here and never returns.
    func workerLauncher() throws -> (any Launcher)? {
        let list = hosts.flatMap { try? RemoteShellLauncher.parseHosts($0) } ?? []
        switch launcher {
        case "ssh":
            return RemoteShellLauncher(hosts: list, shell: sshCommand.split(separator: " ").map(String.init), driverHost: Machine.hostName())
        case "mpi" where MPIWorld.isUnderMPIRun:
            let world = try MPIWorld.initialize()
            if world.rank != 0 { Glibc.exit(Worker.runMPIRank(world, joinToken: world.rank)) }
            Self.holdMPIRunTermination()
            return MPILauncher(world: world)
        case "mpi":
            return MPIRunLauncher(
                hosts: list, driverHost: Machine.hostName(), agent: sshCommand == Self.defaultSSHCommand ? nil : sshCommand)
        case "ray":
            guard let library = rayLibrary ?? RayLauncher.findLibrary(executable: Build.ownExecutable()) else {
                throw LaunchError("--launcher ray needs Cohort's Ray bridge: build it with scripts/build-ray.sh (it needs pip's ray[cpp]) or name it with --ray-library")
            }
            return try RayLauncher(
                clusterAddress: resolvedRayAddress ?? "", nodeAddress: driverAddress ?? "", library: library,
                cpusPerWorker: threads, placementTimeout: rayPlacementTimeout)
        default:
            return nil
        }
    }

    static let defaultSSHCommand = "ssh -o BatchMode=yes"

    /// When a rank dies, mpirun sends SIGTERM to every other rank at once (SIGKILL a second
    /// later): the driver would die before reporting which rank failed and where. It holds
    /// SIGTERM for 0.8 s, long enough for its report (a dead rank's link closes at once);
    /// when nothing ends the run by then (mpirun itself was interrupted), it exits saying why.
    static func holdMPIRunTermination() {
        try? SignalPipe.forward([SIGTERM]) { _ in
            // A thread of its own: other SIGTERM handlers (a server's drain) run meanwhile.
            Threads.detach {
                usleep(800_000)
                let line = Array("Error: mpirun ended the job (SIGTERM to MPI rank 0, the driver)\n".utf8)
                _ = line.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
                _exit(128 + SIGTERM)
            }
        }
    }

    /// `--ray-address`, else `RAY_ADDRESS`.
    var resolvedRayAddress: String? {
        rayAddress ?? getenv("RAY_ADDRESS").map { String(cString: $0) }.flatMap { $0.isEmpty ? nil : $0 }
    }

    /// `--host-ip`, else, under mpirun with ranks on other machines, this machine's first
    /// address that is not loopback.
    var resolvedHostIP: String? {
        if let driverAddress { return driverAddress }
        guard launcher == "mpi", MPIWorld.isUnderMPIRun,
              let local = getenv("OMPI_COMM_WORLD_LOCAL_SIZE").flatMap({ Int(String(cString: $0)) }),
              let all = getenv("OMPI_COMM_WORLD_SIZE").flatMap({ Int(String(cString: $0)) }), local < all
        else { return nil }
        return Machine.firstNonLoopbackAddress()
    }

    /// Names a request's `model` field may use: the file's name without `.gguf`, then the path.
    var servedModelNames: [String] {
        let file = (path as NSString).lastPathComponent
        let name = file.hasSuffix(".gguf") ? String(file.dropLast(5)) : file
        return [name, file, path]
    }

    var options: ExecutorOptions {
        var options = ExecutorOptions(
            threads: threads, precise: precise, kvCacheMiB: kvCacheMiB, maxBatchTokens: stepTokens,
            tensorParallel: tensorParallel, pipelineParallel: pipelineParallel,
            pipelineLayers: pipelineLayers.flatMap { try? Self.parseLayerList($0) }, balancedPipeline: pipelineLayers == "balanced")
        options.collectives = ExecutorOptions.CollectiveTransport(rawValue: collectives) ?? .sharedMemory
        options.maxParallelLoadingWorkers = maxParallelLoadingWorkers
        options.stepTimeout = stepTimeout
        options.hostIP = driverAddress
        return options
    }

    /// One line per rank: `rank 1 on h3 (198.18.7.3): local rank 0, COHORT_CPUS=0,1` (rank 0
    /// shares the driver's process and is not pinned).
    static func describe(_ placement: [Placement.Assignment]) -> String {
        var text = ""
        for a in placement {
            text += "cohort: rank \(a.rank) on \(a.machineID) (\(a.address)): local rank \(a.localRank)"
            for key in [Placement.Environment.cpuSet, Placement.Environment.visibleDevices] {
                if let value = a.environment[key], !value.isEmpty { text += ", \(key)=\(value)" }
            }
            text += "\n"
        }
        return text
    }

    static func isNumericAddress(_ text: String) -> Bool {
        var v4 = in_addr(), v6 = in6_addr()
        return inet_pton(AF_INET, text, &v4) == 1 || inet_pton(AF_INET6, text, &v6) == 1
    }

    /// `10,10,10` → [10, 10, 10]: layer counts, each ≥ 1.
    static func parseLayerList(_ text: String) throws -> [Int] {
        try text.split(separator: ",", omittingEmptySubsequences: false).map { part in
            let trimmed = part.trimmingCharacters(in: .whitespaces)
            guard let n = Int(trimmed), n >= 1 else {
                throw ValidationError("--pp-layers must be comma-separated layer counts ≥ 1, got '\(trimmed)' in '\(text)'")
            }
            return n
        }
    }

    /// Loads the model into an engine, drawing a progress bar on stderr when it is a terminal.
    func load(virtualEngines: Int? = nil, maxSequences: Int = 256, maxWaiting: Int? = nil) async throws -> Engine {
        // First: under mpirun, the ranks that are not the driver leave here to be workers.
        let launcher: (any Launcher)?
        do { launcher = try workerLauncher() } catch { throw CLIError("\(error)") }
        if let metricsPort {
            do {
                let exporter = try PrometheusExporter.bootstrap(port: metricsPort)
                Output.standardError("metrics at http://\(exporter.host):\(exporter.port)/metrics\n")
            } catch {
                (launcher as? MPILauncher)?.refuseIfWaiting("the driver (MPI rank 0) failed: \(error)")
                throw CLIError("\(error)")
            }
        }
        var options = options
        options.hostIP = resolvedHostIP
        let bar = ProgressBar(title: "Loading model")
        defer { bar.finish() }
        do {
            let engine = try await Engine.load(
                modelPath: path, options: options, launcher: launcher,
                configuration: .init(virtualEngines: virtualEngines ?? pipelineParallel, maxSequences: maxSequences, maxWaiting: maxWaiting)
            ) { bar.update($0) }
            // Across machines, say where each rank went.
            let placement = await engine.placement
            if Set(placement.map(\.machineID)).count > 1 {
                bar.finish()
                Output.standardError(Self.describe(placement))
                if let limit = maxParallelLoadingWorkers, let most = await engine.mostConcurrentWorkerLoads {
                    Output.standardError("cohort: at most \(most) of \(placement.count) ranks loaded at once (--max-parallel-loading-workers \(limit))\n")
                }
            }
            return engine
        } catch {
            // MPI ranks that never heard from the driver would wait for it forever.
            (launcher as? MPILauncher)?.refuseIfWaiting("the driver (MPI rank 0) failed: \(error)")
            throw CLIError("\(error)")
        }
    }
}


/// An error printed as is, with exit status 1.
struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A one-line progress bar on stderr, drawn only when stderr is a terminal.
final class ProgressBar: @unchecked Sendable {
    // @unchecked: updated only by the one load in progress, which the command awaits.
    let title: String
    let enabled = isatty(2) != 0
    private var lastPercent = -1

    init(title: String) { self.title = title }

    func update(_ fraction: Double) {
        guard enabled else { return }
        let percent = Int(fraction * 100)
        guard percent != lastPercent else { return }
        lastPercent = percent
        let width = 30
        let filled = width * percent / 100
        let bar = String(repeating: "#", count: filled) + String(repeating: " ", count: width - filled)
        Output.standardError("\r\(title) [\(bar)] \(percent)%")
    }

    func finish() {
        if enabled && lastPercent >= 0 { Output.standardError("\r\u{1B}[K") }
    }
}

/// Unbuffered writes to the standard streams (streamed tokens appear at once).
enum Output {
    static func standardOutput(_ s: String) { write(to: 1, s) }
    static func standardError(_ s: String) { write(to: 2, s) }

    private static func write(to fd: Int32, _ s: String) {
        var s = s
        s.withUTF8 { buffer in
            var offset = 0
            while offset < buffer.count {
                let n = Glibc.write(fd, buffer.baseAddress! + offset, buffer.count - offset)
                if n <= 0 { return }
                offset += n
            }
        }
    }
}
