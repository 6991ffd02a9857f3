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
    public var sequences: Sequences
    public var blockCopies: [BlockCopy]
    /// Requests that ended since the last step: workers drop their state.
    public var finishedRequestIDs: [UInt64]

    public init(step: UInt64, virtualEngine: Int32 = 0, sequences: some Swift.Sequence<Sequence>, blockCopies: [BlockCopy] = [],
                finishedRequestIDs: [UInt64] = []) {
        self.step = step
        self.virtualEngine = virtualEngine
        self.sequences = Sequences(sequences)
        self.blockCopies = blockCopies
        self.finishedRequestIDs = finishedRequestIDs
    }

    static let tag: StaticString = "CSTP"
}

extension StepRequest {
    /// A step's sequences as columns: every sequence's tokens in one array, every block
    /// table in another, sampling parameters stored once per run of sequences that share
    /// them. The wire format is the same columns, so a step encodes and decodes as a
    /// dozen bulk copies whatever its batch (a 4.4 KB step of 40 sequences decoded one
    /// sequence at a time, allocating two arrays each, in 2.5 µs).
    ///
    /// Reading an element builds a `Sequence` (two arrays); the hot paths read the columns
    /// through `tokens(_:)`, `blockTable(_:)` and the per-index accessors instead.
    public struct Sequences: RandomAccessCollection, Sendable, Equatable {
        public private(set) var ids: [UInt64] = []
        public private(set) var startPositions: [Int32] = []
        /// Sequence i's tokens are `allTokens[tokenOffsets[i]..<tokenOffsets[i + 1]]`.
        public private(set) var tokenOffsets: [Int32] = [0]
        public private(set) var allTokens: [Int32] = []
        /// Sequence i's block table is `allBlocks[blockOffsets[i]..<blockOffsets[i + 1]]`.
        public private(set) var blockOffsets: [Int32] = [0]
        public private(set) var allBlocks: [Int32] = []
        /// 1 when sequence i samples this step.
        public private(set) var sampleFlags: [UInt8] = []
        /// Sequence i samples with `samplingTable[samplingIndex[i]]`.
        public private(set) var samplingIndex: [Int32] = []
        public private(set) var samplingTable: [SamplingParameters] = []

        public init() {}

        public init(_ sequences: some Swift.Sequence<Sequence>) {
            for s in sequences { append(s) }
        }

        public var startIndex: Int { 0 }
        public var endIndex: Int { ids.count }

        public subscript(i: Int) -> Sequence {
            Sequence(
                id: ids[i], tokens: Array(tokens(i)), startPosition: startPositions[i], blockTable: Array(blockTable(i)),
                sample: sample(i), sampling: sampling(i))
        }

        public func tokens(_ i: Int) -> ArraySlice<Int32> { allTokens[Int(tokenOffsets[i])..<Int(tokenOffsets[i + 1])] }
        public func tokenCount(_ i: Int) -> Int { Int(tokenOffsets[i + 1] - tokenOffsets[i]) }
        public func blockTable(_ i: Int) -> ArraySlice<Int32> { allBlocks[Int(blockOffsets[i])..<Int(blockOffsets[i + 1])] }
        public func sample(_ i: Int) -> Bool { sampleFlags[i] != 0 }
        public func sampling(_ i: Int) -> SamplingParameters { samplingTable[Int(samplingIndex[i])] }
        /// All tokens of the step.
        public var tokenCount: Int { allTokens.count }
        /// How many sequences sample this step.
        public var sampleCount: Int { sampleFlags.reduce(0) { $0 + Int($1) } }

        public mutating func append(_ s: Sequence) {
            ids.append(s.id)
            startPositions.append(s.startPosition)
            allTokens.append(contentsOf: s.tokens)
            tokenOffsets.append(Int32(allTokens.count))
            allBlocks.append(contentsOf: s.blockTable)
            blockOffsets.append(Int32(allBlocks.count))
            sampleFlags.append(s.sample ? 1 : 0)
            if samplingTable.last != s.sampling { samplingTable.append(s.sampling) }
            samplingIndex.append(Int32(samplingTable.count - 1))
        }

        public mutating func removeAll() {
            ids.removeAll(keepingCapacity: true)
            startPositions.removeAll(keepingCapacity: true)
            tokenOffsets.removeAll(keepingCapacity: true)
            tokenOffsets.append(0)
            allTokens.removeAll(keepingCapacity: true)
            blockOffsets.removeAll(keepingCapacity: true)
            blockOffsets.append(0)
            allBlocks.removeAll(keepingCapacity: true)
            sampleFlags.removeAll(keepingCapacity: true)
            samplingIndex.removeAll(keepingCapacity: true)
            samplingTable.removeAll(keepingCapacity: true)
        }

        func encode(into w: inout WireWriter) {
            w.integers(ids)
            w.integers(startPositions)
            w.integers(tokenOffsets)
            w.integers(allTokens)
            w.integers(blockOffsets)
            w.integers(allBlocks)
            w.integers(sampleFlags)
            w.integers(samplingIndex)
            w.count(samplingTable.count)
            for p in samplingTable { p.encode(into: &w) }
        }

        /// Reads the columns into this value's arrays (reusing their capacity), then checks
        /// that they describe `ids.count` sequences.
        mutating func decode(_ r: inout WireReader) throws(WireError) {
            try r.integers(into: &ids, reading: "sequence ids")
            let n = ids.count
            try r.column(into: &startPositions, count: n, reading: "start positions")
            try r.column(into: &tokenOffsets, count: n + 1, reading: "token offsets")
            try r.integers(into: &allTokens, reading: "tokens")
            try r.column(into: &blockOffsets, count: n + 1, reading: "block table offsets")
            try r.integers(into: &allBlocks, reading: "block tables")
            try r.column(into: &sampleFlags, count: n, reading: "sample flags")
            try r.column(into: &samplingIndex, count: n, reading: "sampling parameter indices")
            let tables = try r.count(elementSize: 40, reading: "sampling parameters")
            if samplingTable.count > tables { samplingTable.removeLast(samplingTable.count - tables) }
            while samplingTable.count < tables { samplingTable.append(SamplingParameters()) }
            for i in 0..<tables { try samplingTable[i].decode(&r) }
            try r.checkOffsets(tokenOffsets, total: allTokens.count, reading: "token offsets")
            try r.checkOffsets(blockOffsets, total: allBlocks.count, reading: "block table offsets")
            if let flag = sampleFlags.first(where: { $0 > 1 }) {
                throw .invalidValue(offset: r.offset, reading: "sample flags", found: "\(flag), expected 0 or 1")
            }
            if let index = samplingIndex.first(where: { $0 < 0 || Int($0) >= tables }) {
                throw .invalidValue(
                    offset: r.offset, reading: "sampling parameter indices", found: "\(index), expected 0..<\(tables)")
            }
        }
    }
}

extension StepRequest {
    /// Writes the request into `writer` (after resetting it).
    public func encode(into writer: inout WireWriter) {
        writer.reset()
        writer.header(tag: Self.tag)
        writer.integer(step)
        writer.integer(virtualEngine)
        sequences.encode(into: &writer)
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
        try sequences.decode(&r)
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
