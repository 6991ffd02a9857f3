/// The tokenizer of a GGUF file (`tokenizer.ggml.*` metadata), matching llama.cpp's token
/// ids for the same text. Two models:
/// - `gpt2`, byte-level BPE (SmolLM, Qwen, Llama 3): the text is split into words by the
///   pre-tokenizer, each word mapped to byte-level scalars and merged pairwise by rank.
/// - `llama`, SentencePiece BPE (Llama 2, Mistral, TinyLlama): spaces become `▁` (with one
///   prepended at the start and after each special token, per `add_space_prefix`), the
///   characters are merged pairwise by the merged piece's score, highest first, and a
///   piece outside the vocabulary falls back to its bytes (`<0xAB>` tokens).
///
/// In both, special-token text (control and user-defined tokens) is cut out first when
/// `parseSpecial` is set.
public final class Tokenizer: Sendable {
    /// `tokenizer.ggml.model`.
    public enum Model: String, Sendable {
        case byteLevelBPE = "gpt2"
        case sentencePiece = "llama"
    }

    /// GGUF token types (llama.cpp's `llama_token_type`).
    public enum TokenType: Int, Sendable {
        case undefined = 0, normal = 1, unknown = 2, control = 3, userDefined = 4, unused = 5, byte = 6
    }

    /// GGUF tokenizer keys, in one table.
    enum Key {
        static let model = "tokenizer.ggml.model"
        static let pre = "tokenizer.ggml.pre"
        static let tokens = "tokenizer.ggml.tokens"
        static let tokenTypes = "tokenizer.ggml.token_type"
        static let merges = "tokenizer.ggml.merges"
        static let scores = "tokenizer.ggml.scores"
        static let addSpacePrefix = "tokenizer.ggml.add_space_prefix"
        static let bos = "tokenizer.ggml.bos_token_id"
        static let eos = "tokenizer.ggml.eos_token_id"
        static let eot = "tokenizer.ggml.eot_token_id"
        static let eom = "tokenizer.ggml.eom_token_id"
        static let addBOS = "tokenizer.ggml.add_bos_token"
        static let addEOS = "tokenizer.ggml.add_eos_token"
    }

    public let model: Model
    public let tokens: [String]
    public let types: [TokenType]
    /// How byte-level BPE splits text into words (unused by SentencePiece).
    public let preTokenizer: PreTokenizer
    public let bosID: Int32?
    public let eosID: Int32?
    public let addBOS: Bool
    /// Ids that end generation (llama.cpp's end-of-generation set: EOS, EOT, EOM and
    /// control tokens whose text marks an end, such as `<|im_end|>`).
    public let endOfGenerationIDs: Set<Int32>
    private let ids: [String: Int32]
    /// (left id << 32 | right id) → (rank, merged id).
    private let merges: [UInt64: (rank: Int32, merged: Int32)]
    /// Special tokens by first scalar, each list by decreasing length, for splitting raw text.
    private let specialTokens: [Unicode.Scalar: [(text: [Unicode.Scalar], id: Int32)]]
    /// Token id of each byte-level single scalar, for the initial BPE symbols; for
    /// SentencePiece, of each `<0xAB>` byte token.
    private let byteTokenID: [Int32]
    /// How many user-defined tokens the vocabulary has (cut out of text even without `parseSpecial`).
    private let userDefinedCount: Int
    /// SentencePiece: each token's score (merges take the highest-scoring piece first).
    private let scores: [Float]
    /// SentencePiece: whether text starts with a space (`▁`) at its start and after special tokens.
    private let addSpacePrefix: Bool

    public init(file: GGUFFile) throws(GGUFError) {
        let modelName = try file.string(Key.model)
        guard let model = Model(rawValue: modelName) else {
            throw .invalidValue(
                key: Key.model, expected: "\"gpt2\" (byte-level BPE) or \"llama\" (SentencePiece)", found: "\"\(modelName)\"")
        }
        let pre = model == .sentencePiece ? "default" : try file.optionalString(Key.pre) ?? "default"
        guard let preTokenizer = PreTokenizer.aliases[pre] else {
            throw .invalidValue(
                key: Key.pre, expected: "one of \(PreTokenizer.aliases.keys.sorted().joined(separator: ", "))", found: "\"\(pre)\"")
        }
        let tokens = try file.stringArray(Key.tokens)
        guard !tokens.isEmpty, tokens.count < Int(Int32.max) else {
            throw .invalidValue(key: Key.tokens, expected: "a non-empty token list", found: "\(tokens.count) tokens")
        }
        var types = [TokenType](repeating: .normal, count: tokens.count)
        if file.metadata[Key.tokenTypes] != nil {
            let raw = try file.integerArray(Key.tokenTypes)
            guard raw.count == tokens.count else {
                throw .invalidValue(key: Key.tokenTypes, expected: "\(tokens.count) entries", found: "\(raw.count)")
            }
            for (i, t) in raw.enumerated() { types[i] = TokenType(rawValue: t) ?? .undefined }
        }
        var ids: [String: Int32] = [:]
        ids.reserveCapacity(tokens.count)
        // A text held by two tokens maps to the later one, as in llama.cpp.
        for (i, t) in tokens.enumerated() { ids[t] = Int32(i) }

        var merges: [UInt64: (rank: Int32, merged: Int32)] = [:]
        let mergeList = model == .byteLevelBPE ? try file.stringArray(Key.merges) : []
        merges.reserveCapacity(mergeList.count)
        for (rank, merge) in mergeList.enumerated() {
            // "left right": the first space separates (tokens never start with a plain space).
            guard let space = merge.firstIndex(of: " ") else {
                throw .invalidValue(key: Key.merges, expected: "\"left right\" pairs", found: "\"\(merge)\" at index \(rank)")
            }
            let left = String(merge[..<space]), right = String(merge[merge.index(after: space)...])
            guard let l = ids[left], let r = ids[right], let m = ids[left + right] else { continue }
            let key = UInt64(UInt32(l)) << 32 | UInt64(UInt32(r))
            if merges[key] == nil { merges[key] = (Int32(rank), m) }
        }

        func optionalID(_ key: String) throws(GGUFError) -> Int32? {
            guard let id = try file.optionalInteger(key) else { return nil }
            guard id >= 0, id < tokens.count else {
                throw .invalidValue(key: key, expected: "a token id below \(tokens.count)", found: "\(id)")
            }
            return Int32(id)
        }
        let bos = try optionalID(Key.bos)
        let eos = try optionalID(Key.eos)
        var endIDs = Set<Int32>()
        for key in [Key.eos, Key.eot, Key.eom] { if let id = try optionalID(key) { endIDs.insert(id) } }
        // llama.cpp also treats these control tokens as end-of-generation when present.
        let endTexts: Set<String> = ["<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<EOT>", "<|end_of_text|>"]
        for (i, t) in tokens.enumerated() where types[i] == .control && endTexts.contains(t) { endIDs.insert(Int32(i)) }

        // Control, user-defined and unknown tokens, by first scalar, longest first.
        var special: [Unicode.Scalar: [(text: [Unicode.Scalar], id: Int32)]] = [:]
        for (i, t) in tokens.enumerated() where [.control, .userDefined, .unknown].contains(types[i]) {
            if let first = t.unicodeScalars.first { special[first, default: []].append((Array(t.unicodeScalars), Int32(i))) }
        }
        for key in special.keys { special[key]!.sort { $0.text.count > $1.text.count } }

        var byteTokenID = [Int32](repeating: -1, count: 256)
        for b in 0..<256 {
            let text = model == .byteLevelBPE ? String(Character(ByteLevel.scalarOfByte[b])) : Self.byteTokenText(UInt8(b))
            if let id = ids[text] { byteTokenID[b] = id }
        }
        var scores: [Float] = []
        if model == .sentencePiece {
            // Without scores every merge ties (llama.cpp reads them as 0).
            let values = file.metadata[Key.scores] == nil ? Array(repeating: 0, count: tokens.count) : try file.realArray(Key.scores)
            guard values.count == tokens.count else {
                throw .invalidValue(key: Key.scores, expected: "\(tokens.count) scores, one per token", found: "\(values.count)")
            }
            scores = values.map { Float($0) }
        }

        self.model = model
        self.scores = scores
        self.userDefinedCount = types.lazy.filter { $0 == .userDefined }.count
        self.addSpacePrefix = model == .sentencePiece ? try file.optionalBool(Key.addSpacePrefix) ?? true : false
        self.tokens = tokens
        // A token's text holds at least one byte of text per byte it stands for.
        tokenBytesBound = max(1, tokens.lazy.map(\.utf8.count).max() ?? 1)
        self.types = types
        self.preTokenizer = preTokenizer
        self.bosID = bos
        self.eosID = eos
        // SentencePiece and Llama 3 vocabularies start with BOS unless the file says otherwise
        // (llama.cpp's defaults).
        self.addBOS = try file.optionalBool(Key.addBOS) ?? (model == .sentencePiece || preTokenizer == .llama3)
        self.endOfGenerationIDs = endIDs
        self.ids = ids
        self.merges = merges
        self.specialTokens = special
        self.byteTokenID = byteTokenID
    }

    public var vocabularySize: Int { tokens.count }

    // MARK: - Encoding

    /// Token ids of `text`. With `parseSpecial`, special-token text becomes that token;
    /// with `addBOS` (default: the file's `add_bos_token`), BOS is prepended.
    public func encode(_ text: String, parseSpecial: Bool, addBOS: Bool? = nil) -> [Int32] {
        var out: [Int32] = []
        if addBOS ?? self.addBOS, let bosID { out.append(bosID) }
        let scalars = Array(text.unicodeScalars)
        var start = 0
        // SentencePiece prefixes a space to text at the start and after a special token.
        var afterSpecial = true
        // User-defined tokens are always cut out; control tokens only with `parseSpecial`.
        if parseSpecial || hasUserDefinedTokens {
            for match in specialMatches(in: scalars, control: parseSpecial) {
                encodeOrdinary(scalars[start..<match.start], afterSpecial: afterSpecial, into: &out)
                out.append(match.id)
                afterSpecial = true
                start = match.start + match.length
            }
        }
        encodeOrdinary(scalars[start..<scalars.count], afterSpecial: afterSpecial, into: &out)
        return out
    }

    /// The special tokens cut out of `scalars`, in text order, chosen as llama.cpp's
    /// `tokenizer_st_partition` does: longer special tokens first over the whole text, each
    /// taking its occurrences left to right in what no longer one took. (Scanning left to
    /// right for the longest match at each place differs when a short token starts inside a
    /// longer one's text.) Every occurrence is found through the first-scalar index, so the
    /// cost is linear in the text times the few candidates per scalar.
    private func specialMatches(in scalars: [Unicode.Scalar], control: Bool) -> [(start: Int, length: Int, id: Int32)] {
        var found: [(start: Int, length: Int, id: Int32)] = []
        for i in scalars.indices {
            guard let candidates = specialTokens[scalars[i]] else { continue }
            for (text, id) in candidates where text.count <= scalars.count - i {
                if (control || types[Int(id)] == .userDefined) && scalars[i..<(i + text.count)].elementsEqual(text) {
                    found.append((i, text.count, id))
                }
            }
        }
        guard !found.isEmpty else { return [] }
        // Longest first (the lower id on equal lengths, for a stable order), then left to right.
        found.sort { ($0.length, -$0.id, -$0.start) > ($1.length, -$1.id, -$1.start) }
        var taken = [Bool](repeating: false, count: scalars.count)
        var chosen: [(start: Int, length: Int, id: Int32)] = []
        for match in found where !taken[match.start..<(match.start + match.length)].contains(true) {
            for k in match.start..<(match.start + match.length) { taken[k] = true }
            chosen.append(match)
        }
        return chosen.sorted { $0.start < $1.start }
    }

    private var hasUserDefinedTokens: Bool { userDefinedCount > 0 }

    private func encodeOrdinary(_ scalars: ArraySlice<Unicode.Scalar>, afterSpecial: Bool, into out: inout [Int32]) {
        guard !scalars.isEmpty else { return }
        if model == .sentencePiece {
            var text = addSpacePrefix && afterSpecial ? "▁" : ""
            for s in scalars { text.unicodeScalars.append(s == " " ? "▁" : s) }
            sentencePiece(text, into: &out)
            return
        }
        let piece = Array(scalars)
        var utf8: [UInt8] = []
        for word in preTokenizer.split(piece) {
            utf8.removeAll(keepingCapacity: true)
            for s in piece[word] { utf8.append(contentsOf: UTF8.encode(s)!) }
            // Llama 3 takes a word that is a token whole, before any merge (llama.cpp's
            // `ignore_merges`).
            if preTokenizer == .llama3, let whole = wholeWordToken(utf8) {
                out.append(whole)
                continue
            }
            bpe(utf8, into: &out)
        }
    }

    /// The token whose byte-level text is exactly `bytes`, if any.
    private func wholeWordToken(_ bytes: [UInt8]) -> Int32? {
        var text = ""
        for b in bytes { text.unicodeScalars.append(ByteLevel.scalarOfByte[Int(b)]) }
        return ids[text]
    }

    /// Merges the bytes of one word by rank, lowest first (leftmost on ties), in
    /// O(n log n): the symbols form a linked list and every adjacent pair that has a merge
    /// waits in a min-heap by (rank, position); a popped pair whose symbols changed since
    /// it was pushed is stale and skipped (llama.cpp's and tiktoken's approach). Scanning
    /// every pair for every merge made a 64,000-byte word take 25 s.
    private func bpe(_ bytes: [UInt8], into out: inout [Int32]) {
        var symbols = bytes.map { byteTokenID[Int($0)] }
        if symbols.contains(-1) {
            // A vocabulary without a token for some byte: emit what exists (llama.cpp skips it too).
            out.append(contentsOf: symbols.filter { $0 >= 0 })
            return
        }
        guard symbols.count > 1 else {
            out.append(contentsOf: symbols)
            return
        }
        let n = symbols.count
        var next = Array(1...n), previous = Array(-1..<(n - 1))
        next[n - 1] = -1
        var queue = PairQueue()
        func push(_ left: Int) {
            let right = next[left]
            guard left >= 0, right >= 0 else { return }
            let key = UInt64(UInt32(symbols[left])) << 32 | UInt64(UInt32(symbols[right]))
            if let m = merges[key] { queue.push(.init(rank: m.rank, left: Int32(left), leftID: symbols[left], rightID: symbols[right])) }
        }
        for i in 0..<(n - 1) { push(i) }
        while let pair = queue.pop() {
            let left = Int(pair.left), right = next[left]
            // Stale: the left symbol was merged away or into something else, or its right
            // neighbour changed.
            guard symbols[left] == pair.leftID, right >= 0, symbols[right] == pair.rightID else { continue }
            let key = UInt64(UInt32(pair.leftID)) << 32 | UInt64(UInt32(pair.rightID))
            symbols[left] = merges[key]!.merged
            symbols[right] = -1
            next[left] = next[right]
            if next[right] >= 0 { previous[next[right]] = left }
            if previous[left] >= 0 { push(previous[left]) }
            push(left)
        }
        var i = 0
        while i >= 0 {
            out.append(symbols[i])
            i = next[i]
        }
    }

    /// SentencePiece BPE over the characters of `text` (llama.cpp's `llm_tokenizer_spm`):
    /// adjacent symbols whose concatenation is a token wait in a heap by that token's
    /// score (highest first, leftmost on ties); popping merges them unless either changed
    /// since. Symbols left outside the vocabulary become byte tokens.
    private func sentencePiece(_ text: String, into out: inout [Int32]) {
        // Symbols are byte ranges of one UTF-8 character each, linked left to right.
        let bytes = Array(text.utf8)
        var begin: [Int] = [], length: [Int] = []
        var offset = 0
        for s in text.unicodeScalars {
            let n = UTF8.width(s)
            begin.append(offset)
            length.append(n)
            offset += n
        }
        let n = begin.count
        guard n > 0 else { return }
        var next = Array(1...n), previous = Array(-1..<(n - 1))
        next[n - 1] = -1
        func token(_ from: Int, _ count: Int) -> Int32? { ids[String(decoding: bytes[from..<(from + count)], as: UTF8.self)] }
        var queue = PairQueue()
        func push(_ left: Int) {
            let right = left >= 0 ? next[left] : -1
            guard left >= 0, right >= 0, let id = token(begin[left], length[left] + length[right]) else { return }
            // PairQueue takes the lowest rank first: a negated score, as a sortable integer.
            queue.push(.init(rank: Self.orderedKey(-scores[Int(id)]), left: Int32(left), leftID: Int32(length[left]), rightID: Int32(length[right])))
        }
        for i in 0..<(n - 1) { push(i) }
        while let pair = queue.pop() {
            let left = Int(pair.left), right = next[left]
            // Stale: either symbol grew or vanished since the pair was pushed.
            guard length[left] == Int(pair.leftID), right >= 0, length[right] == Int(pair.rightID) else { continue }
            length[left] += length[right]
            length[right] = 0
            next[left] = next[right]
            if next[right] >= 0 { previous[next[right]] = left }
            push(previous[left])
            push(left)
        }
        var i = 0
        while i >= 0 {
            if let id = token(begin[i], length[i]) {
                out.append(id)
            } else {
                for b in bytes[begin[i]..<(begin[i] + length[i])] where byteTokenID[Int(b)] >= 0 { out.append(byteTokenID[Int(b)]) }
            }
            i = next[i]
        }
    }

    /// An Int32 in the order of the Floats (negative floats flip their magnitude bits).
    static func orderedKey(_ x: Float) -> Int32 {
        let bits = Int32(bitPattern: x.bitPattern)
        return bits < 0 ? bits ^ Int32.max : bits
    }

    /// The text of SentencePiece's byte token for `b`: `<0xAB>`.
    static func byteTokenText(_ b: UInt8) -> String {
        let digits = Array("0123456789ABCDEF")
        return "<0x\(digits[Int(b >> 4)])\(digits[Int(b & 15)])>"
    }

    /// The longest token's length in bytes: a text of `b` bytes has at least `b /
    /// maxTokenBytes` tokens, whatever it says (a length limit can be checked before
    /// tokenizing).
    public var maxTokenBytes: Int { tokenBytesBound }
    private let tokenBytesBound: Int

    // MARK: - Decoding

    /// The raw bytes a token stands for. Control tokens give their text only when
    /// `renderSpecial` is set.
    public func bytes(of id: Int32, renderSpecial: Bool = false) -> [UInt8] {
        guard id >= 0, Int(id) < tokens.count else { return [] }
        let text = tokens[Int(id)]
        switch types[Int(id)] {
        case .control, .unknown, .unused:
            return renderSpecial ? Array(text.utf8) : []
        case .userDefined:
            return Array(text.utf8)
        case .byte where model == .sentencePiece:
            // "<0xAB>"
            let hex = text.dropFirst(3).prefix(2)
            return UInt8(hex, radix: 16).map { [$0] } ?? Array(text.utf8)
        default:
            if model == .sentencePiece {
                var plain = ""
                for s in text.unicodeScalars { plain.unicodeScalars.append(s == "▁" ? " " : s) }
                return Array(plain.utf8)
            }
            return ByteLevel.decode(text) ?? Array(text.utf8)
        }
    }

    /// Text of a whole token sequence (invalid UTF-8 is replaced).
    public func decode(_ ids: some Sequence<Int32>, renderSpecial: Bool = false) -> String {
        var bytes: [UInt8] = []
        for id in ids { bytes.append(contentsOf: self.bytes(of: id, renderSpecial: renderSpecial)) }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// A candidate merge: adjacent symbols `left` and its right neighbour, with their ids when
/// it was found (a popped pair whose ids differ is stale).
struct MergeCandidate {
    var rank: Int32
    var left: Int32
    var leftID: Int32
    var rightID: Int32

    /// Lower rank first, then the leftmost.
    func precedes(_ other: MergeCandidate) -> Bool { rank != other.rank ? rank < other.rank : left < other.left }
}

/// A binary min-heap of merge candidates.
struct PairQueue {
    private var items: [MergeCandidate] = []

    mutating func push(_ item: MergeCandidate) {
        items.append(item)
        var i = items.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard items[i].precedes(items[parent]) else { break }
            items.swapAt(i, parent)
            i = parent
        }
    }

    mutating func pop() -> MergeCandidate? {
        guard let first = items.first else { return nil }
        let last = items.removeLast()
        guard !items.isEmpty else { return first }
        items[0] = last
        var i = 0
        while true {
            let l = 2 * i + 1, r = l + 1
            var best = i
            if l < items.count && items[l].precedes(items[best]) { best = l }
            if r < items.count && items[r].precedes(items[best]) { best = r }
            guard best != i else { return first }
            items.swapAt(i, best)
            i = best
        }
    }
}
