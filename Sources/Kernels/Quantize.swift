/// Encodes floats into the stored weight formats (the inverse of `Dequantize`).
///
/// Used to write test models and to check the decoders round-trip; rounding follows
/// ggml's reference quantizers.
public enum Quantize {
    /// Encodes `values` (a multiple of `type.blockSize` long) as `type`.
    public static func bytes(_ type: TensorType, _ values: [Float]) -> [UInt8] {
        precondition(values.count % type.blockSize == 0, "\(values.count) values is not a whole number of \(type) blocks")
        var out: [UInt8] = []
        out.reserveCapacity(type.byteCount(values: values.count)!)
        func appendHalf(_ v: Float) {
            let h = HalfConversion.half(from: v)
            out.append(UInt8(h & 0xFF))
            out.append(UInt8(h >> 8))
        }
        switch type {
        case .f32:
            for v in values {
                let bits = v.bitPattern
                for s in stride(from: 0, to: 32, by: 8) { out.append(UInt8(truncatingIfNeeded: bits >> UInt32(s))) }
            }
        case .f16:
            for v in values { appendHalf(v) }
        case .bf16:
            for v in values {
                let h = HalfConversion.bfloat16(from: v)
                out.append(UInt8(h & 0xFF))
                out.append(UInt8(h >> 8))
            }
        case .q4_0:
            for b in stride(from: 0, to: values.count, by: 32) {
                let block = values[b..<(b + 32)]
                // ggml: the value of largest magnitude maps to −8.
                var maxValue: Float = 0
                for v in block where abs(v) > abs(maxValue) { maxValue = v }
                let d = maxValue / -8
                let id: Float = d != 0 ? 1 / d : 0
                appendHalf(d)
                for j in 0..<16 {
                    let lo = UInt8(min(15, max(0, Int((block[b + j] * id + 8.5).rounded(.down)))))
                    let hi = UInt8(min(15, max(0, Int((block[b + j + 16] * id + 8.5).rounded(.down)))))
                    out.append(lo | (hi << 4))
                }
            }
        case .q4_1:
            for b in stride(from: 0, to: values.count, by: 32) {
                let block = values[b..<(b + 32)]
                let lowest = block.min()!, highest = block.max()!
                let d = (highest - lowest) / 15
                let id: Float = d != 0 ? 1 / d : 0
                appendHalf(d)
                appendHalf(lowest)
                for j in 0..<16 {
                    let lo = UInt8(min(15, max(0, Int(((block[b + j] - lowest) * id + 0.5).rounded(.down)))))
                    let hi = UInt8(min(15, max(0, Int(((block[b + j + 16] - lowest) * id + 0.5).rounded(.down)))))
                    out.append(lo | (hi << 4))
                }
            }
        case .q5_0, .q5_1, .q2_K, .q3_K, .q4_K, .q5_K, .q6_K:
            for b in stride(from: 0, to: values.count, by: type.blockSize) {
                out += encodeBlock(type, values[b..<(b + type.blockSize)])
            }
        case .q8_0:
            for b in stride(from: 0, to: values.count, by: 32) {
                let block = values[b..<(b + 32)]
                let amax = block.map { abs($0) }.max()!
                let d = amax / 127
                let id: Float = d != 0 ? 1 / d : 0
                appendHalf(d)
                for v in block { out.append(UInt8(bitPattern: Int8((v * id).rounded()))) }
            }
        }
        return out
    }
}
