/*
 * Local cluster harness (see cluster.h).
 *
 * A node's life: NEW -> started (spawn, wait for "event=ready ... port=N" in
 * its log, record the port) -> killed or stopped -> started again on the
 * recorded port with the same data dir. Restarts append to the same log, so
 * the harness remembers how many ready lines it has already seen and waits
 * for the next one.
 */
#include "tests/cluster.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/rpc_client.h"
#include "metadata.slrpc.h"
#include "tests/proc.h"

#define MAX_ARGS 64

typedef struct node {
  sl_node_kind kind;
  int index;
  char id[32];
  char dir[PATH_MAX];      /* data dir for bookies and local stores */
  char log[PATH_MAX];
  char addr[64];           /* "127.0.0.1:PORT" once ready */
  int port;                /* 0 until first ready */
  int ready_seen;          /* ready lines seen in the log so far */
  sl_proc proc;
} node;

struct sl_cluster {
  sl_cluster_opts opts;
  char *dir;
  sl_etcd_proc etcd;
  bool have_etcd;
  char metadata_target[SL_CLUSTER_MAX_NODES * 24 + 8];
  node nodes[3][SL_CLUSTER_MAX_NODES];
  int count[3];
};

static const char *const kind_names[] = {"metadata", "bookie", "broker"};

sl_status sl_cluster_binary(const char *pkg, const char *name, char **out,
                            sl_err *err) {
  char path[PATH_MAX];
  const char *bin_dir = getenv("SLUICE_BIN_DIR");
  const char *srcdir = getenv("TEST_SRCDIR");
  char exe[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  exe[n > 0 ? n : 0] = '\0';
  const char *candidates[3];
  char runfiles[PATH_MAX], sibling[PATH_MAX];
  int nc = 0;
  if (bin_dir != NULL) {
    snprintf(path, sizeof(path), "%s/%s/%s", bin_dir, pkg, name);
    candidates[nc++] = path;
  } else if (srcdir != NULL) {
    snprintf(path, sizeof(path), "%s/sluice/%s/%s", srcdir, pkg, name);
    candidates[nc++] = path;
  }
  /* bazel-bin/tests/x.runfiles/sluice/<pkg>/<name>, then bazel-bin/<pkg>/<name> */
  snprintf(runfiles, sizeof(runfiles), "%s.runfiles/sluice/%s/%s", exe, pkg, name);
  candidates[nc++] = runfiles;
  char *slash = strrchr(exe, '/');
  if (slash != NULL) *slash = '\0';
  snprintf(sibling, sizeof(sibling), "%s/../%s/%s", exe, pkg, name);
  candidates[nc++] = sibling;
  for (int i = 0; i < nc; i++) {
    if (access(candidates[i], X_OK) == 0) {
      char *real = realpath(candidates[i], NULL);
      *out = real ? real : sl_xstrdup(candidates[i]);
      return SL_OK;
    }
  }
  return sl_err_set(err, SL_ENOTFOUND,
                    "%s: binary not found (looked at %s; set SLUICE_BIN_DIR)",
                    name, candidates[0]);
}

static node *get_node(const sl_cluster *c, sl_node_kind kind, int i) {
  if (kind > SL_NODE_BROKER || i < 0 || i >= c->count[kind]) return NULL;
  return (node *)&c->nodes[kind][i];
}

/* Counts "event=ready" lines in the log and returns the port of the last. */
static int scan_ready(const char *log, int *port) {
  FILE *f = fopen(log, "r");
  if (f == NULL) return 0;
  char line[4096];
  int seen = 0;
  while (fgets(line, sizeof(line), f) != NULL) {
    if (strstr(line, " event=ready ") == NULL) continue;
    const char *p = strstr(line, " port=");
    if (p != NULL) {
      seen++;
      *port = atoi(p + 6);
    }
  }
  fclose(f);
  return seen;
}

static sl_status wait_ready(sl_cluster *c, node *nd, sl_err *err) {
  int timeout = c->opts.ready_timeout_ms > 0 ? c->opts.ready_timeout_ms : 20000;
  long long deadline = sl_clock_mono_ms() + timeout;
  for (;;) {
    int port = 0;
    int seen = scan_ready(nd->log, &port);
    if (seen > nd->ready_seen) {
      nd->ready_seen = seen;
      nd->port = port;
      snprintf(nd->addr, sizeof(nd->addr), "127.0.0.1:%d", port);
      return SL_OK;
    }
    if (!sl_proc_running(&nd->proc))
      return sl_err_set(err, SL_EUNAVAIL, "%s: exited before ready (see %s)",
                        nd->id, nd->log);
    if (sl_clock_mono_ms() > deadline)
      return sl_err_set(err, SL_ETIMEDOUT, "%s: not ready after %d ms (see %s)",
                        nd->id, timeout, nd->log);
    struct timespec ts = {0, 10 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
}

static void push(const char **argv, int *n, const char *a) {
  if (*n < MAX_ARGS - 1) argv[(*n)++] = a;
}

static void push_extra(const char **argv, int *n, const char *const *extra) {
  for (; extra != NULL && *extra != NULL; extra++) push(argv, n, *extra);
}

static sl_status start_node(sl_cluster *c, node *nd, sl_err *err) {
  static const char *const bins[] = {"sluice-metadata", "sluice-bookie",
                                     "sluice-broker"};
  char *bin = NULL;
  sl_status st = sl_cluster_binary(kind_names[nd->kind], bins[nd->kind], &bin, err);
  if (st != SL_OK) return st;
  char listen[64], store[PATH_MAX + 16];
  snprintf(listen, sizeof(listen), "127.0.0.1:%d", nd->port);
  const char *argv[MAX_ARGS];
  int n = 0;
  push(argv, &n, bin);
  push(argv, &n, "--listen");
  push(argv, &n, listen);
  switch (nd->kind) {
    case SL_NODE_METADATA:
      if (c->have_etcd)
        snprintf(store, sizeof(store), "etcd:%s", c->etcd.endpoint);
      else
        snprintf(store, sizeof(store), "local:%s", nd->dir);
      push(argv, &n, "--store");
      push(argv, &n, store);
      push(argv, &n, "--replica_id");
      push(argv, &n, nd->id);
      push_extra(argv, &n, c->opts.metadata_args);
      break;
    case SL_NODE_BOOKIE:
      push(argv, &n, "--id");
      push(argv, &n, nd->id);
      push(argv, &n, "--data_dir");
      push(argv, &n, nd->dir);
      push(argv, &n, "--metadata");
      push(argv, &n, c->metadata_target);
      push_extra(argv, &n, c->opts.bookie_args);
      break;
    case SL_NODE_BROKER:
      push(argv, &n, "--id");
      push(argv, &n, nd->id);
      push(argv, &n, "--metadata");
      push(argv, &n, c->metadata_target);
      push_extra(argv, &n, c->opts.broker_args);
      break;
  }
  argv[n] = NULL;
  static const char *const env[] = {"GRPC_VERBOSITY=ERROR", NULL};
  st = sl_proc_start(&nd->proc, argv, env, nd->log, err);
  free(bin);
  if (st != SL_OK) return sl_err_wrap(err, st, "%s", nd->id);
  st = wait_ready(c, nd, err);
  if (st != SL_OK) sl_proc_kill(&nd->proc, NULL);
  return st;
}

static void update_metadata_target(sl_cluster *c) {
  size_t off = (size_t)snprintf(c->metadata_target, sizeof(c->metadata_target), "ipv4:");
  for (int i = 0; i < c->count[SL_NODE_METADATA]; i++) {
    off += (size_t)snprintf(c->metadata_target + off,
                            sizeof(c->metadata_target) - off, "%s%s",
                            i ? "," : "", c->nodes[SL_NODE_METADATA][i].addr);
  }
}

sl_status sl_cluster_add(sl_cluster *c, sl_node_kind kind, int *index,
                         sl_err *err) {
  if (kind > SL_NODE_BROKER || c->count[kind] >= SL_CLUSTER_MAX_NODES)
    return sl_err_set(err, SL_EINVAL, "cluster: no room for another %s",
                      kind_names[kind]);
  int i = c->count[kind];
  node *nd = &c->nodes[kind][i];
  memset(nd, 0, sizeof(*nd));
  nd->kind = kind;
  nd->index = i;
  nd->proc = (sl_proc)SL_PROC_INIT;
  snprintf(nd->id, sizeof(nd->id), "%s-%d", kind_names[kind], i);
  snprintf(nd->dir, sizeof(nd->dir), "%s/%s-%d", c->dir, kind_names[kind], i);
  snprintf(nd->log, sizeof(nd->log), "%s/%s-%d.log", c->dir, kind_names[kind], i);
  if (mkdir(nd->dir, 0755) != 0)
    return sl_err_set(err, SL_EIO, "%s: cannot create %s", nd->id, nd->dir);
  c->count[kind]++;
  sl_status st = start_node(c, nd, err);
  if (st != SL_OK) {
    c->count[kind]--;
    return st;
  }
  if (kind == SL_NODE_METADATA) update_metadata_target(c);
  if (index != NULL) *index = i;
  return SL_OK;
}

static sl_status metadata_channel(const sl_cluster *c, sl_rpc_channel **ch,
                                  sl_err *err) {
  sl_rpc_channel_opts co = {.target = c->metadata_target,
                            .tls_root_pem = c->opts.tls_ca_pem,
                            .authorization = c->opts.authorization};
  return sl_rpc_channel_create(&co, ch, err);
}

/* The namespace every fresh cluster has (issue 11). */
static sl_status create_public(sl_cluster *c, sl_err *err) {
  sl_rpc_channel *ch = NULL;
  sl_status st = metadata_channel(c, &ch, err);
  if (st != SL_OK) return st;
  Sluice__V1__CreateNamespaceRequest req = SLUICE__V1__CREATE_NAMESPACE_REQUEST__INIT;
  req.name = "public";
  Sluice__V1__Namespace *ns = NULL;
  sl_rpc_call_opts opts = {.timeout_ms = 5000, .wait_for_ready = true};
  st = sl_metadata_service_create_namespace(ch, &req, &ns, &opts, err);
  if (ns != NULL) protobuf_c_message_free_unpacked(&ns->base, NULL);
  sl_rpc_channel_destroy(ch);
  if (st == SL_EEXIST) st = SL_OK;
  return st == SL_OK ? SL_OK : sl_err_wrap(err, st, "cluster: namespace public");
}

sl_status sl_cluster_wait_brokers(sl_cluster *c, int want, int timeout_ms, sl_err *err) {
  sl_rpc_channel *ch = NULL;
  sl_status st = metadata_channel(c, &ch, err);
  if (st != SL_OK) return st;
  long long deadline = sl_clock_mono_ms() + timeout_ms;
  int have = 0;
  for (;;) {
    Sluice__V1__ListBrokersRequest req = SLUICE__V1__LIST_BROKERS_REQUEST__INIT;
    Sluice__V1__ListBrokersResponse *resp = NULL;
    sl_rpc_call_opts opts = {.timeout_ms = 2000};
    st = sl_metadata_service_list_brokers(ch, &req, &resp, &opts, NULL);
    if (st == SL_OK) {
      have = (int)resp->n_brokers;
      protobuf_c_message_free_unpacked(&resp->base, NULL);
      if (have >= want) break;
    }
    if (sl_clock_mono_ms() > deadline) {
      st = sl_err_set(err, SL_ETIMEDOUT, "cluster: %d of %d brokers registered after %d ms",
                      have, want, timeout_ms);
      break;
    }
    struct timespec ts = {0, 20 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  sl_rpc_channel_destroy(ch);
  return st;
}

sl_status sl_cluster_start(const sl_cluster_opts *opts, sl_cluster **out,
                           sl_err *err) {
  if (opts->metadata < 1 || opts->bookies < 0 || opts->brokers < 0 ||
      opts->metadata > SL_CLUSTER_MAX_NODES || opts->bookies > SL_CLUSTER_MAX_NODES ||
      opts->brokers > SL_CLUSTER_MAX_NODES ||
      (opts->local_store && opts->metadata > 1))
    return sl_err_set(err, SL_EINVAL, "cluster: bad node counts");
  sl_cluster *c = sl_xcalloc(1, sizeof(*c));
  c->opts = *opts;
  c->etcd = (sl_etcd_proc)SL_ETCD_PROC_INIT;
  sl_status st = sl_proc_tempdir(opts->name ? opts->name : "cluster", &c->dir, err);
  if (st != SL_OK) goto fail;
  if (!opts->local_store) {
    st = sl_etcd_proc_start(&c->etcd, "etcd", err);
    if (st != SL_OK) goto fail;
    c->have_etcd = true;
  }
  static const sl_node_kind order[] = {SL_NODE_METADATA, SL_NODE_BOOKIE,
                                       SL_NODE_BROKER};
  const int want[] = {opts->metadata, opts->bookies, opts->brokers};
  for (int k = 0; k < 3; k++) {
    for (int i = 0; i < want[k]; i++) {
      st = sl_cluster_add(c, order[k], NULL, err);
      if (st != SL_OK) goto fail;
    }
  }
  if (opts->public_namespace) {
    st = create_public(c, err);
    if (st != SL_OK) goto fail;
  }
  if (opts->brokers > 0) {
    st = sl_cluster_wait_brokers(c, opts->brokers, 20000, err);
    if (st != SL_OK) goto fail;
  }
  *out = c;
  return SL_OK;
fail:
  sl_cluster_destroy(c);
  return st;
}

void sl_cluster_destroy(sl_cluster *c) {
  if (c == NULL) return;
  /* Clients first: brokers, then bookies, then metadata, then etcd. */
  for (int k = SL_NODE_BROKER; k >= SL_NODE_METADATA; k--)
    for (int i = 0; i < c->count[k]; i++) sl_proc_stop(&c->nodes[k][i].proc, 5000, NULL);
  if (c->have_etcd) sl_etcd_proc_release(&c->etcd);
  free(c->dir);
  free(c);
}

const char *sl_cluster_dir(const sl_cluster *c) { return c->dir; }

int sl_cluster_count(const sl_cluster *c, sl_node_kind kind) {
  return kind <= SL_NODE_BROKER ? c->count[kind] : 0;
}

const char *sl_cluster_addr(const sl_cluster *c, sl_node_kind kind, int i) {
  node *nd = get_node(c, kind, i);
  return nd ? nd->addr : NULL;
}

const char *sl_cluster_metadata_target(const sl_cluster *c) {
  return c->metadata_target;
}

const char *sl_cluster_id(const sl_cluster *c, sl_node_kind kind, int i) {
  node *nd = get_node(c, kind, i);
  return nd ? nd->id : NULL;
}

const char *sl_cluster_log(const sl_cluster *c, sl_node_kind kind, int i) {
  node *nd = get_node(c, kind, i);
  return nd ? nd->log : NULL;
}

sl_etcd_proc *sl_cluster_etcd(sl_cluster *c) {
  return c->have_etcd ? &c->etcd : NULL;
}

sl_status sl_cluster_kill9(sl_cluster *c, sl_node_kind kind, int i, sl_err *err) {
  node *nd = get_node(c, kind, i);
  if (nd == NULL) return sl_err_set(err, SL_EINVAL, "cluster: no such node");
  return sl_proc_kill(&nd->proc, err);
}

sl_status sl_cluster_stop_node(sl_cluster *c, sl_node_kind kind, int i,
                               sl_err *err) {
  node *nd = get_node(c, kind, i);
  if (nd == NULL) return sl_err_set(err, SL_EINVAL, "cluster: no such node");
  return sl_proc_stop(&nd->proc, 5000, err);
}

sl_status sl_cluster_restart(sl_cluster *c, sl_node_kind kind, int i,
                             sl_err *err) {
  node *nd = get_node(c, kind, i);
  if (nd == NULL) return sl_err_set(err, SL_EINVAL, "cluster: no such node");
  if (sl_proc_running(&nd->proc))
    return sl_err_set(err, SL_EPRECOND, "%s: still running", nd->id);
  return start_node(c, nd, err);
}

sl_status sl_cluster_signal(sl_cluster *c, sl_node_kind kind, int i, int sig,
                            sl_err *err) {
  node *nd = get_node(c, kind, i);
  if (nd == NULL || !sl_proc_running(&nd->proc))
    return sl_err_set(err, SL_EINVAL, "cluster: no such running node");
  if (kill(nd->proc.pid, sig) != 0)
    return sl_err_set(err, SL_EIO, "%s: kill(%d): %s", nd->id, sig, strerror(errno));
  return SL_OK;
}

bool sl_cluster_running(sl_cluster *c, sl_node_kind kind, int i) {
  node *nd = get_node(c, kind, i);
  return nd != NULL && sl_proc_running(&nd->proc);
}

sl_status sl_cluster_find(const sl_cluster *c, const char *name, sl_node_kind *kind,
                          int *i, sl_err *err) {
  for (int k = SL_NODE_METADATA; k <= SL_NODE_BROKER; k++) {
    for (int j = 0; j < c->count[k]; j++) {
      if (strcmp(c->nodes[k][j].id, name) == 0) {
        *kind = (sl_node_kind)k;
        *i = j;
        return SL_OK;
      }
    }
  }
  return sl_err_set(err, SL_ENOTFOUND, "cluster: no node named %s", name);
}

int sl_cluster_pid(const sl_cluster *c, sl_node_kind kind, int i) {
  node *nd = get_node(c, kind, i);
  return nd != NULL ? (int)nd->proc.pid : 0;
}
