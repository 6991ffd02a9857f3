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
        guard let value else { return nil }
        if case .none = value { return nil }
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
        case .string(let s):
            try chargeText(s.utf8.count)
            return s.unicodeScalars.count
        case .array(let list): return list.count
        case .object(let dict): return dict.count
        case .undefined: return 0
        default: throw fail("object of type '\(value.typeName)' has no len()")
        }
    }

    /// `transform(input)`, a function of the input's size, charged for both and checked against the text limit.
    private func mapped(_ input: String, _ transform: (String) -> String) throws(JinjaError) -> Value {
        try chargeText(input.utf8.count)
        return try built(transform(input))
    }

    /// `parts` joined by `separator`, within the text limit.
    private func joined(_ parts: [String], separator: String) throws(JinjaError) -> Value {
        var bytes = Self.product(separator.utf8.count, max(parts.count - 1, 0))
        for part in parts { bytes = Self.sum(bytes, part.utf8.count) }
        try checkText(bytes)
        try chargeText(bytes)
        return .string(parts.joined(separator: separator))
    }

    /// `str.replace`, within the text limit.
    private func replaced(_ s: String, _ old: String, _ new: String, count: Int) throws(JinjaError) -> Value {
        try chargeText(Self.sum(s.utf8.count, old.utf8.count))
        let bytes = Jinja.replacedSize(s, old, new, count: count)
        try checkText(bytes)
        try chargeText(bytes)
        return .string(Jinja.replace(s, old, new, count: count))
    }

    /// jinja2's `make_attrgetter` path: `"a.b.0"` looks up `a`, then `b`, then item 0.
    private func attributePath(_ path: Value?) throws(JinjaError) -> [Value]? {
        guard let path else { return nil }
        guard case .string(let s) = path else { return [path] }
        try chargeText(s.utf8.count)
        return s.split(separator: ".", omittingEmptySubsequences: false).map { Int($0).map(Value.int) ?? .string(String($0)) }
    }

    private func lookup(_ path: [Value]?, in item: Value, default fallback: Value? = nil) throws(JinjaError) -> Value {
        guard let path else { return item }
        try charge(path.count)
        var result = item
        for part in path {
            result = try self.item(of: result, part)
            if let fallback, result.isUndefined { result = fallback }
        }
        return result
    }

    private func lowercasedIfString(_ value: Value) throws(JinjaError) -> Value {
        if case .string(let s) = value { return try mapped(s) { $0.lowercased() } }
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

    /// A width given as a number of spaces, within the text limit (Python's `" " * -1` is empty).
    private func spaces(_ width: Value?, _ what: String, default fallback: Int) throws(JinjaError) -> String {
        let count = max(try integer(width, what) ?? fallback, 0)
        try checkText(count)
        return String(repeating: " ", count: count)
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
                guard i != .min else { throw fail("integer overflow in abs(\(i))") }
                return .int(abs(i))
            case .double(let d)?: return .double(abs(d))
            default: throw fail("bad operand type for abs(): '\(value.typeName)'")
            }
        case "capitalize":
            _ = try arguments()
            return try mapped(try text(value), Jinja.capitalized)
        case "count", "length":
            _ = try arguments()
            return .int(try length(value))
        case "d", "default":
            let a = try arguments("default_value", "boolean")
            let useDefault = value.isUndefined || ((a[1]?.isTruthy ?? false) && !value.isTruthy)
            return useDefault ? a[0] ?? .string("") : value
        case "dictsort":
            let a = try arguments("case_sensitive", "by", "reverse")
            guard case .object(let dict) = value else { throw fail("dictsort expects a mapping, found \(value.typeName)") }
            let byValue = try string(a[1], "by") == "value"
            let caseSensitive = a[0]?.isTruthy ?? false
            try charge(dict.count)
            let pairs = dict.pairs.map { Value.list([.string($0.key), $0.value]) }
            var keys: [Value] = []
            for pair in dict.pairs {
                let key = byValue ? pair.value : .string(pair.key)
                keys.append(caseSensitive ? key : try lowercasedIfString(key))
            }
            return try list(try sorted(pairs, keys: keys, reverse: a[2]?.isTruthy ?? false))
        case "e", "escape":
            _ = try arguments()
            return try mapped(try text(value), Jinja.escapeHTML)
        case "first", "last":
            _ = try arguments()
            let items = try iterate(value)
            return (name == "first" ? items.first : items.last) ?? .undefined("no \(name) item, sequence was empty")
        case "float":
            let a = try arguments("default")
            switch value {
            case .undefined(let message): throw fail(message)
            case .string(let s):
                try chargeText(s.utf8.count)
                return Double(Jinja.pythonStrip(s)).map(Value.double) ?? a[0] ?? .double(0)
            default: return value.numeric.map { .double($0.asDouble) } ?? a[0] ?? .double(0)
            }
        case "indent":
            let a = try arguments("width", "first", "blank")
            if case .undefined(let message) = value { throw fail(message) }
            guard case .string(let text) = value else { throw fail("indent expects a string, found \(value.typeName)") }
            let indentation: String
            if case .string(let s)? = a[0] { indentation = s } else { indentation = try spaces(a[0], "width", default: 4) }
            try chargeText(text.utf8.count)
            var lines = Jinja.splitLines(text + "\n")
            // At most one indentation per line, and one more before the first.
            let bytes = Self.sum(text.utf8.count + 1, Self.product(lines.count + 1, indentation.utf8.count))
            try checkText(bytes)
            try chargeText(bytes)
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
                try chargeText(s.utf8.count)
                let trimmed = Jinja.pythonStrip(s).filter { $0 != "_" }
                if let i = Jinja.parseInt(trimmed, base: try integer(a[1], "base") ?? 10) { return .int(i) }
                // jinja2 falls back to int(float(value)), also for a base int() does not take.
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
            case .object(let dict):
                try charge(dict.count)
                return try list(dict.pairs.map { .list([.string($0.key), $0.value]) })
            case .undefined: return .list([])
            default: throw fail("items expects a mapping, found \(value.typeName)")
            }
        case "join":
            let a = try arguments("d", "attribute")
            let path = try attributePath(a[1])
            var parts: [String] = []
            for item in try iterate(value) { parts.append(try text(try lookup(path, in: item))) }
            return try joined(parts, separator: try a[0].map { v throws(JinjaError) in try text(v) } ?? "")
        case "list":
            _ = try arguments()
            if case .array = value { return value }
            return try list(try iterate(value))
        case "lower":
            _ = try arguments()
            return try mapped(try text(value)) { $0.lowercased() }
        case "upper":
            _ = try arguments()
            return try mapped(try text(value)) { $0.uppercased() }
        case "map":
            guard value.isTruthy else { return .list([]) }
            var results: [Value] = []
            if positional.isEmpty, let attribute = keywords.first(where: { $0.0 == "attribute" })?.1 {
                let a = try bind(what, ["attribute", "default"], [], keywords)
                let path = try attributePath(attribute)
                for item in try iterate(value) { results.append(try lookup(path, in: item, default: a[1])) }
            } else {
                guard let filterName = try string(positional.first, "the filter name") else { throw fail("map needs a filter name or attribute=") }
                guard Self.filterNames.contains(filterName) else { throw fail("unsupported filter '\(filterName)'") }
                // Applying map through map would recurse once per argument the template gives.
                guard filterName != "map" else { throw fail("map cannot apply the filter 'map' itself") }
                for item in try iterate(value) {
                    results.append(try filter(filterName, item, Array(positional.dropFirst()), keywords))
                }
            }
            return try list(results)
        case "select", "reject", "selectattr", "rejectattr":
            guard value.isTruthy else { return .list([]) }
            let byAttribute = name.hasSuffix("attr")
            var rest = positional
            let path = byAttribute ? try attributePath(rest.first) : nil
            if byAttribute {
                guard !rest.isEmpty else { throw fail("\(what) needs an attribute name") }
                rest.removeFirst()
            }
            let testName = try string(rest.first, "the test name")
            if let testName, !Self.testNames.contains(testName) { throw fail("unsupported test '\(testName)'") }
            let testArguments = Array(rest.dropFirst())
            var kept: [Value] = []
            for item in try iterate(value) {
                let subject = try lookup(path, in: item)
                let passes = try testName.map { n throws(JinjaError) in try test(n, subject, testArguments, keywords) } ?? subject.isTruthy
                if passes == name.hasPrefix("select") { kept.append(item) }
            }
            return try list(kept)
        case "replace":
            let a = try arguments("old", "new", "count")
            guard let old = a[0], let new = a[1] else { throw fail("replace needs the old and new strings") }
            return try replaced(try text(value), try text(old), try text(new), count: try integer(a[2], "count") ?? -1)
        case "reverse":
            _ = try arguments()
            if case .string(let s) = value { return try mapped(s) { String(String.UnicodeScalarView($0.unicodeScalars.reversed())) } }
            return try list(try iterate(value).reversed())
        case "round":
            let a = try arguments("precision", "method")
            let precision = try integer(a[0], "precision") ?? 0
            let method = try string(a[1], "method") ?? "common"
            guard ["common", "ceil", "floor"].contains(method) else { throw fail("method must be common, ceil or floor, found '\(method)'") }
            if case .undefined(let message) = value { throw fail(message) }
            guard let number = value.numeric else { throw fail("type \(value.typeName) doesn't define __round__ method") }
            if method == "common", case .int(let i) = number {
                guard precision < 0 else { return number }
                guard let rounded = Int(exactly: Jinja.pythonRound(Double(i), precision)) else {
                    throw fail("integer overflow in round(\(i), \(precision))")
                }
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
            var paths: [[Value]?] = [try attributePath(a[2])]
            if case .string(let spec)? = a[2], spec.contains(",") {
                paths = []
                for part in spec.split(separator: ",") { paths.append(try attributePath(.string(String(part)))) }
            }
            var keys: [Value] = []
            for item in items {
                var key: Value
                if paths.count > 1 {
                    var parts: [Value] = []
                    for path in paths { parts.append(try lookup(path, in: item)) }
                    key = .list(parts)
                } else {
                    key = try lookup(paths.first ?? nil, in: item)
                }
                if !(a[1]?.isTruthy ?? false) { key = try lowercasedIfString(key) }
                keys.append(key)
            }
            return try list(try sorted(items, keys: keys, reverse: a[0]?.isTruthy ?? false))
        case "string":
            _ = try arguments()
            return .string(try text(value))
        case "title":
            _ = try arguments()
            return try mapped(try text(value), Jinja.titled)
        case "tojson":
            let a = try arguments("indent", "ensure_ascii", "separators", "sort_keys")
            var indentation: String?
            switch a[0] {
            case .string(let s)?: indentation = s
            case nil, .none?: indentation = nil
            default: indentation = try spaces(a[0], "indent", default: 0)
            }
            var separators = (indentation == nil ? ", " : ",", ": ")
            if let given = a[2] {
                if case .none = given {} else {
                    let parts = try iterate(given)
                    guard parts.count == 2, case .string(let item) = parts[0], case .string(let key) = parts[1] else {
                        throw fail("separators must be two strings")
                    }
                    separators = (item, key)
                }
            }
            let format = JSONFormat(indent: indentation, itemSeparator: separators.0, keySeparator: separators.1,
                                    sortKeys: a[3]?.isTruthy ?? false, asciiOnly: a[1]?.isTruthy ?? false)
            return .string(try json(value, format))
        case "trim":
            let a = try arguments("chars")
            let chars = try string(a[0], "chars")
            try chargeText(chars?.utf8.count ?? 0)
            return try mapped(try text(value)) { Jinja.pythonStrip($0, chars: chars) }
        case "unique":
            let a = try arguments("case_sensitive", "attribute")
            let path = try attributePath(a[1])
            var kept: [Value] = []
            var seen: [Value] = []
            for item in try iterate(value) {
                var key = try lookup(path, in: item)
                if !(a[0]?.isTruthy ?? false) { key = try lowercasedIfString(key) }
                var isNew = true
                for earlier in seen where try equals(earlier, key) {
                    isNew = false
                    break
                }
                if isNew {
                    seen.append(key)
                    kept.append(item)
                }
            }
            return try list(kept)
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
            return try equals(remainder, .int(name == "odd" ? 1 : 0))
        case "eq", "equalto", "==": return try equals(value, try other())
        case "ne", "!=": return try !equals(value, try other())
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
            let text = try text(value)
            try chargeText(text.utf8.count)
            let cased = text.unicodeScalars.filter { $0.properties.isCased }
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
            throw JinjaError(message: try a[0].map { v throws(JinjaError) in try text(v) } ?? "", line: tag.line, column: tag.column)
        case "range":
            guard keywords.isEmpty, (1...3).contains(positional.count) else { throw fail("range takes 1 to 3 integer arguments") }
            var bounds: [Int] = []
            for argument in positional { bounds.append(try integer(argument, "a range bound") ?? 0) }
            let (start, stop, step) = bounds.count == 1 ? (0, bounds[0], 1) : (bounds[0], bounds[1], bounds.count == 3 ? bounds[2] : 1)
            guard step != 0 else { throw fail("range() arg 3 must not be zero") }
            // The count in UInt: the distance between two Ints, and the step's magnitude, always fit.
            let count: UInt
            if step > 0 {
                count = start < stop ? (UInt(bitPattern: stop &- start) - 1) / step.magnitude + 1 : 0
            } else {
                count = start > stop ? (UInt(bitPattern: start &- stop) - 1) / step.magnitude + 1 : 0
            }
            guard count <= UInt(max(limits.steps, 0)) else {
                throw fail("range of \(count) items is larger than the template's budget of \(limits.steps) steps")
            }
            try charge(Int(count))
            var items: [Value] = []
            items.reserveCapacity(Int(count))
            var next = start
            for _ in 0..<Int(count) {
                items.append(.int(next))
                next &+= step  // past the last item this may wrap; it is not used then
            }
            return .list(items)
        case "namespace", "dict":
            guard positional.count <= 1 else { throw fail("\(name) takes at most one positional argument") }
            var map = OrderedMap<Value>()
            if let first = positional.first {
                switch first {
                case .object(let given): map = given.map
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
            guard name == "namespace" else { return try dict(map) }
            for (key, value) in map.pairs { try checkAttribute(value, "the namespace's '\(key)'") }
            return .namespace(Jinja.Namespace(map))
        default:  // strftime_now
            let a = try bind(name, ["format"], positional, keywords)
            let format = try string(a[0], "the format") ?? ""
            try chargeText(format.utf8.count)
            return .string(Jinja.strftimeNow(format))
        }
    }

    // MARK: Methods

    func callMethod(_ receiver: Value, _ name: String, _ positional: [Value], _ keywords: [(String, Value)]) throws(JinjaError) -> Value {
        let what = "method '\(name)'"
        func arguments(_ names: String...) throws(JinjaError) -> [Value?] { try bind(what, names, positional, keywords) }
        if case .object(let dict) = receiver {
            switch name {
            case "items":
                _ = try arguments()
                try charge(dict.count)
                return try list(dict.pairs.map { .list([.string($0.key), $0.value]) })
            case "keys":
                _ = try arguments()
                try charge(dict.count)
                return .list(dict.keys.map(Value.string))
            case "values":
                _ = try arguments()
                try charge(dict.count)
                return .list(dict.pairs.map(\.value))
            default:  // get
                let a = try arguments("key", "default")
                guard case .string(let key)? = a[0] else { return a[1] ?? .none }
                return dict[key] ?? a[1] ?? .none
            }
        }
        guard case .string(let s) = receiver else { throw fail("'\(receiver.typeName)' object has no method '\(name)'") }
        switch name {
        case "strip", "lstrip", "rstrip":
            let a = try arguments("chars")
            let chars = try string(a[0], "chars")
            try chargeText(chars?.utf8.count ?? 0)
            return try mapped(s) { Jinja.pythonStrip($0, chars: chars, leading: name != "rstrip", trailing: name != "lstrip") }
        case "split":
            let a = try arguments("sep", "maxsplit")
            let separator = try string(a[0], "sep")
            if separator == "" { throw fail("empty separator") }
            let limit = try integer(a[1], "maxsplit") ?? -1
            try chargeText(Self.sum(s.utf8.count, separator?.utf8.count ?? 0))
            let parts = Jinja.split(s, separator: separator, limit: limit)
            try charge(parts.count)
            return .list(parts.map(Value.string))
        case "splitlines":
            _ = try arguments()
            try chargeText(s.utf8.count)
            let lines = Jinja.splitLines(s)
            try charge(lines.count)
            return .list(lines.map(Value.string))
        case "startswith", "endswith":
            let a = try arguments("prefix")
            guard let affix = a[0] else { throw fail("\(what) needs an argument") }
            let candidates: [Value]
            if case .string = affix { candidates = [affix] } else { candidates = try iterate(affix) }
            for candidate in candidates {
                guard case .string(let c) = candidate else { throw fail("\(what) takes a string or a tuple of strings") }
                try chargeText(c.utf8.count)
                // Code points match where their UTF-8 bytes do.
                if name == "startswith" ? s.utf8.starts(with: c.utf8) : s.utf8.reversed().starts(with: c.utf8.reversed()) { return .bool(true) }
            }
            return .bool(false)
        case "upper", "lower", "title", "capitalize":
            _ = try arguments()
            switch name {
            case "upper": return try mapped(s) { $0.uppercased() }
            case "lower": return try mapped(s) { $0.lowercased() }
            case "title": return try mapped(s, Jinja.pythonTitle)
            default: return try mapped(s, Jinja.capitalized)
            }
        case "replace":
            let a = try arguments("old", "new", "count")
            guard let old = try string(a[0], "old"), let new = try string(a[1], "new") else { throw fail("\(what) needs the old and new strings") }
            return try replaced(s, old, new, count: try integer(a[2], "count") ?? -1)
        case "find", "count":
            let a = try arguments("sub")
            guard let sub = try string(a[0], "sub") else { throw fail("\(what) needs a string") }
            try chargeText(Self.sum(s.utf8.count, sub.utf8.count))
            let haystack = Array(s.unicodeScalars), needle = Array(sub.unicodeScalars)
            if name == "find" { return .int(Jinja.find(needle, in: haystack) ?? -1) }
            return .int(Jinja.occurrences(of: needle, in: haystack, limit: -1))
        default:  // join
            let a = try arguments("iterable")
            var parts: [String] = []
            for item in try iterate(a[0] ?? .list([])) {
                guard case .string(let part) = item else { throw fail("sequence item \(parts.count): expected str instance, \(item.typeName) found") }
                parts.append(part)
            }
            return try joined(parts, separator: s)
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

    /// Python's `json.dumps`, within the depth and text limits. A loop over pending work rather than a
    /// recursion, so that the stack it takes does not grow with the value's depth.
    private func json(_ value: Value, _ format: JSONFormat) throws(JinjaError) -> String {
        enum Work {
            case value(Value, level: Int)
            case key(String)
            case text(String)
            /// A line break and the indentation of this level, when indenting.
            case newline(Int)
        }
        var out = ""
        var work: [Work] = [.value(value, level: 0)]  // the next piece last
        while let next = work.popLast() {
            switch next {
            case .text(let text):
                out += text
            case .key(let key):
                try jsonString(key, asciiOnly: format.asciiOnly, into: &out)
            case .newline(let level):
                guard let indent = format.indent else { break }
                try checkText(Self.sum(out.utf8.count + 1, Self.product(indent.utf8.count, level)))
                out += "\n" + String(repeating: indent, count: level)
            case .value(let value, let level):
                try charge(1)
                switch value {
                case .none: out += "null"
                case .bool(let b): out += b ? "true" : "false"
                case .int(let i): out += String(i)
                case .double(let d): out += d.isNaN ? "NaN" : d.isInfinite ? (d < 0 ? "-Infinity" : "Infinity") : Jinja.pythonFloat(d)
                case .string(let s): try jsonString(s, asciiOnly: format.asciiOnly, into: &out)
                case .array(let list):
                    guard !list.isEmpty else { out += "[]"; break }
                    guard level < Self.maxValueDepth else { throw fail("tojson goes at most \(Self.maxValueDepth) levels deep, found a value nested deeper") }
                    out += "["
                    work.append(.text("]"))
                    work.append(.newline(level))
                    for index in list.indices.reversed() {
                        work.append(.value(list[index], level: level + 1))
                        work.append(.newline(level + 1))
                        if index > 0 { work.append(.text(format.itemSeparator)) }
                    }
                case .object(let dict):
                    guard dict.count > 0 else { out += "{}"; break }
                    guard level < Self.maxValueDepth else { throw fail("tojson goes at most \(Self.maxValueDepth) levels deep, found a value nested deeper") }
                    var keys = dict.keys
                    if format.sortKeys {
                        try charge(dict.count)
                        keys.sort { $0.utf8.lexicographicallyPrecedes($1.utf8) }  // UTF-8 bytes order as code points do
                    }
                    out += "{"
                    work.append(.text("}"))
                    work.append(.newline(level))
                    for (index, key) in keys.enumerated().reversed() {
                        work.append(.value(dict[key] ?? .none, level: level + 1))
                        work.append(.text(format.keySeparator))
                        work.append(.key(key))
                        work.append(.newline(level + 1))
                        if index > 0 { work.append(.text(format.itemSeparator)) }
                    }
                default:
                    throw fail("Object of type \(value.typeName) is not JSON serializable")
                }
            }
            try checkText(out.utf8.count)
        }
        return out
    }

    private func jsonString(_ s: String, asciiOnly: Bool, into out: inout String) throws(JinjaError) {
        try checkText(Self.sum(out.utf8.count, s.utf8.count))
        try chargeText(s.utf8.count)
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
        let finder = Finder(needle)
        while count < 0 || done < count {
            if needle.isEmpty {
                result.append(contentsOf: new.unicodeScalars)
                done += 1
                guard start < haystack.count else { return String(result) }
                result.append(haystack[start])
                start += 1
                continue
            }
            guard let found = finder.find(in: haystack, from: start) else { break }
            result.append(contentsOf: haystack[start..<found])
            result.append(contentsOf: new.unicodeScalars)
            start = found + needle.count
            done += 1
        }
        result.append(contentsOf: haystack[start...])
        return String(result)
    }

    /// How many UTF-8 bytes `replace(s, old, new, count: count)` gives, found without building it
    /// (saturating at `Int.max`).
    static func replacedSize(_ s: String, _ old: String, _ new: String, count: Int) -> Int {
        let haystack = Array(s.unicodeScalars)
        let replacements = occurrences(of: Array(old.unicodeScalars), in: haystack, limit: count)
        let (added, overflow) = replacements.multipliedReportingOverflow(by: new.utf8.count - old.utf8.count)
        let (total, overflowAgain) = s.utf8.count.addingReportingOverflow(added)
        return overflow || overflowAgain ? .max : total
    }

    /// `str.count(needle)`: non-overlapping occurrences, at most `limit` of them when it is not negative;
    /// an empty needle occurs before every character and at the end.
    static func occurrences(of needle: [Unicode.Scalar], in haystack: [Unicode.Scalar], limit: Int) -> Int {
        if needle.isEmpty { return limit < 0 ? haystack.count + 1 : min(limit, haystack.count + 1) }
        let finder = Finder(needle)
        var (found, start) = (0, 0)
        while limit < 0 || found < limit, let position = finder.find(in: haystack, from: start) {
            found += 1
            start = position + needle.count
        }
        return found
    }

    /// Python's `int(text, base)` for bases 2 to 36, and 0 (the base its prefix names); nil for any
    /// other base or text it does not take.
    static func parseInt(_ text: String, base: Int) -> Int? {
        var digits = Substring(text)
        var sign = ""
        if let first = digits.first, first == "+" || first == "-" {
            sign = first == "-" ? "-" : ""
            digits = digits.dropFirst()
        }
        let prefixes: [(String, Int)] = [("0x", 16), ("0o", 8), ("0b", 2)]
        var radix = base
        let lowered = digits.prefix(2).lowercased()
        if let prefixBase = prefixes.first(where: { lowered == $0.0 })?.1, base == 0 || base == prefixBase {
            digits = digits.dropFirst(2)
            radix = prefixBase
        } else if base == 0 {
            radix = 10
        }
        guard (2...36).contains(radix), !digits.isEmpty, digits.first != "+", digits.first != "-" else { return nil }
        return Int(sign + digits, radix: radix)
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
        let finder = Finder(needle)
        var start = 0
        while limit < 0 || parts.count < limit, let found = finder.find(in: scalars, from: start) {
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
            let scale = pow(10, -Double(digits))
            guard scale.isFinite else { return x * 0 }  // rounded to more than 308 digits before the point
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
