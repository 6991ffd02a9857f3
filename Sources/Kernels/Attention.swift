internal import CKernels

/// The inner loops of attention over a run of cached keys or values (AVX2 in `CKernels`,
/// chosen at run time). `group` query heads share each key and value (grouped-query
/// attention), so each cached vector is read once for the whole group. The cache holds
/// float32 or IEEE half values (`CacheElement`).
public enum Attention {
    /// scores[i · stride + j] = scale · ⟨query_i, key_j⟩ for i < group, j < count; keys are
    /// `keyStride` elements apart, queries `headDimensions` floats apart.
    @inline(__always)
    public static func scores(
        queries: UnsafePointer<Float>, group: Int, headDimensions: Int, keys: UnsafeRawPointer, element: CacheElement,
        keyStride: Int, count: Int, scale: Float, into scores: UnsafeMutablePointer<Float>, stride: Int
    ) {
        cohort_attention_scores(
            queries, Int32(group), Int32(headDimensions), keys, element.halfFlag, Int32(keyStride), Int32(count), scale, scores,
            Int32(stride))
    }

    /// out_i += Σ_j weights[i · stride + j] · value_j for i < group, j < count.
    @inline(__always)
    public static func accumulateValues(
        weights: UnsafePointer<Float>, stride: Int, group: Int, headDimensions: Int, values: UnsafeRawPointer,
        element: CacheElement, valueStride: Int, count: Int, into out: UnsafeMutablePointer<Float>
    ) {
        cohort_attention_values(
            weights, Int32(stride), Int32(group), Int32(headDimensions), values, element.halfFlag, Int32(valueStride),
            Int32(count), out)
    }
}

extension Attention {
    /// Starts fetching `rows` cached vectors of `headDimensions` elements, `stride`
    /// elements apart, into L2: the keys or values two blocks ahead of the one computed.
    @inline(__always)
    public static func prefetch(_ base: UnsafeRawPointer, element: CacheElement, stride: Int, rows: Int, headDimensions: Int) {
        cohort_prefetch_rows(base, stride * element.byteCount, Int32(rows), Int32(headDimensions * element.byteCount))
    }
}

/// How a KV cache stores its values.
public enum CacheElement: String, Sendable, CaseIterable, CustomStringConvertible {
    /// IEEE binary16: half the memory and memory traffic (llama.cpp's default cache type).
    case f16
    /// Float32: what `--precise` uses, so that its error bound holds.
    case f32

    public var byteCount: Int { self == .f16 ? 2 : 4 }
    public var description: String { rawValue }
    var halfFlag: Int32 { self == .f16 ? 1 : 0 }

    /// The cache type for a numeric mode: half precision for fast, float32 for precise.
    public static func `default`(for mode: NumericMode) -> CacheElement { mode == .fast ? .f16 : .f32 }

    /// Writes `count` floats into cache memory of this type.
    @inline(__always)
    public func store(_ x: UnsafePointer<Float>, count: Int, to destination: UnsafeMutableRawPointer) {
        switch self {
        case .f32: destination.assumingMemoryBound(to: Float.self).update(from: x, count: count)
        case .f16: cohort_f32_to_f16_row(x, destination.assumingMemoryBound(to: UInt16.self), Int32(count))
        }
    }
}
