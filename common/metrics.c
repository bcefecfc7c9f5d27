/*
 * Metrics registry and the text exposition format.
 *
 * Design
 *   A registry is a list of families (name, help, type, histogram bounds),
 *   each a list of series (rendered label text plus the value). Handles
 *   given out are series pointers; their values are atomics that the hot
 *   path updates without the lock. Counters count in a uint64; gauges and
 *   histogram sums keep a double's bits in a uint64 (set is a store, add a
 *   compare-and-swap loop); histograms keep one count per bucket, not
 *   cumulative, so an observation touches one bucket.
 *
 * Invariants
 *   1. Families and value series are never freed before the registry, so a
 *      handle stays valid without a reference count. Only callback series
 *      are unlinked and freed (sl_metrics_unregister_callback), under the
 *      lock.
 *   2. A series' label text is fixed at registration, already escaped, so
 *      a render does no escaping of labels.
 *   3. Callbacks run only under `lock`, so once unregister holds the lock
 *      the callback is not running and cannot start again.
 *   4. A histogram's _count is the sum of its bucket counts as read by the
 *      render, so it always equals the +Inf bucket.
 */
#include "common/metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/buf.h"
#include "common/clock.h"

const double sl_metrics_latency_buckets[] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
    0.05,   0.1,     0.25,   0.5,   1,      2.5,   5,     10,
};
const size_t sl_metrics_n_latency_buckets =
    sizeof(sl_metrics_latency_buckets) / sizeof(sl_metrics_latency_buckets[0]);

typedef struct family family;

typedef struct series {
  struct series *next;
  family *fam;
  char *labels;            /* escaped `a="x",b="y"`, or "" (invariant 2) */
  _Atomic uint64_t value;  /* counter count, or a gauge's double bits */
  _Atomic uint64_t sum;    /* histogram: double bits of the sum */
  _Atomic uint64_t *buckets; /* histogram: fam->n_bounds + 1, last is +Inf */
  double (*fn)(void *);    /* callback series: sampled at render */
  void *arg;
} series;

/* Handles are series; the public types exist only to keep them apart. */
struct sl_metrics_counter { series s; };
struct sl_metrics_gauge { series s; };
struct sl_metrics_histogram { series s; };
struct sl_metrics_callback { series s; };

struct family {
  family *next;
  char *name;
  char *help;
  sl_metrics_type type;
  double *bounds; /* histograms */
  size_t n_bounds;
  series *head, *tail;
};

struct sl_metrics {
  pthread_mutex_t lock; /* guards the family and series lists */
  family *head, *tail;
};

/* ---- doubles in atomics ---- */

static uint64_t dbits(double d) {
  uint64_t u;
  memcpy(&u, &d, sizeof(u));
  return u;
}

static double bitsd(uint64_t u) {
  double d;
  memcpy(&d, &u, sizeof(d));
  return d;
}

static void atomic_add_double(_Atomic uint64_t *slot, double d) {
  uint64_t old = atomic_load_explicit(slot, memory_order_relaxed);
  while (!atomic_compare_exchange_weak_explicit(slot, &old, dbits(bitsd(old) + d),
                                                memory_order_relaxed,
                                                memory_order_relaxed)) {
  }
}

/* ---- registries ---- */

static sl_metrics *default_reg;
static pthread_once_t default_once = PTHREAD_ONCE_INIT;

static void make_default(void) { default_reg = sl_metrics_create(); }

sl_metrics *sl_metrics_default(void) {
  pthread_once(&default_once, make_default);
  return default_reg;
}

sl_metrics *sl_metrics_create(void) {
  sl_metrics *reg = sl_xcalloc(1, sizeof(*reg));
  pthread_mutex_init(&reg->lock, NULL);
  return reg;
}

static void free_series(series *s) {
  free(s->labels);
  free(s->buckets);
  free(s);
}

void sl_metrics_destroy(sl_metrics *reg) {
  if (reg == NULL) return;
  SL_ASSERT(reg != default_reg);
  while (reg->head != NULL) {
    family *f = reg->head;
    reg->head = f->next;
    while (f->head != NULL) {
      series *s = f->head;
      f->head = s->next;
      free_series(s);
    }
    free(f->name);
    free(f->help);
    free(f->bounds);
    free(f);
  }
  pthread_mutex_destroy(&reg->lock);
  free(reg);
}

/* ---- names and labels ---- */

static bool valid_name(const char *s, bool colon_ok) {
  if (s == NULL || *s == '\0') return false;
  for (const char *p = s; *p != '\0'; p++) {
    char c = *p;
    bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                 (colon_ok && c == ':');
    if (!alpha && !(p != s && c >= '0' && c <= '9')) return false;
  }
  return true;
}

/* Appends `s` to buf with the escapes of label values (quote too) or of
 * help text (backslash and newline only). */
static void put_escaped(sl_buf *b, const char *s, bool quote) {
  for (; *s != '\0'; s++) {
    if (*s == '\\')
      sl_buf_append(b, "\\\\", 2);
    else if (*s == '\n')
      sl_buf_append(b, "\\n", 2);
    else if (quote && *s == '"')
      sl_buf_append(b, "\\\"", 2);
    else
      sl_buf_append(b, s, 1);
  }
}

/* Checks `labels` and renders them (invariant 2) into a heap string. */
static sl_status render_labels(const char *name, const char *const *labels,
                               bool histogram, char **out, sl_err *err) {
  sl_buf b = SL_BUF_INIT;
  size_t n = 0;
  *out = NULL;
  for (; labels != NULL && labels[2 * n] != NULL; n++) {
    const char *k = labels[2 * n], *v = labels[2 * n + 1];
    sl_status st = SL_OK;
    if (n == SL_METRICS_MAX_LABELS)
      st = sl_err_set(err, SL_EINVAL, "metric %s: more than %d labels", name,
                      SL_METRICS_MAX_LABELS);
    else if (!valid_name(k, false) || strncmp(k, "__", 2) == 0)
      st = sl_err_set(err, SL_EINVAL, "metric %s: bad label name '%s'", name, k);
    else if (histogram && strcmp(k, "le") == 0)
      st = sl_err_set(err, SL_EINVAL, "metric %s: histograms cannot have a label le",
                      name);
    else if (v == NULL)
      st = sl_err_set(err, SL_EINVAL, "metric %s: label %s has no value", name, k);
    for (size_t i = 0; st == SL_OK && i < n; i++)
      if (strcmp(labels[2 * i], k) == 0)
        st = sl_err_set(err, SL_EINVAL, "metric %s: label %s given twice", name, k);
    if (st != SL_OK) {
      sl_buf_release(&b);
      return st;
    }
    sl_buf_appendf(&b, "%s%s=\"", n > 0 ? "," : "", k);
    put_escaped(&b, v, true);
    sl_buf_append(&b, "\"", 1);
  }
  *out = sl_buf_detach_str(&b);
  return SL_OK;
}

/* ---- registration ---- */

static const char *const type_names[] = {"counter", "gauge", "histogram"};

/* Finds or adds the family `name`; lock held. */
static sl_status get_family(sl_metrics *reg, const char *name, const char *help,
                            sl_metrics_type type, const double *bounds, size_t n,
                            family **out, sl_err *err) {
  family *f = reg->head;
  while (f != NULL && strcmp(f->name, name) != 0) f = f->next;
  if (f != NULL) {
    if (f->type != type)
      return sl_err_set(err, SL_EINVAL, "metric %s: registered as a %s, not a %s", name,
                        type_names[f->type], type_names[type]);
    if (type == SL_METRICS_HISTOGRAM &&
        (f->n_bounds != n || memcmp(f->bounds, bounds, n * sizeof(double)) != 0))
      return sl_err_set(err, SL_EINVAL, "metric %s: registered with other buckets", name);
    *out = f;
    return SL_OK;
  }
  f = sl_xcalloc(1, sizeof(*f));
  f->name = sl_xstrdup(name);
  f->help = sl_xstrdup(help != NULL ? help : "");
  f->type = type;
  if (type == SL_METRICS_HISTOGRAM) {
    f->bounds = sl_xmalloc(n * sizeof(double));
    memcpy(f->bounds, bounds, n * sizeof(double));
    f->n_bounds = n;
  }
  if (reg->tail != NULL)
    reg->tail->next = f;
  else
    reg->head = f;
  reg->tail = f;
  *out = f;
  return SL_OK;
}

static series *find_series(family *f, const char *labels) {
  for (series *s = f->head; s != NULL; s = s->next)
    if (strcmp(s->labels, labels) == 0) return s;
  return NULL;
}

static void append_series(family *f, series *s) {
  s->fam = f;
  if (f->tail != NULL)
    f->tail->next = s;
  else
    f->head = s;
  f->tail = s;
}

/* The one registration path: checks, then finds or creates the series.
 * fn != NULL asks for a new callback series. */
static sl_status reg_series(sl_metrics *reg, sl_metrics_type type, const char *name,
                            const char *help, const char *const *labels,
                            const double *bounds, size_t n, double (*fn)(void *),
                            void *arg, series **out, sl_err *err) {
  char *lt = NULL;
  family *f = NULL;
  *out = NULL;
  if (!valid_name(name, true))
    return sl_err_set(err, SL_EINVAL, "metric '%s': bad name", name ? name : "(null)");
  sl_status st = render_labels(name, labels, type == SL_METRICS_HISTOGRAM, &lt, err);
  if (st != SL_OK) return st;
  pthread_mutex_lock(&reg->lock);
  st = get_family(reg, name, help, type, bounds, n, &f, err);
  if (st != SL_OK) goto out;
  series *s = find_series(f, lt);
  if (s != NULL && (fn != NULL || s->fn != NULL)) {
    st = sl_err_set(err, fn != NULL ? SL_EEXIST : SL_EINVAL,
                    "metric %s{%s}: already registered%s", name, lt,
                    fn != NULL ? "" : " as a callback");
    goto out;
  }
  if (s == NULL) {
    s = sl_xcalloc(1, sizeof(*s));
    s->labels = lt;
    lt = NULL;
    s->fn = fn;
    s->arg = arg;
    if (type == SL_METRICS_HISTOGRAM) s->buckets = sl_xcalloc(n + 1, sizeof(*s->buckets));
    append_series(f, s);
  }
  *out = s;
out:
  pthread_mutex_unlock(&reg->lock);
  free(lt);
  return st;
}

sl_status sl_metrics_register_counter(sl_metrics *reg, const char *name, const char *help,
                                      const char *const *labels, sl_metrics_counter **out,
                                      sl_err *err) {
  series *s;
  sl_status st = reg_series(reg, SL_METRICS_COUNTER, name, help, labels, NULL, 0, NULL, NULL,
                            &s, err);
  *out = (sl_metrics_counter *)s;
  return st;
}

sl_status sl_metrics_register_gauge(sl_metrics *reg, const char *name, const char *help,
                                    const char *const *labels, sl_metrics_gauge **out,
                                    sl_err *err) {
  series *s;
  sl_status st = reg_series(reg, SL_METRICS_GAUGE, name, help, labels, NULL, 0, NULL, NULL,
                            &s, err);
  *out = (sl_metrics_gauge *)s;
  return st;
}

static sl_status check_bounds(const char *name, const double *b, size_t n, sl_err *err) {
  if (n == 0 || n > SL_METRICS_MAX_BUCKETS)
    return sl_err_set(err, SL_EINVAL, "metric %s: %zu buckets, want 1 to %d", name, n,
                      SL_METRICS_MAX_BUCKETS);
  for (size_t i = 0; i < n; i++) {
    if (!isfinite(b[i]))
      return sl_err_set(err, SL_EINVAL, "metric %s: bucket %zu is not finite", name, i);
    if (i > 0 && !(b[i] > b[i - 1]))
      return sl_err_set(err, SL_EINVAL, "metric %s: buckets not strictly increasing", name);
  }
  return SL_OK;
}

sl_status sl_metrics_register_histogram(sl_metrics *reg, const char *name, const char *help,
                                        const char *const *labels, const double *bounds,
                                        size_t n, sl_metrics_histogram **out, sl_err *err) {
  series *s = NULL;
  if (bounds == NULL) {
    bounds = sl_metrics_latency_buckets;
    n = sl_metrics_n_latency_buckets;
  }
  sl_status st = check_bounds(name ? name : "(null)", bounds, n, err);
  if (st == SL_OK)
    st = reg_series(reg, SL_METRICS_HISTOGRAM, name, help, labels, bounds, n, NULL, NULL, &s,
                    err);
  *out = (sl_metrics_histogram *)s;
  return st;
}

sl_status sl_metrics_register_callback(sl_metrics *reg, sl_metrics_type type,
                                       const char *name, const char *help,
                                       const char *const *labels, double (*fn)(void *arg),
                                       void *arg, sl_metrics_callback **out, sl_err *err) {
  series *s = NULL;
  *out = NULL;
  if (type != SL_METRICS_COUNTER && type != SL_METRICS_GAUGE)
    return sl_err_set(err, SL_EINVAL, "metric %s: a callback is a counter or a gauge",
                      name ? name : "(null)");
  if (fn == NULL)
    return sl_err_set(err, SL_EINVAL, "metric %s: no callback", name ? name : "(null)");
  sl_status st = reg_series(reg, type, name, help, labels, NULL, 0, fn, arg, &s, err);
  *out = (sl_metrics_callback *)s;
  return st;
}

void sl_metrics_unregister_callback(sl_metrics *reg, sl_metrics_callback *cb) {
  if (cb == NULL) return;
  series *target = &cb->s;
  SL_ASSERT(target->fn != NULL);
  pthread_mutex_lock(&reg->lock); /* invariant 3 */
  family *f = target->fam;
  series *prev = NULL;
  for (series *s = f->head; s != NULL; prev = s, s = s->next) {
    if (s != target) continue;
    if (prev != NULL)
      prev->next = s->next;
    else
      f->head = s->next;
    if (f->tail == s) f->tail = prev;
    break;
  }
  pthread_mutex_unlock(&reg->lock);
  free_series(target);
}

/* ---- updates ---- */

void sl_metrics_counter_inc(sl_metrics_counter *c) {
  if (c != NULL) atomic_fetch_add_explicit(&c->s.value, 1, memory_order_relaxed);
}

void sl_metrics_counter_add(sl_metrics_counter *c, uint64_t n) {
  if (c != NULL) atomic_fetch_add_explicit(&c->s.value, n, memory_order_relaxed);
}

void sl_metrics_gauge_set(sl_metrics_gauge *g, double v) {
  if (g != NULL) atomic_store_explicit(&g->s.value, dbits(v), memory_order_relaxed);
}

void sl_metrics_gauge_add(sl_metrics_gauge *g, double d) {
  if (g != NULL) atomic_add_double(&g->s.value, d);
}

void sl_metrics_histogram_observe(sl_metrics_histogram *h, double v) {
  if (h == NULL) return;
  const family *f = h->s.fam;
  /* First bound >= v; NaN compares false everywhere and lands in +Inf. */
  size_t lo = 0, hi = f->n_bounds;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (v <= f->bounds[mid])
      hi = mid;
    else if (v > f->bounds[mid])
      lo = mid + 1;
    else
      lo = hi = f->n_bounds; /* NaN */
  }
  atomic_fetch_add_explicit(&h->s.buckets[lo], 1, memory_order_relaxed);
  atomic_add_double(&h->s.sum, v);
}

uint64_t sl_metrics_now_ns(void) { return (uint64_t)sl_clock_mono_ns(); }

void sl_metrics_histogram_observe_since(sl_metrics_histogram *h, uint64_t t0_ns) {
  if (h == NULL) return;
  uint64_t now = sl_metrics_now_ns();
  sl_metrics_histogram_observe(h, now > t0_ns ? (double)(now - t0_ns) / 1e9 : 0.0);
}

/* ---- reading ---- */

/* A counter or gauge series' value; lock held (callbacks). */
static double scalar_value(const series *s) {
  if (s->fn != NULL) return s->fn(s->arg);
  uint64_t u = atomic_load_explicit(&s->value, memory_order_relaxed);
  return s->fam->type == SL_METRICS_COUNTER ? (double)u : bitsd(u);
}

static uint64_t hist_count(const series *s) {
  uint64_t n = 0;
  for (size_t i = 0; i <= s->fam->n_bounds; i++)
    n += atomic_load_explicit(&s->buckets[i], memory_order_relaxed);
  return n;
}

sl_status sl_metrics_value(sl_metrics *reg, const char *name, const char *const *labels,
                           double *out) {
  char *lt = NULL;
  sl_status st = SL_ENOTFOUND;
  if (name == NULL || render_labels(name, labels, false, &lt, NULL) != SL_OK)
    return SL_ENOTFOUND;
  pthread_mutex_lock(&reg->lock);
  for (family *f = reg->head; f != NULL; f = f->next) {
    if (strcmp(f->name, name) != 0) continue;
    series *s = find_series(f, lt);
    if (s != NULL) {
      *out = f->type == SL_METRICS_HISTOGRAM ? (double)hist_count(s) : scalar_value(s);
      st = SL_OK;
    }
    break;
  }
  pthread_mutex_unlock(&reg->lock);
  free(lt);
  return st;
}

/* Shortest of %.15g / %.17g that reads back as v, or Prometheus's
 * spellings of the special values; into tmp (32 bytes). */
static const char *fmt_double(char *tmp, double v) {
  if (isnan(v)) return "NaN";
  if (isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  snprintf(tmp, 32, "%.15g", v);
  if (strtod(tmp, NULL) != v) snprintf(tmp, 32, "%.17g", v);
  return tmp;
}

/* `name{labels}` or `name{labels,extra}`, or plain `name`. */
static void put_sample_name(sl_buf *b, const char *name, const char *suffix,
                            const char *labels, const char *extra) {
  sl_buf_appendf(b, "%s%s", name, suffix);
  if (labels[0] == '\0' && extra == NULL) return;
  sl_buf_appendf(b, "{%s%s%s}", labels, labels[0] != '\0' && extra ? "," : "",
                        extra ? extra : "");
}

static void render_histogram(sl_buf *b, const family *f, const series *s) {
  uint64_t cum = 0;
  char le[48], tmp[32];
  for (size_t i = 0; i <= f->n_bounds; i++) {
    cum += atomic_load_explicit(&s->buckets[i], memory_order_relaxed);
    snprintf(le, sizeof(le), "le=\"%s\"",
             i < f->n_bounds ? fmt_double(tmp, f->bounds[i]) : "+Inf");
    put_sample_name(b, f->name, "_bucket", s->labels, le);
    sl_buf_appendf(b, " %llu\n", (unsigned long long)cum);
  }
  put_sample_name(b, f->name, "_sum", s->labels, NULL);
  sl_buf_appendf(b, " %s\n",
             fmt_double(tmp, bitsd(atomic_load_explicit(&s->sum, memory_order_relaxed))));
  put_sample_name(b, f->name, "_count", s->labels, NULL);
  sl_buf_appendf(b, " %llu\n", (unsigned long long)cum); /* invariant 4 */
}

static void render_family(sl_buf *b, const family *f) {
  if (f->head == NULL) return;
  sl_buf_appendf(b, "# HELP %s ", f->name);
  put_escaped(b, f->help, false);
  sl_buf_appendf(b, "\n# TYPE %s %s\n", f->name, type_names[f->type]);
  for (const series *s = f->head; s != NULL; s = s->next) {
    if (f->type == SL_METRICS_HISTOGRAM) {
      render_histogram(b, f, s);
      continue;
    }
    put_sample_name(b, f->name, "", s->labels, NULL);
    if (f->type == SL_METRICS_COUNTER && s->fn == NULL) {
      sl_buf_appendf(
          b, " %llu\n", (unsigned long long)atomic_load_explicit(&s->value, memory_order_relaxed));
    } else {
      char tmp[32];
      sl_buf_appendf(b, " %s\n", fmt_double(tmp, scalar_value(s)));
    }
  }
}

char *sl_metrics_render(sl_metrics *reg, size_t *len) {
  sl_buf b = SL_BUF_INIT;
  pthread_mutex_lock(&reg->lock);
  for (const family *f = reg->head; f != NULL; f = f->next) render_family(&b, f);
  pthread_mutex_unlock(&reg->lock);
  if (len != NULL) *len = b.len;
  return sl_buf_detach_str(&b);
}
