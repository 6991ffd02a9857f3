#!/usr/bin/env bash
# Cohort and llama.cpp side by side on the same GGUF file, batch 1: prefill and decode
# tokens/s (medians) and Cohort's ratio to llama.cpp, for each thread count.
# Usage: scripts/bench-vs-llamacpp.sh [MODEL] (THREADS="1 2" REPEAT=3 PROMPT_LENGTH=128 MAX_TOKENS=128)
set -euo pipefail
cd "$(dirname "$0")/.."
model="${1:-${COHORT_CACHE:-$HOME/.cache/cohort}/SmolLM2-135M-Instruct.Q4_1.gguf}"
threads="${THREADS:-1 2}"
repeat="${REPEAT:-3}"
prompt_length="${PROMPT_LENGTH:-128}"
max_tokens="${MAX_TOKENS:-128}"

if ! python3 -c "import llama_cpp" 2>/dev/null; then
    echo "installing llama-cpp-python (compiles llama.cpp; several minutes on 2 cores)..." >&2
    python3 -m pip install --quiet llama-cpp-python numpy
fi
swift build -c release --product cohort >&2

printf "%-8s %-8s %12s %12s %8s\n" threads phase cohort llama.cpp ratio
for t in $threads; do
    c=$(.build/release/cohort bench generate --model "$model" --threads "$t" --prompt-length "$prompt_length" \
        --max-tokens "$max_tokens" --repeat "$repeat" --output json | tail -n 1)
    l=$(python3 scripts/bench_llamacpp.py --model "$model" --threads "$t" --prompt-length "$prompt_length" \
        --max-tokens "$max_tokens" --repeat "$repeat" | tail -n 1)
    python3 - "$t" "$c" "$l" <<'PY'
import json, sys
t, c, l = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
for phase in ("prefill", "decode"):
    k = f"{phase}_tokens_per_s"
    print(f"{t:<8} {phase:<8} {c[k]:12.1f} {l[k]:12.1f} {c[k] / l[k]:7.2f}x")
PY
done
