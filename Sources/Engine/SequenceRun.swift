import ExecutorCore
import ModelRunner
import Executor

/// One request's output as it is generated: tokens, log-probabilities, text with stop
/// strings, timings, and when it is done.
struct SequenceRun {
    let id: UInt64
    let prompt: [Int32]
    let parameters: SamplingParameters
    let onOutput: (Engine.Delta) -> Void
    let stopIDs: Set<Int32>
    /// Whether reaching the context limit means the cache share ran out.
    let cacheBoundsContext: Bool
    private(set) var isDone = false
    private var generated: [Int32] = []
    private var logprobs: [[TokenLogprob]] = []
    private var tokenLogprobs: [Float] = []
    /// Tokens already handed out with a delta.
    private var delivered = 0
    private var finish = FinishReason.length
    private var text: TextAccumulator
    private let start = MonotonicClock.now()
    private var firstToken: Double?
    private var end: Double?

    init(
        id: UInt64, promptTokens: [Int32], parameters: SamplingParameters, onOutput: @escaping (Engine.Delta) -> Void,
        tokenizer: Tokenizer, cacheBoundsContext: Bool
    ) {
        self.id = id
        prompt = promptTokens
        self.parameters = parameters
        self.onOutput = onOutput
        self.cacheBoundsContext = cacheBoundsContext
        stopIDs = Set(parameters.stopTokenIDs).union(parameters.ignoreEndOfGeneration ? [] : tokenizer.endOfGenerationIDs)
        text = TextAccumulator(stopStrings: parameters.stopStrings, tokenizer: tokenizer)
    }

    /// Ends the request where it is.
    mutating func abort() {
        guard !isDone else { return }
        finish = .abort
        isDone = true
        end = MonotonicClock.now()
        finishText()
    }

    /// The text still held back, with every token not yet delivered.
    private mutating func finishText() {
        var pieces: [String] = []
        text.finish { pieces.append($0) }
        deliver(pieces.joined(), force: true)
    }

    /// Hands `piece` out with the tokens generated since the last delta.
    private mutating func deliver(_ piece: String, force: Bool = false) {
        guard !piece.isEmpty || (force && delivered < generated.count) else { return }
        let range = delivered..<generated.count
        delivered = generated.count
        onOutput(Engine.Delta(
            text: piece, tokens: Array(generated[range]),
            tokenLogprobs: tokenLogprobs.isEmpty ? [] : Array(tokenLogprobs[range]),
            logprobs: logprobs.isEmpty ? [] : Array(logprobs[range])))
    }

    /// Takes a sampled token; decides whether the request is done (a stop token or string,
    /// `maxTokens`, or a sequence as long as `contextLimit`).
    mutating func accept(_ sample: StepOutput.Sample, contextLimit: Int) {
        if firstToken == nil { firstToken = MonotonicClock.now() }
        generated.append(sample.token)
        if parameters.logprobs > 0 {
            logprobs.append(sample.top)
            tokenLogprobs.append(sample.logprob)
        }
        var pieces: [String] = []
        let stopped = stopIDs.contains(sample.token) || text.append(sample.token, emit: { pieces.append($0) })
        if stopped {
            finish = .stop
        } else if generated.count >= parameters.maxTokens {
            finish = .length
        } else if prompt.count + generated.count >= contextLimit {
            finish = cacheBoundsContext ? .kvCacheFull : .length
        } else {
            deliver(pieces.joined())
            return
        }
        deliver(pieces.joined())
        isDone = true
        end = MonotonicClock.now()
        finishText()
    }

    func result(loadSeconds: Double) -> GenerationResult {
        let first = firstToken ?? start, last = end ?? first
        return GenerationResult(
            promptTokens: prompt, tokens: generated, text: text.text, finishReason: finish, logprobs: logprobs,
            tokenLogprobs: tokenLogprobs,
            timings: .init(
                loadSeconds: loadSeconds, prefillSeconds: first - start, decodeSeconds: last - first,
                prefillTokens: prompt.count, decodeTokens: max(0, generated.count - 1)))
    }
}

/// Generated text with stop strings: holds back text that might still become a stop string.
struct TextAccumulator {
    let stopStrings: [String]
    private(set) var text = ""
    private var decoder: StreamingDecoder
    /// UTF-8 length of the text already handed to the caller.
    private var emitted = 0
    /// Characters that may still be the start of a stop string.
    private let holdBack: Int

    init(stopStrings: [String], tokenizer: Tokenizer) {
        self.stopStrings = stopStrings
        decoder = StreamingDecoder(tokenizer: tokenizer)
        holdBack = max(0, (stopStrings.map(\.count).max() ?? 0) - 1)
    }

    /// Adds a token's text; returns true when a stop string matched (text is cut before it).
    mutating func append(_ token: Int32, emit: (String) -> Void) -> Bool {
        let piece = decoder.append(token)
        guard !piece.isEmpty else { return false }
        // A match can start at most `holdBack` characters before the new piece.
        let searchFromOffset = text.utf8.distance(
            from: text.startIndex, to: text.index(text.endIndex, offsetBy: -min(text.count, holdBack)))
        text += piece
        let searchFrom = text.utf8.index(text.startIndex, offsetBy: searchFromOffset)
        for stop in stopStrings {
            if let match = text.firstRange(of: stop, from: searchFrom) {
                text = String(text[..<match.lowerBound])
                flush(upTo: text.utf8.count, emit: emit)
                return true
            }
        }
        let safe = text.index(text.endIndex, offsetBy: -min(text.count, holdBack))
        flush(upTo: text.utf8.distance(from: text.startIndex, to: safe), emit: emit)
        return false
    }

    mutating func finish(emit: (String) -> Void) {
        text += decoder.finish()
        flush(upTo: text.utf8.count, emit: emit)
    }

    private mutating func flush(upTo end: Int, emit: (String) -> Void) {
        guard end > emitted else { return }
        let utf8 = text.utf8
        emit(String(text[utf8.index(utf8.startIndex, offsetBy: emitted)..<utf8.index(utf8.startIndex, offsetBy: end)]))
        emitted = end
    }
}

extension String {
    /// First occurrence of `needle` at or after `start` (character-wise).
    func firstRange(of needle: String, from start: String.Index) -> Range<String.Index>? {
        let haystack = self[start...]
        guard let first = needle.first else { return nil }
        var i = haystack.startIndex
        while i < haystack.endIndex {
            if haystack[i] == first && haystack[i...].hasPrefix(needle) {
                return i..<haystack.index(i, offsetBy: needle.count)
            }
            i = haystack.index(after: i)
        }
        return nil
    }
}
