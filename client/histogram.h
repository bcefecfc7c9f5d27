/*
 * A latency histogram in the HDR style: log-linear buckets, 64 per power of
 * two above 128 (so any recorded value is within 1.6% of its bucket), exact
 * below 128, covering every int64 value in a fixed 30 KiB. Recording is
 * lock-free (relaxed atomics), so many threads can record into one while
 * another reads; a reader sees each count at least as of its read.
 */
#ifndef SL_CLIENT_HISTOGRAM_H
#define SL_CLIENT_HISTOGRAM_H

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>

#define SL_HIST_BUCKETS (128 + 57 * 64)

typedef struct sl_hist {
  _Atomic uint64_t counts[SL_HIST_BUCKETS];
  _Atomic uint64_t total;
  _Atomic int64_t max;
} sl_hist;

void sl_hist_reset(sl_hist *h);
/* Records one value (negative values count as 0). */
void sl_hist_record(sl_hist *h, int64_t v);
/* Adds every count of `from` into `to`. */
void sl_hist_merge(sl_hist *to, const sl_hist *from);
uint64_t sl_hist_count(const sl_hist *h);
/* The value at quantile q in [0, 1] (a bucket's upper bound, capped by the
 * max seen); 0 when empty. */
int64_t sl_hist_quantile(const sl_hist *h, double q);
int64_t sl_hist_max(const sl_hist *h);
/* CSV: "value_ns,count,cumulative_fraction" per non-empty bucket, with a
 * header line. Returns 0 or -1 on a write error. */
int sl_hist_write_csv(const sl_hist *h, FILE *f);

#endif
