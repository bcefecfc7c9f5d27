/*
 * An exclusive consumer across kill -9 of the partition's owner broker, on
 * a real cluster (etcd, a metadata service, 3 bookies, 2 brokers with a
 * 2 s session): after the other broker takes the partition over (ledger
 * recovery, cursor recovery), the consumer resubscribes through lookup and
 * redirect and gets every message in publish order with no gap; the only
 * duplicates are messages whose acks were not yet durable.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>
#include <curl/curl.h>

#include "common/clock.h"
#include "tests/consume_testlib.h"
#include "tests/metadata_util.h"
#include "tests/metrics_scrape.h"

#define WAIT_MS 60000
#define TOPIC "cf/t"

/* The auditor's orphan check runs every second (one pass in ten): the
 * killed owner's ledgers belong to an older epoch once the other broker
 * took over, and it must take none of those the list names. */
#define PASSES "sluice_metadata_audit_passes_total{outcome=\"ok\"}"
static const char *const k_audit_often[] = {"--audit_interval_ms", "100", "--metrics_listen",
                                            "127.0.0.1:0", NULL};

static int setup(void **state) {
  sl_pt *t = calloc(1, sizeof(*t));
  sl_pt_start_args(t, "consume_failover", 1, 3, 2, 2, k_audit_often, NULL);
  sl_pt_namespace(t, "cf", false, 0);
  sl_pt_topic(t, TOPIC, 0);
  *state = t;
  return 0;
}

/* Subscribes through broker `via`, following one redirect; retries while
 * the partition has no owner yet (failover in progress). */
static void subscribe_anywhere(sl_pt *t, int via, const sl_ct_sub *sub, sl_ct_consumer *c) {
  int64_t end = sl_clock_mono_ms() + WAIT_MS;
  sl_err err = SL_ERR_INIT;
  sl_status st = SL_OK;
  while (sl_clock_mono_ms() < end) {
    Sluice__V1__Redirect *rd = NULL;
    st = sl_ct_subscribe(t, via, sub, c, &rd, &err);
    if (st == SL_OK) return;
    sl_ct_close(c);
    if (st == SL_EREDIRECT && rd != NULL && rd->epoch > 0) {
      /* A redirect to the killed owner is stale until its session lapses. */
      for (int b = 0; b < 2; b++)
        if (strcmp(rd->broker_address, sl_cluster_addr(t->c, SL_NODE_BROKER, b)) == 0 &&
            sl_cluster_running(t->c, SL_NODE_BROKER, b))
          via = b;
    }
    if (rd != NULL) protobuf_c_message_free_unpacked(&rd->base, NULL);
    if (st != SL_EREDIRECT && st != SL_EUNAVAIL && st != SL_ETIMEDOUT)
      fail_msg("subscribe: %s", sl_err_msg(&err, st));
    /* The old owner's session has not lapsed yet: ask again shortly. */
    struct timespec ts = {0, 100 * 1000000};
    nanosleep(&ts, NULL);
  }
  fail_msg("no subscription within %d ms: %s", WAIT_MS, sl_err_msg(&err, st));
}

static void test_consume_failover__kill9_owner_no_gap(void **state) {
  sl_pt *t = *state;
  enum { N = 200, DURABLE = 50, ACKED = 100, MORE = 50 };
  sl_ct_produce(t, TOPIC, "p1", 0, N, 0);
  int owner = sl_pt_owner(t, 0, TOPIC, NULL);
  sl_ct_sub sub = {.topic = TOPIC, .subscription = "fx", .type = 0, .earliest = true,
                   .name = "c"};
  sl_ct_consumer c;
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_ct_subscribe(t, owner, &sub, &c, NULL, &err), SL_OK);
  assert_int_equal(sl_ct_flow(&c, ACKED, &err), SL_OK);
  static sl_ct_msg got[N + MORE];
  int n = 0;
  sl_status st = sl_ct_recv(&c, got, ACKED, &n, WAIT_MS, &err);
  if (st != SL_OK) fail_msg("before: %d of %d: %s", n, ACKED, sl_err_msg(&err, st));
  Sluice__V1__MessageId ids[ACKED];
  for (int i = 0; i < ACKED; i++) {
    assert_int_equal(got[i].seq, (uint64_t)i);
    ids[i] = got[i].id;
  }
  /* The first DURABLE acks are durable (receipt); the rest may not be. */
  assert_int_equal(sl_ct_ack(&c, ids, DURABLE, false, 1, &err), SL_OK);
  assert_int_equal(sl_ct_wait_receipt(&c, 1, WAIT_MS, &err), SL_OK);
  assert_int_equal(sl_ct_ack(&c, ids + DURABLE, ACKED - DURABLE, false, 0, &err), SL_OK);

  assert_int_equal(sl_cluster_kill9(t->c, SL_NODE_BROKER, owner, &err), SL_OK);
  sl_ct_close(&c);
  int other = 1 - owner;
  subscribe_anywhere(t, other, &sub, &c);
  assert_int_equal(sl_ct_flow(&c, N + MORE, &err), SL_OK);

  /* Everything after the durable acks, in order, no gap; then new ones. */
  st = sl_ct_recv(&c, got, 1, &n, WAIT_MS, &err);
  if (st != SL_OK) fail_msg("after: nothing: %s", sl_err_msg(&err, st));
  uint64_t first = got[0].seq;
  assert_true(first >= DURABLE && first <= ACKED);
  int rest = (int)(N - first) - 1;
  st = sl_ct_recv(&c, got + 1, rest, &n, WAIT_MS, &err);
  if (st != SL_OK) fail_msg("after: %d of %d: %s", n, rest, sl_err_msg(&err, st));
  for (int i = 0; i <= rest; i++) {
    assert_int_equal(got[i].seq, first + (uint64_t)i);
    assert_true(got[i].payload_ok);
  }
  sl_ct_produce(t, TOPIC, "p2", N, MORE, 0);
  st = sl_ct_recv(&c, got, MORE, &n, WAIT_MS, &err);
  if (st != SL_OK) fail_msg("new: %d of %d: %s", n, MORE, sl_err_msg(&err, st));
  for (int i = 0; i < MORE; i++) assert_int_equal(got[i].seq, (uint64_t)(N + i));
  print_message("failover: resumed at seq %llu (durable acks up to %d, acked up to %d)\n",
                (unsigned long long)first, DURABLE - 1, ACKED - 1);
  sl_ct_close(&c);
  sl_ms_await_growth(t->c, SL_NODE_METADATA, 0, PASSES, 21, WAIT_MS);
  assert_true(mdt_expect_named_ledgers(t->meta, TOPIC, NULL) >= 2);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_consume_failover__kill9_owner_no_gap),
  };
  curl_global_init(CURL_GLOBAL_DEFAULT);
  int failed = cmocka_run_group_tests(tests, setup, sl_pt_teardown);
  curl_global_cleanup();
  return failed;
}
