/*
 * sluice-cluster: a whole local cluster on loopback, for people.
 * tools/up.sh runs it. It starts etcd, metadata, bookies and brokers through
 * the test harness (tests/cluster.h), checks every node's gRPC health,
 * prints the addresses, shows the parts working together (cluster_demo.h),
 * and keeps them running until SIGINT/SIGTERM
 * (or exits at once with --check).
 */
#include <stdio.h>
#include <stdlib.h>

#include "common/config.h"
#include "common/log.h"
#include "common/rpc_client.h"
#include "common/rpc_health.h"
#include "common/service.h"
#include "tests/cluster.h"
#include "tests/cluster_demo.h"
#include "tests/proc.h"

typedef struct cli_cfg {
  long long metadata;
  long long bookies;
  long long brokers;
  bool local;
  bool check;
} cli_cfg;

static const sl_conf_entry table[] = {
    SL_CONF_INT(cli_cfg, metadata, "1", 1, 8, "SLUICE_CLUSTER_METADATA",
                "metadata service replicas"),
    SL_CONF_INT(cli_cfg, bookies, "3", 0, 16, "SLUICE_CLUSTER_BOOKIES", "bookies"),
    SL_CONF_INT(cli_cfg, brokers, "1", 0, 16, "SLUICE_CLUSTER_BROKERS", "brokers"),
    SL_CONF_BOOL(cli_cfg, local, "false", "SLUICE_CLUSTER_LOCAL",
                 "embedded metadata store instead of etcd"),
    SL_CONF_BOOL(cli_cfg, check, "false", "SLUICE_CLUSTER_CHECK",
                 "check health, print, then stop everything and exit"),
};

static sl_status check_health(const char *addr, sl_err *err) {
  sl_rpc_channel *ch = NULL;
  sl_rpc_channel_opts co = {.target = addr};
  sl_status st = sl_rpc_channel_create(&co, &ch, err);
  if (st != SL_OK) return st;
  Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  ProtobufCMessage *resp = NULL;
  sl_rpc_call_opts opts = {.timeout_ms = 5000};
  st = sl_rpc_unary(ch, &sl_rpc_health_check, &req.base, &resp, &opts, err);
  if (st == SL_OK) {
    Grpc__Health__V1__HealthCheckResponse *r = (Grpc__Health__V1__HealthCheckResponse *)resp;
    if (r->status != GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING)
      st = sl_err_set(err, SL_EUNAVAIL, "%s: not serving", addr);
    protobuf_c_message_free_unpacked(resp, NULL);
  }
  sl_rpc_channel_destroy(ch);
  return st;
}

int main(int argc, char **argv) {
  cli_cfg cfg = {0};
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_conf_parse(table, sizeof(table) / sizeof(table[0]), &cfg,
                               argv[0], argc, argv, &err);
  if (st == SL_ECANCELED) return 0;
  if (st != SL_OK) {
    fprintf(stderr, "%s: %s\n", argv[0], sl_err_msg(&err, st));
    return 2;
  }
  sl_log_set_service("cluster");
  sl_service_block_signals();
  sl_cluster_opts o = SL_CLUSTER_OPTS_INIT;
  o.metadata = (int)cfg.metadata;
  o.bookies = (int)cfg.bookies;
  o.brokers = (int)cfg.brokers;
  o.local_store = cfg.local;
  o.name = "sluice-cluster";
  sl_cluster *c = NULL;
  st = sl_cluster_start(&o, &c, &err);
  if (st != SL_OK) {
    fprintf(stderr, "cluster: %s\n", sl_err_msg(&err, st));
    return 1;
  }
  printf("sluice local cluster, files in %s\n", sl_cluster_dir(c));
  if (sl_cluster_etcd(c) != NULL) printf("  etcd       %s\n", sl_cluster_etcd(c)->endpoint);
  static const char *const kinds[] = {"metadata", "bookie", "broker"};
  for (int k = SL_NODE_METADATA; k <= SL_NODE_BROKER && st == SL_OK; k++) {
    for (int i = 0; i < sl_cluster_count(c, (sl_node_kind)k) && st == SL_OK; i++) {
      const char *addr = sl_cluster_addr(c, (sl_node_kind)k, i);
      st = check_health(addr, &err);
      printf("  %-10s %-22s %s  log %s\n", kinds[k], addr,
             st == SL_OK ? "SERVING" : sl_err_msg(&err, st),
             sl_cluster_log(c, (sl_node_kind)k, i));
    }
  }
  if (st == SL_OK) st = sl_cluster_demo(c, stdout, &err);
  if (st != SL_OK) printf("failed: %s\n", sl_err_msg(&err, st));
  fflush(stdout);
  if (st == SL_OK && !cfg.check) {
    printf("running; press Ctrl-C to stop\n");
    fflush(stdout);
    sl_service_wait();
  }
  char *dir = sl_xstrdup(sl_cluster_dir(c));
  sl_cluster_destroy(c);
  if (st == SL_OK) sl_proc_rmtree(dir, NULL); /* keep logs of a failed run */
  printf(st == SL_OK ? "stopped\n" : "stopped; logs kept in %s\n", dir);
  free(dir);
  return st == SL_OK ? 0 : 1;
}
