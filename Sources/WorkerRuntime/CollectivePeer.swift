import Collectives

/// A process that joins a communicator and runs all-reduces: the far side of the
/// multi-process collective tests and benchmarks (`cohort collective-peer`).
public enum CollectivePeer {
    /// Attaches as `rank` and runs `iterations` all-reduces of `count` floats (each
    /// element = rank + 1); returns the process exit status.
    public static func run(name: String, rank: Int, count: Int, iterations: Int) -> Int32 {
        do {
            let communicator = try SharedMemoryCommunicator.attach(name: name, rank: rank)
            var buffer = [Float](repeating: Float(rank + 1), count: count)
            for _ in 0..<iterations {
                for i in buffer.indices { buffer[i] = Float(rank + 1) }
                try buffer.withUnsafeMutableBufferPointer { try communicator.allReduceSum($0) }
            }
            return 0
        } catch {
            print("collective peer rank \(rank): \(error)")
            return 1
        }
    }
}
