import Kernels
import Synchronization
import Testing

@Suite struct ThreadPoolTests {
    @Test("every thread index runs once per job, many jobs in a row", arguments: [1, 2, 4])
    func eachIndexOnce(threads: Int) {
        let pool = ThreadPool(threads: threads)
        let counts = Mutex([Int](repeating: 0, count: threads))
        for _ in 0..<500 {
            pool.run { thread, n in
                #expect(n == threads)
                counts.withLock { $0[thread] += 1 }
            }
        }
        #expect(counts.withLock { $0 } == [Int](repeating: 500, count: threads))
        pool.shutdown()
        pool.shutdown()  // idempotent
    }

    @Test("slices partition the range on granule boundaries")
    func slices() {
        for count in [0, 1, 5, 64, 577] {
            for threads in 1...5 {
                var covered: [Int] = []
                for t in 0..<threads {
                    let s = ThreadPool.slice(of: count, thread: t, threads: threads, granule: 4)
                    if s.lowerBound < count { #expect(s.lowerBound % 4 == 0) }
                    covered += Array(s)
                }
                #expect(covered == Array(0..<count))
            }
        }
    }
}
