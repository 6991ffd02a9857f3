import ArgumentParser
import Executor
#if canImport(Glibc)
import Glibc
#endif

/// Runs one worker process; started by the driver, not by hand.
struct Worker: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a worker process (started by the driver).", shouldDisplay: false)

    @Option var rank: Int
    @Option var broadcast: String?
    @Option var reply: String?
    @Option var groupRings: String?
    @Option(help: "The driver's command listener, tcp://HOST:PORT (instead of --broadcast and --reply).")
    var driver: String?
    @Option var lifelineFd: Int32
    @Option var parentPid: Int32
    @Option var model: String?
    @Option var threads = 1
    @Option(name: .customLong("kv-cache-mb")) var kvCacheMiB = 256
    @Flag var precise = false
    @Option var maxBatchTokens = 512
    @Option(name: .customLong("tp")) var tensorParallel = 1
    @Option(name: .customLong("pp")) var pipelineParallel = 1
    @Option(name: .customLong("pp-layers")) var pipelineLayers: String?
    @Option var communicator: String?
    @Option var previousStage: String?
    @Option var loadGate: String?
    @Option var nextStage: String?

    func channel() throws -> WorkerProcess.Channel {
        if let driver { return try WorkerProcess.Channel.tcp(address: driver) }
        guard let broadcast, let reply else { throw ValidationError("give --driver tcp://HOST:PORT, or --broadcast and --reply") }
        return .rings(broadcast: broadcast, reply: reply, group: groupRings.map { $0.split(separator: ",").map(String.init) } ?? [])
    }

    func validate() throws {
        guard rank >= 1 else { throw ValidationError("--rank must be ≥ 1 for a worker process, got \(rank)") }
    }

    func run() throws {
        var shard: WorkerProcess.ModelShard?
        if let model {
            let options = ExecutorOptions(
                threads: threads, precise: precise, kvCacheMiB: kvCacheMiB, maxBatchTokens: maxBatchTokens, tensorParallel: tensorParallel,
                pipelineParallel: pipelineParallel, pipelineLayers: try pipelineLayers.map(ModelArguments.parseLayerList))
            shard = .init(
                path: model, options: options, communicator: communicator, previousStage: previousStage,
                nextStage: nextStage, loadGate: loadGate)
        }
        let status = WorkerProcess.run(.init(
            rank: rank, channel: try channel(), lifelineDescriptor: lifelineFd, parentPID: parentPid, model: shard))
        if status != 0 { throw ExitCode(status) }
    }
}
