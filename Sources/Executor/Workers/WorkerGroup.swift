public import ExecutorCore
public import Launchers
import Metrics
public import Transports
import WorkerRuntime
#if canImport(Glibc)
import Glibc
#endif

/// The driver's side of its worker processes (ranks 1…N−1; rank 0 runs in the driver): it
/// has a launcher start them, lets them join, places them, configures each with one typed
/// message, watches their heartbeats, broadcasts every command and gathers the replies, and
/// shuts them down.
///
///     let group = try WorkerGroup(workers: 4, configuration: .init(executable: path)) { rank, context in … }
///     let outputs = try group.step(request)    // one StepOutput per worker, in rank order
///     group.shutdown()                          // idempotent; also after any failure
///
/// Joining: the driver binds a rendezvous (loopback on one machine, `hostIP` otherwise) and
/// gives the launcher its address and the instance secret; each worker connects, proves the
/// secret and says hello (join token, pid, build, machine, address, CPUs, memory). A worker
/// of another build is refused by name. Then the seed's placement orders them (the
/// driver's machine first, then machines with fewer workers, then by address), and each
/// gets its `WorkerConfiguration`; the link stays open for heartbeats both ways.
///
/// A worker that dies fails the pending call within `checkInterval`, naming its rank, pid
/// and exit status or signal (or its closed link, when the launcher cannot watch it); one
/// whose heartbeats stop for `silenceLimit` is named stuck; one that answers no step within
/// the step deadline (`StepDeadline`: measured step times, or `--step-timeout`) is named
/// stuck with the step. Either way the group then shuts every worker down.
public final class WorkerGroup: @unchecked Sendable {
    // @unchecked: all state is driven by one caller thread at a time (the executor's step
    // loop); `shutdown` is idempotent and guarded by `isShutDown`; the health board is
    // shared with the monitor thread under its own mutex.

    public struct Configuration: Sendable {
        /// The binary whose `worker` subcommand runs a worker (default: this process's own).
        public var executable: String?
        /// Longest wait for a start-up command (loading included) while heartbeats come.
        public var startupTimeout: Double
        /// How often waits check that workers are alive.
        public var checkInterval: Double
        /// Largest message in either direction.
        public var slotBytes: Int
        /// How commands reach the workers.
        public var transport: Transport
        /// Compute threads in each process (the driver's and each worker's): with the
        /// processes, how many threads want a core when all are busy, which decides how
        /// long ring waits spin.
        public var threadsPerProcess: Int
        /// The grid the workers form with rank 0 (world size = workers + 1).
        public var layout: ParallelLayout?
        /// The address workers reach the driver at (nil: loopback, one machine).
        public var hostIP: String?
        /// The id every worker shares (nil: `COHORT_INSTANCE_ID`, else random).
        public var instanceID: String?
        /// Heartbeats: how often each side sends one, how long a silent worker is tolerated
        /// before it is named stuck, and how long a worker tolerates a silent driver.
        public var heartbeatInterval: Double
        public var silenceLimit: Double
        public var driverSilenceLimit: Double
        /// The step deadline (its `fixed` value is `--step-timeout`).
        public var stepDeadline: StepDeadline

        public enum Transport: Sendable, Equatable {
            /// Shared-memory rings: workers on this machine.
            case sharedMemory
            /// TCP through a listener the driver binds on `host`: workers anywhere.
            case tcp(host: String)
        }

        public init(
            executable: String? = nil, startupTimeout: Double = 600, checkInterval: Double = 0.05, slotBytes: Int = 1 << 20,
            transport: Transport = .sharedMemory, threadsPerProcess: Int = 1, layout: ParallelLayout? = nil, hostIP: String? = nil,
            instanceID: String? = nil, heartbeatInterval: Double = 0.1, silenceLimit: Double = 1, driverSilenceLimit: Double = 5,
            stepDeadline: StepDeadline = StepDeadline()
        ) {
            self.executable = executable
            self.startupTimeout = startupTimeout
            self.checkInterval = checkInterval
            self.slotBytes = slotBytes
            self.transport = transport
            self.threadsPerProcess = threadsPerProcess
            self.layout = layout
            self.hostIP = hostIP
            self.instanceID = instanceID
            self.heartbeatInterval = heartbeatInterval
            self.silenceLimit = silenceLimit
            self.driverSilenceLimit = driverSilenceLimit
            self.stepDeadline = stepDeadline
        }
    }

    /// One worker process as it joined: where it runs and who it is.
    public struct Member: Sendable {
        public var rank: Int
        public var hello: WorkerHello
        /// The launcher's handle, when it can watch the process.
        public var handle: (any WorkerProcessHandle)?
        public var pid: Int32 { hello.processID }
        public var machine: String { hello.machineID }
    }

    public let workerCount: Int
    public private(set) var configuration: Configuration
    /// The worker processes by rank − 1.
    public let members: [Member]
    /// Every rank's placement (rank 0 is the driver's own).
    public let assignments: [Placement.Assignment]
    /// Where the workers met the driver, and where rank-0-bound rendezvous bind.
    public let rendezvousHost: String
    /// Names the shared-memory rings had (removed once every worker attached); empty over TCP.
    public var ringNames: [String] {
        guard let rings = channel as? RingCommandChannel else { return [] }
        return [rings.broadcast.name] + rings.replies.map(\.name)
    }
    /// The id every worker of this group shares (`COHORT_INSTANCE_ID`).
    public let instanceID: String
    /// The instance secret every connection of this group proves.
    public let secret: InstanceSecret
    private let launcher: any Launcher
    private let channel: any CommandChannel
    private let monitor: HealthMonitor
    private var writer = WireWriter()
    private var isShutDown = false
    /// Set when a worker failed; every later call fails with it.
    public private(set) var failure: WorkerFailure?

    /// The environment name of the instance id a user may set.
    public static let instanceIDEnvironment = Placement.Environment.instanceID

    /// Starts `workers` worker processes through `launcher` (default: children of this
    /// process), lets them join, places them, and sends each its configuration:
    /// `prepare(plan)` runs once all have joined and are placed (create shared-memory names
    /// there; `plan` tells which ranks share the driver's machine), then
    /// `configure(rank, context)` gives worker `rank`'s (its command channel is filled in
    /// here). Returns once each has attached and answered a health check.
    public init(
        workers: Int, secret: InstanceSecret = .random(), configuration: Configuration = Configuration(), launcher: (any Launcher)? = nil,
        prepare: (Placement.Plan) throws -> Void = { _ in },
        configure: (Int, WorkerContext) throws -> WorkerConfiguration = { _, context in
            WorkerConfiguration(context: context, model: nil, commands: .tcp(host: "", port: 0))
        }
    ) throws {
        precondition(workers >= 1, "a worker group needs at least one worker, got \(workers)")
        self.workerCount = workers
        self.secret = secret
        var configuration = configuration
        let layout = try configuration.layout ?? ParallelLayout(tensorParallel: workers + 1)
        configuration.layout = layout
        self.configuration = configuration
        let environment = getenv(Self.instanceIDEnvironment).map { String(cString: $0) }
        instanceID = configuration.instanceID ?? (environment?.isEmpty == false ? environment! : String(UInt64.random(in: 0...UInt64.max), radix: 16))
        let launcher = launcher ?? LocalProcessLauncher()
        self.launcher = launcher
        let bindHost = configuration.hostIP ?? "127.0.0.1"
        let executable = configuration.executable ?? Build.ownExecutable()
        var joined: Bootstrap.Joined
        do {
            let rendezvous = try TCPListener(host: bindHost)
            let join = JoinInstructions(
                executable: executable, driverAddress: Bootstrap.address(host: rendezvous.host, port: rendezvous.port), secretHex: secret.hex)
            let handles = try launcher.launch(workers: workers, join: join)
            joined = try Bootstrap.join(
                workers: workers, listener: rendezvous, secret: secret, handles: handles, build: Build.of(executable: executable),
                timeout: configuration.startupTimeout, check: { try launcher.checkStarting() })
        } catch {
            launcher.releaseLifeline()
            launcher.finished(orderly: false)
            throw error
        }
        // The seed's placement on the addresses the workers reported; then the shared-memory
        // names, which workers learn only with their configuration: a driver killed while
        // its workers start leaves none behind.
        let placed: Bootstrap.Placed
        let channel: any CommandChannel
        do {
            placed = try Bootstrap.place(joined, driverAddress: bindHost, instanceID: instanceID)
            try prepare(placed.plan)
            // Rings reach only workers on the driver's machine.
            if configuration.transport == .sharedMemory && placed.plan.machineCount > 1 {
                configuration.transport = .tcp(host: bindHost)
                self.configuration = configuration
            }
            channel = switch configuration.transport {
            case .sharedMemory: try RingCommandChannel(
                    workers: workers, slotBytes: configuration.slotBytes, checkInterval: configuration.checkInterval,
                    spinPolls: CPUAffinity.ringSpinPolls(processes: workers + 1, threadsPerProcess: configuration.threadsPerProcess))
            case let .tcp(host): try TCPCommandChannel(workers: workers, host: host, secret: secret)
            }
        } catch {
            Bootstrap.abandon(joined, launcher: launcher)
            throw error
        }
        self.channel = channel
        members = placed.members
        assignments = placed.plan.assignments
        rendezvousHost = placed.plan.rendezvousHost
        do {
            for member in members {
                let assignment = assignments[member.rank]
                let context = WorkerContext(
                    rank: member.rank, localRank: assignment.localRank, worldSize: layout.worldSize, layout: layout,
                    rendezvous: rendezvousHost, environment: assignment.environment)
                var worker = try configure(member.rank, context)
                worker.commands = channel.address(ofWorker: member.rank - 1)
                worker.heartbeatInterval = configuration.heartbeatInterval
                worker.driverSilenceLimit = configuration.driverSilenceLimit
                worker.encode(into: &writer)
                try writer.withBytes { try placed.links[member.rank - 1].send($0, timeout: 10) }
            }
        } catch {
            Bootstrap.abandon(joined, launcher: launcher)
            channel.close()
            throw error
        }
        // From here on the links carry heartbeats only.
        monitor = HealthMonitor(
            board: HealthBoard(workers: members.map { ($0.machine, $0.pid) }, silenceLimit: configuration.silenceLimit),
            links: placed.links, handles: members.map(\.handle), interval: configuration.heartbeatInterval)
        do {
            try channel.connect(timeout: configuration.startupTimeout) { try self.checkAlive(during: "workers attaching") }
            try healthCheck()
        } catch {
            if let timeout = error as? TCPError, case .timedOut = timeout {
                _ = fail(.transport("workers did not connect: \(timeout)"))
            }
            shutdown()
            throw failure ?? error
        }
        channel.seal()
    }

    /// The environment of rank 0 (the driver's own worker): its placement's.
    public var rank0Environment: [String: String] { assignments[0].environment }

    /// Every worker process's health: alive, stuck or dead, its last step and heartbeat age.
    public func health() -> [RankHealth] { monitor.board.report() }

    // MARK: - Calls

    /// Per-step control-plane latency (broadcast until every reply is in), exported
    /// through swift-metrics as `cohort_control_plane_step_seconds`.
    private let stepTimer = Metrics.Timer(label: "cohort_control_plane_step_seconds")

    /// Sends a step to every worker and returns their outputs in rank order.
    public func step(_ request: StepRequest) throws -> [StepOutput] {
        try broadcast(request)
        return try collect(step: request.step)
    }

    /// Sends a step to every worker without waiting (the driver runs rank 0's part
    /// meanwhile). Several steps may be in flight (pipeline stages work on different
    /// steps); `collect` gathers them in the order they were sent.
    public func broadcast(_ request: StepRequest) throws {
        guard isLooping else { throw WorkerFailure.loopStopped(step: request.step) }
        let start = MonotonicClock.nanoseconds()
        inFlight.append((request.step, try send(.step(request), during: request.step), start, request.sequences.tokenCount))
    }

    /// Steps sent and not yet collected, oldest first.
    private var inFlight: [(step: UInt64, sequence: UInt64, sent: Int64, tokens: Int)] = []

    /// Gathers every worker's output for `request` (the oldest step not yet collected), in
    /// rank order, waiting at most the step deadline.
    public func collect(step: UInt64) throws -> [StepOutput] {
        guard let oldest = inFlight.first, oldest.step == step else {
            throw fail(.transport("collect for step \(step), but the oldest step in flight is \(inFlight.first.map { "\($0.step)" } ?? "none")"))
        }
        inFlight.removeFirst()
        let deadline = stepDeadlineSeconds(tokens: oldest.tokens)
        let outputs = try gather(what: "step \(step)", step: step, sequence: oldest.sequence, timeout: deadline) {
            rank, bytes throws(WireError) in
            if bytes.count >= 4 && bytes.prefix(4).elementsEqual("CRPL".utf8),
               case let .failed(_, message) = try WorkerReply(decoding: bytes) {
                throw WireError.invalidValue(offset: 0, reading: "step \(step) on rank \(rank)", found: message)
            }
            let output = try StepOutput(decoding: bytes)
            guard output.step == step else {
                throw WireError.invalidValue(offset: 6, reading: "step number from rank \(rank)", found: "\(output.step), expected \(step)")
            }
            return output
        }
        let elapsed = MonotonicClock.nanoseconds() - oldest.sent
        stepTimer.recordNanoseconds(elapsed)
        configuration.stepDeadline.record(seconds: Double(elapsed) * 1e-9, tokens: oldest.tokens)
        return outputs
    }

    /// How long a step of `tokens` tokens may take (`StepDeadline`, fed by every collect).
    public func stepDeadlineSeconds(tokens: Int) -> Double { configuration.stepDeadline.seconds(tokens: tokens) }

    /// Where the step deadline comes from, for messages.
    public var stepDeadlineExplanation: String { configuration.stepDeadline.explanation(tokens: 1) }

    /// Asks every worker whether it can work.
    public func healthCheck() throws {
        try control(.healthCheck, what: "a health check")
    }

    /// Whether the workers' execution loop runs (they accept steps). It runs from the start.
    public private(set) var isLooping = true

    /// Pauses every worker's execution loop: they stay up and answer health checks, and
    /// `broadcast` refuses steps until `startExecutionLoop`. Idempotent.
    public func stopExecutionLoop() throws {
        guard isLooping else { return }
        try control(.stopLoop, what: "stopping the execution loop")
        isLooping = false
    }

    /// Resumes the workers' execution loop; step numbers continue where they were. Idempotent.
    public func startExecutionLoop() throws {
        guard !isLooping else { return }
        try control(.startLoop, what: "starting the execution loop")
        isLooping = true
    }

    /// Sends a control command to every worker and checks every answer is ok.
    @discardableResult
    private func control(_ command: WorkerCommand, what: String) throws -> [WorkerReply] {
        try replies(to: try post(command, what: what))
    }

    /// A control command sent and not yet answered.
    public struct Pending: Sendable {
        let sequence: UInt64
        let what: String
    }

    /// Sends a control command to every worker without waiting for the answers (the
    /// driver does rank 0's part meanwhile); `replies(to:)` gathers them.
    public func post(_ command: WorkerCommand, what: String) throws -> Pending {
        precondition(inFlight.isEmpty, "\(what) waits for every step in flight to be collected first")
        precondition(command.kind != .step && command.kind != .stop, "steps go through broadcast, stop through shutdown")
        return Pending(sequence: try send(command, during: nil, what: what), what: what)
    }

    /// Every worker's answer to a posted command, in rank order; a worker that answers
    /// with a failure fails the group, naming its rank, pid, machine and message.
    public func replies(to pending: Pending) throws -> [WorkerReply] {
        let answers = try gather(what: pending.what, sequence: pending.sequence, timeout: configuration.startupTimeout) {
            _, bytes throws(WireError) in try WorkerReply(decoding: bytes)
        }
        for (i, answer) in answers.enumerated() {
            if case let .failed(rank, message) = answer {
                throw fail(.unhealthy(rank: Int(rank), pid: members[i].pid, machine: members[i].machine, message: "\(pending.what): \(message)"))
            }
        }
        return answers
    }

    /// Publishes a command; returns its message sequence number.
    private func send(_ command: WorkerCommand, during step: UInt64?, what: String = "") throws -> UInt64 {
        if let failure { throw failure }
        guard !isShutDown else { throw WorkerFailure.shutDown }
        command.encode(into: &writer)
        let timeout = step == nil ? configuration.startupTimeout : stepDeadlineSeconds(tokens: 1)
        do {
            return try writer.withBytes { bytes in
                try channel.publish(bytes, timeout: timeout) { try self.checkAlive(during: step.map { "step \($0)" } ?? what) }
            }
        } catch let error as WorkerFailure {
            throw error
        } catch {
            throw transportFailure(error, during: step.map { "step \($0)" } ?? what)
        }
    }

    private func gather<T>(
        what: @autoclosure () -> String, step: UInt64? = nil, sequence: UInt64, timeout: Double,
        _ decode: (Int, UnsafeRawBufferPointer) throws(WireError) -> T
    ) throws -> [T] {
        // After a failure or shutdown the rings are unmapped: nothing more to gather.
        if let failure { throw failure }
        guard !isShutDown else { throw WorkerFailure.shutDown }
        let start = MonotonicClock.now()
        do {
            return try channel.gather(sequence, timeout: timeout, check: { try self.checkAlive(during: what()) }) { i, bytes in
                do throws(WireError) { return try decode(i + 1, bytes) } catch { throw ReplyError(worker: i, error: error) }
            }
        } catch let timeout as ChannelTimeout {
            let m = members[timeout.worker]
            let basis = step == nil ? "the start-up timeout" : stepDeadlineExplanation
            throw fail(.stuck(rank: m.rank, pid: m.pid, machine: m.machine, waitingFor: what(), seconds: MonotonicClock.now() - start, basis: basis))
        } catch let bad as ReplyError {
            throw fail(.badReply(rank: bad.worker + 1, bad.error))
        } catch let error as WorkerFailure {
            throw error
        } catch {
            throw transportFailure(error, during: what())
        }
    }

    /// A reply that did not decode, from worker `worker`.
    private struct ReplyError: Error {
        let worker: Int
        let error: WireError
    }

    /// The failure behind a transport error: a worker that died (its socket or ring broke
    /// just before the monitor saw it end, so look for a moment), or the transport itself.
    private func transportFailure(_ error: any Error, during what: String) -> WorkerFailure {
        awaitFailure(during: what) ?? fail(.transport("\(error)"))
    }

    /// After a peer's channel broke (a socket closed, a collective lost a rank): the failure
    /// that explains it, once the monitor has seen the process end (up to 0.2 s), or nil.
    public func awaitFailure(during what: @autoclosure () -> String) -> WorkerFailure? {
        for _ in 0..<40 {
            do { try checkAlive(during: what()) } catch let failure as WorkerFailure { return failure } catch {}
            usleep(5_000)
        }
        return nil
    }

    /// Throws (and shuts the group down) if any worker has ended or gone silent.
    public func checkAlive(during activity: @autoclosure () -> String = "a wait") throws {
        if let failure { throw failure }
        if let found = monitor.board.failure(during: activity()) { throw fail(found) }
    }

    private func fail(_ f: WorkerFailure) -> WorkerFailure {
        if failure == nil { failure = f }
        shutdown()
        return failure!
    }

    // MARK: - Shutdown

    /// Stops every worker: a stop message, then the links and the lifeline, then SIGKILL
    /// for any that is still running after `grace` seconds; reaps all. Idempotent; safe
    /// from any state.
    public func shutdown(grace: Double = 1) {
        guard !isShutDown else { return }
        isShutDown = true
        if failure == nil {
            // An orderly stop: workers leave their loop and exit before their links close.
            WorkerCommand.stop.encode(into: &writer)
            if (try? writer.withBytes({ try channel.publish($0, timeout: 0.2, check: {}) })) != nil, !launcher.stopsWorkersItself {
                Bootstrap.waitForExit(members, seconds: grace)
            }
        }
        monitor.stop()
        launcher.releaseLifeline()
        // After a failure the healthy workers exit at once (their links closed); the failed
        // one may be stopped and never will: do not wait long for it.
        if failure != nil || !launcher.stopsWorkersItself {
            Bootstrap.stop(members, grace: failure == nil ? grace : min(grace, 0.2))
        }
        channel.close()
        launcher.finished(orderly: failure == nil)
    }

    deinit { shutdown() }
}

/// A worker that failed; the message names the rank, its pid and machine, and what waited.
public enum WorkerFailure: Error, Equatable, CustomStringConvertible {
    case died(rank: Int, pid: Int32, machine: String, termination: ChildProcess.Termination)
    /// Its link to the driver closed or failed (a worker the launcher cannot watch).
    case linkLost(rank: Int, pid: Int32, machine: String, reason: String, during: String)
    /// Its heartbeats stopped: a stopped process, or a machine gone quiet.
    case silent(rank: Int, pid: Int32, machine: String, seconds: Double, during: String)
    /// Alive, but no answer within the deadline.
    case stuck(rank: Int, pid: Int32, machine: String, waitingFor: String, seconds: Double, basis: String)
    case unhealthy(rank: Int, pid: Int32, machine: String, message: String)
    case badReply(rank: Int, WireError)
    case transport(String)
    /// A step sent while the execution loop is stopped (nothing was sent).
    case loopStopped(step: UInt64)
    /// A call after `shutdown()`.
    case shutDown

    /// The rank to blame, if any.
    public var rank: Int? {
        switch self {
        case let .died(rank, _, _, _), let .linkLost(rank, _, _, _, _), let .silent(rank, _, _, _, _), let .stuck(rank, _, _, _, _, _),
             let .unhealthy(rank, _, _, _), let .badReply(rank, _): rank
        case .transport, .loopStopped, .shutDown: nil
        }
    }

    public var description: String {
        switch self {
        case let .died(rank, pid, machine, termination): "worker rank \(rank) (pid \(pid) on \(machine)) \(termination)"
        case let .linkLost(rank, pid, machine, reason, during):
            "worker rank \(rank) (pid \(pid) on \(machine)) is gone during \(during): \(reason)"
        case let .silent(rank, pid, machine, seconds, during):
            "worker rank \(rank) (pid \(pid) on \(machine)) is stuck during \(during): no heartbeat for \(HealthBoard.seconds(seconds)) s (stopped?)"
        case let .stuck(rank, pid, machine, what, seconds, basis):
            "worker rank \(rank) (pid \(pid) on \(machine)) is stuck: no answer to \(what) within \(HealthBoard.seconds(seconds)) s (\(basis))"
        case let .unhealthy(rank, pid, machine, message): "worker rank \(rank) (pid \(pid) on \(machine)) is unhealthy: \(message)"
        case let .badReply(rank, error): "worker rank \(rank) sent a bad reply: \(error)"
        case let .transport(message): "control plane failed: \(message)"
        case let .loopStopped(step): "step \(step) was not sent: the workers' execution loop is stopped (start it first)"
        case .shutDown: "the worker group is shut down"
        }
    }
}
