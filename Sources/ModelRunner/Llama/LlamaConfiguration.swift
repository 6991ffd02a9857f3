import Kernels

/// Hyperparameters of a Llama-family model, read from GGUF metadata.
public struct LlamaConfiguration: Sendable, Equatable {
    /// The family (`general.architecture`): rotary layout, biases, Q/K norms.
    public var architecture: ModelArchitecture
    public var layers: Int
    public var hiddenSize: Int
    public var feedForwardSize: Int
    public var attentionHeads: Int
    public var kvHeads: Int
    public var headDimensions: Int
    /// Dimensions of each head that rotate (GGUF `rope.dimension_count`; usually all).
    public var rotaryDimensions: Int
    public var ropeTheta: Float
    /// Linear position scaling: positions are multiplied by this (1 / `rope.scaling.factor`).
    public var ropeScale: Float
    public var rmsNormEpsilon: Float
    public var vocabularySize: Int
    public var contextLength: Int

    /// GGUF keys, relative to the architecture prefix (`llama.`), in one table.
    enum Key: String {
        case layers = "block_count"
        case hiddenSize = "embedding_length"
        case feedForwardSize = "feed_forward_length"
        case attentionHeads = "attention.head_count"
        case kvHeads = "attention.head_count_kv"
        case headDimensions = "attention.key_length"
        case valueDimensions = "attention.value_length"
        case rotaryDimensions = "rope.dimension_count"
        case ropeTheta = "rope.freq_base"
        case ropeScalingType = "rope.scaling.type"
        case ropeScalingFactor = "rope.scaling.factor"
        case rmsNormEpsilon = "attention.layer_norm_rms_epsilon"
        case vocabularySize = "vocab_size"
        case contextLength = "context_length"
    }

    public init(
        architecture: ModelArchitecture = .llama, layers: Int, hiddenSize: Int, feedForwardSize: Int, attentionHeads: Int, kvHeads: Int,
        headDimensions: Int? = nil, ropeTheta: Float = 10_000, rmsNormEpsilon: Float = 1e-5, vocabularySize: Int, contextLength: Int = 2048
    ) {
        self.architecture = architecture
        self.layers = layers
        self.hiddenSize = hiddenSize
        self.feedForwardSize = feedForwardSize
        self.attentionHeads = attentionHeads
        self.kvHeads = kvHeads
        self.headDimensions = headDimensions ?? hiddenSize / attentionHeads
        self.rotaryDimensions = self.headDimensions
        self.ropeTheta = ropeTheta
        self.ropeScale = 1
        self.rmsNormEpsilon = rmsNormEpsilon
        self.vocabularySize = vocabularySize
        self.contextLength = contextLength
    }

    /// Reads and validates the configuration of the file's architecture (looked up in
    /// `ModelRegistry`).
    public init(file: GGUFFile) throws(GGUFError) {
        try self.init(file: file, architecture: try ModelRegistry.family(named: try file.string("general.architecture")))
    }

    /// Reads and validates the configuration of `architecture` from `file`.
    public init(file: GGUFFile, architecture family: ModelArchitecture) throws(GGUFError) {
        architecture = family
        let architecture = family.name
        func key(_ k: Key) -> String { "\(architecture).\(k.rawValue)" }
        func positive(_ k: Key, default value: Int? = nil) throws(GGUFError) -> Int {
            let found = try file.optionalInteger(key(k)) ?? value
            guard let found else { throw .missingKey(key(k)) }
            guard found > 0, found < 1 << 24 else {
                throw .invalidValue(key: key(k), expected: "a positive count below 2^24", found: "\(found)")
            }
            return found
        }
        layers = try positive(.layers)
        hiddenSize = try positive(.hiddenSize)
        feedForwardSize = try positive(.feedForwardSize)
        attentionHeads = try positive(.attentionHeads)
        kvHeads = try positive(.kvHeads, default: attentionHeads)
        guard attentionHeads % kvHeads == 0 else {
            throw .invalidValue(key: key(.kvHeads), expected: "a divisor of the head count \(attentionHeads)", found: "\(kvHeads)")
        }
        if try file.optionalInteger(key(.headDimensions)) == nil {
            guard hiddenSize % attentionHeads == 0 else {
                throw .invalidValue(key: key(.hiddenSize), expected: "a multiple of the head count \(attentionHeads)", found: "\(hiddenSize)")
            }
        }
        headDimensions = try positive(.headDimensions, default: hiddenSize / max(attentionHeads, 1))
        let valueDimensions = try positive(.valueDimensions, default: headDimensions)
        guard valueDimensions == headDimensions else {
            throw .invalidValue(key: key(.valueDimensions), expected: "\(headDimensions), the key length", found: "\(valueDimensions)")
        }
        rotaryDimensions = try positive(.rotaryDimensions, default: headDimensions)
        guard rotaryDimensions <= headDimensions, rotaryDimensions % 2 == 0 else {
            throw .invalidValue(key: key(.rotaryDimensions), expected: "an even number ≤ \(headDimensions)", found: "\(rotaryDimensions)")
        }
        let theta = try file.optionalReal(key(.ropeTheta)) ?? 10_000
        guard theta > 0, theta.isFinite else {
            throw .invalidValue(key: key(.ropeTheta), expected: "a positive number", found: "\(theta)")
        }
        ropeTheta = Float(theta)
        // A factor without a type is linear scaling, as llama.cpp reads it.
        let scalingFactor = try file.optionalReal(key(.ropeScalingFactor))
        switch try file.optionalString(key(.ropeScalingType)) ?? (scalingFactor == nil ? nil : "linear") {
        case nil, "none":
            ropeScale = 1
        case "linear":
            let factor = scalingFactor ?? 1
            guard factor >= 1, factor.isFinite else {
                throw .invalidValue(key: key(.ropeScalingFactor), expected: "a number ≥ 1", found: "\(factor)")
            }
            ropeScale = Float(1 / factor)
        case let other?:
            throw .invalidValue(key: key(.ropeScalingType), expected: "none or linear (Cohort does not run YaRN or LongRoPE scaling)", found: other)
        }
        let epsilon = try file.optionalReal(key(.rmsNormEpsilon)) ?? 1e-5
        guard epsilon > 0, epsilon < 1 else {
            throw .invalidValue(key: key(.rmsNormEpsilon), expected: "a small positive number", found: "\(epsilon)")
        }
        rmsNormEpsilon = Float(epsilon)
        contextLength = try positive(.contextLength, default: 2048)
        // The vocabulary size comes from the embedding tensor when the key is absent.
        vocabularySize = try file.optionalInteger(key(.vocabularySize)) ?? 0
    }

    /// Floats of K (or V) per token per layer.
    public var kvDimensions: Int { kvHeads * headDimensions }
    public var queryDimensions: Int { attentionHeads * headDimensions }
}
