/*
 * libsluice producer against a real cluster (etcd, metadata, 3 bookies, 2
 * brokers): transparent failover when the owner broker is killed -9 (the
 * application sees no error and, with dedup on, the log holds every message
 * exactly once, in order), a partition moved (unloaded) mid-stream, key
 * routing on a partitioned topic, a full pending queue, batching (messages
 * sent within the batching delay share an entry; a negative delay sends
 * each at once; sync send, flush and destroy do not wait the delay), and
 * bad input (bad name, unknown topic, unreachable url, bad options).
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "client/sluice.h"
#include "common/clock.h"
#include "common/testing.h"
#include "tests/produce_testlib.h"

#define FAILOVER_MSGS 3000
#define PAYLOAD 64

static int setup(void **state) {
  sl_pt *t = calloc(1, sizeof(*t));
  sl_pt_start(t, "client_producer", 1, 3, 2);
  sl_pt_namespace(t, "cp", true, 0);
  sl_pt_topic(t, "cp/orders", 0);
  sl_pt_topic(t, "cp/keyed", 3);
  sl_pt_topic(t, "cp/batched", 0);
  sl_pt_topic(t, "cp/unbatched", 0);
  *state = t;
  return 0;
}

static int teardown(void **state) {
  sl_pt_stop(*state);
  free(*state);
  return 0;
}

static sl_client *client_at(const char *url, int timeout_ms) {
  sl_client_opts o = SL_CLIENT_OPTS_INIT;
  o.url = url;
  o.timeout_ms = timeout_ms;
  sl_client *c = NULL;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_client_create(&o, &c, &err);
  if (st != SL_OK) fail_msg("client: %s", err.msg);
  return c;
}

typedef struct outcomes {
  pthread_mutex_t mu;
  int done, failed;
  sl_status first;
  unsigned parts; /* bit i: a message was stored in partition i */
} outcomes;

static void on_sent(sl_status st, const sl_msg_id *id, void *arg) {
  outcomes *o = arg;
  pthread_mutex_lock(&o->mu);
  o->done++;
  if (st == SL_OK && id != NULL && id->partition >= 0 && id->partition < 32)
    o->parts |= 1u << id->partition;
  if (st != SL_OK && o->failed++ == 0) o->first = st;
  pthread_mutex_unlock(&o->mu);
}

static int done_count(outcomes *o) {
  pthread_mutex_lock(&o->mu);
  int n = o->done;
  pthread_mutex_unlock(&o->mu);
  return n;
}

/* The app keeps sending while the owner is killed: no error reaches it and
 * the log holds each message once, in sequence order, with its bytes. */
static void test_client_producer__owner_kill9_no_error_no_duplicate(void **state) {
  sl_pt *t = *state;
  const char *topic = "cp/orders";
  int owner = sl_pt_owner(t, 0, topic, NULL);
  int survivor = owner == 0 ? 1 : 0;
  sl_client *c = client_at(sl_cluster_addr(t->c, SL_NODE_BROKER, survivor), 10000);
  sl_producer_opts po = SL_PRODUCER_OPTS_INIT;
  po.topic = topic;
  po.name = "failover-app";
  po.send_timeout_ms = 60000;
  po.max_pending = 200;
  sl_producer *p;
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_producer_create(c, &po, &p, &err), SL_OK);
  outcomes o = {.mu = PTHREAD_MUTEX_INITIALIZER};
  uint8_t buf[PAYLOAD];
  bool killed = false;
  for (int i = 0; i < FAILOVER_MSGS; i++) {
    sl_pt_payload((uint64_t)i, buf, sizeof(buf));
    sl_message m = {.payload = buf, .len = sizeof(buf)};
    assert_int_equal(sl_producer_send_async(p, &m, on_sent, &o, &err), SL_OK);
    if (!killed && i == FAILOVER_MSGS / 3) {
      /* Kill the owner with acked and unacked messages behind us. */
      int64_t deadline = sl_clock_mono_ns() + 30000000000LL;
      while (done_count(&o) < FAILOVER_MSGS / 6 && sl_clock_mono_ns() < deadline) {
        struct timespec ts = {0, 5000000};
        nanosleep(&ts, NULL);
      }
      assert_int_equal(sl_cluster_kill9(t->c, SL_NODE_BROKER, owner, &err), SL_OK);
      killed = true;
    }
  }
  assert_int_equal(sl_producer_flush(p, &err), SL_OK);
  assert_int_equal(o.done, FAILOVER_MSGS);
  if (o.failed) fail_msg("%d sends failed, first: %s", o.failed, sl_status_str(o.first));
  sl_producer_destroy(p);
  sl_client_destroy(c);

  sl_pt_unload(t, survivor, topic);
  sl_pt_msg *log;
  size_t n = sl_pt_read_log(t, topic, &log);
  assert_int_equal(n, FAILOVER_MSGS);
  for (size_t i = 0; i < n; i++) {
    assert_int_equal(log[i].seq, i);
    assert_true(log[i].payload_ok);
    assert_string_equal(log[i].producer, "failover-app");
  }
  free(log);
  assert_int_equal(sl_cluster_restart(t->c, SL_NODE_BROKER, owner, &err), SL_OK);
}

/* The partition is unloaded (moved) while messages stream in: the broker
 * redirects or drops the stream and the producer follows with no error and
 * no gap or duplicate. */
static void test_client_producer__unload_mid_stream(void **state) {
  sl_pt *t = *state;
  const char *topic = "cp/moved";
  sl_pt_topic(t, topic, 0);
  sl_client *c = client_at(sl_cluster_addr(t->c, SL_NODE_BROKER, 0), 10000);
  sl_producer_opts po = SL_PRODUCER_OPTS_INIT;
  po.topic = topic;
  po.name = "mover";
  sl_producer *p;
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_producer_create(c, &po, &p, &err), SL_OK);
  outcomes o = {.mu = PTHREAD_MUTEX_INITIALIZER};
  uint8_t buf[PAYLOAD];
  for (int i = 0; i < 600; i++) {
    sl_pt_payload((uint64_t)i, buf, sizeof(buf));
    sl_message m = {.payload = buf, .len = sizeof(buf)};
    assert_int_equal(sl_producer_send_async(p, &m, on_sent, &o, &err), SL_OK);
    if (i == 200 || i == 400) sl_pt_unload(t, 1, topic);
  }
  assert_int_equal(sl_producer_flush(p, &err), SL_OK);
  assert_int_equal(o.done, 600);
  if (o.failed) fail_msg("%d sends failed, first: %s", o.failed, sl_status_str(o.first));
  sl_producer_destroy(p);
  sl_client_destroy(c);
  sl_pt_unload(t, 0, topic);
  sl_pt_msg *log;
  size_t n = sl_pt_read_log(t, topic, &log);
  assert_int_equal(n, 600);
  for (size_t i = 0; i < n; i++) {
    assert_int_equal(log[i].seq, i);
    assert_true(log[i].payload_ok);
  }
  free(log);
}

/* Same key, same partition; no key, round-robin over all of them. */
static void test_client_producer__routing(void **state) {
  sl_pt *t = *state;
  sl_client *c = client_at(sl_cluster_addr(t->c, SL_NODE_BROKER, 0), 20000);
  sl_producer_opts po = SL_PRODUCER_OPTS_INIT;
  po.topic = "cp/keyed";
  sl_producer *p;
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_producer_create(c, &po, &p, &err), SL_OK);
  int by_key[4] = {-2, -2, -2, -2};
  for (int round = 0; round < 3; round++) {
    for (int k = 0; k < 4; k++) {
      char key[8];
      snprintf(key, sizeof(key), "k%d", k);
      sl_message m = {.payload = "x", .len = 1, .key = key};
      sl_msg_id id;
      assert_int_equal(sl_producer_send(p, &m, &id, &err), SL_OK);
      assert_true(id.partition >= 0 && id.partition < 3);
      if (by_key[k] == -2) by_key[k] = id.partition;
      assert_int_equal(id.partition, by_key[k]);
    }
  }
  /* Unkeyed, batching on: a burst goes to one partition (two if a window
   * ends inside it), so batches stay full; over time every partition. */
  outcomes o = {.mu = PTHREAD_MUTEX_INITIALIZER};
  for (int i = 0; i < 20; i++) {
    sl_message m = {.payload = "y", .len = 1};
    assert_int_equal(sl_producer_send_async(p, &m, on_sent, &o, &err), SL_OK);
  }
  assert_int_equal(sl_producer_flush(p, &err), SL_OK);
  pthread_mutex_lock(&o.mu);
  assert_int_equal(o.failed, 0);
  assert_true(__builtin_popcount(o.parts) <= 2);
  o.parts = 0;
  pthread_mutex_unlock(&o.mu);
  for (int i = 0; i < 2000 && o.parts != 7u; i++) {
    sl_message m = {.payload = "y", .len = 1};
    sl_msg_id id;
    assert_int_equal(sl_producer_send(p, &m, &id, &err), SL_OK);
    o.parts |= 1u << id.partition;
  }
  assert_int_equal(o.parts, 7u);
  sl_producer_destroy(p);
  /* Batching off: message by message. */
  po.batch_delay_us = -1;
  assert_int_equal(sl_producer_create(c, &po, &p, &err), SL_OK);
  unsigned seen = 0;
  for (int i = 0; i < 3; i++) {
    sl_message m = {.payload = "y", .len = 1};
    sl_msg_id id;
    assert_int_equal(sl_producer_send(p, &m, &id, &err), SL_OK);
    seen |= 1u << id.partition;
  }
  assert_int_equal(seen, 7u);
  sl_producer_destroy(p);
  sl_client_destroy(c);
}

/* block_if_full off: a full queue says SL_EBUSY, and the refused message
 * gets no callback. */
static void test_client_producer__full_queue_fails_fast(void **state) {
  sl_pt *t = *state;
  sl_client *c = client_at(sl_cluster_addr(t->c, SL_NODE_BROKER, 0), 20000);
  sl_producer_opts po = SL_PRODUCER_OPTS_INIT;
  po.topic = "cp/orders";
  po.max_pending = 1;
  po.block_if_full = false;
  sl_producer *p;
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_producer_create(c, &po, &p, &err), SL_OK);
  outcomes o = {.mu = PTHREAD_MUTEX_INITIALIZER};
  int accepted = 0;
  sl_status st = SL_OK;
  for (int i = 0; i < 10000 && st == SL_OK; i++) {
    sl_message m = {.payload = "z", .len = 1};
    st = sl_producer_send_async(p, &m, on_sent, &o, &err);
    if (st == SL_OK) accepted++;
  }
  assert_int_equal(st, SL_EBUSY);
  assert_non_null(strstr(err.msg, "pending"));
  assert_int_equal(sl_producer_flush(p, &err), SL_OK);
  assert_int_equal(o.done, accepted);
  assert_int_equal(o.failed, 0);
  sl_producer_destroy(p);
  sl_client_destroy(c);
}

/* One message's outcome, for the batching tests. */
typedef struct sent {
  pthread_mutex_t mu;
  bool done;
  sl_status st;
  sl_msg_id id;
  int64_t at_ns;                 /* when the callback ran */
} sent;

static void on_one(sl_status st, const sl_msg_id *id, void *arg) {
  sent *s = arg;
  pthread_mutex_lock(&s->mu);
  s->done = true;
  s->st = st;
  s->id = *id;
  s->at_ns = sl_clock_mono_ns();
  pthread_mutex_unlock(&s->mu);
}

/* Whether s completed within ms. */
static bool done_within(sent *s, int64_t ms) {
  int64_t deadline = sl_clock_mono_ns() + ms * 1000000;
  for (;;) {
    pthread_mutex_lock(&s->mu);
    bool done = s->done;
    pthread_mutex_unlock(&s->mu);
    if (done || sl_clock_mono_ns() >= deadline) return done;
    struct timespec ts = {0, 2000000};
    nanosleep(&ts, NULL);
  }
}

static void send_one(sl_producer *p, const char *text, sent *s) {
  sl_err err = SL_ERR_INIT;
  sl_message m = {.payload = text, .len = strlen(text)};
  assert_int_equal(sl_producer_send_async(p, &m, on_one, s, &err), SL_OK);
}

static sl_producer *producer_with_delay(sl_client *c, const char *topic, int delay_us) {
  sl_producer_opts po = SL_PRODUCER_OPTS_INIT;
  po.topic = topic;
  po.batch_delay_us = delay_us;
  sl_producer *p = NULL;
  sl_err err = SL_ERR_INIT;
  if (sl_producer_create(c, &po, &p, &err) != SL_OK) fail_msg("producer: %s", err.msg);
  return p;
}

/* With a 2 s delay (scaled): a message after a pause goes at once, alone (the old
 * rule, every message waits the delay for company, fails the first
 * bound); two sent right after it wait the delay for each other and share
 * an entry (going at once whenever nothing is out fails the second). */
static void test_client_producer__pause_then_batch(void **state) {
  sl_pt *t = *state;
  sl_client *c = client_at(sl_cluster_addr(t->c, SL_NODE_BROKER, 0), 20000);
  /* Scaled: "at once" is held to half the delay, so both stretch together
   * (up to the library's longest delay, 10 s). */
  int64_t scaled = sl_test_scaled_ms(2000);
  const int delay_ms = scaled < 10000 ? (int)scaled : 10000;
  sl_producer *p = producer_with_delay(c, "cp/batched", delay_ms * 1000);
  sent a = {.mu = PTHREAD_MUTEX_INITIALIZER}, b = {.mu = PTHREAD_MUTEX_INITIALIZER},
       d = {.mu = PTHREAD_MUTEX_INITIALIZER};
  send_one(p, "first", &a);
  assert_true(done_within(&a, delay_ms / 2));
  assert_int_equal(a.st, SL_OK);
  assert_int_equal(a.id.batch_size, 1);
  int64_t queued = sl_clock_mono_ns();
  send_one(p, "second", &b);
  send_one(p, "third", &d);
  assert_false(done_within(&b, delay_ms / 2));
  assert_true(done_within(&b, sl_test_scaled_ms(10000)));
  assert_true(done_within(&d, sl_test_scaled_ms(10000)));
  assert_int_equal(b.st, SL_OK);
  assert_int_equal(d.st, SL_OK);
  assert_true(b.at_ns - queued >= (int64_t)delay_ms * 1000000);
  assert_int_equal(b.id.ledger_id, d.id.ledger_id);
  assert_int_equal(b.id.entry_id, d.id.entry_id);
  assert_int_equal(b.id.batch_size, 2);
  assert_int_equal(b.id.batch_index, 0);
  assert_int_equal(d.id.batch_index, 1);
  sl_producer_destroy(p);
  sl_client_destroy(c);
}

/* batch_delay_us < 0: a message goes on its own at once, without waiting
 * for the next one, which then gets an entry of its own. */
static void test_client_producer__negative_delay_sends_each_at_once(void **state) {
  sl_pt *t = *state;
  sl_client *c = client_at(sl_cluster_addr(t->c, SL_NODE_BROKER, 0), 20000);
  sl_producer *p = producer_with_delay(c, "cp/unbatched", -1);
  sent a = {.mu = PTHREAD_MUTEX_INITIALIZER}, b = {.mu = PTHREAD_MUTEX_INITIALIZER};
  send_one(p, "first", &a);
  assert_true(done_within(&a, sl_test_scaled_ms(5000)));
  send_one(p, "second", &b);
  assert_true(done_within(&b, sl_test_scaled_ms(5000)));
  assert_int_equal(a.st, SL_OK);
  assert_int_equal(b.st, SL_OK);
  assert_int_equal(a.id.batch_size, 1);
  assert_int_equal(b.id.batch_size, 1);
  assert_true(a.id.ledger_id != b.id.ledger_id || a.id.entry_id != b.id.entry_id);
  sl_producer_destroy(p);
  sl_client_destroy(c);
}

/* With a 10 s delay, a sync send, a flush and destroy each return long
 * before it: they send what waits at once. */
static void test_client_producer__sync_flush_destroy_skip_delay(void **state) {
  sl_pt *t = *state;
  sl_client *c = client_at(sl_cluster_addr(t->c, SL_NODE_BROKER, 0), 20000);
  sl_producer *p = producer_with_delay(c, "cp/batched", 10000000);
  sl_err err = SL_ERR_INIT;
  int64_t bound_ns = sl_test_scaled_ms(3000) * 1000000;

  int64_t start = sl_clock_mono_ns();
  sl_message m = {.payload = "sync", .len = 4};
  sl_msg_id id;
  assert_int_equal(sl_producer_send(p, &m, &id, &err), SL_OK);
  assert_true(sl_clock_mono_ns() - start < bound_ns);

  sent a = {.mu = PTHREAD_MUTEX_INITIALIZER};
  start = sl_clock_mono_ns();
  send_one(p, "flushed", &a);
  assert_int_equal(sl_producer_flush(p, &err), SL_OK);
  assert_true(sl_clock_mono_ns() - start < bound_ns);
  assert_true(done_within(&a, 0));
  assert_int_equal(a.st, SL_OK);

  sent b = {.mu = PTHREAD_MUTEX_INITIALIZER};
  start = sl_clock_mono_ns();
  send_one(p, "destroyed", &b);
  sl_producer_destroy(p);
  assert_true(sl_clock_mono_ns() - start < bound_ns);
  assert_true(done_within(&b, 0));
  assert_int_equal(b.st, SL_OK);
  sl_client_destroy(c);
}

static void test_client_producer__bad_input(void **state) {
  sl_pt *t = *state;
  sl_client *c = client_at(sl_cluster_addr(t->c, SL_NODE_BROKER, 0), 20000);
  sl_producer_opts po = SL_PRODUCER_OPTS_INIT;
  sl_producer *p = NULL;
  sl_err err = SL_ERR_INIT;
  po.topic = "no-slash";
  assert_int_equal(sl_producer_create(c, &po, &p, &err), SL_EINVAL);
  assert_non_null(strstr(err.msg, "NAMESPACE/TOPIC"));
  po.topic = "cp/absent";
  assert_int_equal(sl_producer_create(c, &po, &p, &err), SL_ENOTFOUND);
  assert_null(p);
  po.topic = "cp/orders";
  po.batch_delay_us = 10000001;
  assert_int_equal(sl_producer_create(c, &po, &p, &err), SL_EINVAL);
  assert_non_null(strstr(err.msg, "batch_delay_us"));
  po.batch_delay_us = 0;
  po.batch_max = 513;
  assert_int_equal(sl_producer_create(c, &po, &p, &err), SL_EINVAL);
  assert_non_null(strstr(err.msg, "batch_max"));
  po.batch_max = 0;
  assert_null(p);
  sl_client_destroy(c);

  /* Nothing listens on port 1: fails within the client's timeout. */
  c = client_at("127.0.0.1:1", 1000);
  po.topic = "cp/orders";
  int64_t start = sl_clock_mono_ns();
  sl_status st = sl_producer_create(c, &po, &p, &err);
  assert_true(st == SL_ETIMEDOUT || st == SL_EUNAVAIL);
  assert_true(sl_clock_mono_ns() - start < 5000000000LL);
  sl_client_destroy(c);

  sl_client_opts o = SL_CLIENT_OPTS_INIT;
  o.url = "nohostport";
  assert_int_equal(sl_client_create(&o, &c, &err), SL_EINVAL);
  o.url = "127.0.0.1:1";
  o.tls_ca_file = "/nonexistent/ca.pem";
  assert_int_equal(sl_client_create(&o, &c, &err), SL_EINVAL);
  assert_non_null(strstr(err.msg, "/nonexistent/ca.pem"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_client_producer__owner_kill9_no_error_no_duplicate),
      cmocka_unit_test(test_client_producer__unload_mid_stream),
      cmocka_unit_test(test_client_producer__routing),
      cmocka_unit_test(test_client_producer__full_queue_fails_fast),
      cmocka_unit_test(test_client_producer__pause_then_batch),
      cmocka_unit_test(test_client_producer__negative_delay_sends_each_at_once),
      cmocka_unit_test(test_client_producer__sync_flush_destroy_skip_delay),
      cmocka_unit_test(test_client_producer__bad_input),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
