/*
 * metadata-bench: CAS updates/s and lookups/s through sluice-metadata
 * (gRPC, UpdateCursor / GetCursor), next to the same kind of operation done
 * directly against the same etcd with the store API in the same run
 * (sl_store_put with an expected revision / sl_store_get), and the ratio.
 *
 * It starts etcd and one sluice-metadata on loopback through the cluster
 * harness (tests/cluster.h). Each case runs for --seconds with --clients
 * threads; every client updates its own cursor (so CASes do not collide)
 * and always knows its current version, as a broker does.
 *
 * What the service adds per update: a two-compare txn (the ownership
 * fence; the epoch itself comes from the service's cache), validation,
 * protobuf in and out, and one gRPC round trip. The "vs direct epoch read +
 * txn" rows compare the service with doing its store work by hand without a
 * cache (read the epoch, then the fenced txn), as a client of etcd would.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/config.h"
#include "common/log.h"
#include "common/rpc_client.h"
#include "metadata.pb-c.h"
#include "metadata.slrpc.h"
#include "metadata/store.h"
#include "tests/cluster.h"
#include "tests/proc.h"

typedef struct bench_cfg {
  long long seconds;
  long long clients;
  long long store_timeout_ms;
} bench_cfg;

static const sl_conf_entry table[] = {
    SL_CONF_INT(bench_cfg, seconds, "3", 1, 600, "METADATA_BENCH_SECONDS",
                "seconds per case"),
    SL_CONF_INT(bench_cfg, clients, "8", 1, 64, "METADATA_BENCH_CLIENTS",
                "client threads in the concurrent cases"),
    SL_CONF_INT(bench_cfg, store_timeout_ms, "5000", 100, 60000,
                "METADATA_BENCH_STORE_TIMEOUT_MS", "store call deadline"),
};

#define BENCH_NAMESPACE "bench"
#define BENCH_TOPIC "bench/topic" /* one partition: */
#define PARTITION "bench/topic-partition-0"

typedef enum op { OP_SVC_CAS, OP_SVC_GET, OP_DIRECT_CAS, OP_DIRECT_GET, OP_DIRECT_FENCED } op;

typedef struct shared {
  const char *target;     /* sluice-metadata address */
  sl_store *store;        /* direct etcd access */
  uint64_t epoch;
  atomic_bool stop;
  atomic_long ops;
  atomic_long errors;
  char error[256];        /* first error; guarded by lock */
  pthread_mutex_t lock;
} shared;

typedef struct client {
  shared *sh;
  op kind;
  int index;
  sl_rpc_channel *ch;
} client;

static void note_error(shared *sh, sl_status st, const sl_err *err) {
  atomic_fetch_add(&sh->errors, 1);
  pthread_mutex_lock(&sh->lock);
  if (sh->error[0] == '\0')
    snprintf(sh->error, sizeof(sh->error), "%s: %s", sl_status_str(st), sl_err_msg(err, st));
  pthread_mutex_unlock(&sh->lock);
}

/* A cursor state like a broker's: a mark-delete position and a few holes. */
static void cursor_init(Sluice__V1__CursorInfo *c, Sluice__V1__Position *pos,
                        Sluice__V1__AckedRanges *r, Sluice__V1__AckedRanges **rs,
                        uint64_t *bounds, char *sub) {
  sluice__v1__position__init(pos);
  pos->ledger_id = 12;
  sluice__v1__acked_ranges__init(r);
  r->ledger_id = 12;
  for (int i = 0; i < 8; i++) bounds[i] = i % 2 ? 3 : 5;
  r->bounds = bounds;
  r->n_bounds = 8;
  rs[0] = r;
  sluice__v1__cursor_info__init(c);
  c->partition = PARTITION;
  c->subscription = sub;
  c->mark_delete = pos;
  c->acked = rs;
  c->n_acked = 1;
}

static void *svc_loop(client *cl) {
  shared *sh = cl->sh;
  char sub[32];
  snprintf(sub, sizeof(sub), "sub-%d", cl->index);
  Sluice__V1__CursorInfo c;
  Sluice__V1__Position pos;
  Sluice__V1__AckedRanges r, *rs[1];
  uint64_t bounds[8];
  cursor_init(&c, &pos, &r, rs, bounds, sub);
  sl_rpc_call_opts o = {.timeout_ms = 10000};
  int64_t version = 0;
  sl_err err = SL_ERR_INIT;
  /* Learn (or create) the cursor's version first. */
  Sluice__V1__GetCursorRequest gr = SLUICE__V1__GET_CURSOR_REQUEST__INIT;
  gr.partition = PARTITION;
  gr.subscription = sub;
  Sluice__V1__CursorResponse *resp = NULL;
  if (sl_metadata_service_get_cursor(cl->ch, &gr, &resp, &o, &err) == SL_OK) {
    version = resp->version;
    protobuf_c_message_free_unpacked(&resp->base, NULL);
  }
  Sluice__V1__UpdateCursorRequest ur = SLUICE__V1__UPDATE_CURSOR_REQUEST__INIT;
  ur.info = &c;
  ur.epoch = sh->epoch;
  while (!atomic_load(&sh->stop)) {
    sl_status st;
    if (cl->kind == OP_SVC_CAS) {
      pos.entry_id++;
      ur.expected_version = version;
      st = sl_metadata_service_update_cursor(cl->ch, &ur, &resp, &o, &err);
      if (st == SL_OK) version = resp->version;
    } else {
      st = sl_metadata_service_get_cursor(cl->ch, &gr, &resp, &o, &err);
    }
    if (st == SL_OK) {
      protobuf_c_message_free_unpacked(&resp->base, NULL);
      atomic_fetch_add(&sh->ops, 1);
    } else {
      note_error(sh, st, &err);
    }
  }
  return NULL;
}

static void *direct_loop(client *cl) {
  shared *sh = cl->sh;
  char sub[32], key[160], epoch_key[160];
  snprintf(sub, sizeof(sub), "direct-%d", cl->index);
  snprintf(key, sizeof(key), "/sluice/cursors/%s/%s", PARTITION, sub);
  snprintf(epoch_key, sizeof(epoch_key), "/sluice/epochs/%s", PARTITION);
  Sluice__V1__CursorInfo c;
  Sluice__V1__Position pos;
  Sluice__V1__AckedRanges r, *rs[1];
  uint64_t bounds[8];
  cursor_init(&c, &pos, &r, rs, bounds, sub);
  sl_err err = SL_ERR_INIT;
  int64_t version = 0;
  sl_store_kv kv = {0};
  if (sl_store_get(sh->store, key, strlen(key), &kv, NULL) == SL_OK) version = kv.mod_revision;
  sl_store_kv_release(&kv);
  uint8_t buf[512];
  while (!atomic_load(&sh->stop)) {
    sl_status st;
    if (cl->kind == OP_DIRECT_GET) {
      st = sl_store_get(sh->store, key, strlen(key), &kv, &err);
      if (st == SL_OK) {
        /* Decode it, as a real reader would. */
        ProtobufCMessage *m = protobuf_c_message_unpack(&sluice__v1__cursor_info__descriptor,
                                                        NULL, kv.value_len, kv.value);
        if (m != NULL) protobuf_c_message_free_unpacked(m, NULL);
        sl_store_kv_release(&kv);
      }
    } else {
      pos.entry_id++;
      size_t len = protobuf_c_message_pack(&c.base, buf);
      if (cl->kind == OP_DIRECT_CAS) {
        st = sl_store_put(sh->store, key, strlen(key), buf, len, version, 0, &version, &err);
      } else {
        /* The service's own store work: epoch read, then a fenced txn. */
        st = sl_store_get(sh->store, epoch_key, strlen(epoch_key), &kv, &err);
        int64_t erev = kv.mod_revision;
        sl_store_kv_release(&kv);
        if (st == SL_OK) {
          sl_store_cmp cmps[2] = {{key, strlen(key), version},
                                  {epoch_key, strlen(epoch_key), erev}};
          sl_store_op put = {SL_STORE_OP_PUT, key, strlen(key), buf, len, 0};
          st = sl_store_txn(sh->store, cmps, 2, &put, 1, &version, &err);
        }
      }
    }
    if (st == SL_OK)
      atomic_fetch_add(&sh->ops, 1);
    else
      note_error(sh, st, &err);
  }
  return NULL;
}

static void *client_main(void *arg) {
  client *cl = arg;
  return cl->kind == OP_SVC_CAS || cl->kind == OP_SVC_GET ? svc_loop(cl) : direct_loop(cl);
}

static void sleep_ms(long long ms) {
  struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* Runs one case: n clients of `kind` for `seconds`; returns ops/s. */
static double run_case(shared *sh, op kind, int n, long long seconds) {
  client *cls = calloc((size_t)n, sizeof(*cls));
  pthread_t *ts = calloc((size_t)n, sizeof(*ts));
  atomic_store(&sh->stop, false);
  atomic_store(&sh->ops, 0);
  for (int i = 0; i < n; i++) {
    cls[i] = (client){sh, kind, i, NULL};
    if (kind == OP_SVC_CAS || kind == OP_SVC_GET) {
      sl_rpc_channel_opts co = {.target = sh->target};
      sl_err err = SL_ERR_INIT;
      if (sl_rpc_channel_create(&co, &cls[i].ch, &err) != SL_OK) {
        fprintf(stderr, "metadata-bench: channel: %s\n", err.msg);
        exit(1);
      }
    }
  }
  for (int i = 0; i < n; i++) pthread_create(&ts[i], NULL, client_main, &cls[i]);
  sleep_ms(300); /* warm-up: connections, first reads */
  long start_ops = atomic_load(&sh->ops);
  long long t0 = sl_clock_mono_ms();
  sleep_ms(seconds * 1000);
  long done = atomic_load(&sh->ops) - start_ops;
  long long t1 = sl_clock_mono_ms();
  atomic_store(&sh->stop, true);
  for (int i = 0; i < n; i++) pthread_join(ts[i], NULL);
  for (int i = 0; i < n; i++) sl_rpc_channel_destroy(cls[i].ch);
  free(cls);
  free(ts);
  return (double)done * 1000.0 / (double)(t1 - t0);
}

/* A broker session owning the partition, so cursor updates carry an epoch. */
static uint64_t take_partition(const char *target) {
  sl_rpc_channel_opts co = {.target = target};
  sl_rpc_channel *ch = NULL;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_rpc_channel_create(&co, &ch, &err);
  Sluice__V1__BrokerInfo b = SLUICE__V1__BROKER_INFO__INIT;
  b.id = "bench-broker";
  b.address = "127.0.0.1:1";
  Sluice__V1__OpenSessionRequest oreq = SLUICE__V1__OPEN_SESSION_REQUEST__INIT;
  oreq.kind = SLUICE__V1__NODE_KIND__NODE_KIND_BROKER;
  oreq.broker = &b;
  oreq.ttl_seconds = 300;
  Sluice__V1__OpenSessionResponse *os = NULL;
  if (st == SL_OK) st = sl_metadata_service_open_session(ch, &oreq, &os, NULL, &err);
  /* Only partitions of existing topics can be owned. */
  Sluice__V1__CreateNamespaceRequest nreq = SLUICE__V1__CREATE_NAMESPACE_REQUEST__INIT;
  nreq.name = BENCH_NAMESPACE;
  Sluice__V1__Namespace *ns = NULL;
  if (st == SL_OK) st = sl_metadata_service_create_namespace(ch, &nreq, &ns, NULL, &err);
  if (st == SL_EEXIST) st = SL_OK;
  if (ns != NULL) protobuf_c_message_free_unpacked(&ns->base, NULL);
  Sluice__V1__CreateTopicRequest treq = SLUICE__V1__CREATE_TOPIC_REQUEST__INIT;
  treq.name = BENCH_TOPIC;
  treq.partitions = 1;
  Sluice__V1__TopicInfo *ti = NULL;
  if (st == SL_OK) st = sl_metadata_service_create_topic(ch, &treq, &ti, NULL, &err);
  if (st == SL_EEXIST) st = SL_OK;
  if (ti != NULL) protobuf_c_message_free_unpacked(&ti->base, NULL);
  Sluice__V1__AcquireOwnershipRequest areq = SLUICE__V1__ACQUIRE_OWNERSHIP_REQUEST__INIT;
  areq.partition = PARTITION;
  areq.broker = &b;
  Sluice__V1__AcquireOwnershipResponse *ar = NULL;
  if (st == SL_OK) {
    areq.session_id = os->session_id;
    st = sl_metadata_service_acquire_ownership(ch, &areq, &ar, NULL, &err);
  }
  if (st != SL_OK) {
    fprintf(stderr, "metadata-bench: setup: %s\n", sl_err_msg(&err, st));
    exit(1);
  }
  uint64_t epoch = ar->owner->epoch;
  protobuf_c_message_free_unpacked(&ar->base, NULL);
  protobuf_c_message_free_unpacked(&os->base, NULL);
  sl_rpc_channel_destroy(ch);
  return epoch;
}

static void row(const char *name, double svc, double direct) {
  printf("%-34s %12.0f %14.0f %10.2f\n", name, svc, direct, direct > 0 ? svc / direct : 0);
  fflush(stdout);
}

int main(int argc, char **argv) {
  bench_cfg cfg;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_conf_parse(table, sizeof(table) / sizeof(table[0]), &cfg, argv[0], argc,
                               argv, &err);
  if (st == SL_ECANCELED) return 0;
  if (st != SL_OK) {
    fprintf(stderr, "metadata-bench: %s\n", sl_err_msg(&err, st));
    return 2;
  }
  sl_log_set_level(SL_LOG_WARN);
  char timeout[32];
  snprintf(timeout, sizeof(timeout), "%lld", cfg.store_timeout_ms);
  /* Not --log_level warn: the harness waits for the info-level ready line. */
  const char *args[] = {"--store_timeout_ms", timeout, NULL};
  sl_cluster_opts o = SL_CLUSTER_OPTS_INIT;
  o.bookies = 0;
  o.brokers = 0;
  o.name = "metadata-bench";
  o.metadata_args = args;
  sl_cluster *c = NULL;
  st = sl_cluster_start(&o, &c, &err);
  if (st != SL_OK) {
    fprintf(stderr, "metadata-bench: cluster: %s\n", sl_err_msg(&err, st));
    return 1;
  }
  shared sh = {.target = sl_cluster_addr(c, SL_NODE_METADATA, 0)};
  pthread_mutex_init(&sh.lock, NULL);
  char uri[128];
  snprintf(uri, sizeof(uri), "etcd:%s", sl_cluster_etcd(c)->endpoint);
  sl_store_opts so = SL_STORE_OPTS_INIT;
  so.timeout_ms = (int)cfg.store_timeout_ms;
  st = sl_store_open(uri, &so, &sh.store, &err);
  if (st != SL_OK) {
    fprintf(stderr, "metadata-bench: store: %s\n", sl_err_msg(&err, st));
    sl_cluster_destroy(c);
    return 1;
  }
  sh.epoch = take_partition(sh.target);

  int n = (int)cfg.clients;
  printf("metadata-bench: etcd + 1 sluice-metadata on loopback, %lld s per case, "
         "cursor value ~60 bytes\n", cfg.seconds);
  printf("%-34s %12s %14s %10s\n", "case (ops/s)", "service", "direct etcd", "ratio");
  char name[64];
  double s1 = run_case(&sh, OP_SVC_CAS, 1, cfg.seconds);
  double d1 = run_case(&sh, OP_DIRECT_CAS, 1, cfg.seconds);
  row("CAS update, 1 client", s1, d1);
  double sn = run_case(&sh, OP_SVC_CAS, n, cfg.seconds);
  double dn = run_case(&sh, OP_DIRECT_CAS, n, cfg.seconds);
  snprintf(name, sizeof(name), "CAS update, %d clients", n);
  row(name, sn, dn);
  double f1 = run_case(&sh, OP_DIRECT_FENCED, 1, cfg.seconds);
  double fn = run_case(&sh, OP_DIRECT_FENCED, n, cfg.seconds);
  row("  vs direct epoch read + txn, 1", s1, f1);
  snprintf(name, sizeof(name), "  vs direct epoch read + txn, %d", n);
  row(name, sn, fn);
  double g1 = run_case(&sh, OP_SVC_GET, 1, cfg.seconds);
  double h1 = run_case(&sh, OP_DIRECT_GET, 1, cfg.seconds);
  row("lookup, 1 client", g1, h1);
  double gn = run_case(&sh, OP_SVC_GET, n, cfg.seconds);
  double hn = run_case(&sh, OP_DIRECT_GET, n, cfg.seconds);
  snprintf(name, sizeof(name), "lookup, %d clients", n);
  row(name, gn, hn);
  long errors = atomic_load(&sh.errors);
  if (errors > 0) printf("errors: %ld (first: %s)\n", errors, sh.error);
  sl_store_close(sh.store);
  sl_cluster_destroy(c);
  pthread_mutex_destroy(&sh.lock);
  sl_conf_release(table, sizeof(table) / sizeof(table[0]), &cfg);
  return errors > 0 ? 1 : 0;
}
