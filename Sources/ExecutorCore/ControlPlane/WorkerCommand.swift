/// What the driver broadcasts to its worker processes. Steps travel as `StepRequest`
/// (tag CSTP); the rest as small control messages (tag CCTL): a one-byte kind, then the
/// kind's fields.
///
/// The start-up commands follow the seed's init sequence, after a pre-flight: `preflight`
/// (the model file and memory), `initialize` (the worker applies the context its
/// `WorkerConfiguration` carried), `initializeDevice`, `loadModel`, `availableKVBlocks`
/// (answered with `WorkerReply.blocks`), `initializeCache`.
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
    /// Check the model file against the driver's and the memory for the shard and KV budget.
    case preflight
    /// Apply the context (environment) of the worker's configuration.
    case initialize
    case initializeDevice
    case loadModel
    case availableKVBlocks
    case initializeCache(blocksPerVirtualEngine: Int, virtualEngines: Int)

    static let controlTag: StaticString = "CCTL"

    /// The kinds, as their one-byte codes on the wire.
    public enum Kind: UInt8, Sendable {
        case step = 0, healthCheck, stop, stopLoop, startLoop, initialize, initializeDevice, loadModel, availableKVBlocks,
             initializeCache, preflight
    }

    public var kind: Kind {
        switch self {
        case .step: .step
        case .healthCheck: .healthCheck
        case .stop: .stop
        case .stopLoop: .stopLoop
        case .startLoop: .startLoop
        case .initialize: .initialize
        case .initializeDevice: .initializeDevice
        case .loadModel: .loadModel
        case .availableKVBlocks: .availableKVBlocks
        case .initializeCache: .initializeCache
        case .preflight: .preflight
        }
    }

    public func encode(into w: inout WireWriter) {
        if case let .step(request) = self {
            request.encode(into: &w)
            return
        }
        w.reset()
        w.header(tag: Self.controlTag)
        w.integer(kind.rawValue)
        switch self {
        case let .initializeCache(blocks, engines):
            w.integer(Int64(blocks))
            w.integer(Int32(engines))
        default:
            break
        }
    }

    public init(decoding bytes: UnsafeRawBufferPointer) throws(WireError) {
        let kind = try Self.kind(of: bytes)
        if kind == .step {
            self = .step(try StepRequest(decoding: bytes))
            return
        }
        var r = WireReader(bytes)
        try r.header(tag: "CCTL")
        _ = try r.integer(UInt8.self, reading: "command kind")
        switch kind {
        case .step: preconditionFailure("decoded above")
        case .healthCheck: self = .healthCheck
        case .stop: self = .stop
        case .stopLoop: self = .stopLoop
        case .startLoop: self = .startLoop
        case .initializeDevice: self = .initializeDevice
        case .loadModel: self = .loadModel
        case .availableKVBlocks: self = .availableKVBlocks
        case .initialize: self = .initialize
        case .preflight: self = .preflight
        case .initializeCache:
            let blocks = try r.integer(Int64.self, reading: "KV blocks per virtual engine")
            let engines = try r.integer(Int32.self, reading: "virtual engines")
            guard blocks >= 0, engines >= 1 else {
                throw .invalidValue(offset: 7, reading: "cache size", found: "\(blocks) blocks × \(engines) virtual engines")
            }
            self = .initializeCache(blocksPerVirtualEngine: Int(blocks), virtualEngines: Int(engines))
        }
        try r.finish()
    }

    /// Which command a message holds, without decoding a step (workers decode steps into
    /// a reused `StepRequest`).
    public static func kind(of bytes: UnsafeRawBufferPointer) throws(WireError) -> Kind {
        guard bytes.count >= 4 else { throw .truncated(offset: 0, needed: 4, size: bytes.count, reading: "message tag") }
        if bytes.prefix(4).elementsEqual("CSTP".utf8) { return .step }
        var r = WireReader(bytes)
        try r.header(tag: "CCTL")
        let code = try r.integer(UInt8.self, reading: "command kind")
        guard code != 0, let kind = Kind(rawValue: code) else {
            throw .invalidValue(offset: 6, reading: "command kind", found: "\(code), expected 1 to \(Kind.preflight.rawValue)")
        }
        return kind
    }
}

extension WorkerContext {
    func encode(into w: inout WireWriter) {
        w.integer(Int32(rank))
        w.integer(Int32(localRank))
        w.integer(Int32(worldSize))
        w.integer(Int32(layout.tensorParallel))
        w.integer(Int32(layout.pipelineParallel))
        w.string(rendezvous)
        let keys = environment.keys.sorted()
        w.count(keys.count)
        for k in keys {
            w.string(k)
            w.string(environment[k]!)
        }
    }

    init(decoding r: inout WireReader) throws(WireError) {
        let rank = Int(try r.integer(Int32.self, reading: "rank"))
        let localRank = Int(try r.integer(Int32.self, reading: "local rank"))
        let worldSize = Int(try r.integer(Int32.self, reading: "world size"))
        let start = r.offset
        let tp = Int(try r.integer(Int32.self, reading: "tensor-parallel size"))
        let pp = Int(try r.integer(Int32.self, reading: "pipeline-parallel size"))
        let layout: ParallelLayout
        do { layout = try ParallelLayout(tensorParallel: tp, pipelineParallel: pp) } catch {
            throw .invalidValue(offset: start, reading: "parallel layout", found: error.description)
        }
        guard worldSize == layout.worldSize, rank >= 0, rank < worldSize, localRank >= 0, localRank < worldSize else {
            throw .invalidValue(
                offset: start, reading: "worker context",
                found: "rank \(rank), local rank \(localRank), world size \(worldSize) for \(layout)")
        }
        let rendezvous = try r.string(reading: "rendezvous")
        let n = try r.count(elementSize: 8, reading: "environment")
        var environment: [String: String] = [:]
        for _ in 0..<n {
            let key = try r.string(reading: "environment name")
            environment[key] = try r.string(reading: "environment value of \(key)")
        }
        self.init(rank: rank, localRank: localRank, worldSize: worldSize, layout: layout, rendezvous: rendezvous, environment: environment)
    }
}

/// A worker's answer to a control message (steps are answered with `StepOutput`).
public enum WorkerReply: Sendable, Equatable {
    case ok(rank: Int32)
    case failed(rank: Int32, message: String)
    /// The answer to `availableKVBlocks`.
    case blocks(rank: Int32, count: Int64)

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
        case let .blocks(rank, count):
            w.integer(rank)
            w.integer(UInt8(2))
            w.integer(count)
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
        case 2: self = .blocks(rank: rank, count: try r.integer(Int64.self, reading: "KV blocks"))
        default: throw .invalidValue(offset: 10, reading: "reply kind", found: "\(kind), expected 0 to 2")
        }
        try r.finish()
    }
}
