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
    public var message: String
    public var line: Int
    public var column: Int

    public init(message: String, line: Int, column: Int) {
        self.message = message
        self.line = line
        self.column = column
    }

    public var description: String { "line \(line), column \(column): \(message)" }
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
        /// The scope the macro was defined in: its body reads names from there, not from its caller.
        let closure: Scope
    }

    /// What expressions evaluate to while rendering: the data kinds plus the objects only templates make.
    /// Never leaves a render, so it need not be `Sendable`.
    indirect enum Value {
        /// Carries the message an operation that cannot take an undefined value reports.
        case undefined(String)
        case none
        case bool(Bool)
        case int(Int)
        case double(Double)
        case string(String)
        case array([Value])
        case object(OrderedMap<Value>)
        case namespace(Namespace)
        case loop(LoopState)
        case callable(Callable)

        init(_ value: JinjaValue) {
            switch value {
            case .undefined: self = .undefined("value is undefined")
            case .none: self = .none
            case .bool(let b): self = .bool(b)
            case .int(let i): self = .int(i)
            case .double(let d): self = .double(d)
            case .string(let s): self = .string(s)
            case .array(let items): self = .array(items.map(Value.init))
            case .object(let object): self = .object(object.map.mapValues(Value.init))
            }
        }

        // MARK: Python semantics

        var isUndefined: Bool {
            if case .undefined = self { return true }
            return false
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
            case .array(let items): !items.isEmpty
            case .object(let map): !map.keys.isEmpty
            case .namespace, .loop, .callable: true
            }
        }

        /// Python's `str()`.
        var text: String {
            switch self {
            case .undefined: ""
            case .string(let s): s
            default: repr
            }
        }

        /// Python's `repr()`, which `str()` of lists and dicts uses for their items.
        var repr: String {
            switch self {
            case .undefined: "Undefined"
            case .none: "None"
            case .bool(let b): b ? "True" : "False"
            case .int(let i): String(i)
            case .double(let d): pythonFloat(d)
            case .string(let s): pythonRepr(s)
            case .array(let items): "[" + items.map(\.repr).joined(separator: ", ") + "]"
            case .object(let map): "{" + map.pairs.map { pythonRepr($0.key) + ": " + $0.value.repr }.joined(separator: ", ") + "}"
            case .namespace(let ns): "<Namespace " + Value.object(ns.attributes).repr + ">"
            case .loop(let loop): "<LoopContext \(loop.index0 + 1)/\(loop.length)>"
            case .callable(.macro(let macro)): "<Macro '\(macro.definition.name)'>"
            case .callable: "<function>"
            }
        }

        /// Python's `==`: numbers compare by value (True == 1), strings by code points, dicts ignore order.
        func equals(_ other: Value) -> Bool {
            switch (self, other) {
            case (.undefined, .undefined), (.none, .none): return true
            case (.string(let a), .string(let b)): return a.unicodeScalars.elementsEqual(b.unicodeScalars)
            case (.array(let a), .array(let b)): return a.count == b.count && zip(a, b).allSatisfy { $0.equals($1) }
            case (.object(let a), .object(let b)):
                return a.keys.count == b.keys.count
                    && a.pairs.allSatisfy { pair in b[pair.key].map { pair.value.equals($0) } ?? false }
            case (.namespace(let a), .namespace(let b)): return a === b
            default:
                if let a = numeric, let b = other.numeric {
                    if case .int(let x) = a, case .int(let y) = b { return x == y }
                    return a.asDouble == b.asDouble
                }
                return false
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
        guard needle.count <= haystack.count else { return nil }
        if needle.isEmpty { return min(start, haystack.count) }
        var i = start
        while i + needle.count <= haystack.count {
            if haystack[i] == needle[0], haystack[i..<(i + needle.count)].elementsEqual(needle) { return i }
            i += 1
        }
        return nil
    }
}

extension Jinja.OrderedMap: Sendable where Element: Sendable {}
extension Jinja.OrderedMap: Equatable where Element: Equatable {
    static func == (lhs: Self, rhs: Self) -> Bool { lhs.storage == rhs.storage }
}
