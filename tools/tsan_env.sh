#!/bin/sh
# Runs one test binary with tools/tsan.supp as its TSan suppressions
# (.bazelrc's --config=tsan puts this in front of every test with
# --run_under). TSan reads the file at start-up, so it needs an absolute
# path, which .bazelrc cannot spell; the runfiles link to this script
# leads back to the source tree, where tsan.supp sits next to it.
here=$(dirname "$(readlink -f "$0")")
if [ ! -r "$here/tsan.supp" ]; then
  echo "tsan_env: $here/tsan.supp not found" >&2
  exit 2
fi
TSAN_OPTIONS="suppressions=$here/tsan.supp${TSAN_OPTIONS:+:$TSAN_OPTIONS}"
export TSAN_OPTIONS
exec "$@"
