extension GGUFFile {
    /// The value of `key` as an integer. - Throws: when missing or not an integer.
    public func integer(_ key: String) throws(GGUFError) -> Int {
        guard let value = metadata[key] else { throw .missingKey(key) }
        guard let i = value.integer else { throw .wrongValueType(key: key, expected: "an integer", found: value.typeName) }
        return i
    }

    public func optionalInteger(_ key: String) throws(GGUFError) -> Int? {
        guard metadata[key] != nil else { return nil }
        return try integer(key)
    }

    public func real(_ key: String) throws(GGUFError) -> Double {
        guard let value = metadata[key] else { throw .missingKey(key) }
        guard let r = value.real else { throw .wrongValueType(key: key, expected: "a number", found: value.typeName) }
        return r
    }

    public func optionalReal(_ key: String) throws(GGUFError) -> Double? {
        guard metadata[key] != nil else { return nil }
        return try real(key)
    }

    public func string(_ key: String) throws(GGUFError) -> String {
        guard let value = metadata[key] else { throw .missingKey(key) }
        guard let s = value.string else { throw .wrongValueType(key: key, expected: "a string", found: value.typeName) }
        return s
    }

    public func optionalString(_ key: String) throws(GGUFError) -> String? {
        guard metadata[key] != nil else { return nil }
        return try string(key)
    }

    public func optionalBool(_ key: String) throws(GGUFError) -> Bool? {
        guard let value = metadata[key] else { return nil }
        guard let b = value.bool else { throw .wrongValueType(key: key, expected: "a bool", found: value.typeName) }
        return b
    }

    public func stringArray(_ key: String) throws(GGUFError) -> [String] {
        guard let value = metadata[key] else { throw .missingKey(key) }
        guard let items = value.array else { throw .wrongValueType(key: key, expected: "an array of strings", found: value.typeName) }
        var out: [String] = []
        out.reserveCapacity(items.count)
        for item in items {
            guard let s = item.string else {
                throw .wrongValueType(key: key, expected: "an array of strings", found: "an array of \(item.typeName)")
            }
            out.append(s)
        }
        return out
    }

    public func integerArray(_ key: String) throws(GGUFError) -> [Int] {
        guard let value = metadata[key] else { throw .missingKey(key) }
        guard let items = value.array else { throw .wrongValueType(key: key, expected: "an array of integers", found: value.typeName) }
        var out: [Int] = []
        out.reserveCapacity(items.count)
        for item in items {
            guard let i = item.integer else {
                throw .wrongValueType(key: key, expected: "an array of integers", found: "an array of \(item.typeName)")
            }
            out.append(i)
        }
        return out
    }
}
