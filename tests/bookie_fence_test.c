/*
 * Fencing on a sluice-bookie process: a fence refuses later adds with
 * FAILED_PRECONDITION "fenced", is durable before the reply (it survives
 * kill -9 right after), a fencing read fences and returns the last entry,
 * and stale epochs are refused. Recovery write-backs at the fencing epoch
 * are still accepted. Every request sends the ledger's password (the
 * testlib's "ledger-<id>"); a fence, fencing read or add with another one
 * is PERMISSION_DENIED, before and after a kill -9 or a clean restart.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <grpc/status.h>

#include "tests/bookie_testlib.h"

static int add(sl_rpc_channel *ch, uint64_t ledger, int64_t entry, uint64_t epoch,
               bool recovery, char *error, size_t n) {
  Sluice__V1__AddEntryRequest r;
  sl_bktest_add_req(&r, ledger, entry, 512, epoch);
  r.recovery = recovery;
  int code = sl_bktest_add(ch, &r, error, n);
  free(r.payload.data);
  return code;
}

static Sluice__V1__ReadLacResponse *read_lac(sl_rpc_channel *ch, uint64_t ledger) {
  Sluice__V1__ReadLacRequest q = SLUICE__V1__READ_LAC_REQUEST__INIT;
  q.ledger_id = ledger;
  Sluice__V1__ReadLacResponse *r = NULL;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_bookie_service_read_lac(ch, &q, &r, NULL, &err);
  if (st != SL_OK) fail_msg("ReadLac: %s", sl_err_msg(&err, st));
  return r;
}

/* Fence with a given password. */
static sl_status fence_pw(sl_rpc_channel *ch, uint64_t ledger, uint64_t epoch,
                          const char *password, Sluice__V1__FenceResponse **out,
                          sl_err *err) {
  Sluice__V1__FenceRequest q = SLUICE__V1__FENCE_REQUEST__INIT;
  q.ledger_id = ledger;
  q.epoch = epoch;
  q.password.data = (uint8_t *)password;
  q.password.len = strlen(password);
  *out = NULL;
  return sl_bookie_service_fence(ch, &q, out, NULL, err);
}

/* Fence with the ledger's own password. */
static sl_status fence(sl_rpc_channel *ch, uint64_t ledger, uint64_t epoch,
                       Sluice__V1__FenceResponse **out, sl_err *err) {
  char pw[SL_BKTEST_PASSWORD_MAX];
  return fence_pw(ch, ledger, epoch, sl_bktest_password(ledger, pw, sizeof(pw)), out, err);
}

/* An add with a given password (ledger, entry and payload as usual). */
static int add_pw(sl_rpc_channel *ch, uint64_t ledger, int64_t entry, uint64_t epoch,
                  const char *password, char *error, size_t n) {
  Sluice__V1__AddEntryRequest r;
  sl_bktest_add_req(&r, ledger, entry, 512, epoch);
  r.password.data = (uint8_t *)password;
  r.password.len = strlen(password);
  int code = sl_bktest_add(ch, &r, error, n);
  free(r.payload.data);
  return code;
}

/* A clean stop (SIGTERM, final checkpoint), then a restart. */
static sl_rpc_channel *stop_and_restart(sl_cluster *c, sl_rpc_channel *ch) {
  sl_err err = SL_ERR_INIT;
  sl_rpc_channel_destroy(ch);
  assert_int_equal(sl_cluster_stop_node(c, SL_NODE_BOOKIE, 0, &err), SL_OK);
  sl_status st = sl_cluster_restart(c, SL_NODE_BOOKIE, 0, &err);
  if (st != SL_OK) fail_msg("restart: %s", sl_err_msg(&err, st));
  return sl_bktest_bookie_channel(c, 0);
}

static sl_rpc_channel *kill_and_restart(sl_cluster *c, sl_rpc_channel *ch) {
  sl_err err = SL_ERR_INIT;
  sl_rpc_channel_destroy(ch);
  assert_int_equal(sl_cluster_kill9(c, SL_NODE_BOOKIE, 0, &err), SL_OK);
  sl_status st = sl_cluster_restart(c, SL_NODE_BOOKIE, 0, &err);
  if (st != SL_OK) fail_msg("restart: %s", sl_err_msg(&err, st));
  return sl_bktest_bookie_channel(c, 0);
}

static void test_bookie_fence__fence_survives_kill9(void **state) {
  (void)state;
  sl_cluster *c = sl_bktest_cluster("bookie_fence", 1, NULL);
  sl_rpc_channel *ch = sl_bktest_bookie_channel(c, 0);
  char error[256];
  sl_err err = SL_ERR_INIT;
  sl_bktest_write(ch, 1, 0, 10, 512, 1);

  Sluice__V1__FenceResponse *f = NULL;
  assert_int_equal(fence(ch, 1, 2, &f, &err), SL_OK);
  assert_int_equal(f->last_entry_id, 9);
  assert_int_equal(f->lac, 8);
  protobuf_c_message_free_unpacked(&f->base, NULL);
  assert_int_equal(add(ch, 1, 10, 1, false, error, sizeof(error)),
                   GRPC_STATUS_FAILED_PRECONDITION);
  assert_non_null(strstr(error, "fenced"));
  /* Even the fencer's own epoch cannot add normally. */
  assert_int_equal(add(ch, 1, 10, 2, false, error, sizeof(error)),
                   GRPC_STATUS_FAILED_PRECONDITION);
  assert_non_null(strstr(error, "fenced"));

  /* kill -9 right after the reply: the fence was durable before it. */
  ch = kill_and_restart(c, ch);
  Sluice__V1__ReadLacResponse *lac = read_lac(ch, 1);
  assert_true(lac->fenced);
  assert_int_equal(lac->last_entry_id, 9);
  protobuf_c_message_free_unpacked(&lac->base, NULL);
  assert_int_equal(add(ch, 1, 10, 1, false, error, sizeof(error)),
                   GRPC_STATUS_FAILED_PRECONDITION);
  assert_non_null(strstr(error, "fenced"));
  for (int64_t e = 0; e < 10; e++) sl_bktest_check_entry(ch, 1, e, 512);

  /* Stale epochs: a fence or a fencing read below the fencer's epoch. */
  assert_int_equal(fence(ch, 1, 1, &f, &err), SL_ESTALE_EPOCH);
  assert_non_null(strstr(err.msg, "stale epoch"));
  Sluice__V1__ReadEntryResponse *r = NULL;
  assert_int_equal(sl_bktest_read(ch, 1, -1, true, 1, &r, &err), SL_ESTALE_EPOCH);
  assert_non_null(strstr(err.msg, "stale epoch"));

  /* Recovery write-back at the fencing epoch is allowed; below it is not. */
  assert_int_equal(add(ch, 1, 10, 2, true, error, sizeof(error)), 0);
  assert_int_equal(add(ch, 1, 11, 1, true, error, sizeof(error)),
                   GRPC_STATUS_FAILED_PRECONDITION);
  assert_non_null(strstr(error, "stale epoch"));
  sl_bktest_check_entry(ch, 1, 10, 512);

  sl_bktest_finish(c, ch);
}

static void test_bookie_fence__fencing_read_returns_last_entry(void **state) {
  (void)state;
  sl_cluster *c = sl_bktest_cluster("bookie_fence_read", 1, NULL);
  sl_rpc_channel *ch = sl_bktest_bookie_channel(c, 0);
  char error[256];
  sl_err err = SL_ERR_INIT;
  sl_bktest_write(ch, 5, 0, 25, 4096, 3);

  /* entry -1 with fence: fences, then answers with the last entry. */
  Sluice__V1__ReadEntryResponse *r = NULL;
  assert_int_equal(sl_bktest_read(ch, 5, -1, true, 4, &r, &err), SL_OK);
  assert_int_equal(r->entry_id, 24);
  assert_int_equal(r->lac, 23);
  uint32_t len;
  uint8_t *want = sl_bktest_payload(5, 24, 4096, &len);
  assert_int_equal(r->payload.len, len);
  assert_memory_equal(r->payload.data, want, len);
  free(want);
  protobuf_c_message_free_unpacked(&r->base, NULL);
  assert_int_equal(add(ch, 5, 25, 3, false, error, sizeof(error)),
                   GRPC_STATUS_FAILED_PRECONDITION);
  assert_non_null(strstr(error, "fenced"));

  /* A fencing read of an earlier entry at the same epoch works too. */
  assert_int_equal(sl_bktest_read(ch, 5, 7, true, 4, &r, &err), SL_OK);
  assert_int_equal(r->entry_id, 7);
  protobuf_c_message_free_unpacked(&r->base, NULL);

  /* A ledger this bookie never saw: fenced all the same, nothing to read. */
  assert_int_equal(sl_bktest_read(ch, 6, -1, true, 1, &r, &err), SL_OK);
  assert_false(r->found);
  assert_true(r->fenced);
  protobuf_c_message_free_unpacked(&r->base, NULL);
  ch = kill_and_restart(c, ch);
  assert_int_equal(add(ch, 6, 0, 1, false, error, sizeof(error)),
                   GRPC_STATUS_FAILED_PRECONDITION);
  assert_non_null(strstr(error, "fenced"));
  Sluice__V1__ReadLacResponse *lac = read_lac(ch, 5);
  assert_true(lac->fenced);
  protobuf_c_message_free_unpacked(&lac->base, NULL);
  for (int64_t e = 0; e < 25; e++) sl_bktest_check_entry(ch, 5, e, 4096);

  sl_bktest_finish(c, ch);
}

/* The ledger's key (digest of the first password the bookie saw for it)
 * refuses a fence, a fencing read and an add with another password, and
 * nothing changes; the key survives kill -9 (journal replay) and a clean
 * restart. */
static void test_bookie_fence__wrong_password_refused_across_restart(void **state) {
  (void)state;
  sl_cluster *c = sl_bktest_cluster("bookie_fence_pw", 1, NULL);
  sl_rpc_channel *ch = sl_bktest_bookie_channel(c, 0);
  char error[256];
  sl_err err = SL_ERR_INIT;
  sl_bktest_write(ch, 3, 0, 8, 512, 1); /* records "ledger-3" */

  Sluice__V1__FenceResponse *f = NULL;
  assert_int_equal(fence_pw(ch, 3, 2, "ledger-4", &f, &err), SL_EPERM);
  assert_null(f);
  assert_string_equal(err.msg, "ledger 3: wrong password");
  assert_int_equal(fence_pw(ch, 3, 2, "", &f, &err), SL_EPERM);
  Sluice__V1__ReadEntryResponse *r = NULL;
  assert_int_equal(sl_bktest_read_pw(ch, 3, -1, true, 2, "ledger-4", &r, &err), SL_EPERM);
  assert_int_equal(add_pw(ch, 3, 8, 1, "ledger-4", error, sizeof(error)),
                   GRPC_STATUS_PERMISSION_DENIED);
  assert_string_equal(error, "ledger 3: wrong password");
  /* Nothing changed: not fenced, epoch 1 still writes. */
  Sluice__V1__ReadLacResponse *lac = read_lac(ch, 3);
  assert_false(lac->fenced);
  assert_int_equal(lac->last_entry_id, 7);
  protobuf_c_message_free_unpacked(&lac->base, NULL);
  assert_int_equal(add(ch, 3, 8, 1, false, error, sizeof(error)), 0);
  /* A fence of a ledger this bookie never saw records its password. */
  assert_int_equal(fence(ch, 4, 1, &f, &err), SL_OK);
  protobuf_c_message_free_unpacked(&f->base, NULL);

  /* kill -9: the keys come back from the journal. */
  ch = kill_and_restart(c, ch);
  assert_int_equal(fence_pw(ch, 3, 2, "ledger-4", &f, &err), SL_EPERM);
  assert_string_equal(err.msg, "ledger 3: wrong password");
  assert_int_equal(add_pw(ch, 3, 9, 1, "ledger-4", error, sizeof(error)),
                   GRPC_STATUS_PERMISSION_DENIED);
  assert_int_equal(fence_pw(ch, 4, 2, "ledger-3", &f, &err), SL_EPERM);
  lac = read_lac(ch, 3);
  assert_false(lac->fenced);
  protobuf_c_message_free_unpacked(&lac->base, NULL);

  /* Clean restart: from ledger storage this time. */
  ch = stop_and_restart(c, ch);
  assert_int_equal(sl_bktest_read_pw(ch, 3, -1, true, 2, "ledger-4", &r, &err), SL_EPERM);
  assert_int_equal(fence_pw(ch, 4, 2, "", &f, &err), SL_EPERM);
  /* The right password still fences; reads need none. */
  assert_int_equal(sl_bktest_read(ch, 3, -1, true, 2, &r, &err), SL_OK);
  assert_int_equal(r->entry_id, 8);
  protobuf_c_message_free_unpacked(&r->base, NULL);
  assert_int_equal(fence(ch, 4, 2, &f, &err), SL_OK);
  protobuf_c_message_free_unpacked(&f->base, NULL);
  assert_int_equal(add(ch, 3, 9, 2, false, error, sizeof(error)),
                   GRPC_STATUS_FAILED_PRECONDITION);
  assert_non_null(strstr(error, "fenced"));
  for (int64_t e = 0; e < 9; e++) sl_bktest_check_entry(ch, 3, e, 512);

  sl_bktest_finish(c, ch);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_bookie_fence__fence_survives_kill9),
      cmocka_unit_test(test_bookie_fence__fencing_read_returns_last_entry),
      cmocka_unit_test(test_bookie_fence__wrong_password_refused_across_restart),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
