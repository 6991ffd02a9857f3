import ExecutorCore
import Launchers
import Metrics
import Synchronization
import Transports
import WorkerRuntime
#if canImport(Glibc)
import Glibc
#endif

/// The driver's view of its worker processes' health, kept current by a thread of its own
/// (`HealthMonitor`) and read by every wait of the driver: a rank whose link closed or
/// whose process ended is dead; one whose heartbeats stopped for `silenceLimit` is stuck
/// (a stopped process, a machine gone quiet). Reads and writes take a mutex briefly.
final class HealthBoard: Sendable {
    struct Entry: Sendable {
        var rank: Int
        var machine: String
        var pid: Int32
        var heard: Double
        var heartbeat = Heartbeat()
        var dead: String?
        var termination: ChildProcess.Termination?
    }

    private let entries: Mutex<[Entry]>
    let silenceLimit: Double

    /// `workers[i]` is rank i + 1.
    init(workers: [(machine: String, pid: Int32)], silenceLimit: Double) {
        let now = MonotonicClock.now()
        entries = Mutex(workers.enumerated().map { Entry(rank: $0.offset + 1, machine: $0.element.machine, pid: $0.element.pid, heard: now) })
        self.silenceLimit = silenceLimit
    }

    /// Records a heartbeat; returns the previous one.
    @discardableResult
    func heard(rank: Int, _ heartbeat: Heartbeat) -> Heartbeat {
        entries.withLock {
            let previous = $0[rank - 1].heartbeat
            $0[rank - 1].heard = MonotonicClock.now()
            $0[rank - 1].heartbeat = heartbeat
            return previous
        }
    }

    /// Seconds since each rank's last heartbeat, by rank − 1.
    func ages() -> [Double] {
        let now = MonotonicClock.now()
        return entries.withLock { $0.map { now - $0.heard } }
    }

    /// Records that a rank is gone (the first reason wins).
    func markDead(rank: Int, reason: String, termination: ChildProcess.Termination? = nil) {
        entries.withLock {
            if $0[rank - 1].dead == nil {
                $0[rank - 1].dead = reason
                $0[rank - 1].termination = termination
            }
        }
    }

    func isDead(rank: Int) -> Bool { entries.withLock { $0[rank - 1].dead != nil } }

    /// The first rank that is dead, else the first whose heartbeats stopped, as a failure
    /// during `activity`.
    func failure(during activity: @autoclosure () -> String) -> WorkerFailure? {
        let now = MonotonicClock.now()
        return entries.withLock { entries -> WorkerFailure? in
            for e in entries where e.dead != nil {
                if let t = e.termination { return .died(rank: e.rank, pid: e.pid, machine: e.machine, termination: t) }
                return .linkLost(rank: e.rank, pid: e.pid, machine: e.machine, reason: e.dead!, during: activity())
            }
            for e in entries where now - e.heard > silenceLimit {
                return .silent(rank: e.rank, pid: e.pid, machine: e.machine, seconds: now - e.heard, during: activity())
            }
            return nil
        }
    }

    /// Every worker process's health (ranks 1…).
    func report() -> [RankHealth] {
        let now = MonotonicClock.now()
        return entries.withLock { entries in
            entries.map { e in
                let status: RankHealth.Status
                if let dead = e.dead {
                    status = .dead(e.termination.map { "\($0)" } ?? dead)
                } else if now - e.heard > silenceLimit {
                    status = .stuck("no heartbeat for \(Self.seconds(now - e.heard)) s")
                } else {
                    status = .alive
                }
                let finished = e.heartbeat.stepFinished
                return RankHealth(
                    rank: e.rank, machine: e.machine, processID: e.pid, status: status,
                    lastStep: finished == Heartbeat.none ? nil : finished, heartbeatAge: now - e.heard)
            }
        }
    }

    static func seconds(_ s: Double) -> String {
        let tenths = (s * 10).rounded() / 10
        return "\(tenths)"
    }
}

/// The driver's heartbeat thread: it reads every worker's heartbeats from its link, sends
/// the driver's own, and watches the processes the launcher can watch. It never touches
/// the step path: waits consult the `HealthBoard` it fills.
final class HealthMonitor: Sendable {
    let board: HealthBoard
    private let stopping = Atomic<Bool>(false)
    private let stopped = Atomic<Bool>(false)

    /// Starts watching: `links[i]` and `handles[i]` belong to rank i + 1.
    init(board: HealthBoard, links: [TCPConnection], handles: [(any WorkerProcessHandle)?], interval: Double) {
        self.board = board
        let state = MonitorState(links: links, handles: handles)
        Threads.detach { [self] in
            self.watch(state, interval: interval)
            state.links.forEach { $0.close() }
            self.stopped.store(true, ordering: .releasing)
        }
    }

    /// Stops the thread and closes the links (workers still running then exit). Waits at
    /// most a second for the thread. Idempotent.
    func stop() {
        stopping.store(true, ordering: .releasing)
        let deadline = MonotonicClock.now() + 1
        while !stopped.load(ordering: .acquiring) && MonotonicClock.now() < deadline { usleep(1_000) }
    }

    /// The links and handles, owned by the monitor thread.
    final class MonitorState: @unchecked Sendable {
        // @unchecked: handed to the monitor thread at start and used there only.
        let links: [TCPConnection]
        let handles: [(any WorkerProcessHandle)?]
        init(links: [TCPConnection], handles: [(any WorkerProcessHandle)?]) {
            self.links = links
            self.handles = handles
        }
    }

    private func watch(_ state: MonitorState, interval: Double) {
        var writer = WireWriter(capacity: 64)
        // Per-rank step time (the mean over each heartbeat's steps) and heartbeat age.
        let stepTimers = state.links.indices.map { Metrics.Timer(label: "cohort_rank_step_seconds", dimensions: [("rank", "\($0 + 1)")]) }
        let ages = state.links.indices.map { Gauge(label: "cohort_rank_heartbeat_age_seconds", dimensions: [("rank", "\($0 + 1)")]) }
        var nextBeat = 0.0
        var fds = state.links.map { pollfd(fd: $0.fd, events: Int16(POLLIN), revents: 0) }
        while !stopping.load(ordering: .acquiring) {
            let now = MonotonicClock.now()
            if now >= nextBeat {
                Heartbeat().encode(into: &writer)
                for (i, link) in state.links.enumerated() where !board.isDead(rank: i + 1) {
                    do { try writer.withBytes { try link.send($0, timeout: 0.5) } } catch { lost(i, state, "its link failed (\(error))") }
                }
                nextBeat = now + interval
                for (i, age) in board.ages().enumerated() { ages[i].record(age) }
            }
            for i in fds.indices { fds[i].revents = 0 }
            // Sleep until the next beat: a link that closes or a beat that arrives wakes it sooner.
            let wait = Int32(max(1, (nextBeat - MonotonicClock.now()) * 1000))
            if poll(&fds, nfds_t(fds.count), wait) > 0 {
                for (i, p) in fds.enumerated() where p.revents != 0 && !board.isDead(rank: i + 1) {
                    do {
                        let beat = try state.links[i].receive(timeout: 1) { try Heartbeat(decoding: $0) }
                        let previous = board.heard(rank: i + 1, beat)
                        if beat.steps > previous.steps && beat.stepNanoseconds >= previous.stepNanoseconds {
                            stepTimers[i].recordNanoseconds(Int64((beat.stepNanoseconds - previous.stepNanoseconds) / (beat.steps - previous.steps)))
                        }
                    } catch {
                        lost(i, state, "its link to the driver closed (\(error))")
                        fds[i].fd = -1  // poll ignores negative descriptors
                    }
                }
            }
            for (i, handle) in state.handles.enumerated() {
                if let handle, !board.isDead(rank: i + 1), let t = handle.termination() {
                    board.markDead(rank: i + 1, reason: "\(t)", termination: t)
                }
            }
        }
    }

    /// A link failed: the process probably ended; give its exit status a moment to appear.
    private func lost(_ i: Int, _ state: MonitorState, _ reason: String) {
        if let handle = state.handles[i] {
            let deadline = MonotonicClock.now() + 0.2
            repeat {
                if let t = handle.termination() {
                    board.markDead(rank: i + 1, reason: "\(t)", termination: t)
                    return
                }
                usleep(2_000)
            } while MonotonicClock.now() < deadline
        }
        board.markDead(rank: i + 1, reason: reason)
    }
}
