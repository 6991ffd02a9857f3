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
    public let base: UnsafeRawPointer
    public let rowBytes: Int

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

    @inline(__always)
    public func row(_ index: Int) -> UnsafeRawPointer { base + index * rowBytes }

    /// The rows `range` as their own matrix (a shard, no copy).
    public func rows(_ range: Range<Int>) -> WeightMatrix {
        precondition(range.lowerBound >= 0 && range.upperBound <= rows, "rows \(range) outside 0..<\(rows)")
        return WeightMatrix(type: type, rows: range.count, columns: columns, base: row(range.lowerBound), rowBytes: rowBytes)
    }

    /// The columns `range` of every row as their own matrix (a shard, no copy): rows keep
    /// their stride. - Precondition: the range starts and ends on block boundaries.
    public func columns(_ range: Range<Int>) -> WeightMatrix {
        precondition(range.lowerBound >= 0 && range.upperBound <= columns, "columns \(range) outside 0..<\(columns)")
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
