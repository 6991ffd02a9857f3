import ExecutorCore
import Testing

@Suite struct WireTests {
    static let request = StepRequest(
        step: 42, virtualEngine: 1,
        sequences: [
            .init(id: 7, tokens: [1, 2, 3], startPosition: 0, blockTable: [4, 9], sample: true,
                  sampling: SamplingParameters(temperature: 0.7, topK: 40, topP: 0.9, minP: 0.05, repetitionPenalty: 1.1,
                                               seed: 99, stopTokenIDs: [2], stopStrings: ["\n\n", "é"], maxTokens: 64, logprobs: 3)),
            .init(id: 8, tokens: [5], startPosition: 130, blockTable: Array(0..<9), sample: false),
        ],
        blockCopies: [.init(source: 3, destination: 5)], finishedRequestIDs: [1, 2])

    func encoded(_ r: StepRequest) -> [UInt8] {
        var w = WireWriter()
        r.encode(into: &w)
        return w.bytes
    }

    @Test("step requests and outputs round-trip")
    func roundTrip() throws {
        let bytes = encoded(Self.request)
        #expect(try bytes.withUnsafeBytes { try StepRequest(decoding: $0) } == Self.request)
        let output = StepOutput(step: 42, samples: [
            .init(sequenceID: 7, token: 11, logprob: -0.5, top: [.init(token: 11, logprob: -0.5), .init(token: 3, logprob: -1.25)]),
            .init(sequenceID: 8, token: 2),
        ])
        var w = WireWriter()
        output.encode(into: &w)
        #expect(try w.withBytes { try StepOutput(decoding: $0) } == output)
    }

    @Test("a writer grows past its first capacity and is reused after a reset")
    func writerGrows() throws {
        var sequences: [StepRequest.Sequence] = []
        for i in 0..<300 {
            let tokens = (0...(i % 7)).map { Int32($0) }
            let table = (0..<(i % 13)).map { Int32($0) }
            let sampling = SamplingParameters(stopStrings: ["stop \(i)", "…"])
            sequences.append(.init(id: UInt64(i), tokens: tokens, startPosition: Int32(i), blockTable: table, sampling: sampling))
        }
        let big = StepRequest(step: 9, sequences: sequences)
        var w = WireWriter(capacity: 64)
        for request in [big, Self.request, big] {
            request.encode(into: &w)
            #expect(w.count > 0 && w.bytes.count == w.count)
            #expect(try w.withBytes { try StepRequest(decoding: $0) } == request)
        }
    }

    @Test("decoding into a reused value equals a fresh decode, growing and shrinking")
    func decodeIntoReused() throws {
        var reused = StepRequest(step: 0, sequences: [])
        let small = StepRequest(step: 1, sequences: [.init(id: 3, tokens: [9], startPosition: 4, blockTable: [2])])
        for request in [Self.request, small, Self.request] {
            let bytes = encoded(request)
            try bytes.withUnsafeBytes { try reused.decode($0) }
            #expect(reused == request)
        }
    }

    @Test("start-up commands and the block-count reply round-trip")
    func startupCommands() throws {
        let commands: [WorkerCommand] = [
            .preflight, .initialize, .initializeDevice, .loadModel, .availableKVBlocks,
            .initializeCache(blocksPerVirtualEngine: 1234, virtualEngines: 2), .stopLoop, .startLoop, .healthCheck,
        ]
        for command in commands {
            var w = WireWriter()
            command.encode(into: &w)
            #expect(try w.withBytes { try WorkerCommand(decoding: $0) } == command)
            #expect(try w.withBytes { try WorkerCommand.kind(of: $0) } == command.kind)
        }
        var w = WireWriter()
        WorkerReply.blocks(rank: 3, count: 1 << 40).encode(into: &w)
        #expect(try w.withBytes { try WorkerReply(decoding: $0) } == .blocks(rank: 3, count: 1 << 40))
    }

    static func configuration(rank: Int = 3) throws -> WorkerConfiguration {
        let layout = try ParallelLayout(tensorParallel: 2, pipelineParallel: 2)
        return WorkerConfiguration(
            context: WorkerContext(rank: rank, localRank: 1, worldSize: 4, layout: layout, rendezvous: "10.0.0.1",
                                   environment: ["COHORT_CPUS": "1", "COHORT_INSTANCE_ID": "ab12", "NOTE": "é ✓"]),
            model: .init(path: "/m.gguf", fileSize: 1 << 33, headerDigest: 0xDEAD_BEEF, threads: 2, precise: true, kvCacheMiB: 64,
                         maxBatchTokens: 256, pipelineLayers: [17, 13], shardBytes: 12345),
            commands: .rings(broadcast: "/b", reply: "/r3", group: ["/b", "/r1", "/r2", "/r3"]),
            communicator: .tcp(host: "fe80::1", port: 4242), previousStage: .sharedMemory(name: "/s0"), nextStage: .tcp(host: "10.0.0.2", port: 4243), loadGate: .sharedMemory(name: "/g"),
            heartbeatInterval: 0.25, driverSilenceLimit: 4)
    }

    @Test("a worker's configuration, hello and heartbeat round-trip; each names what it refuses")
    func joinMessages() throws {
        var w = WireWriter()
        for configuration in [try Self.configuration(), WorkerConfiguration(
            context: try Self.configuration().context, model: nil, commands: .tcp(host: "127.0.0.1", port: 9), communicator: .sharedMemory(name: "/c")),
            WorkerConfiguration(context: try Self.configuration().context, model: nil, commands: .tcp(host: "10.0.0.1", port: 9), communicator: .mpi(color: 1), loadGate: .tcp(host: "10.0.0.1", port: 7))]
        {
            configuration.encode(into: &w)
            #expect(try w.withBytes { try WorkerConfiguration(decoding: $0) } == configuration)
        }
        #expect(try Self.configuration().sharedMemoryNames == ["/b", "/r3", "/r1", "/r2", "/s0", "/g"])
        let hello = WorkerHello(
            joinToken: 2, processID: 77, build: "wire 5, executable 10 bytes", machineID: "node-a", address: "10.0.0.7",
            deviceIDs: [4, 5])
        hello.encode(into: &w)
        #expect(try w.withBytes { try WorkerHello(decoding: $0) } == hello)
        let beat = Heartbeat(stepFinished: 8, steps: 9, stepNanoseconds: 123_456)
        beat.encode(into: &w)
        #expect(w.count == Heartbeat.byteCount)
        #expect(try w.withBytes { try Heartbeat(decoding: $0) } == beat)
        // A context outside its world, and a heartbeat interval of zero.
        var bad = try Self.configuration()
        bad.context.rank = 5
        bad.encode(into: &w)
        #expect { try w.withBytes { _ = try WorkerConfiguration(decoding: $0) } } throws: {
            "\($0)".contains("rank 5, local rank 1, world size 4 for TP 2 × PP 2")
        }
        bad = try Self.configuration()
        bad.heartbeatInterval = 0
        bad.encode(into: &w)
        #expect { try w.withBytes { _ = try WorkerConfiguration(decoding: $0) } } throws: { "\($0)".contains("heartbeat timing") }
        // Every truncation of a configuration is an error, never a crash.
        try Self.configuration().encode(into: &w)
        let bytes = w.bytes
        for n in 0..<bytes.count {
            #expect(throws: WireError.self) { try Array(bytes[..<n]).withUnsafeBytes { _ = try WorkerConfiguration(decoding: $0) } }
        }
    }

    @Test("sequences travel as columns: shared sampling parameters are stored once")
    func columns() {
        let shared = SamplingParameters(temperature: 0.5, seed: 1)
        var sequences = StepRequest.Sequences()
        for i in 0..<5 {
            let n = Int32(i)
            sequences.append(StepRequest.Sequence(
                id: UInt64(i), tokens: [n, 7], startPosition: 3, blockTable: [n], sample: i != 2,
                sampling: i == 4 ? SamplingParameters() : shared))
        }
        #expect(sequences.samplingTable == [shared, SamplingParameters()])
        #expect(sequences.allTokens == [0, 7, 1, 7, 2, 7, 3, 7, 4, 7] && sequences.tokenCount == 10 && sequences.sampleCount == 4)
        #expect(sequences[3] == StepRequest.Sequence(id: 3, tokens: [3, 7], startPosition: 3, blockTable: [3], sampling: shared))
        #expect(Array(sequences.blockTable(4)) == [4] && sequences.sampling(4) == SamplingParameters())
    }

    /// A step message written column by column, `columns` overriding the well-formed ones.
    func handWritten(_ columns: [String: [Int32]]) -> [UInt8] {
        var w = WireWriter()
        w.header(tag: "CSTP")
        w.integer(UInt64(1))
        w.integer(Int32(0))
        w.integers([UInt64(10), 11])
        let wellFormed: [(String, [Int32])] = [
            ("start positions", [0, 0]), ("token offsets", [0, 1, 2]), ("tokens", [5, 6]), ("block offsets", [0, 1, 2]),
            ("blocks", [0, 1]),
        ]
        for (name, column) in wellFormed { w.integers(columns[name] ?? column) }
        w.integers((columns["sample flags"] ?? [1, 1]).map(UInt8.init))
        w.integers(columns["sampling indices"] ?? [0, 0])
        w.count(0)  // no sampling parameters: any index is out of range
        w.count(0)
        w.integers([UInt64]())
        return w.bytes
    }

    /// Each breaks one rule; checks run in this order, so each case is caught by its own.
    /// (The message carries no sampling parameters, so the last case is the unmodified one.)
    static let brokenColumns: [([String: [Int32]], String)] = [
        (["start positions": [0]], "start positions"),
        (["token offsets": [0, 2, 1]], "token offsets"),
        (["token offsets": [0, 1, 3]], "token offsets"),
        (["block offsets": [1, 1, 2]], "block table offsets"),
        (["sample flags": [1, 2]], "sample flags"),
        ([:], "sampling parameter indices"),
    ]

    @Test("a step whose columns disagree is rejected, naming the column", arguments: brokenColumns)
    func inconsistentColumns(columns: [String: [Int32]], named: String) {
        let bytes = handWritten(columns)
        #expect {
            try bytes.withUnsafeBytes { _ = try StepRequest(decoding: $0) }
        } throws: { error in
            "\(error)".contains(named)
        }
    }

    @Test("an output whose top-logprob offsets overrun is rejected by name")
    func inconsistentOutput() {
        var w = WireWriter()
        w.header(tag: "COUT")
        w.integer(UInt64(1))
        w.integers([UInt64(4)])
        w.integers([Int32(9)])
        w.integers([Float(-1).bitPattern])
        w.integers([Int32(0), 2])  // two alternatives, one stored
        w.integers([Int32(9)])
        w.integers([Float(-1).bitPattern])
        #expect {
            try w.withBytes { _ = try StepOutput(decoding: $0) }
        } throws: { error in
            "\(error)".contains("top logprob offsets")
        }
    }

    @Test("a message from another version is rejected by name")
    func versionMismatch() {
        var bytes = encoded(Self.request)
        bytes[4] = 9
        #expect(throws: WireError.versionMismatch(expected: Wire.version, found: 9)) {
            try bytes.withUnsafeBytes { _ = try StepRequest(decoding: $0) }
        }
        #expect(WireError.versionMismatch(expected: 1, found: 9).description.contains("version 9"))
    }

    @Test("an output is not read as a request")
    func wrongTag() {
        var w = WireWriter()
        StepOutput(step: 1, samples: []).encode(into: &w)
        #expect(throws: WireError.wrongMessage(expected: "CSTP", found: "COUT")) {
            try w.withBytes { _ = try StepRequest(decoding: $0) }
        }
    }

    @Test("every truncation and thousands of mutations fail cleanly")
    func fuzz() {
        let bytes = encoded(Self.request)
        for cut in 0..<bytes.count {
            #expect(throws: WireError.self) { try bytes[..<cut].withUnsafeBytes { _ = try StepRequest(decoding: $0) } }
        }
        var state: UInt64 = 1
        for _ in 0..<3000 {
            var b = bytes
            state = state &* 6364136223846793005 &+ 1442695040888963407
            let i = Int(state >> 33) % b.count
            b[i] = UInt8(truncatingIfNeeded: state >> 13)
            _ = try? b.withUnsafeBytes { try StepRequest(decoding: $0) }
        }
    }
}
