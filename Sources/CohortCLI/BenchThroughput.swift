import ArgumentParser
import Engine
import Executor
import ExecutorCore
import Foundation
import Synchronization

/// Serving throughput through the engine, vLLM's `benchmark_serving` pattern in a closed
/// loop: `--concurrency` clients each send a request and send the next when it completes,
/// until `--requests` are done. The last line is JSON with vLLM's metric names.
struct BenchThroughput: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "throughput",
        abstract: "Requests through the engine from concurrent clients; the last line is JSON (vLLM's metric names).")

    @OptionGroup var modelArguments: ModelArguments

    @Option(help: "Requests in all.")
    var requests = 32

    @Option(help: "Clients sending requests at once.")
    var concurrency = 8

    @Option(help: "Prompt tokens per request.")
    var promptLength = 64

    @Option(help: "Tokens generated per request (end-of-generation is ignored).")
    var maxTokens = 64

    @Option(help: "Most requests running at once per virtual engine.")
    var maxNumSeqs = 256

    @Option(help: "Groups of requests in flight at once (default: the pipeline stages, --pp).")
    var virtualEngines: Int?

    @Option(help: "text or json.")
    var output: Generate.OutputFormat = .json

    func validate() throws {
        guard requests >= 1 else { throw ValidationError("--requests must be ≥ 1, got \(requests)") }
        guard concurrency >= 1 && concurrency <= 1024 else { throw ValidationError("--concurrency must be between 1 and 1024, got \(concurrency)") }
        guard promptLength >= 1 else { throw ValidationError("--prompt-length must be ≥ 1, got \(promptLength)") }
        guard maxTokens >= 2 else { throw ValidationError("--max-tokens must be ≥ 2, got \(maxTokens)") }
        guard maxNumSeqs >= 1 else { throw ValidationError("--max-num-seqs must be ≥ 1, got \(maxNumSeqs)") }
        if let virtualEngines, virtualEngines < 1 { throw ValidationError("--virtual-engines must be ≥ 1, got \(virtualEngines)") }
    }

    struct Report: Encodable {
        let model: String
        let threads: Int
        let tp: Int
        let pp: Int
        let virtual_engines: Int
        let requests: Int
        let concurrency: Int
        let prompt_length: Int
        let max_tokens: Int
        let duration_s: Double
        let requests_per_s: Double
        let output_tokens_per_s: Double
        let ttft_ms_p50: Double
        let ttft_ms_p99: Double
        let tpot_ms_p50: Double
        let tpot_ms_p99: Double
        let preemptions: Int
    }

    func run() async throws {
        let engines = virtualEngines ?? modelArguments.pipelineParallel
        let engine = try await modelArguments.load(virtualEngines: engines, maxSequences: maxNumSeqs)
        // Distinct ordinary-text prompts of exactly `promptLength` tokens.
        let seedText = "The quick brown fox jumps over the lazy dog while the committee debates the budget for 2025. "
        let corpus = try engine.tokens(for: .raw(String(repeating: seedText, count: promptLength / 8 + 8)))
        let parameters = SamplingParameters(temperature: 0, ignoreEndOfGeneration: true, maxTokens: maxTokens)
        let prompts = (0..<requests).map { i in
            let start = i % max(1, corpus.count - promptLength)
            return Array(corpus[start..<(start + promptLength)])
        }
        // Warm-up: one request, not counted.
        do { _ = try await engine.generate(.init(promptTokens: prompts[0], parameters: parameters)) } catch {
            throw CLIError("\(error)")
        }
        let preemptionsBefore = await engine.preemptions
        let next = Counter()
        let start = MonotonicClock.now()
        let results: [GenerationResult]
        do {
            results = try await withThrowingTaskGroup(of: [GenerationResult].self) { group in
                for _ in 0..<min(concurrency, requests) {
                    group.addTask {
                        var mine: [GenerationResult] = []
                        while let i = next.take(below: prompts.count) {
                            mine.append(try await engine.generate(.init(promptTokens: prompts[i], parameters: parameters)))
                        }
                        return mine
                    }
                }
                return try await group.reduce(into: []) { $0 += $1 }
            }
        } catch {
            await engine.shutdown()
            throw CLIError("\(error)")
        }
        let duration = MonotonicClock.now() - start
        let preemptions = await engine.preemptions - preemptionsBefore
        await engine.shutdown()
        let ttft = results.map { $0.timings.prefillSeconds * 1e3 }
        let tpot = results.filter { $0.timings.decodeTokens > 0 }.map { $0.timings.decodeSeconds / Double($0.timings.decodeTokens) * 1e3 }
        let outputTokens = results.map(\.tokens.count).reduce(0, +)
        let report = Report(
            model: modelArguments.path, threads: modelArguments.threads, tp: modelArguments.tensorParallel, pp: modelArguments.pipelineParallel,
            virtual_engines: engines, requests: requests, concurrency: concurrency, prompt_length: promptLength, max_tokens: maxTokens,
            duration_s: duration, requests_per_s: Double(results.count) / duration, output_tokens_per_s: Double(outputTokens) / duration,
            ttft_ms_p50: Percentile.of(ttft, 0.5), ttft_ms_p99: Percentile.of(ttft, 0.99),
            tpot_ms_p50: Percentile.of(tpot, 0.5), tpot_ms_p99: Percentile.of(tpot, 0.99), preemptions: preemptions)
        if output == .text {
            Output.standardOutput(
                "\(results.count) requests in \(String(format: "%.2f", duration)) s: \(String(format: "%.1f", report.output_tokens_per_s)) output tok/s, "
                    + "TTFT p50 \(String(format: "%.0f", report.ttft_ms_p50)) ms, TPOT p50 \(String(format: "%.1f", report.tpot_ms_p50)) ms\n")
        }
        Output.standardOutput(try JSONOutput.line(report) + "\n")
    }
}

/// The next request index for whichever client asks first.
final class Counter: Sendable {
    private let value = Mutex(0)

    func take(below limit: Int) -> Int? {
        value.withLock { v in
            guard v < limit else { return nil }
            defer { v += 1 }
            return v
        }
    }
}
