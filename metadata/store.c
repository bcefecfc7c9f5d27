/*
 * Backend-independent half of sl_store: URI dispatch, argument checks, and
 * create/put/delete expressed as one-compare transactions, so that both
 * backends classify CAS failures (SL_EEXIST / SL_ENOTFOUND / SL_EVERSION)
 * from the same atomically-read revision.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <pthread.h>

#include "common/metrics.h"
#include "metadata/etcd.h"
#include "metadata/store_int.h"
#include "common/clock.h"

#define KEY_TEXT 96

void sl_store_kv_release(sl_store_kv *kv) {
  if (kv == NULL) return;
  free(kv->key);
  free(kv->value);
  memset(kv, 0, sizeof(*kv));
}

void sl_store_range_result_release(sl_store_range_result *r) {
  if (r == NULL) return;
  for (size_t i = 0; i < r->n; i++) sl_store_kv_release(&r->kvs[i]);
  free(r->kvs);
  memset(r, 0, sizeof(*r));
}

const char *sl_store_key_text(const void *key, size_t len, char *buf, size_t cap) {
  return sl_etcd_key_text(key, len, buf, cap);
}

uint8_t *sl_store_dup_(const void *data, size_t len) {
  uint8_t *p = sl_xmalloc(len + 1);
  if (len > 0) memcpy(p, data, len);
  p[len] = '\0';
  return p;
}

void sl_store_prefix_end_(const void *prefix, size_t len, uint8_t **end,
                          size_t *end_len) {
  uint8_t *e = sl_store_dup_(prefix, len);
  while (len > 0 && e[len - 1] == 0xff) len--;
  if (len > 0) e[len - 1]++;
  *end = e;
  *end_len = len;
}

/* ---- per-thread deadline ---- */

/* This thread's deadline; INT64_MAX: none (see store.h for why per thread). */
static _Thread_local int64_t thread_deadline = INT64_MAX;

int64_t sl_store_deadline_(void) { return thread_deadline; }

void sl_store_deadline_begin(sl_store_deadline *d, int64_t time_left_ms) {
  d->outer = thread_deadline;
  d->set = thread_deadline;
  if (time_left_ms != INT64_MAX) {
    int64_t now = sl_clock_mono_ms();
    int64_t at = time_left_ms <= 0 ? now : now + time_left_ms;
    if (at < d->set) d->set = at;
  }
  thread_deadline = d->set;
}

void sl_store_deadline_end(sl_store_deadline *d) {
  SL_ASSERT(thread_deadline == d->set); /* scopes end innermost first */
  thread_deadline = d->outer;
}

/* ---- open / close ---- */

sl_status sl_store_open(const char *uri, const sl_store_opts *opts,
                        sl_store **out, sl_err *err) {
  sl_store_opts def = SL_STORE_OPTS_INIT;
  if (opts == NULL) opts = &def;
  if (uri == NULL) return sl_err_set(err, SL_EINVAL, "store uri: none given");
  if (opts->timeout_ms <= 0 || opts->connect_timeout_ms <= 0 || opts->local_history < 1)
    return sl_err_set(err, SL_EINVAL, "store %s: timeouts and history must be positive",
                      uri);
  if (opts->etcd_down_ms < 0)
    return sl_err_set(err, SL_EINVAL, "store %s: etcd_down_ms must be >= 0 (0: off)", uri);
  if (strncmp(uri, "etcd:", 5) == 0) return sl_store_etcd_open_(uri + 5, opts, out, err);
  if (strncmp(uri, "local:", 6) == 0) return sl_store_local_open_(uri + 6, opts, out, err);
  return sl_err_set(err, SL_EINVAL,
                    "store uri \"%s\": want etcd:http://host:port[,...] or local:/dir", uri);
}

void sl_store_close(sl_store *s) {
  if (s != NULL) s->vt->close(s);
}

const char *sl_store_backend(const sl_store *s) { return s->vt->name; }

/* ---- argument checks ---- */

static sl_status check_key(const void *key, size_t len, sl_err *err) {
  char k[KEY_TEXT];
  if (key == NULL || len == 0) return sl_err_set(err, SL_EINVAL, "key: empty");
  if (len > SL_STORE_MAX_KEY)
    return sl_err_set(err, SL_EINVAL, "key %s: %zu bytes, limit is %d",
                      sl_store_key_text(key, len, k, sizeof(k)), len, SL_STORE_MAX_KEY);
  return SL_OK;
}

static sl_status check_value(const void *key, size_t key_len, const void *value,
                             size_t len, sl_err *err) {
  char k[KEY_TEXT];
  if (value == NULL && len > 0)
    return sl_err_set(err, SL_EINVAL, "key %s: NULL value with length %zu",
                      sl_store_key_text(key, key_len, k, sizeof(k)), len);
  if (len > SL_STORE_MAX_VALUE)
    return sl_err_set(err, SL_ETOOBIG, "key %s: value of %zu bytes, limit is %d",
                      sl_store_key_text(key, key_len, k, sizeof(k)), len,
                      SL_STORE_MAX_VALUE);
  return SL_OK;
}

static sl_status check_lease(const void *key, size_t key_len, int64_t lease,
                             sl_err *err) {
  char k[KEY_TEXT];
  if (lease < 0)
    return sl_err_set(err, SL_EINVAL, "key %s: bad lease id %" PRId64,
                      sl_store_key_text(key, key_len, k, sizeof(k)), lease);
  return SL_OK;
}

static sl_status check_prefix(const void *prefix, size_t len, sl_err *err) {
  if (prefix == NULL && len > 0) return sl_err_set(err, SL_EINVAL, "prefix: NULL");
  if (len > SL_STORE_MAX_KEY)
    return sl_err_set(err, SL_EINVAL, "prefix: %zu bytes, limit is %d", len,
                      SL_STORE_MAX_KEY);
  return SL_OK;
}

static sl_status check_op(const sl_store_op *op, sl_err *err) {
  sl_status st = check_key(op->key, op->key_len, err);
  if (st != SL_OK) return st;
  if (op->type == SL_STORE_OP_DELETE) return SL_OK;
  if (op->type != SL_STORE_OP_PUT) return sl_err_set(err, SL_EINVAL, "txn: bad op type");
  st = check_value(op->key, op->key_len, op->value, op->value_len, err);
  if (st == SL_OK) st = check_lease(op->key, op->key_len, op->lease, err);
  return st;
}

static sl_status check_txn(const sl_store_cmp *cmps, size_t n_cmps,
                           const sl_store_op *ops, size_t n_ops, sl_err *err) {
  char k[KEY_TEXT];
  if (n_cmps > SL_STORE_TXN_MAX || n_ops > SL_STORE_TXN_MAX)
    return sl_err_set(err, SL_EINVAL, "txn: %zu compares and %zu ops, limit is %d each",
                      n_cmps, n_ops, SL_STORE_TXN_MAX);
  if ((n_cmps > 0 && cmps == NULL) || (n_ops > 0 && ops == NULL))
    return sl_err_set(err, SL_EINVAL, "txn: NULL array");
  for (size_t i = 0; i < n_cmps; i++) {
    sl_status st = check_key(cmps[i].key, cmps[i].key_len, err);
    if (st != SL_OK) return sl_err_wrap(err, st, "txn compare %zu", i);
    if (cmps[i].mod_revision < SL_STORE_REV_EXISTS || cmps[i].mod_revision == SL_STORE_REV_ANY)
      return sl_err_set(err, SL_EINVAL, "txn compare on key %s: bad revision %" PRId64,
                        sl_store_key_text(cmps[i].key, cmps[i].key_len, k, sizeof(k)),
                        cmps[i].mod_revision);
  }
  for (size_t i = 0; i < n_ops; i++) {
    sl_status st = check_op(&ops[i], err);
    if (st != SL_OK) return sl_err_wrap(err, st, "txn op %zu", i);
    for (size_t j = 0; j < i; j++)
      if (ops[j].key_len == ops[i].key_len &&
          memcmp(ops[j].key, ops[i].key, ops[i].key_len) == 0)
        return sl_err_set(err, SL_EINVAL, "txn: key %s appears in two ops",
                          sl_store_key_text(ops[i].key, ops[i].key_len, k, sizeof(k)));
  }
  return SL_OK;
}

/* ---- metrics: latency of every backend call, by operation ---- */

typedef enum store_op {
  OP_GET, OP_RANGE, OP_TXN, OP_PUT, OP_DELETE, OP_LEASE_GRANT, OP_LEASE_KEEPALIVE,
  OP_LEASE_REVOKE, OP_REVISION, OP_COMPACT, OP_N
} store_op;

static const char *const op_names[OP_N] = {
    "get", "range", "txn", "put", "delete", "lease_grant", "lease_keepalive",
    "lease_revoke", "revision", "compact"};

static pthread_once_t metrics_once = PTHREAD_ONCE_INIT;
static sl_metrics_histogram *op_seconds[OP_N];
static sl_metrics_counter *cas_conflicts;

static void metrics_init(void) {
  sl_metrics *m = sl_metrics_default();
  for (int i = 0; i < OP_N; i++) {
    const char *labels[] = {"op", op_names[i], NULL};
    sl_metrics_register_histogram(m, "sluice_metadata_store_request_duration_seconds",
                                  "Time of one metadata store call (etcd round trip, "
                                  "retries included), by operation.",
                                  labels, NULL, 0, &op_seconds[i], NULL);
  }
  sl_metrics_register_counter(m, "sluice_metadata_store_cas_conflicts_total",
                              "Compare-and-swap writes that lost to a concurrent change.",
                              NULL, &cas_conflicts, NULL);
}

static uint64_t op_begin(void) {
  pthread_once(&metrics_once, metrics_init);
  return sl_metrics_now_ns();
}

static sl_status op_end(store_op op, uint64_t t0, sl_status st, bool cas) {
  sl_metrics_histogram_observe_since(op_seconds[op], t0);
  if (cas && st == SL_EVERSION) sl_metrics_counter_inc(cas_conflicts);
  return st;
}

/* ---- reads ---- */

sl_status sl_store_get(sl_store *s, const void *key, size_t key_len,
                       sl_store_kv *out, sl_err *err) {
  sl_status st = check_key(key, key_len, err);
  if (st != SL_OK) return st;
  uint64_t t0 = op_begin();
  return op_end(OP_GET, t0, s->vt->get(s, key, key_len, out, err), false);
}

sl_status sl_store_range(sl_store *s, const void *prefix, size_t prefix_len,
                         const void *start, size_t start_len, size_t limit,
                         sl_store_range_result *out, sl_err *err) {
  return sl_store_range_at(s, prefix, prefix_len, start, start_len, limit, 0, out, err);
}

sl_status sl_store_range_at(sl_store *s, const void *prefix, size_t prefix_len,
                            const void *start, size_t start_len, size_t limit,
                            int64_t revision, sl_store_range_result *out, sl_err *err) {
  if (revision < 0) return sl_err_set(err, SL_EINVAL, "range: negative revision");
  sl_status st = check_prefix(prefix, prefix_len, err);
  if (st != SL_OK) return st;
  if (start != NULL) {
    char k[KEY_TEXT];
    if (start_len < prefix_len || memcmp(start, prefix, prefix_len) != 0)
      return sl_err_set(err, SL_EINVAL, "range: start key %s is outside the prefix",
                        sl_store_key_text(start, start_len, k, sizeof(k)));
    if (start_len > SL_STORE_MAX_KEY + 1)
      return sl_err_set(err, SL_EINVAL, "range: start key too long");
  }
  uint64_t t0 = op_begin();
  st = s->vt->range(s, prefix, prefix_len, start, start_len, limit, revision, out, err);
  return op_end(OP_RANGE, t0, st, false);
}

bool sl_store_failing_fast(sl_store *s) {
  return s->vt->failing_fast != NULL && s->vt->failing_fast(s);
}

sl_status sl_store_revision(sl_store *s, int64_t *revision, sl_err *err) {
  uint64_t t0 = op_begin();
  return op_end(OP_REVISION, t0, s->vt->revision(s, revision, err), false);
}

/* ---- writes ---- */

/* Message for a compare that did not hold: what was expected, what is. */
static sl_status cmp_failed(const sl_store_cmp *c, int64_t found, const char *ctx,
                            sl_err *err) {
  char k[KEY_TEXT];
  sl_store_key_text(c->key, c->key_len, k, sizeof(k));
  if (c->mod_revision == SL_STORE_REV_ABSENT)
    return sl_err_set(err, SL_EVERSION, "%skey %s: exists (mod revision %" PRId64
                      "), expected absent", ctx, k, found);
  if (found == 0)
    return sl_err_set(err, SL_EVERSION, "%skey %s: absent, expected %s", ctx, k,
                      c->mod_revision == SL_STORE_REV_EXISTS ? "it to exist"
                                                             : "a mod revision");
  return sl_err_set(err, SL_EVERSION, "%skey %s: mod revision is %" PRId64
                    ", expected %" PRId64, ctx, k, found, c->mod_revision);
}

static bool cmp_holds(const sl_store_cmp *c, int64_t found) {
  if (c->mod_revision == SL_STORE_REV_EXISTS) return found > 0;
  return found == c->mod_revision;
}

sl_status sl_store_txn(sl_store *s, const sl_store_cmp *cmps, size_t n_cmps,
                       const sl_store_op *ops, size_t n_ops, int64_t *revision,
                       sl_err *err) {
  sl_status st = check_txn(cmps, n_cmps, ops, n_ops, err);
  if (st != SL_OK) return st;
  int64_t found[SL_STORE_TXN_MAX];
  int64_t rev = 0;
  uint64_t t0 = op_begin();
  st = op_end(OP_TXN, t0, s->vt->txn(s, cmps, n_cmps, ops, n_ops, &rev, found, err), true);
  if (st == SL_EVERSION) {
    for (size_t i = 0; i < n_cmps; i++)
      if (!cmp_holds(&cmps[i], found[i])) return cmp_failed(&cmps[i], found[i], "txn: ", err);
    /* Every compare holds on the re-read: they changed back in between. */
    return sl_err_set(err, SL_EVERSION, "txn: a compared key changed during the txn");
  }
  if (st == SL_OK && revision != NULL) *revision = rev;
  return st;
}

/* One compare, at most one op: the shape of create/put/delete. */
static sl_status single(sl_store *s, const sl_store_cmp *cmp, const sl_store_op *op,
                        int64_t *revision, int64_t *found, sl_err *err) {
  int64_t rev = 0;
  uint64_t t0 = op_begin();
  /* A delete of "whatever is there" that finds nothing lost no race. */
  bool cas = cmp != NULL && cmp->mod_revision != SL_STORE_REV_EXISTS;
  sl_status st = op_end(op->type == SL_STORE_OP_PUT ? OP_PUT : OP_DELETE, t0,
                        s->vt->txn(s, cmp, cmp ? 1 : 0, op, 1, &rev, found, err), cas);
  if (st == SL_OK && revision != NULL) *revision = rev;
  return st;
}

sl_status sl_store_create(sl_store *s, const void *key, size_t key_len,
                          const void *value, size_t value_len, int64_t lease,
                          int64_t *revision, sl_err *err) {
  return sl_store_put(s, key, key_len, value, value_len, SL_STORE_REV_ABSENT, lease,
                      revision, err);
}

sl_status sl_store_put(sl_store *s, const void *key, size_t key_len,
                       const void *value, size_t value_len, int64_t expected,
                       int64_t lease, int64_t *revision, sl_err *err) {
  char k[KEY_TEXT];
  sl_store_op op = {SL_STORE_OP_PUT, key, key_len, value, value_len, lease};
  sl_status st = check_op(&op, err);
  if (st != SL_OK) return st;
  if (expected < SL_STORE_REV_ANY)
    return sl_err_set(err, SL_EINVAL, "put %s: bad expected revision %" PRId64,
                      sl_store_key_text(key, key_len, k, sizeof(k)), expected);
  sl_store_cmp cmp = {key, key_len, expected};
  int64_t found = 0;
  st = single(s, expected == SL_STORE_REV_ANY ? NULL : &cmp, &op, revision, &found, err);
  if (st != SL_EVERSION) return st;
  sl_store_key_text(key, key_len, k, sizeof(k));
  if (expected == SL_STORE_REV_ABSENT)
    return sl_err_set(err, SL_EEXIST, "key %s: already exists (mod revision %" PRId64 ")",
                      k, found);
  if (found == 0)
    return sl_err_set(err, SL_ENOTFOUND, "key %s: not found (expected mod revision %" PRId64
                      ")", k, expected);
  return cmp_failed(&cmp, found, "", err);
}

sl_status sl_store_delete(sl_store *s, const void *key, size_t key_len,
                          int64_t expected, int64_t *revision, sl_err *err) {
  char k[KEY_TEXT];
  sl_status st = check_key(key, key_len, err);
  if (st != SL_OK) return st;
  if (expected <= 0 && expected != SL_STORE_REV_ANY)
    return sl_err_set(err, SL_EINVAL, "delete %s: expected revision %" PRId64
                      " (want > 0 or any)",
                      sl_store_key_text(key, key_len, k, sizeof(k)), expected);
  sl_store_op op = {SL_STORE_OP_DELETE, key, key_len, NULL, 0, 0};
  sl_store_cmp cmp = {key, key_len,
                      expected == SL_STORE_REV_ANY ? SL_STORE_REV_EXISTS : expected};
  int64_t found = 0;
  st = single(s, &cmp, &op, revision, &found, err);
  if (st != SL_EVERSION) return st;
  sl_store_key_text(key, key_len, k, sizeof(k));
  if (found == 0) return sl_err_set(err, SL_ENOTFOUND, "key %s: not found", k);
  return cmp_failed(&cmp, found, "", err);
}

/* ---- leases ---- */

sl_status sl_store_lease_grant(sl_store *s, int64_t ttl_s, int64_t *lease,
                               int64_t *granted_ttl, sl_err *err) {
  if (ttl_s <= 0 || ttl_s > 9000000000LL)
    return sl_err_set(err, SL_EINVAL, "lease grant: ttl %" PRId64 "s out of range", ttl_s);
  int64_t ttl = 0;
  uint64_t t0 = op_begin();
  sl_status st = op_end(OP_LEASE_GRANT, t0, s->vt->lease_grant(s, ttl_s, lease, &ttl, err),
                        false);
  if (st == SL_OK && granted_ttl != NULL) *granted_ttl = ttl;
  return st;
}

sl_status sl_store_lease_keepalive(sl_store *s, int64_t lease, int64_t *ttl,
                                   sl_err *err) {
  if (lease <= 0)
    return sl_err_set(err, SL_EINVAL, "lease %" PRId64 ": bad lease id", lease);
  int64_t t = 0;
  uint64_t t0 = op_begin();
  sl_status st = op_end(OP_LEASE_KEEPALIVE, t0, s->vt->lease_keepalive(s, lease, &t, err),
                        false);
  if (st == SL_OK && ttl != NULL) *ttl = t;
  return st;
}

sl_status sl_store_lease_revoke(sl_store *s, int64_t lease, sl_err *err) {
  if (lease <= 0)
    return sl_err_set(err, SL_EINVAL, "lease %" PRId64 ": bad lease id", lease);
  uint64_t t0 = op_begin();
  return op_end(OP_LEASE_REVOKE, t0, s->vt->lease_revoke(s, lease, err), false);
}

/* ---- watches, maintenance ---- */

sl_status sl_store_watch_start(sl_store *s, const void *prefix,
                               size_t prefix_len, int64_t start_revision,
                               sl_store_watch_cb cb, void *arg,
                               sl_store_watch **out, sl_err *err) {
  sl_status st = check_prefix(prefix, prefix_len, err);
  if (st != SL_OK) return st;
  if (start_revision < 0)
    return sl_err_set(err, SL_EINVAL, "watch: bad start revision %" PRId64, start_revision);
  if (cb == NULL) return sl_err_set(err, SL_EINVAL, "watch: no callback");
  return s->vt->watch_start(s, prefix, prefix_len, start_revision, cb, arg, out, err);
}

void sl_store_watch_stop(sl_store_watch *w) {
  if (w != NULL) w->vt->watch_stop(w);
}

sl_status sl_store_compact(sl_store *s, int64_t revision, sl_err *err) {
  if (revision <= 0)
    return sl_err_set(err, SL_EINVAL, "compact: bad revision %" PRId64, revision);
  uint64_t t0 = op_begin();
  return op_end(OP_COMPACT, t0, s->vt->compact(s, revision, err), false);
}
