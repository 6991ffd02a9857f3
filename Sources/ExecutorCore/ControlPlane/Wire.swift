/// The control plane's binary encoding: little-endian integers and floats, arrays as a
/// u32 count then the elements, strings as a u32 byte count then UTF-8. Every message
/// starts with a 4-byte tag and a u16 version; a reader rejects any other version by name.
///
/// No JSON and no reflection: a step request is written as a few columns (all tokens, all
/// block tables, …) into a reused buffer, and read back with bounds and consistency checks
/// that fail with an error, never a crash.
public enum Wire {
    /// The encoding version this build speaks. Bump on any change to a message layout.
    public static let version: UInt16 = 7
}

/// Why a control-plane message could not be read.
public enum WireError: Error, Equatable, CustomStringConvertible {
    /// A message of another kind (its 4-byte tag).
    case wrongMessage(expected: String, found: String)
    /// A message from a build that speaks another encoding version.
    case versionMismatch(expected: UInt16, found: UInt16)
    /// The message ends inside a field.
    case truncated(offset: Int, needed: Int, size: Int, reading: String)
    /// A count or value outside what the field allows.
    case invalidValue(offset: Int, reading: String, found: String)
    /// Bytes left over after the message.
    case trailingBytes(count: Int)

    public var description: String {
        switch self {
        case let .wrongMessage(expected, found): "control-plane message: expected a \(expected) message, found tag '\(found)'"
        case let .versionMismatch(expected, found):
            "control-plane message version \(found) is not supported: this build speaks version \(expected) (mixed Cohort versions?)"
        case let .truncated(offset, needed, size, reading):
            "truncated control-plane message: reading \(reading) at offset \(offset) needs \(needed) bytes, the message has \(size)"
        case let .invalidValue(offset, reading, found): "invalid \(reading) at offset \(offset) of a control-plane message: \(found)"
        case let .trailingBytes(count): "control-plane message has \(count) unexpected trailing bytes"
        }
    }
}

/// Appends values to a byte buffer that is reused across messages.
///
/// The buffer is raw memory that grows by doubling and is never shrunk: each field is one
/// bounds check and one store, each column one copy (appending byte by byte to an array
/// took 5.4 µs for a 4.4 KB step request). Not copyable: one owner writes it.
public struct WireWriter: ~Copyable, @unchecked Sendable {
    // @unchecked: the buffer is owned by this value alone (it cannot be copied).
    private var storage: UnsafeMutableRawPointer
    private var capacity: Int
    /// Bytes written since the last `reset`.
    public private(set) var count = 0

    public init(capacity: Int = 4096) {
        self.capacity = max(capacity, 64)
        storage = .allocate(byteCount: self.capacity, alignment: 16)
    }

    deinit { storage.deallocate() }

    public mutating func reset() { count = 0 }

    /// The bytes written so far, valid inside `body` only.
    public func withBytes<R, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        try body(UnsafeRawBufferPointer(start: storage, count: count))
    }

    /// A copy of the bytes written so far.
    public var bytes: [UInt8] { withBytes { Array($0) } }

    @inline(__always)
    private mutating func reserve(_ n: Int) {
        if count + n > capacity { grow(to: count + n) }
    }

    private mutating func grow(to needed: Int) {
        var newCapacity = capacity * 2
        while newCapacity < needed { newCapacity *= 2 }
        let bigger = UnsafeMutableRawPointer.allocate(byteCount: newCapacity, alignment: 16)
        bigger.copyMemory(from: storage, byteCount: count)
        storage.deallocate()
        storage = bigger
        capacity = newCapacity
    }

    @inline(__always)
    private mutating func append(_ source: UnsafeRawBufferPointer) {
        reserve(source.count)
        if let base = source.baseAddress { (storage + count).copyMemory(from: base, byteCount: source.count) }
        count += source.count
    }

    public mutating func header(tag: StaticString) {
        precondition(tag.utf8CodeUnitCount == 4, "message tags have 4 bytes")
        tag.withUTF8Buffer { append(UnsafeRawBufferPointer($0)) }
        integer(Wire.version)
    }

    @inline(__always)
    public mutating func integer<T: FixedWidthInteger>(_ value: T) {
        reserve(MemoryLayout<T>.size)
        storage.storeBytes(of: value.littleEndian, toByteOffset: count, as: T.self)
        count += MemoryLayout<T>.size
    }

    @inline(__always)
    public mutating func float(_ value: Float) { integer(value.bitPattern) }

    @inline(__always)
    public mutating func bool(_ value: Bool) { integer(UInt8(value ? 1 : 0)) }

    @inline(__always)
    public mutating func count(_ n: Int) { integer(UInt32(n)) }

    public mutating func integers<T: FixedWidthInteger>(_ values: [T]) {
        count(values.count)
        #if _endian(little)
        values.withUnsafeBytes { append($0) }
        #else
        for v in values { integer(v) }
        #endif
    }

    public mutating func string(_ s: String) {
        var s = s
        s.withUTF8 { utf8 in
            count(utf8.count)
            append(UnsafeRawBufferPointer(utf8))
        }
    }
}

/// Reads values back with bounds checks.
public struct WireReader {
    public let bytes: UnsafeRawBufferPointer
    public private(set) var offset = 0

    public init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    public var remaining: Int { bytes.count - offset }

    /// Reads the tag and version; `anyVersion` accepts any version (a hello, which must be
    /// read to name a peer of another build).
    public mutating func header(tag: String, anyVersion: Bool = false) throws(WireError) {
        let found = try take(4, reading: "message tag")
        let text = String(decoding: found, as: UTF8.self)
        guard text == tag else { throw .wrongMessage(expected: tag, found: text) }
        let version = try integer(UInt16.self, reading: "version")
        guard anyVersion || version == Wire.version else { throw .versionMismatch(expected: Wire.version, found: version) }
    }

    mutating func take(_ n: Int, reading what: @autoclosure () -> String) throws(WireError) -> UnsafeRawBufferPointer {
        guard n <= remaining else { throw .truncated(offset: offset, needed: n, size: bytes.count, reading: what()) }
        defer { offset += n }
        return UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + n)])
    }

    public mutating func integer<T: FixedWidthInteger>(_: T.Type, reading what: @autoclosure () -> String) throws(WireError) -> T {
        T(littleEndian: try take(MemoryLayout<T>.size, reading: what()).loadUnaligned(as: T.self))
    }

    public mutating func float(reading what: @autoclosure () -> String) throws(WireError) -> Float {
        Float(bitPattern: try integer(UInt32.self, reading: what()))
    }

    public mutating func bool(reading what: @autoclosure () -> String) throws(WireError) -> Bool {
        let start = offset
        let b = try integer(UInt8.self, reading: what())
        guard b <= 1 else { throw .invalidValue(offset: start, reading: what(), found: "\(b), expected 0 or 1") }
        return b == 1
    }

    /// A count, checked against the bytes left for elements of at least `elementSize` bytes.
    public mutating func count(elementSize: Int, reading what: @autoclosure () -> String) throws(WireError) -> Int {
        let start = offset
        let n = Int(try integer(UInt32.self, reading: "count of \(what())"))
        guard n * max(elementSize, 1) <= remaining else {
            throw .invalidValue(offset: start, reading: "count of \(what())", found: "\(n) elements but \(remaining) bytes remain")
        }
        return n
    }

    /// Reads an integer array into `array`, reusing its capacity.
    public mutating func integers<T: FixedWidthInteger>(into array: inout [T], reading what: @autoclosure () -> String) throws(WireError) {
        let n = try count(elementSize: MemoryLayout<T>.size, reading: what())
        let raw = try take(n * MemoryLayout<T>.size, reading: what())
        if array.count != n {
            array.removeAll(keepingCapacity: true)
            array.append(contentsOf: repeatElement(0, count: n))
        }
        #if _endian(little)
        array.withUnsafeMutableBytes { $0.copyMemory(from: raw) }
        #else
        for i in 0..<n { array[i] = T(littleEndian: raw.loadUnaligned(fromByteOffset: i * MemoryLayout<T>.size, as: T.self)) }
        #endif
    }

    public mutating func integers<T: FixedWidthInteger>(_: T.Type, reading what: @autoclosure () -> String) throws(WireError) -> [T] {
        let n = try count(elementSize: MemoryLayout<T>.size, reading: what())
        guard n > 0 else { return [] }
        // The count was checked against the bytes left: copy them in one go.
        let raw = try take(n * MemoryLayout<T>.size, reading: what())
        return [T](unsafeUninitializedCapacity: n) { buffer, initialized in
            for i in 0..<n { buffer[i] = T(littleEndian: raw.loadUnaligned(fromByteOffset: i * MemoryLayout<T>.size, as: T.self)) }
            initialized = n
        }
    }

    public mutating func string(reading what: @autoclosure () -> String) throws(WireError) -> String {
        let n = try count(elementSize: 1, reading: what())
        let start = offset
        guard let s = String(validating: try take(n, reading: what()), as: UTF8.self) else {
            throw .invalidValue(offset: start, reading: what(), found: "bytes that are not UTF-8")
        }
        return s
    }

    /// An integer array that must hold exactly `count` elements (a column of a table).
    mutating func column<T: FixedWidthInteger>(into array: inout [T], count: Int, reading what: @autoclosure () -> String) throws(WireError) {
        let start = offset
        try integers(into: &array, reading: what())
        guard array.count == count else {
            throw .invalidValue(offset: start, reading: what(), found: "\(array.count) elements, expected \(count)")
        }
    }

    /// Checks the offsets of a ragged column (element i spans offsets[i]..<offsets[i + 1]):
    /// 0 first, never decreasing, `total` last.
    func checkOffsets(_ offsets: [Int32], total: Int, reading what: String) throws(WireError) {
        var previous: Int32 = 0
        for (i, o) in offsets.enumerated() {
            guard o >= previous, i > 0 || o == 0 else {
                throw .invalidValue(offset: offset, reading: what, found: "\(o) at index \(i) after \(previous), expected 0 then no decrease")
            }
            previous = o
        }
        guard Int(previous) == total else {
            throw .invalidValue(offset: offset, reading: what, found: "a last offset of \(previous) for \(total) elements")
        }
    }

    public func finish() throws(WireError) {
        guard remaining == 0 else { throw .trailingBytes(count: remaining) }
    }
}
