/* Unit tests of the latency histogram (histogram.h). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <cmocka.h>

#include "client/histogram.h"

static sl_hist h;

/* Every value lands within 1.6% above itself, exact below 128. */
static void test_histogram__precision(void **state) {
  (void)state;
  for (int64_t v = 1; v < ((int64_t)1 << 50); v = v * 3 + 1) {
    sl_hist_reset(&h);
    sl_hist_record(&h, v);
    int64_t q = sl_hist_quantile(&h, 1.0);
    assert_int_equal(q, v); /* capped by the max seen */
    sl_hist_record(&h, v * 2);
    int64_t mid = sl_hist_quantile(&h, 0.5);
    assert_true(mid >= v);
    assert_true((double)(mid - v) <= (double)v * 0.016 + 0.5);
  }
}

static void test_histogram__quantiles(void **state) {
  (void)state;
  sl_hist_reset(&h);
  for (int64_t v = 1; v <= 10000; v++) sl_hist_record(&h, v * 1000);
  assert_int_equal(sl_hist_count(&h), 10000);
  int64_t p50 = sl_hist_quantile(&h, 0.50), p99 = sl_hist_quantile(&h, 0.99);
  assert_true(p50 >= 5000000 && p50 <= 5000000 * 1.016);
  assert_true(p99 >= 9900000 && p99 <= 9900000 * 1.016);
  assert_int_equal(sl_hist_max(&h), 10000000);
  assert_int_equal(sl_hist_quantile(&h, 0.0) >= 1000, 1);
  sl_hist_record(&h, -5); /* clamps to 0 */
  assert_int_equal(sl_hist_quantile(&h, 0.0), 0);
}

static void test_histogram__merge_and_csv(void **state) {
  (void)state;
  static sl_hist a, b;
  sl_hist_reset(&a);
  sl_hist_reset(&b);
  sl_hist_record(&a, 10);
  sl_hist_record(&b, 1000000);
  sl_hist_merge(&a, &b);
  assert_int_equal(sl_hist_count(&a), 2);
  assert_int_equal(sl_hist_max(&a), 1000000);
  FILE *f = tmpfile();
  assert_non_null(f);
  assert_int_equal(sl_hist_write_csv(&a, f), 0);
  rewind(f);
  char line[128];
  assert_non_null(fgets(line, sizeof(line), f));
  assert_string_equal(line, "value_ns,count,cumulative_fraction\n");
  assert_non_null(fgets(line, sizeof(line), f));
  assert_string_equal(line, "10,1,0.500000\n");
  assert_non_null(fgets(line, sizeof(line), f));
  assert_non_null(fgets(line, sizeof(line), f) == NULL ? line : NULL);
  fclose(f);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_histogram__precision),
      cmocka_unit_test(test_histogram__quantiles),
      cmocka_unit_test(test_histogram__merge_and_csv),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
