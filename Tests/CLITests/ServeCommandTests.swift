import ExecutorTestSupport
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A `cohort serve` process on a tiny model, on a port the kernel chose.
final class ServeProcess {
    let process = Process()
    let port: Int
    private let output = Pipe()
    private let errors: FileHandle
    let errorPath: String

    init(_ arguments: [String], environment: [String: String] = [:]) throws {
        process.executableURL = CLI.binary
        process.arguments = ["serve", "--port", "0", "--threads", "1"] + arguments
        var env = ProcessInfo.processInfo.environment
        for (k, v) in environment { env[k] = v }
        process.environment = env
        errorPath = TemporaryFiles.path("serve.err")
        _ = FileManager.default.createFile(atPath: errorPath, contents: nil)
        errors = try FileHandle(forWritingTo: URL(fileURLWithPath: errorPath))
        process.standardOutput = output
        process.standardError = errors
        try process.run()
        // "Serving NAME at http://127.0.0.1:PORT/v1 …"
        var line = ""
        let reader = output.fileHandleForReading
        while !line.contains("\n") {
            let data = reader.availableData
            if data.isEmpty { break }
            line += String(decoding: data, as: UTF8.self)
        }
        guard let range = line.range(of: #":(\d+)/v1"#, options: .regularExpression),
              let port = Int(line[range].dropFirst().dropLast(3))
        else {
            process.terminate()
            throw CLIError("cohort serve printed no address: '\(line)' \(try String(contentsOfFile: errorPath, encoding: .utf8))")
        }
        self.port = port
    }

    var log: String { (try? String(contentsOfFile: errorPath, encoding: .utf8)) ?? "" }

    func signal(_ signal: Int32) { kill(process.processIdentifier, signal) }

    /// Waits for the process to exit, at most `seconds`; its status, or nil when it is still running.
    func waitForExit(seconds: Double) -> Int32? {
        let deadline = Date().addingTimeInterval(seconds)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        return process.isRunning ? nil : process.terminationStatus
    }

    deinit {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        TemporaryFiles.remove(errorPath)
    }
}

struct CLIError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A minimal HTTP/1.1 client over a socket (`Connection: close`, chunked bodies decoded),
/// so the tests see exactly the bytes the server sends.
struct HTTP {
    struct Response {
        var status: Int
        var headers: [String: String]
        var body: String
        var json: [String: Any]? { try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any] }
        /// The `data:` payloads of a server-sent-event stream.
        var events: [String] {
            body.components(separatedBy: "\n\n").compactMap { $0.hasPrefix("data: ") ? String($0.dropFirst(6)) : nil }
        }
    }

    static func connect(port: Int) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else {
            close(fd)
            throw CLIError("cannot connect to 127.0.0.1:\(port): \(String(cString: strerror(errno)))")
        }
        return fd
    }

    static func send(_ fd: Int32, method: String, path: String, body: String?, headers: [String: String]) {
        var head = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        for (k, v) in headers { head += "\(k): \(v)\r\n" }
        if let body { head += "Content-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n" }
        let bytes = Array((head + "\r\n" + (body ?? "")).utf8)
        _ = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    }

    static func request(
        port: Int, _ path: String, method: String = "POST", body: String? = nil, headers: [String: String] = [:]
    ) throws -> Response {
        let fd = try connect(port: port)
        defer { close(fd) }
        send(fd, method: method, path: path, body: body, headers: headers)
        return try parse(readAll(fd))
    }

    /// Everything the server sends until it closes the connection.
    static func readAll(_ fd: Int32, after start: [UInt8] = []) -> [UInt8] {
        var raw = start
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = read(fd, &chunk, chunk.count)
            if n <= 0 { break }
            raw += chunk[..<n]
        }
        return raw
    }

    static func parse(_ raw: [UInt8]) throws -> Response {
        let separator: [UInt8] = [13, 10, 13, 10]
        guard let split = (0...max(0, raw.count - 4)).first(where: { raw.count >= 4 && Array(raw[$0..<$0 + 4]) == separator }) else {
            throw CLIError("no HTTP head in '\(String(decoding: raw.prefix(200), as: UTF8.self))'")
        }
        let lines = String(decoding: raw[..<split], as: UTF8.self).components(separatedBy: "\r\n")
        let status = Int(lines[0].split(separator: " ")[1]) ?? 0
        var headers: [String: String] = [:]
        for line in lines.dropFirst() {
            if let colon = line.firstIndex(of: ":") {
                headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
            }
        }
        var body = Array(raw[(split + 4)...])
        if headers["transfer-encoding"] == "chunked" {
            var decoded: [UInt8] = [], i = 0
            // SIZE(hex) CRLF DATA CRLF …, ending with a zero size.
            while let end = body[i...].firstIndex(of: 13), let size = Int(String(decoding: body[i..<end], as: UTF8.self), radix: 16), size > 0,
                  end + 2 + size <= body.count {
                decoded += body[(end + 2)..<(end + 2 + size)]
                i = end + 2 + size + 2
                if i >= body.count { break }
            }
            body = decoded
        }
        return Response(status: status, headers: headers, body: String(decoding: body, as: UTF8.self))
    }
}

@Suite(.serialized) final class ServeCommandTests {
    let model: String
    /// A long context, so one request can run for seconds (tests that act while it runs).
    let longModel: String
    /// A request that runs for a few seconds on `longModel`.
    let long = #"{"prompt": [5], "max_tokens": 3000, "ignore_eos": true, "stream": true}"#

    init() throws {
        model = try TinyLlama().write()
        var tiny = TinyLlama()
        tiny.contextLength = 4096
        longModel = try tiny.write()
    }

    deinit {
        TemporaryFiles.remove(model)
        TemporaryFiles.remove(longModel)
    }

    func completion(_ server: ServeProcess, _ body: String, headers: [String: String] = [:]) throws -> HTTP.Response {
        try HTTP.request(port: server.port, "/v1/completions", body: body, headers: headers)
    }

    @Test("completions, chat and streams: greedy text equals generate's, streamed deltas add up to it, usage counts the tokens")
    func completionsAndStreams() throws {
        let server = try ServeProcess(["--model", model])
        let reference = try CLI.run(["generate", "--model", model, "--raw", "--prompt", " the", "--temperature", "0", "--max-tokens", "6",
                                     "--output", "json", "--threads", "1"])
        let expected = try #require(try JSONSerialization.jsonObject(with: Data(reference.stdout.utf8)) as? [String: Any])

        let whole = try completion(server, #"{"prompt": " the", "temperature": 0, "max_tokens": 6, "logprobs": 2}"#)
        #expect(whole.status == 200, "\(whole.body)")
        let choice = try #require((whole.json?["choices"] as? [[String: Any]])?.first)
        #expect(choice["text"] as? String == expected["text"] as? String)
        #expect(whole.json?["object"] as? String == "text_completion")
        let usage = try #require(whole.json?["usage"] as? [String: Int])
        let logprobs = try #require(choice["logprobs"] as? [String: Any])
        #expect(usage["completion_tokens"] == (logprobs["tokens"] as? [String])?.count)
        #expect(usage["completion_tokens"] == (expected["tokens"] as? [Int])?.count)
        #expect(usage["prompt_tokens"] == (expected["prompt_tokens"] as? [Int])?.count)
        #expect((logprobs["top_logprobs"] as? [[String: Double]])?.allSatisfy { $0.count <= 2 && !$0.isEmpty } == true)

        let stream = try completion(
            server, #"{"prompt": " the", "temperature": 0, "max_tokens": 6, "stream": true, "stream_options": {"include_usage": true}}"#)
        #expect(stream.status == 200 && stream.headers["content-type"] == "text/event-stream")
        #expect(stream.events.last == "[DONE]")
        let chunks = stream.events.dropLast().compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        let text = chunks.flatMap { ($0["choices"] as? [[String: Any]]) ?? [] }.compactMap { $0["text"] as? String }.joined()
        #expect(text == expected["text"] as? String)
        #expect((chunks.last?["usage"] as? [String: Int])?["completion_tokens"] == usage["completion_tokens"])

        // Chat: the role first, content deltas, the finish reason last.
        let chat = try HTTP.request(
            port: server.port, "/v1/chat/completions",
            body: #"{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "temperature": 0, "stream": true}"#)
        let deltas = chat.events.dropLast().compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
            .compactMap { ($0["choices"] as? [[String: Any]])?.first }
        #expect((deltas.first?["delta"] as? [String: Any])?["role"] as? String == "assistant")
        #expect(deltas.last?["finish_reason"] as? String != nil && deltas.dropLast().allSatisfy { $0["finish_reason"] is NSNull })
        let whole2 = try HTTP.request(
            port: server.port, "/v1/chat/completions",
            body: #"{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "temperature": 0}"#)
        let message = ((whole2.json?["choices"] as? [[String: Any]])?.first?["message"] as? [String: Any])?["content"] as? String
        #expect(message == deltas.compactMap { ($0["delta"] as? [String: Any])?["content"] as? String }.joined())

        // n choices, seeded: the same seed gives the same choices.
        let seeded = #"{"prompt": [5, 6], "max_tokens": 5, "n": 3, "seed": 11, "temperature": 1}"#
        let a = try completion(server, seeded), b = try completion(server, seeded)
        let texts = (a.json?["choices"] as? [[String: Any]])?.compactMap { $0["text"] as? String }
        #expect(texts?.count == 3 && texts == (b.json?["choices"] as? [[String: Any]])?.compactMap { $0["text"] as? String })

        let models = try HTTP.request(port: server.port, "/v1/models", method: "GET")
        #expect(((models.json?["data"] as? [[String: Any]])?.first?["id"] as? String)?.hasSuffix("tiny-llama") == true, "\(models.body)")
        #expect(server.log.contains("POST /v1/completions 200"))
    }

    @Test("bad requests get 400 with an OpenAI error body naming the field; the server survives every one")
    func badRequests() throws {
        let server = try ServeProcess(["--model", model])
        for (body, param, words) in [
            (#"{"prompt": "a", "temperature": -1}"#, "temperature", "must be a finite number ≥ 0, found -1.0"),
            (#"{"prompt": "a", "max_tokens": 2.5}"#, "max_tokens", "must be an integer, found 2.5"),
            (#"{"prompt": "a", "bogus": 1}"#, "bogus", "unknown field 'bogus'"),
            (#"{"prompt": [1, 99999]}"#, "prompt", "prompt token 99999 is outside the vocabulary"),
            (#"{"prompt": ["# + Array(repeating: "5", count: 300).joined(separator: ",") + "]}", "prompt", "the prompt has 300 tokens"),
            ("{", nil, "not JSON"),
        ] {
            let r = try completion(server, body)
            let error = try #require(r.json?["error"] as? [String: Any], "\(r.body)")
            #expect(r.status == 400, "\(r.body)")
            #expect((error["message"] as? String)?.contains(words) == true, "\(r.body)")
            #expect(error["param"] as? String == param && error["type"] as? String == "invalid_request_error", "\(r.body)")
        }
        let unknownModel = try completion(server, #"{"prompt": "a", "model": "gpt-9"}"#)
        #expect(unknownModel.status == 404)
        #expect(try HTTP.request(port: server.port, "/health", method: "GET").status == 200)
    }

    @Test("with an API key: a missing or wrong key is 401 on /v1/; health and metrics stay open")
    func apiKey() throws {
        let server = try ServeProcess(["--model", model], environment: ["COHORT_API_KEY": "sesame"])
        let missing = try completion(server, #"{"prompt": "a", "max_tokens": 1}"#)
        #expect(missing.status == 401 && (missing.json?["error"] as? [String: Any])?["type"] as? String == "AuthenticationError")
        #expect(try completion(server, #"{"prompt": "a", "max_tokens": 1}"#, headers: ["Authorization": "Bearer nope"]).status == 401)
        #expect(try completion(server, #"{"prompt": "a", "max_tokens": 1}"#, headers: ["Authorization": "Bearer sesame"]).status == 200)
        #expect(try HTTP.request(port: server.port, "/health", method: "GET").status == 200)
    }

    @Test("a client that disconnects mid-stream aborts its request: KV-cache usage returns to zero")
    func disconnect() throws {
        let server = try ServeProcess(["--model", longModel])
        let fd = try HTTP.connect(port: server.port)
        HTTP.send(fd, method: "POST", path: "/v1/completions", body: long, headers: [:])
        // Until the first event: the request runs (the head alone comes before it is scheduled).
        var received: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        let deadline = Date().addingTimeInterval(30)
        while !String(decoding: received, as: UTF8.self).contains("data:") && Date() < deadline {
            var ready = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&ready, 1, 100) > 0 else { continue }
            let n = read(fd, &chunk, chunk.count)
            guard n > 0 else { break }
            received += chunk[..<n]
        }
        let running = try HTTP.request(port: server.port, "/metrics", method: "GET").body
        close(fd)
        #expect(running.contains("cohort_num_requests_running 1"), "\(running.prefix(300))")
        var metrics = ""
        for _ in 0..<100 {
            metrics = try HTTP.request(port: server.port, "/metrics", method: "GET").body
            if metrics.contains("cohort_kv_cache_usage_perc 0.0") && metrics.contains("cohort_num_requests_running 0") { break }
            usleep(20_000)
        }
        #expect(metrics.contains("cohort_kv_cache_usage_perc 0.0"), "\(metrics)")
        #expect(metrics.contains(#"cohort_request_success_total{finished_reason="abort"} 1"#))
    }

    @Test("a full queue answers 503 at once")
    func queueFull() throws {
        let server = try ServeProcess(["--model", longModel, "--max-num-seqs", "1", "--max-waiting-requests", "0"])
        let fd = try HTTP.connect(port: server.port)
        defer { close(fd) }
        HTTP.send(fd, method: "POST", path: "/v1/completions", body: long, headers: [:])
        var chunk = [UInt8](repeating: 0, count: 4096)
        _ = read(fd, &chunk, chunk.count)
        // One running, none may wait: the next is refused.
        let refused = try completion(server, #"{"prompt": [6], "max_tokens": 2}"#)
        #expect(refused.status == 503, "\(refused.body)")
        #expect(((refused.json?["error"] as? [String: Any])?["message"] as? String)?.contains("queue is full") == true)
    }

    @Test("SIGTERM drains: the running request finishes, a new one gets 503, then the process exits 0")
    func drain() throws {
        let server = try ServeProcess(["--model", longModel])
        let fd = try HTTP.connect(port: server.port)
        defer { close(fd) }
        HTTP.send(fd, method: "POST", path: "/v1/completions", body: long, headers: [:])
        var chunk = [UInt8](repeating: 0, count: 65536)
        let n = read(fd, &chunk, chunk.count)
        let first = Array(chunk[..<max(0, n)])
        server.signal(SIGTERM)
        usleep(100_000)
        let refused = try? completion(server, #"{"prompt": [6], "max_tokens": 2}"#)
        let health = try? HTTP.request(port: server.port, "/health", method: "GET")
        let stream = try HTTP.parse(HTTP.readAll(fd, after: first))
        #expect(stream.events.last == "[DONE]")
        #expect(stream.events.contains { $0.contains(#""finish_reason":"length""#) }, "\(stream.body.suffix(300))")
        // Refused while draining (503), unless the stream already ended and the listener closed.
        #expect(refused == nil || refused?.status == 503, "\(refused?.body ?? "")")
        #expect(health == nil || health?.status == 503)
        #expect(server.waitForExit(seconds: 20) == 0, "\(server.log)")
    }

    @Test("SIGTERM after the server idled for seconds still drains and exits (libdispatch's signal sources lost it)")
    func signalAfterIdle() throws {
        let server = try ServeProcess(["--model", model])
        sleep(12)
        server.signal(SIGTERM)
        #expect(server.waitForExit(seconds: 10) == 0, "\(server.log)")
        #expect(server.log.contains("SIGTERM: draining"))
    }

    @Test("SIGINT stops at once: the running stream ends, the process and its workers exit")
    func interrupt() throws {
        let server = try ServeProcess(["--model", longModel, "--tp", "2"])
        let workers = Self.children(of: server.process.processIdentifier)
        #expect(workers.count == 1)
        let fd = try HTTP.connect(port: server.port)
        defer { close(fd) }
        HTTP.send(fd, method: "POST", path: "/v1/completions", body: long, headers: [:])
        var chunk = [UInt8](repeating: 0, count: 65536)
        _ = read(fd, &chunk, chunk.count)
        let start = Date()
        server.signal(SIGINT)
        while read(fd, &chunk, chunk.count) > 0 {}
        #expect(server.waitForExit(seconds: 5) != nil, "\(server.log)")
        #expect(Date().timeIntervalSince(start) < 5)
        for pid in workers {
            let state = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8))?.split(separator: ")").last?.split(separator: " ").first
            #expect(state == nil || state == "Z", "worker \(pid) is still running")
        }
    }

    @Test("a worker killed mid-request: the request fails with 500 naming its rank, /health says 503, the server answers on")
    func workerDeath() throws {
        let server = try ServeProcess(["--model", longModel, "--tp", "2"])
        let fd = try HTTP.connect(port: server.port)
        defer { close(fd) }
        HTTP.send(fd, method: "POST", path: "/v1/completions", body: #"{"prompt": [5], "max_tokens": 3000, "ignore_eos": true}"#, headers: [:])
        usleep(300_000)
        let workers = Self.children(of: server.process.processIdentifier)
        #expect(workers.count == 1)
        for pid in workers { kill(pid, SIGKILL) }
        let failed = try HTTP.parse(HTTP.readAll(fd))
        #expect(failed.status == 500, "\(failed.body)")
        #expect(((failed.json?["error"] as? [String: Any])?["message"] as? String)?.contains("worker rank 1") == true, "\(failed.body)")
        let health = try HTTP.request(port: server.port, "/health", method: "GET")
        #expect(health.status == 503 && health.body.contains("rank 1"), "\(health.body)")
        #expect(try completion(server, #"{"prompt": [5], "max_tokens": 2}"#).status == 500)
        #expect(try HTTP.request(port: server.port, "/v1/models", method: "GET").status == 200)
        server.signal(SIGINT)
        #expect(server.waitForExit(seconds: 10) != nil)
    }

    /// Processes whose parent is `pid`.
    static func children(of pid: Int32) -> [Int32] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap(Int32.init).filter { child in
            guard let stat = try? String(contentsOfFile: "/proc/\(child)/stat", encoding: .utf8),
                  let close = stat.lastIndex(of: ")")
            else { return false }
            let fields = stat[stat.index(close, offsetBy: 2)...].split(separator: " ")
            return fields.count > 2 && Int32(fields[1]) == pid && fields[0] != "Z"
        }
    }
}
