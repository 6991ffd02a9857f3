#!/usr/bin/env bash
# Distribution overhead on one machine: decode speed of TP 2 (1 thread per rank, over
# shared-memory collectives and over the TCP ring on loopback) and of
# PP 2 (1 thread per stage, 2 virtual engines; the even split, then `--pp-layers balanced`,
# which counts the output head's work on the last stage) against TP 1 with 2 threads, side by side,
# at batch 1 and over SEQUENCES requests; for grid runs, where the driver's time went per
# step (its ring writes, rank 0's own part, rank 0's collectives, gathering the replies).
# Usage: SEQUENCES=8 PROMPT=64 TOKENS=64 REPEAT=3 scripts/bench-parallel.sh [--precise]
set -euo pipefail
cd "$(dirname "$0")/.."
sequences="${SEQUENCES:-8}"
prompt="${PROMPT:-64}"
tokens="${TOKENS:-64}"
repeats="${REPEAT:-3}"
swift build -c release --product cohort >&2

run() {  # label, batch, flags…
    local label="$1" batch="$2"
    shift 2
    local json
    json=$(.build/release/cohort bench generate --prompt-length "$prompt" --max-tokens "$tokens" --repeat "$repeats" \
        --sequences "$batch" "$@" --output json | tail -n 1)
    echo "$label $batch $json"
}

{
    for batch in 1 "$sequences"; do
        run "TP1x2threads" "$batch" --threads 2 "$@"
        run "TP2x1thread" "$batch" --threads 1 --tp 2 "$@"
        run "TP2tcp" "$batch" --threads 1 --tp 2 --collectives tcp "$@"
        run "PP2x1thread" "$batch" --threads 1 --pp 2 "$@"
        run "PP2balanced" "$batch" --threads 1 --pp 2 --pp-layers balanced "$@"
    done
} | python3 scripts/bench_parallel_table.py
