/*
 * Catch-up reads on a real cluster (etcd, a metadata service, 3 bookies, 1
 * broker): a consumer from the earliest position over a backlog of several
 * ledgers (rollover every ENTRIES entries) that is not in the broker's
 * entry cache (the partition was unloaded and loaded again) receives every
 * message in order, and the broker served it through the read-ahead: the
 * sluice_ml_read_* counters on its /metrics show entries fetched from
 * bookies ahead of the reads, reads served from that buffer, and each
 * finished ledger opened at most once.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <curl/curl.h>

#include "metadata.slrpc.h"
#include "tests/consume_testlib.h"
#include "tests/metrics_scrape.h"

#define WAIT_MS 30000
#define TOPIC "cc/t"
#define ENTRIES 5    /* rollover: entries per ledger */
#define ROUNDS 40    /* produce rounds, each waiting for its receipts, so */
#define PER 30       /* at least ROUNDS entries of PER messages at most */
#define N (ROUNDS * PER)

static sl_ct_msg g_msgs[N];

/* A counter's value; 0 while it was never counted (not registered yet). */
static double counter(sl_pt *t, const char *name) {
  char *text = sl_ms_scrape(t->c, 0);
  double v = 0;
  sl_ms_sample(text, name, &v);
  free(text);
  return v;
}

static void namespace_with_rollover(sl_pt *t, const char *ns) {
  Sluice__V1__NamespacePolicies pol = SLUICE__V1__NAMESPACE_POLICIES__INIT;
  pol.retention_minutes = -1;
  pol.retention_megabytes = -1;
  pol.ledger_rollover_entries = ENTRIES;
  Sluice__V1__CreateNamespaceRequest req = SLUICE__V1__CREATE_NAMESPACE_REQUEST__INIT;
  req.name = (char *)ns;
  req.policies = &pol;
  Sluice__V1__Namespace *resp = NULL;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_metadata_service_create_namespace(t->meta, &req, &resp, NULL, &err);
  if (st != SL_OK) fail_msg("namespace %s: %s", ns, sl_err_msg(&err, st));
  protobuf_c_message_free_unpacked(&resp->base, NULL);
}

static int setup(void **state) {
  /* The broker inherits it: its /metrics on a free port. */
  setenv("SLUICE_BROKER_METRICS_LISTEN", "127.0.0.1:0", 1);
  sl_pt *t = calloc(1, sizeof(*t));
  sl_pt_start(t, "consume_catchup", 1, 3, 1);
  unsetenv("SLUICE_BROKER_METRICS_LISTEN");
  namespace_with_rollover(t, "cc");
  sl_pt_topic(t, TOPIC, 0);
  *state = t;
  return 0;
}

static int teardown(void **state) {
  sl_pt *t = *state;
  sl_pt_stop(t);
  free(t);
  return 0;
}

static void test_consume_catchup__backlog_over_ledgers_in_order(void **state) {
  sl_pt *t = *state;
  for (int r = 0; r < ROUNDS; r++)
    sl_ct_produce_len(t, TOPIC, "p", (uint64_t)(r * PER), PER, 0, 200);
  /* A fresh owner: its entry cache starts empty, so the backlog comes from
   * bookies. */
  sl_pt_unload(t, 0, TOPIC);
  double opens0 = counter(t, "sluice_ml_read_ledger_opens_total");
  double fetched0 = counter(t, "sluice_ml_readahead_entries_total");
  double hits0 = counter(t, "sluice_ml_readahead_hits_total");

  sl_ct_sub sub = {.topic = TOPIC, .subscription = "s", .earliest = true};
  sl_ct_consumer c;
  sl_ct_subscribe_owner(t, &sub, &c);
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_ct_flow(&c, N, &err), SL_OK);
  sl_ct_msg *m = g_msgs;
  int got = 0;
  sl_status st = sl_ct_recv(&c, m, N, &got, WAIT_MS, &err);
  if (st != SL_OK) fail_msg("received %d of %d: %s", got, N, sl_err_msg(&err, st));
  size_t ledgers = 1, entries = 1;
  for (int i = 0; i < N; i++) {
    if (i > 0 && (m[i].id.ledger_id != m[i - 1].id.ledger_id ||
                  m[i].id.entry_id != m[i - 1].id.entry_id))
      entries++;
    if (m[i].seq != (uint64_t)i) fail_msg("message %d has seq %llu", i, (unsigned long long)m[i].seq);
    assert_true(m[i].payload_ok);
    if (i > 0 && m[i].id.ledger_id != m[i - 1].id.ledger_id) {
      assert_true(m[i].id.ledger_id > m[i - 1].id.ledger_id);
      ledgers++;
    }
  }
  assert_true(ledgers >= 4); /* the rollover spread the backlog */

  double opens = counter(t, "sluice_ml_read_ledger_opens_total") - opens0;
  double fetched = counter(t, "sluice_ml_readahead_entries_total") - fetched0;
  double hits = counter(t, "sluice_ml_readahead_hits_total") - hits0;
  print_message("entries %zu, ledgers %zu, ledger opens %.0f, entries fetched ahead %.0f, "
                "reads from the buffer %.0f\n", entries, ledgers, opens, fetched, hits);
  /* Every entry came through the read-ahead, ... */
  assert_true(fetched >= (double)entries);
  /* ... reads were served from its buffer, and no finished ledger was
   * opened twice: the ledgers with messages, plus at most the empty one
   * the last rollover made before the unload closed it (the new owner's
   * ledger is read through its writer). */
  assert_true(hits >= 1);
  assert_true(opens <= (double)(ledgers + 1));
  sl_ct_close(&c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_consume_catchup__backlog_over_ledgers_in_order),
  };
  curl_global_init(CURL_GLOBAL_DEFAULT);
  int rc = cmocka_run_group_tests(tests, setup, teardown);
  curl_global_cleanup();
  return rc;
}
