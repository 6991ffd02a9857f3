#!/usr/bin/env bash
# Engine throughput side by side, with ratios: TP 1 × 1 thread at concurrency 16 against
# concurrency 1 (what continuous batching buys), and PP 2 × 1 thread (balanced split,
# 2 virtual engines) against TP 1 × 2 threads at concurrency 16. The four runs alternate
# REPEAT times (a shared machine drifts: alternating spreads the drift over all of them);
# the table shows each run's median and the ratios of the medians.
# Usage: REQUESTS=32 PROMPT=64 TOKENS=64 REPEAT=3 scripts/bench-throughput.sh
set -euo pipefail
cd "$(dirname "$0")/.."
requests="${REQUESTS:-32}"
prompt="${PROMPT:-64}"
tokens="${TOKENS:-64}"
repeat="${REPEAT:-3}"
swift build -c release --product cohort >&2

run() {  # label, concurrency, flags…
    local label="$1" concurrency="$2"
    shift 2
    echo "$label $(.build/release/cohort bench throughput --requests "$requests" --concurrency "$concurrency" \
        --prompt-length "$prompt" --max-tokens "$tokens" "$@" --output json | tail -n 1)"
}

{
    for _ in $(seq "$repeat"); do
        run "TP1x1/c1" 1 --threads 1
        run "TP1x1/c16" 16 --threads 1
        run "TP1x2/c16" 16 --threads 2
        run "PP2balanced/c16" 16 --threads 1 --pp 2 --pp-layers balanced
    done
} | python3 -c '
import json, statistics, sys
runs = {}
for line in sys.stdin.read().splitlines():
    label, text = line.split(" ", 1)
    runs.setdefault(label, []).append(json.loads(text))
def median(label, key):
    return statistics.median(r[key] for r in runs[label])
baseline = {"TP1x1/c16": "TP1x1/c1", "PP2balanced/c16": "TP1x2/c16"}
print("%-16s %12s %15s %9s %10s %10s %10s %10s" % ("run", "output tok/s", "range", "ratio", "TTFT p50", "TTFT p99", "TPOT p50", "TPOT p99"))
for label, rs in runs.items():
    tps = [r["output_tokens_per_s"] for r in rs]
    base = baseline.get(label)
    ratio = "%.2fx" % (median(label, "output_tokens_per_s") / median(base, "output_tokens_per_s")) if base else "-"
    print("%-16s %12.1f %15s %9s %8.0f ms %8.0f ms %8.1f ms %8.1f ms" % (label, median(label, "output_tokens_per_s"),
          "%.0f-%.0f" % (min(tps), max(tps)), ratio, median(label, "ttft_ms_p50"), median(label, "ttft_ms_p99"),
          median(label, "tpot_ms_p50"), median(label, "tpot_ms_p99")))
print("medians of %d alternating runs; ratios: TP1x1/c16 against TP1x1/c1; PP2balanced/c16 against TP1x2/c16" % len(next(iter(runs.values()))))
'
