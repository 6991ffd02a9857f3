public import Kernels

/// Views of a Llama model's tensors inside the mapped GGUF file, checked for shape.
///
/// Matrices stay in the mapping (no copy); only the small norm vectors are decoded into
/// owned float arrays.
public struct LlamaWeights: @unchecked Sendable {
    // @unchecked: matrices are views of the read-only mapping held by `file`.

    public struct Layer: Sendable {
        public var attentionNorm: [Float]
        public var query: WeightMatrix
        public var key: WeightMatrix
        public var value: WeightMatrix
        /// Q, K and V biases (`qwen2`), nil where the architecture has none.
        public var queryBias: [Float]?
        public var keyBias: [Float]?
        public var valueBias: [Float]?
        /// Per-head RMSNorm weights of Q and K (`qwen3`), `headDimensions` each.
        public var queryNorm: [Float]?
        public var keyNorm: [Float]?
        public var attentionOutput: WeightMatrix
        public var feedForwardNorm: [Float]
        public var gate: WeightMatrix
        public var up: WeightMatrix
        public var down: WeightMatrix
    }

    public let file: GGUFFile
    public var tokenEmbedding: WeightMatrix
    public var layers: [Layer]
    public var outputNorm: [Float]
    /// The output head; the token embedding itself when the file has no `output.weight`.
    public var output: WeightMatrix
    public var tiedOutput: Bool
    /// Llama 3.1's per-frequency rotary divisors (`rope_freqs.weight`), when the file has them.
    public var ropeFactors: [Float]?
    /// The file's index of `layers[0]` (not 0 once `staged` kept a later pipeline stage).
    public private(set) var firstLayer = 0

    /// GGUF tensor names, in one table.
    enum Name {
        static let tokenEmbedding = "token_embd.weight"
        static let outputNorm = "output_norm.weight"
        static let output = "output.weight"
        static let ropeFactors = "rope_freqs.weight"
        static func layer(_ i: Int, _ part: String) -> String { "blk.\(i).\(part).weight" }
        static func bias(_ i: Int, _ part: String) -> String { "blk.\(i).\(part).bias" }
        static let queryNorm = "attn_q_norm"
        static let keyNorm = "attn_k_norm"
        static let attentionNorm = "attn_norm"
        static let query = "attn_q"
        static let key = "attn_k"
        static let value = "attn_v"
        static let attentionOutput = "attn_output"
        static let feedForwardNorm = "ffn_norm"
        static let gate = "ffn_gate"
        static let up = "ffn_up"
        static let down = "ffn_down"
    }

    /// Cuts this rank's shard out of the full views and puts every matrix in a format
    /// `mode`'s kernels run: views of the mapping where they can (no copy), copies in
    /// `storage` where a format has no kernel of its own or a shard splits its blocks (see
    /// `ConvertedWeights`). The output head is prepared only when `output` is true (the
    /// last pipeline stage); the embedding is looked up row by row and stays as it is.
    /// - Throws: `GGUFError.tensorMismatch` naming the tensor, row and column of a weight
    ///   that decodes to NaN or infinity in a matrix being converted (a corrupt file: fast
    ///   mode would otherwise round it to 0 and quietly disagree with precise mode).
    public func prepared(
        _ shard: TensorShard, configuration c: LlamaConfiguration, mode: NumericMode, storage: ConvertedWeights, output: Bool
    ) throws(GGUFError) -> LlamaWeights {
        var w = self
        let hd = c.headDimensions
        let q = (shard.queryHeads.lowerBound * hd)..<(shard.queryHeads.upperBound * hd)
        let kv = (shard.kvHeads.lowerBound * hd)..<(shard.kvHeads.upperBound * hd)
        func prepare(_ m: WeightMatrix, rows: Range<Int>? = nil, columns: Range<Int>? = nil, _ name: String) throws(GGUFError) -> WeightMatrix {
            do {
                return try storage.prepare(m, rows: rows, columns: columns, mode: mode)
            } catch {
                throw .tensorMismatch(tensor: name, expected: "finite weights",
                                      found: "\(error.value) at row \(error.row), column \(error.column)")
            }
        }
        var prepared: [Layer] = []
        for (i, l) in layers.enumerated() {
            var l = l
            func name(_ part: String) -> String { Name.layer(firstLayer + i, part) }
            l.query = try prepare(l.query, rows: q, name(Name.query))
            l.key = try prepare(l.key, rows: kv, name(Name.key))
            l.value = try prepare(l.value, rows: kv, name(Name.value))
            l.queryBias = l.queryBias.map { Array($0[q]) }
            l.keyBias = l.keyBias.map { Array($0[kv]) }
            l.valueBias = l.valueBias.map { Array($0[kv]) }
            l.attentionOutput = try prepare(l.attentionOutput, columns: q, name(Name.attentionOutput))
            l.gate = try prepare(l.gate, rows: shard.feedForward, name(Name.gate))
            l.up = try prepare(l.up, rows: shard.feedForward, name(Name.up))
            l.down = try prepare(l.down, columns: shard.feedForward, name(Name.down))
            prepared.append(l)
        }
        w.layers = prepared
        w.tokenEmbedding = tokenEmbedding.rows(shard.vocabulary)
        w.output = output
            ? try prepare(self.output, rows: shard.vocabulary, tiedOutput ? Name.tokenEmbedding : Name.output)
            : self.output.rows(shard.vocabulary)
        return w
    }

    /// Keeps only the layers of a pipeline stage (still views of the mapping).
    public func staged(_ stage: PipelineStage) -> LlamaWeights {
        var w = self
        w.layers = Array(layers[stage.layers])
        w.firstLayer = firstLayer + stage.layers.lowerBound
        return w
    }

    /// Attaches packed copies of every matrix the integer kernels read (the layers, and the
    /// output head when `output` is true: the last pipeline stage; the embedding is only
    /// looked up row by row and stays as it is). A matrix `converted` holds as a copy keeps
    /// only its panels (and rows past them).
    public func packed(into storage: PackedWeights, converted: ConvertedWeights, output: Bool) -> LlamaWeights {
        func pack(_ m: WeightMatrix) -> WeightMatrix { converted.packed(m, into: storage) }
        var w = self
        w.layers = layers.map { l in
            var l = l
            l.query = pack(l.query)
            l.key = pack(l.key)
            l.value = pack(l.value)
            l.attentionOutput = pack(l.attentionOutput)
            l.gate = pack(l.gate)
            l.up = pack(l.up)
            l.down = pack(l.down)
            return l
        }
        if output { w.output = pack(self.output) }
        return w
    }

    /// Finds and checks every tensor. `configuration.vocabularySize` is filled from the
    /// embedding when the metadata lacked it.
    public init(file: GGUFFile, configuration: inout LlamaConfiguration) throws(GGUFError) {
        self.file = file
        let c = configuration
        func matrix(_ name: String, rows: Int?, columns: Int) throws(GGUFError) -> WeightMatrix {
            guard let info = file.tensorInfo(name) else { throw .missingTensor(name) }
            let found = "\(info.dimensions) \(info.type)"
            guard info.dimensions.count == 2, info.dimensions[0] == columns, rows.map({ $0 == info.dimensions[1] }) ?? true else {
                throw .tensorMismatch(tensor: name, expected: "dimensions [\(columns), \(rows.map(String.init) ?? "n")]", found: found)
            }
            return WeightMatrix(
                type: info.type, rows: info.dimensions[1], columns: columns, base: file.data(of: info).baseAddress!)
        }
        func vector(_ name: String, count: Int) throws(GGUFError) -> [Float] {
            guard let info = file.tensorInfo(name) else { throw .missingTensor(name) }
            guard info.dimensions == [count] else {
                throw .tensorMismatch(tensor: name, expected: "dimensions [\(count)]", found: "\(info.dimensions)")
            }
            return Dequantize.array(info.type, bytes: file.data(of: info), count: count)
        }

        tokenEmbedding = try matrix(Name.tokenEmbedding, rows: c.vocabularySize > 0 ? c.vocabularySize : nil, columns: c.hiddenSize)
        configuration.vocabularySize = tokenEmbedding.rows
        let vocabulary = tokenEmbedding.rows
        outputNorm = try vector(Name.outputNorm, count: c.hiddenSize)
        if file.tensorInfo(Name.output) != nil {
            output = try matrix(Name.output, rows: vocabulary, columns: c.hiddenSize)
            tiedOutput = false
        } else {
            output = tokenEmbedding
            tiedOutput = true
        }
        func optionalVector(_ name: String, count: Int, required: Bool) throws(GGUFError) -> [Float]? {
            guard required || file.tensorInfo(name) != nil else { return nil }
            return try vector(name, count: count)
        }
        let family = c.architecture
        ropeFactors = try optionalVector(Name.ropeFactors, count: c.rotaryDimensions / 2, required: false)
        if let bad = ropeFactors?.first(where: { !($0 > 0 && $0.isFinite) }) {
            throw .tensorMismatch(tensor: Name.ropeFactors, expected: "positive finite frequency divisors", found: "\(bad)")
        }
        var layers: [Layer] = []
        for i in 0..<c.layers {
            layers.append(Layer(
                attentionNorm: try vector(Name.layer(i, Name.attentionNorm), count: c.hiddenSize),
                query: try matrix(Name.layer(i, Name.query), rows: c.queryDimensions, columns: c.hiddenSize),
                key: try matrix(Name.layer(i, Name.key), rows: c.kvDimensions, columns: c.hiddenSize),
                value: try matrix(Name.layer(i, Name.value), rows: c.kvDimensions, columns: c.hiddenSize),
                queryBias: try optionalVector(Name.bias(i, Name.query), count: c.queryDimensions, required: family.attentionBiases),
                keyBias: try optionalVector(Name.bias(i, Name.key), count: c.kvDimensions, required: family.attentionBiases),
                valueBias: try optionalVector(Name.bias(i, Name.value), count: c.kvDimensions, required: family.attentionBiases),
                queryNorm: try optionalVector(Name.layer(i, Name.queryNorm), count: c.headDimensions, required: family.queryKeyNorms),
                keyNorm: try optionalVector(Name.layer(i, Name.keyNorm), count: c.headDimensions, required: family.queryKeyNorms),
                attentionOutput: try matrix(Name.layer(i, Name.attentionOutput), rows: c.hiddenSize, columns: c.queryDimensions),
                feedForwardNorm: try vector(Name.layer(i, Name.feedForwardNorm), count: c.hiddenSize),
                gate: try matrix(Name.layer(i, Name.gate), rows: c.feedForwardSize, columns: c.hiddenSize),
                up: try matrix(Name.layer(i, Name.up), rows: c.feedForwardSize, columns: c.hiddenSize),
                down: try matrix(Name.layer(i, Name.down), rows: c.hiddenSize, columns: c.feedForwardSize)))
        }
        self.layers = layers
    }
}
