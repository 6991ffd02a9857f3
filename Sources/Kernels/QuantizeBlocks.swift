/// Encoders of the 5-bit formats and the K-quants, one block at a time.
///
/// They write valid blocks with straightforward rounding (each group's range over its
/// levels, scales rounded to their bits), not ggml's searched scales: they exist to make
/// test models and fixtures, and `Dequantize` is the definition they are checked against.
extension Quantize {
    static func encodeBlock(_ type: TensorType, _ values: ArraySlice<Float>) -> [UInt8] {
        let x = Array(values)
        var out = [UInt8](repeating: 0, count: type.bytesPerBlock)
        func putHalf(_ v: Float, at offset: Int) {
            let h = HalfConversion.half(from: v)
            out[offset] = UInt8(h & 0xFF)
            out[offset + 1] = UInt8(h >> 8)
        }
        func half(_ v: Float) -> Float { HalfConversion.float(fromHalf: HalfConversion.half(from: v)) }
        func clamp(_ v: Float, _ upper: Int) -> Int { min(upper, max(0, Int(v.rounded()))) }
        /// Asymmetric groups: each group's (scale, min ≥ 0) over `levels` steps, then both
        /// rounded to `bits` against super-block factors d and dmin; returns the codes.
        func affineGroups(size: Int, levels: Int, bits: Int) -> (d: Float, dmin: Float, scales: [Int], mins: [Int], q: [Int]) {
            let groups = x.count / size
            var scale = [Float](repeating: 0, count: groups), minimum = [Float](repeating: 0, count: groups)
            for g in 0..<groups {
                let slice = x[(g * size)..<((g + 1) * size)]
                let lowest = min(slice.min()!, 0)
                scale[g] = (slice.max()! - lowest) / Float(levels)
                minimum[g] = -lowest
            }
            let top = Float((1 << bits) - 1)
            let d = half(scale.max()! / top), dmin = half(minimum.max()! / top)
            let scales = scale.map { d > 0 ? clamp($0 / d, Int(top)) : 0 }
            let mins = minimum.map { dmin > 0 ? clamp($0 / dmin, Int(top)) : 0 }
            var q = [Int](repeating: 0, count: x.count)
            for i in 0..<x.count {
                let g = i / size
                let step = d * Float(scales[g])
                q[i] = step > 0 ? clamp((x[i] + dmin * Float(mins[g])) / step, levels) : 0
            }
            return (d, dmin, scales, mins, q)
        }
        /// Packs eight 6-bit scales and mins into 12 bytes (inverse of `scaleAndMin`).
        func packScalesAndMins(_ scales: [Int], _ mins: [Int], at offset: Int) {
            for j in 0..<4 {
                out[offset + j] = UInt8(scales[j] & 63 | (scales[j + 4] >> 4) << 6)
                out[offset + j + 4] = UInt8(mins[j] & 63 | (mins[j + 4] >> 4) << 6)
                out[offset + j + 8] = UInt8(scales[j + 4] & 0x0F | (mins[j + 4] & 0x0F) << 4)
            }
        }

        switch type {
        case .q5_0, .q5_1:
            let affine = type == .q5_1
            let header = affine ? 4 : 2
            var q = [Int](repeating: 0, count: 32)
            if affine {
                let lowest = x.min()!, d = (x.max()! - lowest) / 31
                putHalf(d, at: 0)
                putHalf(lowest, at: 2)
                for i in 0..<32 { q[i] = d > 0 ? clamp((x[i] - lowest) / d, 31) : 0 }
            } else {
                // As Q4_0: the value of largest magnitude maps to −16.
                var extreme: Float = 0
                for v in x where abs(v) > abs(extreme) { extreme = v }
                let d = extreme / -16
                putHalf(d, at: 0)
                for i in 0..<32 { q[i] = d != 0 ? clamp(x[i] / d + 16, 31) : 16 }
            }
            var qh: UInt32 = 0
            for j in 0..<16 {
                out[header + 4 + j] = UInt8(q[j] & 0x0F | (q[j + 16] & 0x0F) << 4)
                qh |= UInt32(q[j] >> 4) << UInt32(j) | UInt32(q[j + 16] >> 4) << UInt32(j + 16)
            }
            for k in 0..<4 { out[header + k] = UInt8(truncatingIfNeeded: qh >> UInt32(8 * k)) }
        case .q2_K:
            let (d, dmin, scales, mins, q) = affineGroups(size: 16, levels: 3, bits: 4)
            for g in 0..<16 { out[g] = UInt8(scales[g] | mins[g] << 4) }
            for i in 0..<256 {
                // Value i = n·128 + j·32 + part·16 + l sits in byte 16 + n·32 + part·16 + l, bits 2j.
                let n = i / 128, j = i % 128 / 32, rest = i % 32
                out[16 + n * 32 + rest] |= UInt8(q[i] << (2 * j))
            }
            putHalf(d, at: 80)
            putHalf(dmin, at: 82)
        case .q3_K:
            var scale = [Float](repeating: 0, count: 16)
            for g in 0..<16 {
                var extreme: Float = 0
                for v in x[(g * 16)..<(g * 16 + 16)] where abs(v) > abs(extreme) { extreme = v }
                scale[g] = extreme / -4
            }
            var extreme: Float = 0
            for v in scale where abs(v) > abs(extreme) { extreme = v }
            let d = half(extreme / -32)
            for g in 0..<16 {
                let s = d != 0 ? min(31, max(-32, Int((scale[g] / d).rounded()))) : 0
                let code = s + 32
                out[96 + g % 8] |= UInt8(code & 0x0F) << (4 * (g / 8))
                out[96 + 8 + g % 4] |= UInt8(code >> 4) << (2 * (g / 4))
                let step = d * Float(s)
                for l in 0..<16 {
                    let i = g * 16 + l
                    let v = step != 0 ? min(3, max(-4, Int((x[i] / step).rounded()))) : 0
                    let u = v + 4
                    let n = i / 128, j = i % 128 / 32, rest = i % 32
                    out[32 + n * 32 + rest] |= UInt8(u & 3) << (2 * j)
                    if u >= 4 { out[rest] |= UInt8(1) << (n * 4 + j) }
                }
            }
            putHalf(d, at: 108)
        case .q4_K, .q5_K:
            let fifth = type == .q5_K
            let (d, dmin, scales, mins, q) = affineGroups(size: 32, levels: fifth ? 31 : 15, bits: 6)
            putHalf(d, at: 0)
            putHalf(dmin, at: 2)
            packScalesAndMins(scales, mins, at: 4)
            let qs = fifth ? 48 : 16
            for i in 0..<256 {
                let group = i / 32, pair = group / 2, part = group % 2, l = i % 32
                out[qs + pair * 32 + l] |= UInt8(q[i] & 0x0F) << (4 * part)
                if fifth && q[i] >= 16 { out[16 + l] |= UInt8(1) << group }
            }
        case .q6_K:
            var scale = [Float](repeating: 0, count: 16)
            for g in 0..<16 {
                var extreme: Float = 0
                for v in x[(g * 16)..<(g * 16 + 16)] where abs(v) > abs(extreme) { extreme = v }
                scale[g] = extreme / -32
            }
            let d = half(scale.map(abs).max()! / 127)
            for g in 0..<16 {
                let s = d > 0 ? min(127, max(-128, Int((scale[g] / d).rounded()))) : 0
                out[192 + g] = UInt8(bitPattern: Int8(s))
                let step = d * Float(s)
                for l in 0..<16 {
                    let i = g * 16 + l
                    let u = (step != 0 ? min(31, max(-32, Int((x[i] / step).rounded()))) : 0) + 32
                    // Value i = n·128 + k·32 + l: low nibble in ql[n·64 + (k % 2)·32 + l]
                    // (high nibble when k ≥ 2), two high bits in qh[128 + n·32 + l] at 2k.
                    let n = i / 128, k = i % 128 / 32, lane = i % 32
                    out[n * 64 + (k % 2) * 32 + lane] |= UInt8(u & 0x0F) << (4 * (k / 2))
                    out[128 + n * 32 + lane] |= UInt8(u >> 4) << (2 * k)
                }
            }
            putHalf(d, at: 208)
        case .f32, .f16, .bf16, .q4_0, .q4_1, .q8_0:
            preconditionFailure("\(type) is encoded by Quantize.bytes")
        }
        return out
    }
}
