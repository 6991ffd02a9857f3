/// The executor's lifecycle as a value: every transition checks the current state and
/// returns what the owner must do, in the manner of SwiftNIO's state machines. No I/O here:
/// the executor performs the actions (launch, send, collect, stop the loop, shut down).
///
///     created ──start──▶ starting(phase…) ──started──▶ running(looping ⇄ paused)
///        │                    │                              │
///        └──────shutdown──────┴────────fail(rank, reason)────┴──▶ failed ──shutdown──▶ shut down
///
/// It also holds the one queue of steps in flight (step number and virtual engine, oldest
/// first): a step takes its number only once it was sent, so workers see them without gaps.
public struct ExecutorLifecycle: Sendable, Equatable {
    /// Start-up phases, in the seed's order.
    public enum Phase: String, Sendable, Equatable, CaseIterable {
        case launching, preflight, initializing, initializingDevices, loading, sizingCache, initializingCache
    }

    /// Whether workers take steps (the seed's execution loop) while running.
    public enum Loop: Sendable, Equatable { case looping, paused }

    public enum State: Sendable, Equatable {
        case created
        case starting(Phase)
        case running(Loop)
        /// The first failure; `rank` is nil when no rank is to blame (a transport, say).
        case failed(rank: Int?, reason: String)
        case shutDown
    }

    /// A step sent and not yet collected.
    public struct InFlightStep: Sendable, Equatable {
        public var step: UInt64
        public var virtualEngine: Int

        public init(step: UInt64, virtualEngine: Int) {
            self.step = step
            self.virtualEngine = virtualEngine
        }
    }

    public private(set) var state: State = .created
    /// Steps sent and not yet collected, oldest first.
    public private(set) var inFlight: [InFlightStep] = []
    /// The number the next step sent will take.
    public private(set) var nextStep: UInt64 = 0

    public init() {}

    // MARK: - Start

    /// created → starting(launching).
    public mutating func start() throws(LifecycleError) {
        guard state == .created else { throw .illegal("start", state) }
        state = .starting(.launching)
    }

    /// starting(p) → starting(q), phases only forward.
    public mutating func enter(_ phase: Phase) throws(LifecycleError) {
        guard case let .starting(current) = state,
              let from = Phase.allCases.firstIndex(of: current), let to = Phase.allCases.firstIndex(of: phase), to > from
        else { throw .illegal("enter \(phase.rawValue)", state) }
        state = .starting(phase)
    }

    /// starting → running(looping): workers start in their loop.
    public mutating func started() throws(LifecycleError) {
        guard case .starting = state else { throw .illegal("finish start-up", state) }
        state = .running(.looping)
    }

    // MARK: - Steps

    public enum SubmitAction: Sendable, Equatable {
        /// Send step `step` now.
        case send(step: UInt64)
        /// Put the workers back into their loop (an idle stop took them out), then send.
        case resumeLoopThenSend(step: UInt64)
    }

    /// What submitting a step of `virtualEngine` takes; the owner then calls `sent`.
    public func submit(virtualEngine: Int) throws(LifecycleError) -> SubmitAction {
        switch state {
        case .running(.looping): return .send(step: nextStep)
        case .running(.paused): return .resumeLoopThenSend(step: nextStep)
        case let .failed(rank, reason): throw .failed(rank: rank, reason: reason)
        default: throw .illegal("submit a step", state)
        }
    }

    /// The step numbered `nextStep` went out: it is in flight, and the loop runs.
    public mutating func sent(virtualEngine: Int) {
        precondition(isRunning, "sent(virtualEngine:) outside running: \(state)")
        state = .running(.looping)
        inFlight.append(InFlightStep(step: nextStep, virtualEngine: virtualEngine))
        nextStep += 1
    }

    /// The oldest step in flight, to collect now (it leaves the queue).
    public mutating func receive() throws(LifecycleError) -> InFlightStep {
        if case let .failed(rank, reason) = state { throw .failed(rank: rank, reason: reason) }
        guard isRunning else { throw .illegal("receive a step", state) }
        guard !inFlight.isEmpty else { throw .nothingInFlight }
        return inFlight.removeFirst()
    }

    public enum PauseAction: Sendable, Equatable {
        /// Take the workers out of their loop.
        case stopLoop
        /// Already paused.
        case none
    }

    /// running(looping) → running(paused), between steps only.
    public mutating func pause() throws(LifecycleError) -> PauseAction {
        switch state {
        case .running(.paused): return .none
        case .running(.looping):
            guard inFlight.isEmpty else { throw .stepsInFlight(inFlight.count) }
            state = .running(.paused)
            return .stopLoop
        case let .failed(rank, reason): throw .failed(rank: rank, reason: reason)
        default: throw .illegal("stop the execution loop", state)
        }
    }

    public var isRunning: Bool { if case .running = state { true } else { false } }
    public var isLooping: Bool { state == .running(.looping) }

    // MARK: - Failure and shutdown

    public enum StopAction: Sendable, Equatable {
        /// Stop every worker and release what the executor holds.
        case shutDownWorkers
        case none
    }

    /// Any state but shut down → failed (the first failure is kept); in-flight steps are lost.
    public mutating func fail(rank: Int?, reason: String) -> StopAction {
        switch state {
        case .failed, .shutDown: return .none
        case .created:
            state = .failed(rank: rank, reason: reason)
            return .none
        case .starting, .running:
            state = .failed(rank: rank, reason: reason)
            inFlight.removeAll()
            return .shutDownWorkers
        }
    }

    /// Any state → shut down. Idempotent; after a failure the workers are already stopped.
    public mutating func shutdown() -> StopAction {
        defer {
            state = .shutDown
            inFlight.removeAll()
        }
        switch state {
        case .created, .shutDown, .failed: return .none
        case .starting, .running: return .shutDownWorkers
        }
    }
}

/// A lifecycle transition that is not allowed now, or a call on a failed executor.
public enum LifecycleError: Error, Equatable, CustomStringConvertible {
    /// `action` is not allowed in `state`.
    case illegal(String, ExecutorLifecycle.State)
    /// The executor failed earlier; every call fails with the first failure.
    case failed(rank: Int?, reason: String)
    /// `receive` without a step in flight.
    case nothingInFlight
    /// The loop stops between steps only.
    case stepsInFlight(Int)

    public var description: String {
        switch self {
        case let .illegal(action, state): "cannot \(action): the executor is \(state.description)"
        case let .failed(_, reason): reason
        case .nothingInFlight: "receive: expected a step in flight, found none"
        case let .stepsInFlight(n): "the execution loop stops between steps: \(n) step(s) still in flight"
        }
    }
}

extension ExecutorLifecycle.State: CustomStringConvertible {
    public var description: String {
        switch self {
        case .created: "created (not started)"
        case let .starting(phase): "starting (\(phase.rawValue))"
        case .running(.looping): "running"
        case .running(.paused): "running (execution loop paused)"
        case let .failed(rank, reason): "failed\(rank.map { " (rank \($0))" } ?? ""): \(reason)"
        case .shutDown: "shut down"
        }
    }
}
