import ArgumentParser
import Engine
import Executor
import ExecutorCore
import Foundation
import ServingAPI

struct Generate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Generate a completion for one prompt, or for every request of a JSONL file.",
        discussion: """
            --prompts-file FILE.jsonl (a file or a pipe such as /dev/stdin) runs one request per line \
            through the engine (continuous batching) and prints one JSON result per request as it \
            finishes, naming its "line". A line takes the body of POST /v1/completions: "prompt" \
            (a user message for the chat template; with "raw": true sent as is), "messages" \
            ([{"role", "content"}]) or "prompt_tokens", plus any of "system", "max_tokens", \
            "temperature", "top_k", "top_p", "min_p", "repetition_penalty", "presence_penalty", \
            "frequency_penalty", "seed", "stop", "logprobs", "ignore_eos", "n"; the flags are the \
            defaults. A bad line prints {"line": N, "error": ...} and the others still run.
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
            let tokens = try engine.tokens(for: promptValue)
            let streaming = output == .text
            result = try await engine.generate(.init(promptTokens: tokens, parameters: parameters) { delta in
                if streaming { Output.standardOutput(delta.text) }
            })
        } catch {
            await engine.shutdown()
            throw CLIError("\(error)")
        }
        await engine.shutdown()
        switch output {
        case .text:
            Output.standardOutput("\n")
            if result.finishReason == .kvCacheFull {
                Output.standardError(
                    "stopped: the KV cache holds \(engine.contextLimit) tokens for this request; raise --kv-cache-mb for longer answers\n")
            }
        case .json:
            Output.standardOutput(try JSONOutput.line(GenerationJSON(result)) + "\n")
        }
    }
}

extension Generate {
    /// Every request of a JSONL file through the engine (continuous batching); one JSON
    /// line per request as it finishes. Exits with status 1 when any request failed.
    func runFile(_ path: String, defaults: SamplingParameters) async throws {
        let text = try PromptsFile.read(path)
        guard !text.allSatisfy(\.isWhitespace) else {
            throw CLIError("--prompts-file \(path) holds no requests: expected one JSON object per line")
        }
        let engine = try await modelArguments.load(maxSequences: maxNumSeqs)
        let lines = PromptsFile.parse(text, defaults: defaults, contextLimit: engine.contextLimit, models: modelArguments.servedModelNames)
        var failed = 0
        func report(line: Int, index: Int?, _ message: String) {
            Output.standardError("--prompts-file line \(line)\(index.map { " choice \($0)" } ?? ""): \(message)\n")
            Output.standardOutput(((try? JSONOutput.line(PromptsFile.Failure(line: line, index: index, error: message))) ?? "") + "\n")
        }
        // Submit every good line first (they batch together), then print as they finish.
        var submitted: [(line: Int, index: Int?, id: UInt64)] = []
        for line in lines {
            let request: ResolvedRequest
            switch line.request {
            case let .failure(error):
                report(line: line.number, index: nil, error.message)
                failed += 1
                continue
            case let .success(r): request = r
            }
            do {
                let tokens = try engine.tokens(for: request.prompts[0])
                for choice in 0..<request.n {
                    let id = try await engine.submit(.init(promptTokens: tokens, parameters: request.parameters(choice: choice)))
                    submitted.append((line.number, request.n > 1 ? choice : nil, id))
                }
            } catch {
                report(line: line.number, index: nil, "\(error)")
                failed += 1
            }
        }
        struct Finished: Sendable {
            let line: Int
            let index: Int?
            let result: Result<GenerationResult, GenerationError>
        }
        failed += await withTaskGroup(of: Finished.self) { group in
            var failures = 0
            for request in submitted {
                let (line, index, id) = (request.line, request.index, request.id)
                group.addTask { [engine] in
                    do {
                        return Finished(line: line, index: index, result: .success(try await engine.result(of: id)))
                    } catch {
                        return Finished(line: line, index: index, result: .failure(error as? GenerationError ?? GenerationError("\(error)")))
                    }
                }
            }
            for await finished in group {
                switch finished.result {
                case let .success(r):
                    Output.standardOutput(((try? JSONOutput.line(GenerationJSON(r, line: finished.line, index: finished.index))) ?? "") + "\n")
                case let .failure(error):
                    report(line: finished.line, index: finished.index, "\(error)")
                    failures += 1
                }
            }
            return failures
        }
        await engine.shutdown()
        if failed > 0 {
            throw CLIError("\(failed) of \(lines.count) requests in --prompts-file failed (each is named above)")
        }
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

    @Option(parsing: .unconditional, help: "Presence penalty, -2…2 (0 = off).")
    var presencePenalty: Float = 0

    @Option(parsing: .unconditional, help: "Frequency penalty, -2…2 (0 = off).")
    var frequencyPenalty: Float = 0

    @Option(parsing: .unconditional, help: "Random seed (same seed, same tokens); -1 picks one at random.")
    var seed: Int64?

    @Option(help: "Stop when this text appears (repeatable).")
    var stop: [String] = []

    @Option(help: "Report the K most likely tokens per generated token (0…20).")
    var logprobs = 0

    @Flag(help: "Keep generating past end-of-generation tokens (up to --max-tokens).")
    var ignoreEos = false

    func validate() throws {
        if let seed, seed < -1 { throw ValidationError("--seed must be ≥ 0, or -1 for a random seed, got \(seed)") }
        do { try parameters().validate() } catch let error as SamplingParametersError {
            throw ValidationError("--\(error.field) must be \(error.allowed), got \(error.value)")
        }
    }

    func parameters() throws -> SamplingParameters {
        SamplingParameters(
            temperature: temperature, topK: topK, topP: topP, minP: minP, repetitionPenalty: repetitionPenalty,
            presencePenalty: presencePenalty, frequencyPenalty: frequencyPenalty, seed: seed.flatMap { $0 == -1 ? nil : UInt64($0) }, stopStrings: stop,
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

    /// With `--prompts-file`: the request's line, and its choice when it asked for several.
    var line: Int?
    var index: Int?
    let prompt_tokens: [Int32]
    let tokens: [Int32]
    let text: String
    let finish_reason: String
    let logprobs: [[Logprob]]?
    let timings: Timings

    init(_ r: GenerationResult, line: Int? = nil, index: Int? = nil) {
        self.line = line
        self.index = index
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
