/*
 * sl_store backend on etcd v3 (metadata/etcd.h, metadata/etcd_watch.h).
 *
 * Every conditional write is one etcd txn. Its failure branch reads each
 * compared key, so a failed compare comes back with the revisions that made
 * it fail, read atomically with the check (no second round trip, no race).
 */
#include <stdlib.h>
#include <string.h>

#include "metadata/etcd.h"
#include "metadata/etcd_watch.h"
#include "metadata/store_int.h"

typedef struct etcd_store {
  sl_store base;
  sl_etcd *etcd;
  int n_watches; /* atomic; close requires 0 (watches use the client) */
} etcd_store;

typedef struct etcd_store_watch {
  sl_store_watch base;
  etcd_store *store;
  sl_etcd_watch *watch;
  sl_store_watch_cb cb;
  void *arg;
} etcd_store_watch;

static const sl_store_vtable etcd_vtable;

static sl_etcd *client(sl_store *s) { return ((etcd_store *)s)->etcd; }

/* Every unary call ends by the calling thread's deadline, if it has one
 * (sl_store_deadline_begin); both use the CLOCK_MONOTONIC ms clock. */
static int64_t deadline(void) {
  int64_t d = sl_store_deadline_();
  return d == INT64_MAX ? SL_ETCD_NO_DEADLINE : d;
}

/* Moves an etcd kv's buffers into a store kv (both are heap + NUL). */
static void steal_kv(sl_etcd_kv *from, sl_store_kv *to) {
  to->key = from->key;
  to->key_len = from->key_len;
  to->value = from->value;
  to->value_len = from->value_len;
  to->create_revision = from->create_revision;
  to->mod_revision = from->mod_revision;
  to->lease = from->lease;
  from->key = NULL;
  from->value = NULL;
}

static void etcd_close(sl_store *s) {
  /* Precondition: every watch stopped (they use the client). */
  SL_ASSERT(__atomic_load_n(&((etcd_store *)s)->n_watches, __ATOMIC_SEQ_CST) == 0);
  sl_etcd_destroy(client(s));
  free(s);
}

static sl_status etcd_get(sl_store *s, const void *key, size_t key_len,
                          sl_store_kv *out, sl_err *err) {
  sl_etcd_range_reply r;
  sl_status st = sl_etcd_range(client(s), deadline(), key, key_len, NULL, 0, 0, 0, &r, err);
  if (st != SL_OK) return st;
  if (r.n == 0) {
    char k[96];
    st = sl_err_set(err, SL_ENOTFOUND, "key %s: not found",
                    sl_store_key_text(key, key_len, k, sizeof(k)));
  } else {
    memset(out, 0, sizeof(*out));
    steal_kv(&r.kvs[0], out);
  }
  sl_etcd_range_reply_release(&r);
  return st;
}

/* etcd spells "from the very first key" and "no upper bound" as "\0". */
static const uint8_t zero_byte[1] = {0};

static sl_status etcd_range(sl_store *s, const void *prefix, size_t prefix_len,
                            const void *start, size_t start_len, size_t limit,
                            int64_t revision, sl_store_range_result *out, sl_err *err) {
  uint8_t *end;
  size_t end_len;
  sl_store_prefix_end_(prefix, prefix_len, &end, &end_len);
  const void *from = start ? start : prefix;
  size_t from_len = start ? start_len : prefix_len;
  if (from_len == 0) {
    from = zero_byte;
    from_len = 1;
  }
  sl_etcd_range_reply r;
  sl_status st = sl_etcd_range(client(s), deadline(), from, from_len,
                               end_len ? end : zero_byte, end_len ? end_len : 1,
                               (int64_t)limit, revision, &r, err);
  free(end);
  if (st != SL_OK) return st;
  memset(out, 0, sizeof(*out));
  out->kvs = sl_xcalloc(r.n ? r.n : 1, sizeof(sl_store_kv));
  for (size_t i = 0; i < r.n; i++) steal_kv(&r.kvs[i], &out->kvs[i]);
  out->n = r.n;
  out->more = r.more;
  out->revision = r.revision;
  sl_etcd_range_reply_release(&r);
  return SL_OK;
}

static sl_status etcd_txn(sl_store *s, const sl_store_cmp *cmps, size_t n_cmps,
                          const sl_store_op *ops, size_t n_ops, int64_t *revision,
                          int64_t *found, sl_err *err) {
  sl_etcd_cmp ecmps[SL_STORE_TXN_MAX];
  sl_etcd_op success[SL_STORE_TXN_MAX], failure[SL_STORE_TXN_MAX];
  SL_ASSERT(n_cmps <= SL_STORE_TXN_MAX && n_ops <= SL_STORE_TXN_MAX);
  for (size_t i = 0; i < n_cmps; i++) {
    bool exists = cmps[i].mod_revision == SL_STORE_REV_EXISTS;
    ecmps[i] = (sl_etcd_cmp){cmps[i].key, cmps[i].key_len, SL_ETCD_TARGET_MOD,
                             exists ? SL_ETCD_CMP_GREATER : SL_ETCD_CMP_EQUAL,
                             exists ? 0 : cmps[i].mod_revision};
    failure[i] = (sl_etcd_op){.type = SL_ETCD_OP_RANGE, .key = cmps[i].key,
                              .key_len = cmps[i].key_len};
  }
  for (size_t i = 0; i < n_ops; i++) {
    bool put = ops[i].type == SL_STORE_OP_PUT;
    success[i] = (sl_etcd_op){.type = put ? SL_ETCD_OP_PUT : SL_ETCD_OP_DELETE,
                              .key = ops[i].key, .key_len = ops[i].key_len,
                              .value = put ? ops[i].value : NULL,
                              .value_len = put ? ops[i].value_len : 0,
                              .lease = put ? ops[i].lease : 0};
  }
  sl_etcd_txn_reply r;
  sl_status st = sl_etcd_txn(client(s), deadline(), ecmps, n_cmps, success, n_ops, failure,
                             n_cmps, &r, err);
  if (st != SL_OK) return st;
  if (r.succeeded) {
    *revision = r.revision;
  } else if (r.n_ops != n_cmps) {
    st = sl_err_set(err, SL_EINTERNAL, "etcd txn: %zu failure replies for %zu compares",
                    r.n_ops, n_cmps);
  } else {
    for (size_t i = 0; i < n_cmps; i++) {
      const sl_etcd_op_reply *o = &r.ops[i];
      found[i] = (o->type == SL_ETCD_OP_RANGE && o->range.n > 0)
                     ? o->range.kvs[0].mod_revision : 0;
    }
    st = SL_EVERSION;
  }
  sl_etcd_txn_reply_release(&r);
  return st;
}

static sl_status etcd_lease_grant(sl_store *s, int64_t ttl_s, int64_t *lease,
                                  int64_t *granted_ttl, sl_err *err) {
  sl_etcd_lease_reply r;
  sl_status st = sl_etcd_lease_grant(client(s), deadline(), ttl_s, &r, err);
  if (st != SL_OK) return st;
  *lease = r.id;
  *granted_ttl = r.ttl;
  return SL_OK;
}

static sl_status etcd_lease_keepalive(sl_store *s, int64_t lease, int64_t *ttl,
                                      sl_err *err) {
  sl_etcd_lease_reply r;
  sl_status st = sl_etcd_lease_keepalive(client(s), deadline(), lease, &r, err);
  if (st == SL_OK) *ttl = r.ttl;
  return st;
}

static sl_status etcd_lease_revoke(sl_store *s, int64_t lease, sl_err *err) {
  return sl_etcd_lease_revoke(client(s), deadline(), lease, err);
}

/* etcd watch callback -> one store event per etcd event. */
static void on_etcd_events(void *arg, const sl_etcd_event *evs, size_t n,
                           int64_t compact_revision) {
  etcd_store_watch *w = arg;
  sl_store_event ev;
  if (n == 0) {
    memset(&ev, 0, sizeof(ev));
    ev.type = SL_STORE_EVENT_COMPACTED;
    ev.compact_revision = compact_revision;
    w->cb(w->arg, &ev);
    return;
  }
  for (size_t i = 0; i < n; i++) {
    const sl_etcd_kv *kv = &evs[i].kv;
    memset(&ev, 0, sizeof(ev));
    ev.type = evs[i].type == SL_ETCD_EVENT_DELETE ? SL_STORE_EVENT_DELETE
                                                  : SL_STORE_EVENT_PUT;
    ev.kv = (sl_store_kv){kv->key, kv->key_len, kv->value, kv->value_len,
                          kv->create_revision, kv->mod_revision, kv->lease};
    ev.revision = kv->mod_revision;
    /* etcd never splits a revision across replies, so the reply's last
     * event closes its revision. */
    ev.last_in_revision = i + 1 == n || evs[i + 1].kv.mod_revision != kv->mod_revision;
    w->cb(w->arg, &ev);
  }
}

static sl_status etcd_watch_start(sl_store *s, const void *prefix, size_t prefix_len,
                                  int64_t start_revision, sl_store_watch_cb cb,
                                  void *arg, sl_store_watch **out, sl_err *err) {
  etcd_store_watch *w = sl_xcalloc(1, sizeof(*w));
  w->base.vt = &etcd_vtable;
  w->cb = cb;
  w->arg = arg;
  uint8_t *end;
  size_t end_len;
  sl_store_prefix_end_(prefix, prefix_len, &end, &end_len);
  sl_status st = sl_etcd_watch_start(
      client(s), prefix_len ? prefix : zero_byte, prefix_len ? prefix_len : 1,
      end_len ? end : zero_byte, end_len ? end_len : 1, start_revision,
      on_etcd_events, w, &w->watch, err);
  free(end);
  if (st != SL_OK) {
    free(w);
    return st;
  }
  w->store = (etcd_store *)s;
  __atomic_add_fetch(&w->store->n_watches, 1, __ATOMIC_SEQ_CST);
  *out = &w->base;
  return SL_OK;
}

static void etcd_watch_stop(sl_store_watch *base) {
  etcd_store_watch *w = (etcd_store_watch *)base;
  sl_etcd_watch_stop(w->watch);
  __atomic_sub_fetch(&w->store->n_watches, 1, __ATOMIC_SEQ_CST);
  free(w);
}

static sl_status etcd_revision(sl_store *s, int64_t *revision, sl_err *err) {
  return sl_etcd_revision(client(s), deadline(), revision, err);
}

static sl_status etcd_compact(sl_store *s, int64_t revision, sl_err *err) {
  return sl_etcd_compact(client(s), deadline(), revision, err);
}

static bool etcd_failing_fast(sl_store *s) { return sl_etcd_failing_fast(client(s)); }

static const sl_store_vtable etcd_vtable = {
    .name = "etcd",
    .close = etcd_close,
    .get = etcd_get,
    .range = etcd_range,
    .txn = etcd_txn,
    .lease_grant = etcd_lease_grant,
    .lease_keepalive = etcd_lease_keepalive,
    .lease_revoke = etcd_lease_revoke,
    .watch_start = etcd_watch_start,
    .watch_stop = etcd_watch_stop,
    .revision = etcd_revision,
    .compact = etcd_compact,
    .failing_fast = etcd_failing_fast,
};

sl_status sl_store_etcd_open_(const char *where, const sl_store_opts *opts,
                              sl_store **out, sl_err *err) {
  sl_etcd_opts eo = {opts->timeout_ms, opts->connect_timeout_ms, opts->etcd_down_ms};
  etcd_store *s = sl_xcalloc(1, sizeof(*s));
  sl_status st = sl_etcd_create(where, &eo, &s->etcd, err);
  if (st != SL_OK) {
    free(s);
    return st;
  }
  s->base.vt = &etcd_vtable;
  s->base.opts = *opts;
  *out = &s->base;
  return SL_OK;
}
