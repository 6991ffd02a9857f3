public import ExecutorCore
public import Launchers
import Metrics
import Transports
#if canImport(Glibc)
import Glibc
#endif

/// The driver's side of the worker processes on this machine: it starts them, broadcasts
/// every command through one shared-memory ring, gathers their replies from one ring each,
/// watches them, and shuts them down.
///
///     let group = try WorkerGroup(workers: 4, configuration: .init(executable: path))
///     let outputs = try group.step(request)    // one StepOutput per worker, in rank order
///     group.shutdown()                          // idempotent; also after any failure
///
/// Worker ranks are 1…workers (rank 0 is the driver's own worker). A worker that exits or
/// is killed fails the pending call within `checkInterval` seconds, naming its rank, pid
/// and exit status or signal; one that does not answer within `stepTimeout` is reported
/// as stuck. Either way the group then shuts every worker down.
public final class WorkerGroup: @unchecked Sendable {
    // @unchecked: all state is driven by one caller thread at a time (the executor's step
    // loop); `shutdown` is idempotent and guarded by `isShutDown`.

    public struct Configuration: Sendable {
        /// The binary whose `worker` subcommand runs a worker.
        public var executable: String?
        /// Longest wait for any reply before a worker counts as stuck.
        public var stepTimeout: Double
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

        public enum Transport: Sendable, Equatable {
            /// Shared-memory rings: workers on this machine.
            case sharedMemory
            /// TCP through a listener the driver binds on `host`: workers anywhere.
            case tcp(host: String)
        }

        public init(
            executable: String? = nil, stepTimeout: Double = 30, checkInterval: Double = 0.05, slotBytes: Int = 1 << 20,
            transport: Transport = .sharedMemory, threadsPerProcess: Int = 1
        ) {
            self.threadsPerProcess = threadsPerProcess
            self.executable = executable
            self.stepTimeout = stepTimeout
            self.checkInterval = checkInterval
            self.slotBytes = slotBytes
            self.transport = transport
        }
    }

    public let workerCount: Int
    public let configuration: Configuration
    /// The worker processes, by launch index (worker `i` has rank `i + 1`).
    public let processes: [any WorkerProcessHandle]
    /// Names the shared-memory rings had (removed once every worker attached); empty over TCP.
    public var ringNames: [String] {
        guard let rings = channel as? RingCommandChannel else { return [] }
        return [rings.broadcast.name] + rings.replies.map(\.name)
    }
    /// The id every worker of this group shares (`COHORT_INSTANCE_ID`).
    public let instanceID: String
    /// What each worker's environment says about it (instance id, CPU set, threads), by
    /// index (rank − 1): what its `WorkerContext` carries.
    public let environments: [[String: String]]
    private let launcher: any Launcher
    private let channel: any CommandChannel
    private var writer = WireWriter()
    private var stepNumber: UInt64 = 0
    private var isShutDown = false
    /// Set when a worker failed; every later call fails with it.
    public private(set) var failure: WorkerFailure?

    /// Starts `workers` worker processes and waits until each has attached and answered a
    /// health check.
    /// `extraArguments(i)` are added to worker `i`'s command line (a model shard to serve).
    public init(
        workers: Int, configuration: Configuration = Configuration(), launcher: (any Launcher)? = nil,
        environment extraEnvironment: [String: String] = [:], extraArguments: (Int) -> [String] = { _ in [] }
    ) throws {
        precondition(workers >= 1, "a worker group needs at least one worker, got \(workers)")
        self.workerCount = workers
        self.configuration = configuration
        let channel: any CommandChannel = switch configuration.transport {
        case .sharedMemory: try RingCommandChannel(
                workers: workers, slotBytes: configuration.slotBytes, checkInterval: configuration.checkInterval,
                spinPolls: CPUAffinity.ringSpinPolls(processes: workers + 1, threadsPerProcess: configuration.threadsPerProcess))
        case let .tcp(host): try TCPCommandChannel(workers: workers, host: host)
        }
        self.channel = channel
        let launcher = launcher ?? LocalProcessLauncher(executable: configuration.executable)
        self.launcher = launcher
        let instanceID = String(UInt64.random(in: 0...UInt64.max), radix: 16)
        self.instanceID = instanceID
        // CPU workers: each gets its share of this machine's CPUs and a thread per CPU.
        let cpuSets = Placement.cpuSets(cpus: CPUAffinity.allowedCPUs(), workers: workers)
        environments = (0..<workers).map { Placement.cpuEnvironment(cpuSets[$0]).merging([Placement.Environment.instanceID: instanceID]) { $1 } }
        do {
            processes = try launcher.launch(
                workers: workers,
                arguments: { index in
                    ["worker", "--rank", "\(index + 1)"] + channel.workerArguments(index)
                        + launcher.lifelineArguments + extraArguments(index)
                },
                environment: { [environments] index in
                    environments[index].merging(extraEnvironment) { $1 }.merging(channel.workerEnvironment) { $1 }
                }
            ).map(\.handle)
        } catch {
            channel.close()
            throw error
        }
        do {
            try channel.connect(timeout: configuration.stepTimeout, check: checkAlive)
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

    // MARK: - Calls

    /// Per-step control-plane latency (broadcast until every reply is in), exported
    /// through swift-metrics as `cohort_control_plane_step_seconds`.
    private let stepTimer = Metrics.Timer(label: "cohort_control_plane_step_seconds")

    /// Sends a step to every worker and returns their outputs in rank order.
    public func step(_ request: StepRequest) throws -> [StepOutput] {
        let start = MonotonicClock.nanoseconds()
        defer { stepTimer.recordNanoseconds(MonotonicClock.nanoseconds() - start) }
        try broadcast(request)
        return try collect(request)
    }

    /// Sends a step to every worker without waiting (the driver runs rank 0's part
    /// meanwhile). Several steps may be in flight (pipeline stages work on different
    /// steps); `collect` gathers them in the order they were sent.
    public func broadcast(_ request: StepRequest) throws {
        guard isLooping else { throw WorkerFailure.loopStopped(step: request.step) }
        inFlight.append((request.step, try send(.step(request))))
    }

    /// Steps sent and not yet collected: (step number, message sequence), oldest first.
    private var inFlight: [(step: UInt64, sequence: UInt64)] = []


    /// Gathers every worker's output for `request` (the oldest step not yet collected), in rank order.
    public func collect(_ request: StepRequest) throws -> [StepOutput] {
        guard let oldest = inFlight.first, oldest.step == request.step else {
            throw fail(.transport("collect for step \(request.step), but the oldest step in flight is \(inFlight.first.map { "\($0.step)" } ?? "none")"))
        }
        inFlight.removeFirst()
        return try gather(what: "step \(request.step)", sequence: oldest.sequence) { rank, bytes throws(WireError) in
            if bytes.count >= 4 && bytes.prefix(4).elementsEqual("CRPL".utf8),
               case let .failed(_, message) = try WorkerReply(decoding: bytes) {
                throw WireError.invalidValue(offset: 0, reading: "step \(request.step) on rank \(rank)", found: message)
            }
            let output = try StepOutput(decoding: bytes)
            guard output.step == request.step else {
                throw WireError.invalidValue(offset: 6, reading: "step number from rank \(rank)", found: "\(output.step), expected \(request.step)")
            }
            return output
        }
    }

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
        return Pending(sequence: try send(command), what: what)
    }

    /// Every worker's answer to a posted command, in rank order; a worker that answers
    /// with a failure fails the group, naming its rank, pid and message.
    public func replies(to pending: Pending) throws -> [WorkerReply] {
        let answers = try gather(what: pending.what, sequence: pending.sequence) { _, bytes throws(WireError) in
            try WorkerReply(decoding: bytes)
        }
        for (i, answer) in answers.enumerated() {
            if case let .failed(rank, message) = answer {
                throw fail(.unhealthy(rank: Int(rank), pid: processes[i].pid, message: "\(pending.what): \(message)"))
            }
        }
        return answers
    }

    /// Publishes a command; returns its message sequence number.
    private func send(_ command: WorkerCommand) throws -> UInt64 {
        if let failure { throw failure }
        guard !isShutDown else { throw WorkerFailure.shutDown }
        command.encode(into: &writer)
        do {
            return try writer.withBytes { bytes in
                try channel.publish(bytes, timeout: configuration.stepTimeout, check: checkAlive)
            }
        } catch let error as WorkerFailure {
            throw error
        } catch {
            throw transportFailure(error)
        }
    }

    private func gather<T>(what: String, sequence: UInt64, _ decode: (Int, UnsafeRawBufferPointer) throws(WireError) -> T) throws -> [T] {
        // After a failure or shutdown the rings are unmapped: nothing more to gather.
        if let failure { throw failure }
        guard !isShutDown else { throw WorkerFailure.shutDown }
        do {
            return try channel.gather(sequence, timeout: configuration.stepTimeout, check: checkAlive) { i, bytes in
                do throws(WireError) { return try decode(i + 1, bytes) } catch { throw ReplyError(worker: i, error: error) }
            }
        } catch let timeout as ChannelTimeout {
            let i = timeout.worker
            throw fail(.stuck(rank: i + 1, pid: processes[i].pid, waitingFor: what, seconds: configuration.stepTimeout))
        } catch let bad as ReplyError {
            throw fail(.badReply(rank: bad.worker + 1, bad.error))
        } catch let error as WorkerFailure {
            throw error
        } catch {
            throw transportFailure(error)
        }
    }

    /// A reply that did not decode, from worker `worker`.
    private struct ReplyError: Error {
        let worker: Int
        let error: WireError
    }

    /// The failure behind a transport error: a worker that died (its socket or ring broke
    /// just before it became a zombie, so look for a moment), or the transport itself.
    private func transportFailure(_ error: any Error) -> WorkerFailure {
        for _ in 0..<40 {
            do { try checkAlive() } catch let failure as WorkerFailure { return failure } catch {}
            usleep(5_000)
        }
        return fail(.transport("\(error)"))
    }

    /// Throws (and shuts the group down) if any worker has ended.
    public func checkAlive() throws {
        if let failure { throw failure }
        for (i, p) in processes.enumerated() {
            if let t = p.termination() { throw fail(.died(rank: i + 1, pid: p.pid, termination: t)) }
        }
    }

    private func fail(_ f: WorkerFailure) -> WorkerFailure {
        if failure == nil { failure = f }
        shutdown()
        return failure!
    }

    // MARK: - Shutdown

    /// Stops every worker: a stop message, then the lifeline, then SIGKILL for any that
    /// is still running after `grace` seconds; reaps all. Idempotent; safe from any state.
    public func shutdown(grace: Double = 1) {
        guard !isShutDown else { return }
        isShutDown = true
        if failure == nil {
            WorkerCommand.stop.encode(into: &writer)
            _ = try? writer.withBytes { try channel.publish($0, timeout: 0.2, check: {}) }
        }
        launcher.releaseLifeline()
        for p in processes where p.wait(timeout: grace) == nil { p.kill(timeout: 5) }
        channel.close()
    }

    deinit { shutdown() }
}

/// A worker that failed; the message names the rank and pid.
public enum WorkerFailure: Error, Equatable, CustomStringConvertible {
    case died(rank: Int, pid: Int32, termination: ChildProcess.Termination)
    case stuck(rank: Int, pid: Int32, waitingFor: String, seconds: Double)
    case unhealthy(rank: Int, pid: Int32, message: String)
    case badReply(rank: Int, WireError)
    case transport(String)
    /// A step sent while the execution loop is stopped (nothing was sent).
    case loopStopped(step: UInt64)
    /// A call after `shutdown()`.
    case shutDown

    public var description: String {
        switch self {
        case let .died(rank, pid, termination): "worker rank \(rank) (pid \(pid)) \(termination)"
        case let .stuck(rank, pid, what, seconds): "worker rank \(rank) (pid \(pid)) is stuck: no answer to \(what) within \(seconds) s"
        case let .unhealthy(rank, pid, message): "worker rank \(rank) (pid \(pid)) is unhealthy: \(message)"
        case let .badReply(rank, error): "worker rank \(rank) sent a bad reply: \(error)"
        case let .transport(message): "control plane failed: \(message)"
        case let .loopStopped(step): "step \(step) was not sent: the workers' execution loop is stopped (start it first)"
        case .shutDown: "the worker group is shut down"
        }
    }
}
