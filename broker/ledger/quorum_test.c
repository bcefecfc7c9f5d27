#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "broker/ledger/quorum.h"

/* Every valid (E, Qw, Qa) with E up to 6. */
#define FOR_EACH_QUORUM(q)                                   \
  for (uint32_t e_ = 1; e_ <= 6; e_++)                       \
    for (uint32_t w_ = 1; w_ <= e_; w_++)                    \
      for (uint32_t a_ = 1; a_ <= w_; a_++)                  \
        for (sl_quorum q = {e_, w_, a_}, *once_ = &q; once_; once_ = NULL)

static void test_quorum__check(void **state) {
  (void)state;
  sl_err err = SL_ERR_INIT;
  sl_quorum ok = {3, 2, 2}, bad1 = {2, 3, 2}, bad2 = {3, 2, 0},
            bad3 = {3, 1, 2}, big = {65, 2, 2};
  assert_int_equal(sl_quorum_check(&ok, &err), SL_OK);
  assert_int_equal(sl_quorum_check(&bad1, &err), SL_EINVAL);
  assert_non_null(strstr(err.msg, "E=2 Qw=3"));
  assert_int_equal(sl_quorum_check(&bad2, NULL), SL_EINVAL);
  assert_int_equal(sl_quorum_check(&bad3, NULL), SL_EINVAL);
  assert_int_equal(sl_quorum_check(&big, NULL), SL_EINVAL);
}

/* Entry e goes to ensemble[(e + i) mod E]: 5 with E=3, Qw=2 is slots 2, 0. */
static void test_quorum__striping(void **state) {
  (void)state;
  sl_quorum q = {3, 2, 2};
  assert_int_equal(sl_quorum_slot(&q, 5, 0), 2);
  assert_int_equal(sl_quorum_slot(&q, 5, 1), 0);
  assert_int_equal(sl_quorum_write_set(&q, 5), 0x5);
  assert_int_equal(sl_quorum_write_set(&q, 6), 0x3);
  sl_quorum big = {64, 3, 2};
  assert_true(sl_quorum_write_set(&big, 63) == ((UINT64_C(1) << 63) | 0x3));
  FOR_EACH_QUORUM(q2) {
    for (int64_t e = 0; e < 20; e++) {
      uint64_t ws = sl_quorum_write_set(&q2, e);
      assert_int_equal(sl_quorum_count(ws), q2.qw);
      assert_true(ws & (UINT64_C(1) << (e % q2.e)));
    }
  }
}

/* Complete exactly when Qa slots of the write set acked; acks from other
 * slots do not count. */
static void test_quorum__complete(void **state) {
  (void)state;
  FOR_EACH_QUORUM(q) {
    for (int64_t e = 0; e < (int64_t)q.e; e++) {
      uint64_t ws = sl_quorum_write_set(&q, e);
      for (uint64_t acked = 0; acked < (UINT64_C(1) << q.e); acked++)
        assert_int_equal(sl_quorum_complete(&q, e, acked),
                         sl_quorum_count(acked & ws) >= q.qa);
    }
  }
  sl_quorum q = {3, 2, 2};
  assert_false(sl_quorum_complete(&q, 0, 0x4)); /* slot 2 is not in {0,1} */
  assert_false(sl_quorum_complete(&q, 0, 0x5));
  assert_true(sl_quorum_complete(&q, 0, 0x3));
}

/* Fencing covers exactly when no write set keeps Qa unfenced bookies, i.e.
 * when the old writer can no longer complete any add. */
static void test_quorum__fence_covers(void **state) {
  (void)state;
  FOR_EACH_QUORUM(q) {
    for (uint64_t fenced = 0; fenced < (UINT64_C(1) << q.e); fenced++) {
      bool writable = false;
      for (int64_t e = 0; e < (int64_t)q.e; e++)
        if (sl_quorum_count(~fenced & sl_quorum_write_set(&q, e)) >= q.qa)
          writable = true;
      assert_int_equal(sl_quorum_fence_covers(&q, fenced), !writable);
    }
  }
  sl_quorum q = {3, 2, 2};
  assert_false(sl_quorum_fence_covers(&q, 0x1)); /* {1,2} can still ack */
  assert_true(sl_quorum_fence_covers(&q, 0x3));
}

/* For every true placement of copies and every set of bookies that answer
 * truthfully: ABSENT only if the entry never had Qa copies, FOUND only if a
 * copy exists, and enough answers always decide. */
static void test_quorum__verdict(void **state) {
  (void)state;
  FOR_EACH_QUORUM(q) {
    uint64_t all = (UINT64_C(1) << q.e) - 1;
    for (int64_t e = 0; e < (int64_t)q.e; e++) {
      uint64_t ws = sl_quorum_write_set(&q, e);
      for (uint64_t holders = 0; holders <= all; holders++) {
        if (holders & ~ws) continue;
        for (uint64_t answered = 0; answered <= all; answered++) {
          uint64_t found = answered & holders;
          uint64_t absent = answered & ~holders;
          sl_quorum_verdict v = sl_quorum_verdict_of(&q, e, found, absent);
          if (v == SL_QUORUM_ABSENT)
            assert_true(sl_quorum_count(holders) < q.qa);
          if (v == SL_QUORUM_FOUND) assert_true(holders != 0);
          if (sl_quorum_count(answered & ws) >= q.qw - q.qa + 1)
            assert_int_not_equal(v, SL_QUORUM_UNKNOWN);
        }
      }
    }
  }
  /* A negative from outside the write set is no vote. */
  sl_quorum q = {3, 2, 2};
  assert_int_equal(sl_quorum_verdict_of(&q, 0, 0, 0x4), SL_QUORUM_UNKNOWN);
  assert_int_equal(sl_quorum_verdict_of(&q, 0, 0, 0x1), SL_QUORUM_ABSENT);
}

/* Every entry of a range is served by exactly the picks that claim it,
 * at least once when its write set has a usable slot; E=3, Qw=2 needs two
 * picks and serves nothing twice. */
static void test_quorum__cover(void **state) {
  (void)state;
  sl_quorum_pick picks[SL_QUORUM_MAX_ENSEMBLE];
  sl_quorum q32 = {3, 2, 2};
  uint32_t n = sl_quorum_cover(&q32, 0, 99, 0, 0x7, picks);
  assert_int_equal(n, 2);
  assert_int_equal(picks[0].slot, 0);
  assert_int_equal(picks[0].depth, 2);
  assert_int_equal(picks[1].slot, 1);
  assert_int_equal(picks[1].depth, 1);
  /* Rotating the start moves the load. */
  n = sl_quorum_cover(&q32, 0, 99, 1, 0x7, picks);
  assert_int_equal(n, 2);
  assert_int_equal(picks[0].slot, 1);
  /* Slot 0 unusable: slots 1 and 2 still serve everything. */
  n = sl_quorum_cover(&q32, 0, 99, 0, 0x6, picks);
  assert_int_equal(n, 2);
  FOR_EACH_QUORUM(q) {
    for (uint64_t usable = 1; usable < (UINT64_C(1) << q.e); usable++) {
      for (int64_t first = 0; first < 7; first++) {
        for (int64_t last = first; last < first + 8; last++) {
          n = sl_quorum_cover(&q, first, last, (uint32_t)first, usable, picks);
          assert_true(n <= q.e);
          bool all_usable = usable == (UINT64_C(1) << q.e) - 1;
          for (int64_t e = first; e <= last; e++) {
            uint32_t served = 0;
            for (uint32_t i = 0; i < n; i++) {
              assert_true(usable >> picks[i].slot & 1);
              assert_true(picks[i].depth >= 1 && picks[i].depth <= q.qw);
              if (sl_quorum_serves(&q, &picks[i], e)) {
                served++;
                assert_true(sl_quorum_write_set(&q, e) >> picks[i].slot & 1);
              }
            }
            if (sl_quorum_write_set(&q, e) & usable) assert_true(served >= 1);
            else assert_int_equal(served, 0);
            if (q.e == 3 && q.qw == 2 && all_usable) assert_int_equal(served, 1);
          }
        }
      }
    }
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_quorum__check),
      cmocka_unit_test(test_quorum__striping),
      cmocka_unit_test(test_quorum__complete),
      cmocka_unit_test(test_quorum__fence_covers),
      cmocka_unit_test(test_quorum__verdict),
      cmocka_unit_test(test_quorum__cover),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
