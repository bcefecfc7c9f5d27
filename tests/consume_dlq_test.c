/*
 * Dead letters through the Consume stream on a real cluster (etcd, 1
 * metadata, 3 bookies, 2 brokers; the namespace deduplicates): a message
 * nacked past the subscription's max redeliveries lands in the dead-letter
 * topic with its payload, key and properties plus the original id and
 * topic, and is acked on the original (a new consumer does not get it).
 * Its redelivery count rises with each nack. A configured dead-letter
 * topic is used instead of the default. A subscription's consumers must
 * agree on its redelivery options. A kill -9 of the owner while it
 * dead-letters leaves each message in the dead-letter topic exactly once.
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
#include "broker/dead_letter.h"
#include "common/clock.h"
#include "tests/consume_testlib.h"

#define WAIT_MS 30000
#define CRASH_N 200          /* messages dead-lettered */
#define CRASH_TOPIC "cd/crash"
#define CRASH_DLQ "cd/crash-s-DLQ"

static int setup(void **state) {
  sl_pt *t = calloc(1, sizeof(*t));
  sl_pt_start(t, "consume_dlq", 1, 3, 2);
  sl_pt_namespace(t, "cd", true, 0);
  sl_pt_topic(t, "cd/orders", 0);
  sl_pt_topic(t, "cd/custom", 0);
  sl_pt_topic(t, "cd/options", 0);
  sl_pt_topic(t, CRASH_TOPIC, 0);
  *state = t;
  return 0;
}

/* Produces one message with key "k-<seq>" and property "p" = "v-<seq>" on
 * a raw Produce stream (the test helper sends no properties). */
static void produce_with_props(sl_pt *t, const char *topic, uint64_t seq) {
  int owner = sl_pt_owner(t, 0, topic, NULL);
  sl_rpc_stream *s;
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_broker_service_produce_open(t->broker[owner], NULL, &s, &err), SL_OK);
  char name[32], key[32], value[32], payload[32];
  snprintf(name, sizeof(name), "dlq-prod-%llu", (unsigned long long)seq);
  snprintf(key, sizeof(key), "k-%llu", (unsigned long long)seq);
  snprintf(value, sizeof(value), "v-%llu", (unsigned long long)seq);
  snprintf(payload, sizeof(payload), "payload-%llu", (unsigned long long)seq);
  Sluice__V1__ProducerOpen op = SLUICE__V1__PRODUCER_OPEN__INIT;
  op.topic = (char *)topic;
  op.producer_name = name;
  Sluice__V1__ProduceRequest req = SLUICE__V1__PRODUCE_REQUEST__INIT;
  req.kind_case = SLUICE__V1__PRODUCE_REQUEST__KIND_OPEN;
  req.open = &op;
  assert_int_equal(sl_broker_service_produce_send(s, &req, WAIT_MS, &err), SL_OK);
  Sluice__V1__KeyValue kv = SLUICE__V1__KEY_VALUE__INIT;
  kv.key = "p";
  kv.value = value;
  Sluice__V1__KeyValue *kvp[1] = {&kv};
  Sluice__V1__SendRequest send = SLUICE__V1__SEND_REQUEST__INIT;
  send.sequence_id = seq;
  send.key = key;
  send.n_properties = 1;
  send.properties = kvp;
  send.payload.data = (uint8_t *)payload;
  send.payload.len = strlen(payload);
  req.kind_case = SLUICE__V1__PRODUCE_REQUEST__KIND_SEND;
  req.send = &send;
  assert_int_equal(sl_broker_service_produce_send(s, &req, WAIT_MS, &err), SL_OK);
  for (int answers = 0; answers < 2;) {
    Sluice__V1__ProduceResponse *r = NULL;
    assert_int_equal(sl_broker_service_produce_recv(s, &r, WAIT_MS, &err), SL_OK);
    assert_non_null(r);
    if (r->kind_case == SLUICE__V1__PRODUCE_RESPONSE__KIND_RECEIPT)
      assert_int_equal(r->receipt->status, 0);
    answers++;
    protobuf_c_message_free_unpacked(&r->base, NULL);
  }
  sl_rpc_stream_destroy(s);
}

/* The next message on c (events and receipts skipped); the caller frees. */
static Sluice__V1__ConsumeResponse *next_message(sl_ct_consumer *c, int timeout_ms) {
  int64_t end = sl_clock_mono_ms() + timeout_ms;
  for (;;) {
    Sluice__V1__ConsumeResponse *r = NULL;
    sl_err err = SL_ERR_INIT;
    int left = (int)(end - sl_clock_mono_ms());
    sl_status st = left > 0 ? sl_ct_next(c, left, &r, &err) : SL_ETIMEDOUT;
    if (st == SL_ETIMEDOUT) return NULL;
    if (st != SL_OK) fail_msg("consume: %s", sl_err_msg(&err, st));
    if (r->kind_case == SLUICE__V1__CONSUME_RESPONSE__KIND_MESSAGE) return r;
    protobuf_c_message_free_unpacked(&r->base, NULL);
  }
}

static const char *prop(const Sluice__V1__Message *m, const char *key) {
  for (size_t i = 0; i < m->n_properties; i++)
    if (strcmp(m->properties[i]->key, key) == 0) return m->properties[i]->value;
  return NULL;
}

/* Nacks the message max+1 times (redelivery count 0..max), then expects it
 * in the dead-letter topic and gone from the original. */
static void nack_past_max(sl_pt *t, const char *topic, const char *dlq_topic,
                          const char *configured) {
  const uint32_t max = 2;
  produce_with_props(t, topic, 7);
  sl_ct_sub sub = {.topic = topic, .subscription = "billing", .type = 0, .earliest = true,
                   .nack_delay_ms = 10, .max_redeliveries = max,
                   .dead_letter_topic = configured};
  sl_ct_consumer c;
  sl_ct_subscribe_owner(t, &sub, &c);
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_ct_flow(&c, 100, &err), SL_OK);
  Sluice__V1__MessageId orig = SLUICE__V1__MESSAGE_ID__INIT;
  for (uint32_t i = 0; i <= max; i++) {
    Sluice__V1__ConsumeResponse *r = next_message(&c, WAIT_MS);
    if (r == NULL) fail_msg("delivery %u did not come", i);
    assert_int_equal(r->message->redelivery_count, i);
    assert_int_equal(r->message->sequence_id, 7);
    orig.ledger_id = r->message->id->ledger_id;
    orig.entry_id = r->message->id->entry_id;
    orig.batch_index = r->message->id->batch_index;
    orig.batch_size = r->message->id->batch_size;
    protobuf_c_message_free_unpacked(&r->base, NULL);
    assert_int_equal(sl_ct_nack(&c, &orig, 1, 0, &err), SL_OK);
  }
  /* Past the max it is not delivered again on the original... */
  Sluice__V1__ConsumeResponse *extra = next_message(&c, 1500);
  if (extra != NULL)
    fail_msg("delivered again after %u redeliveries (count %u)", max,
             extra->message->redelivery_count);
  sl_ct_close(&c);

  /* ...but is in the dead-letter topic, with its key and properties. */
  sl_ct_sub dsub = {.topic = dlq_topic, .subscription = "inspect", .type = 0,
                    .earliest = true};
  sl_ct_consumer d;
  int64_t deadline = sl_clock_mono_ms() + WAIT_MS;
  Sluice__V1__ConsumeResponse *r = NULL;
  while (r == NULL && sl_clock_mono_ms() < deadline) {
    sl_ct_subscribe_owner(t, &dsub, &d);
    assert_int_equal(sl_ct_flow(&d, 10, &err), SL_OK);
    r = next_message(&d, 2000);
    if (r == NULL) sl_ct_close(&d);
  }
  if (r == NULL) fail_msg("nothing in %s", dlq_topic);
  const Sluice__V1__Message *m = r->message;
  assert_int_equal(m->payload.len, strlen("payload-7"));
  assert_memory_equal(m->payload.data, "payload-7", m->payload.len);
  assert_string_equal(m->key, "k-7");
  assert_string_equal(prop(m, "p"), "v-7");
  char want_id[64];
  snprintf(want_id, sizeof(want_id), "%llu:%lld:%d", (unsigned long long)orig.ledger_id,
           (long long)orig.entry_id, orig.batch_index);
  assert_non_null(prop(m, SL_DLQ_PROP_ORIGINAL_ID));
  assert_string_equal(prop(m, SL_DLQ_PROP_ORIGINAL_ID), want_id);
  assert_string_equal(prop(m, SL_DLQ_PROP_ORIGINAL_TOPIC), topic);
  protobuf_c_message_free_unpacked(&r->base, NULL);
  /* Exactly one copy. */
  assert_null(next_message(&d, 1000));
  sl_ct_close(&d);

  /* Acked on the original: a new consumer of the subscription gets
   * nothing (the ack is durable once the dead letter is). */
  sl_ct_subscribe_owner(t, &sub, &c);
  assert_int_equal(sl_ct_flow(&c, 100, &err), SL_OK);
  assert_null(next_message(&c, 1500));
  sl_ct_close(&c);
}

static void test_consume_dlq__default_topic(void **state) {
  nack_past_max(*state, "cd/orders", "cd/orders-billing-DLQ", NULL);
}

static void test_consume_dlq__configured_topic(void **state) {
  nack_past_max(*state, "cd/custom", "cd/custom-dead", "cd/custom-dead");
}

/* ---- kill -9 of the owner while dead-lettering ---- */

/* The subscription on the partition's owner now, retried while lookups
 * still name the dead owner or the partition is moving. */
static void subscribe_live(sl_pt *t, const sl_ct_sub *sub, sl_ct_consumer *c) {
  int64_t end = sl_clock_mono_ms() + WAIT_MS;
  sl_err err = SL_ERR_INIT;
  for (;;) {
    int owner = sl_pt_try_owner(t, sl_ct_live_broker(t), sub->topic, NULL);
    if (owner >= 0 && sl_cluster_running(t->c, SL_NODE_BROKER, owner)) {
      if (sl_ct_subscribe(t, owner, sub, c, NULL, &err) == SL_OK &&
          sl_ct_flow(c, 10 * CRASH_N, &err) == SL_OK)
        return;
      sl_ct_close(c);
    }
    if (sl_clock_mono_ms() > end) fail_msg("subscribe %s: %s", sub->topic, err.msg);
  }
}

/* The backlog (entries) and unacked messages of subscription "s" on the
 * original's owner now; false while that is not known. */
static bool original_left(sl_pt *t, int64_t *backlog, int64_t *unacked) {
  int owner = sl_pt_try_owner(t, sl_ct_live_broker(t), CRASH_TOPIC, NULL);
  if (owner < 0 || !sl_cluster_running(t->c, SL_NODE_BROKER, owner)) return false;
  Sluice__V1__TopicStatsRequest req = SLUICE__V1__TOPIC_STATS_REQUEST__INIT;
  req.topic = CRASH_TOPIC;
  Sluice__V1__TopicStats *out = NULL;
  sl_rpc_call_opts o = {.timeout_ms = 5000};
  if (sl_broker_service_get_topic_stats(t->broker[owner], &req, &out, &o, NULL) != SL_OK)
    return false;
  bool found = false;
  for (size_t i = 0; i < out->n_subscriptions; i++) {
    if (strcmp(out->subscriptions[i]->name, "s") != 0) continue;
    *backlog = (int64_t)out->subscriptions[i]->backlog;
    *unacked = (int64_t)out->subscriptions[i]->unacked;
    found = true;
  }
  protobuf_c_message_free_unpacked(&out->base, NULL);
  return found;
}

static int cmp_str(const void *a, const void *b) { return strcmp(a, b); }

/* Nacks every message that comes for up to ms (the stream may end: the
 * owner died); returns how many came, -1 if the stream ended. */
static int nack_for(sl_ct_consumer *c, int ms) {
  int64_t end = sl_clock_mono_ms() + ms;
  int n = 0;
  for (;;) {
    int left = (int)(end - sl_clock_mono_ms());
    if (left <= 0) return n;
    Sluice__V1__ConsumeResponse *r = NULL;
    sl_err err = SL_ERR_INIT;
    sl_status st = sl_ct_next(c, left, &r, &err);
    if (st == SL_ETIMEDOUT) return n;
    if (st != SL_OK) return -1;
    if (r->kind_case == SLUICE__V1__CONSUME_RESPONSE__KIND_MESSAGE) {
      n++;
      if (sl_ct_nack(c, r->message->id, 1, 0, &err) != SL_OK) n = -1;
    } else if (r->kind_case != SLUICE__V1__CONSUME_RESPONSE__KIND_ACK_RECEIPT) {
      n = -1; /* redirect or closed: the stream is over */
    }
    protobuf_c_message_free_unpacked(&r->base, NULL);
    if (n < 0) return -1;
  }
}

/* Every message nacked past max_redeliveries (1) while the owner broker is
 * killed -9 in the middle of dead-lettering them: after the other broker
 * takes over (redelivery counts start again there, so they are nacked past
 * the max again), each message is in the dead-letter topic exactly once
 * (retries are deduplicated by the stable producer name and sequence) and
 * acked on the original. */
static void test_consume_dlq__owner_killed_while_dead_lettering(void **state) {
  sl_pt *t = *state;
  sl_ct_produce(t, CRASH_TOPIC, "p", 0, CRASH_N, 0);
  sl_ct_sub sub = {.topic = CRASH_TOPIC, .subscription = "s", .type = 2 /* shared */,
                   .earliest = true, .nack_delay_ms = 10, .max_redeliveries = 1};
  sl_ct_consumer c;
  subscribe_live(t, &sub, &c);
  int owner = sl_pt_owner(t, 0, CRASH_TOPIC, NULL);
  /* Deliveries 0 and 1 of each, nacked: then they go to dead letters. */
  int nacked = 0;
  int64_t end = sl_clock_mono_ms() + WAIT_MS;
  while (nacked < 2 * CRASH_N && sl_clock_mono_ms() < end) {
    int n = nack_for(&c, 200);
    if (n < 0) fail_msg("the stream ended before the kill");
    nacked += n;
  }
  assert_int_equal(nacked, 2 * CRASH_N);
  /* Kill the owner once half are in the dead-letter topic (a watcher reads
   * it as they come), while the rest are on their way and the acks of the
   * last ones on the original are not durable yet. */
  sl_ct_sub wsub = {.topic = CRASH_DLQ, .subscription = "watch", .type = 0, .earliest = true};
  sl_ct_consumer w;
  subscribe_live(t, &wsub, &w);
  int seen = 0;
  while (seen < CRASH_N / 2) {
    Sluice__V1__ConsumeResponse *r = next_message(&w, WAIT_MS);
    if (r == NULL) fail_msg("%d dead letters came", seen);
    seen++;
    protobuf_c_message_free_unpacked(&r->base, NULL);
  }
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_cluster_kill9(t->c, SL_NODE_BROKER, owner, &err), SL_OK);
  sl_ct_close(&w);
  sl_ct_close(&c);

  /* The other broker: nack what comes again until nothing is left. */
  end = sl_clock_mono_ms() + 3 * WAIT_MS;
  subscribe_live(t, &sub, &c);
  int again = 0;
  for (;;) {
    int n = nack_for(&c, 500);
    if (n < 0) {
      sl_ct_close(&c);
      subscribe_live(t, &sub, &c);
    }
    again += n > 0 ? n : 0;
    int64_t b, u;
    if (original_left(t, &b, &u) && b == 0 && u == 0) break;
    if (sl_clock_mono_ms() > end) fail_msg("messages left on the original");
  }
  sl_ct_close(&c);
  print_message("dead letters seen before the kill: %d; deliveries nacked again after: %d\n",
                seen, again);

  /* Each message exactly once in the dead-letter topic. */
  static char ids[2 * CRASH_N][48];
  sl_ct_sub dsub = {.topic = CRASH_DLQ, .subscription = "inspect", .type = 0,
                    .earliest = true};
  sl_ct_consumer d;
  subscribe_live(t, &dsub, &d);
  int total = 0;
  Sluice__V1__ConsumeResponse *r;
  while (total < 2 * CRASH_N && (r = next_message(&d, 3000)) != NULL) {
    const char *orig = prop(r->message, SL_DLQ_PROP_ORIGINAL_ID);
    assert_non_null(orig);
    assert_string_equal(prop(r->message, SL_DLQ_PROP_ORIGINAL_TOPIC), CRASH_TOPIC);
    snprintf(ids[total++], sizeof(ids[0]), "%s", orig);
    protobuf_c_message_free_unpacked(&r->base, NULL);
  }
  sl_ct_close(&d);
  qsort(ids, (size_t)total, sizeof(ids[0]), cmp_str);
  for (int i = 1; i < total; i++)
    if (strcmp(ids[i], ids[i - 1]) == 0) fail_msg("%s dead-lettered twice", ids[i]);
  if (total != CRASH_N) fail_msg("%d dead letters for %d messages", total, CRASH_N);
}

/* Subscribes c to the owner; returns the status and the refusal's reason. */
static sl_status try_subscribe(sl_pt *t, const sl_ct_sub *sub, sl_ct_consumer *c, sl_err *err) {
  int owner = sl_pt_owner(t, 0, sub->topic, NULL);
  sl_status st = sl_ct_subscribe(t, owner, sub, c, NULL, err);
  if (st != SL_OK) sl_ct_close(c);
  return st;
}

/* The redelivery options are the subscription's: a consumer asking for
 * other values is refused (FAILED_PRECONDITION naming the option), one
 * asking for the same values or for none joins. */
static void test_consume_dlq__options_must_agree(void **state) {
  sl_pt *t = *state;
  sl_ct_sub first = {.topic = "cd/options", .subscription = "s", .type = 2 /* shared */,
                     .nack_delay_ms = 10, .max_redeliveries = 2,
                     .dead_letter_topic = "cd/options-dead"};
  sl_ct_consumer c1, c2;
  sl_ct_subscribe_owner(t, &first, &c1);
  static const struct {
    uint32_t max, nack;
    const char *dlq;
    const char *option;      /* named in the refusal; NULL = joins */
  } cases[] = {
      {3, 0, NULL, "max_redeliveries"},
      {0, 20, NULL, "nack_delay_ms"},
      {0, 0, "cd/other-dead", "dead_letter_topic"},
      {2, 10, "cd/options-dead", NULL},
      {0, 0, NULL, NULL},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    sl_ct_sub sub = first;
    sub.max_redeliveries = cases[i].max;
    sub.nack_delay_ms = cases[i].nack;
    sub.dead_letter_topic = cases[i].dlq;
    sl_err err = SL_ERR_INIT;
    sl_status st = try_subscribe(t, &sub, &c2, &err);
    if (cases[i].option == NULL) {
      if (st != SL_OK) fail_msg("case %zu refused: %s", i, sl_err_msg(&err, st));
      sl_ct_close(&c2);
      continue;
    }
    if (st != SL_EPRECOND) fail_msg("case %zu: %s, want FAILED_PRECONDITION", i,
                                    sl_err_msg(&err, st));
    if (strstr(err.msg, cases[i].option) == NULL || strstr(err.msg, "subscription s") == NULL)
      fail_msg("case %zu: the refusal does not name %s: %s", i, cases[i].option, err.msg);
  }
  sl_ct_close(&c1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_consume_dlq__default_topic),
      cmocka_unit_test(test_consume_dlq__configured_topic),
      cmocka_unit_test(test_consume_dlq__options_must_agree),
      cmocka_unit_test(test_consume_dlq__owner_killed_while_dead_lettering),
  };
  return cmocka_run_group_tests(tests, setup, sl_pt_teardown);
}
