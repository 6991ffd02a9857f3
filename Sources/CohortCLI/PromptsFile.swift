import Engine
import Executor
import ExecutorCore
import Foundation
import ServingAPI
#if canImport(Glibc)
import Glibc
#endif

/// `--prompts-file`: one request per line, in the same JSON as `POST /v1/completions` takes
/// (decoded and checked by the same `InferenceRequest`), with these differences: `prompt`
/// is a user message for the chat template unless `"raw": true`, `system` adds a system
/// message, and `prompt_tokens` gives token ids. The command's flags are the defaults.
///
/// Lines end with LF or CRLF; the file may be a pipe (`/dev/stdin`). A line that is not a
/// valid request, or whose prompt is too long, fails alone: its error is printed as
/// `{"line": N, "error": …}` (and on stderr) and every other line runs. Results are printed
/// as each request finishes, each naming its line, so none is lost when a later one fails.
struct PromptsFile {
    struct Line {
        /// 1-based line number in the file.
        var number: Int
        var request: Result<ResolvedRequest, RequestError>
    }

    /// Reads a file or a pipe whole.
    /// - Throws: naming the path and the system's reason (a directory, a missing file, no permission).
    static func read(_ path: String) throws -> String {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw CLIError("cannot read --prompts-file \(path): \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var info = stat()
        if fstat(fd, &info) == 0 && (info.st_mode & S_IFMT) == S_IFDIR {
            throw CLIError("--prompts-file \(path) is a directory: expected a file of JSON lines")
        }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n == 0 { break }
            if n < 0 {
                if errno == EINTR { continue }
                throw CLIError("cannot read --prompts-file \(path): \(String(cString: strerror(errno)))")
            }
            bytes.append(contentsOf: chunk[0..<n])
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Every non-blank line, decoded and checked; a bad line carries its error.
    static func parse(_ text: String, defaults: SamplingParameters, contextLimit: Int, models: [String]) -> [Line] {
        var lines: [Line] = []
        // "\r\n" is one Character in Swift: split on it as on "\n".
        for (index, line) in text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" }).enumerated() {
            if line.allSatisfy(\.isWhitespace) { continue }
            let request = Result { () throws(RequestError) -> ResolvedRequest in
                try InferenceRequest.decode(Array(line.utf8), endpoint: .promptsFile)
                    .resolve(defaults: RequestDefaults(parameters: defaults, maxTokens: defaults.maxTokens), contextLimit: contextLimit, models: models)
            }
            lines.append(Line(number: index + 1, request: request))
        }
        return lines
    }

    /// The error line printed for a request that failed.
    struct Failure: Encodable {
        let line: Int
        let index: Int?
        let error: String
    }
}
