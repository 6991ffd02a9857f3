import Kernels

extension ModelArchitecture {
    /// Qwen 2 and 2.5: biases on Q, K and V, and rotation of the two halves of each head
    /// (NeoX layout: llama.cpp's converter leaves `qwen2` Q and K unpermuted).
    public static let qwen2 = ModelArchitecture(name: "qwen2", ropeLayout: .halves, attentionBiases: true)
}
