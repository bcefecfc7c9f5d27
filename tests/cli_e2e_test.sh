#!/usr/bin/env bash
# End to end through the command line (issue 11): create a topic, produce
# 10,000 lines from stdin, consume them with -n 10000 and get exactly those
# lines in order, and nothing comes again once they are acked; --json
# output; then `sluice-perf e2e` for a few seconds: every acked message is
# received (the count, not the speed, is checked).
set -euo pipefail
run="$TEST_SRCDIR/sluice"
sluice="$run/client/sluice"
dir="$TEST_TMPDIR/cli_e2e"
fail() { echo "FAIL: $*" >&2; exit 1; }
mkdir -p "$dir"
"$run/tests/sluice-cluster" --dir "$dir" --metadata 1 --bookies 3 --brokers 2 \
  >"$dir/cluster.out" 2>&1 &
pid=$!
trap '"$run/tests/sluice-cluster" --dir "$dir" --command down >/dev/null 2>&1 || kill -9 $pid' EXIT
for _ in $(seq 600); do [ -s "$dir/url" ] && break; kill -0 $pid || fail "cluster exited"; sleep 0.1; done
[ -s "$dir/url" ] || fail "cluster: no url"
export SLUICE_URL=$(cat "$dir/url")

"$sluice" topic create public/lines >/dev/null || fail "topic create"
seq -f "line %g" 10000 >"$dir/in"
"$sluice" produce public/lines <"$dir/in" >"$dir/produced" || fail "produce: $(cat "$dir/produced")"
grep -q "^acked 10000$" "$dir/produced" || fail "produce: $(cat "$dir/produced")"
"$sluice" --timeout 30 consume public/lines -s check -n 10000 --from earliest >"$dir/out" ||
  fail "consume exited non-zero"
cmp "$dir/in" "$dir/out" || fail "consumed lines differ from the produced ones"
# Acked after printing: the subscription has nothing left.
if "$sluice" --timeout 2 consume public/lines -s check -n 1 >"$dir/again" 2>/dev/null; then
  fail "a message came again after all were acked: $(cat "$dir/again")"
fi

# --json: one JSON line per message with its id, key, properties, publish
# time, redelivery count and payload (escaped).
"$sluice" topic create public/json >/dev/null || fail "topic create public/json"
"$sluice" produce public/json -k kk -p a=b -m 'say "hi"' >/dev/null || fail "produce public/json"
"$sluice" --json --timeout 30 consume public/json -s j -n 1 --from earliest >"$dir/json" ||
  fail "consume --json: $(cat "$dir/json")"
python3 - "$dir/json" <<'PY' || fail "consume --json: $(cat "$dir/json")"
import json, sys
lines = open(sys.argv[1]).read().splitlines()
assert len(lines) == 1, lines
m = json.loads(lines[0])
assert m["payload"] == 'say "hi"' and m["key"] == "kk" and m["properties"] == {"a": "b"}, m
assert m["redelivery_count"] == 0 and m["publish_time_ms"] > 0 and m["id"], m
PY

"$run/client/sluice-perf" e2e public/perf --partitions 2 --duration 3 --rate 500 --json \
  --batch-delay-us 200 >"$dir/perf" 2>"$dir/perf.live" || fail "sluice-perf e2e: $(cat "$dir/perf" "$dir/perf.live")"
python3 - "$dir/perf" <<'PY' || fail "sluice-perf summary: $(cat "$dir/perf")"
import json, sys
s = json.load(open(sys.argv[1]))
assert s["acked"] > 100, s
assert s["received"] == s["acked"] and s["failed"] == 0, s
assert 0 < s["latency_ms"]["p50"] <= s["latency_ms"]["p99"] <= s["latency_ms"]["max"], s
h = s["host_cpu"]
assert h["cpus"] >= 1, s
assert all(0 <= h[k] <= 100 for k in ("busy_pct", "idle_pct", "steal_pct")), s
assert abs(h["busy_pct"] + h["idle_pct"] + h["steal_pct"] - 100) < 0.5, s
assert s["pace_us"] == 1000, s
PY
# Senders that wake every 100 ms: a message waits for the wakeup after its
# due time, about 50 ms on average, and that wait must be in its latency.
"$run/client/sluice-perf" e2e public/perf --duration 2 --rate 200 --pace-us 100000 --json \
  >"$dir/paced" 2>"$dir/paced.live" || fail "paced e2e: $(cat "$dir/paced" "$dir/paced.live")"
python3 - "$dir/paced" <<'PY' || fail "paced e2e summary: $(cat "$dir/paced")"
import json, sys
s = json.load(open(sys.argv[1]))
assert s["pace_us"] == 100000 and s["received"] == s["acked"] > 100, s
assert s["latency_ms"]["p50"] >= 25, s
PY
[ "$(grep -c 'msgs/s' "$dir/perf.live")" -ge 2 ] || fail "no live lines: $(cat "$dir/perf.live")"
rc=0
"$run/client/sluice-perf" produce public/perf --batch-delay-us 5 2>"$dir/usage" || rc=$?
[ "$rc" -eq 2 ] && grep -q -- "--batch-delay-us is for e2e" "$dir/usage" \
  || fail "--batch-delay-us on produce: rc=$rc $(cat "$dir/usage")"
rc=0
"$run/client/sluice-perf" e2e public/perf --pace-us 500 2>"$dir/usage" || rc=$?
[ "$rc" -eq 2 ] && grep -q -- "--pace-us is for e2e at a fixed --rate" "$dir/usage" \
  || fail "--pace-us without --rate: rc=$rc $(cat "$dir/usage")"
echo "1 passed, 0 failed"
