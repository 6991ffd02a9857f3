/// How a worker joins its driver, in three typed messages on one authenticated connection
/// to the driver's rendezvous (the worker starts knowing only that address, the instance
/// secret and a join token):
///
///     worker ── WorkerHello (CHEL) ─────────▶ driver     who and where I am, what I can do
///     worker ◀── WorkerConfiguration (CCFG) ── driver     everything I run with
///     worker ◀──── Heartbeat (CHBT) ─────────▶ driver     both ways, until the end
///
/// The connection stays open as the worker's link to the driver: heartbeats both ways from
/// threads that compute cannot block; end-of-file or silence means the other side is gone.
public struct WorkerHello: Sendable, Equatable {
    /// The launcher's index for this worker (its join token): the driver maps it to a rank.
    public var joinToken: Int
    public var processID: Int32
    /// The build this worker runs (Cohort's version and its executable's size); the driver
    /// refuses another.
    public var build: String
    public var wireVersion: UInt16
    /// The machine it runs on (host name) and the address it reached the driver from.
    public var machineID: String
    public var address: String
    /// Devices it may use: CPU ids for CPU workers.
    public var deviceIDs: [Int]

    public init(
        joinToken: Int, processID: Int32, build: String, wireVersion: UInt16 = Wire.version, machineID: String,
        address: String, deviceIDs: [Int]
    ) {
        self.joinToken = joinToken
        self.processID = processID
        self.build = build
        self.wireVersion = wireVersion
        self.machineID = machineID
        self.address = address
        self.deviceIDs = deviceIDs
    }

    public func encode(into w: inout WireWriter) {
        w.reset()
        w.header(tag: "CHEL")
        w.integer(Int32(joinToken))
        w.integer(processID)
        w.string(build)
        w.integer(wireVersion)
        w.string(machineID)
        w.string(address)
        w.integers(deviceIDs.map(Int32.init))
    }

    /// Decodes a hello. Its header is read leniently: a worker of another build must be
    /// named as such, not refused as a bad message.
    public init(decoding bytes: UnsafeRawBufferPointer) throws(WireError) {
        var r = WireReader(bytes)
        try r.header(tag: "CHEL", anyVersion: true)
        joinToken = Int(try r.integer(Int32.self, reading: "join token"))
        processID = try r.integer(Int32.self, reading: "process id")
        build = try r.string(reading: "build")
        wireVersion = try r.integer(UInt16.self, reading: "wire version")
        machineID = try r.string(reading: "machine id")
        address = try r.string(reading: "address")
        deviceIDs = try r.integers(Int32.self, reading: "device ids").map(Int.init)
        try r.finish()
    }
}

/// Everything a worker runs with, sent once by the driver after placement: its context, the
/// model shard to load, the channels to attach to, and how to watch the driver.
public struct WorkerConfiguration: Sendable, Equatable {
    /// Rank, local rank, world size, layout, rendezvous, environment (instance id, CPU set).
    public var context: WorkerContext
    /// The model shard to serve; nil: answer steps without a model (control-plane benchmark).
    public var model: ModelShard?
    /// Where commands come from and replies go.
    public var commands: CommandChannelAddress
    /// This rank's tensor-parallel group (TP > 1).
    public var communicator: CommunicatorAddress?
    /// Hidden-state channels from the previous stage and to the next: a shared-memory ring
    /// when both stages run on the driver's machine, else a TCP link met at a rendezvous.
    public var previousStage: CommunicatorAddress?
    public var nextStage: CommunicatorAddress?
    /// The gate that limits how many ranks load at once: shared memory when every rank runs
    /// on the driver's machine, else a TCP gate the driver serves.
    public var loadGate: CommunicatorAddress?
    /// How often each side sends a heartbeat, and how long a silent driver is tolerated.
    public var heartbeatInterval: Double
    public var driverSilenceLimit: Double

    /// One rank's part of a model.
    public struct ModelShard: Sendable, Equatable {
        public var path: String
        /// The file as the driver sees it: a worker with another size or header refuses to load.
        public var fileSize: Int64
        public var headerDigest: UInt64
        public var threads: Int
        public var precise: Bool
        public var kvCacheMiB: Int
        public var maxBatchTokens: Int
        /// Layers per pipeline stage (nil: the even split).
        public var pipelineLayers: [Int]?
        /// Bytes this rank's weights take (for the memory pre-flight).
        public var shardBytes: Int64

        public init(
            path: String, fileSize: Int64, headerDigest: UInt64, threads: Int, precise: Bool, kvCacheMiB: Int, maxBatchTokens: Int,
            pipelineLayers: [Int]?, shardBytes: Int64
        ) {
            self.path = path
            self.fileSize = fileSize
            self.headerDigest = headerDigest
            self.threads = threads
            self.precise = precise
            self.kvCacheMiB = kvCacheMiB
            self.maxBatchTokens = maxBatchTokens
            self.pipelineLayers = pipelineLayers
            self.shardBytes = shardBytes
        }
    }

    public enum CommandChannelAddress: Sendable, Equatable {
        /// Shared-memory rings: the broadcast ring, this worker's reply ring, and every
        /// reply ring of the group (removed by whichever worker finds the driver gone).
        case rings(broadcast: String, reply: String, group: [String])
        /// A TCP connection to the driver's command listener.
        case tcp(host: String, port: UInt16)
    }

    /// Where a group of ranks meets: a shared-memory name (ranks on the driver's machine) or
    /// a TCP rendezvous the driver serves (ranks anywhere).
    public enum CommunicatorAddress: Sendable, Equatable {
        case sharedMemory(name: String)
        /// The group's TCP rendezvous.
        case tcp(host: String, port: UInt16)
        /// MPI_COMM_WORLD split by `color` (every rank is a process of one MPI world).
        case mpi(color: Int)

        static func encode(_ address: CommunicatorAddress?, into w: inout WireWriter) {
            switch address {
            case nil: w.integer(UInt8(0))
            case let .sharedMemory(name)?:
                w.integer(UInt8(1))
                w.string(name)
            case let .tcp(host, port)?:
                w.integer(UInt8(2))
                w.string(host)
                w.integer(port)
            case let .mpi(color)?:
                w.integer(UInt8(3))
                w.integer(UInt32(color))
            }
        }

        static func decode(_ r: inout WireReader, reading what: String) throws(WireError) -> CommunicatorAddress? {
            let at = r.offset
            switch try r.integer(UInt8.self, reading: "\(what) kind") {
            case 0: return nil
            case 1: return .sharedMemory(name: try r.string(reading: "\(what) name"))
            case 2: return .tcp(host: try r.string(reading: "\(what) host"), port: try r.integer(UInt16.self, reading: "\(what) port"))
            case 3: return .mpi(color: Int(try r.integer(UInt32.self, reading: "\(what) MPI color")))
            case let kind: throw .invalidValue(offset: at, reading: "\(what) kind", found: "\(kind), expected 0 (none), 1 (shared memory), 2 (tcp) or 3 (mpi)")
            }
        }
    }

    public init(
        context: WorkerContext, model: ModelShard?, commands: CommandChannelAddress, communicator: CommunicatorAddress? = nil,
        previousStage: CommunicatorAddress? = nil, nextStage: CommunicatorAddress? = nil, loadGate: CommunicatorAddress? = nil, heartbeatInterval: Double = 0.1,
        driverSilenceLimit: Double = 5
    ) {
        self.context = context
        self.model = model
        self.commands = commands
        self.communicator = communicator
        self.previousStage = previousStage
        self.nextStage = nextStage
        self.loadGate = loadGate
        self.heartbeatInterval = heartbeatInterval
        self.driverSilenceLimit = driverSilenceLimit
    }

    /// Every shared-memory name this worker attaches to (removed if the driver dies early).
    public var sharedMemoryNames: [String] {
        var names: [String] = []
        if case let .rings(broadcast, reply, group) = commands { names += [broadcast, reply] + group }
        for case let .sharedMemory(name)? in [communicator, previousStage, nextStage, loadGate] { names.append(name) }
        var seen = Set<String>()
        return names.filter { seen.insert($0).inserted }
    }

    // MARK: - Wire

    public func encode(into w: inout WireWriter) {
        w.reset()
        w.header(tag: "CCFG")
        context.encode(into: &w)
        w.bool(model != nil)
        if let model {
            w.string(model.path)
            w.integer(model.fileSize)
            w.integer(model.headerDigest)
            w.integer(Int32(model.threads))
            w.bool(model.precise)
            w.integer(Int32(model.kvCacheMiB))
            w.integer(Int32(model.maxBatchTokens))
            w.integers((model.pipelineLayers ?? []).map(Int32.init))
            w.integer(model.shardBytes)
        }
        switch commands {
        case let .rings(broadcast, reply, group):
            w.integer(UInt8(0))
            w.string(broadcast)
            w.string(reply)
            w.count(group.count)
            for name in group { w.string(name) }
        case let .tcp(host, port):
            w.integer(UInt8(1))
            w.string(host)
            w.integer(port)
        }
        for address in [communicator, previousStage, nextStage, loadGate] { CommunicatorAddress.encode(address, into: &w) }
        // Microseconds: a float would not give back 0.1.
        w.integer(UInt64(max(0, (heartbeatInterval * 1e6).rounded())))
        w.integer(UInt64(max(0, (driverSilenceLimit * 1e6).rounded())))
    }

    public init(decoding bytes: UnsafeRawBufferPointer) throws(WireError) {
        var r = WireReader(bytes)
        try r.header(tag: "CCFG")
        context = try WorkerContext(decoding: &r)
        if try r.bool(reading: "has a model") {
            let path = try r.string(reading: "model path")
            let size = try r.integer(Int64.self, reading: "model file size")
            let digest = try r.integer(UInt64.self, reading: "model header digest")
            let at = r.offset
            let threads = Int(try r.integer(Int32.self, reading: "threads"))
            let precise = try r.bool(reading: "precise")
            let kv = Int(try r.integer(Int32.self, reading: "KV cache MiB"))
            let batch = Int(try r.integer(Int32.self, reading: "max batch tokens"))
            guard threads >= 1, kv >= 0, batch >= 1 else {
                throw .invalidValue(offset: at, reading: "model shard", found: "\(threads) threads, \(kv) MiB KV, \(batch) batch tokens")
            }
            let layers = try r.integers(Int32.self, reading: "pipeline layers").map(Int.init)
            let shardBytes = try r.integer(Int64.self, reading: "shard bytes")
            model = ModelShard(
                path: path, fileSize: size, headerDigest: digest, threads: threads, precise: precise, kvCacheMiB: kv,
                maxBatchTokens: batch, pipelineLayers: layers.isEmpty ? nil : layers, shardBytes: shardBytes)
        } else {
            model = nil
        }
        let at = r.offset
        switch try r.integer(UInt8.self, reading: "command channel kind") {
        case 0:
            let broadcast = try r.string(reading: "broadcast ring")
            let reply = try r.string(reading: "reply ring")
            let n = try r.count(elementSize: 4, reading: "group rings")
            var group: [String] = []
            for _ in 0..<n { group.append(try r.string(reading: "group ring")) }
            commands = .rings(broadcast: broadcast, reply: reply, group: group)
        case 1:
            commands = .tcp(host: try r.string(reading: "command host"), port: try r.integer(UInt16.self, reading: "command port"))
        case let kind:
            throw .invalidValue(offset: at, reading: "command channel kind", found: "\(kind), expected 0 (rings) or 1 (tcp)")
        }
        communicator = try CommunicatorAddress.decode(&r, reading: "communicator")
        previousStage = try CommunicatorAddress.decode(&r, reading: "previous stage channel")
        nextStage = try CommunicatorAddress.decode(&r, reading: "next stage channel")
        loadGate = try CommunicatorAddress.decode(&r, reading: "load gate")
        let intervalAt = r.offset
        heartbeatInterval = Double(try r.integer(UInt64.self, reading: "heartbeat interval")) / 1e6
        driverSilenceLimit = Double(try r.integer(UInt64.self, reading: "driver silence limit")) / 1e6
        guard heartbeatInterval > 0, heartbeatInterval < 60, driverSilenceLimit > heartbeatInterval else {
            throw .invalidValue(
                offset: intervalAt, reading: "heartbeat timing", found: "every \(heartbeatInterval) s, silence limit \(driverSilenceLimit) s")
        }
        try r.finish()
    }
}

/// A heartbeat: sent every interval by a thread of its own on each side of a worker's link.
/// A worker's says how far its steps got and how long they took; the driver's carries
/// nothing but its arrival.
public struct Heartbeat: Sendable, Equatable {
    /// The last step the worker finished (UInt64.max: none yet).
    public var stepFinished: UInt64
    /// Steps run so far and the time they took, in nanoseconds (per-rank step time).
    public var steps: UInt64
    public var stepNanoseconds: UInt64

    public static let none = UInt64.max

    public init(stepFinished: UInt64 = Heartbeat.none, steps: UInt64 = 0, stepNanoseconds: UInt64 = 0) {
        self.stepFinished = stepFinished
        self.steps = steps
        self.stepNanoseconds = stepNanoseconds
    }

    /// Fixed size: 4-byte tag, 2-byte version, three u64.
    public static let byteCount = 30

    public func encode(into w: inout WireWriter) {
        w.reset()
        w.header(tag: "CHBT")
        w.integer(stepFinished)
        w.integer(steps)
        w.integer(stepNanoseconds)
    }

    public init(decoding bytes: UnsafeRawBufferPointer) throws(WireError) {
        var r = WireReader(bytes)
        try r.header(tag: "CHBT")
        stepFinished = try r.integer(UInt64.self, reading: "step finished")
        steps = try r.integer(UInt64.self, reading: "steps")
        stepNanoseconds = try r.integer(UInt64.self, reading: "step nanoseconds")
        try r.finish()
    }
}
