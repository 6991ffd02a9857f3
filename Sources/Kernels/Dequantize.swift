/// Turns stored weights back into floats, block by block.
///
/// These are the reference decoders: every kernel is tested against them, and the
/// `--precise` path uses them to expand one weight row at a time.
public enum Dequantize {
    /// Writes `count` floats decoded from `source` (laid out as `type`) into `destination`.
    /// - Precondition: `count` is a multiple of `type.blockSize`, and both buffers hold that much.
    @inlinable
    public static func row(
        _ type: TensorType, from source: UnsafeRawPointer, into destination: UnsafeMutablePointer<Float>, count: Int
    ) {
        switch type {
        case .f32:
            destination.update(from: source.assumingMemoryBound(to: Float.self), count: count)
        case .f16:
            for i in 0..<count {
                destination[i] = HalfConversion.float(fromHalf: source.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
            }
        case .bf16:
            for i in 0..<count {
                destination[i] = HalfConversion.float(
                    fromBFloat16: source.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
            }
        case .q4_0:
            for b in 0..<(count / 32) {
                let block = source + b * 18
                let d = HalfConversion.float(fromHalf: block.loadUnaligned(as: UInt16.self))
                let out = destination + b * 32
                for j in 0..<16 {
                    let q = block.load(fromByteOffset: 2 + j, as: UInt8.self)
                    out[j] = Float(Int(q & 0x0F) - 8) * d
                    out[j + 16] = Float(Int(q >> 4) - 8) * d
                }
            }
        case .q4_1:
            for b in 0..<(count / 32) {
                let block = source + b * 20
                let d = HalfConversion.float(fromHalf: block.loadUnaligned(as: UInt16.self))
                let m = HalfConversion.float(fromHalf: block.loadUnaligned(fromByteOffset: 2, as: UInt16.self))
                let out = destination + b * 32
                for j in 0..<16 {
                    let q = block.load(fromByteOffset: 4 + j, as: UInt8.self)
                    out[j] = Float(q & 0x0F) * d + m
                    out[j + 16] = Float(q >> 4) * d + m
                }
            }
        case .q5_0, .q5_1, .q2_K, .q3_K, .q4_K, .q5_K, .q6_K:
            let size = type.blockSize, bytes = type.bytesPerBlock
            for b in 0..<(count / size) {
                decodeBlock(type, source + b * bytes, into: destination + b * size)
            }
        case .q8_0:
            for b in 0..<(count / 32) {
                let block = source + b * 34
                let d = HalfConversion.float(fromHalf: block.loadUnaligned(as: UInt16.self))
                let out = destination + b * 32
                for j in 0..<32 {
                    out[j] = Float(block.load(fromByteOffset: 2 + j, as: Int8.self)) * d
                }
            }
        }
    }

    /// Convenience for tests and tools: decodes a whole buffer into an array.
    public static func array(_ type: TensorType, bytes: UnsafeRawBufferPointer, count: Int) -> [Float] {
        precondition(type.byteCount(values: count).map { $0 <= bytes.count } ?? false, "buffer too small")
        return [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            if count > 0, let base = bytes.baseAddress {
                row(type, from: base, into: buffer.baseAddress!, count: count)
            }
            initialized = count
        }
    }
}
