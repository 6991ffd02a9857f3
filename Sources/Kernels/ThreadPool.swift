#if canImport(Glibc)
import Glibc
#endif
internal import CKernels

/// A fixed set of worker threads that run one data-parallel job at a time.
///
/// The calling thread is worker 0 and always takes part, so `threads: 1` starts no thread.
/// Workers spin for a short, bounded time (`spinLimit` pause instructions, a few
/// microseconds) and then sleep on a futex: on a machine where processes outnumber cores,
/// llama.cpp's unbounded spinning collapses throughput, and this pool must not.
///
///     let pool = ThreadPool(threads: 4)
///     pool.run { thread, threads in /* work on slice `thread` of `threads` */ }
///     pool.shutdown()   // joins the threads; also done on deinit
///
/// `run` is not reentrant and must be called from one thread at a time (the owning worker).
public final class ThreadPool: @unchecked Sendable {
    // @unchecked: `job` is written only by the caller of `run` before it publishes a new
    // generation (release) and read by workers after they observe it (acquire); `run`
    // returns only after every worker has finished reading it.

    public let threadCount: Int
    /// Pause iterations before a waiting worker sleeps.
    public let spinLimit: Int

    /// Futex words: generation, remaining workers, stop flag.
    private let words: UnsafeMutablePointer<UInt32>
    private var generation: UnsafeMutablePointer<UInt32> { words }
    private var remaining: UnsafeMutablePointer<UInt32> { words + 1 }
    private var stopFlag: UnsafeMutablePointer<UInt32> { words + 2 }
    nonisolated(unsafe) private var job: ((Int, Int) -> Void)?
    private var threads: [pthread_t] = []
    private var isShutDown = false

    public init(threads: Int, spinLimit: Int = 2_000) {
        precondition(threads >= 1, "a thread pool needs at least one thread, got \(threads)")
        self.threadCount = threads
        self.spinLimit = spinLimit
        self.words = .allocate(capacity: 4)
        words.initialize(repeating: 0, count: 4)
        for index in 1..<threads {
            let context = Unmanaged.passRetained(WorkerContext(pool: self, index: index)).toOpaque()
            var thread = pthread_t()
            let rc = pthread_create(&thread, nil, { raw in
                let context = Unmanaged<WorkerContext>.fromOpaque(raw!).takeRetainedValue()
                context.pool.workerLoop(index: context.index)
                return nil
            }, context)
            precondition(rc == 0, "pthread_create failed with \(rc)")
            self.threads.append(thread)
        }
    }

    deinit {
        shutdown()
        words.deallocate()
    }

    /// Runs `body(thread, threadCount)` on every thread, the caller included, and returns
    /// when all have finished.
    public func run(_ body: (Int, Int) -> Void) {
        if threadCount == 1 {
            body(0, 1)
            return
        }
        withoutActuallyEscaping(body) { escaped in
            job = escaped
            cohort_atomic_store(remaining, UInt32(threadCount - 1))
            _ = cohort_atomic_fetch_add(generation, 1)
            cohort_futex_wake_all(generation)
            escaped(0, threadCount)
            wait(until: remaining, equals: 0)
            job = nil
        }
    }

    /// Stops and joins the worker threads. Idempotent.
    public func shutdown() {
        guard !isShutDown else { return }
        isShutDown = true
        cohort_atomic_store(stopFlag, 1)
        _ = cohort_atomic_fetch_add(generation, 1)
        cohort_futex_wake_all(generation)
        for thread in threads { pthread_join(thread, nil) }
        threads.removeAll()
    }

    // MARK: - Workers

    private final class WorkerContext {
        let pool: ThreadPool
        let index: Int
        init(pool: ThreadPool, index: Int) {
            self.pool = pool
            self.index = index
        }
    }

    private func workerLoop(index: Int) {
        // Start from the initial generation, not the current one: a job may already be published.
        var seen: UInt32 = 0
        while true {
            seen = waitForChange(of: generation, from: seen)
            if cohort_atomic_load(stopFlag) != 0 { return }
            job!(index, threadCount)
            if cohort_atomic_fetch_add(remaining, UInt32.max) == 1 {  // subtract 1; we were last
                cohort_futex_wake_all(remaining)
            }
        }
    }

    private func waitForChange(of word: UnsafeMutablePointer<UInt32>, from old: UInt32) -> UInt32 {
        var spins = 0
        while true {
            let now = cohort_atomic_load(word)
            if now != old { return now }
            if spins < spinLimit {
                spins += 1
                cohort_cpu_relax()
            } else {
                cohort_futex_wait(word, old)
            }
        }
    }

    private func wait(until word: UnsafeMutablePointer<UInt32>, equals target: UInt32) {
        var spins = 0
        while true {
            let now = cohort_atomic_load(word)
            if now == target { return }
            if spins < spinLimit {
                spins += 1
                cohort_cpu_relax()
            } else {
                cohort_futex_wait(word, now)
            }
        }
    }

    /// The slice `[begin, end)` of `count` items that thread `thread` of `threads` owns,
    /// with boundaries on multiples of `granule`.
    @inlinable
    public static func slice(of count: Int, thread: Int, threads: Int, granule: Int = 1) -> Range<Int> {
        let units = (count + granule - 1) / granule
        let begin = min(count, (units * thread / threads) * granule)
        let end = min(count, (units * (thread + 1) / threads) * granule)
        return begin..<end
    }
}
