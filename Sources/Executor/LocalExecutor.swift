public import ExecutorCore
public import ModelRunner
import Launchers

/// The executor as its callers see it: the model loaded into its worker(s) and steps run
/// through them, one `StepRequest` at a time: at TP × PP = 1 on one in-process
/// `ModelWorker` under a `Driver`; otherwise over a `WorkerGrid`, with rank 0 in this
/// process and every other rank of the grid in a worker process.
///
/// `submit` sends a step on its way and `receive` returns the oldest step's output, so a
/// caller (the engine) keeps one step in flight per virtual engine and P pipeline stages
/// work on P steps at once. What goes into each step is the engine's business.
public final class LocalExecutor {
    public let loaded: LoadedModel
    public let loadSeconds: Double
    private let backend: Backend

    enum Backend {
        /// The driver owns the worker's life cycle; steps go straight to the worker.
        case driver(Driver, ModelWorker)
        case grid(WorkerGrid)
    }
    /// KV blocks of every worker (the smallest worker's count).
    public let kvBlocks: Int
    private var nextStep: UInt64 = 0
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
            backend = .driver(driver, worker)
            kvBlocks = await driver.blocksPerVirtualEngine
        } else {
            let grid = try await WorkerGrid(modelPath: modelPath, options: options, progress: progress)
            loaded = grid.rank0.loaded!
            backend = .grid(grid)
            kvBlocks = grid.kvBlocks
        }
        loadSeconds = MonotonicClock.now() - start
    }

    /// Stops the workers. Idempotent. Runs on the caller's actor (the engine's).
    public nonisolated(nonsending) func shutdown() async {
        switch backend {
        case let .driver(driver, _): await driver.shutdown()
        case let .grid(grid): await grid.shutdown()
        }
    }

    /// Where the driver's time went, when the model runs over a grid of processes.
    public var gridStatistics: GridStatistics? {
        if case let .grid(grid) = backend { grid.statistics } else { nil }
    }

    /// The most worker processes that loaded at once (nil without a limit or without workers).
    public var mostConcurrentWorkerLoads: Int? {
        if case let .grid(grid) = backend { grid.mostConcurrentWorkerLoads } else { nil }
    }

    /// The worker processes' ids, by rank (1, 2, …); empty when the model runs in this process.
    public var workerPIDs: [Int32] {
        if case let .grid(grid) = backend { grid.workers.processes.map(\.pid) } else { [] }
    }

    /// Sends a step on its way, numbering it; returns once rank 0's part is done (the
    /// in-process backend runs the whole step).
    public func submit(virtualEngine: Int, sequences: [StepRequest.Sequence], finishedRequestIDs: [UInt64]) throws {
        let request = StepRequest(
            step: nextStep, virtualEngine: Int32(virtualEngine), sequences: sequences, finishedRequestIDs: finishedRequestIDs)
        switch backend {
        case let .driver(_, worker):
            worker.setLooping(true)  // after an idle stop, as the seed's execute_model does
            driverOutputs.append(try worker.executeNow(request))
        case let .grid(grid): try grid.submit(request)
        }
        // Only a step that went out takes a number: workers expect them without gaps.
        nextStep += 1
    }

    /// Takes the workers out of their execution loop while there is nothing to run (the
    /// seed's `stop_remote_worker_execution_loop`): they stay up and answer health checks;
    /// the next `submit` puts them back. Idempotent.
    /// - Throws: with steps still in flight, or when a worker fails to answer.
    public func stopExecutionLoop() throws {
        switch backend {
        case let .driver(_, worker):
            guard driverOutputs.isEmpty else {
                throw ExecutorError("the execution loop stops between steps: \(driverOutputs.count) step(s) not yet received")
            }
            worker.setLooping(false)
        case let .grid(grid): try grid.stopExecutionLoop()
        }
    }

    /// Whether the workers are in their execution loop.
    public var isExecutionLoopRunning: Bool {
        switch backend {
        case let .driver(_, worker): worker.isLooping
        case let .grid(grid): grid.isLooping
        }
    }

    /// The output of the oldest step submitted and not yet received.
    public func receive() throws -> StepOutput {
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
            var messages: [ChatMessage] = []
            if let system { messages.append(ChatMessage(role: "system", content: system)) }
            messages.append(ChatMessage(role: "user", content: user))
            return try tokens(for: .messages(messages))
        case let .messages(messages):
            guard let template = loaded.chatTemplate else {
                throw GenerationError("the model file has no chat template (tokenizer.chat_template); use --raw")
            }
            switch template {
            case let .failure(error):
                throw GenerationError(error.description)
            case let .success(template):
                return tokenizer.encode(template.render(messages), parseSpecial: true)
            }
        }
    }
}
