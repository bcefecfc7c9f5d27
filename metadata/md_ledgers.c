/*
 * Ledger ids and ledger metadata.
 *
 * Ledger ids: the key ledger-id holds the first id nobody has reserved. A
 * replica reserves a block [next, next + ledger_id_block) with one CAS on
 * it and hands ids out of the block from memory.
 *
 * Per partition, last-ledger/<partition> holds the highest ledger id ever
 * created for it; deleted-ledgers/<id> is the tombstone of a deleted ledger.
 *
 * Invariants
 *   1. An id is handed out at most once, across replicas and restarts: a
 *      block belongs to the one replica whose CAS moved the counter past it,
 *      and ids of a block lost in a crash are never reused.
 *   2. A ledger's quorums, password, partition, owner epoch and creation
 *      time never change after CreateLedger.
 *   3. State only moves forward: OPEN -> IN_RECOVERY -> CLOSED, or OPEN ->
 *      CLOSED. A CLOSED ledger keeps its last entry and length forever; only
 *      the bookies of its ensembles may still be replaced, by an update of
 *      kind REREPLICATE that appends one record per replaced bookie.
 *   4. An update (WRITE, RECOVER) or delete of a ledger of a partition
 *      carries the partition's current epoch, checked in the same txn. While
 *      OPEN only owner_epoch writes; a higher epoch only recovers
 *      (recovery_epoch) and closes (metadata.proto, UpdateLedgerRequest).
 *   5. Segments before the last never change (bar re-replication), and the
 *      last segment's first entry never moves back.
 *   6. Ledger ids of one partition strictly increase in creation order:
 *      CreateLedger compares last-ledger/<p> in its txn and writes the new
 *      id there. Every reserved block starts at the counter, which is past
 *      every block reserved before, so a fresh block is always above the
 *      partition's last id, whichever replica created that one.
 *   7. A deleted id is never created again: its tombstone is written in the
 *      delete's txn and compared absent in every create's txn.
 *   8. Only a tombstone tells a bookie to drop its copy of a ledger
 *      (bookie/ledger_sweep.h): a missing record does not.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
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

/* An id above `floor`. If this replica's block lies below it (another
 * replica reserved later and created the partition's last ledger), the
 * rest of the block is dropped and a fresh one reserved: invariant 6. */
static sl_status allocate_id(sl_md_service *md, uint64_t floor, uint64_t *id, sl_err *err) {
  sl_status st = SL_OK;
  pthread_mutex_lock(&md->ids_lock);
  if (md->next_id <= floor) md->next_id = md->end_id;
  if (md->next_id >= md->end_id) st = reserve_block(md, err);
  if (st == SL_OK && md->next_id <= floor)
    st = sl_err_set(err, SL_EINTERNAL, "ledger ids: fresh block at %" PRIu64
                    " is not above partition's last ledger %" PRIu64, md->next_id, floor);
  if (st == SL_OK) *id = md->next_id++;
  pthread_mutex_unlock(&md->ids_lock);
  return st;
}

SL_MD_HANDLER(allocate_ledger_id, AllocateLedgerIdRequest) {
  (void)req;
  sl_err err = SL_ERR_INIT;
  Sluice__V1__AllocateLedgerIdResponse resp = SLUICE__V1__ALLOCATE_LEDGER_ID_RESPONSE__INIT;
  sl_status st = allocate_id(ctx, 0, &resp.ledger_id, &err);
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
    /* Compared as "> previous", never computed as previous + 1: the
     * previous first_entry comes off the wire and may be INT64_MAX. */
    if ((i == 0 && s->first_entry != 0) ||
        (i > 0 && s->first_entry <= l->ensembles[i - 1]->first_entry))
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

sl_md_key sl_md_ledger_key(uint64_t id) {
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

sl_md_key sl_md_tombstone_key(uint64_t id) {
  sl_md_key k;
  sl_md_key_fmt(&k, "deleted-ledgers/%" PRIu64, id);
  return k;
}

static bool key_exists(sl_md_service *md, const sl_md_key *key, sl_status *st, sl_err *err) {
  sl_store_kv kv = {0};
  *st = sl_store_get(md->store, key->s, key->len, &kv, err);
  sl_store_kv_release(&kv);
  bool exists = *st == SL_OK;
  if (*st == SL_ENOTFOUND) *st = SL_OK;
  *st = sl_md_store_status(*st);
  return exists;
}

/* The partition's last ledger id (invariant 6); 0 and rev 0 if none. */
static sl_status read_floor(sl_md_service *md, const sl_md_key *key, uint64_t *floor,
                            int64_t *rev, sl_err *err) {
  ProtobufCMessage *m = NULL;
  *floor = 0;
  *rev = 0;
  sl_status st = sl_md_read(md, key, &sluice__v1__allocate_ledger_id_response__descriptor, &m,
                            rev, NULL, err);
  if (st == SL_ENOTFOUND) return SL_OK;
  if (st != SL_OK) return st;
  *floor = ((Sluice__V1__AllocateLedgerIdResponse *)m)->ledger_id;
  protobuf_c_message_free_unpacked(m, NULL);
  return SL_OK;
}

/* One attempt; SL_EVERSION with *retry set means the partition's last
 * ledger moved meanwhile (another create won): go again. */
static sl_status create_once(sl_md_service *md, const Sluice__V1__CreateLedgerRequest *req,
                             Sluice__V1__LedgerInfo *l, uint64_t explicit_id, int64_t *version,
                             bool *retry, sl_err *err) {
  sl_status st = SL_OK;
  sl_md_epoch guard;
  sl_md_key floor_key;
  uint64_t floor = 0;
  int64_t floor_rev = 0;
  bool part = has_partition(l);
  *retry = false;
  if (part) {
    if ((st = sl_md_epoch_check(md, l->partition, req->epoch, &guard, err)) != SL_OK) return st;
    sl_md_key_fmt(&floor_key, "last-ledger/%s", l->partition);
    if ((st = read_floor(md, &floor_key, &floor, &floor_rev, err)) != SL_OK) return st;
  }
  l->ledger_id = explicit_id;
  if (explicit_id == 0)
    st = allocate_id(md, floor, &l->ledger_id, err);
  else if ((st = check_allocated(md, explicit_id, err)) == SL_OK && explicit_id <= floor)
    st = sl_err_set(err, SL_EINVAL, "ledger %" PRIu64 ": partition %s already has ledger %" PRIu64
                    "; its ledger ids must increase (use ledger_id 0)", explicit_id,
                    l->partition, floor);
  if (st != SL_OK) return st;
  char what[48];
  snprintf(what, sizeof(what), "ledger %" PRIu64, l->ledger_id);
  sl_md_key key = sl_md_ledger_key(l->ledger_id), tomb = sl_md_tombstone_key(l->ledger_id);
  Sluice__V1__AllocateLedgerIdResponse fv = SLUICE__V1__ALLOCATE_LEDGER_ID_RESPONSE__INIT;
  fv.ledger_id = l->ledger_id;
  size_t flen = 0;
  uint8_t *fbuf = part ? sl_md_pack(&fv.base, &flen) : NULL;
  sl_store_cmp cmps[2] = {{tomb.s, tomb.len, SL_STORE_REV_ABSENT},
                          {part ? floor_key.s : NULL, part ? floor_key.len : 0, floor_rev}};
  sl_store_op op = {SL_STORE_OP_PUT, part ? floor_key.s : NULL, part ? floor_key.len : 0, fbuf,
                    flen, 0};
  sl_md_extra extra = {cmps, part ? 2 : 1, &op, part ? 1 : 0};
  st = sl_md_write(md, what, &key, &l->base, SL_STORE_REV_ABSENT, part ? &guard : NULL, &extra,
                   version, err);
  free(fbuf);
  if (st != SL_EVERSION) return st;
  /* An extra compare failed: the tombstone, or the partition's last id. */
  if (key_exists(md, &tomb, &st, err))
    return sl_err_set(err, SL_EDELETED, "%s: was deleted; a deleted id is never reused", what);
  if (st != SL_OK) return st;
  *retry = true;
  return sl_err_set(err, SL_EVERSION, "%s: partition %s: another ledger was created meanwhile",
                    what, l->partition);
}

static sl_status create_ledger(sl_md_service *md, const Sluice__V1__CreateLedgerRequest *req,
                               Sluice__V1__LedgerInfo *l, int64_t *version, sl_err *err) {
  if (req->info == NULL) return sl_err_set(err, SL_EINVAL, "create ledger: no info given");
  *l = *req->info; /* shallow: only scalars are changed below */
  sl_status st = check_ledger(l->ledger_id, l, err);
  if (st != SL_OK) return st;
  if (l->state != SLUICE__V1__LEDGER_STATE__LEDGER_STATE_OPEN)
    return sl_err_set(err, SL_EINVAL, "ledger %" PRIu64 ": must be created OPEN", l->ledger_id);
  if (l->recovery_epoch != 0 || l->n_rereplications != 0)
    return sl_err_set(err, SL_EINVAL, "ledger %" PRIu64 ": a new ledger has no recovery epoch "
                      "and no re-replications", l->ledger_id);
  l->owner_epoch = req->epoch;
  if (l->create_time_ms == 0) l->create_time_ms = sl_clock_wall_ms();
  uint64_t explicit_id = l->ledger_id;
  bool retry = true;
  for (int i = 0; i < SL_MD_RETRIES && retry; i++)
    st = create_once(md, req, l, explicit_id, version, &retry, err);
  return st;
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

/* ---- tombstones of a deleted topic's ledgers ---- */

sl_status sl_md_ledgers_tombstone(sl_md_service *md, const uint64_t *ids, size_t n,
                                  sl_err *err) {
  enum { PER_TXN = SL_STORE_TXN_MAX / 2 };
  sl_md_key keys[2 * PER_TXN];
  sl_store_op ops[2 * PER_TXN];
  for (size_t done = 0; done < n;) {
    size_t k = 0;
    for (; k < PER_TXN && done + k < n; k++) {
      keys[2 * k] = sl_md_ledger_key(ids[done + k]);
      keys[2 * k + 1] = sl_md_tombstone_key(ids[done + k]);
      ops[2 * k] = (sl_store_op){SL_STORE_OP_DELETE, keys[2 * k].s, keys[2 * k].len, NULL, 0, 0};
      ops[2 * k + 1] = (sl_store_op){SL_STORE_OP_PUT, keys[2 * k + 1].s, keys[2 * k + 1].len,
                                     "", 0, 0};
    }
    sl_status st = sl_store_txn(md->store, NULL, 0, ops, 2 * k, NULL, err);
    if (st != SL_OK) return sl_md_store_status(st);
    done += k;
  }
  return SL_OK;
}

/* ---- get ---- */

static sl_status read_ledger(sl_md_service *md, uint64_t id, Sluice__V1__LedgerInfo **out,
                             int64_t *version, sl_err *err) {
  if (id == 0) return sl_err_set(err, SL_EINVAL, "ledger id 0: ids start at 1");
  sl_md_key key = sl_md_ledger_key(id);
  sl_status st = sl_md_read(md, &key, &sluice__v1__ledger_info__descriptor,
                            (ProtobufCMessage **)out, version, NULL, err);
  if (st != SL_ENOTFOUND) return st;
  sl_md_key tomb = sl_md_tombstone_key(id);
  if (key_exists(md, &tomb, &st, err))
    return sl_err_set(err, SL_EDELETED, "ledger %" PRIu64 ": deleted", id);
  if (st != SL_OK) return st;
  return sl_err_set(err, SL_ENOTFOUND, "ledger %" PRIu64 ": not found", id);
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

static bool ensembles_eq(const Sluice__V1__LedgerInfo *a, const Sluice__V1__LedgerInfo *b) {
  if (a->n_ensembles != b->n_ensembles) return false;
  for (size_t i = 0; i < a->n_ensembles; i++)
    if (!segment_eq(a->ensembles[i], b->ensembles[i])) return false;
  return true;
}

static bool rerep_eq(const Sluice__V1__Rereplication *a, const Sluice__V1__Rereplication *b) {
  return a->segment == b->segment && a->time_ms == b->time_ms &&
         str_eq(a->from_bookie, b->from_bookie) && str_eq(a->to_bookie, b->to_bookie);
}

/* The stored re-replication records are a prefix of the new ones; *added
 * gets how many follow it. */
static sl_status check_rerep_prefix(const Sluice__V1__LedgerInfo *cur,
                                    const Sluice__V1__LedgerInfo *l, size_t *added,
                                    sl_err *err) {
  bool ok = l->n_rereplications >= cur->n_rereplications;
  for (size_t i = 0; ok && i < cur->n_rereplications; i++)
    ok = rerep_eq(cur->rereplications[i], l->rereplications[i]);
  if (!ok)
    return sl_err_set(err, SL_EINVAL, "ledger %" PRIu64 ": re-replication records are only "
                      "ever appended", l->ledger_id);
  *added = l->n_rereplications - cur->n_rereplications;
  return SL_OK;
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

/* Invariant 5: history stays, and the last segment's start never moves
 * back. */
static sl_status check_segments(const Sluice__V1__LedgerInfo *cur,
                                const Sluice__V1__LedgerInfo *l, sl_err *err) {
  for (size_t i = 0; i + 1 < cur->n_ensembles; i++) {
    if (i >= l->n_ensembles || !segment_eq(cur->ensembles[i], l->ensembles[i]))
      return sl_err_set(err, SL_EINVAL, "ledger %" PRIu64 ": ensemble %zu is history and cannot "
                        "change", l->ledger_id, i);
  }
  int64_t was = cur->ensembles[cur->n_ensembles - 1]->first_entry;
  size_t at = cur->n_ensembles - 1;
  if (l->n_ensembles < cur->n_ensembles || l->ensembles[at]->first_entry < was)
    return sl_err_set(err, SL_EINVAL, "ledger %" PRIu64 ": the last ensemble starts at entry %"
                      PRId64 "; it cannot move back", l->ledger_id, was);
  return SL_OK;
}

/* Kind REREPLICATE (invariant 3): a CLOSED ledger keeps everything but
 * bookie ids, and each replaced bookie has exactly one new record naming
 * that change. */
static sl_status check_rereplicate(const Sluice__V1__LedgerInfo *cur,
                                   const Sluice__V1__LedgerInfo *l, sl_err *err) {
  uint64_t id = l->ledger_id;
  if (cur->state != SLUICE__V1__LEDGER_STATE__LEDGER_STATE_CLOSED)
    return sl_err_set(err, SL_EPRECOND, "ledger %" PRIu64 ": re-replication is for CLOSED "
                      "ledgers only", id);
  bool same = l->state == cur->state && l->last_entry_id == cur->last_entry_id &&
              l->length_bytes == cur->length_bytes && l->n_ensembles == cur->n_ensembles &&
              l->recovery_epoch == cur->recovery_epoch;
  for (size_t i = 0; same && i < l->n_ensembles; i++)
    same = l->ensembles[i]->first_entry == cur->ensembles[i]->first_entry;
  if (!same)
    return sl_err_set(err, SL_EPRECOND, "ledger %" PRIu64 ": closed; only its bookies may be "
                      "replaced", id);
  size_t added;
  sl_status st = check_rerep_prefix(cur, l, &added, err);
  if (st != SL_OK) return st;
  size_t changed = 0;
  for (size_t s = 0; s < l->n_ensembles; s++) {
    const Sluice__V1__EnsembleSegment *a = cur->ensembles[s], *b = l->ensembles[s];
    for (size_t b_i = 0; b_i < b->n_bookie_ids; b_i++) {
      if (str_eq(a->bookie_ids[b_i], b->bookie_ids[b_i])) continue;
      changed++;
      size_t found = 0;
      for (size_t r = cur->n_rereplications; r < l->n_rereplications; r++) {
        const Sluice__V1__Rereplication *x = l->rereplications[r];
        found += x->segment == s && str_eq(x->from_bookie, a->bookie_ids[b_i]) &&
                 str_eq(x->to_bookie, b->bookie_ids[b_i]);
      }
      if (found != 1)
        return sl_err_set(err, SL_EINVAL, "ledger %" PRIu64 ": ensemble %zu: %s replaced by %s "
                          "needs exactly one re-replication record, has %zu", id, s,
                          a->bookie_ids[b_i], b->bookie_ids[b_i], found);
    }
  }
  if (changed == 0 || changed != added)
    return sl_err_set(err, SL_EINVAL, "ledger %" PRIu64 ": %zu bookies replaced but %zu "
                      "re-replication records added", id, changed, added);
  return SL_OK;
}

/* Kind WRITE (invariant 4): the creating epoch, on an OPEN ledger. */
static sl_status check_write(const Sluice__V1__LedgerInfo *cur, const Sluice__V1__LedgerInfo *l,
                             uint64_t epoch, sl_err *err) {
  uint64_t id = l->ledger_id;
  if (cur->state == SLUICE__V1__LEDGER_STATE__LEDGER_STATE_IN_RECOVERY)
    return sl_err_set(err, SL_EFENCED, "ledger %" PRIu64 ": in recovery by epoch %" PRIu64
                      "; its writer is fenced", id, cur->recovery_epoch);
  if (cur->state != SLUICE__V1__LEDGER_STATE__LEDGER_STATE_OPEN)
    return sl_err_set(err, SL_EPRECOND, "ledger %" PRIu64 ": closed; only re-replication "
                      "changes it", id);
  if (has_partition(cur) && epoch != cur->owner_epoch)
    return sl_err_set(err, SL_ESTALE_EPOCH, "ledger %" PRIu64 ": open, and only its creating "
                      "epoch %" PRIu64 " may write it, not %" PRIu64 " (a newer owner "
                      "recovers it)", id, cur->owner_epoch, epoch);
  if (l->state == SLUICE__V1__LEDGER_STATE__LEDGER_STATE_IN_RECOVERY || l->recovery_epoch != 0)
    return sl_err_set(err, SL_EINVAL, "ledger %" PRIu64 ": recovery is an update of kind "
                      "RECOVER", id);
  return SL_OK;
}

/* Kind RECOVER (invariant 4): a newer epoch moves it to IN_RECOVERY, and
 * the recovery epoch closes it. */
static sl_status check_recover(const Sluice__V1__LedgerInfo *cur, const Sluice__V1__LedgerInfo *l,
                               uint64_t epoch, sl_err *err) {
  uint64_t id = l->ledger_id;
  bool recovering = cur->state == SLUICE__V1__LEDGER_STATE__LEDGER_STATE_IN_RECOVERY;
  if (cur->state == SLUICE__V1__LEDGER_STATE__LEDGER_STATE_CLOSED)
    return sl_err_set(err, SL_EPRECOND, "ledger %" PRIu64 ": closed already", id);
  if (epoch <= cur->owner_epoch)
    return sl_err_set(err, SL_EPRECOND, "ledger %" PRIu64 ": epoch %" PRIu64 " created it; "
                      "recovery is for a newer epoch", id, epoch);
  if (recovering && epoch < cur->recovery_epoch)
    return sl_err_set(err, SL_ESTALE_EPOCH, "ledger %" PRIu64 ": epoch %" PRIu64 " recovers it, "
                      "not %" PRIu64, id, cur->recovery_epoch, epoch);
  bool mine = recovering && epoch == cur->recovery_epoch;
  switch (l->state) {
    case SLUICE__V1__LEDGER_STATE__LEDGER_STATE_OPEN:
      return sl_err_set(err, SL_EPRECOND, "ledger %" PRIu64 ": a newer owner cannot keep it "
                        "open; it may only recover and close it", id);
    case SLUICE__V1__LEDGER_STATE__LEDGER_STATE_IN_RECOVERY:
      if (l->recovery_epoch != epoch)
        return sl_err_set(err, SL_EINVAL, "ledger %" PRIu64 ": recovery_epoch must be the "
                          "caller's epoch %" PRIu64, id, epoch);
      break;
    default: /* CLOSED */
      if (!mine)
        return sl_err_set(err, SL_EPRECOND, "ledger %" PRIu64 ": only its recovery epoch "
                          "closes it; move it to IN_RECOVERY first", id);
      if (l->recovery_epoch != cur->recovery_epoch)
        return sl_err_set(err, SL_EINVAL, "ledger %" PRIu64 ": recovery_epoch cannot change "
                          "on close", id);
      break;
  }
  /* Writing entries back may need an ensemble change, by the recovery
   * epoch only; taking over a recovery changes nothing else. */
  if (!mine && !ensembles_eq(cur, l))
    return sl_err_set(err, SL_EINVAL, "ledger %" PRIu64 ": move it to IN_RECOVERY before "
                      "changing its ensemble", id);
  return SL_OK;
}

static sl_status check_update(const Sluice__V1__UpdateLedgerRequest *req,
                              const Sluice__V1__LedgerInfo *cur, sl_err *err) {
  const Sluice__V1__LedgerInfo *l = req->info;
  sl_status st = check_ledger(l->ledger_id, l, err);
  if (st == SL_OK) st = check_immutable(cur, l, err);
  if (st != SL_OK) return st;
  size_t added = 0;
  switch (req->kind) {
    case SLUICE__V1__LEDGER_UPDATE_KIND__LEDGER_UPDATE_REREPLICATE:
      return check_rereplicate(cur, l, err);
    case SLUICE__V1__LEDGER_UPDATE_KIND__LEDGER_UPDATE_WRITE:
      st = check_write(cur, l, req->epoch, err);
      break;
    case SLUICE__V1__LEDGER_UPDATE_KIND__LEDGER_UPDATE_RECOVER:
      st = check_recover(cur, l, req->epoch, err);
      break;
    default:
      return sl_err_set(err, SL_EINVAL, "ledger %" PRIu64 ": unknown update kind %d",
                        l->ledger_id, (int)req->kind);
  }
  if (st == SL_OK) st = check_rerep_prefix(cur, l, &added, err);
  if (st == SL_OK && added != 0)
    st = sl_err_set(err, SL_EINVAL, "ledger %" PRIu64 ": re-replication records come with "
                    "kind REREPLICATE", l->ledger_id);
  if (st == SL_OK) st = check_segments(cur, l, err);
  return st;
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
  sl_md_epoch guard;
  bool guarded = has_partition(cur) &&
                 req->kind != SLUICE__V1__LEDGER_UPDATE_KIND__LEDGER_UPDATE_REREPLICATE;
  if (cur_version != req->expected_version)
    st = sl_err_set(err, SL_EVERSION, "%s: version %" PRId64 " is not the current one (%" PRId64
                    "); re-read and retry", what, req->expected_version, cur_version);
  /* The partition's epoch first: a stale owner hears "stale" whatever it
   * asked for. */
  if (st == SL_OK && guarded) st = sl_md_epoch_check(md, cur->partition, req->epoch, &guard, err);
  if (st == SL_OK) st = check_update(req, cur, err);
  if (st == SL_OK) {
    sl_md_key key = sl_md_ledger_key(l->ledger_id);
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

static sl_status delete_ledger(sl_md_service *md, const Sluice__V1__DeleteLedgerRequest *req,
                               sl_err *err) {
  if (req->expected_version < 0)
    return sl_err_set(err, SL_EINVAL, "ledger %" PRIu64 ": negative expected_version",
                      req->ledger_id);
  Sluice__V1__LedgerInfo *cur = NULL;
  int64_t cur_version = 0;
  sl_status st = read_ledger(md, req->ledger_id, &cur, &cur_version, err);
  if (st == SL_EDELETED) return sl_err_set(err, SL_ENOTFOUND, "ledger %" PRIu64 ": deleted "
                                           "already", req->ledger_id);
  if (st != SL_OK) return st;
  char what[48];
  snprintf(what, sizeof(what), "ledger %" PRIu64, req->ledger_id);
  sl_md_epoch guard;
  bool guarded = has_partition(cur);
  if (req->expected_version != 0 && req->expected_version != cur_version)
    st = sl_err_set(err, SL_EVERSION, "%s: version %" PRId64 " is not the current one; re-read "
                    "and retry", what, req->expected_version);
  if (st == SL_OK && guarded) st = sl_md_epoch_check(md, cur->partition, req->epoch, &guard, err);
  if (st == SL_OK && cur->state != SLUICE__V1__LEDGER_STATE__LEDGER_STATE_CLOSED)
    st = sl_err_set(err, SL_EPRECOND, "%s: not closed; only CLOSED ledgers are deleted", what);
  if (st == SL_OK) {
    sl_md_key key = sl_md_ledger_key(req->ledger_id), tomb = sl_md_tombstone_key(req->ledger_id);
    sl_store_op op = {SL_STORE_OP_PUT, tomb.s, tomb.len, "", 0, 0};
    sl_md_extra extra = {NULL, 0, &op, 1};
    st = sl_md_write(md, what, &key, NULL, cur_version, guarded ? &guard : NULL, &extra, NULL,
                     err);
  }
  protobuf_c_message_free_unpacked(&cur->base, NULL);
  return st;
}

SL_MD_HANDLER(delete_ledger, DeleteLedgerRequest) {
  sl_err err = SL_ERR_INIT;
  sl_status st = delete_ledger(ctx, req, &err);
  if (st != SL_OK) {
    sl_md_fail(call, st, &err);
    return;
  }
  sl_log(SL_LOG_DEBUG, "event=ledger_deleted ledger=%" PRIu64, req->ledger_id);
  Sluice__V1__DeleteLedgerResponse resp = SLUICE__V1__DELETE_LEDGER_RESPONSE__INIT;
  sl_metadata_service_delete_ledger_reply(call, &resp);
}
