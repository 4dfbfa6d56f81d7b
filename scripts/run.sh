#!/usr/bin/env bash
# Installs dependencies, builds mhsm, and runs what exists so far: the crypto
# core benchmark next to this machine's `openssl speed`. When the daemon lands
# this script starts a local three-node cluster instead.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j "$(nproc 2>/dev/null || echo 2)"
exec ./build/crypto-bench "$@"
