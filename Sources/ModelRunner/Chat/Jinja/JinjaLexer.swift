extension Jinja {
    /// Where a tag is, and its text, which errors quote.
    struct Tag: Sendable {
        var line: Int
        var column: Int
        var source: String
    }

    struct Token {
        enum Kind: Equatable {
            case text(String)
            case openExpression, closeExpression, openStatement, closeStatement
            case name(String)
            case string(String)
            case integer(Int)
            case float(Double)
            case symbol(String)
            case end
        }

        var kind: Kind
        var line: Int
        var column: Int
        /// The tag the token is inside (an index into `Lexer.tags`); `nil` for text and the end.
        var tag: Int?
    }

    /// Splits a template into text and the tokens of its `{{ }}` and `{% %}` tags, dropping `{# #}`
    /// comments and applying the whitespace control of `-`, `trim_blocks` and `lstrip_blocks` as jinja2's
    /// lexer does.
    struct Lexer {
        private let source: [Unicode.Scalar]
        private let options: JinjaTemplate.Options
        private var lineStarts: [Int] = [0]
        private(set) var tokens: [Token] = []
        private(set) var tags: [Tag] = []

        private static let symbols = ["**", "//", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "<", ">",
                                      "(", ")", "[", "]", "{", "}", ",", ".", ":", "|", "="]

        init(_ text: String, options: JinjaTemplate.Options) {
            // jinja2 turns every \r\n and \r into \n, and drops one trailing newline unless told to keep it.
            var scalars: [Unicode.Scalar] = []
            scalars.reserveCapacity(text.unicodeScalars.count)
            var previous: Unicode.Scalar?
            for scalar in text.unicodeScalars {
                if scalar == "\n", previous == "\r" { previous = scalar; continue }
                scalars.append(scalar == "\r" ? "\n" : scalar)
                previous = scalar
            }
            if !options.keepTrailingNewline, scalars.last == "\n" { scalars.removeLast() }
            source = scalars
            self.options = options
            for (i, scalar) in scalars.enumerated() where scalar == "\n" { lineStarts.append(i + 1) }
        }

        private func location(_ offset: Int) -> (line: Int, column: Int) {
            var low = 0, high = lineStarts.count - 1
            while low < high {
                let mid = (low + high + 1) / 2
                if lineStarts[mid] <= offset { low = mid } else { high = mid - 1 }
            }
            return (low + 1, offset - lineStarts[low] + 1)
        }

        private func error(_ message: String, at offset: Int) -> JinjaError {
            let (line, column) = location(offset)
            return JinjaError(message: message, line: line, column: column)
        }

        private func starts(with text: String, at offset: Int) -> Bool {
            var i = offset
            for scalar in text.unicodeScalars {
                guard i < source.count, source[i] == scalar else { return false }
                i += 1
            }
            return true
        }

        private func string(_ range: Range<Int>) -> String {
            var view = String.UnicodeScalarView()
            view.append(contentsOf: source[range])
            return String(view)
        }

        private mutating func emit(_ kind: Token.Kind, at offset: Int, tag: Int?) {
            let (line, column) = location(offset)
            tokens.append(Token(kind: kind, line: line, column: column, tag: tag))
        }

        /// Offset past the whitespace at `offset`.
        private func skipSpace(_ offset: Int) -> Int {
            var i = offset
            while i < source.count, isPythonSpace(source[i]) { i += 1 }
            return i
        }

        mutating func tokenize() throws(JinjaError) {
            var position = 0
            var lineStarting = true
            while position < source.count {
                var open = position
                while open + 1 < source.count, !(source[open] == "{" && ["{", "%", "#"].contains(source[open + 1])) {
                    open += 1
                }
                guard open + 1 < source.count else {
                    emit(.text(string(position..<source.count)), at: position, tag: nil)
                    break
                }
                let kind = source[open + 1]
                var contentStart = open + 2
                var textEnd = open
                let control = contentStart < source.count ? source[contentStart] : nil
                if control == "-" {
                    contentStart += 1
                    while textEnd > position, isPythonSpace(source[textEnd - 1]) { textEnd -= 1 }
                } else if control == "+" {
                    contentStart += 1
                } else if options.lstripBlocks, kind != "{" {
                    var start = open
                    while start > position, source[start - 1] != "\n", isPythonSpace(source[start - 1]) { start -= 1 }
                    if (start > position && source[start - 1] == "\n") || (start == position && lineStarting) {
                        textEnd = start
                    }
                }
                if textEnd > position { emit(.text(string(position..<textEnd)), at: position, tag: nil) }

                let close: Int
                if kind == "%", let opening = rawOpening(contentStart) {
                    close = try raw(openedAt: open, bodyStart: opening.strips ? skipSpace(opening.end) : opening.end)
                } else if kind == "#" {
                    close = try comment(openedAt: open, contentStart: contentStart)
                } else {
                    close = try tag(isStatement: kind == "%", openedAt: open, contentStart: contentStart)
                }
                position = close
                lineStarting = position > 0 && source[position - 1] == "\n"
            }
            emit(.end, at: source.count, tag: nil)
        }

        /// Offset after the whitespace the end of a tag consumes: all of it after `-`, one newline
        /// with `trim_blocks` after a plain `%}` or `#}`.
        private func afterClose(_ offset: Int, control: Unicode.Scalar?, trims: Bool) -> Int {
            if control == "-" { return skipSpace(offset) }
            if control != "+", trims, options.trimBlocks, offset < source.count, source[offset] == "\n" { return offset + 1 }
            return offset
        }

        /// The end of `raw %}` at `offset`, and whether it was `-%}`.
        private func rawOpening(_ offset: Int) -> (end: Int, strips: Bool)? {
            var i = skipSpace(offset)
            guard starts(with: "raw", at: i) else { return nil }
            i = skipSpace(i + 3)
            if starts(with: "-%}", at: i) { return (i + 3, true) }
            return starts(with: "%}", at: i) ? (i + 2, false) : nil
        }

        /// `{% raw %}…{% endraw %}`: the body is text, whitespace control applying at both ends.
        private mutating func raw(openedAt open: Int, bodyStart: Int) throws(JinjaError) -> Int {
            var i = bodyStart
            while i + 1 < source.count {
                defer { i += 1 }
                guard source[i] == "{", source[i + 1] == "%" else { continue }
                var j = i + 2
                let control = j < source.count && (source[j] == "-" || source[j] == "+") ? source[j] : nil
                if control != nil { j += 1 }
                j = skipSpace(j)
                guard starts(with: "endraw", at: j) else { continue }
                j = skipSpace(j + 6)
                var closeControl: Unicode.Scalar?
                if j < source.count, source[j] == "-" || source[j] == "+" { closeControl = source[j]; j += 1 }
                guard starts(with: "%}", at: j) else { continue }
                var textEnd = i
                if control == "-" {
                    while textEnd > bodyStart, isPythonSpace(source[textEnd - 1]) { textEnd -= 1 }
                } else if control == nil, options.lstripBlocks {
                    var start = i
                    while start > bodyStart, source[start - 1] != "\n", isPythonSpace(source[start - 1]) { start -= 1 }
                    if start > bodyStart, source[start - 1] == "\n" { textEnd = start }
                }
                if textEnd > bodyStart { emit(.text(string(bodyStart..<textEnd)), at: bodyStart, tag: nil) }
                return afterClose(j + 2, control: closeControl, trims: true)
            }
            throw error("expected '{% endraw %}' to close the raw block, found the end of the template", at: open)
        }

        private func comment(openedAt open: Int, contentStart: Int) throws(JinjaError) -> Int {
            var i = contentStart
            while i + 1 < source.count, !(source[i] == "#" && source[i + 1] == "}") { i += 1 }
            guard i + 1 < source.count else { throw error("expected '#}' to close the comment, found the end of the template", at: open) }
            let control = i > contentStart && (source[i - 1] == "-" || source[i - 1] == "+") ? source[i - 1] : nil
            return afterClose(i + 2, control: control, trims: true)
        }

        private mutating func tag(isStatement: Bool, openedAt open: Int, contentStart: Int) throws(JinjaError) -> Int {
            let closer = isStatement ? "%}" : "}}"
            let tagIndex = tags.count
            let (line, column) = location(open)
            tags.append(Tag(line: line, column: column, source: ""))
            emit(isStatement ? .openStatement : .openExpression, at: open, tag: tagIndex)
            var brackets: [Unicode.Scalar] = []
            var i = contentStart
            while true {
                i = skipSpace(i)
                guard i < source.count else {
                    tags[tagIndex].source = string(open..<source.count)
                    throw error("expected '\(closer)' to close \(tags[tagIndex].source), found the end of the template", at: open)
                }
                if brackets.isEmpty {
                    var control: Unicode.Scalar?
                    var end = i
                    if (source[i] == "-" || (isStatement && source[i] == "+")), starts(with: closer, at: i + 1) {
                        control = source[i]
                        end += 1
                    }
                    if starts(with: closer, at: end) {
                        tags[tagIndex].source = string(open..<(end + 2))
                        emit(isStatement ? .closeStatement : .closeExpression, at: i, tag: tagIndex)
                        return afterClose(end + 2, control: control, trims: isStatement)
                    }
                }
                do throws(JinjaError) {
                    i = try innerToken(at: i, tag: tagIndex, brackets: &brackets)
                } catch {
                    throw JinjaError(message: error.message + " in " + excerpt(from: open, closer: closer), line: error.line, column: error.column)
                }
            }
        }

        /// The tag opened at `open` up to its closer, or to the end of its line when it has none.
        private func excerpt(from open: Int, closer: String) -> String {
            var end = open + 2
            while end < source.count, source[end] != "\n", !starts(with: closer, at: end) { end += 1 }
            return string(open..<min(source.count, starts(with: closer, at: end) ? end + 2 : end))
        }

        /// Lexes one token inside a tag; returns the offset after it.
        private mutating func innerToken(at start: Int, tag: Int, brackets: inout [Unicode.Scalar]) throws(JinjaError) -> Int {
            let scalar = source[start]
            var i = start
            if scalar.properties.isAlphabetic || scalar == "_" {
                while i < source.count, source[i].properties.isAlphabetic || source[i].properties.numericType != nil || source[i] == "_" {
                    i += 1
                }
                emit(.name(string(start..<i)), at: start, tag: tag)
                return i
            }
            if ("0"..."9").contains(scalar) { return try number(at: start, tag: tag) }
            if scalar == "'" || scalar == "\"" { return try stringLiteral(at: start, tag: tag) }
            guard let symbol = Self.symbols.first(where: { starts(with: $0, at: start) }) else {
                throw error("unexpected character '\(Character(scalar))' in a tag", at: start)
            }
            switch symbol {
            case "(": brackets.append(")")
            case "[": brackets.append("]")
            case "{": brackets.append("}")
            case ")", "]", "}":
                guard let expected = brackets.popLast() else { throw error("unexpected '\(symbol)'", at: start) }
                guard String(expected) == symbol else { throw error("expected '\(expected)', found '\(symbol)'", at: start) }
            default: break
            }
            emit(.symbol(symbol), at: start, tag: tag)
            return start + symbol.unicodeScalars.count
        }

        private mutating func number(at start: Int, tag: Int) throws(JinjaError) -> Int {
            func digits(_ i: inout Int, _ text: inout String) {
                while i < source.count, ("0"..."9").contains(source[i]) || (source[i] == "_" && i + 1 < source.count && ("0"..."9").contains(source[i + 1])) {
                    if source[i] != "_" { text.unicodeScalars.append(source[i]) }
                    i += 1
                }
            }
            var i = start
            var text = ""
            digits(&i, &text)
            var isFloat = false
            if i + 1 < source.count, source[i] == ".", ("0"..."9").contains(source[i + 1]) {
                isFloat = true
                text += "."
                i += 1
                digits(&i, &text)
            }
            if i < source.count, source[i] == "e" || source[i] == "E" {
                var j = i + 1
                var exponent = "e"
                if j < source.count, source[j] == "+" || source[j] == "-" { exponent.unicodeScalars.append(source[j]); j += 1 }
                if j < source.count, ("0"..."9").contains(source[j]) {
                    digits(&j, &exponent)
                    text += exponent
                    isFloat = true
                    i = j
                }
            }
            if isFloat {
                guard let value = Double(text) else { throw error("invalid number '\(text)'", at: start) }
                emit(.float(value), at: start, tag: tag)
            } else {
                guard let value = Int(text) else { throw error("integer '\(text)' does not fit in 64 bits", at: start) }
                emit(.integer(value), at: start, tag: tag)
            }
            return i
        }

        /// A quoted string with Python's escapes (`\n`, `\t`, `\xNN`, `\uNNNN`, octal …); an unknown
        /// escape keeps its backslash, as Python's does.
        private mutating func stringLiteral(at start: Int, tag: Int) throws(JinjaError) -> Int {
            let quote = source[start]
            var out = String.UnicodeScalarView()
            var i = start + 1
            while true {
                guard i < source.count else { throw error("expected the closing \(quote) of the string, found the end of the template", at: start) }
                let c = source[i]
                if c == quote { break }
                guard c == "\\", i + 1 < source.count else { out.append(c); i += 1; continue }
                let e = source[i + 1]
                i += 2
                switch e {
                case "\n": break
                case "\\", "'", "\"": out.append(e)
                case "a": out.append("\u{07}")
                case "b": out.append("\u{08}")
                case "f": out.append("\u{0C}")
                case "n": out.append("\n")
                case "r": out.append("\r")
                case "t": out.append("\t")
                case "v": out.append("\u{0B}")
                case "x", "u", "U":
                    let width = e == "x" ? 2 : e == "u" ? 4 : 8
                    guard i + width <= source.count, let code = UInt32(string(i..<(i + width)), radix: 16),
                          let scalar = Unicode.Scalar(code)
                    else { throw error("invalid escape '\\\(e)' in a string", at: i - 2) }
                    out.append(scalar)
                    i += width
                case "0"..."7":
                    var code = e.value - 48
                    var n = 1
                    while n < 3, i < source.count, ("0"..."7").contains(source[i]) {
                        code = code * 8 + source[i].value - 48
                        i += 1
                        n += 1
                    }
                    out.append(Unicode.Scalar(code) ?? "\u{FFFD}")
                default:
                    out.append("\\")
                    out.append(e)
                }
            }
            emit(.string(String(out)), at: start, tag: tag)
            return i + 1
        }
    }
}
