/*
 * What the benchmarks share, so they print comparable figures: the clock,
 * latency percentiles, per-operation CPU and context switches (figures that,
 * unlike ops/s, hold up while other work shares the machine), and the raw
 * disk baseline (4 KiB append + fdatasync) that bookie adds are set against.
 */
#ifndef SL_TOOLS_BENCH_UTIL_H
#define SL_TOOLS_BENCH_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* Monotonic clock in nanoseconds. */
int64_t sl_bench_now_ns(void);

/* Monotonic clock in seconds. */
double sl_bench_now_s(void);

/* Process CPU seconds and context switches so far. */
typedef struct sl_bench_usage {
  double cpu_s;
  long switches;
} sl_bench_usage;

sl_bench_usage sl_bench_usage_now(void);

/* Prints " cpu_us=... switches=...\n": per operation since `since`. */
void sl_bench_usage_print(sl_bench_usage since, double ops);

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
