/*
 * libsluice consumer against a real cluster (etcd, metadata, 3 bookies, 2
 * brokers): receive and ack (acked messages do not come back), nack
 * redelivery, cumulative ack, ack with receipt, seek by id and by time,
 * callback mode, a partitioned topic merged into one consumer, automatic
 * resubscribe when the owner broker is killed -9, the producer's failover
 * seen from a consumer (with dedup on, every message sent across an owner
 * kill comes out exactly once), and ack grouping (destroy sends the grouped
 * acks; an ack with receipt, a nack and a seek go after them).
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

#define RECV_MS 20000
#define FAILOVER_MSGS 2000

static int setup(void **state) {
  sl_pt *t = calloc(1, sizeof(*t));
  sl_pt_start(t, "client_consumer", 1, 3, 2);
  sl_pt_namespace(t, "cc", true, 0);
  sl_pt_topic(t, "cc/acks", 0);
  sl_pt_topic(t, "cc/nacks", 0);
  sl_pt_topic(t, "cc/receipts", 0);
  sl_pt_topic(t, "cc/seek", 0);
  sl_pt_topic(t, "cc/seek_time", 2);
  sl_pt_topic(t, "cc/callback", 0);
  sl_pt_topic(t, "cc/cumulative", 0);
  sl_pt_topic(t, "cc/merged", 3);
  sl_pt_topic(t, "cc/resubscribe", 0);
  sl_pt_topic(t, "cc/failover", 0);
  sl_pt_topic(t, "cc/grouped", 0);
  sl_pt_topic(t, "cc/grouped_order", 0);
  sl_pt_topic(t, "cc/ungrouped", 0);
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

/* Sends "m-<i>" for i in [first, first + n), synchronously. */
static void produce(sl_client *c, const char *topic, int first, int n) {
  sl_producer_opts po = SL_PRODUCER_OPTS_INIT;
  po.topic = topic;
  sl_producer *p;
  sl_err err = SL_ERR_INIT;
  if (sl_producer_create(c, &po, &p, &err) != SL_OK) fail_msg("producer: %s", err.msg);
  for (int i = first; i < first + n; i++) {
    char buf[32], key[16];
    int len = snprintf(buf, sizeof(buf), "m-%d", i);
    snprintf(key, sizeof(key), "k%d", i);
    sl_message m = {.payload = buf, .len = (size_t)len, .key = key};
    if (sl_producer_send(p, &m, NULL, &err) != SL_OK) fail_msg("send %d: %s", i, err.msg);
  }
  sl_producer_destroy(p);
}

/* The index i of an "m-<i>" payload, or -1. */
static int index_of(const sl_received *m) {
  char buf[32];
  if (m->len < 3 || m->len >= sizeof(buf)) return -1;
  memcpy(buf, m->payload, m->len);
  buf[m->len] = '\0';
  int i;
  return sscanf(buf, "m-%d", &i) == 1 ? i : -1;
}

static sl_received *recv_one(sl_consumer *cons, int timeout_ms) {
  sl_received *m = NULL;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_consumer_receive(cons, timeout_ms, &m, &err);
  if (st != SL_OK) fail_msg("receive: %s (%s)", err.msg, sl_status_str(st));
  return m;
}

static void assert_nothing_within(sl_consumer *cons, int ms) {
  sl_received *m = NULL;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_consumer_receive(cons, ms, &m, &err);
  if (st == SL_OK) fail_msg("unexpected message %d (redelivery %u)", index_of(m), m->redelivery_count);
  assert_int_equal(st, SL_ETIMEDOUT);
}

/* Messages come in order with their bytes, key and ids; once acked (the
 * last with a receipt) a new consumer on the subscription gets none. */
static void test_client_consumer__receive_ack(void **state) {
  sl_pt *t = *state;
  sl_client *c = client_via(t, 0);
  produce(c, "cc/acks", 0, 50);
  sl_consumer *cons = consumer(c, "cc/acks", "s");
  sl_err err = SL_ERR_INIT;
  for (int i = 0; i < 50; i++) {
    sl_received *m = recv_one(cons, RECV_MS);
    assert_int_equal(index_of(m), i);
    char key[16];
    snprintf(key, sizeof(key), "k%d", i);
    assert_string_equal(m->key, key);
    assert_int_equal(m->id.partition, -1);
    assert_string_equal(m->topic, "cc/acks");
    assert_true(m->publish_time_ms > 0);
    assert_int_equal(m->redelivery_count, 0);
    sl_status st = i == 49 ? sl_consumer_ack_sync(cons, &m->id, &err)
                           : sl_consumer_ack(cons, &m->id, &err);
    assert_int_equal(st, SL_OK);
    sl_received_free(m);
  }
  sl_consumer_destroy(cons);
  cons = consumer(c, "cc/acks", "s");
  assert_nothing_within(cons, 1500);
  sl_consumer_destroy(cons);
  /* Another subscription has its own cursor: it gets all 50 again. */
  cons = consumer(c, "cc/acks", "other");
  for (int i = 0; i < 50; i++) {
    sl_received *m = recv_one(cons, RECV_MS);
    assert_int_equal(index_of(m), i);
    sl_received_free(m);
  }
  sl_consumer_destroy(cons);
  sl_client_destroy(c);
}

/* A nacked message comes again, same id, with its redelivery count up. */
static void test_client_consumer__nack_redelivers(void **state) {
  sl_pt *t = *state;
  sl_client *c = client_via(t, 0);
  produce(c, "cc/nacks", 0, 1);
  sl_consumer *cons = consumer(c, "cc/nacks", "s");
  sl_err err = SL_ERR_INIT;
  sl_received *m = recv_one(cons, RECV_MS);
  assert_int_equal(index_of(m), 0);
  sl_msg_id first = m->id;
  assert_int_equal(sl_consumer_nack(cons, &m->id, &err), SL_OK);
  sl_received_free(m);
  m = recv_one(cons, RECV_MS);
  assert_int_equal(index_of(m), 0);
  assert_memory_equal(&m->id, &first, sizeof(first));
  assert_true(m->redelivery_count >= 1);
  assert_int_equal(sl_consumer_ack_sync(cons, &m->id, &err), SL_OK);
  sl_received_free(m);
  assert_nothing_within(cons, 1500);
  sl_consumer_destroy(cons);
  sl_client_destroy(c);
}

/* A cumulative ack covers every earlier message: only the messages after
 * it are left (the last is acked with a receipt, which also confirms the
 * cumulative ack before it on the same stream). Shared subscriptions
 * refuse it. */
static void test_client_consumer__cumulative_ack(void **state) {
  sl_pt *t = *state;
  sl_client *c = client_via(t, 0);
  produce(c, "cc/cumulative", 0, 10);
  sl_consumer *cons = consumer(c, "cc/cumulative", "s");
  sl_err err = SL_ERR_INIT;
  sl_msg_id ids[10];
  for (int i = 0; i < 10; i++) {
    sl_received *m = recv_one(cons, RECV_MS);
    assert_int_equal(index_of(m), i);
    ids[i] = m->id;
    sl_received_free(m);
  }
  assert_int_equal(sl_consumer_ack_cumulative(cons, &ids[7], &err), SL_OK);
  assert_int_equal(sl_consumer_ack_sync(cons, &ids[9], &err), SL_OK);
  sl_consumer_destroy(cons);
  cons = consumer(c, "cc/cumulative", "s");
  sl_received *m = recv_one(cons, RECV_MS);
  assert_int_equal(index_of(m), 8);
  sl_received_free(m);
  assert_nothing_within(cons, 1000);
  sl_consumer_destroy(cons);

  sl_consumer_opts o = SL_CONSUMER_OPTS_INIT;
  o.topic = "cc/cumulative";
  o.subscription = "shared";
  o.type = SL_SUB_SHARED;
  assert_int_equal(sl_consumer_create(c, &o, &cons, &err), SL_OK);
  assert_int_equal(sl_consumer_ack_cumulative(cons, &ids[0], &err), SL_EINVAL);
  assert_non_null(strstr(err.msg, "exclusive or failover"));
  sl_consumer_destroy(cons);
  sl_client_destroy(c);
}

/* An ack with receipt says OK for a real message and NOT_FOUND for an id
 * that is not in the partition. */
static void test_client_consumer__ack_receipt(void **state) {
  sl_pt *t = *state;
  sl_client *c = client_via(t, 0);
  produce(c, "cc/receipts", 0, 3);
  sl_consumer *cons = consumer(c, "cc/receipts", "s");
  sl_err err = SL_ERR_INIT;
  sl_received *m = recv_one(cons, RECV_MS);
  assert_int_equal(sl_consumer_ack_sync(cons, &m->id, &err), SL_OK);
  sl_msg_id bogus = m->id;
  bogus.ledger_id += 1000000;
  sl_status st = sl_consumer_ack_sync(cons, &bogus, &err);
  assert_int_equal(st, SL_ENOTFOUND);
  sl_received_free(m);
  /* A partition this consumer does not have is refused locally. */
  bogus.partition = 7;
  assert_int_equal(sl_consumer_ack_sync(cons, &bogus, &err), SL_EINVAL);
  assert_non_null(strstr(err.msg, "partition 7"));
  sl_consumer_destroy(cons);
  sl_client_destroy(c);
}

/* After everything is acked, a seek to a message brings it and every later
 * one back; a seek the broker refuses returns its status and the consumer
 * goes on. */
static void test_client_consumer__seek_id(void **state) {
  sl_pt *t = *state;
  sl_client *c = client_via(t, 0);
  produce(c, "cc/seek", 0, 20);
  sl_consumer *cons = consumer(c, "cc/seek", "s");
  sl_err err = SL_ERR_INIT;
  sl_msg_id ids[20];
  for (int i = 0; i < 20; i++) {
    sl_received *m = recv_one(cons, RECV_MS);
    assert_int_equal(index_of(m), i);
    ids[i] = m->id;
    assert_int_equal(sl_consumer_ack(cons, &m->id, &err), SL_OK);
    sl_received_free(m);
  }
  assert_nothing_within(cons, 500);
  assert_int_equal(sl_consumer_seek_id(cons, &ids[5], &err), SL_OK);
  for (int i = 5; i < 20; i++) {
    sl_received *m = recv_one(cons, RECV_MS);
    assert_int_equal(index_of(m), i);
    assert_int_equal(sl_consumer_ack(cons, &m->id, &err), SL_OK);
    sl_received_free(m);
  }
  sl_msg_id bogus = ids[0];
  bogus.ledger_id += 1000000;
  sl_status st = sl_consumer_seek_id(cons, &bogus, &err);
  assert_true(st != SL_OK && st != SL_ETIMEDOUT);
  produce(c, "cc/seek", 20, 1);
  sl_received *m = recv_one(cons, RECV_MS);
  assert_int_equal(index_of(m), 20);
  sl_received_free(m);
  sl_consumer_destroy(cons);
  sl_client_destroy(c);
}

/* Seek by publish time on every partition: to 0 brings everything back; to
 * a time after the last message brings nothing until a new one comes. */
static void test_client_consumer__seek_time(void **state) {
  sl_pt *t = *state;
  sl_client *c = client_via(t, 0);
  produce(c, "cc/seek_time", 0, 20);
  sl_consumer *cons = consumer(c, "cc/seek_time", "s");
  sl_err err = SL_ERR_INIT;
  int64_t last_time = 0;
  for (int n = 0; n < 20; n++) {
    sl_received *m = recv_one(cons, RECV_MS);
    if (m->publish_time_ms > last_time) last_time = m->publish_time_ms;
    assert_int_equal(sl_consumer_ack(cons, &m->id, &err), SL_OK);
    sl_received_free(m);
  }
  assert_nothing_within(cons, 500);
  assert_int_equal(sl_consumer_seek(cons, 0, &err), SL_OK);
  bool seen[20] = {false};
  for (int n = 0; n < 20; n++) {
    sl_received *m = recv_one(cons, RECV_MS);
    int i = index_of(m);
    assert_true(i >= 0 && i < 20);
    assert_false(seen[i]);
    seen[i] = true;
    assert_int_equal(sl_consumer_ack(cons, &m->id, &err), SL_OK);
    sl_received_free(m);
  }
  assert_int_equal(sl_consumer_seek(cons, last_time + 1, &err), SL_OK);
  assert_nothing_within(cons, 1000);
  produce(c, "cc/seek_time", 20, 1);
  sl_received *m = recv_one(cons, RECV_MS);
  assert_int_equal(index_of(m), 20);
  sl_received_free(m);
  sl_consumer_destroy(cons);
  sl_client_destroy(c);
}

typedef struct counted {
  pthread_mutex_t mu;
  int n;
  bool in_order;
} counted;

static void on_message(sl_consumer *cons, sl_received *m, void *arg) {
  counted *k = arg;
  sl_err err = SL_ERR_INIT;
  pthread_mutex_lock(&k->mu);
  if (index_of(m) != k->n) k->in_order = false;
  k->n++;
  pthread_mutex_unlock(&k->mu);
  (void)sl_consumer_ack(cons, &m->id, &err);
  sl_received_free(m);
}

/* Callback mode: every message reaches the callback, in order; receive()
 * is refused. */
static void test_client_consumer__callback_mode(void **state) {
  sl_pt *t = *state;
  sl_client *c = client_via(t, 0);
  produce(c, "cc/callback", 0, 30);
  counted k = {PTHREAD_MUTEX_INITIALIZER, 0, true};
  sl_consumer_opts o = SL_CONSUMER_OPTS_INIT;
  o.topic = "cc/callback";
  o.subscription = "s";
  o.from_earliest = true;
  o.receiver_queue = 4; /* needs several permit refills */
  o.on_message = on_message;
  o.arg = &k;
  sl_consumer *cons = NULL;
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_consumer_create(c, &o, &cons, &err), SL_OK);
  int64_t deadline = sl_clock_mono_ns() + 20000000000LL;
  int n = 0;
  while (n < 30 && sl_clock_mono_ns() < deadline) {
    struct timespec ts = {0, 10000000};
    nanosleep(&ts, NULL);
    pthread_mutex_lock(&k.mu);
    n = k.n;
    pthread_mutex_unlock(&k.mu);
  }
  assert_int_equal(n, 30);
  assert_true(k.in_order);
  sl_received *m = NULL;
  assert_int_equal(sl_consumer_receive(cons, 10, &m, &err), SL_EINVAL);
  sl_consumer_destroy(cons);
  sl_client_destroy(c);
}

/* Three partitions, one consumer: every message once, from all three, and
 * in order within each partition. */
static void test_client_consumer__partitions_merged(void **state) {
  sl_pt *t = *state;
  sl_client *c = client_via(t, 1);
  produce(c, "cc/merged", 0, 60);
  sl_consumer *cons = consumer(c, "cc/merged", "s");
  sl_err err = SL_ERR_INIT;
  bool seen[60] = {false};
  int last_of[3] = {-1, -1, -1};
  for (int n = 0; n < 60; n++) {
    sl_received *m = recv_one(cons, RECV_MS);
    int i = index_of(m);
    assert_true(i >= 0 && i < 60);
    assert_false(seen[i]);
    seen[i] = true;
    assert_true(m->id.partition >= 0 && m->id.partition < 3);
    char name[64];
    snprintf(name, sizeof(name), "cc/merged-partition-%d", m->id.partition);
    assert_string_equal(m->topic, name);
    assert_true(i > last_of[m->id.partition]);
    last_of[m->id.partition] = i;
    assert_int_equal(sl_consumer_ack(cons, &m->id, &err), SL_OK);
    sl_received_free(m);
  }
  for (int p = 0; p < 3; p++) assert_true(last_of[p] >= 0);
  sl_consumer_destroy(cons);
  sl_client_destroy(c);
}

/* The owner of a subscribed partition is killed -9: the consumer
 * resubscribes at the new owner on its own and receives what is published
 * after the kill, with no error on the way. */
static void test_client_consumer__resubscribe_after_owner_kill9(void **state) {
  sl_pt *t = *state;
  const char *topic = "cc/resubscribe";
  int owner = sl_pt_owner(t, 0, topic, NULL);
  int survivor = owner == 0 ? 1 : 0;
  sl_client *c = client_via(t, survivor);
  produce(c, topic, 0, 10);
  sl_consumer *cons = consumer(c, topic, "s");
  sl_err err = SL_ERR_INIT;
  bool seen[20] = {false};
  for (int n = 0; n < 10; n++) {
    sl_received *m = recv_one(cons, RECV_MS);
    int i = index_of(m);
    assert_true(i >= 0 && i < 10);
    seen[i] = true;
    assert_int_equal(sl_consumer_ack_sync(cons, &m->id, &err), SL_OK);
    sl_received_free(m);
  }
  assert_int_equal(sl_cluster_kill9(t->c, SL_NODE_BROKER, owner, &err), SL_OK);
  produce(c, topic, 10, 10);
  /* At least once: all ten new ones come; none of the acked ones again. */
  int64_t deadline = sl_clock_mono_ns() + 60000000000LL;
  int fresh = 0;
  while (fresh < 10 && sl_clock_mono_ns() < deadline) {
    sl_received *m = recv_one(cons, 60000);
    int i = index_of(m);
    assert_true(i >= 10 && i < 20);
    if (!seen[i]) fresh++;
    seen[i] = true;
    assert_int_equal(sl_consumer_ack(cons, &m->id, &err), SL_OK);
    sl_received_free(m);
  }
  assert_int_equal(fresh, 10);
  sl_consumer_destroy(cons);
  sl_client_destroy(c);
  assert_int_equal(sl_cluster_restart(t->c, SL_NODE_BROKER, owner, &err), SL_OK);
}

typedef struct outcomes {
  pthread_mutex_t mu;
  int done, failed;
  sl_status first;
} outcomes;

static void on_sent(sl_status st, const sl_msg_id *id, void *arg) {
  (void)id;
  outcomes *o = arg;
  pthread_mutex_lock(&o->mu);
  o->done++;
  if (st != SL_OK && o->failed++ == 0) o->first = st;
  pthread_mutex_unlock(&o->mu);
}

static int done_count(outcomes *o) {
  pthread_mutex_lock(&o->mu);
  int n = o->done;
  pthread_mutex_unlock(&o->mu);
  return n;
}

/* An application keeps sending while the owner broker is killed -9: no
 * send fails, and a consumer then receives every message exactly once
 * (dedup on in the namespace, so the resent ones are not stored twice). */
static void test_client_consumer__producer_failover_exactly_once(void **state) {
  sl_pt *t = *state;
  const char *topic = "cc/failover";
  int owner = sl_pt_owner(t, 0, topic, NULL);
  int survivor = owner == 0 ? 1 : 0;
  sl_client *c = client_via(t, survivor);
  sl_producer_opts po = SL_PRODUCER_OPTS_INIT;
  po.topic = topic;
  po.name = "failover-app";
  po.send_timeout_ms = 60000;
  po.max_pending = 200;
  sl_producer *p;
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_producer_create(c, &po, &p, &err), SL_OK);
  outcomes o = {.mu = PTHREAD_MUTEX_INITIALIZER};
  for (int i = 0; i < FAILOVER_MSGS; i++) {
    char buf[32];
    int len = snprintf(buf, sizeof(buf), "m-%d", i);
    sl_message m = {.payload = buf, .len = (size_t)len};
    assert_int_equal(sl_producer_send_async(p, &m, on_sent, &o, &err), SL_OK);
    if (i == FAILOVER_MSGS / 3) {
      /* Kill the owner with acked and unacked messages behind us. */
      int64_t deadline = sl_clock_mono_ns() + 30000000000LL;
      while (done_count(&o) < FAILOVER_MSGS / 6 && sl_clock_mono_ns() < deadline) {
        struct timespec ts = {0, 5000000};
        nanosleep(&ts, NULL);
      }
      assert_int_equal(sl_cluster_kill9(t->c, SL_NODE_BROKER, owner, &err), SL_OK);
    }
  }
  assert_int_equal(sl_producer_flush(p, &err), SL_OK);
  assert_int_equal(done_count(&o), FAILOVER_MSGS);
  if (o.failed) fail_msg("%d sends failed, first: %s", o.failed, sl_status_str(o.first));
  sl_producer_destroy(p);

  sl_consumer *cons = consumer(c, topic, "check");
  static bool seen[FAILOVER_MSGS];
  memset(seen, 0, sizeof(seen));
  for (int n = 0; n < FAILOVER_MSGS; n++) {
    sl_received *m = recv_one(cons, RECV_MS);
    int i = index_of(m);
    if (i < 0 || i >= FAILOVER_MSGS) fail_msg("message %d: bad payload", n);
    if (seen[i]) fail_msg("message m-%d came twice (after %d messages)", i, n);
    seen[i] = true;
    assert_int_equal(sl_consumer_ack(cons, &m->id, &err), SL_OK);
    sl_received_free(m);
  }
  assert_nothing_within(cons, 1500);
  sl_consumer_destroy(cons);
  sl_client_destroy(c);
  assert_int_equal(sl_cluster_restart(t->c, SL_NODE_BROKER, owner, &err), SL_OK);
}

/* Acks held for up to 10 s: only what the test checks sends them sooner. */
#define LONG_GROUP_US 10000000

static sl_consumer *grouped_consumer(sl_client *c, const char *topic, const char *sub) {
  sl_consumer_opts o = SL_CONSUMER_OPTS_INIT;
  o.topic = topic;
  o.subscription = sub;
  o.from_earliest = true;
  o.ack_group_us = LONG_GROUP_US;
  sl_consumer *cons = NULL;
  sl_err err = SL_ERR_INIT;
  if (sl_consumer_create(c, &o, &cons, &err) != SL_OK) fail_msg("consumer %s: %s", topic, err.msg);
  return cons;
}

/* Subscription sub's backlog (entries not fully acked) in topic's stats,
 * which only the owner has. */
static long long backlog_of(sl_pt *t, const char *topic, const char *sub) {
  sl_client *c = client_via(t, sl_pt_owner(t, 0, topic, NULL));
  char *json = NULL;
  sl_err err = SL_ERR_INIT;
  if (sl_admin_topic_stats(c, topic, &json, &err) != SL_OK) fail_msg("stats: %s", err.msg);
  sl_client_destroy(c);
  char name[96];
  snprintf(name, sizeof(name), "\"name\":\"%s\"", sub);
  const char *at = strstr(json, name);
  const char *b = at != NULL ? strstr(at, "\"backlog\":") : NULL;
  if (b == NULL) fail_msg("stats without backlog of %s: %s", sub, json);
  long long n = strtoll(b + strlen("\"backlog\":"), NULL, 10);
  free(json);
  return n;
}

/* Waits (well under the 10 s group) until sub's backlog is `want`. */
static void assert_backlog_soon(sl_pt *t, const char *topic, const char *sub,
                                long long want) {
  int64_t wait_ms = sl_test_scaled_ms(3000);
  if (wait_ms > 8000) wait_ms = 8000; /* past that the group's timer sent them */
  int64_t deadline = sl_clock_mono_ms() + wait_ms;
  long long n = backlog_of(t, topic, sub);
  while (n != want && sl_clock_mono_ms() < deadline) {
    struct timespec ts = {0, 20000000};
    nanosleep(&ts, NULL);
    n = backlog_of(t, topic, sub);
  }
  if (n != want) fail_msg("backlog of %s: %lld, want %lld", sub, n, want);
}

/* Acks grouped for 10 s, then destroy at once: destroy sends them before
 * it closes the stream, so nothing comes back. */
static void test_client_consumer__grouped_acks_sent_on_destroy(void **state) {
  sl_pt *t = *state;
  sl_client *c = client_via(t, 0);
  produce(c, "cc/grouped", 0, 30);
  sl_consumer *cons = grouped_consumer(c, "cc/grouped", "s");
  sl_err err = SL_ERR_INIT;
  for (int i = 0; i < 30; i++) {
    sl_received *m = recv_one(cons, RECV_MS);
    assert_int_equal(index_of(m), i);
    assert_int_equal(sl_consumer_ack(cons, &m->id, &err), SL_OK);
    sl_received_free(m);
  }
  /* Grouped, not sent: the broker still counts all 30. */
  assert_int_equal(backlog_of(t, "cc/grouped", "s"), 30);
  sl_consumer_destroy(cons);
  cons = grouped_consumer(c, "cc/grouped", "s");
  assert_nothing_within(cons, 1500);
  sl_consumer_destroy(cons);
  sl_client_destroy(c);
}

/* ack_group_us < 0: each ack goes at once, while the consumer lives. */
static void test_client_consumer__ungrouped_acks_go_at_once(void **state) {
  sl_pt *t = *state;
  sl_client *c = client_via(t, 0);
  produce(c, "cc/ungrouped", 0, 5);
  sl_consumer_opts o = SL_CONSUMER_OPTS_INIT;
  o.topic = "cc/ungrouped";
  o.subscription = "s";
  o.from_earliest = true;
  o.ack_group_us = -1;
  sl_consumer *cons = NULL;
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_consumer_create(c, &o, &cons, &err), SL_OK);
  for (int i = 0; i < 5; i++) {
    sl_received *m = recv_one(cons, RECV_MS);
    assert_int_equal(sl_consumer_ack(cons, &m->id, &err), SL_OK);
    sl_received_free(m);
  }
  assert_backlog_soon(t, "cc/ungrouped", "s", 0);
  sl_consumer_destroy(cons);
  sl_client_destroy(c);
}

/* With acks grouped for 10 s, an ack with receipt, a nack and a seek each
 * send the group first: the broker has applied the earlier acks by the
 * time they return, and a seek back brings the acked messages again. */
static void test_client_consumer__grouped_acks_go_before_receipt_nack_seek(void **state) {
  sl_pt *t = *state;
  const char *topic = "cc/grouped_order";
  sl_client *c = client_via(t, 0);
  produce(c, topic, 0, 12);
  sl_consumer *cons = grouped_consumer(c, topic, "s");
  sl_err err = SL_ERR_INIT;
  sl_msg_id ids[12];
  for (int i = 0; i < 12; i++) {
    sl_received *m = recv_one(cons, RECV_MS);
    assert_int_equal(index_of(m), i);
    ids[i] = m->id;
    sl_received_free(m);
  }
  /* Receipt: acks 0..3 grouped, then 4 with a receipt. */
  for (int i = 0; i < 4; i++) assert_int_equal(sl_consumer_ack(cons, &ids[i], &err), SL_OK);
  assert_int_equal(backlog_of(t, topic, "s"), 12);
  assert_int_equal(sl_consumer_ack_sync(cons, &ids[4], &err), SL_OK);
  assert_int_equal(backlog_of(t, topic, "s"), 7);

  /* Nack: acks 5..9 grouped, then a nack of 10, which comes again. */
  for (int i = 5; i < 10; i++) assert_int_equal(sl_consumer_ack(cons, &ids[i], &err), SL_OK);
  assert_int_equal(sl_consumer_nack(cons, &ids[10], &err), SL_OK);
  assert_backlog_soon(t, topic, "s", 2);
  sl_received *m = recv_one(cons, RECV_MS);
  assert_int_equal(index_of(m), 10);
  assert_true(m->redelivery_count >= 1);
  sl_received_free(m);

  /* Seek: 10 and 11 acked (grouped), then a seek back to 8: the acks
   * reach the broker before it (after it they would ack the messages it
   * brings back), so 8..11 all come again, and stay unacked for the next
   * consumer. */
  assert_int_equal(sl_consumer_ack(cons, &ids[10], &err), SL_OK);
  assert_int_equal(sl_consumer_ack(cons, &ids[11], &err), SL_OK);
  assert_int_equal(sl_consumer_seek_id(cons, &ids[8], &err), SL_OK);
  for (int round = 0; round < 2; round++) {
    for (int i = 8; i < 12; i++) {
      m = recv_one(cons, RECV_MS);
      assert_int_equal(index_of(m), i);
      sl_received_free(m);
    }
    sl_consumer_destroy(cons);
    cons = grouped_consumer(c, topic, "s");
  }
  sl_consumer_destroy(cons);
  sl_client_destroy(c);
}

/* Bad input gets a clear status. */
static void test_client_consumer__bad_input(void **state) {
  sl_pt *t = *state;
  sl_client *c = client_via(t, 0);
  sl_consumer_opts o = SL_CONSUMER_OPTS_INIT;
  sl_consumer *cons = NULL;
  sl_err err = SL_ERR_INIT;
  o.topic = "cc/absent";
  o.subscription = "s";
  assert_int_equal(sl_consumer_create(c, &o, &cons, &err), SL_ENOTFOUND);
  o.topic = "noslash";
  assert_int_equal(sl_consumer_create(c, &o, &cons, &err), SL_EINVAL);
  o.topic = "cc/acks";
  o.ack_group_us = 10000001;
  assert_int_equal(sl_consumer_create(c, &o, &cons, &err), SL_EINVAL);
  assert_non_null(strstr(err.msg, "ack_group_us"));
  o.ack_group_us = 0;
  o.topic = "cc/acks";
  o.subscription = NULL;
  assert_int_equal(sl_consumer_create(c, &o, &cons, &err), SL_EINVAL);
  assert_non_null(strstr(err.msg, "subscription"));
  o.subscription = "excl";
  sl_consumer *first = consumer(c, "cc/acks", "excl");
  assert_int_equal(sl_consumer_create(c, &o, &cons, &err), SL_EBUSY);
  assert_null(cons);
  sl_consumer_destroy(first);
  sl_client_destroy(c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_client_consumer__receive_ack),
      cmocka_unit_test(test_client_consumer__nack_redelivers),
      cmocka_unit_test(test_client_consumer__cumulative_ack),
      cmocka_unit_test(test_client_consumer__ack_receipt),
      cmocka_unit_test(test_client_consumer__seek_id),
      cmocka_unit_test(test_client_consumer__seek_time),
      cmocka_unit_test(test_client_consumer__callback_mode),
      cmocka_unit_test(test_client_consumer__partitions_merged),
      cmocka_unit_test(test_client_consumer__grouped_acks_sent_on_destroy),
      cmocka_unit_test(test_client_consumer__grouped_acks_go_before_receipt_nack_seek),
      cmocka_unit_test(test_client_consumer__ungrouped_acks_go_at_once),
      cmocka_unit_test(test_client_consumer__bad_input),
      cmocka_unit_test(test_client_consumer__resubscribe_after_owner_kill9),
      cmocka_unit_test(test_client_consumer__producer_failover_exactly_once),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
