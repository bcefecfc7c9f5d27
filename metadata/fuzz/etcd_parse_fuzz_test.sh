#!/bin/sh
# Builds the etcd JSON parser fuzz target with clang and libFuzzer, then
# fuzzes for a bounded time (FUZZ_SECONDS, default 20). Fails on any crash,
# sanitizer report, leak or timeout.
set -eu
cd "${TEST_SRCDIR:?}/${TEST_WORKSPACE:-sluice}"
out="${TEST_TMPDIR:?}/fuzz"
mkdir -p "$out/corpus"
clang -std=c11 -D_GNU_SOURCE -g -O1 -I. \
  -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
  metadata/fuzz/etcd_parse_fuzz.c metadata/etcd_json.c common/status.c \
  -lcjson -o "$out/etcd_parse_fuzz"
# A fresh, writable corpus seeded from the checked-in one.
cp metadata/fuzz/corpus/* "$out/corpus/"
# The suite's ASAN_OPTIONS (e.g. from --config=asan) may name a
# suppressions file that only exists in the source tree; libFuzzer sets
# what it needs itself.
unset ASAN_OPTIONS UBSAN_OPTIONS LSAN_OPTIONS
"$out/etcd_parse_fuzz" -max_total_time="${FUZZ_SECONDS:-20}" -timeout=5 \
  -rss_limit_mb=2048 -max_len=4096 -print_final_stats=1 \
  -dict=metadata/fuzz/etcd_json.dict \
  -artifact_prefix="${TEST_UNDECLARED_OUTPUTS_DIR:-$out}/" \
  "$out/corpus"
