/// The tokens of one forward pass: several sequences, each a chunk of new tokens at its own
/// positions (a prompt chunk or a single decode token), with its KV block table.
///
/// Reused across steps: `removeAll()` keeps capacity, so steady-state decoding allocates nothing.
public struct ForwardBatch: Sendable {
    /// Token ids, all sequences concatenated.
    public private(set) var tokens: [Int32] = []
    /// Absolute position of each token in its sequence.
    public private(set) var positions: [Int32] = []
    /// Index (into the sequences of this batch) of each token's sequence.
    public private(set) var sequenceOfToken: [Int32] = []
    /// Block tables of all sequences, concatenated; `tableStart[s]..<tableStart[s + 1]` is sequence s's.
    public private(set) var blockTables: [Int32] = []
    public private(set) var tableStart: [Int32] = [0]
    /// Token indices whose logits the caller wants, in order (one row of logits each).
    public private(set) var logitTokens: [Int32] = []

    public init() {}

    public var sequenceCount: Int { tableStart.count - 1 }

    public mutating func removeAll() {
        tokens.removeAll(keepingCapacity: true)
        positions.removeAll(keepingCapacity: true)
        sequenceOfToken.removeAll(keepingCapacity: true)
        blockTables.removeAll(keepingCapacity: true)
        tableStart.removeAll(keepingCapacity: true)
        tableStart.append(0)
        logitTokens.removeAll(keepingCapacity: true)
    }

    /// Appends a sequence chunk: `newTokens` at positions `startPosition…`, whose KV blocks
    /// (covering at least `startPosition + newTokens.count` tokens) are `blockTable`.
    public mutating func append(
        _ newTokens: some Collection<Int32>, startPosition: Int, blockTable: some Collection<Int32>, wantLogits: Bool
    ) {
        precondition(!newTokens.isEmpty, "a sequence chunk needs at least one token")
        let sequence = Int32(sequenceCount)
        var position = Int32(startPosition)
        for token in newTokens {
            tokens.append(token)
            positions.append(position)
            sequenceOfToken.append(sequence)
            position += 1
        }
        blockTables.append(contentsOf: blockTable)
        tableStart.append(Int32(blockTables.count))
        if wantLogits { logitTokens.append(Int32(tokens.count - 1)) }
    }
}
