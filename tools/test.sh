#!/usr/bin/env bash
# Runs the whole Sluice test suite under AddressSanitizer + UBSan, offline.
# Ends with one line "N passed, M failed" taken from Bazel's per-test results.
set -uo pipefail
cd "$(dirname "$0")/.."
tools/deps.sh || exit 1

log=$(mktemp)
trap 'rm -f "$log"' EXIT
bazel test --config=asan --jobs=2 --local_test_jobs=2 //... "$@" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}

# Bazel prints one line per test target: "//pkg:name   PASSED in 1.2s".
passed=$(grep -cE '^//[^ ]+ +(\(cached\) )?PASSED' "$log")
failed=$(grep -cE '^//[^ ]+ +(\(cached\) )?(FAILED|TIMEOUT|FLAKY|NO STATUS|INCOMPLETE)' "$log")
if [ "$rc" -ne 0 ] && [ "$failed" -eq 0 ]; then
  failed=1  # the build itself failed: count it, never report a clean run
fi
echo "${passed} passed, ${failed} failed"
[ "$rc" -eq 0 ] && [ "$passed" -gt 0 ] && [ "$failed" -eq 0 ]
