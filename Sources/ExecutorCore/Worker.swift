/// Where a worker stands in the grid and how it reaches its peers.
public struct WorkerContext: Sendable, Hashable {
    public var rank: Int
    public var localRank: Int
    public var worldSize: Int
    public var layout: ParallelLayout
    /// Host and port of the rendezvous (bound by rank 0, then published).
    public var rendezvous: String
    /// Variables set for the worker (`CUDA_VISIBLE_DEVICES`, `COHORT_INSTANCE_ID`, …).
    public var environment: [String: String]

    public init(rank: Int, localRank: Int, worldSize: Int, layout: ParallelLayout, rendezvous: String, environment: [String: String]) {
        self.rank = rank
        self.localRank = localRank
        self.worldSize = worldSize
        self.layout = layout
        self.rendezvous = rendezvous
        self.environment = environment
    }

    public var pipelineStage: Int { layout.stage(ofRank: rank) }
    public var isLastStage: Bool { pipelineStage == layout.pipelineParallel - 1 }
}

/// One worker of the executor: typed operations, no dispatch by method-name strings
/// (the seed's `execute_method("load_model")` becomes `loadModel()`).
///
/// Lifecycle, driven by the executor:
///
///     initialize(context)          // rank, environment, rendezvous
///     initializeDevice()
///     loadModel()                  // at most --max-parallel-loading-workers at once
///     availableKVBlocks()          // the executor takes the minimum over all workers
///     initializeCache(blocks:virtualEngines:)
///     execute(step) …              // every step; the last stage returns the output
///     stopExecutionLoop()          // idle: the worker stays up and refuses steps …
///     startExecutionLoop()         // … until started again (step numbers continue)
///     checkHealth()                // any time
///     shutdown()                   // once; idempotent
///
/// Implementations: in-process workers (threads) and proxies for worker processes.
public protocol Worker: Sendable {
    func initialize(_ context: WorkerContext) async throws
    func initializeDevice() async throws
    func loadModel() async throws
    /// KV blocks this worker can hold in the memory left after loading.
    func availableKVBlocks() async throws -> Int
    /// Allocates `blocksPerVirtualEngine` blocks for each of `virtualEngines` caches.
    func initializeCache(blocksPerVirtualEngine: Int, virtualEngines: Int) async throws
    /// Runs this worker's part of a step; the last pipeline stage returns the sampled
    /// output, the others nil.
    func execute(_ step: StepRequest) async throws -> StepOutput?
    /// Takes steps again after `stopExecutionLoop` (workers start in their loop).
    func startExecutionLoop() async throws
    /// Leaves the execution loop: the worker stays up and answers health checks, and
    /// refuses steps until `startExecutionLoop`.
    func stopExecutionLoop() async throws
    /// Throws when the worker cannot work.
    func checkHealth() async throws
    func shutdown() async
}
