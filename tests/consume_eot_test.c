/*
 * Terminating a topic and end of topic, through libsluice against a real
 * cluster (etcd, metadata, 3 bookies, 2 brokers; partitions spread over
 * both, so TerminateTopic is forwarded to the other owner too):
 *   - after produce N and terminate, a producer attached before gets
 *     SL_EPRECOND on its next send and a new producer is refused with it;
 *   - a consumer that had all N before the terminate hears nothing until
 *     then, and end of topic (SL_ERANGE) after it;
 *   - a new subscription from earliest gets all N, then end of topic;
 *   - terminating twice answers the same last ids; an unknown topic is
 *     SL_ENOTFOUND, a bad name SL_EINVAL;
 *   - a terminated partition unloaded and opened again (read-only) still
 *     serves all its messages and end of topic, and still refuses producers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "client/sluice.h"
#include "common/clock.h"
#include "tests/produce_testlib.h"

#define N 120
#define PARTS 3
#define RECV_MS 20000

static int setup(void **state) {
  sl_pt *t = calloc(1, sizeof(*t));
  sl_pt_start(t, "consume_eot", 1, 3, 2);
  sl_pt_namespace(t, "eot", false, 0);
  sl_pt_topic(t, "eot/orders", PARTS);
  sl_pt_topic(t, "eot/single", 0);
  *state = t;
  return 0;
}

static int teardown(void **state) {
  sl_pt_stop(*state);
  free(*state);
  return 0;
}

static sl_client *client_via(sl_pt *t, int broker) {
  sl_client_opts o = SL_CLIENT_OPTS_INIT;
  o.url = sl_cluster_addr(t->c, SL_NODE_BROKER, broker);
  o.timeout_ms = 20000;
  sl_client *c = NULL;
  sl_err err = SL_ERR_INIT;
  if (sl_client_create(&o, &c, &err) != SL_OK) fail_msg("client: %s", err.msg);
  return c;
}

static sl_producer *producer(sl_client *c, const char *topic) {
  sl_producer_opts po = SL_PRODUCER_OPTS_INIT;
  po.topic = topic;
  po.send_timeout_ms = 15000;
  sl_producer *p = NULL;
  sl_err err = SL_ERR_INIT;
  if (sl_producer_create(c, &po, &p, &err) != SL_OK) fail_msg("producer: %s", err.msg);
  return p;
}

static sl_status send_one(sl_producer *p, int i, sl_err *err) {
  char buf[32], key[16];
  int len = snprintf(buf, sizeof(buf), "m-%d", i);
  snprintf(key, sizeof(key), "k%d", i);
  sl_message m = {.payload = buf, .len = (size_t)len, .key = key};
  return sl_producer_send(p, &m, NULL, err);
}

static sl_consumer *consumer(sl_client *c, const char *topic, const char *sub) {
  sl_consumer_opts o = SL_CONSUMER_OPTS_INIT;
  o.topic = topic;
  o.subscription = sub;
  o.from_earliest = true;
  sl_consumer *cons = NULL;
  sl_err err = SL_ERR_INIT;
  if (sl_consumer_create(c, &o, &cons, &err) != SL_OK) fail_msg("consumer %s: %s", topic, err.msg);
  return cons;
}

/* Receives until `n` messages came, each "m-<i>" with i < n once at most;
 * fails the test on anything else. */
static void receive_all(sl_consumer *cons, int n) {
  bool seen[N] = {0};
  for (int got = 0; got < n; got++) {
    sl_received *m = NULL;
    sl_err err = SL_ERR_INIT;
    sl_status st = sl_consumer_receive(cons, RECV_MS, &m, &err);
    if (st != SL_OK) fail_msg("receive %d of %d: %s (%s)", got, n, err.msg, sl_status_str(st));
    char buf[32] = {0};
    memcpy(buf, m->payload, m->len < sizeof(buf) - 1 ? m->len : sizeof(buf) - 1);
    int i = -1;
    if (sscanf(buf, "m-%d", &i) != 1 || i < 0 || i >= n || seen[i])
      fail_msg("unexpected or repeated message \"%s\"", buf);
    seen[i] = true;
    assert_int_equal(sl_consumer_ack(cons, &m->id, &err), SL_OK);
    sl_received_free(m);
  }
}

/* The end of topic: SL_ERANGE, and nothing before it. */
static void assert_end(sl_consumer *cons) {
  sl_received *m = NULL;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_consumer_receive(cons, RECV_MS, &m, &err);
  if (st == SL_OK) fail_msg("a message after the last: %.*s", (int)m->len, (char *)m->payload);
  if (st != SL_ERANGE) fail_msg("expected end of topic, got %s: %s", sl_status_str(st), err.msg);
  assert_non_null(strstr(err.msg, "end of topic"));
  assert_true(sl_consumer_at_end(cons));
}

static void terminate(sl_client *c, const char *topic, sl_msg_id **ids, size_t *n) {
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_admin_topic_terminate(c, topic, ids, n, &err);
  if (st != SL_OK) fail_msg("terminate %s: %s (%s)", topic, err.msg, sl_status_str(st));
}

static void test_consume_eot__terminate(void **state) {
  sl_pt *t = *state;
  sl_client *c0 = client_via(t, 0), *c1 = client_via(t, 1);
  sl_producer *early = producer(c0, "eot/orders");
  sl_err err = SL_ERR_INIT;
  for (int i = 0; i < N; i++)
    if (send_one(early, i, &err) != SL_OK) fail_msg("send %d: %s", i, err.msg);

  /* A consumer at the end before the terminate hears nothing more. */
  sl_consumer *before = consumer(c0, "eot/orders", "before");
  receive_all(before, N);
  sl_received *m = NULL;
  assert_int_equal(sl_consumer_receive(before, 500, &m, &err), SL_ETIMEDOUT);
  assert_false(sl_consumer_at_end(before));

  /* Through broker 1: partitions owned by broker 0 are forwarded there. */
  int owned[2] = {0, 0};
  for (int i = 0; i < PARTS; i++) {
    char name[64];
    snprintf(name, sizeof(name), "eot/orders-partition-%d", i);
    owned[sl_pt_owner(t, 0, name, NULL)]++;
  }
  assert_true(owned[0] > 0 && owned[1] > 0);
  sl_msg_id *last = NULL;
  size_t n = 0;
  terminate(c1, "eot/orders", &last, &n);
  assert_int_equal(n, PARTS);
  int64_t entries = 0;
  for (size_t i = 0; i < n; i++) {
    assert_int_equal(last[i].partition, (int)i);
    assert_true(last[i].ledger_id > 0);
    entries += last[i].entry_id + 1; /* one ledger each: its entry count */
  }
  assert_true(entries > 0 && entries <= N);

  /* The attached producer: a clear refusal, not a timeout. */
  int64_t start = sl_clock_mono_ms();
  sl_status st = send_one(early, N, &err);
  if (st != SL_EPRECOND) fail_msg("send after terminate: %s: %s", sl_status_str(st), err.msg);
  assert_non_null(strstr(err.msg, "terminated"));
  assert_true(sl_clock_mono_ms() - start < 10000);
  sl_producer_destroy(early);

  /* A new producer is refused too. */
  sl_producer_opts po = SL_PRODUCER_OPTS_INIT;
  po.topic = "eot/orders";
  sl_producer *late = NULL;
  err = (sl_err)SL_ERR_INIT;
  st = sl_producer_create(c1, &po, &late, &err);
  if (st != SL_EPRECOND) fail_msg("new producer: %s: %s", sl_status_str(st), err.msg);
  assert_null(late);

  assert_end(before);
  assert_end(before); /* and stays there */
  sl_consumer_destroy(before);

  /* A new subscription reads everything, then ends. */
  sl_consumer *after = consumer(c1, "eot/orders", "after");
  receive_all(after, N);
  assert_end(after);
  sl_consumer_destroy(after);

  /* Again: the same answer. */
  sl_msg_id *again = NULL;
  size_t n2 = 0;
  terminate(c0, "eot/orders", &again, &n2);
  assert_int_equal(n2, n);
  for (size_t i = 0; i < n; i++) {
    assert_int_equal(again[i].ledger_id, last[i].ledger_id);
    assert_int_equal(again[i].entry_id, last[i].entry_id);
  }
  free(again);
  free(last);

  /* One partition alone, already terminated: one id. */
  terminate(c0, "eot/orders-partition-1", &again, &n2);
  assert_int_equal(n2, 1);
  assert_int_equal(again[0].partition, 1);
  free(again);

  sl_client_destroy(c0);
  sl_client_destroy(c1);
}

static void test_consume_eot__bad_input(void **state) {
  sl_pt *t = *state;
  sl_client *c = client_via(t, 0);
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_admin_topic_terminate(c, "eot/nope", NULL, NULL, &err), SL_ENOTFOUND);
  err = (sl_err)SL_ERR_INIT;
  assert_int_equal(sl_admin_topic_terminate(c, "nons/nope", NULL, NULL, &err), SL_ENOTFOUND);
  err = (sl_err)SL_ERR_INIT;
  assert_int_equal(sl_admin_topic_terminate(c, "no-namespace", NULL, NULL, &err), SL_EINVAL);
  err = (sl_err)SL_ERR_INIT;
  assert_int_equal(sl_admin_topic_terminate(c, "eot/orders-partition-7", NULL, NULL, &err),
                   SL_EINVAL);
  sl_client_destroy(c);
}

/* Terminated, unloaded, opened again by whoever takes it: read-only. */
static void test_consume_eot__reopen_read_only(void **state) {
  sl_pt *t = *state;
  sl_client *c = client_via(t, 0);
  sl_producer *p = producer(c, "eot/single");
  sl_err err = SL_ERR_INIT;
  for (int i = 0; i < N; i++)
    if (send_one(p, i, &err) != SL_OK) fail_msg("send %d: %s", i, err.msg);
  sl_producer_destroy(p);
  sl_msg_id *last = NULL;
  size_t n = 0;
  terminate(c, "eot/single", &last, &n);
  assert_int_equal(n, 1);
  assert_int_equal(last[0].partition, -1);
  assert_true(last[0].entry_id >= 0);

  char *json = NULL;
  assert_int_equal(sl_admin_topic_stats(c, "eot/single", &json, &err), SL_OK);
  if (strstr(json, "\"terminated\":true") == NULL) fail_msg("stats: %s", json);
  free(json);

  sl_pt_unload(t, 1, "eot/single");
  sl_consumer *cons = consumer(c, "eot/single", "reopened");
  receive_all(cons, N);
  assert_end(cons);
  sl_consumer_destroy(cons);

  sl_producer_opts po = SL_PRODUCER_OPTS_INIT;
  po.topic = "eot/single";
  sl_producer *late = NULL;
  err = (sl_err)SL_ERR_INIT;
  sl_status st = sl_producer_create(c, &po, &late, &err);
  if (st != SL_EPRECOND) fail_msg("producer after reopen: %s: %s", sl_status_str(st), err.msg);

  /* The reopened partition answers terminate with the same last entry. */
  sl_msg_id *again = NULL;
  terminate(c, "eot/single", &again, &n);
  assert_int_equal(again[0].ledger_id, last[0].ledger_id);
  assert_int_equal(again[0].entry_id, last[0].entry_id);
  free(again);
  free(last);
  sl_client_destroy(c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_consume_eot__terminate),
      cmocka_unit_test(test_consume_eot__bad_input),
      cmocka_unit_test(test_consume_eot__reopen_read_only),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
