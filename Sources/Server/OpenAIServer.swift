public import Engine
import Executor
import ExecutorCore
import Foundation
import Hummingbird
public import Logging
import ModelRunner
import Transports
import NIOCore
public import Prometheus
public import ServiceLifecycle

import ServingAPI
import Synchronization

/// `cohort serve`: the OpenAI-compatible HTTP API over one `Engine`.
///
/// Every request joins the engine's continuous batching: a request's choices are engine
/// requests like any other, and its output streams back as server-sent events as the
/// engine produces it. The server runs three services in one swift-service-lifecycle group:
/// the engine (steps), the HTTP application, and a drain gate. SIGTERM shuts them down in
/// reverse order: the gate answers new requests 503 and waits for the running ones, then
/// the listener closes, then the engine shuts its workers down. SIGINT cancels all three
/// at once: running requests end (`abort`), the workers stop, the process exits.
///
/// Failures map to status codes as vLLM's do: a bad field 400 (OpenAI's error body naming
/// the field), a wrong or missing key 401, an unknown model 404, a full queue or a
/// draining server 503, a failed worker 500 naming its rank (and `/health` 503 from then on).
public struct OpenAIServer: Sendable {
    public struct Configuration: Sendable {
        public var host: String
        public var port: Int
        /// Required as `Authorization: Bearer KEY` on `/v1/…` when set.
        public var apiKey: String?
        /// Names a request's `model` may use; the first is the one `/v1/models` lists.
        public var modelNames: [String]
        /// Largest request body accepted.
        public var maxBodyBytes: Int

        public init(host: String = "127.0.0.1", port: Int = 8000, apiKey: String? = nil, modelNames: [String], maxBodyBytes: Int = 32 << 20) {
            self.host = host
            self.port = port
            self.apiKey = apiKey
            self.modelNames = modelNames
            self.maxBodyBytes = maxBodyBytes
        }
    }

    let engine: Engine
    let configuration: Configuration
    let registry: PrometheusCollectorRegistry?
    let logger: Logger
    let gate = DrainGate()
    let created = Int(Date().timeIntervalSince1970)

    public init(engine: Engine, configuration: Configuration, registry: PrometheusCollectorRegistry?, logger: Logger) {
        self.engine = engine
        self.configuration = configuration
        self.registry = registry
        self.logger = logger
    }

    /// Serves until SIGTERM (drain) or SIGINT (stop now; so does a second SIGTERM).
    /// `onListening` gets the bound address (the port the kernel chose when `port` is 0).
    ///
    /// Signals come through `SignalPipe`, not the service group's own signal handling: that
    /// rests on libdispatch's signal sources, which on Linux lost a SIGTERM or SIGINT that
    /// arrived after the server had been idle for some seconds (it acted only on the next
    /// one).
    public func run(onListening: @escaping @Sendable (String, Int) async -> Void = { _, _ in }) async throws {
        let group = ServiceGroup(
            configuration: .init(services: services(onListening: onListening), gracefulShutdownSignals: [], cancellationSignals: [], logger: logger))
        let running = Task { try await group.run() }
        let draining = Mutex(false)
        let logger = logger
        do {
            try SignalPipe.forward([SIGTERM, SIGINT]) { signal in
            let drainFirst = signal == SIGTERM && !draining.withLock { let was = $0; $0 = true; return was }
            if drainFirst {
                logger.info("SIGTERM: draining (running requests finish, new ones get 503; SIGINT or another SIGTERM stops at once)")
                Task { await group.triggerGracefulShutdown() }
            } else {
                logger.info("\(signal == SIGINT ? "SIGINT" : "SIGTERM"): stopping now")
                running.cancel()
            }
            }
        } catch {
            running.cancel()
            _ = try? await running.value
            throw error
        }
        try await running.value
    }

    /// The engine, the HTTP application and the drain gate, in start order (shutdown runs
    /// in reverse). For tests and embedders that run their own service group.
    public func services(onListening: @escaping @Sendable (String, Int) async -> Void = { _, _ in }) -> [ServiceGroupConfiguration.ServiceConfiguration] {
        let app = Application(
            router: makeRouter(),
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "cohort"),
            onServerRunning: { channel in
                let port = channel.localAddress?.port ?? configuration.port
                await onListening(configuration.host, port)
            },
            logger: logger)
        return [
            .init(service: engine),
            .init(service: app),
            .init(service: gate),
        ]
    }

    // MARK: - Routes

    func makeRouter() -> Router<BasicRequestContext> {
        let router = Router()
        router.add(middleware: RequestLog(logger: logger))
        if let key = configuration.apiKey { router.add(middleware: APIKeyCheck(key: key)) }
        router.get("/health") { _, _ in await self.health() }
        router.get("/metrics") { _, _ in self.metrics() }
        router.get("/v1/models") { _, _ in self.json(OpenAI.ModelList(data: self.models)) }
        router.post("/v1/completions") { request, _ in await self.generate(request, endpoint: .completions) }
        router.post("/v1/chat/completions") { request, _ in await self.generate(request, endpoint: .chatCompletions) }
        router.post("/tokenize") { request, _ in await self.tokenize(request) }
        router.post("/detokenize") { request, _ in await self.detokenize(request) }
        return router
    }

    var models: [OpenAI.Model] {
        [OpenAI.Model(id: configuration.modelNames[0], created: created, max_model_len: engine.contextLimit)]
    }

    /// 200 while every rank is alive; 503 naming the failed or stuck rank, or while draining.
    func health() async -> Response {
        if gate.isDraining { return text("draining: finishing running requests, admitting none\n", status: .serviceUnavailable) }
        if let failure = await engine.failureReason { return text("failed: \(failure)\n", status: .serviceUnavailable) }
        let ranks = await engine.health
        if let bad = ranks.first(where: { !$0.isAlive }) { return text("unhealthy: \(bad)\n", status: .serviceUnavailable) }
        return text("ok: \(max(1, ranks.count)) ranks alive\n", status: .ok)
    }

    func metrics() -> Response {
        guard let registry else { return text("no metrics backend in this process\n", status: .notFound) }
        var bytes: [UInt8] = []
        registry.emit(into: &bytes)
        return Response(
            status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
            body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
    }

    // MARK: - Helpers

    func text(_ s: String, status: HTTPResponse.Status) -> Response {
        Response(status: status, headers: [.contentType: "text/plain; charset=utf-8"], body: .init(byteBuffer: ByteBuffer(string: s)))
    }

    func json(_ value: some Encodable, status: HTTPResponse.Status = .ok) -> Response {
        Response(
            status: status, headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(string: OpenAI.json(value))))
    }

    func error(_ error: RequestError) -> Response { Self.errorResponse(error) }

    /// An OpenAI error body with the error's status.
    static func errorResponse(_ error: RequestError) -> Response {
        Response(
            status: HTTPResponse.Status(code: error.status), headers: [.contentType: "application/json"],
            body: .init(byteBuffer: ByteBuffer(string: OpenAI.json(OpenAI.ErrorBody(error)))))
    }

    /// The engine's refusal as an HTTP error: 400 for the request's own fault, 503 when
    /// full or draining, 500 naming the rank when a worker failed.
    static func requestError(_ error: GenerationError) -> RequestError {
        switch error.kind {
        case .invalidRequest: RequestError(error.description)
        case .queueFull, .unavailable: RequestError(error.description, status: 503, type: "ServiceUnavailableError")
        case .engineFailed: RequestError(error.description, status: 500, type: "InternalServerError")
        }
    }

    /// The body, or an error answer.
    func body(of request: inout Request) async -> Result<ByteBuffer, RequestError> {
        do {
            return .success(try await request.collectBody(upTo: configuration.maxBodyBytes))
        } catch {
            return .failure(RequestError(
                "the request body is larger than \(configuration.maxBodyBytes) bytes or could not be read: \(error)", status: 413))
        }
    }
}

/// Answers new generation requests 503 once SIGTERM arrived, and holds the shutdown of the
/// services started before it (the listener, then the engine) until the running requests
/// are done.
final class DrainGate: Service, Sendable {
    private let state = Mutex((draining: false, running: 0))

    var isDraining: Bool { state.withLock { $0.draining } }

    /// Counts a request in; false (answer 503) while draining.
    func enter() -> Bool {
        state.withLock {
            guard !$0.draining else { return false }
            $0.running += 1
            return true
        }
    }

    func leave() { state.withLock { $0.running -= 1 } }

    func run() async throws {
        // Until SIGTERM (or cancellation, which ends the whole group at once anyway).
        try? await gracefulShutdown()
        state.withLock { $0.draining = true }
        while state.withLock({ $0.running }) > 0 && !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(20))
        }
    }
}

/// One log line per request: method, path, status and time to the response head.
struct RequestLog: RouterMiddleware {
    typealias Context = BasicRequestContext
    let logger: Logger

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let start = ContinuousClock.now
        do {
            let response = try await next(request, context)
            logger.info("\(request.method) \(request.uri.path) \(response.status.code) \(Self.elapsed(since: start))")
            return response
        } catch {
            let status = (error as? any HTTPResponseError)?.status.code ?? 500
            logger.info("\(request.method) \(request.uri.path) \(status) \(Self.elapsed(since: start)) \(error)")
            throw error
        }
    }

    static func elapsed(since start: ContinuousClock.Instant) -> String {
        let d = ContinuousClock.now - start
        let ms = Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15
        return String(format: "%.1f ms", ms)
    }
}

/// `Authorization: Bearer KEY` on every `/v1/…` path (health, metrics and tokenizing stay open, as in vLLM).
struct APIKeyCheck: RouterMiddleware {
    typealias Context = BasicRequestContext
    let key: String

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard request.uri.path.hasPrefix("/v1/") else { return try await next(request, context) }
        let given = request.headers[.authorization]
        guard let given, given == "Bearer \(key)" else {
            return OpenAIServer.errorResponse(RequestError(
                given == nil ? "no API key: send the header 'Authorization: Bearer KEY'" : "the API key is wrong",
                status: 401, type: "AuthenticationError"))
        }
        return try await next(request, context)
    }
}
