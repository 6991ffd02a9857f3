#!/usr/bin/env bash
# Installs what a fresh machine of this kind lacks, fetches the reference model and builds
# the release binary. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v swift >/dev/null; then
    echo "error: Swift 6 is required (expected 'swift' on PATH, found none)" >&2
    exit 1
fi
missing=()
command -v python3 >/dev/null || missing+=(python3 python3-pip)
command -v sha256sum >/dev/null || missing+=(coreutils)
# The simulated hosts of the multi-host tests (scripts/hosts.sh): network namespaces and UTS namespaces.
command -v ip >/dev/null || missing+=(iproute2)
command -v unshare >/dev/null || missing+=(util-linux)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    apt-get update -qq && apt-get install -y -qq "${missing[@]}"
fi

# The clients the server's tests speak through (the openai package, httpx, prometheus_client's parser).
if ! python3 -c "import openai, httpx, prometheus_client" 2>/dev/null; then
    echo "installing the Python clients for the server tests: openai httpx prometheus_client"
    python3 -m pip install --quiet --disable-pip-version-check openai httpx prometheus_client
fi

scripts/fetch-model.sh
scripts/fetch-qwen.sh
swift build -c release --product cohort
