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
