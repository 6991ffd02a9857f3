/// Splits text into words before BPE, exactly as llama.cpp does for the vocabularies Cohort
/// runs.
///
/// `smollm` (and other StarCoder-family vocabularies): first every number scalar (\p{N})
/// becomes a word of its own, then GPT-2's pattern
/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+` runs inside
/// each piece. Port of llama.cpp's `unicode_regex_split_custom_gpt2` (src/unicode.cpp),
/// whose look-ahead never crosses a piece boundary.
public enum PreTokenizer: String, Sendable, CaseIterable {
    case smollm
    case gpt2

    /// Names under which GGUF files announce each pre-tokenizer (`tokenizer.ggml.pre`).
    static let aliases: [String: PreTokenizer] = [
        "smollm": .smollm, "starcoder": .smollm, "refact": .smollm, "codeshell": .smollm,
        "gpt2": .gpt2, "default": .gpt2,
    ]

    /// Words of `text` as ranges of its scalars.
    public func split(_ text: [Unicode.Scalar]) -> [Range<Int>] {
        var pieces: [Range<Int>] = []
        switch self {
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
