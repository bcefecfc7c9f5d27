/* HDR-style latency histogram: see histogram.h. */
#include "client/histogram.h"


static int bucket_of(int64_t v) {
  if (v < 128) return v < 0 ? 0 : (int)v;
  int shift = (63 - __builtin_clzll((uint64_t)v)) - 6;
  return 128 + (shift - 1) * 64 + (int)(((uint64_t)v >> shift) - 64);
}

/* The largest value that falls into bucket i. */
static int64_t bucket_top(int i) {
  if (i < 128) return i;
  int shift = (i - 128) / 64 + 1;
  uint64_t lo = (uint64_t)((i - 128) % 64 + 64) << shift;
  return (int64_t)(lo + ((uint64_t)1 << shift) - 1);
}

void sl_hist_reset(sl_hist *h) {
  for (int i = 0; i < SL_HIST_BUCKETS; i++) atomic_store_explicit(&h->counts[i], 0, memory_order_relaxed);
  atomic_store(&h->total, 0);
  atomic_store(&h->max, 0);
}

void sl_hist_record(sl_hist *h, int64_t v) {
  if (v < 0) v = 0;
  atomic_fetch_add_explicit(&h->counts[bucket_of(v)], 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&h->total, 1, memory_order_relaxed);
  int64_t m = atomic_load_explicit(&h->max, memory_order_relaxed);
  while (v > m && !atomic_compare_exchange_weak(&h->max, &m, v)) {
  }
}

void sl_hist_merge(sl_hist *to, const sl_hist *from) {
  for (int i = 0; i < SL_HIST_BUCKETS; i++) {
    uint64_t n = atomic_load_explicit(&from->counts[i], memory_order_relaxed);
    if (n) atomic_fetch_add_explicit(&to->counts[i], n, memory_order_relaxed);
  }
  atomic_fetch_add(&to->total, atomic_load(&from->total));
  int64_t v = atomic_load(&from->max), m = atomic_load(&to->max);
  while (v > m && !atomic_compare_exchange_weak(&to->max, &m, v)) {
  }
}

uint64_t sl_hist_count(const sl_hist *h) { return atomic_load(&h->total); }
int64_t sl_hist_max(const sl_hist *h) { return atomic_load(&h->max); }

int64_t sl_hist_quantile(const sl_hist *h, double q) {
  uint64_t total = 0;
  for (int i = 0; i < SL_HIST_BUCKETS; i++) total += atomic_load_explicit(&h->counts[i], memory_order_relaxed);
  if (total == 0) return 0;
  uint64_t want = (uint64_t)(q * (double)total + 0.5);
  if (want < 1) want = 1;
  if (want > total) want = total;
  uint64_t seen = 0;
  int64_t max = sl_hist_max(h);
  for (int i = 0; i < SL_HIST_BUCKETS; i++) {
    seen += atomic_load_explicit(&h->counts[i], memory_order_relaxed);
    if (seen >= want) return bucket_top(i) < max ? bucket_top(i) : max;
  }
  return max;
}

int sl_hist_write_csv(const sl_hist *h, FILE *f) {
  uint64_t total = 0, seen = 0;
  for (int i = 0; i < SL_HIST_BUCKETS; i++) total += atomic_load(&h->counts[i]);
  if (fprintf(f, "value_ns,count,cumulative_fraction\n") < 0) return -1;
  for (int i = 0; i < SL_HIST_BUCKETS; i++) {
    uint64_t n = atomic_load(&h->counts[i]);
    if (n == 0) continue;
    seen += n;
    if (fprintf(f, "%lld,%llu,%.6f\n", (long long)bucket_top(i), (unsigned long long)n,
                (double)seen / (double)total) < 0)
      return -1;
  }
  return 0;
}
