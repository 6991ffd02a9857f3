internal import CKernels
internal import Foundation

/// Owner of weight matrices repacked for the panel kernels (AVX-512 VNNI, or AVX2).
///
/// A `WeightMatrix` is a view of the GGUF mapping in ggml's row layout, which suits one
/// row at a time. Batched steps are compute-bound, and there the row kernels spend more on
/// per-block scaling and horizontal sums than on the products. `pack` copies a matrix
/// once, at load, into panels of 8 interleaved rows (see `cohort_pack_weights`): one
/// `vpdpbusd` then advances 8 rows, the block scale is applied once per 8 rows and the
/// unpacked weights serve up to 8 tokens. Measured on one core of this project's machine
/// (1536 × 576 Q4_1, in cache): 16 → 83 GMAC/s for one token, 25 → 137 for 8 to 16.
/// Without VNNI the same panels run on AVX2 (`vpmaddubsw` + `vpmaddwd`, up to 4 tokens a
/// tile): Qwen2.5-0.5B with `COHORT_ISA=avx2` on a Zen 4, 1 thread, against the row
/// kernels: decode 31 → 50-54 tok/s, prefill 88 → 163-175 (Q5_0 in its own panels).
///
/// The copy costs the matrices' size once per process; the mapping's pages it was read
/// from can be released as each copy is made (`afterEach`), so the resident set grows
/// little, at load too. The row layout
/// stays valid (its pages come back from the page cache when read) and is used for
/// precise mode, the embedding lookup and rows past the last whole panel.
public final class PackedWeights: @unchecked Sendable {
    // @unchecked: the buffers are written once in `pack` and only read afterwards, by
    // views that never outlive this owner.

    /// True when this CPU runs the panel kernels and `COHORT_KERNELS` is not `rowwise`
    /// (the switch that runs the row kernels instead, for comparisons).
    public static let isSupported: Bool =
        cohort_cpu_has_panels() != 0 && ProcessInfo.processInfo.environment["COHORT_KERNELS"] != "rowwise"

    /// Whether a model in `mode` packs its matrices: fast mode on a CPU with the panel
    /// kernels (precise mode multiplies floats and keeps the row layout).
    public static func isUsed(for mode: NumericMode) -> Bool { mode == .fast && isSupported }

    private var buffers: [UnsafeMutableRawPointer] = []
    /// Bytes held by all packed copies.
    public private(set) var byteCount = 0
    /// Called after each copy with where its rows were read from (start and length), so
    /// the owner of that memory can let its pages go.
    private let afterEach: (UnsafeRawPointer, Int) -> Void

    public init(afterEach: @escaping (_ source: UnsafeRawPointer, _ byteCount: Int) -> Void = { _, _ in }) {
        self.afterEach = afterEach
    }

    deinit {
        for buffer in buffers { buffer.deallocate() }
    }

    /// `matrix` with a packed copy of its whole panels attached, or `matrix` itself when
    /// its type or shape cannot be packed (fewer than 8 rows, a float type).
    public func pack(_ matrix: WeightMatrix) -> WeightMatrix {
        let type = Int32(matrix.type.rawValue)
        let rows = matrix.rows / 8 * 8
        let bytes = cohort_packed_bytes(type, Int32(rows), Int32(matrix.columns))
        guard bytes > 0 else { return matrix }
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 64)
        let status = cohort_pack_weights(type, matrix.base, matrix.rowBytes, Int32(rows), Int32(matrix.columns), buffer)
        precondition(status == 0, "packing a \(matrix.rows)×\(matrix.columns) \(matrix.type) matrix failed")
        buffers.append(buffer)
        byteCount += bytes
        afterEach(matrix.base, (rows - 1) * matrix.rowBytes + (matrix.type.byteCount(values: matrix.columns) ?? 0))
        return matrix.withPacked(UnsafeRawPointer(buffer), rows: rows)
    }
}
