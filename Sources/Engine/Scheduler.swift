public import ExecutorCore
public import ModelRunner

/// Decides what one virtual engine's next step carries (vLLM's scheduler, for one share of
/// the KV cache); the `Engine` runs one per virtual engine.
///
/// - Requests wait in arrival order and are admitted first-come-first-served while fewer
///   than `maxSequences` run and the step's token budget (`maxBatchTokens`) and the free
///   blocks allow.
/// - Each step carries, while the token budget lasts: for every running request, oldest
///   first, its one decode token or the next chunk of its prompt; then the first chunks of
///   newly admitted ones (chunked prefill mixed with decodes).
/// - When a running request needs a block and none is free, the newest running request is
///   preempted: its blocks return to the pool and it goes back to the front of the queue,
///   to be recomputed from its prompt and the tokens generated so far (nothing is lost:
///   greedy decoding gives the same tokens as without preemption).
/// - Finished and aborted requests free their blocks at once; their ids travel with the
///   next step so the workers drop their state.
public struct Scheduler: Sendable {
    public let maxSequences: Int
    public let maxBatchTokens: Int
    public private(set) var allocator: BlockAllocator

    public struct Entry: Sendable {
        public let id: UInt64
        /// The prompt, then every generated token.
        public internal(set) var tokens: [Int32]
        public let promptCount: Int
        public let parameters: SamplingParameters
        /// Tokens whose keys and values are in the cache (or in the step in flight).
        public internal(set) var computed = 0
        public internal(set) var table: [Int32] = []
        public internal(set) var preemptions = 0
    }

    public private(set) var waiting: [Entry] = []
    public private(set) var running: [Entry] = []
    /// Requests that ended since the last step (sent with the next one).
    public private(set) var finishedIDs: [UInt64] = []
    /// Preemptions so far.
    public private(set) var preemptionCount = 0

    public init(maxSequences: Int, maxBatchTokens: Int, allocator: BlockAllocator) {
        precondition(maxSequences >= 1 && maxBatchTokens >= 1, "a scheduler needs room for one sequence and one token")
        self.maxSequences = maxSequences
        self.maxBatchTokens = maxBatchTokens
        self.allocator = allocator
    }

    public var hasWork: Bool { !waiting.isEmpty || !running.isEmpty }

    /// Queues a request.
    public mutating func add(id: UInt64, prompt: [Int32], parameters: SamplingParameters) {
        waiting.append(Entry(id: id, tokens: prompt, promptCount: prompt.count, parameters: parameters))
    }

    /// The next step's sequences (nil when nothing can run). Each scheduled chunk counts as
    /// computed at once: a virtual engine has one step in flight at a time.
    public mutating func schedule() -> [StepRequest.Sequence]? {
        var budget = maxBatchTokens
        var step: [StepRequest.Sequence] = []
        let preemptedBefore = preemptionCount
        // Running requests, oldest first: decodes and prompt chunks.
        var i = 0
        while i < running.count && budget > 0 {
            let need = min(budget, running[i].tokens.count - running[i].computed)
            if need == 0 {  // waiting for the token of a step in flight
                i += 1
                continue
            }
            // Make room, preempting the newest running requests (possibly this one).
            let tokens = running[i].computed + need
            while i < running.count && !allocator.reserve(&running[i].table, tokens: tokens) {
                preempt(running.count - 1)
            }
            guard i < running.count else { break }
            step.append(chunk(of: &running[i], count: need))
            budget -= need
            i += 1
        }
        // Admit waiting requests while there is room (none in a step that had to preempt:
        // the blocks just freed are what the running requests need).
        while let head = waiting.first, running.count < maxSequences, budget > 0, preemptionCount == preemptedBefore || step.isEmpty {
            let need = min(budget, head.tokens.count - head.computed)
            guard allocator.reserve(&waiting[0].table, tokens: head.computed + need) else { break }
            var entry = waiting.removeFirst()
            step.append(chunk(of: &entry, count: need))
            running.append(entry)
            budget -= need
        }
        return step.isEmpty ? nil : step
    }

    private func chunk(of entry: inout Entry, count: Int) -> StepRequest.Sequence {
        let start = entry.computed
        entry.computed += count
        return StepRequest.Sequence(
            id: entry.id, tokens: Array(entry.tokens[start..<entry.computed]), startPosition: Int32(start), blockTable: entry.table,
            sample: entry.computed == entry.tokens.count, sampling: entry.parameters)
    }

    /// Sends running request `index` back to the front of the queue, freeing its blocks; it
    /// will be recomputed (prompt and generated tokens) when admitted again.
    private mutating func preempt(_ index: Int) {
        var entry = running.remove(at: index)
        allocator.release(&entry.table)
        entry.computed = 0
        entry.preemptions += 1
        preemptionCount += 1
        waiting.insert(entry, at: 0)
    }

    /// Records the token sampled for a request.
    public mutating func append(_ token: Int32, to id: UInt64) {
        guard let i = running.firstIndex(where: { $0.id == id }) else { return }
        running[i].tokens.append(token)
    }

    /// Ends a request (finished or aborted) wherever it is; its blocks return at once.
    /// Returns false when the id is unknown.
    @discardableResult
    public mutating func finish(_ id: UInt64) -> Bool {
        if let i = running.firstIndex(where: { $0.id == id }) {
            var entry = running.remove(at: i)
            allocator.release(&entry.table)
        } else if let i = waiting.firstIndex(where: { $0.id == id }) {
            var entry = waiting.remove(at: i)
            allocator.release(&entry.table)
        } else {
            return false
        }
        finishedIDs.append(id)
        return true
    }

    /// The finished ids for the next step (and forgets them).
    public mutating func takeFinishedIDs() -> [UInt64] {
        defer { finishedIDs.removeAll() }
        return finishedIDs
    }

    /// The request's entry, wherever it is.
    public func entry(_ id: UInt64) -> Entry? {
        running.first { $0.id == id } ?? waiting.first { $0.id == id }
    }
}
