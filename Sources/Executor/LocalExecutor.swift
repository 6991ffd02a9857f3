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
    /// KV blocks of every worker (the smallest worker's count).
    public let kvBlocks: Int
    /// Requests preempted (and recomputed) so far because KV blocks ran out.
    public private(set) var preemptions = 0
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
            kvBlocks = await driver.blocksPerVirtualEngine
        } else {
            let grid = try WorkerGrid(modelPath: modelPath, options: options, progress: progress)
            loaded = grid.rank0.loaded!
            backend = .grid(grid)
            kvBlocks = grid.kvBlocks
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

    /// Generates for every request through one `Scheduler` per virtual engine (requests
    /// dealt round-robin, each engine with an equal share of the KV blocks and one step in
    /// flight); returns the results in request order. When blocks run out, the newest
    /// running request is preempted and recomputed later, never dropped.
    /// - Throws: before any step when a request is invalid; when a worker fails.
    public func generate(
        batch requests: [BatchRequest], virtualEngines: Int, maxSequences: Int = 256
    ) async throws(GenerationError) -> [GenerationResult] {
        guard virtualEngines >= 1 else { throw GenerationError("virtual engines must be ≥ 1, got \(virtualEngines)") }
        guard maxSequences >= 1 else { throw GenerationError("the most running sequences must be ≥ 1, got \(maxSequences)") }
        let blockSize = loaded.model.cache.blockSize
        let share = kvBlocks / virtualEngines
        guard share >= 1 else {
            throw GenerationError("\(kvBlocks) KV blocks cannot be shared by \(virtualEngines) virtual engines; raise --kv-cache-mb")
        }
        // A request may grow to what one engine's share holds.
        let contextLimit = min(loaded.model.maxContext, share * blockSize)
        var schedulers = (0..<virtualEngines).map { v in
            Scheduler(
                maxSequences: maxSequences, maxBatchTokens: loaded.model.maxBatchTokens,
                allocator: BlockAllocator(blockCount: share, blockSize: blockSize, firstBlock: Int32(v * share)))
        }
        var runs: [UInt64: SequenceRun] = [:]
        var order: [UInt64] = []
        for (i, request) in requests.enumerated() {
            try check(request, contextLimit: contextLimit)
            let id = nextSequenceID
            nextSequenceID += 1
            runs[id] = SequenceRun(id: id, request: request, tokenizer: tokenizer)
            order.append(id)
            schedulers[i % virtualEngines].add(id: id, prompt: request.promptTokens, parameters: request.parameters)
        }
        var inFlight: [Int] = []  // the virtual engine of each step in flight, oldest first
        do {
            defer {
                // Whatever happens, every request's state is dropped by the next step.
                for v in schedulers.indices {
                    preemptions += schedulers[v].preemptionCount
                    for entry in schedulers[v].running + schedulers[v].waiting { schedulers[v].finish(entry.id) }
                    finished += schedulers[v].takeFinishedIDs()
                }
            }
            for v in schedulers.indices where try await submitStep(&schedulers[v], engine: v) { inFlight.append(v) }
            while !inFlight.isEmpty {
                let v = inFlight.removeFirst()
                let output = try receive()
                for sample in output.samples {
                    guard var run = runs[sample.sequenceID] else {
                        throw GenerationError("step \(output.step) returned a sample for unknown sequence \(sample.sequenceID)")
                    }
                    run.accept(sample, contextLimit: contextLimit)
                    runs[sample.sequenceID] = run
                    schedulers[v].append(sample.token, to: run.id)
                    if run.isDone { schedulers[v].finish(run.id) }
                }
                if try await submitStep(&schedulers[v], engine: v) { inFlight.append(v) }
            }
        } catch {
            // Steps still in flight belong to this batch: collect them so the next call
            // starts clean (after a worker failure they fail at once).
            for _ in inFlight { _ = try? receive() }
            throw error as? GenerationError ?? GenerationError("\(error)")
        }
        return order.map { runs[$0]!.result(loadSeconds: loadSeconds) }
    }

    /// Checks a request before anything runs.
    private func check(_ request: BatchRequest, contextLimit: Int) throws(GenerationError) {
        do { try request.parameters.validate() } catch { throw GenerationError(error.description) }
        let vocabulary = loaded.configuration.vocabularySize
        guard !request.promptTokens.isEmpty else { throw GenerationError("the prompt is empty: expected at least one token") }
        for id in request.promptTokens where id < 0 || Int(id) >= vocabulary {
            throw GenerationError("prompt token \(id) is outside the vocabulary 0..<\(vocabulary)")
        }
        guard request.promptTokens.count < contextLimit else {
            throw GenerationError(
                "the prompt has \(request.promptTokens.count) tokens; this model instance holds at most \(contextLimit - 1) prompt tokens "
                    + "(context \(loaded.configuration.contextLength), KV cache \(loaded.model.cache.capacityTokens) tokens)")
        }
    }

    /// Schedules and submits one virtual engine's next step; false when it has nothing to run.
    private func submitStep(_ scheduler: inout Scheduler, engine: Int) async throws -> Bool {
        guard let sequences = scheduler.schedule() else {
            if scheduler.hasWork {
                throw GenerationError(
                    "virtual engine \(engine) cannot schedule its \(scheduler.running.count + scheduler.waiting.count) requests "
                        + "with \(scheduler.allocator.freeBlocks) of \(scheduler.allocator.blockCount) KV blocks free")
            }
            return false
        }
        let request = StepRequest(
            step: nextStep, virtualEngine: Int32(engine), sequences: sequences,
            finishedRequestIDs: finished + scheduler.takeFinishedIDs())
        nextStep += 1
        finished.removeAll()
        try await submit(request)
        return true
    }
}

/// One request's output as it is generated: tokens, log-probabilities, text with stop
/// strings, timings, and when it is done.
struct SequenceRun {
    let id: UInt64
    let prompt: [Int32]
    let parameters: SamplingParameters
    let onText: (String) -> Void
    let stopIDs: Set<Int32>
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

    /// Takes a sampled token; decides whether the request is done (a stop token or string,
    /// `maxTokens`, or a sequence as long as `contextLimit`).
    mutating func accept(_ sample: StepOutput.Sample, contextLimit: Int) {
        if firstToken == nil { firstToken = MonotonicClock.now() }
        generated.append(sample.token)
        if parameters.logprobs > 0 { logprobs.append(sample.top) }
        if stopIDs.contains(sample.token) || text.append(sample.token, emit: onText) {
            finish = .stop
        } else if generated.count < parameters.maxTokens && prompt.count + generated.count < contextLimit {
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
