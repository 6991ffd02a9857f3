import ArgumentParser
import Engine
import Executor
import ExecutorCore
import Foundation

struct Generate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Generate a completion for one prompt, or for every request of a JSONL file.",
        discussion: """
            --prompts-file FILE.jsonl runs one request per line through the engine (continuous \
            batching) and prints one JSON result per request, in input order. A line holds \
            "prompt" (with "raw": true sent without the chat template), "messages" \
            ([{"role", "content"}]) or "prompt_tokens", plus any of "system", "max_tokens", \
            "temperature", "top_k", "top_p", "min_p", "repetition_penalty", "presence_penalty", \
            "frequency_penalty", "seed", "stop", "logprobs", "ignore_eos"; the flags are the defaults.
            """)

    enum OutputFormat: String, ExpressibleByArgument, CaseIterable { case text, json }

    @OptionGroup var modelArguments: ModelArguments

    @Option(help: "The user message (the model's chat template is applied).")
    var prompt: String?

    @Option(help: "A system message for the chat template.")
    var system: String?

    @Flag(help: "Send --prompt as is, without the chat template.")
    var raw = false

    @Option(help: "Prompt token ids, comma-separated (instead of --prompt).")
    var promptTokens: String?

    @Option(help: "A JSONL file of requests, one per line (instead of --prompt); prints one JSON result per line.")
    var promptsFile: String?

    @Option(help: "With --prompts-file: most requests running at once per virtual engine.")
    var maxNumSeqs = 256

    @OptionGroup var sampling: SamplingArguments

    @Option(help: "text: stream the completion; json: one JSON object.")
    var output: OutputFormat = .text

    func validate() throws {
        let sources = [prompt != nil, promptTokens != nil, promptsFile != nil].filter { $0 }.count
        guard sources == 1 else {
            throw ValidationError(sources == 0 ? "give --prompt TEXT, --prompt-tokens IDS or --prompts-file FILE"
                : "give one of --prompt, --prompt-tokens and --prompts-file, not several")
        }
        if promptsFile != nil && (raw || system != nil) {
            throw ValidationError("--raw and --system apply to --prompt; in --prompts-file give \"raw\" and \"system\" per line")
        }
        guard maxNumSeqs >= 1 && maxNumSeqs <= 4096 else {
            throw ValidationError("--max-num-seqs must be between 1 and 4096, got \(maxNumSeqs)")
        }
        if promptTokens != nil && (raw || system != nil) {
            throw ValidationError("--raw and --system apply to --prompt, not to --prompt-tokens")
        }
        if raw && system != nil { throw ValidationError("--system needs the chat template; it cannot be used with --raw") }
        if let promptTokens { _ = try Self.parseTokenList(promptTokens) }
    }

    static func parseTokenList(_ text: String) throws -> [Int32] {
        let parts = text.split(separator: ",", omittingEmptySubsequences: false)
        var ids: [Int32] = []
        for part in parts {
            let trimmed = part.trimmingCharacters(in: .whitespaces)
            guard let id = Int32(trimmed), id >= 0 else {
                throw ValidationError("--prompt-tokens must be comma-separated token ids ≥ 0, got '\(trimmed)' in '\(text)'")
            }
            ids.append(id)
        }
        return ids
    }

    func run() async throws {
        let parameters = try sampling.parameters()
        if let promptsFile { return try await runFile(promptsFile, defaults: parameters) }
        let promptValue: Prompt
        if let promptTokens {
            promptValue = .tokens(try Self.parseTokenList(promptTokens))
        } else if raw {
            promptValue = .raw(prompt!)
        } else {
            promptValue = .chat(user: prompt!, system: system)
        }
        let engine = try await modelArguments.load(virtualEngines: 1)  // one request: the whole cache for it
        let result: GenerationResult
        do {
            let tokens = try await engine.tokens(for: promptValue)
            let streaming = output == .text
            result = try await engine.generate(.init(promptTokens: tokens, parameters: parameters) { piece in
                if streaming { Output.standardOutput(piece) }
            })
        } catch {
            await engine.shutdown()
            throw CLIError("\(error)")
        }
        await engine.shutdown()
        switch output {
        case .text:
            Output.standardOutput("\n")
        case .json:
            Output.standardOutput(try JSONOutput.line(GenerationJSON(result)) + "\n")
        }
    }
}

extension Generate {
    /// Every request of a JSONL file through the engine; one JSON line per request, in order.
    func runFile(_ path: String, defaults: SamplingParameters) async throws {
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw CLIError("cannot read --prompts-file \(path): \(error.localizedDescription)")
        }
        let lines = try PromptsFile.parse(text, defaults: defaults)
        let engine = try await modelArguments.load(maxSequences: maxNumSeqs)
        let results: [GenerationResult]
        do {
            var requests: [Engine.Request] = []
            for (i, line) in lines.enumerated() {
                do {
                    requests.append(.init(promptTokens: try await engine.tokens(for: line.prompt), parameters: line.parameters))
                } catch {
                    throw CLIError("--prompts-file request \(i + 1): \(error)")
                }
            }
            results = try await engine.generate(batch: requests)
        } catch {
            await engine.shutdown()
            throw error as? CLIError ?? CLIError("\(error)")
        }
        await engine.shutdown()
        for result in results { Output.standardOutput(try JSONOutput.line(GenerationJSON(result)) + "\n") }
    }
}

/// Sampling flags, validated into `SamplingParameters`.
struct SamplingArguments: ParsableArguments {
    @Option(help: "Most tokens to generate.")
    var maxTokens = 128

    @Option(help: "Sampling temperature; 0 is greedy.")
    var temperature: Float = 0.8

    @Option(help: "Keep the k most likely tokens (0 = off).")
    var topK = 40

    @Option(help: "Nucleus sampling threshold (1 = off).")
    var topP: Float = 0.95

    @Option(help: "Drop tokens below min-p × the best probability (0 = off).")
    var minP: Float = 0.05

    @Option(help: "Repetition penalty (1 = off).")
    var repetitionPenalty: Float = 1

    @Option(help: "Presence penalty (0 = off).")
    var presencePenalty: Float = 0

    @Option(help: "Frequency penalty (0 = off).")
    var frequencyPenalty: Float = 0

    @Option(help: "Random seed (same seed, same tokens).")
    var seed: UInt64?

    @Option(help: "Stop when this text appears (repeatable).")
    var stop: [String] = []

    @Option(help: "Report the K most likely tokens per generated token (0…20).")
    var logprobs = 0

    @Flag(help: "Keep generating past end-of-generation tokens (up to --max-tokens).")
    var ignoreEos = false

    func validate() throws {
        do { try parameters().validate() } catch let error as SamplingParametersError {
            throw ValidationError("--\(error.field) must be \(error.allowed), got \(error.value)")
        }
    }

    func parameters() throws -> SamplingParameters {
        SamplingParameters(
            temperature: temperature, topK: topK, topP: topP, minP: minP, repetitionPenalty: repetitionPenalty,
            presencePenalty: presencePenalty, frequencyPenalty: frequencyPenalty, seed: seed, stopStrings: stop,
            ignoreEndOfGeneration: ignoreEos, maxTokens: maxTokens, logprobs: logprobs)
    }
}

/// The JSON line of `generate --output json`.
struct GenerationJSON: Encodable {
    struct Logprob: Encodable {
        let token: Int32
        let logprob: Float
    }

    struct Timings: Encodable {
        let load_s: Double
        let prefill_s: Double
        let decode_s: Double
        let prefill_tokens_per_s: Double
        let decode_tokens_per_s: Double
    }

    let prompt_tokens: [Int32]
    let tokens: [Int32]
    let text: String
    let finish_reason: String
    let logprobs: [[Logprob]]?
    let timings: Timings

    init(_ r: GenerationResult) {
        prompt_tokens = r.promptTokens
        tokens = r.tokens
        text = r.text
        finish_reason = r.finishReason.rawValue
        logprobs = r.logprobs.isEmpty ? nil : r.logprobs.map { $0.map { Logprob(token: $0.token, logprob: $0.logprob) } }
        timings = Timings(
            load_s: r.timings.loadSeconds, prefill_s: r.timings.prefillSeconds, decode_s: r.timings.decodeSeconds,
            prefill_tokens_per_s: r.timings.prefillTokensPerSecond, decode_tokens_per_s: r.timings.decodeTokensPerSecond)
    }
}

enum JSONOutput {
    static func line(_ value: some Encodable) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(value), as: UTF8.self)
    }
}
