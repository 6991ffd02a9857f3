internal import CKernels

/// The inner loops of attention over a run of cached keys or values (AVX2 in `CKernels`,
/// chosen at run time). `group` query heads share each key and value (grouped-query
/// attention), so each cached vector is read once for the whole group.
public enum Attention {
    /// scores[i · stride + j] = scale · ⟨query_i, key_j⟩ for i < group, j < count; keys are
    /// `keyStride` floats apart, queries `headDimensions` apart.
    @inline(__always)
    public static func scores(
        queries: UnsafePointer<Float>, group: Int, headDimensions: Int, keys: UnsafePointer<Float>, keyStride: Int,
        count: Int, scale: Float, into scores: UnsafeMutablePointer<Float>, stride: Int
    ) {
        cohort_attention_scores(
            queries, Int32(group), Int32(headDimensions), keys, Int32(keyStride), Int32(count), scale, scores, Int32(stride))
    }

    /// out_i += Σ_j weights[i · stride + j] · value_j for i < group, j < count.
    @inline(__always)
    public static func accumulateValues(
        weights: UnsafePointer<Float>, stride: Int, group: Int, headDimensions: Int, values: UnsafePointer<Float>,
        valueStride: Int, count: Int, into out: UnsafeMutablePointer<Float>
    ) {
        cohort_attention_values(
            weights, Int32(stride), Int32(group), Int32(headDimensions), values, Int32(valueStride), Int32(count), out)
    }
}
