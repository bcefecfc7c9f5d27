/*
 * Prometheus metrics of a real sluice-metadata process (through the cluster
 * harness, on its local store): --metrics_listen and its environment twin,
 * the metrics_ready line, per-method RPC counters that move by exactly the
 * calls made, process metrics, 404/405, and a bad address refused at start.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/rpc_client.h"
#include "broker.slrpc.h"
#include "metadata.slrpc.h"
#include "tests/cluster.h"

#define CREATE_NS "/sluice.v1.MetadataService/CreateNamespace"
#define GET_NS "/sluice.v1.MetadataService/GetNamespace"

/* ---- helpers ---- */

static sl_cluster *start_metadata(const char *name, const char *const *args) {
  sl_cluster_opts o = SL_CLUSTER_OPTS_INIT;
  o.bookies = 0;
  o.brokers = 0;
  o.local_store = true;
  o.metadata_args = args;
  o.name = name;
  sl_cluster *c = NULL;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_cluster_start(&o, &c, &err);
  if (st != SL_OK) fail_msg("cluster: %s", sl_err_msg(&err, st));
  return c;
}

/* The port of node 0's "event=metrics_ready ... port=N" line, or 0. */
static int node_metrics_port(sl_cluster *c, sl_node_kind kind) {
  FILE *f = fopen(sl_cluster_log(c, kind, 0), "r");
  assert_non_null(f);
  char line[4096];
  int port = 0;
  while (fgets(line, sizeof(line), f) != NULL) {
    if (strstr(line, " event=metrics_ready ") == NULL) continue;
    const char *p = strstr(line, " port=");
    assert_non_null(p);
    port = atoi(p + 6);
  }
  fclose(f);
  return port;
}

static int metrics_port(sl_cluster *c) { return node_metrics_port(c, SL_NODE_METADATA); }

typedef struct page {
  char *body;
  size_t len;
  long code;
  char type[128];
} page;

static size_t on_body(char *p, size_t size, size_t n, void *arg) {
  page *pg = arg;
  size_t k = size * n;
  pg->body = realloc(pg->body, pg->len + k + 1);
  assert_non_null(pg->body);
  memcpy(pg->body + pg->len, p, k);
  pg->len += k;
  pg->body[pg->len] = '\0';
  return k;
}

static size_t on_header(char *p, size_t size, size_t n, void *arg) {
  page *pg = arg;
  size_t k = size * n;
  if (strncasecmp(p, "Content-Type: ", 14) == 0 && k >= 16)
    snprintf(pg->type, sizeof(pg->type), "%.*s", (int)(k - 16), p + 14);
  return k;
}

/* GET (or POST if post) http://127.0.0.1:port<path>; caller frees body. */
static page http(int port, const char *path, bool post) {
  page pg = {0};
  char url[256];
  snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
  CURL *h = curl_easy_init();
  assert_non_null(h);
  curl_easy_setopt(h, CURLOPT_URL, url);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &pg);
  curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(h, CURLOPT_HEADERDATA, &pg);
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 5000L);
  if (post) curl_easy_setopt(h, CURLOPT_POSTFIELDS, "x");
  CURLcode rc = curl_easy_perform(h);
  if (rc != CURLE_OK) fail_msg("GET %s: %s", url, curl_easy_strerror(rc));
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &pg.code);
  curl_easy_cleanup(h);
  return pg;
}

/* The value of the sample `series` (e.g. `x_total{a="b"}`) in an exposition
 * text; fails the test if it is missing. */
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

/* Every sample line names a family announced by # HELP and # TYPE before it. */
static void assert_well_formed(const char *text) {
  char family[256] = "";
  int samples = 0;
  for (const char *line = text; *line != '\0';) {
    const char *end = strchr(line, '\n');
    assert_non_null(end); /* every line ends with a newline */
    if (strncmp(line, "# HELP ", 7) == 0) {
      size_t k = strcspn(line + 7, " \n");
      assert_true(k < sizeof(family));
      memcpy(family, line + 7, k);
      family[k] = '\0';
      char type[300];
      snprintf(type, sizeof(type), "# TYPE %s ", family);
      assert_int_equal(strncmp(end + 1, type, strlen(type)), 0);
    } else if (line[0] != '#') {
      assert_true(family[0] != '\0');
      assert_int_equal(strncmp(line, family, strlen(family)), 0);
      samples++;
    }
    line = end + 1;
  }
  assert_true(samples > 0);
}

static char *series(char *buf, size_t cap, const char *name, const char *method,
                    const char *code) {
  if (code != NULL)
    snprintf(buf, cap, "%s{method=\"%s\",code=\"%s\"}", name, method, code);
  else
    snprintf(buf, cap, "%s{method=\"%s\"}", name, method);
  return buf;
}

/* The counters the test looks at, from one scrape. */
typedef struct counts {
  double create_started, create_ok, create_invalid, create_received, create_sent;
  double get_started, get_ok, get_not_found, get_received, get_sent, get_seconds;
} counts;

static counts scrape(int port) {
  char b[256];
  page pg = http(port, "/metrics", false);
  assert_int_equal(pg.code, 200);
  assert_string_equal(pg.type, "text/plain; version=0.0.4; charset=utf-8");
  assert_well_formed(pg.body);
  const char *t = pg.body;
  counts n = {
      .create_started = sample(t, series(b, sizeof(b), "sluice_rpc_server_started_total",
                                         CREATE_NS, NULL)),
      .create_ok = sample(t, series(b, sizeof(b), "sluice_rpc_server_handled_total", CREATE_NS,
                                    "OK")),
      .create_invalid = sample(t, series(b, sizeof(b), "sluice_rpc_server_handled_total",
                                         CREATE_NS, "INVALID_ARGUMENT")),
      .create_received = sample(t, series(b, sizeof(b), "sluice_rpc_server_msg_received_total",
                                          CREATE_NS, NULL)),
      .create_sent = sample(t, series(b, sizeof(b), "sluice_rpc_server_msg_sent_total",
                                      CREATE_NS, NULL)),
      .get_started = sample(t, series(b, sizeof(b), "sluice_rpc_server_started_total", GET_NS,
                                      NULL)),
      .get_ok = sample(t, series(b, sizeof(b), "sluice_rpc_server_handled_total", GET_NS, "OK")),
      .get_not_found = sample(t, series(b, sizeof(b), "sluice_rpc_server_handled_total", GET_NS,
                                        "NOT_FOUND")),
      .get_received = sample(t, series(b, sizeof(b), "sluice_rpc_server_msg_received_total",
                                       GET_NS, NULL)),
      .get_sent = sample(t, series(b, sizeof(b), "sluice_rpc_server_msg_sent_total", GET_NS,
                                   NULL)),
      .get_seconds = sample(t, series(b, sizeof(b), "sluice_rpc_server_handling_seconds_count",
                                      GET_NS, NULL)),
  };
  free(pg.body);
  return n;
}

static sl_status create_ns(sl_rpc_channel *ch, const char *name) {
  Sluice__V1__CreateNamespaceRequest req = SLUICE__V1__CREATE_NAMESPACE_REQUEST__INIT;
  req.name = (char *)name;
  Sluice__V1__Namespace *resp = NULL;
  sl_err err = SL_ERR_INIT;
  sl_rpc_call_opts o = {.timeout_ms = 5000};
  sl_status st = sl_metadata_service_create_namespace(ch, &req, &resp, &o, &err);
  if (resp != NULL) protobuf_c_message_free_unpacked(&resp->base, NULL);
  return st;
}

static sl_status get_ns(sl_rpc_channel *ch, const char *name) {
  Sluice__V1__GetNamespaceRequest req = SLUICE__V1__GET_NAMESPACE_REQUEST__INIT;
  req.name = (char *)name;
  Sluice__V1__Namespace *resp = NULL;
  sl_err err = SL_ERR_INIT;
  sl_rpc_call_opts o = {.timeout_ms = 5000};
  sl_status st = sl_metadata_service_get_namespace(ch, &req, &resp, &o, &err);
  if (resp != NULL) protobuf_c_message_free_unpacked(&resp->base, NULL);
  return st;
}

/* ---- tests ---- */

static void test_metrics__rpc_counters_move_by_calls_made(void **state) {
  (void)state;
  const char *const args[] = {"--metrics_listen", "127.0.0.1:0", NULL};
  sl_cluster *c = start_metadata("metrics", args);
  int port = metrics_port(c);
  assert_true(port > 0);
  counts before = scrape(port);

  sl_rpc_channel *ch = NULL;
  sl_rpc_channel_opts co = {.target = sl_cluster_addr(c, SL_NODE_METADATA, 0)};
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_rpc_channel_create(&co, &ch, &err), SL_OK);
  assert_int_equal(create_ns(ch, "metrics-a"), SL_OK);
  assert_int_equal(create_ns(ch, "metrics-b"), SL_OK);
  assert_int_equal(create_ns(ch, "metrics-c"), SL_OK);
  assert_int_equal(create_ns(ch, "bad name!"), SL_EINVAL);
  assert_int_equal(get_ns(ch, "metrics-a"), SL_OK);
  assert_int_equal(get_ns(ch, "missing-1"), SL_ENOTFOUND);
  assert_int_equal(get_ns(ch, "missing-2"), SL_ENOTFOUND);
  sl_rpc_channel_destroy(ch);

  /* Counted before each status went out, so no waiting. */
  counts after = scrape(port);
  assert_true(after.create_started - before.create_started == 4);
  assert_true(after.create_ok - before.create_ok == 3);
  assert_true(after.create_invalid - before.create_invalid == 1);
  assert_true(after.create_received - before.create_received == 4);
  assert_true(after.create_sent - before.create_sent == 3);
  assert_true(after.get_started - before.get_started == 3);
  assert_true(after.get_ok - before.get_ok == 1);
  assert_true(after.get_not_found - before.get_not_found == 2);
  assert_true(after.get_received - before.get_received == 3);
  assert_true(after.get_sent - before.get_sent == 1);
  assert_true(after.get_seconds - before.get_seconds == 3);

  /* Process metrics ride along. */
  page pg = http(port, "/metrics", false);
  assert_true(sample(pg.body, "process_resident_memory_bytes") > 1e5);
  assert_true(sample(pg.body, "process_open_fds") > 3);
  assert_true(sample(pg.body, "process_start_time_seconds") > 1.5e9);
  assert_non_null(strstr(pg.body, "# TYPE process_cpu_seconds_total counter\n"));
  free(pg.body);

  /* Only GET /metrics. */
  pg = http(port, "/nope", false);
  assert_int_equal(pg.code, 404);
  free(pg.body);
  pg = http(port, "/metrics", true);
  assert_int_equal(pg.code, 405);
  free(pg.body);
  sl_cluster_destroy(c);
}

static void test_metrics__off_by_default_on_by_environment(void **state) {
  (void)state;
  sl_cluster *c = start_metadata("metrics-off", NULL);
  assert_int_equal(metrics_port(c), 0);
  sl_cluster_destroy(c);

  assert_int_equal(setenv("SLUICE_METADATA_METRICS_LISTEN", "127.0.0.1:0", 1), 0);
  c = start_metadata("metrics-env", NULL);
  assert_int_equal(unsetenv("SLUICE_METADATA_METRICS_LISTEN"), 0);
  int port = metrics_port(c);
  assert_true(port > 0);
  page pg = http(port, "/metrics", false);
  assert_int_equal(pg.code, 200);
  assert_non_null(strstr(pg.body, "sluice_rpc_server_started_total{method=\"" CREATE_NS "\"} "));
  free(pg.body);
  sl_cluster_destroy(c);
}

static void test_metrics__bad_address_fails_start(void **state) {
  (void)state;
  const char *const args[] = {"--metrics_listen", "no-port-here", NULL};
  sl_cluster_opts o = SL_CLUSTER_OPTS_INIT;
  o.bookies = 0;
  o.brokers = 0;
  o.local_store = true;
  o.metadata_args = args;
  o.name = "metrics-bad";
  o.ready_timeout_ms = 10000;
  sl_cluster *c = NULL;
  sl_err err = SL_ERR_INIT;
  assert_int_not_equal(sl_cluster_start(&o, &c, &err), SL_OK);
  assert_null(c);
  assert_non_null(strstr(err.msg, "exited before ready"));
  /* Its log says why. */
  const char *see = strstr(err.msg, "(see ");
  assert_non_null(see);
  char path[SL_ERR_MAX];
  snprintf(path, sizeof(path), "%.*s", (int)strcspn(see + 5, ")"), see + 5);
  FILE *f = fopen(path, "r");
  assert_non_null(f);
  char line[4096];
  bool said = false;
  while (fgets(line, sizeof(line), f) != NULL)
    said = said || (strstr(line, "event=failed") != NULL &&
                    strstr(line, "metrics listen no-port-here: want host:port") != NULL);
  fclose(f);
  assert_true(said);
}

/* A broker's ownership metrics: owned partitions, lookups by outcome. */
static void test_metrics__broker_ownership(void **state) {
  (void)state;
  const char *const args[] = {"--metrics_listen", "127.0.0.1:0", NULL};
  sl_cluster_opts o = SL_CLUSTER_OPTS_INIT;
  o.bookies = 0;
  o.brokers = 1;
  o.local_store = true;
  o.broker_args = args;
  o.name = "metrics_broker";
  o.public_namespace = true;
  sl_cluster *c = NULL;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_cluster_start(&o, &c, &err);
  if (st != SL_OK) fail_msg("cluster: %s", sl_err_msg(&err, st));
  int port = node_metrics_port(c, SL_NODE_BROKER);
  assert_true(port > 0);
  sl_rpc_channel *ch = NULL;
  sl_rpc_channel_opts co = {.target = sl_cluster_addr(c, SL_NODE_BROKER, 0)};
  assert_int_equal(sl_rpc_channel_create(&co, &ch, &err), SL_OK);
  sl_rpc_call_opts opts = {.timeout_ms = 5000};
  Sluice__V1__CreateTopicRequest creq = SLUICE__V1__CREATE_TOPIC_REQUEST__INIT;
  creq.name = "public/m";
  creq.partitions = 3;
  Sluice__V1__TopicInfo *t = NULL;
  assert_int_equal(sl_broker_service_create_topic(ch, &creq, &t, &opts, &err), SL_OK);
  protobuf_c_message_free_unpacked(&t->base, NULL);
  Sluice__V1__LookupRequest lreq = SLUICE__V1__LOOKUP_REQUEST__INIT;
  lreq.topic = "public/m";
  for (int i = 0; i < 2; i++) { /* first acquires all three, then owns them */
    Sluice__V1__LookupResponse *l = NULL;
    assert_int_equal(sl_broker_service_lookup(ch, &lreq, &l, &opts, &err), SL_OK);
    protobuf_c_message_free_unpacked(&l->base, NULL);
  }
  page pg = http(port, "/metrics", false);
  assert_int_equal(pg.code, 200);
  assert_true(sample(pg.body, "sluice_broker_owned_partitions") == 3);
  assert_true(sample(pg.body, "sluice_broker_lookups_total{outcome=\"acquired\"}") == 3);
  assert_true(sample(pg.body, "sluice_broker_lookups_total{outcome=\"local\"}") == 3);
  assert_true(sample(pg.body, "sluice_broker_lookups_total{outcome=\"error\"}") == 0);
  free(pg.body);
  sl_rpc_channel_destroy(ch);
  sl_cluster_destroy(c);
}

int main(void) {
  curl_global_init(CURL_GLOBAL_DEFAULT);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_metrics__rpc_counters_move_by_calls_made),
      cmocka_unit_test(test_metrics__off_by_default_on_by_environment),
      cmocka_unit_test(test_metrics__bad_address_fails_start),
      cmocka_unit_test(test_metrics__broker_ownership),
  };
  int rc = cmocka_run_group_tests(tests, NULL, NULL);
  curl_global_cleanup();
  return rc;
}
