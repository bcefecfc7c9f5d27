/*
 * Local sl_store backend: one leveldb directory, etcd's semantics.
 *
 * Design note
 *  Purpose: standalone single-node mode and fast tests. Layout of the
 *  leveldb keys is in metadata/store_local_int.h.
 *
 *  Invariants
 *   1. Every change is one leveldb write batch holding the data records,
 *      the history records ('h') of the change and the new "mrev", written
 *      under s->lock. So revisions never go back, a revision's changes are
 *      all there or none, and history is exactly the sequence of changes.
 *   2. A batch that changes nothing (a delete of a missing key) writes
 *      nothing and does not move the revision.
 *   3. Readers and watchers see a revision only after its batch is written
 *      (s->rev moves after leveldb_write returns).
 *   4. With opts.local_sync (default) a write returns only after fsync.
 *
 *  Leases: the table of live leases is in memory, rebuilt from the 'l'
 *  records at open with every expiry set to now + TTL (etcd renews leases
 *  on restart the same way). A lease thread wakes at the earliest expiry
 *  and revokes what lapsed: one batch deleting the lease's keys at one new
 *  revision. It also trims history beyond opts.local_history revisions.
 *
 *  Watches (store_local_watch.c): a thread per watch that reads 'h' records
 *  from its next revision through the current one, then waits on
 *  s->changed. Catch-up and live delivery are the same code path.
 *
 *  Locking: s->lock guards the in-memory state and serialises every
 *  write; reads take it too, so a read and its revision are consistent.
 *  Callbacks never run under it.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "metadata/store_local_int.h"
#include "common/clock.h"

#define MIN_TTL_S 2 /* etcd's minimum with default election settings */
#define KEY_BUF (1 + 8 + SL_STORE_MAX_KEY + 2)
#define KEY_TEXT 96

static const sl_store_vtable local_vtable;

static local_store *L(sl_store *s) { return (local_store *)s; }

/* ---- encoding ---- */

void sl_local_put_u64_(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (56 - 8 * i));
}

uint64_t sl_local_get_u64_(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = v << 8 | p[i];
  return v;
}

void sl_local_put_u32_(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (24 - 8 * i));
}

uint32_t sl_local_get_u32_(const uint8_t *p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; i++) v = v << 8 | p[i];
  return v;
}

bool sl_local_decode_event_(const char *k, size_t klen, const char *v, size_t vlen,
                            local_event *out) {
  const uint8_t *kk = (const uint8_t *)k, *vv = (const uint8_t *)v;
  if (klen != LOCAL_HIST_KEY_LEN || kk[0] != 'h' || vlen < 21) return false;
  out->rev = (int64_t)sl_local_get_u64_(kk + 1);
  out->idx = sl_local_get_u32_(kk + 9);
  out->type = vv[0];
  out->create_rev = (int64_t)sl_local_get_u64_(vv + 1);
  out->lease = (int64_t)sl_local_get_u64_(vv + 9);
  uint32_t key_len = sl_local_get_u32_(vv + 17);
  if (key_len > vlen - 21) return false;
  out->key = vv + 21;
  out->key_len = key_len;
  out->value = vv + 21 + key_len;
  out->value_len = vlen - 21 - key_len;
  return out->type == LOCAL_EV_PUT || out->type == LOCAL_EV_DELETE;
}

/* tag + key into buf; returns the length. */
static size_t tagged(uint8_t *buf, char tag, const void *key, size_t len) {
  buf[0] = (uint8_t)tag;
  memcpy(buf + 1, key, len);
  return len + 1;
}

/* 'L' + lease + key into buf. */
static size_t lease_index_key(uint8_t *buf, int64_t lease, const void *key, size_t len) {
  buf[0] = 'L';
  sl_local_put_u64_(buf + 1, (uint64_t)lease);
  memcpy(buf + 9, key, len);
  return len + 9;
}

static sl_status db_error(char *errp, sl_status st, sl_err *err, const char *what,
                          const local_store *s) {
  sl_err_set(err, st, "local store %s: %s: %s", s->path, what, errp);
  leveldb_free(errp);
  return st;
}

/* ---- records ---- */

typedef struct record {
  bool found;
  int64_t create_rev, mod_rev, lease;
  char *raw; /* leveldb_get buffer, value starts at raw + 24 */
  size_t raw_len;
} record;

static void record_release(record *r) {
  if (r->raw != NULL) leveldb_free(r->raw);
  memset(r, 0, sizeof(*r));
}

static sl_status read_record(local_store *s, const void *key, size_t len, record *r,
                             sl_err *err) {
  uint8_t kb[KEY_BUF];
  char *errp = NULL;
  memset(r, 0, sizeof(*r));
  size_t klen = tagged(kb, 'k', key, len);
  r->raw = leveldb_get(s->db, s->ropts, (const char *)kb, klen, &r->raw_len, &errp);
  if (errp != NULL) return db_error(errp, SL_EIO, err, "read", s);
  if (r->raw == NULL) return SL_OK;
  if (r->raw_len < 24) {
    char k[KEY_TEXT];
    record_release(r);
    return sl_err_set(err, SL_ECORRUPT, "local store %s: key %s: record of %zu bytes",
                      s->path, sl_store_key_text(key, len, k, sizeof(k)), r->raw_len);
  }
  const uint8_t *p = (const uint8_t *)r->raw;
  r->found = true;
  r->create_rev = (int64_t)sl_local_get_u64_(p);
  r->mod_rev = (int64_t)sl_local_get_u64_(p + 8);
  r->lease = (int64_t)sl_local_get_u64_(p + 16);
  return SL_OK;
}

static void kv_from(const void *key, size_t key_len, const char *raw, size_t raw_len,
                    sl_store_kv *out) {
  const uint8_t *p = (const uint8_t *)raw;
  out->key = sl_store_dup_(key, key_len);
  out->key_len = key_len;
  out->value = sl_store_dup_(p + 24, raw_len - 24);
  out->value_len = raw_len - 24;
  out->create_revision = (int64_t)sl_local_get_u64_(p);
  out->mod_revision = (int64_t)sl_local_get_u64_(p + 8);
  out->lease = (int64_t)sl_local_get_u64_(p + 16);
}

/* ---- batches ---- */

/* A batch of changes that will become one revision. */
typedef struct change {
  leveldb_writebatch_t *b;
  int64_t rev;  /* the revision the changes get */
  uint32_t idx; /* next history index within rev */
  bool any;     /* something changed */
} change;

static void change_init(change *c, local_store *s) {
  c->b = leveldb_writebatch_create();
  c->rev = s->rev + 1;
  c->idx = 0;
  c->any = false;
}

static void history(change *c, int type, int64_t create_rev, int64_t lease,
                    const void *key, size_t key_len, const void *value, size_t value_len) {
  uint8_t hk[LOCAL_HIST_KEY_LEN];
  hk[0] = 'h';
  sl_local_put_u64_(hk + 1, (uint64_t)c->rev);
  sl_local_put_u32_(hk + 9, c->idx++);
  size_t n = 21 + key_len + value_len;
  uint8_t *hv = sl_xmalloc(n);
  hv[0] = (uint8_t)type;
  sl_local_put_u64_(hv + 1, (uint64_t)create_rev);
  sl_local_put_u64_(hv + 9, (uint64_t)lease);
  sl_local_put_u32_(hv + 17, (uint32_t)key_len);
  memcpy(hv + 21, key, key_len);
  if (value_len > 0) memcpy(hv + 21 + key_len, value, value_len);
  leveldb_writebatch_put(c->b, (const char *)hk, sizeof(hk), (const char *)hv, n);
  free(hv);
  c->any = true;
}

static void change_put(change *c, const record *old, const void *key, size_t key_len,
                       const void *value, size_t value_len, int64_t lease) {
  uint8_t kb[KEY_BUF];
  int64_t create_rev = old->found ? old->create_rev : c->rev;
  uint8_t *rec = sl_xmalloc(24 + value_len);
  sl_local_put_u64_(rec, (uint64_t)create_rev);
  sl_local_put_u64_(rec + 8, (uint64_t)c->rev);
  sl_local_put_u64_(rec + 16, (uint64_t)lease);
  if (value_len > 0) memcpy(rec + 24, value, value_len);
  size_t klen = tagged(kb, 'k', key, key_len);
  leveldb_writebatch_put(c->b, (const char *)kb, klen, (const char *)rec, 24 + value_len);
  free(rec);
  if (old->found && old->lease != 0 && old->lease != lease) {
    klen = lease_index_key(kb, old->lease, key, key_len);
    leveldb_writebatch_delete(c->b, (const char *)kb, klen);
  }
  if (lease != 0) {
    klen = lease_index_key(kb, lease, key, key_len);
    leveldb_writebatch_put(c->b, (const char *)kb, klen, "", 0);
  }
  history(c, LOCAL_EV_PUT, create_rev, lease, key, key_len, value, value_len);
}

static void change_delete(change *c, const record *old, const void *key, size_t key_len) {
  uint8_t kb[KEY_BUF];
  if (!old->found) return;
  size_t klen = tagged(kb, 'k', key, key_len);
  leveldb_writebatch_delete(c->b, (const char *)kb, klen);
  if (old->lease != 0) {
    klen = lease_index_key(kb, old->lease, key, key_len);
    leveldb_writebatch_delete(c->b, (const char *)kb, klen);
  }
  history(c, LOCAL_EV_DELETE, 0, 0, key, key_len, NULL, 0);
}

static void put_meta(leveldb_writebatch_t *b, const char *name, int64_t v) {
  uint8_t buf[8];
  sl_local_put_u64_(buf, (uint64_t)v);
  leveldb_writebatch_put(b, name, strlen(name), (const char *)buf, 8);
}

/* Writes the batch (with the new revision if anything changed), frees it. */
static sl_status change_commit(local_store *s, change *c, sl_err *err) {
  sl_status st = SL_OK;
  if (c->any) put_meta(c->b, "mrev", c->rev);
  char *errp = NULL;
  leveldb_write(s->db, s->wopts, c->b, &errp);
  if (errp != NULL) {
    st = db_error(errp, SL_EIO, err, "write", s);
  } else if (c->any) {
    s->rev = c->rev;
    pthread_cond_broadcast(&s->changed);
  }
  leveldb_writebatch_destroy(c->b);
  c->b = NULL;
  return st;
}

static void change_abort(change *c) {
  if (c->b != NULL) leveldb_writebatch_destroy(c->b);
  c->b = NULL;
}

/* ---- leases (s->lock held) ---- */

static local_lease *find_lease(local_store *s, int64_t id) {
  long long now = sl_clock_mono_ms();
  for (size_t i = 0; i < s->n_leases; i++)
    if (s->leases[i].id == id) return s->leases[i].expiry_ms > now ? &s->leases[i] : NULL;
  return NULL;
}

static void add_lease(local_store *s, int64_t id, int64_t ttl) {
  if (s->n_leases == s->cap_leases) {
    s->cap_leases = s->cap_leases ? s->cap_leases * 2 : 16;
    s->leases = sl_xrealloc(s->leases, s->cap_leases * sizeof(local_lease));
  }
  s->leases[s->n_leases++] = (local_lease){id, ttl, sl_clock_mono_ms() + ttl * 1000};
  pthread_cond_broadcast(&s->lease_cv);
}

/* Deletes the lease and its keys in one batch, at one new revision. */
static sl_status revoke_locked(local_store *s, int64_t id, sl_err *err) {
  uint8_t prefix[9];
  prefix[0] = 'L';
  sl_local_put_u64_(prefix + 1, (uint64_t)id);
  change c;
  change_init(&c, s);
  sl_status st = SL_OK;
  leveldb_iterator_t *it = leveldb_create_iterator(s->db, s->ropts);
  for (leveldb_iter_seek(it, (const char *)prefix, 9); leveldb_iter_valid(it);
       leveldb_iter_next(it)) {
    size_t klen;
    const char *k = leveldb_iter_key(it, &klen);
    if (klen < 9 || memcmp(k, prefix, 9) != 0) break;
    record r;
    st = read_record(s, k + 9, klen - 9, &r, err);
    if (st != SL_OK) break;
    leveldb_writebatch_delete(c.b, k, klen);
    if (r.found && r.lease == id) change_delete(&c, &r, k + 9, klen - 9);
    record_release(&r);
  }
  char *errp = NULL;
  leveldb_iter_get_error(it, &errp);
  leveldb_iter_destroy(it);
  if (errp != NULL && st == SL_OK) st = db_error(errp, SL_EIO, err, "lease scan", s);
  else if (errp != NULL) leveldb_free(errp);
  if (st != SL_OK) {
    change_abort(&c);
    return st;
  }
  uint8_t lk[9];
  lk[0] = 'l';
  sl_local_put_u64_(lk + 1, (uint64_t)id);
  leveldb_writebatch_delete(c.b, (const char *)lk, sizeof(lk));
  st = change_commit(s, &c, err);
  if (st != SL_OK) return st;
  for (size_t i = 0; i < s->n_leases; i++) {
    if (s->leases[i].id == id) {
      s->leases[i] = s->leases[--s->n_leases];
      break;
    }
  }
  return SL_OK;
}

/* Drops history before `before`; records the new compaction point. */
static sl_status compact_locked(local_store *s, int64_t before, sl_err *err) {
  leveldb_writebatch_t *b = leveldb_writebatch_create();
  uint8_t start[LOCAL_HIST_KEY_LEN] = {'h'};
  leveldb_iterator_t *it = leveldb_create_iterator(s->db, s->ropts);
  for (leveldb_iter_seek(it, (const char *)start, 1); leveldb_iter_valid(it);
       leveldb_iter_next(it)) {
    size_t klen;
    const char *k = leveldb_iter_key(it, &klen);
    if (klen != LOCAL_HIST_KEY_LEN || k[0] != 'h') break;
    if ((int64_t)sl_local_get_u64_((const uint8_t *)k + 1) >= before) break;
    leveldb_writebatch_delete(b, k, klen);
  }
  char *errp = NULL;
  leveldb_iter_get_error(it, &errp);
  leveldb_iter_destroy(it);
  if (errp == NULL) {
    put_meta(b, "mcompact", before);
    leveldb_write(s->db, s->wopts, b, &errp);
  }
  leveldb_writebatch_destroy(b);
  if (errp != NULL) return db_error(errp, SL_EIO, err, "compact", s);
  s->compact_rev = before;
  /* Watchers behind the new point must learn they were compacted. */
  pthread_cond_broadcast(&s->changed);
  return SL_OK;
}

static void *lease_main(void *arg) {
  local_store *s = arg;
  pthread_mutex_lock(&s->lock);
  while (!s->closing) {
    long long now = sl_clock_mono_ms(), next = now + 1000;
    bool revoked = false;
    for (size_t i = 0; i < s->n_leases && !revoked; i++) {
      local_lease *l = &s->leases[i];
      if (l->expiry_ms > now) {
        if (l->expiry_ms < next) next = l->expiry_ms;
        continue;
      }
      sl_err err = SL_ERR_INIT;
      int64_t id = l->id;
      sl_status st = revoke_locked(s, id, &err);
      if (st != SL_OK)
        sl_log(SL_LOG_ERROR, "event=lease_expiry_failed lease=%" PRId64 " err=\"%s\"", id,
               sl_err_msg(&err, st));
      else
        sl_log(SL_LOG_DEBUG, "event=lease_expired lease=%" PRId64, id);
      revoked = st == SL_OK; /* the table changed: rescan */
      if (st != SL_OK) next = now + 1000;
    }
    if (revoked) continue;
    int64_t keep = s->base.opts.local_history;
    if (s->rev - s->compact_rev > keep + keep / 4) {
      sl_err err = SL_ERR_INIT;
      sl_status st = compact_locked(s, s->rev - keep + 1, &err);
      if (st != SL_OK)
        sl_log(SL_LOG_ERROR, "event=history_trim_failed err=\"%s\"", sl_err_msg(&err, st));
    }
    struct timespec ts = {next / 1000, (long)(next % 1000) * 1000000L};
    pthread_cond_timedwait(&s->lease_cv, &s->lock, &ts);
  }
  pthread_mutex_unlock(&s->lock);
  return NULL;
}

/* ---- vtable: reads ---- */

static sl_status local_get(sl_store *base, const void *key, size_t key_len,
                           sl_store_kv *out, sl_err *err) {
  local_store *s = L(base);
  record r;
  pthread_mutex_lock(&s->lock);
  sl_status st = read_record(s, key, key_len, &r, err);
  pthread_mutex_unlock(&s->lock);
  if (st != SL_OK) return st;
  if (!r.found) {
    char k[KEY_TEXT];
    return sl_err_set(err, SL_ENOTFOUND, "key %s: not found",
                      sl_store_key_text(key, key_len, k, sizeof(k)));
  }
  memset(out, 0, sizeof(*out));
  kv_from(key, key_len, r.raw, r.raw_len, out);
  record_release(&r);
  return SL_OK;
}

static sl_status local_range(sl_store *base, const void *prefix, size_t prefix_len,
                             const void *start, size_t start_len, size_t limit,
                             int64_t revision, sl_store_range_result *out, sl_err *err) {
  /* History holds events, not old values: a read is only ever "now". */
  if (revision != 0)
    return sl_err_set(err, SL_EUNIMPL, "local store: no reads at an older revision");
  local_store *s = L(base);
  uint8_t from[KEY_BUF], pre[KEY_BUF];
  size_t from_len = start ? tagged(from, 'k', start, start_len)
                          : tagged(from, 'k', prefix, prefix_len);
  size_t pre_len = tagged(pre, 'k', prefix, prefix_len);
  size_t cap = 16;
  memset(out, 0, sizeof(*out));
  out->kvs = sl_xcalloc(cap, sizeof(sl_store_kv));
  pthread_mutex_lock(&s->lock);
  out->revision = s->rev;
  leveldb_iterator_t *it = leveldb_create_iterator(s->db, s->ropts);
  for (leveldb_iter_seek(it, (const char *)from, from_len); leveldb_iter_valid(it);
       leveldb_iter_next(it)) {
    size_t klen, vlen;
    const char *k = leveldb_iter_key(it, &klen);
    if (klen < pre_len || memcmp(k, pre, pre_len) != 0) break;
    if (limit > 0 && out->n == limit) {
      out->more = true;
      break;
    }
    const char *v = leveldb_iter_value(it, &vlen);
    if (vlen < 24) continue; /* unreadable record: get() reports it */
    if (out->n == cap) out->kvs = sl_xrealloc(out->kvs, (cap *= 2) * sizeof(sl_store_kv));
    kv_from(k + 1, klen - 1, v, vlen, &out->kvs[out->n++]);
  }
  char *errp = NULL;
  leveldb_iter_get_error(it, &errp);
  leveldb_iter_destroy(it);
  pthread_mutex_unlock(&s->lock);
  if (errp != NULL) {
    sl_store_range_result_release(out);
    return db_error(errp, SL_EIO, err, "range", s);
  }
  return SL_OK;
}

static sl_status local_revision(sl_store *base, int64_t *revision, sl_err *err) {
  (void)err;
  local_store *s = L(base);
  pthread_mutex_lock(&s->lock);
  *revision = s->rev;
  pthread_mutex_unlock(&s->lock);
  return SL_OK;
}

/* ---- vtable: writes ---- */

static sl_status local_txn(sl_store *base, const sl_store_cmp *cmps, size_t n_cmps,
                           const sl_store_op *ops, size_t n_ops, int64_t *revision,
                           int64_t *found, sl_err *err) {
  local_store *s = L(base);
  char k[KEY_TEXT];
  sl_status st = SL_OK;
  bool holds = true;
  change c = {0};
  pthread_mutex_lock(&s->lock);
  for (size_t i = 0; i < n_cmps && st == SL_OK; i++) {
    record r;
    st = read_record(s, cmps[i].key, cmps[i].key_len, &r, err);
    found[i] = r.found ? r.mod_rev : 0;
    holds &= cmps[i].mod_revision == SL_STORE_REV_EXISTS ? found[i] > 0
                                                         : found[i] == cmps[i].mod_revision;
    record_release(&r);
  }
  if (st != SL_OK) goto out_unlock;
  if (!holds) {
    st = SL_EVERSION;
    goto out_unlock;
  }
  for (size_t i = 0; i < n_ops; i++) {
    if (ops[i].type == SL_STORE_OP_PUT && ops[i].lease != 0 &&
        find_lease(s, ops[i].lease) == NULL) {
      st = sl_err_set(err, SL_ENOTFOUND, "put %s: lease %" PRId64 " not found",
                      sl_store_key_text(ops[i].key, ops[i].key_len, k, sizeof(k)),
                      ops[i].lease);
      goto out_unlock;
    }
  }
  change_init(&c, s);
  for (size_t i = 0; i < n_ops; i++) {
    record old;
    st = read_record(s, ops[i].key, ops[i].key_len, &old, err);
    if (st != SL_OK) goto out_abort;
    if (ops[i].type == SL_STORE_OP_PUT)
      change_put(&c, &old, ops[i].key, ops[i].key_len, ops[i].value, ops[i].value_len,
                 ops[i].lease);
    else
      change_delete(&c, &old, ops[i].key, ops[i].key_len);
    record_release(&old);
  }
  st = change_commit(s, &c, err);
  if (st == SL_OK) *revision = s->rev;
  goto out_unlock;
out_abort:
  change_abort(&c);
out_unlock:
  pthread_mutex_unlock(&s->lock);
  return st;
}

static sl_status local_compact(sl_store *base, int64_t revision, sl_err *err) {
  local_store *s = L(base);
  sl_status st;
  pthread_mutex_lock(&s->lock);
  if (revision <= s->compact_rev)
    st = sl_err_set(err, SL_ERANGE, "compact at %" PRId64 ": already compacted to %" PRId64,
                    revision, s->compact_rev);
  else if (revision > s->rev)
    st = sl_err_set(err, SL_ERANGE, "compact at %" PRId64 ": future revision (current %"
                    PRId64 ")", revision, s->rev);
  else
    st = compact_locked(s, revision, err);
  pthread_mutex_unlock(&s->lock);
  return st;
}

/* ---- vtable: leases ---- */

static sl_status local_lease_grant(sl_store *base, int64_t ttl_s, int64_t *lease,
                                   int64_t *granted_ttl, sl_err *err) {
  local_store *s = L(base);
  int64_t ttl = ttl_s < MIN_TTL_S ? MIN_TTL_S : ttl_s;
  pthread_mutex_lock(&s->lock);
  int64_t id = s->lease_seq + 1;
  uint8_t lk[9], v[8];
  lk[0] = 'l';
  sl_local_put_u64_(lk + 1, (uint64_t)id);
  sl_local_put_u64_(v, (uint64_t)ttl);
  leveldb_writebatch_t *b = leveldb_writebatch_create();
  leveldb_writebatch_put(b, (const char *)lk, sizeof(lk), (const char *)v, sizeof(v));
  put_meta(b, "mlease", id);
  char *errp = NULL;
  leveldb_write(s->db, s->wopts, b, &errp);
  leveldb_writebatch_destroy(b);
  sl_status st = SL_OK;
  if (errp != NULL) {
    st = db_error(errp, SL_EIO, err, "lease grant", s);
  } else {
    s->lease_seq = id;
    add_lease(s, id, ttl);
    *lease = id;
    *granted_ttl = ttl;
  }
  pthread_mutex_unlock(&s->lock);
  return st;
}

static sl_status local_lease_keepalive(sl_store *base, int64_t lease, int64_t *ttl,
                                       sl_err *err) {
  local_store *s = L(base);
  pthread_mutex_lock(&s->lock);
  local_lease *l = find_lease(s, lease);
  if (l != NULL) {
    l->expiry_ms = sl_clock_mono_ms() + l->ttl * 1000;
    *ttl = l->ttl;
  }
  pthread_mutex_unlock(&s->lock);
  if (l == NULL)
    return sl_err_set(err, SL_ENOTFOUND, "lease %" PRId64 ": not found (expired or revoked)",
                      lease);
  return SL_OK;
}

static sl_status local_lease_revoke(sl_store *base, int64_t lease, sl_err *err) {
  local_store *s = L(base);
  sl_status st;
  pthread_mutex_lock(&s->lock);
  if (find_lease(s, lease) == NULL)
    st = sl_err_set(err, SL_ENOTFOUND, "lease %" PRId64 ": not found", lease);
  else
    st = revoke_locked(s, lease, err);
  pthread_mutex_unlock(&s->lock);
  return st;
}

/* ---- open / close ---- */

static sl_status read_meta(local_store *s, const char *name, int64_t *out, sl_err *err) {
  char *errp = NULL;
  size_t len = 0;
  char *v = leveldb_get(s->db, s->ropts, name, strlen(name), &len, &errp);
  if (errp != NULL) return db_error(errp, SL_EIO, err, "read meta", s);
  if (v == NULL) return SL_OK;
  sl_status st = SL_OK;
  if (len == 8)
    *out = (int64_t)sl_local_get_u64_((const uint8_t *)v);
  else
    st = sl_err_set(err, SL_ECORRUPT, "local store %s: meta %s has %zu bytes", s->path,
                    name, len);
  leveldb_free(v);
  return st;
}

static sl_status load_leases(local_store *s, sl_err *err) {
  leveldb_iterator_t *it = leveldb_create_iterator(s->db, s->ropts);
  for (leveldb_iter_seek(it, "l", 1); leveldb_iter_valid(it); leveldb_iter_next(it)) {
    size_t klen, vlen;
    const char *k = leveldb_iter_key(it, &klen);
    if (klen == 0 || k[0] != 'l') break;
    const char *v = leveldb_iter_value(it, &vlen);
    if (klen != 9 || vlen != 8) continue;
    add_lease(s, (int64_t)sl_local_get_u64_((const uint8_t *)k + 1),
              (int64_t)sl_local_get_u64_((const uint8_t *)v));
  }
  char *errp = NULL;
  leveldb_iter_get_error(it, &errp);
  leveldb_iter_destroy(it);
  return errp ? db_error(errp, SL_EIO, err, "load leases", s) : SL_OK;
}

static void local_free(local_store *s) {
  if (s->db != NULL) leveldb_close(s->db);
  if (s->options != NULL) leveldb_options_destroy(s->options);
  if (s->ropts != NULL) leveldb_readoptions_destroy(s->ropts);
  if (s->wopts != NULL) leveldb_writeoptions_destroy(s->wopts);
  pthread_mutex_destroy(&s->lock);
  pthread_cond_destroy(&s->changed);
  pthread_cond_destroy(&s->lease_cv);
  free(s->leases);
  free(s->path);
  free(s);
}

static void local_close(sl_store *base) {
  local_store *s = L(base);
  pthread_mutex_lock(&s->lock);
  SL_ASSERT(s->n_watches == 0); /* precondition: every watch stopped */
  s->closing = true;
  pthread_cond_broadcast(&s->lease_cv);
  pthread_mutex_unlock(&s->lock);
  pthread_join(s->lease_thread, NULL);
  local_free(s);
}

sl_status sl_store_local_open_(const char *where, const sl_store_opts *opts,
                               sl_store **out, sl_err *err) {
  if (where == NULL || where[0] == '\0')
    return sl_err_set(err, SL_EINVAL, "local store: no directory given");
  local_store *s = sl_xcalloc(1, sizeof(*s));
  s->base.vt = &local_vtable;
  s->base.opts = *opts;
  s->path = sl_xstrdup(where);
  s->rev = 1; /* like a fresh etcd */
  pthread_mutex_init(&s->lock, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&s->changed, &ca);
  pthread_cond_init(&s->lease_cv, &ca);
  pthread_condattr_destroy(&ca);
  s->options = leveldb_options_create();
  leveldb_options_set_create_if_missing(s->options, 1);
  s->ropts = leveldb_readoptions_create();
  s->wopts = leveldb_writeoptions_create();
  leveldb_writeoptions_set_sync(s->wopts, opts->local_sync);
  char *errp = NULL;
  s->db = leveldb_open(s->options, where, &errp);
  sl_status st = SL_OK;
  if (errp != NULL) {
    /* leveldb's LOCK file: another open store holds the directory. */
    st = db_error(errp, strstr(errp, "lock") ? SL_EBUSY : SL_EIO, err, "open", s);
    goto out_free;
  }
  if ((st = read_meta(s, "mrev", &s->rev, err)) != SL_OK) goto out_free;
  if ((st = read_meta(s, "mcompact", &s->compact_rev, err)) != SL_OK) goto out_free;
  if ((st = read_meta(s, "mlease", &s->lease_seq, err)) != SL_OK) goto out_free;
  if ((st = load_leases(s, err)) != SL_OK) goto out_free;
  if (pthread_create(&s->lease_thread, NULL, lease_main, s) != 0) {
    st = sl_err_set(err, SL_EINTERNAL, "local store %s: cannot start lease thread", where);
    goto out_free;
  }
  *out = &s->base;
  return SL_OK;
out_free:
  local_free(s);
  return st;
}

static const sl_store_vtable local_vtable = {
    .name = "local",
    .close = local_close,
    .get = local_get,
    .range = local_range,
    .txn = local_txn,
    .lease_grant = local_lease_grant,
    .lease_keepalive = local_lease_keepalive,
    .lease_revoke = local_lease_revoke,
    .watch_start = sl_local_watch_start_,
    .watch_stop = sl_local_watch_stop_,
    .revision = local_revision,
    .compact = local_compact,
};
