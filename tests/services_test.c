/*
 * The three service binaries as processes: each starts, logs its ready
 * line, serves grpc.health.v1, answers RPCs of its service, and exits
 * cleanly within 1 s of SIGTERM.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "common/clock.h"
#include "common/rpc_client.h"
#include "common/rpc_health.h"
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

/* TLS configured the way operators do it: PEM files named by flags. */
static void test_services__tls_from_flags(void **state) {
  (void)state;
  const char *tmp = getenv("TEST_TMPDIR") ? getenv("TEST_TMPDIR") : "/tmp";
  char cert[512], key[512], cmd[2048];
  snprintf(cert, sizeof(cert), "%s/svc.crt", tmp);
  snprintf(key, sizeof(key), "%s/svc.key", tmp);
  snprintf(cmd, sizeof(cmd),
           "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
           "-nodes -days 1 -subj /CN=sluice -addext "
           "subjectAltName=IP:127.0.0.1,DNS:localhost -keyout %s -out %s "
           "2>/dev/null", key, cert);
  assert_int_equal(system(cmd), 0);
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

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_services__serve_health),
      cmocka_unit_test(test_services__sigterm_exits_within_1s),
      cmocka_unit_test(test_services__tls_from_flags),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
