#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "broker/ledger/placement.h"

#define B(id, rack, ro, free, usage) {id, rack, ro, free, usage}

/* Read-only, excluded and taken bookies are never picked. */
static void test_placement__filters(void **state) {
  (void)state;
  sl_placement_bookie c[] = {
      B("b0", NULL, false, 10, 0), B("b1", NULL, true, 10, 0),
      B("b2", NULL, false, 10, 0), B("b3", NULL, false, 10, 0),
      B("b4", NULL, false, 10, 0)};
  const char *exclude[] = {"b2"};
  sl_placement_bookie taken[] = {B("b3", NULL, false, 0, 0)};
  size_t out[2];
  assert_int_equal(sl_placement_pick(c, 5, exclude, 1, taken, 1, 2, out, NULL),
                   SL_OK);
  assert_int_equal(out[0], 0);
  assert_int_equal(out[1], 4);
  sl_err err = SL_ERR_INIT;
  size_t out3[3];
  assert_int_equal(sl_placement_pick(c, 5, exclude, 1, taken, 1, 3, out3, &err),
                   SL_EUNAVAIL);
  assert_non_null(strstr(err.msg, "2 usable bookies, need 3"));
}

/* Least used first, then most free bytes, then smallest id. */
static void test_placement__least_used(void **state) {
  (void)state;
  sl_placement_bookie c[] = {
      B("b0", NULL, false, 100, 2), B("b1", NULL, false, 5, 0),
      B("b2", NULL, false, 50, 0), B("b3", NULL, false, 50, 0),
      B("b4", NULL, false, 500, 1)};
  size_t out[4];
  assert_int_equal(sl_placement_pick(c, 5, NULL, 0, NULL, 0, 4, out, NULL), SL_OK);
  assert_int_equal(out[0], 2);
  assert_int_equal(out[1], 3);
  assert_int_equal(out[2], 1);
  assert_int_equal(out[3], 4);
}

/* With enough racks every pick is on its own rack, even against the usage
 * order; racks of the bookies already taken count. */
static void test_placement__racks(void **state) {
  (void)state;
  sl_placement_bookie c[] = {
      B("a1", "ra", false, 10, 0), B("a2", "ra", false, 10, 0),
      B("a3", "ra", false, 10, 0), B("b1", "rb", false, 10, 5),
      B("c1", "rc", false, 10, 9)};
  size_t out[3];
  assert_int_equal(sl_placement_pick(c, 5, NULL, 0, NULL, 0, 3, out, NULL), SL_OK);
  assert_int_equal(out[0], 0);
  assert_int_equal(out[1], 3);
  assert_int_equal(out[2], 4);
  /* Replacing one bookie of an ensemble on racks ra and rb: rc first. */
  sl_placement_bookie taken[] = {B("a1", "ra", false, 0, 0),
                                 B("b1", "rb", false, 0, 0)};
  size_t one;
  assert_int_equal(sl_placement_pick(c, 5, NULL, 0, taken, 2, 1, &one, NULL), SL_OK);
  assert_int_equal(one, 4);
  /* Too few racks: they fill evenly (2 on ra, 2 on rb), never 3 on one. */
  sl_placement_bookie d[] = {
      B("a1", "ra", false, 10, 0), B("a2", "ra", false, 10, 0),
      B("a3", "ra", false, 10, 0), B("b1", "rb", false, 10, 3),
      B("b2", "rb", false, 10, 3)};
  size_t four[4];
  assert_int_equal(sl_placement_pick(d, 5, NULL, 0, NULL, 0, 4, four, NULL), SL_OK);
  int on_a = 0;
  for (int i = 0; i < 4; i++) on_a += four[i] < 3;
  assert_int_equal(on_a, 2);
}

/* A bookie listed twice is picked once. */
static void test_placement__duplicate_ids(void **state) {
  (void)state;
  sl_placement_bookie c[] = {B("b0", NULL, false, 10, 0),
                             B("b0", NULL, false, 10, 0)};
  size_t out[2];
  assert_int_equal(sl_placement_pick(c, 2, NULL, 0, NULL, 0, 2, out, NULL),
                   SL_EUNAVAIL);
  assert_int_equal(sl_placement_pick(c, 2, NULL, 0, NULL, 0, 1, out, NULL), SL_OK);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_placement__filters),
      cmocka_unit_test(test_placement__least_used),
      cmocka_unit_test(test_placement__racks),
      cmocka_unit_test(test_placement__duplicate_ids),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
