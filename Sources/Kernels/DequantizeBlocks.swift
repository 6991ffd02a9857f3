/// Decoders of the 5-bit formats and the K-quants, one block at a time, written from
/// ggml's reference `dequantize_row_*` (their operation order too, so that results equal
/// the `gguf` Python package's to the last bit on the fixtures in `KernelsTests`).
extension Dequantize {
    /// Decodes one block of `type` (`type.blockSize` values) at `block` into `out`.
    @usableFromInline
    static func decodeBlock(_ type: TensorType, _ block: UnsafeRawPointer, into out: UnsafeMutablePointer<Float>) {
        @inline(__always) func half(_ offset: Int) -> Float {
            HalfConversion.float(fromHalf: block.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
        }
        @inline(__always) func byte(_ offset: Int) -> UInt8 { block.load(fromByteOffset: offset, as: UInt8.self) }
        switch type {
        case .q5_0, .q5_1:
            let affine = type == .q5_1
            let d = half(0)
            let m: Float = affine ? half(2) : 0
            let header = affine ? 4 : 2
            let qh = block.loadUnaligned(fromByteOffset: header, as: UInt32.self)
            for j in 0..<16 {
                let q = byte(header + 4 + j)
                let low = Int32(q & 0x0F) | Int32((qh >> UInt32(j)) << 4 & 0x10)
                let high = Int32(q >> 4) | Int32((qh >> UInt32(j + 12)) & 0x10)
                if affine {
                    out[j] = Float(low) * d + m
                    out[j + 16] = Float(high) * d + m
                } else {
                    out[j] = Float(low - 16) * d
                    out[j + 16] = Float(high - 16) * d
                }
            }
        case .q2_K:
            // scales[16] at 0, qs[64] at 16, d at 80, dmin at 82.
            let d = half(80), dmin = half(82)
            for n in 0..<2 {
                for j in 0..<4 {
                    for part in 0..<2 {
                        let sc = byte(n * 8 + j * 2 + part)
                        let dl = d * Float(sc & 0x0F), ml = dmin * Float(sc >> 4)
                        let y = out + n * 128 + j * 32 + part * 16
                        for l in 0..<16 {
                            let q = (byte(16 + n * 32 + part * 16 + l) >> UInt8(2 * j)) & 3
                            y[l] = dl * Float(q) - ml
                        }
                    }
                }
            }
        case .q3_K:
            // hmask[32] at 0, qs[64] at 32, scales[12] at 96, d at 108.
            let d = half(108)
            for n in 0..<2 {
                for j in 0..<4 {
                    for part in 0..<2 {
                        let index = n * 8 + j * 2 + part
                        // 6-bit scale: low 4 bits in byte index % 8 (nibble index / 8),
                        // high 2 bits in byte 8 + index % 4 (bits 2 · (index / 4)).
                        let low = (byte(96 + index % 8) >> UInt8(4 * (index / 8))) & 0x0F
                        let high = (byte(96 + 8 + index % 4) >> UInt8(2 * (index / 4))) & 3
                        let dl = d * Float(Int(low | high << 4) - 32)
                        let mask = UInt8(1) << UInt8(n * 4 + j)
                        let y = out + n * 128 + j * 32 + part * 16
                        for l in 0..<16 {
                            let q = Int((byte(32 + n * 32 + part * 16 + l) >> UInt8(2 * j)) & 3)
                            let minus = byte(part * 16 + l) & mask != 0 ? 0 : 4
                            y[l] = dl * Float(q - minus)
                        }
                    }
                }
            }
        case .q4_K, .q5_K:
            // d at 0, dmin at 2, scales[12] at 4; Q5_K: qh[32] at 16, qs at 48; Q4_K: qs at 16.
            let d = half(0), dmin = half(2)
            let fifth = type == .q5_K
            let qs = fifth ? 48 : 16
            for pair in 0..<4 {
                for part in 0..<2 {
                    let (sc, m) = scaleAndMin(block + 4, pair * 2 + part)
                    let dl = d * Float(sc), ml = dmin * Float(m)
                    let y = out + pair * 64 + part * 32
                    for l in 0..<32 {
                        var q = (byte(qs + pair * 32 + l) >> UInt8(4 * part)) & 0x0F
                        if fifth && byte(16 + l) & (UInt8(1) << UInt8(pair * 2 + part)) != 0 { q += 16 }
                        y[l] = dl * Float(q) - ml
                    }
                }
            }
        case .q6_K:
            // ql[128] at 0, qh[64] at 128, scales[16] (signed) at 192, d at 208.
            let d = half(208)
            for n in 0..<2 {
                for l in 0..<32 {
                    let low0 = byte(n * 64 + l), low1 = byte(n * 64 + l + 32), high = byte(128 + n * 32 + l)
                    let q0 = Int(low0 & 0x0F | (high & 3) << 4) - 32
                    let q1 = Int(low1 & 0x0F | (high >> 2 & 3) << 4) - 32
                    let q2 = Int(low0 >> 4 | (high >> 4 & 3) << 4) - 32
                    let q3 = Int(low1 >> 4 | (high >> 6 & 3) << 4) - 32
                    let scales = 192 + n * 8 + l / 16
                    @inline(__always) func scale(_ k: Int) -> Float { Float(block.load(fromByteOffset: scales + 2 * k, as: Int8.self)) }
                    let y = out + n * 128 + l
                    y[0] = d * scale(0) * Float(q0)
                    y[32] = d * scale(1) * Float(q1)
                    y[64] = d * scale(2) * Float(q2)
                    y[96] = d * scale(3) * Float(q3)
                }
            }
        case .f32, .f16, .bf16, .q4_0, .q4_1, .q8_0:
            preconditionFailure("\(type) is decoded by Dequantize.row")
        }
    }

    /// The 6-bit scale and min of group `j` (0…7) of a Q4_K or Q5_K block, from its packed
    /// 12 bytes (ggml's `get_scale_min_k4`).
    @usableFromInline @inline(__always)
    static func scaleAndMin(_ scales: UnsafeRawPointer, _ j: Int) -> (UInt8, UInt8) {
        func q(_ i: Int) -> UInt8 { scales.load(fromByteOffset: i, as: UInt8.self) }
        if j < 4 { return (q(j) & 63, q(j + 4) & 63) }
        return ((q(j + 4) & 0x0F) | ((q(j - 4) >> 6) << 4), (q(j + 4) >> 4) | ((q(j) >> 6) << 4))
    }
}
