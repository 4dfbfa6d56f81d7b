#!/usr/bin/env bash
# bench.sh [--quick] [--seconds S] [--out FILE] [--json FILE]: mhsm's benchmark command.
# Installs the dependencies, builds the release configuration in build-bench/, then runs
# bench/bench.py, which measures the machine's ceilings (openssl speed), mhsm on one node and
# on a three-node cluster, replicated writes, SoftHSM2 and etcd on this machine, prints one
# table and rewrites docs/PERFORMANCE.md (see bench/bench.py --help). A full run takes about
# 10 minutes, --quick about 2.
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=$(nproc 2>/dev/null || echo 2)

./scripts/install-deps.sh
cmake -S . -B build-bench -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-bench -j "$JOBS" --target mhsmd mhsm mhsm-bench p11-bench
exec /usr/bin/python3 bench/bench.py --build-dir build-bench "$@"
