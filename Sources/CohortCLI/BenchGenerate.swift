import ArgumentParser
import Executor
import ExecutorCore

struct BenchGenerate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract: "Prefill and decode speed at batch 1; the last line is JSON with medians over the repeats.")

    @OptionGroup var modelArguments: ModelArguments

    @Option(help: "Prompt tokens per run.")
    var promptLength = 128

    @Option(help: "Tokens generated per run (end-of-generation is ignored).")
    var maxTokens = 128

    @Option(help: "Measured runs (after one warm-up).")
    var `repeat` = 3

    @Option(help: "text or json.")
    var output: Generate.OutputFormat = .json

    func validate() throws {
        guard promptLength >= 1 else { throw ValidationError("--prompt-length must be ≥ 1, got \(promptLength)") }
        guard maxTokens >= 2 else { throw ValidationError("--max-tokens must be ≥ 2, got \(maxTokens)") }
        guard `repeat` >= 1 else { throw ValidationError("--repeat must be ≥ 1, got \(`repeat`)") }
    }

    struct Report: Encodable {
        let model: String
        let threads: Int
        let precise: Bool
        let prompt_length: Int
        let max_tokens: Int
        let repeats: Int
        let prefill_tokens_per_s: Double
        let decode_tokens_per_s: Double
    }

    func run() async throws {
        let executor = try await modelArguments.load()
        // A fixed, ordinary-text prompt of exactly `promptLength` tokens.
        let seedText = "The quick brown fox jumps over the lazy dog while the committee debates the budget for 2025. "
        var prompt = try executor.tokens(for: .raw(String(repeating: seedText, count: promptLength / 8 + 2)))
        prompt = Array(prompt.prefix(promptLength))
        let parameters = SamplingParameters(temperature: 0, ignoreEndOfGeneration: true, maxTokens: maxTokens)
        var prefill: [Double] = [], decode: [Double] = []
        for run in 0...`repeat` {
            let result: GenerationResult
            do { result = try await executor.generate(promptTokens: prompt, parameters: parameters) } catch {
                throw CLIError(error.description)
            }
            if run == 0 { continue }  // warm-up
            prefill.append(result.timings.prefillTokensPerSecond)
            decode.append(result.timings.decodeTokensPerSecond)
            if output == .text {
                Output.standardOutput(
                    "run \(run): prefill \(format(result.timings.prefillTokensPerSecond)) tok/s, decode \(format(result.timings.decodeTokensPerSecond)) tok/s\n")
            }
        }
        let report = Report(
            model: modelArguments.path, threads: modelArguments.threads, precise: modelArguments.precise,
            prompt_length: prompt.count, max_tokens: maxTokens, repeats: `repeat`,
            prefill_tokens_per_s: Percentile.median(prefill), decode_tokens_per_s: Percentile.median(decode))
        Output.standardOutput(try JSONOutput.line(report) + "\n")
        await executor.shutdown()
    }

    func format(_ x: Double) -> String { String(Int(x.rounded())) }
}
