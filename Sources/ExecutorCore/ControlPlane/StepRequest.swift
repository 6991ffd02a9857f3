/// One step for every rank: which sequences advance, with what tokens at which positions,
/// their KV block tables and sampling parameters, plus cache operations.
/// (The seed's `ExecuteModelRequest`.)
public struct StepRequest: Sendable, Equatable {
    public struct Sequence: Sendable, Equatable {
        public var id: UInt64
        /// New tokens: a prompt chunk, or one token when decoding.
        public var tokens: [Int32]
        /// Position of `tokens[0]` in the sequence.
        public var startPosition: Int32
        public var blockTable: [Int32]
        /// Whether the last stage samples a token for this sequence this step (false for
        /// a prompt chunk that is not the last).
        public var sample: Bool
        public var sampling: SamplingParameters

        public init(id: UInt64, tokens: [Int32], startPosition: Int32, blockTable: [Int32], sample: Bool = true,
                    sampling: SamplingParameters = SamplingParameters()) {
            self.id = id
            self.tokens = tokens
            self.startPosition = startPosition
            self.blockTable = blockTable
            self.sample = sample
            self.sampling = sampling
        }
    }

    /// A KV block copied onto another before the step (copy-on-write forks).
    public struct BlockCopy: Sendable, Equatable {
        public var source: Int32
        public var destination: Int32
        public init(source: Int32, destination: Int32) {
            self.source = source
            self.destination = destination
        }
    }

    /// Monotonic step number (checked by workers: no lost or repeated step).
    public var step: UInt64
    public var virtualEngine: Int32
    public var sequences: [Sequence]
    public var blockCopies: [BlockCopy]
    /// Requests that ended since the last step: workers drop their state.
    public var finishedRequestIDs: [UInt64]

    public init(step: UInt64, virtualEngine: Int32 = 0, sequences: [Sequence], blockCopies: [BlockCopy] = [],
                finishedRequestIDs: [UInt64] = []) {
        self.step = step
        self.virtualEngine = virtualEngine
        self.sequences = sequences
        self.blockCopies = blockCopies
        self.finishedRequestIDs = finishedRequestIDs
    }

    static let tag: StaticString = "CSTP"
}

extension StepRequest {
    /// Writes the request into `writer` (after resetting it).
    public func encode(into writer: inout WireWriter) {
        writer.reset()
        writer.header(tag: Self.tag)
        writer.integer(step)
        writer.integer(virtualEngine)
        writer.count(sequences.count)
        // Borrowed in place: binding each sequence to a local would retain and release its
        // four arrays (about a third of the encoding's time).
        sequences.withUnsafeBufferPointer { sequences in
            for i in sequences.indices {
                writer.integer(sequences[i].id)
                writer.integers(sequences[i].tokens)
                writer.integer(sequences[i].startPosition)
                writer.integers(sequences[i].blockTable)
                writer.bool(sequences[i].sample)
                sequences[i].sampling.encode(into: &writer)
            }
        }
        writer.count(blockCopies.count)
        for c in blockCopies {
            writer.integer(c.source)
            writer.integer(c.destination)
        }
        writer.integers(finishedRequestIDs)
    }

    /// Reads a request.
    /// - Throws: `WireError` naming the field, offset and what was found.
    public init(decoding bytes: UnsafeRawBufferPointer) throws(WireError) {
        self.init(step: 0, sequences: [])
        try decode(bytes)
    }

    /// Reads a request into this value, reusing the capacity of its arrays: a worker that
    /// decodes every step into the same value allocates nothing once warm. On error the
    /// value is left half-written; the caller discards it.
    public mutating func decode(_ bytes: UnsafeRawBufferPointer) throws(WireError) {
        var r = WireReader(bytes)
        try r.header(tag: "CSTP")
        step = try r.integer(UInt64.self, reading: "step")
        virtualEngine = try r.integer(Int32.self, reading: "virtual engine")
        let n = try r.count(elementSize: 8 + 4 + 4 + 4 + 1, reading: "sequences")
        if sequences.count > n { sequences.removeLast(sequences.count - n) }
        while sequences.count < n { sequences.append(Sequence(id: 0, tokens: [], startPosition: 0, blockTable: [])) }
        // In place, through one buffer: no uniqueness check per field.
        try sequences.withUnsafeMutableBufferPointer { (sequences) throws(WireError) in
            for i in 0..<n {
                sequences[i].id = try r.integer(UInt64.self, reading: "sequence id")
                try r.integers(into: &sequences[i].tokens, reading: "tokens")
                sequences[i].startPosition = try r.integer(Int32.self, reading: "start position")
                try r.integers(into: &sequences[i].blockTable, reading: "block table")
                sequences[i].sample = try r.bool(reading: "sample flag")
                try sequences[i].sampling.decode(&r)
            }
        }
        let copies = try r.count(elementSize: 8, reading: "block copies")
        blockCopies.removeAll(keepingCapacity: true)
        for _ in 0..<copies {
            blockCopies.append(BlockCopy(
                source: try r.integer(Int32.self, reading: "copy source"), destination: try r.integer(Int32.self, reading: "copy destination")))
        }
        try r.integers(into: &finishedRequestIDs, reading: "finished request ids")
        try r.finish()
    }
}

extension SamplingParameters {
    func encode(into w: inout WireWriter) {
        w.float(temperature)
        w.integer(Int32(clamping: topK))
        w.float(topP)
        w.float(minP)
        w.float(repetitionPenalty)
        w.float(presencePenalty)
        w.float(frequencyPenalty)
        w.bool(seed != nil)
        w.integer(seed ?? 0)
        w.integers(stopTokenIDs)
        w.count(stopStrings.count)
        for s in stopStrings { w.string(s) }
        w.bool(ignoreEndOfGeneration)
        w.integer(Int32(clamping: maxTokens))
        w.integer(Int32(clamping: logprobs))
    }

    mutating func decode(_ r: inout WireReader) throws(WireError) {
        temperature = try r.float(reading: "temperature")
        topK = Int(try r.integer(Int32.self, reading: "top-k"))
        topP = try r.float(reading: "top-p")
        minP = try r.float(reading: "min-p")
        repetitionPenalty = try r.float(reading: "repetition penalty")
        presencePenalty = try r.float(reading: "presence penalty")
        frequencyPenalty = try r.float(reading: "frequency penalty")
        let hasSeed = try r.bool(reading: "seed flag")
        let seed = try r.integer(UInt64.self, reading: "seed")
        self.seed = hasSeed ? seed : nil
        try r.integers(into: &stopTokenIDs, reading: "stop token ids")
        let stopCount = try r.count(elementSize: 4, reading: "stop strings")
        stopStrings.removeAll(keepingCapacity: true)
        for _ in 0..<stopCount { stopStrings.append(try r.string(reading: "stop string")) }
        ignoreEndOfGeneration = try r.bool(reading: "ignore end of generation")
        maxTokens = Int(try r.integer(Int32.self, reading: "max tokens"))
        logprobs = Int(try r.integer(Int32.self, reading: "logprobs"))
    }
}
