#!/usr/bin/env bash
# Builds Cohort's bridge to Ray (integrations/ray/cohort_ray.cc) into .build/ray/libcohort_ray.so
# against the C++ API of the installed `ray[cpp]` (PyPI). Needs ray[cpp] and g++; the
# default build never needs this. `cohort generate --launcher ray` finds the library there
# (or at COHORT_RAY_LIBRARY); Ray's workers load it from the same directory.
set -euo pipefail
cd "$(dirname "$0")/.."
ray_cpp=$(python3 -c "import os, ray; print(os.path.join(os.path.dirname(ray.__file__), 'cpp'))" 2>/dev/null) || {
    echo "error: building the Ray bridge needs the Python package ray[cpp] (pip install 'ray[cpp]'); 'import ray' failed" >&2
    exit 1
}
[ -f "$ray_cpp/include/ray/api.h" ] || {
    echo "error: $ray_cpp/include/ray/api.h is missing: install the C++ API too (pip install 'ray[cpp]')" >&2
    exit 1
}
out=.build/ray
mkdir -p "$out"
if [ "$out/libcohort_ray.so" -nt integrations/ray/cohort_ray.cc ] && [ "$out/libcohort_ray.so" -nt "$ray_cpp/lib/libray_api.so" ]; then
    exit 0
fi
echo "building $out/libcohort_ray.so against $ray_cpp"
# Ray's library is built with the old libstdc++ string ABI: match it.
g++ -std=c++17 -O2 -fPIC -shared -D_GLIBCXX_USE_CXX11_ABI=0 -w \
    -I "$ray_cpp/include" integrations/ray/cohort_ray.cc \
    -L "$ray_cpp/lib" -lray_api -Wl,-rpath,"$ray_cpp/lib" \
    -o "$out/libcohort_ray.so.tmp"
mv "$out/libcohort_ray.so.tmp" "$out/libcohort_ray.so"
