#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "broker/subscription_replay.h"

static sl_msg_id M(int64_t entry, int32_t batch) {
  sl_msg_id id = {.ledger_id = 9, .entry_id = entry, .batch_index = batch};
  return id;
}

/* Due messages come out in id order; a delayed one waits for its time;
 * counts grow with every hand-back. */
static void test_subscription_replay__due_in_id_order_with_counts(void **state) {
  (void)state;
  sl_replay *r = sl_replay_create(0);
  assert_int_equal(sl_replay_push(r, M(5, 0), 100), SL_REPLAY_QUEUED);
  assert_int_equal(sl_replay_push(r, M(2, 1), 100), SL_REPLAY_QUEUED);
  assert_int_equal(sl_replay_push(r, M(2, 0), 500), SL_REPLAY_QUEUED);
  assert_int_equal(sl_replay_push(r, M(5, 0), 100), SL_REPLAY_ALREADY);
  int64_t due;
  assert_true(sl_replay_next_due(r, &due));
  assert_int_equal(due, 100);
  sl_msg_id id;
  uint32_t count;
  assert_false(sl_replay_pop_due(r, 99, NULL, &id, &count));
  assert_true(sl_replay_pop_due(r, 100, NULL, &id, &count));
  assert_int_equal(id.entry_id, 2);
  assert_int_equal(id.batch_index, 1);
  assert_int_equal(count, 1);
  assert_true(sl_replay_pop_due(r, 100, NULL, &id, &count));
  assert_int_equal(id.entry_id, 5);
  assert_false(sl_replay_pop_due(r, 499, NULL, &id, &count));
  assert_true(sl_replay_pop_due(r, 500, NULL, &id, &count));
  assert_int_equal(id.entry_id, 2);
  assert_int_equal(id.batch_index, 0);
  /* Delivered again, handed back again: count 2. */
  assert_int_equal(sl_replay_push(r, M(2, 0), 600), SL_REPLAY_QUEUED);
  assert_int_equal(sl_replay_count(r, M(2, 0)), 2);
  assert_int_equal(sl_replay_count(r, M(7, 0)), 0);
  /* Nobody could take it: back without counting. */
  assert_true(sl_replay_pop_due(r, 600, NULL, &id, &count));
  sl_replay_hold(r, id, 600);
  assert_int_equal(sl_replay_count(r, M(2, 0)), 2);
  assert_int_equal(sl_replay_queued(r), 1);
  /* A first read held back: queued with count 0. */
  sl_replay_hold(r, M(8, 0), 600);
  assert_int_equal(sl_replay_count(r, M(8, 0)), 0);
  assert_int_equal(sl_replay_queued(r), 2);
  sl_replay_destroy(r);
}

/* Past max redeliveries: dead-letter instead of queueing. */
static void test_subscription_replay__dead_letter_past_max(void **state) {
  (void)state;
  sl_replay *r = sl_replay_create(2);
  sl_msg_id id;
  uint32_t count;
  for (uint32_t i = 1; i <= 2; i++) {
    assert_int_equal(sl_replay_push(r, M(1, 0), 0), SL_REPLAY_QUEUED);
    assert_true(sl_replay_pop_due(r, 0, NULL, &id, &count));
    assert_int_equal(count, i);
  }
  assert_int_equal(sl_replay_push(r, M(1, 0), 0), SL_REPLAY_DEAD_LETTER);
  assert_int_equal(sl_replay_queued(r), 0);
  assert_int_equal(sl_replay_count(r, M(1, 0)), 2);
  sl_replay_forget(r, M(1, 0));
  assert_int_equal(sl_replay_count(r, M(1, 0)), 0);
  sl_replay_destroy(r);
}

/* Acks forget: one id, everything up to an id, or all (seek). */
static void test_subscription_replay__forget(void **state) {
  (void)state;
  sl_replay *r = sl_replay_create(0);
  for (int64_t e = 0; e < 10; e++) sl_replay_push(r, M(e, 0), 0);
  sl_replay_forget(r, M(3, 0));
  assert_int_equal(sl_replay_queued(r), 9);
  sl_replay_forget_upto(r, M(5, 0));
  assert_int_equal(sl_replay_queued(r), 4);
  sl_msg_id id;
  uint32_t count;
  assert_true(sl_replay_pop_due(r, 0, NULL, &id, &count));
  assert_int_equal(id.entry_id, 6);
  sl_msg_id after = M(7, 0);
  assert_true(sl_replay_pop_due(r, 0, &after, &id, &count));
  assert_int_equal(id.entry_id, 8); /* past 7, which stays queued */
  assert_int_equal(sl_replay_queued(r), 2);
  sl_replay_clear(r);
  assert_int_equal(sl_replay_queued(r), 0);
  assert_false(sl_replay_next_due(r, &(int64_t){0}));
  assert_int_equal(sl_replay_count(r, M(6, 0)), 0);
  sl_replay_destroy(r);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_subscription_replay__due_in_id_order_with_counts),
      cmocka_unit_test(test_subscription_replay__dead_letter_past_max),
      cmocka_unit_test(test_subscription_replay__forget),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
