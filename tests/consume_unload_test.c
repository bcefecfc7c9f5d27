/*
 * Acks across a graceful move of the partition, on a real cluster (etcd, 1
 * metadata, 3 bookies, 2 brokers): a consumer acks every message it got,
 * the owner applies the acks in memory (GetTopicStats shows no backlog),
 * and at once the partition moves, by an admin Unload or by a graceful stop
 * (SIGTERM) of the owner. Cursor writes are batched (100 ms), so these
 * acks are not durable yet when the move begins; the owner must flush them
 * before it gives the partition up. A consumer of the subscription on the
 * next owner then gets nothing again.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "broker.slrpc.h"
#include "common/clock.h"
#include "tests/consume_testlib.h"

#define WAIT_MS 30000
#define N 200

static int setup(void **state) {
  sl_pt *t = calloc(1, sizeof(*t));
  sl_pt_start(t, "consume_unload", 1, 3, 2);
  sl_pt_namespace(t, "cu", false, 0);
  sl_pt_topic(t, "cu/unload", 0);
  sl_pt_topic(t, "cu/stop", 0);
  *state = t;
  return 0;
}

static int teardown(void **state) {
  sl_pt *t = *state;
  sl_pt_stop(t);
  free(t);
  return 0;
}

/* True once the owner's GetTopicStats shows the subscription with nothing
 * left: every ack applied on the partition's serial. */
static bool all_acked(sl_pt *t, int owner, const char *topic, const char *sub) {
  Sluice__V1__TopicStatsRequest req = SLUICE__V1__TOPIC_STATS_REQUEST__INIT;
  req.topic = (char *)topic;
  Sluice__V1__TopicStats *out = NULL;
  sl_rpc_call_opts o = {.timeout_ms = 10000};
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_broker_service_get_topic_stats(t->broker[owner], &req, &out, &o, &err);
  if (st != SL_OK) fail_msg("GetTopicStats %s: %s", topic, sl_err_msg(&err, st));
  bool done = false;
  for (size_t i = 0; i < out->n_subscriptions; i++) {
    const Sluice__V1__SubscriptionStats *s = out->subscriptions[i];
    if (strcmp(s->name, sub) == 0) done = s->backlog == 0 && s->unacked == 0;
  }
  protobuf_c_message_free_unpacked(&out->base, NULL);
  return done;
}

/* Produces N, receives and acks them all (no receipt: nothing waits for the
 * flush), and returns once the owner applied the acks. Returns the owner. */
static int consume_and_ack(sl_pt *t, const sl_ct_sub *sub) {
  sl_ct_produce(t, sub->topic, "p", 0, N, 0);
  sl_ct_consumer c;
  sl_ct_subscribe_owner(t, sub, &c);
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_ct_flow(&c, N, &err), SL_OK);
  static sl_ct_msg got[N];
  int n = 0;
  sl_status st = sl_ct_recv(&c, got, N, &n, WAIT_MS, &err);
  if (st != SL_OK) fail_msg("received %d of %d: %s", n, N, sl_err_msg(&err, st));
  static Sluice__V1__MessageId ids[N];
  for (int i = 0; i < N; i++) ids[i] = got[i].id;
  assert_int_equal(sl_ct_ack(&c, ids, N, false, 0, &err), SL_OK);
  int owner = sl_pt_owner(t, 0, sub->topic, NULL);
  int64_t end = sl_clock_mono_ms() + WAIT_MS;
  while (!all_acked(t, owner, sub->topic, sub->subscription))
    if (sl_clock_mono_ms() > end) fail_msg("the owner did not apply the acks");
  sl_ct_close(&c);
  return owner;
}

/* A new consumer of the subscription (at the partition's owner now) gets
 * nothing: every ack made before the move was persisted. */
static void expect_nothing_redelivered(sl_pt *t, const sl_ct_sub *sub) {
  sl_ct_consumer c;
  sl_err err = SL_ERR_INIT;
  /* Lookups may name the old owner for a moment (their cache). */
  int64_t end = sl_clock_mono_ms() + WAIT_MS;
  for (;;) {
    int owner = sl_pt_try_owner(t, sl_ct_live_broker(t), sub->topic, NULL);
    if (owner >= 0 && sl_cluster_running(t->c, SL_NODE_BROKER, owner)) {
      if (sl_ct_subscribe(t, owner, sub, &c, NULL, &err) == SL_OK) break;
      sl_ct_close(&c);
    }
    if (sl_clock_mono_ms() > end) fail_msg("cannot subscribe again: %s", err.msg);
  }
  assert_int_equal(sl_ct_flow(&c, N, &err), SL_OK);
  Sluice__V1__ConsumeResponse *r = NULL;
  sl_status st = sl_ct_next(&c, 2000, &r, &err);
  if (st == SL_OK) {
    if (r->kind_case == SLUICE__V1__CONSUME_RESPONSE__KIND_MESSAGE)
      fail_msg("message seq %llu redelivered after the move",
               (unsigned long long)r->message->sequence_id);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    fail_msg("unexpected response %d", (int)r->kind_case);
  }
  assert_int_equal(st, SL_ETIMEDOUT);
  sl_ct_close(&c);
}

static void test_consume_unload__admin_unload_keeps_acks(void **state) {
  sl_pt *t = *state;
  sl_ct_sub sub = {.topic = "cu/unload", .subscription = "s", .type = 0, .earliest = true};
  int owner = consume_and_ack(t, &sub);
  sl_pt_unload(t, owner, sub.topic);
  expect_nothing_redelivered(t, &sub);
}

static void test_consume_unload__graceful_stop_keeps_acks(void **state) {
  sl_pt *t = *state;
  sl_ct_sub sub = {.topic = "cu/stop", .subscription = "s", .type = 0, .earliest = true};
  int owner = consume_and_ack(t, &sub);
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_cluster_stop_node(t->c, SL_NODE_BROKER, owner, &err), SL_OK);
  expect_nothing_redelivered(t, &sub);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_consume_unload__admin_unload_keeps_acks),
      cmocka_unit_test(test_consume_unload__graceful_stop_keeps_acks),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
