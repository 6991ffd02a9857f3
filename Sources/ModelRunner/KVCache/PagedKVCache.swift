public import Kernels

/// Keys and values of every cached token, in fixed-size blocks addressed through
/// per-sequence block tables (vLLM's paged attention layout, on the CPU).
///
/// Memory: one allocation made up front, `layers × 2 × blocks × blockSize × kvDimensions`
/// elements. Token `p` of a sequence lives in physical block `table[p / blockSize]` at slot
/// `p % blockSize`. Inside a block each KV head's vectors are contiguous
/// (`[head][slot][headDimensions]`), so attention reads one head's block as one run. Elements are half precision in fast mode (as llama.cpp's default: half
/// the memory, so twice the blocks per MiB, and half the traffic of attention, which reads
/// the whole context of every sequence each step) and float32 with `--precise`, so that
/// its error bound holds.
public final class PagedKVCache {
    public let layers: Int
    public let blockCount: Int
    public let blockSize: Int
    public let kvDimensions: Int
    public let kvHeads: Int
    public let headDimensions: Int
    public let element: CacheElement
    private let storage: UnsafeMutableRawPointer

    /// Bytes one block takes across all layers, keys and values.
    public static func bytesPerBlock(layers: Int, blockSize: Int, kvDimensions: Int, element: CacheElement) -> Int {
        layers * 2 * blockSize * kvDimensions * element.byteCount
    }

    public init(layers: Int, blockCount: Int, blockSize: Int, kvHeads: Int, headDimensions: Int, element: CacheElement) {
        precondition(layers > 0 && blockCount > 0 && blockSize > 0 && kvHeads > 0 && headDimensions > 0, "KV cache sizes must be positive")
        let kvDimensions = kvHeads * headDimensions
        self.layers = layers
        self.blockCount = blockCount
        self.blockSize = blockSize
        self.kvDimensions = kvDimensions
        self.kvHeads = kvHeads
        self.headDimensions = headDimensions
        self.element = element
        let bytes = Self.bytesPerBlock(layers: layers, blockSize: blockSize, kvDimensions: kvDimensions, element: element) * blockCount
        // Not initialised: a slot is read only after its token was written, so blocks cost
        // resident memory only once used.
        storage = .allocate(byteCount: bytes, alignment: 64)
    }

    deinit { storage.deallocate() }

    public var capacityTokens: Int { blockCount * blockSize }

    @inline(__always)
    private func layerBase(_ layer: Int, values: Bool) -> UnsafeMutableRawPointer {
        storage + (layer * 2 + (values ? 1 : 0)) * blockCount * blockSize * kvDimensions * element.byteCount
    }

    /// KV head `head`'s keys in `block` for `layer`: `blockSize` vectors of `headDimensions`
    /// elements of type `element`, one after another.
    @inline(__always)
    public func keys(layer: Int, block: Int, head: Int) -> UnsafeMutableRawPointer {
        layerBase(layer, values: false) + (block * kvDimensions + head * headDimensions) * blockSize * element.byteCount
    }

    /// KV head `head`'s values in `block` for `layer`, laid out as `keys`.
    @inline(__always)
    public func values(layer: Int, block: Int, head: Int) -> UnsafeMutableRawPointer {
        layerBase(layer, values: true) + (block * kvDimensions + head * headDimensions) * blockSize * element.byteCount
    }

    /// Writes one token's key and value (`kvDimensions` floats each, head after head) into
    /// `slot` (= block · blockSize + offset).
    @inline(__always)
    public func store(layer: Int, slot: Int, key: UnsafePointer<Float>, value: UnsafePointer<Float>) {
        let block = slot / blockSize, offset = (slot % blockSize) * headDimensions * element.byteCount
        for head in 0..<kvHeads {
            element.store(key + head * headDimensions, count: headDimensions, to: keys(layer: layer, block: block, head: head) + offset)
            element.store(value + head * headDimensions, count: headDimensions, to: values(layer: layer, block: block, head: head) + offset)
        }
    }

    /// Copies the contents of one block onto another in every layer (copy-on-write forks).
    public func copyBlock(from source: Int, to destination: Int) {
        let n = blockSize * kvDimensions * element.byteCount
        for layer in 0..<layers {
            for values in [false, true] {
                let base = layerBase(layer, values: values)
                (base + destination * n).copyMemory(from: base + source * n, byteCount: n)
            }
        }
    }
}
