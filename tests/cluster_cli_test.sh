#!/usr/bin/env bash
# sluice-cluster as tools/cluster drives it: --dir keeps a cluster running
# and takes commands (status, kill, restart, pause, down) on DIR/control.
set -euo pipefail
bin="$TEST_SRCDIR/sluice/tests/sluice-cluster"
dir="$TEST_TMPDIR/cli"
fail() { echo "FAIL: $*" >&2; cat "$dir/cluster.out" >&2 || true; exit 1; }
cmd() { "$bin" --dir "$dir" --command "$*"; }

mkdir -p "$dir"
"$bin" --dir "$dir" --metadata 1 --bookies 1 --brokers 1 >"$dir/cluster.out" 2>&1 &
pid=$!
trap 'kill -9 $pid 2>/dev/null || true' EXIT
for _ in $(seq 600); do [ -s "$dir/url" ] && break; kill -0 $pid || fail "exited"; sleep 0.1; done
[ -s "$dir/url" ] || fail "no url"
url=$(cat "$dir/url")
cmd status | grep -q "^broker-0 *$url *running" || fail "status: broker-0 at $url"
cmd status | grep -q "^etcd .*running" || fail "status: etcd"
cmd kill broker-0
cmd status | grep -q "^broker-0 .*stopped" || fail "broker-0 not stopped after kill"
cmd restart broker-0
cmd status | grep -q "^broker-0 *$url *running" || fail "broker-0 not back on $url"
cmd pause bookie-0
cmd status | grep -q "^bookie-0 .*paused" || fail "bookie-0 not paused"
cmd resume bookie-0
cmd status | grep -q "^bookie-0 .*running" || fail "bookie-0 not resumed"
if cmd kill broker-7 2>"$dir/err"; then fail "kill of an unknown node succeeded"; fi
grep -q "no node named broker-7" "$dir/err" || fail "unknown node: $(cat "$dir/err")"
if cmd frobnicate 2>"$dir/err"; then fail "unknown command succeeded"; fi
grep -q "unknown command" "$dir/err" || fail "unknown command: $(cat "$dir/err")"
cmd down
for _ in $(seq 300); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
if kill -0 $pid 2>/dev/null; then fail "still running after down"; fi
wait $pid || fail "sluice-cluster exited with an error"
if cmd status 2>/dev/null; then fail "status answered after down"; fi
echo "1 passed, 0 failed"
