#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Filters, tests, globals and the methods of strings and dicts, each as jinja2 (or Python) defines it.
extension Jinja.Interpreter {
    static let filterNames: Set = [
        "abs", "capitalize", "count", "d", "default", "dictsort", "e", "escape", "first", "float", "indent",
        "int", "items", "join", "last", "length", "list", "lower", "map", "reject", "rejectattr",
        "replace", "reverse", "round", "safe", "select", "selectattr", "sort", "string", "title", "tojson",
        "trim", "unique", "upper",
    ]
    static let testNames: Set = [
        "defined", "undefined", "none", "boolean", "false", "true", "integer", "float", "number", "string",
        "mapping", "iterable", "sequence", "callable", "even", "odd", "divisibleby", "eq", "equalto", "==", "ne",
        "!=", "lt", "lessthan", "<", "le", "<=", "gt", "greaterthan", ">", "ge", ">=", "in", "sameas", "lower",
        "upper",
    ]
    static let globalNames: Set = ["range", "namespace", "dict", "raise_exception", "strftime_now"]
    static let stringMethods: Set = [
        "strip", "lstrip", "rstrip", "split", "splitlines", "startswith", "endswith", "upper", "lower", "title",
        "capitalize", "replace", "find", "count", "join",
    ]
    static let dictMethods: Set = ["items", "keys", "values", "get"]

    /// Positional then keyword arguments matched to `names`; a missing one is `nil`.
    private func bind(_ what: String, _ names: [String], _ positional: [Value], _ keywords: [(String, Value)]) throws(JinjaError) -> [Value?] {
        guard positional.count <= names.count else {
            throw fail("\(what) takes at most \(names.count) argument(s), found \(positional.count)")
        }
        var bound: [Value?] = positional + Array(repeating: nil, count: names.count - positional.count)
        for (name, value) in keywords {
            guard let index = names.firstIndex(of: name) else { throw fail("\(what) got an unexpected argument '\(name)'") }
            if bound[index] != nil { throw fail("\(what) got multiple values for '\(name)'") }
            bound[index] = value
        }
        return bound
    }

    private func string(_ value: Value?, _ what: String) throws(JinjaError) -> String? {
        guard let value, !value.equals(.none) else { return nil }
        guard case .string(let s) = value else { throw fail("\(what) must be a string, found \(value.typeName)") }
        return s
    }

    private func integer(_ value: Value?, _ what: String) throws(JinjaError) -> Int? {
        guard let value else { return nil }
        guard case .int(let i)? = value.numeric else { throw fail("\(what) must be an integer, found \(value.typeName)") }
        return i
    }

    private func length(_ value: Value) throws(JinjaError) -> Int {
        switch value {
        case .string(let s): return s.unicodeScalars.count
        case .array(let items): return items.count
        case .object(let map): return map.keys.count
        case .undefined: return 0
        default: throw fail("object of type '\(value.typeName)' has no len()")
        }
    }

    /// jinja2's `make_attrgetter`: `"a.b.0"` looks up `a`, then `b`, then item 0.
    private func lookup(_ path: Value?, in item: Value, default fallback: Value? = nil) throws(JinjaError) -> Value {
        guard let path else { return item }
        var result = item
        let parts: [Value]
        if case .string(let s) = path {
            parts = s.split(separator: ".", omittingEmptySubsequences: false).map { Int($0).map(Value.int) ?? .string(String($0)) }
        } else {
            parts = [path]
        }
        for part in parts {
            result = try self.item(of: result, part)
            if let fallback, result.isUndefined { result = fallback }
        }
        return result
    }

    private func lowercasedIfString(_ value: Value) -> Value {
        if case .string(let s) = value { return .string(s.lowercased()) }
        return value
    }

    /// A stable sort, as Python's `sorted`: equal keys keep their order, also when reversed.
    private func sorted(_ items: [Value], keys: [Value], reverse: Bool) throws(JinjaError) -> [Value] {
        var failure: JinjaError?
        let order = items.indices.sorted { i, j in
            guard failure == nil else { return false }
            do throws(JinjaError) {
                let c = try self.order(keys[i], keys[j])
                return c == 0 ? i < j : (c < 0) != reverse
            } catch {
                failure = error
                return false
            }
        }
        if let failure { throw failure }
        return order.map { items[$0] }
    }

    // MARK: Filters

    func filter(_ name: String, _ value: Value, _ positional: [Value], _ keywords: [(String, Value)]) throws(JinjaError) -> Value {
        let what = "filter '\(name)'"
        func arguments(_ names: String...) throws(JinjaError) -> [Value?] { try bind(what, names, positional, keywords) }
        switch name {
        case "abs":
            _ = try arguments()
            switch value.numeric {
            case .int(let i)?:
                guard i != .min else { throw fail("integer overflow") }
                return .int(abs(i))
            case .double(let d)?: return .double(abs(d))
            default: throw fail("bad operand type for abs(): '\(value.typeName)'")
            }
        case "capitalize":
            _ = try arguments()
            return .string(Jinja.capitalized(value.text))
        case "count", "length":
            _ = try arguments()
            return .int(try length(value))
        case "d", "default":
            let a = try arguments("default_value", "boolean")
            let useDefault = value.isUndefined || ((a[1]?.isTruthy ?? false) && !value.isTruthy)
            return useDefault ? a[0] ?? .string("") : value
        case "dictsort":
            let a = try arguments("case_sensitive", "by", "reverse")
            guard case .object(let map) = value else { throw fail("dictsort expects a mapping, found \(value.typeName)") }
            let byValue = try string(a[1], "by") == "value"
            let caseSensitive = a[0]?.isTruthy ?? false
            let pairs = map.pairs.map { Value.array([.string($0.key), $0.value]) }
            let keys = map.pairs.map { pair in
                let key = byValue ? pair.value : .string(pair.key)
                return caseSensitive ? key : lowercasedIfString(key)
            }
            return .array(try sorted(pairs, keys: keys, reverse: a[2]?.isTruthy ?? false))
        case "e", "escape":
            _ = try arguments()
            return .string(Jinja.escapeHTML(value.text))
        case "first", "last":
            _ = try arguments()
            let items = try iterate(value)
            return (name == "first" ? items.first : items.last) ?? .undefined("no \(name) item, sequence was empty")
        case "float":
            let a = try arguments("default")
            switch value {
            case .undefined(let message): throw fail(message)
            case .string(let s): return Double(Jinja.pythonStrip(s)).map(Value.double) ?? a[0] ?? .double(0)
            default: return value.numeric.map { .double($0.asDouble) } ?? a[0] ?? .double(0)
            }
        case "indent":
            let a = try arguments("width", "first", "blank")
            if case .undefined(let message) = value { throw fail(message) }
            guard case .string(let text) = value else { throw fail("indent expects a string, found \(value.typeName)") }
            let indentation: String
            if case .string(let s)? = a[0] { indentation = s } else { indentation = String(repeating: " ", count: try integer(a[0], "width") ?? 4) }
            var lines = Jinja.splitLines(text + "\n")
            var result: String
            if a[2]?.isTruthy ?? false {
                result = lines.joined(separator: "\n" + indentation)
            } else {
                result = lines.isEmpty ? "" : lines.removeFirst()
                if !lines.isEmpty { result += "\n" + lines.map { $0.isEmpty ? $0 : indentation + $0 }.joined(separator: "\n") }
            }
            return .string((a[1]?.isTruthy ?? false) ? indentation + result : result)
        case "int":
            let a = try arguments("default", "base")
            let fallback = a[0] ?? .int(0)
            switch value {
            case .undefined(let message): throw fail(message)
            case .string(let s):
                let trimmed = Jinja.pythonStrip(s).filter { $0 != "_" }
                if let i = Int(trimmed, radix: try integer(a[1], "base") ?? 10) { return .int(i) }
                guard let d = Double(trimmed), d.isFinite, abs(d) < 9.2e18 else { return fallback }
                return .int(Int(d))
            case .double(let d):
                guard d.isFinite, abs(d) < 9.2e18 else { throw fail("cannot convert float \(Jinja.pythonFloat(d)) to integer") }
                return .int(Int(d))
            default:
                return value.numeric ?? fallback
            }
        case "items":
            _ = try arguments()
            switch value {
            case .object(let map): return .array(map.pairs.map { .array([.string($0.key), $0.value]) })
            case .undefined: return .array([])
            default: throw fail("items expects a mapping, found \(value.typeName)")
            }
        case "join":
            let a = try arguments("d", "attribute")
            var parts: [String] = []
            for item in try iterate(value) { parts.append(try lookup(a[1], in: item).text) }
            return .string(parts.joined(separator: a[0]?.text ?? ""))
        case "list":
            _ = try arguments()
            return .array(try iterate(value))
        case "lower":
            _ = try arguments()
            return .string(value.text.lowercased())
        case "upper":
            _ = try arguments()
            return .string(value.text.uppercased())
        case "map":
            guard value.isTruthy else { return .array([]) }
            var results: [Value] = []
            if positional.isEmpty, let attribute = keywords.first(where: { $0.0 == "attribute" })?.1 {
                let a = try bind(what, ["attribute", "default"], [], keywords)
                for item in try iterate(value) { results.append(try lookup(attribute, in: item, default: a[1])) }
            } else {
                guard let filterName = try string(positional.first, "the filter name") else { throw fail("map needs a filter name or attribute=") }
                guard Self.filterNames.contains(filterName) else { throw fail("unsupported filter '\(filterName)'") }
                for item in try iterate(value) {
                    results.append(try filter(filterName, item, Array(positional.dropFirst()), keywords))
                }
            }
            return .array(results)
        case "select", "reject", "selectattr", "rejectattr":
            guard value.isTruthy else { return .array([]) }
            let byAttribute = name.hasSuffix("attr")
            var rest = positional
            let attribute = byAttribute ? rest.first : nil
            if byAttribute {
                guard !rest.isEmpty else { throw fail("\(what) needs an attribute name") }
                rest.removeFirst()
            }
            let testName = try string(rest.first, "the test name")
            if let testName, !Self.testNames.contains(testName) { throw fail("unsupported test '\(testName)'") }
            let testArguments = Array(rest.dropFirst())
            var kept: [Value] = []
            for item in try iterate(value) {
                let subject = try lookup(attribute, in: item)
                let passes = try testName.map { n throws(JinjaError) in try test(n, subject, testArguments, keywords) } ?? subject.isTruthy
                if passes == name.hasPrefix("select") { kept.append(item) }
            }
            return .array(kept)
        case "replace":
            let a = try arguments("old", "new", "count")
            guard let old = a[0], let new = a[1] else { throw fail("replace needs the old and new strings") }
            return .string(Jinja.replace(value.text, old.text, new.text, count: try integer(a[2], "count") ?? -1))
        case "reverse":
            _ = try arguments()
            if case .string(let s) = value { return .string(String(String.UnicodeScalarView(s.unicodeScalars.reversed()))) }
            return .array(try iterate(value).reversed())
        case "round":
            let a = try arguments("precision", "method")
            let precision = try integer(a[0], "precision") ?? 0
            let method = try string(a[1], "method") ?? "common"
            guard ["common", "ceil", "floor"].contains(method) else { throw fail("method must be common, ceil or floor, found '\(method)'") }
            if case .undefined(let message) = value { throw fail(message) }
            guard let number = value.numeric else { throw fail("type \(value.typeName) doesn't define __round__ method") }
            if method == "common", case .int(let i) = number {
                guard precision < 0 else { return number }
                guard let rounded = Int(exactly: Jinja.pythonRound(Double(i), precision)) else { throw fail("integer overflow") }
                return .int(rounded)
            }
            if method == "common" { return .double(Jinja.pythonRound(number.asDouble, precision)) }
            let scale = pow(10, Double(precision))
            let scaled = number.asDouble * scale
            return .double((method == "ceil" ? scaled.rounded(.up) : scaled.rounded(.down)) / scale)
        case "safe":
            _ = try arguments()
            return value
        case "sort":
            let a = try arguments("reverse", "case_sensitive", "attribute")
            let items = try iterate(value)
            var keys: [Value] = []
            for item in items {
                var key: Value
                if case .string(let spec)? = a[2], spec.contains(",") {
                    var parts: [Value] = []
                    for part in spec.split(separator: ",") { parts.append(try lookup(.string(String(part)), in: item)) }
                    key = .array(parts)
                } else {
                    key = try lookup(a[2], in: item)
                }
                if !(a[1]?.isTruthy ?? false) { key = lowercasedIfString(key) }
                keys.append(key)
            }
            return .array(try sorted(items, keys: keys, reverse: a[0]?.isTruthy ?? false))
        case "string":
            _ = try arguments()
            return .string(value.text)
        case "title":
            _ = try arguments()
            return .string(Jinja.titled(value.text))
        case "tojson":
            let a = try arguments("indent", "ensure_ascii", "separators", "sort_keys")
            var indentation: String?
            switch a[0] {
            case .string(let s)?: indentation = s
            case nil, .none?: indentation = nil
            default: indentation = String(repeating: " ", count: max(try integer(a[0], "indent") ?? 0, 0))
            }
            var separators = (indentation == nil ? ", " : ",", ": ")
            if let given = a[2], !given.equals(.none) {
                let parts = try iterate(given)
                guard parts.count == 2, case .string(let item) = parts[0], case .string(let key) = parts[1] else {
                    throw fail("separators must be two strings")
                }
                separators = (item, key)
            }
            let format = JSONFormat(indent: indentation, itemSeparator: separators.0, keySeparator: separators.1,
                                    sortKeys: a[3]?.isTruthy ?? false, asciiOnly: a[1]?.isTruthy ?? false)
            var out = ""
            try json(value, format, level: 0, into: &out)
            return .string(out)
        case "trim":
            let a = try arguments("chars")
            return .string(Jinja.pythonStrip(value.text, chars: try string(a[0], "chars")))
        case "unique":
            let a = try arguments("case_sensitive", "attribute")
            var kept: [Value] = []
            var seen: [Value] = []
            for item in try iterate(value) {
                var key = try lookup(a[1], in: item)
                if !(a[0]?.isTruthy ?? false) { key = lowercasedIfString(key) }
                if !seen.contains(where: { $0.equals(key) }) {
                    seen.append(key)
                    kept.append(item)
                }
            }
            return .array(kept)
        default:
            throw fail("unsupported filter '\(name)'")
        }
    }

    // MARK: Tests

    func test(_ name: String, _ value: Value, _ positional: [Value], _ keywords: [(String, Value)]) throws(JinjaError) -> Bool {
        let a = try bind("test '\(name)'", ["other"], positional, keywords)
        func other() throws(JinjaError) -> Value {
            guard let other = a[0] else { throw fail("test '\(name)' needs an argument") }
            return other
        }
        switch name {
        case "defined": return !value.isUndefined
        case "undefined": return value.isUndefined
        case "none", "boolean", "integer", "float", "string", "mapping":
            let types = ["none": "NoneType", "boolean": "bool", "integer": "int", "float": "float", "string": "str", "mapping": "dict"]
            return value.typeName == types[name]
        case "true", "false": return value.typeName == "bool" && value.isTruthy == (name == "true")
        case "number": return value.numeric != nil
        case "iterable":
            switch value {
            case .array, .object, .string, .undefined, .loop: return true
            default: return false
            }
        case "sequence":
            switch value {
            case .array, .object, .string, .undefined: return true
            default: return false
            }
        case "callable":
            switch value {
            case .callable, .undefined: return true
            default: return false
            }
        case "even", "odd", "divisibleby":
            let divisor = name == "divisibleby" ? try other() : .int(2)
            let remainder = try binary("%", value, divisor)
            return remainder.equals(.int(name == "odd" ? 1 : 0))
        case "eq", "equalto", "==": return value.equals(try other())
        case "ne", "!=": return !value.equals(try other())
        case "lt", "lessthan", "<": return try order(value, try other(), "<") < 0
        case "le", "<=": return try order(value, try other(), "<=") <= 0
        case "gt", "greaterthan", ">": return try order(value, try other(), ">") > 0
        case "ge", ">=": return try order(value, try other(), ">=") >= 0
        case "in": return try contains(try other(), value)
        case "sameas":
            switch (value, try other()) {
            case (.none, .none): return true
            case (.bool(let x), .bool(let y)): return x == y
            case (.namespace(let x), .namespace(let y)): return x === y
            default: return false
            }
        case "lower", "upper":
            let cased = value.text.unicodeScalars.filter { $0.properties.isCased }
            guard !cased.isEmpty else { return false }
            return cased.allSatisfy { name == "lower" ? $0.properties.isLowercase : $0.properties.isUppercase }
        default:
            throw fail("unsupported test '\(name)'")
        }
    }

    // MARK: Globals

    func callGlobal(_ name: String, _ positional: [Value], _ keywords: [(String, Value)]) throws(JinjaError) -> Value {
        switch name {
        case "raise_exception":
            let a = try bind(name, ["message"], positional, keywords)
            throw JinjaError(message: a[0]?.text ?? "", line: tag.line, column: tag.column)
        case "range":
            guard keywords.isEmpty, (1...3).contains(positional.count) else { throw fail("range takes 1 to 3 integer arguments") }
            var bounds: [Int] = []
            for argument in positional { bounds.append(try integer(argument, "a range bound") ?? 0) }
            let (start, stop, step) = bounds.count == 1 ? (0, bounds[0], 1) : (bounds[0], bounds[1], bounds.count == 3 ? bounds[2] : 1)
            guard step != 0 else { throw fail("range() arg 3 must not be zero") }
            let count = step > 0 ? (stop - start + step - 1) / step : (start - stop - step - 1) / -step
            guard count <= 100_000 else { throw fail("range of \(count) items is too large") }
            return .array(Swift.stride(from: start, to: stop, by: step).map(Value.int))
        case "namespace", "dict":
            guard positional.count <= 1 else { throw fail("\(name) takes at most one positional argument") }
            var map = OrderedMap<Value>()
            if let first = positional.first {
                switch first {
                case .object(let given): map = given
                case .namespace(let given): map = given.attributes
                default:
                    for pair in try iterate(first) {
                        let items = try iterate(pair)
                        guard items.count == 2, case .string(let key) = items[0] else { throw fail("\(name) expects key-value pairs") }
                        map[key] = items[1]
                    }
                }
            }
            for (key, value) in keywords { map[key] = value }
            return name == "dict" ? .object(map) : .namespace(Jinja.Namespace(map))
        default:  // strftime_now
            let a = try bind(name, ["format"], positional, keywords)
            return .string(Jinja.strftimeNow(try string(a[0], "the format") ?? ""))
        }
    }

    // MARK: Methods

    func callMethod(_ receiver: Value, _ name: String, _ positional: [Value], _ keywords: [(String, Value)]) throws(JinjaError) -> Value {
        let what = "method '\(name)'"
        func arguments(_ names: String...) throws(JinjaError) -> [Value?] { try bind(what, names, positional, keywords) }
        if case .object(let map) = receiver {
            switch name {
            case "items":
                _ = try arguments()
                return .array(map.pairs.map { .array([.string($0.key), $0.value]) })
            case "keys":
                _ = try arguments()
                return .array(map.keys.map(Value.string))
            case "values":
                _ = try arguments()
                return .array(map.pairs.map(\.value))
            default:  // get
                let a = try arguments("key", "default")
                guard case .string(let key)? = a[0] else { return a[1] ?? .none }
                return map[key] ?? a[1] ?? .none
            }
        }
        guard case .string(let s) = receiver else { throw fail("'\(receiver.typeName)' object has no method '\(name)'") }
        switch name {
        case "strip", "lstrip", "rstrip":
            let a = try arguments("chars")
            return .string(Jinja.pythonStrip(s, chars: try string(a[0], "chars"), leading: name != "rstrip", trailing: name != "lstrip"))
        case "split":
            let a = try arguments("sep", "maxsplit")
            let separator = try string(a[0], "sep")
            if separator == "" { throw fail("empty separator") }
            return .array(Jinja.split(s, separator: separator, limit: try integer(a[1], "maxsplit") ?? -1).map(Value.string))
        case "splitlines":
            _ = try arguments()
            return .array(Jinja.splitLines(s).map(Value.string))
        case "startswith", "endswith":
            let a = try arguments("prefix")
            guard let affix = a[0] else { throw fail("\(what) needs an argument") }
            let candidates: [Value]
            if case .string = affix { candidates = [affix] } else { candidates = try iterate(affix) }
            let scalars = Array(s.unicodeScalars)
            for candidate in candidates {
                guard case .string(let c) = candidate else { throw fail("\(what) takes a string or a tuple of strings") }
                let cs = Array(c.unicodeScalars)
                if name == "startswith" ? scalars.starts(with: cs) : scalars.reversed().starts(with: cs.reversed()) { return .bool(true) }
            }
            return .bool(false)
        case "upper", "lower", "title", "capitalize":
            _ = try arguments()
            switch name {
            case "upper": return .string(s.uppercased())
            case "lower": return .string(s.lowercased())
            case "title": return .string(Jinja.pythonTitle(s))
            default: return .string(Jinja.capitalized(s))
            }
        case "replace":
            let a = try arguments("old", "new", "count")
            guard let old = try string(a[0], "old"), let new = try string(a[1], "new") else { throw fail("\(what) needs the old and new strings") }
            return .string(Jinja.replace(s, old, new, count: try integer(a[2], "count") ?? -1))
        case "find", "count":
            let a = try arguments("sub")
            guard let sub = try string(a[0], "sub") else { throw fail("\(what) needs a string") }
            let haystack = Array(s.unicodeScalars), needle = Array(sub.unicodeScalars)
            if name == "find" { return .int(Jinja.find(needle, in: haystack) ?? -1) }
            if needle.isEmpty { return .int(haystack.count + 1) }
            var (count, start) = (0, 0)
            while let found = Jinja.find(needle, in: haystack, from: start) {
                count += 1
                start = found + needle.count
            }
            return .int(count)
        default:  // join
            let a = try arguments("iterable")
            var parts: [String] = []
            for item in try iterate(a[0] ?? .array([])) {
                guard case .string(let part) = item else { throw fail("sequence item \(parts.count): expected str instance, \(item.typeName) found") }
                parts.append(part)
            }
            return .string(parts.joined(separator: s))
        }
    }
}

// MARK: - JSON

extension Jinja.Interpreter {
    struct JSONFormat {
        var indent: String?
        var itemSeparator: String
        var keySeparator: String
        var sortKeys: Bool
        var asciiOnly: Bool
    }

    /// Python's `json.dumps`.
    private func json(_ value: Value, _ format: JSONFormat, level: Int, into out: inout String) throws(JinjaError) {
        func newline(_ depth: Int) {
            if let indent = format.indent { out += "\n" + String(repeating: indent, count: depth) }
        }
        switch value {
        case .none: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .int(let i): out += String(i)
        case .double(let d): out += d.isNaN ? "NaN" : d.isInfinite ? (d < 0 ? "-Infinity" : "Infinity") : Jinja.pythonFloat(d)
        case .string(let s): jsonString(s, asciiOnly: format.asciiOnly, into: &out)
        case .array(let items):
            guard !items.isEmpty else { out += "[]"; return }
            out += "["
            for (index, item) in items.enumerated() {
                if index > 0 { out += format.itemSeparator }
                newline(level + 1)
                try json(item, format, level: level + 1, into: &out)
            }
            newline(level)
            out += "]"
        case .object(let map):
            guard !map.keys.isEmpty else { out += "{}"; return }
            let keys = format.sortKeys ? map.keys.sorted { $0.unicodeScalars.lexicographicallyPrecedes($1.unicodeScalars) } : map.keys
            out += "{"
            for (index, key) in keys.enumerated() {
                if index > 0 { out += format.itemSeparator }
                newline(level + 1)
                jsonString(key, asciiOnly: format.asciiOnly, into: &out)
                out += format.keySeparator
                try json(map[key] ?? .none, format, level: level + 1, into: &out)
            }
            newline(level)
            out += "}"
        default:
            throw fail("Object of type \(value.typeName) is not JSON serializable")
        }
    }

    private func jsonString(_ s: String, asciiOnly: Bool, into out: inout String) {
        var view = String.UnicodeScalarView()
        view.append("\"")
        func escape(_ code: UInt32) {
            let hex = String(code, radix: 16)
            view.append(contentsOf: ("\\u" + String(repeating: "0", count: 4 - hex.count) + hex).unicodeScalars)
        }
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": view.append(contentsOf: "\\\"".unicodeScalars)
            case "\\": view.append(contentsOf: "\\\\".unicodeScalars)
            case "\n": view.append(contentsOf: "\\n".unicodeScalars)
            case "\r": view.append(contentsOf: "\\r".unicodeScalars)
            case "\t": view.append(contentsOf: "\\t".unicodeScalars)
            case "\u{08}": view.append(contentsOf: "\\b".unicodeScalars)
            case "\u{0C}": view.append(contentsOf: "\\f".unicodeScalars)
            default:
                if scalar.value < 0x20 {
                    escape(scalar.value)
                } else if asciiOnly, scalar.value > 0x7E {
                    if scalar.value > 0xFFFF {
                        let v = scalar.value - 0x10000
                        escape(0xD800 + (v >> 10))
                        escape(0xDC00 + (v & 0x3FF))
                    } else {
                        escape(scalar.value)
                    }
                } else {
                    view.append(scalar)
                }
            }
        }
        view.append("\"")
        out += String(view)
    }
}

// MARK: - Python's string functions, on code points

extension Jinja {
    private static func string(_ scalars: some Sequence<Unicode.Scalar>) -> String {
        var view = String.UnicodeScalarView()
        view.append(contentsOf: scalars)
        return String(view)
    }

    /// `str.strip(chars)`: white space when `chars` is nil.
    static func pythonStrip(_ s: String, chars: String? = nil, leading: Bool = true, trailing: Bool = true) -> String {
        let set = chars.map { Set($0.unicodeScalars) }
        func strips(_ scalar: Unicode.Scalar) -> Bool { set?.contains(scalar) ?? isPythonSpace(scalar) }
        let scalars = Array(s.unicodeScalars)
        var start = 0, end = scalars.count
        if leading { while start < end, strips(scalars[start]) { start += 1 } }
        if trailing { while end > start, strips(scalars[end - 1]) { end -= 1 } }
        return string(scalars[start..<end])
    }

    /// `str.replace(old, new, count)`; an empty `old` inserts `new` around every character.
    static func replace(_ s: String, _ old: String, _ new: String, count: Int) -> String {
        let haystack = Array(s.unicodeScalars), needle = Array(old.unicodeScalars)
        var result = String.UnicodeScalarView()
        var (start, done) = (0, 0)
        while count < 0 || done < count {
            if needle.isEmpty {
                result.append(contentsOf: new.unicodeScalars)
                done += 1
                guard start < haystack.count else { return String(result) }
                result.append(haystack[start])
                start += 1
                continue
            }
            guard let found = Jinja.find(needle, in: haystack, from: start) else { break }
            result.append(contentsOf: haystack[start..<found])
            result.append(contentsOf: new.unicodeScalars)
            start = found + needle.count
            done += 1
        }
        result.append(contentsOf: haystack[start...])
        return String(result)
    }

    /// `str.split(sep, maxsplit)`: runs of white space when `separator` is nil.
    static func split(_ s: String, separator: String?, limit: Int) -> [String] {
        let scalars = Array(s.unicodeScalars)
        var parts: [String] = []
        guard let separator else {
            var i = 0
            while true {
                while i < scalars.count, isPythonSpace(scalars[i]) { i += 1 }
                guard i < scalars.count else { return parts }
                if limit >= 0, parts.count == limit {
                    parts.append(string(scalars[i...]))
                    return parts
                }
                let start = i
                while i < scalars.count, !isPythonSpace(scalars[i]) { i += 1 }
                parts.append(string(scalars[start..<i]))
            }
        }
        let needle = Array(separator.unicodeScalars)
        var start = 0
        while limit < 0 || parts.count < limit, let found = Jinja.find(needle, in: scalars, from: start) {
            parts.append(string(scalars[start..<found]))
            start = found + needle.count
        }
        parts.append(string(scalars[start...]))
        return parts
    }

    /// `str.splitlines()`: every line break Python knows, none kept, no empty last line.
    static func splitLines(_ s: String) -> [String] {
        let breaks: Set<UInt32> = [0x0A, 0x0B, 0x0C, 0x0D, 0x1C, 0x1D, 0x1E, 0x85, 0x2028, 0x2029]
        let scalars = Array(s.unicodeScalars)
        var lines: [String] = []
        var (start, i) = (0, 0)
        while i < scalars.count {
            if breaks.contains(scalars[i].value) {
                lines.append(string(scalars[start..<i]))
                if scalars[i] == "\r", i + 1 < scalars.count, scalars[i + 1] == "\n" { i += 1 }
                start = i + 1
            }
            i += 1
        }
        if start < scalars.count { lines.append(string(scalars[start...])) }
        return lines
    }

    /// `str.capitalize()`: the first character in title case, the rest lower case.
    static func capitalized(_ s: String) -> String {
        guard let first = s.unicodeScalars.first else { return s }
        return first.properties.titlecaseMapping + string(s.unicodeScalars.dropFirst()).lowercased()
    }

    /// `str.title()`: a cased character after an uncased one starts a word.
    static func pythonTitle(_ s: String) -> String {
        var result = ""
        var previousIsCased = false
        for scalar in s.unicodeScalars {
            let mapped = previousIsCased ? scalar.properties.lowercaseMapping : scalar.properties.titlecaseMapping
            result += mapped
            previousIsCased = mapped.unicodeScalars.last?.properties.isCased ?? false
        }
        return result
    }

    /// jinja2's `title` filter: words start after white space or one of `-([{<`.
    static func titled(_ s: String) -> String {
        var result = ""
        var atWordStart = true
        for scalar in s.unicodeScalars {
            let separates = isPythonSpace(scalar) || "-([{<".unicodeScalars.contains(scalar)
            if separates {
                result.unicodeScalars.append(scalar)
            } else {
                result += atWordStart ? scalar.properties.uppercaseMapping : scalar.properties.lowercaseMapping
            }
            atWordStart = separates
        }
        return result
    }

    static func escapeHTML(_ s: String) -> String {
        var result = ""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "&": result += "&amp;"
            case "<": result += "&lt;"
            case ">": result += "&gt;"
            case "\"": result += "&#34;"
            case "'": result += "&#39;"
            default: result.unicodeScalars.append(scalar)
            }
        }
        return result
    }

    // MARK: C library

    /// Python's `round(x, digits)`: correctly rounded, ties to even (what `printf`'s `%.*f` does).
    static func pythonRound(_ x: Double, _ digits: Int) -> Double {
        guard x.isFinite else { return x }
        if digits < 0 {
            let scale = pow(10, Double(-digits))
            return (x / scale).rounded(.toNearestOrEven) * scale
        }
        var buffer = [CChar](repeating: 0, count: 420 + min(digits, 400))
        let written = withVaList([Int32(min(digits, 400)), x]) { vsnprintf(&buffer, buffer.count, "%.*f", $0) }
        guard written > 0, written < buffer.count else { return x }
        let text = String(decoding: buffer[0..<Int(written)].map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return Double(text) ?? x
    }

    /// `datetime.now().strftime(format)`, local time.
    static func strftimeNow(_ format: String) -> String {
        var now = time(nil)
        var parts = tm()
        localtime_r(&now, &parts)
        var buffer = [CChar](repeating: 0, count: 512)
        let written = strftime(&buffer, buffer.count, format, &parts)
        return String(decoding: buffer[0..<written].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
