/*
 * Every ack hole survives a restart (issue 10, "Ack holes"), on a real
 * cluster (etcd, 1 metadata, 3 bookies, 1 broker): N messages are
 * produced in batched entries (1000 messages each), an exclusive consumer
 * receives all of them and acks every other one (single messages inside
 * batched entries: N/2 batch-index holes, no two adjacent), the last ack
 * asks for a receipt (a flush covers every earlier ack, cursor.h inv. 1),
 * the owner broker is killed with kill -9 and started again, and a new
 * consumer gets exactly the unacked half: each once, in order, nothing
 * else. The cursor's stored size is printed.
 *
 * N: the first argument, else env SLUICE_HOLES_N, else 100,000 (20,000
 * under AddressSanitizer), so that the suite stays well inside its time on
 * 2 cores. The 1,000,000 runs as //tests:consume_holes_1m_test
 * (manual: `bazel test //tests:consume_holes_1m_test`), which passes the
 * figure as its argument.
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
#include "metadata.slrpc.h"
#include "tests/consume_testlib.h"

#define TOPIC "ch/holes"
#define SUB "holes"
#define BATCH 1000        /* messages per SendBatch (one entry) */
#define WINDOW 16         /* batches in flight while producing */
#define CHUNK 10000       /* messages per permit grant / receive */
#define ACKS_PER_MSG 5000 /* ids per Ack request */
#define WAIT_MS 120000

#if defined(__SANITIZE_ADDRESS__)
#define DEFAULT_N 20000
#else
#define DEFAULT_N 100000
#endif

static const char *arg_n; /* argv[1] */

static int holes_n(void) {
  const char *e = arg_n != NULL ? arg_n : getenv("SLUICE_HOLES_N");
  long n = e ? strtol(e, NULL, 10) : DEFAULT_N;
  if (n < 2 * BATCH) n = 2 * BATCH;
  return (int)(n / BATCH * BATCH);
}

static int setup(void **state) {
  sl_pt *t = calloc(1, sizeof(*t));
  /* Sessions of 10 s: this test runs for minutes, and on a loaded machine
   * etcd stalls of over 2 s were seen to end a 2 s session mid-run. */
  sl_pt_start_ttl(t, "consume_holes", 1, 3, 1, 10);
  sl_pt_namespace(t, "ch", false, 0);
  sl_pt_topic(t, TOPIC, 0);
  *state = t;
  return 0;
}

static double secs_since(int64_t t0) { return (double)(sl_clock_mono_ms() - t0) / 1000.0; }

/* Produces n messages (sequence ids 0..n-1, 24-byte payloads) in batches,
 * WINDOW batches in flight. */
static void produce(sl_pt *t, int n) {
  int owner = sl_pt_owner(t, 0, TOPIC, NULL);
  sl_pt_producer p;
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_pt_open(t, owner, TOPIC, "holes-producer", false, &p, NULL, &err), SL_OK);
  sl_pt_ack *acks = calloc(BATCH, sizeof(*acks));
  int sent = 0, done = 0;
  while (done < n) {
    while (sent < n && sent - done < WINDOW * BATCH) {
      assert_int_equal(sl_pt_send(&p, (uint64_t)sent, BATCH, 24, &err), SL_OK);
      sent += BATCH;
    }
    int got;
    if (sl_pt_recv_acks(&p, acks, BATCH, &got, WAIT_MS, &err) != SL_OK)
      fail_msg("produce: %d of %d acked: %s", done + got, n, err.msg);
    for (int i = 0; i < BATCH; i++)
      if (acks[i].status != 0) fail_msg("produce %d: %s", done + i, acks[i].error);
    assert_int_equal(acks[0].seq, (uint64_t)done);
    done += BATCH;
  }
  free(acks);
  sl_pt_close(&p);
}

/* Acks ids[0..n) in requests of ACKS_PER_MSG; the last request asks for
 * receipt_id (0 = none). */
static void ack_all(sl_ct_consumer *c, const Sluice__V1__MessageId *ids, int n,
                    uint64_t receipt_id) {
  sl_err err = SL_ERR_INIT;
  for (int i = 0; i < n; i += ACKS_PER_MSG) {
    int k = n - i < ACKS_PER_MSG ? n - i : ACKS_PER_MSG;
    bool last = i + k >= n;
    assert_int_equal(sl_ct_ack(c, ids + i, (size_t)k, false, last ? receipt_id : 0, &err),
                     SL_OK);
  }
}

/* The cursor as stored: the metadata record, and the cursor ledger's
 * snapshot when the state moved there. */
static void print_cursor_size(sl_pt *t, int n) {
  Sluice__V1__GetCursorRequest req = SLUICE__V1__GET_CURSOR_REQUEST__INIT;
  req.partition = TOPIC;
  req.subscription = SUB;
  Sluice__V1__CursorResponse *resp = NULL;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_metadata_service_get_cursor(t->meta, &req, &resp, NULL, &err);
  if (st != SL_OK) fail_msg("get cursor: %s", sl_err_msg(&err, st));
  const Sluice__V1__CursorInfo *ci = resp->info;
  assert_non_null(ci);
  size_t record = sluice__v1__cursor_info__get_packed_size(ci);
  uint64_t snapshot = ci->ack_ledger ? ci->ack_ledger->snapshot_bytes : 0;
  print_message("holes: n=%d holes=%d cursor record %zu bytes (inline ack state %zu), "
                "cursor ledger %llu snapshot %llu bytes = %.2f bytes per hole\n",
                n, n / 2, record, ci->ack_state.len,
                (unsigned long long)(ci->ack_ledger ? ci->ack_ledger->ledger_id : 0),
                (unsigned long long)snapshot,
                (double)(record + snapshot) / (double)(n / 2));
  protobuf_c_message_free_unpacked(&resp->base, NULL);
}

/* Subscribes at the owner once the restarted broker owns the partition
 * again (the old session's lease has to lapse first). */
static void subscribe_after_restart(sl_pt *t, const sl_ct_sub *sub, sl_ct_consumer *c) {
  int64_t deadline = sl_clock_mono_ms() + 60000;
  for (;;) {
    sl_err err = SL_ERR_INIT;
    int owner = sl_pt_try_owner(t, 0, TOPIC, NULL);
    sl_status st = owner < 0 ? SL_EUNAVAIL : sl_ct_subscribe(t, owner, sub, c, NULL, &err);
    if (st == SL_OK) return;
    if (sl_clock_mono_ms() > deadline)
      fail_msg("subscribe after restart: %s", sl_err_msg(&err, st));
    sl_ct_close(c);
  }
}

static void test_consume_holes__every_other_ack_survives_restart(void **state) {
  sl_pt *t = *state;
  int n = holes_n();
  sl_err err = SL_ERR_INIT;
  int64_t t0 = sl_clock_mono_ms();
  produce(t, n);
  double produce_s = secs_since(t0);

  sl_ct_sub sub = {.topic = TOPIC, .subscription = SUB, .type = 0, .earliest = true};
  sl_ct_consumer c;
  sl_ct_subscribe_owner(t, &sub, &c);
  sl_ct_msg *got = calloc(CHUNK, sizeof(*got));
  Sluice__V1__MessageId *acks = calloc((size_t)n / 2, sizeof(*acks));
  int n_acks = 0;
  t0 = sl_clock_mono_ms();
  for (int done = 0; done < n; done += CHUNK) {
    int want = n - done < CHUNK ? n - done : CHUNK, k;
    assert_int_equal(sl_ct_flow(&c, want, &err), SL_OK);
    if (sl_ct_recv(&c, got, want, &k, WAIT_MS, &err) != SL_OK)
      fail_msg("first pass: %d of %d: %s", done + k, n, err.msg);
    for (int i = 0; i < want; i++) {
      if (got[i].seq != (uint64_t)(done + i) || got[i].redelivery_count != 0 ||
          !got[i].payload_ok)
        fail_msg("first pass: message %d has seq %llu (redelivered %u)", done + i,
                 (unsigned long long)got[i].seq, got[i].redelivery_count);
      if (got[i].seq % 2 == 0) acks[n_acks++] = got[i].id;
    }
  }
  double consume_s = secs_since(t0);
  t0 = sl_clock_mono_ms();
  ack_all(&c, acks, n_acks, 1);
  assert_int_equal(sl_ct_wait_receipt(&c, 1, WAIT_MS, &err), SL_OK);
  double ack_s = secs_since(t0);
  sl_ct_close(&c);
  print_cursor_size(t, n);

  /* kill -9 and restart: the new owner recovers the cursor. */
  t0 = sl_clock_mono_ms();
  assert_int_equal(sl_cluster_kill9(t->c, SL_NODE_BROKER, 0, &err), SL_OK);
  assert_int_equal(sl_cluster_restart(t->c, SL_NODE_BROKER, 0, &err), SL_OK);
  subscribe_after_restart(t, &sub, &c);
  double restart_s = secs_since(t0);

  /* Exactly the odd sequence ids, in order, each once; then nothing. */
  t0 = sl_clock_mono_ms();
  for (int done = 0; done < n / 2; done += CHUNK) {
    int want = n / 2 - done < CHUNK ? n / 2 - done : CHUNK, k;
    assert_int_equal(sl_ct_flow(&c, want, &err), SL_OK);
    if (sl_ct_recv(&c, got, want, &k, WAIT_MS, &err) != SL_OK)
      fail_msg("after restart: %d of %d: %s", done + k, n / 2, err.msg);
    for (int i = 0; i < want; i++) {
      uint64_t expect = 2 * (uint64_t)(done + i) + 1;
      if (got[i].seq != expect)
        fail_msg("after restart: message %d has seq %llu, want %llu", done + i,
                 (unsigned long long)got[i].seq, (unsigned long long)expect);
    }
  }
  double redeliver_s = secs_since(t0);
  assert_int_equal(sl_ct_flow(&c, 100, &err), SL_OK);
  int k;
  /* Nothing beyond the unacked half (a bounded wait for what must not
   * come). */
  assert_int_equal(sl_ct_recv(&c, got, 1, &k, 2000, &err), SL_ETIMEDOUT);
  assert_int_equal(k, 0);
  sl_ct_close(&c);
  print_message("holes: n=%d produce %.1f s, first pass %.1f s, %d acks durable in %.1f s, "
                "restart+resubscribe %.1f s, redelivery of %d in %.1f s\n",
                n, produce_s, consume_s, n_acks, ack_s, restart_s, n / 2, redeliver_s);
  free(got);
  free(acks);
}

int main(int argc, char **argv) {
  if (argc > 1) arg_n = argv[1];
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_consume_holes__every_other_ack_survives_restart),
  };
  return cmocka_run_group_tests(tests, setup, sl_pt_teardown);
}
