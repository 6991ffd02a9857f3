/// Rotary position embeddings in GGUF's Llama layout: each head vector is a list of
/// adjacent pairs (x[2i], x[2i+1]) rotated by pos · base^(−2i/d). (Hugging Face's layout
/// rotates the two halves; the GGUF converter permutes Q and K weights to this one.)
public enum RoPE {
    /// Fills `cos`/`sin` (each `rotaryDimensions / 2` floats) for one position.
    public static func table(
        position: Int, rotaryDimensions: Int, base: Float,
        cos: UnsafeMutablePointer<Float>, sin: UnsafeMutablePointer<Float>
    ) {
        let half = rotaryDimensions / 2
        for i in 0..<half {
            // Double for the angle: positions times frequencies reach 1e4 radians and more.
            let inverseFrequency = pow(Double(base), -2 * Double(i) / Double(rotaryDimensions))
            let angle = Double(position) * inverseFrequency
            cos[i] = Float(_cos(angle))
            sin[i] = Float(_sin(angle))
        }
    }

    /// Rotates `heads` consecutive head vectors of `headDimensions` floats in place; only the
    /// first `2 · pairs` values of each head rotate.
    @inlinable
    public static func apply(
        _ x: UnsafeMutablePointer<Float>, heads: Int, headDimensions: Int, pairs: Int,
        cos: UnsafePointer<Float>, sin: UnsafePointer<Float>
    ) {
        for h in 0..<heads {
            let v = x + h * headDimensions
            for i in 0..<pairs {
                let x0 = v[2 * i], x1 = v[2 * i + 1]
                v[2 * i] = x0 * cos[i] - x1 * sin[i]
                v[2 * i + 1] = x0 * sin[i] + x1 * cos[i]
            }
        }
    }
}

#if canImport(Glibc)
import Glibc
@inline(__always) private func _cos(_ x: Double) -> Double { Glibc.cos(x) }
@inline(__always) private func _sin(_ x: Double) -> Double { Glibc.sin(x) }
#endif
