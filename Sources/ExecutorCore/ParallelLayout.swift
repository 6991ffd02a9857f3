/// The tensor-parallel × pipeline-parallel grid of one model: `tensorParallel` ranks per
/// stage, `pipelineParallel` stages. Global rank = stage · tensorParallel + tensor rank (the
/// seed's `pp_tp_workers` order), so each stage's ranks are contiguous.
public struct ParallelLayout: Sendable, Hashable, CustomStringConvertible {
    public let tensorParallel: Int
    public let pipelineParallel: Int

    /// - Throws: when either size is below 1.
    public init(tensorParallel: Int = 1, pipelineParallel: Int = 1) throws(LayoutError) {
        guard tensorParallel >= 1 else { throw LayoutError("tensor-parallel size must be ≥ 1, got \(tensorParallel)") }
        guard pipelineParallel >= 1 else { throw LayoutError("pipeline-parallel size must be ≥ 1, got \(pipelineParallel)") }
        self.tensorParallel = tensorParallel
        self.pipelineParallel = pipelineParallel
    }

    public static let single = try! ParallelLayout()

    public var worldSize: Int { tensorParallel * pipelineParallel }

    /// The pipeline stage of a global rank.
    public func stage(ofRank rank: Int) -> Int { rank / tensorParallel }

    /// The rank within its tensor-parallel group.
    public func tensorRank(ofRank rank: Int) -> Int { rank % tensorParallel }

    public func rank(stage: Int, tensorRank: Int) -> Int { stage * tensorParallel + tensorRank }

    /// Global ranks of one stage.
    public func ranks(ofStage stage: Int) -> Range<Int> { (stage * tensorParallel)..<((stage + 1) * tensorParallel) }

    public var description: String { "TP \(tensorParallel) × PP \(pipelineParallel)" }
}

/// A parallel layout that cannot exist.
public struct LayoutError: Error, Equatable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
