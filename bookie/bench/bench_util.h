/*
 * What both bookie benchmarks share: the clock, latency percentiles, and the
 * raw disk baseline (4 KiB append + fdatasync) they report their adds
 * against, so the two print comparable figures.
 */
#ifndef SL_BOOKIE_BENCH_UTIL_H
#define SL_BOOKIE_BENCH_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* Monotonic clock in nanoseconds. */
int64_t sl_bench_now_ns(void);

/* Sorts v ascending (for sl_bench_pct_ms). */
void sl_bench_sort(int64_t *v, size_t n);

/* The p-quantile (0..1) of sorted nanosecond values, in ms; 0 if n is 0. */
double sl_bench_pct_ms(const int64_t *v, size_t n, double p);

typedef struct sl_bench_raw {
  double per_sec;        /* appends + fdatasyncs per second */
  double p50_ms, p99_ms; /* latency of one append + fdatasync */
} sl_bench_raw;

/* 4 KiB appends to a fresh file in dir, each followed by fdatasync, for
 * `seconds`; the file is removed after. Returns 0, or -1 with a message on
 * stderr. */
int sl_bench_raw_fsync(const char *dir, int seconds, sl_bench_raw *out);

#endif
