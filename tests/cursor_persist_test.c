/*
 * Cursor persistence and recovery against a real cluster (etcd, metadata
 * service, 3 bookies) with the real ledger client. The cursor module is
 * driven directly (the Consume path is another branch): acks go through
 * sl_cursor_ack on the cursor's serial, and "the owner broker restarts" is
 * a new cursor object opened by another broker after a take-over, which
 * recovers (and fences) the cursor ledger.
 *
 *  - ack holes: every other message of 1,000,000 acked, persisted (the
 *    state goes to a cursor ledger), recovered after a failover: exactly
 *    the unacked half is reported unacked; the stored size is printed;
 *  - crash between ack and persist: acks not yet durable come back
 *    unacked (redelivered), durable ones stay acked, in both INLINE and
 *    LEDGER modes; durable callbacks report what was durable;
 *  - the old owner is fenced once the new one has opened;
 *  - seek back to the start moves the state inline again;
 *  - bad input gets its status.
 */
#include <inttypes.h>
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

#include "broker/cursor.h"
#include "common/clock.h"
#include "metadata.slrpc.h"
#include "tests/ledger_testlib.h"
#include "tests/metadata_util.h"
#include "tests/metrics_scrape.h"
#include "tests/waiter.h"

#define WAIT_MS 60000
#define PART "public/cursors"
#define CHAIN_LEDGER 7 /* the partition's (simulated) one ledger */
#define MILLION 1000000

/* ---- waiting for callbacks on the cursor's serial ---- */

static void opened(sl_status st, const char *details, sl_cursor *c, void *arg) {
  sl_tw_done_out(arg, st, details, c);
}

static void durable(sl_status st, void *arg) { sl_tw_done(arg, st, NULL); }

/* ---- the fixture ---- */

typedef struct fixture {
  sl_lt lt;
  int64_t session[2];
  mdt_keeper *keep[2];
  sl_serial *serial;
  size_t inline_max; /* for the next open_cursor; 0 = the default */
} fixture;

static const char *BROKER[2] = {"broker-a", "broker-b"};

/* The auditor checks for orphan ledgers every second (one pass in ten):
 * a cursor ledger outlives the epoch that created it here. */
#define PASSES "sluice_metadata_audit_passes_total{outcome=\"ok\"}"
static const char *const k_metadata_args[] = {"--audit_interval_ms", "100", "--metrics_listen",
                                               "127.0.0.1:0", NULL};

static int setup(void **state) {
  fixture *f = calloc(1, sizeof(*f));
  /* 4 bookies: a cursor ledger (E = 3) can replace one. */
  sl_lt_start_md(&f->lt, "cursor_persist", 4, NULL, k_metadata_args, NULL);
  for (int i = 0; i < 2; i++) {
    f->session[i] = mdt_open_broker(f->lt.meta, BROKER[i], 0);
    f->keep[i] = mdt_keeper_start(f->lt.meta, BROKER[i], f->session[i], 500);
  }
  assert_int_equal(sl_serial_create(&f->serial, NULL), SL_OK);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  sl_serial_unref(f->serial);
  for (int i = 0; i < 2; i++) mdt_keeper_stop(f->keep[i], NULL);
  sl_lt_stop(&f->lt);
  free(f);
  return 0;
}

/* Broker b takes partition over (releasing it from the other first);
 * returns the new epoch. */
static uint64_t take_over(fixture *f, const char *partition, int b, uint64_t old_epoch) {
  if (old_epoch != 0) {
    Sluice__V1__ReleaseOwnershipRequest req = SLUICE__V1__RELEASE_OWNERSHIP_REQUEST__INIT;
    req.partition = (char *)partition;
    req.session_id = f->session[1 - b];
    req.epoch = old_epoch;
    Sluice__V1__ReleaseOwnershipResponse *resp = NULL;
    sl_rpc_call_opts o = mdt_opts(10000);
    sl_err err = SL_ERR_INIT;
    mdt_expect(sl_metadata_service_release_ownership(f->lt.meta, &req, &resp, &o, &err), SL_OK,
               &err);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
  }
  Sluice__V1__AcquireOwnershipResponse *r =
      mdt_acquire(f->lt.meta, partition, BROKER[b], f->session[b]);
  assert_true(r->acquired);
  uint64_t epoch = r->owner->epoch;
  protobuf_c_message_free_unpacked(&r->base, NULL);
  return epoch;
}

typedef struct cur {
  fixture *f;
  sl_cursor *c;
  sl_tw lost;
} cur;

static void lost(sl_cursor *c, sl_status st, const char *details, void *arg) {
  (void)c;
  sl_tw_done(arg, st, details);
}

static void open_cursor(fixture *f, cur *h, const char *partition, uint64_t epoch,
                        int64_t entries, int persist_delay_ms) {
  sl_cursor_ledger chain = {CHAIN_LEDGER, entries, (uint64_t)entries * 100};
  sl_cursor_opts o = {0};
  o.ledgers = f->lt.client;
  o.metadata = f->lt.meta;
  o.serial = f->serial;
  o.partition = partition;
  o.subscription = "sub";
  o.epoch = epoch;
  o.initial = SL_CURSOR_EARLIEST;
  o.chain = (sl_cursor_chain){&chain, 1};
  o.persist_delay_ms = persist_delay_ms;
  o.inline_max_bytes = f->inline_max;
  o.on_lost = lost;
  o.lost_arg = &h->lost;
  h->f = f;
  sl_tw_init(&h->lost);
  sl_tw s;
  sl_tw_init(&s);
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_cursor_open_async(&o, opened, &s, &err), SL_OK);
  sl_tw_wait_n(&s, 1, WAIT_MS);
  if (s.st != SL_OK) fail_msg("open: %s %s", sl_status_str(s.st), s.details);
  h->c = s.out;
}

static void destroy_fn(void *arg) { sl_cursor_destroy(((cur *)arg)->c); }

/* As a crash: nothing more is flushed. */
static void crash(cur *h) {
  sl_tw_run_on(h->f->serial, destroy_fn, h);
  h->c = NULL;
}

/* Acks entries [from, to) with the given step; cb on the last one. */
typedef struct ack_run {
  cur *h;
  int64_t from, to, step;
  sl_tw *last_durable;
} ack_run;

static void ack_fn(void *arg) {
  ack_run *a = arg;
  for (int64_t e = a->from; e < a->to; e += a->step) {
    bool last = e + a->step >= a->to;
    sl_err err = SL_ERR_INIT;
    sl_status st = sl_cursor_ack(a->h->c, (sl_ml_pos){CHAIN_LEDGER, e}, 0, 1,
                                 last && a->last_durable ? durable : NULL, a->last_durable, &err);
    if (st != SL_OK) fail_msg("ack %" PRId64 ": %s", e, err.msg);
  }
}

static void ack_range(cur *h, int64_t from, int64_t to, int64_t step, sl_tw *durable_sync) {
  ack_run a = {h, from, to, step, durable_sync};
  sl_tw_run_on(h->f->serial, ack_fn, &a);
}

static void flush_fn(void *arg) {
  void **p = arg;
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_cursor_flush(p[0], durable, p[1], &err), SL_OK);
}

/* Flushes and waits until durable; returns the milliseconds it took. */
static double flush_wait(cur *h) {
  sl_tw s;
  sl_tw_init(&s);
  void *p[2] = {h->c, &s};
  int64_t t0 = sl_clock_mono_ns();
  sl_tw_run_on(h->f->serial, flush_fn, p);
  sl_tw_wait_n(&s, 1, WAIT_MS);
  assert_int_equal(s.st, SL_OK);
  return (double)(sl_clock_mono_ns() - t0) / 1e6;
}

typedef struct census {
  cur *h;
  int64_t n;
  int64_t unacked, wrong;    /* wrong: is_acked disagrees with expect */
  int64_t walked;            /* unacked found by next_unacked */
  bool (*expect_acked)(int64_t e);
  sl_cursor_backlog backlog;
} census;

static void census_fn(void *arg) {
  census *c = arg;
  for (int64_t e = 0; e < c->n; e++) {
    bool acked = sl_cursor_is_acked(c->h->c, (sl_ml_pos){CHAIN_LEDGER, e});
    c->unacked += !acked;
    c->wrong += acked != c->expect_acked(e);
  }
  sl_ml_pos p = sl_cursor_mark_delete(c->h->c);
  while (sl_cursor_next_unacked(c->h->c, p, &p)) c->walked++;
  sl_cursor_backlog_get(c->h->c, &c->backlog);
}

static census take_census(cur *h, int64_t n, bool (*expect_acked)(int64_t)) {
  census c = {.h = h, .n = n, .expect_acked = expect_acked};
  sl_tw_run_on(h->f->serial, census_fn, &c);
  return c;
}

/* ---- ack holes: every other of a million ---- */

static bool odd_or_below_1000(int64_t e) { return e % 2 == 1 || e < 1000; }

static void test_cursor__every_other_of_a_million(void **state) {
  fixture *f = *state;
  const char *P = PART "-holes";
  uint64_t epoch_a = take_over(f, P, 0, 0);
  cur a;
  open_cursor(f, &a, P, epoch_a, MILLION, 50);

  /* every odd entry acked: the state (~126 KB) goes to a cursor ledger */
  int64_t t0 = sl_clock_mono_ns();
  ack_range(&a, 1, MILLION, 2, NULL);
  double ack_ms = (double)(sl_clock_mono_ns() - t0) / 1e6;
  double snap_ms = flush_wait(&a);
  sl_cursor_stats st;
  sl_cursor_stats_get(a.c, &st);
  assert_true(st.in_ledger);
  assert_true(st.ack_ledger != 0);
  assert_true(st.stored_bytes > 64 * 1024);
  assert_true(st.stored_bytes < 140 * 1024);
  printf("cursor: 500,000 acks of 1,000,000 (every other): acked in %.0f ms; snapshot of %"
         PRIu64 " bytes into cursor ledger %" PRIu64 " in %.1f ms\n", ack_ms, st.stored_bytes,
         st.ack_ledger, snap_ms);

  /* a delta: the even entries below 1000 -> mark-delete moves to 999 */
  ack_range(&a, 0, 1000, 2, NULL);
  double delta_ms = flush_wait(&a);
  sl_cursor_stats_get(a.c, &st);
  assert_true(st.delta_bytes > 0);
  assert_int_equal(st.snapshots, 1);
  printf("cursor: delta of 500 acks appended (%" PRIu64 " bytes) in %.1f ms\n", st.delta_bytes,
         delta_ms);

  /* acked, never persisted: the old owner dies before its flush */
  ack_range(&a, 1000, 3000, 2, NULL);
  sl_cursor *old = a.c;
  (void)old;
  crash(&a);

  /* failover: broker b takes the partition, recovers the cursor */
  uint64_t epoch_b = take_over(f, P, 1, epoch_a);
  cur b;
  t0 = sl_clock_mono_ns();
  open_cursor(f, &b, P, epoch_b, MILLION, 50);
  double open_ms = (double)(sl_clock_mono_ns() - t0) / 1e6;
  census c = take_census(&b, MILLION, odd_or_below_1000);
  printf("cursor: recovered (ledger recovery + read + decode) in %.0f ms: %" PRId64
         " unacked of 1,000,000, backlog %" PRIu64 " entries / %" PRIu64 " bytes\n", open_ms,
         c.unacked, c.backlog.entries, c.backlog.bytes);
  assert_int_equal(c.wrong, 0);
  assert_int_equal(c.unacked, MILLION / 2 - 500);
  assert_int_equal(c.walked, MILLION / 2 - 500);
  assert_int_equal(c.backlog.entries, MILLION / 2 - 500);
  sl_ml_pos md = sl_cursor_mark_delete(b.c);
  assert_int_equal(md.entry_id, 999);

  /* Two orphan checks later, the cursor ledger of epoch a that the
   * cursor names is still there. */
  sl_ms_await_growth(f->lt.cluster, SL_NODE_METADATA, 0, PASSES, 21, 60000);
  size_t cursor_ledgers = 0;
  mdt_expect_named_ledgers(f->lt.meta, P, &cursor_ledgers);
  assert_int_equal(cursor_ledgers, 1);

  /* the new owner persists again (a new snapshot ledger, the recovered one
   * deleted), and a seek to the start makes the state small: inline */
  ack_range(&b, 1000, 1002, 2, NULL);
  flush_wait(&b);
  sl_cursor_stats_get(b.c, &st);
  assert_true(st.in_ledger);
  assert_true(st.ack_ledger != 0);
  crash(&b);
}

/* ---- crash between ack and persist, inline ---- */

static bool below_100(int64_t e) { return e < 100; }

static void test_cursor__crash_before_persist_inline(void **state) {
  fixture *f = *state;
  const char *P = PART "-crash";
  uint64_t epoch_a = take_over(f, P, 0, 0);
  cur a;
  open_cursor(f, &a, P, epoch_a, 1000, 600000 /* never on its own */);
  sl_tw first, second;
  sl_tw_init(&first);
  sl_tw_init(&second);
  ack_range(&a, 0, 100, 1, &first);
  double inline_ms = flush_wait(&a);
  sl_tw_wait_n(&first, 1, WAIT_MS);
  assert_int_equal(first.st, SL_OK); /* receipt: durable */
  sl_cursor_stats st;
  sl_cursor_stats_get(a.c, &st);
  assert_false(st.in_ledger);
  printf("cursor: inline flush (small record) in %.1f ms\n", inline_ms);

  ack_range(&a, 100, 200, 1, &second);
  ack_range(&a, 300, 400, 2, NULL); /* holes, also not persisted */
  crash(&a);
  sl_tw_wait_n(&second, 1, WAIT_MS);
  assert_int_equal(second.st, SL_ECANCELED); /* never durable: no receipt */

  uint64_t epoch_b = take_over(f, P, 1, epoch_a);
  cur b;
  open_cursor(f, &b, P, epoch_b, 1000, 50);
  census c = take_census(&b, 1000, below_100);
  assert_int_equal(c.wrong, 0);
  assert_int_equal(c.unacked, 900); /* 100..199 and the holes come again */
  assert_int_equal(sl_cursor_mark_delete(b.c).entry_id, 99);
  crash(&b);
}

/* ---- fencing: the old owner cannot persist after a take-over ---- */

static void test_cursor__old_owner_fenced(void **state) {
  fixture *f = *state;
  const char *P = PART "-fence";
  uint64_t epoch_a = take_over(f, P, 0, 0);
  cur a;
  open_cursor(f, &a, P, epoch_a, 1000, 600000);
  ack_range(&a, 0, 10, 1, NULL);
  flush_wait(&a);

  uint64_t epoch_b = take_over(f, P, 1, epoch_a);
  cur b;
  open_cursor(f, &b, P, epoch_b, 1000, 50);

  sl_tw late;
  sl_tw_init(&late);
  ack_range(&a, 10, 20, 1, &late);
  void *p[2] = {a.c, &late};
  sl_tw_run_on(f->serial, flush_fn, p);
  sl_tw_wait_n(&late, 1, WAIT_MS);
  assert_true(late.st == SL_EFENCED);
  sl_tw_wait_n(&a.lost, 1, WAIT_MS);
  sl_cursor_stats st;
  sl_cursor_stats_get(a.c, &st);
  assert_int_equal(st.state, SL_CURSOR_FENCED);
  crash(&a);
  crash(&b);
}

/* ---- seek, inline again, and a graceful close ---- */

static bool none(int64_t e) {
  (void)e;
  return false;
}

typedef struct seek_arg {
  sl_cursor *c;
  sl_tw *s;
} seek_arg;

static void seek_fn(void *arg) {
  seek_arg *a = arg;
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_cursor_seek(a->c, (sl_ml_pos){0, 0}, durable, a->s, &err), SL_OK);
}

static void closed_cb(sl_status st, const char *details, void *arg) {
  sl_tw_done(arg, st, details);
}

static void close_fn(void *arg) {
  seek_arg *a = arg;
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_cursor_close_async(a->c, closed_cb, a->s, &err), SL_OK);
}

static void test_cursor__seek_back_inline(void **state) {
  fixture *f = *state;
  const char *P = PART "-seek";
  uint64_t epoch = take_over(f, P, 0, 0);
  cur a;
  open_cursor(f, &a, P, epoch, 200000, 50);
  ack_range(&a, 1, 200000, 2, NULL); /* ~25 KB: inline with 64 KiB */
  flush_wait(&a);
  sl_cursor_stats st;
  sl_cursor_stats_get(a.c, &st);
  assert_false(st.in_ledger);
  printf("cursor: 100,000 holes over 200,000 entries: %" PRIu64 " bytes inline\n",
         st.stored_bytes);

  sl_tw s;
  sl_tw_init(&s);
  seek_arg sa = {a.c, &s};
  sl_tw_run_on(f->serial, seek_fn, &sa);
  sl_tw_wait_n(&s, 1, WAIT_MS);
  assert_int_equal(s.st, SL_OK);
  sl_tw closed;
  sl_tw_init(&closed);
  seek_arg ca = {a.c, &closed};
  sl_tw_run_on(f->serial, close_fn, &ca);
  sl_tw_wait_n(&closed, 1, WAIT_MS);
  assert_int_equal(closed.st, SL_OK);
  crash(&a);

  cur b;
  open_cursor(f, &b, P, epoch, 200000, 50);
  census c = take_census(&b, 200000, none);
  assert_int_equal(c.wrong, 0);
  crash(&b);
}

/* A cursor ledger that changed its ensemble (a bookie of it stopped) is
 * left at the next flush for a new ledger with a fresh snapshot, so the old
 * one, whose first entries lack a copy, is deleted rather than kept. */
static void test_cursor__ensemble_change_moves_to_a_new_ledger(void **state) {
  fixture *f = *state;
  const char *P = PART "-ensemble";
  uint64_t epoch = take_over(f, P, 0, 0);
  f->inline_max = 64;
  cur a;
  open_cursor(f, &a, P, epoch, 100000, 50);
  f->inline_max = 0;
  /* A snapshot large enough that deltas (each bounded by a whole bitmap
   * block) go after it rather than a new snapshot. */
  ack_range(&a, 1, 40000, 2, NULL);
  flush_wait(&a);
  sl_cursor_stats st;
  sl_cursor_stats_get(a.c, &st);
  assert_true(st.in_ledger);
  uint64_t first = st.ack_ledger, snapshots = st.snapshots;
  Sluice__V1__LedgerResponse *r = mdt_get_ledger(f->lt.meta, first);
  int victim = sl_lt_bookie_index(&f->lt, r->info->ensembles[0]->bookie_ids[0]);
  protobuf_c_message_free_unpacked(&r->base, NULL);

  sl_lt_stop_bookie(&f->lt, victim);
  /* A delta, whose append replaces the stopped bookie; the flush after it
   * (the timer's, or the next one here) moves to a new ledger. */
  ack_range(&a, 40001, 40100, 2, NULL);
  flush_wait(&a);
  ack_range(&a, 40101, 40200, 2, NULL);
  flush_wait(&a);
  sl_cursor_stats_get(a.c, &st);
  assert_int_not_equal(st.ack_ledger, first);
  assert_int_equal(st.snapshots, snapshots + 1);
  sl_lt_restart_bookie(&f->lt, victim);
  crash(&a);
}

/* ---- bad input ---- */

typedef struct bad_arg {
  sl_cursor *c;
} bad_arg;

static void bad_fn(void *arg) {
  bad_arg *b = arg;
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_cursor_ack(b->c, (sl_ml_pos){CHAIN_LEDGER, 5000}, 0, 1, NULL, NULL, &err),
                   SL_ERANGE);
  assert_int_equal(sl_cursor_ack(b->c, (sl_ml_pos){99, 0}, 0, 1, NULL, NULL, &err), SL_ERANGE);
  assert_int_equal(sl_cursor_ack(b->c, (sl_ml_pos){CHAIN_LEDGER, 5}, 4, 4, NULL, NULL, &err),
                   SL_EINVAL);
  assert_int_equal(sl_cursor_ack(b->c, (sl_ml_pos){CHAIN_LEDGER, 5}, 1, 4, NULL, NULL, &err),
                   SL_OK);
  assert_int_equal(sl_cursor_ack(b->c, (sl_ml_pos){CHAIN_LEDGER, 5}, 1, 3, NULL, NULL, &err),
                   SL_EINVAL);
  assert_false(sl_cursor_is_acked(b->c, (sl_ml_pos){CHAIN_LEDGER, 5}));
  assert_true(sl_cursor_is_batch_acked(b->c, (sl_ml_pos){CHAIN_LEDGER, 5}, 1));
  assert_int_equal(sl_cursor_seek(b->c, (sl_ml_pos){CHAIN_LEDGER, 1001}, NULL, NULL, &err),
                   SL_ERANGE);
}

static void test_cursor__bad_input(void **state) {
  fixture *f = *state;
  sl_cursor_opts o = {0};
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_cursor_open_async(&o, opened, NULL, &err), SL_EINVAL);
  const char *P = PART "-bad";
  uint64_t epoch = take_over(f, P, 0, 0);
  cur a;
  open_cursor(f, &a, P, epoch, 1000, 50);
  bad_arg b = {a.c};
  sl_tw_run_on(f->serial, bad_fn, &b);
  crash(&a);

  /* a stale epoch cannot even open (create) a cursor */
  o.ledgers = f->lt.client;
  o.metadata = f->lt.meta;
  o.serial = f->serial;
  o.partition = P;
  o.subscription = "other";
  o.epoch = epoch + 100;
  sl_tw s;
  sl_tw_init(&s);
  assert_int_equal(sl_cursor_open_async(&o, opened, &s, &err), SL_OK);
  sl_tw_wait_n(&s, 1, WAIT_MS);
  assert_true(s.st == SL_ESTALE_EPOCH || s.st == SL_EPRECOND);
  assert_null(s.out);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_cursor__every_other_of_a_million),
      cmocka_unit_test(test_cursor__crash_before_persist_inline),
      cmocka_unit_test(test_cursor__old_owner_fenced),
      cmocka_unit_test(test_cursor__seek_back_inline),
      cmocka_unit_test(test_cursor__ensemble_change_moves_to_a_new_ledger),
      cmocka_unit_test(test_cursor__bad_input),
  };
  curl_global_init(CURL_GLOBAL_DEFAULT);
  int failed = cmocka_run_group_tests(tests, setup, teardown);
  curl_global_cleanup();
  return failed;
}
