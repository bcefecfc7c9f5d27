/*
 * Seek through the Consume stream on a real cluster (etcd, 1 metadata, 3
 * bookies, 1 broker): 20 messages, each in its own entry and millisecond,
 * all received and acked; a seek by message id and a seek by publish time
 * each answer SeekDone, after which messages come from the new position
 * (the acks after it are forgotten) in order; a seek past the newest
 * message gives a SeekDone without a next id and then only new messages.
 * The broker's entry cache keeps nothing, so every read, all in the open
 * current ledger, goes through the managed ledger's read-ahead: a buffer
 * left from before a seek must never leak into what comes after it.
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

#define TOPIC "cs/seek"
#define N 20
#define WAIT_MS 30000

typedef struct rmsg {
  Sluice__V1__MessageId id;
  uint64_t seq;
  int64_t publish_ms;
} rmsg;

static int setup(void **state) {
  sl_pt *t = calloc(1, sizeof(*t));
  setenv("SLUICE_BROKER_ENTRY_CACHE_BYTES", "1", 1); /* the broker inherits it */
  sl_pt_start(t, "consume_seek", 1, 3, 1);
  unsetenv("SLUICE_BROKER_ENTRY_CACHE_BYTES");
  sl_pt_namespace(t, "cs", false, 0);
  sl_pt_topic(t, TOPIC, 0);
  *state = t;
  return 0;
}

/* Sends count messages from first, one entry each, each in a later
 * millisecond than the one before (distinct publish times). */
static void produce(sl_pt *t, uint64_t first, int count) {
  int owner = sl_pt_owner(t, 0, TOPIC, NULL);
  sl_pt_producer p;
  sl_err err = SL_ERR_INIT;
  char name[32];
  snprintf(name, sizeof(name), "seek-%llu", (unsigned long long)first);
  assert_int_equal(sl_pt_open(t, owner, TOPIC, name, false, &p, NULL, &err), SL_OK);
  for (int i = 0; i < count; i++) {
    /* Publish times (the broker's, on this machine's clock) at least 2 ms
     * apart: a time strictly between two messages exists (the previous
     * one was published before `before`). */
    int64_t before = sl_clock_wall_ms();
    while (sl_clock_wall_ms() < before + 2) {
    }
    assert_int_equal(sl_pt_send(&p, first + (uint64_t)i, 1, 32, &err), SL_OK);
    sl_pt_ack a;
    int got;
    assert_int_equal(sl_pt_recv_acks(&p, &a, 1, &got, WAIT_MS, &err), SL_OK);
    assert_int_equal(a.status, 0);
  }
  sl_pt_close(&p);
}

/* Reads responses until n messages came; with seek_done, the messages
 * before the SeekDone event are dropped (in flight from the old position)
 * and *next gets its next_id (NULL if unset; caller frees). */
static void recv_msgs(sl_ct_consumer *c, rmsg *out, int n, bool seek_done,
                      Sluice__V1__MessageId **next) {
  int64_t end = sl_clock_mono_ms() + WAIT_MS;
  bool seen = !seek_done;
  int got = 0;
  while (got < n || !seen) {
    Sluice__V1__ConsumeResponse *r = NULL;
    sl_err err = SL_ERR_INIT;
    int left = (int)(end - sl_clock_mono_ms());
    if (left <= 0) fail_msg("%d of %d messages (seek done seen: %d)", got, n, seen);
    sl_status st = sl_broker_service_consume_recv(c->s, &r, left, &err);
    if (st != SL_OK || r == NULL)
      fail_msg("consume: %s (%d of %d messages, seek done seen: %d)", sl_err_msg(&err, st), got,
               n, seen);
    if (r->kind_case == SLUICE__V1__CONSUME_RESPONSE__KIND_SEEK_DONE) {
      assert_true(seek_done);
      assert_false(seen);
      seen = true;
      *next = r->seek_done->next_id;
      r->seek_done->next_id = NULL;
    } else if (r->kind_case == SLUICE__V1__CONSUME_RESPONSE__KIND_MESSAGE && seen) {
      rmsg *m = &out[got++];
      sluice__v1__message_id__init(&m->id);
      m->id.ledger_id = r->message->id->ledger_id;
      m->id.entry_id = r->message->id->entry_id;
      m->id.batch_index = r->message->id->batch_index;
      m->id.batch_size = r->message->id->batch_size;
      m->seq = r->message->sequence_id;
      m->publish_ms = r->message->publish_time_ms;
    } else if (r->kind_case == SLUICE__V1__CONSUME_RESPONSE__KIND_CLOSED) {
      fail_msg("closed: %s", r->closed->reason);
    }
    protobuf_c_message_free_unpacked(&r->base, NULL);
  }
}

static void ack_all(sl_ct_consumer *c, const rmsg *m, int n, uint64_t receipt) {
  Sluice__V1__MessageId ids[N + 8];
  for (int i = 0; i < n; i++) ids[i] = m[i].id;
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_ct_ack(c, ids, (size_t)n, false, receipt, &err), SL_OK);
  assert_int_equal(sl_ct_wait_receipt(c, receipt, WAIT_MS, &err), SL_OK);
}

static void assert_seqs(const rmsg *m, int n, uint64_t first) {
  for (int i = 0; i < n; i++)
    if (m[i].seq != first + (uint64_t)i)
      fail_msg("message %d: seq %llu, want %llu", i, (unsigned long long)m[i].seq,
               (unsigned long long)(first + (uint64_t)i));
}

static void test_consume_seek__by_id_and_by_time(void **state) {
  sl_pt *t = *state;
  produce(t, 0, N);
  sl_ct_sub sub = {.topic = TOPIC, .subscription = "s", .type = 0, .earliest = true};
  sl_ct_consumer c;
  sl_ct_subscribe_owner(t, &sub, &c);
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_ct_flow(&c, 1000, &err), SL_OK);
  rmsg all[N], got[N];
  Sluice__V1__MessageId *next = NULL;
  recv_msgs(&c, all, N, false, NULL);
  assert_seqs(all, N, 0);
  for (int i = 1; i < N; i++) assert_true(all[i].publish_ms >= all[i - 1].publish_ms + 2);
  ack_all(&c, all, N, 1);

  /* By id: back to message 5; its acks and the later ones are forgotten. */
  assert_int_equal(sl_ct_seek(&c, &all[5].id, 0, &err), SL_OK);
  recv_msgs(&c, got, N - 5, true, &next);
  assert_non_null(next);
  assert_int_equal(next->ledger_id, all[5].id.ledger_id);
  assert_int_equal(next->entry_id, all[5].id.entry_id);
  protobuf_c_message_free_unpacked(&next->base, NULL);
  assert_seqs(got, N - 5, 5);
  ack_all(&c, got, N - 5, 2);

  /* By time: exactly message 12's publish time, then one ms before
   * message 9's (between 8 and 9: 9 is the first at or after). */
  assert_int_equal(sl_ct_seek(&c, NULL, all[12].publish_ms, &err), SL_OK);
  recv_msgs(&c, got, N - 12, true, &next);
  assert_non_null(next);
  assert_int_equal(next->entry_id, all[12].id.entry_id);
  protobuf_c_message_free_unpacked(&next->base, NULL);
  assert_seqs(got, N - 12, 12);
  ack_all(&c, got, N - 12, 3);
  assert_int_equal(sl_ct_seek(&c, NULL, all[9].publish_ms - 1, &err), SL_OK);
  recv_msgs(&c, got, N - 9, true, &next);
  if (next) protobuf_c_message_free_unpacked(&next->base, NULL);
  assert_seqs(got, N - 9, 9);
  ack_all(&c, got, N - 9, 4);

  /* Past the newest message: SeekDone without a next id; then only
   * messages produced afterwards. */
  assert_int_equal(sl_ct_seek(&c, NULL, all[N - 1].publish_ms + 60000, &err), SL_OK);
  /* Produce only once the seek is done: a message appended while the seek
   * searches is before its time too, and rightly skipped. */
  recv_msgs(&c, got, 0, true, &next);
  assert_null(next);
  produce(t, 100, 2);
  recv_msgs(&c, got, 2, false, &next);
  assert_seqs(got, 2, 100);
  sl_ct_close(&c);
}

/* A seek with neither or both of id and time ends the stream with
 * INVALID_ARGUMENT. */
static void test_consume_seek__bad_seek(void **state) {
  sl_pt *t = *state;
  sl_ct_sub sub = {.topic = TOPIC, .subscription = "bad", .type = 0, .earliest = true};
  sl_ct_consumer c;
  sl_ct_subscribe_owner(t, &sub, &c);
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_ct_seek(&c, NULL, 0, &err);
  if (st == SL_OK) {
    Sluice__V1__ConsumeResponse *r = NULL;
    do {
      if (r) protobuf_c_message_free_unpacked(&r->base, NULL);
      r = NULL;
      st = sl_ct_next(&c, WAIT_MS, &r, &err);
    } while (st == SL_OK && r->kind_case != SLUICE__V1__CONSUME_RESPONSE__KIND_CLOSED);
    if (st == SL_OK) {
      assert_int_equal(-(int)r->closed->status, SL_EINVAL);
      protobuf_c_message_free_unpacked(&r->base, NULL);
    }
  }
  sl_ct_close(&c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_consume_seek__by_id_and_by_time),
      cmocka_unit_test(test_consume_seek__bad_seek),
  };
  return cmocka_run_group_tests(tests, setup, sl_pt_teardown);
}
