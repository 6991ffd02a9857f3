public import Transports
import ExecutorCore

/// The hidden-state link from one pipeline stage to the next: a shared-memory ring that
/// the sending stage's tensor rank 0 writes and every tensor rank of the next stage reads.
///
/// It is wired once when the workers start (the compiled channel graph: driver → stage 0 →
/// … → last stage → driver), so handing a step's activations on costs one copy into the
/// ring and no call through the driver. Each message carries the step number and its
/// shape, and the receiver checks them: a step can never run on another step's states.
///
/// Message: step (u64), tokens (u32), hidden size (u32), then tokens × hidden float32.
public struct StageChannel: @unchecked Sendable {
    // @unchecked: a ring has one writer and fixed readers; each side is used by one thread.
    public let ring: SharedMemoryRing
    static let headerBytes = 16

    public init(ring: SharedMemoryRing) { self.ring = ring }

    /// A new channel for `readers` receiving ranks and steps of up to `maxTokens` × `hiddenSize`.
    public static func create(
        readers: Int, maxTokens: Int, hiddenSize: Int, slots: Int = 4, spinPolls: Int = 200
    ) throws(SharedMemoryError) -> StageChannel {
        StageChannel(ring: try SharedMemoryRing.create(
            readers: readers, slots: slots, slotBytes: headerBytes + maxTokens * hiddenSize * MemoryLayout<Float>.size,
            spinPolls: spinPolls))
    }

    public static func attach(name: String) throws(SharedMemoryError) -> StageChannel {
        StageChannel(ring: try SharedMemoryRing.attach(name: name))
    }

    /// Sends the hidden states of `step` ([tokens, hiddenSize]).
    public func send(
        step: UInt64, tokens: Int, hiddenSize: Int, _ states: UnsafePointer<Float>, timeout: Double? = nil, check: () throws -> Void = {}
    ) throws {
        let bytes = tokens * hiddenSize * MemoryLayout<Float>.size
        try ring.write(timeout: timeout, check: check) { slot in
            guard Self.headerBytes + bytes <= slot.count else {
                throw SharedMemoryError.messageTooLarge(bytes: Self.headerBytes + bytes, slotBytes: slot.count)
            }
            slot.storeBytes(of: step, toByteOffset: 0, as: UInt64.self)
            slot.storeBytes(of: UInt32(tokens), toByteOffset: 8, as: UInt32.self)
            slot.storeBytes(of: UInt32(hiddenSize), toByteOffset: 12, as: UInt32.self)
            (slot.baseAddress! + Self.headerBytes).copyMemory(from: states, byteCount: bytes)
            return Self.headerBytes + bytes
        }
    }

    /// Waits for the hidden states of `step` and passes them to `body` (the slot is released
    /// when `body` returns).
    /// - Throws: `ExecutorError` when the message is for another step or shape.
    public func receive<T>(
        reader: Int, step: UInt64, tokens: Int, hiddenSize: Int, timeout: Double? = nil, check: () throws -> Void = {},
        _ body: (UnsafePointer<Float>) throws -> T
    ) throws -> T {
        try ring.read(reader: reader, timeout: timeout, check: check) { message in
            guard message.count >= Self.headerBytes else {
                throw ExecutorError("hidden states for step \(step): expected a \(Self.headerBytes)-byte header, found \(message.count) bytes")
            }
            let gotStep = message.loadUnaligned(fromByteOffset: 0, as: UInt64.self)
            let gotTokens = Int(message.loadUnaligned(fromByteOffset: 8, as: UInt32.self))
            let gotHidden = Int(message.loadUnaligned(fromByteOffset: 12, as: UInt32.self))
            guard gotStep == step, gotTokens == tokens, gotHidden == hiddenSize,
                  message.count == Self.headerBytes + tokens * hiddenSize * MemoryLayout<Float>.size
            else {
                throw ExecutorError(
                    "hidden states: expected step \(step) with \(tokens) × \(hiddenSize) floats, "
                        + "found step \(gotStep) with \(gotTokens) × \(gotHidden) in \(message.count) bytes")
            }
            return try body((message.baseAddress! + Self.headerBytes).assumingMemoryBound(to: Float.self))
        }
    }
}
