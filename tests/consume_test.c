/*
 * Consume on a real cluster (etcd, a metadata service, 3 bookies, 2
 * brokers): subscription types, initial positions, permits, acks with
 * receipts, redelivery after nack, ack timeout and a consumer leaving, and
 * bad input, through the BrokerService.Consume stream. Messages come from a
 * Produce stream; payloads are checked byte for byte.
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

enum { EXCLUSIVE = 0, FAILOVER = 1, SHARED = 2, KEY_SHARED = 3 };

/* The exact status, or its gRPC fallback when the trailer is missing. */
static void assert_status(sl_status got, sl_status want) {
  if (got != want) assert_int_equal(got, sl_status_from_grpc(sl_status_to_grpc(want)));
}

static const char *const TOPICS[] = {"ct/ex", "ct/pos", "ct/shared", "ct/keys",
                                     "ct/fo", "ct/redeliver", "ct/bad", "ct/stats",
                                     "ct/slow", "ct/batch", "ct/nobatch"};

static int setup(void **state) {
  sl_pt *t = calloc(1, sizeof(*t));
  sl_pt_start(t, "consume", 1, 3, 2);
  sl_pt_namespace(t, "ct", false, 0);
  for (size_t i = 0; i < sizeof(TOPICS) / sizeof(TOPICS[0]); i++)
    sl_pt_topic(t, TOPICS[i], 0);
  *state = t;
  return 0;
}

static void recv_n(sl_ct_consumer *c, sl_ct_msg *out, int n) {
  sl_err err = SL_ERR_INIT;
  int got = 0;
  sl_status st = sl_ct_recv(c, out, n, &got, WAIT_MS, &err);
  if (st != SL_OK) fail_msg("%s received %d of %d: %s", c->name, got, n, sl_err_msg(&err, st));
}

static void flow(sl_ct_consumer *c, int32_t permits) {
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_ct_flow(c, permits, &err), SL_OK);
}

/* Acks msgs (individually) and waits until the acks are durable. */
static void ack_durably(sl_ct_consumer *c, const sl_ct_msg *msgs, int n, uint64_t receipt) {
  Sluice__V1__MessageId *ids = calloc((size_t)n + 1, sizeof(*ids));
  for (int i = 0; i < n; i++) ids[i] = msgs[i].id;
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_ct_ack(c, ids, (size_t)n, false, receipt, &err), SL_OK);
  sl_status st = sl_ct_wait_receipt(c, receipt, WAIT_MS, &err);
  if (st != SL_OK) fail_msg("receipt %llu: %s", (unsigned long long)receipt,
                            sl_err_msg(&err, st));
  free(ids);
}

/* The next message of whichever consumer has one, within WAIT_MS: its
 * index in cs, the message in *m. */
static int recv_any(sl_ct_consumer *cs, int n, sl_ct_msg *m) {
  int64_t end = sl_clock_mono_ms() + WAIT_MS;
  while (sl_clock_mono_ms() < end) {
    for (int i = 0; i < n; i++) {
      if (cs[i].s == NULL) continue;
      sl_err err = SL_ERR_INIT;
      int got = 0;
      sl_status st = sl_ct_recv(&cs[i], m, 1, &got, 20, &err);
      if (st == SL_OK) return i;
      if (st != SL_ETIMEDOUT) fail_msg("%s: %s", cs[i].name, sl_err_msg(&err, st));
    }
  }
  fail_msg("no message at any consumer within %d ms", WAIT_MS);
  return -1;
}

/* Exclusive: everything in publish order with its bytes, acks durable
 * (receipt), and a new consumer of the subscription gets only what was
 * published after (nothing acked comes again). */
static void test_consume__exclusive_in_order_and_acked(void **state) {
  sl_pt *t = *state;
  enum { N = 50 };
  sl_ct_produce(t, "ct/ex", "prod-0", 0, N, 0);
  sl_ct_sub sub = {.topic = "ct/ex", .subscription = "s1", .type = EXCLUSIVE,
                   .earliest = true, .name = "c1"};
  sl_ct_consumer c;
  sl_ct_subscribe_owner(t, &sub, &c);
  assert_string_equal(c.name, "c1");
  assert_true(c.active);
  flow(&c, 1000);
  sl_ct_msg got[N];
  recv_n(&c, got, N);
  for (int i = 0; i < N; i++) {
    assert_int_equal(got[i].seq, (uint64_t)i);
    assert_true(got[i].payload_ok);
    assert_int_equal(got[i].redelivery_count, 0);
    assert_string_equal(got[i].producer, "prod-0");
  }
  ack_durably(&c, got, N, 7);
  sl_ct_close(&c);

  sl_ct_subscribe_owner(t, &sub, &c);
  flow(&c, 1000);
  sl_ct_produce(t, "ct/ex", "prod-1", 100, 1, 0);
  recv_n(&c, got, 1);
  assert_int_equal(got[0].seq, 100); /* not an acked one again */
  sl_ct_close(&c);
}

/* A new subscription at earliest starts at the oldest message, one at
 * latest at the first message published after it subscribed. */
static void test_consume__earliest_and_latest(void **state) {
  sl_pt *t = *state;
  sl_ct_produce(t, "ct/pos", "before", 0, 5, 0);
  sl_ct_sub early = {.topic = "ct/pos", .subscription = "early", .type = EXCLUSIVE,
                     .earliest = true};
  sl_ct_sub late = {.topic = "ct/pos", .subscription = "late", .type = EXCLUSIVE};
  sl_ct_consumer e, l;
  sl_ct_subscribe_owner(t, &early, &e);
  sl_ct_subscribe_owner(t, &late, &l);
  flow(&e, 100);
  flow(&l, 100);
  sl_ct_produce(t, "ct/pos", "after", 5, 5, 0);
  sl_ct_msg got[10];
  recv_n(&e, got, 10);
  for (int i = 0; i < 10; i++) assert_int_equal(got[i].seq, (uint64_t)i);
  recv_n(&l, got, 5);
  for (int i = 0; i < 5; i++) assert_int_equal(got[i].seq, (uint64_t)(5 + i));
  sl_ct_close(&e);
  sl_ct_close(&l);
}

/* Shared: three consumers together get every message exactly once; the
 * unacked messages of one that leaves go to the others, counted as
 * redelivered. */
static void test_consume__shared_exactly_once_and_leaver(void **state) {
  sl_pt *t = *state;
  enum { N = 90, C = 3 };
  sl_ct_produce(t, "ct/shared", "p", 0, N, 0);
  sl_ct_consumer cs[C];
  for (int i = 0; i < C; i++) {
    char name[16];
    snprintf(name, sizeof(name), "sh%d", i);
    sl_ct_sub sub = {.topic = "ct/shared", .subscription = "sh", .type = SHARED,
                     .earliest = true, .name = name};
    sl_ct_subscribe_owner(t, &sub, &cs[i]);
  }
  for (int i = 0; i < C; i++) flow(&cs[i], 40); /* 120 permits for 90 */
  static sl_ct_msg by[C][N];
  int n_by[C] = {0};
  int seen[N] = {0};
  for (int k = 0; k < N; k++) {
    sl_ct_msg m;
    int i = recv_any(cs, C, &m);
    assert_true(m.seq < N);
    assert_true(m.payload_ok);
    seen[m.seq]++;
    by[i][n_by[i]++] = m;
  }
  for (int s = 0; s < N; s++) assert_int_equal(seen[s], 1);
  assert_true(n_by[2] > 0); /* the leaver holds some */
  ack_durably(&cs[0], by[0], n_by[0], 1);
  ack_durably(&cs[1], by[1], n_by[1], 2);
  sl_ct_close(&cs[2]);
  flow(&cs[0], 100);
  flow(&cs[1], 100);
  int want[N] = {0};
  for (int k = 0; k < n_by[2]; k++) want[by[2][k].seq] = 1;
  for (int k = 0; k < n_by[2]; k++) {
    sl_ct_msg m;
    recv_any(cs, 2, &m);
    assert_int_equal(want[m.seq], 1); /* only the leaver's, once each */
    want[m.seq] = 0;
    assert_int_equal(m.redelivery_count, 1);
  }
  sl_ct_close(&cs[0]);
  sl_ct_close(&cs[1]);
}

/* key_shared under load: per-key order holds while a consumer joins and
 * one leaves; the joiner gets keys within a bounded time. Every message is
 * acked right away, so a key moves as soon as its old owner acked it. */
static void test_consume__key_shared_order_join_leave(void **state) {
  sl_pt *t = *state;
  enum { KEYS = 8, ROUND = 80, C = 3 };
  sl_ct_consumer cs[C];
  memset(cs, 0, sizeof(cs));
  const char *names[C] = {"ka", "kb", "kc"};
  sl_ct_sub sub = {.topic = "ct/keys", .subscription = "ks", .type = KEY_SHARED,
                   .earliest = true};
  for (int i = 0; i < 2; i++) {
    sub.name = names[i];
    sl_ct_subscribe_owner(t, &sub, &cs[i]);
    flow(&cs[i], 1000);
  }
  int64_t last_seq[KEYS];
  for (int k = 0; k < KEYS; k++) last_seq[k] = -1;
  int total = 0;
  int64_t joined_at = 0, joiner_first = -1;
  for (int round = 0; round < 3; round++) {
    if (round == 1) { /* a consumer joins */
      sub.name = names[2];
      sl_ct_subscribe_owner(t, &sub, &cs[2]);
      flow(&cs[2], 1000);
      joined_at = sl_clock_mono_ms();
    }
    if (round == 2) { /* one leaves, once its acks are applied (a receipt
                         * comes after every earlier request) */
      sl_err err = SL_ERR_INIT;
      assert_int_equal(sl_ct_ack(&cs[0], NULL, 0, false, 99, &err), SL_OK);
      assert_int_equal(sl_ct_wait_receipt(&cs[0], 99, WAIT_MS, &err), SL_OK);
      sl_ct_close(&cs[0]);
    }
    char pname[16];
    snprintf(pname, sizeof(pname), "kp%d", round);
    sl_ct_produce(t, "ct/keys", pname, (uint64_t)(round * ROUND), ROUND, KEYS);
    int want = (round + 1) * ROUND;
    while (total < want) {
      sl_ct_msg m;
      int i = recv_any(cs, C, &m);
      int key = (int)(m.seq % KEYS);
      char kname[16];
      snprintf(kname, sizeof(kname), "k%d", key);
      assert_string_equal(m.key, kname);
      /* Per key, sequence ids only grow (a redelivery may repeat one). */
      assert_true((int64_t)m.seq >= last_seq[key]);
      if ((int64_t)m.seq > last_seq[key]) total++;
      last_seq[key] = (int64_t)m.seq;
      if (i == 2 && joiner_first < 0) joiner_first = sl_clock_mono_ms();
      Sluice__V1__MessageId id = m.id;
      sl_err err = SL_ERR_INIT;
      assert_int_equal(sl_ct_ack(&cs[i], &id, 1, false, 0, &err), SL_OK);
    }
  }
  assert_true(joiner_first >= 0);
  assert_true(joiner_first - joined_at < 10000);
  for (int i = 1; i < C; i++) sl_ct_close(&cs[i]);
}

/* Failover: the first consumer by name is active, the other is told when
 * it becomes active and takes over at the first unacked message, in
 * order, with nothing skipped. */
static void test_consume__failover_takeover_in_order(void **state) {
  sl_pt *t = *state;
  enum { N = 20 };
  sl_ct_produce(t, "ct/fo", "p", 0, N, 0);
  sl_ct_sub sub = {.topic = "ct/fo", .subscription = "fo", .type = FAILOVER,
                   .earliest = true, .name = "a"};
  sl_ct_consumer a, b;
  sl_ct_subscribe_owner(t, &sub, &a);
  sub.name = "b";
  sl_ct_subscribe_owner(t, &sub, &b);
  assert_true(a.active);
  assert_false(b.active);
  flow(&a, 100);
  flow(&b, 100);
  sl_ct_msg got[N];
  recv_n(&a, got, N);
  for (int i = 0; i < N; i++) assert_int_equal(got[i].seq, (uint64_t)i);
  ack_durably(&a, got, N / 2, 3);
  sl_ct_close(&a);
  recv_n(&b, got, N / 2);
  assert_true(b.active);
  assert_true(b.active_changes >= 1);
  for (int i = 0; i < N / 2; i++) assert_int_equal(got[i].seq, (uint64_t)(N / 2 + i));
  sl_ct_close(&b);
}

/* A nack and an ack timeout each redeliver the message with its count
 * incremented. */
static void test_consume__nack_and_ack_timeout_redeliver(void **state) {
  sl_pt *t = *state;
  sl_ct_produce(t, "ct/redeliver", "p", 0, 3, 0);
  sl_ct_sub sub = {.topic = "ct/redeliver", .subscription = "nk", .type = EXCLUSIVE,
                   .earliest = true, .nack_delay_ms = 100};
  sl_ct_consumer c;
  sl_ct_subscribe_owner(t, &sub, &c);
  flow(&c, 100);
  sl_ct_msg got[3];
  recv_n(&c, got, 3);
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_ct_nack(&c, &got[1].id, 1, 0, &err), SL_OK);
  sl_ct_msg again;
  recv_n(&c, &again, 1);
  assert_int_equal(again.seq, 1);
  assert_int_equal(again.redelivery_count, 1);
  assert_int_equal(sl_ct_nack(&c, &again.id, 1, 50, &err), SL_OK);
  recv_n(&c, &again, 1);
  assert_int_equal(again.seq, 1);
  assert_int_equal(again.redelivery_count, 2);
  sl_ct_close(&c);

  sl_ct_sub timed = {.topic = "ct/redeliver", .subscription = "to", .type = EXCLUSIVE,
                     .earliest = true, .ack_timeout_ms = 300};
  sl_ct_subscribe_owner(t, &timed, &c);
  flow(&c, 100);
  recv_n(&c, got, 3);
  Sluice__V1__MessageId ids[2] = {got[0].id, got[1].id};
  assert_int_equal(sl_ct_ack(&c, ids, 2, false, 0, &err), SL_OK); /* not the last */
  recv_n(&c, &again, 1);
  assert_int_equal(again.seq, 2);
  assert_int_equal(again.redelivery_count, 1);
  sl_ct_close(&c);
}

/* The stream's end status after the request that broke it. */
static sl_status end_status(sl_ct_consumer *c, sl_err *err) {
  Sluice__V1__ConsumeResponse *r = NULL;
  for (;;) {
    sl_status st = sl_ct_next(c, WAIT_MS, &r, err);
    if (st != SL_OK) return st;
    protobuf_c_message_free_unpacked(&r->base, NULL);
  }
}

/* Bad input gets its exact status, and the broker keeps serving. */
static void test_consume__bad_input(void **state) {
  sl_pt *t = *state;
  sl_ct_produce(t, "ct/bad", "p", 0, 2, 0);
  int owner = sl_pt_owner(t, 0, "ct/bad", NULL);
  sl_err err = SL_ERR_INIT;
  sl_ct_consumer c, c2;

  /* An ack of an id that is not in the partition: its receipt says so. */
  sl_ct_sub ex = {.topic = "ct/bad", .subscription = "bx", .type = EXCLUSIVE,
                  .earliest = true, .name = "first"};
  assert_int_equal(sl_ct_subscribe(t, owner, &ex, &c, NULL, &err), SL_OK);
  Sluice__V1__MessageId bogus = SLUICE__V1__MESSAGE_ID__INIT;
  bogus.ledger_id = 999999;
  bogus.entry_id = 5;
  assert_int_equal(sl_ct_ack(&c, &bogus, 1, false, 11, &err), SL_OK);
  assert_status(sl_ct_wait_receipt(&c, 11, WAIT_MS, &err), SL_ENOTFOUND);

  /* A second consumer on an exclusive subscription: refused, named. */
  ex.name = "second";
  sl_status st = sl_ct_subscribe(t, owner, &ex, &c2, NULL, &err);
  assert_status(st, SL_EBUSY);
  assert_non_null(strstr(err.msg, "bx"));
  sl_ct_close(&c2);
  sl_ct_close(&c);

  /* An unknown subscription type. */
  sl_ct_sub odd = {.topic = "ct/bad", .subscription = "odd", .type = 7};
  assert_status(sl_ct_subscribe(t, owner, &odd, &c, NULL, &err), SL_EINVAL);
  assert_non_null(strstr(err.msg, "type"));
  sl_ct_close(&c);

  /* Permits <= 0. */
  sl_ct_sub sh = {.topic = "ct/bad", .subscription = "bs", .type = SHARED,
                  .earliest = true};
  assert_int_equal(sl_ct_subscribe(t, owner, &sh, &c, NULL, &err), SL_OK);
  sl_ct_flow(&c, 0, &err);
  assert_status(end_status(&c, &err), SL_EINVAL);
  assert_non_null(strstr(err.msg, "permits"));
  sl_ct_close(&c);

  /* A cumulative ack on a shared subscription. */
  assert_int_equal(sl_ct_subscribe(t, owner, &sh, &c, NULL, &err), SL_OK);
  flow(&c, 10);
  sl_ct_msg got[2];
  recv_n(&c, got, 2);
  sl_ct_ack(&c, &got[1].id, 1, true, 0, &err);
  assert_status(end_status(&c, &err), SL_EINVAL);
  assert_non_null(strstr(err.msg, "cumulative"));
  sl_ct_close(&c);

  /* A bad subscription name, and a request before subscribe. */
  sl_ct_sub bad_name = {.topic = "ct/bad", .subscription = "no/slash", .type = SHARED};
  assert_status(sl_ct_subscribe(t, owner, &bad_name, &c, NULL, &err), SL_EINVAL);
  sl_ct_close(&c);
  sl_rpc_call_opts o = {.wait_for_ready = true};
  assert_int_equal(sl_broker_service_consume_open(t->broker[owner], &o, &c.s, &err), SL_OK);
  sl_ct_flow(&c, 5, &err);
  assert_status(end_status(&c, &err), SL_EINVAL);
  sl_ct_close(&c);

  /* Still serving: the shared subscription delivers its messages again
   * (never acked) to a new consumer. */
  assert_int_equal(sl_ct_subscribe(t, owner, &sh, &c, NULL, &err), SL_OK);
  flow(&c, 10);
  recv_n(&c, got, 2);
  sl_ct_close(&c);
}

/* Subscribe at the broker that does not own the partition: a redirect to
 * the owner with its epoch. */
static void test_consume__redirect_to_owner(void **state) {
  sl_pt *t = *state;
  uint64_t epoch = 0;
  int owner = sl_pt_owner(t, 0, "ct/ex", &epoch);
  sl_ct_sub sub = {.topic = "ct/ex", .subscription = "rd", .type = SHARED};
  sl_ct_consumer c;
  Sluice__V1__Redirect *rd = NULL;
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_ct_subscribe(t, 1 - owner, &sub, &c, &rd, &err), SL_EREDIRECT);
  assert_non_null(rd);
  assert_string_equal(rd->partition, "ct/ex");
  assert_int_equal(rd->epoch, epoch);
  assert_string_equal(rd->broker_address, sl_cluster_addr(t->c, SL_NODE_BROKER, owner));
  protobuf_c_message_free_unpacked(&rd->base, NULL);
  sl_ct_close(&c);
}

/* The subscription's row of GetTopicStats, asked of the owner. */
static Sluice__V1__TopicStats *topic_stats(sl_pt *t, const char *topic, const char *sub,
                                           const Sluice__V1__SubscriptionStats **row) {
  Sluice__V1__TopicStats *out =
      sl_ct_topic_stats(t, sl_pt_owner(t, 0, topic, NULL), topic, sub, row);
  if (*row == NULL) fail_msg("GetTopicStats: no subscription %s", sub);
  return out;
}

/* GetTopicStats shows each subscription's backlog, unacked and consumers,
 * and they move with deliveries and acks. */
static void test_consume__stats(void **state) {
  sl_pt *t = *state;
  sl_ct_produce(t, "ct/stats", "p", 0, 10, 0);
  sl_ct_sub sub = {.topic = "ct/stats", .subscription = "st", .type = SHARED,
                   .earliest = true};
  sl_ct_consumer c;
  sl_ct_subscribe_owner(t, &sub, &c);
  flow(&c, 4);
  sl_ct_msg got[10];
  recv_n(&c, got, 4);
  const Sluice__V1__SubscriptionStats *row;
  Sluice__V1__TopicStats *ts = topic_stats(t, "ct/stats", "st", &row);
  assert_int_equal(row->type, SHARED);
  assert_int_equal(row->consumers, 1);
  assert_int_equal(row->unacked, 4);
  assert_true(row->backlog >= 1); /* entries (10 messages in batches) */
  assert_true(row->backlog_bytes >= 10 * 100);
  protobuf_c_message_free_unpacked(&ts->base, NULL);

  flow(&c, 10);
  recv_n(&c, got + 4, 6);
  ack_durably(&c, got, 10, 5);
  ts = topic_stats(t, "ct/stats", "st", &row);
  assert_int_equal(row->unacked, 0);
  assert_int_equal(row->backlog, 0);
  assert_int_equal(row->backlog_bytes, 0);
  assert_non_null(row->mark_delete);
  assert_int_equal(row->mark_delete->ledger_id, got[9].id.ledger_id);
  assert_int_equal(row->mark_delete->entry_id, got[9].id.entry_id);
  protobuf_c_message_free_unpacked(&ts->base, NULL);
  sl_ct_close(&c);
}

/* A consumer that grants many permits and reads nothing holds the broker
 * to a bounded number of messages out (window, write queue, transport),
 * not to its permits; once it reads, everything comes, in order. */
static void test_consume__slow_consumer_is_bounded(void **state) {
  sl_pt *t = *state;
  /* 16 MiB in all: more than gRPC's flow-control windows hold. */
  enum { N = 2000, LEN = 8 << 10, BOUND = 1500 };
  sl_ct_sub sub = {.topic = "ct/slow", .subscription = "slow", .type = EXCLUSIVE,
                   .earliest = true};
  sl_ct_consumer c;
  sl_ct_subscribe_owner(t, &sub, &c);
  flow(&c, 100000);
  for (int i = 0; i < N; i += 100) { /* 800 KiB per producer stream */
    char name[16];
    snprintf(name, sizeof(name), "p%d", i);
    sl_ct_produce_len(t, "ct/slow", name, (uint64_t)i, 100, 0, LEN);
  }
  uint64_t most = 0;
  for (int i = 0; i < 20; i++) { /* every stats answer while it reads nothing */
    const Sluice__V1__SubscriptionStats *row;
    Sluice__V1__TopicStats *ts = topic_stats(t, "ct/slow", "slow", &row);
    if (row->unacked > most) most = row->unacked;
    protobuf_c_message_free_unpacked(&ts->base, NULL);
  }
  print_message("slow consumer: at most %llu of %d messages out\n",
                (unsigned long long)most, N);
  assert_true(most > 0);
  assert_true(most < BOUND);
  static sl_ct_msg got[N];
  recv_n(&c, got, N);
  for (int i = 0; i < N; i++) assert_int_equal(got[i].seq, (uint64_t)i);
  sl_ct_close(&c);
}

/* Nothing more arrives within a short while (what the permits allowed has
 * all come). */
static void assert_no_more(sl_ct_consumer *c) {
  sl_ct_msg extra;
  int got = 0;
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_ct_recv(c, &extra, 1, &got, 300, &err), SL_ETIMEDOUT);
}

/* A consumer that asks for batches gets a backlog in fewer responses than
 * messages, at most its maximum in each, in order, each message once, and
 * never more than its permits; a nacked message comes again, counted. */
static void test_consume__batches_per_response(void **state) {
  sl_pt *t = *state;
  enum { M = 200, MAX = 32 };
  sl_ct_produce(t, "ct/batch", "p", 0, M, 0);
  sl_ct_sub sub = {.topic = "ct/batch", .subscription = "b", .type = EXCLUSIVE,
                   .earliest = true, .max_per_response = MAX};
  sl_ct_consumer c;
  sl_ct_subscribe_owner(t, &sub, &c);
  flow(&c, 10); /* an entry holds 10 messages, the backlog 200 */
  static sl_ct_msg got[M];
  recv_n(&c, got, 10);
  assert_no_more(&c);
  assert_true(c.msg_responses < 10);
  flow(&c, M - 10);
  recv_n(&c, got + 10, M - 10);
  assert_no_more(&c);
  for (int i = 0; i < M; i++) {
    assert_int_equal(got[i].seq, (uint64_t)i);
    assert_true(got[i].payload_ok);
    assert_int_equal(got[i].redelivery_count, 0);
  }
  print_message("batches: %d messages in %d responses, at most %d in one\n", M,
                c.msg_responses, c.most_per_response);
  assert_true(c.msg_responses <= M / 4);
  assert_true(c.most_per_response > 1);
  assert_true(c.most_per_response <= MAX);

  Sluice__V1__MessageId ids[3] = {got[3].id, got[4].id, got[150].id};
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_ct_nack(&c, ids, 3, 1, &err), SL_OK);
  flow(&c, 10);
  sl_ct_msg again[3];
  recv_n(&c, again, 3);
  assert_int_equal(again[0].seq, 3);
  assert_int_equal(again[1].seq, 4);
  assert_int_equal(again[2].seq, 150);
  for (int i = 0; i < 3; i++) assert_int_equal(again[i].redelivery_count, 1);
  assert_no_more(&c);
  sl_ct_close(&c);
}

/* Without max_messages_per_response every message is its own response, as
 * stock clients expect. */
static void test_consume__one_message_per_response_by_default(void **state) {
  sl_pt *t = *state;
  enum { M = 50 };
  sl_ct_produce(t, "ct/nobatch", "p", 0, M, 0);
  sl_ct_sub sub = {.topic = "ct/nobatch", .subscription = "n", .type = EXCLUSIVE,
                   .earliest = true};
  sl_ct_consumer c;
  sl_ct_subscribe_owner(t, &sub, &c);
  flow(&c, 1000);
  sl_ct_msg got[M];
  recv_n(&c, got, M);
  for (int i = 0; i < M; i++) assert_int_equal(got[i].seq, (uint64_t)i);
  assert_int_equal(c.msg_responses, M);
  assert_int_equal(c.most_per_response, 1);
  sl_ct_close(&c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_consume__exclusive_in_order_and_acked),
      cmocka_unit_test(test_consume__earliest_and_latest),
      cmocka_unit_test(test_consume__shared_exactly_once_and_leaver),
      cmocka_unit_test(test_consume__key_shared_order_join_leave),
      cmocka_unit_test(test_consume__failover_takeover_in_order),
      cmocka_unit_test(test_consume__nack_and_ack_timeout_redeliver),
      cmocka_unit_test(test_consume__bad_input),
      cmocka_unit_test(test_consume__redirect_to_owner),
      cmocka_unit_test(test_consume__stats),
      cmocka_unit_test(test_consume__slow_consumer_is_bounded),
      cmocka_unit_test(test_consume__batches_per_response),
      cmocka_unit_test(test_consume__one_message_per_response_by_default),
  };
  return cmocka_run_group_tests(tests, setup, sl_pt_teardown);
}
