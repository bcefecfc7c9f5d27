/*
 * Fencing and recovery of ledgers whose writer died, against a real cluster
 * (etcd, metadata service, 4 bookies):
 *   - the writer "killed" (handle dropped without closing) mid-pipeline, 60
 *     times: the recovered end holds every acked entry, is held by Qa
 *     bookies, and nothing past it is served; recovery is idempotent;
 *   - a live old writer is fenced: its adds fail with SL_EFENCED, on_fenced
 *     runs, none of its entries lands past the recovered end;
 *   - a bookie wiped and restarted under the same id votes for nothing.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "bookie.slrpc.h"
#include "common/crc32c.h"
#include "metadata.slrpc.h"
#include "tests/bookie_testlib.h"
#include "tests/ledger_testlib.h"

static int setup(void **state) {
  sl_lt *t = calloc(1, sizeof(*t));
  sl_lt_start(t, "ledger_recovery", 4, NULL, NULL);
  *state = t;
  return 0;
}

static int teardown(void **state) {
  sl_lt *t = *state;
  sl_lt_stop(t);
  free(t);
  return 0;
}

/* Bookies of the ledger's last ensemble that hold `entry` (direct reads). */
static uint32_t copies(sl_lt *t, uint64_t ledger, int64_t entry) {
  Sluice__V1__GetLedgerRequest g = SLUICE__V1__GET_LEDGER_REQUEST__INIT;
  g.ledger_id = ledger;
  Sluice__V1__LedgerResponse *r = NULL;
  assert_int_equal(sl_metadata_service_get_ledger(t->meta, &g, &r, NULL, NULL), SL_OK);
  const Sluice__V1__EnsembleSegment *seg = r->info->ensembles[r->info->n_ensembles - 1];
  uint32_t n = 0;
  for (size_t s = 0; s < seg->n_bookie_ids; s++) {
    int i = sl_lt_bookie_index(t, seg->bookie_ids[s]);
    sl_rpc_channel *ch = sl_bktest_bookie_channel(t->cluster, i);
    Sluice__V1__ReadEntryRequest q = SLUICE__V1__READ_ENTRY_REQUEST__INIT;
    q.ledger_id = ledger;
    q.entry_id = entry;
    Sluice__V1__ReadEntryResponse *a = NULL;
    if (sl_bookie_service_read_entry(ch, &q, &a, NULL, NULL) == SL_OK) {
      n += a->found;
      protobuf_c_message_free_unpacked(&a->base, NULL);
    }
    sl_rpc_channel_destroy(ch);
  }
  protobuf_c_message_free_unpacked(&r->base, NULL);
  return n;
}

/* Kill the writer at a random point of its pipeline, 60 times, over three
 * quorum shapes. */
static void test_ledger_recovery__writer_killed_loop(void **state) {
  sl_lt *t = *state;
  static const uint32_t shapes[][3] = {{3, 2, 2}, {3, 3, 2}, {2, 2, 1}};
  srand(20261202);
  int recovered_past_acked = 0;
  for (int it = 0; it < 60; it++) {
    const uint32_t *q = shapes[it % 3];
    sl_ledger *lh = sl_lt_create(t, q[0], q[1], q[2], 1, NULL, NULL);
    uint64_t id = sl_ledger_id(lh);
    sl_lt_appends a;
    sl_lt_appends_init(&a, id);
    int n = rand() % 300;
    int cut = n ? rand() % (n + 1) : 0;
    for (int i = 0; i < n; i++) assert_int_equal(sl_lt_append(lh, &a), SL_OK);
    sl_lt_wait_done(&a, cut, 30000);
    sl_lt_destroy(lh); /* the writer dies: the ledger stays OPEN */
    int64_t acked = a.last_ok;
    assert_false(a.out_of_order);
    assert_false(a.ok_after_fail);

    sl_ledger *r = NULL;
    char why[256];
    sl_status st = sl_lt_recover(t, id, 2, &r, why, sizeof(why));
    if (st != SL_OK) fail_msg("iteration %d: recover: %s: %s", it, sl_status_str(st), why);
    int64_t end = sl_ledger_last_entry(r);
    if (end < acked) fail_msg("iteration %d: end %lld below acked %lld", it,
                              (long long)end, (long long)acked);
    assert_true(end < n);
    recovered_past_acked += end > acked;
    if (end >= 0) {
      assert_int_equal(sl_lt_read_check(r, 0, end, NULL), SL_OK);
      assert_true(copies(t, id, end) >= q[2]);
    }
    assert_int_equal(sl_lt_read_check(r, 0, end + 1, NULL), SL_ERANGE);
    sl_lt_destroy(r);

    /* Idempotent, and a newer epoch finds it closed at the same end. */
    assert_int_equal(sl_lt_recover(t, id, 2, &r, why, sizeof(why)), SL_OK);
    assert_int_equal(sl_ledger_last_entry(r), end);
    sl_lt_destroy(r);
    assert_int_equal(sl_lt_recover(t, id, 3, &r, why, sizeof(why)), SL_OK);
    assert_int_equal(sl_ledger_last_entry(r), end);
    sl_lt_destroy(r);
    r = sl_lt_open(t, id);
    assert_int_equal(sl_ledger_last_entry(r), end);
    sl_lt_destroy(r);
    sl_lt_appends_release(&a);
  }
  print_message("recovery loop: 60 iterations, %d recovered entries past the last ack\n",
                recovered_past_acked);
}

typedef struct fenced_flag {
  int calls;
  sl_status st;
} fenced_flag;

static void on_fenced(sl_ledger *lh, sl_status st, const char *details, void *arg) {
  (void)lh;
  (void)details;
  fenced_flag *f = arg;
  __atomic_store_n(&f->st, st, __ATOMIC_SEQ_CST);
  __atomic_add_fetch(&f->calls, 1, __ATOMIC_SEQ_CST);
}

/* A live old writer after a take-over: its adds are refused, its handle
 * reports on_fenced, and none of its entries appears past the end. */
static void test_ledger_recovery__old_writer_fenced(void **state) {
  sl_lt *t = *state;
  static fenced_flag f; /* static: outlives the handle if an assert fails */
  sl_ledger *w = sl_lt_create(t, 3, 2, 2, 1, on_fenced, &f);
  uint64_t id = sl_ledger_id(w);
  sl_lt_appends a;
  sl_lt_appends_init(&a, id);
  for (int i = 0; i < 100; i++) assert_int_equal(sl_lt_append(w, &a), SL_OK);
  sl_lt_wait_done(&a, 100, 30000);
  for (int i = 0; i < 50; i++) assert_int_equal(sl_lt_append(w, &a), SL_OK);

  sl_ledger *r = NULL;
  char why[256];
  assert_int_equal(sl_lt_recover(t, id, 2, &r, why, sizeof(why)), SL_OK);
  int64_t end = sl_ledger_last_entry(r);
  sl_lt_wait_done(&a, 150, 30000);
  assert_true(end >= a.last_ok);

  /* Every later add is refused by the fenced bookies. */
  for (int i = 0; i < 10; i++) {
    sl_status st = sl_lt_append(w, &a);
    assert_true(st == SL_OK || st == SL_EFENCED);
    if (st == SL_EFENCED) break;
  }
  sl_lt_wait_done(&a, a.n, 30000);
  assert_true(a.last_ok <= end);
  assert_int_equal(a.first_fail, SL_EFENCED);
  assert_false(a.ok_after_fail);
  assert_int_equal(__atomic_load_n(&f.calls, __ATOMIC_SEQ_CST), 1);
  sl_ledger_stats s;
  sl_ledger_stats_get(w, &s);
  assert_int_equal(s.state, SL_LEDGER_FENCED);
  assert_int_equal(sl_lt_append(w, &a), SL_EFENCED);
  assert_int_equal(sl_lt_close(w), SL_EFENCED);
  sl_lt_destroy(w);

  /* What the ledger serves ends at the recovered end, with the right bytes. */
  assert_int_equal(sl_lt_read_check(r, 0, end, NULL), SL_OK);
  assert_int_equal(sl_lt_read_check(r, 0, end + 1, NULL), SL_ERANGE);
  sl_lt_destroy(r);
  sl_lt_appends_release(&a);
}

/* E = Qw = 3, Qa = 2. Entries 20..29 are acked by bookies A and B only (C
 * is stopped). Then C restarts without them, A is wiped and restarted under
 * its id (a new instance), B is down. A's "not found" is no vote: with
 * only C's valid "not found" recovery must not decide that 20..29 never
 * completed. With B back, recovery finds them. */
static void test_ledger_recovery__wiped_bookie_votes_for_nothing(void **state) {
  sl_lt *t = *state;
  sl_ledger_client_opts co = SL_LEDGER_CLIENT_OPTS_INIT;
  co.metadata = t->meta;
  co.add_timeout_ms = 120000; /* no ensemble change while C is stopped */
  sl_ledger_client *patient = NULL;
  assert_int_equal(sl_ledger_client_create(&co, &patient, NULL), SL_OK);
  sl_ledger_client *saved = t->client;
  t->client = patient;
  sl_ledger *lh = sl_lt_create(t, 3, 3, 2, 1, NULL, NULL);
  t->client = saved;
  uint64_t id = sl_ledger_id(lh);
  int A = sl_lt_ensemble_bookie(t, lh, 0), B = sl_lt_ensemble_bookie(t, lh, 1),
      C = sl_lt_ensemble_bookie(t, lh, 2);
  sl_lt_appends a;
  sl_lt_appends_init(&a, id);
  for (int i = 0; i < 20; i++) assert_int_equal(sl_lt_append(lh, &a), SL_OK);
  sl_lt_wait_done(&a, 20, 30000);
  sl_lt_signal_bookie(t, C, SIGSTOP);
  for (int i = 0; i < 10; i++) assert_int_equal(sl_lt_append(lh, &a), SL_OK);
  sl_lt_wait_done(&a, 30, 30000);
  assert_int_equal(a.ok, 30);
  sl_lt_destroy(lh);
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_cluster_kill9(t->cluster, SL_NODE_BOOKIE, C, &err), SL_OK);
  assert_int_equal(sl_cluster_restart(t->cluster, SL_NODE_BOOKIE, C, &err), SL_OK);
  sl_lt_wipe_bookie(t, A);
  assert_int_equal(sl_cluster_kill9(t->cluster, SL_NODE_BOOKIE, B, &err), SL_OK);

  sl_ledger *r = NULL;
  char why[256];
  sl_status st = sl_lt_recover(t, id, 2, &r, why, sizeof(why));
  assert_int_equal(st, SL_EUNAVAIL);
  assert_null(r);
  print_message("recovery without B: %s\n", why);

  /* A recoverer retries while answers are missing (B reconnecting). */
  assert_int_equal(sl_cluster_restart(t->cluster, SL_NODE_BOOKIE, B, &err), SL_OK);
  int64_t deadline = sl_clock_mono_ms() + 30000;
  while ((st = sl_lt_recover(t, id, 2, &r, why, sizeof(why))) == SL_EUNAVAIL &&
         sl_clock_mono_ms() < deadline)
    usleep(200 * 1000);
  assert_int_equal(st, SL_OK);
  assert_int_equal(sl_ledger_last_entry(r), 29);
  assert_int_equal(sl_lt_read_check(r, 0, 29, NULL), SL_OK);
  sl_lt_destroy(r);
  sl_lt_appends_release(&a);
  sl_ledger_client_destroy(patient);
}

/* A bookie of the last ensemble is dead during recovery: write-backs that
 * need it go to a replacement through a segment the recovery adds. */
static void test_ledger_recovery__dead_bookie_replaced(void **state) {
  sl_lt *t = *state;
  sl_ledger *lh = sl_lt_create(t, 3, 2, 2, 1, NULL, NULL);
  uint64_t id = sl_ledger_id(lh);
  int dead = sl_lt_ensemble_bookie(t, lh, 1);
  sl_lt_appends a;
  sl_lt_appends_init(&a, id);
  for (int i = 0; i < 300; i++) assert_int_equal(sl_lt_append(lh, &a), SL_OK);
  sl_lt_wait_done(&a, 150, 30000);
  sl_lt_destroy(lh);
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_cluster_kill9(t->cluster, SL_NODE_BOOKIE, dead, &err), SL_OK);

  sl_ledger *r = NULL;
  char why[256];
  sl_status st = sl_lt_recover(t, id, 2, &r, why, sizeof(why));
  if (st != SL_OK) fail_msg("recover: %s: %s", sl_status_str(st), why);
  int64_t end = sl_ledger_last_entry(r);
  assert_true(end >= a.last_ok);
  assert_int_equal(sl_lt_read_check(r, 0, end, NULL), SL_OK);
  for (uint32_t slot = 0; slot < 3; slot++)
    assert_int_not_equal(sl_lt_ensemble_bookie(t, r, slot), dead);
  sl_lt_destroy(r);
  sl_lt_appends_release(&a);
  assert_int_equal(sl_cluster_restart(t->cluster, SL_NODE_BOOKIE, dead, &err), SL_OK);
  sl_lt_wait_registered(t, dead, 20000);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_ledger_recovery__writer_killed_loop),
      cmocka_unit_test(test_ledger_recovery__old_writer_fenced),
      cmocka_unit_test(test_ledger_recovery__wiped_bookie_votes_for_nothing),
      cmocka_unit_test(test_ledger_recovery__dead_bookie_replaced),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
