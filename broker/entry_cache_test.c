#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "broker/entry_cache.h"

static sl_ml_pos P(uint64_t l, int64_t e) {
  sl_ml_pos p = {l, e};
  return p;
}

/* Entries come back by position; the next one across a rollover too. */
static void test_entry_cache__get_and_next_across_ledgers(void **state) {
  (void)state;
  sl_entry_cache *c = sl_entry_cache_create(1000);
  sl_entry_cache_put(c, P(3, 0), "aa", 2);
  sl_entry_cache_put(c, P(3, 1), "bbb", 3);
  sl_entry_cache_put(c, P(7, 0), "c", 1);
  const void *d;
  size_t len;
  assert_true(sl_entry_cache_get(c, P(3, 1), &d, &len));
  assert_int_equal(len, 3);
  assert_memory_equal(d, "bbb", 3);
  assert_false(sl_entry_cache_get(c, P(3, 2), &d, &len));
  sl_ml_pos n;
  assert_true(sl_entry_cache_next(c, P(3, 1), &n));
  assert_int_equal(n.ledger_id, 7);
  assert_int_equal(n.entry_id, 0);
  assert_false(sl_entry_cache_next(c, P(7, 0), &n));
  assert_true(sl_entry_cache_next(c, P(1, 5), &n)); /* before the cache */
  assert_int_equal(n.ledger_id, 3);
  sl_entry_cache_stats st;
  sl_entry_cache_stats_get(c, &st);
  assert_int_equal(st.entries, 3);
  assert_int_equal(st.bytes, 6);
  assert_int_equal(st.hits, 1);
  assert_int_equal(st.misses, 1);
  sl_entry_cache_destroy(c);
}

/* The bound holds: the oldest entries go first, and the cache stays a
 * contiguous suffix. */
static void test_entry_cache__bounded_evicts_oldest(void **state) {
  (void)state;
  sl_entry_cache *c = sl_entry_cache_create(100);
  char buf[10];
  memset(buf, 'x', sizeof(buf));
  for (int64_t e = 0; e < 1000; e++) {
    sl_entry_cache_put(c, P(1, e), buf, sizeof(buf));
    sl_entry_cache_stats st;
    sl_entry_cache_stats_get(c, &st);
    assert_true(st.bytes <= 100);
  }
  sl_ml_pos first;
  assert_true(sl_entry_cache_first(c, &first));
  assert_int_equal(first.entry_id, 990);
  const void *d;
  size_t len;
  assert_false(sl_entry_cache_get(c, P(1, 989), &d, &len));
  for (int64_t e = 990; e < 1000; e++) assert_true(sl_entry_cache_get(c, P(1, e), &d, &len));
  /* Too large for the cache: emptied, not kept. */
  char big[101] = {0};
  sl_entry_cache_put(c, P(1, 1000), big, sizeof(big));
  assert_false(sl_entry_cache_first(c, &first));
  /* A position that goes back restarts the cache. */
  sl_entry_cache_put(c, P(2, 5), "a", 1);
  sl_entry_cache_put(c, P(2, 4), "b", 1);
  assert_true(sl_entry_cache_first(c, &first));
  assert_int_equal(first.entry_id, 4);
  assert_false(sl_entry_cache_get(c, P(2, 5), &d, &len));
  sl_entry_cache_destroy(c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_entry_cache__get_and_next_across_ledgers),
      cmocka_unit_test(test_entry_cache__bounded_evicts_oldest),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
