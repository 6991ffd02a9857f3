/// What the driver broadcasts to its worker processes. Steps travel as `StepRequest`
/// (tag CSTP); the rest as small control messages (tag CCTL).
public enum WorkerCommand: Sendable, Equatable {
    /// Run one step; every worker answers with a `StepOutput`.
    case step(StepRequest)
    /// Answer `WorkerReply.ok` if able to work.
    case healthCheck
    /// Leave the execution loop and exit cleanly.
    case stop
    /// Pause the execution loop: the worker stays up, answers health checks and refuses
    /// steps until `startLoop` (the seed's `stop_remote_worker_execution_loop`).
    case stopLoop
    /// Resume the execution loop; step numbers continue where they were.
    case startLoop

    static let controlTag: StaticString = "CCTL"

    public func encode(into w: inout WireWriter) {
        switch self {
        case let .step(request):
            request.encode(into: &w)
        case .healthCheck, .stop, .stopLoop, .startLoop:
            w.reset()
            w.header(tag: Self.controlTag)
            w.integer(controlCode)
        }
    }

    private var controlCode: UInt8 {
        switch self {
        case .step: 0
        case .healthCheck: 1
        case .stop: 2
        case .stopLoop: 3
        case .startLoop: 4
        }
    }

    public init(decoding bytes: UnsafeRawBufferPointer) throws(WireError) {
        switch try Self.kind(of: bytes) {
        case .step: self = .step(try StepRequest(decoding: bytes))
        case .healthCheck: self = .healthCheck
        case .stop: self = .stop
        case .stopLoop: self = .stopLoop
        case .startLoop: self = .startLoop
        }
    }

    /// Which command a message holds, without decoding a step (workers decode steps into
    /// a reused `StepRequest`).
    public enum Kind: Sendable { case step, healthCheck, stop, stopLoop, startLoop }

    public static func kind(of bytes: UnsafeRawBufferPointer) throws(WireError) -> Kind {
        guard bytes.count >= 4 else { throw .truncated(offset: 0, needed: 4, size: bytes.count, reading: "message tag") }
        if bytes.prefix(4).elementsEqual("CSTP".utf8) { return .step }
        var r = WireReader(bytes)
        try r.header(tag: "CCTL")
        let kind = try r.integer(UInt8.self, reading: "command kind")
        try r.finish()
        switch kind {
        case 1: return .healthCheck
        case 2: return .stop
        case 3: return .stopLoop
        case 4: return .startLoop
        default: throw .invalidValue(offset: 6, reading: "command kind", found: "\(kind), expected 1 to 4")
        }
    }
}

/// A worker's answer to a control message (steps are answered with `StepOutput`).
public enum WorkerReply: Sendable, Equatable {
    case ok(rank: Int32)
    case failed(rank: Int32, message: String)

    static let tag: StaticString = "CRPL"

    public func encode(into w: inout WireWriter) {
        w.reset()
        w.header(tag: Self.tag)
        switch self {
        case let .ok(rank):
            w.integer(rank)
            w.integer(UInt8(0))
        case let .failed(rank, message):
            w.integer(rank)
            w.integer(UInt8(1))
            w.string(message)
        }
    }

    public init(decoding bytes: UnsafeRawBufferPointer) throws(WireError) {
        var r = WireReader(bytes)
        try r.header(tag: "CRPL")
        let rank = try r.integer(Int32.self, reading: "rank")
        let kind = try r.integer(UInt8.self, reading: "reply kind")
        switch kind {
        case 0: self = .ok(rank: rank)
        case 1: self = .failed(rank: rank, message: try r.string(reading: "error message"))
        default: throw .invalidValue(offset: 10, reading: "reply kind", found: "\(kind), expected 0 or 1")
        }
        try r.finish()
    }
}
