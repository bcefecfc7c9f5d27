/*
 * Acks across a graceful move of the partition, on a real cluster (etcd, 1
 * metadata, 3 bookies, 2 brokers): a consumer acks every message it got,
 * the owner applies the acks in memory (GetTopicStats shows no backlog),
 * and at once the partition moves, by an admin Unload or by a graceful stop
 * (SIGTERM) of the owner. Cursor writes are batched (100 ms), so these
 * acks are not durable yet when the move begins; the owner must flush them
 * before it gives the partition up. A consumer of the subscription on the
 * next owner then gets nothing again. Also when a flush of earlier acks is
 * still in flight as the unload begins (the metadata service is held with
 * SIGSTOP meanwhile): the later acks go in the flush after it, before the
 * partition is given up. And when that flush cannot finish, the unload
 * gives it up after 3 s and goes on; the acks are then redelivered or
 * durable, never lost.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <cmocka.h>

#include <curl/curl.h>

#include "broker.slrpc.h"
#include "common/clock.h"
#include "tests/consume_testlib.h"
#include "tests/metrics_scrape.h"

#define WAIT_MS 30000
#define N 200

static int setup(void **state) {
  /* The brokers inherit it: /metrics on free ports. */
  setenv("SLUICE_BROKER_METRICS_LISTEN", "127.0.0.1:0", 1);
  sl_pt *t = calloc(1, sizeof(*t));
  /* Sessions outlive the metadata service's SIGSTOP of one case. */
  sl_pt_start_ttl(t, "consume_unload", 1, 3, 2, 10);
  unsetenv("SLUICE_BROKER_METRICS_LISTEN");
  sl_pt_namespace(t, "cu", false, 0);
  sl_pt_topic(t, "cu/unload", 0);
  sl_pt_topic(t, "cu/stop", 0);
  sl_pt_topic(t, "cu/inflight", 0);
  sl_pt_topic(t, "cu/hung", 0);
  *state = t;
  return 0;
}

/* True once the owner's GetTopicStats shows the subscription with nothing
 * left: every ack applied on the partition's serial. */
static bool all_acked(sl_pt *t, int owner, const char *topic, const char *sub) {
  const Sluice__V1__SubscriptionStats *s;
  Sluice__V1__TopicStats *out = sl_ct_topic_stats(t, owner, topic, sub, &s);
  bool done = s != NULL && s->backlog == 0 && s->unacked == 0;
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

/* Subscribes at the partition's owner after a move. */
static void subscribe_again(sl_pt *t, const sl_ct_sub *sub, sl_ct_consumer *c) {
  sl_err err = SL_ERR_INIT;
  /* Lookups may name the old owner for a moment (their cache). */
  int64_t end = sl_clock_mono_ms() + WAIT_MS;
  for (;;) {
    int owner = sl_pt_try_owner(t, sl_ct_live_broker(t), sub->topic, NULL);
    if (owner >= 0 && sl_cluster_running(t->c, SL_NODE_BROKER, owner)) {
      if (sl_ct_subscribe(t, owner, sub, c, NULL, &err) == SL_OK) return;
      sl_ct_close(c);
    }
    if (sl_clock_mono_ms() > end) fail_msg("cannot subscribe again: %s", err.msg);
  }
}

/* A new consumer of the subscription (at the partition's owner now) gets
 * nothing: every ack made before the move was persisted. */
static void expect_nothing_redelivered(sl_pt *t, const sl_ct_sub *sub) {
  sl_ct_consumer c;
  subscribe_again(t, sub, &c);
  sl_err err = SL_ERR_INIT;
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

/* Waits until the subscription's unacked gauge on broker b shows want
 * (refreshed on the partition's tick, on the broker alone: it needs no
 * metadata service). */
static void wait_unacked(sl_pt *t, int b, const char *topic, double want) {
  char series[256];
  snprintf(series, sizeof(series),
           "sluice_broker_subscription_unacked_messages{partition=\"%s\",subscription=\"s\"}",
           topic);
  int64_t end = sl_clock_mono_ms() + WAIT_MS;
  double v = -1;
  for (;;) {
    char *m = sl_ms_scrape(t->c, b);
    bool have = sl_ms_sample(m, series, &v);
    free(m);
    if (have && v == want) return;
    if (sl_clock_mono_ms() > end) fail_msg("%s is %.0f, want %.0f", series, v, want);
  }
}

typedef struct resume {
  sl_pt *t;
  int broker;
  const char *topic;
  const char *event;         /* the broker's log event to wait for */
  bool seen;                 /* it was logged */
  int64_t seen_ms;           /* when the test saw it */
} resume;

/* Lets the metadata service go on once the broker logged r->event for the
 * partition. */
static void *resume_run(void *arg) {
  resume *r = arg;
  char want[128];
  snprintf(want, sizeof(want), " event=%s partition=%s ", r->event, r->topic);
  int64_t end = sl_clock_mono_ms() + WAIT_MS;
  while (!r->seen && sl_clock_mono_ms() < end) {
    FILE *f = fopen(sl_cluster_log(r->t->c, SL_NODE_BROKER, r->broker), "r");
    char line[4096];
    while (f != NULL && fgets(line, sizeof(line), f) != NULL) r->seen |= strstr(line, want) != NULL;
    if (f != NULL) fclose(f);
    struct timespec poll = {0, 10 * 1000000L};
    if (!r->seen) nanosleep(&poll, NULL);
  }
  r->seen_ms = sl_clock_mono_ms();
  sl_cluster_signal(r->t->c, SL_NODE_METADATA, 0, SIGCONT, NULL);
  return NULL;
}

/* Produces N and receives them on *c without acking; ids gets theirs.
 * Returns the owner, once its unacked gauge shows all N. */
static int receive_unacked(sl_pt *t, const sl_ct_sub *sub, sl_ct_consumer *c,
                           Sluice__V1__MessageId *ids) {
  sl_ct_produce(t, sub->topic, "p", 0, N, 0);
  sl_ct_subscribe_owner(t, sub, c);
  int owner = sl_pt_owner(t, 0, sub->topic, NULL);
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_ct_flow(c, N, &err), SL_OK);
  static sl_ct_msg got[N];
  int n = 0;
  assert_int_equal(sl_ct_recv(c, got, N, &n, WAIT_MS, &err), SL_OK);
  for (int i = 0; i < N; i++) ids[i] = got[i].id;
  wait_unacked(t, owner, sub->topic, N);
  return owner;
}

static void test_consume_unload__acks_behind_a_flush_in_flight(void **state) {
  sl_pt *t = *state;
  sl_ct_sub sub = {.topic = "cu/inflight", .subscription = "s", .type = 0, .earliest = true};
  sl_ct_consumer c;
  static Sluice__V1__MessageId ids[N];
  int owner = receive_unacked(t, &sub, &c, ids);
  sl_err err = SL_ERR_INIT;

  /* The first half's flush starts (100 ms after the acks) and hangs on the
   * stopped metadata service. Nothing outside shows that it started: wait
   * three times the delay. */
  assert_int_equal(sl_cluster_signal(t->c, SL_NODE_METADATA, 0, SIGSTOP, &err), SL_OK);
  assert_int_equal(sl_ct_ack(&c, ids, N / 2, false, 0, &err), SL_OK);
  wait_unacked(t, owner, sub.topic, N / 2);
  struct timespec flush_delay = {0, 300 * 1000000L};
  nanosleep(&flush_delay, NULL);
  /* The second half: in memory only, behind that flush. */
  assert_int_equal(sl_ct_ack(&c, ids + N / 2, N - N / 2, false, 0, &err), SL_OK);
  wait_unacked(t, owner, sub.topic, 0);
  sl_ct_close(&c);

  resume r = {.t = t, .broker = owner, .topic = sub.topic, .event = "unloading"};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, resume_run, &r), 0);
  sl_pt_unload(t, owner, sub.topic);
  pthread_join(th, NULL);
  assert_true(r.seen);
  expect_nothing_redelivered(t, &sub);
}

/* The unload's cursor flush is bounded: with the metadata service held
 * (SIGSTOP) the flush cannot finish, and after UNLOAD_FLUSH_MS (3 s) the
 * broker gives it up (event=unload_flush_timeout) and goes on with the
 * unload, which completes once the metadata service is back. The acks that
 * flush carried are then either durable or redelivered: never lost. */
static void test_consume_unload__hung_flush_is_bounded(void **state) {
  sl_pt *t = *state;
  sl_ct_sub sub = {.topic = "cu/hung", .subscription = "s", .type = 0, .earliest = true};
  sl_ct_consumer c;
  static Sluice__V1__MessageId ids[N];
  int owner = receive_unacked(t, &sub, &c, ids);
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_cluster_signal(t->c, SL_NODE_METADATA, 0, SIGSTOP, &err), SL_OK);
  assert_int_equal(sl_ct_ack(&c, ids, N, false, 0, &err), SL_OK);
  wait_unacked(t, owner, sub.topic, 0);
  sl_ct_close(&c);

  resume r = {.t = t, .broker = owner, .topic = sub.topic, .event = "unload_flush_timeout"};
  pthread_t th;
  int64_t start = sl_clock_mono_ms();
  assert_int_equal(pthread_create(&th, NULL, resume_run, &r), 0);
  sl_pt_unload(t, owner, sub.topic);
  pthread_join(th, NULL);
  assert_true(r.seen);
  print_message("flush given up %lld ms after the unload was asked\n",
                (long long)(r.seen_ms - start));
  assert_true(r.seen_ms - start >= 3000);

  /* The next owner: either every ack or none of them (one cursor write). */
  subscribe_again(t, &sub, &c);
  assert_int_equal(sl_ct_flow(&c, N, &err), SL_OK);
  static sl_ct_msg got[N];
  int n = 0;
  sl_status st = sl_ct_recv(&c, got, N, &n, 3000, &err);
  print_message("%d of %d messages redelivered after the move\n", n, N);
  assert_true(n == 0 || (st == SL_OK && n == N));
  for (int i = 0; i < n; i++) assert_int_equal(got[i].seq, (uint64_t)i);
  sl_ct_close(&c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_consume_unload__admin_unload_keeps_acks),
      cmocka_unit_test(test_consume_unload__acks_behind_a_flush_in_flight),
      cmocka_unit_test(test_consume_unload__hung_flush_is_bounded),
      cmocka_unit_test(test_consume_unload__graceful_stop_keeps_acks),
  };
  curl_global_init(CURL_GLOBAL_DEFAULT);
  int rc = cmocka_run_group_tests(tests, setup, sl_pt_teardown);
  curl_global_cleanup();
  return rc;
}
