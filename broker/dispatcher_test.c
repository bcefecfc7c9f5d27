#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "broker/dispatcher.h"

/* What callbacks saw. */
typedef struct seen {
  sl_msg_id back[64];
  size_t n_back;
  uint64_t active_id[8];
  bool active_on[8];
  size_t n_active;
} seen;

static void on_back(sl_msg_id id, void *arg) {
  seen *s = arg;
  if (s->n_back < 64) s->back[s->n_back++] = id;
}

static void on_active(uint64_t consumer, bool active, void *arg) {
  seen *s = arg;
  if (s->n_active < 8) {
    s->active_id[s->n_active] = consumer;
    s->active_on[s->n_active++] = active;
  }
}

static sl_disp *make(sl_disp_type t, seen *s) {
  sl_disp_opts o = {.type = t, .subscription = "sub-a", .on_active = on_active,
                    .active_arg = s};
  sl_disp *d = NULL;
  assert_int_equal(sl_disp_create(&o, &d, NULL), SL_OK);
  return d;
}

static void add(sl_disp *d, uint64_t id, const char *name, uint32_t prio,
                seen *s) {
  sl_disp_consumer c = {.id = id, .name = name, .priority = prio};
  assert_int_equal(sl_disp_add(d, &c, on_back, s, NULL), SL_OK);
}

static sl_disp_msg msg(int64_t entry, const char *key) {
  sl_disp_msg m = {.id = {.ledger_id = 5, .entry_id = entry, .batch_index = 0},
                   .key = key, .key_len = key ? strlen(key) : 0};
  return m;
}

/* Picks message `entry`; returns the consumer or 0 for SL_EBUSY. */
static uint64_t pick(sl_disp *d, int64_t entry, const char *key) {
  sl_disp_msg m = msg(entry, key);
  uint64_t c = 0;
  sl_status st = sl_disp_pick(d, &m, 1000, &c);
  if (st == SL_EBUSY) return 0;
  assert_int_equal(st, SL_OK);
  return c;
}

static void test_dispatcher__unknown_type_refused(void **state) {
  (void)state;
  sl_disp_opts o = {.type = (sl_disp_type)9, .subscription = "s"};
  sl_disp *d = NULL;
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_disp_create(&o, &d, &err), SL_EINVAL);
  assert_null(d);
  assert_non_null(strstr(err.msg, "unknown subscription type"));
}

static void test_dispatcher__exclusive_second_consumer_names_subscription(
    void **state) {
  (void)state;
  seen s = {0};
  sl_disp *d = make(SL_DISP_EXCLUSIVE, &s);
  add(d, 1, "c1", 0, &s);
  sl_disp_consumer c2 = {.id = 2, .name = "c2"};
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_disp_add(d, &c2, NULL, NULL, &err), SL_EBUSY);
  assert_non_null(strstr(err.msg, "sub-a"));
  assert_non_null(strstr(err.msg, "c1"));
  assert_true(sl_disp_is_active(d, 1));
  sl_disp_consumer again = {.id = 1, .name = "c1"};
  assert_int_equal(sl_disp_add(d, &again, NULL, NULL, NULL), SL_EEXIST);
  sl_disp_destroy(d);
}

/* Never more messages than permits; bad permits refused. */
static void test_dispatcher__permits_bound_deliveries(void **state) {
  (void)state;
  seen s = {0};
  sl_disp *d = make(SL_DISP_EXCLUSIVE, &s);
  add(d, 1, "c1", 0, &s);
  assert_false(sl_disp_can_dispatch(d));
  assert_int_equal(pick(d, 0, NULL), 0);
  assert_int_equal(sl_disp_flow(d, 1, 0, NULL), SL_EINVAL);
  assert_int_equal(sl_disp_flow(d, 7, 1, NULL), SL_ENOTFOUND);
  assert_int_equal(sl_disp_flow(d, 1, 2, NULL), SL_OK);
  assert_int_equal(sl_disp_flow(d, 1, 0x80000000u, NULL), SL_EINVAL);
  assert_int_equal(pick(d, 0, NULL), 1);
  assert_int_equal(pick(d, 1, NULL), 1);
  assert_int_equal(pick(d, 2, NULL), 0);
  sl_disp_msg m = msg(0, NULL);
  uint64_t c;
  assert_int_equal(sl_disp_pick(d, &m, 0, &c), SL_EEXIST);
  sl_disp_stats st;
  sl_disp_stats_get(d, &st);
  assert_int_equal(st.unacked, 2);
  assert_int_equal(st.permits, 0);
  assert_true(sl_disp_ack(d, m.id));
  assert_false(sl_disp_ack(d, m.id));
  sl_disp_stats_get(d, &st);
  assert_int_equal(st.unacked, 1);
  sl_disp_destroy(d);
}

/* Active = best (priority, name); a better joiner takes over and the old
 * active's unacked come back in id order; on leave the next one is
 * active. */
static void test_dispatcher__failover_order_and_events(void **state) {
  (void)state;
  seen s = {0};
  sl_disp *d = make(SL_DISP_FAILOVER, &s);
  add(d, 1, "b", 1, &s);
  assert_int_equal(s.n_active, 1);
  assert_true(s.active_on[0] && s.active_id[0] == 1);
  add(d, 2, "z", 1, &s); /* worse name: stays passive */
  assert_int_equal(s.n_active, 1);
  assert_int_equal(sl_disp_flow(d, 1, 10, NULL), SL_OK);
  assert_int_equal(sl_disp_flow(d, 2, 10, NULL), SL_OK);
  assert_int_equal(pick(d, 3, NULL), 1);
  assert_int_equal(pick(d, 1, NULL), 1);
  assert_int_equal(pick(d, 2, NULL), 1);
  add(d, 3, "a", 1, &s); /* better name, no permits yet */
  assert_int_equal(s.n_active, 3);
  assert_true(s.active_id[1] == 1 && !s.active_on[1]);
  assert_true(s.active_id[2] == 3 && s.active_on[2]);
  assert_int_equal(s.n_back, 3);
  for (size_t i = 0; i < 3; i++) assert_int_equal(s.back[i].entry_id, (int64_t)i + 1);
  assert_int_equal(pick(d, 1, NULL), 0); /* active has no permits */
  assert_int_equal(sl_disp_flow(d, 3, 1, NULL), SL_OK);
  assert_int_equal(pick(d, 1, NULL), 3);
  s.n_back = 0;
  assert_true(sl_disp_remove(d, 3, on_back, &s));
  assert_int_equal(s.n_back, 1);
  assert_int_equal(s.active_id[3], 1); /* "b" before "z" */
  assert_true(s.active_on[3]);
  assert_true(sl_disp_is_active(d, 1));
  assert_false(sl_disp_is_active(d, 2));
  add(d, 4, "y", 0, &s); /* higher priority level beats names */
  assert_true(sl_disp_is_active(d, 4));
  sl_disp_destroy(d);
}

/* Round-robin over consumers with permits; a dead consumer's unacked come
 * back; priority level 0 is served before 1 while it has permits. */
static void test_dispatcher__shared_round_robin_and_dead_consumer(void **state) {
  (void)state;
  seen s = {0};
  sl_disp *d = make(SL_DISP_SHARED, &s);
  add(d, 1, "c1", 0, &s);
  add(d, 2, "c2", 0, &s);
  add(d, 3, "c3", 1, &s);
  for (uint64_t c = 1; c <= 3; c++) assert_int_equal(sl_disp_flow(d, c, 2, NULL), SL_OK);
  uint64_t got[6];
  for (int i = 0; i < 6; i++) got[i] = pick(d, i, NULL);
  assert_true((got[0] == 1 && got[1] == 2) || (got[0] == 2 && got[1] == 1));
  assert_true(got[2] == got[0] && got[3] == got[1]);
  assert_int_equal(got[4], 3);
  assert_int_equal(got[5], 3);
  assert_int_equal(pick(d, 6, NULL), 0);
  assert_true(sl_disp_remove(d, 3, on_back, &s));
  assert_int_equal(s.n_back, 2);
  assert_int_equal(s.back[0].entry_id, 4);
  assert_int_equal(s.back[1].entry_id, 5);
  assert_false(sl_disp_remove(d, 3, NULL, NULL));
  assert_int_equal(sl_disp_flow(d, 1, 1, NULL), SL_OK);
  assert_int_equal(pick(d, 4, NULL), 1); /* redelivered to a live one */
  sl_disp_destroy(d);
}

/* Each key sticks to one consumer; a joiner gets a key only after the
 * messages already out for it are acked, and other keys keep flowing. */
static void test_dispatcher__key_shared_join_waits_for_acks(void **state) {
  (void)state;
  seen s = {0};
  sl_disp *d = make(SL_DISP_KEY_SHARED, &s);
  add(d, 1, "c1", 0, &s);
  assert_int_equal(sl_disp_flow(d, 1, 1000, NULL), SL_OK);
  char key[16];
  for (int i = 0; i < 200; i++) {
    snprintf(key, sizeof(key), "k%d", i);
    assert_int_equal(pick(d, i, key), 1);
  }
  add(d, 2, "c2", 0, &s);
  assert_int_equal(sl_disp_flow(d, 2, 1000, NULL), SL_OK);
  /* Keys that moved to c2 wait; the others still go to c1. */
  int moved = -1, stayed = -1;
  for (int i = 0; i < 200; i++) {
    snprintf(key, sizeof(key), "k%d", i);
    uint64_t c = pick(d, 1000 + i, key);
    if (c == 0 && moved < 0) moved = i;
    if (c == 1 && stayed < 0) stayed = i;
    assert_true(c == 0 || c == 1);
    if (c == 1) assert_true(sl_disp_ack(d, msg(1000 + i, NULL).id));
  }
  assert_true(moved >= 0);
  assert_true(stayed >= 0);
  snprintf(key, sizeof(key), "k%d", moved);
  assert_int_equal(pick(d, 2000, key), 0); /* still waiting (invariant 5) */
  assert_true(sl_disp_ack(d, msg(moved, NULL).id));
  assert_int_equal(pick(d, 2000, key), 2); /* drained: now at the joiner */
  /* c2 leaves: its key comes back and goes to c1 again. */
  s.n_back = 0;
  assert_true(sl_disp_remove(d, 2, on_back, &s));
  assert_int_equal(s.n_back, 1);
  assert_int_equal(s.back[0].entry_id, 2000);
  assert_int_equal(pick(d, 2000, key), 1);
  sl_disp_destroy(d);
}

/* A key with no consumer with permits waits, and so do its later
 * messages, while other keys flow to consumers that have permits. */
static void test_dispatcher__key_shared_no_permits_waits(void **state) {
  (void)state;
  seen s = {0};
  sl_disp *d = make(SL_DISP_KEY_SHARED, &s);
  add(d, 1, "c1", 0, &s);
  add(d, 2, "c2", 0, &s);
  assert_int_equal(sl_disp_flow(d, 1, 1, NULL), SL_OK);
  assert_int_equal(sl_disp_flow(d, 2, 1, NULL), SL_OK);
  char key[16];
  uint64_t first[2] = {0, 0};
  int n = 0;
  for (int i = 0; i < 100 && n < 2; i++) {
    snprintf(key, sizeof(key), "k%d", i);
    uint64_t c = pick(d, i, key);
    if (c != 0) first[n++] = c;
  }
  assert_int_equal(n, 2);
  assert_true(first[0] != first[1]);
  assert_false(sl_disp_can_dispatch(d));
  sl_disp_destroy(d);
}

/* Ack timeout and nack hand messages back in id order; cumulative acks
 * forget everything up to the id at that consumer. */
static void test_dispatcher__expire_release_and_cumulative(void **state) {
  (void)state;
  seen s = {0};
  sl_disp *d = make(SL_DISP_SHARED, &s);
  sl_disp_consumer c = {.id = 1, .name = "c1", .ack_timeout_ms = 100};
  assert_int_equal(sl_disp_add(d, &c, NULL, NULL, NULL), SL_OK);
  assert_int_equal(sl_disp_flow(d, 1, 10, NULL), SL_OK);
  uint64_t got;
  for (int i = 4; i >= 0; i--) {
    sl_disp_msg m = msg(i, NULL);
    assert_int_equal(sl_disp_pick(d, &m, i < 3 ? 1000 : 1050, &got), SL_OK);
  }
  assert_int_equal(sl_disp_expire(d, 1099, on_back, &s), 0);
  assert_int_equal(sl_disp_expire(d, 1100, on_back, &s), 3);
  for (size_t i = 0; i < 3; i++) assert_int_equal(s.back[i].entry_id, (int64_t)i);
  assert_true(sl_disp_release(d, msg(4, NULL).id, on_back, &s));
  assert_int_equal(s.back[3].entry_id, 4);
  assert_false(sl_disp_release(d, msg(4, NULL).id, on_back, &s));
  assert_int_equal(sl_disp_ack_upto(d, 1, msg(9, NULL).id), 1);
  sl_disp_stats st;
  sl_disp_stats_get(d, &st);
  assert_int_equal(st.unacked, 0);
  assert_int_equal(st.consumers, 1);
  sl_disp_destroy(d);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_dispatcher__unknown_type_refused),
      cmocka_unit_test(test_dispatcher__exclusive_second_consumer_names_subscription),
      cmocka_unit_test(test_dispatcher__permits_bound_deliveries),
      cmocka_unit_test(test_dispatcher__failover_order_and_events),
      cmocka_unit_test(test_dispatcher__shared_round_robin_and_dead_consumer),
      cmocka_unit_test(test_dispatcher__key_shared_join_waits_for_acks),
      cmocka_unit_test(test_dispatcher__key_shared_no_permits_waits),
      cmocka_unit_test(test_dispatcher__expire_release_and_cumulative),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
