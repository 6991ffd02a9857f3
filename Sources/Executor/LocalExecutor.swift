public import ExecutorCore
public import ModelRunner
import Launchers

/// Runs requests through the executor, one `StepRequest` per step: at TP × PP = 1 on one
/// in-process `ModelWorker` under a `Driver`; otherwise over a `WorkerGrid`, with rank 0 in
/// this process and every other rank of the grid in a worker process.
///
/// It turns prompts into tokens, keeps each request's KV block table, and batches the
/// running requests of each virtual engine into one step: decodes first, then prompt
/// chunks up to `maxBatchTokens` (chunked prefill). With `virtualEngines` V, requests are
/// dealt round-robin to V groups whose steps are in flight at once, so P pipeline stages
/// work on P batches. A request stops on end-of-generation tokens, stop tokens, stop
/// strings, `maxTokens` or a full context.
public final class LocalExecutor {
    public let loaded: LoadedModel
    public let loadSeconds: Double
    private let backend: Backend

    enum Backend {
        case driver(Driver)
        case grid(WorkerGrid)
    }
    private var allocator: BlockAllocator
    private var nextSequenceID: UInt64 = 1
    private var nextStep: UInt64 = 0
    /// Requests that ended since the last step: the next step tells the workers.
    private var finished: [UInt64] = []
    /// Outputs of steps the driver backend ran at submission, not yet received.
    private var driverOutputs: [StepOutput] = []

    /// Loads the model into its worker(s) and starts the driver.
    public init(modelPath: String, options: ExecutorOptions, progress: @escaping @Sendable (Double) -> Void = { _ in }) async throws {
        let start = MonotonicClock.now()
        let layout = try options.layout
        if layout.worldSize == 1 {
            let worker = ModelWorker(modelPath: modelPath, options: options.modelOptions, progress: progress)
            let driver = Driver(layout: .single, workers: [worker], maxParallelLoadingWorkers: 1, virtualEngines: 1)
            try await driver.start(contexts: [
                WorkerContext(rank: 0, localRank: 0, worldSize: 1, layout: .single, rendezvous: "in-process", environment: [:]),
            ])
            loaded = worker.loaded!
            backend = .driver(driver)
            allocator = BlockAllocator(blockCount: await driver.blocksPerVirtualEngine, blockSize: loaded.model.cache.blockSize)
        } else {
            let grid = try WorkerGrid(modelPath: modelPath, options: options, progress: progress)
            loaded = grid.rank0.loaded!
            backend = .grid(grid)
            allocator = BlockAllocator(blockCount: grid.kvBlocks, blockSize: loaded.model.cache.blockSize)
        }
        loadSeconds = MonotonicClock.now() - start
    }

    /// Stops the workers. Idempotent.
    public func shutdown() async {
        switch backend {
        case let .driver(driver): await driver.shutdown()
        case let .grid(grid): await grid.shutdown()
        }
    }

    /// Where the driver's time went, when the model runs over a grid of processes.
    public var gridStatistics: GridStatistics? {
        if case let .grid(grid) = backend { grid.statistics } else { nil }
    }

    /// The worker processes' ids, by rank (1, 2, …); empty when the model runs in this process.
    public var workerPIDs: [Int32] {
        if case let .grid(grid) = backend { grid.workers.processes.map(\.pid) } else { [] }
    }

    /// Sends a step on its way (the driver backend runs it at once).
    private func submit(_ request: StepRequest) async throws {
        switch backend {
        case let .driver(driver): driverOutputs.append(try await driver.execute(request))
        case let .grid(grid): try grid.submit(request)
        }
    }

    /// The output of the oldest step submitted and not yet received.
    private func receive() throws -> StepOutput {
        switch backend {
        case .driver: driverOutputs.removeFirst()
        case let .grid(grid): try grid.receive()
        }
    }

    public var tokenizer: Tokenizer { loaded.tokenizer }

    /// Token ids of a prompt.
    public func tokens(for prompt: Prompt) throws(GenerationError) -> [Int32] {
        switch prompt {
        case let .tokens(ids):
            for id in ids where id < 0 || Int(id) >= tokenizer.vocabularySize {
                throw GenerationError("prompt token \(id) is outside the vocabulary 0..<\(tokenizer.vocabularySize)")
            }
            return ids
        case let .raw(text):
            return tokenizer.encode(text, parseSpecial: true)
        case let .chat(user, system):
            guard let template = loaded.chatTemplate else {
                throw GenerationError("the model file has no chat template (tokenizer.chat_template); use --raw")
            }
            switch template {
            case let .failure(error):
                throw GenerationError(error.description)
            case let .success(template):
                var messages: [ChatMessage] = []
                if let system { messages.append(ChatMessage(role: "system", content: system)) }
                messages.append(ChatMessage(role: "user", content: user))
                return tokenizer.encode(template.render(messages), parseSpecial: true)
            }
        }
    }

    /// Generates for `promptTokens`, calling `onText` with each piece of text as soon as it
    /// is final (never inside a UTF-8 character or a possible stop string).
    public func generate(
        promptTokens: [Int32], parameters: SamplingParameters, onText: @escaping (String) -> Void = { _ in }
    ) async throws(GenerationError) -> GenerationResult {
        try await generate(batch: [.init(promptTokens: promptTokens, parameters: parameters, onText: onText)], virtualEngines: 1)[0]
    }

    /// One request of a batch.
    public struct BatchRequest {
        public var promptTokens: [Int32]
        public var parameters: SamplingParameters
        public var onText: (String) -> Void

        public init(promptTokens: [Int32], parameters: SamplingParameters, onText: @escaping (String) -> Void = { _ in }) {
            self.promptTokens = promptTokens
            self.parameters = parameters
            self.onText = onText
        }
    }

    /// Generates for every request, batching the running ones of each virtual engine into
    /// one step; returns the results in request order.
    /// - Throws: before any step when a request is invalid; when the KV cache cannot hold
    ///   the running requests; when a worker fails.
    public func generate(batch requests: [BatchRequest], virtualEngines: Int) async throws(GenerationError) -> [GenerationResult] {
        guard virtualEngines >= 1 else { throw GenerationError("virtual engines must be ≥ 1, got \(virtualEngines)") }
        var runs: [SequenceRun] = []
        for request in requests {
            try check(request)
            runs.append(SequenceRun(id: nextSequenceID, request: request, tokenizer: tokenizer))
            nextSequenceID += 1
        }
        // Whatever happens, every request's blocks go back and its state is dropped.
        defer {
            for i in runs.indices where !runs[i].released {
                allocator.release(&runs[i].table)
                finished.append(runs[i].id)
            }
        }
        let engines = (0..<virtualEngines).map { v in Array(stride(from: v, to: runs.count, by: virtualEngines)) }
        var inFlight: [(engine: Int, sequences: [Int])] = []
        do {
            for engine in engines.indices {
                if let members = try await submitStep(engines[engine], engine: engine, runs: &runs) {
                    inFlight.append((engine, members))
                }
            }
            while !inFlight.isEmpty {
                let (engine, members) = inFlight.removeFirst()
                let output = try receive()
                var samples = output.samples.makeIterator()
                for i in members where runs[i].expectsSample {
                    guard let sample = samples.next(), sample.sequenceID == runs[i].id else {
                        throw GenerationError("step \(output.step) returned samples that do not match its sequences")
                    }
                    runs[i].accept(sample, maxContext: loaded.model.maxContext)
                    if runs[i].isDone {
                        allocator.release(&runs[i].table)
                        runs[i].released = true
                        finished.append(runs[i].id)
                    }
                }
                if let members = try await submitStep(engines[engine], engine: engine, runs: &runs) {
                    inFlight.append((engine, members))
                }
            }
        } catch {
            // Steps still in flight belong to this batch: collect them so the next call
            // starts clean (after a worker failure they fail at once).
            for _ in inFlight { _ = try? receive() }
            throw error as? GenerationError ?? GenerationError("\(error)")
        }
        return runs.map { $0.result(loadSeconds: loadSeconds) }
    }

    /// Checks a request before anything runs.
    private func check(_ request: BatchRequest) throws(GenerationError) {
        do { try request.parameters.validate() } catch { throw GenerationError(error.description) }
        let model = loaded.model
        let vocabulary = loaded.configuration.vocabularySize
        guard !request.promptTokens.isEmpty else { throw GenerationError("the prompt is empty: expected at least one token") }
        for id in request.promptTokens where id < 0 || Int(id) >= vocabulary {
            throw GenerationError("prompt token \(id) is outside the vocabulary 0..<\(vocabulary)")
        }
        guard request.promptTokens.count < model.maxContext else {
            throw GenerationError(
                "the prompt has \(request.promptTokens.count) tokens; this model instance holds at most \(model.maxContext - 1) prompt tokens "
                    + "(context \(loaded.configuration.contextLength), KV cache \(model.cache.capacityTokens) tokens)")
        }
    }

    /// Builds and submits the next step of one virtual engine: every decoding request's
    /// token, then prompt chunks while the token budget lasts. Returns the requests in the
    /// step, or nil when the engine has nothing left to run.
    private func submitStep(_ members: [Int], engine: Int, runs: inout [SequenceRun]) async throws -> [Int]? {
        var budget = loaded.model.maxBatchTokens
        var sequences: [StepRequest.Sequence] = []
        var included: [Int] = []
        for decoding in [true, false] {
            for i in members where !runs[i].isDone && runs[i].isDecoding == decoding && budget > 0 {
                let (tokens, position, sample) = runs[i].nextChunk(budget: budget)
                guard allocator.reserve(&runs[i].table, tokens: position + tokens.count) else {
                    throw GenerationError(
                        "the KV cache is full: \(position + tokens.count) tokens of request \(runs[i].id) need "
                            + "\(allocator.blocks(forTokens: position + tokens.count)) blocks and \(allocator.freeBlocks) of \(allocator.blockCount) are free; "
                            + "raise --kv-cache-mb or run fewer requests at once")
                }
                runs[i].advance(by: tokens.count, sampling: sample)
                sequences.append(.init(
                    id: runs[i].id, tokens: tokens, startPosition: Int32(position), blockTable: runs[i].table, sample: sample,
                    sampling: runs[i].parameters))
                included.append(i)
                budget -= tokens.count
            }
        }
        guard !sequences.isEmpty else { return nil }
        let request = StepRequest(step: nextStep, virtualEngine: Int32(engine), sequences: sequences, finishedRequestIDs: finished)
        nextStep += 1
        finished.removeAll()
        try await submit(request)
        return included
    }
}

/// One request's progress through generation: prompt chunks, then one token per step.
struct SequenceRun {
    let id: UInt64
    let prompt: [Int32]
    let parameters: SamplingParameters
    let onText: (String) -> Void
    let stopIDs: Set<Int32>
    var table: [Int32] = []
    var released = false
    /// Tokens whose KV is (or is being) computed.
    private(set) var position = 0
    /// Whether the step in flight samples a token for this request.
    private(set) var expectsSample = false
    private(set) var isDone = false
    private var generated: [Int32] = []
    private var logprobs: [[TokenLogprob]] = []
    private var finish = FinishReason.length
    private var text: TextAccumulator
    private let start = MonotonicClock.now()
    private var firstToken: Double?
    private var end: Double?

    init(id: UInt64, request: LocalExecutor.BatchRequest, tokenizer: Tokenizer) {
        self.id = id
        prompt = request.promptTokens
        parameters = request.parameters
        onText = request.onText
        stopIDs = Set(request.parameters.stopTokenIDs).union(request.parameters.ignoreEndOfGeneration ? [] : tokenizer.endOfGenerationIDs)
        text = TextAccumulator(stopStrings: request.parameters.stopStrings, tokenizer: tokenizer)
    }

    var isDecoding: Bool { position >= prompt.count }

    /// The tokens of the next step (a prompt chunk of at most `budget`, or the last sampled
    /// token), their first position, and whether the step samples.
    func nextChunk(budget: Int) -> (tokens: [Int32], position: Int, sample: Bool) {
        if isDecoding { return ([generated.last!], position, true) }
        let end = min(prompt.count, position + budget)
        return (Array(prompt[position..<end]), position, end == prompt.count)
    }

    mutating func advance(by tokens: Int, sampling: Bool) {
        position += tokens
        expectsSample = sampling
    }

    /// Takes a sampled token; decides whether the request is done.
    mutating func accept(_ sample: StepOutput.Sample, maxContext: Int) {
        expectsSample = false
        if firstToken == nil { firstToken = MonotonicClock.now() }
        generated.append(sample.token)
        if parameters.logprobs > 0 { logprobs.append(sample.top) }
        if stopIDs.contains(sample.token) || text.append(sample.token, emit: onText) {
            finish = .stop
        } else if generated.count < parameters.maxTokens && position + 1 < maxContext {
            return
        }
        isDone = true
        end = MonotonicClock.now()
        text.finish(emit: onText)
    }

    func result(loadSeconds: Double) -> GenerationResult {
        let first = firstToken ?? start, last = end ?? first
        return GenerationResult(
            promptTokens: prompt, tokens: generated, text: text.text, finishReason: finish, logprobs: logprobs,
            timings: .init(
                loadSeconds: loadSeconds, prefillSeconds: first - start, decodeSeconds: last - first,
                prefillTokens: prompt.count, decodeTokens: max(0, generated.count - 1)))
    }
}

/// Generated text with stop strings: holds back text that might still become a stop string.
struct TextAccumulator {
    let stopStrings: [String]
    private(set) var text = ""
    private var decoder: StreamingDecoder
    /// UTF-8 length of the text already handed to the caller.
    private var emitted = 0
    /// Characters that may still be the start of a stop string.
    private let holdBack: Int

    init(stopStrings: [String], tokenizer: Tokenizer) {
        self.stopStrings = stopStrings
        decoder = StreamingDecoder(tokenizer: tokenizer)
        holdBack = max(0, (stopStrings.map(\.count).max() ?? 0) - 1)
    }

    /// Adds a token's text; returns true when a stop string matched (text is cut before it).
    mutating func append(_ token: Int32, emit: (String) -> Void) -> Bool {
        let piece = decoder.append(token)
        guard !piece.isEmpty else { return false }
        // A match can start at most `holdBack` characters before the new piece.
        let searchFromOffset = text.utf8.distance(
            from: text.startIndex, to: text.index(text.endIndex, offsetBy: -min(text.count, holdBack)))
        text += piece
        let searchFrom = text.utf8.index(text.startIndex, offsetBy: searchFromOffset)
        for stop in stopStrings {
            if let match = text.firstRange(of: stop, from: searchFrom) {
                text = String(text[..<match.lowerBound])
                flush(upTo: text.utf8.count, emit: emit)
                return true
            }
        }
        let safe = text.index(text.endIndex, offsetBy: -min(text.count, holdBack))
        flush(upTo: text.utf8.distance(from: text.startIndex, to: safe), emit: emit)
        return false
    }

    mutating func finish(emit: (String) -> Void) {
        text += decoder.finish()
        flush(upTo: text.utf8.count, emit: emit)
    }

    private mutating func flush(upTo end: Int, emit: (String) -> Void) {
        guard end > emitted else { return }
        let utf8 = text.utf8
        emit(String(text[utf8.index(utf8.startIndex, offsetBy: emitted)..<utf8.index(utf8.startIndex, offsetBy: end)]))
        emitted = end
    }
}

extension String {
    /// First occurrence of `needle` at or after `start` (character-wise).
    func firstRange(of needle: String, from start: String.Index) -> Range<String.Index>? {
        let haystack = self[start...]
        guard let first = needle.first else { return nil }
        var i = haystack.startIndex
        while i < haystack.endIndex {
            if haystack[i] == first && haystack[i...].hasPrefix(needle) {
                return i..<haystack.index(i, offsetBy: needle.count)
            }
            i = haystack.index(after: i)
        }
        return nil
    }
}
