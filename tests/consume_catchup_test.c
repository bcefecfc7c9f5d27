/*
 * Catch-up reads on a real cluster (etcd, a metadata service, 3 bookies, 1
 * broker whose entry cache keeps nothing, so every read comes from
 * bookies), each checked on the broker's /metrics counters:
 *   - a backlog of several ledgers (rollover every ENTRIES entries), read
 *     from the earliest position, comes in order through the read-ahead:
 *     entries fetched ahead, reads served from that buffer, each finished
 *     ledger opened at most once;
 *   - a backlog in the open current ledger comes through the read-ahead
 *     too (read through the writer up to its LAC), and a seek back inside
 *     it gets the messages from there in order (no stale buffer);
 *   - pacing: in a namespace with a backlog read budget of RATE bytes/s,
 *     the bytes the broker took from bookies while a consumer caught up
 *     stay within RATE * elapsed + one burst + one entry, fetches waited
 *     for the budget, and a producer on the partition kept getting its
 *     receipts meanwhile;
 *   - two subscriptions catching up at different places share that budget.
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
#include <pthread.h>

#include "common/clock.h"

#include "metadata.slrpc.h"
#include "tests/consume_testlib.h"
#include "tests/metrics_scrape.h"

#define WAIT_MS 30000
#define TOPIC "cc/t"
#define ENTRIES 5    /* rollover: entries per ledger */
#define ROUNDS 40    /* produce rounds, each waiting for its receipts, so */
#define PER 30       /* at least ROUNDS entries of PER messages at most */
#define N (ROUNDS * PER)
#define OPEN_TOPIC "co/t"
#define PACED_TOPIC "cp/t"
#define RATE (200 << 10)      /* the paced namespace's budget, bytes/s */
#define BURST (64 << 10)      /* the budget's burst at that rate (its minimum) */
#define PACED_LEN (16 << 10)  /* paced backlog: message size */
#define PACED_N 100           /*   and count (1.6 MB: about 8 s at RATE) */
#define TWO_TOPIC "cp/two"
#define TWO_N 40              /* two readers: 0.64 MB, then 0.96 MB read */

static sl_ct_msg g_msgs[N];

/* A counter's value; 0 while it was never counted (not registered yet). */
static double counter(sl_pt *t, const char *name) {
  char *text = sl_ms_scrape(t->c, 0);
  double v = 0;
  sl_ms_sample(text, name, &v);
  free(text);
  return v;
}

static void namespace_create(sl_pt *t, const char *ns, uint32_t rollover_entries,
                             int64_t read_rate) {
  Sluice__V1__NamespacePolicies pol = SLUICE__V1__NAMESPACE_POLICIES__INIT;
  pol.retention_minutes = -1;
  pol.retention_megabytes = -1;
  pol.ledger_rollover_entries = rollover_entries;
  pol.backlog_read_bytes_per_second = read_rate;
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
  /* The broker inherits them: its /metrics on a free port, and an entry
   * cache that keeps no entry (each is larger than it). */
  setenv("SLUICE_BROKER_METRICS_LISTEN", "127.0.0.1:0", 1);
  setenv("SLUICE_BROKER_ENTRY_CACHE_BYTES", "1", 1);
  sl_pt *t = calloc(1, sizeof(*t));
  sl_pt_start(t, "consume_catchup", 1, 3, 1);
  unsetenv("SLUICE_BROKER_METRICS_LISTEN");
  unsetenv("SLUICE_BROKER_ENTRY_CACHE_BYTES");
  namespace_create(t, "cc", ENTRIES, 0);
  namespace_create(t, "co", 0, 0);     /* no rollover: one open ledger */
  namespace_create(t, "cp", 0, RATE);  /* paced */
  sl_pt_topic(t, TOPIC, 0);
  sl_pt_topic(t, OPEN_TOPIC, 0);
  sl_pt_topic(t, PACED_TOPIC, 0);
  *state = t;
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

/* Receives n messages and checks their sequence ids run from first. */
static void recv_in_order(sl_ct_consumer *c, sl_ct_msg *m, int n, uint64_t first) {
  sl_err err = SL_ERR_INIT;
  int got = 0;
  sl_status st = sl_ct_recv(c, m, n, &got, WAIT_MS, &err);
  if (st != SL_OK) fail_msg("received %d of %d: %s", got, n, sl_err_msg(&err, st));
  for (int i = 0; i < n; i++) {
    if (m[i].seq != first + (uint64_t)i)
      fail_msg("message %d has seq %llu, want %llu", i, (unsigned long long)m[i].seq,
               (unsigned long long)(first + (uint64_t)i));
    assert_true(m[i].payload_ok);
  }
}

static void test_consume_catchup__open_ledger_read_ahead_and_seek(void **state) {
  sl_pt *t = *state;
  for (int r = 0; r < ROUNDS; r++)
    sl_ct_produce_len(t, OPEN_TOPIC, "p", (uint64_t)(r * PER), PER, 0, 200);
  double fetched0 = counter(t, "sluice_ml_readahead_entries_total");
  double hits0 = counter(t, "sluice_ml_readahead_hits_total");

  sl_ct_sub sub = {.topic = OPEN_TOPIC, .subscription = "s", .earliest = true};
  sl_ct_consumer c;
  sl_ct_subscribe_owner(t, &sub, &c);
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_ct_flow(&c, 2 * N, &err), SL_OK);
  recv_in_order(&c, g_msgs, N, 0);
  size_t entries = 1;
  for (int i = 1; i < N; i++) {
    assert_int_equal(g_msgs[i].id.ledger_id, g_msgs[0].id.ledger_id); /* one ledger */
    if (g_msgs[i].id.entry_id != g_msgs[i - 1].id.entry_id) entries++;
  }
  double fetched = counter(t, "sluice_ml_readahead_entries_total") - fetched0;
  double hits = counter(t, "sluice_ml_readahead_hits_total") - hits0;
  print_message("open ledger: entries %zu, fetched ahead %.0f, reads from the buffer %.0f\n",
                entries, fetched, hits);
  /* The open ledger's entries came through the read-ahead. */
  assert_true(fetched >= (double)entries);
  assert_true(hits >= 1);

  /* Back to the middle of the open ledger: from there on, in order,
   * whatever the buffer held for the old position. */
  Sluice__V1__MessageId to = g_msgs[N / 2].id;
  to.batch_index = 0;
  uint64_t first = g_msgs[N / 2].seq - g_msgs[N / 2].id.batch_index;
  assert_int_equal(sl_ct_seek(&c, &to, 0, &err), SL_OK);
  recv_in_order(&c, g_msgs, (int)(N - first), first);
  sl_ct_close(&c);
}

/* A Produce of count messages of len bytes from seq first, on another
 * thread, while the test consumes. */
typedef struct bg_produce {
  sl_pt *t;
  uint64_t first;
  int count;
  pthread_t th;
} bg_produce;

static void *produce_thread(void *arg) {
  bg_produce *p = arg;
  /* Fails the test unless every receipt comes back OK. */
  sl_ct_produce_len(p->t, PACED_TOPIC, "live", p->first, p->count, 0, 100);
  return NULL;
}

static void test_consume_catchup__paced_by_the_read_budget(void **state) {
  sl_pt *t = *state;
  sl_ct_produce_len(t, PACED_TOPIC, "p", 0, PACED_N, 0, PACED_LEN);
  double bytes0 = counter(t, "sluice_ml_backlog_read_bytes_total");
  double paced0 = counter(t, "sluice_ml_backlog_read_paced_total");

  int64_t start = sl_clock_mono_ms();
  sl_ct_sub sub = {.topic = PACED_TOPIC, .subscription = "s", .earliest = true};
  sl_ct_consumer c;
  sl_ct_subscribe_owner(t, &sub, &c);
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_ct_flow(&c, PACED_N, &err), SL_OK);
  /* A producer on the same partition meanwhile: its receipts come. */
  bg_produce p = {t, 1000, 20, 0};
  assert_int_equal(pthread_create(&p.th, NULL, produce_thread, &p), 0);
  recv_in_order(&c, g_msgs, PACED_N, 0);
  double secs = (double)(sl_clock_mono_ms() - start) / 1000.0;
  assert_int_equal(pthread_join(p.th, NULL), 0);
  double bytes = counter(t, "sluice_ml_backlog_read_bytes_total") - bytes0;
  double paced = counter(t, "sluice_ml_backlog_read_paced_total") - paced0;
  print_message("paced: %.0f bytes from bookies in %.1f s (%.0f bytes/s, budget %d), "
                "%.0f waits\n", bytes, secs, bytes / secs, RATE, paced);
  assert_true(bytes >= (double)PACED_N * PACED_LEN);
  /* Entries are batches of up to 10 messages. The bucket holds at least
   * the largest entry (its depth can exceed BURST by up to one entry), the
   * last fetch can overshoot by up to one more, and a direct read (a read
   * that misses while another waits) may start on the same tokens as a
   * fetch (managed_ledger_readahead.c, invariant 6). */
  const double entry_max = 10.0 * (PACED_LEN + 256);
  assert_true(bytes <= RATE * secs + BURST + 4 * entry_max);
  assert_true(paced >= 1);
  sl_ct_close(&c);
}

/* Two subscriptions catching up at different places share the partition's
 * budget: the second one's reads (direct, past the read-ahead buffer the
 * first one waits on) wait for it too, so the bytes taken stay within the
 * bound at every point, here when the second one is done. */
static void test_consume_catchup__two_readers_share_the_budget(void **state) {
  sl_pt *t = *state;
  sl_pt_topic(t, TWO_TOPIC, 0);
  for (int i = 0; i < TWO_N; i++) /* one message per entry: entries of PACED_LEN */
    sl_ct_produce_len(t, TWO_TOPIC, "p", (uint64_t)i, 1, 0, PACED_LEN);
  sl_err err = SL_ERR_INIT;
  /* Subscription b acks the first half, so it resumes in the middle. */
  sl_ct_sub sb = {.topic = TWO_TOPIC, .subscription = "b", .earliest = true};
  sl_ct_consumer b;
  sl_ct_subscribe_owner(t, &sb, &b);
  assert_int_equal(sl_ct_flow(&b, TWO_N / 2, &err), SL_OK);
  recv_in_order(&b, g_msgs, TWO_N / 2, 0);
  assert_int_equal(sl_ct_ack(&b, &g_msgs[TWO_N / 2 - 1].id, 1, true, 7, &err), SL_OK);
  assert_int_equal(sl_ct_wait_receipt(&b, 7, WAIT_MS, &err), SL_OK);
  sl_ct_close(&b);

  double bytes0 = counter(t, "sluice_ml_backlog_read_bytes_total");
  double direct0 = counter(t, "sluice_ml_read_direct_total");
  int64_t start = sl_clock_mono_ms();
  sl_ct_sub sa = {.topic = TWO_TOPIC, .subscription = "a", .earliest = true};
  sl_ct_consumer a;
  sl_ct_subscribe_owner(t, &sa, &a);
  assert_int_equal(sl_ct_flow(&a, TWO_N, &err), SL_OK);
  sl_ct_subscribe_owner(t, &sb, &b);
  assert_int_equal(sl_ct_flow(&b, TWO_N / 2, &err), SL_OK);
  recv_in_order(&b, g_msgs, TWO_N / 2, TWO_N / 2);
  double secs_b = (double)(sl_clock_mono_ms() - start) / 1000.0;
  double bytes_b = counter(t, "sluice_ml_backlog_read_bytes_total") - bytes0;
  recv_in_order(&a, g_msgs, TWO_N, 0);
  double secs = (double)(sl_clock_mono_ms() - start) / 1000.0;
  double bytes = counter(t, "sluice_ml_backlog_read_bytes_total") - bytes0;
  double direct = counter(t, "sluice_ml_read_direct_total") - direct0;
  print_message("two readers: b done after %.0f bytes in %.1f s, both after %.0f bytes in "
                "%.1f s (budget %d bytes/s), %.0f direct reads\n",
                bytes_b, secs_b, bytes, secs, RATE, direct);
  /* The burst twice (a fetch and a direct read may start on the same
   * tokens) and a few entries of slack (managed_ledger_readahead.c, 6). */
  const double entry_max = PACED_LEN + 256;
  assert_true(bytes_b <= RATE * secs_b + 2 * BURST + 4 * entry_max);
  assert_true(bytes <= RATE * secs + 2 * BURST + 4 * entry_max);
  assert_true(bytes >= 1.5 * TWO_N * PACED_LEN);
  assert_true(direct >= 1);
  sl_ct_close(&a);
  sl_ct_close(&b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_consume_catchup__backlog_over_ledgers_in_order),
      cmocka_unit_test(test_consume_catchup__open_ledger_read_ahead_and_seek),
      cmocka_unit_test(test_consume_catchup__paced_by_the_read_budget),
      cmocka_unit_test(test_consume_catchup__two_readers_share_the_budget),
  };
  curl_global_init(CURL_GLOBAL_DEFAULT);
  int rc = cmocka_run_group_tests(tests, setup, sl_pt_teardown);
  curl_global_cleanup();
  return rc;
}
