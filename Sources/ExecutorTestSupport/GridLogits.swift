public import Kernels
import Collectives
import Foundation
import ModelRunner
import Synchronization

/// A model's TP × PP grid inside one process: one thread per tensor rank, joined by real
/// shared-memory communicators, stage after stage, each stage's tensor rank 0 handing its
/// hidden states to the next. Returns the logits of the last prompt token and of one decode
/// step after it, to compare grids with the whole model.
public enum GridLogits {
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    /// A model instance used by one rank's thread at a time.
    final class Rank: @unchecked Sendable {
        let loaded: LoadedModel
        var output: [Float]
        init(_ loaded: LoadedModel, outputs: Int) {
            self.loaded = loaded
            output = [Float](repeating: 0, count: outputs)
        }
    }

    public static func run(
        _ path: String, tp: Int, pp: Int, mode: NumericMode, prompt: [Int32] = [5, 77, 200, 3, 14, 15, 92, 65, 35], next: Int32 = 42,
        threads: Int = 1
    ) throws -> [[Float]] {
        let blockSize = 4, tokens = prompt.count + 1
        var communicators: [SharedMemoryCommunicator] = []
        defer { communicators.forEach { $0.close() } }
        var grid: [[Rank]] = []
        for stage in 0..<pp {
            let root = tp > 1 ? try SharedMemoryCommunicator.create(ranks: tp, capacity: 1 << 16) : nil
            if let root { communicators.append(root) }
            var ranks: [Rank] = []
            for r in 0..<tp {
                let group = try root.map { r == 0 ? $0 : try SharedMemoryCommunicator.attach(name: $0.name, rank: r) }
                if let group, r > 0 { communicators.append(group) }
                let options = ModelOptions(
                    threads: threads, mode: mode, blockSize: blockSize, maxBatchTokens: prompt.count,
                    kvBlocks: (tokens + blockSize - 1) / blockSize, pipelineStage: stage, pipelineStages: pp)
                let loaded = try LoadedModel(path: path, options: options, group: group)
                let width = stage == pp - 1 ? loaded.configuration.vocabularySize : prompt.count * loaded.configuration.hiddenSize
                ranks.append(Rank(loaded, outputs: width))
            }
            grid.append(ranks)
        }
        let table = (0..<Int32((tokens + blockSize - 1) / blockSize)).map { $0 }
        var results: [[Float]] = []
        for (chunk, start) in [(prompt, 0), ([next], prompt.count)] {
            let batch = {
                var batch = ForwardBatch()
                batch.append(chunk, startPosition: start, blockTable: table, wantLogits: true)
                return batch
            }()
            var hidden: [Float]?
            for stage in grid {
                let input = hidden
                try concurrently(stage.count) { r in
                    try stage[r].output.withUnsafeMutableBufferPointer { out in
                        if let input {
                            try input.withUnsafeBufferPointer {
                                try stage[r].loaded.model.forward(batch, hiddenStates: $0.baseAddress!, output: out.baseAddress!)
                            }
                        } else {
                            try stage[r].loaded.model.forward(batch, hiddenStates: nil, output: out.baseAddress!)
                        }
                    }
                }
                hidden = stage[0].output
            }
            results.append(hidden!)
        }
        return results
    }

    /// Runs `body(0..<n)` on n threads at once (collectives need every rank running).
    static func concurrently(_ n: Int, _ body: @escaping @Sendable (Int) throws -> Void) throws {
        let errors = Mutex<[String]>([])
        let done = Mutex(0)
        for i in 0..<n {
            Thread {
                defer { done.withLock { $0 += 1 } }
                do { try body(i) } catch { errors.withLock { $0.append("rank \(i): \(error)") } }
            }.start()
        }
        while done.withLock({ $0 }) < n { usleep(200) }
        let failures = errors.withLock { $0 }
        if !failures.isEmpty { throw Failure(description: failures.joined(separator: "; ")) }
    }
}
