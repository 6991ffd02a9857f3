/// Owner of weight matrices converted, at load, into a format the kernels run.
///
/// The integer kernels read Q4_0, Q4_1, Q5_0 and Q8_0 on every path (panels on AVX-512
/// VNNI or AVX2, rows on AVX2 or scalar). In fast mode every other block format is
/// converted once into one of those:
/// - Q4_K → Q4_1 at the same 4 bits: each 32-value group's scale d·sc and offset −dmin·m
///   become Q4_1's half-precision d and m (a relative rounding of 2⁻¹¹ on each, far below
///   the format's own step);
/// - Q5_1, Q2_K, Q3_K, Q5_K, Q6_K → Q8_0: decoded, then requantized per 32 values with
///   127 steps each side, finer than any of their own grids.
/// Conversion also serves shards whose columns do not fall on the format's blocks (a
/// tensor-parallel split of a K-quant row of 4864 values into 2 × 2432, where K-quant
/// super-blocks hold 256): fast mode converts as above, precise mode to F32 (exact).
/// Otherwise precise mode reads every format as stored and decodes rows as it goes.
///
/// The cost is memory: converted copies are owned here, and Q8_0 takes 8.5 bits a value
/// where Q6_K took 6.56. Kernels of the K-quants' own would keep their size. Where the
/// panel kernels run, `packed(_:into:)` packs a copy and keeps only the rows past its
/// last whole panel, so a converted matrix is held once, as panels, not twice.
public final class ConvertedWeights: @unchecked Sendable {
    // @unchecked: buffers are written once in `prepare` and only read afterwards, by views
    // that never outlive this owner.

    /// Each copy's buffer and its size, by address.
    private var buffers: [UnsafeMutableRawPointer: Int] = [:]
    /// Bytes held by converted copies.
    public var byteCount: Int { buffers.values.reduce(0, +) }
    /// Called after each conversion with where its rows were read from (start and length),
    /// so the owner of that memory (a file mapping) can let its pages go.
    private let afterEach: (UnsafeRawPointer, Int) -> Void

    public init(afterEach: @escaping (_ source: UnsafeRawPointer, _ byteCount: Int) -> Void = { _, _ in }) {
        self.afterEach = afterEach
    }

    deinit {
        for buffer in buffers.keys { buffer.deallocate() }
    }

    /// `matrix` packed into `panels`; when its rows are a copy held here, the copy is
    /// released but for the rows past the last whole panel (which the row kernels read),
    /// and the result reads the others from its panels. Use the result from then on:
    /// `matrix` (and any other view of that copy) no longer has rows to read.
    public func packed(_ matrix: WeightMatrix, into panels: PackedWeights) -> WeightMatrix {
        let packed = panels.pack(matrix)
        let copy = UnsafeMutableRawPointer(mutating: matrix.base)
        guard packed.packed != nil, matrix.rowLayoutStart == 0, buffers[copy] != nil else { return packed }
        let tailBytes = (matrix.rows - packed.packedRows) * matrix.rowBytes
        let tail = UnsafeMutableRawPointer.allocate(byteCount: max(1, tailBytes), alignment: 64)
        tail.copyMemory(from: matrix.base + packed.packedRows * matrix.rowBytes, byteCount: tailBytes)
        buffers[tail] = tailBytes
        buffers[copy] = nil
        copy.deallocate()
        return packed.withRowLayout(fromPackedRowsAt: UnsafeRawPointer(tail))
    }

    /// The format fast mode converts `type` into, or nil when the kernels read it as stored.
    public static func fastFormat(for type: TensorType) -> TensorType? {
        guard type.isQuantized else { return nil }  // floats: the float path
        if type.hasIntegerKernel { return nil }
        return type == .q4_K ? .q4_1 : .q8_0
    }

    /// A weight that decodes to NaN or infinity, at `row` and `column` of the whole matrix.
    public struct NonFiniteWeight: Error {
        public let row: Int
        public let column: Int
        public let value: Float
    }

    /// `rows` × `columns` of `matrix`, as a view when `mode`'s kernels read its format and
    /// the columns fall on its blocks, else as a converted copy owned here.
    /// - Precondition: the ranges lie inside the matrix and `columns` falls on 32-value blocks.
    /// - Throws: `NonFiniteWeight` for the first weight of a converted copy that is not a
    ///   finite number (a view is not decoded here, so not checked).
    public func prepare(
        _ matrix: WeightMatrix, rows: Range<Int>? = nil, columns: Range<Int>? = nil, mode: NumericMode
    ) throws(NonFiniteWeight) -> WeightMatrix {
        let rows = rows ?? 0..<matrix.rows, columns = columns ?? 0..<matrix.columns
        let aligned = columns.lowerBound % matrix.type.blockSize == 0 && columns.count % matrix.type.blockSize == 0
        let target: TensorType? = mode == .fast ? Self.fastFormat(for: matrix.type) : nil
        if target == nil && aligned {
            var view = matrix
            if rows != 0..<matrix.rows { view = view.rows(rows) }
            if columns != 0..<matrix.columns { view = view.columns(columns) }
            return view
        }
        let format = target ?? .f32
        precondition(format == .f32 || (columns.lowerBound % 32 == 0 && columns.count % 32 == 0),
                     "columns \(columns) of a \(matrix.type) matrix do not fall on 32-value blocks")
        let rowBytes = format.byteCount(values: columns.count)!
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: max(1, rows.count * rowBytes), alignment: 64)
        buffers[buffer] = rows.count * rowBytes
        let failure: NonFiniteWeight? = withUnsafeTemporaryAllocation(of: Float.self, capacity: matrix.columns) { scratch in
            let decoded = scratch.baseAddress!
            for (i, r) in rows.enumerated() {
                let out = buffer + i * rowBytes
                if format == .q4_1 && matrix.type == .q4_K {
                    for b in 0..<(columns.count / 32) {
                        let group = columns.lowerBound / 32 + b
                        let value = Self.q4KGroupAsQ41(matrix.row(r) + group / 8 * 144, group: group % 8, into: out + b * 20)
                        if !value.isFinite { return NonFiniteWeight(row: r, column: group * 32, value: value) }
                    }
                    continue
                }
                Dequantize.row(matrix.type, from: matrix.row(r), into: decoded, count: matrix.columns)
                for c in columns where !decoded[c].isFinite { return NonFiniteWeight(row: r, column: c, value: decoded[c]) }
                let values = UnsafePointer(decoded + columns.lowerBound)
                switch format {
                case .f32:
                    out.copyMemory(from: values, byteCount: rowBytes)
                case .q8_0:
                    for b in 0..<(columns.count / 32) {
                        // Q5_0 keeps its own scale: its decoded values are whole multiples of it.
                        let scale: Float? = matrix.type == .q5_0 ? Self.q5_0Scale(matrix.row(r), block: columns.lowerBound / 32 + b) : nil
                        Self.encodeQ8_0(values + b * 32, scale: scale, into: out + b * 34)
                    }
                default:
                    preconditionFailure("no conversion of \(matrix.type) into \(format)")
                }
            }
            return nil
        }
        if let failure { throw failure }
        if !rows.isEmpty {
            afterEach(matrix.row(rows.lowerBound), (rows.count - 1) * matrix.rowBytes + (matrix.type.byteCount(values: matrix.columns) ?? 0))
        }
        return WeightMatrix(type: format, rows: rows.count, columns: columns.count, base: UnsafeRawPointer(buffer))
    }

    /// One Q8_0 block from 32 floats: with `scale` (a half-precision value the floats are
    /// whole multiples of) exactly, else with the largest magnitude at ±127.
    static func encodeQ8_0(_ x: UnsafePointer<Float>, scale: Float?, into out: UnsafeMutableRawPointer) {
        var amax: Float = 0
        for j in 0..<32 { amax = max(amax, abs(x[j])) }
        let h = HalfConversion.half(from: scale ?? amax / 127)
        let d = HalfConversion.float(fromHalf: h)
        out.storeBytes(of: h, as: UInt16.self)
        let inverse: Float = d != 0 ? 1 / d : 0
        for j in 0..<32 {
            let q = (x[j] * inverse).rounded()
            out.storeBytes(of: q.isNaN ? 0 : Int8(max(-127, min(127, q))), toByteOffset: 2 + j, as: Int8.self)
        }
    }

    /// The half-precision scale of block `block` of a Q5_0 row.
    static func q5_0Scale(_ row: UnsafeRawPointer, block: Int) -> Float {
        HalfConversion.float(fromHalf: row.loadUnaligned(fromByteOffset: block * 22, as: UInt16.self))
    }

    /// Group `group` (0…7, 32 values) of a Q4_K super-block as one Q4_1 block: the same
    /// 4-bit codes, with d = d·sc and m = −dmin·m rounded to half precision. Returns the
    /// sum of the two, finite exactly when every value of the converted group is.
    @discardableResult
    static func q4KGroupAsQ41(_ block: UnsafeRawPointer, group: Int, into out: UnsafeMutableRawPointer) -> Float {
        let d = HalfConversion.float(fromHalf: block.loadUnaligned(as: UInt16.self))
        let dmin = HalfConversion.float(fromHalf: block.loadUnaligned(fromByteOffset: 2, as: UInt16.self))
        let (sc, m) = Dequantize.scaleAndMin(block + 4, group)
        let scale = HalfConversion.half(from: d * Float(sc)), minimum = HalfConversion.half(from: -(dmin * Float(m)))
        out.storeBytes(of: scale, as: UInt16.self)
        out.storeBytes(of: minimum, toByteOffset: 2, as: UInt16.self)
        // Codes of group 2p are the low nibbles of qs[32p ..< 32p + 32], of group 2p + 1 the
        // high ones; Q4_1 holds values 0…15 in low nibbles and 16…31 in high ones.
        let qs = block + 16 + group / 2 * 32, shift = UInt8(4 * (group % 2))
        for j in 0..<16 {
            let low = (qs.load(fromByteOffset: j, as: UInt8.self) >> shift) & 0x0F
            let high = (qs.load(fromByteOffset: j + 16, as: UInt8.self) >> shift) & 0x0F
            out.storeBytes(of: low | high << 4, toByteOffset: 4 + j, as: UInt8.self)
        }
        return HalfConversion.float(fromHalf: scale) + HalfConversion.float(fromHalf: minimum)
    }
}
