#!/usr/bin/env bash
# Makes the K-quant Llama-family test file, SmolLM2-135M-Instruct as Q4_K_M, into
# $COHORT_CACHE (default ~/.cache/cohort), once: the reference model dequantized to F32 by
# the `gguf` package, then quantized by llama.cpp (llama-cpp-python 0.3.36, which compiles
# llama.cpp when installed: several minutes on 2 cores). Checked by SHA-256: llama.cpp's
# quantizer is deterministic, and the release tests compare against fixtures made from it.
set -euo pipefail
cd "$(dirname "$0")/.."

cache="${COHORT_CACHE:-$HOME/.cache/cohort}"
source="$cache/SmolLM2-135M-Instruct.Q4_1.gguf"
file="$cache/SmolLM2-135M-Instruct.Q4_K_M.gguf"
expected_sha256=dc0f3a02e821146247a0af6895adf9872124f368682cb110cb9ed09ff2a9f9f1

if [ -f "$file" ] && [ "$(sha256sum "$file" | cut -d' ' -f1)" = "$expected_sha256" ]; then
    echo "SmolLM2 Q4_K_M: $file (verified)"
    exit 0
fi
if ! python3 -c "import llama_cpp, gguf, numpy" 2>/dev/null; then
    echo "installing llama-cpp-python 0.3.36 and gguf (compiles llama.cpp; several minutes on 2 cores)..."
    python3 -m pip install --quiet --disable-pip-version-check "llama-cpp-python==0.3.36" gguf numpy
fi
python3 scripts/make-q4km.py "$source" "$file.new" 2>/dev/null
found="$(sha256sum "$file.new" | cut -d' ' -f1)"
if [ "$found" != "$expected_sha256" ]; then
    rm -f "$file.new"
    echo "error: llama.cpp's Q4_K_M of $source has SHA-256 $found, expected $expected_sha256" >&2
    echo "(another llama-cpp-python than 0.3.36? the fixtures were made with 0.3.36)" >&2
    exit 1
fi
mv "$file.new" "$file"
echo "SmolLM2 Q4_K_M: $file (verified)"
