#!/usr/bin/env bash
# Installs dependencies, builds mhsm in the normal and the ASan+UBSan
# configuration, and runs every test in both. Ends with ctest's summary of the
# normal build. Exit status is non-zero if anything failed.
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=$(nproc 2>/dev/null || echo 2)

./scripts/install-deps.sh

build() { # dir, extra cmake args...
  local dir=$1; shift
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
  cmake --build "$dir" -j "$JOBS"
}

echo "== build: asan+ubsan =="
build build-asan -DMH_SANITIZE=ON
echo "== build: release =="
build build

echo "== test: asan+ubsan =="
(cd build-asan && ctest -j "$JOBS" --output-on-failure)
echo "== test: release =="
(cd build && ctest -j "$JOBS" --output-on-failure)
