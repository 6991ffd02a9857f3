internal import CKernels

/// Scalar conversions between float and the 16-bit formats stored in weight files.
public enum HalfConversion {
    /// IEEE binary16 bits to float (exact).
    @inline(__always)
    public static func float(fromHalf bits: UInt16) -> Float { cohort_f16_to_f32(bits) }

    /// Float to IEEE binary16 bits, rounding to nearest even.
    @inline(__always)
    public static func half(from value: Float) -> UInt16 { cohort_f32_to_f16(value) }

    /// bfloat16 bits to float (exact: bf16 is the top half of a float).
    @inline(__always)
    public static func float(fromBFloat16 bits: UInt16) -> Float { Float(bitPattern: UInt32(bits) << 16) }

    /// Float to bfloat16 bits, rounding to nearest even.
    @inline(__always)
    public static func bfloat16(from value: Float) -> UInt16 {
        let bits = value.bitPattern
        if value.isNaN { return UInt16(truncatingIfNeeded: bits >> 16) | 0x40 }
        let rounding = 0x7FFF + ((bits >> 16) & 1)
        return UInt16(truncatingIfNeeded: (bits &+ rounding) >> 16)
    }
}
