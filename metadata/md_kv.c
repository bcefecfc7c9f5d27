/*
 * Store access shared by the MetadataService handlers: keys, protobuf
 * values, listing, epoch checks and the one compare-and-swap write path.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "metadata/service_int.h"
#include "common/clock.h"

#define KEY_TEXT 128

void sl_md_key_fmt(sl_md_key *k, const char *fmt, ...) {
  va_list ap;
  size_t root = sizeof(SL_MD_ROOT) - 1;
  memcpy(k->s, SL_MD_ROOT, root);
  va_start(ap, fmt);
  int n = vsnprintf(k->s + root, sizeof(k->s) - root, fmt, ap);
  va_end(ap);
  SL_ASSERT(n >= 0 && (size_t)n < sizeof(k->s) - root);
  k->len = root + (size_t)n;
}

void sl_md_deadline_begin(sl_store_deadline *d, const sl_rpc_call *call) {
  int64_t left = sl_rpc_call_time_left_ms(call);
  if (left != INT64_MAX) {
    int64_t margin = left / 10;
    left -= margin < SL_MD_DEADLINE_MARGIN_MS ? margin : SL_MD_DEADLINE_MARGIN_MS;
  }
  sl_store_deadline_begin(d, left);
}


sl_status sl_md_store_status(sl_status st) {
  return st == SL_ETIMEDOUT ? SL_EUNAVAIL : st;
}

uint8_t *sl_md_pack(const ProtobufCMessage *msg, size_t *len) {
  size_t n = protobuf_c_message_get_packed_size(msg);
  uint8_t *buf = sl_xmalloc(n > 0 ? n : 1);
  size_t got = protobuf_c_message_pack(msg, buf);
  SL_ASSERT(got == n);
  *len = n;
  return buf;
}

sl_status sl_md_unpack(const sl_store_kv *kv, const ProtobufCMessageDescriptor *desc,
                       ProtobufCMessage **out, sl_err *err) {
  char k[KEY_TEXT];
  *out = protobuf_c_message_unpack(desc, NULL, kv->value_len, kv->value);
  if (*out == NULL)
    return sl_err_set(err, SL_ECORRUPT, "key %s: stored value (%zu bytes) is not a valid %s",
                      sl_store_key_text(kv->key, kv->key_len, k, sizeof(k)),
                      kv->value_len, desc->name);
  return SL_OK;
}

sl_status sl_md_read(sl_md_service *md, const sl_md_key *key,
                     const ProtobufCMessageDescriptor *desc, ProtobufCMessage **out,
                     int64_t *version, int64_t *lease, sl_err *err) {
  sl_store_kv kv = {0};
  *out = NULL;
  sl_status st = sl_store_get(md->store, key->s, key->len, &kv, err);
  if (st != SL_OK) return sl_md_store_status(st);
  st = sl_md_unpack(&kv, desc, out, err);
  if (st == SL_OK && version != NULL) *version = kv.mod_revision;
  if (st == SL_OK && lease != NULL) *lease = kv.lease;
  sl_store_kv_release(&kv);
  return st;
}

/* Appends one page of a range to l; returns the last key for paging. */
static sl_status list_page(const sl_store_range_result *r, size_t strip,
                           const ProtobufCMessageDescriptor *desc, sl_md_list *l,
                           sl_err *err) {
  l->msgs = sl_xrealloc(l->msgs, (l->n + r->n) * sizeof(*l->msgs) + 1);
  l->versions = sl_xrealloc(l->versions, (l->n + r->n) * sizeof(*l->versions) + 1);
  l->keys = sl_xrealloc(l->keys, (l->n + r->n) * sizeof(*l->keys) + 1);
  for (size_t i = 0; i < r->n; i++) {
    const sl_store_kv *kv = &r->kvs[i];
    ProtobufCMessage *m;
    sl_status st = sl_md_unpack(kv, desc, &m, err);
    if (st != SL_OK) return st;
    l->msgs[l->n] = m;
    l->versions[l->n] = kv->mod_revision;
    l->keys[l->n] = sl_xstrdup((const char *)kv->key + strip);
    l->n++;
  }
  return SL_OK;
}

#define LIST_PAGE 1000

size_t sl_md_page_limit(const sl_md_service *md) {
  /* The local store reads no older revision; one whole read is one
   * snapshot there (and it is in-process, so size is no concern). */
  return strcmp(sl_store_backend(md->store), "local") == 0 ? 0 : LIST_PAGE;
}

/* One page of a listing, handed to the reader (md_kv.c's two kinds). */
typedef sl_status (*page_fn)(sl_store_range_result *r, void *arg, sl_err *err);

/* Reads every page under prefix at one revision (*revision 0: the latest,
 * then the one the first page saw) and hands each to take. */
static sl_status read_pages(sl_md_service *md, const sl_md_key *prefix, int64_t *revision,
                            page_fn take, void *arg, sl_err *err) {
  uint8_t *start = NULL;
  size_t start_len = 0;
  sl_status st;
  for (;;) {
    sl_store_range_result r;
    st = sl_store_range_at(md->store, prefix->s, prefix->len, start, start_len,
                           sl_md_page_limit(md), *revision, &r, err);
    if (st != SL_OK) {
      st = sl_md_store_status(st);
      break;
    }
    if (*revision == 0) *revision = r.revision;
    bool more = sl_md_next_page(&r, &start, &start_len);
    st = take(&r, arg, err);
    sl_store_range_result_release(&r);
    if (st != SL_OK || !more) break;
  }
  free(start);
  return st;
}

typedef struct list_reader {
  size_t strip;
  const ProtobufCMessageDescriptor *desc;
  sl_md_list *out;
} list_reader;

static sl_status take_list_page(sl_store_range_result *r, void *arg, sl_err *err) {
  list_reader *lr = arg;
  return list_page(r, lr->strip, lr->desc, lr->out, err);
}

sl_status sl_md_list_read(sl_md_service *md, const sl_md_key *prefix,
                          const ProtobufCMessageDescriptor *desc, sl_md_list *out,
                          sl_err *err) {
  memset(out, 0, sizeof(*out));
  list_reader lr = {prefix->len, desc, out};
  sl_status st = read_pages(md, prefix, &out->revision, take_list_page, &lr, err);
  if (st != SL_OK) sl_md_list_release(out);
  return st;
}

bool sl_md_next_page(const sl_store_range_result *r, uint8_t **start, size_t *start_len) {
  if (!r->more || r->n == 0) return false;
  /* The next page starts just after the last key: key + "\0". */
  const sl_store_kv *last = &r->kvs[r->n - 1];
  free(*start);
  *start_len = last->key_len + 1;
  *start = sl_xmalloc(*start_len);
  memcpy(*start, last->key, last->key_len);
  (*start)[last->key_len] = 0;
  return true;
}

/* Moves a page's key-values to the end of l (the page keeps none). */
static void kvs_take(sl_store_range_result *r, sl_md_kvs *l) {
  l->kvs = sl_xrealloc(l->kvs, (l->n + r->n) * sizeof(*l->kvs) + 1);
  memcpy(l->kvs + l->n, r->kvs, r->n * sizeof(*r->kvs));
  l->n += r->n;
  memset(r->kvs, 0, r->n * sizeof(*r->kvs)); /* released as empty */
}

static sl_status take_kvs_page(sl_store_range_result *r, void *arg, sl_err *err) {
  (void)err;
  kvs_take(r, arg);
  return SL_OK;
}

sl_status sl_md_kvs_read(sl_md_service *md, const sl_md_key *prefix, sl_md_kvs *out,
                         sl_err *err) {
  memset(out, 0, sizeof(*out));
  sl_status st = read_pages(md, prefix, &out->revision, take_kvs_page, out, err);
  if (st != SL_OK) sl_md_kvs_release(out);
  return st;
}

void sl_md_kvs_release(sl_md_kvs *l) {
  for (size_t i = 0; i < l->n; i++) sl_store_kv_release(&l->kvs[i]);
  free(l->kvs);
  memset(l, 0, sizeof(*l));
}

void sl_md_list_release(sl_md_list *l) {
  for (size_t i = 0; i < l->n; i++) {
    protobuf_c_message_free_unpacked(l->msgs[i], NULL);
    free(l->keys[i]);
  }
  free(l->msgs);
  free(l->versions);
  free(l->keys);
  memset(l, 0, sizeof(*l));
}

/* ---- epochs ---- */

static sl_md_epoch_slot *slot_of(sl_md_service *md, const char *partition) {
  uint32_t h = 2166136261u; /* FNV-1a */
  for (const unsigned char *p = (const unsigned char *)partition; *p; p++)
    h = (h ^ *p) * 16777619u;
  return &md->epochs[h % SL_MD_EPOCH_CACHE];
}

void sl_md_epoch_note(sl_md_service *md, const char *partition, int64_t rev, uint64_t epoch) {
  pthread_mutex_lock(&md->epochs_lock);
  sl_md_epoch_slot *s = slot_of(md, partition);
  bool same = s->partition != NULL && strcmp(s->partition, partition) == 0;
  if (!same) {
    free(s->partition);
    s->partition = sl_xstrdup(partition);
    s->rev = -1;
  }
  if (rev > s->rev) { /* never go back to an older reading */
    s->rev = rev;
    s->epoch = epoch;
  }
  pthread_mutex_unlock(&md->epochs_lock);
}

static bool epoch_cached(sl_md_service *md, const char *partition, int64_t *rev,
                         uint64_t *epoch) {
  pthread_mutex_lock(&md->epochs_lock);
  sl_md_epoch_slot *s = slot_of(md, partition);
  bool hit = s->partition != NULL && strcmp(s->partition, partition) == 0;
  if (hit) {
    *rev = s->rev;
    *epoch = s->epoch;
  }
  pthread_mutex_unlock(&md->epochs_lock);
  return hit;
}

sl_status sl_md_epoch_read(sl_md_service *md, const char *partition, sl_md_epoch *out,
                           sl_err *err) {
  ProtobufCMessage *m = NULL;
  sl_md_key_fmt(&out->key, "epochs/%s", partition);
  out->rev = 0;
  out->epoch = 0;
  sl_status st = sl_md_read(md, &out->key, &sluice__v1__owner_info__descriptor, &m,
                            &out->rev, NULL, err);
  if (st == SL_ENOTFOUND) st = SL_OK; /* never owned: epoch 0 */
  if (st != SL_OK) return st;
  if (m != NULL) {
    out->epoch = ((Sluice__V1__OwnerInfo *)m)->epoch;
    protobuf_c_message_free_unpacked(m, NULL);
  }
  sl_md_epoch_note(md, partition, out->rev, out->epoch);
  return SL_OK;
}

static sl_status compare_epoch(const char *partition, uint64_t epoch, uint64_t current,
                               sl_err *err) {
  if (epoch < current)
    return sl_err_set(err, SL_ESTALE_EPOCH,
                      "partition %s: epoch %" PRIu64 " is stale, current epoch is %" PRIu64,
                      partition, epoch, current);
  if (epoch > current)
    return sl_err_set(err, SL_EPRECOND,
                      "partition %s: epoch %" PRIu64 " was never granted (current is %" PRIu64
                      ")",
                      partition, epoch, current);
  return SL_OK;
}

sl_status sl_md_epoch_check(sl_md_service *md, const char *partition, uint64_t epoch,
                            sl_md_epoch *out, sl_err *err) {
  int64_t rev;
  uint64_t cached;
  if (epoch_cached(md, partition, &rev, &cached) && epoch <= cached) {
    sl_md_key_fmt(&out->key, "epochs/%s", partition);
    out->rev = rev;
    out->epoch = cached;
    return compare_epoch(partition, epoch, cached, err);
  }
  /* Unknown, or newer than we know: ask the store. */
  sl_status st = sl_md_epoch_read(md, partition, out, err);
  if (st != SL_OK) return st;
  return compare_epoch(partition, epoch, out->epoch, err);
}

/* ---- the write path ---- */

/* After a failed txn: which compare failed? The guard's (stale epoch), the
 * key's (gone, exists, or changed), or else one of the caller's extra
 * compares (SL_EVERSION: re-read and retry). */
static sl_status classify(sl_md_service *md, const char *what, const sl_md_key *key,
                          int64_t expected, const sl_md_epoch *guard, sl_err *err) {
  sl_status st;
  if (guard != NULL) {
    sl_md_epoch now;
    const char *partition = guard->key.s + sizeof(SL_MD_ROOT "epochs/") - 1;
    if ((st = sl_md_epoch_read(md, partition, &now, err)) != SL_OK) return st;
    if (now.rev != guard->rev)
      return sl_err_set(err, SL_ESTALE_EPOCH,
                        "%s: ownership of %s moved on (epoch %" PRIu64
                        " is stale, current is %" PRIu64 ")",
                        what, partition, guard->epoch, now.epoch);
  }
  sl_store_kv kv = {0};
  st = sl_store_get(md->store, key->s, key->len, &kv, err);
  if (st != SL_OK && st != SL_ENOTFOUND) return sl_md_store_status(st);
  bool exists = st == SL_OK;
  sl_store_kv_release(&kv);
  if (!exists && expected != SL_STORE_REV_ABSENT)
    return sl_err_set(err, SL_ENOTFOUND, "%s: not found (deleted meanwhile)", what);
  if (exists && expected == 0) return sl_err_set(err, SL_EEXIST, "%s: already exists", what);
  return sl_err_set(err, SL_EVERSION,
                    "%s: version %" PRId64 " is not the current one; re-read and retry", what,
                    expected);
}

static sl_status reword(sl_status st, const char *what, int64_t expected, sl_err *err) {
  switch (st) {
    case SL_EVERSION:
      return sl_err_set(err, st,
                        "%s: version %" PRId64 " is not the current one; re-read and retry",
                        what, expected);
    case SL_ENOTFOUND:
      return sl_err_set(err, st, "%s: not found", what);
    case SL_EEXIST:
      return sl_err_set(err, st, "%s: already exists", what);
    default:
      return sl_md_store_status(st);
  }
}

sl_status sl_md_cas(sl_md_service *md, const char *what, const sl_md_key *key,
                    const ProtobufCMessage *value, int64_t expected,
                    const sl_md_epoch *guard, int64_t *version, sl_err *err) {
  SL_ASSERT(expected >= 0);
  return sl_md_write(md, what, key, value, expected, guard, NULL, version, err);
}

sl_status sl_md_write(sl_md_service *md, const char *what, const sl_md_key *key,
                      const ProtobufCMessage *value, int64_t expected,
                      const sl_md_epoch *guard, const sl_md_extra *extra, int64_t *version,
                      sl_err *err) {
  size_t len = 0;
  uint8_t *buf = value != NULL ? sl_md_pack(value, &len) : NULL;
  size_t n_extra_cmps = extra != NULL ? extra->n_cmps : 0;
  size_t n_extra_ops = extra != NULL ? extra->n_ops : 0;
  SL_ASSERT(n_extra_cmps + 2 <= SL_STORE_TXN_MAX && n_extra_ops + 1 <= SL_STORE_TXN_MAX);
  sl_store_cmp cmps[SL_STORE_TXN_MAX];
  sl_store_op ops[SL_STORE_TXN_MAX];
  size_t nc = 0, no = 0;
  cmps[nc++] = (sl_store_cmp){key->s, key->len, expected};
  if (guard != NULL) cmps[nc++] = (sl_store_cmp){guard->key.s, guard->key.len, guard->rev};
  for (size_t i = 0; i < n_extra_cmps; i++) cmps[nc++] = extra->cmps[i];
  ops[no++] = value != NULL
                  ? (sl_store_op){SL_STORE_OP_PUT, key->s, key->len, buf, len, 0}
                  : (sl_store_op){SL_STORE_OP_DELETE, key->s, key->len, NULL, 0, 0};
  for (size_t i = 0; i < n_extra_ops; i++) ops[no++] = extra->ops[i];
  sl_status st = sl_store_txn(md->store, cmps, nc, ops, no, version, err);
  if (st == SL_EVERSION)
    st = classify(md, what, key, expected, guard, err);
  else if (st != SL_OK)
    st = reword(st, what, expected, err);
  free(buf);
  return st;
}

void sl_md_fail(sl_rpc_call *call, sl_status st, const sl_err *err) {
  const sl_rpc_method *m = sl_rpc_call_method(call);
  const char *msg = sl_err_msg(err, st);
  bool ours = st == SL_EUNAVAIL || st == SL_ECORRUPT || st == SL_EIO || st == SL_EINTERNAL;
  sl_log(ours ? SL_LOG_WARN : SL_LOG_DEBUG, "event=rpc_failed method=%s status=\"%s\" error=\"%s\"",
         m != NULL ? m->path : "?", sl_status_str(st), msg);
  sl_rpc_call_finish(call, st, msg, NULL);
}

sl_status sl_md_check_quorum(const char *what, uint32_t e, uint32_t qw, uint32_t qa,
                             sl_err *err) {
  if (e > SL_MD_MAX_ENSEMBLE)
    return sl_err_set(err, SL_EINVAL, "%s: ensemble size %u exceeds %d", what, e,
                      SL_MD_MAX_ENSEMBLE);
  if (!(e >= qw && qw >= qa && qa >= 1))
    return sl_err_set(err, SL_EINVAL,
                      "%s: need ensemble >= write quorum >= ack quorum >= 1, got %u/%u/%u",
                      what, e, qw, qa);
  return SL_OK;
}
