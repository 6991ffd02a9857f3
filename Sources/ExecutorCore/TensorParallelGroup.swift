/// The collectives a tensor-parallel model shard needs from its group. Implemented over
/// shared memory (`SharedMemoryCommunicator`) and over TCP (`TCPCommunicator`).
public protocol TensorParallelGroup: AnyObject {
    /// This shard's index in the group.
    var rank: Int { get }
    /// Shards in the group.
    var ranks: Int { get }
    /// buffer ← Σ over the group's buffers.
    func allReduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws
    /// output ← every rank's input, concatenated in rank order.
    func allGather(_ input: UnsafeBufferPointer<Float>, into output: UnsafeMutableBufferPointer<Float>) throws
    /// Longest wait for the peers in one collective before they are named stuck.
    var timeout: Double { get set }
    /// Time this rank has spent in collectives so far (waiting for peers included).
    var collectiveNanoseconds: Int64 { get }
}
