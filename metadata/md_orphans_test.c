/* Orphan ledgers (md_orphans.c, md_auditor.c invariant 8) over real gRPC to
 * a local-store service: the auditor tombstones a ledger of a partition
 * that moved on to a later epoch when neither its list nor a cursor names
 * it, and nothing else. Passes are awaited through the auditor's stats,
 * never with fixed sleeps. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "common/testing.h"
#include "tests/metadata_util.h"

#define P "public/orphans"
#define HOUR_MS (3600 * 1000)

static int teardown(void **state) {
  if (*state == NULL) return 0;
  return mdt_local_teardown(state); /* destroying the service stops its auditor */
}

static void pause_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* Waits until the auditor has tombstoned an orphan. */
static void await_orphan(mdt_local *l) {
  int64_t deadline = sl_clock_mono_ms() + sl_test_scaled_ms(20000);
  while (mdt_audit_stats(l).orphans == 0) {
    if (sl_clock_mono_ms() > deadline) fail_msg("no orphan tombstoned in 20 s");
    pause_ms(5);
  }
}

/* A service (auditor not started) whose auditor passes every 50 ms. */
static mdt_local *start(void **state) {
  sl_md_service_opts o = SL_MD_SERVICE_OPTS_INIT;
  o.audit_interval_ms = 50;
  o.rereplication_grace_ms = HOUR_MS; /* bookie b0 never registers */
  o.replica_id = "r1";
  mdt_local *l = mdt_local_new(&o);
  *state = l;
  return l;
}

/* Writes P's list naming `ids` (expected 0: create), as the owner at epoch. */
static int64_t write_list(mdt_local *l, const uint64_t *ids, size_t n, int64_t expected,
                          uint64_t epoch) {
  Sluice__V1__LedgerRef refs[4], *ptrs[4];
  assert_true(n <= 4);
  for (size_t i = 0; i < n; i++) {
    sluice__v1__ledger_ref__init(&refs[i]);
    refs[i].ledger_id = ids[i];
    ptrs[i] = &refs[i];
  }
  Sluice__V1__ManagedLedgerInfo info = SLUICE__V1__MANAGED_LEDGER_INFO__INIT;
  info.partition = P;
  info.n_ledgers = n;
  info.ledgers = ptrs;
  Sluice__V1__UpdateManagedLedgerRequest req = SLUICE__V1__UPDATE_MANAGED_LEDGER_REQUEST__INIT;
  req.info = &info;
  req.expected_version = expected;
  req.epoch = epoch;
  Sluice__V1__ManagedLedgerResponse *resp = NULL;
  sl_err err = SL_ERR_INIT;
  mdt_expect(sl_metadata_service_update_managed_ledger(l->ch, &req, &resp, NULL, &err), SL_OK,
             &err);
  int64_t v = resp->version;
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  return v;
}

/* Writes a cursor of P whose ack state lives in cursor ledger `ledger`. */
static void write_cursor(mdt_local *l, const char *sub, uint64_t ledger, uint64_t epoch) {
  Sluice__V1__Position pos = SLUICE__V1__POSITION__INIT;
  pos.ledger_id = 1;
  pos.entry_id = -1;
  Sluice__V1__CursorLedgerRef ref = SLUICE__V1__CURSOR_LEDGER_REF__INIT;
  ref.ledger_id = ledger;
  Sluice__V1__CursorInfo c = SLUICE__V1__CURSOR_INFO__INIT;
  c.partition = P;
  c.subscription = (char *)sub;
  c.mark_delete = &pos;
  c.ack_ledger = &ref;
  Sluice__V1__UpdateCursorRequest req = SLUICE__V1__UPDATE_CURSOR_REQUEST__INIT;
  req.info = &c;
  req.epoch = epoch;
  Sluice__V1__CursorResponse *resp = NULL;
  sl_err err = SL_ERR_INIT;
  mdt_expect(sl_metadata_service_update_cursor(l->ch, &req, &resp, NULL, &err), SL_OK, &err);
  protobuf_c_message_free_unpacked(&resp->base, NULL);
}

static sl_status ledger_status(mdt_local *l, uint64_t id) {
  Sluice__V1__GetLedgerRequest req = SLUICE__V1__GET_LEDGER_REQUEST__INIT;
  req.ledger_id = id;
  Sluice__V1__LedgerResponse *resp = NULL;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_metadata_service_get_ledger(l->ch, &req, &resp, NULL, &err);
  if (resp != NULL) protobuf_c_message_free_unpacked(&resp->base, NULL);
  return st;
}

/* A ledger created and never named is kept while its owner's epoch is
 * current (the owner may be between the two steps), and tombstoned once
 * the partition moved on; listed ledgers, cursor ledgers, ledgers of no
 * partition and the new owner's unnamed ledger stay. */
static void test_md_orphans__tombstoned_once_the_partition_moved_on(void **state) {
  mdt_local *l = start(state);
  int64_t s1;
  uint64_t e1 = mdt_own(l->ch, P, "b1", &s1);
  uint64_t listed = mdt_create_ledger(l->ch, P, e1, NULL);
  uint64_t orphan = mdt_create_ledger(l->ch, P, e1, NULL);
  uint64_t cursor_ledger = mdt_create_ledger(l->ch, P, e1, NULL);
  uint64_t nobodys = mdt_create_ledger(l->ch, NULL, 0, NULL);
  write_list(l, &listed, 1, 0, e1);
  write_cursor(l, "sub", cursor_ledger, e1);

  sl_err err = SL_ERR_INIT;
  mdt_expect(sl_md_service_auditor_start(l->md, &err), SL_OK, &err);
  mdt_await_audit_passes(l, 12); /* the first and the tenth check for orphans */
  assert_int_equal(mdt_audit_stats(l).orphans, 0);
  assert_int_equal(ledger_status(l, orphan), SL_OK);

  mdt_disown(l->ch, P, s1, e1);
  int64_t s2;
  uint64_t e2 = mdt_own(l->ch, P, "b2", &s2);
  assert_true(e2 > e1);
  uint64_t fresh = mdt_create_ledger(l->ch, P, e2, NULL);
  await_orphan(l);
  mdt_await_audit_passes(l, 12);
  assert_int_equal(mdt_audit_stats(l).orphans, 1);
  assert_int_equal(ledger_status(l, orphan), SL_EDELETED);
  assert_int_equal(ledger_status(l, listed), SL_OK);
  assert_int_equal(ledger_status(l, cursor_ledger), SL_OK);
  assert_int_equal(ledger_status(l, nobodys), SL_OK);
  assert_int_equal(ledger_status(l, fresh), SL_OK);
}

/* A deleted topic's partition moved on too (DeleteTopic bumps its epoch):
 * a ledger its last owner never named goes, as its listed ones do. */
static void test_md_orphans__deleted_topic(void **state) {
  mdt_local *l = start(state);
  int64_t s1;
  uint64_t e1 = mdt_own(l->ch, P, "b1", &s1);
  uint64_t listed = mdt_create_ledger(l->ch, P, e1, NULL);
  uint64_t orphan = mdt_create_ledger(l->ch, P, e1, NULL);
  write_list(l, &listed, 1, 0, e1);
  Sluice__V1__DeleteTopicRequest req = SLUICE__V1__DELETE_TOPIC_REQUEST__INIT;
  req.name = P;
  Sluice__V1__DeleteTopicResponse *resp = NULL;
  sl_err err = SL_ERR_INIT;
  mdt_expect(sl_metadata_service_delete_topic(l->ch, &req, &resp, NULL, &err), SL_OK, &err);
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  assert_int_equal(ledger_status(l, listed), SL_EDELETED); /* DeleteTopic's own */
  assert_int_equal(ledger_status(l, orphan), SL_OK);

  mdt_expect(sl_md_service_auditor_start(l->md, &err), SL_OK, &err);
  await_orphan(l);
  assert_int_equal(ledger_status(l, orphan), SL_EDELETED);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_teardown(test_md_orphans__tombstoned_once_the_partition_moved_on,
                                teardown),
      cmocka_unit_test_teardown(test_md_orphans__deleted_topic, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
