import CoreMetrics
public import Prometheus
import Transports
#if canImport(Glibc)
import Glibc
#endif

/// Serves every swift-metrics value the process records as Prometheus text at
/// `GET /metrics`, from a thread of its own (so a scrape is answered while a step runs).
///
/// `bootstrap` installs the Prometheus backend for swift-metrics (once per process, as
/// swift-metrics requires) and starts listening; the executor and engine record through
/// swift-metrics and never know a backend exists. Plain HTTP/1.1, one request per
/// connection: what a Prometheus server or `curl` sends.
public final class PrometheusExporter: Sendable {
    public let registry: PrometheusCollectorRegistry
    public let host: String
    public let port: UInt16
    private let fd: Int32

    /// Installs the Prometheus backend and serves it on `host:port` (port 0: the kernel picks).
    /// - Throws: `ExporterError` naming the address when it cannot listen.
    public static func bootstrap(host: String = "127.0.0.1", port: UInt16) throws -> PrometheusExporter {
        let exporter = try PrometheusExporter(registry: bootstrapRegistry(), host: host, port: port)
        exporter.serve()
        return exporter
    }

    /// Installs the Prometheus backend for swift-metrics and returns its registry, for a
    /// server that answers `GET /metrics` itself (`cohort serve`). Once per process.
    public static func bootstrapRegistry() -> PrometheusCollectorRegistry {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        // Step latencies are micro- to milliseconds, requests seconds: buckets from 10 µs to 60 s.
        factory.defaultDurationHistogramBuckets = [
            .microseconds(10), .microseconds(25), .microseconds(50), .microseconds(100), .microseconds(250), .microseconds(500),
            .milliseconds(1), .milliseconds(2.5), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
            .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2.5), .seconds(10), .seconds(30), .seconds(60),
        ]
        MetricsSystem.bootstrap(factory)
        return registry
    }

    init(registry: PrometheusCollectorRegistry, host: String, port: UInt16) throws {
        self.registry = registry
        self.host = host
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw ExporterError("cannot open a socket for the metrics endpoint: \(String(cString: strerror(errno)))") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        guard inet_pton(AF_INET, host, &address.sin_addr) == 1 else {
            close(fd)
            throw ExporterError("the metrics endpoint needs an IPv4 address, found '\(host)'")
        }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(fd, 16) == 0 else {
            let e = errno
            close(fd)
            throw ExporterError("cannot serve metrics on \(host):\(port): \(String(cString: strerror(e)))")
        }
        var actual = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &actual) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        self.fd = fd
        self.port = UInt16(bigEndian: actual.sin_port)
    }

    private func serve() {
        let fd = self.fd, registry = self.registry
        Threads.detach {
            while true {
                let client = accept(fd, nil, nil)
                if client < 0 {
                    if errno == EINTR || errno == ECONNABORTED { continue }
                    return
                }
                Self.answer(client, registry: registry)
                close(client)
            }
        }
    }

    /// Reads one request (at most 8 KB, 2 s) and answers it.
    static func answer(_ client: Int32, registry: PrometheusCollectorRegistry) {
        var timeout = timeval(tv_sec: 2, tv_usec: 0)
        setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var request: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 2048)
        while request.count < 8192 {
            let n = read(client, &chunk, chunk.count)
            if n <= 0 { break }
            request += chunk[..<n]
            if request.suffix(4).elementsEqual("\r\n\r\n".utf8) || containsHeaderEnd(request) { break }
        }
        let line = String(decoding: request.prefix { $0 != 13 && $0 != 10 }, as: UTF8.self)
        let parts = line.split(separator: " ")
        let (status, type, body): (String, String, [UInt8])
        if parts.count >= 2, parts[0] == "GET", parts[1] == "/metrics" || parts[1].hasPrefix("/metrics?") {
            (status, type, body) = ("200 OK", "text/plain; version=0.0.4; charset=utf-8", registry.emitToBuffer())
        } else {
            (status, type, body) = ("404 Not Found", "text/plain; charset=utf-8", Array("expected GET /metrics, found '\(line)'\n".utf8))
        }
        let head = "HTTP/1.1 \(status)\r\nContent-Type: \(type)\r\nContent-Length: \(body.count)\r\nConnection: close\r\n\r\n"
        writeAll(client, Array(head.utf8) + body)
    }

    static func containsHeaderEnd(_ bytes: [UInt8]) -> Bool {
        guard bytes.count >= 4 else { return false }
        for i in 0...(bytes.count - 4) where bytes[i] == 13 && bytes[i + 1] == 10 && bytes[i + 2] == 13 && bytes[i + 3] == 10 {
            return true
        }
        return false
    }

    static func writeAll(_ fd: Int32, _ bytes: [UInt8]) {
        var sent = 0
        while sent < bytes.count {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + sent, $0.count - sent) }
            if n <= 0 { return }
            sent += n
        }
    }
}

/// The metrics endpoint cannot start; the message names the address.
public struct ExporterError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
