#!/usr/bin/env bash
# Fetches llama.cpp's own tokenizer test vectors into $COHORT_CACHE/vocab (default
# ~/.cache/cohort/vocab), once: the vocabulary-only GGUF files of real models (Llama 3's
# `llama-bpe`, Llama 2's SentencePiece `llama-spm`, Phi-3, Qwen2, GPT-2, StarCoder) with
# the strings llama.cpp's test-tokenizer-0 tokenizes (`.inp`) and the ids it expects
# (`.out`). They ship in llama-cpp-python's source distribution (vendor/llama.cpp/models),
# fetched from PyPI and checked by SHA-256. Nothing here is committed.
set -euo pipefail

cache="${COHORT_CACHE:-$HOME/.cache/cohort}/vocab"
names=(llama-bpe llama-spm phi-3 qwen2 gpt-2 starcoder)
version=0.3.36
sdist="llama_cpp_python-$version.tar.gz"
expected_sha256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e

complete() {
    for n in "${names[@]}"; do
        for suffix in "" .inp .out; do [ -s "$cache/ggml-vocab-$n.gguf$suffix" ] || return 1; done
    done
}

if complete; then
    echo "llama.cpp vocabularies: $cache (${names[*]})"
    exit 0
fi

mkdir -p "$cache"
tmp="$(mktemp -d "$cache/.fetch.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
echo "fetching llama.cpp's tokenizer test vocabularies (llama-cpp-python $version source, ~77 MB)..."
python3 - "$sdist" "$tmp/$sdist" <<'PY'
import json, sys, urllib.request
name, out = sys.argv[1], sys.argv[2]
request = urllib.request.Request("https://pypi.org/simple/llama-cpp-python/",
                                 headers={"Accept": "application/vnd.pypi.simple.v1+json"})
files = json.load(urllib.request.urlopen(request, timeout=60))["files"]
urls = [f["url"] for f in files if f["filename"] == name]
if not urls:
    sys.exit(f"error: PyPI lists no {name}")
with urllib.request.urlopen(urls[0], timeout=600) as src, open(out, "wb") as dst:
    while chunk := src.read(1 << 20):
        dst.write(chunk)
PY
found="$(sha256sum "$tmp/$sdist" | cut -d' ' -f1)"
if [ "$found" != "$expected_sha256" ]; then
    echo "error: $sdist has SHA-256 $found, expected $expected_sha256" >&2
    exit 1
fi
members=()
for n in "${names[@]}"; do
    for suffix in "" .inp .out; do members+=("llama_cpp_python-$version/vendor/llama.cpp/models/ggml-vocab-$n.gguf$suffix"); done
done
tar -xzf "$tmp/$sdist" -C "$tmp" "${members[@]}"
mv "$tmp/llama_cpp_python-$version/vendor/llama.cpp/models/"ggml-vocab-* "$cache/"
echo "llama.cpp vocabularies: $cache (${names[*]})"
