import Kernels
import Synchronization
import Testing
#if canImport(Glibc)
import Glibc
#endif

@Suite struct ThreadPoolTests {
    /// A worker still looping over a finished job while the caller sets up the next one must
    /// not claim a chunk of the next job early (it once did when the next job had more
    /// chunks, then counted a completion too many and the caller waited forever).
    @Test("back-to-back jobs of changing sizes run each chunk of each job exactly once")
    func changingSizes() {
        let pool = ThreadPool(threads: 2)
        let runs = Mutex([Int](repeating: 0, count: 8))
        var failures = 0
        for i in 0..<50_000 {
            let chunks = i % 3 == 0 ? 2 : (i % 3 == 1 ? 7 : 4)
            runs.withLock { $0 = [Int](repeating: 0, count: 8) }
            pool.run(chunks: chunks) { chunk, _ in runs.withLock { $0[chunk] += 1 } }
            let counts = runs.withLock { $0 }
            if counts.prefix(chunks).contains(where: { $0 != 1 }) || counts.dropFirst(chunks).contains(where: { $0 != 0 }) { failures += 1 }
        }
        #expect(failures == 0)
    }

    @Test("every chunk runs exactly once per job, over many jobs in a row", arguments: [1, 2, 4])
    func eachChunkOnce(threads: Int) {
        let pool = ThreadPool(threads: threads)
        let chunks = 13
        let counts = Mutex([Int](repeating: 0, count: chunks))
        let threadsSeen = Mutex(Set<Int>())
        for _ in 0..<500 {
            pool.run(chunks: chunks) { chunk, thread in
                #expect(thread >= 0 && thread < threads)
                counts.withLock { $0[chunk] += 1 }
                threadsSeen.withLock { _ = $0.insert(thread) }
            }
        }
        #expect(counts.withLock { $0 } == [Int](repeating: 500, count: chunks))
        #expect(threadsSeen.withLock { $0.contains(0) })
        pool.shutdown()
        pool.shutdown()  // idempotent
    }

    @Test("a job finishes while one worker is slow: the others take its chunks")
    func slowWorker() {
        let pool = ThreadPool(threads: 2)
        let byThread = Mutex([0, 0])
        pool.run(chunks: 40) { _, thread in
            if thread == 1 { usleep(20_000) }  // a descheduled thread
            byThread.withLock { $0[thread] += 1 }
        }
        let counts = byThread.withLock { $0 }
        #expect(counts[0] + counts[1] == 40)
        #expect(counts[0] > counts[1])
    }

    @Test("slices partition the range on granule boundaries")
    func slices() {
        for count in [0, 1, 5, 64, 577] {
            for threads in 1...5 {
                var covered: [Int] = []
                for t in 0..<threads {
                    let s = ThreadPool.slice(of: count, part: t, parts: threads, granule: 4)
                    if s.lowerBound < count { #expect(s.lowerBound % 4 == 0) }
                    covered += Array(s)
                }
                #expect(covered == Array(0..<count))
            }
        }
    }
}
