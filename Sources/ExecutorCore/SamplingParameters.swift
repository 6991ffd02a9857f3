/// How to choose each next token of one request (names follow vLLM's `SamplingParams`).
///
/// Filters apply in vLLM's order: penalties, temperature, top-k, top-p, min-p. A
/// temperature of 0 is greedy decoding and ignores the filters.
public struct SamplingParameters: Sendable, Equatable, Hashable {
    /// 0 = greedy; otherwise logits are divided by it.
    public var temperature: Float
    /// Keep only the k most likely tokens; 0 = off.
    public var topK: Int
    /// Keep the smallest set of tokens whose probability reaches p; 1 = off.
    public var topP: Float
    /// Drop tokens less likely than minP × the most likely one; 0 = off.
    public var minP: Float
    /// > 1 discourages tokens already in the prompt or output (CTRL-style); 1 = off.
    public var repetitionPenalty: Float
    /// Subtracted once from the logit of every token already generated; 0 = off.
    public var presencePenalty: Float
    /// Subtracted per occurrence from the logit of every token already generated; 0 = off.
    public var frequencyPenalty: Float
    /// Seed for the request's own random stream: same seed, same tokens. nil = random.
    public var seed: UInt64?
    /// Token ids that end the request (in addition to the model's end-of-generation set
    /// unless `ignoreEndOfGeneration`).
    public var stopTokenIDs: [Int32]
    /// Strings that end the request; the text stops before the match.
    public var stopStrings: [String]
    public var ignoreEndOfGeneration: Bool
    /// Most tokens to generate.
    public var maxTokens: Int
    /// How many top alternatives to report per generated token; 0 = none.
    public var logprobs: Int

    public init(
        temperature: Float = 0, topK: Int = 0, topP: Float = 1, minP: Float = 0,
        repetitionPenalty: Float = 1, presencePenalty: Float = 0, frequencyPenalty: Float = 0,
        seed: UInt64? = nil, stopTokenIDs: [Int32] = [], stopStrings: [String] = [],
        ignoreEndOfGeneration: Bool = false, maxTokens: Int = 128, logprobs: Int = 0
    ) {
        self.temperature = temperature
        self.topK = topK
        self.topP = topP
        self.minP = minP
        self.repetitionPenalty = repetitionPenalty
        self.presencePenalty = presencePenalty
        self.frequencyPenalty = frequencyPenalty
        self.seed = seed
        self.stopTokenIDs = stopTokenIDs
        self.stopStrings = stopStrings
        self.ignoreEndOfGeneration = ignoreEndOfGeneration
        self.maxTokens = maxTokens
        self.logprobs = logprobs
    }

    public var isGreedy: Bool { temperature == 0 }

    /// Checks every field; the message names the field, the value and what is allowed.
    public func validate() throws(SamplingParametersError) {
        func fail(_ field: String, _ value: String, _ allowed: String) -> SamplingParametersError {
            .init(field: field, value: value, allowed: allowed)
        }
        guard temperature >= 0, temperature.isFinite else { throw fail("temperature", "\(temperature)", "a finite number ≥ 0") }
        guard topK >= 0 else { throw fail("top-k", "\(topK)", "an integer ≥ 0 (0 disables it)") }
        guard topP > 0, topP <= 1 else { throw fail("top-p", "\(topP)", "a number in (0, 1]") }
        guard minP >= 0, minP <= 1 else { throw fail("min-p", "\(minP)", "a number in [0, 1]") }
        guard repetitionPenalty > 0, repetitionPenalty.isFinite else {
            throw fail("repetition-penalty", "\(repetitionPenalty)", "a finite number > 0 (1 disables it)")
        }
        guard presencePenalty.isFinite, abs(presencePenalty) <= 2 else {
            throw fail("presence-penalty", "\(presencePenalty)", "a number in [-2, 2]")
        }
        guard frequencyPenalty.isFinite, abs(frequencyPenalty) <= 2 else {
            throw fail("frequency-penalty", "\(frequencyPenalty)", "a number in [-2, 2]")
        }
        guard maxTokens >= 1 else { throw fail("max-tokens", "\(maxTokens)", "an integer ≥ 1") }
        guard logprobs >= 0, logprobs <= 20 else { throw fail("logprobs", "\(logprobs)", "an integer in 0…20") }
        if stopStrings.contains("") { throw fail("stop", "\"\"", "non-empty strings") }
    }
}

/// A sampling parameter outside its allowed range.
public struct SamplingParametersError: Error, Equatable, CustomStringConvertible {
    public var field: String
    public var value: String
    public var allowed: String

    public init(field: String, value: String, allowed: String) {
        self.field = field
        self.value = value
        self.allowed = allowed
    }

    public var description: String { "invalid \(field) \(value): expected \(allowed)" }
}

/// Why a request stopped.
public enum FinishReason: String, Sendable, Equatable {
    /// An end-of-generation token, a stop token or a stop string.
    case stop
    /// `maxTokens` reached, or the model's context is full.
    case length
    /// The request's share of the KV cache is full (the cache, not the model, set the limit):
    /// raise `--kv-cache-mb` or use fewer virtual engines.
    case kvCacheFull = "kv_cache_full"
    /// The request was aborted.
    case abort
}

/// One alternative at a generated position.
public struct TokenLogprob: Sendable, Equatable {
    public var token: Int32
    public var logprob: Float
    public init(token: Int32, logprob: Float) {
        self.token = token
        self.logprob = logprob
    }
}
