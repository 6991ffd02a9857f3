import ArgumentParser
import Engine
import Executor
import ExecutorCore

struct BenchGenerate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract: "Prefill and decode speed; the last line is JSON with medians over the repeats.",
        discussion: """
            With --sequences N, N copies of the prompt run as one batch (dealt round-robin to \
            --virtual-engines groups whose steps are in flight at once); speeds are totals over \
            the batch. Over a TP × PP grid the report adds where the driver's time went per step.
            """)

    @OptionGroup var modelArguments: ModelArguments

    @Option(help: "Prompt tokens per run.")
    var promptLength = 128

    @Option(help: "Tokens generated per run (end-of-generation is ignored).")
    var maxTokens = 128

    @Option(help: "Measured runs (after one warm-up).")
    var `repeat` = 3

    @Option(help: "Requests run together as one batch.")
    var sequences = 1

    @Option(help: "Groups of requests in flight at once (default: the pipeline stages, --pp).")
    var virtualEngines: Int?

    @Option(help: "text or json.")
    var output: Generate.OutputFormat = .json

    func validate() throws {
        guard promptLength >= 1 else { throw ValidationError("--prompt-length must be ≥ 1, got \(promptLength)") }
        guard maxTokens >= 2 else { throw ValidationError("--max-tokens must be ≥ 2, got \(maxTokens)") }
        guard `repeat` >= 1 else { throw ValidationError("--repeat must be ≥ 1, got \(`repeat`)") }
        guard sequences >= 1 && sequences <= 256 else { throw ValidationError("--sequences must be between 1 and 256, got \(sequences)") }
        if let virtualEngines, virtualEngines < 1 || virtualEngines > sequences {
            throw ValidationError("--virtual-engines must be between 1 and --sequences (\(sequences)), got \(virtualEngines)")
        }
    }

    struct Report: Encodable {
        let model: String
        let threads: Int
        let tp: Int
        let pp: Int
        let sequences: Int
        let virtual_engines: Int
        let precise: Bool
        let prompt_length: Int
        let max_tokens: Int
        let repeats: Int
        let prefill_tokens_per_s: Double
        let decode_tokens_per_s: Double
        /// Per decode step, medians over the repeats (grid runs only): the driver's ring writes,
        /// rank 0's own part, rank 0's time in collectives, and gathering the replies.
        let step_ms: Double?
        let broadcast_us_per_step: Double?
        let rank0_ms_per_step: Double?
        let collective_ms_per_step: Double?
        let receive_ms_per_step: Double?
    }

    func run() async throws {
        let engines = virtualEngines ?? min(sequences, modelArguments.pipelineParallel)
        let engine = try await modelArguments.load(virtualEngines: engines)
        // A fixed, ordinary-text prompt of exactly `promptLength` tokens.
        let seedText = "The quick brown fox jumps over the lazy dog while the committee debates the budget for 2025. "
        var prompt = try engine.tokens(for: .raw(String(repeating: seedText, count: promptLength / 8 + 2)))
        prompt = Array(prompt.prefix(promptLength))
        let parameters = SamplingParameters(temperature: 0, ignoreEndOfGeneration: true, maxTokens: maxTokens)
        var prefill: [Double] = [], decode: [Double] = []
        var perStep: [String: [Double]] = [:]
        for run in 0...`repeat` {
            let before = await engine.gridStatistics
            let results: [GenerationResult]
            do {
                results = try await engine.generate(batch: Array(repeating: .init(promptTokens: prompt, parameters: parameters), count: sequences))
            } catch {
                throw CLIError("\(error)")
            }
            if run == 0 { continue }  // warm-up
            let timings = results.map(\.timings)
            let prefillRate = Double(timings.map(\.prefillTokens).reduce(0, +)) / timings.map(\.prefillSeconds).max()!
            let decodeRate = Self.decodeRate(timings)
            prefill.append(prefillRate)
            decode.append(decodeRate)
            if let before, let after = await engine.gridStatistics, after.decodeSteps > before.decodeSteps {
                let steps = Double(after.decodeSteps - before.decodeSteps)
                perStep["step", default: []].append(
                    (after.rank0Seconds + after.broadcastSeconds + after.receiveSeconds
                        - before.rank0Seconds - before.broadcastSeconds - before.receiveSeconds) / steps * 1e3)
                perStep["broadcast", default: []].append((after.broadcastSeconds - before.broadcastSeconds) / steps * 1e6)
                perStep["rank0", default: []].append((after.rank0Seconds - before.rank0Seconds) / steps * 1e3)
                perStep["collective", default: []].append((after.collectiveSeconds - before.collectiveSeconds) / steps * 1e3)
                perStep["receive", default: []].append((after.receiveSeconds - before.receiveSeconds) / steps * 1e3)
            }
            if output == .text {
                Output.standardOutput("run \(run): prefill \(format(prefillRate)) tok/s, decode \(format(decodeRate)) tok/s\n")
            }
        }
        let median = { (key: String) in perStep[key].map { Percentile.median($0) } }
        let report = Report(
            model: modelArguments.path, threads: modelArguments.threads, tp: modelArguments.tensorParallel,
            pp: modelArguments.pipelineParallel, sequences: sequences, virtual_engines: engines, precise: modelArguments.precise,
            prompt_length: prompt.count, max_tokens: maxTokens, repeats: `repeat`,
            prefill_tokens_per_s: Percentile.median(prefill), decode_tokens_per_s: Percentile.median(decode),
            step_ms: median("step"), broadcast_us_per_step: median("broadcast"), rank0_ms_per_step: median("rank0"),
            collective_ms_per_step: median("collective"), receive_ms_per_step: median("receive"))
        Output.standardOutput(try JSONOutput.line(report) + "\n")
        await engine.shutdown()
    }

    /// Decode tokens per second of a batch, counted once every request has its first
    /// token (until then other requests' prompts share the steps). Requests start together;
    /// each one's tokens are taken as evenly spread over its decode time.
    static func decodeRate(_ timings: [GenerationResult.Timings]) -> Double {
        let steady = timings.map(\.prefillSeconds).max()!
        let end = timings.map { $0.prefillSeconds + $0.decodeSeconds }.max()!
        guard end > steady else { return 0 }
        var tokens = 0.0
        for t in timings where t.decodeSeconds > 0 {
            let inWindow = max(0, t.prefillSeconds + t.decodeSeconds - steady)
            tokens += Double(t.decodeTokens) * min(1, inWindow / t.decodeSeconds)
        }
        return tokens / (end - steady)
    }

    func format(_ x: Double) -> String { String(Int(x.rounded())) }
}
