import Foundation
import ExecutorTestSupport
import Kernels
import Testing

@Suite struct VectorMathTests {
    @Test("dot product equals a scalar sum for every length tail")
    func dot() {
        for n in [1, 7, 8, 31, 32, 33, 100] {
            let a = randomFloats(n, seed: 1), b = randomFloats(n, seed: 2)
            var want = 0.0
            for i in 0..<n { want += Double(a[i]) * Double(b[i]) }
            #expect(abs(Double(VectorMath.dot(a, b, count: n)) - want) < 1e-5)
        }
    }

    @Test("RMSNorm equals a double-precision reference for every length tail")
    func rmsNorm() {
        for n in [1, 7, 8, 37, 64, 576] {
            let x = randomFloats(n, seed: 4), w = randomFloats(n, seed: 5)
            var out = [Float](repeating: .nan, count: n)
            VectorMath.rmsNorm(x, weight: w, epsilon: 1e-5, into: &out, count: n)
            let meanSquare = x.map { Double($0) * Double($0) }.reduce(0, +) / Double(n)
            let scale = 1 / (meanSquare + 1e-5).squareRoot()
            for i in 0..<n {
                let want = Double(x[i]) * scale * Double(w[i])
                #expect(abs(Double(out[i]) - want) <= 1e-6 * max(1, abs(want)), "n \(n), element \(i)")
            }
        }
    }

    @Test("argmax finds the first largest value for every length tail; NaNs never win")
    func argmax() {
        for n in [1, 7, 8, 9, 64, 100, 49152] {
            var x = randomFloats(n, seed: UInt64(n))
            var want = 0
            for i in 1..<n where x[i] > x[want] { want = i }
            #expect(VectorMath.argmax(x, count: n) == want, "n \(n)")
            if n > 9 {
                x[n - 1] = x[want]  // a tie after the first: the first still wins
                x[want == 3 ? 4 : 3] = .nan
                #expect(VectorMath.argmax(x, count: n) == want, "n \(n) with a tie and a NaN")
                x[n - 2] = .infinity
                #expect(VectorMath.argmax(x, count: n) == n - 2, "n \(n) with +inf in the tail")
            }
        }
        #expect(VectorMath.argmax([Float.nan, 1, .nan, 2, 2, .nan, .nan, .nan, .nan], count: 9) == 3)
        #expect(VectorMath.argmax([-Float.infinity, -.infinity, -.infinity], count: 3) == 0)
    }

    @Test("softmax sums to one and keeps order")
    func softmax() {
        var x: [Float] = [1, 3, 2, -1000]
        VectorMath.softmax(&x, count: 4)
        #expect(abs(x.reduce(0, +) - 1) < 1e-6)
        #expect(x[1] > x[2] && x[2] > x[0] && x[3] == 0)
    }

    @Test("vectorized softmax and SwiGLU agree with libm's exp across the range, tails included")
    func expBasedKernels() {
        // 37 values: four 8-lane vectors and a scalar tail; from far below exp's range to large.
        let x: [Float] = (0..<37).map { Float($0) * 5.3 - 120 }
        var p = x
        VectorMath.softmax(&p, count: x.count)
        let m = Double(x.max()!)
        let e = x.map { Foundation.exp(Double($0) - m) }
        let want = e.map { $0 / e.reduce(0, +) }
        for i in 0..<x.count { #expect(abs(Double(p[i]) - want[i]) <= 1e-6 * max(want[i], 1e-30) + 1e-38, "softmax[\(i)]") }
        var gate = x
        let up: [Float] = (0..<37).map { Float($0 % 5) - 2 }
        VectorMath.swiglu(&gate, up: up, count: x.count)
        for i in 0..<x.count {
            let g = Double(x[i]), want = g / (1 + Foundation.exp(-g)) * Double(up[i])
            #expect(abs(Double(gate[i]) - want) <= 1e-6 * abs(want) + 1e-30, "swiglu(\(x[i])) × \(up[i]) = \(gate[i]), want \(want)")
        }
    }

    @Test("RoPE at position 0 is the identity and rotations keep each pair's length")
    func rope() {
        var cos = [Float](repeating: 0, count: 4), sin = cos
        var v = randomFloats(16, seed: 8)
        let original = v
        RoPE.table(position: 0, rotaryDimensions: 8, base: 10_000, cos: &cos, sin: &sin)
        RoPE.apply(&v, heads: 2, headDimensions: 8, pairs: 4, cos: cos, sin: sin)
        #expect(v == original)
        RoPE.table(position: 17, rotaryDimensions: 8, base: 10_000, cos: &cos, sin: &sin)
        RoPE.apply(&v, heads: 2, headDimensions: 8, pairs: 4, cos: cos, sin: sin)
        for i in stride(from: 0, to: 16, by: 2) {
            let before = original[i] * original[i] + original[i + 1] * original[i + 1]
            let after = v[i] * v[i] + v[i + 1] * v[i + 1]
            #expect(abs(before - after) < 1e-5)
        }
        #expect(v != original)
    }
}
