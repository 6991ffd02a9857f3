#!/usr/bin/env bash
# Makes the K-quant Llama-family test file, SmolLM2-135M-Instruct as Q4_K_M, into
# $COHORT_CACHE (default ~/.cache/cohort), once: the reference model dequantized to F32 by
# the `gguf` package, then quantized by llama.cpp (llama-cpp-python 0.3.36, which compiles
# llama.cpp when installed: about 9 minutes on 2 cores). Its SHA-256 is compared with the
# file the fixtures were made from (llama.cpp's quantizer is deterministic; this machine's
# AMD EPYC made it): another CPU's build may round a few blocks differently, which is
# reported, and the release tests' tolerances then still hold.
set -euo pipefail
cd "$(dirname "$0")/.."

cache="${COHORT_CACHE:-$HOME/.cache/cohort}"
source="$cache/SmolLM2-135M-Instruct.Q4_1.gguf"
file="$cache/SmolLM2-135M-Instruct.Q4_K_M.gguf"
expected_sha256=dc0f3a02e821146247a0af6895adf9872124f368682cb110cb9ed09ff2a9f9f1

if [ -f "$file" ]; then
    echo "SmolLM2 Q4_K_M: $file"
    exit 0
fi
if ! python3 -c "import llama_cpp, gguf, numpy" 2>/dev/null; then
    echo "installing llama-cpp-python 0.3.36 and gguf (compiles llama.cpp; about 9 minutes on 2 cores)..."
    # No multimodal library (not needed) and no AMX (its instructions die with SIGILL in these
    # virtual machines; see ../shared/NOTES.md).
    CMAKE_ARGS="-DLLAVA_BUILD=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF" \
        python3 -m pip install --quiet --disable-pip-version-check "llama-cpp-python==0.3.36" "gguf==0.19.0" numpy
fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if ! python3 scripts/make-q4km.py "$source" "$file.new" >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    echo "error: could not make the Q4_K_M file from $source (llama.cpp's log above)" >&2
    exit 1
fi
found="$(sha256sum "$file.new" | cut -d' ' -f1)"
mv "$file.new" "$file"
if [ "$found" != "$expected_sha256" ]; then
    echo "warning: llama.cpp's Q4_K_M of $source has SHA-256 $found, not the fixtures' $expected_sha256" >&2
    echo "(another llama-cpp-python than 0.3.36, or another CPU's rounding)" >&2
fi
echo "SmolLM2 Q4_K_M: $file"
