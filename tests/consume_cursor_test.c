/*
 * A subscription (broker/subscription.h) on a real durable cursor, on a
 * real cluster (etcd, metadata service, 3 bookies): ack receipts come only
 * once the acks are durable, and after the owner crashes and another broker
 * takes the partition over, exactly the messages whose acks were not
 * durable are redelivered, in order, with no gap. The partition's entries
 * come from an in-memory log (the read port), as the cursor only knows
 * positions; the Consume stream and the managed-ledger read port are not
 * in this test.
 */
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "broker/subscription.h"
#include "broker/subscription_cursor.h"
#include "common/clock.h"
#include "entry.pb-c.h"
#include "metadata.slrpc.h"
#include "tests/ledger_testlib.h"
#include "tests/metadata_util.h"
#include "tests/waiter.h"

#define WAIT_MS 60000
#define PART "public/consume-cursor"
#define LEDGER 7
#define N 20

typedef struct world {
  sl_lt lt;
  int64_t session[2];
  mdt_keeper *keep[2];
  sl_serial *serial;
  uint8_t *entries[N];
  size_t lens[N];
  sl_tw delivered;          /* one signal per delivery */
  int64_t got[4 * N];        /* entry ids delivered, in order */
  sl_cursor *cursor;
  sl_sub *sub;
} world;

static const char *BROKER[2] = {"broker-a", "broker-b"};

/* ---- on the serial ---- */

typedef struct step {
  void (*fn)(world *w, void *arg);
  world *w;
  void *arg;
} step;

static void step_run(void *p) {
  step *s = p;
  s->fn(s->w, s->arg);
}

static void on_serial(world *w, void (*fn)(world *w, void *arg), void *arg) {
  step s = {.fn = fn, .w = w, .arg = arg};
  sl_tw_run_on(w->serial, step_run, &s);
}

/* ---- ports: the in-memory log and the consumer ---- */

typedef struct read_job {
  world *w;
  sl_ml_pos from;
  uint32_t max;
  sl_sub_entry_cb on_entry;
  sl_sub_read_cb on_done;
  void *arg;
} read_job;

static void read_run(void *p) {
  read_job *j = p;
  int64_t e = j->from.entry_id < 0 ? 0 : j->from.entry_id;
  for (uint32_t i = 0; i < j->max && e < N; i++, e++)
    j->on_entry((sl_ml_pos){LEDGER, e}, j->w->entries[e], j->w->lens[e], j->arg);
  j->on_done(SL_OK, j->arg);
  free(j);
}

static sl_status port_read(void *ctx, sl_ml_pos from, uint32_t max,
                           sl_sub_entry_cb on_entry, sl_sub_read_cb on_done,
                           void *arg) {
  world *w = ctx;
  read_job *j = calloc(1, sizeof(*j));
  *j = (read_job){w, from, max, on_entry, on_done, arg};
  sl_serial_post(w->serial, read_run, j); /* later, as bookie reads are */
  return SL_OK;
}

static void port_deliver(void *ctx, uint64_t consumer, const sl_sub_delivery *d) {
  world *w = ctx;
  (void)consumer;
  int n = sl_tw_count(&w->delivered);
  if (n < 4 * N) w->got[n] = d->id.entry_id;
  sl_tw_done(&w->delivered, SL_OK, NULL);
}

static sl_status port_dead_letter(void *ctx, const sl_sub_delivery *d,
                                  sl_sub_done_cb cb, void *arg) {
  (void)ctx;
  (void)d;
  (void)cb;
  (void)arg;
  return SL_EUNIMPL; /* max_redeliveries is 0 here */
}

/* ---- fixture ---- */

static int setup(void **state) {
  world *w = calloc(1, sizeof(*w));
  sl_lt_start(&w->lt, "consume_cursor", 3, NULL, NULL);
  for (int i = 0; i < 2; i++) {
    w->session[i] = mdt_open_broker(w->lt.meta, BROKER[i], 0);
    w->keep[i] = mdt_keeper_start(w->lt.meta, BROKER[i], w->session[i], 500);
  }
  assert_int_equal(sl_serial_create(&w->serial, NULL), SL_OK);
  for (int e = 0; e < N; e++) {
    Sluice__V1__StoredMessage m = SLUICE__V1__STORED_MESSAGE__INIT;
    Sluice__V1__StoredMessage *mp = &m;
    char key[16];
    snprintf(key, sizeof(key), "k%d", e % 3);
    m.key = key;
    m.sequence_id = (uint64_t)e;
    Sluice__V1__StoredEntry en = SLUICE__V1__STORED_ENTRY__INIT;
    en.n_messages = 1;
    en.messages = &mp;
    w->lens[e] = sluice__v1__stored_entry__get_packed_size(&en);
    w->entries[e] = malloc(w->lens[e]);
    sluice__v1__stored_entry__pack(&en, w->entries[e]);
  }
  *state = w;
  return 0;
}

static int teardown(void **state) {
  world *w = *state;
  sl_serial_unref(w->serial);
  for (int i = 0; i < 2; i++) mdt_keeper_stop(w->keep[i], NULL);
  sl_lt_stop(&w->lt);
  for (int e = 0; e < N; e++) free(w->entries[e]);
  free(w);
  return 0;
}

/* Broker b takes the partition (from the other one if old_epoch != 0). */
static uint64_t take_over(world *w, int b, uint64_t old_epoch) {
  if (old_epoch != 0) {
    Sluice__V1__ReleaseOwnershipRequest req = SLUICE__V1__RELEASE_OWNERSHIP_REQUEST__INIT;
    req.partition = PART;
    req.session_id = w->session[1 - b];
    req.epoch = old_epoch;
    Sluice__V1__ReleaseOwnershipResponse *resp = NULL;
    sl_rpc_call_opts o = mdt_opts(10000);
    sl_err err = SL_ERR_INIT;
    mdt_expect(sl_metadata_service_release_ownership(w->lt.meta, &req, &resp, &o, &err),
               SL_OK, &err);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
  }
  Sluice__V1__AcquireOwnershipResponse *r =
      mdt_acquire(w->lt.meta, PART, BROKER[b], w->session[b]);
  assert_true(r->acquired);
  uint64_t epoch = r->owner->epoch;
  protobuf_c_message_free_unpacked(&r->base, NULL);
  return epoch;
}

static void opened(sl_status st, const char *details, sl_cursor *c, void *arg) {
  sl_tw_done_out(arg, st, details, c);
}

/* Opens the cursor as owner at epoch (nothing flushes unless asked), then
 * on the serial a subscription with one consumer that grants 100 permits. */
static void subscribe_fn(world *w, void *arg) {
  (void)arg;
  sl_sub_opts so = {.name = "sub", .type = SL_DISP_EXCLUSIVE,
                    .ports = {.ctx = w, .read = port_read,
                              .deliver = port_deliver,
                              .dead_letter = port_dead_letter}};
  sl_sub_cursor_ports(w->cursor, &so.ports);
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_sub_create(&so, &w->sub, &err), SL_OK);
  sl_disp_consumer c = {.id = 1, .name = "c1"};
  assert_int_equal(sl_sub_add_consumer(w->sub, &c, &err), SL_OK);
  assert_int_equal(sl_sub_flow(w->sub, 1, 100, &err), SL_OK);
}

static void subscribe(world *w, uint64_t epoch) {
  sl_cursor_ledger chain = {LEDGER, N, 0};
  sl_cursor_opts o = {0};
  o.ledgers = w->lt.client;
  o.metadata = w->lt.meta;
  o.serial = w->serial;
  o.partition = PART;
  o.subscription = "sub";
  o.epoch = epoch;
  o.initial = SL_CURSOR_EARLIEST;
  o.chain = (sl_cursor_chain){&chain, 1};
  o.persist_delay_ms = 600000;
  sl_tw ow;
  sl_tw_init(&ow);
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_cursor_open_async(&o, opened, &ow, &err), SL_OK);
  if (sl_tw_wait(&ow, WAIT_MS) != SL_OK) fail_msg("cursor open: %s", ow.details);
  w->cursor = ow.out;
  on_serial(w, subscribe_fn, NULL);
}

typedef struct acks {
  int64_t from, to;          /* entries [from, to) */
  sl_tw *receipt;           /* for the last one */
} acks;

static void receipt(sl_status st, void *arg) { sl_tw_done(arg, st, NULL); }

static void ack_fn(world *w, void *arg) {
  acks *a = arg;
  for (int64_t e = a->from; e < a->to; e++) {
    sl_msg_id id = {LEDGER, e, 0};
    sl_err err = SL_ERR_INIT;
    bool last = e + 1 == a->to;
    sl_status st = sl_sub_ack(w->sub, id, 1, last ? receipt : NULL,
                              last ? a->receipt : NULL, &err);
    if (st != SL_OK) fail_msg("ack %" PRId64 ": %s", e, err.msg);
  }
}

static void flush_fn(world *w, void *arg) {
  assert_int_equal(sl_cursor_flush(w->cursor, NULL, NULL, NULL), SL_OK);
  (void)arg;
}

/* As a crash: nothing more is flushed. */
static void crash_fn(world *w, void *arg) {
  (void)arg;
  sl_sub_destroy(w->sub);
  sl_cursor_destroy(w->cursor);
  w->sub = NULL;
  w->cursor = NULL;
}

static void stats_fn(world *w, void *arg) { sl_sub_stats_get(w->sub, arg); }

static void bad_ack_fn(world *w, void *arg) {
  sl_msg_id beyond = {LEDGER, N + 5, 0};
  sl_err err = SL_ERR_INIT;
  *(sl_status *)arg = sl_sub_ack(w->sub, beyond, 1, NULL, NULL, &err);
}

static void test_consume_cursor__receipts_durable_and_redelivery_after_crash(
    void **state) {
  world *w = *state;
  uint64_t epoch_a = take_over(w, 0, 0);
  sl_tw_init(&w->delivered);
  subscribe(w, epoch_a);
  sl_tw_wait_n(&w->delivered, N, WAIT_MS);
  for (int e = 0; e < N; e++) assert_int_equal(w->got[e], e);

  /* Acks of 0..9: no receipt until a flush makes them durable. */
  sl_tw r1;
  sl_tw_init(&r1);
  acks a1 = {0, 10, &r1};
  on_serial(w, ack_fn, &a1);
  assert_int_equal(sl_tw_count(&r1), 0);
  on_serial(w, flush_fn, NULL);
  sl_tw_wait_n(&r1, 1, WAIT_MS);
  assert_int_equal(r1.st, SL_OK);

  /* An id that is not in the partition: its status, nothing changes. */
  sl_status bad = SL_OK;
  on_serial(w, bad_ack_fn, &bad);
  assert_int_equal(bad, SL_ERANGE);

  /* Acks of 10..14 never become durable: the owner crashes first. */
  sl_tw r2;
  sl_tw_init(&r2);
  acks a2 = {10, 15, &r2};
  on_serial(w, ack_fn, &a2);
  on_serial(w, crash_fn, NULL);
  sl_tw_wait_n(&r2, 1, WAIT_MS);
  assert_int_equal(r2.st, SL_ECANCELED);

  /* Broker b takes over: 10..19 come again, in order, and nothing else. */
  uint64_t epoch_b = take_over(w, 1, epoch_a);
  sl_tw_init(&w->delivered);
  subscribe(w, epoch_b);
  sl_tw_wait_n(&w->delivered, N - 10, WAIT_MS);
  for (int i = 0; i < N - 10; i++) assert_int_equal(w->got[i], 10 + i);
  sl_sub_stats st;
  on_serial(w, stats_fn, &st);
  assert_int_equal(st.delivered, N - 10);
  assert_int_equal(sl_tw_count(&w->delivered), N - 10);
  assert_int_equal(st.unacked, N - 10);
  on_serial(w, crash_fn, NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(
          test_consume_cursor__receipts_durable_and_redelivery_after_crash, setup,
          teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
