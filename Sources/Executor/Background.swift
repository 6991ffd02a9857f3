import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Work on a thread of its own (a rendezvous to serve, a group to join while the caller
/// starts processes), with its result collected later. For start-up, not for steps.
enum Background {
    final class Pending<T: Sendable>: Sendable {
        let result = Mutex<Result<T, any Error>?>(nil)

        /// Waits for the result (polling: start-up only).
        func wait() throws -> T {
            while true {
                if let result = result.withLock({ $0 }) { return try result.get() }
                usleep(1_000)
            }
        }
    }

    final class Box: @unchecked Sendable {
        let body: () -> Void
        init(_ body: @escaping () -> Void) { self.body = body }
    }

    @discardableResult
    static func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) -> Pending<T> {
        let pending = Pending<T>()
        let box = Box {
            let result = Result { try body() }
            pending.result.withLock { $0 = result }
        }
        var thread = pthread_t()
        let context = Unmanaged.passRetained(box).toOpaque()
        pthread_create(&thread, nil, { raw in
            let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
            box.body()
            return nil
        }, context)
        pthread_detach(thread)
        return pending
    }
}
