#!/usr/bin/env bash
# Cohort's control plane (shared-memory rings, and TCP on loopback) next to Python multiprocessing pipes (and Ray actor calls and
# compiled graphs when `ray` is installed: `pip install ray`) for the same pattern: per
# step, one request of PAYLOAD bytes to N worker processes and N small replies gathered.
# Usage: WORKERS="2 4" PAYLOAD=4400 STEPS=5000 [BASELINE=path/to/older/cohort] scripts/bench-control-plane.sh
# With BASELINE, that build's rings run right after this build's, REPEAT times (default 3),
# alternating, and each row gives this build's speed-up over it.
set -euo pipefail
cd "$(dirname "$0")/.."
workers="${WORKERS:-2 4}"
payload="${PAYLOAD:-4400}"
steps="${STEPS:-5000}"
swift build -c release --product cohort >&2

printf "%-8s %-20s %10s %10s %10s %14s\n" workers transport median_us p90_us p99_us "rings faster"
for w in $workers; do
    c=$(.build/release/cohort bench control-plane --workers "$w" --payload-bytes "$payload" --steps "$steps" --output json | tail -n 1)
    python3 - "$c" <<'PY'
import json, sys
c = json.loads(sys.argv[1])
print(f"{c['workers']:<8} {'cohort':<20} {c['median_us']:10.1f} {c['p90_us']:10.1f} {c['p99_us']:10.1f}")
PY
    if [ -n "${BASELINE:-}" ]; then
        for _ in $(seq "${REPEAT:-3}"); do
            n=$(.build/release/cohort bench control-plane --workers "$w" --payload-bytes "$payload" --steps "$steps" --output json | tail -n 1)
            b=$("$BASELINE" bench control-plane --workers "$w" --payload-bytes "$payload" --steps "$steps" --output json | tail -n 1)
            python3 - "$n" "$b" <<'PY'
import json, sys
n, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"{n['workers']:<8} {'cohort (this build)':<20} {n['median_us']:10.1f} {n['p90_us']:10.1f} {n['p99_us']:10.1f}")
print(f"{b['workers']:<8} {'cohort (baseline)':<20} {b['median_us']:10.1f} {b['p90_us']:10.1f} {b['p99_us']:10.1f} {b['median_us'] / n['median_us']:13.2f}x")
PY
        done
    fi
    t=$(.build/release/cohort bench control-plane --workers "$w" --payload-bytes "$payload" --steps "$steps" --transport tcp --output json | tail -n 1)
    python3 - "$c" "$t" <<'PY'
import json, sys
c, t = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"{t['workers']:<8} {'cohort tcp':<20} {t['median_us']:10.1f} {t['p90_us']:10.1f} {t['p99_us']:10.1f} {t['median_us'] / c['median_us']:13.1f}x")
PY
    python3 scripts/bench_control_plane_python.py --workers "$w" --payload-bytes "$payload" --steps "$steps" | while read -r line; do
        python3 - "$w" "$c" "$line" <<'PY'
import json, sys
w, c, o = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
if "error" in o:
    print(f"{w:<8} {o['transport']:<20} unavailable: {o['error']}")
else:
    print(f"{w:<8} {o['transport']:<20} {o['median_us']:10.1f} {o['p90_us']:10.1f} {o['p99_us']:10.1f} {o['median_us'] / c['median_us']:13.1f}x")
PY
    done
done
