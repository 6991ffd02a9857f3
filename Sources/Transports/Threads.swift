#if canImport(Glibc)
import Glibc
#endif

/// Threads of their own, for work that must not wait on Swift's cooperative pool or block
/// it: heartbeats, a rendezvous served during start-up, one end of a ring handshake.
public enum Threads {
    final class Box: @unchecked Sendable {
        // @unchecked: handed from the creating thread to the new one, then used there only.
        let body: () -> Void
        init(_ body: @escaping () -> Void) { self.body = body }
    }

    /// A thread from `start`, to `join`.
    public struct Handle: @unchecked Sendable {
        // @unchecked: a thread id, joined once by its starter.
        let thread: pthread_t
    }

    /// Starts a thread running `body`; `join` it to wait for the end.
    public static func start(_ body: @escaping @Sendable () -> Void) -> Handle {
        var thread = pthread_t()
        let rc = pthread_create(&thread, nil, { raw in
            Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue().body()
            return nil
        }, Unmanaged.passRetained(Box(body)).toOpaque())
        precondition(rc == 0, "pthread_create failed: \(rc)")
        return Handle(thread: thread)
    }

    /// Starts a detached thread running `body`.
    public static func detach(_ body: @escaping @Sendable () -> Void) {
        pthread_detach(start(body).thread)
    }

    /// Waits for a thread from `start` to end.
    public static func join(_ handle: Handle) {
        pthread_join(handle.thread, nil)
    }
}
