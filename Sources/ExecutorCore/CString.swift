extension String {
    /// The text of a C buffer a call filled in: its bytes up to the first NUL, as UTF-8
    /// (invalid sequences repaired). For error and name buffers handed to C functions.
    public init(filled buffer: [CChar]) {
        self.init(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
