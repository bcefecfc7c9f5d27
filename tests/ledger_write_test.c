/*
 * Ledger client against a real cluster (etcd, metadata service, 4 bookies):
 * quorum writes read back, close, open for reading, refusals of bad input.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "tests/ledger_testlib.h"

static int setup(void **state) {
  sl_lt *t = calloc(1, sizeof(*t));
  sl_lt_start(t, "ledger_write", 4, NULL, NULL);
  *state = t;
  return 0;
}

static int teardown(void **state) {
  sl_lt *t = *state;
  sl_lt_stop(t);
  free(t);
  return 0;
}

/* 1000 entries in flight at once: every callback SL_OK, in entry order;
 * all read back with their bytes; the LAC bounds reads; close records the
 * end, and a reader opening the ledger by id sees exactly that end. */
static void test_ledger_write__write_read_close(void **state) {
  sl_lt *t = *state;
  enum { N = 1000 };
  sl_ledger *lh = sl_lt_create(t, 3, 2, 2, 1, NULL, NULL);
  sl_lt_appends a;
  sl_lt_appends_init(&a, sl_ledger_id(lh));
  for (int i = 0; i < N; i++) assert_int_equal(sl_lt_append(lh, &a), SL_OK);
  sl_lt_wait_done(&a, N, 30000);
  assert_int_equal(a.ok, N);
  assert_false(a.out_of_order);
  assert_int_equal(sl_ledger_lac(lh), N - 1);

  /* A reader of the OPEN ledger learns the LAC from the bookies: the
   * writer's WriteLac brings it there once appends pause. */
  int64_t deadline = sl_clock_mono_ms() + 10000, seen = -1;
  while (seen < N - 1 && sl_clock_mono_ms() < deadline) {
    sl_ledger *rd = sl_lt_open(t, sl_ledger_id(lh));
    sl_ledger_stats rs;
    sl_ledger_stats_get(rd, &rs);
    assert_int_equal(rs.state, SL_LEDGER_READING);
    seen = sl_ledger_lac(rd);
    if (seen >= 0) assert_int_equal(sl_lt_read_check(rd, 0, seen, NULL), SL_OK);
    sl_lt_destroy(rd);
    if (seen < N - 1) usleep(50 * 1000);
  }
  assert_int_equal(seen, N - 1);

  int64_t got = 0;
  assert_int_equal(sl_lt_read_check(lh, 0, N - 1, &got), SL_OK);
  assert_int_equal(sl_lt_read_check(lh, 500, 510, &got), SL_OK);
  assert_int_equal(sl_lt_read_check(lh, 0, N, &got), SL_ERANGE);

  assert_int_equal(sl_lt_close(lh), SL_OK);
  sl_ledger_stats s;
  sl_ledger_stats_get(lh, &s);
  assert_int_equal(s.state, SL_LEDGER_CLOSED);
  assert_int_equal(s.pending_appends, 0);
  assert_int_equal(sl_lt_append(lh, &a), SL_EPRECOND);
  uint64_t id = sl_ledger_id(lh);
  sl_lt_destroy(lh);

  sl_ledger *r = sl_lt_open(t, id);
  assert_int_equal(sl_ledger_last_entry(r), N - 1);
  assert_int_equal(sl_lt_read_check(r, 0, N - 1, &got), SL_OK);
  assert_int_equal(sl_lt_append(r, &a), SL_EPRECOND);
  assert_int_equal(sl_lt_close(r), SL_OK); /* nothing to write: OK */
  assert_int_equal(sl_lt_read_check(r, 0, N - 1, NULL), SL_OK);
  sl_lt_destroy(r);
  sl_lt_appends_release(&a);
}

/* Striping over E=4 with Qw=3, Qa=2, and an empty ledger closed at -1. */
static void test_ledger_write__other_quorums_and_empty(void **state) {
  sl_lt *t = *state;
  sl_ledger *lh = sl_lt_create(t, 4, 3, 2, 1, NULL, NULL);
  sl_lt_appends a;
  sl_lt_appends_init(&a, sl_ledger_id(lh));
  for (int i = 0; i < 200; i++) assert_int_equal(sl_lt_append(lh, &a), SL_OK);
  sl_lt_wait_done(&a, 200, 30000);
  assert_int_equal(a.ok, 200);
  assert_int_equal(sl_lt_read_check(lh, 0, 199, NULL), SL_OK);
  assert_int_equal(sl_lt_close(lh), SL_OK);
  sl_lt_destroy(lh);
  sl_lt_appends_release(&a);

  sl_ledger *empty = sl_lt_create(t, 2, 2, 1, 1, NULL, NULL);
  assert_int_equal(sl_lt_close(empty), SL_OK);
  uint64_t id = sl_ledger_id(empty);
  sl_lt_destroy(empty);
  sl_ledger *r = sl_lt_open(t, id);
  assert_int_equal(sl_ledger_last_entry(r), -1);
  assert_int_equal(sl_lt_read_check(r, 0, 0, NULL), SL_ERANGE);
  sl_lt_destroy(r);
}

static void create_cb(sl_status st, const char *details, sl_ledger *lh, void *arg) {
  (void)details;
  assert_null(lh);
  *(sl_status *)arg = st;
}

/* Bad input gets a clear status and no callback; too few bookies comes
 * through the callback. */
static void test_ledger_write__bad_input(void **state) {
  sl_lt *t = *state;
  sl_err err = SL_ERR_INIT;
  sl_ledger_create_opts o = SL_LEDGER_CREATE_OPTS_INIT;
  o.ensemble_size = 2;
  o.write_quorum = 3;
  sl_status got = SL_OK;
  assert_int_equal(sl_ledger_create_async(t->client, &o, create_cb, &got, &err), SL_EINVAL);
  assert_non_null(strstr(err.msg, "E=2 Qw=3"));
  o.ensemble_size = 5;
  o.write_quorum = 2;
  got = SL_OK;
  assert_int_equal(sl_ledger_create_async(t->client, &o, create_cb, &got, &err), SL_OK);
  int64_t deadline = sl_clock_mono_ms() + 20000;
  while (__atomic_load_n(&got, __ATOMIC_SEQ_CST) == SL_OK && sl_clock_mono_ms() < deadline)
    usleep(10000);
  assert_int_equal(got, SL_EUNAVAIL);

  sl_ledger *lh = sl_lt_create(t, 3, 2, 2, 1, NULL, NULL);
  static uint8_t big[(5u << 20) + 1];
  assert_int_equal(sl_ledger_append(lh, big, sizeof(big), NULL, NULL, NULL, &err), SL_EINVAL);
  sl_lt_appends a;
  sl_lt_appends_init(&a, sl_ledger_id(lh));
  assert_int_equal(sl_ledger_append(lh, NULL, 3, (sl_ledger_append_cb)1, NULL, NULL, &err),
                   SL_EINVAL);
  assert_int_equal(sl_ledger_append(lh, big, sizeof(big), (sl_ledger_append_cb)1, NULL, NULL,
                                    &err), SL_ETOOBIG);
  assert_int_equal(sl_ledger_read_async(lh, 3, 2, (sl_ledger_entry_cb)1,
                                        (sl_ledger_read_done_cb)1, NULL, &err), SL_EINVAL);
  assert_int_equal(sl_lt_close(lh), SL_OK);
  assert_int_equal(sl_ledger_close_async(lh, (sl_ledger_close_cb)1, NULL, &err), SL_EPRECOND);
  sl_lt_destroy(lh);
  sl_lt_appends_release(&a);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_ledger_write__write_read_close),
      cmocka_unit_test(test_ledger_write__other_quorums_and_empty),
      cmocka_unit_test(test_ledger_write__bad_input),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
