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
# For the multi-host tests, which run as root only (network namespaces): iproute2 and
# util-linux for the simulated hosts (scripts/hosts.sh), Open MPI for --launcher mpi (loaded
# at run time: the build never needs it). Without root they are skipped, so is this.
if [ "$(id -u)" = 0 ]; then
    command -v ip >/dev/null || missing+=(iproute2)
    command -v unshare >/dev/null || missing+=(util-linux)
    command -v mpirun >/dev/null || missing+=(openmpi-bin)
fi
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    apt-get update -qq && apt-get install -y -qq "${missing[@]}"
fi

# The clients the server's tests speak through (the openai package, httpx, prometheus_client's parser).
if ! python3 -c "import openai, httpx, prometheus_client" 2>/dev/null; then
    echo "installing the Python clients for the server tests: openai httpx prometheus_client"
    python3 -m pip install --quiet --disable-pip-version-check openai httpx prometheus_client
fi

# Ray's C++ API for --launcher ray, and Cohort's bridge to it (.build/ray/libcohort_ray.so,
# loaded at run time: the build never needs Ray). For the simulated-host tests, so root only
# like them; elsewhere `pip install 'ray[cpp]==2.60.0' && scripts/build-ray.sh` does the same.
if [ "$(id -u)" = 0 ]; then
    if ! python3 -c "import ray" 2>/dev/null || ! command -v ray >/dev/null; then
        echo "installing ray[cpp] 2.60.0 (for --launcher ray)"
        python3 -m pip install --quiet --disable-pip-version-check "ray[cpp]==2.60.0"
    fi
    command -v g++ >/dev/null || { apt-get update -qq && apt-get install -y -qq g++; }
    scripts/build-ray.sh
fi

scripts/fetch-model.sh
scripts/fetch-qwen.sh
scripts/fetch-vocabularies.sh
scripts/make-q4km.sh
swift build -c release --product cohort
