import ExecutorTestSupport
import Testing

@Suite struct ToleranceTests {
    @Test("a NaN anywhere, not only first, fails every bound")
    func nanAnywhere() {
        let clean: [Float] = [1, 2, 3, 4]
        for i in clean.indices {
            var dirty = clean
            dirty[i] = .nan
            #expect(!(Tolerance.maxAbsoluteDifference(dirty, clean) < 1), "NaN at \(i)")
            #expect(!(Tolerance.maxAbsoluteDifference(clean, dirty) <= 1e9), "NaN at \(i), second argument")
            #expect(!(Tolerance.relativeL2(dirty, clean) < 1), "NaN at \(i)")
            #expect(!(Tolerance.relativeL2(clean, dirty) < 1), "NaN at \(i), second argument")
        }
    }

    @Test("differences are measured; equal infinities are equal, unequal ones infinitely apart")
    func values() {
        #expect(Tolerance.maxAbsoluteDifference([1, 2, 3], [1, 2.5, 2]) == 1)
        #expect(Tolerance.maxAbsoluteDifference([1, .infinity], [1, .infinity]) == 0)
        #expect(Tolerance.maxAbsoluteDifference([1, .infinity], [1, 3]) == .infinity)
        #expect(Tolerance.relativeL2([3, 4], [3, 4]) == 0)
        #expect(abs(Tolerance.relativeL2([3, 5], [3, 4]) - 0.2) < 1e-12)
        #expect(Tolerance.relativeL2([1, 1], [0, 0]) == 2.0.squareRoot())
    }
}
