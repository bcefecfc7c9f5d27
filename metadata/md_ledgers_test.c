/* Ledger ids and ledger metadata over real gRPC to a local-store service. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "tests/metadata_util.h"

#define P "public/orders-partition-0"

static int setup(void **state) {
  sl_md_service_opts o = SL_MD_SERVICE_OPTS_INIT;
  o.ledger_id_block = 3; /* cross block boundaries often */
  *state = mdt_local_new(&o);
  return 0;
}

static sl_status create(sl_rpc_channel *ch, Sluice__V1__LedgerInfo *l, uint64_t epoch,
                        Sluice__V1__LedgerResponse **out, sl_err *err) {
  Sluice__V1__CreateLedgerRequest req = SLUICE__V1__CREATE_LEDGER_REQUEST__INIT;
  req.info = l;
  req.epoch = epoch;
  Sluice__V1__LedgerResponse *resp = NULL;
  sl_status st = sl_metadata_service_create_ledger(ch, &req, &resp, NULL, err);
  if (out != NULL)
    *out = resp;
  else if (resp != NULL)
    protobuf_c_message_free_unpacked(&resp->base, NULL);
  return st;
}

static sl_status get(sl_rpc_channel *ch, uint64_t id, Sluice__V1__LedgerResponse **out,
                     sl_err *err) {
  Sluice__V1__GetLedgerRequest req = SLUICE__V1__GET_LEDGER_REQUEST__INIT;
  req.ledger_id = id;
  return sl_metadata_service_get_ledger(ch, &req, out, NULL, err);
}

#define WRITE SLUICE__V1__LEDGER_UPDATE_KIND__LEDGER_UPDATE_WRITE
#define RECOVER SLUICE__V1__LEDGER_UPDATE_KIND__LEDGER_UPDATE_RECOVER
#define REREPLICATE SLUICE__V1__LEDGER_UPDATE_KIND__LEDGER_UPDATE_REREPLICATE

static sl_status update_kind(sl_rpc_channel *ch, Sluice__V1__LedgerInfo *l, int64_t expected,
                             uint64_t epoch, Sluice__V1__LedgerUpdateKind kind, int64_t *version,
                             sl_err *err) {
  Sluice__V1__UpdateLedgerRequest req = SLUICE__V1__UPDATE_LEDGER_REQUEST__INIT;
  req.info = l;
  req.expected_version = expected;
  req.epoch = epoch;
  req.kind = kind;
  Sluice__V1__LedgerResponse *resp = NULL;
  sl_status st = sl_metadata_service_update_ledger(ch, &req, &resp, NULL, err);
  if (st == SL_OK) {
    if (version) *version = resp->version;
    protobuf_c_message_free_unpacked(&resp->base, NULL);
  }
  return st;
}

/* A writer's update (kind WRITE). */
static sl_status update(sl_rpc_channel *ch, Sluice__V1__LedgerInfo *l, int64_t expected,
                        uint64_t epoch, int64_t *version, sl_err *err) {
  return update_kind(ch, l, expected, epoch, WRITE, version, err);
}

static sl_status delete_ledger_at(sl_rpc_channel *ch, uint64_t id, int64_t expected,
                                  uint64_t epoch, sl_err *err) {
  Sluice__V1__DeleteLedgerRequest req = SLUICE__V1__DELETE_LEDGER_REQUEST__INIT;
  req.ledger_id = id;
  req.expected_version = expected;
  req.epoch = epoch;
  Sluice__V1__DeleteLedgerResponse *resp = NULL;
  sl_status st = sl_metadata_service_delete_ledger(ch, &req, &resp, NULL, err);
  if (resp) protobuf_c_message_free_unpacked(&resp->base, NULL);
  return st;
}

static sl_status delete_ledger(sl_rpc_channel *ch, uint64_t id, int64_t expected, sl_err *err) {
  return delete_ledger_at(ch, id, expected, 0, err);
}

/* Closes a ledger of no partition at entry -1 (empty) as its writer. */
static int64_t close_ledger(sl_rpc_channel *ch, uint64_t id) {
  Sluice__V1__LedgerResponse *r = NULL;
  sl_err err = SL_ERR_INIT;
  mdt_expect(get(ch, id, &r, &err), SL_OK, &err);
  r->info->state = SLUICE__V1__LEDGER_STATE__LEDGER_STATE_CLOSED;
  r->info->last_entry_id = -1;
  int64_t v = 0;
  mdt_expect(update(ch, r->info, r->version, r->info->owner_epoch, &v, &err), SL_OK, &err);
  protobuf_c_message_free_unpacked(&r->base, NULL);
  return v;
}

static uint64_t own(mdt_local *l, const char *broker, int64_t *session) {
  return mdt_own(l->ch, P, broker, session);
}

static void disown(mdt_local *l, int64_t session, uint64_t epoch) {
  mdt_disown(l->ch, P, session, epoch);
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static void test_md_ledgers__ids_unique_across_replicas(void **state) {
  mdt_local *l = *state;
  /* A second service on the same store stands for a second replica. */
  sl_md_service_opts o = SL_MD_SERVICE_OPTS_INIT;
  o.ledger_id_block = 2;
  mdt_local r2;
  mdt_replica_start(&r2, l->store, &o);
  sl_rpc_channel *ch2 = r2.ch;
  enum { N = 60 };
  uint64_t ids[N];
  for (int i = 0; i < N; i++) {
    ids[i] = mdt_allocate_ledger_id(i % 3 == 0 ? ch2 : l->ch);
    assert_true(ids[i] > 0);
  }
  qsort(ids, N, sizeof(ids[0]), cmp_u64);
  for (int i = 1; i < N; i++) assert_true(ids[i] != ids[i - 1]);
  mdt_local_stop(&r2);
}

static void test_md_ledgers__create_get_delete(void **state) {
  mdt_local *l = *state;
  sl_err err = SL_ERR_INIT;
  Sluice__V1__LedgerInfo info;
  Sluice__V1__EnsembleSegment seg;
  mdt_ledger_init(&info, &seg, NULL);
  info.password.data = (uint8_t *)"pw";
  info.password.len = 2;
  Sluice__V1__LedgerResponse *r = NULL;
  mdt_expect(create(l->ch, &info, 0, &r, &err), SL_OK, &err);
  uint64_t id = r->info->ledger_id;
  int64_t v = r->version;
  assert_true(id > 0 && v > 0);
  assert_true(r->info->create_time_ms > 0);
  protobuf_c_message_free_unpacked(&r->base, NULL);

  mdt_expect(get(l->ch, id, &r, &err), SL_OK, &err);
  assert_int_equal(r->version, v);
  assert_int_equal(r->info->ledger_id, id);
  assert_int_equal(r->info->password.len, 2);
  assert_int_equal(r->info->ensembles[0]->n_bookie_ids, 1);
  protobuf_c_message_free_unpacked(&r->base, NULL);

  /* An explicit id must have been allocated, and only once created. */
  info.ledger_id = 1000000;
  mdt_expect(create(l->ch, &info, 0, NULL, &err), SL_EINVAL, &err);
  assert_non_null(strstr(err.msg, "never allocated"));
  info.ledger_id = mdt_allocate_ledger_id(l->ch);
  mdt_expect(create(l->ch, &info, 0, NULL, &err), SL_OK, &err);
  mdt_expect(create(l->ch, &info, 0, NULL, &err), SL_EEXIST, &err);

  /* Only CLOSED ledgers are deleted. */
  mdt_expect(delete_ledger(l->ch, id, v, &err), SL_EPRECOND, &err);
  assert_non_null(strstr(err.msg, "not closed"));
  v = close_ledger(l->ch, id);
  mdt_expect(delete_ledger(l->ch, id, v + 100, &err), SL_EVERSION, &err);
  mdt_expect(delete_ledger(l->ch, id, v, &err), SL_OK, &err);
  mdt_expect(delete_ledger(l->ch, id, 0, &err), SL_ENOTFOUND, &err);
  mdt_expect(get(l->ch, id, &r, &err), SL_EDELETED, &err);
  assert_non_null(strstr(err.msg, "deleted"));
  close_ledger(l->ch, info.ledger_id);
  mdt_expect(delete_ledger(l->ch, info.ledger_id, 0, &err), SL_OK, &err);
  /* A deleted id can never be created again. */
  mdt_expect(create(l->ch, &info, 0, NULL, &err), SL_EDELETED, &err);
  assert_non_null(strstr(err.msg, "deleted"));
  mdt_expect(get(l->ch, 0, &r, &err), SL_EINVAL, &err);
  mdt_expect(get(l->ch, 987654321, &r, &err), SL_ENOTFOUND, &err);
  mdt_expect(delete_ledger(l->ch, 0, 0, &err), SL_EINVAL, &err);
  mdt_expect(delete_ledger(l->ch, 5, -3, &err), SL_EINVAL, &err);
}

static void test_md_ledgers__lifecycle_and_epochs(void **state) {
  mdt_local *l = *state;
  sl_err err = SL_ERR_INIT;
  int64_t s1, s2;
  uint64_t e1 = own(l, "b1", &s1);
  int64_t v = 0;
  uint64_t id = mdt_create_ledger(l->ch, P, e1, &v);
  Sluice__V1__LedgerResponse *r = NULL;
  mdt_expect(get(l->ch, id, &r, &err), SL_OK, &err);
  Sluice__V1__LedgerInfo *cur = r->info;
  assert_int_equal(cur->owner_epoch, e1);
  assert_string_equal(cur->partition, P);

  /* Ensemble change while open: a new segment from entry 10. */
  char *bk1[] = {"b1"}, *bk2[] = {"b2"};
  Sluice__V1__EnsembleSegment s_new = SLUICE__V1__ENSEMBLE_SEGMENT__INIT;
  s_new.first_entry = 10;
  s_new.n_bookie_ids = 1;
  s_new.bookie_ids = bk1;
  Sluice__V1__EnsembleSegment *seg0 = cur->ensembles[0];
  Sluice__V1__EnsembleSegment *segs[] = {seg0, &s_new};
  Sluice__V1__EnsembleSegment **old_segs = cur->ensembles;
  size_t old_n = cur->n_ensembles;
  cur->ensembles = segs;
  cur->n_ensembles = 2;
  mdt_expect(update(l->ch, cur, v, e1, &v, &err), SL_OK, &err);
  /* Old versions and bad epochs lose; a version is required. */
  mdt_expect(update(l->ch, cur, v - 1, e1, NULL, &err), SL_EVERSION, &err);
  mdt_expect(update(l->ch, cur, v, e1 + 1, NULL, &err), SL_EPRECOND, &err);
  mdt_expect(update(l->ch, cur, 0, e1, NULL, &err), SL_EINVAL, &err);
  /* Immutable fields. */
  cur->ack_quorum = 2;
  mdt_expect(update(l->ch, cur, v, e1, NULL, &err), SL_EINVAL, &err);
  cur->ack_quorum = 1;
  char *old_part = cur->partition;
  cur->partition = "public/other";
  mdt_expect(update(l->ch, cur, v, e1, NULL, &err), SL_EINVAL, &err);
  cur->partition = old_part;
  /* History cannot be rewritten: segment 0 has entries now. */
  Sluice__V1__EnsembleSegment s0 = SLUICE__V1__ENSEMBLE_SEGMENT__INIT;
  s0.n_bookie_ids = 1;
  s0.bookie_ids = bk2;
  segs[0] = &s0;
  mdt_expect(update(l->ch, cur, v, e1, NULL, &err), SL_EINVAL, &err);
  segs[0] = seg0;

  /* b2 takes over and fences: IN_RECOVERY with its higher epoch. */
  disown(l, s1, e1);
  uint64_t e2 = own(l, "b2", &s2);
  assert_true(e2 > e1);
  cur->state = SLUICE__V1__LEDGER_STATE__LEDGER_STATE_IN_RECOVERY;
  cur->recovery_epoch = e2;
  mdt_expect(update_kind(l->ch, cur, v, e1, RECOVER, NULL, &err), SL_ESTALE_EPOCH, &err);
  assert_non_null(strstr(err.msg, "stale")); /* b1 */
  /* A writer's update by the new owner is no way to recover. */
  mdt_expect(update(l->ch, cur, v, e2, NULL, &err), SL_ESTALE_EPOCH, &err);
  cur->recovery_epoch = e1;
  mdt_expect(update_kind(l->ch, cur, v, e2, RECOVER, NULL, &err), SL_EINVAL, &err);
  cur->recovery_epoch = e2;
  mdt_expect(update_kind(l->ch, cur, v, e2, RECOVER, &v, &err), SL_OK, &err);
  /* Nobody reopens or extends it: not the old writer, not the new owner. */
  cur->state = SLUICE__V1__LEDGER_STATE__LEDGER_STATE_OPEN;
  mdt_expect(update_kind(l->ch, cur, v, e2, RECOVER, NULL, &err), SL_EPRECOND, &err);
  mdt_expect(update(l->ch, cur, v, e2, NULL, &err), SL_EFENCED, &err);
  mdt_expect(update(l->ch, cur, v, e1, NULL, &err), SL_ESTALE_EPOCH, &err);
  /* b2 closes it at the last entry it recovered. */
  cur->state = SLUICE__V1__LEDGER_STATE__LEDGER_STATE_CLOSED;
  cur->last_entry_id = 41;
  cur->length_bytes = 4200;
  mdt_expect(update(l->ch, cur, v, e2, NULL, &err), SL_EFENCED, &err);
  mdt_expect(update_kind(l->ch, cur, v, e2, RECOVER, &v, &err), SL_OK, &err);
  /* Closed is final... */
  cur->last_entry_id = 42;
  mdt_expect(update_kind(l->ch, cur, v, e2, RECOVER, NULL, &err), SL_EPRECOND, &err);
  mdt_expect(update_kind(l->ch, cur, v, 0, REREPLICATE, NULL, &err), SL_EPRECOND, &err);
  cur->last_entry_id = 41;
  s_new.first_entry = 11;
  mdt_expect(update_kind(l->ch, cur, v, 0, REREPLICATE, NULL, &err), SL_EPRECOND, &err);
  s_new.first_entry = 10;
  /* ...except that re-replication may swap a bookie, with no epoch, if it
   * records where the copies went. */
  s_new.bookie_ids = bk2;
  mdt_expect(update_kind(l->ch, cur, v, 0, REREPLICATE, NULL, &err), SL_EINVAL, &err);
  assert_non_null(strstr(err.msg, "re-replication record"));
  mdt_expect(update_kind(l->ch, cur, v, e2, WRITE, NULL, &err), SL_EPRECOND, &err);
  Sluice__V1__Rereplication rr = SLUICE__V1__REREPLICATION__INIT;
  rr.segment = 1;
  rr.from_bookie = "b2"; /* wrong: b1 was there */
  rr.to_bookie = "b2";
  Sluice__V1__Rereplication *rrs[] = {&rr};
  cur->rereplications = rrs;
  cur->n_rereplications = 1;
  mdt_expect(update_kind(l->ch, cur, v, 0, REREPLICATE, NULL, &err), SL_EINVAL, &err);
  rr.from_bookie = "b1";
  mdt_expect(update_kind(l->ch, cur, v, 0, REREPLICATE, &v, &err), SL_OK, &err);
  cur->rereplications = NULL;
  cur->n_rereplications = 0;
  cur->ensembles = old_segs;
  cur->n_ensembles = old_n;
  protobuf_c_message_free_unpacked(&r->base, NULL);
  mdt_expect(get(l->ch, id, &r, &err), SL_OK, &err);
  assert_int_equal(r->version, v);
  assert_int_equal(r->info->state, SLUICE__V1__LEDGER_STATE__LEDGER_STATE_CLOSED);
  assert_int_equal(r->info->last_entry_id, 41);
  assert_string_equal(r->info->ensembles[1]->bookie_ids[0], "b2");
  assert_int_equal(r->info->recovery_epoch, e2);
  assert_int_equal(r->info->n_rereplications, 1);
  assert_string_equal(r->info->rereplications[0]->from_bookie, "b1");
  /* The record stays: dropping it is refused. */
  Sluice__V1__Rereplication **kept = r->info->rereplications;
  r->info->n_rereplications = 0;
  mdt_expect(update_kind(l->ch, r->info, v, 0, REREPLICATE, NULL, &err), SL_EINVAL, &err);
  r->info->n_rereplications = 1;
  r->info->rereplications = kept;
  /* Deletes need the owner's current epoch. */
  mdt_expect(delete_ledger_at(l->ch, id, v, e1, &err), SL_ESTALE_EPOCH, &err);
  assert_non_null(strstr(err.msg, "stale"));
  mdt_expect(delete_ledger_at(l->ch, id, v, e2, &err), SL_OK, &err);
  protobuf_c_message_free_unpacked(&r->base, NULL);
  /* A stale owner cannot even create ledgers for the partition. */
  Sluice__V1__LedgerInfo info;
  Sluice__V1__EnsembleSegment seg;
  mdt_ledger_init(&info, &seg, P);
  mdt_expect(create(l->ch, &info, e1, NULL, &err), SL_ESTALE_EPOCH, &err);
}

/* Pulsar's message-id rollback: a newer owner must not keep the old
 * owner's ledger OPEN and append to it; it may only recover and close. */
static void test_md_ledgers__newer_owner_cannot_keep_old_ledger_open(void **state) {
  mdt_local *l = *state;
  sl_err err = SL_ERR_INIT;
  int64_t s1, s2, v = 0;
  uint64_t e1 = own(l, "b1", &s1);
  uint64_t id = mdt_create_ledger(l->ch, P, e1, &v);
  disown(l, s1, e1);
  uint64_t e2 = own(l, "b2", &s2);
  Sluice__V1__LedgerResponse *r = NULL;
  mdt_expect(get(l->ch, id, &r, &err), SL_OK, &err);
  Sluice__V1__LedgerInfo *cur = r->info;
  /* Appending a segment (keeping it OPEN) as the new owner: refused. */
  char *bk[] = {"b9"};
  Sluice__V1__EnsembleSegment more = SLUICE__V1__ENSEMBLE_SEGMENT__INIT;
  more.first_entry = 5;
  more.n_bookie_ids = 1;
  more.bookie_ids = bk;
  Sluice__V1__EnsembleSegment *segs[] = {cur->ensembles[0], &more};
  Sluice__V1__EnsembleSegment **old = cur->ensembles;
  cur->ensembles = segs;
  cur->n_ensembles = 2;
  mdt_expect(update(l->ch, cur, r->version, e2, NULL, &err), SL_ESTALE_EPOCH, &err);
  assert_non_null(strstr(err.msg, "only its creating epoch"));
  mdt_expect(update_kind(l->ch, cur, r->version, e2, RECOVER, NULL, &err), SL_EPRECOND, &err);
  assert_non_null(strstr(err.msg, "cannot keep it open"));
  /* The old owner cannot either: its epoch is stale. */
  mdt_expect(update(l->ch, cur, r->version, e1, NULL, &err), SL_ESTALE_EPOCH, &err);
  /* Closing it as the writer would also be the old epoch's business. */
  cur->ensembles = old;
  cur->n_ensembles = 1;
  cur->state = SLUICE__V1__LEDGER_STATE__LEDGER_STATE_CLOSED;
  mdt_expect(update(l->ch, cur, r->version, e2, NULL, &err), SL_ESTALE_EPOCH, &err);
  /* Recovery, then close: fine. And the partition's next ledger is newer. */
  cur->state = SLUICE__V1__LEDGER_STATE__LEDGER_STATE_IN_RECOVERY;
  cur->recovery_epoch = e2;
  int64_t v2 = 0;
  mdt_expect(update_kind(l->ch, cur, r->version, e2, RECOVER, &v2, &err), SL_OK, &err);
  cur->state = SLUICE__V1__LEDGER_STATE__LEDGER_STATE_CLOSED;
  mdt_expect(update_kind(l->ch, cur, v2, e2, RECOVER, &v2, &err), SL_OK, &err);
  uint64_t next = mdt_create_ledger(l->ch, P, e2, NULL);
  assert_true(next > id);
  protobuf_c_message_free_unpacked(&r->base, NULL);
}

static void test_md_ledgers__segment_start_never_moves_back(void **state) {
  mdt_local *l = *state;
  sl_err err = SL_ERR_INIT;
  int64_t s1, v = 0;
  uint64_t e1 = own(l, "b1", &s1);
  uint64_t id = mdt_create_ledger(l->ch, P, e1, &v);
  Sluice__V1__LedgerResponse *r = NULL;
  mdt_expect(get(l->ch, id, &r, &err), SL_OK, &err);
  Sluice__V1__LedgerInfo *cur = r->info;
  char *bk1[] = {"b1"}, *bk2[] = {"b2"};
  Sluice__V1__EnsembleSegment s1seg = SLUICE__V1__ENSEMBLE_SEGMENT__INIT;
  s1seg.first_entry = 100;
  s1seg.n_bookie_ids = 1;
  s1seg.bookie_ids = bk1;
  Sluice__V1__EnsembleSegment *segs[] = {cur->ensembles[0], &s1seg};
  Sluice__V1__EnsembleSegment **old = cur->ensembles;
  cur->ensembles = segs;
  cur->n_ensembles = 2;
  mdt_expect(update(l->ch, cur, v, e1, &v, &err), SL_OK, &err);
  /* Replacing the last segment by one that starts earlier: refused. */
  s1seg.first_entry = 99;
  s1seg.bookie_ids = bk2;
  mdt_expect(update(l->ch, cur, v, e1, NULL, &err), SL_EINVAL, &err);
  assert_non_null(strstr(err.msg, "cannot move back"));
  /* Dropping the last segment moves its start back too. */
  cur->n_ensembles = 1;
  mdt_expect(update(l->ch, cur, v, e1, NULL, &err), SL_EINVAL, &err);
  assert_non_null(strstr(err.msg, "cannot move back"));
  /* Same start, other bookie (the writer's retry of an ensemble change): ok. */
  cur->n_ensembles = 2;
  s1seg.first_entry = 100;
  mdt_expect(update(l->ch, cur, v, e1, &v, &err), SL_OK, &err);
  /* Overflow on the wire: a segment after INT64_MAX is INVALID_ARGUMENT. */
  Sluice__V1__EnsembleSegment s2seg = SLUICE__V1__ENSEMBLE_SEGMENT__INIT;
  s2seg.first_entry = INT64_MAX;
  s2seg.n_bookie_ids = 1;
  s2seg.bookie_ids = bk1;
  s1seg.first_entry = INT64_MAX;
  Sluice__V1__EnsembleSegment *segs3[] = {old[0], &s1seg, &s2seg};
  cur->ensembles = segs3;
  cur->n_ensembles = 3;
  mdt_expect(update(l->ch, cur, v, e1, NULL, &err), SL_EINVAL, &err);
  cur->ensembles = old;
  cur->n_ensembles = 1;
  protobuf_c_message_free_unpacked(&r->base, NULL);
}

/* Ledger ids of one partition increase, even when a replica holding an
 * old block creates the next one. */
static void test_md_ledgers__partition_ids_increase_across_replicas(void **state) {
  mdt_local *l = *state;
  sl_err err = SL_ERR_INIT;
  sl_md_service_opts o = SL_MD_SERVICE_OPTS_INIT;
  o.ledger_id_block = 1000;
  mdt_local r2;
  mdt_replica_start(&r2, l->store, &o);
  int64_t s1;
  uint64_t e1 = own(l, "b1", &s1);
  /* r2 reserves [x, x+1000) first; l's next block lies above it. */
  uint64_t low = mdt_create_ledger(r2.ch, P, e1, NULL);
  for (int i = 0; i < 4; i++) (void)mdt_allocate_ledger_id(l->ch); /* l: new block */
  uint64_t high = mdt_create_ledger(l->ch, P, e1, NULL);
  assert_true(high > low + 3);
  /* r2 still holds ids just above `low`; it must not use them for P. */
  uint64_t next = mdt_create_ledger(r2.ch, P, e1, NULL);
  assert_true(next > high);
  /* An explicit id below the partition's last is refused. */
  uint64_t old_id = mdt_allocate_ledger_id(r2.ch); /* from r2's new block: above */
  (void)old_id;
  Sluice__V1__LedgerInfo info;
  Sluice__V1__EnsembleSegment seg;
  mdt_ledger_init(&info, &seg, P);
  info.ledger_id = low + 1;
  mdt_expect(create(l->ch, &info, e1, NULL, &err), SL_EINVAL, &err);
  assert_non_null(strstr(err.msg, "must increase"));
  mdt_local_stop(&r2);
}

static void test_md_ledgers__bad_input(void **state) {
  mdt_local *l = *state;
  sl_err err = SL_ERR_INIT;
  Sluice__V1__CreateLedgerRequest req = SLUICE__V1__CREATE_LEDGER_REQUEST__INIT;
  Sluice__V1__LedgerResponse *resp = NULL;
  mdt_expect(sl_metadata_service_create_ledger(l->ch, &req, &resp, NULL, &err), SL_EINVAL, &err);
  Sluice__V1__LedgerInfo info;
  Sluice__V1__EnsembleSegment seg;
  mdt_ledger_init(&info, &seg, NULL);
  info.ensemble_size = 0;
  mdt_expect(create(l->ch, &info, 0, NULL, &err), SL_EINVAL, &err);
  info.ensemble_size = 2; /* but the segment lists one bookie */
  mdt_expect(create(l->ch, &info, 0, NULL, &err), SL_EINVAL, &err);
  char *dup[] = {"b0", "b0"};
  seg.n_bookie_ids = 2;
  seg.bookie_ids = dup;
  mdt_expect(create(l->ch, &info, 0, NULL, &err), SL_EINVAL, &err);
  assert_non_null(strstr(err.msg, "twice"));
  char *bad[] = {"b0", "b/1"};
  seg.bookie_ids = bad;
  mdt_expect(create(l->ch, &info, 0, NULL, &err), SL_EINVAL, &err);
  mdt_ledger_init(&info, &seg, NULL);
  seg.first_entry = 3;
  mdt_expect(create(l->ch, &info, 0, NULL, &err), SL_EINVAL, &err);
  mdt_ledger_init(&info, &seg, NULL);
  info.n_ensembles = 0;
  mdt_expect(create(l->ch, &info, 0, NULL, &err), SL_EINVAL, &err);
  mdt_ledger_init(&info, &seg, NULL);
  info.state = (Sluice__V1__LedgerState)7;
  mdt_expect(create(l->ch, &info, 0, NULL, &err), SL_EINVAL, &err);
  info.state = SLUICE__V1__LEDGER_STATE__LEDGER_STATE_CLOSED;
  mdt_expect(create(l->ch, &info, 0, NULL, &err), SL_EINVAL, &err);
  mdt_ledger_init(&info, &seg, NULL);
  static uint8_t pw[2000];
  info.password.data = pw;
  info.password.len = sizeof(pw);
  mdt_expect(create(l->ch, &info, 0, NULL, &err), SL_EINVAL, &err);
  mdt_ledger_init(&info, &seg, "not a partition");
  mdt_expect(create(l->ch, &info, 0, NULL, &err), SL_EINVAL, &err);
  mdt_ledger_init(&info, &seg, NULL);
  info.last_entry_id = -5;
  mdt_expect(create(l->ch, &info, 0, NULL, &err), SL_EINVAL, &err);
  /* Updates of ledgers that do not exist. */
  mdt_ledger_init(&info, &seg, NULL);
  info.ledger_id = 424242;
  mdt_expect(update(l->ch, &info, 3, 0, NULL, &err), SL_ENOTFOUND, &err);
  Sluice__V1__UpdateLedgerRequest ur = SLUICE__V1__UPDATE_LEDGER_REQUEST__INIT;
  mdt_expect(sl_metadata_service_update_ledger(l->ch, &ur, &resp, NULL, &err), SL_EINVAL, &err);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_md_ledgers__ids_unique_across_replicas, setup,
                                      mdt_local_teardown),
      cmocka_unit_test_setup_teardown(test_md_ledgers__create_get_delete, setup,
                                      mdt_local_teardown),
      cmocka_unit_test_setup_teardown(test_md_ledgers__lifecycle_and_epochs, setup,
                                      mdt_local_teardown),
      cmocka_unit_test_setup_teardown(test_md_ledgers__bad_input, setup, mdt_local_teardown),
      cmocka_unit_test_setup_teardown(test_md_ledgers__newer_owner_cannot_keep_old_ledger_open,
                                      setup, mdt_local_teardown),
      cmocka_unit_test_setup_teardown(test_md_ledgers__segment_start_never_moves_back, setup,
                                      mdt_local_teardown),
      cmocka_unit_test_setup_teardown(test_md_ledgers__partition_ids_increase_across_replicas,
                                      setup, mdt_local_teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
