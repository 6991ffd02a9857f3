import ModelRunner

/// Random floats in [-scale, scale) from a seeded stream (same seed, same values).
public func randomFloats(_ n: Int, seed: UInt64, scale: Float = 1) -> [Float] {
    var r = RandomStream(seed: seed)
    return (0..<n).map { _ in Float(r.unit() * 2 - 1) * scale }
}

/// Element-wise sum of equally long arrays, in their order (what an all-reduce must give).
public func serialSum(_ inputs: [[Float]]) -> [Float] {
    var sum = inputs[0]
    for input in inputs.dropFirst() { for i in sum.indices { sum[i] += input[i] } }
    return sum
}
