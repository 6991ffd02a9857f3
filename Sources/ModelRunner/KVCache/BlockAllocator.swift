/// Hands out physical KV-cache blocks and tracks each sequence's block table.
///
/// Blocks are reference counted so that sequences can share a prefix; a block returns to
/// the free list when its count reaches zero.
public struct BlockAllocator: Sendable {
    public let blockCount: Int
    public let blockSize: Int
    private var free: [Int32]
    private var references: [Int32]

    /// The first block id this allocator hands out (a virtual engine's share of a cache
    /// starts after the shares before it).
    public let firstBlock: Int32

    public init(blockCount: Int, blockSize: Int, firstBlock: Int32 = 0) {
        self.blockCount = blockCount
        self.blockSize = blockSize
        self.firstBlock = firstBlock
        free = (firstBlock..<(firstBlock + Int32(blockCount))).reversed()
        references = Array(repeating: 0, count: blockCount)
    }

    public var freeBlocks: Int { free.count }

    /// Blocks needed to hold `tokens` tokens.
    public func blocks(forTokens tokens: Int) -> Int { (tokens + blockSize - 1) / blockSize }

    /// Grows `table` so it covers `tokens` tokens. Returns false (changing nothing) when
    /// there are not enough free blocks.
    public mutating func reserve(_ table: inout [Int32], tokens: Int) -> Bool {
        let needed = blocks(forTokens: tokens) - table.count
        guard needed > 0 else { return true }
        guard needed <= free.count else { return false }
        for _ in 0..<needed {
            let block = free.removeLast()
            references[Int(block - firstBlock)] = 1
            table.append(block)
        }
        return true
    }

    /// Releases every block of `table` and empties it.
    public mutating func release(_ table: inout [Int32]) {
        for block in table {
            references[Int(block - firstBlock)] -= 1
            precondition(references[Int(block - firstBlock)] >= 0, "block \(block) released more often than reserved")
            if references[Int(block - firstBlock)] == 0 { free.append(block) }
        }
        table.removeAll(keepingCapacity: true)
    }

    /// Adds a reference to each block of `table` (for a sequence that shares it).
    public mutating func share(_ table: [Int32]) {
        for block in table { references[Int(block - firstBlock)] += 1 }
    }
}
