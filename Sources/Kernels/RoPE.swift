/// Rotary position embeddings. Pair i of a head (i < rotaryDimensions / 2) rotates by
/// position · scale · base^(−2i/d) / factor[i]: `scale` is linear position scaling
/// (1 / the GGUF `rope.scaling.factor`), `factor` Llama 3.1's per-frequency divisors
/// (the `rope_freqs.weight` tensor; all 1 when absent).
public enum RoPE {
    /// Which values of a head vector form pair i.
    public enum Layout: String, Sendable {
        /// (x[2i], x[2i+1]): GGUF's Llama layout (the converter permutes Q and K into it).
        case adjacentPairs
        /// (x[i], x[i + d/2]) over the rotary dimensions d: the NeoX / Hugging Face layout
        /// that `qwen2` and `qwen3` files keep.
        case halves
    }

    /// Fills `cos`/`sin` (each `rotaryDimensions / 2` floats) for one position.
    public static func table(
        position: Int, rotaryDimensions: Int, base: Float, scale: Float = 1, factors: UnsafePointer<Float>? = nil,
        cos: UnsafeMutablePointer<Float>, sin: UnsafeMutablePointer<Float>
    ) {
        let half = rotaryDimensions / 2
        for i in 0..<half {
            // Double for the angle: positions times frequencies reach 1e4 radians and more.
            var inverseFrequency = pow(Double(base), -2 * Double(i) / Double(rotaryDimensions))
            if let factors { inverseFrequency /= Double(factors[i]) }
            let angle = Double(position) * Double(scale) * inverseFrequency
            cos[i] = Float(_cos(angle))
            sin[i] = Float(_sin(angle))
        }
    }

    /// Rotates `heads` consecutive head vectors of `headDimensions` floats in place; only the
    /// first `2 · pairs` values of each head rotate.
    @inlinable
    public static func apply(
        _ x: UnsafeMutablePointer<Float>, heads: Int, headDimensions: Int, pairs: Int, layout: Layout = .adjacentPairs,
        cos: UnsafePointer<Float>, sin: UnsafePointer<Float>
    ) {
        let (stride, offset) = layout == .adjacentPairs ? (2, 1) : (1, pairs)
        for h in 0..<heads {
            let v = x + h * headDimensions
            for i in 0..<pairs {
                let a = stride * i, b = stride * i + offset
                let x0 = v[a], x1 = v[b]
                v[a] = x0 * cos[i] - x1 * sin[i]
                v[b] = x0 * sin[i] + x1 * cos[i]
            }
        }
    }
}

#if canImport(Glibc)
import Glibc
@inline(__always) private func _cos(_ x: Double) -> Double { Glibc.cos(x) }
@inline(__always) private func _sin(_ x: Double) -> Double { Glibc.sin(x) }
#endif
