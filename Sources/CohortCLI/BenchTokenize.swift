import ArgumentParser
import Executor
import ExecutorCore
import ModelRunner

/// Tokenizing speed on long texts, with and without spaces (a run without spaces is one
/// pre-token: the case that was quadratic).
struct BenchTokenize: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tokenize", abstract: "Tokenize texts of --bytes bytes with and without spaces; the last line is JSON.")

    @Option(help: "Path to a GGUF model (default: the cached reference model).")
    var model: String?

    @Option(help: "Bytes of each text.")
    var bytes = 1_000_000

    @Option(help: "text or json.")
    var output: Generate.OutputFormat = .json

    func validate() throws {
        guard bytes >= 1 && bytes <= 1 << 28 else { throw ValidationError("--bytes must be between 1 and 268435456, got \(bytes)") }
    }

    struct Report: Encodable {
        let bytes: Int
        let spaced_seconds: Double
        let spaced_tokens: Int
        let unspaced_seconds: Double
        let unspaced_tokens: Int
    }

    func run() throws {
        let tokenizer = try Tokenizer(file: GGUFFile(path: model ?? ReferenceModel.defaultPath))
        let sentence = "The quick brown fox jumps over the lazy dog, 1234 times; naïve café: ok? "
        let spaced = String(String(repeating: sentence, count: bytes / sentence.utf8.count + 1).utf8.prefix(bytes))!
        // Letters without a space: one pre-token of the whole text.
        let unspaced = String(String(repeating: "abcdefghijklmnopqrstuvwxyz", count: bytes / 26 + 1).prefix(bytes))
        func time(_ text: String) -> (Double, Int) {
            let start = MonotonicClock.now()
            let count = tokenizer.encode(text, parseSpecial: false, addBOS: false).count
            return (MonotonicClock.now() - start, count)
        }
        let (s, sn) = time(spaced), (u, un) = time(unspaced)
        let report = Report(bytes: bytes, spaced_seconds: s, spaced_tokens: sn, unspaced_seconds: u, unspaced_tokens: un)
        if output == .text {
            Output.standardOutput("\(bytes) bytes: with spaces \(sn) tokens in \(s) s, without spaces \(un) tokens in \(u) s\n")
        }
        Output.standardOutput(try JSONOutput.line(report) + "\n")
    }
}
