import ArgumentParser
import WorkerRuntime

/// Joins a shared-memory communicator and runs all-reduces (for tests and benchmarks).
struct CollectivePeerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "collective-peer", abstract: "Join a communicator and run all-reduces.", shouldDisplay: false)

    @Option var name: String
    @Option var rank: Int
    @Option var count = 1024
    @Option var iterations = 1

    func validate() throws {
        guard rank >= 0 else { throw ValidationError("--rank must be ≥ 0, got \(rank)") }
        guard count >= 1 else { throw ValidationError("--count must be ≥ 1, got \(count)") }
    }

    func run() throws {
        let status = CollectivePeer.run(name: name, rank: rank, count: count, iterations: iterations)
        if status != 0 { throw ExitCode(status) }
    }
}
