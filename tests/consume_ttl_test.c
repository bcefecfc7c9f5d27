/*
 * Message TTL on a real cluster: with the namespace's message_ttl_seconds
 * set, unacked messages older than that are acknowledged by the broker in
 * every subscription, whether a consumer is attached (with no permits) or
 * none has come since the partition loaded; younger ones are delivered.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "broker.slrpc.h"
#include "client/sluice.h"
#include "common/clock.h"
#include "common/rpc_client.h"
#include "common/testing.h"
#include "metadata.slrpc.h"
#include "tests/cluster.h"

#define TOPIC "ttl/t"
#define TOPIC2 "ttl2/t"
#define OLD 10

static sl_rpc_channel *channel_to(const char *target) {
  sl_rpc_channel_opts co = {.target = target};
  sl_rpc_channel *ch = NULL;
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_rpc_channel_create(&co, &ch, &err), SL_OK);
  return ch;
}

typedef struct pos {
  uint64_t ledger_id;
  int64_t entry_id;
} pos;

static bool at_or_after(pos a, pos b) {
  return a.ledger_id > b.ledger_id || (a.ledger_id == b.ledger_id && a.entry_id >= b.entry_id);
}

/* The subscription's durable mark-delete, or {0, -2} when it has none. */
static pos mark_delete(sl_rpc_channel *md, const char *topic, const char *sub) {
  Sluice__V1__GetCursorRequest req = SLUICE__V1__GET_CURSOR_REQUEST__INIT;
  req.partition = (char *)topic;
  req.subscription = (char *)sub;
  Sluice__V1__CursorResponse *r = NULL;
  sl_rpc_call_opts o = {.timeout_ms = 5000};
  sl_err err = SL_ERR_INIT;
  pos p = {0, -2};
  if (sl_metadata_service_get_cursor(md, &req, &r, &o, &err) == SL_OK && r->info != NULL &&
      r->info->mark_delete != NULL) {
    p.ledger_id = r->info->mark_delete->ledger_id;
    p.entry_id = r->info->mark_delete->entry_id;
  }
  if (r != NULL) protobuf_c_message_free_unpacked(&r->base, NULL);
  return p;
}

static void await_expired(sl_rpc_channel *md, const char *topic, const char *sub,
                          sl_msg_id last) {
  pos want = {last.ledger_id, last.entry_id};
  int64_t deadline = sl_clock_mono_ms() + sl_test_scaled_ms(30000);
  for (;;) {
    pos p = mark_delete(md, topic, sub);
    if (at_or_after(p, want)) return;
    if (sl_clock_mono_ms() > deadline)
      fail_msg("subscription %s: mark-delete %llu:%lld, not past %llu:%lld", sub,
               (unsigned long long)p.ledger_id, (long long)p.entry_id,
               (unsigned long long)want.ledger_id, (long long)want.entry_id);
    struct timespec ts = {0, 50 * 1000000L};
    nanosleep(&ts, NULL);
  }
}

static sl_msg_id send(sl_producer *p, const char *text) {
  sl_message m = {.payload = text, .len = strlen(text)};
  sl_msg_id id;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_producer_send(p, &m, &id, &err);
  if (st != SL_OK) fail_msg("send: %s", sl_err_msg(&err, st));
  return id;
}

/* A raw Consume stream on `sub` that grants no permits: attached, reading
 * nothing. */
static sl_rpc_stream *attach(sl_rpc_channel *broker, const char *sub) {
  sl_rpc_stream *s = NULL;
  sl_rpc_call_opts o = {.wait_for_ready = true};
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_broker_service_consume_open(broker, &o, &s, &err), SL_OK);
  Sluice__V1__Subscribe su = SLUICE__V1__SUBSCRIBE__INIT;
  su.topic = TOPIC;
  su.subscription = (char *)sub;
  su.initial_position = SLUICE__V1__INITIAL_POSITION__INITIAL_POSITION_EARLIEST;
  Sluice__V1__ConsumeRequest req = SLUICE__V1__CONSUME_REQUEST__INIT;
  req.kind_case = SLUICE__V1__CONSUME_REQUEST__KIND_SUBSCRIBE;
  req.subscribe = &su;
  assert_int_equal(sl_broker_service_consume_send(s, &req, 10000, &err), SL_OK);
  Sluice__V1__ConsumeResponse *r = NULL;
  sl_status st = sl_broker_service_consume_recv(s, &r, (int)sl_test_scaled_ms(20000), &err);
  if (st != SL_OK || r == NULL || r->kind_case != SLUICE__V1__CONSUME_RESPONSE__KIND_SUBSCRIBED)
    fail_msg("subscribe %s: %s", sub, st != SL_OK ? sl_err_msg(&err, st) : "no Subscribed");
  protobuf_c_message_free_unpacked(&r->base, NULL);
  return s;
}

/* Grants permits and returns the payload of the next message. */
static char *next_payload(sl_rpc_stream *s) {
  Sluice__V1__Flow f = SLUICE__V1__FLOW__INIT;
  f.permits = 100;
  Sluice__V1__ConsumeRequest req = SLUICE__V1__CONSUME_REQUEST__INIT;
  req.kind_case = SLUICE__V1__CONSUME_REQUEST__KIND_FLOW;
  req.flow = &f;
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_broker_service_consume_send(s, &req, 10000, &err), SL_OK);
  int64_t deadline = sl_clock_mono_ms() + sl_test_scaled_ms(20000);
  while (sl_clock_mono_ms() < deadline) {
    Sluice__V1__ConsumeResponse *r = NULL;
    sl_status st = sl_broker_service_consume_recv(s, &r, (int)sl_test_scaled_ms(20000), &err);
    if (st != SL_OK || r == NULL) fail_msg("receive: %s", sl_err_msg(&err, st));
    char *text = NULL;
    if (r->kind_case == SLUICE__V1__CONSUME_RESPONSE__KIND_MESSAGE)
      text = strndup((const char *)r->message->payload.data, r->message->payload.len);
    else if (r->kind_case == SLUICE__V1__CONSUME_RESPONSE__KIND_MESSAGE_BATCH &&
             r->message_batch->n_messages > 0)
      text = strndup((const char *)r->message_batch->messages[0]->payload.data,
                     r->message_batch->messages[0]->payload.len);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    if (text != NULL) return text;
  }
  fail_msg("no message");
  return NULL;
}

typedef struct fixture {
  sl_cluster *c;
  sl_client *cl;
} fixture;

static int setup(void **state) {
  fixture *f = calloc(1, sizeof(*f));
  sl_cluster_opts o = SL_CLUSTER_OPTS_INIT;
  o.name = "consume-ttl";
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
  sl_client_destroy(f->cl);
  sl_cluster_destroy(f->c);
  free(f);
  return 0;
}

/* Namespace ns with a TTL long enough that a fresh message is received
 * before it expires, even on a slow (sanitizer) build; and its topic. */
static void ttl_topic(sl_client *cl, const char *ns, const char *topic) {
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_admin_namespace_create(cl, ns, &err), SL_OK);
  long long ttl_s = sl_test_scaled_ms(3000) / 1000;
  char set[64];
  snprintf(set, sizeof(set), "message_ttl_seconds=%lld", ttl_s);
  const char *sets[] = {set};
  char *json = NULL;
  sl_status st = sl_admin_namespace_policies(cl, ns, sets, 1, &json, &err);
  if (st != SL_OK) fail_msg("policies: %s", sl_err_msg(&err, st));
  free(json);
  assert_int_equal(sl_admin_topic_create(cl, topic, 0, &err), SL_OK);
}

static void unload(sl_rpc_channel *broker, const char *topic) {
  Sluice__V1__UnloadRequest ur = SLUICE__V1__UNLOAD_REQUEST__INIT;
  ur.topic = (char *)topic;
  Sluice__V1__UnloadResponse *uresp = NULL;
  sl_rpc_call_opts uo = {.timeout_ms = 10000};
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_broker_service_unload(broker, &ur, &uresp, &uo, &err);
  if (st != SL_OK) fail_msg("unload: %s", sl_err_msg(&err, st));
  protobuf_c_message_free_unpacked(&uresp->base, NULL);
}

static void test_consume_ttl__old_messages_expire_in_every_subscription(void **state) {
  fixture *f = *state;
  sl_cluster *c = f->c;
  sl_client *cl = f->cl;
  sl_err err = SL_ERR_INIT;
  sl_status st;
  ttl_topic(cl, "ttl", TOPIC);

  /* "idle": created, then left alone; the unload makes the partition load
   * again with no consumer on it. */
  sl_consumer_opts so = SL_CONSUMER_OPTS_INIT;
  so.topic = TOPIC;
  so.subscription = "idle";
  so.from_earliest = true;
  sl_consumer *idle = NULL;
  assert_int_equal(sl_consumer_create(cl, &so, &idle, &err), SL_OK);
  sl_consumer_destroy(idle);
  sl_rpc_channel *broker = channel_to(sl_cluster_addr(c, SL_NODE_BROKER, 0));
  unload(broker, TOPIC);

  /* "held": attached all along, granting nothing. */
  sl_rpc_stream *held = attach(broker, "held");
  sl_producer_opts po = SL_PRODUCER_OPTS_INIT;
  po.topic = TOPIC;
  sl_producer *p = NULL;
  assert_int_equal(sl_producer_create(cl, &po, &p, &err), SL_OK);
  sl_msg_id last = {0};
  for (int i = 0; i < OLD; i++) last = send(p, "old");

  sl_rpc_channel *md = channel_to(sl_cluster_metadata_target(c));
  await_expired(md, TOPIC, "held", last);
  await_expired(md, TOPIC, "idle", last);

  /* Younger than the TTL: delivered, and first. */
  send(p, "fresh");
  char *text = next_payload(held);
  assert_string_equal(text, "fresh");
  free(text);
  sl_consumer *back = NULL;
  assert_int_equal(sl_consumer_create(cl, &so, &back, &err), SL_OK);
  sl_received *r = NULL;
  st = sl_consumer_receive(back, (int)sl_test_scaled_ms(20000), &r, &err);
  if (st != SL_OK) fail_msg("receive: %s", sl_err_msg(&err, st));
  assert_int_equal(r->len, 5);
  assert_memory_equal(r->payload, "fresh", 5);
  sl_received_free(r);

  sl_consumer_destroy(back);
  sl_producer_destroy(p);
  sl_rpc_stream_destroy(held);
  sl_rpc_channel_destroy(md);
  sl_rpc_channel_destroy(broker);
}

/* Every message in a closed ledger and none in the current one (as after
 * a reload of a quiet partition): the expiry position is the closed
 * ledger's end, which must still count as a place in the chain. */
static void test_consume_ttl__quiet_partition_after_reload(void **state) {
  fixture *f = *state;
  sl_err err = SL_ERR_INIT;
  ttl_topic(f->cl, "ttl2", TOPIC2);
  sl_consumer_opts so = SL_CONSUMER_OPTS_INIT;
  so.topic = TOPIC2;
  so.subscription = "idle";
  so.from_earliest = true;
  sl_consumer *idle = NULL;
  assert_int_equal(sl_consumer_create(f->cl, &so, &idle, &err), SL_OK);
  sl_consumer_destroy(idle);
  sl_producer_opts po = SL_PRODUCER_OPTS_INIT;
  po.topic = TOPIC2;
  sl_producer *p = NULL;
  assert_int_equal(sl_producer_create(f->cl, &po, &p, &err), SL_OK);
  sl_msg_id last = {0};
  for (int i = 0; i < OLD; i++) last = send(p, "old");
  sl_producer_destroy(p);
  sl_rpc_channel *broker = channel_to(sl_cluster_addr(f->c, SL_NODE_BROKER, 0));
  unload(broker, TOPIC2);
  /* A producer loads the partition again, on a new (empty) ledger. */
  assert_int_equal(sl_producer_create(f->cl, &po, &p, &err), SL_OK);
  sl_rpc_channel *md = channel_to(sl_cluster_metadata_target(f->c));
  await_expired(md, TOPIC2, "idle", last);
  sl_producer_destroy(p);
  sl_rpc_channel_destroy(md);
  sl_rpc_channel_destroy(broker);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_consume_ttl__old_messages_expire_in_every_subscription),
      cmocka_unit_test(test_consume_ttl__quiet_partition_after_reload),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
