#!/usr/bin/env bash
# Installs every Debian package mhsm needs to build, test and run. Idempotent.
set -euo pipefail
PKGS=(
  build-essential cmake pkg-config git clang-format
  libssl-dev openssl
  libuv1-dev libraft-dev
  libprotobuf-c-dev protobuf-c-compiler
  liblmdb-dev lmdb-utils
  libnghttp2-dev
  libjansson-dev libinih-dev
  libcmocka-dev
  python3 python3-grpcio python3-protobuf protobuf-compiler nghttp2-client lz4
  softhsm2 libp11-kit-dev etcd-server etcd-client
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PKGS[@]} packages present"
  exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends "${missing[@]}"
