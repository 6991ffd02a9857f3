public import ExecutorCore
import CPlatform
import Collectives
public import ModelRunner
import Kernels
import Synchronization
public import Transports
#if canImport(Glibc)
import Glibc
#endif

/// A worker process: whatever started it (the driver's local launcher, `mpirun`, a Ray
/// actor, a shell), it knows only how to reach its driver (the rendezvous address, the
/// instance secret in `COHORT_SECRET`, a join token) and receives everything else in one
/// typed message (`WorkerConfiguration`).
///
///     connect to the driver ─▶ WorkerHello ─▶ WorkerConfiguration ─▶ heartbeats (own thread)
///     attach to the command channel ─▶ answer commands until `stop`
///
/// The driver takes it through the seed's start-up (pre-flight, `initialize`,
/// `initializeDevice`, `loadModel` through the load gate, `availableKVBlocks`,
/// `initializeCache`); then it waits for each step without any per-step call from the
/// driver. It exits within the driver's silence limit when the driver dies (end-of-file on
/// its link at once; silence otherwise). A local launcher adds its lifeline pipe as an
/// extra (`LocalProcessLauncher` says why it is not a parent-death signal).
public enum WorkerRuntime {
    public struct JoinArguments: Sendable {
        /// The driver's rendezvous.
        public var driverHost: String
        public var driverPort: UInt16
        /// The launcher's token for this worker (1, 2, …); the driver assigns the rank.
        public var joinToken: Int
        public var secret: InstanceSecret
        /// The local launcher's extras: an inherited pipe whose end-of-file means the
        /// driver died, and the driver's pid (a worker whose parent is already gone exits).
        public var lifelineDescriptor: Int32?
        public var parentPID: Int32?
        /// This worker's build (`Build.current`), checked by the driver.
        public var build: String
        /// The name of this worker's machine, which placement groups ranks by: the host name,
        /// or MPI's processor name for a rank mpirun started.
        public var machineID: String

        public init(
            driverHost: String, driverPort: UInt16, joinToken: Int, secret: InstanceSecret, lifelineDescriptor: Int32? = nil,
            parentPID: Int32? = nil, build: String, machineID: String = Machine.hostName()
        ) {
            self.machineID = machineID
            self.driverHost = driverHost
            self.driverPort = driverPort
            self.joinToken = joinToken
            self.secret = secret
            self.lifelineDescriptor = lifelineDescriptor
            self.parentPID = parentPID
            self.build = build
        }

        /// `HOST:PORT` or `[IPv6]:PORT`.
        public static func parseAddress(_ address: String) throws -> (host: String, port: UInt16) {
            var host = Substring(address), portText: Substring = ""
            if address.hasPrefix("["), let close = address.firstIndex(of: "]") {
                host = address[address.index(after: address.startIndex)..<close]
                portText = address[close...].dropFirst().drop { $0 == ":" }
            } else if let colon = address.lastIndex(of: ":") {
                host = address[..<colon]
                portText = address[address.index(after: colon)...]
            }
            guard !host.isEmpty, let port = UInt16(portText), port > 0 else {
                throw ExecutorError("a driver address HOST:PORT or [IPv6]:PORT, found '\(address)'")
            }
            return (String(host), port)
        }
    }

    /// Runs the worker; returns its exit status.
    public static func run(_ arguments: JoinArguments) -> Int32 {
        // The parent may have died before this process ran (the lifeline tells the rest).
        if let parent = arguments.parentPID, getppid() != parent { return 3 }
        if let fd = arguments.lifelineDescriptor { watchLifeline(fd) }
        var token = "join token \(arguments.joinToken)"
        do {
            let link = try TCPConnection.connect(
                host: arguments.driverHost, port: arguments.driverPort, rank: arguments.joinToken, secret: arguments.secret, timeout: 30)
            var writer = WireWriter()
            WorkerHello(
                joinToken: arguments.joinToken, processID: getpid(), build: arguments.build, machineID: arguments.machineID,
                address: link.localAddress, deviceIDs: CPUAffinity.allowedCPUs()
            ).encode(into: &writer)
            try writer.withBytes { try link.send($0, timeout: 10) }
            // The driver answers once every worker has said hello.
            let configuration = try link.receive(timeout: 120) { bytes in
                if bytes.count >= 4 && bytes.prefix(4).elementsEqual("CRPL".utf8), case let .failed(_, message) = try WorkerReply(decoding: bytes) {
                    throw ExecutorError("the driver refused this worker: \(message)")
                }
                return try WorkerConfiguration(decoding: bytes)
            }
            token = "rank \(configuration.context.rank)"
            // If the driver dies, the lifeline (local launcher) or the link's end removes the
            // shared-memory names this worker was given.
            orphanedNames = configuration.sharedMemoryNames
            installOrphanCleanup(orphanedNames)
            DriverLink.start(link, interval: configuration.heartbeatInterval, silenceLimit: configuration.driverSilenceLimit)
            // The CPUs placement gave this worker (`initializeDevice` applies them again).
            Session.pinToCPUSet(configuration.context)
            let endpoint = try endpoint(configuration, secret: arguments.secret)
            try Session(configuration: configuration, secret: arguments.secret, listenHost: link.localAddress).serve(endpoint)
            return 0
        } catch {
            let message = "cohort worker (\(token)): \(error)\n"
            _ = message.withCString { write(2, $0, strlen($0)) }
            return 1
        }
    }

    /// Connects to the driver's command channel.
    static func endpoint(_ configuration: WorkerConfiguration, secret: InstanceSecret) throws -> any WorkerEndpoint {
        let rank = configuration.context.rank
        switch configuration.commands {
        case let .rings(broadcast, reply, _):
            let commands = try SharedMemoryRing.attach(name: broadcast)
            let replies = try SharedMemoryRing.attach(name: reply)
            // Names go as soon as every peer is in: nothing else can attach, nothing is left behind.
            commands.markAttached(expected: commands.readers)
            replies.markAttached(expected: 1)
            return RingEndpoint(commands: commands, replies: replies, reader: rank - 1)
        case let .tcp(host, port):
            return TCPEndpoint(connection: try TCPConnection.connect(host: host, port: port, rank: rank, secret: secret, timeout: 30))
        }
    }

    /// Joins a tensor-parallel group: attaches to a shared-memory communicator or meets the
    /// others at a TCP rendezvous. `watchdog` runs while a collective waits (the driver's
    /// rank 0 passes its health check; worker processes are ended by the driver instead).
    public static func joinGroup(
        _ address: WorkerConfiguration.CommunicatorAddress, rank: Int, ranks: Int, secret: InstanceSecret,
        listenHost: String = "127.0.0.1", watchdog: (@Sendable () throws -> Void)? = nil
    ) throws -> any TensorParallelGroup {
        switch address {
        case let .sharedMemory(name):
            let communicator = try SharedMemoryCommunicator.attach(name: name, rank: rank)
            communicator.watchdog = watchdog
            return communicator
        case let .tcp(host, port):
            let communicator = try TCPCommunicator.join(
                rank: rank, ranks: ranks, rendezvousHost: host, rendezvousPort: port, secret: secret, listenHost: listenHost, timeout: 60)
            communicator.watchdog = watchdog
            return communicator
        case let .mpi(color):
            let communicator = try MPICommunicator.split(color: color, key: rank, ranks: ranks)
            communicator.watchdog = watchdog
            return communicator
        }
    }

    // MARK: - Progress, for heartbeats

    /// The last step this process finished and the time its steps took, read by the
    /// heartbeat thread.
    static let stepFinished = Atomic<UInt64>(Heartbeat.none)
    static let steps = Atomic<UInt64>(0)
    static let stepNanoseconds = Atomic<UInt64>(0)
    /// Set once the driver said stop: its link closing then is expected.
    static let stopping = Atomic<Bool>(false)

    // MARK: - Session

    /// One worker's state through start-up and steps.
    final class Session {
        let configuration: WorkerConfiguration
        let secret: InstanceSecret
        /// This worker's address (where its TCP collectives listen).
        let listenHost: String
        var rank: Int32 { Int32(configuration.context.rank) }
        private var initialized = false
        private var deviceReady = false
        private(set) var worker: ModelWorker?
        private var looping = true
        private var lastStep: UInt64?
        private var request = StepRequest(step: 0, sequences: [])  // decoded into, step after step

        init(configuration: WorkerConfiguration, secret: InstanceSecret, listenHost: String) {
            self.configuration = configuration
            self.secret = secret
            self.listenHost = listenHost
        }

        /// Answers commands until `stop`.
        func serve(_ endpoint: any WorkerEndpoint) throws {
            var stop = false
            while !stop {
                try endpoint.next { bytes, writer in
                    let kind = try WorkerCommand.kind(of: bytes)
                    switch kind {
                    case .stop:
                        WorkerRuntime.stopping.store(true, ordering: .relaxed)
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
                let start = MonotonicClock.nanoseconds()
                do {
                    try worker.executeNow(request).encode(into: &writer)
                } catch {
                    WorkerReply.failed(rank: rank, message: "\(error)").encode(into: &writer)
                }
                WorkerRuntime.stepNanoseconds.add(UInt64(max(0, MonotonicClock.nanoseconds() - start)), ordering: .relaxed)
                WorkerRuntime.steps.add(1, ordering: .relaxed)
                WorkerRuntime.stepFinished.store(request.step, ordering: .relaxed)
            } else if configuration.model != nil {
                WorkerReply.failed(rank: rank, message: "step \(request.step) arrived before loadModel").encode(into: &writer)
            } else {
                lastStep = request.step
                // No model: one placeholder sample per sequence that asked for one.
                StepOutput.encodePlaceholder(for: request, into: &writer)
                WorkerRuntime.stepFinished.store(request.step, ordering: .relaxed)
            }
        }

        /// Runs a control command; the reply to send.
        private func control(_ command: WorkerCommand) throws -> WorkerReply {
            switch command {
            case .step, .stop: preconditionFailure("handled by serve")
            case .healthCheck: break
            case .stopLoop: looping = false
            case .startLoop: looping = true
            case .preflight:
                if let model = configuration.model { try Preflight.check(model, machine: Machine.hostName()) }
            case .initialize:
                for (name, value) in configuration.context.environment { setenv(name, value, 1) }
                initialized = true
            case .initializeDevice:
                guard initialized else { throw ExecutorError("initializeDevice before initialize") }
                Self.pinToCPUSet(configuration.context)
                deviceReady = true
            case .loadModel:
                guard deviceReady else { throw ExecutorError("loadModel before initializeDevice") }
                guard worker == nil else { throw ExecutorError("loadModel: the model is already loaded") }
                if let model = configuration.model { worker = try load(model) }
            case .availableKVBlocks:
                return .blocks(rank: rank, count: Int64(try loaded().availableKVBlocksNow()))
            case let .initializeCache(blocks, engines):
                try loaded().initializeCacheNow(blocksPerVirtualEngine: blocks, virtualEngines: engines)
            }
            return .ok(rank: rank)
        }

        /// A CPU worker's device is its share of the machine's CPUs (`COHORT_CPUS`).
        static func pinToCPUSet(_ context: WorkerContext) {
            if let cpus = context.environment[Placement.Environment.cpuSet], !cpus.isEmpty {
                CPUAffinity.pin(to: cpus.split(separator: ",").compactMap { Int($0) })
            }
        }

        private func loaded() throws -> ModelWorker {
            guard let worker else { throw ExecutorError("no model loaded (loadModel first)") }
            return worker
        }

        /// Joins this rank's group and stage channels, then loads through the load gate.
        private func load(_ shard: WorkerConfiguration.ModelShard) throws -> ModelWorker {
            let context = configuration.context, layout = context.layout
            let stage = layout.stage(ofRank: context.rank), tensorRank = layout.tensorRank(ofRank: context.rank)
            let group = try configuration.communicator.map { address in
                try WorkerRuntime.joinGroup(address, rank: tensorRank, ranks: layout.tensorParallel, secret: secret, listenHost: listenHost)
            }
            // Upstream waits need no timeout: if a peer dies the driver sees it and ends this process.
            let readers = layout.tensorParallel
            let links = StageLinks(
                previous: try configuration.previousStage.map {
                    try StageChannel.join($0, as: .reader(tensorRank), readers: readers, secret: secret, listenHost: listenHost)
                },
                next: try configuration.nextStage.map {
                    try StageChannel.join($0, as: .sender, readers: readers, secret: secret, listenHost: listenHost)
                })
            let worker = ModelWorker(modelPath: shard.path, options: shard.modelOptions(stage: stage, stages: layout.pipelineParallel), group: group, links: links)
            try worker.initialize(context)
            // At most the driver's limit of ranks load at once.
            switch configuration.loadGate {
            case let .sharedMemory(name)?:
                let gate = try LoadGate.attach(name: name)
                try gate.enter {}
                defer { gate.leave() }
                try worker.loadNow()
            case let .tcp(host, port)?:
                let ticket = try TCPLoadGate.enter(host: host, port: port, rank: context.rank, secret: secret)
                defer { ticket.close() }
                try worker.loadNow()
            case .mpi?:
                throw ExecutorError("the load gate is shared memory or TCP; the driver sent an MPI group address")
            case nil:
                try worker.loadNow()
            }
            return worker
        }
    }

    // MARK: - When the driver dies

    /// Arms a SIGTERM handler that removes `names` (someone killing the worker by hand).
    static func installOrphanCleanup(_ names: [String]) {
        let copies = names.map { strdup($0) }  // kept for the life of the process
        copies.withUnsafeBufferPointer { buffer in
            buffer.withMemoryRebound(to: UnsafePointer<CChar>?.self) { cohort_install_orphan_cleanup($0.baseAddress, Int32($0.count)) }
        }
    }

    /// Shared-memory names to remove if the driver dies before every worker attached (set
    /// once, before the heartbeat thread starts; read only by the threads that exit).
    nonisolated(unsafe) static var orphanedNames: [String] = []

    /// Removes the names and exits: the driver is gone, so nothing will stop this worker.
    static func driverGone(_ reason: String) -> Never {
        for name in orphanedNames { shm_unlink(name) }
        if stopping.load(ordering: .relaxed) { _exit(0) }
        let message = "cohort worker: \(reason); exiting\n"
        _ = message.withCString { write(2, $0, strlen($0)) }
        _exit(0)
    }

    /// A thread that exits the process as soon as the driver's end of the lifeline closes.
    static func watchLifeline(_ fd: Int32) {
        Threads.detach {
            var byte: UInt8 = 0
            while true {
                let n = read(fd, &byte, 1)
                if n == 0 || (n < 0 && errno != EINTR) { WorkerRuntime.driverGone("the driver's lifeline closed") }
            }
        }
    }
}

extension WorkerConfiguration.ModelShard {
    /// What this rank of stage `stage` loads: a KV cache of all the blocks its budget holds
    /// (the start-up then agrees on the smallest rank's count).
    public func modelOptions(stage: Int, stages: Int) -> ModelOptions {
        ModelOptions(
            threads: threads, mode: precise ? .precise : .fast, kvCacheBytes: kvCacheMiB << 20, maxBatchTokens: maxBatchTokens,
            pipelineStage: stage, pipelineStages: stages, pipelineLayers: pipelineLayers)
    }
}

/// The worker's side of its link to the driver: a thread of its own sends a heartbeat every
/// interval (how far the steps got) and listens for the driver's. End-of-file, an error, or
/// silence past the limit means the driver is gone: the worker exits.
enum DriverLink {
    static func start(_ link: TCPConnection, interval: Double, silenceLimit: Double) {
        Threads.detach {
            var writer = WireWriter(capacity: 64)
            var heard = MonotonicClock.now()
            var nextBeat = 0.0
            while true {
                let now = MonotonicClock.now()
                if now >= nextBeat {
                    Heartbeat(
                        stepFinished: WorkerRuntime.stepFinished.load(ordering: .relaxed),
                        steps: WorkerRuntime.steps.load(ordering: .relaxed),
                        stepNanoseconds: WorkerRuntime.stepNanoseconds.load(ordering: .relaxed)
                    ).encode(into: &writer)
                    do { try writer.withBytes { try link.send($0, timeout: silenceLimit) } } catch {
                        if stopArrives() { return }  // the main thread is ending the process
                        WorkerRuntime.driverGone("the link to the driver failed (\(error))")
                    }
                    nextBeat = now + interval
                }
                if link.isReadable(within: max(0.001, nextBeat - MonotonicClock.now())) {
                    do {
                        try link.receive(timeout: silenceLimit) { _ in }
                        heard = MonotonicClock.now()
                    } catch {
                        // After the driver's stop its link closes: the main thread ends the
                        // process in order (an MPI rank must call MPI_Finalize on the way out).
                        if stopArrives() { return }
                        WorkerRuntime.driverGone("the driver closed its link (\(error))")
                    }
                }
                let silent = MonotonicClock.now() - heard
                if silent > silenceLimit {
                    WorkerRuntime.driverGone("no heartbeat from the driver for \(Int(silent * 10) / 10) s")
                }
            }
        }
    }

    /// Whether the driver's stop reaches the main thread within half a second. The stop
    /// comes on the command channel and the link closes right after it, on a connection of
    /// its own: the close can be seen first. Exiting then skipped `MPI_Finalize`, and the
    /// user's mpirun failed an orderly run ("exiting improperly"; 1 run in 3 of the
    /// across-hosts test under `--collectives mpi`). A dead driver is still noticed within 2 s.
    static func stopArrives(within seconds: Double = 0.5) -> Bool {
        let deadline = MonotonicClock.now() + seconds
        while !WorkerRuntime.stopping.load(ordering: .relaxed) {
            if MonotonicClock.now() >= deadline { return false }
            usleep(2_000)
        }
        return true
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
