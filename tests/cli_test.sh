#!/usr/bin/env bash
# The `sluice` command line on a real cluster (sluice-cluster: etcd,
# metadata, 3 bookies, a broker): admin commands, produce, --help on every
# command, and bad usage (unknown command or flag, unreachable --url within
# the timeout, bad topic name, consuming a topic that does not exist).
set -euo pipefail
run="$TEST_SRCDIR/sluice"
sluice="$run/client/sluice"
dir="$TEST_TMPDIR/cli"
fail() { echo "FAIL: $*" >&2; exit 1; }
mkdir -p "$dir"
"$run/tests/sluice-cluster" --dir "$dir" --metadata 1 --bookies 3 --brokers 1 \
  >"$dir/cluster.out" 2>&1 &
pid=$!
trap '"$run/tests/sluice-cluster" --dir "$dir" --command down >/dev/null 2>&1 || kill -9 $pid' EXIT
for _ in $(seq 600); do [ -s "$dir/url" ] && break; kill -0 $pid || fail "cluster exited"; sleep 0.1; done
[ -s "$dir/url" ] || fail "cluster: no url"
export SLUICE_URL=$(cat "$dir/url")

# expect RC PATTERN CMD...: exit code RC and PATTERN on stdout+stderr.
expect() {
  local want=$1 pat=$2 rc=0
  shift 2
  "$@" >"$dir/out" 2>&1 </dev/null || rc=$?
  [ "$rc" = "$want" ] || fail "$*: exit $rc, want $want: $(cat "$dir/out")"
  grep -q -- "$pat" "$dir/out" || fail "$*: no '$pat' in: $(cat "$dir/out")"
}

# Admin.
expect 0 "created public/orders" "$sluice" topic create public/orders
expect 0 "created public/wide" "$sluice" topic create public/wide --partitions 3
expect 0 "public/wide (3 partitions)" "$sluice" topic list
expect 0 '"name":"public/orders","partitions":0' "$sluice" --json topic list public
expect 1 "already exists" "$sluice" topic create public/orders
expect 0 '"topic":"public/wide-partition-2"' "$sluice" --json topic stats public/wide
expect 0 "created billing" "$sluice" namespace create billing
expect 0 '"billing"' "$sluice" --json namespace list
expect 0 '"deduplication":true' "$sluice" --json namespace policies billing --set deduplication=true
expect 0 '"deduplication":true' "$sluice" --json namespace policies billing
expect 1 "unknown key" "$sluice" namespace policies billing --set colour=blue
expect 0 '"bookies":\[{"id":"bookie-0"' "$sluice" --json cluster status
expect 0 '"read_only"' "$sluice" cluster status
expect 0 '"auditor":"metadata-0"' "$sluice" --json cluster status

# Produce: -m, -f, stdin, keys and properties on a partitioned topic.
expect 0 "acked 2" "$sluice" produce public/orders -m one -m two
printf 'file body' >"$dir/body"
expect 0 '"acked":1,"failed":0' "$sluice" --json produce public/orders -f "$dir/body"
seq 100 >"$dir/lines"
"$sluice" produce public/wide -k customer-7 -p source=seq <"$dir/lines" >"$dir/out" 2>&1 ||
  fail "produce from stdin: $(cat "$dir/out")"
grep -q "^acked 100$" "$dir/out" || fail "produce from stdin: $(cat "$dir/out")"
# Terminate: no more producing; a consumer reads everything, then ends.
expect 0 "terminated public/orders" "$sluice" topic terminate public/orders
expect 0 '"terminated":"public/orders","last_ids":\[{"partition":-1,' \
  "$sluice" --json topic terminate public/orders
expect 1 "is terminated" "$sluice" produce public/orders -m three
expect 0 "end of topic" "$sluice" consume public/orders -s eot --from earliest
grep -q "file body" "$dir/out" || fail "consume to the end: $(cat "$dir/out")"
expect 1 "not found" "$sluice" topic terminate public/absent
expect 0 "deleted public/orders" "$sluice" topic delete public/orders
expect 1 "not found" "$sluice" topic stats public/orders

# Help with examples on every command.
for c in "" topic namespace produce consume cluster; do
  expect 0 "example" "$sluice" $c --help
done

# Bad usage.
expect 2 "unknown command frob" "$sluice" frob
expect 2 "unknown option --bogus" "$sluice" topic list --bogus
expect 2 "unknown option --colour" "$sluice" produce public/wide --colour red
expect 2 "needs -s SUBSCRIPTION" "$sluice" consume public/wide
expect 2 "expected exclusive, failover, shared or key_shared" "$sluice" consume public/wide -s s -t fifo
expect 1 "bad name" "$sluice" topic create orders
expect 1 "bad name" "$sluice" produce "public/white space" -m x
expect 1 "not found" "$sluice" consume public/absent -s s1 -n 1
start=$(date +%s)
expect 1 "no answer from a broker at 127.0.0.1:1 within 2 s" \
  "$sluice" --url 127.0.0.1:1 --timeout 2 topic list
[ $(( $(date +%s) - start )) -le 6 ] || fail "unreachable --url took over 6 s"
expect 1 "no answer from a broker" "$sluice" --url 127.0.0.1:1 --timeout 1 produce public/wide -m x
# No raw gRPC code alone: every failure line says what to do.
grep -q "cluster up" "$dir/out" || fail "unreachable: no hint: $(cat "$dir/out")"
echo "1 passed, 0 failed"
