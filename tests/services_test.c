/*
 * The three service binaries as processes: each starts, logs its ready
 * line, serves grpc.health.v1, answers RPCs of its service, and exits
 * cleanly within 1 s of SIGTERM.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "common/clock.h"
#include "common/rpc_client.h"
#include "client/sluice.h"
#include "common/rpc_health.h"
#include "common/service.h"
#include "tests/cluster.h"
#include "tests/proc.h"
#include "common/testing.h"

static sl_cluster *start_cluster(void) {
  sl_cluster_opts o = SL_CLUSTER_OPTS_INIT;
  o.bookies = 1;
  o.name = "services";
  sl_cluster *c = NULL;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_cluster_start(&o, &c, &err);
  if (st != SL_OK) fail_msg("cluster: %s", sl_err_msg(&err, st));
  return c;
}

static int health_with(const sl_rpc_channel_opts *base, const char *addr) {
  sl_rpc_channel *ch = NULL;
  sl_rpc_channel_opts co = *base;
  co.target = addr;
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_rpc_channel_create(&co, &ch, &err), SL_OK);
  Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  ProtobufCMessage *resp = NULL;
  sl_rpc_call_opts opts = {.timeout_ms = 5000};
  sl_status st = sl_rpc_unary(ch, &sl_rpc_health_check, &req.base, &resp, &opts, &err);
  int status = -1;
  if (st == SL_OK) {
    status = ((Grpc__Health__V1__HealthCheckResponse *)resp)->status;
    protobuf_c_message_free_unpacked(resp, NULL);
  }
  sl_rpc_channel_destroy(ch);
  return status;
}

static int health(const char *addr) {
  sl_rpc_channel_opts co = {0};
  return health_with(&co, addr);
}

static void test_services__serve_health(void **state) {
  (void)state;
  sl_cluster *c = start_cluster();
  for (int k = SL_NODE_METADATA; k <= SL_NODE_BROKER; k++)
    assert_int_equal(health(sl_cluster_addr(c, (sl_node_kind)k, 0)),
                     GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
  sl_cluster_destroy(c);
}

static void test_services__sigterm_exits_within_1s(void **state) {
  (void)state;
  sl_cluster *c = start_cluster();
  sl_err err = SL_ERR_INIT;
  for (int k = SL_NODE_BROKER; k >= SL_NODE_METADATA; k--) {
    long long t0 = sl_clock_mono_ms();
    assert_int_equal(sl_cluster_stop_node(c, (sl_node_kind)k, 0, &err), SL_OK);
    long long took = sl_clock_mono_ms() - t0;
    assert_true(took < sl_test_scaled_ms(1000));
    /* Exited by itself on SIGTERM: the log says so, no SIGKILL needed. */
    FILE *f = fopen(sl_cluster_log(c, (sl_node_kind)k, 0), "r");
    assert_non_null(f);
    char line[4096];
    int stopped = 0;
    while (fgets(line, sizeof(line), f)) stopped += strstr(line, "event=stopped") != NULL;
    fclose(f);
    assert_int_equal(stopped, 1);
  }
  sl_cluster_destroy(c);
}

/* A self-signed certificate for 127.0.0.1 in the test's temp dir: it is
 * its own CA. */
static char cert[512], key[512];

static void make_cert(void) {
  const char *tmp = getenv("TEST_TMPDIR") ? getenv("TEST_TMPDIR") : "/tmp";
  char cmd[2048];
  snprintf(cert, sizeof(cert), "%s/svc.crt", tmp);
  snprintf(key, sizeof(key), "%s/svc.key", tmp);
  snprintf(cmd, sizeof(cmd),
           "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
           "-nodes -days 1 -subj /CN=sluice -addext "
           "subjectAltName=IP:127.0.0.1,DNS:localhost -keyout %s -out %s "
           "2>/dev/null", key, cert);
  assert_int_equal(system(cmd), 0);
}

/* TLS configured the way operators do it: PEM files named by flags. */
static void test_services__tls_from_flags(void **state) {
  (void)state;
  make_cert();
  const char *tls_args[] = {"--tls_cert", cert, "--tls_key", key, NULL};
  sl_cluster_opts o = SL_CLUSTER_OPTS_INIT;
  o.bookies = 0;
  o.brokers = 0;
  o.local_store = true;
  o.metadata_args = tls_args;
  o.name = "tls";
  sl_cluster *c = NULL;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_cluster_start(&o, &c, &err);
  if (st != SL_OK) fail_msg("cluster: %s", sl_err_msg(&err, st));

  FILE *f = fopen(cert, "r");
  assert_non_null(f);
  static char pem[8192];
  size_t n = fread(pem, 1, sizeof(pem) - 1, f);
  fclose(f);
  pem[n] = '\0';
  sl_rpc_channel_opts tls = {.tls_root_pem = pem};
  const char *addr = sl_cluster_addr(c, SL_NODE_METADATA, 0);
  assert_int_equal(health_with(&tls, addr),
                   GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
  assert_int_equal(health(addr), -1); /* plaintext is refused */
  sl_cluster_destroy(c);
}

/* Every port serves TLS only, and every service calls the others over TLS
 * (mutual: each presents its own certificate): a message goes from a TLS
 * client through the broker to the bookies and back. A plaintext caller
 * is refused by each kind of service. */
static void test_services__tls_everywhere(void **state) {
  (void)state;
  make_cert();
  const char *metadata_args[] = {"--tls_cert", cert, "--tls_key", key, NULL};
  const char *bookie_args[] = {"--tls_cert", cert, "--tls_key", key, "--metadata_tls_ca", cert,
                               "--bookie_tls_ca", cert, NULL};
  const char *broker_args[] = {"--tls_cert", cert, "--tls_key", key, "--metadata_tls_ca", cert,
                               "--bookie_tls_ca", cert, "--broker_tls_ca", cert, NULL};
  sl_cluster_opts o = SL_CLUSTER_OPTS_INIT;
  o.bookies = 3;
  o.local_store = true;
  o.metadata_args = metadata_args;
  o.bookie_args = bookie_args;
  o.broker_args = broker_args;
  o.name = "tls-everywhere";
  char *pem = NULL;
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_service_read_file(cert, &pem, &err), SL_OK);
  o.tls_ca_pem = pem;
  sl_cluster *c = NULL;
  sl_status st = sl_cluster_start(&o, &c, &err);
  if (st != SL_OK) fail_msg("cluster: %s", sl_err_msg(&err, st));
  for (int k = SL_NODE_METADATA; k <= SL_NODE_BROKER; k++)
    assert_int_equal(health(sl_cluster_addr(c, (sl_node_kind)k, 0)), -1);

  sl_client_opts co = SL_CLIENT_OPTS_INIT;
  co.url = sl_cluster_addr(c, SL_NODE_BROKER, 0);
  co.tls_ca_file = cert;
  co.tls_cert_file = cert;
  co.tls_key_file = key;
  sl_client *cl = NULL;
  assert_int_equal(sl_client_create(&co, &cl, &err), SL_OK);
  /* The broker reaches the metadata service once its session is open. */
  int64_t deadline = sl_clock_mono_ms() + sl_test_scaled_ms(20000);
  while ((st = sl_admin_namespace_create(cl, "tls", &err)) != SL_OK) {
    if (sl_clock_mono_ms() > deadline) fail_msg("namespace: %s", sl_err_msg(&err, st));
    struct timespec ts = {0, 50 * 1000000L};
    nanosleep(&ts, NULL);
  }
  assert_int_equal(sl_admin_topic_create(cl, "tls/t", 0, &err), SL_OK);
  sl_consumer_opts so = SL_CONSUMER_OPTS_INIT;
  so.topic = "tls/t";
  so.subscription = "s";
  so.from_earliest = true;
  sl_consumer *cons = NULL;
  st = sl_consumer_create(cl, &so, &cons, &err);
  if (st != SL_OK) fail_msg("consumer: %s", sl_err_msg(&err, st));
  sl_producer_opts po = SL_PRODUCER_OPTS_INIT;
  po.topic = "tls/t";
  sl_producer *p = NULL;
  assert_int_equal(sl_producer_create(cl, &po, &p, &err), SL_OK);
  sl_message m = {.payload = "over tls", .len = 8};
  sl_msg_id id;
  st = sl_producer_send(p, &m, &id, &err);
  if (st != SL_OK) fail_msg("send: %s", sl_err_msg(&err, st));
  sl_received *r = NULL;
  st = sl_consumer_receive(cons, sl_test_scaled_ms(20000), &r, &err);
  if (st != SL_OK) fail_msg("receive: %s", sl_err_msg(&err, st));
  assert_int_equal(r->len, 8);
  assert_memory_equal(r->payload, "over tls", 8);
  assert_int_equal(sl_consumer_ack(cons, &r->id, &err), SL_OK);
  sl_received_free(r);
  sl_producer_destroy(p);
  sl_consumer_destroy(cons);
  sl_client_destroy(cl);
  sl_cluster_destroy(c);
  free(pem);
}

/* Bookies with --encryption_key_file: a message goes through and back,
 * and no bookie's files (journal, entry log, index) hold it in the clear. */
static void test_services__encryption_at_rest(void **state) {
  (void)state;
  const char *tmp = getenv("TEST_TMPDIR");
  char keyfile[512];
  snprintf(keyfile, sizeof(keyfile), "%s/bookie.key", tmp ? tmp : "/tmp");
  FILE *f = fopen(keyfile, "w");
  assert_non_null(f);
  fputs("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n", f);
  fclose(f);
  const char *bookie_args[] = {"--encryption_key_file", keyfile, NULL};
  sl_cluster_opts o = SL_CLUSTER_OPTS_INIT;
  o.bookies = 3;
  o.local_store = true;
  o.public_namespace = true;
  o.bookie_args = bookie_args;
  o.name = "encryption";
  sl_cluster *c = NULL;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_cluster_start(&o, &c, &err);
  if (st != SL_OK) fail_msg("cluster: %s", sl_err_msg(&err, st));
  sl_client_opts co = SL_CLIENT_OPTS_INIT;
  co.url = sl_cluster_addr(c, SL_NODE_BROKER, 0);
  sl_client *cl = NULL;
  assert_int_equal(sl_client_create(&co, &cl, &err), SL_OK);
  assert_int_equal(sl_admin_topic_create(cl, "public/enc", 0, &err), SL_OK);
  sl_consumer_opts so = SL_CONSUMER_OPTS_INIT;
  so.topic = "public/enc";
  so.subscription = "s";
  so.from_earliest = true;
  sl_consumer *cons = NULL;
  assert_int_equal(sl_consumer_create(cl, &so, &cons, &err), SL_OK);
  sl_producer_opts po = SL_PRODUCER_OPTS_INIT;
  po.topic = "public/enc";
  sl_producer *p = NULL;
  assert_int_equal(sl_producer_create(cl, &po, &p, &err), SL_OK);
  static const char secret[] = "TOP-SECRET-MESSAGE-4711";
  sl_message m = {.payload = secret, .len = sizeof(secret) - 1};
  sl_msg_id id;
  st = sl_producer_send(p, &m, &id, &err);
  if (st != SL_OK) fail_msg("send: %s", sl_err_msg(&err, st));
  sl_received *r = NULL;
  st = sl_consumer_receive(cons, (int)sl_test_scaled_ms(20000), &r, &err);
  if (st != SL_OK) fail_msg("receive: %s", sl_err_msg(&err, st));
  assert_int_equal(r->len, sizeof(secret) - 1);
  assert_memory_equal(r->payload, secret, r->len);
  sl_received_free(r);
  /* Acked by Qa bookies: the journal holds it. None in the clear. */
  for (int i = 0; i < 3; i++) {
    char dir[1024];
    snprintf(dir, sizeof(dir), "%s/%s", sl_cluster_dir(c), sl_cluster_id(c, SL_NODE_BOOKIE, i));
    assert_false(sl_test_tree_holds(dir, "TOP-SECRET-MESSAGE"));
  }
  sl_producer_destroy(p);
  sl_consumer_destroy(cons);
  sl_client_destroy(cl);
  sl_cluster_destroy(c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_services__serve_health),
      cmocka_unit_test(test_services__sigterm_exits_within_1s),
      cmocka_unit_test(test_services__tls_from_flags),
      cmocka_unit_test(test_services__tls_everywhere),
      cmocka_unit_test(test_services__encryption_at_rest),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
