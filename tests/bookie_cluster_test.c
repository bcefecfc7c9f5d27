/*
 * A bookie's cluster identity: at its first registration it records the
 * cluster the metadata service serves (<data_dir>/CLUSTER); pointed later
 * at a metadata service of another cluster it is refused a session, and its
 * sweep drops nothing, even for ledger ids that service holds tombstones
 * of (ids are only unique within a cluster). Back with its own cluster, it
 * registers and sweeps again.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/testing.h"
#include "metadata.slrpc.h"
#include "tests/bookie_testlib.h"
#include "tests/metadata_util.h"

static const char *const args[] = {"--sweep_interval_ms", "100", "--registration_ttl", "2",
                                   NULL};

typedef struct log_probe {
  const char *path;
  const char *needle;
  int want;
} log_probe;

static int log_count(const char *path, const char *needle) {
  FILE *f = fopen(path, "r");
  assert_non_null(f);
  char line[4096];
  int n = 0;
  while (fgets(line, sizeof(line), f) != NULL) n += strstr(line, needle) != NULL;
  fclose(f);
  return n;
}

static bool log_reached(void *arg) {
  log_probe *p = arg;
  return log_count(p->path, p->needle) >= p->want;
}

static void await_log(sl_cluster *c, const char *needle, int want) {
  log_probe p = {sl_cluster_log(c, SL_NODE_BOOKIE, 0), needle, want};
  if (!sl_bktest_poll(log_reached, &p, (int)sl_test_scaled_ms(20000)))
    fail_msg("bookie log: \"%s\" %d times, want %d", needle, log_count(p.path, needle), want);
}

static char *cluster_file(sl_cluster *c) {
  char *p = malloc(1024);
  snprintf(p, 1024, "%s/CLUSTER", sl_bktest_data_dir(c, 0));
  return p;
}

static void write_text(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  assert_true(fputs(text, f) >= 0);
  assert_int_equal(fclose(f), 0);
}

static bool listed(sl_cluster *c) {
  sl_rpc_channel *md = sl_bktest_channel(sl_cluster_addr(c, SL_NODE_METADATA, 0));
  Sluice__V1__ListBookiesRequest q = SLUICE__V1__LIST_BOOKIES_REQUEST__INIT;
  Sluice__V1__ListBookiesResponse *r = NULL;
  sl_rpc_call_opts o = {.timeout_ms = 5000, .wait_for_ready = true};
  assert_int_equal(sl_metadata_service_list_bookies(md, &q, &r, &o, NULL), SL_OK);
  bool found = false;
  for (size_t i = 0; i < r->n_bookies; i++)
    found |= strcmp(r->bookies[i]->id, sl_cluster_id(c, SL_NODE_BOOKIE, 0)) == 0;
  protobuf_c_message_free_unpacked(&r->base, NULL);
  sl_rpc_channel_destroy(md);
  return found;
}

typedef struct dropped_probe {
  sl_cluster *c;
  uint64_t ledger;
} dropped_probe;

static bool entry_gone(void *arg) {
  dropped_probe *d = arg;
  sl_rpc_channel *ch = sl_bktest_bookie_channel(d->c, 0);
  Sluice__V1__ReadEntryResponse *r = NULL;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_bktest_read(ch, d->ledger, 4, false, 0, &r, &err);
  bool gone = st != SL_OK || !r->found;
  if (r != NULL) protobuf_c_message_free_unpacked(&r->base, NULL);
  sl_rpc_channel_destroy(ch);
  return gone;
}

static void test_bookie_cluster__foreign_metadata_service_is_refused(void **state) {
  (void)state;
  sl_cluster *c = sl_bktest_cluster("bookie_cluster", 1, args);
  await_log(c, "event=cluster_confirmed", 1);
  char *path = cluster_file(c);
  char *own = NULL;
  sl_err err = SL_ERR_INIT;
  FILE *f = fopen(path, "r");
  assert_non_null(f);
  own = calloc(1, 64);
  assert_non_null(fgets(own, 64, f));
  fclose(f);
  own[strcspn(own, "\n")] = '\0';
  assert_int_equal(strlen(own), 32);

  /* A ledger with data here, then tombstoned while the bookie is away. */
  sl_rpc_channel *md = mdt_connect(sl_cluster_addr(c, SL_NODE_METADATA, 0));
  int64_t version = 0;
  uint64_t ledger = mdt_create_ledger(md, NULL, 0, &version);
  sl_rpc_channel *ch = sl_bktest_bookie_channel(c, 0);
  sl_bktest_write(ch, ledger, 0, 5, 1024, 1);
  sl_rpc_channel_destroy(ch);
  assert_int_equal(sl_cluster_stop_node(c, SL_NODE_BOOKIE, 0, &err), SL_OK);
  /* Closed by its writer (only CLOSED ledgers are deleted), then deleted. */
  Sluice__V1__LedgerResponse *lr = mdt_get_ledger(md, ledger);
  lr->info->state = SLUICE__V1__LEDGER_STATE__LEDGER_STATE_CLOSED;
  lr->info->last_entry_id = 4;
  Sluice__V1__UpdateLedgerRequest uq = SLUICE__V1__UPDATE_LEDGER_REQUEST__INIT;
  uq.info = lr->info;
  uq.expected_version = lr->version;
  uq.epoch = lr->info->owner_epoch;
  uq.kind = SLUICE__V1__LEDGER_UPDATE_KIND__LEDGER_UPDATE_WRITE;
  Sluice__V1__LedgerResponse *ur = NULL;
  sl_rpc_call_opts uo = mdt_opts(5000);
  sl_status st = sl_metadata_service_update_ledger(md, &uq, &ur, &uo, &err);
  if (st != SL_OK) fail_msg("close ledger: %s", sl_err_msg(&err, st));
  protobuf_c_message_free_unpacked(&ur->base, NULL);
  protobuf_c_message_free_unpacked(&lr->base, NULL);
  Sluice__V1__DeleteLedgerRequest dq = SLUICE__V1__DELETE_LEDGER_REQUEST__INIT;
  dq.ledger_id = ledger;
  Sluice__V1__DeleteLedgerResponse *dr = NULL;
  sl_rpc_call_opts o = mdt_opts(5000);
  st = sl_metadata_service_delete_ledger(md, &dq, &dr, &o, &err);
  if (st != SL_OK) fail_msg("delete ledger: %s", sl_err_msg(&err, st));
  protobuf_c_message_free_unpacked(&dr->base, NULL);

  /* Its data now says another cluster: no session, no sweep. */
  write_text(path, "0123456789abcdef0123456789abcdef\n");
  assert_int_equal(sl_cluster_restart(c, SL_NODE_BOOKIE, 0, &err), SL_OK);
  await_log(c, "belongs to cluster 0123456789abcdef0123456789abcdef", 1);
  int skipped = log_count(sl_cluster_log(c, SL_NODE_BOOKIE, 0), "event=sweep_skipped");
  await_log(c, "event=sweep_skipped", skipped + 3);
  assert_false(listed(c));
  dropped_probe d = {c, ledger};
  assert_false(entry_gone(&d));
  assert_int_equal(log_count(sl_cluster_log(c, SL_NODE_BOOKIE, 0), "event=cluster_confirmed"),
                   1);

  /* Its own cluster again: registered, and the tombstone is honoured. */
  assert_int_equal(sl_cluster_stop_node(c, SL_NODE_BOOKIE, 0, &err), SL_OK);
  char text[64];
  snprintf(text, sizeof(text), "%s\n", own);
  write_text(path, text);
  assert_int_equal(sl_cluster_restart(c, SL_NODE_BOOKIE, 0, &err), SL_OK);
  await_log(c, "event=cluster_confirmed", 2);
  if (!sl_bktest_poll(entry_gone, &d, (int)sl_test_scaled_ms(20000)))
    fail_msg("ledger %llu was not dropped after the bookie rejoined its cluster",
             (unsigned long long)ledger);
  assert_true(listed(c));
  free(own);
  free(path);
  sl_rpc_channel_destroy(md);
  sl_bktest_cluster_destroy(c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_bookie_cluster__foreign_metadata_service_is_refused),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
