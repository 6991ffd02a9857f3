/// Element formats of weight tensors, numbered as ggml numbers them (the ids GGUF stores).
///
/// Quantized formats store blocks of 32 values, or super-blocks of 256 for the K-quants;
/// a row of `k` values is `k / blockSize` blocks. Layouts (little-endian, `half` = IEEE
/// binary16; `Dequantize` is the executable definition of each):
/// - `q4_0`: `half d; u8 qs[16]` — value = (nibble − 8) · d; low nibbles are values 0…15, high 16…31.
/// - `q4_1`: `half d; half m; u8 qs[16]` — value = nibble · d + m.
/// - `q5_0`: `half d; u8 qh[4]; u8 qs[16]` — value = (nibble | fifth bit << 4 − 16) · d.
/// - `q5_1`: `half d; half m; u8 qh[4]; u8 qs[16]` — value = (nibble | fifth bit << 4) · d + m.
/// - `q8_0`: `half d; i8 qs[32]` — value = q · d.
/// - `q2_K`: `u8 scales[16]; u8 qs[64]; half d; half dmin` — 16 groups of 16: 2-bit q,
///   4-bit scale and min: value = d · scale · q − dmin · min.
/// - `q3_K`: `u8 hmask[32]; u8 qs[64]; u8 scales[12]; half d` — 16 groups of 16: 3-bit q
///   (high bit in `hmask`), 6-bit scale: value = d · (scale − 32) · (q − 4).
/// - `q4_K`: `half d; half dmin; u8 scales[12]; u8 qs[128]` — 8 groups of 32: 4-bit q,
///   6-bit scale and min: value = d · scale · q − dmin · min.
/// - `q5_K`: `half d; half dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]` — as `q4_K` with a fifth bit.
/// - `q6_K`: `u8 ql[128]; u8 qh[64]; i8 scales[16]; half d` — 16 groups of 16: 6-bit q,
///   8-bit scale: value = d · scale · (q − 32).
public enum TensorType: UInt32, Sendable, CaseIterable, CustomStringConvertible {
    case f32 = 0
    case f16 = 1
    case q4_0 = 2
    case q4_1 = 3
    case q5_0 = 6
    case q5_1 = 7
    case q8_0 = 8
    case q2_K = 10
    case q3_K = 11
    case q4_K = 12
    case q5_K = 13
    case q6_K = 14
    case bf16 = 30

    /// Values per block (1 for plain floats).
    public var blockSize: Int {
        switch self {
        case .f32, .f16, .bf16: 1
        case .q4_0, .q4_1, .q5_0, .q5_1, .q8_0: 32
        case .q2_K, .q3_K, .q4_K, .q5_K, .q6_K: 256
        }
    }

    /// Bytes per block.
    public var bytesPerBlock: Int {
        switch self {
        case .f32: 4
        case .f16, .bf16: 2
        case .q4_0: 18
        case .q4_1: 20
        case .q5_0: 22
        case .q5_1: 24
        case .q8_0: 34
        case .q2_K: 84
        case .q3_K: 110
        case .q4_K: 144
        case .q5_K: 176
        case .q6_K: 210
        }
    }

    /// True for the block formats (as opposed to plain floats).
    public var isQuantized: Bool { blockSize > 1 }

    /// True for the formats the 8-bit-activation integer kernels read directly: AVX2 and
    /// scalar rows and panels (AVX-512 VNNI or AVX2) for all four. Other block formats
    /// reach those kernels through `ConvertedWeights`.
    public var hasIntegerKernel: Bool { self == .q4_0 || self == .q4_1 || self == .q5_0 || self == .q8_0 }

    /// Bytes taken by `count` values, or nil when `count` is not a whole number of blocks
    /// or the size overflows.
    public func byteCount(values count: Int) -> Int? {
        guard count >= 0, count % blockSize == 0 else { return nil }
        let (bytes, overflow) = (count / blockSize).multipliedReportingOverflow(by: bytesPerBlock)
        return overflow ? nil : bytes
    }

    public var description: String {
        switch self {
        case .f32: "F32"
        case .f16: "F16"
        case .bf16: "BF16"
        case .q4_0: "Q4_0"
        case .q4_1: "Q4_1"
        case .q5_0: "Q5_0"
        case .q5_1: "Q5_1"
        case .q8_0: "Q8_0"
        case .q2_K: "Q2_K"
        case .q3_K: "Q3_K"
        case .q4_K: "Q4_K"
        case .q5_K: "Q5_K"
        case .q6_K: "Q6_K"
        }
    }

    /// ggml's name for any type id, supported or not, for error messages.
    public static func name(ofRawValue raw: UInt32) -> String {
        if let known = TensorType(rawValue: raw) { return known.description }
        let others: [UInt32: String] = [
            9: "Q8_1", 15: "Q8_K", 16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S",
            20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S", 23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32",
            27: "I64", 28: "F64", 29: "IQ1_M", 34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4",
        ]
        return others[raw] ?? "unknown"
    }
}
