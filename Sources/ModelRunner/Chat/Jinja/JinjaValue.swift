/// A value handed to a template: what JSON holds, plus `undefined` (what `is defined` tests).
/// Objects keep their keys in insertion order, as Python dicts do, so `tojson` and `items()` follow it.
public indirect enum JinjaValue: Sendable, Equatable {
    case undefined
    case none
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case array([JinjaValue])
    case object(JinjaObject)
}

extension JinjaValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByFloatLiteral,
    ExpressibleByBooleanLiteral, ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral
{
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int) { self = .int(value) }
    public init(floatLiteral value: Double) { self = .double(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(arrayLiteral elements: JinjaValue...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, JinjaValue)...) { self = .object(JinjaObject(elements)) }
}

/// String keys in insertion order. A key set again keeps its first position (as in Python);
/// two objects are equal when they hold the same pairs, in any order (as Python dicts are).
public struct JinjaObject: Sendable, Equatable, ExpressibleByDictionaryLiteral {
    var map = Jinja.OrderedMap<JinjaValue>()

    public init() {}
    public init(_ pairs: some Sequence<(String, JinjaValue)>) {
        for (key, value) in pairs { map[key] = value }
    }
    public init(dictionaryLiteral elements: (String, JinjaValue)...) { self.init(elements) }

    public var keys: [String] { map.keys }
    public var count: Int { map.keys.count }
    public var pairs: [(key: String, value: JinjaValue)] { map.pairs }
    /// Setting `nil` removes the key.
    public subscript(key: String) -> JinjaValue? {
        get { map[key] }
        set { map[key] = newValue }
    }
}

/// A parse or render failure. `message` names what was expected and what was found, and quotes the
/// tag it happened in; for `raise_exception(msg)` it is exactly the template's `msg`.
public struct JinjaError: Error, CustomStringConvertible, Equatable {
    /// The fields behind one reference: every `try` in the parser's and interpreter's recursion makes room
    /// for the error it may receive, and a one-word error keeps those frames small (see `Interpreter.maxDepth`).
    private final class Storage: Sendable {
        let message: String
        let line: Int
        let column: Int

        init(_ message: String, _ line: Int, _ column: Int) {
            self.message = message
            self.line = line
            self.column = column
        }
    }

    private var storage: Storage

    public var message: String {
        get { storage.message }
        set { storage = Storage(newValue, line, column) }
    }

    public var line: Int {
        get { storage.line }
        set { storage = Storage(message, newValue, column) }
    }

    public var column: Int {
        get { storage.column }
        set { storage = Storage(message, line, newValue) }
    }

    public init(message: String, line: Int, column: Int) {
        storage = Storage(message, line, column)
    }

    public var description: String { "line \(line), column \(column): \(message)" }

    public static func == (a: JinjaError, b: JinjaError) -> Bool {
        a.message == b.message && a.line == b.line && a.column == b.column
    }
}

// MARK: - Runtime values

/// The engine's internals, in a namespace of their own so that they stay out of the rest of the module.
enum Jinja {}

extension Jinja {
    /// Keys in insertion order over a hash map.
    struct OrderedMap<Element> {
        private(set) var keys: [String] = []
        private var storage: [String: Element] = [:]

        subscript(key: String) -> Element? {
            get { storage[key] }
            set {
                if let newValue {
                    if storage.updateValue(newValue, forKey: key) == nil { keys.append(key) }
                } else if storage.removeValue(forKey: key) != nil {
                    keys.removeAll { $0 == key }
                }
            }
        }

        var pairs: [(key: String, value: Element)] {
            keys.compactMap { key in storage[key].map { (key, $0) } }
        }

        func mapValues<T>(_ transform: (Element) -> T) -> OrderedMap<T> {
            var result = OrderedMap<T>()
            for (key, value) in pairs { result[key] = transform(value) }
            return result
        }
    }

    /// `namespace(...)`: the one mutable object, so `{% set ns.x = ... %}` inside a loop is seen after it.
    /// It holds data only (see `Value.isData`), as lists and dicts do, so no cycle can form, and its
    /// attributes nest less deeply than `Interpreter.maxValueDepth`.
    final class Namespace {
        var attributes: OrderedMap<Value>
        init(_ attributes: OrderedMap<Value>) { self.attributes = attributes }
    }

    /// The `loop` variable of one iteration.
    struct LoopState {
        var index0: Int
        var length: Int
        var previous: Value?
        var next: Value?
    }

    enum Callable {
        case global(String)
        /// A method looked up on a value, e.g. `content.strip` or `message.get`.
        case method(Value, String)
        case macro(Macro)
        /// `loop.cycle` of the iteration with this index.
        case cycle(Int)
    }

    struct Macro {
        let definition: MacroDefinition
        /// The scope the macro was defined in: its body reads names from there, not from its caller. Weak,
        /// as that scope holds the macro: a macro is only reachable from its scope and the scopes inside
        /// it (lists, dicts and namespaces do not hold macros), so it is never called after the scope ends.
        weak var closure: Scope?
    }

    /// A list's items with how deeply they nest, worked out once when the list is built, so that
    /// building a list around it checks the depth without walking it. The items are data (see
    /// `Value.isData`); the interpreter's `list(_:)` checks both.
    struct List: RandomAccessCollection {
        let items: [Value]
        /// 1 + the deepest item's `depth`.
        let depth: Int

        init(_ items: [Value]) {
            var depth = 0
            for item in items { depth = Swift.max(depth, item.depth) }
            self.items = items
            self.depth = depth + 1
        }

        var startIndex: Int { 0 }
        var endIndex: Int { items.count }
        subscript(position: Int) -> Value { items[position] }
    }

    /// A dict's pairs with how deeply they nest, as `List` keeps it.
    struct Dict {
        let map: OrderedMap<Value>
        let depth: Int

        init(_ map: OrderedMap<Value>) {
            var depth = 0
            for (_, value) in map.pairs { depth = max(depth, value.depth) }
            self.map = map
            self.depth = depth + 1
        }

        var keys: [String] { map.keys }
        var count: Int { map.keys.count }
        var pairs: [(key: String, value: Value)] { map.pairs }
        subscript(key: String) -> Value? { map[key] }
    }

    /// What expressions evaluate to while rendering: the data kinds plus the objects only templates make.
    /// Never leaves a render, so it need not be `Sendable`. Python's `str()`, `repr()` and `==` are the
    /// interpreter's (`text`, `repr`, `equals`), which bound the work and the depth they go to.
    indirect enum Value {
        /// Carries the message an operation that cannot take an undefined value reports.
        case undefined(String)
        case none
        case bool(Bool)
        case int(Int)
        case double(Double)
        case string(String)
        case array(List)
        case object(Dict)
        case namespace(Namespace)
        case loop(LoopState)
        case callable(Callable)

        static func list(_ items: [Value]) -> Value { .array(List(items)) }

        // MARK: Python semantics

        var isUndefined: Bool {
            if case .undefined = self { return true }
            return false
        }

        /// How many lists, dicts and other holders of values nest here, counting this one: what bounds
        /// the recursion of freeing the value (and the work of printing or comparing it).
        var depth: Int {
            switch self {
            case .array(let list): list.depth
            case .object(let dict): dict.depth
            case .namespace: 1  // its attributes are bounded when they are set, and no list or dict holds it
            case .loop(let loop): 1 + max(loop.previous?.depth ?? 0, loop.next?.depth ?? 0)
            case .callable(.method(let receiver, _)): 1 + receiver.depth
            default: 0
            }
        }

        /// None, booleans, numbers, strings, lists and dicts: what lists, dicts and namespaces hold. Not
        /// namespaces, macros or loops, so that no cycle can form and every value nests as deep as it says.
        var isData: Bool {
            switch self {
            case .namespace, .loop, .callable: false
            case .undefined, .none, .bool, .int, .double, .string, .array, .object: true
            }
        }

        /// Python's type name, as errors name it.
        var typeName: String {
            switch self {
            case .undefined: "Undefined"
            case .none: "NoneType"
            case .bool: "bool"
            case .int: "int"
            case .double: "float"
            case .string: "str"
            case .array: "list"
            case .object: "dict"
            case .namespace: "Namespace"
            case .loop: "LoopContext"
            case .callable: "function"
            }
        }

        var isTruthy: Bool {
            switch self {
            case .undefined, .none: false
            case .bool(let b): b
            case .int(let i): i != 0
            case .double(let d): d != 0
            case .string(let s): !s.isEmpty
            case .array(let list): !list.isEmpty
            case .object(let dict): dict.count > 0
            case .namespace, .loop, .callable: true
            }
        }

        /// Python's `repr()` of a value that holds no others; nil for lists, dicts and namespaces.
        var scalarRepr: String? {
            switch self {
            case .undefined: "Undefined"
            case .none: "None"
            case .bool(let b): b ? "True" : "False"
            case .int(let i): String(i)
            case .double(let d): pythonFloat(d)
            case .string(let s): pythonRepr(s)
            case .array, .object, .namespace: nil
            case .loop(let loop): "<LoopContext \(loop.index0 + 1)/\(loop.length)>"
            case .callable(.macro(let macro)): "<Macro '\(macro.definition.name)'>"
            case .callable: "<function>"
            }
        }

        /// A short `repr()` for error messages: long strings and big or deep lists and dicts are cut
        /// with `...`, so an error never costs more than a few hundred characters.
        var brief: String {
            var out = ""
            writeBrief(into: &out, level: 0)
            return out
        }

        private func writeBrief(into out: inout String, level: Int) {
            func items(_ values: some Sequence<(String?, Value)>, count: Int, open: String, close: String) {
                out += open
                guard level < 2 else { out += count > 0 ? "..." + close : close; return }
                for (index, (key, value)) in values.prefix(5).enumerated() {
                    if index > 0 { out += ", " }
                    if let key { out += Jinja.pythonRepr(key) + ": " }
                    value.writeBrief(into: &out, level: level + 1)
                }
                out += (count > 5 ? ", ..." : "") + close
            }
            switch self {
            case .string(let s) where s.unicodeScalars.count > 60:
                var view = String.UnicodeScalarView()
                view.append(contentsOf: s.unicodeScalars.prefix(60))
                out += pythonRepr(String(view)) + "..."
            case .array(let list): items(list.lazy.map { (nil, $0) }, count: list.count, open: "[", close: "]")
            case .object(let dict): items(dict.pairs.lazy.map { ($0.key, $0.value) }, count: dict.count, open: "{", close: "}")
            case .namespace(let ns):
                out += "<Namespace "
                Value.object(Dict(ns.attributes)).writeBrief(into: &out, level: level)
                out += ">"
            default: out += scalarRepr ?? typeName
            }
        }

        /// Booleans as the integers they are in Python; `nil` for non-numbers.
        var numeric: Value? {
            switch self {
            case .bool(let b): .int(b ? 1 : 0)
            case .int, .double: self
            default: nil
            }
        }

        var asDouble: Double {
            switch self {
            case .int(let i): Double(i)
            case .double(let d): d
            case .bool(let b): b ? 1 : 0
            default: .nan
            }
        }
    }

    // MARK: - Python's formatting

    /// Python's `repr(float)`: the shortest digits that round-trip, fixed notation for exponents in
    /// -4..<16, scientific (`1e+16`, `1.5e-07`) outside, and always a `.0` on whole numbers.
    static func pythonFloat(_ d: Double) -> String {
        if d.isNaN { return "nan" }
        if d.isInfinite { return d < 0 ? "-inf" : "inf" }
        // Swift's description has the same shortest digits; only its notation thresholds differ.
        var description = Substring(d.magnitude.description)
        var exponent = 0
        if let e = description.firstIndex(where: { $0 == "e" || $0 == "E" }) {
            exponent = Int(description[description.index(after: e)...]) ?? 0
            description = description[..<e]
        }
        let parts = description.split(separator: ".", omittingEmptySubsequences: false)
        let whole = parts.first.map(String.init) ?? "0"
        let fraction = parts.count > 1 ? String(parts[1]) : ""
        var digits = whole + fraction
        var point = whole.count + exponent  // the value is 0.digits × 10^point
        while digits.count > 1, digits.first == "0" {
            digits.removeFirst()
            point -= 1
        }
        while digits.count > 1, digits.last == "0" { digits.removeLast() }
        if digits == "0" { point = 1 }
        let sign = d.sign == .minus ? "-" : ""
        let scientific = point - 1
        if scientific < -4 || scientific >= 16 {
            let mantissa = digits.count > 1 ? String(digits.prefix(1)) + "." + digits.dropFirst() : digits
            let e = abs(scientific) < 10 ? "0\(abs(scientific))" : "\(abs(scientific))"
            return sign + mantissa + (scientific < 0 ? "e-" : "e+") + e
        }
        if point <= 0 { return sign + "0." + String(repeating: "0", count: -point) + digits }
        if point >= digits.count { return sign + digits + String(repeating: "0", count: point - digits.count) + ".0" }
        return sign + digits.prefix(point) + "." + digits.dropFirst(point)
    }

    /// Python's `repr(str)`: single quotes unless the text has a `'` and no `"`.
    static func pythonRepr(_ s: String) -> String {
        let quote: Unicode.Scalar = s.contains("'") && !s.contains("\"") ? "\"" : "'"
        var out = String.UnicodeScalarView()
        out.append(quote)
        for scalar in s.unicodeScalars {
            switch scalar {
            case quote, "\\": out.append("\\"); out.append(scalar)
            case "\n": out.append(contentsOf: "\\n".unicodeScalars)
            case "\r": out.append(contentsOf: "\\r".unicodeScalars)
            case "\t": out.append(contentsOf: "\\t".unicodeScalars)
            default:
                if isPrintable(scalar) {
                    out.append(scalar)
                } else {
                    let hex = String(scalar.value, radix: 16)
                    let width = scalar.value < 0x100 ? 2 : scalar.value < 0x10000 ? 4 : 8
                    let prefix = width == 2 ? "\\x" : width == 4 ? "\\u" : "\\U"
                    out.append(contentsOf: (prefix + String(repeating: "0", count: width - hex.count) + hex).unicodeScalars)
                }
            }
        }
        out.append(quote)
        return String(out)
    }

    private static func isPrintable(_ scalar: Unicode.Scalar) -> Bool {
        if scalar == " " { return true }
        switch scalar.properties.generalCategory {
        case .control, .format, .surrogate, .privateUse, .unassigned, .lineSeparator, .paragraphSeparator, .spaceSeparator:
            return false
        default:
            return true
        }
    }

    /// Python's `str.isspace()`: Unicode white space plus the separators U+001C…U+001F.
    static func isPythonSpace(_ scalar: Unicode.Scalar) -> Bool {
        scalar.properties.isWhitespace || (0x1C...0x1F).contains(scalar.value)
    }

    /// Where `needle` first occurs in `haystack` at or after `start`, comparing code points as Python does.
    static func find(_ needle: [Unicode.Scalar], in haystack: [Unicode.Scalar], from start: Int = 0) -> Int? {
        Finder(needle).find(in: haystack, from: start)
    }

    /// Finds one needle in haystacks in time linear in both (Knuth–Morris–Pratt), so that no string and
    /// separator can make `in`, `find`, `count`, `split` or `replace` quadratic.
    struct Finder {
        let needle: [Unicode.Scalar]
        /// For each prefix `needle[...k]`, the length of its longest proper prefix that is also its suffix.
        private let fallback: [Int]

        init(_ needle: [Unicode.Scalar]) {
            self.needle = needle
            var fallback = [Int](repeating: 0, count: needle.count)
            var k = 0
            for i in needle.indices.dropFirst() {
                while k > 0, needle[i] != needle[k] { k = fallback[k - 1] }
                if needle[i] == needle[k] { k += 1 }
                fallback[i] = k
            }
            self.fallback = fallback
        }

        /// The first occurrence at or after `start` (0 or more).
        func find(in haystack: [Unicode.Scalar], from start: Int = 0) -> Int? {
            if needle.isEmpty { return start <= haystack.count ? start : nil }
            var matched = 0
            var i = max(start, 0)
            while i < haystack.count {
                while matched > 0, haystack[i] != needle[matched] { matched = fallback[matched - 1] }
                if haystack[i] == needle[matched] { matched += 1 }
                if matched == needle.count { return i + 1 - matched }
                i += 1
            }
            return nil
        }
    }
}

extension Jinja.OrderedMap: Sendable where Element: Sendable {}
extension Jinja.OrderedMap: Equatable where Element: Equatable {
    static func == (lhs: Self, rhs: Self) -> Bool { lhs.storage == rhs.storage }
}
