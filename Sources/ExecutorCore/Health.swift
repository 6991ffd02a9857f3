/// What the executor knows about one rank: alive, stuck or dead, how far its steps got,
/// and how old its last heartbeat is.
public struct RankHealth: Sendable, Equatable {
    public enum Status: Sendable, Equatable {
        case alive
        /// Up but not progressing: its heartbeats stopped (a stopped process) or a step ran
        /// past its deadline; the reason says which.
        case stuck(String)
        /// Gone: exited, killed, or its link to the driver closed.
        case dead(String)
    }

    public var rank: Int
    /// The machine it runs on (host name).
    public var machine: String
    public var processID: Int32?
    public var status: Status
    /// The last step it finished (nil: none yet).
    public var lastStep: UInt64?
    /// Seconds since its last heartbeat (nil for rank 0, which runs in the driver).
    public var heartbeatAge: Double?

    public init(rank: Int, machine: String, processID: Int32?, status: Status, lastStep: UInt64?, heartbeatAge: Double?) {
        self.rank = rank
        self.machine = machine
        self.processID = processID
        self.status = status
        self.lastStep = lastStep
        self.heartbeatAge = heartbeatAge
    }

    public var isAlive: Bool { status == .alive }
}

extension RankHealth: CustomStringConvertible {
    public var description: String {
        let state: String = switch status {
        case .alive: "alive"
        case let .stuck(reason): "stuck (\(reason))"
        case let .dead(reason): "dead (\(reason))"
        }
        let step = lastStep.map { "last step \($0)" } ?? "no step yet"
        let age = heartbeatAge.map { ", heartbeat \(($0 * 100).rounded() / 100) s ago" } ?? ""
        return "rank \(rank) on \(machine)\(processID.map { " (pid \($0))" } ?? ""): \(state), \(step)\(age)"
    }
}

/// How long a step may take before the rank that has not answered counts as stuck: the
/// larger of `floor` and `multiplier` × the recent 99th percentile, both per step and per
/// token (so a long prefill step after many short decodes gets its due), unless the user
/// fixed it (`--step-timeout`). Before any step was measured: `initial`.
///
/// The floor is 10 s: on a machine with more busy processes than cores a step of 0.5 s can
/// be descheduled for several seconds (seen in the release tests, where three suites run
/// worker grids side by side), and a rank that merely waited must not be called stuck. A
/// stopped rank is found sooner anyway, by its heartbeats.
public struct StepDeadline: Sendable {
    public var fixed: Double?
    public var floor: Double
    public var multiplier: Double
    public var initial: Double
    private var seconds: [Double] = []
    private var perToken: [Double] = []
    private var next = 0
    private var p99Step = 0.0
    private var p99PerToken = 0.0
    private var recorded = 0
    /// Samples kept.
    public static let window = 128

    public init(fixed: Double? = nil, floor: Double = 10, multiplier: Double = 10, initial: Double = 10) {
        self.fixed = fixed
        self.floor = floor
        self.multiplier = multiplier
        self.initial = initial
    }

    /// A step of `tokens` tokens took `seconds`.
    public mutating func record(seconds s: Double, tokens: Int) {
        let t = s / Double(max(1, tokens))
        if seconds.count < Self.window {
            seconds.append(s)
            perToken.append(t)
        } else {
            seconds[next] = s
            perToken[next] = t
            next = (next + 1) % Self.window
        }
        recorded += 1
        // Percentiles are refreshed every few steps: sorting on every step would cost more
        // than the control plane itself.
        if recorded <= 16 || recorded % 16 == 0 {
            p99Step = Self.p99(seconds)
            p99PerToken = Self.p99(perToken)
        }
    }

    /// Steps measured so far.
    public var measured: Int { recorded }

    /// The deadline for a step of `tokens` tokens.
    public func seconds(tokens: Int) -> Double {
        if let fixed { return fixed }
        guard recorded > 0 else { return max(floor, initial) }
        return max(floor, multiplier * p99Step, multiplier * p99PerToken * Double(max(1, tokens)))
    }

    /// Where the deadline comes from, for messages that tell the truth about a wait.
    public func explanation(tokens: Int) -> String {
        if fixed != nil { return "--step-timeout" }
        guard recorded > 0 else { return "no step measured yet" }
        return "\(Int(multiplier))× the p99 of the last \(min(recorded, Self.window)) steps, at least \(floor) s"
    }

    static func p99(_ values: [Double]) -> Double {
        guard !values.isEmpty else { return 0 }
        let sorted = values.sorted()
        return sorted[min(sorted.count - 1, Int((Double(sorted.count) * 0.99).rounded(.up)) - 1)]
    }
}
