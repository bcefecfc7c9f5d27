/*
 * The ledger sweep against a real bookie store in a temp dir and a scripted
 * MetadataService in the same process (real gRPC over loopback) that
 * answers GetLedger by ledger id. Ledgers 1-4 hold entries written with a
 * password; by default the service says 1 exists, 2 and 4 are deleted
 * (their tombstones), and 3 is unknown.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "bookie/bookie_store.h"
#include "bookie/ledger_sweep.h"
#include "bookie/testing/scripted_metadata.h"
#include "bookie/testing/test_util.h"
#include "common/clock.h"
#include "common/crc32c.h"
#include "common/metrics.h"
#include "common/rpc.h"
#include "common/rpc_server.h"
#include "common/testing.h"
#include "metadata.slrpc.h"

#define N_IDS 8
#define PASSWORD "ledger-secret"

/* ---- the scripted metadata service ---- */

/* What an SL_OK answer holds (re-replication of this bookie, "me"). */
enum {
  SHAPE_PLAIN = 0,       /* no re-replication record */
  SHAPE_MOVED,           /* CLOSED, "me" replaced and named nowhere */
  SHAPE_STILL_NAMED,     /* CLOSED, "me" replaced in one segment, kept in another */
  SHAPE_MOVED_OPEN,      /* as MOVED, but OPEN */
};

typedef struct fake {
  pthread_mutex_t mu;
  pthread_cond_t cv;           /* a lookup arrived */
  sl_status answer[N_IDS];     /* by ledger id */
  int shape[N_IDS];            /* for SL_OK answers: a SHAPE_* */
  bool hang;                   /* leave every lookup unanswered */
  int lookups;                 /* GetLedger calls */
  int lookups_of[N_IDS];
  sl_rpc_server *srv;
  char target[64];
} fake;

static void get_ledger(sl_rpc_call *call, const Sluice__V1__GetLedgerRequest *req,
                       void *ctx) {
  fake *f = ctx;
  uint64_t id = req->ledger_id;
  pthread_mutex_lock(&f->mu);
  f->lookups++;
  if (id < N_IDS) f->lookups_of[id]++;
  sl_status st = id < N_IDS ? f->answer[id] : SL_ENOTFOUND;
  bool hang = f->hang;
  pthread_cond_broadcast(&f->cv);
  pthread_mutex_unlock(&f->mu);
  if (hang) return;
  if (st != SL_OK) {
    char msg[64];
    snprintf(msg, sizeof(msg), "ledger %llu: %s", (unsigned long long)id, sl_status_str(st));
    sl_rpc_call_finish(call, st, msg, NULL);
    return;
  }
  Sluice__V1__LedgerInfo info = SLUICE__V1__LEDGER_INFO__INIT;
  info.ledger_id = id;
  pthread_mutex_lock(&f->mu);
  int shape = id < N_IDS ? f->shape[id] : SHAPE_PLAIN;
  pthread_mutex_unlock(&f->mu);
  char *seg0[] = {"b1", "b2", "b3"}, *seg1[] = {"b1", "me", "b3"};
  Sluice__V1__EnsembleSegment s0 = SLUICE__V1__ENSEMBLE_SEGMENT__INIT, s1 = s0;
  s0.bookie_ids = seg0;
  s0.n_bookie_ids = 3;
  s1.bookie_ids = seg1;
  s1.n_bookie_ids = 3;
  s1.first_entry = 1;
  Sluice__V1__EnsembleSegment *segs[] = {&s0, &s1};
  Sluice__V1__Rereplication rr = SLUICE__V1__REREPLICATION__INIT;
  rr.from_bookie = "me";
  rr.to_bookie = "b2";
  Sluice__V1__Rereplication *rrs[] = {&rr};
  if (shape != SHAPE_PLAIN) {
    info.ensembles = segs;
    info.n_ensembles = shape == SHAPE_STILL_NAMED ? 2 : 1;
    info.rereplications = rrs;
    info.n_rereplications = 1;
    info.state = shape == SHAPE_MOVED_OPEN ? SLUICE__V1__LEDGER_STATE__LEDGER_STATE_OPEN
                                           : SLUICE__V1__LEDGER_STATE__LEDGER_STATE_CLOSED;
  }
  Sluice__V1__LedgerResponse r = SLUICE__V1__LEDGER_RESPONSE__INIT;
  r.info = &info;
  r.version = 1;
  sl_metadata_service_get_ledger_reply(call, &r);
}

static fake *fake_start(void) {
  fake *f = calloc(1, sizeof(*f));
  assert_non_null(f);
  pthread_mutex_init(&f->mu, NULL);
  pthread_cond_init(&f->cv, NULL);
  for (int i = 0; i < N_IDS; i++) f->answer[i] = SL_ENOTFOUND;
  f->answer[1] = SL_OK;
  f->answer[2] = SL_EDELETED;
  f->answer[3] = SL_ENOTFOUND;
  f->answer[4] = SL_EDELETED;
  sl_metadata_service_handlers h;
  memset(&h, 0, sizeof(h));
  h.get_ledger = get_ledger;
  f->srv = sl_test_md_start(&h, f, f->target, sizeof(f->target));
  return f;
}

static void fake_stop(fake *f) {
  sl_rpc_server_destroy(f->srv);
  pthread_cond_destroy(&f->cv);
  pthread_mutex_destroy(&f->mu);
  free(f);
}

static void fake_set(fake *f, uint64_t ledger, sl_status st) {
  pthread_mutex_lock(&f->mu);
  f->answer[ledger] = st;
  pthread_mutex_unlock(&f->mu);
}

static int fake_lookups(fake *f) {
  pthread_mutex_lock(&f->mu);
  int n = f->lookups;
  pthread_mutex_unlock(&f->mu);
  return n;
}

/* Waits until `ledger` was looked up n times; false after timeout_ms. */
static bool await_lookups_of(fake *f, uint64_t ledger, int n, int64_t timeout_ms) {
  struct timespec deadline = sl_test_deadline_ms((int)timeout_ms);
  pthread_mutex_lock(&f->mu);
  while (f->lookups_of[ledger] < n &&
         pthread_cond_timedwait(&f->cv, &f->mu, &deadline) != ETIMEDOUT) {
  }
  bool ok = f->lookups_of[ledger] >= n;
  pthread_mutex_unlock(&f->mu);
  return ok;
}

/* ---- the store ---- */

/* Holds the journal's syncs while closed, so that requests stay in flight. */
static sl_test_gate g_gate = SL_TEST_GATE_INIT;

static const char *payload_of(uint64_t ledger, int64_t entry) {
  static const char *const p[N_IDS][2] = {
      {"", ""}, {"one-0", "one-1"}, {"two-0", "two-1"}, {"three-0", "three-1"},
      {"four-0", "four-1"}, {"five-0", "five-1"}, {"", ""}, {"", ""}};
  return p[ledger][entry % 2];
}

static sl_bookie_add_req make_add(uint64_t ledger, int64_t entry) {
  const char *payload = payload_of(ledger, entry);
  uint32_t len = (uint32_t)strlen(payload);
  sl_bookie_add_req r = {
      .ledger = ledger, .entry = entry, .epoch = 1, .lac = entry - 1,
      .payload = payload, .len = len, .crc = sl_entry_crc(ledger, entry, payload, len),
      .password = PASSWORD, .password_len = strlen(PASSWORD)};
  return r;
}

static void add_entry(sl_bookie_store *s, uint64_t ledger, int64_t entry) {
  sl_test_waiter w;
  sl_test_waiter_init(&w);
  sl_bookie_add_req r = make_add(ledger, entry);
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_bookie_store_add(s, &r, sl_test_waiter_cb, &w, &err), SL_OK);
  assert_true(sl_test_waiter_wait(&w, 1, (int)sl_test_scaled_ms(10000)));
  assert_int_equal(w.ok, 1);
  sl_test_waiter_release(&w);
}

typedef struct fixture {
  char *dir;
  sl_bookie_store *store;
  fake *f;
  sl_metrics *metrics;
  sl_sweep *sw;
} fixture;

/* A store holding ledgers 1-4 with entries 0 and 1, and the fake service. */
static void fixture_init(fixture *x) {
  memset(x, 0, sizeof(*x));
  x->dir = sl_test_mkdtemp("ledger_sweep");
  sl_bookie_store_opts o = SL_BOOKIE_STORE_OPTS_INIT;
  o.journal_segment_bytes = 1u << 20;
  o.checkpoint_interval_ms = 600000;
  o.disk_interval_ms = 600000;
  o.leveldb.write_buffer_bytes = 4u << 20;
  o.leveldb.cache_bytes = 1u << 20;
  o.sync_hook = sl_test_gate_hook;
  o.hook_arg = &g_gate;
  sl_test_gate_set(&g_gate, false, false);
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_bookie_store_open(x->dir, &o, &x->store, &err);
  if (st != SL_OK) print_error("open %s: %s\n", x->dir, sl_err_msg(&err, st));
  assert_int_equal(st, SL_OK);
  for (uint64_t l = 1; l <= 4; l++) {
    add_entry(x->store, l, 0);
    add_entry(x->store, l, 1);
  }
  x->f = fake_start();
  x->metrics = sl_metrics_create();
}

static void fixture_release(fixture *x) {
  sl_sweep_stop(x->sw);
  fake_stop(x->f);
  sl_bookie_store_close(x->store);
  sl_metrics_destroy(x->metrics);
  sl_test_rmdtemp(x->dir);
}

static void sweep_start_as(fixture *x, const char *bookie_id, int interval_ms,
                           int lookups_per_second, int rpc_timeout_ms) {
  sl_sweep_opts o = SL_SWEEP_OPTS_INIT;
  o.target = x->f->target;
  o.bookie_id = bookie_id;
  o.interval_ms = interval_ms;
  o.lookups_per_second = lookups_per_second;
  o.rpc_timeout_ms = rpc_timeout_ms;
  o.metrics = x->metrics;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_sweep_start(x->store, &o, &x->sw, &err);
  if (st != SL_OK) print_error("sweep start: %s\n", sl_err_msg(&err, st));
  assert_int_equal(st, SL_OK);
}

static double metric(fixture *x, const char *name, const char *outcome) {
  const char *const labels[] = {"outcome", outcome, NULL};
  double v = -1;
  assert_int_equal(sl_metrics_value(x->metrics, name, outcome ? labels : NULL, &v), SL_OK);
  return v;
}

static void sweep_start(fixture *x, int interval_ms, int lookups_per_second,
                        int rpc_timeout_ms) {
  sweep_start_as(x, NULL, interval_ms, lookups_per_second, rpc_timeout_ms);
}

/* Both entries of `ledger` read back intact. */
static void expect_kept(sl_bookie_store *s, uint64_t ledger) {
  for (int64_t e = 0; e < 2; e++) {
    sl_ledger_entry got = SL_LEDGER_ENTRY_INIT;
    sl_err err = SL_ERR_INIT;
    sl_status st = sl_bookie_store_read(s, ledger, e, &got, &err);
    if (st != SL_OK)
      print_error("ledger %llu entry %lld: %s\n", (unsigned long long)ledger, (long long)e,
                  sl_err_msg(&err, st));
    assert_int_equal(st, SL_OK);
    const char *want = payload_of(ledger, e);
    assert_int_equal(got.len, strlen(want));
    assert_memory_equal(got.payload, want, got.len);
    sl_ledger_entry_release(&got);
  }
}

/* `ledger` is a tombstone here. */
static void expect_dropped(sl_bookie_store *s, uint64_t ledger) {
  sl_ledger_entry got = SL_LEDGER_ENTRY_INIT;
  assert_int_equal(sl_bookie_store_read(s, ledger, 0, &got, NULL), SL_EDELETED);
  sl_ledger_meta m;
  assert_int_equal(sl_bookie_store_ledger_meta(s, ledger, &m, NULL), SL_EDELETED);
}

/* ---- cases ---- */

static void test_ledger_sweep__drops_only_deleted_ledgers(void **state) {
  (void)state;
  fixture x;
  fixture_init(&x);
  sweep_start(&x, 0, 1000, 0);
  sl_sweep_result r;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_sweep_run_once(x.sw, &r, &err);
  if (st != SL_OK) print_error("run_once: %s\n", sl_err_msg(&err, st));
  assert_int_equal(st, SL_OK);
  assert_int_equal(r.ended_by, SL_OK);
  assert_int_equal(r.ledgers, 4);
  assert_int_equal(r.checked, 4);
  assert_int_equal(r.dropped, 2);
  assert_int_equal(r.kept_unknown, 1);
  assert_int_equal(r.busy, 0);
  expect_kept(x.store, 1);
  expect_dropped(x.store, 2);
  expect_kept(x.store, 3); /* NOT_FOUND without a tombstone never deletes */
  expect_dropped(x.store, 4);
  uint64_t *ids = NULL;
  size_t n = 0;
  sl_bookie_store_list_ledgers(x.store, &ids, &n);
  assert_int_equal(n, 2);
  assert_int_equal(ids[0], 1);
  assert_int_equal(ids[1], 3);
  free(ids);
  /* The next pass looks only at what is left. */
  assert_int_equal(sl_sweep_run_once(x.sw, &r, &err), SL_OK);
  assert_int_equal(r.checked, 2);
  assert_int_equal(r.dropped, 0);
  assert_int_equal(r.kept_unknown, 1);
  assert_int_equal(fake_lookups(x.f), 6);
  assert_true(metric(&x, "sluice_bookie_sweep_passes_total", "complete") == 2);
  assert_true(metric(&x, "sluice_bookie_sweep_passes_total", "ended_early") == 0);
  assert_true(metric(&x, "sluice_bookie_sweep_dropped_ledgers_total", NULL) == 2);
  assert_true(metric(&x, "sluice_bookie_sweep_unknown_ledgers_total", NULL) == 2);
  fixture_release(&x);
}

/* A CLOSED ledger that re-replication moved away from this bookie is
 * dropped; one that still names it, an OPEN one, or any with the bookie's
 * id unknown to the sweep, is kept. */
static void test_ledger_sweep__drops_ledgers_moved_away(void **state) {
  (void)state;
  fixture x;
  fixture_init(&x);
  static const int shapes[] = {0, SHAPE_MOVED, SHAPE_STILL_NAMED, SHAPE_MOVED_OPEN,
                               SHAPE_PLAIN};
  for (uint64_t l = 1; l <= 4; l++) {
    fake_set(x.f, l, SL_OK);
    pthread_mutex_lock(&x.f->mu);
    x.f->shape[l] = shapes[l];
    pthread_mutex_unlock(&x.f->mu);
  }
  sl_sweep_result r;
  sweep_start(&x, 0, 1000, 0); /* no bookie id: nothing is "moved" */
  assert_int_equal(sl_sweep_run_once(x.sw, &r, NULL), SL_OK);
  assert_int_equal(r.dropped, 0);
  sl_sweep_stop(x.sw);
  sweep_start_as(&x, "me", 0, 1000, 0);
  assert_int_equal(sl_sweep_run_once(x.sw, &r, NULL), SL_OK);
  assert_int_equal(r.checked, 4);
  assert_int_equal(r.dropped, 1);
  assert_int_equal(r.moved, 1);
  expect_dropped(x.store, 1);
  expect_kept(x.store, 2);
  expect_kept(x.store, 3);
  expect_kept(x.store, 4);
  assert_true(metric(&x, "sluice_bookie_sweep_moved_ledgers_total", NULL) == 1);
  assert_true(metric(&x, "sluice_bookie_sweep_dropped_ledgers_total", NULL) == 0);
  fixture_release(&x);
}

static void test_ledger_sweep__lookup_error_ends_pass(void **state) {
  (void)state;
  fixture x;
  fixture_init(&x);
  fake_set(x.f, 1, SL_EUNAVAIL);
  sweep_start(&x, 0, 1000, 0);
  sl_sweep_result r;
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_sweep_run_once(x.sw, &r, &err), SL_EUNAVAIL);
  assert_int_equal(r.ended_by, SL_EUNAVAIL);
  assert_non_null(strstr(err.msg, "ledger 1"));
  assert_int_equal(r.checked, 0);
  assert_int_equal(r.dropped, 0);
  assert_int_equal(fake_lookups(x.f), 1); /* 2 and 4 were never asked about */
  for (uint64_t l = 1; l <= 4; l++) expect_kept(x.store, l);
  assert_true(metric(&x, "sluice_bookie_sweep_passes_total", "ended_early") == 1);
  assert_true(metric(&x, "sluice_bookie_sweep_passes_total", "complete") == 0);
  /* The next pass starts over. */
  fake_set(x.f, 1, SL_OK);
  assert_int_equal(sl_sweep_run_once(x.sw, &r, &err), SL_OK);
  assert_int_equal(r.dropped, 2);
  expect_dropped(x.store, 2);
  expect_dropped(x.store, 4);
  fixture_release(&x);
}

static void test_ledger_sweep__thread_runs_passes(void **state) {
  (void)state;
  fixture x;
  fixture_init(&x);
  sweep_start(&x, 20, 1000, 0);
  /* Ledger 1 looked up a second time: the second pass began, so the first
   * one, and its drops (durable before it went on), are over. */
  assert_true(await_lookups_of(x.f, 1, 2, sl_test_scaled_ms(10000)));
  expect_kept(x.store, 1);
  expect_dropped(x.store, 2);
  expect_kept(x.store, 3);
  expect_dropped(x.store, 4);
  assert_true(metric(&x, "sluice_bookie_sweep_dropped_ledgers_total", NULL) == 2);
  fixture_release(&x);
}

static bool first_answer_taken(void *arg) {
  return metric(arg, "sluice_bookie_sweep_unknown_ledgers_total", NULL) >= 1;
}

static void test_ledger_sweep__stop_is_prompt_while_rate_limited(void **state) {
  (void)state;
  fixture x;
  fixture_init(&x);
  /* One lookup a second: after the first, the pass waits about 1 s. The
   * first answer is NOT_FOUND so that the unknown counter says when the
   * sweep has it and went on to that wait (stop must end the wait, not a
   * lookup in flight). */
  fake_set(x.f, 1, SL_ENOTFOUND);
  sweep_start(&x, 10, 1, 0);
  assert_true(sl_test_poll(first_answer_taken, &x, (int)sl_test_scaled_ms(10000)));
  int64_t t0 = sl_clock_mono_ms();
  sl_sweep_stop(x.sw);
  x.sw = NULL;
  int64_t took = sl_clock_mono_ms() - t0;
  if (took >= sl_test_scaled_ms(400)) print_error("stop took %lld ms\n", (long long)took);
  assert_true(took < sl_test_scaled_ms(400));
  assert_int_equal(fake_lookups(x.f), 1);
  assert_true(metric(&x, "sluice_bookie_sweep_passes_total", "ended_early") == 1);
  assert_true(metric(&x, "sluice_bookie_sweep_passes_total", "complete") == 0);
  for (uint64_t l = 1; l <= 4; l++) expect_kept(x.store, l);
  fixture_release(&x);
}

static void test_ledger_sweep__stop_cancels_hung_lookup(void **state) {
  (void)state;
  fixture x;
  fixture_init(&x);
  pthread_mutex_lock(&x.f->mu);
  x.f->hang = true;
  pthread_mutex_unlock(&x.f->mu);
  sweep_start(&x, 10, 1000, 30000);
  assert_true(await_lookups_of(x.f, 1, 1, sl_test_scaled_ms(10000)));
  int64_t t0 = sl_clock_mono_ms();
  sl_sweep_stop(x.sw);
  x.sw = NULL;
  int64_t took = sl_clock_mono_ms() - t0;
  if (took >= sl_test_scaled_ms(1000)) print_error("stop took %lld ms\n", (long long)took);
  assert_true(took < sl_test_scaled_ms(1000));
  assert_int_equal(fake_lookups(x.f), 1);
  for (uint64_t l = 1; l <= 4; l++) expect_kept(x.store, l);
  fixture_release(&x);
}

static void test_ledger_sweep__busy_ledger_waits_for_next_pass(void **state) {
  (void)state;
  fixture x;
  fixture_init(&x);
  fake_set(x.f, 4, SL_OK); /* only 2 is deleted: no other drop waits on the gate */
  sweep_start(&x, 0, 1000, 0);
  /* An add to ledger 2 held in flight by the journal. */
  sl_test_gate_set(&g_gate, true, false);
  sl_test_waiter w;
  sl_test_waiter_init(&w);
  sl_bookie_add_req add = make_add(2, 2);
  assert_int_equal(sl_bookie_store_add(x.store, &add, sl_test_waiter_cb, &w, NULL), SL_OK);
  sl_test_gate_wait_blocked(&g_gate);
  sl_sweep_result r;
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_sweep_run_once(x.sw, &r, &err), SL_OK);
  assert_int_equal(r.busy, 1);
  assert_int_equal(r.dropped, 0);
  expect_kept(x.store, 2);
  sl_test_gate_set(&g_gate, false, false);
  assert_true(sl_test_waiter_wait(&w, 1, (int)sl_test_scaled_ms(10000)));
  sl_test_waiter_release(&w);
  assert_int_equal(sl_sweep_run_once(x.sw, &r, &err), SL_OK);
  assert_int_equal(r.busy, 0);
  assert_int_equal(r.dropped, 1);
  expect_dropped(x.store, 2);
  fixture_release(&x);
}

static void test_ledger_sweep__bad_options(void **state) {
  (void)state;
  sl_sweep *sw = NULL;
  sl_sweep_opts o = SL_SWEEP_OPTS_INIT;
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_sweep_start(NULL, &o, &sw, &err), SL_EINVAL);
  assert_null(sw);
  sl_sweep_stop(NULL);
}

/* Every server and channel is gone; gRPC tears down on its own threads, and
 * the process must not exit under them. */
static int teardown(void **state) {
  (void)state;
  return sl_rpc_wait_shutdown(30000) == SL_OK ? 0 : -1;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_ledger_sweep__drops_only_deleted_ledgers),
      cmocka_unit_test(test_ledger_sweep__drops_ledgers_moved_away),
      cmocka_unit_test(test_ledger_sweep__lookup_error_ends_pass),
      cmocka_unit_test(test_ledger_sweep__thread_runs_passes),
      cmocka_unit_test(test_ledger_sweep__stop_is_prompt_while_rate_limited),
      cmocka_unit_test(test_ledger_sweep__stop_cancels_hung_lookup),
      cmocka_unit_test(test_ledger_sweep__busy_ledger_waits_for_next_pass),
      cmocka_unit_test(test_ledger_sweep__bad_options),
  };
  return cmocka_run_group_tests(tests, NULL, teardown);
}
