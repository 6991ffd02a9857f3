#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A Jinja template, parsed once and rendered any number of times (from any thread), with the
/// semantics of Python's jinja2 3.1 for the subset chat templates use: Python's truthiness, `str()`
/// and `repr()`, jinja2's lenient undefined values and its scoping (a `set` in a loop stays in the
/// loop, a `namespace` carries values out of it). `tojson` is transformers' (`json.dumps(x,
/// ensure_ascii=False)`), and `raise_exception(msg)` and `strftime_now(format)` are defined, as in
/// `apply_chat_template`.
///
/// ```swift
/// let template = try JinjaTemplate(source: chatTemplate, options: .huggingFace)
/// let prompt = try template.render([
///     "messages": [["role": "user", "content": "Hello"]],
///     "add_generation_prompt": true,
/// ])
/// ```
///
/// Anything outside the subset (`{% include %}`, `{% call %}`, a filter or test it does not know)
/// is an error when parsing, quoting the construct; nothing is ever silently skipped.
public struct JinjaTemplate: Sendable {
    /// jinja2's whitespace options. The defaults are jinja2's own; transformers and llama.cpp render chat
    /// templates with `.huggingFace`, which only templates that rely on plain `{% %}` tags feel.
    public struct Options: Sendable, Equatable {
        /// Drop the first newline after a block tag or comment.
        public var trimBlocks: Bool
        /// Drop spaces and tabs from the start of a line up to a block tag or comment.
        public var lstripBlocks: Bool
        /// Keep the template's final newline (jinja2 drops it by default).
        public var keepTrailingNewline: Bool

        public init(trimBlocks: Bool = false, lstripBlocks: Bool = false, keepTrailingNewline: Bool = false) {
            self.trimBlocks = trimBlocks
            self.lstripBlocks = lstripBlocks
            self.keepTrailingNewline = keepTrailingNewline
        }

        /// What transformers' `apply_chat_template` and llama.cpp render chat templates with.
        public static let huggingFace = Options(trimBlocks: true, lstripBlocks: true)
    }

    let nodes: [Jinja.Node]

    /// Parses `source`; syntax errors and unsupported tags, filters and tests are reported here.
    public init(source: String, options: Options = Options()) throws(JinjaError) {
        var lexer = Jinja.Lexer(source, options: options)
        try lexer.tokenize()
        var parser = Jinja.Parser(lexer)
        nodes = try parser.parseTemplate()
    }

    /// Renders with `context` as the template's variables; a name it does not hold is undefined.
    public func render(_ context: [String: JinjaValue]) throws(JinjaError) -> String {
        try Jinja.Interpreter(context: context).render(nodes)
    }
}

extension Jinja {
    /// Variables visible at one point of a render. A loop iteration and a macro call each get a new
    /// scope; `if` does not. A macro's scope hangs off the one it was defined in.
    final class Scope {
        var variables: [String: Value] = [:]
        let parent: Scope?

        init(parent: Scope?) { self.parent = parent }

        func lookup(_ name: String) -> Value? {
            var scope: Scope? = self
            while let current = scope {
                if let value = current.variables[name] { return value }
                scope = current.parent
            }
            return nil
        }
    }

    /// Evaluates one render. Not shared: every `render` call makes its own.
    final class Interpreter {
        // The builtins (JinjaBuiltins.swift) extend this class from outside the namespace and name its types
        // through these.
        typealias Value = Jinja.Value
        typealias OrderedMap = Jinja.OrderedMap

        enum Flow { case normal, breakLoop, continueLoop }

        private var output = ""
        /// The tag being run, which errors quote.
        var tag = Tag(line: 1, column: 1, source: "")
        /// Blocks, expressions and macro calls being run, bounded so that no template (a recursive macro,
        /// say) can exhaust the stack.
        private var depth = 0
        private static let maxDepth = 250
        private let context: Scope

        init(context values: [String: JinjaValue]) {
            context = Scope(parent: nil)
            for (name, value) in values {
                context.variables[name] = value == .undefined ? .undefined("'\(name)' is undefined") : Value(value)
            }
        }

        func render(_ nodes: [Node]) throws(JinjaError) -> String {
            _ = try execute(nodes, in: Scope(parent: context))
            return output
        }

        /// An error at the current tag, quoting it.
        func fail(_ message: String) -> JinjaError {
            JinjaError(message: message + " in " + tag.source, line: tag.line, column: tag.column)
        }

        // MARK: Statements

        private func enter() throws(JinjaError) {
            depth += 1
            if depth > Self.maxDepth { throw fail("rendering nested deeper than \(Self.maxDepth) levels (a macro calling itself without end?)") }
        }

        private func execute(_ nodes: [Node], in scope: Scope) throws(JinjaError) -> Flow {
            try enter()
            defer { depth -= 1 }
            for node in nodes {
                switch node {
                case .text(let text):
                    output += text
                case .output(let expression, let tag):
                    self.tag = tag
                    output += try evaluate(expression, scope).text
                case .conditional(let branches, let otherwise):
                    var body = otherwise
                    for branch in branches {
                        tag = branch.tag
                        if try evaluate(branch.condition, scope).isTruthy {
                            body = branch.body
                            break
                        }
                    }
                    let flow = try execute(body, in: scope)
                    if flow != .normal { return flow }
                case .loop(let loop):
                    let flow = try run(loop, in: scope)
                    if flow != .normal { return flow }
                case .assign(let target, let expression, let tag):
                    self.tag = tag
                    try assign(try evaluate(expression, scope), to: target, in: scope)
                case .assignBlock(let target, let body, let tag):
                    let saved = output
                    output = ""
                    _ = try execute(body, in: scope)
                    let captured = output
                    output = saved
                    self.tag = tag
                    try assign(.string(captured), to: target, in: scope)
                case .macro(let definition):
                    scope.variables[definition.name] = .callable(.macro(Macro(definition: definition, closure: scope)))
                case .loopControl(let isBreak):
                    return isBreak ? .breakLoop : .continueLoop
                case .block(let body):
                    let flow = try execute(body, in: scope)
                    if flow != .normal { return flow }
                }
            }
            return .normal
        }

        private func run(_ loop: ForLoop, in scope: Scope) throws(JinjaError) -> Flow {
            tag = loop.tag
            var items = try iterate(try evaluate(loop.iterable, scope))
            if let filter = loop.filter {
                var kept: [Value] = []
                for item in items {
                    let iteration = Scope(parent: scope)
                    try assign(item, to: loop.target, in: iteration)
                    if try evaluate(filter, iteration).isTruthy { kept.append(item) }
                }
                items = kept
            }
            if items.isEmpty { return try execute(loop.otherwise, in: Scope(parent: scope)) }
            for (index, item) in items.enumerated() {
                let iteration = Scope(parent: scope)
                tag = loop.tag
                try assign(item, to: loop.target, in: iteration)
                iteration.variables["loop"] = .loop(LoopState(
                    index0: index, length: items.count,
                    previous: index > 0 ? items[index - 1] : nil,
                    next: index + 1 < items.count ? items[index + 1] : nil))
                if try execute(loop.body, in: iteration) == .breakLoop { break }
            }
            return .normal
        }

        private func assign(_ value: Value, to target: AssignTarget, in scope: Scope) throws(JinjaError) {
            switch target {
            case .name(let name):
                scope.variables[name] = value
            case .tuple(let names):
                let items = try iterate(value)
                guard items.count == names.count else {
                    throw fail(items.count > names.count
                        ? "too many values to unpack (expected \(names.count))"
                        : "not enough values to unpack (expected \(names.count), got \(items.count))")
                }
                for (name, item) in zip(names, items) { scope.variables[name] = item }
            case .attribute(let name, let attribute):
                guard case .namespace(let namespace) = scope.lookup(name) ?? .none else {
                    throw fail("cannot assign attribute '\(attribute)' on '\(name)', which is not a namespace")
                }
                namespace.attributes[attribute] = value
            }
        }

        // MARK: Expressions

        func evaluate(_ expression: Expr, _ scope: Scope) throws(JinjaError) -> Value {
            try enter()
            defer { depth -= 1 }
            switch expression {
            case .constant(let value):
                return Value(value)
            case .name(let name):
                if let value = scope.lookup(name) { return value }
                if Self.globalNames.contains(name) { return .callable(.global(name)) }
                return .undefined("'\(name)' is undefined")
            case .list(let items), .tuple(let items):
                return .array(try evaluate(items, scope))
            case .dict(let pairs):
                var map = OrderedMap<Value>()
                for pair in pairs {
                    let key = try evaluate(pair.key, scope)
                    guard case .string(let name) = key else { throw fail("expected a string as a dict key, found \(key.repr)") }
                    map[name] = try evaluate(pair.value, scope)
                }
                return .object(map)
            case .attribute(let base, let name):
                return try attribute(of: try evaluate(base, scope), name)
            case .item(let base, let index):
                return try item(of: try evaluate(base, scope), try evaluate(index, scope))
            case .slice(let base, let start, let stop, let step):
                let value = try evaluate(base, scope)
                func bound(_ e: Expr?) throws(JinjaError) -> Value { if let e { try evaluate(e, scope) } else { .none } }
                return try slice(value, try bound(start), try bound(stop), try bound(step))
            case .call(let callee, let arguments):
                let function = try evaluate(callee, scope)
                let (positional, keywords) = try evaluate(arguments, scope)
                return try call(function, positional, keywords)
            case .filter(let base, let name, let arguments):
                let value = try evaluate(base, scope)
                let (positional, keywords) = try evaluate(arguments, scope)
                return try filter(name, value, positional, keywords)
            case .test(let base, let name, let arguments):
                let value = try evaluate(base, scope)
                let (positional, keywords) = try evaluate(arguments, scope)
                return .bool(try test(name, value, positional, keywords))
            case .not(let operand):
                return .bool(!(try evaluate(operand, scope).isTruthy))
            case .negate(let operand), .plus(let operand):
                let value = try evaluate(operand, scope)
                if case .undefined(let message) = value { throw fail(message) }
                guard let number = value.numeric else { throw fail("bad operand type for unary operator: '\(value.typeName)'") }
                guard case .negate = expression else { return number }
                if case .int(let i) = number {
                    let (negated, overflow) = Int(0).subtractingReportingOverflow(i)
                    if overflow { throw fail("integer overflow") }
                    return .int(negated)
                }
                return .double(-number.asDouble)
            case .binary(let op, let left, let right):
                return try binary(op, try evaluate(left, scope), try evaluate(right, scope))
            case .and(let left, let right):
                let value = try evaluate(left, scope)
                return value.isTruthy ? try evaluate(right, scope) : value
            case .or(let left, let right):
                let value = try evaluate(left, scope)
                return value.isTruthy ? value : try evaluate(right, scope)
            case .compare(let first, let operations):
                var left = try evaluate(first, scope)
                for operation in operations {
                    let right = try evaluate(operation.operand, scope)
                    guard try compare(operation.op, left, right) else { return .bool(false) }
                    left = right
                }
                return .bool(true)
            case .conditional(let value, let test, let otherwise):
                if try evaluate(test, scope).isTruthy { return try evaluate(value, scope) }
                if let otherwise { return try evaluate(otherwise, scope) }
                return .undefined("the inline if-expression evaluated to false and has no else section")
            }
        }

        private func evaluate(_ expressions: [Expr], _ scope: Scope) throws(JinjaError) -> [Value] {
            var values: [Value] = []
            values.reserveCapacity(expressions.count)
            for expression in expressions { values.append(try evaluate(expression, scope)) }
            return values
        }

        private func evaluate(_ arguments: Arguments, _ scope: Scope) throws(JinjaError) -> ([Value], [(String, Value)]) {
            var keywords: [(String, Value)] = []
            for keyword in arguments.keywords { keywords.append((keyword.name, try evaluate(keyword.value, scope))) }
            return (try evaluate(arguments.positional, scope), keywords)
        }

        // MARK: Operators

        func binary(_ op: String, _ a: Value, _ b: Value) throws(JinjaError) -> Value {
            if op == "~" { return .string(a.text + b.text) }
            if case .undefined(let message) = a { throw fail(message) }
            if case .undefined(let message) = b { throw fail(message) }
            switch (op, a, b) {
            case ("+", .string(let x), .string(let y)): return .string(x + y)
            case ("+", .array(let x), .array(let y)): return .array(x + y)
            case ("*", .string, _), ("*", .array, _): return try repeated(a, b)
            case ("*", _, .string), ("*", _, .array): return try repeated(b, a)
            default: break
            }
            guard let x = a.numeric, let y = b.numeric else {
                throw fail("unsupported operand types for \(op): '\(a.typeName)' and '\(b.typeName)'")
            }
            if case .int(let i) = x, case .int(let j) = y { return try integerArithmetic(op, i, j) }
            let (p, q) = (x.asDouble, y.asDouble)
            switch op {
            case "+": return .double(p + q)
            case "-": return .double(p - q)
            case "*": return .double(p * q)
            case "/", "//", "%":
                guard q != 0 else { throw fail("float division by zero") }
                if op == "/" { return .double(p / q) }
                if op == "//" { return .double((p / q).rounded(.down)) }
                var r = p.truncatingRemainder(dividingBy: q)
                if r != 0, (r < 0) != (q < 0) { r += q }
                return .double(r)
            default:
                return .double(pow(p, q))
            }
        }

        private func repeated(_ sequence: Value, _ count: Value) throws(JinjaError) -> Value {
            guard case .int(let n)? = count.numeric else {
                throw fail("can't multiply sequence by non-int of type '\(count.typeName)'")
            }
            guard n < 1_000_000 else { throw fail("sequence repetition by \(n) is too large") }
            switch sequence {
            case .string(let s): return .string(String(repeating: s, count: max(n, 0)))
            case .array(let items): return .array(Array([[Value]](repeating: items, count: max(n, 0)).joined()))
            default: return sequence
            }
        }

        private func integerArithmetic(_ op: String, _ i: Int, _ j: Int) throws(JinjaError) -> Value {
            let result: (partialValue: Int, overflow: Bool)
            switch op {
            case "+": result = i.addingReportingOverflow(j)
            case "-": result = i.subtractingReportingOverflow(j)
            case "*": result = i.multipliedReportingOverflow(by: j)
            case "/":
                guard j != 0 else { throw fail("division by zero") }
                return .double(Double(i) / Double(j))
            case "//", "%":
                guard j != 0 else { throw fail("integer division or modulo by zero") }
                let (q, overflow) = i.dividedReportingOverflow(by: j)
                if overflow { throw fail("integer overflow") }
                let r = i - q * j
                let adjust = r != 0 && (r < 0) != (j < 0)
                return .int(op == "//" ? (adjust ? q - 1 : q) : (adjust ? r + j : r))
            default:
                if j < 0 {
                    guard i != 0 else { throw fail("0 cannot be raised to a negative power") }
                    return .double(pow(Double(i), Double(j)))
                }
                var (base, exponent, accumulator) = (i, j, 1)
                while exponent > 0 {
                    if exponent & 1 == 1 {
                        let (product, overflow) = accumulator.multipliedReportingOverflow(by: base)
                        if overflow { throw fail("integer overflow") }
                        accumulator = product
                    }
                    exponent >>= 1
                    if exponent > 0 {
                        let (square, overflow) = base.multipliedReportingOverflow(by: base)
                        if overflow { throw fail("integer overflow") }
                        base = square
                    }
                }
                return .int(accumulator)
            }
            if result.overflow { throw fail("integer overflow") }
            return .int(result.partialValue)
        }

        func compare(_ op: String, _ a: Value, _ b: Value) throws(JinjaError) -> Bool {
            switch op {
            case "==": return a.equals(b)
            case "!=": return !a.equals(b)
            case "in": return try contains(b, a)
            case "not in": return try !contains(b, a)
            default:
                let order = try self.order(a, b, op)
                switch op {
                case "<": return order < 0
                case "<=": return order <= 0
                case ">": return order > 0
                default: return order >= 0
                }
            }
        }

        /// -1, 0 or 1, for the types Python orders; anything else is the TypeError Python raises.
        func order(_ a: Value, _ b: Value, _ op: String = "<") throws(JinjaError) -> Int {
            if case .undefined(let message) = a { throw fail(message) }
            if case .undefined(let message) = b { throw fail(message) }
            switch (a, b) {
            case (.string(let x), .string(let y)):
                return x.unicodeScalars.lexicographicallyPrecedes(y.unicodeScalars) ? -1 : x.unicodeScalars.elementsEqual(y.unicodeScalars) ? 0 : 1
            case (.array(let x), .array(let y)):
                for (p, q) in zip(x, y) where !p.equals(q) { return try order(p, q, op) }
                return x.count < y.count ? -1 : x.count == y.count ? 0 : 1
            default:
                guard let x = a.numeric, let y = b.numeric else {
                    throw fail("'\(op)' not supported between instances of '\(a.typeName)' and '\(b.typeName)'")
                }
                if case .int(let i) = x, case .int(let j) = y { return i < j ? -1 : i == j ? 0 : 1 }
                let (p, q) = (x.asDouble, y.asDouble)
                return p < q ? -1 : p == q ? 0 : 1
            }
        }

        func contains(_ container: Value, _ item: Value) throws(JinjaError) -> Bool {
            switch container {
            case .string(let s):
                guard case .string(let needle) = item else {
                    throw fail("'in <string>' requires string as left operand, not \(item.typeName)")
                }
                return find(Array(needle.unicodeScalars), in: Array(s.unicodeScalars)) != nil
            case .array(let items): return items.contains { $0.equals(item) }
            case .object(let map):
                if case .string(let key) = item { return map[key] != nil }
                return false
            case .undefined: return false
            default: throw fail("argument of type '\(container.typeName)' is not iterable")
            }
        }

        // MARK: Access

        /// The items a `for` loop or a filter goes over: a dict's keys, a string's characters; none for undefined.
        func iterate(_ value: Value) throws(JinjaError) -> [Value] {
            switch value {
            case .array(let items): return items
            case .object(let map): return map.keys.map { .string($0) }
            case .string(let s): return s.unicodeScalars.map { .string(String($0)) }
            case .undefined: return []
            default: throw fail("'\(value.typeName)' object is not iterable")
            }
        }

        /// jinja2's `Undefined` hint names the object's type this way.
        private func typeDescription(_ value: Value) -> String {
            if case .none = value { return "None" }
            return "\(value.typeName) object"
        }

        /// `value.name`: a method or attribute first, then an item, as jinja2's `getattr` does.
        func attribute(of value: Value, _ name: String) throws(JinjaError) -> Value {
            switch value {
            case .undefined(let message):
                throw fail(message)
            case .object(let map):
                if Self.dictMethods.contains(name) { return .callable(.method(value, name)) }
                if let found = map[name] { return found }
            case .string:
                if Self.stringMethods.contains(name) { return .callable(.method(value, name)) }
            case .namespace(let namespace):
                if let found = namespace.attributes[name] { return found }
            case .loop(let loop):
                switch name {
                case "index": return .int(loop.index0 + 1)
                case "index0": return .int(loop.index0)
                case "revindex": return .int(loop.length - loop.index0)
                case "revindex0": return .int(loop.length - loop.index0 - 1)
                case "first": return .bool(loop.index0 == 0)
                case "last": return .bool(loop.index0 == loop.length - 1)
                case "length": return .int(loop.length)
                case "depth": return .int(1)
                case "depth0": return .int(0)
                case "previtem": return loop.previous ?? .undefined("there is no previous item")
                case "nextitem": return loop.next ?? .undefined("there is no next item")
                case "cycle": return .callable(.cycle(loop.index0))
                default: break
                }
            default:
                break
            }
            return .undefined("'\(typeDescription(value))' has no attribute '\(name)'")
        }

        /// `value[index]`: an item first, then an attribute; a missing item is undefined, as in jinja2.
        func item(of value: Value, _ index: Value) throws(JinjaError) -> Value {
            switch (value, index.numeric ?? index) {
            case (.undefined(let message), _):
                throw fail(message)
            case (.array(let items), .int(let i)):
                let position = i < 0 ? i + items.count : i
                if items.indices.contains(position) { return items[position] }
            case (.string(let s), .int(let i)):
                let scalars = Array(s.unicodeScalars)
                let position = i < 0 ? i + scalars.count : i
                if scalars.indices.contains(position) { return .string(String(scalars[position])) }
            case (.object(let map), .string(let key)):
                if let found = map[key] { return found }
                return try attribute(of: value, key)
            case (_, .string(let key)):
                return try attribute(of: value, key)
            default:
                break
            }
            return .undefined("\(typeDescription(value)) has no element \(index.repr)")
        }

        /// Python slicing of a string or list; like jinja2, anything else gives undefined.
        private func slice(_ value: Value, _ start: Value, _ stop: Value, _ step: Value) throws(JinjaError) -> Value {
            if case .undefined(let message) = value { throw fail(message) }
            func integer(_ bound: Value) -> Int?? {
                if case .none = bound { return .some(nil) }
                if case .int(let i)? = bound.numeric { return .some(i) }
                return nil
            }
            let count: Int
            switch value {
            case .string(let s): count = s.unicodeScalars.count
            case .array(let items): count = items.count
            default: return .undefined("\(typeDescription(value)) cannot be sliced")
            }
            guard let first = integer(start), let last = integer(stop), let stride = integer(step) else {
                return .undefined("slice indices must be integers or none")
            }
            let by = stride ?? 1
            guard by != 0 else { throw fail("slice step cannot be zero") }
            let (lower, upper) = by > 0 ? (0, count) : (-1, count - 1)
            func clamp(_ bound: Int?, _ fallback: Int) -> Int {
                guard let bound else { return fallback }
                return bound < 0 ? max(bound + count, lower) : min(bound, upper)
            }
            var i = clamp(first, by > 0 ? lower : upper)
            let end = clamp(last, by > 0 ? upper : lower)
            var picked: [Int] = []
            while by > 0 ? i < end : i > end {
                picked.append(i)
                i += by
            }
            switch value {
            case .string(let s):
                let scalars = Array(s.unicodeScalars)
                var view = String.UnicodeScalarView()
                for index in picked { view.append(scalars[index]) }
                return .string(String(view))
            case .array(let items):
                return .array(picked.map { items[$0] })
            default:
                return .undefined("")
            }
        }

        // MARK: Calls

        func call(_ function: Value, _ positional: [Value], _ keywords: [(String, Value)]) throws(JinjaError) -> Value {
            switch function {
            case .callable(.global(let name)): return try callGlobal(name, positional, keywords)
            case .callable(.method(let receiver, let name)): return try callMethod(receiver, name, positional, keywords)
            case .callable(.macro(let macro)): return try call(macro, positional, keywords)
            case .callable(.cycle(let index)):
                guard !positional.isEmpty else { throw fail("loop.cycle needs at least one item") }
                return positional[index % positional.count]
            case .undefined(let message): throw fail(message)
            default: throw fail("'\(function.typeName)' object is not callable")
            }
        }

        private func call(_ macro: Macro, _ positional: [Value], _ keywords: [(String, Value)]) throws(JinjaError) -> Value {
            let definition = macro.definition
            let parameters = definition.parameters
            guard positional.count <= parameters.count else {
                throw fail("macro '\(definition.name)' takes not more than \(parameters.count) argument(s), found \(positional.count)")
            }
            let scope = Scope(parent: macro.closure)
            for (name, _) in keywords where !parameters.contains(where: { $0.name == name }) {
                throw fail("macro '\(definition.name)' takes no keyword argument '\(name)'")
            }
            let (savedOutput, savedTag) = (output, tag)
            defer {
                output = savedOutput
                tag = savedTag
            }
            output = ""
            tag = definition.tag
            for (index, parameter) in parameters.enumerated() {
                if index < positional.count {
                    scope.variables[parameter.name] = positional[index]
                } else if let keyword = keywords.last(where: { $0.0 == parameter.name }) {
                    scope.variables[parameter.name] = keyword.1
                } else if let defaultValue = parameter.defaultValue {
                    scope.variables[parameter.name] = try evaluate(defaultValue, scope)
                } else {
                    scope.variables[parameter.name] = .undefined("parameter '\(parameter.name)' was not provided")
                }
            }
            _ = try execute(definition.body, in: scope)
            return .string(output)
        }
    }
}
