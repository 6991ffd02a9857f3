import Kernels

extension ModelArchitecture {
    /// Qwen 3 (dense): no biases, but Q and K RMS-normalized per head before rotation;
    /// heads are often wider than `embedding_length / head_count` (`attention.key_length`).
    public static let qwen3 = ModelArchitecture(name: "qwen3", ropeLayout: .halves, queryKeyNorms: true)
}
