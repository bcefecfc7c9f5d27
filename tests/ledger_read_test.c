/*
 * Backlog reads of the ledger client against a real cluster (etcd, metadata
 * service, 3 bookies with /metrics): a closed, striped ledger (E=3, Qw=2)
 * is read through ReadEntries ranges, not one ReadEntry per entry (counted
 * on the bookies' /metrics), and still reads back whole and in order when a
 * bookie of its ensemble is silent (SIGSTOP) or dead (kill -9): what a range
 * does not bring falls back to ReadEntry on the other replicas.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <curl/curl.h>

#include "tests/ledger_testlib.h"
#include "tests/metrics_scrape.h"

enum { N = 600, BOOKIES = 3 };

static const char *const k_bookie_args[] = {"--metrics_listen", "127.0.0.1:0", NULL};

static int setup(void **state) {
  sl_lt *t = calloc(1, sizeof(*t));
  sl_lt_start(t, "ledger_read", BOOKIES, k_bookie_args, NULL);
  *state = t;
  return 0;
}

/* Read counters of one bookie. */
typedef struct reads {
  double unary;    /* ReadEntry calls */
  double ranges;   /* ReadEntries streams */
  double entries;  /* entries read and found */
} reads;

static reads scrape(sl_lt *t, int bookie) {
  char *page = sl_ms_scrape_node(t->cluster, SL_NODE_BOOKIE, bookie);
  reads r;
  r.unary = sl_ms_value(page, "sluice_rpc_server_started_total{method=\""
                              "/sluice.v1.BookieService/ReadEntry\"}");
  r.ranges = sl_ms_value(page, "sluice_rpc_server_started_total{method=\""
                               "/sluice.v1.BookieService/ReadEntries\"}");
  r.entries = sl_ms_value(page, "sluice_bookie_reads_total{outcome=\"ok\"}");
  free(page);
  return r;
}

/* A closed E=3, Qw=2 ledger of N entries, opened afresh for reading. */
static sl_ledger *closed_ledger(sl_lt *t) {
  sl_ledger *lh = sl_lt_create(t, 3, 2, 2, 1, NULL, NULL);
  sl_lt_appends a;
  sl_lt_appends_init(&a, sl_ledger_id(lh));
  for (int i = 0; i < N; i++) assert_int_equal(sl_lt_append(lh, &a), SL_OK);
  sl_lt_wait_done(&a, N, 30000);
  assert_int_equal(a.ok, N);
  assert_int_equal(sl_lt_close(lh), SL_OK);
  uint64_t id = sl_ledger_id(lh);
  sl_lt_destroy(lh);
  sl_lt_appends_release(&a);
  sl_ledger *r = sl_lt_open(t, id);
  assert_int_equal(sl_ledger_last_entry(r), N - 1);
  return r;
}

/* Each entry is read once, from ranges: the bookies answer a few
 * ReadEntries streams and (almost) no ReadEntry, and every bookie serves
 * part of the backlog. */
static void test_ledger_read__backlog_through_ranges(void **state) {
  sl_lt *t = *state;
  sl_ledger *lh = closed_ledger(t);
  reads before[BOOKIES], after[BOOKIES];
  for (int b = 0; b < BOOKIES; b++) before[b] = scrape(t, b);
  int64_t delivered = 0;
  assert_int_equal(sl_lt_read_check(lh, 0, N - 1, &delivered), SL_OK);
  assert_int_equal(delivered, N);
  /* A second read of the same handle (sized by the first). */
  assert_int_equal(sl_lt_read_check(lh, 100, N - 1, &delivered), SL_OK);
  assert_int_equal(delivered, N - 100);
  double unary = 0, ranges = 0, entries = 0;
  for (int b = 0; b < BOOKIES; b++) {
    after[b] = scrape(t, b);
    double got = after[b].entries - before[b].entries;
    print_message("bookie %d: %.0f entries, %.0f ReadEntry, %.0f ReadEntries\n", b, got,
                  after[b].unary - before[b].unary, after[b].ranges - before[b].ranges);
    assert_true(got >= (2 * N - 100) / 10); /* the load is spread */
    unary += after[b].unary - before[b].unary;
    ranges += after[b].ranges - before[b].ranges;
    entries += got;
  }
  /* Without ranges: one ReadEntry per entry (2 N - 100 of them). */
  assert_true(entries >= 2 * N - 100);
  assert_true(entries <= (2 * N - 100) * 11 / 10); /* striped: none twice */
  assert_true(unary <= (2 * N - 100) / 20);
  assert_true(ranges >= 2 && ranges <= (2 * N - 100) / 8);
  sl_lt_destroy(lh);
}

/* Reads the whole ledger, and a part that starts inside a stripe, with
 * the bookie in `slot` of its ensemble hit by `sig` (SIGSTOP: silent, its
 * ranges stall and are cancelled after the speculative delay; SIGKILL:
 * gone). Every entry still comes, in order, with its bytes
 * (sl_lt_read_check compares them; the client checked the CRC32C). */
static void read_without(sl_lt *t, uint32_t slot, int sig) {
  sl_ledger *lh = closed_ledger(t);
  int victim = sl_lt_ensemble_bookie(t, lh, slot);
  sl_err err = SL_ERR_INIT;
  if (sig == SIGKILL)
    assert_int_equal(sl_cluster_kill9(t->cluster, SL_NODE_BOOKIE, victim, &err), SL_OK);
  else
    sl_lt_signal_bookie(t, victim, sig);
  int64_t t0 = sl_clock_mono_ms(), delivered = 0;
  assert_int_equal(sl_lt_read_check(lh, 0, N - 1, &delivered), SL_OK);
  int64_t ms = sl_clock_mono_ms() - t0;
  print_message("read of %d entries, bookie %s: %lld ms\n", N,
                sig == SIGKILL ? "killed" : "stopped", (long long)ms);
  assert_int_equal(delivered, N);
  assert_true(ms < 20000); /* waiting out 5 s read timeouts would be far slower */
  assert_int_equal(sl_lt_read_check(lh, 301, 457, &delivered), SL_OK);
  assert_int_equal(delivered, 157);
  sl_lt_destroy(lh);
  if (sig == SIGKILL) {
    sl_status st = sl_cluster_restart(t->cluster, SL_NODE_BOOKIE, victim, &err);
    if (st != SL_OK) fail_msg("restart: %s", sl_err_msg(&err, st));
  } else {
    sl_lt_signal_bookie(t, victim, SIGCONT);
  }
}

static void test_ledger_read__bookie_stopped(void **state) {
  read_without(*state, 0, SIGSTOP);
}

static void test_ledger_read__bookie_killed(void **state) {
  read_without(*state, 1, SIGKILL);
}

int main(void) {
  curl_global_init(CURL_GLOBAL_DEFAULT);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_ledger_read__backlog_through_ranges),
      cmocka_unit_test(test_ledger_read__bookie_stopped),
      cmocka_unit_test(test_ledger_read__bookie_killed),
  };
  int rc = cmocka_run_group_tests(tests, setup, sl_lt_teardown);
  curl_global_cleanup();
  return rc;
}
