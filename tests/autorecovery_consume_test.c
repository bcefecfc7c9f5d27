/*
 * Auto-recovery under a broker, on a real cluster (etcd, a metadata service
 * auditing every 300 ms with a 2 s grace period, 5 bookies whose workers
 * ask for work every 200 ms, one broker). A topic's ledgers roll every 4
 * entries (2 to 4 closed ones). A consumer reads them all back from the
 * bookies (no entry cache), so the broker keeps read handles of them all. Then a bookie of the last one
 * is killed, auto-recovery copies what it held, and a second original
 * bookie of that ledger stops: a new subscription on the same broker still
 * gets every message in order. The broker's cached handle still names the
 * killed bookie, so its first read fails there; the failed handle is
 * dropped and the ledger opened again with the metadata auto-recovery
 * wrote.
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

#include "broker.slrpc.h"
#include "common/clock.h"
#include "common/testing.h"
#include "metadata.slrpc.h"
#include "tests/consume_testlib.h"
#include "tests/metadata_util.h"

#define N 120
#define TOPIC "ar/t"
#define WAIT_MS 60000

static const char *const k_metadata_args[] = {"--audit_interval_ms", "300",
                                              "--rereplication_grace_ms", "2000", NULL};
static const char *const k_bookie_args[] = {"--rereplication_poll_ms", "200", NULL};

static sl_rpc_call_opts opts(void) {
  return (sl_rpc_call_opts){.timeout_ms = 10000};
}

static int setup(void **state) {
  sl_pt *t = calloc(1, sizeof(*t));
  /* The broker inherits it: no entry cache, every read goes to bookies. */
  setenv("SLUICE_BROKER_ENTRY_CACHE_BYTES", "1", 1);
  sl_pt_start_args(t, "autorecovery_consume", 1, 5, 1, 4, k_metadata_args, k_bookie_args);
  unsetenv("SLUICE_BROKER_ENTRY_CACHE_BYTES");
  sl_pt_namespace(t, "ar", false, 0);
  Sluice__V1__GetNamespaceRequest greq = SLUICE__V1__GET_NAMESPACE_REQUEST__INIT;
  greq.name = "ar";
  Sluice__V1__Namespace *ns = NULL, *set = NULL;
  sl_rpc_call_opts o = opts();
  assert_int_equal(sl_metadata_service_get_namespace(t->meta, &greq, &ns, &o, NULL), SL_OK);
  ns->policies->ledger_rollover_entries = 4;
  Sluice__V1__SetNamespacePoliciesRequest req = SLUICE__V1__SET_NAMESPACE_POLICIES_REQUEST__INIT;
  req.name = "ar";
  req.policies = ns->policies;
  req.expected_version = ns->version;
  assert_int_equal(sl_metadata_service_set_namespace_policies(t->meta, &req, &set, &o, NULL),
                   SL_OK);
  protobuf_c_message_free_unpacked(&set->base, NULL);
  protobuf_c_message_free_unpacked(&ns->base, NULL);
  sl_pt_topic(t, TOPIC, 0);
  *state = t;
  return 0;
}

/* The partition's ledgers that are CLOSED and hold entries, in order. */
static size_t closed_ledgers(sl_pt *t, uint64_t *ids, size_t max) {
  Sluice__V1__GetManagedLedgerRequest req = SLUICE__V1__GET_MANAGED_LEDGER_REQUEST__INIT;
  req.partition = TOPIC;
  Sluice__V1__ManagedLedgerResponse *ml = NULL;
  sl_rpc_call_opts o = opts();
  assert_int_equal(sl_metadata_service_get_managed_ledger(t->meta, &req, &ml, &o, NULL), SL_OK);
  size_t n = 0;
  for (size_t i = 0; i < ml->info->n_ledgers && n < max; i++) {
    Sluice__V1__LedgerResponse *r = mdt_get_ledger(t->meta, ml->info->ledgers[i]->ledger_id);
    if (r->info->state == SLUICE__V1__LEDGER_STATE__LEDGER_STATE_CLOSED &&
        r->info->last_entry_id >= 0)
      ids[n++] = r->info->ledger_id;
    protobuf_c_message_free_unpacked(&r->base, NULL);
  }
  protobuf_c_message_free_unpacked(&ml->base, NULL);
  return n;
}

/* The bookie index in `slot` of the ledger's first segment. */
static int bookie_of(sl_pt *t, uint64_t ledger, uint32_t slot) {
  Sluice__V1__LedgerResponse *r = mdt_get_ledger(t->meta, ledger);
  const char *id = r->info->ensembles[0]->bookie_ids[slot];
  int found = -1;
  for (int i = 0; i < sl_cluster_count(t->c, SL_NODE_BOOKIE); i++)
    if (strcmp(sl_cluster_id(t->c, SL_NODE_BOOKIE, i), id) == 0) found = i;
  protobuf_c_message_free_unpacked(&r->base, NULL);
  assert_true(found >= 0);
  return found;
}

/* Subscribes `name` from the earliest message and checks all N arrive in
 * publish order. */
static void read_everything(sl_pt *t, const char *name) {
  sl_ct_sub sub = {.topic = TOPIC, .subscription = name, .earliest = true,
                   .type = SLUICE__V1__SUBSCRIPTION_TYPE__SUBSCRIPTION_TYPE_EXCLUSIVE};
  sl_ct_consumer c;
  sl_ct_subscribe_owner(t, &sub, &c);
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_ct_flow(&c, N, &err), SL_OK);
  static sl_ct_msg got[N];
  int n = 0;
  sl_status st = sl_ct_recv(&c, got, N, &n, (int)sl_test_scaled_ms(WAIT_MS), &err);
  if (st != SL_OK) fail_msg("%s: received %d of %d: %s", name, n, N, sl_err_msg(&err, st));
  for (int i = 0; i < N; i++) assert_int_equal(got[i].seq, (uint64_t)i);
  sl_ct_close(&c);
}

static void test_autorecovery__consumer_reads_moved_copies(void **state) {
  sl_pt *t = *state;
  /* Rounds that each wait for their receipts: at least one entry each. */
  for (int i = 0; i < N; i += 10) sl_ct_produce(t, TOPIC, "p", (uint64_t)i, 10, 0);
  /* A fresh load of the partition: reads come from the bookies. */
  Sluice__V1__UnloadRequest ureq = SLUICE__V1__UNLOAD_REQUEST__INIT;
  ureq.topic = TOPIC;
  Sluice__V1__UnloadResponse *u = NULL;
  sl_rpc_call_opts o = opts();
  assert_int_equal(sl_broker_service_unload(t->broker[0], &ureq, &u, &o, NULL), SL_OK);
  protobuf_c_message_free_unpacked(&u->base, NULL);
  read_everything(t, "first");

  uint64_t ids[256];
  size_t n = closed_ledgers(t, ids, 256);
  print_message("%zu closed ledgers\n", n);
  /* All of them fit the broker's cache of read handles (ML_READ_HANDLES):
   * the second read finds each one's old handle. */
  assert_true(n >= 2 && n <= 4);
  uint64_t last = ids[n - 1]; /* read last: its handle is in the cache */
  int X = bookie_of(t, last, 0), Y = bookie_of(t, last, 1);
  const char *x_id = sl_cluster_id(t->c, SL_NODE_BOOKIE, X);
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_cluster_kill9(t->c, SL_NODE_BOOKIE, X, &err), SL_OK);
  int64_t deadline = sl_clock_mono_ms() + sl_test_scaled_ms(WAIT_MS);
  for (size_t i = 0; i < n; i++) {
    while (mdt_ledger_names(t->meta, ids[i], x_id)) {
      if (sl_clock_mono_ms() > deadline)
        fail_msg("ledger %lu still names %s", (unsigned long)ids[i], x_id);
      usleep(100 * 1000);
    }
  }
  assert_int_equal(sl_cluster_stop_node(t->c, SL_NODE_BOOKIE, Y, &err), SL_OK);
  read_everything(t, "second");
  assert_int_equal(sl_cluster_restart(t->c, SL_NODE_BOOKIE, X, &err), SL_OK);
  assert_int_equal(sl_cluster_restart(t->c, SL_NODE_BOOKIE, Y, &err), SL_OK);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_autorecovery__consumer_reads_moved_copies),
  };
  return cmocka_run_group_tests(tests, setup, sl_pt_teardown);
}
