/*
 * A broker's /metrics on a real cluster (etcd, metadata service, 4 bookies,
 * 1 broker; tests/produce_testlib.h): publish counters and the ack-latency
 * histogram move by the messages sent, owned partitions and pending bytes
 * are gauges of the present, a kill -9 of an ensemble bookie shows as an
 * ensemble change, a reopen as a ledger recovery, and promtool accepts the
 * whole page. Each subscription's backlog, unacked and consumers gauges
 * follow produce, deliveries, acks, joins and leaves, and go away with the
 * partition.
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

#include "common/clock.h"
#include "tests/consume_testlib.h"
#include "tests/metrics_scrape.h"
#include "tests/produce_testlib.h"

#define PART "bm/t"
#define SUBS "bm/subs"
#define WAIT_MS 30000

/* promtool, when installed, has the last word on format and naming. */
static void promtool_check(const char *text) {
  if (access("/usr/bin/promtool", X_OK) != 0) {
    print_message("promtool not installed: skipped\n");
    return;
  }
  char path[] = "/tmp/broker-metrics-XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  size_t len = strlen(text);
  assert_int_equal(write(fd, text, len), (ssize_t)len);
  close(fd);
  char cmd[128];
  snprintf(cmd, sizeof(cmd), "/usr/bin/promtool check metrics < %s 2>&1", path);
  FILE *p = popen(cmd, "r");
  assert_non_null(p);
  char out[4096];
  size_t got = fread(out, 1, sizeof(out) - 1, p);
  out[got] = '\0';
  int rc = pclose(p);
  unlink(path);
  if (rc != 0 || got > 0) print_error("promtool: %s\n", out);
  assert_int_equal(rc, 0);
  assert_int_equal(got, 0);
}

/* Sends n single messages from first and waits for every receipt. */
static void publish(sl_pt_producer *p, uint64_t first, int n) {
  sl_err err = SL_ERR_INIT;
  for (int i = 0; i < n; i++)
    assert_int_equal(sl_pt_send(p, first + (uint64_t)i, 1, 512, &err), SL_OK);
  sl_pt_ack acks[64];
  int got = 0;
  assert_true(n <= 64);
  assert_int_equal(sl_pt_recv_acks(p, acks, n, &got, 30000, &err), SL_OK);
  for (int i = 0; i < n; i++) assert_int_equal(acks[i].status, 0);
}

static void test_broker_metrics__move_with_the_work(void **state) {
  sl_pt *t = *state;
  int owner = sl_pt_owner(t, 0, PART, NULL);
  sl_pt_producer p;
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_pt_open(t, owner, PART, "mp", false, &p, NULL, &err), SL_OK);
  publish(&p, 0, 20);
  char *m = sl_ms_scrape(t->c, 0);
  assert_true(sl_ms_value(m, "sluice_broker_publish_messages_total") == 20);
  assert_true(sl_ms_value(m, "sluice_broker_publish_ack_seconds_count") == 20);
  assert_true(sl_ms_value(m, "sluice_broker_owned_partitions") == 1);
  assert_true(sl_ms_value(m, "sluice_broker_ledger_add_seconds_count") >= 1);
  assert_true(sl_ms_value(m, "sluice_broker_ledger_pending_bytes") == 0);
  assert_true(sl_ms_value(m, "sluice_broker_publish_inflight_bytes") == 0);
  assert_true(sl_ms_value(m, "sluice_broker_ledger_ensemble_changes_total") == 0);
  free(m);

  /* A bookie of the ensemble dies: the writer replaces it and goes on. */
  int victim = sl_pt_ensemble_bookie(t, PART, 0);
  assert_int_equal(sl_cluster_kill9(t->c, SL_NODE_BOOKIE, victim, &err), SL_OK);
  publish(&p, 20, 20);
  m = sl_ms_scrape(t->c, 0);
  assert_true(sl_ms_value(m, "sluice_broker_publish_messages_total") == 40);
  assert_true(sl_ms_value(m, "sluice_broker_ledger_ensemble_changes_total") >= 1);
  free(m);
  sl_pt_close(&p);

  /* Moved and reopened: the open recovers (here: finds closed) the last
   * ledger. */
  double before = 0;
  m = sl_ms_scrape(t->c, 0);
  before = sl_ms_value(m, "sluice_broker_ledger_recoveries_total{outcome=\"ok\"}");
  free(m);
  sl_pt_unload(t, 0, PART);
  owner = sl_pt_owner(t, 0, PART, NULL);
  assert_int_equal(sl_pt_open(t, owner, PART, "mp", true, &p, NULL, &err), SL_OK);
  publish(&p, 40, 1);
  sl_pt_close(&p);
  m = sl_ms_scrape(t->c, 0);
  assert_true(sl_ms_value(m, "sluice_broker_ledger_recoveries_total{outcome=\"ok\"}") > before);
  assert_true(sl_ms_value(m, "sluice_broker_ledger_recoveries_total{outcome=\"failed\"}") == 0);
  promtool_check(m);
  free(m);
}

/* The subscription's series of a gauge: `name{partition=...,subscription=...}`. */
static void sub_series(char *buf, size_t n, const char *gauge, const char *sub) {
  snprintf(buf, n, "sluice_broker_subscription_%s{partition=\"%s\",subscription=\"%s\"}",
           gauge, SUBS, sub);
}

/* Waits until the gauge shows a value in [lo, hi] (it is refreshed on the
 * partition's tick); returns it. */
static double wait_gauge(sl_pt *t, const char *gauge, const char *sub, double lo, double hi) {
  char series[256];
  sub_series(series, sizeof(series), gauge, sub);
  int64_t end = sl_clock_mono_ms() + WAIT_MS;
  double v = -1;
  for (;;) {
    char *m = sl_ms_scrape(t->c, 0);
    bool have = sl_ms_sample(m, series, &v);
    free(m);
    if (have && v >= lo && v <= hi) return v;
    if (sl_clock_mono_ms() > end)
      fail_msg("%s: %s, want [%.0f, %.0f]", series, have ? "has another value" : "absent", lo,
               hi);
  }
}

static void test_broker_metrics__subscription_gauges(void **state) {
  sl_pt *t = *state;
  sl_ct_sub sub = {.topic = SUBS, .subscription = "g", .type = 2 /* shared */,
                   .earliest = true};
  sl_ct_consumer c1, c2;
  sl_ct_subscribe_owner(t, &sub, &c1);
  wait_gauge(t, "consumers", "g", 1, 1);
  wait_gauge(t, "backlog_entries", "g", 0, 0);
  wait_gauge(t, "unacked_messages", "g", 0, 0);

  /* Produced, not delivered (no permits): backlog, nothing unacked. */
  sl_ct_produce(t, SUBS, "p", 0, 10, 0);
  wait_gauge(t, "backlog_entries", "g", 1, 10);
  wait_gauge(t, "backlog_bytes", "g", 10 * 100, 1e9);
  wait_gauge(t, "unacked_messages", "g", 0, 0);

  /* Delivered: unacked. */
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_ct_flow(&c1, 10, &err), SL_OK);
  sl_ct_msg got[10];
  int n = 0;
  assert_int_equal(sl_ct_recv(&c1, got, 10, &n, WAIT_MS, &err), SL_OK);
  wait_gauge(t, "unacked_messages", "g", 10, 10);

  /* A second consumer joins, the first acks everything: no backlog. */
  sl_ct_subscribe_owner(t, &sub, &c2);
  wait_gauge(t, "consumers", "g", 2, 2);
  Sluice__V1__MessageId ids[10];
  for (int i = 0; i < 10; i++) ids[i] = got[i].id;
  assert_int_equal(sl_ct_ack(&c1, ids, 10, false, 0, &err), SL_OK);
  wait_gauge(t, "unacked_messages", "g", 0, 0);
  wait_gauge(t, "backlog_entries", "g", 0, 0);
  wait_gauge(t, "backlog_bytes", "g", 0, 0);
  sl_ct_close(&c2);
  wait_gauge(t, "consumers", "g", 1, 1);
  sl_ct_close(&c1);
  wait_gauge(t, "consumers", "g", 0, 0);

  /* The partition goes: so do its subscriptions' series. */
  sl_pt_unload(t, 0, SUBS);
  char series[256];
  sub_series(series, sizeof(series), "consumers", "g");
  char *m = sl_ms_scrape(t->c, 0);
  double v;
  if (sl_ms_sample(m, series, &v)) fail_msg("%s still on /metrics after the unload", series);
  assert_null(strstr(m, "subscription=\"g\""));
  free(m);
}

static int setup(void **state) {
  /* The broker inherits it: its /metrics on a free port. */
  setenv("SLUICE_BROKER_METRICS_LISTEN", "127.0.0.1:0", 1);
  sl_pt *t = calloc(1, sizeof(*t));
  sl_pt_start(t, "broker_metrics", 1, 4, 1);
  unsetenv("SLUICE_BROKER_METRICS_LISTEN");
  sl_pt_namespace(t, "bm", false, 0);
  sl_pt_topic(t, PART, 0);
  sl_pt_topic(t, SUBS, 0);
  *state = t;
  return 0;
}

static int teardown(void **state) {
  sl_pt_stop(*state);
  free(*state);
  return 0;
}

int main(void) {
  curl_global_init(CURL_GLOBAL_DEFAULT);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_broker_metrics__move_with_the_work),
      cmocka_unit_test(test_broker_metrics__subscription_gauges),
  };
  int rc = cmocka_run_group_tests(tests, setup, teardown);
  curl_global_cleanup();
  return rc;
}
