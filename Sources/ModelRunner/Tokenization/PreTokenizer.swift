/// Splits text into words before BPE, exactly as llama.cpp does for the vocabularies Cohort
/// runs.
///
/// `smollm` (and other StarCoder-family vocabularies): first every number scalar (\p{N})
/// becomes a word of its own, then GPT-2's pattern
/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+` runs inside
/// each piece. Port of llama.cpp's `unicode_regex_split_custom_gpt2` (src/unicode.cpp),
/// whose look-ahead never crosses a piece boundary.
///
/// `llama3` (`llama-bpe`) and `qwen2` share one pattern,
/// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`,
/// except that Qwen 2 takes digits one at a time (`\p{N}`) where Llama 3 takes up to three.
/// Port of llama.cpp's `unicode_regex_split_custom_llama3`.
public enum PreTokenizer: String, Sendable, CaseIterable {
    case smollm
    case gpt2
    case llama3
    case qwen2

    /// Names under which GGUF files announce each pre-tokenizer (`tokenizer.ggml.pre`).
    static let aliases: [String: PreTokenizer] = [
        "smollm": .smollm, "starcoder": .smollm, "refact": .smollm, "codeshell": .smollm,
        "gpt2": .gpt2, "gpt-2": .gpt2, "default": .gpt2,
        "llama-bpe": .llama3, "llama3": .llama3, "smaug-bpe": .llama3,
        "qwen2": .qwen2, "deepseek-r1-qwen": .qwen2,
    ]

    /// Words of `text` as ranges of its scalars.
    public func split(_ text: [Unicode.Scalar]) -> [Range<Int>] {
        var pieces: [Range<Int>] = []
        switch self {
        case .llama3, .qwen2:
            var words: [Range<Int>] = []
            Self.llama3Split(text, maxDigits: self == .llama3 ? 3 : 1, into: &words)
            return words
        case .gpt2:
            pieces = [0..<text.count]
        case .smollm:
            var start = 0
            for i in text.indices where Self.flags(text[i]).contains(.number) {
                if start < i { pieces.append(start..<i) }
                pieces.append(i..<(i + 1))
                start = i + 1
            }
            if start < text.count { pieces.append(start..<text.count) }
        }
        var words: [Range<Int>] = []
        for piece in pieces { Self.gpt2Split(text, piece, into: &words) }
        return words
    }

    struct Flags: OptionSet {
        let rawValue: UInt8
        static let letter = Flags(rawValue: 1)
        static let number = Flags(rawValue: 2)
        static let whitespace = Flags(rawValue: 4)
        /// Set for every scalar inside the piece, so that "outside" is distinguishable.
        static let present = Flags(rawValue: 8)
    }

    static func flags(_ s: Unicode.Scalar) -> Flags {
        var f: Flags = .present
        switch s.properties.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter: f.insert(.letter)
        case .decimalNumber, .letterNumber, .otherNumber: f.insert(.number)
        default: break
        }
        if s.properties.isWhitespace { f.insert(.whitespace) }
        return f
    }

    private static func llama3Split(_ text: [Unicode.Scalar], maxDigits: Int, into words: inout [Range<Int>]) {
        let end = text.count
        func scalar(_ i: Int) -> UInt32? { i < end ? text[i].value : nil }
        func flags(_ i: Int) -> Flags { i < end ? Self.flags(text[i]) : [] }
        func lower(_ i: Int) -> UInt32? { scalar(i).map { (0x41...0x5A).contains($0) ? $0 + 0x20 : $0 } }
        let cr: UInt32 = 0x0D, lf: UInt32 = 0x0A, space: UInt32 = 0x20, apostrophe: UInt32 = 0x27
        var pos = 0
        func emit(_ upTo: Int) {
            if pos < upTo { words.append(pos..<upTo) }
            pos = upTo
        }
        while pos < end {
            let c = text[pos].value
            let f = flags(pos)
            // (?i:'s|'t|'re|'ve|'m|'ll|'d)
            if c == apostrophe, let next = lower(pos + 1) {
                if [0x73, 0x74, 0x6D, 0x64].contains(next) {  // s t m d
                    emit(pos + 2)
                    continue
                }
                if let nextNext = lower(pos + 2),
                   (next == 0x72 && nextNext == 0x65) || (next == 0x76 && nextNext == 0x65) || (next == 0x6C && nextNext == 0x6C)
                {
                    emit(pos + 3)
                    continue
                }
            }
            // [^\r\n\p{L}\p{N}]?\p{L}+
            if !(c == cr || c == lf || f.contains(.number)) && (f.contains(.letter) || flags(pos + 1).contains(.letter)) {
                var i = pos + 1
                while flags(i).contains(.letter) { i += 1 }
                emit(i)
                continue
            }
            // \p{N}{1,maxDigits}
            if f.contains(.number) {
                var i = pos
                while flags(i).contains(.number) && i - pos < maxDigits { i += 1 }
                emit(i)
                continue
            }
            // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
            let other: (Flags) -> Bool = { $0.contains(.present) && $0.isDisjoint(with: [.letter, .number, .whitespace]) }
            if other(c == space ? flags(pos + 1) : f) {
                var i = pos + (c == space ? 1 : 0)
                while other(flags(i)) { i += 1 }
                while let s = scalar(i), s == cr || s == lf { i += 1 }
                emit(i)
                continue
            }
            var spaces = 0, afterLastNewline = 0
            while flags(pos + spaces).contains(.whitespace) {
                if let s = scalar(pos + spaces), s == cr || s == lf { afterLastNewline = pos + spaces + 1 }
                spaces += 1
            }
            if afterLastNewline > 0 {  // \s*[\r\n]+
                emit(afterLastNewline)
                continue
            }
            if spaces > 1 && scalar(pos + spaces) != nil {  // \s+(?!\S): leave one for the next word
                emit(pos + spaces - 1)
                continue
            }
            emit(pos + max(spaces, 1))  // \s+, or one scalar that nothing matched
        }
    }

    private static func gpt2Split(_ text: [Unicode.Scalar], _ piece: Range<Int>, into words: inout [Range<Int>]) {
        let end = piece.upperBound
        func scalar(_ i: Int) -> UInt32? { i < end ? text[i].value : nil }
        func flags(_ i: Int) -> Flags { i < end ? Self.flags(text[i]) : [] }
        let space: UInt32 = 0x20, apostrophe: UInt32 = 0x27
        var wordStart = piece.lowerBound
        var pos = piece.lowerBound
        func emit(_ upTo: Int) {
            if wordStart < upTo { words.append(wordStart..<upTo) }
            wordStart = upTo
        }
        while pos < end {
            let c = text[pos].value
            let f = flags(pos)
            // 's|'t|'re|'ve|'m|'ll|'d
            if c == apostrophe, let next = scalar(pos + 1) {
                if [0x73, 0x74, 0x6D, 0x64].contains(next) {  // s t m d
                    pos += 2
                    emit(pos)
                    continue
                }
                if let nextNext = scalar(pos + 2),
                   (next == 0x72 && nextNext == 0x65) || (next == 0x76 && nextNext == 0x65) || (next == 0x6C && nextNext == 0x6C)
                {
                    pos += 3
                    emit(pos)
                    continue
                }
            }
            var f2 = c == space ? flags(pos + 1) : f
            if f2.contains(.letter) || f2.contains(.number) {  // ' ?\p{L}+' or ' ?\p{N}+'
                let kind: Flags = f2.contains(.letter) ? .letter : .number
                if c == space { pos += 1 }
                while f2.contains(kind) {
                    pos += 1
                    f2 = flags(pos)
                }
                emit(pos)
                continue
            }
            if f2.contains(.present) && f2.isDisjoint(with: [.letter, .number, .whitespace]) {  // ' ?[^\s\p{L}\p{N}]+'
                if c == space { pos += 1 }
                while f2.contains(.present) && f2.isDisjoint(with: [.letter, .number, .whitespace]) {
                    pos += 1
                    f2 = flags(pos)
                }
                emit(pos)
                continue
            }
            var spaces = 0
            while flags(pos + spaces).contains(.whitespace) { spaces += 1 }
            if spaces > 1 && scalar(pos + spaces) != nil {  // '\s+(?!\S)': leave one for the next word
                pos += spaces - 1
                emit(pos)
                continue
            }
            if spaces > 0 {
                pos += spaces
                emit(pos)
                continue
            }
            pos += 1
            emit(pos)
        }
        emit(end)
    }
}
