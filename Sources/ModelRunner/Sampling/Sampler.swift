public import ExecutorCore
import Kernels
#if canImport(Glibc)
import Glibc
#endif

/// What a request has seen so far, for penalties: prompt tokens and output counts.
public struct PenaltyHistory: Sendable {
    public private(set) var promptTokens: Set<Int32> = []
    public private(set) var outputCounts: [Int32: Int] = [:]

    public init(prompt: some Sequence<Int32>) { promptTokens = Set(prompt) }

    public mutating func record(_ token: Int32) { outputCounts[token, default: 0] += 1 }

    /// Adds prompt tokens (a prompt may arrive in several chunks).
    public mutating func addPrompt(_ tokens: some Sequence<Int32>) { promptTokens.formUnion(tokens) }
}

/// The chosen token and, when asked for, the distribution it came from.
public struct SampledToken: Sendable, Equatable {
    public var token: Int32
    /// Log-probability of `token` under the model (raw logits, before penalties and filters);
    /// NaN unless logprobs were asked for.
    public var logprob: Float
    /// The best `logprobs` alternatives, most likely first (empty unless asked for).
    public var top: [TokenLogprob]
}

/// Picks next tokens from logits: penalties, then greedy or temperature with top-k, top-p
/// and min-p filters, drawing from the request's own seeded stream.
///
/// Holds scratch sized to the vocabulary, reused across calls.
public struct Sampler {
    public let vocabularySize: Int
    private var working: [Float]
    private var order: [Int32]

    public init(vocabularySize: Int) {
        self.vocabularySize = vocabularySize
        working = [Float](repeating: 0, count: vocabularySize)
        order = []
        order.reserveCapacity(vocabularySize)
    }

    public mutating func sample(
        logits: UnsafePointer<Float>, parameters p: SamplingParameters, history: PenaltyHistory,
        random: inout RandomStream
    ) -> SampledToken {
        let n = vocabularySize
        let penalized = p.repetitionPenalty != 1 || p.presencePenalty != 0 || p.frequencyPenalty != 0
        let token: Int32
        if p.isGreedy && !penalized {
            token = Int32(VectorMath.argmax(logits, count: n))
        } else {
            working.withUnsafeMutableBufferPointer { w in
                for i in 0..<n { w[i] = logits[i] }
                if p.repetitionPenalty != 1 {
                    for t in history.promptTokens.union(history.outputCounts.keys) where Int(t) < n {
                        let v = w[Int(t)]
                        w[Int(t)] = v > 0 ? v / p.repetitionPenalty : v * p.repetitionPenalty
                    }
                }
                if p.presencePenalty != 0 || p.frequencyPenalty != 0 {
                    for (t, count) in history.outputCounts where Int(t) < n {
                        w[Int(t)] -= p.presencePenalty + p.frequencyPenalty * Float(count)
                    }
                }
            }
            token = p.isGreedy
                ? Int32(working.withUnsafeBufferPointer { VectorMath.argmax($0.baseAddress!, count: n) })
                : sampleFiltered(p, random: &random)
        }

        // Log-probabilities of the raw logits, only when asked for (a pass of expf over the vocabulary).
        guard p.logprobs > 0 else { return SampledToken(token: token, logprob: .nan, top: []) }
        var maxLogit = -Float.infinity
        for i in 0..<n { maxLogit = max(maxLogit, logits[i]) }
        var sumExp = 0.0
        for i in 0..<n { sumExp += Double(expf(logits[i] - maxLogit)) }
        let logNormalizer = maxLogit + Float(log(sumExp))
        let top = Self.topK(p.logprobs, of: logits, count: n).map {
            TokenLogprob(token: $0, logprob: logits[Int($0)] - logNormalizer)
        }
        return SampledToken(token: token, logprob: logits[Int(token)] - logNormalizer, top: top)
    }

    /// Temperature, top-k, top-p, min-p, then a draw.
    private mutating func sampleFiltered(_ p: SamplingParameters, random: inout RandomStream) -> Int32 {
        let n = vocabularySize
        let invT = 1 / p.temperature
        var maxValue = -Float.infinity
        for i in 0..<n {
            working[i] *= invT
            maxValue = max(maxValue, working[i])
        }
        // min-p is relative to the best token, so it can prune before any sort.
        let floor = p.minP > 0 ? maxValue + logf(p.minP) : -Float.infinity
        order.removeAll(keepingCapacity: true)
        for i in 0..<n where working[i] >= floor && working[i] > -Float.infinity { order.append(Int32(i)) }
        if p.topK > 0 && p.topK < order.count {
            order = Self.topK(p.topK, of: working, among: order)
        } else if p.topP < 1 {
            order.sort { working[Int($0)] > working[Int($1)] || (working[Int($0)] == working[Int($1)] && $0 < $1) }
        }
        // Probabilities of the survivors.
        var probabilities = order.map { Double(expf(working[Int($0)] - maxValue)) }
        var total = probabilities.reduce(0, +)
        if p.topP < 1 {
            // `order` is sorted by now: keep the shortest prefix reaching topP.
            var cumulative = 0.0
            var keep = probabilities.count
            for (i, q) in probabilities.enumerated() {
                cumulative += q / total
                if cumulative >= Double(p.topP) {
                    keep = i + 1
                    break
                }
            }
            probabilities.removeLast(probabilities.count - keep)
            order.removeLast(order.count - keep)
            total = probabilities.reduce(0, +)
        }
        var u = random.unit() * total
        for (i, q) in probabilities.enumerated() {
            u -= q
            if u < 0 { return order[i] }
        }
        return order[order.count - 1]
    }

    /// Indices of the k largest values, largest first (ties: lower index first).
    static func topK(_ k: Int, of values: UnsafePointer<Float>, count: Int) -> [Int32] {
        topK(k, of: UnsafeBufferPointer(start: values, count: count), among: Array(0..<Int32(count)))
    }

    static func topK<Values: RandomAccessCollection<Float>>(_ k: Int, of values: Values, among candidates: [Int32]) -> [Int32]
    where Values.Index == Int {
        // Keep a small sorted list: k is small (≤ a few hundred) next to the vocabulary.
        var best: [Int32] = []
        best.reserveCapacity(k + 1)
        func better(_ a: Int32, _ b: Int32) -> Bool {
            let va = values[Int(a)], vb = values[Int(b)]
            return va > vb || (va == vb && a < b)
        }
        for c in candidates {
            if best.count == k, !better(c, best[k - 1]) { continue }
            var lo = 0, hi = best.count
            while lo < hi {
                let mid = (lo + hi) / 2
                if better(best[mid], c) { lo = mid + 1 } else { hi = mid }
            }
            best.insert(c, at: lo)
            if best.count > k { best.removeLast() }
        }
        return best
    }
}
