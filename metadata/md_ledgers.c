/*
 * Ledger ids and ledger metadata.
 *
 * Ledger ids: the key ledger-id holds the first id nobody has reserved. A
 * replica reserves a block [next, next + ledger_id_block) with one CAS on
 * it and hands ids out of the block from memory.
 *
 * Invariants
 *   1. An id is handed out at most once, across replicas and restarts: a
 *      block belongs to the one replica whose CAS moved the counter past it,
 *      and ids of a block lost in a crash are never reused.
 *   2. A ledger's quorums, password, partition, owner epoch and creation
 *      time never change after CreateLedger.
 *   3. State only moves forward: OPEN -> IN_RECOVERY -> CLOSED, or OPEN ->
 *      CLOSED. A CLOSED ledger keeps its last entry and length forever; only
 *      the bookies of its ensembles may still be replaced (re-replication,
 *      which needs no ownership epoch).
 *   4. An update of a ledger that is not closed and belongs to a partition
 *      carries the partition's current epoch, checked in the update's txn.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "metadata/md_names.h"
#include "metadata/service_int.h"

#define MAX_PASSWORD 1024
#define MAX_SEGMENTS 100000

/* ---- ids ---- */

/* Reads the counter: *next is the first unreserved id (1 if none yet). */
static sl_status read_counter(sl_md_service *md, const sl_md_key *key, uint64_t *next,
                              int64_t *rev, sl_err *err) {
  ProtobufCMessage *m = NULL;
  *rev = 0;
  *next = 1;
  sl_status st = sl_md_read(md, key, &sluice__v1__allocate_ledger_id_response__descriptor, &m,
                            rev, NULL, err);
  if (st == SL_ENOTFOUND) return SL_OK;
  if (st != SL_OK) return st;
  uint64_t v = ((Sluice__V1__AllocateLedgerIdResponse *)m)->ledger_id;
  protobuf_c_message_free_unpacked(m, NULL);
  if (v == 0) return sl_err_set(err, SL_ECORRUPT, "ledger id counter: holds 0");
  *next = v;
  return SL_OK;
}

/* Reserves a new block. Caller holds ids_lock. */
static sl_status reserve_block(sl_md_service *md, sl_err *err) {
  sl_md_key key;
  sl_md_key_fmt(&key, "ledger-id");
  for (int i = 0; i < SL_MD_RETRIES; i++) {
    uint64_t next;
    int64_t rev;
    sl_status st = read_counter(md, &key, &next, &rev, err);
    if (st != SL_OK) return st;
    if (next > UINT64_MAX - md->opts.ledger_id_block)
      return sl_err_set(err, SL_ERANGE, "ledger ids: exhausted");
    Sluice__V1__AllocateLedgerIdResponse v = SLUICE__V1__ALLOCATE_LEDGER_ID_RESPONSE__INIT;
    v.ledger_id = next + md->opts.ledger_id_block;
    st = sl_md_cas(md, "ledger id counter", &key, &v.base, rev, NULL, NULL, err);
    if (st == SL_OK) {
      md->next_id = next;
      md->end_id = v.ledger_id;
      sl_log(SL_LOG_INFO, "event=ledger_ids_reserved first=%" PRIu64 " end=%" PRIu64, next,
             v.ledger_id);
      return SL_OK;
    }
    if (st != SL_EVERSION && st != SL_EEXIST) return st;
  }
  return sl_err_set(err, SL_EVERSION, "ledger id counter: too many concurrent reservations");
}

static sl_status allocate_id(sl_md_service *md, uint64_t *id, sl_err *err) {
  sl_status st = SL_OK;
  pthread_mutex_lock(&md->ids_lock);
  if (md->next_id >= md->end_id) st = reserve_block(md, err);
  if (st == SL_OK) *id = md->next_id++;
  pthread_mutex_unlock(&md->ids_lock);
  return st;
}

SL_MD_HANDLER(allocate_ledger_id, AllocateLedgerIdRequest) {
  (void)req;
  sl_err err = SL_ERR_INIT;
  Sluice__V1__AllocateLedgerIdResponse resp = SLUICE__V1__ALLOCATE_LEDGER_ID_RESPONSE__INIT;
  sl_status st = allocate_id(ctx, &resp.ledger_id, &err);
  if (st == SL_OK)
    sl_metadata_service_allocate_ledger_id_reply(call, &resp);
  else
    sl_md_fail(call, st, &err);
}

/* ---- validation ---- */

static sl_status check_segment(uint64_t id, size_t i, const Sluice__V1__EnsembleSegment *s,
                               uint32_t e, sl_err *err) {
  if (s->n_bookie_ids != e)
    return sl_err_set(err, SL_EINVAL, "ledger %" PRIu64 ": ensemble %zu has %zu bookies, want %u",
                      id, i, s->n_bookie_ids, e);
  for (size_t b = 0; b < s->n_bookie_ids; b++) {
    sl_status st = sl_md_check_segment("bookie id", s->bookie_ids[b], err);
    if (st != SL_OK) return sl_err_wrap(err, st, "ledger %" PRIu64 ": ensemble %zu", id, i);
    for (size_t c = 0; c < b; c++) {
      if (strcmp(s->bookie_ids[b], s->bookie_ids[c]) == 0)
        return sl_err_set(err, SL_EINVAL, "ledger %" PRIu64 ": ensemble %zu lists bookie %s twice",
                          id, i, s->bookie_ids[b]);
    }
  }
  return SL_OK;
}

static sl_status check_ledger(uint64_t id, const Sluice__V1__LedgerInfo *l, sl_err *err) {
  char what[48];
  snprintf(what, sizeof(what), "ledger %" PRIu64, id);
  sl_status st = sl_md_check_quorum(what, l->ensemble_size, l->write_quorum, l->ack_quorum, err);
  if (st != SL_OK) return st;
  if ((int)l->state < 0 || l->state > SLUICE__V1__LEDGER_STATE__LEDGER_STATE_CLOSED)
    return sl_err_set(err, SL_EINVAL, "%s: unknown state %d", what, (int)l->state);
  if (l->last_entry_id < -1)
    return sl_err_set(err, SL_EINVAL, "%s: last_entry_id %" PRId64 " below -1", what,
                      l->last_entry_id);
  if (l->password.len > MAX_PASSWORD)
    return sl_err_set(err, SL_EINVAL, "%s: password of %zu bytes, limit is %d", what,
                      l->password.len, MAX_PASSWORD);
  if (l->partition != NULL && l->partition[0] != '\0' &&
      (st = sl_md_check_partition(l->partition, NULL, NULL, err)) != SL_OK)
    return sl_err_wrap(err, st, "%s", what);
  if (l->n_ensembles == 0 || l->n_ensembles > MAX_SEGMENTS)
    return sl_err_set(err, SL_EINVAL, "%s: %zu ensembles, want 1 to %d", what, l->n_ensembles,
                      MAX_SEGMENTS);
  for (size_t i = 0; i < l->n_ensembles; i++) {
    const Sluice__V1__EnsembleSegment *s = l->ensembles[i];
    int64_t want_min = i == 0 ? 0 : l->ensembles[i - 1]->first_entry + 1;
    if ((i == 0 && s->first_entry != 0) || s->first_entry < want_min)
      return sl_err_set(err, SL_EINVAL,
                        "%s: ensemble %zu starts at entry %" PRId64
                        " (the first starts at 0, later ones strictly after)",
                        what, i, s->first_entry);
    if ((st = check_segment(id, i, s, l->ensemble_size, err)) != SL_OK) return st;
  }
  return SL_OK;
}

static bool has_partition(const Sluice__V1__LedgerInfo *l) {
  return l->partition != NULL && l->partition[0] != '\0';
}

static sl_md_key ledger_key(uint64_t id) {
  sl_md_key k;
  sl_md_key_fmt(&k, "ledgers/%" PRIu64, id);
  return k;
}

static void reply_ledger(sl_rpc_call *call, Sluice__V1__LedgerInfo *info, int64_t version) {
  Sluice__V1__LedgerResponse resp = SLUICE__V1__LEDGER_RESPONSE__INIT;
  resp.info = info;
  resp.version = version;
  /* Create, Get and Update all answer a LedgerResponse. */
  sl_rpc_call_finish(call, SL_OK, NULL, &resp.base);
}

/* ---- create ---- */

/* An explicit id must come from the allocator, or a later allocation could
 * collide with it. */
static sl_status check_allocated(sl_md_service *md, uint64_t id, sl_err *err) {
  sl_md_key key;
  uint64_t next;
  int64_t rev;
  sl_md_key_fmt(&key, "ledger-id");
  sl_status st = read_counter(md, &key, &next, &rev, err);
  if (st == SL_OK && id >= next)
    st = sl_err_set(err, SL_EINVAL, "ledger %" PRIu64 ": id was never allocated (use "
                    "AllocateLedgerId, or ledger_id 0)", id);
  return st;
}

static sl_status create_ledger(sl_md_service *md, const Sluice__V1__CreateLedgerRequest *req,
                               Sluice__V1__LedgerInfo *l, int64_t *version, sl_err *err) {
  if (req->info == NULL) return sl_err_set(err, SL_EINVAL, "create ledger: no info given");
  *l = *req->info; /* shallow: only scalars are changed below */
  sl_status st = check_ledger(l->ledger_id, l, err);
  if (st != SL_OK) return st;
  if (l->state != SLUICE__V1__LEDGER_STATE__LEDGER_STATE_OPEN)
    return sl_err_set(err, SL_EINVAL, "ledger %" PRIu64 ": must be created OPEN", l->ledger_id);
  sl_md_epoch guard;
  if (has_partition(l) &&
      (st = sl_md_epoch_check(md, l->partition, req->epoch, &guard, err)) != SL_OK)
    return st;
  if (l->ledger_id == 0)
    st = allocate_id(md, &l->ledger_id, err);
  else
    st = check_allocated(md, l->ledger_id, err);
  if (st != SL_OK) return st;
  l->owner_epoch = req->epoch;
  if (l->create_time_ms == 0) l->create_time_ms = sl_md_now_ms();
  char what[48];
  snprintf(what, sizeof(what), "ledger %" PRIu64, l->ledger_id);
  sl_md_key key = ledger_key(l->ledger_id);
  return sl_md_cas(md, what, &key, &l->base, 0, has_partition(l) ? &guard : NULL, version, err);
}

SL_MD_HANDLER(create_ledger, CreateLedgerRequest) {
  sl_err err = SL_ERR_INIT;
  Sluice__V1__LedgerInfo l;
  int64_t version = 0;
  sl_status st = create_ledger(ctx, req, &l, &version, &err);
  if (st != SL_OK) {
    sl_md_fail(call, st, &err);
    return;
  }
  sl_log(SL_LOG_DEBUG, "event=ledger_created ledger=%" PRIu64 " partition=%s", l.ledger_id,
         l.partition ? l.partition : "");
  reply_ledger(call, &l, version);
}

/* ---- get ---- */

static sl_status read_ledger(sl_md_service *md, uint64_t id, Sluice__V1__LedgerInfo **out,
                             int64_t *version, sl_err *err) {
  if (id == 0) return sl_err_set(err, SL_EINVAL, "ledger id 0: ids start at 1");
  sl_md_key key = ledger_key(id);
  sl_status st = sl_md_read(md, &key, &sluice__v1__ledger_info__descriptor,
                            (ProtobufCMessage **)out, version, NULL, err);
  if (st == SL_ENOTFOUND) return sl_err_set(err, st, "ledger %" PRIu64 ": not found", id);
  return st;
}

SL_MD_HANDLER(get_ledger, GetLedgerRequest) {
  sl_err err = SL_ERR_INIT;
  Sluice__V1__LedgerInfo *l = NULL;
  int64_t version = 0;
  sl_status st = read_ledger(ctx, req->ledger_id, &l, &version, &err);
  if (st != SL_OK) {
    sl_md_fail(call, st, &err);
    return;
  }
  reply_ledger(call, l, version);
  protobuf_c_message_free_unpacked(&l->base, NULL);
}

/* ---- update ---- */

static bool str_eq(const char *a, const char *b) {
  return strcmp(a ? a : "", b ? b : "") == 0;
}

static bool segment_eq(const Sluice__V1__EnsembleSegment *a, const Sluice__V1__EnsembleSegment *b) {
  if (a->first_entry != b->first_entry || a->n_bookie_ids != b->n_bookie_ids) return false;
  for (size_t i = 0; i < a->n_bookie_ids; i++)
    if (!str_eq(a->bookie_ids[i], b->bookie_ids[i])) return false;
  return true;
}

/* Invariant 2. */
static sl_status check_immutable(const Sluice__V1__LedgerInfo *cur,
                                 const Sluice__V1__LedgerInfo *l, sl_err *err) {
  const char *field = NULL;
  if (cur->ensemble_size != l->ensemble_size || cur->write_quorum != l->write_quorum ||
      cur->ack_quorum != l->ack_quorum)
    field = "quorum sizes";
  else if (cur->password.len != l->password.len ||
           (l->password.len > 0 && memcmp(cur->password.data, l->password.data, l->password.len)))
    field = "password";
  else if (!str_eq(cur->partition, l->partition))
    field = "partition";
  else if (cur->owner_epoch != l->owner_epoch)
    field = "owner_epoch";
  else if (cur->create_time_ms != l->create_time_ms)
    field = "create_time_ms";
  if (field != NULL)
    return sl_err_set(err, SL_EINVAL, "ledger %" PRIu64 ": %s cannot change", l->ledger_id, field);
  return SL_OK;
}

/* Invariant 3 for a closed ledger: only bookie ids may differ. */
static sl_status check_closed(const Sluice__V1__LedgerInfo *cur, const Sluice__V1__LedgerInfo *l,
                              sl_err *err) {
  bool same = l->state == cur->state && l->last_entry_id == cur->last_entry_id &&
              l->length_bytes == cur->length_bytes && l->n_ensembles == cur->n_ensembles;
  for (size_t i = 0; same && i < l->n_ensembles; i++)
    same = l->ensembles[i]->first_entry == cur->ensembles[i]->first_entry;
  if (!same)
    return sl_err_set(err, SL_EPRECOND,
                      "ledger %" PRIu64 ": closed; only its bookies may be replaced",
                      l->ledger_id);
  return SL_OK;
}

/* Invariant 3 for an open or recovering ledger. */
static sl_status check_transition(const Sluice__V1__LedgerInfo *cur,
                                  const Sluice__V1__LedgerInfo *l, sl_err *err) {
  if (cur->state == SLUICE__V1__LEDGER_STATE__LEDGER_STATE_IN_RECOVERY &&
      l->state == SLUICE__V1__LEDGER_STATE__LEDGER_STATE_OPEN)
    return sl_err_set(err, SL_EPRECOND, "ledger %" PRIu64 ": in recovery; it cannot reopen",
                      l->ledger_id);
  /* Ensembles before the last are history: entries were written to them. */
  for (size_t i = 0; i + 1 < cur->n_ensembles; i++) {
    if (i >= l->n_ensembles || !segment_eq(cur->ensembles[i], l->ensembles[i]))
      return sl_err_set(err, SL_EINVAL, "ledger %" PRIu64 ": ensemble %zu is history and cannot "
                        "change", l->ledger_id, i);
  }
  return SL_OK;
}

static sl_status update_ledger(sl_md_service *md, const Sluice__V1__UpdateLedgerRequest *req,
                               int64_t *version, sl_err *err) {
  const Sluice__V1__LedgerInfo *l = req->info;
  if (l == NULL) return sl_err_set(err, SL_EINVAL, "update ledger: no info given");
  if (req->expected_version <= 0)
    return sl_err_set(err, SL_EINVAL, "ledger %" PRIu64 ": expected_version must be the version "
                      "read", l->ledger_id);
  Sluice__V1__LedgerInfo *cur = NULL;
  int64_t cur_version = 0;
  sl_status st = read_ledger(md, l->ledger_id, &cur, &cur_version, err);
  if (st != SL_OK) return st;
  char what[48];
  snprintf(what, sizeof(what), "ledger %" PRIu64, l->ledger_id);
  bool closed = cur->state == SLUICE__V1__LEDGER_STATE__LEDGER_STATE_CLOSED;
  sl_md_epoch guard;
  bool guarded = !closed && has_partition(cur);
  if (cur_version != req->expected_version)
    st = sl_err_set(err, SL_EVERSION, "%s: version %" PRId64 " is not the current one (%" PRId64
                    "); re-read and retry", what, req->expected_version, cur_version);
  if (st == SL_OK) st = check_ledger(l->ledger_id, l, err);
  if (st == SL_OK) st = check_immutable(cur, l, err);
  if (st == SL_OK) st = closed ? check_closed(cur, l, err) : check_transition(cur, l, err);
  if (st == SL_OK && guarded) st = sl_md_epoch_check(md, cur->partition, req->epoch, &guard, err);
  if (st == SL_OK) {
    sl_md_key key = ledger_key(l->ledger_id);
    st = sl_md_cas(md, what, &key, &l->base, req->expected_version, guarded ? &guard : NULL,
                   version, err);
  }
  protobuf_c_message_free_unpacked(&cur->base, NULL);
  return st;
}

SL_MD_HANDLER(update_ledger, UpdateLedgerRequest) {
  sl_err err = SL_ERR_INIT;
  int64_t version = 0;
  sl_status st = update_ledger(ctx, req, &version, &err);
  if (st != SL_OK) {
    sl_md_fail(call, st, &err);
    return;
  }
  reply_ledger(call, req->info, version);
}

/* ---- delete ---- */

SL_MD_HANDLER(delete_ledger, DeleteLedgerRequest) {
  sl_md_service *md = ctx;
  sl_err err = SL_ERR_INIT;
  sl_status st = SL_OK;
  if (req->ledger_id == 0) st = sl_err_set(&err, SL_EINVAL, "ledger id 0: ids start at 1");
  if (st == SL_OK && req->expected_version < 0)
    st = sl_err_set(&err, SL_EINVAL, "ledger %" PRIu64 ": negative expected_version",
                    req->ledger_id);
  if (st == SL_OK) {
    sl_md_key key = ledger_key(req->ledger_id);
    int64_t expected = req->expected_version == 0 ? SL_STORE_REV_ANY : req->expected_version;
    st = sl_store_delete(md->store, key.s, key.len, expected, NULL, &err);
    if (st == SL_ENOTFOUND)
      st = sl_err_set(&err, st, "ledger %" PRIu64 ": not found", req->ledger_id);
    else if (st == SL_EVERSION)
      st = sl_err_set(&err, st, "ledger %" PRIu64 ": version %" PRId64
                      " is not the current one; re-read and retry", req->ledger_id,
                      req->expected_version);
  }
  if (st != SL_OK) {
    sl_md_fail(call, sl_md_store_status(st), &err);
    return;
  }
  Sluice__V1__DeleteLedgerResponse resp = SLUICE__V1__DELETE_LEDGER_RESPONSE__INIT;
  sl_metadata_service_delete_ledger_reply(call, &resp);
}
