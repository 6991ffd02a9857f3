#if canImport(Glibc)
import Glibc
#endif
internal import CPlatform

/// A fixed set of worker threads that run one data-parallel job at a time.
///
/// A job is a number of chunks; threads claim chunks one by one from a shared counter, so a
/// thread that the OS deschedules (another process wants the core) delays only the chunk it
/// holds, not a fixed share of the work. The calling thread is worker 0 and always takes
/// part, so `threads: 1` starts no thread. Waiting threads spin for a short, bounded time
/// (`spinLimit` pause instructions, a few microseconds) and then sleep on a futex: on a
/// machine where processes outnumber cores, unbounded spinning collapses throughput.
///
///     let pool = ThreadPool(threads: 4)
///     pool.run(chunks: 16) { chunk, thread in /* work on chunk; scratch of `thread` */ }
///     pool.shutdown()   // joins the threads; also done on deinit
///
/// `run` is not reentrant and must be called from one thread at a time (the owning worker).
public final class ThreadPool: @unchecked Sendable {
    // @unchecked: `job` is written only by the caller of `run` before it publishes a new
    // generation in `claims` (sequentially consistent) and read by workers only after they
    // claim a chunk of that generation; `run` returns only when every chunk of the
    // generation is done. The chunk count lives in the claim word itself: a worker still
    // looping over a finished generation, while the caller already sets up the next run,
    // sees that generation's own count and cannot claim a chunk past its end (it once did,
    // reading the next run's count: it ran a chunk of the next job early and counted one
    // completion too many, and the caller waited forever).

    public let threadCount: Int
    /// Pause iterations before a waiting thread sleeps.
    public let spinLimit: Int

    /// 32-bit futex words: generation, completed chunks, stop flag, sleeping workers, caller sleeping.
    private let words: UnsafeMutablePointer<UInt32>
    private var generation: UnsafeMutablePointer<UInt32> { words }
    private var completed: UnsafeMutablePointer<UInt32> { words + 1 }
    private var stopFlag: UnsafeMutablePointer<UInt32> { words + 2 }
    private var sleepers: UnsafeMutablePointer<UInt32> { words + 3 }
    private var callerSleeping: UnsafeMutablePointer<UInt32> { words + 4 }
    /// generation << 32 | chunk count << 16 | next unclaimed chunk.
    private let claims: UnsafeMutablePointer<UInt64>
    nonisolated(unsafe) private var job: ((Int, Int) -> Void)?
    private var threads: [pthread_t] = []
    private var isShutDown = false

    public init(threads: Int, spinLimit: Int = 2_000) {
        precondition(threads >= 1, "a thread pool needs at least one thread, got \(threads)")
        self.threadCount = threads
        self.spinLimit = spinLimit
        words = .allocate(capacity: 8)
        words.initialize(repeating: 0, count: 8)
        claims = .allocate(capacity: 1)
        claims.initialize(to: 0)
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
        claims.deallocate()
    }

    /// Runs `body(chunk, thread)` for every chunk in `0..<chunks`, spread over the threads
    /// (the caller's is thread 0), and returns when all chunks are done.
    public func run(chunks: Int, _ body: (Int, Int) -> Void) {
        guard chunks > 0 else { return }
        precondition(chunks < 1 << 16, "a job has at most 65535 chunks, got \(chunks)")
        if threadCount == 1 || chunks == 1 {
            for chunk in 0..<chunks { body(chunk, 0) }
            return
        }
        withoutActuallyEscaping(body) { escaped in
            job = escaped
            cohort_atomic_store(completed, 0)
            let next = cohort_atomic_load(generation) &+ 1
            cohort_atomic_store64(claims, UInt64(next) << 32 | UInt64(chunks) << 16)
            cohort_atomic_store(generation, next)
            if cohort_atomic_load(sleepers) > 0 { cohort_futex_wake_all(generation) }
            work(generation: next, thread: 0)
            waitForCompletion(chunks: UInt32(chunks))
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

    /// Claims and runs chunks of `generation` until none is left.
    private func work(generation: UInt32, thread: Int) {
        while true {
            let state = cohort_atomic_load64(claims)
            guard UInt32(truncatingIfNeeded: state >> 32) == generation else { return }
            let count = UInt32(truncatingIfNeeded: state >> 16) & 0xFFFF
            let chunk = UInt32(truncatingIfNeeded: state) & 0xFFFF
            guard chunk < count else { return }
            guard cohort_atomic_compare_exchange64(claims, state, state + 1) != 0 else { continue }
            job!(Int(chunk), thread)
            if cohort_atomic_fetch_add(completed, 1) + 1 == count, cohort_atomic_load(callerSleeping) != 0 {
                cohort_futex_wake_all(completed)
            }
        }
    }

    private func workerLoop(index: Int) {
        // Start from the initial generation, not the current one: a job may already be published.
        var seen: UInt32 = 0
        while true {
            var spins = 0
            while cohort_atomic_load(generation) == seen {
                if spins < spinLimit {
                    spins += 1
                    cohort_cpu_relax()
                } else {
                    _ = cohort_atomic_fetch_add(sleepers, 1)
                    if cohort_atomic_load(generation) == seen { cohort_futex_wait(generation, seen) }
                    _ = cohort_atomic_fetch_add(sleepers, UInt32.max)
                }
            }
            seen = cohort_atomic_load(generation)
            if cohort_atomic_load(stopFlag) != 0 { return }
            work(generation: seen, thread: index)
        }
    }

    private func waitForCompletion(chunks: UInt32) {
        var spins = 0
        while true {
            let done = cohort_atomic_load(completed)
            if done >= chunks { return }
            if spins < spinLimit {
                spins += 1
                cohort_cpu_relax()
            } else {
                cohort_atomic_store(callerSleeping, 1)
                if cohort_atomic_load(completed) == done { cohort_futex_wait(completed, done) }
                cohort_atomic_store(callerSleeping, 0)
            }
        }
    }

    /// The slice `[begin, end)` of `count` items that part `part` of `parts` owns, with
    /// boundaries on multiples of `granule`.
    @inlinable
    public static func slice(of count: Int, part: Int, parts: Int, granule: Int = 1) -> Range<Int> {
        let units = (count + granule - 1) / granule
        let begin = min(count, (units * part / parts) * granule)
        let end = min(count, (units * (part + 1) / parts) * granule)
        return begin..<end
    }

    /// Chunks to split `items` into: two per thread, so a descheduled thread holds back
    /// little, but never chunks smaller than `minimumItems`. (Four per thread measured no
    /// better under contention and worse alone: each claim costs a compare-and-swap.)
    public func chunkCount(items: Int, minimumItems: Int = 1) -> Int {
        max(1, min(threadCount * 2, items / max(1, minimumItems)))
    }
}
