/// GPT-2's reversible map between bytes and printable Unicode scalars, used by byte-level
/// BPE vocabularies: printable Latin-1 bytes map to themselves, the other 68 bytes to
/// U+0100 onwards.
enum ByteLevel {
    /// Scalar for each byte.
    static let scalarOfByte: [Unicode.Scalar] = {
        var printable: [Int] = Array(33...126) + Array(161...172) + Array(174...255)
        var scalars = [Unicode.Scalar](repeating: "\0", count: 256)
        for b in printable { scalars[b] = Unicode.Scalar(UInt32(b))! }
        var next: UInt32 = 256
        for b in 0..<256 where !printable.contains(b) {
            scalars[b] = Unicode.Scalar(next)!
            next += 1
            printable.append(b)
        }
        return scalars
    }()

    /// Byte for each scalar value below 512 (-1 where none).
    static let byteOfScalar: [Int16] = {
        var table = [Int16](repeating: -1, count: 512)
        for (b, s) in scalarOfByte.enumerated() { table[Int(s.value)] = Int16(b) }
        return table
    }()

    /// The byte-level string of raw bytes.
    static func encode(_ bytes: some Sequence<UInt8>) -> String {
        var s = String.UnicodeScalarView()
        for b in bytes { s.append(scalarOfByte[Int(b)]) }
        return String(s)
    }

    /// Raw bytes of a byte-level token string; nil if it holds a scalar outside the map.
    static func decode(_ text: String) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(text.unicodeScalars.count)
        for s in text.unicodeScalars {
            guard s.value < 512, byteOfScalar[Int(s.value)] >= 0 else { return nil }
            out.append(UInt8(byteOfScalar[Int(s.value)]))
        }
        return out
    }
}
