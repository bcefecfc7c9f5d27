/*
 * Produce on a real cluster (etcd, 2 metadata replicas, 4 bookies, 2
 * brokers): receipts only for stored messages, in order, ids increasing,
 * everything read back from the log; dedup of resends with the original
 * ids; bad input each with its own status while the broker keeps serving.
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
#include "common/testdata/raw_call.h"
#include "tests/produce_testlib.h"

#define N_BATCHES 10
#define BATCH 20
#define TOTAL (N_BATCHES * BATCH + 5)

/* The exact status, or its gRPC fallback until the sl-status trailer is
 * merged in. */
static void assert_status(sl_status got, sl_status want) {
  if (got != want) assert_int_equal(got, sl_status_from_grpc(sl_status_to_grpc(want)));
}

static int setup(void **state) {
  sl_pt *t = calloc(1, sizeof(*t));
  sl_pt_start(t, "produce", 2, 4, 2);
  sl_pt_namespace(t, "pt", true, 0);
  sl_pt_namespace(t, "ptsmall", false, 1024);
  sl_pt_topic(t, "pt/basic", 0);
  sl_pt_topic(t, "pt/parts", 2);
  sl_pt_topic(t, "ptsmall/t", 0);
  *state = t;
  return 0;
}

static sl_pt_ack first_run[TOTAL];

/* Batches and single sends: one receipt per message (expanded), all OK, in
 * order, ids strictly increasing; the log holds exactly these messages in
 * this order with their bytes, at the ids the receipts gave. */
static void test_produce__receipts_match_the_log(void **state) {
  sl_pt *t = *state;
  int owner = sl_pt_owner(t, 0, "pt/basic", NULL);
  sl_pt_producer p;
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_pt_open(t, owner, "pt/basic", "prod-a", false, &p, NULL, &err), SL_OK);
  assert_string_equal(p.name, "prod-a");
  assert_int_equal(p.last_sequence_id, -1);
  for (int b = 0; b < N_BATCHES; b++)
    assert_int_equal(sl_pt_send(&p, (uint64_t)b * BATCH, BATCH, 1024, &err), SL_OK);
  for (int i = 0; i < 5; i++)
    assert_int_equal(sl_pt_send(&p, N_BATCHES * BATCH + (uint64_t)i, 1, 100, &err), SL_OK);
  int got;
  assert_int_equal(sl_pt_recv_acks(&p, first_run, TOTAL, &got, 30000, &err), SL_OK);
  for (int i = 0; i < TOTAL; i++) {
    assert_int_equal(first_run[i].status, 0);
    assert_false(first_run[i].duplicate);
    assert_true(first_run[i].has_id);
    if (i > 0) assert_true(sl_pt_ack_cmp(&first_run[i - 1], &first_run[i]) < 0);
  }
  sl_pt_close(&p);

  /* Unload closes the ledger: a reader then sees every acked entry. */
  sl_pt_unload(t, 0, "pt/basic");
  sl_pt_msg *log;
  size_t n = sl_pt_read_log(t, "pt/basic", &log);
  assert_int_equal(n, TOTAL);
  for (size_t i = 0; i < n; i++) {
    assert_string_equal(log[i].producer, "prod-a");
    assert_int_equal(log[i].seq, i);
    assert_true(log[i].payload_ok);
    assert_int_equal(log[i].pos.ledger_id, first_run[i].pos.ledger_id);
    assert_int_equal(log[i].pos.entry_id, first_run[i].pos.entry_id);
    assert_int_equal(log[i].index, first_run[i].batch_index);
  }
  free(log);
}

/* After the partition moved (unload, reopened from the log and the dedup
 * snapshot), a resend (new stream, resume) of stored sequence ids is
 * answered with duplicate=true and the original ids and is not stored
 * again; new ids after it are stored. */
static void test_produce__dedup_answers_resends_with_original_ids(void **state) {
  sl_pt *t = *state;
  int owner = sl_pt_owner(t, 0, "pt/basic", NULL);
  sl_pt_producer p;
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_pt_open(t, owner, "pt/basic", "prod-a", true, &p, NULL, &err), SL_OK);
  assert_int_equal(p.last_sequence_id, TOTAL - 1);
  assert_int_equal(sl_pt_send(&p, 0, 50, 1024, &err), SL_OK);
  assert_int_equal(sl_pt_send(&p, TOTAL, 3, 64, &err), SL_OK);
  static sl_pt_ack acks[53];
  int got;
  assert_int_equal(sl_pt_recv_acks(&p, acks, 53, &got, 30000, &err), SL_OK);
  for (int i = 0; i < 50; i++) {
    assert_int_equal(acks[i].status, 0);
    assert_true(acks[i].duplicate);
    assert_true(acks[i].has_id);
    assert_int_equal(sl_pt_ack_cmp(&acks[i], &first_run[i]), 0);
  }
  for (int i = 50; i < 53; i++) {
    assert_false(acks[i].duplicate);
    assert_true(sl_pt_ack_cmp(&first_run[TOTAL - 1], &acks[i]) < 0);
  }
  sl_pt_close(&p);
  sl_pt_unload(t, 0, "pt/basic");
  sl_pt_msg *log;
  size_t n = sl_pt_read_log(t, "pt/basic", &log);
  assert_int_equal(n, TOTAL + 3);
  for (size_t i = 0; i < n; i++) assert_int_equal(log[i].seq, i);
  free(log);
}

/* Unknown topic, a broker that is not the owner, a send before open, an
 * oversized message and garbage bytes: each its status; the broker serves
 * the next producer normally. */
static void test_produce__bad_input(void **state) {
  sl_pt *t = *state;
  sl_err err = SL_ERR_INIT;
  sl_pt_producer p;

  assert_int_equal(sl_pt_open(t, 0, "pt/nope", "x", false, &p, NULL, &err), SL_ENOTFOUND);
  sl_pt_close(&p);
  assert_int_equal(sl_pt_open(t, 0, "not a topic!", "x", false, &p, NULL, &err), SL_EINVAL);
  sl_pt_close(&p);

  uint64_t epoch;
  int owner = sl_pt_owner(t, 0, "pt/parts-partition-1", &epoch);
  Sluice__V1__Redirect *rd = NULL;
  err = (sl_err)SL_ERR_INIT;
  assert_status(sl_pt_open(t, 1 - owner, "pt/parts-partition-1", "x", false, &p, &rd, &err),
                SL_EREDIRECT);
  assert_non_null(rd);
  assert_string_equal(rd->partition, "pt/parts-partition-1");
  assert_string_equal(rd->broker_address, sl_cluster_addr(t->c, SL_NODE_BROKER, owner));
  assert_int_equal(rd->epoch, epoch);
  protobuf_c_message_free_unpacked(&rd->base, NULL);
  sl_pt_close(&p);

  /* A send on a stream that never opened. */
  sl_rpc_call_opts o = {0};
  o.wait_for_ready = true;
  assert_int_equal(sl_broker_service_produce_open(t->broker[0], &o, &p.s, &err), SL_OK);
  sl_pt_send(&p, 1, 1, 10, &err);
  Sluice__V1__ProduceResponse *r = NULL;
  err = (sl_err)SL_ERR_INIT;
  assert_int_equal(sl_broker_service_produce_recv(p.s, &r, 10000, &err), SL_EPRECOND);
  assert_non_null(strstr(err.msg, "before open"));
  sl_pt_close(&p);

  /* Over the namespace's 1024-byte limit: that message is refused, naming
   * the limit; the stream goes on. */
  owner = sl_pt_owner(t, 0, "ptsmall/t", NULL);
  assert_int_equal(sl_pt_open(t, owner, "ptsmall/t", "s", false, &p, NULL, &err), SL_OK);
  assert_int_equal(sl_pt_send(&p, 1, 1, 2000, &err), SL_OK);
  assert_int_equal(sl_pt_send(&p, 2, 1, 1000, &err), SL_OK);
  sl_pt_ack acks[2];
  int got;
  assert_int_equal(sl_pt_recv_acks(&p, acks, 2, &got, 20000, &err), SL_OK);
  assert_int_equal(acks[0].status, 1); /* STATUS_INVALID */
  assert_non_null(strstr(acks[0].error, "1024"));
  assert_int_equal(acks[1].status, 0);
  sl_pt_close(&p);

  /* Garbage on the wire. */
  static const char junk[] = "\xff\xff\xff\xff garbage \x00\x01";
  char details[256];
  grpc_status_code code =
      sl_test_raw_call(sl_cluster_addr(t->c, SL_NODE_BROKER, 0),
                       "/sluice.v1.BrokerService/Produce", junk, sizeof(junk), 10000,
                       details, sizeof(details));
  assert_int_not_equal(code, GRPC_STATUS_OK);

  /* Still serving. */
  owner = sl_pt_owner(t, 0, "pt/parts-partition-0", NULL);
  assert_int_equal(sl_pt_open(t, owner, "pt/parts-partition-0", "", false, &p, NULL, &err), SL_OK);
  assert_true(strlen(p.name) > 0);
  assert_int_equal(sl_pt_send(&p, 7, 1, 10, &err), SL_OK);
  assert_int_equal(sl_pt_recv_acks(&p, acks, 1, &got, 20000, &err), SL_OK);
  assert_int_equal(acks[0].status, 0);
  sl_pt_close(&p);
}

/* DeleteTopic ends its owner's service at once, though the owner writes
 * nothing to the metadata service meanwhile: the open stream ends (the
 * owner watch revoked the partition) instead of taking more sends, and the
 * topic is gone for a new lookup. */
static void test_produce__delete_topic_stops_its_owner(void **state) {
  sl_pt *t = *state;
  sl_pt_topic(t, "pt/doomed", 0);
  int owner = sl_pt_owner(t, 0, "pt/doomed", NULL);
  sl_pt_producer p;
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_pt_open(t, owner, "pt/doomed", "prod-d", false, &p, NULL, &err), SL_OK);
  assert_int_equal(sl_pt_send(&p, 0, 1, 100, &err), SL_OK);
  sl_pt_ack ack;
  int got = 0;
  assert_int_equal(sl_pt_recv_acks(&p, &ack, 1, &got, 30000, &err), SL_OK);
  assert_int_equal(ack.status, 0);
  Sluice__V1__DeleteTopicRequest req = SLUICE__V1__DELETE_TOPIC_REQUEST__INIT;
  req.name = "pt/doomed";
  Sluice__V1__DeleteTopicResponse *resp = NULL;
  sl_rpc_call_opts co = {.timeout_ms = 10000};
  assert_int_equal(sl_broker_service_delete_topic(t->broker[1 - owner], &req, &resp, &co, &err),
                   SL_OK);
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  /* Nothing more is sent: only the owner's end of the stream can come. */
  sl_status st = sl_pt_recv_acks(&p, &ack, 1, &got, 20000, &err);
  assert_int_not_equal(st, SL_OK);
  assert_int_not_equal(st, SL_ETIMEDOUT);
  assert_int_equal(got, 0);
  sl_pt_close(&p);
  assert_int_equal(sl_pt_try_owner(t, 0, "pt/doomed", NULL), -1);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_produce__receipts_match_the_log),
      cmocka_unit_test(test_produce__dedup_answers_resends_with_original_ids),
      cmocka_unit_test(test_produce__bad_input),
      cmocka_unit_test(test_produce__delete_topic_stops_its_owner),
  };
  return cmocka_run_group_tests(tests, setup, sl_pt_teardown);
}
