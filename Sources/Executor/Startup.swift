import ExecutorCore

/// The seed's start-up, one phase at a time over every worker, whatever runs them: the
/// driver's in-process workers (`Driver`) or rank 0 here and the others in processes
/// (`WorkerGrid`). `Startup.run` is the one place the order lives.
protocol StartupPhases {
    /// Each worker gets its context (rank, local rank, world size, rendezvous, environment).
    func initialize(_ contexts: [WorkerContext]) async throws
    func initializeDevices() async throws
    /// At most `maxConcurrent` workers load at once (nil: all).
    func loadModels(maxConcurrent: Int?) async throws
    /// KV blocks each worker can hold, in rank order.
    func availableKVBlocks() async throws -> [Int]
    func initializeCaches(blocksPerVirtualEngine: Int, virtualEngines: Int) async throws
}

enum Startup {
    /// All workers initialise, then their devices, then load with at most
    /// `maxParallelLoadingWorkers` loads at once; the KV cache is then sized to the
    /// smallest worker, one share per virtual engine. Returns the blocks per virtual engine.
    static func run(
        _ workers: some StartupPhases, contexts: [WorkerContext], maxParallelLoadingWorkers: Int?, virtualEngines: Int
    ) async throws -> Int {
        try await workers.initialize(contexts)
        try await workers.initializeDevices()
        try await workers.loadModels(maxConcurrent: maxParallelLoadingWorkers)
        let blocks = try await workers.availableKVBlocks()
        let smallest = blocks.min() ?? 0
        guard smallest >= virtualEngines else {
            let rank = blocks.firstIndex(of: smallest).map { " (rank \($0))" } ?? ""
            throw ExecutorError("the smallest worker\(rank) holds \(smallest) KV blocks; \(virtualEngines) virtual engines need at least one each")
        }
        let perEngine = smallest / virtualEngines
        try await workers.initializeCaches(blocksPerVirtualEngine: perEngine, virtualEngines: virtualEngines)
        return perEngine
    }
}
