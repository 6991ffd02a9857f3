import ArgumentParser

@main
struct Cohort: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cohort",
        abstract: "A distributed executor for LLM inference.",
        subcommands: [Generate.self, Serve.self, Bench.self, Worker.self, CollectivePeerCommand.self]
    )
}

struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Benchmarks that print their figures as JSON.",
        subcommands: [BenchGenerate.self, BenchThroughput.self, BenchControlPlane.self, BenchTokenize.self]
    )
}
