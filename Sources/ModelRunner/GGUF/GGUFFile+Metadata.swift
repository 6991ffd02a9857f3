extension GGUFFile {
    /// The value of `key`, converted by `extract`; throws when missing or of another type.
    private func value<T>(_ key: String, expected: String, _ extract: (GGUFValue) -> T?) throws(GGUFError) -> T {
        guard let value = metadata[key] else { throw .missingKey(key) }
        guard let converted = extract(value) else { throw .wrongValueType(key: key, expected: expected, found: value.typeName) }
        return converted
    }

    /// The value of an optional key: nil when absent, an error when of another type.
    private func optional<T>(_ key: String, _ read: (String) throws(GGUFError) -> T) throws(GGUFError) -> T? {
        metadata[key] == nil ? nil : try read(key)
    }

    /// The value of `key` as an integer (any integer type that fits).
    public func integer(_ key: String) throws(GGUFError) -> Int { try value(key, expected: "an integer") { $0.integer } }
    public func optionalInteger(_ key: String) throws(GGUFError) -> Int? { try optional(key, integer) }

    /// The value of `key` as a number (float or integer).
    public func real(_ key: String) throws(GGUFError) -> Double { try value(key, expected: "a number") { $0.real } }
    public func optionalReal(_ key: String) throws(GGUFError) -> Double? { try optional(key, real) }

    public func string(_ key: String) throws(GGUFError) -> String { try value(key, expected: "a string") { $0.string } }
    public func optionalString(_ key: String) throws(GGUFError) -> String? { try optional(key, string) }

    public func bool(_ key: String) throws(GGUFError) -> Bool { try value(key, expected: "a bool") { $0.bool } }
    public func optionalBool(_ key: String) throws(GGUFError) -> Bool? { try optional(key, bool) }

    /// An array whose every element converts; the error names the element type found.
    private func array<T>(_ key: String, of expected: String, _ extract: (GGUFValue) -> T?) throws(GGUFError) -> [T] {
        let items = try value(key, expected: "an array of \(expected)") { $0.array }
        var out: [T] = []
        out.reserveCapacity(items.count)
        for item in items {
            guard let converted = extract(item) else {
                throw .wrongValueType(key: key, expected: "an array of \(expected)", found: "an array of \(item.typeName)")
            }
            out.append(converted)
        }
        return out
    }

    public func stringArray(_ key: String) throws(GGUFError) -> [String] { try array(key, of: "strings") { $0.string } }
    public func integerArray(_ key: String) throws(GGUFError) -> [Int] { try array(key, of: "integers") { $0.integer } }
    public func realArray(_ key: String) throws(GGUFError) -> [Double] { try array(key, of: "numbers") { $0.real } }
}
