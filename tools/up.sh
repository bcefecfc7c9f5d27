#!/usr/bin/env bash
# README's run command. Installs missing Debian packages, builds, brings a
# local cluster up with tools/cluster (etcd, 2 metadata replicas, 3 bookies,
# 2 brokers on loopback; namespace `public`), creates the topic
# public/hello, sends one message through it with the `sluice` CLI and shows
# it come out the other side, then keeps the cluster running until Ctrl-C.
#   tools/up.sh                 # ... and keep running
#   tools/up.sh --check         # ... then stop (exit status says if it worked)
#   tools/up.sh --bookies 5     # --brokers/--bookies/--metadata go to tools/cluster up
# The cluster's files (logs, data) stay in $SLUICE_DIR (default
# ${TMPDIR:-/tmp}/sluice-up).
set -euo pipefail
cd "$(dirname "$0")/.."
check=false
up_args=()
while [ $# -gt 0 ]; do
  case $1 in
    --check) check=true; shift ;;
    --brokers|--bookies|--metadata)
      [ $# -ge 2 ] || { echo "up.sh: $1 needs a value" >&2; exit 2; }
      up_args+=("$1" "$2"); shift 2 ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "up.sh: unknown flag $1 (see tools/up.sh --help)" >&2; exit 2 ;;
  esac
done
tools/deps.sh
bazel build //tests:sluice-cluster //client:sluice //client:sluice-perf 2>&1 | tail -n 1 >&2
dir=${SLUICE_DIR:-${TMPDIR:-/tmp}/sluice-up}
sluice() { bazel-bin/client/sluice "$@"; }

url=$(tools/cluster up --dir "$dir" "${up_args[@]}" | sed -n 's/^url //p')
trap 'tools/cluster down --dir "$dir" >&2' EXIT
export SLUICE_URL=$url
echo "cluster up; any broker: $url (files in $dir)"
tools/cluster status --dir "$dir"

sluice topic create public/hello 2>/dev/null || sluice topic stats public/hello >/dev/null
msg="hello from $(hostname) at $(date -u +%H:%M:%S)"
echo "\$ sluice produce public/hello -m \"$msg\""
sluice produce public/hello -m "$msg"
echo "\$ sluice consume public/hello -s readme -n 1 --from earliest"
out=$(sluice --timeout 20 consume public/hello -s readme -n 1 --from earliest) || out=""
echo "$out"
ok=false
[ "$out" = "$msg" ] && ok=true
if $ok; then
  echo "the message was acked once 2 of the 3 bookies had it on disk (the default E=3 Qw=2 Qa=2), and came back out"
else
  echo "up.sh: the message did not come back out; see the logs in $dir" >&2
fi
if $check; then
  $ok
  exit
fi
echo "cluster running; try: export SLUICE_URL=$url; bazel-bin/client/sluice --help"
echo "press Ctrl-C to stop it"
trap 'exit 0' INT TERM
while :; do sleep 3600 & wait $!; done
