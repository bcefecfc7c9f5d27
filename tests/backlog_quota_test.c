/*
 * Backlog quota on a real cluster: a subscription that reads nothing holds
 * a backlog, and once it is over the namespace's backlog_quota_bytes the
 * broker refuses sends (producer_exception), holds them until the backlog
 * is consumed (producer_hold), or drops the oldest backlog
 * (consumer_eviction).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "client/sluice.h"
#include "common/clock.h"
#include "common/rpc_client.h"
#include "common/testing.h"
#include "metadata.slrpc.h"
#include "tests/cluster.h"

#define QUOTA 20000
#define PAYLOAD 1000

typedef struct fixture {
  sl_cluster *c;
  sl_client *cl;
  sl_producer *p; /* the test's, destroyed by teardown after a failure */
} fixture;

static int setup(void **state) {
  fixture *f = calloc(1, sizeof(*f));
  sl_cluster_opts o = SL_CLUSTER_OPTS_INIT;
  o.name = "backlog-quota";
  o.local_store = true;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_cluster_start(&o, &f->c, &err);
  if (st != SL_OK) fail_msg("cluster: %s", sl_err_msg(&err, st));
  sl_client_opts co = SL_CLIENT_OPTS_INIT;
  co.url = sl_cluster_addr(f->c, SL_NODE_BROKER, 0);
  assert_int_equal(sl_client_create(&co, &f->cl, &err), SL_OK);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  sl_producer_destroy(f->p); /* before the client its threads use */
  sl_client_destroy(f->cl);
  sl_cluster_destroy(f->c);
  free(f);
  return 0;
}

/* A consumer of subscription "lag" on topic. */
static sl_consumer *lag_consumer(fixture *f, const char *topic) {
  sl_consumer_opts so = SL_CONSUMER_OPTS_INIT;
  so.topic = topic;
  so.subscription = "lag";
  sl_consumer *c = NULL;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_consumer_create(f->cl, &so, &c, &err);
  if (st != SL_OK) fail_msg("consumer of lag: %s", sl_err_msg(&err, st));
  return c;
}

/* Namespace ns with the quota and policy, topic ns/t, and subscription
 * "lag" that nobody reads. */
static void prepare(fixture *f, const char *ns, const char *policy, char *topic, size_t cap) {
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_admin_namespace_create(f->cl, ns, &err), SL_OK);
  char quota[64], pol[64];
  snprintf(quota, sizeof(quota), "backlog_quota_bytes=%d", QUOTA);
  snprintf(pol, sizeof(pol), "backlog_policy=%s", policy);
  const char *sets[] = {quota, pol};
  char *json = NULL;
  sl_status st = sl_admin_namespace_policies(f->cl, ns, sets, 2, &json, &err);
  if (st != SL_OK) fail_msg("policies: %s", sl_err_msg(&err, st));
  free(json);
  snprintf(topic, cap, "%s/t", ns);
  assert_int_equal(sl_admin_topic_create(f->cl, topic, 0, &err), SL_OK);
  sl_consumer_destroy(lag_consumer(f, topic));
}

static sl_producer *producer(fixture *f, const char *topic, int send_timeout_ms) {
  sl_producer_opts po = SL_PRODUCER_OPTS_INIT;
  po.topic = topic;
  po.send_timeout_ms = send_timeout_ms;
  sl_producer *p = NULL;
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_producer_create(f->cl, &po, &p, &err), SL_OK);
  f->p = p;
  return p;
}

static sl_status send_one(sl_producer *p, int i, sl_msg_id *id, sl_err *err) {
  char body[PAYLOAD];
  memset(body, 'x', sizeof(body));
  snprintf(body, sizeof(body), "m%d", i);
  sl_message m = {.payload = body, .len = sizeof(body)};
  sl_msg_id ignored;
  return sl_producer_send(p, &m, id != NULL ? id : &ignored, err);
}

/* Sends `n` messages that must all be stored. */
static sl_msg_id fill(sl_producer *p, int n) {
  sl_msg_id id = {0};
  for (int i = 0; i < n; i++) {
    sl_err err = SL_ERR_INIT;
    sl_status st = send_one(p, i, &id, &err);
    if (st != SL_OK) fail_msg("send %d: %s", i, sl_err_msg(&err, st));
  }
  return id;
}

/* Reads and acks everything subscription "lag" holds (up to last). */
static void drain(fixture *f, const char *topic, sl_msg_id last) {
  sl_consumer *c = lag_consumer(f, topic);
  sl_err err = SL_ERR_INIT;
  for (;;) {
    sl_received *r = NULL;
    sl_status st = sl_consumer_receive(c, (int)sl_test_scaled_ms(20000), &r, &err);
    if (st != SL_OK) fail_msg("drain: %s", sl_err_msg(&err, st));
    sl_msg_id id = r->id;
    assert_int_equal(sl_consumer_ack(c, &id, &err), SL_OK);
    sl_received_free(r);
    if (id.ledger_id == last.ledger_id && id.entry_id == last.entry_id) break;
  }
  sl_consumer_destroy(c);
}

static void pause_ms(int ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static void test_backlog_quota__producer_exception(void **state) {
  fixture *f = *state;
  char topic[64];
  prepare(f, "q-exc", "BACKLOG_POLICY_PRODUCER_EXCEPTION", topic, sizeof(topic));
  sl_producer *p = producer(f, topic, 0);
  sl_msg_id last = fill(p, 2 * QUOTA / PAYLOAD);
  /* The broker measures once a second: sends go on until it has. */
  int64_t deadline = sl_clock_mono_ms() + sl_test_scaled_ms(20000);
  sl_status st;
  sl_err err = SL_ERR_INIT;
  int i = 0;
  sl_msg_id id;
  while ((st = send_one(p, i++, &id, &err)) == SL_OK) {
    last = id;
    if (sl_clock_mono_ms() > deadline) fail_msg("sends never refused");
    pause_ms(20);
  }
  assert_int_equal(st, SL_EBUSY);
  assert_non_null(strstr(err.msg, "quota"));
  /* Consumed, the backlog is gone and sends are taken again. */
  drain(f, topic, last);
  deadline = sl_clock_mono_ms() + sl_test_scaled_ms(20000);
  while ((st = send_one(p, i++, NULL, &err)) != SL_OK) {
    assert_int_equal(st, SL_EBUSY);
    if (sl_clock_mono_ms() > deadline) fail_msg("sends still refused: %s", err.msg);
    pause_ms(20);
  }
  sl_producer_destroy(p);
  f->p = NULL;
}

typedef struct held {
  atomic_int done;
  sl_status st;
} held;

static void held_done(sl_status st, const sl_msg_id *id, void *arg) {
  (void)id;
  held *h = arg;
  h->st = st;
  atomic_store(&h->done, 1);
}

static void test_backlog_quota__producer_hold(void **state) {
  fixture *f = *state;
  char topic[64];
  prepare(f, "q-hold", "BACKLOG_POLICY_PRODUCER_HOLD", topic, sizeof(topic));
  sl_producer *p = producer(f, topic, (int)sl_test_scaled_ms(1000));
  sl_msg_id last = fill(p, 2 * QUOTA / PAYLOAD);
  /* Once measured over the quota, a send waits until it times out. */
  int64_t deadline = sl_clock_mono_ms() + sl_test_scaled_ms(20000);
  sl_status st;
  sl_err err = SL_ERR_INIT;
  sl_msg_id id;
  int i = 0;
  while ((st = send_one(p, i++, &id, &err)) == SL_OK) {
    last = id;
    if (sl_clock_mono_ms() > deadline) fail_msg("sends never held");
  }
  assert_int_equal(st, SL_ETIMEDOUT);
  sl_producer_destroy(p);
  f->p = NULL;
  /* A held send goes through once the backlog is consumed. */
  p = producer(f, topic, (int)sl_test_scaled_ms(60000));
  char body[PAYLOAD] = "held";
  sl_message m = {.payload = body, .len = sizeof(body)};
  static held h; /* outlives the test: teardown may cancel the send */
  atomic_store(&h.done, 0);
  assert_int_equal(sl_producer_send_async(p, &m, held_done, &h, &err), SL_OK);
  drain(f, topic, last);
  deadline = sl_clock_mono_ms() + sl_test_scaled_ms(30000);
  while (!atomic_load(&h.done)) {
    if (sl_clock_mono_ms() > deadline) fail_msg("held send never completed");
    pause_ms(20);
  }
  assert_int_equal(h.st, SL_OK);
  sl_producer_destroy(p);
  f->p = NULL;
}

/* The mark-delete of subscription "lag" from the metadata service. */
static int64_t lag_mark_delete(fixture *f, const char *topic, uint64_t ledger) {
  sl_rpc_channel_opts co = {.target = sl_cluster_metadata_target(f->c)};
  sl_rpc_channel *ch = NULL;
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_rpc_channel_create(&co, &ch, &err), SL_OK);
  Sluice__V1__GetCursorRequest req = SLUICE__V1__GET_CURSOR_REQUEST__INIT;
  req.partition = (char *)topic;
  req.subscription = "lag";
  Sluice__V1__CursorResponse *r = NULL;
  sl_rpc_call_opts o = {.timeout_ms = 5000};
  int64_t md = -2;
  if (sl_metadata_service_get_cursor(ch, &req, &r, &o, &err) == SL_OK && r->info != NULL &&
      r->info->mark_delete != NULL && r->info->mark_delete->ledger_id == ledger)
    md = r->info->mark_delete->entry_id;
  if (r != NULL) protobuf_c_message_free_unpacked(&r->base, NULL);
  sl_rpc_channel_destroy(ch);
  return md;
}

static void test_backlog_quota__consumer_eviction(void **state) {
  fixture *f = *state;
  char topic[64];
  prepare(f, "q-evict", "BACKLOG_POLICY_CONSUMER_EVICTION", topic, sizeof(topic));
  sl_producer *p = producer(f, topic, 0);
  int n = 3 * QUOTA / PAYLOAD;
  sl_msg_id last = fill(p, n);
  /* The oldest go until what "lag" holds fits in the quota again (entries
   * a little over PAYLOAD bytes each: at most QUOTA / PAYLOAD of them). */
  int64_t deadline = sl_clock_mono_ms() + sl_test_scaled_ms(20000);
  int64_t md;
  while ((md = lag_mark_delete(f, topic, last.ledger_id)) < last.entry_id - QUOTA / PAYLOAD) {
    if (sl_clock_mono_ms() > deadline)
      fail_msg("lag's mark-delete %lld, want at least %lld", (long long)md,
               (long long)(last.entry_id - QUOTA / PAYLOAD));
    pause_ms(50);
  }
  /* What is left is still delivered, newest included. */
  assert_true(md < last.entry_id);
  sl_consumer *c = lag_consumer(f, topic);
  sl_err err = SL_ERR_INIT;
  sl_received *r = NULL;
  sl_status st = sl_consumer_receive(c, (int)sl_test_scaled_ms(20000), &r, &err);
  if (st != SL_OK) fail_msg("receive: %s", sl_err_msg(&err, st));
  assert_true(r->id.entry_id > md);
  sl_received_free(r);
  sl_consumer_destroy(c);
  drain(f, topic, last);
  sl_producer_destroy(p);
  f->p = NULL;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_backlog_quota__producer_exception),
      cmocka_unit_test(test_backlog_quota__producer_hold),
      cmocka_unit_test(test_backlog_quota__consumer_eviction),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
