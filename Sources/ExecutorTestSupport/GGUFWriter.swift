public import ModelRunner
public import Kernels

/// Writes GGUF files for tests: any metadata, tensors of any supported type.
public struct GGUFWriter {
    public struct Tensor {
        public var name: String
        public var dimensions: [Int]
        public var type: TensorType
        public var bytes: [UInt8]

        public init(name: String, dimensions: [Int], type: TensorType, bytes: [UInt8]) {
            self.name = name
            self.dimensions = dimensions
            self.type = type
            self.bytes = bytes
        }
    }

    public var version: UInt32 = 3
    public var alignment = 32
    public private(set) var metadata: [(String, GGUFValue)] = []
    public private(set) var tensors: [Tensor] = []

    public init() {}

    public mutating func set(_ key: String, _ value: GGUFValue) { metadata.append((key, value)) }

    /// Adds a tensor from float values, encoded as `type` (ggml order: `dimensions[0]` is the row).
    public mutating func add(_ name: String, dimensions: [Int], type: TensorType, values: [Float]) {
        precondition(values.count == dimensions.reduce(1, *), "\(name): \(values.count) values for \(dimensions)")
        tensors.append(Tensor(name: name, dimensions: dimensions, type: type, bytes: Quantize.bytes(type, values)))
    }

    public mutating func addRaw(_ tensor: Tensor) { tensors.append(tensor) }

    /// Edits the encoded bytes of tensor `name` (to corrupt a block, say).
    public mutating func modifyTensor(_ name: String, _ body: (inout [UInt8]) -> Void) {
        let i = tensors.firstIndex { $0.name == name }!
        body(&tensors[i].bytes)
    }

    /// The file's bytes.
    public func bytes() -> [UInt8] {
        var out: [UInt8] = []
        func int<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) } }
        func string(_ s: String) {
            int(UInt64(s.utf8.count))
            out.append(contentsOf: s.utf8)
        }
        func typeID(_ v: GGUFValue) -> UInt32 {
            switch v {
            case .uint8: 0
            case .int8: 1
            case .uint16: 2
            case .int16: 3
            case .uint32: 4
            case .int32: 5
            case .float32: 6
            case .bool: 7
            case .string: 8
            case .array: 9
            case .uint64: 10
            case .int64: 11
            case .float64: 12
            }
        }
        func value(_ v: GGUFValue) {
            switch v {
            case let .uint8(x): int(x)
            case let .int8(x): int(x)
            case let .uint16(x): int(x)
            case let .int16(x): int(x)
            case let .uint32(x): int(x)
            case let .int32(x): int(x)
            case let .float32(x): int(x.bitPattern)
            case let .bool(x): int(UInt8(x ? 1 : 0))
            case let .string(s): string(s)
            case let .array(items):
                int(items.first.map(typeID) ?? 4)
                int(UInt64(items.count))
                for item in items { value(item) }
            case let .uint64(x): int(x)
            case let .int64(x): int(x)
            case let .float64(x): int(x.bitPattern)
            }
        }
        out.append(contentsOf: Array("GGUF".utf8))
        int(version)
        int(UInt64(tensors.count))
        int(UInt64(metadata.count))
        for (key, v) in metadata {
            string(key)
            int(typeID(v))
            value(v)
        }
        var offset = 0
        var offsets: [Int] = []
        for t in tensors {
            offsets.append(offset)
            offset = (offset + t.bytes.count + alignment - 1) / alignment * alignment
        }
        for (t, o) in zip(tensors, offsets) {
            string(t.name)
            int(UInt32(t.dimensions.count))
            for d in t.dimensions { int(UInt64(d)) }
            int(t.type.rawValue)
            int(UInt64(o))
        }
        while out.count % alignment != 0 { out.append(0) }
        let dataStart = out.count
        for (t, o) in zip(tensors, offsets) {
            while out.count < dataStart + o { out.append(0) }
            out.append(contentsOf: t.bytes)
        }
        return out
    }

    /// Writes the file to a fresh temporary path and returns it.
    public func write(named name: String = "model") throws -> String {
        let path = TemporaryFiles.path(name + ".gguf")
        try TemporaryFiles.write(bytes(), to: path)
        return path
    }
}
