/// Element formats of weight tensors, numbered as ggml numbers them (the ids GGUF stores).
///
/// Quantized formats store blocks of 32 values; a row of `k` values is `k / 32` blocks.
/// Layouts (little-endian, `half` = IEEE binary16):
/// - `q4_0`: `half d; u8 qs[16]` — value = (nibble − 8) · d; low nibbles are values 0…15, high 16…31.
/// - `q4_1`: `half d; half m; u8 qs[16]` — value = nibble · d + m.
/// - `q8_0`: `half d; i8 qs[32]` — value = q · d.
public enum TensorType: UInt32, Sendable, CaseIterable, CustomStringConvertible {
    case f32 = 0
    case f16 = 1
    case q4_0 = 2
    case q4_1 = 3
    case q8_0 = 8
    case bf16 = 30

    /// Values per block (1 for plain floats).
    public var blockSize: Int {
        switch self {
        case .f32, .f16, .bf16: 1
        case .q4_0, .q4_1, .q8_0: 32
        }
    }

    /// Bytes per block.
    public var bytesPerBlock: Int {
        switch self {
        case .f32: 4
        case .f16, .bf16: 2
        case .q4_0: 18
        case .q4_1: 20
        case .q8_0: 34
        }
    }

    /// True for the block formats that the 8-bit-activation kernels handle.
    public var isQuantized: Bool { blockSize > 1 }

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
        case .q8_0: "Q8_0"
        }
    }

    /// ggml's name for any type id, supported or not, for error messages.
    public static func name(ofRawValue raw: UInt32) -> String {
        if let known = TensorType(rawValue: raw) { return known.description }
        let others: [UInt32: String] = [
            6: "Q5_0", 7: "Q5_1", 9: "Q8_1", 10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K",
            14: "Q6_K", 15: "Q8_K", 16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S",
            20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S", 23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32",
            27: "I64", 28: "F64", 29: "IQ1_M", 34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4",
        ]
        return others[raw] ?? "unknown"
    }
}
