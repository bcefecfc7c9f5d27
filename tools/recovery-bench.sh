#!/usr/bin/env bash
# Publish latency while auto-recovery copies a lost bookie's data.
#
#   tools/recovery-bench.sh [BYTES_PER_SECOND_PER_WORKER] [BACKLOG_S] [E2E_S]
#
# Starts an optimized local cluster (tools/cluster: 2 metadata, 4 bookies,
# 2 brokers; the auditor every 1 s with a 3 s grace), writes a backlog for
# BACKLOG_S seconds at full speed into namespace bk (ledgers of 500
# entries, kept for an hour), then measures `sluice-perf e2e` at 5k msgs/s
# of 1 KiB for E2E_S seconds three times: before, while the other bookies'
# workers copy what a killed bookie held, and after. Prints each run's
# latency and the host's CPU (steal included), and how much was copied in
# how long. Everything shares this machine, so the figures hold only
# relative to each other.
set -euo pipefail
cd "$(dirname "$0")/.."
rate=${1:-4194304}
backlog_s=${2:-20}
e2e_s=${3:-15}
dir=${TMPDIR:-/tmp}/sluice-recovery-bench
export SLUICE_BAZEL_FLAGS="-c opt"
export SLUICE_METADATA_AUDIT_INTERVAL_MS=1000 SLUICE_METADATA_REREPLICATION_GRACE_MS=3000
export SLUICE_BOOKIE_REREPLICATION_POLL_MS=500
export SLUICE_BOOKIE_REREPLICATION_BYTES_PER_SECOND=$rate
bazel build -c opt //client:sluice-perf //client:sluice >/dev/null 2>&1
trap 'tools/cluster down --dir "$dir" >/dev/null 2>&1 || true' EXIT
rm -rf "$dir"
url=$(tools/cluster up --bookies 4 --dir "$dir" | sed -n 's/^url //p')
export SLUICE_URL=$url
sluice=bazel-bin/client/sluice
perf=bazel-bin/client/sluice-perf
echo "cluster $url; copy rate $rate B/s per worker"
$sluice namespace create bk >/dev/null
$sluice namespace policies bk --set ledger_rollover_entries=500 --set retention_minutes=60 \
  --set retention_megabytes=-1 >/dev/null
$perf produce bk/backlog --in-flight 256 --duration "$backlog_s" --partitions 1 2>&1 |
  grep "msgs/s" | tail -1 | sed 's/^ */backlog: /'

now() { date +%s.%N; }
items() {
  $sluice --json cluster status |
    python3 -c 'import json,sys; print(len(json.load(sys.stdin).get("under_replicated_ledgers", [])))'
}
e2e() {
  $perf e2e "public/bench-$1" --rate 5000 --duration "$e2e_s" --partitions 1 2>&1 |
    grep -E "latency|host cpu" | tr -s ' ' | tr '\n' ' ' | sed "s/^/$1: /"
  echo
}

e2e before
tools/cluster kill bookie-1 --dir "$dir" >/dev/null
t0=$(now)
n=0
for _ in $(seq 600); do n=$(items); [ "$n" -gt 0 ] && break; sleep 0.2; done
echo "bookie-1 killed; $n ledgers listed after $(echo "$(now) - $t0" | bc) s"
e2e during
for _ in $(seq 1200); do n=$(items); [ "$n" -eq 0 ] && break; sleep 0.5; done
echo "recovery: $n items left $(echo "$(now) - $t0" | bc) s after the kill"
cat "$dir"/*/bookie-*.log | grep "event=ledger_rereplicated" |
  awk '{for (i = 1; i <= NF; i++) if ($i ~ /^bytes=/) { split($i, a, "="); s += a[2]; n++ } }
       END { printf "copied %d ledgers, %.0f MiB\n", n, s / 1048576 }'
e2e after
