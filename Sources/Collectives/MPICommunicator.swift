#if canImport(Glibc)
import Glibc
#endif
internal import CPlatform
public import ExecutorCore

/// A tensor-parallel group over MPI's own collectives (`--collectives mpi`), for runs whose
/// every rank is a process of one MPI world (`mpirun -np N cohort generate --launcher mpi`).
/// Users compare it with Cohort's shared-memory rings and TCP ring on their network.
///
/// The group is `MPI_COMM_WORLD` split by color (one color per pipeline stage), ordered by
/// tensor-parallel rank. Each collective is non-blocking (`MPI_Iallreduce`,
/// `MPI_Iallgather`) and polled with `MPI_Test`, so a wait keeps its deadline and runs the
/// watchdog like the other transports: a blocking MPI call would wait forever for a stopped
/// peer. MPI is initialized serialized: one thread at a time calls it.
public final class MPICommunicator {
    public let rank: Int
    public let ranks: Int
    public var timeout: Double = 30
    public private(set) var collectiveNanoseconds: Int64 = 0
    /// Runs while a collective waits; it throws to end the wait (naming the rank to blame).
    public var watchdog: (@Sendable () throws -> Void)?
    private let communicator: UnsafeMutableRawPointer

    private init(communicator: UnsafeMutableRawPointer, rank: Int, ranks: Int) {
        self.communicator = communicator
        self.rank = rank
        self.ranks = ranks
    }

    /// Splits MPI_COMM_WORLD: every process of the world calls this once, with its group's
    /// `color` and its rank in the group as `key`.
    /// - Throws: when MPI is not running here, or the group has another size than `ranks`.
    public static func split(color: Int, key: Int, ranks: Int) throws(CollectiveError) -> MPICommunicator {
        var error = [CChar](repeating: 0, count: 512)
        var handle: UnsafeMutableRawPointer?
        var rank: Int32 = -1, size: Int32 = 0
        guard cohort_mpi_comm_split(Int32(color), Int32(key), &handle, &rank, &size, &error, Int32(error.count)) == 0, let handle else {
            throw .watchdog(operation: "joining the MPI group of stage \(color)", reason: String(filled: error))
        }
        guard Int(size) == ranks, Int(rank) == key else {
            throw .watchdog(
                operation: "joining the MPI group of stage \(color)",
                reason: "expected \(ranks) ranks with this one at \(key), found \(size) with it at \(rank)")
        }
        return MPICommunicator(communicator: handle, rank: key, ranks: ranks)
    }

    /// buffer ← Σ over the group's buffers.
    public func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws(CollectiveError) {
        guard ranks > 1, buffer.count > 0 else { return }
        try run("all-reduce") { request, error in
            cohort_mpi_iallreduce_sum(buffer.baseAddress, Int32(buffer.count), communicator, &request, &error, Int32(error.count))
        }
    }

    /// output ← every rank's input, concatenated in rank order.
    public func allGather(_ input: UnsafeBufferPointer<Float>, into output: UnsafeMutableBufferPointer<Float>) throws(CollectiveError) {
        precondition(output.count == ranks * input.count, "all-gather output must hold ranks × input")
        guard ranks > 1 else {
            if input.count > 0 { output.baseAddress!.update(from: input.baseAddress!, count: input.count) }
            return
        }
        try run("all-gather") { request, error in
            cohort_mpi_iallgather(input.baseAddress, Int32(input.count), output.baseAddress, communicator, &request, &error, Int32(error.count))
        }
    }

    /// Starts a collective and polls it to its end, within `timeout`.
    private func run(_ operation: String, _ start: (inout UnsafeMutableRawPointer?, inout [CChar]) -> Int32) throws(CollectiveError) {
        let began = MonotonicClock.nanoseconds()
        defer { collectiveNanoseconds += MonotonicClock.nanoseconds() - began }
        var error = [CChar](repeating: 0, count: 512)
        var request: UnsafeMutableRawPointer?
        guard start(&request, &error) == 0 else { throw .watchdog(operation: operation, reason: "MPI: \(String(filled: error))") }
        var done: Int32 = 0, polls = 0
        var nextCheck = began + 50_000_000
        while true {
            guard cohort_mpi_test(&request, &done, &error, Int32(error.count)) == 0 else {
                throw .watchdog(operation: operation, reason: "MPI: \(String(filled: error))")
            }
            if done != 0 { return }
            polls += 1
            // Spin briefly (a step's collective is usually microseconds away), then yield the core.
            if polls > 200 { sched_yield() }
            if polls % 64 == 0 {
                let now = MonotonicClock.nanoseconds()
                if now >= nextCheck {
                    nextCheck = now + 50_000_000
                    do { try watchdog?() } catch { throw .watchdog(operation: operation, reason: "\(error)") }
                    if timeout.isFinite && Double(now - began) / 1e9 > timeout {
                        // MPI does not say which peer is missing: the driver's health check does.
                        throw .watchdog(operation: operation, reason: "an MPI peer did not arrive within \(timeout) s")
                    }
                }
            }
        }
    }
}

extension MPICommunicator: TensorParallelGroup {}
