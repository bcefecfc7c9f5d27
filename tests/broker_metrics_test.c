/*
 * A broker's /metrics on a real cluster (etcd, metadata service, 4 bookies,
 * 1 broker; tests/produce_testlib.h): publish counters and the ack-latency
 * histogram move by the messages sent, owned partitions and pending bytes
 * are gauges of the present, a kill -9 of an ensemble bookie shows as an
 * ensemble change, a reopen as a ledger recovery, and promtool accepts the
 * whole page.
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

#include "tests/produce_testlib.h"

#define PART "bm/t"

static size_t on_body(char *p, size_t size, size_t n, void *arg) {
  char **body = arg;
  size_t k = size * n, have = *body ? strlen(*body) : 0;
  *body = realloc(*body, have + k + 1);
  assert_non_null(*body);
  memcpy(*body + have, p, k);
  (*body)[have + k] = '\0';
  return k;
}

/* The broker's "event=metrics_ready ... port=N" from its log. */
static int metrics_port(sl_pt *t) {
  FILE *f = fopen(sl_cluster_log(t->c, SL_NODE_BROKER, 0), "r");
  assert_non_null(f);
  char line[4096];
  int port = 0;
  while (fgets(line, sizeof(line), f) != NULL) {
    const char *p = strstr(line, " event=metrics_ready ");
    if (p != NULL && (p = strstr(p, " port=")) != NULL) port = atoi(p + 6);
  }
  fclose(f);
  assert_true(port > 0);
  return port;
}

/* GET /metrics; the caller frees the page. */
static char *scrape(sl_pt *t) {
  char url[64];
  snprintf(url, sizeof(url), "http://127.0.0.1:%d/metrics", metrics_port(t));
  char *body = NULL;
  CURL *h = curl_easy_init();
  assert_non_null(h);
  curl_easy_setopt(h, CURLOPT_URL, url);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &body);
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 5000L);
  CURLcode rc = curl_easy_perform(h);
  long code = 0;
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
  curl_easy_cleanup(h);
  if (rc != CURLE_OK) fail_msg("GET %s: %s", url, curl_easy_strerror(rc));
  assert_int_equal(code, 200);
  assert_non_null(body);
  return body;
}

/* The value of `series` (name with labels, as printed); fails if absent. */
static double sample(const char *text, const char *series) {
  size_t n = strlen(series);
  for (const char *line = text; *line != '\0';) {
    const char *end = strchr(line, '\n');
    if (end == NULL) end = line + strlen(line);
    if ((size_t)(end - line) > n && strncmp(line, series, n) == 0 && line[n] == ' ')
      return strtod(line + n + 1, NULL);
    line = *end ? end + 1 : end;
  }
  fail_msg("no sample %s", series);
  return 0;
}

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
  char *m = scrape(t);
  assert_true(sample(m, "sluice_broker_publish_messages_total") == 20);
  assert_true(sample(m, "sluice_broker_publish_ack_seconds_count") == 20);
  assert_true(sample(m, "sluice_broker_owned_partitions") == 1);
  assert_true(sample(m, "sluice_broker_ledger_add_seconds_count") >= 1);
  assert_true(sample(m, "sluice_broker_ledger_pending_bytes") == 0);
  assert_true(sample(m, "sluice_broker_publish_inflight_bytes") == 0);
  assert_true(sample(m, "sluice_broker_ledger_ensemble_changes_total") == 0);
  free(m);

  /* A bookie of the ensemble dies: the writer replaces it and goes on. */
  int victim = sl_pt_ensemble_bookie(t, PART, 0);
  assert_int_equal(sl_cluster_kill9(t->c, SL_NODE_BOOKIE, victim, &err), SL_OK);
  publish(&p, 20, 20);
  m = scrape(t);
  assert_true(sample(m, "sluice_broker_publish_messages_total") == 40);
  assert_true(sample(m, "sluice_broker_ledger_ensemble_changes_total") >= 1);
  free(m);
  sl_pt_close(&p);

  /* Moved and reopened: the open recovers (here: finds closed) the last
   * ledger. */
  double before = 0;
  m = scrape(t);
  before = sample(m, "sluice_broker_ledger_recoveries_total{outcome=\"ok\"}");
  free(m);
  sl_pt_unload(t, 0, PART);
  owner = sl_pt_owner(t, 0, PART, NULL);
  assert_int_equal(sl_pt_open(t, owner, PART, "mp", true, &p, NULL, &err), SL_OK);
  publish(&p, 40, 1);
  sl_pt_close(&p);
  m = scrape(t);
  assert_true(sample(m, "sluice_broker_ledger_recoveries_total{outcome=\"ok\"}") > before);
  assert_true(sample(m, "sluice_broker_ledger_recoveries_total{outcome=\"failed\"}") == 0);
  promtool_check(m);
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
  };
  int rc = cmocka_run_group_tests(tests, setup, teardown);
  curl_global_cleanup();
  return rc;
}
