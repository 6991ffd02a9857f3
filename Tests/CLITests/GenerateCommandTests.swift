import ExecutorTestSupport
import Foundation
import Testing

/// Runs the built `cohort` binary (next to the test bundle) end to end on a tiny model.
struct CLI {
    struct Result {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    static var binary: URL {
        let exe = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        return exe.deletingLastPathComponent().appendingPathComponent("cohort")
    }

    static func run(_ arguments: [String], environment: [String: String] = [:], input: String? = nil) throws -> Result {
        let process = Process()
        process.executableURL = binary
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        process.environment = env
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        let stdin = Pipe()
        if input != nil { process.standardInput = stdin }
        try process.run()
        if let input {
            stdin.fileHandleForWriting.write(Data(input.utf8))
            try stdin.fileHandleForWriting.close()
        }
        let stdout = out.fileHandleForReading.readDataToEndOfFile()
        let stderr = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Result(
            status: process.terminationStatus, stdout: String(decoding: stdout, as: UTF8.self),
            stderr: String(decoding: stderr, as: UTF8.self))
    }
}

@Suite(.serialized) final class GenerateCommandTests {
    let model: String

    init() throws { model = try TinyLlama().write() }
    deinit { TemporaryFiles.remove(model) }

    func json(_ r: CLI.Result) throws -> [String: Any] {
        let line = try #require(r.stdout.split(separator: "\n").last)
        return try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
    }

    @Test("--metrics-port serves Prometheus text while generate --prompts-file runs: control plane, per-rank step time, heartbeat age")
    func metricsWhileRunning() throws {
        let requests = (0..<32).map { "{\"prompt_tokens\": [\($0 + 1), 2, 3], \"max_tokens\": 400, \"ignore_eos\": true}" }
        let file = TemporaryFiles.path("requests.jsonl")
        try TemporaryFiles.write(Array(requests.joined(separator: "\n").utf8), to: file)
        defer { TemporaryFiles.remove(file) }
        let port = UInt16.random(in: 20_000...60_000)
        let process = Process()
        process.executableURL = CLI.binary
        process.arguments = ["generate", "--model", model, "--prompts-file", file, "--tp", "2", "--threads", "1", "--metrics-port", "\(port)"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        defer { if process.isRunning { process.terminate() } }
        // Keep the last scrape that answered: the run may end between a check and a scrape.
        // Bounded by time, not by scrapes: under the other suites' load, start-up alone took
        // longer than 600 scrapes once.
        var scraped = ""
        let deadline = Date().addingTimeInterval(120)
        while process.isRunning && Date() < deadline && !(scraped.contains("cohort_rank_step_seconds_count{rank=\"1\"}")) {
            usleep(20_000)
            if let answer = Self.get(port: port, path: "/metrics"), !answer.isEmpty { scraped = answer }
        }
        #expect(scraped.contains("cohort_control_plane_step_seconds_count"), "\(scraped.prefix(400))")
        #expect(scraped.contains("cohort_rank_step_seconds_count{rank=\"0\"}"))
        #expect(scraped.contains("cohort_rank_step_seconds_count{rank=\"1\"}"))
        #expect(scraped.contains("cohort_rank_heartbeat_age_seconds{rank=\"1\"}"))
        #expect(Self.get(port: port, path: "/nothing")?.contains("expected GET /metrics") == true || !process.isRunning)
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
    }

    /// A plain HTTP GET on loopback; nil when nothing answers.
    static func get(port: UInt16, path: String) -> String? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else { return nil }
        let request = Array("GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".utf8)
        _ = request.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        var response: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = read(fd, &chunk, chunk.count)
            if n <= 0 { break }
            response += chunk[..<n]
        }
        return String(decoding: response, as: UTF8.self)
    }

    @Test("a prompt certainly longer than the context is refused from its byte count, before tokenizing")
    func longPromptRefusedEarly() throws {
        let r = try CLI.run(["generate", "--model", model, "--raw", "--kv-cache-mb", "1", "--threads", "1",
                             "--prompt", String(repeating: "x", count: 64_000)])
        #expect(r.status != 0)
        #expect(r.stderr.contains("the prompt has 64000 bytes of text, so at least"), "\(r.stderr)")
        #expect(r.stderr.contains("prompt tokens per request"))
    }

    @Test("json output has the prompt, tokens, text, finish reason, logprobs and timings")
    func jsonOutput() throws {
        let r = try CLI.run(["generate", "--model", model, "--prompt-tokens", "1,2,3", "--temperature", "0",
                             "--max-tokens", "5", "--logprobs", "2", "--output", "json", "--threads", "1"])
        #expect(r.status == 0, "\(r.stderr)")
        let o = try json(r)
        #expect(o["prompt_tokens"] as? [Int] == [1, 2, 3])
        let tokens = try #require(o["tokens"] as? [Int])
        let finish = try #require(o["finish_reason"] as? String)
        #expect(finish == "length" ? tokens.count == 5 : finish == "stop")
        let logprobs = try #require(o["logprobs"] as? [[[String: Any]]])
        #expect(logprobs.count == tokens.count && logprobs.allSatisfy { $0.count == 2 })
        let first = try #require(logprobs.first?.first)
        #expect(first["token"] as? Int == tokens.first)  // greedy picks the best
        let timings = try #require(o["timings"] as? [String: Any])
        for key in ["load_s", "prefill_s", "decode_s", "prefill_tokens_per_s", "decode_tokens_per_s"] {
            #expect(timings[key] is Double, "\(key)")
        }
        #expect(o["text"] is String)
    }

    @Test("the same seed gives the same tokens")
    func seeded() throws {
        let args = ["generate", "--model", model, "--prompt", "the", "--temperature", "1.5", "--seed", "11",
                    "--max-tokens", "12", "--output", "json"]
        let a = try json(CLI.run(args)), b = try json(CLI.run(args))
        #expect(a["tokens"] as? [Int] == b["tokens"] as? [Int])
        #expect((a["prompt_tokens"] as? [Int])?.first == 259)  // <|im_start|>: the chat template applied
    }

    @Test("text mode streams the completion")
    func textOutput() throws {
        let r = try CLI.run(["generate", "--model", model, "--raw", "--prompt", " the", "--temperature", "0", "--max-tokens", "4"])
        #expect(r.status == 0)
        #expect(r.stdout.hasSuffix("\n"))
    }

    @Test("bad flags fail in validation naming the flag, the value and what is allowed", arguments: [
        (["--temperature=-1"], "--temperature must be a finite number ≥ 0, got -1.0"),
        (["--top-p", "1.5"], "--top-p must be a number in (0, 1], got 1.5"),
        (["--threads", "0"], "--threads must be between 1 and 256, got 0"),
        (["--max-tokens", "0"], "--max-tokens must be an integer ≥ 1, got 0"),
        (["--logprobs", "50"], "--logprobs must be an integer in 0…20, got 50"),
        (["--max-num-batched-tokens", "0"], "--max-num-batched-tokens must be between 1 and 65536, got 0"),
        (["--prompt-tokens", "1,x"], "'x'"),
        (["--output", "yaml"], "yaml"),
        (["--launcher", "slurm"], "--launcher must be local, ssh, mpi or ray, got 'slurm'"),
        (["--launcher", "ssh"], "--launcher ssh needs --hosts HOST:SLOTS"),
        (["--launcher", "ssh", "--hosts", "a:2,b:0", "--host-ip", "10.0.0.1"], "the slot count of 'b:0' must be a whole number ≥ 1, found '0'"),
        (["--launcher", "ssh", "--hosts", "a:2"], "--launcher ssh needs --host-ip"),
        (["--hosts", "a:2"], "--hosts places workers for --launcher ssh"),
        (["--launcher", "ssh", "--hosts", "a:2", "--host-ip", "10.0.0.1", "--tp", "2", "--pp", "2"], "--hosts a:2 has 2 worker slots; this grid needs 3 workers"),
        (["--launcher", "ray", "--host-ip", "10.0.0.1"], "--launcher ray needs --ray-address HOST:PORT (or RAY_ADDRESS)"),
        (["--launcher", "ray", "--ray-address", "10.0.0.1:6379"], "--launcher ray needs --host-ip (or COHORT_HOST_IP)"),
        (["--collectives", "mpi", "--tp", "2"], "--collectives mpi needs every rank in one MPI world"),
        (["--collectives", "nccl"], "--collectives must be shm, tcp or mpi, got 'nccl'"),
    ])
    func badFlags(flags: [String], message: String) throws {
        var args = ["generate", "--model", model]
        if !flags.contains("--prompt-tokens") { args += ["--prompt", "hi"] }
        let r = try CLI.run(args + flags)
        #expect(r.status != 0)
        #expect(r.stderr.contains(message), "\(r.stderr)")
    }

    @Test("a missing or broken model file is reported by path and reason")
    func badModel() throws {
        var r = try CLI.run(["generate", "--model", "/nonexistent/model.gguf", "--prompt", "hi"])
        #expect(r.status != 0 && r.stderr.contains("/nonexistent/model.gguf") && r.stderr.contains("No such file"))
        let junk = TemporaryFiles.path("junk.gguf")
        try TemporaryFiles.write(Array("not a model".utf8), to: junk)
        defer { TemporaryFiles.remove(junk) }
        r = try CLI.run(["generate", "--model", junk, "--prompt", "hi"])
        #expect(r.status != 0 && r.stderr.contains("not a GGUF file"))
    }

    @Test("without --model and without the cached reference model, the error says how to fetch it")
    func missingReferenceModel() throws {
        let r = try CLI.run(["generate", "--prompt", "hi"], environment: ["COHORT_CACHE": "/nonexistent-cache"])
        #expect(r.status != 0 && r.stderr.contains("scripts/fetch-model.sh") && r.stderr.contains("/nonexistent-cache"))
    }

    @Test("a stop string ends the text before it with finish reason stop")
    func stopString() throws {
        let base = ["generate", "--model", model, "--raw", "--prompt", " the", "--temperature", "0", "--max-tokens", "24",
                    "--output", "json"]
        let full = try #require(try json(CLI.run(base))["text"] as? String)
        // Stop at a piece of the greedy text that does not occur at its very start.
        let start = full.index(full.startIndex, offsetBy: min(6, full.count / 2))
        let stop = String(full[start...].prefix(2))
        try #require(!stop.isEmpty)
        let cut = try json(CLI.run(base + ["--stop", stop]))
        let expected = String(full[..<(full.range(of: stop)!.lowerBound)])
        #expect(cut["text"] as? String == expected)
        #expect(cut["finish_reason"] as? String == "stop")
    }

    @Test("--tp 2 runs a shard in a worker process and gives the tokens of --tp 1", arguments: ["fast", "precise"])
    func tensorParallel(mode: String) throws {
        let base = ["generate", "--model", model, "--prompt-tokens", "5,77,200,3,14", "--temperature", "0", "--max-tokens", "12",
                    "--threads", "1", "--output", "json"] + (mode == "precise" ? ["--precise"] : [])
        let one = try json(CLI.run(base)), two = try json(CLI.run(base + ["--tp", "2"]))
        #expect(try #require(one["tokens"] as? [Int]).count == 12)
        #expect(two["tokens"] as? [Int] == one["tokens"] as? [Int])
    }

    @Test("--pp 2, --tp 2 --pp 2 and TCP collectives run in worker processes and give the tokens of one worker", arguments: ["fast", "precise"])
    func pipelineParallel(mode: String) throws {
        let base = ["generate", "--model", model, "--prompt-tokens", "5,77,200,3,14", "--temperature", "0", "--max-tokens", "12",
                    "--threads", "1", "--output", "json"] + (mode == "precise" ? ["--precise"] : [])
        let one = try json(CLI.run(base))
        #expect(try #require(one["tokens"] as? [Int]).count == 12)
        for layout in [["--pp", "2"], ["--pp", "2", "--pp-layers", "1,1"], ["--tp", "2", "--pp", "2"], ["--tp", "2", "--collectives", "tcp"]] {
            #expect(try json(CLI.run(base + layout))["tokens"] as? [Int] == one["tokens"] as? [Int], "\(layout)")
        }
    }

    @Test("impossible pipeline layouts are named before any worker starts")
    func impossiblePipeline() throws {
        let base = ["generate", "--model", model, "--prompt", "hi"]
        for (flags, message) in [
            (["--pp", "3"], "PP 3 is larger than the model's 2 layers"),
            (["--pp", "2", "--pp-layers", "2,1"], "the pipeline layer split 2,1 adds up to 3 layers; the model has 2"),
            (["--pp", "2", "--pp-layers", "2"], "--pp-layers lists 1 stages (2); --pp is 2"),
            (["--pp", "2", "--pp-layers", "1,x"], "--pp-layers must be comma-separated layer counts ≥ 1, got 'x'"),
        ] {
            let r = try CLI.run(base + flags)
            #expect(r.status != 0 && r.stderr.contains(message), "\(flags): \(r.stderr)")
        }
    }

    @Test("bench generate over a pipeline reports where the driver's time went per step")
    func benchPipeline() throws {
        let r = try CLI.run(["bench", "generate", "--model", model, "--prompt-length", "8", "--max-tokens", "4", "--repeat", "1",
                             "--threads", "1", "--pp", "2", "--sequences", "4"])
        #expect(r.status == 0, "\(r.stderr)")
        let o = try json(r)
        #expect(o["virtual_engines"] as? Int == 2 && o["sequences"] as? Int == 4)
        for key in ["decode_tokens_per_s", "step_ms", "rank0_ms_per_step", "receive_ms_per_step"] {
            #expect((o[key] as? Double ?? 0) > 0, "\(key)")
        }
    }

    /// The JSON objects of a --prompts-file run's stdout, by the line they name.
    func resultsByLine(_ r: CLI.Result) throws -> [Int: [String: Any]] {
        var out: [Int: [String: Any]] = [:]
        for text in r.stdout.split(separator: "\n") {
            let o = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any], "\(text)")
            out[try #require(o["line"] as? Int, "\(text)")] = o
        }
        return out
    }

    @Test("--prompts-file runs every request through the engine and prints one result per request, naming its line")
    func promptsFile() throws {
        let base = ["generate", "--model", model, "--temperature", "0", "--output", "json"]
        // The same requests one by one, for reference.
        let alone = try [["--prompt-tokens", "5,77,200", "--max-tokens", "6"], ["--raw", "--prompt", " the", "--max-tokens", "4"]].map {
            try #require(try json(CLI.run(base + $0))["tokens"] as? [Int])
        }
        let lines = [
            #"{"prompt_tokens": [5, 77, 200], "max_tokens": 6}"#,
            "",
            #"{"prompt": " the", "raw": true, "max_tokens": 4, "stop": ["zzz"]}"#,
            #"{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "temperature": 0.7, "seed": 5}"#,
        ]
        let file = TemporaryFiles.path("prompts.jsonl")
        defer { TemporaryFiles.remove(file) }
        try lines.joined(separator: "\n").write(toFile: file, atomically: true, encoding: .utf8)
        // Two tokens a step: prompts are prefilled in chunks, and the tokens stay the same.
        let r = try CLI.run([
            "generate", "--model", model, "--temperature", "0", "--prompts-file", file, "--max-num-seqs", "2",
            "--max-num-batched-tokens", "2",
        ])
        #expect(r.status == 0, "\(r.stderr)")
        let results = try resultsByLine(r)
        #expect(results.keys.sorted() == [1, 3, 4])
        #expect([results[1]?["tokens"] as? [Int], results[3]?["tokens"] as? [Int]] == alone)
        #expect((results[4]?["tokens"] as? [Int])?.count == 3)
    }

    @Test("--prompts-file: 0 and 1 are numbers, CRLF lines and pipes are read, n choices each print a line")
    func promptsFileInputs() throws {
        let lines = [
            #"{"prompt_tokens": [5, 77, 200], "max_tokens": 1, "temperature": 0, "top_p": 1, "min_p": 0, "presence_penalty": 0}"#,
            #"{"prompt_tokens": [5, 77], "max_tokens": 2, "temperature": 1, "seed": 0, "n": 2}"#,
        ]
        // Through a pipe, with CRLF line ends.
        let r = try CLI.run(
            ["generate", "--model", model, "--prompts-file", "/dev/stdin"], input: lines.joined(separator: "\r\n") + "\r\n")
        #expect(r.status == 0, "\(r.stderr)")
        let objects = r.stdout.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        #expect(objects.count == 3)
        #expect(objects.filter { $0["line"] as? Int == 1 }.first?["tokens"].map { ($0 as? [Int])?.count } == 1)
        #expect(Set(objects.filter { $0["line"] as? Int == 2 }.compactMap { $0["index"] as? Int }) == [0, 1])
    }

    @Test("a bad --prompts-file line fails alone, named with the field, the value and what was expected")
    func badPromptsFile() throws {
        let file = TemporaryFiles.path("bad.jsonl")
        defer { TemporaryFiles.remove(file) }
        for (line, message) in [
            (#"{"prompt": "a", "top_p": 2}"#, "line 2: 'top_p' must be a number in (0, 1], found 2.0"),
            (#"{"prompt": "a", "prompt_tokens": [1]}"#, "line 2: expected exactly one of 'prompt', 'messages' or 'prompt_tokens', found prompt, prompt_tokens"),
            (#"{"prompt": "a", "temprature": 1}"#, "line 2: unknown field 'temprature'"),
            (#"{"prompt": "a", "raw": 1}"#, "line 2: 'raw' must be true or false, found 1"),
            (#"{"prompt": "a", "max_tokens": 2.5}"#, "line 2: 'max_tokens' must be an integer, found 2.5"),
            (#"{"prompt": "a", "seed": -2}"#, "line 2: 'seed' must be an integer ≥ 0, or -1 for a random seed, found -2"),
            ("not json", "line 2: expected a JSON object"),
            // Longer than the tiny model's 256-token context.
            (#"{"prompt_tokens": ["# + Array(repeating: "5", count: 300).joined(separator: ", ") + "]}", "line 2: the prompt has 300 tokens"),
        ] {
            try (#"{"prompt_tokens": [5], "max_tokens": 2}"# + "\n" + line + "\n" + #"{"prompt_tokens": [7], "max_tokens": 2}"#)
                .write(toFile: file, atomically: true, encoding: .utf8)
            let r = try CLI.run(["generate", "--model", model, "--prompts-file", file])
            #expect(r.status != 0 && r.stderr.contains(message), "\(r.stderr)")
            let results = try resultsByLine(r)
            #expect(results[1]?["tokens"] != nil && results[3]?["tokens"] != nil, "\(r.stdout)")
            #expect((results[2]?["error"] as? String).map { message.contains($0.prefix(20)) || r.stderr.contains($0) } == true, "\(r.stdout)")
        }
    }

    @Test("--prompts-file errors name the path: a directory, a missing file")
    func promptsFilePaths() throws {
        let directory = TemporaryFiles.path("a-directory")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { TemporaryFiles.remove(directory) }
        let r = try CLI.run(["generate", "--model", model, "--prompts-file", directory])
        #expect(r.status != 0 && r.stderr.contains("--prompts-file \(directory) is a directory: expected a file of JSON lines"), "\(r.stderr)")
        let missing = try CLI.run(["generate", "--model", model, "--prompts-file", directory + "/nothing.jsonl"])
        #expect(missing.status != 0 && missing.stderr.contains("No such file or directory"), "\(missing.stderr)")
    }

    @Test("a request that fills its share of the KV cache ends with kv_cache_full, not length")
    func cacheFull() throws {
        var tiny = TinyLlama()
        tiny.contextLength = 16384
        let long = try tiny.write()
        defer { TemporaryFiles.remove(long) }
        let r = try CLI.run(["generate", "--model", long, "--prompt-tokens", "5", "--max-tokens", "16000", "--ignore-eos",
                             "--kv-cache-mb", "1", "--output", "json", "--threads", "1"])
        #expect(r.status == 0, "\(r.stderr)")
        let o = try json(r)
        #expect(o["finish_reason"] as? String == "kv_cache_full", "\(r.stdout.suffix(200))")
        #expect((o["tokens"] as? [Int]).map { $0.count < 16000 } == true)
        let text = try CLI.run(["generate", "--model", long, "--prompt-tokens", "5", "--max-tokens", "16000", "--ignore-eos",
                                "--kv-cache-mb", "1", "--threads", "1"])
        #expect(text.stderr.contains("stopped: the KV cache holds"), "\(text.stderr)")
    }

    @Test("--seed -1 picks a random seed; --seed -2 is refused")
    func negativeSeed() throws {
        let r = try CLI.run(["generate", "--model", model, "--prompt-tokens", "5,6", "--max-tokens", "2", "--seed", "-1", "--output", "json"])
        #expect(r.status == 0, "\(r.stderr)")
        let bad = try CLI.run(["generate", "--model", model, "--prompt-tokens", "5,6", "--seed", "-2"])
        #expect(bad.status != 0 && bad.stderr.contains("--seed must be ≥ 0, or -1 for a random seed, got -2"), "\(bad.stderr)")
    }

    @Test("bench throughput prints vLLM's metric names as its last JSON line")
    func benchThroughput() throws {
        let r = try CLI.run(["bench", "throughput", "--model", model, "--requests", "6", "--concurrency", "3", "--prompt-length", "8",
                             "--max-tokens", "4", "--threads", "1"])
        #expect(r.status == 0, "\(r.stderr)")
        let o = try json(r)
        for key in ["requests_per_s", "output_tokens_per_s", "ttft_ms_p50", "ttft_ms_p99", "tpot_ms_p50", "tpot_ms_p99"] {
            #expect((o[key] as? Double ?? 0) > 0, "\(key)")
        }
        #expect(o["requests"] as? Int == 6 && o["concurrency"] as? Int == 3)
    }

    @Test("an impossible layout fails before any worker starts")
    func impossibleLayout() throws {
        let r = try CLI.run(["generate", "--model", model, "--prompt", "hi", "--tp", "5"])
        #expect(r.status != 0 && r.stderr.contains("TP 5 is larger than the model's 4 query heads"), "\(r.stderr)")
    }

    @Test("prompt token ids outside the vocabulary are rejected")
    func tokenOutOfRange() throws {
        let r = try CLI.run(["generate", "--model", model, "--prompt-tokens", "1,99999"])
        #expect(r.status != 0 && r.stderr.contains("99999") && r.stderr.contains("vocabulary"))
    }

    @Test("bench generate prints medians as its last JSON line")
    func bench() throws {
        let r = try CLI.run(["bench", "generate", "--model", model, "--prompt-length", "8", "--max-tokens", "4", "--repeat", "1"])
        #expect(r.status == 0, "\(r.stderr)")
        let o = try json(r)
        #expect((o["prefill_tokens_per_s"] as? Double ?? 0) > 0 && (o["decode_tokens_per_s"] as? Double ?? 0) > 0)
    }
}
