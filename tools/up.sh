#!/usr/bin/env bash
# Brings up a local Sluice cluster on loopback in the foreground (tools/cluster
# starts one that outlives the command): installs missing Debian
# packages, builds, then runs sluice-cluster (etcd, metadata, bookies,
# brokers) until Ctrl-C. Flags go to sluice-cluster (see --help), e.g.
#   tools/up.sh --bookies 5 --brokers 2
#   tools/up.sh --check        # start, check, print, stop
set -euo pipefail
cd "$(dirname "$0")/.."
tools/deps.sh
bazel build //tests:sluice-cluster 2>&1 | tail -n 2 >&2
export SLUICE_BIN_DIR="$PWD/bazel-bin"
exec bazel-bin/tests/sluice-cluster "$@"
