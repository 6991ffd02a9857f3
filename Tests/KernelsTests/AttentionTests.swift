import ExecutorTestSupport
import Kernels
import Testing

@Suite struct AttentionTests {
    /// `values` as stored in a cache of `element` type, and as the floats the kernels see.
    func cached(_ values: [Float], _ element: CacheElement) -> (bytes: [UInt8], seen: [Float]) {
        var bytes = [UInt8](repeating: 0, count: values.count * element.byteCount)
        bytes.withUnsafeMutableBytes { element.store(values, count: values.count, to: $0.baseAddress!) }
        let seen = element == .f32 ? values : values.map { HalfConversion.float(fromHalf: HalfConversion.half(from: $0)) }
        return (bytes, seen)
    }

    @Test("scores and value sums equal plain loops over float32 and half caches, for query groups of 1 to 5 heads, with and without vector tails",
          arguments: [64, 24, 7], [5, 19])
    func matchesScalar(headDimensions hd: Int, count: Int) {
        for element in CacheElement.allCases {
            for group in [1, 3, 5] {
                let stride = 2 * hd + 3  // keys interleaved with other data, as in the cache
                let q = randomFloats(group * hd, seed: 1)
                let (kBytes, k) = cached(randomFloats(count * stride, seed: 2), element)
                let (vBytes, v) = cached(randomFloats(count * stride, seed: 3), element)
                let ld = count + 4  // rows of scores are padded, as in the model
                var scores = [Float](repeating: .nan, count: group * ld)
                kBytes.withUnsafeBytes { keys in
                    Attention.scores(queries: q, group: group, headDimensions: hd, keys: keys.baseAddress!, element: element,
                                     keyStride: stride, count: count, scale: 0.5, into: &scores, stride: ld)
                }
                for i in 0..<group {
                    for j in 0..<count {
                        var want: Float = 0
                        for d in 0..<hd { want += q[i * hd + d] * k[j * stride + d] }
                        #expect(abs(scores[i * ld + j] - 0.5 * want) < 1e-4, "\(element) score \(i), \(j), group \(group)")
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
                vBytes.withUnsafeBytes { values in
                    Attention.accumulateValues(weights: weights, stride: ld, group: group, headDimensions: hd, values: values.baseAddress!,
                                               element: element, valueStride: stride, count: count, into: &out)
                }
                #expect(Tolerance.maxAbsoluteDifference(out, want) < 1e-4, "\(element) values, group \(group)")
            }
        }
    }

    @Test("a half cache rounds each value to the nearest half, ties to even")
    func halfStore() {
        let x: [Float] = [1, 1 + 1.0 / 2048, 1 + 3.0 / 2048, 65504, -2.5e-8, 0.1, -0.0, 3.14159, 1e-5, 70000, 1, 2, 3, 4, 5, 6, 7]
        var bits = [UInt16](repeating: 0, count: x.count)
        bits.withUnsafeMutableBytes { CacheElement.f16.store(x, count: x.count, to: $0.baseAddress!) }
        #expect(bits == x.map { HalfConversion.half(from: $0) })
        #expect(bits[1] == 0x3C00 && bits[2] == 0x3C02)  // ties go to even
    }
}
