import ArgumentParser
import Engine
import Foundation
import Logging
import MetricsExporter
import Server
#if canImport(Glibc)
import Glibc
#endif

/// `cohort serve`: the OpenAI-compatible HTTP server (see `OpenAIServer`).
struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Serve the model over an OpenAI-compatible HTTP API (completions, chat, streaming, metrics).",
        discussion: """
            Endpoints: POST /v1/completions, POST /v1/chat/completions (stream: true sends \
            server-sent events), GET /v1/models, POST /tokenize, POST /detokenize, GET /health, \
            GET /metrics (Prometheus text). SIGTERM drains (running requests finish, new ones get \
            503), SIGINT stops at once. With --api-key (or COHORT_API_KEY) every /v1/ request \
            needs 'Authorization: Bearer KEY'.
            """)

    @OptionGroup var modelArguments: ModelArguments

    @Option(help: "Address to listen on (0.0.0.0 or :: for every interface).")
    var host = "127.0.0.1"

    @Option(help: "Port to listen on (0: any free port; the address is printed).")
    var port = 8000

    @Option(help: "Require this key as 'Authorization: Bearer KEY' on /v1/ (default: $COHORT_API_KEY; none: open).")
    var apiKey: String?

    @Option(help: "Most requests running at once per virtual engine.")
    var maxNumSeqs = 256

    @Option(help: "Most requests queued beyond the running places (--max-num-seqs per virtual engine); one more is answered 503 at once.")
    var maxWaitingRequests = 1024

    @Option(help: "The model name clients send and /v1/models lists (default: the file's name without .gguf).")
    var servedModelName: String?

    var key: String? {
        apiKey ?? getenv("COHORT_API_KEY").map { String(cString: $0) }.flatMap { $0.isEmpty ? nil : $0 }
    }

    func validate() throws {
        guard (0...65535).contains(port) else { throw ValidationError("--port must be between 0 and 65535, got \(port)") }
        guard maxNumSeqs >= 1 && maxNumSeqs <= 4096 else {
            throw ValidationError("--max-num-seqs must be between 1 and 4096, got \(maxNumSeqs)")
        }
        guard maxWaitingRequests >= 0 else { throw ValidationError("--max-waiting-requests must be ≥ 0, got \(maxWaitingRequests)") }
        if modelArguments.metricsPort != nil {
            throw ValidationError("serve answers GET /metrics on its own port; drop --metrics-port")
        }
        if let name = servedModelName, name.isEmpty { throw ValidationError("--served-model-name must not be empty") }
    }

    func run() async throws {
        LoggingSystem.bootstrap(StreamLogHandler.standardError)
        var logger = Logger(label: "cohort.serve")
        logger.logLevel = .info
        let registry = PrometheusExporter.bootstrapRegistry()
        let engine = try await modelArguments.load(maxSequences: maxNumSeqs, maxWaiting: maxWaitingRequests)
        let names = (servedModelName.map { [$0] } ?? []) + modelArguments.servedModelNames
        let server = OpenAIServer(
            engine: engine,
            configuration: .init(host: host, port: port, apiKey: key, modelNames: names),
            registry: registry, logger: logger)
        do {
            try await server.run { host, port in
                let shown = host.contains(":") ? "[\(host)]" : host
                Output.standardOutput("Serving \(names[0]) at http://\(shown):\(port)/v1 (SIGTERM drains, SIGINT stops)\n")
            }
        } catch is CancellationError {
            // SIGINT: everything stopped; nothing to report.
        } catch {
            throw CLIError("\(error)")
        }
    }
}
