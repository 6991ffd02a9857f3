import CKernels
import ExecutorTestSupport
import Kernels
import ModelRunner
import Testing

/// ggml-style 8-bit quantization of one activation row, as a plain scalar reference.
func quantizeActivations(_ x: [Float]) -> [Float] {
    var out: [Float] = []
    for b in stride(from: 0, to: x.count, by: 32) {
        let block = x[b..<(b + 32)]
        let amax = block.map { abs($0) }.max()!
        let d = amax / 127
        let id: Float = amax != 0 ? 127 / amax : 0
        for v in block { out.append((v * id).rounded(.toNearestOrEven) * d) }
    }
    return out
}

@Suite struct MatMulTests {
    /// Tokens 5 and 11 take the AVX2 tiles (4 tokens × 2 rows) and leave pairs and singles
    /// behind; odd row counts leave a one-row tile.
    static let shapes: [(rows: Int, columns: Int, tokens: Int)] = [(1, 32, 1), (7, 64, 1), (33, 96, 3), (64, 128, 5), (130, 256, 2), (17, 64, 11)]

    /// Y[t][r] = Σ W[r][k]·X[t][k] in Double, from decoded weights.
    func reference(weights: [Float], rows: Int, columns: Int, input: [Float], tokens: Int) -> [Float] {
        var y = [Float](repeating: 0, count: rows * tokens)
        for t in 0..<tokens {
            for r in 0..<rows {
                var s = 0.0
                for k in 0..<columns { s += Double(weights[r * columns + k]) * Double(input[t * columns + k]) }
                y[t * rows + r] = Float(s)
            }
        }
        return y
    }

    func run(
        _ type: TensorType, mode: NumericMode, threads: Int, rows: Int, columns: Int, tokens: Int, packed: Bool = false
    ) -> (got: [Float], weights: [Float], input: [Float]) {
        let encoded = Quantize.bytes(type, randomFloats(rows * columns, seed: UInt64(rows * 31 + columns)))
        let input = randomFloats(tokens * columns, seed: 99)
        let decoded = encoded.withUnsafeBytes { Dequantize.array(type, bytes: $0, count: rows * columns) }
        var out = [Float](repeating: .nan, count: rows * tokens)
        let pool = ThreadPool(threads: threads)
        let matmul = MatMul(maxTokens: tokens, maxColumns: columns)
        let storage = PackedWeights()
        encoded.withUnsafeBytes { raw in
            let plain = WeightMatrix(type: type, rows: rows, columns: columns, base: raw.baseAddress!)
            let w = packed ? storage.pack(plain) : plain
            out.withUnsafeMutableBufferPointer { o in
                input.withUnsafeBufferPointer { x in
                    matmul.run(input: x.baseAddress!, inputStride: columns, tokens: tokens, Projection(w, into: o.baseAddress!),
                               mode: mode, pool: pool)
                }
            }
        }
        return (out, decoded, input)
    }

    @Test("precise mode equals decoded weights times float activations", arguments: TensorType.allCases, [1, 3])
    func preciseMatchesReference(type: TensorType, threads: Int) {
        for s in Self.shapes where s.columns % type.blockSize == 0 {
            let (got, w, x) = run(type, mode: .precise, threads: threads, rows: s.rows, columns: s.columns, tokens: s.tokens)
            let want = reference(weights: w, rows: s.rows, columns: s.columns, input: x, tokens: s.tokens)
            #expect(Tolerance.maxAbsoluteDifference(got, want) < 1e-4, "\(type) \(s)")
        }
    }

    @Test("fast mode equals decoded weights times 8-bit activations", arguments: [TensorType.q4_0, .q4_1, .q5_0, .q8_0], [1, 2, 3])
    func fastMatchesQuantizedReference(type: TensorType, threads: Int) {
        for s in Self.shapes {
            let (got, w, x) = run(type, mode: .fast, threads: threads, rows: s.rows, columns: s.columns, tokens: s.tokens)
            let quantizedInput = quantizeActivations(x)
            let want = reference(weights: w, rows: s.rows, columns: s.columns, input: quantizedInput, tokens: s.tokens)
            #expect(Tolerance.maxAbsoluteDifference(got, want) < 1e-3, "\(type) \(s)")
            // And it stays close to the float product.
            let exact = reference(weights: w, rows: s.rows, columns: s.columns, input: x, tokens: s.tokens)
            #expect(Tolerance.relativeL2(got, exact) < 0.02, "\(type) \(s)")
        }
    }

    @Test("a token's row-kernel product is the same bits in any batch and any row split", arguments: [TensorType.q4_0, .q4_1, .q5_0, .q8_0])
    func rowKernelsAreBatchInvariant(type: TensorType) {
        let rows = 33, columns = 96, tokens = 11
        let batch = run(type, mode: .fast, threads: 2, rows: rows, columns: columns, tokens: tokens).got
        let alone = run(type, mode: .fast, threads: 1, rows: rows, columns: columns, tokens: 1).got
        #expect(Array(batch[0..<rows]) == alone)
    }

    @Test("packed panels equal the row kernels, whole panels and leftover rows alike",
          .enabled(if: PackedWeights.isSupported, "this CPU runs no panel kernels"), arguments: [TensorType.q4_0, .q4_1, .q5_0, .q8_0])
    func packedMatchesRowKernels(type: TensorType) {
        // 4096 columns: a batch's tiles take turns over runs of 4-7 panels, several runs a thread.
        for (rows, columns) in [(8, 32), (21, 64), (64, 128), (130, 256), (130, 4096)] {
            for (tokens, threads) in [(1, 1), (3, 2), (8, 1), (11, 2)] {
                let rowwise = run(type, mode: .fast, threads: threads, rows: rows, columns: columns, tokens: tokens)
                let packed = run(type, mode: .fast, threads: threads, rows: rows, columns: columns, tokens: tokens, packed: true)
                #expect(!packed.got.contains { $0.isNaN }, "\(type) \(rows)×\(columns) × \(tokens) tokens left rows unwritten")
                #expect(Tolerance.relativeL2(packed.got, rowwise.got) < 1e-5, "\(type) \(rows)×\(columns) × \(tokens) tokens")
            }
        }
    }

    @Test("a token's packed product is the same bits in any batch and any row split",
          .enabled(if: PackedWeights.isSupported, "this CPU runs no panel kernels"), arguments: [TensorType.q4_1, .q8_0])
    func packedIsBatchInvariant(type: TensorType) {
        let rows = 72, columns = 96, tokens = 11
        let batch = run(type, mode: .fast, threads: 2, rows: rows, columns: columns, tokens: tokens, packed: true).got
        let alone = run(type, mode: .fast, threads: 1, rows: rows, columns: columns, tokens: 1, packed: true).got
        #expect(Array(batch[0..<rows]) == alone)
    }

    @Test("a packed row unpacks to the row as stored, byte for byte",
          .enabled(if: PackedWeights.isSupported, "this CPU runs no panel kernels"), arguments: [TensorType.q4_0, .q4_1, .q5_0, .q8_0])
    func packedRowsUnpack(type: TensorType) {
        let rows = 16, columns = 96
        let encoded = Quantize.bytes(type, randomFloats(rows * columns, seed: 31))
        let storage = PackedWeights()
        encoded.withUnsafeBytes { raw in
            let plain = WeightMatrix(type: type, rows: rows, columns: columns, base: raw.baseAddress!)
            let packed = storage.pack(plain)
            let rowBytes = plain.rowBytes
            let scratch = UnsafeMutableRawPointer.allocate(byteCount: rowBytes, alignment: 64)
            defer { scratch.deallocate() }
            #expect(packed.rowFromPanels(rows, into: scratch) == nil)
            for r in 0..<rows {
                let row = packed.rowFromPanels(r, into: scratch)
                #expect(row.map { Array(UnsafeRawBufferPointer(start: $0, count: rowBytes)) } == Array(UnsafeRawBufferPointer(start: plain.row(r), count: rowBytes)),
                        "\(type) row \(r)")
            }
        }
    }

    /// Codes at the ends of their ranges against full-scale activations: the AVX2 panels add
    /// `vpmaddubsw`'s 16-bit pairs, which must not saturate (8-bit codes −128 and 127 times
    /// ±127; all eight 4-bit groups of a block summed in 16 bits, four 5-bit groups).
    @Test("panels do not saturate at extreme codes",
          .enabled(if: PackedWeights.isSupported, "this CPU runs no panel kernels"), arguments: [TensorType.q4_0, .q4_1, .q5_0, .q8_0])
    func packedExtremeCodes(type: TensorType) {
        let rows = 8, columns = 64, tokens = 5
        let one: [UInt8] = [0x00, 0x3C]  // 1.0 in half precision
        var block: [UInt8]
        var decoded: [Float]  // the block's 32 values
        switch type {
        case .q8_0:  // pairs of 127 and pairs of −128: each pair of products at its largest
            block = one + (0..<32).map { $0 % 4 < 2 ? 0x7F : 0x80 }
            decoded = (0..<32).map { $0 % 4 < 2 ? 127 : -128 }
        case .q5_0:  // pairs of code 31 (value 15) and pairs of code 0 (value −16)
            block = one + [0x33, 0x33, 0x33, 0x33] + (0..<16).map { $0 % 4 < 2 ? 0xFF : 0x00 }
            decoded = (0..<32).map { $0 % 4 < 2 ? 15 : -16 }
        case .q4_1:  // every code 15, no minimum
            block = one + [0, 0] + [UInt8](repeating: 0xFF, count: 16)
            decoded = [Float](repeating: 15, count: 32)
        default:  // Q4_0: every code 15 (value 7), or 0 (value −8) in the last eight
            block = one + [UInt8](repeating: 0xFF, count: 12) + [UInt8](repeating: 0, count: 4)
            decoded = (0..<32).map { $0 % 16 < 12 ? 7 : -8 }
        }
        let encoded = [UInt8]((0..<(rows * columns / 32)).flatMap { _ in block })
        // Activations ±1: quantized to ±127 with scale 1/127, signs matching the weights' so
        // that every pair of products adds up.
        let signs: [Float] = (0..<columns).map { decoded[$0 % 32] < 0 ? -1 : 1 }
        let input = (0..<tokens).flatMap { t in signs.map { t % 2 == 0 ? $0 : -$0 } }
        let expected = decoded.map(abs).reduce(0, +) * Float(columns / 32)
        let storage = PackedWeights()
        let pool = ThreadPool(threads: 1)
        let matmul = MatMul(maxTokens: tokens, maxColumns: columns)
        var out = [Float](repeating: .nan, count: rows * tokens)
        encoded.withUnsafeBytes { raw in
            let packed = storage.pack(WeightMatrix(type: type, rows: rows, columns: columns, base: raw.baseAddress!))
            #expect(packed.packedRows == rows)
            input.withUnsafeBufferPointer { x in
                out.withUnsafeMutableBufferPointer { o in
                    matmul.run(input: x.baseAddress!, inputStride: columns, tokens: tokens, Projection(packed, into: o.baseAddress!),
                               mode: .fast, pool: pool)
                }
            }
        }
        for t in 0..<tokens {
            for r in 0..<rows {
                let want = t % 2 == 0 ? expected : -expected
                #expect(abs(out[t * rows + r] - want) <= abs(want) * 1e-5, "\(type) token \(t) row \(r): \(out[t * rows + r]), expected \(want)")
            }
        }
    }

    /// 127 / amax overflows for a block below about 3.7e-37: its codes must be zeros, not
    /// −128 (which the sign trick cannot negate).
    @Test("activations too small to scale quantize to zeros")
    func tinyActivations() {
        var x = [Float](repeating: 1e-38, count: 32)
        x[3] = -2e-38
        var block = cohort_q8_block()
        cohort_quantize_row_q8(x, &block, 32)
        let codes = withUnsafeBytes(of: block.qs) { Array($0) }
        #expect(codes == [UInt8](repeating: 0, count: 32), "codes \(codes)")
        #expect(block.s == 0)
    }

    @Test("a row shard of a packed matrix keeps its panels only when it starts on one",
          .enabled(if: PackedWeights.isSupported, "this CPU runs no panel kernels"))
    func packedRowShards() {
        let rows = 40, columns = 64, tokens = 3
        let encoded = Quantize.bytes(.q4_1, randomFloats(rows * columns, seed: 12))
        let input = randomFloats(tokens * columns, seed: 13)
        let storage = PackedWeights()
        let pool = ThreadPool(threads: 1)
        let matmul = MatMul(maxTokens: tokens, maxColumns: columns)
        encoded.withUnsafeBytes { raw in
            let plain = WeightMatrix(type: .q4_1, rows: rows, columns: columns, base: raw.baseAddress!)
            let packed = storage.pack(plain)
            #expect(packed.packedRows == 40 && storage.byteCount == 40 / 8 * 2 * 160)
            #expect(packed.rows(8..<29).packedRows == 16)
            #expect(packed.rows(3..<20).packed == nil)
            #expect(packed.columns(0..<32).packed == nil)
            for range in [8..<29, 3..<20, 16..<40] {
                var a = [Float](repeating: .nan, count: range.count * tokens), b = a
                input.withUnsafeBufferPointer { x in
                    a.withUnsafeMutableBufferPointer { o in
                        matmul.run(input: x.baseAddress!, inputStride: columns, tokens: tokens,
                                   Projection(packed.rows(range), into: o.baseAddress!), mode: .fast, pool: pool)
                    }
                    b.withUnsafeMutableBufferPointer { o in
                        matmul.run(input: x.baseAddress!, inputStride: columns, tokens: tokens,
                                   Projection(plain.rows(range), into: o.baseAddress!), mode: .fast, pool: pool)
                    }
                }
                #expect(Tolerance.relativeL2(a, b) < 1e-5, "rows \(range)")
            }
        }
    }

    @Test("three projections in one job equal three separate products")
    func fusedProjections() {
        let columns = 64, tokens = 3
        let sizes = [40, 16, 24]
        let encoded = sizes.enumerated().map { Quantize.bytes(.q4_1, randomFloats($1 * columns, seed: UInt64($0 + 7))) }
        let input = randomFloats(tokens * columns, seed: 5)
        let pool = ThreadPool(threads: 2)
        let matmul = MatMul(maxTokens: tokens, maxColumns: columns)
        var f0 = [Float](repeating: .nan, count: sizes[0] * tokens)
        var f1 = [Float](repeating: .nan, count: sizes[1] * tokens)
        var f2 = [Float](repeating: .nan, count: sizes[2] * tokens)
        var separate = sizes.map { [Float](repeating: .nan, count: $0 * tokens) }
        func matrices(_ body: ([WeightMatrix]) -> Void) {
            encoded[0].withUnsafeBytes { a in encoded[1].withUnsafeBytes { b in encoded[2].withUnsafeBytes { c in
                body([a, b, c].enumerated().map { WeightMatrix(type: .q4_1, rows: sizes[$0], columns: columns, base: $1.baseAddress!) })
            } } }
        }
        matrices { w in
            input.withUnsafeBufferPointer { x in
                f0.withUnsafeMutableBufferPointer { o0 in f1.withUnsafeMutableBufferPointer { o1 in
                    f2.withUnsafeMutableBufferPointer { o2 in
                        matmul.run(input: x.baseAddress!, inputStride: columns, tokens: tokens,
                                   Projection(w[0], into: o0.baseAddress!), Projection(w[1], into: o1.baseAddress!),
                                   Projection(w[2], into: o2.baseAddress!), mode: .fast, pool: pool)
                    }
                } }
                for i in 0..<3 {
                    separate[i].withUnsafeMutableBufferPointer { o in
                        matmul.run(input: x.baseAddress!, inputStride: columns, tokens: tokens, Projection(w[i], into: o.baseAddress!),
                                   mode: .fast, pool: pool)
                    }
                }
            }
        }
        let fused = [f0, f1, f2]
        #expect(fused == separate)
    }
}

@Suite struct DequantizeTests {
    @Test("quantize then dequantize stays within the format's step", arguments: TensorType.allCases)
    func roundTrip(type: TensorType) {
        let values = randomFloats(256, seed: 3)
        let bytes = Quantize.bytes(type, values)
        #expect(bytes.count == type.byteCount(values: 256))
        let back = bytes.withUnsafeBytes { Dequantize.array(type, bytes: $0, count: 256) }
        let limit: Float = switch type {
        case .f32: 0
        case .f16: 1e-3
        case .bf16: 8e-3
        case .q8_0: 1.0 / 127
        case .q4_0: 1.0 / 7
        case .q4_1: 1.0 / 15
        case .q5_0: 1.0 / 15
        case .q5_1: 1.0 / 31
        // The K-quants also round each group's scale (and min) to 4, 6 or 8 bits.
        case .q2_K: 0.5
        case .q3_K: 0.3
        case .q4_K: 0.15
        case .q5_K: 0.08
        case .q6_K: 0.04
        }
        #expect(Tolerance.maxAbsoluteDifference(back, values) <= limit, "\(type)")
    }

    /// Blocks of random bytes (finite scales), decoded by the `gguf` Python package
    /// (`scripts/quant-fixtures.py`): every format must give its floats bit for bit.
    @Test("every block format decodes random blocks exactly as the gguf package does")
    func matchesGGUFPackage() throws {
        func bytes(_ hex: String) -> [UInt8] {
            let digits = Array(hex.utf8)
            return stride(from: 0, to: digits.count, by: 2).map { UInt8(String(decoding: digits[$0..<($0 + 2)], as: UTF8.self), radix: 16)! }
        }
        var seen: Set<TensorType> = []
        for fixture in ggufDequantizeFixtures {
            let type = try #require(TensorType.allCases.first { $0.description == fixture.type }, "\(fixture.type)")
            seen.insert(type)
            let block = bytes(fixture.bytes)
            let want = fixture.values.split(separator: " ").map { Float(bitPattern: UInt32($0, radix: 16)!) }
            #expect(type.byteCount(values: want.count) == block.count, "\(type)")
            let got = block.withUnsafeBytes { Dequantize.array(type, bytes: $0, count: want.count) }
            let mismatch = zip(got, want).enumerated().first { $0.element.0.bitPattern != $0.element.1.bitPattern }
            #expect(mismatch == nil, "\(type): value \(mismatch?.offset ?? 0) is \(mismatch?.element.0 ?? 0), gguf says \(mismatch?.element.1 ?? 0)")
        }
        #expect(seen == Set(TensorType.allCases.filter(\.isQuantized)), "formats without a fixture: rerun scripts/quant-fixtures.py")
    }

    @Test("a hand-built Q4_1 block decodes to nibble times d plus m")
    func q41Layout() {
        // d = 0.5 (0x3800), m = -1 (0xBC00); byte j holds value j (low) and 15 - j (high).
        var block: [UInt8] = [0x00, 0x38, 0x00, 0xBC]
        for j in 0..<16 { block.append(UInt8(j) | UInt8(15 - j) << 4) }
        let values = block.withUnsafeBytes { Dequantize.array(.q4_1, bytes: $0, count: 32) }
        #expect(values[0..<16].elementsEqual((0..<16).map { Float($0) * 0.5 - 1 }))
        #expect(values[16..<32].elementsEqual((0..<16).map { Float(15 - $0) * 0.5 - 1 }))
    }

    @Test("a hand-built Q4_0 block centres nibbles on 8")
    func q40Layout() {
        var block: [UInt8] = [0x00, 0x40]  // d = 2
        for j in 0..<16 { block.append(UInt8(j) | UInt8(j) << 4) }
        let values = block.withUnsafeBytes { Dequantize.array(.q4_0, bytes: $0, count: 32) }
        #expect(values[0..<16].elementsEqual((0..<16).map { Float($0 - 8) * 2 }))
        #expect(values[16..<32].elementsEqual((0..<16).map { Float($0 - 8) * 2 }))
    }

    @Test("half and bfloat16 conversions are exact on representable values")
    func halfConversions() {
        for v: Float in [0, 1, -2, 0.5, 65504, 6.1035156e-05, 5.9604645e-08] {
            #expect(HalfConversion.float(fromHalf: HalfConversion.half(from: v)) == v)
        }
        #expect(HalfConversion.float(fromBFloat16: HalfConversion.bfloat16(from: 3.140625)) == 3.140625)
    }
}
