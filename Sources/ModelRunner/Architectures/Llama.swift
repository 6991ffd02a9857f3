import Kernels

extension ModelArchitecture {
    /// Llama 1–3 and the files that reuse its layout (Mistral, TinyLlama, SmolLM): Q and K
    /// stored permuted for adjacent-pair rotation (GGUF's converter does it), no biases.
    /// Llama 3.1's long-context frequencies come as the `rope_freqs.weight` tensor, and
    /// linear position scaling as `llama.rope.scaling.*`; both are read for every family.
    public static let llama = ModelArchitecture(name: "llama", ropeLayout: .adjacentPairs)
}
