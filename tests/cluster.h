/*
 * The one local cluster harness: a real etcd, metadata replicas, bookies and
 * brokers, each a real process on a free loopback port, all under one temp
 * dir. Every integration and fault test and README's run command
 * (tools/up.sh, through sluice-cluster) use it.
 *
 *   sl_cluster_opts o = SL_CLUSTER_OPTS_INIT;   // 1 metadata, 3 bookies, 1 broker
 *   sl_cluster *c;
 *   sl_cluster_start(&o, &c, &err);             // returns once all are ready
 *   sl_cluster_addr(c, SL_NODE_BOOKIE, 0);      // "127.0.0.1:PORT"
 *   sl_cluster_kill9(c, SL_NODE_BOOKIE, 0, &err);
 *   sl_cluster_restart(c, SL_NODE_BOOKIE, 0, &err);  // same data, same port
 *   sl_cluster_destroy(c);                      // stops every process
 *
 * Nodes are started with --listen 127.0.0.1:0 and the harness reads the
 * bound port from the node's "event=ready ... port=N" log line, so there is
 * no race for free ports. Logs are <dir>/<node>.log (kept for post-mortems).
 * Binaries are found under $SLUICE_BIN_DIR/<pkg>/<name> if set, else in the
 * Bazel runfiles of the running program.
 *
 * With opts.public_namespace a fresh cluster has the namespace "public" (as
 * tools/cluster's does), and start returns only once every broker has registered (ListBrokers shows it), so
 * a test can look topics up at once. Nodes are named "metadata-0",
 * "bookie-2", "broker-1"; sl_cluster_find() maps a name back.
 *
 * One thread drives one cluster.
 */
#ifndef SL_TESTS_CLUSTER_H
#define SL_TESTS_CLUSTER_H

#include <stdbool.h>

#include "common/status.h"
#include "tests/etcd_proc.h"

typedef enum sl_node_kind {
  SL_NODE_METADATA = 0,
  SL_NODE_BOOKIE = 1,
  SL_NODE_BROKER = 2,
} sl_node_kind;

#define SL_CLUSTER_MAX_NODES 16

typedef struct sl_cluster_opts {
  int metadata;             /* metadata replicas */
  int bookies;
  int brokers;
  bool local_store;         /* metadata on an embedded store, no etcd
                               (then at most one metadata replica) */
  const char *name;         /* names the temp dir */
  /* Extra flags for every node of a kind, NULL-terminated, or NULL. */
  const char *const *metadata_args;
  const char *const *bookie_args;
  const char *const *broker_args;
  int ready_timeout_ms;     /* per node; 0 = 20 s */
  bool public_namespace;    /* create namespace "public", as a fresh cluster
                               for people has (the launcher, broker tests) */
  const char *tls_ca_pem;   /* the harness's own metadata calls verify the
                               service with this CA (PEM text, kept by the
                               caller); NULL = plaintext */
  const char *authorization; /* the harness's own metadata calls send this
                               ("Bearer <token>", kept by the caller); NULL =
                               none */
} sl_cluster_opts;

#define SL_CLUSTER_OPTS_INIT                                              \
  {.metadata = 1, .bookies = 3, .brokers = 1, .local_store = false,       \
   .name = "cluster", .metadata_args = NULL, .bookie_args = NULL,          \
   .broker_args = NULL, .ready_timeout_ms = 0, .public_namespace = false, \
   .tls_ca_pem = NULL, .authorization = NULL}

typedef struct sl_cluster sl_cluster;

/* Starts etcd (unless local_store), then metadata, bookies, brokers, each
 * waiting for its ready line. On failure everything started is stopped and
 * err names the node and points at its log. */
sl_status sl_cluster_start(const sl_cluster_opts *opts, sl_cluster **out,
                           sl_err *err);

/* Stops every process (SIGTERM, then SIGKILL after a grace period), frees.
 * The temp dir stays for post-mortems. NULL is a no-op. */
void sl_cluster_destroy(sl_cluster *c);

const char *sl_cluster_dir(const sl_cluster *c);
int sl_cluster_count(const sl_cluster *c, sl_node_kind kind);

/* "127.0.0.1:PORT" of node i (valid until destroy). */
const char *sl_cluster_addr(const sl_cluster *c, sl_node_kind kind, int i);

/* All metadata replicas as one gRPC target, "ipv4:127.0.0.1:P1,127.0.0.1:P2". */
const char *sl_cluster_metadata_target(const sl_cluster *c);

/* The node's id ("bookie-0") and log path. */
const char *sl_cluster_id(const sl_cluster *c, sl_node_kind kind, int i);
const char *sl_cluster_log(const sl_cluster *c, sl_node_kind kind, int i);

/* The etcd process (NULL with local_store), e.g. to kill -9 it. */
sl_etcd_proc *sl_cluster_etcd(sl_cluster *c);

/* kill -9 node i (it keeps its data dir and port for a restart). */
sl_status sl_cluster_kill9(sl_cluster *c, sl_node_kind kind, int i, sl_err *err);

/* SIGTERM node i and wait for its exit (up to 5 s, then SIGKILL). */
sl_status sl_cluster_stop_node(sl_cluster *c, sl_node_kind kind, int i,
                               sl_err *err);

/* Starts a stopped or killed node again: same id, data dir and port. */
sl_status sl_cluster_restart(sl_cluster *c, sl_node_kind kind, int i,
                             sl_err *err);

/* Adds and starts one more node of a kind; its index goes to *index. */
sl_status sl_cluster_add(sl_cluster *c, sl_node_kind kind, int *index,
                         sl_err *err);

/* Sends signal sig to node i, e.g. SIGSTOP and SIGCONT to hang a node
 * without closing its sockets. */
sl_status sl_cluster_signal(sl_cluster *c, sl_node_kind kind, int i, int sig,
                            sl_err *err);

/* The node named `name` ("broker-1"); SL_ENOTFOUND if there is none. */
sl_status sl_cluster_find(const sl_cluster *c, const char *name, sl_node_kind *kind,
                          int *i, sl_err *err);

/* The node's process id, 0 when not running. */
int sl_cluster_pid(const sl_cluster *c, sl_node_kind kind, int i);

/* Polls ListBrokers until `want` brokers are registered or timeout_ms passes
 * (SL_ETIMEDOUT). */
sl_status sl_cluster_wait_brokers(sl_cluster *c, int want, int timeout_ms, sl_err *err);

/* True if node i's process is running. */
bool sl_cluster_running(sl_cluster *c, sl_node_kind kind, int i);

/* Full path of a Sluice binary, e.g. ("bookie", "sluice-bookie"), found as
 * described above. Heap string; caller frees. */
sl_status sl_cluster_binary(const char *pkg, const char *name, char **out,
                            sl_err *err);

#endif
