#!/usr/bin/env bash
# What crossing machines costs, on the simulated hosts of scripts/hosts.sh (root: network
# namespaces joined by veth pairs on a bridge), side by side in one run:
#   - the control plane: per-step broadcast + gather to WORKERS workers on another host
#     (TCP) against the same workers on this host (shared-memory rings, and TCP on loopback);
#   - decode tok/s of --tp 2 with a rank on each of two hosts (TCP ring) against --tp 2 on
#     one host (shared memory, and the TCP ring on loopback);
#   - the same two-host --tp 2 under mpirun with --collectives mpi (MPI's all-reduce).
# Each row's last column is its time (or speed) relative to the one-host baseline above it.
# With BASELINE=path/to/older/cohort, the two-host TCP ring runs under that build and this
# one alternately, ROUNDS times (default 3), each row with rank 0's collective time per step.
# Usage: WORKERS=2 STEPS=3000 PROMPT=32 TOKENS=64 REPEAT=3 [BASELINE=…] scripts/bench-across-hosts.sh
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench-across-hosts.sh: needs root (simulated hosts are network namespaces)" >&2; exit 1; }
workers="${WORKERS:-2}"
steps="${STEPS:-3000}"
prompt="${PROMPT:-32}"
tokens="${TOKENS:-64}"
repeats="${REPEAT:-3}"
swift build -c release --product cohort >&2
cohort="$PWD/.build/release/cohort"
agent="$PWD/scripts/host-agent"
scripts/hosts.sh down >/dev/null 2>&1 || true
scripts/hosts.sh up 2 >/dev/null
trap 'scripts/hosts.sh down >/dev/null 2>&1 || true' EXIT
on_h1() { scripts/hosts.sh run h1 "$*"; }
# Rows of "label|json" in, one table row each out: the first row is the baseline.
read -r -d '' table <<'PY' || true
import json, sys
base = None
for line in sys.stdin:
    label, js = line.rstrip("\n").split("|", 1)
    r = json.loads(js)
    if sys.argv[1] == "control":
        base = base or r["median_us"]
        print(f"{label:<34} {r['median_us']:10.1f} {r['p90_us']:10.1f} {r['p99_us']:10.1f} {r['median_us'] / base:9.2f}x")
    else:
        base = base or r["decode_tokens_per_s"]
        print(f"{label:<34} {r['prefill_tokens_per_s']:12.1f} {r['decode_tokens_per_s']:12.1f} {r['decode_tokens_per_s'] / base:9.2f}x"
              f" {r.get('collective_ms_per_step', 0):12.2f}")
PY

echo "control plane: $workers workers, 4400-byte steps, $steps steps (µs per step)"
printf "%-34s %10s %10s %10s %10s\n" case median p90 p99 "vs rings"
cp() {  # label, flags…
    local label="$1"
    shift
    local json
    json=$(on_h1 "$cohort bench control-plane --workers $workers --steps $steps --output json $*" | tail -n 1)
    echo "$label|$json"
}
{
    cp "one host, rings"
    cp "one host, tcp (loopback)" --transport tcp
    cp "two hosts, tcp" --launcher ssh --hosts "h2:$workers" --ssh-command "$agent" --host-ip 198.18.7.1
} | python3 -c "$table" control

echo
echo "decode, reference model, --tp 2 with 1 thread a rank, $prompt-token prompt, $tokens tokens, $repeats runs"
printf "%-34s %12s %12s %10s %12s\n" case "prefill t/s" "decode t/s" "vs shm" "coll. ms/step"
gen() {  # label, prefix, flags…
    local label="$1" prefix="$2"
    shift 2
    local json
    json=$(on_h1 "$prefix ${binary:-$cohort} bench generate --prompt-length $prompt --max-tokens $tokens --repeat $repeats --threads 1 --tp 2 --output json $*" | tail -n 1)
    echo "$label|$json"
}
mpirun_two="mpirun --allow-run-as-root --bind-to none -np 2 --host h1:1,h2:1 --mca plm_rsh_agent $agent"
{
    gen "one host, shm" ""
    gen "one host, tcp ring (loopback)" "" --collectives tcp
    gen "two hosts, tcp ring (ssh)" "" --launcher ssh --hosts h1:1,h2:1 --ssh-command "$agent" --host-ip 198.18.7.1
    if command -v mpirun >/dev/null; then
        gen "two hosts, tcp ring (mpirun)" "$mpirun_two" --launcher mpi
        gen "two hosts, --collectives mpi" "$mpirun_two" --launcher mpi --collectives mpi
    fi
    if [ -n "${BASELINE:-}" ]; then
        for _ in $(seq "${ROUNDS:-3}"); do
            binary="$BASELINE" gen "two hosts, tcp ring, BASELINE" "" --launcher ssh --hosts h1:1,h2:1 --ssh-command "$agent" --host-ip 198.18.7.1
            gen "two hosts, tcp ring, this build" "" --launcher ssh --hosts h1:1,h2:1 --ssh-command "$agent" --host-ip 198.18.7.1
        done
    fi
} | python3 -c "$table" decode
