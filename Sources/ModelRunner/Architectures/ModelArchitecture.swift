public import Kernels

/// What sets one Llama-family architecture apart from another: everything else (RMSNorm,
/// grouped-query attention over the paged cache, a SwiGLU MLP, the GGUF tensor names) is
/// shared and lives in `LlamaModel`.
///
/// Each family is one file in this folder defining a static value, and one line in
/// `ModelRegistry.families`. A file's `general.architecture` is looked up there; an
/// architecture that is not there fails at load, naming itself and the ones Cohort runs.
public struct ModelArchitecture: Sendable, Equatable, CustomStringConvertible {
    /// The `general.architecture` value, which also prefixes the family's metadata keys.
    public let name: String
    /// How head vectors pair up for rotary embeddings.
    public let ropeLayout: RoPE.Layout
    /// Whether Q, K and V have biases (`blk.N.attn_q.bias`, …): required when true.
    public let attentionBiases: Bool
    /// Whether Q and K are RMS-normalized per head before rotation (`blk.N.attn_q_norm.weight`, …).
    public let queryKeyNorms: Bool

    public init(name: String, ropeLayout: RoPE.Layout, attentionBiases: Bool = false, queryKeyNorms: Bool = false) {
        self.name = name
        self.ropeLayout = ropeLayout
        self.attentionBiases = attentionBiases
        self.queryKeyNorms = queryKeyNorms
    }

    public var description: String { name }
}

/// The architectures Cohort runs: one line per family.
public enum ModelRegistry {
    public static let families: [ModelArchitecture] = [
        .llama,
        .qwen2,
        .qwen3,
    ]

    /// The family named `name`.
    /// - Throws: `GGUFError.unsupportedArchitecture`, naming it and the families Cohort runs.
    public static func family(named name: String) throws(GGUFError) -> ModelArchitecture {
        guard let family = families.first(where: { $0.name == name }) else {
            throw .unsupportedArchitecture(found: name, supported: families.map(\.name))
        }
        return family
    }
}
