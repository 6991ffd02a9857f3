internal import CPlatform
#if canImport(Glibc)
import Glibc
#endif

/// Signals as plain events: a handler that only writes the signal's number to a pipe, and a
/// thread of our own that reads it and calls `handle` (the self-pipe trick), so delivery
/// depends on no runtime's signal machinery.
public enum SignalPipe {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    /// Starts forwarding `signals` to `handle`, once per process.
    public static func forward(_ signals: [Int32], to handle: @escaping @Sendable (Int32) -> Void) throws {
        let fd = signals.withUnsafeBufferPointer { cohort_forward_signals($0.baseAddress, Int32($0.count)) }
        guard fd >= 0 else { throw Failure(description: "cannot handle signals \(signals): a handler is installed already, or no pipe") }
        Threads.detach {
            var byte: UInt8 = 0
            while true {
                let n = read(fd, &byte, 1)
                if n == 1 { handle(Int32(byte)) } else if n < 0 && errno == EINTR { continue } else { return }
            }
        }
    }
}
