#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <cmocka.h>

#include "bookie/ledger_table.h"

/* Random puts and removes against a plain array as the reference. */
static void test_ledger_table__matches_reference(void **state) {
  (void)state;
  enum { KEYS = 512, OPS = 200000 };
  static int vals[KEYS];
  bool present[KEYS] = {false};
  sl_ledger_table t = SL_LEDGER_TABLE_INIT;
  srand(42);
  size_t count = 0;
  for (int op = 0; op < OPS; op++) {
    /* Keys spaced so that many share a home slot. */
    int k = rand() % KEYS;
    uint64_t key = (uint64_t)k * 1024u;
    if (rand() % 3 != 0) {
      if (!present[k]) count++;
      present[k] = true;
      sl_ledger_table_put(&t, key, &vals[k]);
    } else {
      void *v = sl_ledger_table_remove(&t, key);
      assert_ptr_equal(v, present[k] ? &vals[k] : NULL);
      if (present[k]) count--;
      present[k] = false;
    }
    if (op % 1000 == 0) {
      for (int i = 0; i < KEYS; i++) {
        assert_ptr_equal(sl_ledger_table_get(&t, (uint64_t)i * 1024u),
                         present[i] ? &vals[i] : NULL);
      }
    }
    assert_int_equal(t.count, count);
  }
  sl_ledger_table_release(&t);
}

static void test_ledger_table__empty(void **state) {
  (void)state;
  sl_ledger_table t = SL_LEDGER_TABLE_INIT;
  assert_null(sl_ledger_table_get(&t, 7));
  assert_null(sl_ledger_table_remove(&t, 7));
  sl_ledger_table_release(&t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_ledger_table__matches_reference),
      cmocka_unit_test(test_ledger_table__empty),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
