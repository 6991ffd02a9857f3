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

    public var step: UInt64
    public var samples: [Sample]

    public init(step: UInt64, samples: [Sample]) {
        self.step = step
        self.samples = samples
    }

    static let tag: StaticString = "COUT"

    public func encode(into w: inout WireWriter) {
        w.reset()
        w.header(tag: Self.tag)
        w.integer(step)
        w.count(samples.count)
        for s in samples {
            w.integer(s.sequenceID)
            w.integer(s.token)
            w.float(s.logprob)
            w.count(s.top.count)
            for t in s.top {
                w.integer(t.token)
                w.float(t.logprob)
            }
        }
    }

    /// The output of a worker that runs no model: token 0 for every sequence that samples.
    /// Written straight into `w`, without building the value.
    public static func encodePlaceholder(for request: StepRequest, into w: inout WireWriter) {
        w.reset()
        w.header(tag: tag)
        w.integer(request.step)
        w.count(request.sequences.reduce(0) { $0 + ($1.sample ? 1 : 0) })
        for s in request.sequences where s.sample {
            w.integer(s.id)
            w.integer(Int32(0))
            w.float(.nan)
            w.count(0)
        }
    }

    public init(decoding bytes: UnsafeRawBufferPointer) throws(WireError) {
        var r = WireReader(bytes)
        try r.header(tag: "COUT")
        step = try r.integer(UInt64.self, reading: "step")
        let n = try r.count(elementSize: 20, reading: "samples")
        var samples: [Sample] = []
        samples.reserveCapacity(n)
        for _ in 0..<n {
            let id = try r.integer(UInt64.self, reading: "sequence id")
            let token = try r.integer(Int32.self, reading: "token")
            let logprob = try r.float(reading: "logprob")
            let k = try r.count(elementSize: 8, reading: "top logprobs")
            var top: [TokenLogprob] = []
            for _ in 0..<k {
                top.append(TokenLogprob(token: try r.integer(Int32.self, reading: "top token"), logprob: try r.float(reading: "top logprob")))
            }
            samples.append(Sample(sequenceID: id, token: token, logprob: logprob, top: top))
        }
        self.samples = samples
        try r.finish()
    }
}
