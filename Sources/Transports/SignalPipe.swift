internal import CPlatform
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Signals as plain events: a handler that only writes the signal's number to a pipe, and a
/// thread of our own that reads it and calls every handler registered for that signal (the
/// self-pipe trick), so delivery depends on no runtime's signal machinery. Handlers run one
/// after another on that thread: one that must wait starts a thread of its own.
public enum SignalPipe {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    private static let handlers = Mutex<[Int32: [@Sendable (Int32) -> Void]]>([:])
    private static let reading = Mutex(false)

    /// Calls `handle` for each of `signals` from now on (besides any handler registered before).
    public static func forward(_ signals: [Int32], to handle: @escaping @Sendable (Int32) -> Void) throws {
        handlers.withLock { for signal in signals { $0[signal, default: []].append(handle) } }
        let fd = signals.withUnsafeBufferPointer { cohort_forward_signals($0.baseAddress, Int32($0.count)) }
        guard fd >= 0 else { throw Failure(description: "cannot handle signals \(signals): no pipe for them") }
        guard !reading.withLock({ (started: inout Bool) -> Bool in defer { started = true }; return started }) else { return }
        Threads.detach {
            var byte: UInt8 = 0
            while true {
                let n = read(fd, &byte, 1)
                if n == 1 {
                    for handler in handlers.withLock({ $0[Int32(byte)] ?? [] }) { handler(Int32(byte)) }
                } else if n < 0 && errno == EINTR {
                    continue
                } else {
                    return
                }
            }
        }
    }
}
