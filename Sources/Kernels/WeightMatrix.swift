internal import CKernels

/// A read-only view of a 2-D weight tensor in ggml layout: `rows` output features, each a
/// contiguous run of `columns` input features encoded as `type`.
///
/// The memory usually lies in a memory-mapped model file and is owned by whoever mapped
/// it; a view never outlives that owner.
public struct WeightMatrix: @unchecked Sendable {
    // @unchecked: `base` points into read-only memory (a file mapping or a test buffer)
    // that its owner keeps alive and never writes while views exist.

    public let type: TensorType
    public let rows: Int
    public let columns: Int
    /// Where row `rowLayoutStart` starts (row 0 unless the rows below live only in panels).
    public private(set) var base: UnsafeRawPointer
    public let rowBytes: Int
    /// The same weights packed into panels of 8 rows for the panel kernels, covering rows
    /// `0..<packedRows` (see `PackedWeights`); nil when not packed.
    public private(set) var packed: UnsafeRawPointer?
    public private(set) var packedRows = 0
    /// The first row that also exists in the row layout: 0, or `packedRows` for a matrix
    /// whose row copy was dropped once packed (a converted matrix: a second full copy
    /// would be memory for nothing, see `ConvertedWeights.packed`). Rows below it are read
    /// from the panels (`rowFromPanels`).
    public private(set) var rowLayoutStart = 0

    /// - Precondition: `columns` is a whole number of `type` blocks.
    public init(type: TensorType, rows: Int, columns: Int, base: UnsafeRawPointer) {
        precondition(columns % type.blockSize == 0, "\(columns) columns is not a whole number of \(type) blocks")
        self.init(type: type, rows: rows, columns: columns, base: base, rowBytes: type.byteCount(values: columns)!)
    }

    /// A view whose rows are `rowBytes` apart (a column shard of a wider matrix).
    init(type: TensorType, rows: Int, columns: Int, base: UnsafeRawPointer, rowBytes: Int) {
        self.type = type
        self.rows = rows
        self.columns = columns
        self.base = base
        self.rowBytes = rowBytes
    }

    /// This view with a packed copy of its first `rows` rows attached.
    func withPacked(_ panels: UnsafeRawPointer, rows: Int) -> WeightMatrix {
        var copy = self
        copy.packed = panels
        copy.packedRows = rows
        return copy
    }

    /// This packed view with only the rows from `packedRows` on in the row layout, the
    /// first of them at `tail`.
    func withRowLayout(fromPackedRowsAt tail: UnsafeRawPointer) -> WeightMatrix {
        precondition(packed != nil && rowLayoutStart == 0, "only a packed matrix can drop its row layout, once")
        var copy = self
        copy.base = tail
        copy.rowLayoutStart = packedRows
        return copy
    }

    /// Row `index` in the row layout. - Precondition: `index ≥ rowLayoutStart`.
    @inline(__always)
    public func row(_ index: Int) -> UnsafeRawPointer {
        precondition(index >= rowLayoutStart, "row \(index) of this \(type) matrix lives only in its packed panels")
        return base + (index - rowLayoutStart) * rowBytes
    }

    /// Row `index` copied out of the panels into `scratch` (`rowBytes` bytes), in the row
    /// layout; nil when the row is in no panel.
    public func rowFromPanels(_ index: Int, into scratch: UnsafeMutableRawPointer) -> UnsafeRawPointer? {
        guard let packed, index >= 0, index < max(packedRows, rowLayoutStart) else { return nil }
        cohort_unpack_row(Int32(type.rawValue), packed, Int32(index), Int32(columns), scratch)
        return UnsafeRawPointer(scratch)
    }

    /// The rows `range` as their own matrix (a shard, no copy). A packed copy carries over
    /// when the range starts on a panel.
    /// - Precondition: a range that starts below `rowLayoutStart` starts on a panel.
    public func rows(_ range: Range<Int>) -> WeightMatrix {
        precondition(range.lowerBound >= 0 && range.upperBound <= rows, "rows \(range) outside 0..<\(rows)")
        let first = max(range.lowerBound, rowLayoutStart)
        var view = WeightMatrix(type: type, rows: range.count, columns: columns, base: base + (first - rowLayoutStart) * rowBytes, rowBytes: rowBytes)
        guard let packed, range.lowerBound % 8 == 0, range.lowerBound < packedRows else {
            precondition(range.lowerBound >= rowLayoutStart, "rows \(range) of a matrix held in panels do not start on a panel")
            return view
        }
        let panelBytes = cohort_packed_bytes(Int32(type.rawValue), 8, Int32(columns))
        view = view.withPacked(packed + range.lowerBound / 8 * panelBytes, rows: (min(range.upperBound, packedRows) - range.lowerBound) / 8 * 8)
        view.rowLayoutStart = first - range.lowerBound
        return view
    }

    /// The columns `range` of every row as their own matrix (a shard, no copy): rows keep
    /// their stride. A packed copy does not carry over. - Precondition: the range starts and ends on block boundaries.
    public func columns(_ range: Range<Int>) -> WeightMatrix {
        precondition(range.lowerBound >= 0 && range.upperBound <= columns, "columns \(range) outside 0..<\(columns)")
        precondition(rowLayoutStart == 0, "the columns of a matrix held in panels cannot be cut")
        precondition(range.lowerBound % type.blockSize == 0 && range.count % type.blockSize == 0,
                     "columns \(range) do not fall on \(type) block boundaries")
        return WeightMatrix(
            type: type, rows: rows, columns: range.count, base: base + type.byteCount(values: range.lowerBound)!, rowBytes: rowBytes)
    }
}

/// How matrix products treat activations.
public enum NumericMode: String, Sendable, CaseIterable {
    /// Activations are quantized to 8 bits per 32-value block for quantized weights, as
    /// llama.cpp does; integer dot products.
    case fast
    /// Float32 activations against weights dequantized to float32.
    case precise
}
