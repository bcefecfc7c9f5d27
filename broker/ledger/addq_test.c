#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <cmocka.h>

#include "broker/ledger/addq.h"

/* Ids are consecutive from the first one, and pops come from the front. */
static void test_addq__consecutive(void **state) {
  (void)state;
  sl_quorum q = {3, 2, 2};
  sl_addq aq;
  sl_addq_init(&aq, &q, 10);
  static int data[200];
  for (int i = 0; i < 200; i++) {
    assert_int_equal(sl_addq_next(&aq), 10 + i);
    assert_int_equal(sl_addq_push(&aq, &data[i], i), SL_OK);
  }
  assert_null(sl_addq_get(&aq, 9));
  assert_null(sl_addq_get(&aq, 210));
  assert_int_equal(sl_addq_get(&aq, 150)->entry, 150);
  assert_ptr_equal(sl_addq_get(&aq, 150)->data, &data[140]);
  for (int i = 0; i < 100; i++) assert_ptr_equal(sl_addq_pop(&aq), &data[i]);
  /* Wrap around the ring while growing. */
  static int more[100];
  for (int i = 0; i < 100; i++) assert_int_equal(sl_addq_push(&aq, &more[i], 0), SL_OK);
  assert_int_equal(sl_addq_front(&aq)->entry, 110);
  assert_ptr_equal(sl_addq_get(&aq, 309)->data, &more[99]);
  for (int i = 100; i < 200; i++) assert_ptr_equal(sl_addq_pop(&aq), &data[i]);
  for (int i = 0; i < 100; i++) assert_ptr_equal(sl_addq_pop(&aq), &more[i]);
  assert_null(sl_addq_front(&aq));
  assert_false(sl_addq_front_complete(&aq));
  assert_int_equal(sl_addq_next(&aq), 310);
  sl_addq_release(&aq);
}

/* Out-of-order acks: the front completes only with Qa acks from its own
 * write set; a later entry completing first does not move the front. */
static void test_addq__acks_in_order(void **state) {
  (void)state;
  sl_quorum q = {3, 2, 2};
  sl_addq aq;
  sl_addq_init(&aq, &q, 0);
  for (int i = 0; i < 3; i++) assert_int_equal(sl_addq_push(&aq, NULL, 0), SL_OK);
  /* Entry 1 (slots 1, 2) completes first. */
  assert_true(sl_addq_ack(&aq, 1, 1));
  assert_true(sl_addq_ack(&aq, 1, 2));
  assert_false(sl_addq_front_complete(&aq));
  /* Slot 2 is not in entry 0's write set {0, 1}. */
  assert_false(sl_addq_ack(&aq, 0, 2));
  assert_true(sl_addq_ack(&aq, 0, 0));
  assert_false(sl_addq_front_complete(&aq));
  assert_true(sl_addq_ack(&aq, 0, 1));
  assert_true(sl_addq_front_complete(&aq));
  sl_addq_pop(&aq);
  assert_true(sl_addq_front_complete(&aq)); /* entry 1 was already complete */
  sl_addq_pop(&aq);
  assert_false(sl_addq_front_complete(&aq));
  assert_false(sl_addq_ack(&aq, 0, 0)); /* no longer pending */
  assert_false(sl_addq_ack(&aq, 2, 7)); /* no such slot */
  sl_addq_release(&aq);
}

/* A replaced slot's acks are forgotten: the entry needs the replacement. */
static void test_addq__forget_slot(void **state) {
  (void)state;
  sl_quorum q = {3, 3, 2};
  sl_addq aq;
  sl_addq_init(&aq, &q, 0);
  assert_int_equal(sl_addq_push(&aq, NULL, 0), SL_OK);
  assert_int_equal(sl_addq_push(&aq, NULL, 0), SL_OK);
  sl_addq_ack(&aq, 0, 0);
  sl_addq_ack(&aq, 0, 1);
  sl_addq_ack(&aq, 1, 1);
  sl_addq_forget_slot(&aq, 1);
  assert_false(sl_addq_front_complete(&aq));
  assert_int_equal(sl_addq_get(&aq, 1)->acked, 0);
  sl_addq_ack(&aq, 0, 2);
  assert_true(sl_addq_front_complete(&aq));
  sl_addq_release(&aq);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_addq__consecutive),
      cmocka_unit_test(test_addq__acks_in_order),
      cmocka_unit_test(test_addq__forget_slot),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
