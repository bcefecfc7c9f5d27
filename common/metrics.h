/*
 * Prometheus metrics: a registry of counters, gauges and histograms,
 * rendered in the text exposition format 0.0.4 (common/metrics_http.h
 * serves it on GET /metrics).
 *
 * A metric is one time series: a family name, help text and an optional
 * small fixed set of label pairs. Series that share a name form one family
 * (one # HELP / # TYPE block). Register once, keep the handle, update it on
 * the hot path:
 *
 *   static sl_metrics_counter *fsyncs;
 *   static sl_metrics_histogram *fsync_seconds;
 *
 *   // at start-up (thread-safe, idempotent: the same name and labels give
 *   // the same handle, so two journals in one process share a series)
 *   const char *const labels[] = {"disk", "journal", NULL};
 *   sl_status st = sl_metrics_register_counter(
 *       sl_metrics_default(), "sluice_bookie_fsyncs_total",
 *       "journal fdatasync calls", labels, &fsyncs, err);
 *   if (st == SL_OK)
 *     st = sl_metrics_register_histogram(
 *         sl_metrics_default(), "sluice_bookie_fsync_seconds",
 *         "journal fdatasync latency", labels, NULL, 0, &fsync_seconds, err);
 *
 *   // on the hot path: one relaxed atomic each, no lock, no allocation
 *   uint64_t t0 = sl_metrics_now_ns();
 *   fdatasync(fd);
 *   sl_metrics_counter_inc(fsyncs);
 *   sl_metrics_histogram_observe_since(fsync_seconds, t0);
 *
 * A value read only when scraped (a queue depth, free disk) is a callback,
 * sampled under the registry lock at render time; unregister it before
 * whatever `arg` points to goes away:
 *
 *   static double queue_depth(void *arg) { return (double)journal_depth(arg); }
 *   sl_metrics_register_callback(sl_metrics_default(), SL_METRICS_GAUGE,
 *       "sluice_bookie_journal_queue", "adds waiting for a sync", NULL,
 *       queue_depth, j, &j->depth_metric, err);
 *   ...
 *   sl_metrics_unregister_callback(sl_metrics_default(), j->depth_metric);
 *
 * Naming: sluice_<service>_<what>_<unit>, counters end in _total, times are
 * in seconds and sizes in bytes (Prometheus conventions). Label values must
 * come from a small fixed set (method names, status codes), never from
 * requests (topic names, peers): every value is a series kept forever.
 *
 * Threads: everything here is thread-safe. Updates are lock-free atomics;
 * registration and rendering take the registry's lock. Update functions
 * accept a NULL handle and do nothing, so code can run with metrics that
 * failed to register.
 *
 * Consistency: a render reads each atomic once, so a scrape racing with
 * updates may see a histogram's _sum lag its _count by an observation;
 * _count always equals the +Inf bucket.
 */
#ifndef SL_COMMON_METRICS_H
#define SL_COMMON_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

typedef struct sl_metrics sl_metrics;
typedef struct sl_metrics_counter sl_metrics_counter;
typedef struct sl_metrics_gauge sl_metrics_gauge;
typedef struct sl_metrics_histogram sl_metrics_histogram;
typedef struct sl_metrics_callback sl_metrics_callback;

typedef enum sl_metrics_type {
  SL_METRICS_COUNTER = 0,
  SL_METRICS_GAUGE = 1,
  SL_METRICS_HISTOGRAM = 2,
} sl_metrics_type;

/* Most label pairs one series may carry. */
#define SL_METRICS_MAX_LABELS 8
/* Most finite bucket bounds one histogram may have (+Inf is implied). */
#define SL_METRICS_MAX_BUCKETS 32

/* Default histogram bounds, in seconds: 100 us to 10 s (16 bounds). */
extern const double sl_metrics_latency_buckets[];
extern const size_t sl_metrics_n_latency_buckets;

/* ---- registries ---- */

/* The process-wide registry every service renders on /metrics. Created on
 * first use, lives until exit. Thread-safe. */
sl_metrics *sl_metrics_default(void);

/* A private registry (tests, tools). Aborts on out-of-memory. */
sl_metrics *sl_metrics_create(void);
/* Frees the registry and every handle it gave out (no update may run any
 * more). NULL is a no-op. Never destroy sl_metrics_default(). */
void sl_metrics_destroy(sl_metrics *reg);

/* ---- registration ----
 *
 * `name`: [a-zA-Z_:][a-zA-Z0-9_:]*. `help`: any text (escaped on output;
 * the first registration of a family sets it). `labels`: NULL, or label
 * name/value pairs ending with NULL, e.g. {"method", "/a.B/C", NULL}; names
 * are [a-zA-Z_][a-zA-Z0-9_]* and do not start with "__", values are any
 * UTF-8. All strings are copied.
 *
 * Registering the same name and labels again returns the same handle.
 * SL_EINVAL for a bad name, label or bucket list, or for a name already
 * registered with another type (or, for histograms, other buckets).
 * Handles live as long as the registry.
 */
sl_status sl_metrics_register_counter(sl_metrics *reg, const char *name,
                                      const char *help,
                                      const char *const *labels,
                                      sl_metrics_counter **out, sl_err *err);

sl_status sl_metrics_register_gauge(sl_metrics *reg, const char *name,
                                    const char *help, const char *const *labels,
                                    sl_metrics_gauge **out, sl_err *err);

/* `bounds`: n strictly increasing finite upper bounds (a sample lands in
 * the first bucket whose bound is >= it; "le"), at most
 * SL_METRICS_MAX_BUCKETS; NULL picks sl_metrics_latency_buckets. A label
 * named "le" is refused. */
sl_status sl_metrics_register_histogram(sl_metrics *reg, const char *name,
                                        const char *help,
                                        const char *const *labels,
                                        const double *bounds, size_t n,
                                        sl_metrics_histogram **out,
                                        sl_err *err);

/* A counter or gauge (type) whose value is fn(arg), called at each render
 * with the registry lock held (so fn must not call into this registry, and
 * it should be quick). fn and arg are retained until
 * sl_metrics_unregister_callback(). SL_EEXIST if a series with this name
 * and labels exists already. */
sl_status sl_metrics_register_callback(sl_metrics *reg, sl_metrics_type type,
                                       const char *name, const char *help,
                                       const char *const *labels,
                                       double (*fn)(void *arg), void *arg,
                                       sl_metrics_callback **out, sl_err *err);

/* Removes a callback series and frees it. When this returns, fn is not
 * running and will not run again. NULL is a no-op. */
void sl_metrics_unregister_callback(sl_metrics *reg, sl_metrics_callback *cb);

/* Registers process_start_time_seconds, process_cpu_seconds_total,
 * process_resident_memory_bytes, process_virtual_memory_bytes,
 * process_open_fds and process_max_fds, read from /proc/self when scraped
 * (a value that cannot be read renders as NaN). Idempotent. */
sl_status sl_metrics_register_process(sl_metrics *reg, sl_err *err);

/* ---- updates (lock-free; NULL handles are ignored) ---- */

void sl_metrics_counter_inc(sl_metrics_counter *c);
void sl_metrics_counter_add(sl_metrics_counter *c, uint64_t n);

void sl_metrics_gauge_set(sl_metrics_gauge *g, double v);
/* Adds d (negative to decrease). */
void sl_metrics_gauge_add(sl_metrics_gauge *g, double d);

void sl_metrics_histogram_observe(sl_metrics_histogram *h, double v);
/* Observes the seconds elapsed since t0_ns, a sl_metrics_now_ns() value. */
void sl_metrics_histogram_observe_since(sl_metrics_histogram *h, uint64_t t0_ns);

/* Monotonic clock in nanoseconds (for latencies). */
uint64_t sl_metrics_now_ns(void);

/* ---- reading ---- */

/* Current value of one series: a counter's count, a gauge's value, a
 * callback's fn(arg), or a histogram's sample count. SL_ENOTFOUND if no
 * series has this name and labels (labels as for registration). */
sl_status sl_metrics_value(sl_metrics *reg, const char *name,
                           const char *const *labels, double *out);

/* Renders every series in the text exposition format 0.0.4 (families in
 * registration order; a family with no series is left out). Returns a
 * NUL-terminated heap string (caller frees) and its length in *len (may be
 * NULL). Runs callbacks. */
char *sl_metrics_render(sl_metrics *reg, size_t *len);

#endif
