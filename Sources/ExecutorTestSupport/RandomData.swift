import ModelRunner

/// Random floats in [-scale, scale) from a seeded stream (same seed, same values).
public func randomFloats(_ n: Int, seed: UInt64, scale: Float = 1) -> [Float] {
    var r = RandomStream(seed: seed)
    return (0..<n).map { _ in Float(r.unit() * 2 - 1) * scale }
}
