import ExecutorCore
import Executor
import Metrics

/// The engine's figures through swift-metrics, named as vLLM names them (`vllm:X` becomes
/// `cohort_X`), so dashboards built for vLLM need only the prefix changed. A process that
/// installs no metrics backend pays a no-op per call.
struct EngineMetrics {
    let running = Gauge(label: "cohort_num_requests_running")
    let waiting = Gauge(label: "cohort_num_requests_waiting")
    /// Fraction of the KV blocks in use, 0…1 (vLLM's `kv_cache_usage_perc`).
    let cacheUsage = Gauge(label: "cohort_kv_cache_usage_perc")
    let promptTokens = Counter(label: "cohort_prompt_tokens_total")
    let generationTokens = Counter(label: "cohort_generation_tokens_total")
    let timeToFirstToken = Metrics.Timer(label: "cohort_time_to_first_token_seconds")
    let timePerOutputToken = Metrics.Timer(label: "cohort_time_per_output_token_seconds")
    let endToEnd = Metrics.Timer(label: "cohort_e2e_request_latency_seconds")
    let finishedByReason: [FinishReason: Counter] = Dictionary(uniqueKeysWithValues: [FinishReason.stop, .length, .kvCacheFull, .abort].map {
        ($0, Counter(label: "cohort_request_success_total", dimensions: [("finished_reason", $0.rawValue)]))
    })

    func admitted(promptTokens count: Int) { promptTokens.increment(by: Int64(count)) }

    func generated(tokens count: Int) { generationTokens.increment(by: Int64(count)) }

    func update(running: Int, waiting: Int, cacheUsage: Double) {
        self.running.record(running)
        self.waiting.record(waiting)
        self.cacheUsage.record(cacheUsage)
    }

    func finished(_ result: GenerationResult) {
        let t = result.timings
        if !result.tokens.isEmpty { timeToFirstToken.recordSeconds(t.prefillSeconds) }
        if t.decodeTokens > 0 { timePerOutputToken.recordSeconds(t.decodeSeconds / Double(t.decodeTokens)) }
        endToEnd.recordSeconds(t.prefillSeconds + t.decodeSeconds)
        finishedByReason[result.finishReason]?.increment()
    }
}
