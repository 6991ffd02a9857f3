#if canImport(Glibc)
import Glibc
#endif
import ExecutorCore
import Synchronization

/// A worker process this driver started: its launch index and pid, and how it ended.
public final class ChildProcess: Sendable {
    /// Position in the launch (ranks are assigned by the executor).
    public let index: Int
    public let pid: Int32
    /// How it ended, once reaped (waitpid may reap only once).
    private let exit = Mutex<Termination?>(nil)

    /// How a process ended.
    public enum Termination: Equatable, Sendable, CustomStringConvertible {
        case exited(status: Int32)
        case signaled(signal: Int32)

        public var description: String {
            switch self {
            case let .exited(status): "exited with status \(status)"
            case let .signaled(signal): "was killed by signal \(signal) (\(Self.signalName(signal)))"
            }
        }

        static func signalName(_ s: Int32) -> String {
            switch s {
            case SIGKILL: "SIGKILL"
            case SIGTERM: "SIGTERM"
            case SIGSEGV: "SIGSEGV"
            case SIGABRT: "SIGABRT"
            case SIGILL: "SIGILL"
            case SIGBUS: "SIGBUS"
            case SIGINT: "SIGINT"
            default: "signal \(s)"
            }
        }
    }

    public init(index: Int, pid: Int32) {
        self.index = index
        self.pid = pid
    }

    /// How the process ended, or nil while it runs (reaps it without blocking).
    public func termination() -> Termination? {
        exit.withLock { exit in
            if let exit { return exit }
            var status: Int32 = 0
            let rc = waitpid(pid, &status, WNOHANG)
            guard rc == pid else { return nil }
            exit = Self.decode(status)
            return exit
        }
    }

    /// Sends SIGKILL (if still running) and reaps the process, waiting at most `timeout`.
    public func kill(timeout: Double = 5) {
        guard termination() == nil else { return }
        Glibc.kill(pid, SIGKILL)
        let deadline = MonotonicClock.now() + timeout
        while termination() == nil && MonotonicClock.now() < deadline { usleep(1_000) }
    }

    /// Waits up to `timeout` seconds for the process to end by itself.
    public func wait(timeout: Double) -> Termination? {
        let deadline = MonotonicClock.now() + timeout
        while MonotonicClock.now() < deadline {
            if let t = termination() { return t }
            usleep(1_000)
        }
        return termination()
    }

    static func decode(_ status: Int32) -> Termination {
        // WIFSIGNALED / WTERMSIG / WEXITSTATUS are macros Swift cannot import.
        let signal = status & 0x7F
        return signal != 0 && signal != 0x7F ? .signaled(signal: signal) : .exited(status: (status >> 8) & 0xFF)
    }
}
