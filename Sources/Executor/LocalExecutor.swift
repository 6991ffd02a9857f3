public import ExecutorCore
public import ModelRunner
import Collectives

/// Runs requests through the executor, one `StepRequest` per step: at TP 1 on one
/// in-process `ModelWorker` under a `Driver`; at TP > 1 with rank 0's shard in this process
/// and the other ranks' shards in worker processes (`WorkerGroup`), joined by a
/// shared-memory communicator: each step is broadcast, rank 0 runs its part (its
/// collectives meet the workers'), then the workers' replies are gathered.
///
/// It turns prompts into tokens, keeps each request's KV block table, prefills prompts in
/// chunks of at most `maxBatchTokens`, then decodes one token per step (the worker samples
/// with the request's parameters), and stops on end-of-generation tokens, stop tokens,
/// stop strings, `maxTokens` or a full context.
public final class LocalExecutor {
    public let loaded: LoadedModel
    public let loadSeconds: Double
    private let backend: Backend

    enum Backend {
        case driver(Driver)
        case tensorParallel(rank0: ModelWorker, workers: WorkerGroup, communicator: SharedMemoryCommunicator)
    }
    private var allocator: BlockAllocator
    private var nextSequenceID: UInt64 = 1
    private var nextStep: UInt64 = 0
    /// Requests that ended since the last step: the next step tells the worker.
    private var finished: [UInt64] = []

    /// Loads the model into a worker and starts the driver.
    public init(modelPath: String, options: ExecutorOptions, progress: @escaping @Sendable (Double) -> Void = { _ in }) async throws {
        let start = MonotonicClock.now()
        let tp = options.tensorParallel
        guard tp >= 1 else { throw GenerationError("tensor-parallel size must be ≥ 1, got \(tp)") }
        if tp == 1 {
            let worker = ModelWorker(modelPath: modelPath, options: options.modelOptions, progress: progress)
            let driver = Driver(layout: .single, workers: [worker], maxParallelLoadingWorkers: 1, virtualEngines: 1)
            try await driver.start(contexts: [
                WorkerContext(rank: 0, localRank: 0, worldSize: 1, layout: .single, rendezvous: "in-process", environment: [:]),
            ])
            loaded = worker.loaded!
            backend = .driver(driver)
            allocator = BlockAllocator(blockCount: await driver.blocksPerVirtualEngine, blockSize: loaded.model.cache.blockSize)
        } else {
            // Check the layout before any process starts.
            let file = try GGUFFile(path: modelPath)
            var configuration = try LlamaConfiguration(file: file, architecture: try file.string("general.architecture"))
            _ = try LlamaWeights(file: file, configuration: &configuration)
            _ = try TensorShard.plan(configuration, rank: 0, ranks: tp)
            let communicator = try SharedMemoryCommunicator.create(ranks: tp, capacity: 1 << 18)
            let workers: WorkerGroup
            do {
                workers = try WorkerGroup(workers: tp - 1, configuration: .init(stepTimeout: 120)) { index in
                    WorkerProcess.ModelShard(path: modelPath, options: options, tensorRank: index + 1, communicator: communicator.name).arguments
                }
            } catch {
                communicator.close()
                throw error
            }
            communicator.unlinkName()
            let worker = ModelWorker(modelPath: modelPath, options: options.modelOptions, group: communicator, progress: progress)
            do { try worker.loadNow() } catch {
                workers.shutdown()
                communicator.close()
                throw error
            }
            loaded = worker.loaded!
            backend = .tensorParallel(rank0: worker, workers: workers, communicator: communicator)
            // Rank 0 holds the most KV heads (extra heads go to the first ranks): the fewest blocks.
            allocator = BlockAllocator(blockCount: loaded.model.cache.blockCount, blockSize: loaded.model.cache.blockSize)
        }
        loadSeconds = MonotonicClock.now() - start
    }

    /// Stops the workers. Idempotent.
    public func shutdown() async {
        switch backend {
        case let .driver(driver):
            await driver.shutdown()
        case let .tensorParallel(rank0, workers, communicator):
            workers.shutdown()
            await rank0.shutdown()
            communicator.close()
        }
    }

    private func execute(_ request: StepRequest) async throws -> StepOutput {
        switch backend {
        case let .driver(driver):
            return try await driver.execute(request)
        case let .tensorParallel(rank0, workers, _):
            try rank0.validateNow(request)  // a bad step must not reach ranks already in their collectives
            try workers.broadcast(request)
            let output = try rank0.executeNow(request)
            _ = try workers.collect(request)
            return output
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
        promptTokens: [Int32], parameters: SamplingParameters, onText: (String) -> Void = { _ in }
    ) async throws(GenerationError) -> GenerationResult {
        do { try parameters.validate() } catch { throw GenerationError(error.description) }
        let model = loaded.model
        let vocabulary = loaded.configuration.vocabularySize
        guard !promptTokens.isEmpty else { throw GenerationError("the prompt is empty: expected at least one token") }
        for id in promptTokens where id < 0 || Int(id) >= vocabulary {
            throw GenerationError("prompt token \(id) is outside the vocabulary 0..<\(vocabulary)")
        }
        guard promptTokens.count < model.maxContext else {
            throw GenerationError(
                "the prompt has \(promptTokens.count) tokens; this model instance holds at most \(model.maxContext - 1) prompt tokens "
                    + "(context \(loaded.configuration.contextLength), KV cache \(model.cache.capacityTokens) tokens)")
        }

        let id = nextSequenceID
        nextSequenceID += 1
        var table: [Int32] = []
        defer {
            allocator.release(&table)
            finished.append(id)
        }
        let stopIDs = Set(parameters.stopTokenIDs).union(parameters.ignoreEndOfGeneration ? [] : tokenizer.endOfGenerationIDs)
        var text = TextAccumulator(stopStrings: parameters.stopStrings, tokenizer: tokenizer)

        // Prefill; the last chunk samples the first token.
        let prefillStart = MonotonicClock.now()
        var position = 0
        var sample: StepOutput.Sample?
        while position < promptTokens.count {
            let end = min(promptTokens.count, position + model.maxBatchTokens)
            sample = try await step(id, Array(promptTokens[position..<end]), at: position, table: &table,
                                    sample: end == promptTokens.count, parameters: parameters)
            position = end
        }
        let prefillSeconds = MonotonicClock.now() - prefillStart

        var generated: [Int32] = []
        var logprobs: [[TokenLogprob]] = []
        var finish = FinishReason.length
        let decodeStart = MonotonicClock.now()
        var decodeSteps = 0
        while let sampled = sample {
            generated.append(sampled.token)
            if parameters.logprobs > 0 { logprobs.append(sampled.top) }
            if stopIDs.contains(sampled.token) {
                finish = .stop
                break
            }
            if text.append(sampled.token, emit: onText) {
                finish = .stop
                break
            }
            if generated.count >= parameters.maxTokens || position + 1 >= model.maxContext { break }
            sample = try await step(id, [sampled.token], at: position, table: &table, sample: true, parameters: parameters)
            position += 1
            decodeSteps += 1
        }
        let decodeSeconds = MonotonicClock.now() - decodeStart
        text.finish(emit: onText)
        return GenerationResult(
            promptTokens: promptTokens, tokens: generated, text: text.text, finishReason: finish, logprobs: logprobs,
            timings: .init(
                loadSeconds: loadSeconds, prefillSeconds: prefillSeconds, decodeSeconds: decodeSeconds,
                prefillTokens: promptTokens.count, decodeTokens: decodeSteps))
    }

    /// One step for one sequence: reserves its KV blocks, runs the step through the driver,
    /// returns the sampled token (nil when not sampling).
    private func step(
        _ id: UInt64, _ tokens: [Int32], at position: Int, table: inout [Int32], sample: Bool, parameters: SamplingParameters
    ) async throws(GenerationError) -> StepOutput.Sample? {
        guard allocator.reserve(&table, tokens: position + tokens.count) else {
            throw GenerationError(
                "the KV cache is full: \(position + tokens.count) tokens need \(allocator.blocks(forTokens: position + tokens.count)) blocks, "
                    + "\(allocator.blockCount) exist; raise --kv-cache-mb")
        }
        let request = StepRequest(
            step: nextStep,
            sequences: [.init(id: id, tokens: tokens, startPosition: Int32(position), blockTable: table, sample: sample, sampling: parameters)],
            finishedRequestIDs: finished)
        nextStep += 1
        finished.removeAll()
        do {
            let output = try await execute(request)
            return sample ? output.samples.first : nil
        } catch {
            throw GenerationError("\(error)")
        }
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
