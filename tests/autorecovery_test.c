/*
 * Auto-recovery end to end (DESIGN.md §4) on a real cluster: etcd, one
 * metadata service auditing every 300 ms with an 8 s grace period, and 5
 * bookies whose workers ask for work every 200 ms.
 *   - A bookie killed with kill -9: once its session has lapsed and the
 *     grace period passed (not before), every CLOSED ledger it held is
 *     copied to other bookies by the workers, and with a second original
 *     bookie stopped every entry still reads. An OPEN ledger is left to its
 *     writer while open, and is recovered too once closed. The killed
 *     bookie, restarted, drops its copies that moved (its sweep).
 *   - A bookie back within the grace period is not copied.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include <curl/curl.h>

#include "common/testing.h"
#include "metadata.slrpc.h"
#include "tests/ledger_testlib.h"
#include "tests/metadata_util.h"
#include "tests/metrics_scrape.h"

#define GRACE_MS 8000
#define PASSES "sluice_metadata_audit_passes_total{outcome=\"ok\"}"

static const char *const k_metadata_args[] = {
    "--audit_interval_ms", "300", "--rereplication_grace_ms", "8000",
    "--metrics_listen", "127.0.0.1:0", NULL};
static const char *const k_bookie_args[] = {"--rereplication_poll_ms", "200",
                                            "--sweep_interval_ms", "300", NULL};

static int setup(void **state) {
  sl_lt *t = calloc(1, sizeof(*t));
  sl_lt_start_md(t, "autorecovery", 5, k_bookie_args, k_metadata_args, NULL);
  *state = t;
  return 0;
}

/* Waits until no segment of the ledger names the bookie. */
static void wait_not_named(sl_lt *t, uint64_t ledger, const char *bookie, int64_t ms) {
  int64_t deadline = sl_clock_mono_ms() + sl_test_scaled_ms(ms);
  while (mdt_ledger_names(t->meta, ledger, bookie)) {
    if (sl_clock_mono_ms() > deadline)
      fail_msg("ledger %lu still names bookie %s", (unsigned long)ledger, bookie);
    usleep(100 * 1000);
  }
}

static bool listed(sl_lt *t, uint64_t ledger) {
  Sluice__V1__ListUnderReplicatedRequest req = SLUICE__V1__LIST_UNDER_REPLICATED_REQUEST__INIT;
  Sluice__V1__ListUnderReplicatedResponse *r = NULL;
  assert_int_equal(sl_metadata_service_list_under_replicated(t->meta, &req, &r, NULL, NULL),
                   SL_OK);
  bool found = false;
  for (size_t i = 0; i < r->n_items; i++) found |= r->items[i]->ledger_id == ledger;
  protobuf_c_message_free_unpacked(&r->base, NULL);
  return found;
}

/* Waits until the auditor has completed `n` more passes. */
static void wait_passes(sl_lt *t, int n) {
  sl_ms_await_growth(t->cluster, SL_NODE_METADATA, 0, PASSES, n, 30000);
}

static void read_all(sl_lt *t, uint64_t ledger, int n) {
  sl_ledger *r = sl_lt_open(t, ledger);
  int64_t got = 0;
  assert_int_equal(sl_lt_read_check(r, 0, n - 1, &got), SL_OK);
  assert_int_equal(got, n);
  sl_lt_destroy(r);
}

static void test_autorecovery__killed_bookie_recovered(void **state) {
  sl_lt *t = *state;
  enum { N = 90, LEDGERS = 3 };
  sl_ledger *lh = sl_lt_filled(t, N, true);
  int X = sl_lt_ensemble_bookie(t, lh, 0), Y = sl_lt_ensemble_bookie(t, lh, 1);
  const char *x_id = sl_cluster_id(t->cluster, SL_NODE_BOOKIE, X);
  uint64_t ids[LEDGERS] = {sl_ledger_id(lh)};
  sl_lt_destroy(lh);
  for (int k = 1; k < LEDGERS; k++) {
    lh = sl_lt_filled(t, N, true);
    ids[k] = sl_ledger_id(lh);
    sl_lt_destroy(lh);
  }
  sl_ledger *open = sl_lt_filled(t, N, false);
  uint64_t open_id = sl_ledger_id(open);

  int64_t killed_ms = sl_clock_wall_ms();
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_cluster_kill9(t->cluster, SL_NODE_BOOKIE, X, &err), SL_OK);
  for (int k = 0; k < LEDGERS; k++) {
    if (!mdt_ledger_names(t->meta, ids[k], x_id)) continue; /* placed elsewhere */
    wait_not_named(t, ids[k], x_id, 60000);
    Sluice__V1__LedgerResponse *r = mdt_get_ledger(t->meta, ids[k]);
    assert_int_equal(r->info->n_rereplications, 1);
    const Sluice__V1__Rereplication *rr = r->info->rereplications[0];
    assert_string_equal(rr->from_bookie, x_id);
    print_message("ledger %lu: %s -> %s %ld ms after the kill\n", (unsigned long)ids[k],
                  rr->from_bookie, rr->to_bookie, (long)(rr->time_ms - killed_ms));
    assert_true(rr->time_ms >= killed_ms + GRACE_MS); /* the grace was kept */
    protobuf_c_message_free_unpacked(&r->base, NULL);
  }
  /* The open ledger was left alone; closed, it is recovered too. */
  if (mdt_ledger_names(t->meta, open_id, x_id)) {
    assert_false(listed(t, open_id));
    assert_int_equal(sl_lt_close(open), SL_OK);
    wait_not_named(t, open_id, x_id, 60000);
  }
  sl_lt_destroy(open);

  /* Entries whose write set was {X, Y} now live on X's replacement only. */
  assert_int_equal(sl_cluster_stop_node(t->cluster, SL_NODE_BOOKIE, Y, &err), SL_OK);
  read_all(t, ids[0], N);
  sl_lt_restart_bookie(t, Y);
  sl_lt_restart_bookie(t, X);
  /* X is back, but its copy of the first ledger moved: its sweep drops it. */
  sl_lt_await_dropped(t, X, ids[0], (int)sl_test_scaled_ms(30000));
}

static void test_autorecovery__back_within_grace_not_copied(void **state) {
  sl_lt *t = *state;
  sl_ledger *lh = sl_lt_filled(t, 30, true);
  uint64_t id = sl_ledger_id(lh);
  int Z = sl_lt_ensemble_bookie(t, lh, 2);
  const char *z_id = sl_cluster_id(t->cluster, SL_NODE_BOOKIE, Z);
  sl_lt_destroy(lh);
  sl_err err = SL_ERR_INIT;
  int64_t stopped_ms = sl_clock_mono_ms();
  assert_int_equal(sl_cluster_stop_node(t->cluster, SL_NODE_BOOKIE, Z, &err), SL_OK);
  sl_lt_wait_gone(t, Z, 20000);
  wait_passes(t, 2); /* the auditor saw it gone */
  sl_lt_restart_bookie(t, Z);
  int64_t back_ms = sl_clock_mono_ms() - stopped_ms;
  print_message("bookie %s back after %ld ms\n", z_id, (long)back_ms);
  if (back_ms >= GRACE_MS) fail_msg("the restart took longer than the grace period");
  /* Past the grace period as counted from the stop, and two more passes. */
  while (sl_clock_mono_ms() - stopped_ms < GRACE_MS) wait_passes(t, 1);
  wait_passes(t, 2);
  assert_false(listed(t, id));
  assert_true(mdt_ledger_names(t->meta, id, z_id));
  Sluice__V1__LedgerResponse *r = mdt_get_ledger(t->meta, id);
  assert_int_equal(r->info->n_rereplications, 0);
  protobuf_c_message_free_unpacked(&r->base, NULL);
}

int main(void) {
  curl_global_init(CURL_GLOBAL_DEFAULT);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_autorecovery__killed_bookie_recovered),
      cmocka_unit_test(test_autorecovery__back_within_grace_not_copied),
  };
  int rc = cmocka_run_group_tests(tests, setup, sl_lt_teardown);
  curl_global_cleanup();
  return rc;
}
