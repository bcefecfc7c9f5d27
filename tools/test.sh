#!/usr/bin/env bash
# Runs the whole Sluice test suite under AddressSanitizer + UBSan, then the
# packages where our own threads share state (common, bookie, metadata,
# broker) under ThreadSanitizer, offline. Ends with one line "N passed, M failed"
# summing Bazel's per-test results over both runs.
#
# Sanitizers slow everything down on a 2-core machine, so wall-clock bounds
# in tests are stretched (common/testing.h): 2x under ASan, 3x under TSan,
# unless SLUICE_TIME_SCALE is already set.
set -uo pipefail
cd "$(dirname "$0")/.."
tools/deps.sh || exit 1

TSAN_TARGETS=(-- //common/... //bookie/... //metadata/... //broker/...)

log=$(mktemp)
trap 'rm -f "$log"' EXIT

# Runs one bazel test invocation (args: scale, then bazel args), appending
# its output to $log; returns bazel's exit code.
run() {
  local scale=$1
  shift
  SLUICE_TIME_SCALE=${SLUICE_TIME_SCALE:-$scale} \
    bazel test --jobs=2 --local_test_jobs=2 "$@" 2>&1 | tee -a "$log"
  return "${PIPESTATUS[0]}"
}

run 2 --config=asan //... "$@"
rc_asan=$?
run 3 --config=tsan "$@" "${TSAN_TARGETS[@]}"
rc_tsan=$?

# Bazel prints one line per test target: "//pkg:name   PASSED in 1.2s".
passed=$(grep -cE '^//[^ ]+ +(\(cached\) )?PASSED' "$log")
failed=$(grep -cE '^//[^ ]+ +(\(cached\) )?(FAILED|TIMEOUT|FLAKY|NO STATUS|INCOMPLETE)' "$log")
for rc in "$rc_asan" "$rc_tsan"; do
  if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
    failed=1  # a build failed: count it, never report a clean run
  fi
done
echo "${passed} passed, ${failed} failed"
[ "$rc_asan" -eq 0 ] && [ "$rc_tsan" -eq 0 ] && [ "$passed" -gt 0 ] && [ "$failed" -eq 0 ]
