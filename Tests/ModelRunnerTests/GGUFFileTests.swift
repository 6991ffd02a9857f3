import ExecutorTestSupport
import Kernels
import ModelRunner
import Testing

@Suite struct GGUFFileTests {
    func sampleWriter() -> GGUFWriter {
        var w = GGUFWriter()
        w.set("general.architecture", .string("llama"))
        w.set("a.u8", .uint8(7))
        w.set("a.i8", .int8(-7))
        w.set("a.u16", .uint16(65535))
        w.set("a.i16", .int16(-300))
        w.set("a.u32", .uint32(1 << 31))
        w.set("a.i32", .int32(-5))
        w.set("a.f32", .float32(1.5))
        w.set("a.bool", .bool(true))
        w.set("a.string", .string("héllo"))
        w.set("a.u64", .uint64(1 << 40))
        w.set("a.i64", .int64(-1 << 40))
        w.set("a.f64", .float64(-2.25))
        w.set("a.nested", .array([.array([.int32(1), .int32(2)]), .array([.int32(3)])]))
        w.set("a.strings", .array([.string("x"), .string("")]))
        for type in TensorType.allCases {
            let columns = max(64, type.blockSize)
            w.add("t.\(type)", dimensions: [columns, 3], type: type, values: randomFloats(columns * 3, seed: UInt64(type.rawValue)))
        }
        return w
    }

    @Test("every metadata type and tensor type round-trips", arguments: [UInt32(2), 3])
    func roundTrip(version: UInt32) throws {
        var writer = sampleWriter()
        writer.version = version
        let path = try writer.write()
        defer { TemporaryFiles.remove(path) }
        let file = try GGUFFile(path: path)
        #expect(file.version == version)
        for (key, value) in writer.metadata { #expect(file.metadata[key] == value, "\(key)") }
        #expect(file.tensors.count == TensorType.allCases.count)
        for (info, written) in zip(file.tensors, writer.tensors) {
            #expect(info.name == written.name && info.dimensions == [max(64, info.type.blockSize), 3] && info.type == written.type)
            #expect(info.fileOffset % 32 == 0)
            #expect(Array(file.data(of: info)) == written.bytes)
        }
    }

    @Test("a custom alignment is honoured")
    func alignment() throws {
        var w = sampleWriter()
        w.alignment = 64
        w.set("general.alignment", .uint32(64))
        let path = try w.write()
        defer { TemporaryFiles.remove(path) }
        let file = try GGUFFile(path: path)
        #expect(file.alignment == 64 && file.dataOffset % 64 == 0)
        #expect(file.tensors.allSatisfy { $0.fileOffset % 64 == 0 })
    }

    func parse(_ bytes: [UInt8]) -> Result<GGUFFile, GGUFError> {
        let path = TemporaryFiles.path("bad.gguf")
        defer { TemporaryFiles.remove(path) }
        try? TemporaryFiles.write(bytes, to: path)
        do { return .success(try GGUFFile(path: path)) } catch { return .failure(error) }
    }

    func expectError(_ bytes: [UInt8], _ check: (GGUFError) -> Bool, _ comment: Comment? = nil) {
        switch parse(bytes) {
        case .success: Issue.record("parsed a bad file: \(comment?.rawValue ?? "")")
        case let .failure(error): #expect(check(error), "\(error)")
        }
    }

    @Test("wrong magic, version and truncation are named")
    func headerErrors() throws {
        var bytes = sampleWriter().bytes()
        var bad = bytes
        bad[0] = 0x47 + 1
        expectError(bad, { if case .badMagic = $0 { true } else { false } })
        bad = bytes
        bad[4] = 9
        expectError(bad, { $0 == .unsupportedVersion(found: 9) })
        expectError([], { if case .truncated(offset: 0, _, _, reading: "magic") = $0 { true } else { false } })
        bytes.removeLast(10)
        expectError(bytes, { if case .tensorOutOfBounds = $0 { true } else { false } })
    }

    @Test("duplicate keys and tensors, bad dimensions and unsupported types are named")
    func structuralErrors() throws {
        var w = GGUFWriter()
        w.set("k", .uint8(1))
        w.set("k", .uint8(2))
        expectError(w.bytes(), { if case .duplicateKey(_, key: "k") = $0 { true } else { false } })

        w = GGUFWriter()
        w.add("t", dimensions: [32], type: .f32, values: randomFloats(32, seed: 1))
        w.add("t", dimensions: [32], type: .f32, values: randomFloats(32, seed: 1))
        expectError(w.bytes(), { if case .duplicateTensor(_, name: "t") = $0 { true } else { false } })

        w = GGUFWriter()
        w.addRaw(.init(name: "huge", dimensions: [1 << 40, 1 << 40], type: .f32, bytes: []))
        expectError(w.bytes(), { if case .sizeOverflow(tensor: "huge", _) = $0 { true } else { false } })

        w = GGUFWriter()
        w.addRaw(.init(name: "zero", dimensions: [0], type: .f32, bytes: []))
        expectError(w.bytes(), { if case .invalidDimension(tensor: "zero", index: 0, found: 0) = $0 { true } else { false } })

        w = GGUFWriter()
        w.addRaw(.init(name: "partial", dimensions: [48], type: .q4_1, bytes: [UInt8](repeating: 0, count: 40)))
        expectError(w.bytes(), { if case .partialBlock(tensor: "partial", firstDimension: 48, blockSize: 32) = $0 { true } else { false } })

        // An IQ2_XXS tensor (type 16, which Cohort does not read): patch the type field of an F32 tensor.
        w = GGUFWriter()
        w.add("k", dimensions: [256], type: .f32, values: randomFloats(256, seed: 2))
        var bytes = w.bytes()
        let typeOffset = 24 + 8 + 1 + 4 + 8  // header, name, dimension count, one dimension
        bytes[typeOffset] = 16
        expectError(bytes, { $0 == .unsupportedTensorType(tensor: "k", typeID: 16, typeName: "IQ2_XXS") })
        #expect(GGUFError.unsupportedTensorType(tensor: "k", typeID: 16, typeName: "IQ2_XXS").description.contains("IQ2_XXS"))
    }

    @Test("a length larger than the file fails before allocating")
    func hugeLengths() {
        var w = GGUFWriter()
        w.set("s", .string("abc"))
        var bytes = w.bytes()
        // The string length field of the value sits after header (24), key (8 + 1) and type (4).
        let lengthOffset = 24 + 9 + 4
        for i in 0..<8 { bytes[lengthOffset + i] = 0xFF }
        expectError(bytes, { if case .lengthExceedsFile = $0 { true } else { false } })
        // A metadata count of 2^64 − 1.
        bytes = w.bytes()
        for i in 16..<24 { bytes[i] = 0xFF }
        expectError(bytes, { if case .lengthExceedsFile = $0 { true } else { false } })
    }

    @Test("an architecture Cohort does not run is named")
    func unsupportedArchitecture() throws {
        // A valid tiny model whose only change is the architecture name.
        let w = TinyLlama().writer()
        var fresh = GGUFWriter()
        for (k, v) in w.metadata where k != "general.architecture" { fresh.set(k, v) }
        fresh.set("general.architecture", .string("mamba"))
        let path = try fresh.write()
        defer { TemporaryFiles.remove(path) }
        #expect(throws: GGUFError.unsupportedArchitecture(found: "mamba", supported: ["llama", "qwen2", "qwen3"])) {
            _ = try LoadedModel(path: path, options: ModelOptions())
        }
    }

    @Test("thousands of truncated and mutated files fail cleanly or parse")
    func fuzz() {
        let original = sampleWriter().bytes()
        var random = RandomStream(seed: 42)
        var failures = 0, successes = 0
        // Every truncation point in the header and metadata, and a spread beyond.
        let headerEnd = min(original.count, 700)
        for cut in Array(0..<headerEnd) + stride(from: headerEnd, to: original.count, by: 97) {
            switch parse(Array(original[..<cut])) {
            case .success: successes += 1
            case .failure: failures += 1
            }
        }
        for _ in 0..<2500 {
            var bytes = original
            for _ in 0..<(1 + Int(random.next() % 4)) {
                let i = Int(random.next() % UInt64(min(bytes.count, 900)))
                switch random.next() % 3 {
                case 0: bytes[i] = UInt8(truncatingIfNeeded: random.next())
                case 1: bytes[i] ^= 0x80
                default: bytes[i] = 0xFF
                }
            }
            switch parse(bytes) {
            case .success: successes += 1
            case .failure: failures += 1
            }
        }
        #expect(failures > 1000)
        #expect(successes + failures > 3000)
    }
}
