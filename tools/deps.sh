#!/usr/bin/env bash
# Installs the Debian packages Sluice builds, tests and runs with, if any
# are missing. Safe to run again; needs root (or sudo) only when installing.
set -euo pipefail

pkgs=(
  bazel-bootstrap build-essential clang libclang-rt-14-dev
  libgrpc-dev protobuf-compiler protobuf-c-compiler libprotobuf-c-dev
  libprotoc-dev libprotobuf-dev libleveldb-dev libcmocka-dev
  libcurl4-openssl-dev libcjson-dev libssl-dev libmicrohttpd-dev
  etcd-server etcd-client prometheus python3-grpcio python3-grpc-tools openssl
)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
    missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "installing: ${missing[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >&2
