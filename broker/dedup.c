/* Producer deduplication: see dedup.h. */
#include "broker/dedup.h"
#include "common/status.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Consecutive sequence ids stored at consecutive batch indexes of one
 * entry: first_seq at (ledger, entry, first_batch). */
typedef struct run {
  uint64_t first_seq;
  uint64_t last_seq;
  sl_dedup_id first_id;
} run;

typedef struct producer {
  char *name;
  bool has_stored;     /* `stored` is meaningful */
  uint64_t stored;     /* highest durable sequence */
  bool has_pushed;
  uint64_t pushed;     /* highest sequence handed to the ledger */
  uint64_t tick;       /* dedup->tick at the last store: recency for snapshots */
  run *runs;           /* ring of ring_runs */
  size_t n_runs;       /* valid runs, newest at (head + n_runs - 1) % cap */
  size_t head;         /* oldest run */
  struct producer *next; /* hash chain */
} producer;

struct sl_dedup {
  producer **buckets;
  size_t n_buckets; /* power of two */
  size_t count;
  size_t ring_runs;
  uint64_t tick;
};

static uint64_t hash(const char *s) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  for (; *s != '\0'; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
  return h;
}

sl_dedup *sl_dedup_create(size_t ring_runs) {
  sl_dedup *d = sl_xcalloc(1, sizeof(*d));
  d->n_buckets = 64;
  d->buckets = sl_xcalloc(d->n_buckets, sizeof(*d->buckets));
  d->ring_runs = ring_runs == 0 ? 64 : ring_runs;
  return d;
}

static void producer_free(producer *p) {
  free(p->name);
  free(p->runs);
  free(p);
}

void sl_dedup_clear(sl_dedup *d) {
  for (size_t i = 0; i < d->n_buckets; i++) {
    producer *p = d->buckets[i];
    while (p != NULL) {
      producer *next = p->next;
      producer_free(p);
      p = next;
    }
    d->buckets[i] = NULL;
  }
  d->count = 0;
}

void sl_dedup_destroy(sl_dedup *d) {
  if (d == NULL) return;
  sl_dedup_clear(d);
  free(d->buckets);
  free(d);
}

static producer *find(const sl_dedup *d, const char *name) {
  producer *p = d->buckets[hash(name) & (d->n_buckets - 1)];
  while (p != NULL && strcmp(p->name, name) != 0) p = p->next;
  return p;
}

static void grow(sl_dedup *d) {
  size_t n = d->n_buckets * 2;
  producer **b = sl_xcalloc(n, sizeof(*b));
  for (size_t i = 0; i < d->n_buckets; i++) {
    producer *p = d->buckets[i];
    while (p != NULL) {
      producer *next = p->next;
      size_t k = hash(p->name) & (n - 1);
      p->next = b[k];
      b[k] = p;
      p = next;
    }
  }
  free(d->buckets);
  d->buckets = b;
  d->n_buckets = n;
}

static producer *find_or_add(sl_dedup *d, const char *name) {
  producer *p = find(d, name);
  if (p != NULL) return p;
  if (d->count >= d->n_buckets) grow(d);
  p = sl_xcalloc(1, sizeof(*p));
  p->name = sl_xstrdup(name);
  p->runs = sl_xcalloc(d->ring_runs, sizeof(*p->runs));
  size_t k = hash(name) & (d->n_buckets - 1);
  p->next = d->buckets[k];
  d->buckets[k] = p;
  d->count++;
  return p;
}

static run *newest_run(const sl_dedup *d, const producer *p) {
  if (p->n_runs == 0) return NULL;
  return &p->runs[(p->head + p->n_runs - 1) % d->ring_runs];
}

sl_dedup_verdict sl_dedup_check(const sl_dedup *d, const char *producer_name,
                                uint64_t seq, sl_dedup_id *orig,
                                bool *orig_known) {
  if (orig != NULL) memset(orig, 0, sizeof(*orig));
  if (orig_known != NULL) *orig_known = false;
  const producer *p = find(d, producer_name);
  if (p == NULL || !p->has_pushed || seq > p->pushed) return SL_DEDUP_NEW;
  if (!p->has_stored || seq > p->stored) return SL_DEDUP_IN_FLIGHT;
  /* Newest first: resends are usually of the last few messages. */
  for (size_t i = p->n_runs; i-- > 0;) {
    const run *r = &p->runs[(p->head + i) % d->ring_runs];
    if (seq < r->first_seq || seq > r->last_seq) continue;
    if (orig != NULL) {
      *orig = r->first_id;
      orig->batch_index += (int32_t)(seq - r->first_seq);
    }
    if (orig_known != NULL) *orig_known = true;
    break;
  }
  return SL_DEDUP_STORED;
}

void sl_dedup_push(sl_dedup *d, const char *producer_name, uint64_t seq) {
  producer *p = find_or_add(d, producer_name);
  if (!p->has_pushed || seq > p->pushed) p->pushed = seq;
  p->has_pushed = true;
}

static bool extends(const run *r, uint64_t seq, sl_dedup_id id) {
  return seq == r->last_seq + 1 && id.ledger_id == r->first_id.ledger_id &&
         id.entry_id == r->first_id.entry_id &&
         (int64_t)id.batch_index ==
             (int64_t)r->first_id.batch_index + (int64_t)(seq - r->first_seq);
}

void sl_dedup_stored(sl_dedup *d, const char *producer_name, uint64_t seq,
                     sl_dedup_id id) {
  producer *p = find_or_add(d, producer_name);
  p->tick = ++d->tick;
  if (p->has_stored && seq <= p->stored) return; /* replayed twice: harmless */
  p->stored = seq;
  p->has_stored = true;
  if (!p->has_pushed || seq > p->pushed) p->pushed = seq;
  p->has_pushed = true;
  run *last = newest_run(d, p);
  if (last != NULL && extends(last, seq, id)) {
    last->last_seq = seq;
    return;
  }
  if (p->n_runs == d->ring_runs) {
    p->head = (p->head + 1) % d->ring_runs;
    p->n_runs--;
  }
  run *r = &p->runs[(p->head + p->n_runs) % d->ring_runs];
  p->n_runs++;
  r->first_seq = r->last_seq = seq;
  r->first_id = id;
}

void sl_dedup_failed(sl_dedup *d, const char *producer_name) {
  producer *p = find(d, producer_name);
  if (p == NULL) return;
  p->has_pushed = p->has_stored;
  p->pushed = p->stored;
}

bool sl_dedup_last(const sl_dedup *d, const char *producer_name, uint64_t *seq,
                   sl_dedup_id *id, bool *id_known) {
  const producer *p = find(d, producer_name);
  if (id != NULL) memset(id, 0, sizeof(*id));
  if (id_known != NULL) *id_known = false;
  if (p == NULL || !p->has_stored) return false;
  *seq = p->stored;
  const run *r = newest_run(d, p);
  if (r != NULL && r->last_seq == p->stored) {
    if (id != NULL) {
      *id = r->first_id;
      id->batch_index += (int32_t)(r->last_seq - r->first_seq);
    }
    if (id_known != NULL) *id_known = true;
  }
  return true;
}

size_t sl_dedup_count(const sl_dedup *d) { return d->count; }

/* ---- snapshot ---- */

static int by_recency(const void *a, const void *b) {
  const producer *pa = *(producer *const *)a, *pb = *(producer *const *)b;
  return pa->tick < pb->tick ? 1 : pa->tick > pb->tick ? -1 : 0;
}

static char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
static char *fmt(const char *f, ...) {
  va_list ap;
  va_start(ap, f);
  int n = vsnprintf(NULL, 0, f, ap);
  va_end(ap);
  char *s = sl_xcalloc(1, (size_t)n + 1);
  va_start(ap, f);
  vsnprintf(s, (size_t)n + 1, f, ap);
  va_end(ap);
  return s;
}

void sl_dedup_snapshot(const sl_dedup *d, uint64_t at_ledger, int64_t at_entry,
                       size_t max_bytes, size_t max_props, sl_dedup_prop **out,
                       size_t *n_out, size_t *dropped) {
  producer **all = sl_xcalloc(d->count + 1, sizeof(*all));
  size_t n_all = 0;
  for (size_t i = 0; i < d->n_buckets; i++)
    for (producer *p = d->buckets[i]; p != NULL; p = p->next)
      if (p->has_stored) all[n_all++] = p;
  qsort(all, n_all, sizeof(*all), by_recency);

  sl_dedup_prop *props = sl_xcalloc(n_all + 1, sizeof(*props));
  size_t n = 0;
  props[n].key = sl_xstrdup(SL_DEDUP_PROP_AT);
  props[n].value = fmt("%" PRIu64 " %" PRId64, at_ledger, at_entry);
  size_t bytes = strlen(props[n].key) + strlen(props[n].value);
  n++;
  size_t skipped = 0;
  for (size_t i = 0; i < n_all; i++) {
    const producer *p = all[i];
    sl_dedup_id id;
    bool known;
    uint64_t seq;
    sl_dedup_last(d, p->name, &seq, &id, &known);
    char *key = fmt(SL_DEDUP_PROP_PREFIX "%s", p->name);
    char *value = known ? fmt("%" PRIu64 " %" PRIu64 " %" PRId64 " %" PRId32,
                              seq, id.ledger_id, id.entry_id, id.batch_index)
                        : fmt("%" PRIu64, seq);
    size_t add = strlen(key) + strlen(value);
    if (n >= max_props || bytes + add > max_bytes) {
      free(key);
      free(value);
      skipped++;
      continue;
    }
    props[n].key = key;
    props[n].value = value;
    bytes += add;
    n++;
  }
  free(all);
  *out = props;
  *n_out = n;
  if (dropped != NULL) *dropped = skipped;
}

void sl_dedup_props_free(sl_dedup_prop *props, size_t n) {
  if (props == NULL) return;
  for (size_t i = 0; i < n; i++) {
    free(props[i].key);
    free(props[i].value);
  }
  free(props);
}

/* Parses up to `max` space-separated decimal fields; the count parsed, or
 * -1 on junk. */
static int parse_fields(const char *s, int64_t *f, int max, bool *neg) {
  int n = 0;
  *neg = false;
  while (*s != '\0') {
    if (n == max) return -1;
    char *end;
    errno = 0;
    if (*s == '-') *neg = true;
    long long v = strtoll(s, &end, 10);
    if (end == s || errno != 0) return -1;
    f[n++] = v;
    s = end;
    if (*s == ' ') s++;
    else if (*s != '\0') return -1;
  }
  return n;
}

sl_status sl_dedup_restore(sl_dedup *d, const sl_dedup_prop *props, size_t n,
                           uint64_t *at_ledger, int64_t *at_entry, sl_err *err) {
  if (d->count != 0)
    return sl_err_set(err, SL_EPRECOND, "dedup: restore into a used state");
  *at_ledger = 0;
  *at_entry = -1;
  size_t plen = strlen(SL_DEDUP_PROP_PREFIX);
  /* Oldest first, so that recency survives a snapshot round trip. */
  for (size_t i = n; i-- > 0;) {
    const char *k = props[i].key, *v = props[i].value;
    int64_t f[4];
    bool neg;
    if (strcmp(k, SL_DEDUP_PROP_AT) == 0) {
      if (parse_fields(v, f, 2, &neg) != 2 || f[0] < 0 || f[1] < -1) goto bad;
      *at_ledger = (uint64_t)f[0];
      *at_entry = f[1];
      continue;
    }
    if (strncmp(k, SL_DEDUP_PROP_PREFIX, plen) != 0) continue;
    int nf = parse_fields(v, f, 4, &neg);
    if ((nf != 1 && nf != 4) || neg) goto bad;
    if (nf == 1) {
      /* Position forgotten: remember the sequence only. */
      producer *p = find_or_add(d, k + plen);
      p->stored = p->pushed = (uint64_t)f[0];
      p->has_stored = p->has_pushed = true;
      p->tick = ++d->tick;
      continue;
    }
    if (f[3] > INT32_MAX) goto bad;
    sl_dedup_id id = {(uint64_t)f[1], f[2], (int32_t)f[3]};
    sl_dedup_stored(d, k + plen, (uint64_t)f[0], id);
    continue;
  bad:
    sl_dedup_clear(d);
    *at_ledger = 0;
    *at_entry = -1;
    return sl_err_set(err, SL_ECORRUPT, "dedup snapshot: bad property %s=%s", k, v);
  }
  return SL_OK;
}
