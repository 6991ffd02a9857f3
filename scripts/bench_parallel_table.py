"""Formats scripts/bench-parallel.sh's runs: one line per layout and batch, with the ratio
to TP 1 × 2 threads at the same batch. Input lines: LABEL BATCH JSON."""
import json
import sys

base = {}
print(f"{'layout':<14} {'batch':>5} {'VEs':>4} {'decode tok/s':>13} {'vs TP1x2':>9} "
      f"{'step ms':>8} {'send us':>8} {'rank0 ms':>9} {'coll ms':>8} {'recv ms':>8}")
for line in sys.stdin.read().splitlines():
    label, batch, text = line.split(" ", 2)
    r = json.loads(text)
    if label == "TP1x2threads":
        base[batch] = r["decode_tokens_per_s"]

    def f(key):
        return f"{r[key]:.2f}" if r.get(key) is not None else "-"

    ratio = r["decode_tokens_per_s"] / base[batch]
    print(f"{label:<14} {batch:>5} {r['virtual_engines']:>4} {r['decode_tokens_per_s']:>13.1f} {ratio:>8.2f}x "
          f"{f('step_ms'):>8} {f('broadcast_us_per_step'):>8} {f('rank0_ms_per_step'):>9} "
          f"{f('collective_ms_per_step'):>8} {f('receive_ms_per_step'):>8}")
