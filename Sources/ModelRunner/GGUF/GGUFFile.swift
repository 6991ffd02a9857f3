public import Kernels

/// A parsed GGUF file (version 2 or 3): metadata, tensor directory and the mapped data.
///
/// Layout: magic "GGUF", u32 version, u64 tensor count, u64 metadata count, the metadata
/// (key string, u32 type, value), the tensor infos (name, u32 dimension count, u64
/// dimensions, u32 type, u64 offset), padding to `general.alignment` (default 32), then
/// tensor data. All integers are little-endian; strings are u64 length + UTF-8 bytes.
///
/// Every length read from the file is checked against the bytes that remain before
/// anything is allocated from it, so a hostile file fails with an error, never a crash.
public final class GGUFFile: Sendable {
    public struct TensorInfo: Sendable, Equatable {
        public let name: String
        /// ggml order: `dimensions[0]` is the contiguous (row) dimension.
        public let dimensions: [Int]
        public let type: TensorType
        /// Absolute byte offset of the data in the file.
        public let fileOffset: Int
        public let byteCount: Int
        public var elementCount: Int { dimensions.reduce(1, *) }
    }

    public let version: UInt32
    public let metadata: [String: GGUFValue]
    /// Tensors in file order.
    public let tensors: [TensorInfo]
    public let alignment: Int
    public let dataOffset: Int
    private let tensorIndex: [String: Int]
    private let file: MappedFile

    /// Deepest array nesting accepted (real files use 1).
    static let maxNesting = 8

    public convenience init(path: String) throws(GGUFError) {
        try self.init(file: MappedFile(path: path))
    }

    public init(file: MappedFile) throws(GGUFError) {
        self.file = file
        var reader = Reader(bytes: file.bytes)
        let magic = try reader.bytes(4, reading: "magic")
        guard magic.elementsEqual("GGUF".utf8) else { throw .badMagic(found: Array(magic)) }
        version = try reader.integer(UInt32.self, reading: "version")
        guard version == 2 || version == 3 else { throw .unsupportedVersion(found: version) }
        let tensorCount = try reader.integer(UInt64.self, reading: "tensor count")
        let metadataCount = try reader.integer(UInt64.self, reading: "metadata count")

        var metadata: [String: GGUFValue] = [:]
        // Each entry takes at least 12 bytes (8 key length, 4 type); never trust the count further.
        try reader.checkCount(metadataCount, minimumBytesEach: 12, reading: "metadata count")
        for _ in 0..<metadataCount {
            let keyOffset = reader.offset
            let key = try reader.string(reading: "metadata key")
            let typeOffset = reader.offset
            let type = try reader.integer(UInt32.self, reading: "type of '\(key)'")
            let value = try reader.value(type: type, typeOffset: typeOffset, key: key, depth: 0)
            guard metadata.updateValue(value, forKey: key) == nil else { throw .duplicateKey(offset: keyOffset, key: key) }
        }
        self.metadata = metadata

        var alignment = 32
        if let value = metadata["general.alignment"] {
            guard case let .uint32(a) = value else {
                throw .wrongValueType(key: "general.alignment", expected: "uint32", found: value.typeName)
            }
            guard a != 0, a & (a - 1) == 0 else { throw .invalidAlignment(found: UInt64(a)) }
            alignment = Int(a)
        }
        self.alignment = alignment

        // name (≥ 8) + dimension count (4) + one dimension (8) + type (4) + offset (8).
        try reader.checkCount(tensorCount, minimumBytesEach: 32, reading: "tensor count")
        struct Pending { let name: String; let dimensions: [Int]; let type: TensorType; let offset: UInt64; let bytes: Int }
        var pending: [Pending] = []
        var index: [String: Int] = [:]
        for _ in 0..<tensorCount {
            let nameOffset = reader.offset
            let name = try reader.string(reading: "tensor name")
            let dimensionCount = try reader.integer(UInt32.self, reading: "dimension count of '\(name)'")
            guard dimensionCount >= 1, dimensionCount <= 4 else { throw .tooManyDimensions(tensor: name, found: dimensionCount) }
            var raw: [UInt64] = []
            for d in 0..<Int(dimensionCount) {
                let value = try reader.integer(UInt64.self, reading: "dimension \(d) of '\(name)'")
                guard value >= 1, value <= 1 << 62 else { throw .invalidDimension(tensor: name, index: d, found: value) }
                raw.append(value)
            }
            let typeID = try reader.integer(UInt32.self, reading: "type of '\(name)'")
            let offset = try reader.integer(UInt64.self, reading: "offset of '\(name)'")
            guard let type = TensorType(rawValue: typeID) else {
                throw .unsupportedTensorType(tensor: name, typeID: typeID, typeName: TensorType.name(ofRawValue: typeID))
            }
            var elements = 1
            for value in raw {
                let (product, overflow) = elements.multipliedReportingOverflow(by: Int(value))
                guard !overflow else { throw .sizeOverflow(tensor: name, dimensions: raw) }
                elements = product
            }
            let dimensions = raw.map { Int($0) }
            guard dimensions[0] % type.blockSize == 0 else {
                throw .partialBlock(tensor: name, firstDimension: dimensions[0], blockSize: type.blockSize)
            }
            guard let bytes = type.byteCount(values: elements) else { throw .sizeOverflow(tensor: name, dimensions: raw) }
            guard offset % UInt64(alignment) == 0 else {
                throw .misalignedTensor(tensor: name, offset: offset, alignment: alignment)
            }
            guard index.updateValue(pending.count, forKey: name) == nil else {
                throw .duplicateTensor(offset: nameOffset, name: name)
            }
            pending.append(Pending(name: name, dimensions: dimensions, type: type, offset: offset, bytes: bytes))
        }

        let dataOffset = (reader.offset + alignment - 1) / alignment * alignment
        self.dataOffset = dataOffset
        let fileSize = file.bytes.count
        var tensors: [TensorInfo] = []
        tensors.reserveCapacity(pending.count)
        for p in pending {
            let start = UInt64(dataOffset).addingReportingOverflow(p.offset)
            guard !start.overflow, start.partialValue <= UInt64(fileSize),
                  UInt64(p.bytes) <= UInt64(fileSize) - start.partialValue
            else {
                throw .tensorOutOfBounds(
                    tensor: p.name, start: start.overflow ? .max : start.partialValue, byteCount: p.bytes, fileSize: fileSize)
            }
            tensors.append(TensorInfo(
                name: p.name, dimensions: p.dimensions, type: p.type, fileOffset: Int(start.partialValue), byteCount: p.bytes))
        }
        self.tensors = tensors
        self.tensorIndex = index
    }

    // MARK: - Access

    public var path: String { file.path }
    public var mappedFile: MappedFile { file }

    public func tensorInfo(_ name: String) -> TensorInfo? {
        tensorIndex[name].map { tensors[$0] }
    }

    /// The bytes of a tensor, a view into the mapping (valid while this object lives).
    public func data(of info: TensorInfo) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: file.bytes[info.fileOffset..<(info.fileOffset + info.byteCount)])
    }
}

// MARK: - Reader

extension GGUFFile {
    /// A bounds-checked little-endian cursor over the mapped bytes.
    struct Reader {
        let bytes: UnsafeRawBufferPointer
        var offset = 0

        var remaining: Int { bytes.count - offset }

        mutating func bytes(_ count: Int, reading what: String) throws(GGUFError) -> UnsafeRawBufferPointer {
            guard count <= remaining else {
                throw .truncated(offset: offset, needed: count, fileSize: bytes.count, reading: what)
            }
            defer { offset += count }
            return UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + count)])
        }

        mutating func integer<T: FixedWidthInteger>(_: T.Type, reading what: String) throws(GGUFError) -> T {
            let raw = try bytes(MemoryLayout<T>.size, reading: what)
            return T(littleEndian: raw.loadUnaligned(as: T.self))
        }

        /// Fails when `count` items of at least `minimumBytesEach` bytes cannot fit in the rest of the file.
        func checkCount(_ count: UInt64, minimumBytesEach: Int, reading what: String) throws(GGUFError) {
            let (needed, overflow) = count.multipliedReportingOverflow(by: UInt64(minimumBytesEach))
            guard !overflow, needed <= UInt64(remaining) else {
                throw .lengthExceedsFile(offset: offset - 8, length: count, remaining: remaining, reading: what)
            }
        }

        mutating func string(reading what: String) throws(GGUFError) -> String {
            let lengthOffset = offset
            let length = try integer(UInt64.self, reading: "length of \(what)")
            guard length <= UInt64(remaining) else {
                throw .lengthExceedsFile(offset: lengthOffset, length: length, remaining: remaining, reading: what)
            }
            let start = offset
            let raw = try bytes(Int(length), reading: what)
            guard let s = String(validating: raw, as: UTF8.self) else { throw .invalidUTF8(offset: start, reading: what) }
            return s
        }

        mutating func value(type: UInt32, typeOffset: Int, key: String, depth: Int) throws(GGUFError) -> GGUFValue {
            let what = "value of '\(key)'"
            switch type {
            case 0: return .uint8(try integer(UInt8.self, reading: what))
            case 1: return .int8(try integer(Int8.self, reading: what))
            case 2: return .uint16(try integer(UInt16.self, reading: what))
            case 3: return .int16(try integer(Int16.self, reading: what))
            case 4: return .uint32(try integer(UInt32.self, reading: what))
            case 5: return .int32(try integer(Int32.self, reading: what))
            case 6: return .float32(Float(bitPattern: try integer(UInt32.self, reading: what)))
            case 7:
                let b = try integer(UInt8.self, reading: what)
                guard b <= 1 else { throw .invalidValue(key: key, expected: "bool 0 or 1", found: "\(b)") }
                return .bool(b == 1)
            case 8: return .string(try string(reading: what))
            case 9:
                guard depth < GGUFFile.maxNesting else {
                    throw .nestingTooDeep(offset: typeOffset, key: key, limit: GGUFFile.maxNesting)
                }
                let elementTypeOffset = offset
                let elementType = try integer(UInt32.self, reading: "element type of '\(key)'")
                guard elementType <= 12 else { throw .invalidValueType(offset: elementTypeOffset, key: key, found: elementType) }
                let count = try integer(UInt64.self, reading: "element count of '\(key)'")
                try checkCount(count, minimumBytesEach: Self.minimumSize(ofType: elementType), reading: "element count of '\(key)'")
                var elements: [GGUFValue] = []
                elements.reserveCapacity(Int(count))
                for _ in 0..<count {
                    elements.append(try value(type: elementType, typeOffset: elementTypeOffset, key: key, depth: depth + 1))
                }
                return .array(elements)
            case 10: return .uint64(try integer(UInt64.self, reading: what))
            case 11: return .int64(try integer(Int64.self, reading: what))
            case 12: return .float64(Double(bitPattern: try integer(UInt64.self, reading: what)))
            default: throw .invalidValueType(offset: typeOffset, key: key, found: type)
            }
        }

        /// Fewest bytes a value of a type can take (strings: their length; arrays: type + count).
        static func minimumSize(ofType type: UInt32) -> Int {
            switch type {
            case 0, 1, 7: 1
            case 2, 3: 2
            case 4, 5, 6: 4
            case 8, 10, 11, 12: 8
            case 9: 12
            default: 1
            }
        }
    }
}
