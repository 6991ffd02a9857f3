import ExecutorCore
import CSystem
import Collectives
import Transports
#if canImport(Glibc)
import Glibc
#endif

/// The main loop of a worker process (`cohort worker …`, started by `WorkerGroup`).
///
/// It dies with its driver (parent-death signal, and end-of-file on the lifeline), attaches
/// to the rings, then answers commands until `stop`. The driver takes it through the seed's
/// start-up (`initialize` with its context, `initializeDevice`, `loadModel` through the
/// load gate, `availableKVBlocks`, `initializeCache`); then it waits for each step without
/// any per-step call from the driver.
public enum WorkerProcess {
    public struct Arguments: Sendable {
        public var rank: Int
        /// Where commands come from and replies go.
        public var channel: Channel
        public var lifelineDescriptor: Int32
        public var parentPID: Int32
        /// The model shard to serve; nil: answer steps without a model (control-plane benchmark).
        public var model: ModelShard?

        public init(rank: Int, channel: Channel, lifelineDescriptor: Int32, parentPID: Int32, model: ModelShard? = nil) {
            self.rank = rank
            self.channel = channel
            self.lifelineDescriptor = lifelineDescriptor
            self.parentPID = parentPID
            self.model = model
        }
    }

    /// The worker's end of the driver's command channel.
    public enum Channel: Sendable, Equatable {
        /// Shared-memory rings: the broadcast ring, this worker's reply ring, and every reply
        /// ring of the group (removed by whichever worker finds the driver gone).
        case rings(broadcast: String, reply: String, group: [String] = [])
        /// A TCP connection to the driver's listener (the instance secret is in the environment).
        case tcp(host: String, port: UInt16)

        /// `tcp://HOST:PORT` → `.tcp`.
        public static func tcp(address: String) throws -> Channel {
            let parts = address.hasPrefix("tcp://") ? address.dropFirst(6).split(separator: ":") : []
            guard parts.count == 2, let port = UInt16(parts[1]) else {
                throw ExecutorError("a driver address tcp://HOST:PORT, found '\(address)'")
            }
            return .tcp(host: String(parts[0]), port: port)
        }

        var ringNames: [String] {
            if case let .rings(broadcast, reply, group) = self { [broadcast, reply] + group.filter { $0 != reply } } else { [] }
        }
    }

    /// One rank's part of a TP × PP model grid for a worker process to load and run.
    public struct ModelShard: Sendable, Equatable {
        public var path: String
        /// The grid (TP, PP, layer split) and the per-rank knobs.
        public var options: ExecutorOptions
        /// This rank's tensor-parallel group (TP > 1): a shared-memory communicator's name,
        /// or `tcp://HOST:PORT`, the group's rendezvous (the secret comes in the environment).
        public var communicator: String?
        /// Hidden-state channels from the previous stage and to the next.
        public var previousStage: String?
        public var nextStage: String?
        /// The gate that limits how many workers load at once (`LoadGate`).
        public var loadGate: String?

        public init(
            path: String, options: ExecutorOptions, communicator: String? = nil, previousStage: String? = nil,
            nextStage: String? = nil, loadGate: String? = nil
        ) {
            self.loadGate = loadGate
            self.path = path
            self.options = options
            self.communicator = communicator
            self.previousStage = previousStage
            self.nextStage = nextStage
        }

        /// The `cohort worker` arguments that describe this shard.
        var arguments: [String] {
            var a = ["--model", path, "--threads", "\(options.threads)", "--kv-cache-mb", "\(options.kvCacheMiB)",
                     "--max-batch-tokens", "\(options.maxBatchTokens)",
                     "--tp", "\(options.tensorParallel)", "--pp", "\(options.pipelineParallel)"]
            if let layers = options.pipelineLayers { a += ["--pp-layers", layers.map(String.init).joined(separator: ",")] }
            if options.precise { a.append("--precise") }
            if let communicator { a += ["--communicator", communicator] }
            if let previousStage { a += ["--previous-stage", previousStage] }
            if let nextStage { a += ["--next-stage", nextStage] }
            if let loadGate { a += ["--load-gate", loadGate] }
            return a
        }

        /// Every shared-memory name this shard attaches to.
        var names: [String] { [communicator, previousStage, nextStage, loadGate].compactMap { $0 }.filter { !$0.hasPrefix("tcp://") } }
    }

    /// Runs the worker; returns its exit status.
    public static func run(_ arguments: Arguments) -> Int32 {
        // If the driver dies, SIGTERM: the handler removes the rings' names and exits.
        let rings = arguments.channel.ringNames
        let orphans = rings + (arguments.model?.names ?? [])
        installOrphanCleanup(orphans)
        _ = cohort_set_parent_death_signal(SIGTERM)
        // The parent may have died before the signal was armed: then clean up its rings.
        guard getppid() == arguments.parentPID else {
            for name in orphans { shm_unlink(name) }
            return 3
        }
        orphanedNames = orphans
        watchLifeline(arguments.lifelineDescriptor)
        // The launcher gave this worker its CPUs; `initializeDevice` applies its context's.
        Session.pinToCPUSet()
        do {
            let endpoint = try endpoint(arguments)
            try Session(arguments: arguments).serve(endpoint)
            return 0
        } catch {
            let message = "cohort worker rank \(arguments.rank): \(error)\n"
            _ = message.withCString { write(2, $0, strlen($0)) }
            return 1
        }
    }

    /// Attaches to a shared-memory communicator, or joins a TCP group at `tcp://HOST:PORT`.
    /// `secret`: the instance secret for a TCP group (default: from the environment).
    static func joinGroup(_ name: String, rank: Int, ranks: Int, secret: InstanceSecret? = nil) throws -> ModelWorker.SendableGroup {
        guard name.hasPrefix("tcp://") else { return ModelWorker.SendableGroup(group: try SharedMemoryCommunicator.attach(name: name, rank: rank)) }
        let address = name.dropFirst("tcp://".count).split(separator: ":")
        guard address.count == 2, let port = UInt16(address[1]) else {
            throw ExecutorError("a communicator address tcp://HOST:PORT, found '\(name)'")
        }
        var instanceSecret = secret
        if instanceSecret == nil {
            guard let hex = getenv(InstanceSecret.environmentName) else {
                throw ExecutorError("a TCP group needs the instance secret in \(InstanceSecret.environmentName); it is not set")
            }
            instanceSecret = try InstanceSecret(hex: String(cString: hex))
        }
        return ModelWorker.SendableGroup(group: try TCPCommunicator.join(
            rank: rank, ranks: ranks, rendezvousHost: String(address[0]), rendezvousPort: port, secret: instanceSecret!, timeout: 120))
    }

    /// Connects to the driver's command channel.
    static func endpoint(_ arguments: Arguments) throws -> any WorkerEndpoint {
        switch arguments.channel {
        case let .rings(broadcast, reply, _):
            let commands = try SharedMemoryRing.attach(name: broadcast)
            let replies = try SharedMemoryRing.attach(name: reply)
            // Names go as soon as every peer is in: nothing else can attach, nothing is left behind.
            commands.markAttached(expected: commands.readers)
            replies.markAttached(expected: 1)
            return RingEndpoint(commands: commands, replies: replies, reader: arguments.rank - 1)
        case let .tcp(host, port):
            guard let hex = getenv(InstanceSecret.environmentName) else {
                throw ExecutorError("a TCP worker needs the instance secret in \(InstanceSecret.environmentName); it is not set")
            }
            let secret = try InstanceSecret(hex: String(cString: hex))
            return TCPEndpoint(connection: try TCPConnection.connect(host: host, port: port, rank: arguments.rank, secret: secret, timeout: 30))
        }
    }

    /// One worker's state through start-up and steps.
    final class Session {
        let arguments: WorkerProcess.Arguments
        var rank: Int32 { Int32(arguments.rank) }
        private(set) var context: WorkerContext?
        private var deviceReady = false
        private(set) var worker: ModelWorker?
        private var looping = true
        private var lastStep: UInt64?
        private var request = StepRequest(step: 0, sequences: [])  // decoded into, step after step

        init(arguments: WorkerProcess.Arguments) { self.arguments = arguments }

        /// Answers commands until `stop`.
        func serve(_ endpoint: any WorkerEndpoint) throws {
            var stop = false
            while !stop {
                try endpoint.next { bytes, writer in
                    let kind = try WorkerCommand.kind(of: bytes)
                    switch kind {
                    case .stop:
                        stop = true
                        return false
                    case .step:
                        try request.decode(bytes)
                        step(into: &writer)
                    default:
                        do {
                            try control(try WorkerCommand(decoding: bytes)).encode(into: &writer)
                        } catch {
                            WorkerReply.failed(rank: rank, message: "\(error)").encode(into: &writer)
                        }
                    }
                    return true
                }
            }
        }

        private func step(into writer: inout WireWriter) {
            if !looping {
                WorkerReply.failed(rank: rank, message: "step \(request.step) arrived while the execution loop is stopped")
                    .encode(into: &writer)
            } else if let lastStep, request.step != lastStep + 1 {
                WorkerReply.failed(rank: rank, message: "expected step \(lastStep + 1), got \(request.step)").encode(into: &writer)
            } else if let worker {
                lastStep = request.step
                do {
                    try worker.executeNow(request).encode(into: &writer)
                } catch {
                    WorkerReply.failed(rank: rank, message: "\(error)").encode(into: &writer)
                }
            } else if arguments.model != nil {
                WorkerReply.failed(rank: rank, message: "step \(request.step) arrived before loadModel").encode(into: &writer)
            } else {
                lastStep = request.step
                // No model: one placeholder sample per sequence that asked for one.
                StepOutput.encodePlaceholder(for: request, into: &writer)
            }
        }

        /// Runs a control command; the reply to send.
        private func control(_ command: WorkerCommand) throws -> WorkerReply {
            switch command {
            case .step, .stop: preconditionFailure("handled by serve")
            case .healthCheck: break
            case .stopLoop: looping = false
            case .startLoop: looping = true
            case let .initialize(contexts):
                guard contexts.indices.contains(arguments.rank), contexts[arguments.rank].rank == arguments.rank else {
                    throw ExecutorError("initialize: expected a context for rank \(arguments.rank) among \(contexts.count)")
                }
                let mine = contexts[arguments.rank]
                if let shard = arguments.model, let layout = try? shard.options.layout, layout != mine.layout {
                    throw ExecutorError("initialize: this worker was started for \(layout), the context says \(mine.layout)")
                }
                for (name, value) in mine.environment { setenv(name, value, 1) }
                context = mine
            case .initializeDevice:
                guard context != nil else { throw ExecutorError("initializeDevice before initialize") }
                Self.pinToCPUSet()
                deviceReady = true
            case .loadModel:
                guard deviceReady else { throw ExecutorError("loadModel before initializeDevice") }
                guard worker == nil else { throw ExecutorError("loadModel: the model is already loaded") }
                if let shard = arguments.model { worker = try load(shard) }
            case .availableKVBlocks:
                return .blocks(rank: rank, count: Int64(try loaded().availableKVBlocksNow()))
            case let .initializeCache(blocks, engines):
                try loaded().initializeCacheNow(blocksPerVirtualEngine: blocks, virtualEngines: engines)
            }
            return .ok(rank: rank)
        }

        /// A CPU worker's device is its share of the machine's CPUs (`COHORT_CPUS`).
        static func pinToCPUSet() {
            if let cpus = getenv(Placement.Environment.cpuSet).map({ String(cString: $0) }), !cpus.isEmpty {
                CPUAffinity.pin(to: cpus.split(separator: ",").compactMap { Int($0) })
            }
        }

        private func loaded() throws -> ModelWorker {
            guard let worker else { throw ExecutorError("no model loaded (loadModel first)") }
            return worker
        }

        /// Joins this rank's group and stage channels, then loads through the load gate.
        private func load(_ shard: ModelShard) throws -> ModelWorker {
            let layout = try shard.options.layout
            let stage = layout.stage(ofRank: arguments.rank), tensorRank = layout.tensorRank(ofRank: arguments.rank)
            let group = try shard.communicator.map { name in
                try WorkerProcess.joinGroup(name, rank: tensorRank, ranks: layout.tensorParallel).group
            }
            // Upstream waits need no timeout: if a peer dies the driver sees it and ends this process.
            let links = StageLinks(
                previous: try shard.previousStage.map { try StageChannel.attach(name: $0) },
                next: try shard.nextStage.map { try StageChannel.attach(name: $0) })
            let worker = ModelWorker(
                modelPath: shard.path, options: shard.options.modelOptions(stage: stage), group: group,
                links: links)
            // At most the driver's limit of workers load at once; give up if the driver is gone.
            let gate = try shard.loadGate.map { try LoadGate.attach(name: $0) }
            let parent = arguments.parentPID
            try gate?.enter {
                guard getppid() == parent else { throw ExecutorError("the driver is gone") }
            }
            defer { gate?.leave() }
            try worker.loadNow()
            return worker
        }
    }

    /// Arms the SIGTERM handler (the parent-death signal) to remove `names`.
    static func installOrphanCleanup(_ names: [String]) {
        let copies = names.map { strdup($0) }  // kept for the life of the process
        copies.withUnsafeBufferPointer { buffer in
            buffer.withMemoryRebound(to: UnsafePointer<CChar>?.self) { cohort_install_orphan_cleanup($0.baseAddress, Int32($0.count)) }
        }
    }

    /// Ring names to remove if the driver dies before every worker attached (set once,
    /// before the lifeline thread starts).
    nonisolated(unsafe) static var orphanedNames: [String] = []

    /// A thread that exits the process as soon as the driver's end of the lifeline closes,
    /// removing the rings' names first (the driver can no longer do it).
    static func watchLifeline(_ fd: Int32) {
        var thread = pthread_t()
        pthread_create(&thread, nil, { raw in
            let fd = Int32(Int(bitPattern: raw))
            var byte: UInt8 = 0
            while true {
                let n = read(fd, &byte, 1)
                if n == 0 || (n < 0 && errno != EINTR) {
                    for name in WorkerProcess.orphanedNames { shm_unlink(name) }
                    _exit(0)
                }
            }
        }, UnsafeMutableRawPointer(bitPattern: Int(fd)))
        pthread_detach(thread)
    }
}

/// A worker's end of the command channel: one command at a time, its reply sent back.
protocol WorkerEndpoint {
    /// Waits for the next command and passes it to `handle`, which writes the reply into
    /// the writer and returns true, or returns false for no reply (stop).
    func next(_ handle: (UnsafeRawBufferPointer, inout WireWriter) throws -> Bool) throws
}

/// Over shared memory. The reply is written inside `read`, so the command is acknowledged
/// only once its answer is out: the driver waits on one acknowledgement, not on N rings.
final class RingEndpoint: WorkerEndpoint {
    let commands: SharedMemoryRing
    let replies: SharedMemoryRing
    let reader: Int
    private var writer = WireWriter()

    init(commands: SharedMemoryRing, replies: SharedMemoryRing, reader: Int) {
        self.commands = commands
        self.replies = replies
        self.reader = reader
    }

    func next(_ handle: (UnsafeRawBufferPointer, inout WireWriter) throws -> Bool) throws {
        try commands.read(reader: reader) { bytes in
            if try handle(bytes, &writer) { _ = try writer.withBytes { try replies.write($0) } }
        }
    }
}

/// Over TCP: commands and replies are framed messages on one connection to the driver.
final class TCPEndpoint: WorkerEndpoint {
    let connection: TCPConnection
    private var writer = WireWriter()

    init(connection: TCPConnection) { self.connection = connection }

    func next(_ handle: (UnsafeRawBufferPointer, inout WireWriter) throws -> Bool) throws {
        let reply = try connection.receive { bytes in try handle(bytes, &writer) }
        if reply { try writer.withBytes { try connection.send($0) } }
    }
}
