import ExecutorTestSupport
import Kernels
import Testing

/// Formats without an integer kernel of their own are converted at load into one that has
/// one (see `ConvertedWeights`); shards that split a super-block are converted too.
@Suite struct ConvertedWeightsTests {
    static let converted: [TensorType] = TensorType.allCases.filter { ConvertedWeights.fastFormat(for: $0) != nil }

    func decoded(_ m: WeightMatrix) -> [Float] {
        var out = [Float](repeating: .nan, count: m.rows * m.columns)
        out.withUnsafeMutableBufferPointer { o in
            for r in 0..<m.rows { Dequantize.row(m.type, from: m.row(r), into: o.baseAddress! + r * m.columns, count: m.columns) }
        }
        return out
    }

    @Test("every block format without a kernel of its own converts to one with a kernel, within a fraction of its own step",
          arguments: converted)
    func fastConversion(type: TensorType) throws {
        let rows = 5, columns = 512
        let bytes = Quantize.bytes(type, randomFloats(rows * columns, seed: UInt64(type.rawValue)))
        try bytes.withUnsafeBytes { raw in
            let original = WeightMatrix(type: type, rows: rows, columns: columns, base: raw.baseAddress!)
            let storage = ConvertedWeights()
            let fast = try storage.prepare(original, mode: .fast)
            let target = try #require(ConvertedWeights.fastFormat(for: type))
            #expect(fast.type == target && fast.type.hasIntegerKernel && fast.rows == rows && fast.columns == columns)
            #expect(storage.byteCount == rows * target.byteCount(values: columns)!)
            let want = decoded(original), got = decoded(fast)
            switch type {
            case .q4_K:
                // The same codes; only d·sc and dmin·m are rounded to half precision.
                #expect(Tolerance.maxAbsoluteDifference(got, want) <= 16 * 1e-3 * (want.map(abs).max() ?? 0))
            default:
                // Requantized with 127 steps a side per 32 values: within half a step of 1/127.
                for b in stride(from: 0, to: want.count, by: 32) {
                    let amax = want[b..<(b + 32)].map(abs).max()!
                    #expect(Tolerance.maxAbsoluteDifference(Array(got[b..<(b + 32)]), Array(want[b..<(b + 32)])) <= amax / 127 * 0.51 + 1e-7)
                }
            }
            // Precise mode reads the format as stored: a view, no copy.
            let precise = ConvertedWeights()
            let view = try precise.prepare(original, mode: .precise)
            withExtendedLifetime(storage) {}
            #expect(view.type == type && view.base == original.base && precise.byteCount == 0)
        }
    }

    @Test("a shard that splits a super-block is converted: F32 in precise mode (exact), a kernel format in fast mode",
          arguments: [TensorType.q4_K, .q6_K, .q2_K])
    func unalignedShards(type: TensorType) throws {
        let rows = 3, columns = 768
        let bytes = Quantize.bytes(type, randomFloats(rows * columns, seed: 7))
        try bytes.withUnsafeBytes { raw in
            let original = WeightMatrix(type: type, rows: rows, columns: columns, base: raw.baseAddress!)
            let whole = decoded(original)
            for range in [96..<352, 0..<128, 256..<512, 640..<768] {
                let want = (0..<rows).flatMap { r in whole[(r * columns + range.lowerBound)..<(r * columns + range.upperBound)] }
                // Views of a storage are valid while it lives.
                let storage = ConvertedWeights()
                defer { withExtendedLifetime(storage) {} }
                let precise = try storage.prepare(original, rows: 1..<3, columns: range, mode: .precise)
                let aligned = range.lowerBound % 256 == 0 && range.count % 256 == 0
                #expect(precise.type == (aligned ? type : .f32), "\(range)")
                #expect(decoded(precise) == Array(want[range.count...]), "\(type) \(range)")
                let fast = try storage.prepare(original, rows: 0..<3, columns: range, mode: .fast)
                #expect(fast.type.hasIntegerKernel && fast.columns == range.count)
                #expect(Tolerance.relativeL2(decoded(fast), want) < 0.01, "\(type) \(range)")
            }
        }
    }

    @Test("fast mode on converted weights equals their decoded values times 8-bit activations", arguments: converted)
    func fastMatMul(type: TensorType) throws {
        let rows = 24, columns = 256, tokens = 3
        let bytes = Quantize.bytes(type, randomFloats(rows * columns, seed: 5))
        let input = randomFloats(tokens * columns, seed: 6)
        try bytes.withUnsafeBytes { raw in
            let original = WeightMatrix(type: type, rows: rows, columns: columns, base: raw.baseAddress!)
            let storage = ConvertedWeights(), packed = PackedWeights()
            let converted = try storage.prepare(original, mode: .fast)
            let fast = PackedWeights.isSupported ? packed.pack(converted) : converted
            defer { withExtendedLifetime((storage, packed)) {} }
            let weights = decoded(fast)
            var out = [Float](repeating: .nan, count: rows * tokens)
            out.withUnsafeMutableBufferPointer { o in
                input.withUnsafeBufferPointer { x in
                    MatMul(maxTokens: tokens, maxColumns: columns).run(
                        input: x.baseAddress!, inputStride: columns, tokens: tokens, Projection(fast, into: o.baseAddress!),
                        mode: .fast, pool: ThreadPool(threads: 2))
                }
            }
            let q = quantizeActivations(input)
            var want = [Float](repeating: 0, count: rows * tokens)
            for t in 0..<tokens {
                for r in 0..<rows {
                    var s = 0.0
                    for k in 0..<columns { s += Double(weights[r * columns + k]) * Double(q[t * columns + k]) }
                    want[t * rows + r] = Float(s)
                }
            }
            #expect(Tolerance.maxAbsoluteDifference(out, want) < 1e-3, "\(type)")
        }
    }

    @Test("a weight that decodes to NaN or infinity fails the conversion with its row and column",
          arguments: [(TensorType.q6_K, UInt16(0x7E00)), (.q4_K, 0x7C00), (.q5_1, 0xFC00)])
    func nonFiniteWeights(type: TensorType, half: UInt16) throws {
        let rows = 4, columns = 512
        var bytes = Quantize.bytes(type, randomFloats(rows * columns, seed: 3))
        // The scale of the block holding row 2, column 256 (Q6_K keeps d last, Q4_K and Q5_1 first).
        let blockBytes = type.byteCount(values: type.blockSize)!
        let block = (2 * columns + 256) / type.blockSize * blockBytes
        let at = block + (type == .q6_K ? blockBytes - 2 : 0)
        bytes[at] = UInt8(half & 0xFF)
        bytes[at + 1] = UInt8(half >> 8)
        try bytes.withUnsafeBytes { raw in
            let original = WeightMatrix(type: type, rows: rows, columns: columns, base: raw.baseAddress!)
            let storage = ConvertedWeights()
            #expect(throws: ConvertedWeights.NonFiniteWeight.self) { try storage.prepare(original, mode: .fast) }
            do throws(ConvertedWeights.NonFiniteWeight) {
                _ = try storage.prepare(original, rows: 1..<4, mode: .fast)
                Issue.record("\(type): rows 1..<4 converted despite a non-finite scale")
            } catch {
                #expect(error.row == 2 && error.column == 256 && !error.value.isFinite)
            }
            // Rows without the bad block convert.
            _ = try storage.prepare(original, rows: 0..<2, mode: .fast)
        }
    }

    @Test("a packed converted matrix is held once: its copy keeps only the rows past the last panel, and products are unchanged",
          .enabled(if: PackedWeights.isSupported, "this CPU runs no panel kernels"), arguments: [TensorType.q6_K, .q4_K, .q5_1])
    func packedCopyIsDropped(type: TensorType) throws {
        let rows = 45, columns = 256, tokens = 3
        let bytes = Quantize.bytes(type, randomFloats(rows * columns, seed: 21))
        let plainBytes = Quantize.bytes(.q4_1, randomFloats(21 * columns, seed: 22))
        let input = randomFloats(tokens * columns, seed: 23)
        try bytes.withUnsafeBytes { raw in
            let original = WeightMatrix(type: type, rows: rows, columns: columns, base: raw.baseAddress!)
            let kept = ConvertedWeights(), dropped = ConvertedWeights(), panels = PackedWeights()
            defer { withExtendedLifetime((kept, dropped, panels)) {} }
            let converted = try kept.prepare(original, mode: .fast)
            let reference = panels.pack(converted)
            let single = try dropped.packed(dropped.prepare(original, mode: .fast), into: panels)
            let rowBytes = converted.rowBytes
            #expect(dropped.byteCount == (rows - 40) * rowBytes && kept.byteCount == rows * rowBytes)
            #expect(single.packedRows == 40 && single.rowLayoutStart == 40)
            // Every row, from the panels or the copy, is the converted row byte for byte.
            var scratch = [UInt8](repeating: 0, count: rowBytes)
            for r in 0..<rows {
                let got = scratch.withUnsafeMutableBytes { s in Array(UnsafeRawBufferPointer(start: single.rowFromPanels(r, into: s.baseAddress!) ?? single.row(r), count: rowBytes)) }
                #expect(got == Array(UnsafeRawBufferPointer(start: converted.row(r), count: rowBytes)), "row \(r)")
            }
            // Fused behind a 21-row matrix, two threads' four chunks cut it at rows 11 and
            // 27, inside panels: rows 8..<11, 11..<16, 24..<27 and 27..<32 go through the
            // row kernels, copied out of the panels.
            plainBytes.withUnsafeBytes { plainRaw in
                let first = WeightMatrix(type: .q4_1, rows: 21, columns: columns, base: plainRaw.baseAddress!)
                func product(_ second: WeightMatrix) -> [Float] {
                    var a = [Float](repeating: .nan, count: 21 * tokens), b = [Float](repeating: .nan, count: rows * tokens)
                    input.withUnsafeBufferPointer { x in
                        a.withUnsafeMutableBufferPointer { oa in
                            b.withUnsafeMutableBufferPointer { ob in
                                MatMul(maxTokens: tokens, maxColumns: columns).run(
                                    input: x.baseAddress!, inputStride: columns, tokens: tokens,
                                    Projection(first, into: oa.baseAddress!), Projection(second, into: ob.baseAddress!),
                                    mode: .fast, pool: ThreadPool(threads: 2))
                            }
                        }
                    }
                    return b
                }
                let got = product(single), want = product(reference)
                #expect(!got.contains { $0.isNaN } && got == want, "\(type)")
            }
        }
    }
}
