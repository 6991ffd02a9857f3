/// Keys and values of every cached token, in fixed-size blocks addressed through
/// per-sequence block tables (vLLM's paged attention layout, on the CPU).
///
/// Memory: one allocation made up front, `layers × 2 × blocks × blockSize × kvDimensions`
/// floats. Token `p` of a sequence lives in physical block `table[p / blockSize]` at slot
/// `p % blockSize`. Float32, so that `--precise` keeps its error bound.
public final class PagedKVCache {
    public let layers: Int
    public let blockCount: Int
    public let blockSize: Int
    public let kvDimensions: Int
    private let storage: UnsafeMutablePointer<Float>

    /// Bytes one block takes across all layers, keys and values.
    public static func bytesPerBlock(layers: Int, blockSize: Int, kvDimensions: Int) -> Int {
        layers * 2 * blockSize * kvDimensions * MemoryLayout<Float>.size
    }

    public init(layers: Int, blockCount: Int, blockSize: Int, kvDimensions: Int) {
        precondition(layers > 0 && blockCount > 0 && blockSize > 0 && kvDimensions > 0, "KV cache sizes must be positive")
        self.layers = layers
        self.blockCount = blockCount
        self.blockSize = blockSize
        self.kvDimensions = kvDimensions
        let count = layers * 2 * blockCount * blockSize * kvDimensions
        // Not initialised: a slot is read only after its token was written, so blocks cost
        // resident memory only once used.
        storage = .allocate(capacity: count)
    }

    deinit { storage.deallocate() }

    public var capacityTokens: Int { blockCount * blockSize }

    @inline(__always)
    private func layerBase(_ layer: Int, values: Bool) -> UnsafeMutablePointer<Float> {
        storage + ((layer * 2 + (values ? 1 : 0)) * blockCount * blockSize * kvDimensions)
    }

    /// The key vector of the token in `slot` (= block · blockSize + offset) for `layer`.
    @inline(__always)
    public func key(layer: Int, slot: Int) -> UnsafeMutablePointer<Float> {
        layerBase(layer, values: false) + slot * kvDimensions
    }

    @inline(__always)
    public func value(layer: Int, slot: Int) -> UnsafeMutablePointer<Float> {
        layerBase(layer, values: true) + slot * kvDimensions
    }

    /// Copies the contents of one block onto another in every layer (copy-on-write forks).
    public func copyBlock(from source: Int, to destination: Int) {
        let n = blockSize * kvDimensions
        for layer in 0..<layers {
            for values in [false, true] {
                let base = layerBase(layer, values: values)
                (base + destination * n).update(from: base + source * n, count: n)
            }
        }
    }
}
