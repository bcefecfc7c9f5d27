#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "common/map.h"

static void test_map__empty(void **state) {
  (void)state;
  sl_map m = SL_MAP_INIT;
  assert_int_equal(sl_map_len(&m), 0);
  assert_null(sl_map_get(&m, "a"));
  assert_false(sl_map_find(&m, "a", NULL));
  assert_false(sl_map_remove(&m, "a", NULL));
  sl_map_iter it = SL_MAP_ITER_INIT;
  assert_false(sl_map_next(&m, &it, NULL, NULL));
  sl_map_release(&m, NULL);
}

static void test_map__put_get_replace(void **state) {
  (void)state;
  sl_map m;
  sl_map_init(&m);
  int a = 1, b = 2;
  void *old = &a;
  assert_int_equal(sl_map_put(&m, "topic", &a, &old), SL_OK);
  assert_null(old);
  assert_ptr_equal(sl_map_get(&m, "topic"), &a);
  assert_int_equal(sl_map_put(&m, "topic", &b, &old), SL_OK);
  assert_ptr_equal(old, &a);
  assert_ptr_equal(sl_map_get(&m, "topic"), &b);
  assert_int_equal(sl_map_len(&m), 1);
  /* A NULL value is still present: sl_map_find tells it from absent. */
  void *v = &a;
  assert_int_equal(sl_map_put(&m, "", NULL, NULL), SL_OK);
  assert_true(sl_map_find(&m, "", &v));
  assert_null(v);
  assert_null(sl_map_get(&m, "top"));
  sl_map_release(&m, NULL);
}

/* The map copies keys: the caller's buffer may change afterwards. */
static void test_map__copies_keys(void **state) {
  (void)state;
  sl_map m = SL_MAP_INIT;
  char key[16];
  int x = 5;
  snprintf(key, sizeof(key), "k1");
  assert_int_equal(sl_map_put(&m, key, &x, NULL), SL_OK);
  snprintf(key, sizeof(key), "k2");
  assert_ptr_equal(sl_map_get(&m, "k1"), &x);
  assert_null(sl_map_get(&m, "k2"));
  sl_map_release(&m, NULL);
}

/* Thousands of keys across many growths, then removal of every other one:
 * every lookup still answers right. */
static void test_map__grows_and_removes(void **state) {
  (void)state;
  enum { N = 5000 };
  sl_map m = SL_MAP_INIT;
  static int vals[N];
  char key[48];
  for (int i = 0; i < N; i++) {
    vals[i] = i;
    snprintf(key, sizeof(key), "persistent://t/ns/topic-%d", i);
    assert_int_equal(sl_map_put(&m, key, &vals[i], NULL), SL_OK);
  }
  assert_int_equal(sl_map_len(&m), N);
  for (int i = 0; i < N; i += 2) {
    snprintf(key, sizeof(key), "persistent://t/ns/topic-%d", i);
    void *v = NULL;
    assert_true(sl_map_remove(&m, key, &v));
    assert_ptr_equal(v, &vals[i]);
    assert_false(sl_map_remove(&m, key, NULL));
  }
  assert_int_equal(sl_map_len(&m), N / 2);
  for (int i = 0; i < N; i++) {
    snprintf(key, sizeof(key), "persistent://t/ns/topic-%d", i);
    if (i % 2 == 0) {
      assert_false(sl_map_find(&m, key, NULL));
    } else {
      assert_ptr_equal(sl_map_get(&m, key), &vals[i]);
    }
  }
  sl_map_release(&m, NULL);
}

/* Put and remove the same few keys many times: tombstones are swept, so the
 * table does not grow without bound (invariant 2). */
static void test_map__churn_stays_small(void **state) {
  (void)state;
  sl_map m = SL_MAP_INIT;
  char key[48];
  int x = 0;
  for (int i = 0; i < 100000; i++) {
    snprintf(key, sizeof(key), "producer-%d", i);
    assert_int_equal(sl_map_put(&m, key, &x, NULL), SL_OK);
    assert_true(sl_map_remove(&m, key, NULL));
  }
  assert_int_equal(sl_map_len(&m), 0);
  assert_true(m.cap <= 16);
  sl_map_release(&m, NULL);
}

/* Removing during a walk (the current key and others) visits every entry
 * that stayed present exactly once. */
static void test_map__remove_during_iteration(void **state) {
  (void)state;
  enum { N = 300 };
  sl_map m = SL_MAP_INIT;
  static int seen[N];
  static int vals[N];
  char key[16];
  for (int i = 0; i < N; i++) {
    vals[i] = i;
    snprintf(key, sizeof(key), "s%d", i);
    assert_int_equal(sl_map_put(&m, key, &vals[i], NULL), SL_OK);
  }
  sl_map_iter it = SL_MAP_ITER_INIT;
  const char *k;
  void *v;
  while (sl_map_next(&m, &it, &k, &v)) {
    int i = *(int *)v;
    seen[i]++;
    if (i % 3 == 0) assert_true(sl_map_remove(&m, k, NULL));
    /* Also drop s(i+1) whenever i is 1 mod 3: maybe visited, maybe not. */
    if (i % 3 == 1 && i + 1 < N) {
      snprintf(key, sizeof(key), "s%d", i + 1);
      sl_map_remove(&m, key, NULL);
    }
  }
  for (int i = 0; i < N; i++) {
    if (i % 3 == 2) {
      assert_true(seen[i] <= 1);
    } else {
      assert_int_equal(seen[i], 1);
    }
  }
  for (int i = 0; i < N; i++) {
    snprintf(key, sizeof(key), "s%d", i);
    assert_int_equal(sl_map_find(&m, key, NULL), i % 3 == 1);
  }
  assert_int_equal(sl_map_len(&m), N / 3);
  sl_map_release(&m, NULL);
}

static void test_map__release_frees_values(void **state) {
  (void)state;
  sl_map m = SL_MAP_INIT;
  assert_int_equal(sl_map_put(&m, "a", strdup("va"), NULL), SL_OK);
  assert_int_equal(sl_map_put(&m, "b", strdup("vb"), NULL), SL_OK);
  sl_map_release(&m, free); /* ASan's leak check fails this test if not */
  assert_int_equal(sl_map_len(&m), 0);
  assert_int_equal(sl_map_put(&m, "c", NULL, NULL), SL_OK);
  sl_map_release(&m, NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_map__empty),
      cmocka_unit_test(test_map__put_get_replace),
      cmocka_unit_test(test_map__copies_keys),
      cmocka_unit_test(test_map__grows_and_removes),
      cmocka_unit_test(test_map__churn_stays_small),
      cmocka_unit_test(test_map__remove_during_iteration),
      cmocka_unit_test(test_map__release_frees_values),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
