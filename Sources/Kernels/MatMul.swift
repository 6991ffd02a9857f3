internal import CKernels

/// One weight matrix and where its products go: `output[t * outputStride + r]` for token
/// `t` and row `r`.
public struct Projection {
    public var weight: WeightMatrix
    public var output: UnsafeMutablePointer<Float>
    public var outputStride: Int

    public init(_ weight: WeightMatrix, into output: UnsafeMutablePointer<Float>, stride: Int? = nil) {
        self.weight = weight
        self.output = output
        self.outputStride = stride ?? weight.rows
    }
}

/// Matrix products `Y = X · Wᵀ` for a batch of tokens, over a thread pool.
///
/// Up to three projections that read the same input (Q/K/V, gate/up) run as one parallel
/// job: the input is quantized once and the threads split the rows of all of them, which
/// halves the number of wake-ups per layer. Scratch for the quantized input is allocated
/// once, for `maxTokens × maxColumns`; a call never allocates.
public final class MatMul {
    public let maxTokens: Int
    public let maxColumns: Int
    private let quantized: UnsafeMutablePointer<cohort_q8_block>

    public init(maxTokens: Int, maxColumns: Int) {
        precondition(maxTokens > 0 && maxColumns > 0 && maxColumns % 32 == 0,
                     "matmul scratch needs positive sizes with columns a multiple of 32")
        self.maxTokens = maxTokens
        self.maxColumns = maxColumns
        self.quantized = .allocate(capacity: maxTokens * maxColumns / 32)
    }

    deinit { quantized.deallocate() }

    /// Computes every projection for `tokens` input rows of `columns` floats, `inputStride` apart.
    /// - Precondition: all weights have `columns` columns; `tokens ≤ maxTokens`, `columns ≤ maxColumns`.
    public func run(
        input: UnsafePointer<Float>, inputStride: Int, tokens: Int,
        _ first: Projection, _ second: Projection? = nil, _ third: Projection? = nil,
        mode: NumericMode, pool: ThreadPool
    ) {
        let columns = first.weight.columns
        precondition(tokens <= maxTokens && columns <= maxColumns, "matmul of \(tokens)×\(columns) exceeds scratch")
        precondition(second.map { $0.weight.columns == columns } ?? true, "projections disagree on input size")
        precondition(third.map { $0.weight.columns == columns } ?? true, "projections disagree on input size")

        // Formats without an integer kernel (not converted by `ConvertedWeights`) take the
        // float path: slower, never wrong.
        func integer(_ p: Projection?) -> Bool { mode == .fast && p?.weight.type.hasIntegerKernel == true }
        if integer(first) || integer(second) || integer(third) {
            for t in 0..<tokens {
                cohort_quantize_row_q8(input + t * inputStride, quantized + t * (columns / 32), Int32(columns))
            }
        }
        let rows0 = first.weight.rows
        let rows1 = second?.weight.rows ?? 0
        let total = rows0 + rows1 + (third?.weight.rows ?? 0)
        let quantized = self.quantized
        let chunks = pool.chunkCount(items: total, minimumItems: 16)
        pool.run(chunks: chunks) { chunk, _ in
            let mine = ThreadPool.slice(of: total, part: chunk, parts: chunks, granule: 8)
            func part(_ projection: Projection, offset: Int) {
                let lower = max(mine.lowerBound - offset, 0)
                let upper = min(mine.upperBound - offset, projection.weight.rows)
                guard lower < upper else { return }
                if integer(projection) {
                    Self.integerRows(projection, lower..<upper, quantized: quantized, tokens: tokens)
                } else {
                    Self.floatRows(projection, lower..<upper, input: input, inputStride: inputStride, tokens: tokens)
                }
            }
            part(first, offset: 0)
            if let second { part(second, offset: rows0) }
            if let third { part(third, offset: rows0 + rows1) }
        }
    }

    /// Rows of a quantized weight against 8-bit activations (the C kernels): whole panels
    /// of a packed matrix through the panel kernel, any other rows one at a time.
    @inline(__always)
    static func integerRows(
        _ p: Projection, _ rows: Range<Int>, quantized: UnsafePointer<cohort_q8_block>, tokens: Int
    ) {
        var rows = rows
        if let packed = p.weight.packed {
            let begin = (rows.lowerBound + 7) / 8 * 8
            let end = min(rows.upperBound, p.weight.packedRows) / 8 * 8
            if begin < end {
                cohort_matmul_packed(
                    Int32(p.weight.type.rawValue), packed, Int32(begin), Int32(end), Int32(p.weight.columns),
                    quantized, Int32(tokens), p.output, Int32(p.outputStride))
                if rows.lowerBound < begin {
                    rowwise(p, rows.lowerBound..<begin, quantized: quantized, tokens: tokens)
                }
                rows = end..<rows.upperBound
            }
        }
        guard !rows.isEmpty else { return }
        rowwise(p, rows, quantized: quantized, tokens: tokens)
    }

    /// Rows one at a time (the row kernels); rows held only in panels are copied out of
    /// them first (the few rows of a thread's share that do not start a panel).
    @inline(__always)
    static func rowwise(_ p: Projection, _ rows: Range<Int>, quantized: UnsafePointer<cohort_q8_block>, tokens: Int) {
        let w = p.weight, type = Int32(w.type.rawValue)
        let inPanels = rows.lowerBound..<max(rows.lowerBound, min(rows.upperBound, w.rowLayoutStart))
        if !inPanels.isEmpty {
            withUnsafeTemporaryAllocation(byteCount: w.rowBytes, alignment: 64) { scratch in
                for r in inPanels {
                    cohort_matmul_q8(
                        type, w.rowFromPanels(r, into: scratch.baseAddress!)!, w.rowBytes, 0, 1, Int32(w.columns),
                        quantized, Int32(tokens), p.output + r, Int32(p.outputStride))
                }
            }
        }
        let rest = inPanels.upperBound..<rows.upperBound
        guard !rest.isEmpty else { return }
        cohort_matmul_q8(
            type, w.row(rest.lowerBound), w.rowBytes, 0, Int32(rest.count), Int32(w.columns),
            quantized, Int32(tokens), p.output + rest.lowerBound, Int32(p.outputStride))
    }

    /// Rows of any weight against float activations: each row is decoded once to float32
    /// (on the stack) and reused for every token.
    static func floatRows(
        _ p: Projection, _ rows: Range<Int>, input: UnsafePointer<Float>, inputStride: Int, tokens: Int
    ) {
        let k = p.weight.columns
        if p.weight.type == .f32 {
            for r in rows {
                let w = p.weight.row(r).assumingMemoryBound(to: Float.self)
                for t in 0..<tokens {
                    p.output[t * p.outputStride + r] = VectorMath.dot(w, input + t * inputStride, count: k)
                }
            }
            return
        }
        withUnsafeTemporaryAllocation(of: Float.self, capacity: k) { scratch in
            let w = scratch.baseAddress!
            for r in rows {
                Dequantize.row(p.weight.type, from: p.weight.row(r), into: w, count: k)
                for t in 0..<tokens {
                    p.output[t * p.outputStride + r] = VectorMath.dot(w, input + t * inputStride, count: k)
                }
            }
        }
    }
}
