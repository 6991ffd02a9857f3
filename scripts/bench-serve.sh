#!/usr/bin/env bash
# `cohort serve` against llama-cpp-python's OpenAI-compatible server on the same file and
# threads, one after the other in one run: streamed completions from N concurrent clients
# (closed loop), requests/s, output tok/s, TTFT and TPOT p50/p99, and Cohort's ratios.
# llama-cpp-python runs one request at a time (no continuous batching); it is started with
# --interrupt_requests False, or each new request would cut off the one streaming.
# Usage: scripts/bench-serve.sh [MODEL]   (THREADS=2 CONCURRENCY="1 16" REQUESTS=32 MAX_TOKENS=64)
set -euo pipefail
cd "$(dirname "$0")/.."
model="${1:-${COHORT_CACHE:-$HOME/.cache/cohort}/SmolLM2-135M-Instruct.Q4_1.gguf}"
threads="${THREADS:-2}"
levels="${CONCURRENCY:-1 16}"
requests="${REQUESTS:-32}"
max_tokens="${MAX_TOKENS:-64}"

python3 -c "import httpx" 2>/dev/null || python3 -m pip install --quiet httpx
if ! python3 -c "import llama_cpp.server, uvicorn, sse_starlette" 2>/dev/null; then
    # Built for this CPU without AMX, which this virtual machine refuses (see README).
    flags="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
    flags="$flags -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
    if grep -qw avx512f /proc/cpuinfo; then
        flags="$flags -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_VBMI=ON -DGGML_AVX512_BF16=ON -DGGML_AVX_VNNI=ON"
    fi
    echo "installing llama-cpp-python[server] (compiles llama.cpp; several minutes on 2 cores)..." >&2
    CMAKE_ARGS="$flags" python3 -m pip install --quiet --no-cache-dir 'llama-cpp-python[server]'
fi
swift build -c release --product cohort >&2

server=""
results=$(mktemp)
stop() { if [ -n "$server" ]; then kill "$server" 2>/dev/null; wait "$server" 2>/dev/null || true; fi; server=""; }
trap 'stop; rm -f "$results"' EXIT
wait_for() {  # url
    for _ in $(seq 600); do curl -sf "$1" >/dev/null 2>&1 && return 0; sleep 0.2; done
    echo "no answer from $1" >&2; exit 1
}
load() {  # name, url, model name
    for c in $levels; do
        line=$(python3 scripts/bench_serve_client.py "$2" "$3" "$c" "$requests" "$max_tokens")
        echo "$1 $line" | tee -a "$results" >&2
    done
}

port=$((20000 + RANDOM % 20000))
.build/release/cohort serve --model "$model" --threads "$threads" --port "$port" >/dev/null 2>&1 &
server=$!
wait_for "http://127.0.0.1:$port/health"
load cohort "http://127.0.0.1:$port" "$(basename "$model" .gguf)"
stop
python3 -m llama_cpp.server --model "$model" --n_threads "$threads" --n_ctx 4096 --interrupt_requests False \
    --port $((port + 1)) >/dev/null 2>&1 &
server=$!
wait_for "http://127.0.0.1:$((port + 1))/v1/models"
load llama.cpp "http://127.0.0.1:$((port + 1))" "$model"
stop

python3 -c '
import json, sys
rows = {}
for line in open(sys.argv[1]):
    name, data = line.split(" ", 1)
    d = json.loads(data)
    rows[(name, d["concurrency"])] = d
keys = ["requests_per_s", "output_tokens_per_s", "ttft_ms_p50", "ttft_ms_p99", "tpot_ms_p50", "tpot_ms_p99", "mean_output_tokens"]
print("%4s %-20s %10s %10s %7s" % ("conc", "metric", "cohort", "llama.cpp", "ratio"))
for c in sorted({k[1] for k in rows}):
    a, b = rows.get(("cohort", c)), rows.get(("llama.cpp", c))
    for k in keys:
        x, y = a[k], b[k]
        print("%4d %-20s %10.1f %10.1f %6.2fx" % (c, k, x, y, x / y if y else float("nan")))
' "$results"

