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
///
/// A template comes from a model file and a context from a request, so neither is trusted: a render
/// is bounded in the work it does and the text it builds (`Limits`), in how deeply it nests blocks,
/// expressions, loops and macro calls (250 levels), and in how deeply lists and dicts nest (250
/// levels); integer arithmetic that overflows is an error. Each bound is a `JinjaError` naming what it
/// allows and what it found, never a crash or a hang. Unlike jinja2, lists, dicts and namespaces hold
/// data only (none, booleans, numbers, strings, lists and dicts; not namespaces, macros or loops), so
/// a template cannot build a cycle.
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

    /// What one render may spend. The defaults leave room for any real chat template over conversations
    /// of tens of thousands of messages, or with megabytes in one message (Qwen2.5's and Llama 3.1's
    /// templates take about 60 steps a message: 2 million for 30,000 messages), and stop a runaway
    /// template (nested loops over `range(100000)`, a string doubled forty times) within a few seconds
    /// and a few hundred megabytes.
    public struct Limits: Sendable, Equatable {
        /// Steps: one per loop iteration, expression evaluated, macro called, item a filter, operator or
        /// comparison handles or builds, and per 16 bytes of text read or built.
        public var steps: Int
        /// The most UTF-8 bytes in the rendered text, and in any one string built while rendering.
        public var textBytes: Int

        public init(steps: Int = 10_000_000, textBytes: Int = 32 << 20) {
            self.steps = steps
            self.textBytes = textBytes
        }

        /// 10 million steps, 32 MiB of text.
        public static let `default` = Limits()
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
    public func render(_ context: [String: JinjaValue], limits: Limits = .default) throws(JinjaError) -> String {
        try Jinja.Interpreter(limits: limits).render(nodes, context: context)
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
        /// The output and tag of the macro calls and `{% set %}` blocks being run (see `suspend`).
        private var suspended: [(output: String, tag: Tag)] = []
        /// The tag being run, which errors quote.
        var tag = Tag(line: 1, column: 1, source: "")
        /// Blocks, expressions, loop passes and macro calls being run (and a macro's default argument and
        /// a loop's condition, each a level of its own), bounded so that no template (a recursive macro,
        /// say) can exhaust the stack. `JinjaTests` renders up to it, the costliest ways it knows, on a
        /// 512 KiB stack (macOS's secondary and Swift concurrency threads) in a debug build, where those
        /// take under 300 KiB.
        private var depth = 0
        static let maxDepth = 250
        /// How deeply lists, dicts and namespaces may nest in a value, checked as each is built: what bounds
        /// the recursion of freeing a value (printing, comparing and serializing loop rather than recurse,
        /// and go no deeper either).
        static let maxValueDepth = 250
        /// Text read or built costs one step per this many UTF-8 bytes (a list built costs one per item).
        static let bytesPerStep = 16
        let limits: JinjaTemplate.Limits
        private var steps = 0

        init(limits: JinjaTemplate.Limits) {
            self.limits = limits
        }

        func render(_ nodes: [Node], context values: [String: JinjaValue]) throws(JinjaError) -> String {
            let context = Scope(parent: nil)
            for (name, value) in values { context.variables[name] = try convert(value, name: name) }
            _ = try execute(nodes, in: Scope(parent: context))
            return output
        }

        /// An error at the current tag, quoting it.
        func fail(_ message: String) -> JinjaError {
            JinjaError(message: tag.source.isEmpty ? message : message + " in " + tag.source, line: tag.line, column: tag.column)
        }

        // MARK: Budgets

        /// Spends `count` steps of the render's budget.
        func charge(_ count: Int) throws(JinjaError) {
            guard count <= limits.steps - steps else {
                throw fail("the template exceeded its budget of \(limits.steps) steps (loop iterations, expressions, and items and text handled)")
            }
            steps += count
        }

        /// Spends the steps for reading or building `bytes` bytes of text.
        func chargeText(_ bytes: Int) throws(JinjaError) {
            try charge(1 + bytes / Self.bytesPerStep)
        }

        /// Fails when a string of `bytes` bytes would be longer than the budget allows.
        func checkText(_ bytes: Int, _ what: String = "a string") throws(JinjaError) {
            guard bytes <= limits.textBytes else {
                let size = bytes == .max ? "at least \(Int.max)" : "\(bytes)"  // sizes saturate at Int.max
                throw fail("\(what) of \(size) bytes would be longer than the limit of \(limits.textBytes) bytes")
            }
        }

        /// `a + b` for sizes, saturating instead of overflowing (it is compared with a limit).
        static func sum(_ a: Int, _ b: Int) -> Int {
            let (result, overflow) = a.addingReportingOverflow(b)
            return overflow ? .max : result
        }

        /// `a * b` for non-negative sizes, saturating instead of overflowing.
        static func product(_ a: Int, _ b: Int) -> Int {
            let (result, overflow) = a.multipliedReportingOverflow(by: b)
            return overflow ? .max : result
        }

        /// A string made of `parts`, within the text limit; the work is charged.
        func concatenate(_ parts: String...) throws(JinjaError) -> Value {
            var bytes = 0
            for part in parts { bytes = Self.sum(bytes, part.utf8.count) }
            try checkText(bytes)
            try chargeText(bytes)
            return .string(parts.joined())
        }

        /// A string built by a function of the text's size (case mapping, stripping, escaping), charged
        /// for and checked against the limit.
        func built(_ text: String) throws(JinjaError) -> Value {
            let bytes = text.utf8.count
            try checkText(bytes)
            try chargeText(bytes)
            return .string(text)
        }

        private func emit(_ text: String) throws(JinjaError) {
            let bytes = text.utf8.count
            try checkText(Self.sum(output.utf8.count, bytes), "the rendered text")
            try chargeText(bytes)
            output += text
        }

        // MARK: Building values

        private func valueTooDeep(_ found: Int) -> JinjaError {
            fail("lists, dicts and namespaces nest at most \(Self.maxValueDepth) levels deep, found a value nesting \(found)")
        }

        /// What lists, dicts and namespaces hold (see `Value.isData`), as errors name it.
        static let dataKinds = "none, booleans, numbers, strings, lists and dicts"

        /// A list of `items`, failing when one is not data or the list would nest too deeply.
        func list(_ items: [Value]) throws(JinjaError) -> Value {
            for item in items where !item.isData {
                throw fail("a list holds only \(Self.dataKinds), found a \(item.typeName)")
            }
            let list = List(items)
            guard list.depth <= Self.maxValueDepth else { throw valueTooDeep(list.depth) }
            return .array(list)
        }

        /// A dict of `map`, failing when a value is not data or the dict would nest too deeply.
        func dict(_ map: OrderedMap<Value>) throws(JinjaError) -> Value {
            for (key, value) in map.pairs where !value.isData {
                throw fail("a dict holds only \(Self.dataKinds), found a \(value.typeName) at '\(key)'")
            }
            let dict = Dict(map)
            guard dict.depth <= Self.maxValueDepth else { throw valueTooDeep(dict.depth) }
            return .object(dict)
        }

        /// What a namespace attribute may hold: data, nesting less deeply than the limit.
        func checkAttribute(_ value: Value, _ target: String) throws(JinjaError) {
            guard value.isData else { throw fail("cannot set \(target) to a \(value.typeName): a namespace holds only \(Self.dataKinds)") }
            guard value.depth < Self.maxValueDepth else { throw valueTooDeep(value.depth + 1) }
        }

        /// A context value as the interpreter holds it: a loop over the lists and dicts still open rather
        /// than a recursion, so that the stack it takes does not grow with the value's depth.
        private func convert(_ root: JinjaValue, name: String) throws(JinjaError) -> Value {
            /// A list or dict being converted: its items (a dict's values, by `keys`) and those done.
            struct Holder {
                let keys: [String]?
                let items: [JinjaValue]
                var done: [Value] = []

                var value: Value {
                    guard let keys else { return .array(List(done)) }
                    var map = OrderedMap<Value>()
                    for (key, value) in zip(keys, done) { map[key] = value }
                    return .object(Dict(map))
                }
            }
            var open: [Holder] = []  // the innermost last
            var next = root
            while true {
                let holder: Holder?
                switch next {
                case .array(let items): holder = Holder(keys: nil, items: items)
                case .object(let object):
                    let pairs = object.pairs
                    holder = Holder(keys: pairs.map(\.key), items: pairs.map(\.value))
                default: holder = nil
                }
                var finished: Value
                if let holder {
                    guard open.count < Self.maxValueDepth else {
                        throw fail("lists and dicts nest at most \(Self.maxValueDepth) levels deep, found deeper ones in the variable '\(name)'")
                    }
                    if let first = holder.items.first {
                        open.append(holder)
                        next = first
                        continue
                    }
                    finished = holder.value
                } else {
                    finished = scalar(next, name: open.isEmpty ? name : nil)
                }
                // Hand the finished value to the holder it belongs to, closing those it completes.
                while true {
                    guard !open.isEmpty else { return finished }
                    let last = open.count - 1
                    open[last].done.append(finished)
                    if open[last].done.count < open[last].items.count {
                        next = open[last].items[open[last].done.count]
                        break
                    }
                    finished = open.removeLast().value
                }
            }
        }

        /// A context value that is not a list or dict; `name` is the variable's when it is one.
        private func scalar(_ value: JinjaValue, name: String?) -> Value {
            switch value {
            case .undefined: .undefined(name.map { "'\($0)' is undefined" } ?? "value is undefined")
            case .none: .none
            case .bool(let b): .bool(b)
            case .int(let i): .int(i)
            case .double(let d): .double(d)
            case .string(let s): .string(s)
            case .array, .object: .none  // lists and dicts are converted by `convert`
            }
        }

        // MARK: Statements

        /// Enters a block, expression, loop pass or macro call: one step, one level.
        private func enter() throws(JinjaError) {
            guard depth < Self.maxDepth else { throw fail("rendering nested deeper than \(Self.maxDepth) levels (a macro calling itself without end?)") }
            try charge(1)
            depth += 1
        }

        // The functions that recurse (execute, evaluate and what they call for one kind of node or
        // expression) are kept small, each case in a function of its own, so that a level of nesting
        // costs little stack also in a debug build, where every local has a slot of its own.

        private func execute(_ nodes: [Node], in scope: Scope) throws(JinjaError) -> Flow {
            try enter()
            defer { depth -= 1 }
            for node in nodes {
                let flow = try execute(node, in: scope)
                if flow != .normal { return flow }
            }
            return .normal
        }

        /// One node, by the function for its kind (see `evaluate`).
        private func execute(_ node: Node, in scope: Scope) throws(JinjaError) -> Flow {
            try Self.executor(of: node)(self, node, scope)
        }

        private typealias Executor = (Interpreter, Node, Scope) throws(JinjaError) -> Flow

        private static func executor(of node: Node) -> Executor {
            switch node {
            case .text: { i, n, _ throws(JinjaError) in try i.text(n); return .normal }
            case .output: { i, n, s throws(JinjaError) in try i.output(n, s); return .normal }
            case .conditional: { i, n, s throws(JinjaError) in try i.conditional(n, s) }
            case .loop: { i, n, s throws(JinjaError) in try i.run(n, s) }
            case .assign: { i, n, s throws(JinjaError) in try i.assign(n, s); return .normal }
            case .assignBlock: { i, n, s throws(JinjaError) in try i.capture(n, s); return .normal }
            case .macro: { i, n, s in i.define(n, s); return .normal }
            case .loopControl(let isBreak): isBreak ? { _, _, _ in .breakLoop } : { _, _, _ in .continueLoop }
            case .block: { i, n, s throws(JinjaError) in try i.block(n, s) }
            }
        }

        /// What a function for one kind of node reports when handed another; `executor(of:)` never does that.
        private func misrouted(_ node: Node) -> JinjaError {
            fail("internal error: a node was executed by the function for another kind")
        }

        private func text(_ node: Node) throws(JinjaError) {
            guard case .text(let text) = node else { throw misrouted(node) }
            try emit(text)
        }

        private func output(_ node: Node, _ scope: Scope) throws(JinjaError) {
            guard case .output(let expression, let tag) = node else { throw misrouted(node) }
            self.tag = tag
            let value = try evaluate(expression, scope)
            try emit(try text(value))
        }

        private func conditional(_ node: Node, _ scope: Scope) throws(JinjaError) -> Flow {
            let body = try branch(node, scope)
            return try execute(body, in: scope)
        }

        /// The body of the first branch whose condition holds, or else of `else`.
        private func branch(_ node: Node, _ scope: Scope) throws(JinjaError) -> [Node] {
            guard case .conditional(let branches, let otherwise) = node else { throw misrouted(node) }
            for branch in branches {
                tag = branch.tag
                if try evaluate(branch.condition, scope).isTruthy { return branch.body }
            }
            return otherwise
        }

        private func run(_ node: Node, _ scope: Scope) throws(JinjaError) -> Flow {
            guard case .loop(let loop) = node else { throw misrouted(node) }
            return try run(loop, in: scope)
        }

        private func assign(_ node: Node, _ scope: Scope) throws(JinjaError) {
            guard case .assign(let target, let expression, let tag) = node else { throw misrouted(node) }
            self.tag = tag
            let value = try evaluate(expression, scope)
            try assign(value, to: target, in: scope)
        }

        /// `{% set name %}...{% endset %}`.
        private func capture(_ node: Node, _ scope: Scope) throws(JinjaError) {
            guard case .assignBlock(let target, let body, let tag) = node else { throw misrouted(node) }
            suspend(tag: self.tag)
            _ = try execute(body, in: scope)
            let captured = resume()
            self.tag = tag
            try assign(.string(captured), to: target, in: scope)
        }

        private func define(_ node: Node, _ scope: Scope) {
            guard case .macro(let definition) = node else { return }
            scope.variables[definition.name] = .callable(.macro(Macro(definition: definition, closure: scope)))
        }

        private func block(_ node: Node, _ scope: Scope) throws(JinjaError) -> Flow {
            guard case .block(let body) = node else { throw misrouted(node) }
            return try execute(body, in: scope)
        }

        private func run(_ loop: ForLoop, in scope: Scope) throws(JinjaError) -> Flow {
            let items = try items(of: loop, scope)
            if items.isEmpty { return try execute(loop.otherwise, in: Scope(parent: scope)) }
            for index in items.indices {
                if try iteration(loop, items, index, scope) == .breakLoop { break }
            }
            return .normal
        }

        /// What a loop goes over: its iterable's items for which its `if` holds.
        private func items(of loop: ForLoop, _ scope: Scope) throws(JinjaError) -> [Value] {
            tag = loop.tag
            let items = try iterate(try evaluate(loop.iterable, scope))
            guard let filter = loop.filter else { return items }
            return try kept(items, loop.target, filter, scope)
        }

        /// The items for which a loop's `if` holds.
        private func kept(_ items: [Value], _ target: AssignTarget, _ filter: Expr, _ scope: Scope) throws(JinjaError) -> [Value] {
            var kept: [Value] = []
            // A level of its own, for the frames between the loop and its condition.
            try enter()
            defer { depth -= 1 }
            for item in items {
                let iteration = Scope(parent: scope)
                try assign(item, to: target, in: iteration)
                if try evaluate(filter, iteration).isTruthy { kept.append(item) }
            }
            return kept
        }

        /// One pass of a loop's body: a level of nesting of its own, as the loop costs stack.
        private func iteration(_ loop: ForLoop, _ items: [Value], _ index: Int, _ scope: Scope) throws(JinjaError) -> Flow {
            tag = loop.tag
            try enter()
            defer { depth -= 1 }
            let iteration = try passScope(loop, items, index, scope)
            return try execute(loop.body, in: iteration)
        }

        /// The scope of one pass of a loop: its target and `loop`.
        private func passScope(_ loop: ForLoop, _ items: [Value], _ index: Int, _ scope: Scope) throws(JinjaError) -> Scope {
            let iteration = Scope(parent: scope)
            tag = loop.tag
            try assign(items[index], to: loop.target, in: iteration)
            iteration.variables["loop"] = .loop(LoopState(
                index0: index, length: items.count,
                previous: index > 0 ? items[index - 1] : nil,
                next: index + 1 < items.count ? items[index + 1] : nil))
            return iteration
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
                try checkAttribute(value, "'\(name).\(attribute)'")
                namespace.attributes[attribute] = value
            }
        }

        // MARK: Expressions

        /// Dispatches on the kind of expression alone: each kind's function takes its parts out, so that
        /// this frame, on the path of every nested expression, binds nothing.
        /// One expression, by the function for its kind: `evaluator(of:)` picks it without binding the
        /// expression's parts or calling anything that throws, so this frame, on the path of every
        /// nested expression, stays a few hundred bytes also in a debug build (a `switch` calling the
        /// sixteen functions itself takes a kilobyte there, for the slots of its calls' results and errors).
        func evaluate(_ expression: Expr, _ scope: Scope) throws(JinjaError) -> Value {
            try enter()
            defer { depth -= 1 }
            return try Self.evaluator(of: expression)(self, expression, scope)
        }

        private typealias Evaluator = (Interpreter, Expr, Scope) throws(JinjaError) -> Value

        private static func evaluator(of expression: Expr) -> Evaluator {
            switch expression {
            case .constant: { i, e, _ throws(JinjaError) in try i.constant(e) }
            case .name: { i, e, s in i.lookup(e, s) }
            case .list, .tuple: { i, e, s throws(JinjaError) in try i.list(e, s) }
            case .dict: { i, e, s throws(JinjaError) in try i.dict(e, s) }
            case .attribute: { i, e, s throws(JinjaError) in try i.attribute(e, s) }
            case .item: { i, e, s throws(JinjaError) in try i.item(e, s) }
            case .slice: { i, e, s throws(JinjaError) in try i.slice(e, s) }
            case .call: { i, e, s throws(JinjaError) in try i.call(e, s) }
            case .filter: { i, e, s throws(JinjaError) in try i.filter(e, s) }
            case .test: { i, e, s throws(JinjaError) in try i.test(e, s) }
            case .not: { i, e, s throws(JinjaError) in try i.not(e, s) }
            case .negate, .plus: { i, e, s throws(JinjaError) in try i.unary(e, s) }
            case .binary: { i, e, s throws(JinjaError) in try i.binary(e, s) }
            case .and, .or: { i, e, s throws(JinjaError) in try i.logical(e, s) }
            case .compare: { i, e, s throws(JinjaError) in try i.compare(e, s) }
            case .conditional: { i, e, s throws(JinjaError) in try i.conditional(e, s) }
            }
        }

        // Each function below takes the parts of its kind of expression out of `expression`.

        /// What a function for one kind of expression reports when handed another; `evaluator(of:)` never does that.
        private func misrouted(_ expression: Expr) -> JinjaError {
            fail("internal error: an expression was evaluated by the function for another kind")
        }

        private func constant(_ expression: Expr) throws(JinjaError) -> Value {
            guard case .constant(let value) = expression else { throw misrouted(expression) }
            return try convert(value, name: "")
        }

        private func lookup(_ expression: Expr, _ scope: Scope) -> Value {
            guard case .name(let name) = expression else { return .undefined("") }
            if let value = scope.lookup(name) { return value }
            if Self.globalNames.contains(name) { return .callable(.global(name)) }
            return .undefined("'\(name)' is undefined")
        }

        private func list(_ expression: Expr, _ scope: Scope) throws(JinjaError) -> Value {
            switch expression {
            case .list(let items), .tuple(let items): return try list(try evaluate(items, scope))
            default: throw misrouted(expression)
            }
        }

        private func dict(_ expression: Expr, _ scope: Scope) throws(JinjaError) -> Value {
            guard case .dict(let pairs) = expression else { throw misrouted(expression) }
            var map = OrderedMap<Value>()
            for pair in pairs {
                let key = try evaluate(pair.key, scope)
                guard case .string(let name) = key else { throw fail("expected a string as a dict key, found \(key.brief)") }
                map[name] = try evaluate(pair.value, scope)
            }
            return try dict(map)
        }

        private func attribute(_ expression: Expr, _ scope: Scope) throws(JinjaError) -> Value {
            guard case .attribute(let base, let name) = expression else { throw misrouted(expression) }
            let value = try evaluate(base, scope)
            return try attribute(of: value, name)
        }

        private func item(_ expression: Expr, _ scope: Scope) throws(JinjaError) -> Value {
            guard case .item(let base, let index) = expression else { throw misrouted(expression) }
            let value = try evaluate(base, scope)
            let key = try evaluate(index, scope)
            return try item(of: value, key)
        }

        private func slice(_ expression: Expr, _ scope: Scope) throws(JinjaError) -> Value {
            guard case .slice(let base, let start, let stop, let step) = expression else { throw misrouted(expression) }
            let value = try evaluate(base, scope)
            var bounds: [Value] = []
            for bound in [start, stop, step] { bounds.append(try bound.map { e throws(JinjaError) in try evaluate(e, scope) } ?? .none) }
            return try slice(value, bounds[0], bounds[1], bounds[2])
        }

        private func call(_ expression: Expr, _ scope: Scope) throws(JinjaError) -> Value {
            guard case .call(let callee, let arguments) = expression else { throw misrouted(expression) }
            let function = try evaluate(callee, scope)
            let (positional, keywords) = try evaluate(arguments, scope)
            return try call(function, positional, keywords)
        }

        private func filter(_ expression: Expr, _ scope: Scope) throws(JinjaError) -> Value {
            guard case .filter(let base, let name, let arguments) = expression else { throw misrouted(expression) }
            let value = try evaluate(base, scope)
            let (positional, keywords) = try evaluate(arguments, scope)
            return try filter(name, value, positional, keywords)
        }

        private func test(_ expression: Expr, _ scope: Scope) throws(JinjaError) -> Value {
            guard case .test(let base, let name, let arguments) = expression else { throw misrouted(expression) }
            let value = try evaluate(base, scope)
            let (positional, keywords) = try evaluate(arguments, scope)
            return .bool(try test(name, value, positional, keywords))
        }

        private func not(_ expression: Expr, _ scope: Scope) throws(JinjaError) -> Value {
            guard case .not(let operand) = expression else { throw misrouted(expression) }
            return .bool(!(try evaluate(operand, scope).isTruthy))
        }

        /// `-x` and `+x`.
        private func unary(_ expression: Expr, _ scope: Scope) throws(JinjaError) -> Value {
            let isNegation: Bool
            let operand: Expr
            switch expression {
            case .negate(let e): (isNegation, operand) = (true, e)
            case .plus(let e): (isNegation, operand) = (false, e)
            default: throw misrouted(expression)
            }
            let value = try evaluate(operand, scope)
            if case .undefined(let message) = value { throw fail(message) }
            guard let number = value.numeric else { throw fail("bad operand type for unary operator: '\(value.typeName)'") }
            guard isNegation else { return number }
            if case .int(let i) = number {
                let (negated, overflow) = Int(0).subtractingReportingOverflow(i)
                if overflow { throw fail("integer overflow in -(\(i))") }
                return .int(negated)
            }
            return .double(-number.asDouble)
        }

        private func binary(_ expression: Expr, _ scope: Scope) throws(JinjaError) -> Value {
            guard case .binary(let op, let left, let right) = expression else { throw misrouted(expression) }
            let a = try evaluate(left, scope)
            let b = try evaluate(right, scope)
            return try binary(op, a, b)
        }

        /// `and` and `or`, which evaluate their right side only when it decides.
        private func logical(_ expression: Expr, _ scope: Scope) throws(JinjaError) -> Value {
            let isAnd: Bool
            let left: Expr, right: Expr
            switch expression {
            case .and(let l, let r): (isAnd, left, right) = (true, l, r)
            case .or(let l, let r): (isAnd, left, right) = (false, l, r)
            default: throw misrouted(expression)
            }
            let value = try evaluate(left, scope)
            return value.isTruthy == isAnd ? try evaluate(right, scope) : value
        }

        private func compare(_ expression: Expr, _ scope: Scope) throws(JinjaError) -> Value {
            guard case .compare(let first, let operations) = expression else { throw misrouted(expression) }
            var left = try evaluate(first, scope)
            for operation in operations {
                let right = try evaluate(operation.operand, scope)
                guard try compare(operation.op, left, right) else { return .bool(false) }
                left = right
            }
            return .bool(true)
        }

        private func conditional(_ expression: Expr, _ scope: Scope) throws(JinjaError) -> Value {
            guard case .conditional(let value, let test, let otherwise) = expression else { throw misrouted(expression) }
            if try evaluate(test, scope).isTruthy { return try evaluate(value, scope) }
            if let otherwise { return try evaluate(otherwise, scope) }
            return .undefined("the inline if-expression evaluated to false and has no else section")
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

        // MARK: str() and repr()

        /// Python's `str()`.
        func text(_ value: Value) throws(JinjaError) -> String {
            switch value {
            case .undefined: return ""
            case .string(let s): return s
            default: return try repr(value)
            }
        }

        /// Python's `repr()`, which `str()` of lists and dicts uses for their items. A loop over pending
        /// work rather than a recursion, so that the stack it takes does not grow with the value's depth.
        func repr(_ value: Value) throws(JinjaError) -> String {
            enum Work {
                case value(Value, level: Int)
                case text(String)
            }
            var out = ""
            var work: [Work] = [.value(value, level: 0)]  // the next piece last
            func push(_ pairs: [(key: String, value: Value)], level: Int, close: String) {
                work.append(.text(close))
                for (index, pair) in pairs.enumerated().reversed() {
                    work.append(.value(pair.value, level: level + 1))
                    work.append(.text(": "))
                    work.append(.value(.string(pair.key), level: level + 1))
                    if index > 0 { work.append(.text(", ")) }
                }
            }
            while let next = work.popLast() {
                switch next {
                case .text(let text):
                    out += text
                case .value(let value, let level):
                    try charge(1)
                    switch value {
                    case .string(let s):
                        try checkText(Self.sum(out.utf8.count, s.utf8.count))
                        try chargeText(s.utf8.count)
                        out += Jinja.pythonRepr(s)
                    case .array(let list):
                        guard level < Self.maxValueDepth else { throw valueTooDeep(level + 1) }
                        out += "["
                        work.append(.text("]"))
                        for index in list.indices.reversed() {
                            work.append(.value(list[index], level: level + 1))
                            if index > 0 { work.append(.text(", ")) }
                        }
                    case .object(let dict):
                        guard level < Self.maxValueDepth else { throw valueTooDeep(level + 1) }
                        out += "{"
                        push(dict.pairs, level: level, close: "}")
                    case .namespace(let namespace):
                        guard level < Self.maxValueDepth else { throw valueTooDeep(level + 1) }
                        out += "<Namespace {"
                        push(namespace.attributes.pairs, level: level, close: "}>")
                    default:
                        out += value.scalarRepr ?? value.typeName
                    }
                }
                try checkText(out.utf8.count)
            }
            return out
        }

        // MARK: Operators

        func binary(_ op: String, _ a: Value, _ b: Value) throws(JinjaError) -> Value {
            if op == "~" { return try concatenate(try text(a), try text(b)) }
            if case .undefined(let message) = a { throw fail(message) }
            if case .undefined(let message) = b { throw fail(message) }
            switch (op, a, b) {
            case ("+", .string(let x), .string(let y)): return try concatenate(x, y)
            case ("+", .array(let x), .array(let y)):
                try charge(Self.sum(x.count, y.count))
                return try list(x.items + y.items)
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
            switch sequence {
            case .string(let s):
                guard n > 0, !s.isEmpty else { return .string("") }
                let bytes = Self.product(s.utf8.count, n)
                try checkText(bytes)
                try chargeText(bytes)
                return .string(String(repeating: s, count: n))
            case .array(let list):
                guard n > 0, !list.isEmpty else { return .list([]) }
                try charge(Self.product(list.count, n))
                return .array(List(Array([[Value]](repeating: list.items, count: n).joined())))
            default:
                return sequence
            }
        }

        private func integerArithmetic(_ op: String, _ i: Int, _ j: Int) throws(JinjaError) -> Value {
            let overflow = fail("integer overflow in \(i) \(op) \(j)")
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
                if j == -1 {  // Int.min / -1 overflows, Int.min % -1 is 0
                    if op == "%" { return .int(0) }
                    result = Int(0).subtractingReportingOverflow(i)
                    break
                }
                let q = i / j
                let r = i - q * j  // |q * j| <= |i|, and r has the sign of i
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
                        let (product, overflowed) = accumulator.multipliedReportingOverflow(by: base)
                        if overflowed { throw overflow }
                        accumulator = product
                    }
                    exponent >>= 1
                    if exponent > 0 {
                        let (square, overflowed) = base.multipliedReportingOverflow(by: base)
                        if overflowed { throw overflow }
                        base = square
                    }
                }
                return .int(accumulator)
            }
            if result.overflow { throw overflow }
            return .int(result.partialValue)
        }

        func compare(_ op: String, _ a: Value, _ b: Value) throws(JinjaError) -> Bool {
            switch op {
            case "==": return try equals(a, b)
            case "!=": return try !equals(a, b)
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

        /// Python's `==`: numbers compare by value (True == 1), strings by code points, dicts ignore order.
        /// A loop over the pairs left to compare, so that the stack does not grow with the values' depth.
        func equals(_ a: Value, _ b: Value) throws(JinjaError) -> Bool {
            switch (a, b) {
            case (.array, .array), (.object, .object): break
            default:
                try charge(1)
                return try scalarEquals(a, b)
            }
            var pending = [(a, b, 0)]  // with their depth; the next pair last
            while let (x, y, level) = pending.popLast() {
                try charge(1)
                switch (x, y) {
                case (.array(let x), .array(let y)):
                    guard x.count == y.count else { return false }
                    guard level < Self.maxValueDepth else { throw valueTooDeep(level + 1) }
                    for index in x.indices.reversed() { pending.append((x[index], y[index], level + 1)) }
                case (.object(let x), .object(let y)):
                    guard x.count == y.count else { return false }
                    guard level < Self.maxValueDepth else { throw valueTooDeep(level + 1) }
                    for (key, value) in x.pairs.reversed() {
                        guard let other = y[key] else { return false }
                        pending.append((value, other, level + 1))
                    }
                default:
                    guard try scalarEquals(x, y) else { return false }
                }
            }
            return true
        }

        /// `==` of two values that are not both lists or both dicts.
        private func scalarEquals(_ a: Value, _ b: Value) throws(JinjaError) -> Bool {
            switch (a, b) {
            case (.undefined, .undefined), (.none, .none): return true
            case (.string(let x), .string(let y)):
                // Equal code points are equal UTF-8 bytes.
                guard x.utf8.count == y.utf8.count else { return false }
                try chargeText(x.utf8.count)
                return x.utf8.elementsEqual(y.utf8)
            case (.namespace(let x), .namespace(let y)): return x === y
            default:
                if let x = a.numeric, let y = b.numeric {
                    if case .int(let i) = x, case .int(let j) = y { return i == j }
                    return x.asDouble == y.asDouble
                }
                return false
            }
        }

        /// -1, 0 or 1, for the types Python orders; anything else is the TypeError Python raises. Lists
        /// order by their first unequal items, which this loops down to rather than recursing.
        func order(_ a: Value, _ b: Value, _ op: String = "<") throws(JinjaError) -> Int {
            var (x, y, level) = (a, b, 0)
            while true {
                if case .undefined(let message) = x { throw fail(message) }
                if case .undefined(let message) = y { throw fail(message) }
                try charge(1)
                switch (x, y) {
                case (.string(let p), .string(let q)):
                    // UTF-8 bytes order as their code points do.
                    try chargeText(min(p.utf8.count, q.utf8.count))
                    for (c, d) in zip(p.utf8, q.utf8) where c != d { return c < d ? -1 : 1 }
                    return p.utf8.count < q.utf8.count ? -1 : p.utf8.count == q.utf8.count ? 0 : 1
                case (.array(let p), .array(let q)):
                    guard level < Self.maxValueDepth else { throw valueTooDeep(level + 1) }
                    var unequal: (Value, Value)?
                    for (c, d) in zip(p, q) where try !equals(c, d) {
                        unequal = (c, d)
                        break
                    }
                    guard let (c, d) = unequal else { return p.count < q.count ? -1 : p.count == q.count ? 0 : 1 }
                    (x, y, level) = (c, d, level + 1)
                default:
                    guard let p = x.numeric, let q = y.numeric else {
                        throw fail("'\(op)' not supported between instances of '\(x.typeName)' and '\(y.typeName)'")
                    }
                    if case .int(let i) = p, case .int(let j) = q { return i < j ? -1 : i == j ? 0 : 1 }
                    let (c, d) = (p.asDouble, q.asDouble)
                    return c < d ? -1 : c == d ? 0 : 1
                }
            }
        }

        func contains(_ container: Value, _ item: Value) throws(JinjaError) -> Bool {
            switch container {
            case .string(let s):
                guard case .string(let needle) = item else {
                    throw fail("'in <string>' requires string as left operand, not \(item.typeName)")
                }
                try chargeText(Self.sum(s.utf8.count, needle.utf8.count))
                return find(Array(needle.unicodeScalars), in: Array(s.unicodeScalars)) != nil
            case .array(let list):
                for element in list where try equals(element, item) { return true }
                return false
            case .object(let dict):
                if case .string(let key) = item { return dict[key] != nil }
                return false
            case .undefined: return false
            default: throw fail("argument of type '\(container.typeName)' is not iterable")
            }
        }

        // MARK: Access

        /// The items a `for` loop or a filter goes over: a dict's keys, a string's characters; none for
        /// undefined. Charged one step per item.
        func iterate(_ value: Value) throws(JinjaError) -> [Value] {
            switch value {
            case .array(let list):
                try charge(list.count)
                return list.items
            case .object(let dict):
                try charge(dict.count)
                return dict.keys.map { .string($0) }
            case .string(let s):
                try charge(s.utf8.count)
                return s.unicodeScalars.map { .string(String($0)) }
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
            case .object(let dict):
                if Self.dictMethods.contains(name) { return .callable(.method(value, name)) }
                if let found = dict[name] { return found }
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
            case (.array(let list), .int(let i)):
                let position = i < 0 ? i + list.count : i
                if list.indices.contains(position) { return list[position] }
            case (.string(let s), .int(let i)):
                try chargeText(s.utf8.count)
                let scalars = s.unicodeScalars
                let position = i < 0 ? i + scalars.count : i
                if position >= 0, let scalar = scalars.dropFirst(position).first { return .string(String(scalar)) }
            case (.object(let dict), .string(let key)):
                if let found = dict[key] { return found }
                return try attribute(of: value, key)
            case (_, .string(let key)):
                return try attribute(of: value, key)
            default:
                break
            }
            return .undefined("\(typeDescription(value)) has no element \(index.brief)")
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
            case .string(let s):
                try chargeText(s.utf8.count)
                count = s.unicodeScalars.count
            case .array(let list): count = list.count
            default: return .undefined("\(typeDescription(value)) cannot be sliced")
            }
            guard let first = integer(start), let last = integer(stop), let stride = integer(step) else {
                return .undefined("slice indices must be integers or none")
            }
            let by = stride ?? 1
            guard by != 0 else { throw fail("slice step cannot be zero") }
            // Python's slice.indices: both ends clamped to -1...count, so their differences cannot overflow.
            let (lower, upper) = by > 0 ? (0, count) : (-1, count - 1)
            func clamp(_ bound: Int?, _ fallback: Int) -> Int {
                guard let bound else { return fallback }
                return bound < 0 ? max(bound + count, lower) : min(bound, upper)
            }
            let from = clamp(first, by > 0 ? lower : upper)
            let end = clamp(last, by > 0 ? upper : lower)
            let picks: Int
            if by > 0 {
                picks = from < end ? (end - from - 1) / by + 1 : 0
            } else {
                picks = from > end ? Int(UInt(end.distance(to: from) - 1) / by.magnitude) + 1 : 0
            }
            try charge(picks)
            var indices: [Int] = []
            indices.reserveCapacity(picks)
            var i = from
            for _ in 0..<picks {
                indices.append(i)
                i &+= by  // past the last pick this may wrap; it is not used then
            }
            switch value {
            case .string(let s):
                let scalars = Array(s.unicodeScalars)
                var view = String.UnicodeScalarView()
                for index in indices { view.append(scalars[index]) }
                return .string(String(view))
            case .array(let list):
                return .array(List(indices.map { list[$0] }))
            default:
                return .undefined("")
            }
        }

        // MARK: Calls

        func call(_ function: Value, _ positional: [Value], _ keywords: [(String, Value)]) throws(JinjaError) -> Value {
            // A macro, on the path of recursion, first and on its own.
            if case .callable(.macro(let macro)) = function { return try call(macro, positional, keywords) }
            return try callBuiltin(function, positional, keywords)
        }

        private func callBuiltin(_ function: Value, _ positional: [Value], _ keywords: [(String, Value)]) throws(JinjaError) -> Value {
            switch function {
            case .callable(.global(let name)): return try callGlobal(name, positional, keywords)
            case .callable(.method(let receiver, let name)): return try callMethod(receiver, name, positional, keywords)
            case .callable(.cycle(let index)):
                guard !positional.isEmpty else { throw fail("loop.cycle needs at least one item") }
                return positional[index % positional.count]
            case .undefined(let message): throw fail(message)
            default: throw fail("'\(function.typeName)' object is not callable")
            }
        }

        /// A macro call: one level of nesting, as its body is.
        private func call(_ macro: Macro, _ positional: [Value], _ keywords: [(String, Value)]) throws(JinjaError) -> Value {
            try enter()
            defer { depth -= 1 }
            try check(positional, keywords, for: macro.definition)
            guard let closure = macro.closure else {
                throw fail("macro '\(macro.definition.name)' is called after the block that defined it ended")
            }
            suspend(tag: macro.definition.tag)
            let scope = try arguments(of: macro, closure, positional, keywords)
            _ = try execute(macro.definition.body, in: scope)
            return .string(resume())
        }

        /// Starts collecting output apart, for a macro's result or a `{% set %}` block, at `tag`. The
        /// output and tag so far wait on `suspended` rather than in the frames on the path of recursion;
        /// a failed render does not resume them.
        private func suspend(tag: Tag) {
            suspended.append((output, self.tag))
            output = ""
            self.tag = tag
        }

        /// The output collected since `suspend`, the output and tag before it back in place.
        private func resume() -> String {
            let collected = output
            if let (output, tag) = suspended.popLast() { (self.output, self.tag) = (output, tag) }
            return collected
        }

        /// Fails, at the call, when the arguments do not fit the macro's parameters.
        private func check(_ positional: [Value], _ keywords: [(String, Value)], for definition: MacroDefinition) throws(JinjaError) {
            let parameters = definition.parameters
            guard positional.count <= parameters.count else {
                throw fail("macro '\(definition.name)' takes not more than \(parameters.count) argument(s), found \(positional.count)")
            }
            for (name, _) in keywords where !parameters.contains(where: { $0.name == name }) {
                throw fail("macro '\(definition.name)' takes no keyword argument '\(name)'")
            }
        }

        /// The scope of a macro call: its parameters bound to the arguments, or else to their defaults.
        private func arguments(of macro: Macro, _ closure: Scope, _ positional: [Value], _ keywords: [(String, Value)]) throws(JinjaError) -> Scope {
            let scope = Scope(parent: closure)
            for (index, parameter) in macro.definition.parameters.enumerated() {
                scope.variables[parameter.name] = try argument(parameter, index, positional, keywords, scope)
            }
            return scope
        }

        private func argument(_ parameter: (name: String, defaultValue: Expr?), _ index: Int, _ positional: [Value],
                              _ keywords: [(String, Value)], _ scope: Scope) throws(JinjaError) -> Value
        {
            if index < positional.count { return positional[index] }
            if let keyword = keywords.last(where: { $0.0 == parameter.name }) { return keyword.1 }
            guard let defaultValue = parameter.defaultValue else { return .undefined("parameter '\(parameter.name)' was not provided") }
            // A level of its own, for the frames between the macro's call and its default.
            try enter()
            defer { depth -= 1 }
            return try evaluate(defaultValue, scope)
        }
    }
}
