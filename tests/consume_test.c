/*
 * Consume on a real cluster (etcd, a metadata service, 3 bookies, 2
 * brokers): subscription types, permits, acks with receipts, redelivery
 * and bad input, through the BrokerService.Consume stream. Messages come
 * from a Produce stream; payloads are checked byte for byte.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "common/clock.h"
#include "tests/consume_testlib.h"

#define WAIT_MS 30000

/* The exact status, or its gRPC fallback when the trailer is missing. */
static void assert_status(sl_status got, sl_status want) {
  if (got != want) assert_int_equal(got, sl_status_from_grpc(sl_status_to_grpc(want)));
}

static int setup(void **state) {
  sl_pt *t = calloc(1, sizeof(*t));
  sl_pt_start(t, "consume", 1, 3, 2);
  sl_pt_namespace(t, "ct", false, 0);
  static const char *const topics[] = {"ct/ex"};
  for (size_t i = 0; i < sizeof(topics) / sizeof(topics[0]); i++)
    sl_pt_topic(t, topics[i], 0);
  *state = t;
  return 0;
}

static int teardown(void **state) {
  sl_pt *t = *state;
  sl_pt_stop(t);
  free(t);
  return 0;
}

/* Produces count messages with sequence ids first.. on topic, in batches of
 * at most 10, and waits for their receipts. */
static void produce(sl_pt *t, const char *topic, uint64_t first, int count) {
  int owner = sl_pt_owner(t, 0, topic, NULL);
  sl_pt_producer p;
  sl_err err = SL_ERR_INIT;
  char name[64];
  snprintf(name, sizeof(name), "prod-%llu", (unsigned long long)first);
  assert_int_equal(sl_pt_open(t, owner, topic, name, false, &p, NULL, &err), SL_OK);
  for (int i = 0; i < count; i += 10) {
    int n = count - i < 10 ? count - i : 10;
    assert_int_equal(sl_pt_send(&p, first + (uint64_t)i, n, 100, &err), SL_OK);
  }
  sl_pt_ack *acks = calloc((size_t)count, sizeof(*acks));
  int got;
  assert_int_equal(sl_pt_recv_acks(&p, acks, count, &got, WAIT_MS, &err), SL_OK);
  for (int i = 0; i < count; i++) assert_int_equal(acks[i].status, 0);
  free(acks);
  sl_pt_close(&p);
}

/* Exclusive: everything in publish order with its bytes, acks durable
 * (receipt), and a new consumer of the subscription gets only what was
 * published after (nothing acked comes again). */
static void test_consume__exclusive_in_order_and_acked(void **state) {
  sl_pt *t = *state;
  enum { N = 50 };
  produce(t, "ct/ex", 0, N);
  sl_ct_sub sub = {.topic = "ct/ex", .subscription = "s1", .type = 0, .earliest = true,
                   .name = "c1"};
  sl_ct_consumer c;
  sl_ct_subscribe_owner(t, &sub, &c);
  assert_string_equal(c.name, "c1");
  assert_true(c.active);
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_ct_flow(&c, 1000, &err), SL_OK);
  sl_ct_msg got[N];
  int n;
  sl_status st = sl_ct_recv(&c, got, N, &n, WAIT_MS, &err);
  if (st != SL_OK) fail_msg("received %d of %d: %s", n, N, sl_err_msg(&err, st));
  Sluice__V1__MessageId ids[N];
  for (int i = 0; i < N; i++) {
    assert_int_equal(got[i].seq, (uint64_t)i);
    assert_true(got[i].payload_ok);
    assert_int_equal(got[i].redelivery_count, 0);
    assert_string_equal(got[i].producer, "prod-0");
    ids[i] = got[i].id;
  }
  assert_int_equal(sl_ct_ack(&c, ids, N, false, 7, &err), SL_OK);
  assert_int_equal(sl_ct_wait_receipt(&c, 7, WAIT_MS, &err), SL_OK);
  sl_ct_close(&c);

  sl_ct_subscribe_owner(t, &sub, &c);
  assert_int_equal(sl_ct_flow(&c, 1000, &err), SL_OK);
  produce(t, "ct/ex", 100, 1);
  assert_int_equal(sl_ct_recv(&c, got, 1, &n, WAIT_MS, &err), SL_OK);
  assert_int_equal(got[0].seq, 100); /* not an acked one again */
  sl_ct_close(&c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_consume__exclusive_in_order_and_acked),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
