import ExecutorTestSupport
import Kernels
import Testing

@Suite struct AttentionTests {
    @Test("scores and value sums equal plain loops, for head sizes and key runs with and without a vector tail",
          arguments: [64, 24, 7], [5, 19])
    func matchesScalar(headDimensions hd: Int, count: Int) {
        let group = 3, stride = 2 * hd + 3  // keys interleaved with other data, as in the cache
        let q = randomFloats(group * hd, seed: 1), k = randomFloats(count * stride, seed: 2), v = randomFloats(count * stride, seed: 3)
        let ld = count + 4  // rows of scores are padded, as in the model
        var scores = [Float](repeating: .nan, count: group * ld)
        Attention.scores(queries: q, group: group, headDimensions: hd, keys: k, keyStride: stride, count: count,
                         scale: 0.5, into: &scores, stride: ld)
        for i in 0..<group {
            for j in 0..<count {
                var want: Float = 0
                for d in 0..<hd { want += q[i * hd + d] * k[j * stride + d] }
                #expect(abs(scores[i * ld + j] - 0.5 * want) < 1e-4)
            }
        }
        let weights = randomFloats(group * ld, seed: 4)
        var out = randomFloats(group * hd, seed: 5)
        var want = out
        for i in 0..<group {
            for j in 0..<count {
                for d in 0..<hd { want[i * hd + d] += weights[i * ld + j] * v[j * stride + d] }
            }
        }
        Attention.accumulateValues(weights: weights, stride: ld, group: group, headDimensions: hd, values: v,
                                   valueStride: stride, count: count, into: &out)
        #expect(Tolerance.maxAbsoluteDifference(out, want) < 1e-4)
    }
}
