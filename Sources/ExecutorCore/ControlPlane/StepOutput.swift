/// What the last pipeline stage returns for a step: one sampled token per sequence that
/// asked for one. (The seed's `SamplerOutput`.)
public struct StepOutput: Sendable, Equatable {
    public struct Sample: Sendable, Equatable {
        public var sequenceID: UInt64
        public var token: Int32
        /// NaN unless logprobs were asked for.
        public var logprob: Float
        public var top: [TokenLogprob]

        public init(sequenceID: UInt64, token: Int32, logprob: Float = .nan, top: [TokenLogprob] = []) {
            self.sequenceID = sequenceID
            self.token = token
            self.logprob = logprob
            self.top = top
        }

        public static func == (a: Sample, b: Sample) -> Bool {
            a.sequenceID == b.sequenceID && a.token == b.token && a.logprob.bitPattern == b.logprob.bitPattern && a.top == b.top
        }
    }

    /// The samples as columns, encoded and decoded as bulk copies (as `StepRequest.Sequences`).
    /// Log-probabilities are kept as bit patterns, so equal outputs compare equal, NaNs included.
    public struct Samples: RandomAccessCollection, Sendable, Equatable {
        public private(set) var sequenceIDs: [UInt64] = []
        public private(set) var tokens: [Int32] = []
        private var logprobBits: [UInt32] = []
        /// Sample i's alternatives are entries `topOffsets[i]..<topOffsets[i + 1]` of the top columns.
        private var topOffsets: [Int32] = [0]
        private var topTokens: [Int32] = []
        private var topLogprobBits: [UInt32] = []

        public init() {}

        public init(_ samples: some Sequence<Sample>) {
            for s in samples { append(s) }
        }

        public var startIndex: Int { 0 }
        public var endIndex: Int { sequenceIDs.count }

        public subscript(i: Int) -> Sample {
            let top = (Int(topOffsets[i])..<Int(topOffsets[i + 1])).map {
                TokenLogprob(token: topTokens[$0], logprob: Float(bitPattern: topLogprobBits[$0]))
            }
            return Sample(sequenceID: sequenceIDs[i], token: tokens[i], logprob: Float(bitPattern: logprobBits[i]), top: top)
        }

        public mutating func append(_ s: Sample) {
            append(sequenceID: s.sequenceID, token: s.token, logprob: s.logprob, top: s.top)
        }

        public mutating func append(sequenceID: UInt64, token: Int32, logprob: Float, top: [TokenLogprob] = []) {
            sequenceIDs.append(sequenceID)
            tokens.append(token)
            logprobBits.append(logprob.bitPattern)
            for t in top {
                topTokens.append(t.token)
                topLogprobBits.append(t.logprob.bitPattern)
            }
            topOffsets.append(Int32(topTokens.count))
        }

        func encode(into w: inout WireWriter) {
            w.integers(sequenceIDs)
            w.integers(tokens)
            w.integers(logprobBits)
            w.integers(topOffsets)
            w.integers(topTokens)
            w.integers(topLogprobBits)
        }

        mutating func decode(_ r: inout WireReader) throws(WireError) {
            try r.integers(into: &sequenceIDs, reading: "sequence ids")
            let n = sequenceIDs.count
            try r.column(into: &tokens, count: n, reading: "tokens")
            try r.column(into: &logprobBits, count: n, reading: "logprobs")
            try r.column(into: &topOffsets, count: n + 1, reading: "top logprob offsets")
            try r.integers(into: &topTokens, reading: "top tokens")
            try r.column(into: &topLogprobBits, count: topTokens.count, reading: "top logprobs")
            try r.checkOffsets(topOffsets, total: topTokens.count, reading: "top logprob offsets")
        }
    }

    public var step: UInt64
    public var samples: Samples

    public init(step: UInt64, samples: some Sequence<Sample>) {
        self.step = step
        self.samples = Samples(samples)
    }

    public init(step: UInt64, samples: Samples) {
        self.step = step
        self.samples = samples
    }

    static let tag: StaticString = "COUT"

    public func encode(into w: inout WireWriter) {
        w.reset()
        w.header(tag: Self.tag)
        w.integer(step)
        samples.encode(into: &w)
    }

    /// The output of a worker that runs no model: token 0 for every sequence that samples.
    /// Written straight into `w`, column by column, without building the value.
    public static func encodePlaceholder(for request: StepRequest, into w: inout WireWriter) {
        w.reset()
        w.header(tag: tag)
        w.integer(request.step)
        let sequences = request.sequences, n = sequences.sampleCount
        w.count(n)
        for i in sequences.indices where sequences.sample(i) { w.integer(sequences.ids[i]) }
        w.count(n)
        for _ in 0..<n { w.integer(Int32(0)) }
        w.count(n)
        for _ in 0..<n { w.float(.nan) }
        w.count(n + 1)
        for _ in 0...n { w.integer(Int32(0)) }
        w.count(0)
        w.count(0)
    }

    public init(decoding bytes: UnsafeRawBufferPointer) throws(WireError) {
        var r = WireReader(bytes)
        try r.header(tag: "COUT")
        step = try r.integer(UInt64.self, reading: "step")
        samples = Samples()
        try samples.decode(&r)
        try r.finish()
    }
}
