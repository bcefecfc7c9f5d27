#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "broker/dedup.h"

static sl_dedup_id id_at(uint64_t ledger, int64_t entry, int32_t batch) {
  sl_dedup_id id = {ledger, entry, batch};
  return id;
}

static void assert_id(sl_dedup_id got, uint64_t ledger, int64_t entry,
                      int32_t batch) {
  assert_int_equal(got.ledger_id, ledger);
  assert_int_equal(got.entry_id, entry);
  assert_int_equal(got.batch_index, batch);
}

/* new -> pushed (in flight) -> stored (duplicate with its original id). */
static void test_dedup__verdicts_follow_push_and_store(void **state) {
  (void)state;
  sl_dedup *d = sl_dedup_create(0);
  assert_int_equal(sl_dedup_check(d, "p", 1, NULL, NULL), SL_DEDUP_NEW);
  sl_dedup_push(d, "p", 1);
  sl_dedup_push(d, "p", 2);
  assert_int_equal(sl_dedup_check(d, "p", 1, NULL, NULL), SL_DEDUP_IN_FLIGHT);
  assert_int_equal(sl_dedup_check(d, "p", 3, NULL, NULL), SL_DEDUP_NEW);
  assert_int_equal(sl_dedup_check(d, "q", 1, NULL, NULL), SL_DEDUP_NEW);
  sl_dedup_stored(d, "p", 1, id_at(7, 0, 0));
  sl_dedup_stored(d, "p", 2, id_at(7, 0, 1));
  sl_dedup_id orig;
  bool known;
  assert_int_equal(sl_dedup_check(d, "p", 2, &orig, &known), SL_DEDUP_STORED);
  assert_true(known);
  assert_id(orig, 7, 0, 1);
  uint64_t seq;
  assert_true(sl_dedup_last(d, "p", &seq, &orig, &known));
  assert_int_equal(seq, 2);
  assert_true(known);
  assert_id(orig, 7, 0, 1);
  assert_false(sl_dedup_last(d, "q", &seq, NULL, NULL));
  sl_dedup_destroy(d);
}

/* A failed write lets the resend through (not a false duplicate). */
static void test_dedup__failed_write_accepts_resend(void **state) {
  (void)state;
  sl_dedup *d = sl_dedup_create(0);
  sl_dedup_push(d, "p", 1);
  sl_dedup_stored(d, "p", 1, id_at(1, 0, 0));
  sl_dedup_push(d, "p", 2);
  sl_dedup_push(d, "p", 3);
  sl_dedup_failed(d, "p");
  assert_int_equal(sl_dedup_check(d, "p", 2, NULL, NULL), SL_DEDUP_NEW);
  assert_int_equal(sl_dedup_check(d, "p", 1, NULL, NULL), SL_DEDUP_STORED);
  sl_dedup_failed(d, "nobody"); /* unknown producer: no effect */
  sl_dedup_destroy(d);
}

/* Runs compress consecutive sequences of one entry; the ring forgets the
 * oldest runs but still calls them duplicates. */
static void test_dedup__ring_forgets_old_ids_not_verdicts(void **state) {
  (void)state;
  sl_dedup *d = sl_dedup_create(4);
  for (uint64_t e = 0; e < 10; e++)
    for (int32_t b = 0; b < 3; b++)
      sl_dedup_stored(d, "p", e * 3 + (uint64_t)b, id_at(5, (int64_t)e, b));
  sl_dedup_id orig;
  bool known;
  assert_int_equal(sl_dedup_check(d, "p", 29, &orig, &known), SL_DEDUP_STORED);
  assert_true(known);
  assert_id(orig, 5, 9, 2);
  assert_int_equal(sl_dedup_check(d, "p", 18, &orig, &known), SL_DEDUP_STORED);
  assert_true(known);
  assert_id(orig, 5, 6, 0);
  assert_int_equal(sl_dedup_check(d, "p", 17, &orig, &known), SL_DEDUP_STORED);
  assert_false(known);
  assert_int_equal(orig.ledger_id, 0);
  sl_dedup_destroy(d);
}

/* Snapshot, restore, replay the entries after "dedup-at": same verdicts. */
static void test_dedup__snapshot_restore_replay(void **state) {
  (void)state;
  sl_dedup *d = sl_dedup_create(0);
  char name[32];
  for (int i = 0; i < 200; i++) { /* past the bucket count: the table grows */
    snprintf(name, sizeof(name), "prod-%d", i);
    sl_dedup_stored(d, name, (uint64_t)i + 10, id_at(3, i, 0));
  }
  sl_dedup_prop *props;
  size_t n, dropped;
  sl_dedup_snapshot(d, 3, 199, 1 << 16, 1024, &props, &n, &dropped);
  assert_int_equal(n, 201);
  assert_int_equal(dropped, 0);
  assert_string_equal(props[0].key, SL_DEDUP_PROP_AT);
  assert_string_equal(props[0].value, "3 199");
  assert_string_equal(props[1].key, "dedup:prod-199"); /* most recent first */

  sl_dedup *r = sl_dedup_create(0);
  uint64_t at_ledger;
  int64_t at_entry;
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_dedup_restore(r, props, n, &at_ledger, &at_entry, &err), SL_OK);
  assert_int_equal(at_ledger, 3);
  assert_int_equal(at_entry, 199);
  assert_int_equal(sl_dedup_count(r), 200);
  assert_int_equal(sl_dedup_restore(r, props, n, &at_ledger, &at_entry, &err),
                   SL_EPRECOND);
  /* Replay of an entry written after the snapshot. */
  sl_dedup_stored(r, "prod-7", 500, id_at(4, 0, 0));
  sl_dedup_id orig;
  bool known;
  assert_int_equal(sl_dedup_check(r, "prod-7", 17, &orig, &known), SL_DEDUP_STORED);
  assert_true(known);
  assert_id(orig, 3, 7, 0);
  assert_int_equal(sl_dedup_check(r, "prod-7", 500, &orig, &known), SL_DEDUP_STORED);
  assert_id(orig, 4, 0, 0);
  assert_int_equal(sl_dedup_check(r, "prod-7", 501, NULL, NULL), SL_DEDUP_NEW);
  /* Recency survives the round trip. */
  sl_dedup_prop *props2;
  size_t n2;
  sl_dedup_snapshot(r, 4, 0, 1 << 16, 3, &props2, &n2, &dropped);
  assert_int_equal(n2, 3);
  assert_int_equal(dropped, 198);
  assert_string_equal(props2[1].key, "dedup:prod-7");
  assert_string_equal(props2[2].key, "dedup:prod-199");
  sl_dedup_props_free(props2, n2);
  sl_dedup_props_free(props, n);
  sl_dedup_destroy(r);
  sl_dedup_destroy(d);
}

/* A byte budget leaves producers out rather than exceeding it. */
static void test_dedup__snapshot_respects_byte_budget(void **state) {
  (void)state;
  sl_dedup *d = sl_dedup_create(0);
  sl_dedup_stored(d, "aaaaaaaaaaaaaaaaaaaa", 1, id_at(1, 0, 0));
  sl_dedup_stored(d, "b", 1, id_at(1, 1, 0));
  sl_dedup_prop *props;
  size_t n, dropped;
  sl_dedup_snapshot(d, 1, 1, 30, 100, &props, &n, &dropped);
  size_t bytes = 0;
  for (size_t i = 0; i < n; i++) bytes += strlen(props[i].key) + strlen(props[i].value);
  assert_true(bytes <= 30);
  assert_int_equal(n, 2);
  assert_int_equal(dropped, 1);
  assert_string_equal(props[1].key, "dedup:b");
  sl_dedup_props_free(props, n);
  sl_dedup_destroy(d);
}

/* Malformed snapshots are refused whole; foreign properties are ignored. */
static void test_dedup__restore_rejects_garbage(void **state) {
  (void)state;
  static const char *bad[][2] = {
      {"dedup:p", ""},           {"dedup:p", "x"},       {"dedup:p", "1 2"},
      {"dedup:p", "1 2 3 4 5"},  {"dedup:p", "-1"},      {"dedup-at", "1"},
      {"dedup-at", "1 -2"},      {"dedup:p", "1 2 3 99999999999"},
      {"dedup:p", "99999999999999999999999"},
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    sl_dedup_prop props[2] = {{"dedup:ok", "5 1 1 0"},
                              {(char *)bad[i][0], (char *)bad[i][1]}};
    sl_dedup *d = sl_dedup_create(0);
    uint64_t l;
    int64_t e;
    sl_err err = SL_ERR_INIT;
    assert_int_equal(sl_dedup_restore(d, props, 2, &l, &e, &err), SL_ECORRUPT);
    assert_non_null(strstr(err.msg, bad[i][0]));
    assert_int_equal(sl_dedup_count(d), 0);
    assert_int_equal(e, -1);
    sl_dedup_destroy(d);
  }
  sl_dedup_prop other[2] = {{"cursor-thing", "zzz"}, {"dedup:p", "9"}};
  sl_dedup *d = sl_dedup_create(0);
  uint64_t l;
  int64_t e;
  assert_int_equal(sl_dedup_restore(d, other, 2, &l, &e, NULL), SL_OK);
  assert_int_equal(l, 0);
  assert_int_equal(e, -1);
  uint64_t seq;
  bool known = true;
  assert_true(sl_dedup_last(d, "p", &seq, NULL, &known));
  assert_int_equal(seq, 9);
  assert_false(known);
  assert_int_equal(sl_dedup_check(d, "p", 9, NULL, NULL), SL_DEDUP_STORED);
  assert_int_equal(sl_dedup_check(d, "p", 10, NULL, NULL), SL_DEDUP_NEW);
  sl_dedup_destroy(d);
  sl_dedup_destroy(NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_dedup__verdicts_follow_push_and_store),
      cmocka_unit_test(test_dedup__failed_write_accepts_resend),
      cmocka_unit_test(test_dedup__ring_forgets_old_ids_not_verdicts),
      cmocka_unit_test(test_dedup__snapshot_restore_replay),
      cmocka_unit_test(test_dedup__snapshot_respects_byte_budget),
      cmocka_unit_test(test_dedup__restore_rejects_garbage),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
