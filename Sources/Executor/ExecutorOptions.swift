import ModelRunner
import Kernels
public import ExecutorCore
#if canImport(Glibc)
import Glibc
#endif

/// How to run a model: the knobs the command line exposes.
public struct ExecutorOptions: Sendable, Equatable {
    /// Threads of the worker (the caller's thread included).
    public var threads: Int
    /// Float32 activations on dequantized weights instead of 8-bit activations.
    public var precise: Bool
    /// Memory for the KV cache, in MiB.
    public var kvCacheMiB: Int
    /// Most tokens per forward pass.
    public var maxBatchTokens: Int
    /// Tensor-parallel ranks per pipeline stage.
    public var tensorParallel: Int
    /// Pipeline stages. Rank 0 (stage 0, tensor rank 0) runs in this process, every other
    /// rank of the TP × PP grid in a worker process.
    public var pipelineParallel: Int
    /// Layers per pipeline stage; nil: an even split (or a balanced one, below).
    public var pipelineLayers: [Int]?
    /// Without explicit `pipelineLayers`, split the layers so that the stages' work is
    /// even, counting the output head on the last stage (`PipelineStage.balancedLayerCounts`).
    public var balancedPipeline = false
    /// Most worker processes loading their part of the model at once (nil: all at once).
    public var maxParallelLoadingWorkers: Int?

    /// How tensor-parallel ranks exchange activations.
    public var collectives: CollectiveTransport = .sharedMemory

    public enum CollectiveTransport: String, Sendable, Equatable, CaseIterable {
        /// One shared-memory segment per group: ranks on one machine.
        case sharedMemory = "shm"
        /// A TCP ring per group, authenticated by the instance secret: ranks on any machines.
        case tcp
        /// MPI's own collectives: every rank a process of one MPI world (under mpirun).
        case mpi
    }

    /// The binary whose `worker` subcommand runs the worker processes (default: this
    /// process's own executable).
    public var workerExecutable: String?

    /// The address workers on other machines reach the driver at (`--host-ip`, or
    /// `COHORT_HOST_IP`); nil: loopback, every worker on this machine.
    public var hostIP: String?

    /// A fixed step deadline in seconds (`--step-timeout`); nil: it follows the measured
    /// step times (`StepDeadline`).
    public var stepTimeout: Double?

    public init(
        threads: Int = ExecutorOptions.defaultThreads, precise: Bool = false, kvCacheMiB: Int = 256, maxBatchTokens: Int = 512,
        tensorParallel: Int = 1, pipelineParallel: Int = 1, pipelineLayers: [Int]? = nil, balancedPipeline: Bool = false,
        workerExecutable: String? = nil
    ) {
        self.balancedPipeline = balancedPipeline
        self.workerExecutable = workerExecutable
        self.threads = threads
        self.precise = precise
        self.kvCacheMiB = kvCacheMiB
        self.maxBatchTokens = maxBatchTokens
        self.tensorParallel = tensorParallel
        self.pipelineParallel = pipelineParallel
        self.pipelineLayers = pipelineLayers
    }

    /// The TP × PP grid.
    public var layout: ParallelLayout {
        get throws(LayoutError) { try ParallelLayout(tensorParallel: tensorParallel, pipelineParallel: pipelineParallel) }
    }

    /// One thread per online CPU.
    public static var defaultThreads: Int { max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }

    /// What one rank of pipeline stage `stage` loads: a KV cache of all the blocks
    /// `kvCacheMiB` holds (the start-up then agrees on the smallest rank's count).
    func modelOptions(stage: Int) -> ModelOptions {
        ModelOptions(
            threads: threads, mode: precise ? .precise : .fast, kvCacheBytes: kvCacheMiB << 20, maxBatchTokens: maxBatchTokens,
            pipelineStage: stage, pipelineStages: pipelineParallel, pipelineLayers: pipelineLayers)
    }
}

/// Where the reference model (SmolLM2-135M-Instruct, Q4_1) is cached.
public enum ReferenceModel {
    public static let fileName = "SmolLM2-135M-Instruct.Q4_1.gguf"
    public static let byteCount = 98_362_432
    public static let sha256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

    /// `$COHORT_CACHE`, or `~/.cache/cohort`.
    public static var cacheDirectory: String {
        if let dir = getenv("COHORT_CACHE"), !String(cString: dir).isEmpty { return String(cString: dir) }
        let home = getenv("HOME").map { String(cString: $0) } ?? "."
        return home + "/.cache/cohort"
    }

    public static var defaultPath: String { cacheDirectory + "/" + fileName }

    /// The command that fetches the model into the cache.
    public static let fetchCommand = "scripts/fetch-model.sh"

    /// The second reference model, Qwen2.5-Coder-0.5B-Instruct (`qwen2`, a Q5_0/Q8_0/Q4_K/Q6_K
    /// mix), fetched by `scripts/fetch-qwen.sh`.
    public static var qwenPath: String { cacheDirectory + "/Qwen2.5-Coder-0.5B-Instruct.gguf" }
}
