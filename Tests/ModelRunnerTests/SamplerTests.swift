import ExecutorCore
import ModelRunner
import Testing

@Suite struct SamplerTests {
    let logits: [Float] = [1.0, 3.0, 2.5, -1.0, 0.5, 2.9]

    func draw(_ p: SamplingParameters, history: PenaltyHistory = PenaltyHistory(prompt: []), seed: UInt64 = 7, times: Int = 200) -> [Int32] {
        var sampler = Sampler(vocabularySize: logits.count)
        var random = RandomStream(seed: seed)
        return (0..<times).map { _ in sampler.sample(logits: logits, parameters: p, history: history, random: &random).token }
    }

    @Test("greedy picks the largest logit")
    func greedy() {
        #expect(Set(draw(SamplingParameters(temperature: 0))) == [1])
    }

    @Test("the same seed gives the same tokens; another seed differs")
    func seeded() {
        let p = SamplingParameters(temperature: 1)
        #expect(draw(p, seed: 1) == draw(p, seed: 1))
        #expect(draw(p, seed: 1) != draw(p, seed: 2))
    }

    @Test("top-k keeps only the k best")
    func topK() {
        #expect(Set(draw(SamplingParameters(temperature: 1, topK: 2))) == [1, 5])
    }

    @Test("top-p keeps the smallest set reaching p")
    func topP() {
        // Probabilities: token 1 ≈ 0.33, 5 ≈ 0.30, 2 ≈ 0.20 … so p = 0.5 keeps {1, 5}.
        #expect(Set(draw(SamplingParameters(temperature: 1, topP: 0.5))) == [1, 5])
    }

    @Test("min-p drops tokens far below the best")
    func minP() {
        // p(4)/p(1) = e^-2.5 ≈ 0.08, p(3)/p(1) = e^-4: min-p 0.1 keeps 1, 5, 2 and drops 0 (e^-2 ≈ 0.135 stays).
        let seen = Set(draw(SamplingParameters(temperature: 1, minP: 0.1), times: 2000))
        #expect(seen == [0, 1, 2, 5])
    }

    @Test("penalties move the choice away from seen tokens")
    func penalties() {
        var history = PenaltyHistory(prompt: [1])
        #expect(Set(draw(SamplingParameters(temperature: 0, repetitionPenalty: 1.2), history: history)) == [5])
        history = PenaltyHistory(prompt: [])
        history.record(1)
        #expect(Set(draw(SamplingParameters(temperature: 0, presencePenalty: 0.2), history: history)) == [5])
        history.record(5)
        history.record(5)
        // Logits less penalties: token 1: 3 − 0.6, token 5: 2.9 − 1.1, token 2: 2.5 untouched.
        #expect(Set(draw(SamplingParameters(temperature: 0, presencePenalty: 0.1, frequencyPenalty: 0.5), history: history)) == [2])
    }

    @Test("logprobs list the best alternatives in order with normalized values")
    func logprobs() {
        var sampler = Sampler(vocabularySize: logits.count)
        var random = RandomStream(seed: 1)
        let s = sampler.sample(logits: logits, parameters: SamplingParameters(temperature: 0, logprobs: 3), history: .init(prompt: []), random: &random)
        #expect(s.top.map(\.token) == [1, 5, 2])
        let total = logits.map { Double(expf($0)) }.reduce(0, +)
        #expect(abs(Double(s.top[0].logprob) - log(Double(expf(3)) / total)) < 1e-5)
        #expect(s.logprob == s.top[0].logprob)
    }

    @Test("invalid parameters are named with the allowed range")
    func validation() {
        #expect(throws: SamplingParametersError(field: "top-p", value: "0.0", allowed: "a number in (0, 1]")) {
            try SamplingParameters(topP: 0).validate()
        }
        #expect(throws: SamplingParametersError.self) { try SamplingParameters(temperature: -1).validate() }
        #expect(throws: SamplingParametersError.self) { try SamplingParameters(maxTokens: 0).validate() }
    }
}

#if canImport(Glibc)
import Glibc
#endif
