import Executor
import ExecutorCore
import Foundation
import ModelRunner

/// `--prompts-file`: one request per line, JSON. A line holds `prompt` (a user message for
/// the chat template; with `"raw": true` sent as is), `messages` (`[{"role", "content"}]`)
/// or `prompt_tokens`, plus any of `system`, `max_tokens`, `temperature`, `top_k`, `top_p`,
/// `min_p`, `repetition_penalty`, `presence_penalty`, `frequency_penalty`, `seed`, `stop`
/// (a string or a list), `logprobs`, `ignore_eos`; the command's flags are the defaults.
struct PromptsFile {
    struct Line {
        var prompt: Prompt
        var parameters: SamplingParameters
    }

    /// Parses every line before anything runs; a bad line is named with what was expected.
    static func parse(_ text: String, defaults: SamplingParameters) throws -> [Line] {
        var lines: [Line] = []
        for (index, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty { continue }
            let number = index + 1
            func fail(_ message: String) -> CLIError { CLIError("--prompts-file line \(number): \(message)") }
            guard let object = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any] else {
                throw fail("expected a JSON object, found '\(line.prefix(60))'")
            }
            let known: Set<String> = [
                "prompt", "raw", "system", "messages", "prompt_tokens", "max_tokens", "temperature", "top_k", "top_p", "min_p",
                "repetition_penalty", "presence_penalty", "frequency_penalty", "seed", "stop", "logprobs", "ignore_eos",
            ]
            if let unknown = object.keys.sorted().first(where: { !known.contains($0) }) {
                throw fail("unknown field '\(unknown)'; expected one of \(known.sorted().joined(separator: ", "))")
            }
            func numeric<T>(_ key: String, _ make: (NSNumber) -> T) throws -> T? {
                guard let value = object[key] else { return nil }
                guard let n = value as? NSNumber, !(value is Bool) else { throw fail("'\(key)' must be a number, found \(value)") }
                return make(n)
            }
            var p = defaults
            p.maxTokens = try numeric("max_tokens") { $0.intValue } ?? p.maxTokens
            p.temperature = try numeric("temperature") { $0.floatValue } ?? p.temperature
            p.topK = try numeric("top_k") { $0.intValue } ?? p.topK
            p.topP = try numeric("top_p") { $0.floatValue } ?? p.topP
            p.minP = try numeric("min_p") { $0.floatValue } ?? p.minP
            p.repetitionPenalty = try numeric("repetition_penalty") { $0.floatValue } ?? p.repetitionPenalty
            p.presencePenalty = try numeric("presence_penalty") { $0.floatValue } ?? p.presencePenalty
            p.frequencyPenalty = try numeric("frequency_penalty") { $0.floatValue } ?? p.frequencyPenalty
            p.seed = try numeric("seed") { $0.uint64Value } ?? p.seed
            p.logprobs = try numeric("logprobs") { $0.intValue } ?? p.logprobs
            if let value = object["ignore_eos"] {
                guard let flag = value as? Bool else { throw fail("'ignore_eos' must be true or false, found \(value)") }
                p.ignoreEndOfGeneration = flag
            }
            if let value = object["stop"] {
                if let one = value as? String {
                    p.stopStrings = [one]
                } else if let many = value as? [String] {
                    p.stopStrings = many
                } else {
                    throw fail("'stop' must be a string or a list of strings, found \(value)")
                }
            }
            do { try p.validate() } catch { throw fail("'\(error.field.replacingOccurrences(of: "-", with: "_"))' must be \(error.allowed), found \(error.value)") }

            let sources = ["prompt", "messages", "prompt_tokens"].filter { object[$0] != nil }
            guard sources.count == 1 else {
                throw fail("expected exactly one of 'prompt', 'messages' or 'prompt_tokens', found \(sources.isEmpty ? "none" : sources.joined(separator: ", "))")
            }
            let prompt: Prompt
            if let text = object["prompt"] {
                guard let text = text as? String else { throw fail("'prompt' must be a string") }
                let raw = object["raw"] as? Bool ?? false
                let system = object["system"] as? String
                if raw && system != nil { throw fail("'system' needs the chat template; it cannot be used with 'raw'") }
                prompt = raw ? .raw(text) : .chat(user: text, system: system)
            } else if let messages = object["messages"] {
                guard let list = messages as? [[String: Any]], !list.isEmpty else {
                    throw fail("'messages' must be a non-empty list of {\"role\", \"content\"} objects")
                }
                prompt = .messages(try list.enumerated().map { i, m in
                    guard let role = m["role"] as? String, let content = m["content"] as? String else {
                        throw fail("message \(i + 1) needs string 'role' and 'content'")
                    }
                    return ChatMessage(role: role, content: content)
                })
            } else {
                guard let ids = object["prompt_tokens"] as? [NSNumber], !ids.isEmpty else {
                    throw fail("'prompt_tokens' must be a non-empty list of token ids")
                }
                prompt = .tokens(ids.map { Int32(truncatingIfNeeded: $0.int64Value) })
            }
            lines.append(Line(prompt: prompt, parameters: p))
        }
        guard !lines.isEmpty else { throw CLIError("--prompts-file holds no requests: expected one JSON object per line") }
        return lines
    }
}
