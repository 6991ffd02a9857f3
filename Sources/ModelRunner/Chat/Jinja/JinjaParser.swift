extension Jinja {
    // MARK: - Syntax tree

    indirect enum Expr: Sendable {
        case constant(JinjaValue)
        case name(String)
        case list([Expr])
        case tuple([Expr])
        case dict([(key: Expr, value: Expr)])
        case attribute(Expr, String)
        case item(Expr, Expr)
        case slice(Expr, start: Expr?, stop: Expr?, step: Expr?)
        case call(Expr, Arguments)
        case filter(Expr, String, Arguments)
        case test(Expr, String, Arguments)
        case not(Expr)
        case negate(Expr)
        case plus(Expr)
        case binary(String, Expr, Expr)
        case and(Expr, Expr)
        case or(Expr, Expr)
        case compare(Expr, [(op: String, operand: Expr)])
        case conditional(Expr, test: Expr, otherwise: Expr?)
    }

    struct Arguments: Sendable {
        var positional: [Expr] = []
        var keywords: [(name: String, value: Expr)] = []
    }

    enum AssignTarget: Sendable {
        case name(String)
        case tuple([String])
        /// `ns.attribute`, which only a namespace accepts.
        case attribute(String, String)
    }

    struct ForLoop: Sendable {
        var target: AssignTarget
        var iterable: Expr
        var filter: Expr?
        var body: [Node]
        var otherwise: [Node]
        var tag: Tag
    }

    struct MacroDefinition: Sendable {
        var name: String
        var parameters: [(name: String, defaultValue: Expr?)]
        var body: [Node]
        var tag: Tag
    }

    indirect enum Node: Sendable {
        case text(String)
        case output(Expr, Tag)
        case conditional([(condition: Expr, body: [Node], tag: Tag)], otherwise: [Node])
        case loop(ForLoop)
        case assign(AssignTarget, Expr, Tag)
        case assignBlock(AssignTarget, [Node], Tag)
        case macro(MacroDefinition)
        case loopControl(isBreak: Bool)
        /// Hugging Face's `{% generation %}`: renders its body (transformers uses it to mark assistant tokens).
        case block([Node])
    }

    // MARK: - Parser

    /// Recursive descent over the lexer's tokens, following jinja2's grammar and precedence: filters and
    /// tests bind tighter than any operator, `**` is left-associative, comparisons chain.
    struct Parser {
        private var tokens: [Token]
        private let tags: [Tag]
        private var position = 0
        private var loopDepth = 0
        /// Blocks and sub-expressions open at this point; bounded so that no template can exhaust the
        /// stack of the recursive parser or evaluator.
        private var depth = 0
        private static let maxDepth = 100

        /// Statements this engine knows it does not implement; any other unknown tag is reported as unknown.
        private static let unsupportedTags: Set = ["include", "extends", "import", "from", "call", "filter", "block",
                                                   "with", "autoescape", "raw", "do", "trans", "pluralize"]

        init(_ lexer: Lexer) {
            tokens = lexer.tokens
            tags = lexer.tags
        }

        mutating func parseTemplate() throws(JinjaError) -> [Node] {
            try parseBody(until: []).0
        }

        // MARK: Token helpers

        private var current: Token { tokens[position] }

        private func tag(of token: Token) -> Tag? { token.tag.map { tags[$0] } }

        private func error(_ message: String, at token: Token) -> JinjaError {
            let quoted = tag(of: token).map { " in " + $0.source } ?? ""
            return JinjaError(message: message + quoted, line: token.line, column: token.column)
        }

        private static func describe(_ kind: Token.Kind) -> String {
            switch kind {
            case .text: "template text"
            case .openExpression: "'{{'"
            case .openStatement: "'{%'"
            case .closeExpression: "the end of the tag ('}}')"
            case .closeStatement: "the end of the tag ('%}')"
            case .name(let name): "'\(name)'"
            case .string(let s): "string \(pythonRepr(s))"
            case .integer(let i): "number \(i)"
            case .float(let d): "number \(pythonFloat(d))"
            case .symbol(let s): "'\(s)'"
            case .end: "the end of the template"
            }
        }

        private func unexpected(expected: String) -> JinjaError {
            error("expected \(expected), found \(Self.describe(current.kind))", at: current)
        }

        private mutating func nest() throws(JinjaError) {
            depth += 1
            if depth > Self.maxDepth { throw error("blocks or expressions nested deeper than \(Self.maxDepth) levels", at: current) }
        }

        private func isSymbol(_ symbol: String) -> Bool { current.kind == .symbol(symbol) }
        private func isName(_ name: String) -> Bool { current.kind == .name(name) }

        private mutating func skip(symbol: String) -> Bool {
            guard isSymbol(symbol) else { return false }
            position += 1
            return true
        }

        private mutating func skip(name: String) -> Bool {
            guard isName(name) else { return false }
            position += 1
            return true
        }

        private mutating func expect(symbol: String) throws(JinjaError) {
            guard skip(symbol: symbol) else { throw unexpected(expected: "'\(symbol)'") }
        }

        private mutating func expectName(_ what: String = "a name") throws(JinjaError) -> String {
            guard case .name(let name) = current.kind else { throw unexpected(expected: what) }
            position += 1
            return name
        }

        private mutating func expectStatementEnd() throws(JinjaError) {
            guard current.kind == .closeStatement else { throw unexpected(expected: "the end of the tag ('%}')") }
            position += 1
        }

        // MARK: Statements

        // The functions on the path of nesting (parseBody, parseStatement and each statement's, and
        // parseTuple down to parsePrimary) are kept small, each piece in a function of its own, so that
        // a level of nesting costs little stack also in a debug build, where every local has a slot.

        /// Nodes up to a `{% name %}` in `endTags` (consumed up to the name) or the end of the template.
        private mutating func parseBody(until endTags: Set<String>) throws(JinjaError) -> ([Node], String?) {
            var nodes: [Node] = []
            while true {
                switch current.kind {
                case .openStatement:
                    if let end = try skipEndTag(endTags) { return (nodes, end) }
                    nodes.append(try parseStatement())
                case .end:
                    return (nodes, nil)
                default:
                    nodes.append(try parseTextOrOutput())
                }
            }
        }

        /// At `{%`: the statement's name, consumed with the `{%`, when it is one of `endTags`.
        private mutating func skipEndTag(_ endTags: Set<String>) throws(JinjaError) -> String? {
            guard case .name(let name) = tokens[position + 1].kind else {
                position += 1
                throw unexpected(expected: "a statement name")
            }
            guard endTags.contains(name) else { return nil }
            position += 2
            return name
        }

        private mutating func parseTextOrOutput() throws(JinjaError) -> Node {
            let token = current
            switch token.kind {
            case .text(let text):
                position += 1
                return .text(text)
            case .openExpression:
                position += 1
                let expression = try parseTuple()
                guard current.kind == .closeExpression else { throw unexpected(expected: "the end of the tag ('}}')") }
                position += 1
                return .output(expression, tag(of: token) ?? Tag(line: token.line, column: token.column, source: ""))
            default:
                throw unexpected(expected: "template text or a tag")
            }
        }

        /// A body closed by one of `endTags`; reaching the end of the template first is an error naming the opener.
        private mutating func parseBlock(until endTags: Set<String>, opener: Token) throws(JinjaError) -> ([Node], String) {
            let (nodes, end) = try parseBody(until: endTags)
            guard let end else { throw unclosed(endTags, opener) }
            return (nodes, end)
        }

        private func unclosed(_ endTags: Set<String>, _ opener: Token) -> JinjaError {
            let names = endTags.sorted().map { "'\($0)'" }.joined(separator: " or ")
            return error("expected \(names), found the end of the template; the block opened at line \(opener.line)", at: opener)
        }

        /// At `{%` and a name: one level of nesting, parsed by the statement's function (see `statement(named:)`).
        private mutating func parseStatement() throws(JinjaError) -> Node {
            let opener = current
            position += 1
            let outerDepth = depth
            defer { depth = outerDepth }
            try nest()
            return try Self.statement(named: current.kind)(&self, opener)
        }

        private typealias StatementParser = (inout Parser, Token) throws(JinjaError) -> Node

        /// The function for a statement, picked without binding or calling anything that throws, so
        /// that `parseStatement`'s frame stays small.
        private static func statement(named kind: Token.Kind) -> StatementParser {
            switch kind {
            case .name("if"): { p, opener throws(JinjaError) in try p.parseIf(opener) }
            case .name("for"): { p, opener throws(JinjaError) in try p.parseFor(opener) }
            case .name("set"): { p, opener throws(JinjaError) in try p.parseSet(opener) }
            case .name("macro"): { p, opener throws(JinjaError) in try p.parseMacro(opener) }
            case .name("break"), .name("continue"): { p, _ throws(JinjaError) in try p.parseLoopControl() }
            case .name("generation"): { p, opener throws(JinjaError) in try p.parseGeneration(opener) }
            default: { p, _ throws(JinjaError) in throw p.unknownStatement() }
            }
        }

        private mutating func statementTag(_ opener: Token) -> Tag {
            position += 1  // the statement's name
            return tag(of: opener) ?? Tag(line: opener.line, column: opener.column, source: "")
        }

        private mutating func parseIf(_ opener: Token) throws(JinjaError) -> Node {
            var branches = Branches(tag: statementTag(opener))
            while try parseBranch(into: &branches, opener) {}
            return .conditional(branches.branches, otherwise: branches.otherwise)
        }

        /// An `if` being parsed.
        private struct Branches {
            var branches: [(condition: Expr, body: [Node], tag: Tag)] = []
            var otherwise: [Node] = []
            /// The tag of the branch being parsed.
            var tag: Tag
        }

        /// An `if` or `elif` condition and its body, and the `else` body when it follows; whether an
        /// `elif` follows.
        private mutating func parseBranch(into branches: inout Branches, _ opener: Token) throws(JinjaError) -> Bool {
            let condition = try parseTuple(withConditional: false)
            try expectStatementEnd()
            let (body, end) = try parseBlock(until: ["elif", "else", "endif"], opener: opener)
            branches.branches.append((condition, body, branches.tag))
            if end == "elif" {
                branches.tag = self.tag(of: tokens[position - 1]) ?? branches.tag
                return true
            }
            if end == "else" { branches.otherwise = try parseElse(until: "endif", opener) }
            try expectStatementEnd()
            return false
        }

        /// After `{% else`: the body up to `end`.
        private mutating func parseElse(until end: String, _ opener: Token) throws(JinjaError) -> [Node] {
            try expectStatementEnd()
            return try parseBlock(until: [end], opener: opener).0
        }

        private mutating func parseFor(_ opener: Token) throws(JinjaError) -> Node {
            var loop = try parseForHeader(opener)
            loopDepth += 1
            let (body, end) = try parseBlock(until: ["else", "endfor"], opener: opener)
            loopDepth -= 1
            loop.body = body
            if end == "else" { loop.otherwise = try parseElse(until: "endfor", opener) }
            try expectStatementEnd()
            return .loop(loop)
        }

        /// `for target in iterable if filter %}`, the loop without its body yet.
        private mutating func parseForHeader(_ opener: Token) throws(JinjaError) -> ForLoop {
            let tag = statementTag(opener)
            let target = try parseAssignTarget(allowNamespace: false)
            guard skip(name: "in") else { throw unexpected(expected: "'in'") }
            let iterable = try parseTuple(withConditional: false, endNames: ["if", "recursive"])
            let filter = skip(name: "if") ? try parseExpression() : nil
            if isName("recursive") { throw error("unsupported 'recursive' loop", at: current) }
            try expectStatementEnd()
            return ForLoop(target: target, iterable: iterable, filter: filter, body: [], otherwise: [], tag: tag)
        }

        private mutating func parseSet(_ opener: Token) throws(JinjaError) -> Node {
            let tag = statementTag(opener)
            let target = try parseAssignTarget(allowNamespace: true)
            if skip(symbol: "=") {
                let value = try parseTuple()
                try expectStatementEnd()
                return .assign(target, value, tag)
            }
            try expectStatementEnd()
            let (body, _) = try parseBlock(until: ["endset"], opener: opener)
            try expectStatementEnd()
            return .assignBlock(target, body, tag)
        }

        private mutating func parseMacro(_ opener: Token) throws(JinjaError) -> Node {
            var definition = try parseMacroHeader(opener)
            let outerLoops = loopDepth
            loopDepth = 0
            definition.body = try parseBlock(until: ["endmacro"], opener: opener).0
            loopDepth = outerLoops
            if case .name = current.kind { position += 1 }  // `{% endmacro name %}` is allowed
            try expectStatementEnd()
            return .macro(definition)
        }

        /// `macro name(parameters) %}`, the macro without its body yet.
        private mutating func parseMacroHeader(_ opener: Token) throws(JinjaError) -> MacroDefinition {
            let tag = statementTag(opener)
            let macroName = try expectName("the macro's name")
            try expect(symbol: "(")
            var parameters: [(name: String, defaultValue: Expr?)] = []
            while !skip(symbol: ")") {
                if !parameters.isEmpty { try expect(symbol: ",") }
                if skip(symbol: ")") { break }
                let parameter = try expectName("a parameter name")
                let defaultValue = skip(symbol: "=") ? try parseExpression() : nil
                if defaultValue == nil, parameters.last?.defaultValue != nil {
                    throw error("parameter '\(parameter)' without a default follows one with a default", at: tokens[position - 1])
                }
                parameters.append((parameter, defaultValue))
            }
            try expectStatementEnd()
            return MacroDefinition(name: macroName, parameters: parameters, body: [], tag: tag)
        }

        private mutating func parseLoopControl() throws(JinjaError) -> Node {
            guard case .name(let name) = current.kind else { throw unexpected(expected: "'break' or 'continue'") }
            guard loopDepth > 0 else { throw error("'\(name)' outside a loop", at: current) }
            position += 1
            try expectStatementEnd()
            return .loopControl(isBreak: name == "break")
        }

        private mutating func parseGeneration(_ opener: Token) throws(JinjaError) -> Node {
            _ = statementTag(opener)
            try expectStatementEnd()
            let (body, _) = try parseBlock(until: ["endgeneration"], opener: opener)
            try expectStatementEnd()
            return .block(body)
        }

        private func unknownStatement() -> JinjaError {
            guard case .name(let name) = current.kind else { return unexpected(expected: "a statement name") }
            if Self.unsupportedTags.contains(name) { return error("unsupported tag '\(name)'", at: current) }
            if name.hasPrefix("end") || name == "elif" || name == "else" { return error("unexpected '\(name)'", at: current) }
            return error("unknown tag '\(name)'", at: current)
        }

        private mutating func parseAssignTarget(allowNamespace: Bool) throws(JinjaError) -> AssignTarget {
            let parenthesized = skip(symbol: "(")
            let first = try expectName("a variable name")
            if allowNamespace, !parenthesized, skip(symbol: ".") {
                return .attribute(first, try expectName("an attribute name"))
            }
            var names = [first]
            var isTuple = false
            while skip(symbol: ",") {
                isTuple = true
                guard case .name(let name) = current.kind, !["in", "recursive"].contains(name) else { break }
                position += 1
                names.append(name)
            }
            if parenthesized { try expect(symbol: ")") }
            return isTuple ? .tuple(names) : .name(first)
        }

        // MARK: Expressions

        /// Comma-separated expressions make a tuple: `{{ a, b }}`, `{% set x = 1, 2 %}`.
        private mutating func parseTuple(withConditional: Bool = true, endNames: Set<String> = [],
                                         parenthesized: Bool = false) throws(JinjaError) -> Expr
        {
            guard !endsTuple(endNames) else { return try emptyTuple(parenthesized) }
            let first = withConditional ? try parseExpression() : try parseOr()
            guard isSymbol(",") else { return first }
            return try parseTupleRest(first, withConditional: withConditional, endNames: endNames)
        }

        /// Whether the tuple ends here, before an item.
        private func endsTuple(_ endNames: Set<String>) -> Bool {
            switch current.kind {
            case .closeExpression, .closeStatement, .symbol(")"): true
            case .name(let name): endNames.contains(name)
            default: false
            }
        }

        /// `()`, or the error where an expression should be.
        private func emptyTuple(_ parenthesized: Bool) throws(JinjaError) -> Expr {
            guard parenthesized else { throw unexpected(expected: "an expression") }
            return .tuple([])
        }

        /// At the `,` after a tuple's first item: the other items, a trailing comma allowed.
        private mutating func parseTupleRest(_ first: Expr, withConditional: Bool, endNames: Set<String>) throws(JinjaError) -> Expr {
            var items = [first]
            while skip(symbol: ",") {
                if endsTuple(endNames) { break }
                items.append(withConditional ? try parseExpression() : try parseOr())
            }
            return .tuple(items)
        }

        private mutating func parseExpression() throws(JinjaError) -> Expr {
            var expression = try parseOr()
            while skip(name: "if") {
                try nest()
                let test = try parseOr()
                let otherwise = skip(name: "else") ? try parseExpression() : nil
                expression = .conditional(expression, test: test, otherwise: otherwise)
            }
            return expression
        }

        private mutating func parseOr() throws(JinjaError) -> Expr {
            let outerDepth = depth
            defer { depth = outerDepth }
            try nest()
            var left = try parseAnd()
            while skip(name: "or") {
                try nest()
                left = .or(left, try parseAnd())
            }
            return left
        }

        private mutating func parseAnd() throws(JinjaError) -> Expr {
            var left = try parseNot()
            while skip(name: "and") {
                try nest()
                left = .and(left, try parseNot())
            }
            return left
        }

        private mutating func parseNot() throws(JinjaError) -> Expr {
            if skip(name: "not") {
                try nest()
                return .not(try parseNot())
            }
            return try parseCompare()
        }

        private mutating func parseCompare() throws(JinjaError) -> Expr {
            let left = try parseArithmetic()
            return try parseComparisons(left)
        }

        /// The comparisons chained after `left`, if any.
        private mutating func parseComparisons(_ left: Expr) throws(JinjaError) -> Expr {
            var operations: [(op: String, operand: Expr)] = []
            while true {
                if case .symbol(let s) = current.kind, ["==", "!=", "<", "<=", ">", ">="].contains(s) {
                    try nest()
                    position += 1
                    operations.append((s, try parseArithmetic()))
                } else if skip(name: "in") {
                    try nest()
                    operations.append(("in", try parseArithmetic()))
                } else if isName("not"), tokens[position + 1].kind == .name("in") {
                    try nest()
                    position += 2
                    operations.append(("not in", try parseArithmetic()))
                } else {
                    break
                }
            }
            return operations.isEmpty ? left : .compare(left, operations)
        }

        /// Binary operators from loosest to tightest; each level is left-associative (also `**`, as in jinja2).
        private static let binaryLevels: [Set<String>] = [["+", "-"], ["~"], ["*", "/", "//", "%"], ["**"]]

        /// Binary operators by precedence climbing: operators of `level` or tighter, so that a level
        /// of parentheses costs one or two frames rather than one per precedence level.
        private mutating func parseArithmetic(level: Int = 0) throws(JinjaError) -> Expr {
            var left = try parseUnary(withFilters: true)
            while case .symbol(let s) = current.kind,
                  let operatorLevel = Self.binaryLevels.firstIndex(where: { $0.contains(s) }), operatorLevel >= level
            {
                position += 1
                try nest()
                left = .binary(s, left, try parseArithmetic(level: operatorLevel + 1))
            }
            return left
        }

        private mutating func parseUnary(withFilters: Bool) throws(JinjaError) -> Expr {
            let outerDepth = depth
            defer { depth = outerDepth }
            try nest()
            var expression: Expr
            if skip(symbol: "-") {
                expression = .negate(try parseUnary(withFilters: false))
            } else if skip(symbol: "+") {
                expression = .plus(try parseUnary(withFilters: false))
            } else {
                expression = try parsePrimary()
            }
            expression = try parsePostfix(expression)
            return withFilters ? try parseFiltersAndTests(expression) : expression
        }

        private mutating func parsePrimary() throws(JinjaError) -> Expr {
            switch current.kind {
            case .symbol("("): return try parseParenthesized()
            case .symbol("["): return try parseList()
            case .symbol("{"): return try parseDict()
            default: return try parseAtom()
            }
        }

        /// A literal or a name.
        private mutating func parseAtom() throws(JinjaError) -> Expr {
            let token = current
            if token.kind != .end { position += 1 }
            switch token.kind {
            case .name("true"), .name("True"): return .constant(.bool(true))
            case .name("false"), .name("False"): return .constant(.bool(false))
            case .name("none"), .name("None"): return .constant(.none)
            case .name(let name): return .name(name)
            case .string(var text):
                while case .string(let more) = current.kind {  // adjacent literals concatenate
                    text += more
                    position += 1
                }
                return .constant(.string(text))
            case .integer(let i): return .constant(.int(i))
            case .float(let d): return .constant(.double(d))
            default:
                throw error("expected an expression, found \(Self.describe(token.kind))", at: token)
            }
        }

        private mutating func parseParenthesized() throws(JinjaError) -> Expr {
            position += 1
            let expression = try parseTuple(parenthesized: true)
            try expect(symbol: ")")
            return expression
        }

        private mutating func parseList() throws(JinjaError) -> Expr {
            position += 1
            var items: [Expr] = []
            while !skip(symbol: "]") {
                if !items.isEmpty { try expect(symbol: ",") }
                if skip(symbol: "]") { break }
                items.append(try parseExpression())
            }
            return .list(items)
        }

        private mutating func parseDict() throws(JinjaError) -> Expr {
            position += 1
            var pairs: [(key: Expr, value: Expr)] = []
            while !skip(symbol: "}") {
                if !pairs.isEmpty { try expect(symbol: ",") }
                if skip(symbol: "}") { break }
                let key = try parseExpression()
                try expect(symbol: ":")
                pairs.append((key, try parseExpression()))
            }
            return .dict(pairs)
        }

        private mutating func parsePostfix(_ base: Expr) throws(JinjaError) -> Expr {
            var expression = base
            while isSymbol(".") || isSymbol("[") || isSymbol("(") {
                try nest()
                if skip(symbol: ".") {
                    switch current.kind {
                    case .name(let name): expression = .attribute(expression, name)
                    case .integer(let i): expression = .item(expression, .constant(.int(i)))
                    default: throw unexpected(expected: "an attribute name after '.'")
                    }
                    position += 1
                } else if skip(symbol: "[") {
                    expression = try parseSubscript(expression)
                } else {
                    expression = .call(expression, try parseArguments())
                }
            }
            return expression
        }

        /// After `[`: an index or a slice `start:stop:step`, each part optional.
        private mutating func parseSubscript(_ base: Expr) throws(JinjaError) -> Expr {
            var start: Expr?
            if !isSymbol(":") {
                let index = try parseExpression()
                if skip(symbol: "]") { return .item(base, index) }
                start = index
            }
            try expect(symbol: ":")
            let stop = isSymbol(":") || isSymbol("]") ? nil : try parseExpression()
            var step: Expr?
            if skip(symbol: ":"), !isSymbol("]") { step = try parseExpression() }
            try expect(symbol: "]")
            return .slice(base, start: start, stop: stop, step: step)
        }

        private mutating func parseArguments() throws(JinjaError) -> Arguments {
            try expect(symbol: "(")
            var arguments = Arguments()
            while !skip(symbol: ")") {
                if !arguments.positional.isEmpty || !arguments.keywords.isEmpty {
                    try expect(symbol: ",")
                    if skip(symbol: ")") { break }
                }
                if isSymbol("*") || isSymbol("**") { throw error("unsupported argument unpacking with '*'", at: current) }
                if case .name(let name) = current.kind, tokens[position + 1].kind == .symbol("=") {
                    position += 2
                    arguments.keywords.append((name, try parseExpression()))
                } else {
                    if !arguments.keywords.isEmpty { throw error("positional argument follows keyword argument", at: current) }
                    arguments.positional.append(try parseExpression())
                }
            }
            return arguments
        }

        private mutating func parseFiltersAndTests(_ base: Expr) throws(JinjaError) -> Expr {
            var expression = base
            while isSymbol("|") || isName("is") || isSymbol("(") {
                try nest()
                if skip(symbol: "|") {
                    let nameToken = current
                    let name = try expectName("a filter name")
                    guard Interpreter.filterNames.contains(name) else { throw error("unsupported filter '\(name)'", at: nameToken) }
                    let arguments = isSymbol("(") ? try parseArguments() : Arguments()
                    expression = .filter(expression, name, arguments)
                } else if skip(name: "is") {
                    let negated = skip(name: "not")
                    let nameToken = current
                    let name = try expectName("a test name")
                    guard Interpreter.testNames.contains(name) else { throw error("unsupported test '\(name)'", at: nameToken) }
                    var arguments = Arguments()
                    if isSymbol("(") {
                        arguments = try parseArguments()
                    } else if startsTestArgument {
                        arguments.positional = [try parsePostfix(try parsePrimary())]
                    }
                    expression = .test(expression, name, arguments)
                    if negated { expression = .not(expression) }
                } else {
                    expression = .call(expression, try parseArguments())
                }
            }
            return expression
        }

        /// jinja2 lets a test take one argument without parentheses: `x is divisibleby 3`, `x is sameas none`.
        private var startsTestArgument: Bool {
            switch current.kind {
            case .name(let name): !["else", "or", "and", "is", "if", "in", "not"].contains(name)
            case .string, .integer, .float, .symbol("["), .symbol("{"): true
            default: false
            }
        }
    }
}
