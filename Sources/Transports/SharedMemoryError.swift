#if canImport(Glibc)
import Glibc
#endif

/// Why a shared-memory operation (segment, ring, communicator) failed.
public enum SharedMemoryError: Error, Equatable, CustomStringConvertible {
    case invalidConfiguration(String)
    case system(call: String, errno: Int32)
    case layoutMismatch(name: String, expected: String, found: String)
    case messageTooLarge(bytes: Int, slotBytes: Int)
    case timedOut(waitingFor: String, seconds: Double)

    public var description: String {
        switch self {
        case let .invalidConfiguration(s): "invalid shared-memory configuration: expected \(s)"
        case let .system(call, e): "\(call) failed: \(String(cString: strerror(e)))"
        case let .layoutMismatch(name, expected, found): "shared-memory segment \(name): expected \(expected), found \(found)"
        case let .messageTooLarge(bytes, slotBytes): "a message of \(bytes) bytes does not fit the ring's \(slotBytes)-byte slots"
        case let .timedOut(waitingFor, seconds): "timed out after \(seconds) s waiting for \(waitingFor)"
        }
    }
}
