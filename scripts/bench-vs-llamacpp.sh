#!/usr/bin/env bash
# Cohort and llama.cpp side by side on the same GGUF files: prefill and decode tokens/s at
# batch 1, and decode of SEQUENCES sequences at once (totals), medians over the repeats,
# with Cohort's ratio to llama.cpp, for each model and thread count. Both run in this one
# script, one after the other, on the same machine.
# Usage: scripts/bench-vs-llamacpp.sh [MODEL...]   (default: both reference models)
#        THREADS="1 2" REPEAT=3 PROMPT_LENGTH=128 MAX_TOKENS=128 SEQUENCES=8
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${COHORT_CACHE:-$HOME/.cache/cohort}"
if [ $# -eq 0 ]; then
    set -- "$cache/SmolLM2-135M-Instruct.Q4_1.gguf" "$cache/Qwen2.5-Coder-0.5B-Instruct.gguf"
fi
threads="${THREADS:-1 2}"
repeat="${REPEAT:-3}"
prompt_length="${PROMPT_LENGTH:-128}"
max_tokens="${MAX_TOKENS:-128}"
sequences="${SEQUENCES:-8}"

if ! python3 -c "import llama_cpp" 2>/dev/null; then
    echo "installing llama-cpp-python (compiles llama.cpp; several minutes on 2 cores)..." >&2
    python3 -m pip install --quiet llama-cpp-python numpy
fi
swift build -c release --product cohort >&2

for model in "$@"; do
    echo "$(basename "$model")"
    printf "%-8s %-12s %12s %12s %8s\n" threads phase cohort llama.cpp ratio
    for t in $threads; do
        common=(--model "$model" --threads "$t" --prompt-length "$prompt_length" --max-tokens "$max_tokens" --repeat "$repeat")
        c=$(.build/release/cohort bench generate "${common[@]}" --output json | tail -n 1)
        l=$(python3 scripts/bench_llamacpp.py "${common[@]}" | tail -n 1)
        cb=$(.build/release/cohort bench generate "${common[@]}" --sequences "$sequences" --output json | tail -n 1)
        lb=$(python3 scripts/bench_llamacpp_batched.py "${common[@]}" --sequences "$sequences" 2>/dev/null | tail -n 1)
        python3 - "$t" "$sequences" "$c" "$l" "$cb" "$lb" <<'PY'
import json, sys
t, s = sys.argv[1], sys.argv[2]
c, l, cb, lb = (json.loads(x) for x in sys.argv[3:])
rows = [("prefill", c, l, "prefill"), ("decode", c, l, "decode"), (f"decode x{s}", cb, lb, "decode")]
for name, mine, theirs, phase in rows:
    k = f"{phase}_tokens_per_s"
    print(f"{t:<8} {name:<12} {mine[k]:12.1f} {theirs[k]:12.1f} {mine[k] / theirs[k]:7.2f}x")
PY
    done
done
