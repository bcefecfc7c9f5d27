/*
 * Admin calls. Namespace and topic calls are the metadata service's own
 * messages: the request is forwarded as is (async) and the answer, or the
 * exact failure, goes back. Unload goes to ownership. ClusterStatus (brokers,
 * bookies, every partition's owner) and GetTopicStats (what the metadata
 * service knows: owner epoch, ledger chain) take several metadata round trips
 * each, so each runs on a short-lived thread of its own. Stats of what only
 * the owner knows (producers, subscriptions, rates) are filled in by the
 * managed ledger and consume modules, not here. TerminateTopic runs on
 * each partition's owner: here (the produce module terminates it) or on the
 * owning broker, which gets the call forwarded for that one partition.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "broker/service.h"
#include "common/clock.h"
#include "common/log.h"
#include "metadata.slrpc.h"
#include "metadata/md_names.h"

/* ---- forwarded calls ---- */

static void on_forwarded(sl_status st, const char *details, ProtobufCMessage *resp,
                         void *arg) {
  sl_rpc_call *call = arg;
  if (st == SL_OK) sl_rpc_call_finish(call, SL_OK, NULL, resp);
  else sl_rpc_call_finish(call, st, details, NULL);
  if (resp != NULL) protobuf_c_message_free_unpacked(resp, NULL);
  sl_rpc_call_unref(call);
}

/* Sends req to the metadata service's method m; its answer ends call. */
static void forward(sl_rpc_call *call, const ProtobufCMessage *req, void *ctx,
                    const sl_rpc_method *m) {
  sl_broker *b = ctx;
  sl_err err = SL_ERR_INIT;
  sl_rpc_call_ref(call);
  sl_rpc_call_opts co = {.timeout_ms = b->rpc_timeout_ms};
  sl_status st = sl_rpc_unary_async(b->md, m, req, &co, on_forwarded, call, &err);
  if (st != SL_OK) {
    sl_rpc_call_finish(call, st, sl_err_msg(&err, st), NULL);
    sl_rpc_call_unref(call);
  }
}

/* One typed handler per forwarded method, all calling forward(). */
#define FORWARD(fn, Req, METHOD)                                       \
  static void fn(sl_rpc_call *call, const Req *req, void *ctx) {       \
    forward(call, &req->base, ctx, METHOD);                            \
  }
FORWARD(create_namespace, Sluice__V1__CreateNamespaceRequest,
        SL_METADATA_SERVICE_CREATE_NAMESPACE)
FORWARD(get_namespace, Sluice__V1__GetNamespaceRequest, SL_METADATA_SERVICE_GET_NAMESPACE)
FORWARD(set_namespace_policies, Sluice__V1__SetNamespacePoliciesRequest,
        SL_METADATA_SERVICE_SET_NAMESPACE_POLICIES)
FORWARD(list_namespaces, Sluice__V1__ListNamespacesRequest,
        SL_METADATA_SERVICE_LIST_NAMESPACES)
FORWARD(delete_namespace, Sluice__V1__DeleteNamespaceRequest,
        SL_METADATA_SERVICE_DELETE_NAMESPACE)
FORWARD(create_topic, Sluice__V1__CreateTopicRequest, SL_METADATA_SERVICE_CREATE_TOPIC)
FORWARD(get_topic, Sluice__V1__GetTopicRequest, SL_METADATA_SERVICE_GET_TOPIC)
FORWARD(delete_topic, Sluice__V1__DeleteTopicRequest, SL_METADATA_SERVICE_DELETE_TOPIC)
FORWARD(list_topics, Sluice__V1__ListTopicsRequest, SL_METADATA_SERVICE_LIST_TOPICS)
#undef FORWARD

/* ---- Unload ---- */

static void on_unloaded(sl_status st, const char *msg, uint64_t epoch, void *arg) {
  sl_rpc_call *call = arg;
  if (st == SL_OK) {
    Sluice__V1__UnloadResponse resp = SLUICE__V1__UNLOAD_RESPONSE__INIT;
    resp.released_epoch = epoch;
    sl_broker_service_unload_reply(call, &resp);
  } else {
    sl_rpc_call_finish(call, st, msg, NULL);
  }
  sl_rpc_call_unref(call);
}

static void unload(sl_rpc_call *call, const Sluice__V1__UnloadRequest *req, void *ctx) {
  sl_broker *b = ctx;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_md_check_partition(req->topic, NULL, NULL, &err);
  if (st != SL_OK) {
    sl_rpc_call_finish(call, st, sl_err_msg(&err, st), NULL);
    return;
  }
  sl_rpc_call_ref(call);
  sl_ownership_unload(b->own, req->topic, on_unloaded, call);
}

/* ---- calls that take many metadata round trips ---- */

/* One such call, run on a short-lived thread of its own so that no server
 * worker blocks on it. The request is the call's (valid while we hold the
 * call's reference). */
typedef struct slow_call {
  sl_rpc_call *call;
  sl_broker *b;
  const ProtobufCMessage *req;
  void (*fn)(struct slow_call *sc);
} slow_call;

static void *slow_run(void *arg) {
  slow_call *sc = arg;
  (void)pthread_setname_np(pthread_self(), "admin-call");
  sc->fn(sc);
  sl_rpc_call_unref(sc->call);
  free(sc);
  return NULL;
}

static void run_slow(sl_rpc_call *call, void *ctx, const ProtobufCMessage *req,
                     void (*fn)(slow_call *sc)) {
  slow_call *sc = sl_xcalloc(1, sizeof(*sc));
  *sc = (slow_call){call, ctx, req, fn};
  sl_rpc_call_ref(call);
  pthread_t t;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  int rc = pthread_create(&t, &attr, slow_run, sc);
  pthread_attr_destroy(&attr);
  if (rc != 0) {
    sl_rpc_call_finish(call, SL_EBUSY, "cannot start a thread for this call", NULL);
    sl_rpc_call_unref(call);
    free(sc);
  }
}

/* ---- ClusterStatus ---- */

typedef struct partition_list {
  Sluice__V1__OwnedPartition **items;
  size_t n, cap;
} partition_list;

static void add_partition(partition_list *pl, const char *name) {
  if (pl->n == pl->cap) {
    pl->cap = pl->cap ? 2 * pl->cap : 64;
    pl->items = realloc(pl->items, pl->cap * sizeof(*pl->items));
    if (pl->items == NULL) sl_xmalloc(SIZE_MAX); /* aborts with a message */
  }
  Sluice__V1__OwnedPartition *p = sl_xcalloc(1, sizeof(*p));
  sluice__v1__owned_partition__init(p);
  p->partition = sl_xstrdup(name);
  p->broker_id = sl_xstrdup("");
  pl->items[pl->n++] = p;
}

static void free_partitions(partition_list *pl) {
  for (size_t i = 0; i < pl->n; i++) {
    free(pl->items[i]->partition);
    free(pl->items[i]->broker_id);
    free(pl->items[i]);
  }
  free(pl->items);
}

/* Every partition of every topic of every namespace, with its owner. */
static sl_status list_partitions(sl_broker *b, partition_list *pl, sl_err *err) {
  sl_rpc_call_opts co = {.timeout_ms = b->rpc_timeout_ms};
  Sluice__V1__ListNamespacesRequest nreq = SLUICE__V1__LIST_NAMESPACES_REQUEST__INIT;
  Sluice__V1__ListNamespacesResponse *ns = NULL;
  sl_status st = sl_metadata_service_list_namespaces(b->md, &nreq, &ns, &co, err);
  for (size_t i = 0; st == SL_OK && i < ns->n_namespaces; i++) {
    Sluice__V1__ListTopicsRequest treq = SLUICE__V1__LIST_TOPICS_REQUEST__INIT;
    treq.namespace_ = ns->namespaces[i]->name;
    Sluice__V1__ListTopicsResponse *ts = NULL;
    st = sl_metadata_service_list_topics(b->md, &treq, &ts, &co, err);
    for (size_t t = 0; st == SL_OK && t < ts->n_topics; t++) {
      const Sluice__V1__TopicInfo *ti = ts->topics[t];
      if (ti->partitions == 0) add_partition(pl, ti->name);
      for (uint32_t p = 0; p < ti->partitions; p++) {
        char name[SL_MD_PARTITION_MAX + 1];
        snprintf(name, sizeof(name), "%s-partition-%u", ti->name, p);
        add_partition(pl, name);
      }
    }
    if (ts) protobuf_c_message_free_unpacked(&ts->base, NULL);
  }
  if (ns) protobuf_c_message_free_unpacked(&ns->base, NULL);
  for (size_t i = 0; st == SL_OK && i < pl->n; i++) {
    Sluice__V1__OwnedPartition *p = pl->items[i];
    Sluice__V1__LookupOwnerRequest lreq = SLUICE__V1__LOOKUP_OWNER_REQUEST__INIT;
    lreq.partition = p->partition;
    Sluice__V1__OwnerInfo *ow = NULL;
    sl_status lst = sl_metadata_service_lookup_owner(b->md, &lreq, &ow, &co, err);
    if (lst == SL_OK) {
      free(p->broker_id);
      p->broker_id = sl_xstrdup(ow->broker_id);
      p->epoch = ow->epoch;
      protobuf_c_message_free_unpacked(&ow->base, NULL);
    } else if (lst != SL_ENOTFOUND) {
      st = lst;
    }
  }
  return st;
}

static void cluster_status_run(slow_call *sc) {
  sl_err err = SL_ERR_INIT;
  sl_rpc_call_opts co = {.timeout_ms = sc->b->rpc_timeout_ms};
  Sluice__V1__ListBrokersRequest breq = SLUICE__V1__LIST_BROKERS_REQUEST__INIT;
  Sluice__V1__ListBrokersResponse *brokers = NULL;
  Sluice__V1__ListBookiesRequest kreq = SLUICE__V1__LIST_BOOKIES_REQUEST__INIT;
  Sluice__V1__ListBookiesResponse *bookies = NULL;
  Sluice__V1__ListUnderReplicatedRequest ureq = SLUICE__V1__LIST_UNDER_REPLICATED_REQUEST__INIT;
  Sluice__V1__ListUnderReplicatedResponse *under = NULL;
  partition_list pl = {0};
  uint64_t *under_ids = NULL;
  sl_status st = sl_metadata_service_list_brokers(sc->b->md, &breq, &brokers, &co, &err);
  if (st == SL_OK)
    st = sl_metadata_service_list_bookies(sc->b->md, &kreq, &bookies, &co, &err);
  if (st == SL_OK)
    st = sl_metadata_service_list_under_replicated(sc->b->md, &ureq, &under, &co, &err);
  if (st == SL_OK) st = list_partitions(sc->b, &pl, &err);
  if (st == SL_OK) {
    Sluice__V1__ClusterStatusResponse resp = SLUICE__V1__CLUSTER_STATUS_RESPONSE__INIT;
    under_ids = sl_xcalloc(under->n_items + 1, sizeof(*under_ids));
    for (size_t i = 0; i < under->n_items; i++) under_ids[i] = under->items[i]->ledger_id;
    resp.n_under_replicated_ledgers = under->n_items;
    resp.under_replicated_ledgers = under_ids;
    resp.n_rereplicating_ledgers = under->n_claimed;
    resp.rereplicating_ledgers = under->claimed;
    resp.auditor = under->auditor;
    resp.n_brokers = brokers->n_brokers;
    resp.brokers = brokers->brokers;
    resp.n_bookies = bookies->n_bookies;
    resp.bookies = bookies->bookies;
    resp.n_partitions = pl.n;
    resp.partitions = pl.items;
    sl_broker_service_cluster_status_reply(sc->call, &resp);
  } else {
    sl_rpc_call_finish(sc->call, st, sl_err_msg(&err, st), NULL);
  }
  if (brokers) protobuf_c_message_free_unpacked(&brokers->base, NULL);
  if (bookies) protobuf_c_message_free_unpacked(&bookies->base, NULL);
  if (under) protobuf_c_message_free_unpacked(&under->base, NULL);
  free(under_ids);
  free_partitions(&pl);
}

static void cluster_status(sl_rpc_call *call, const Sluice__V1__ClusterStatusRequest *req,
                           void *ctx) {
  run_slow(call, ctx, &req->base, cluster_status_run);
}

/* ---- GetTopicStats: what the metadata service knows of one partition ---- */

static void topic_stats_run(slow_call *sc) {
  const Sluice__V1__TopicStatsRequest *req = (const Sluice__V1__TopicStatsRequest *)sc->req;
  sl_err err = SL_ERR_INIT;
  sl_rpc_call_opts co = {.timeout_ms = sc->b->rpc_timeout_ms};
  size_t topic_len = 0;
  int64_t index = -1;
  sl_status st = sl_md_check_partition(req->topic, &topic_len, &index, &err);
  char topic[SL_MD_PARTITION_MAX + 1];
  snprintf(topic, sizeof(topic), "%.*s", (int)topic_len, req->topic);
  Sluice__V1__TopicInfo *ti = NULL;
  if (st == SL_OK) {
    Sluice__V1__GetTopicRequest treq = SLUICE__V1__GET_TOPIC_REQUEST__INIT;
    treq.name = topic;
    st = sl_metadata_service_get_topic(sc->b->md, &treq, &ti, &co, &err);
  }
  if (st == SL_OK && (index >= 0 ? index >= (int64_t)ti->partitions : ti->partitions > 0))
    st = sl_err_set(&err, SL_EINVAL, "topic %s has %u partitions: ask for one of them "
                    "(%s-partition-N)", topic, ti->partitions, topic);
  Sluice__V1__TopicStats stats = SLUICE__V1__TOPIC_STATS__INIT;
  stats.topic = req->topic;
  if (st == SL_OK) {
    Sluice__V1__LookupOwnerRequest lreq = SLUICE__V1__LOOKUP_OWNER_REQUEST__INIT;
    lreq.partition = req->topic;
    Sluice__V1__OwnerInfo *ow = NULL;
    sl_status lst = sl_metadata_service_lookup_owner(sc->b->md, &lreq, &ow, &co, &err);
    if (lst == SL_OK) {
      stats.owner_epoch = ow->epoch;
      protobuf_c_message_free_unpacked(&ow->base, NULL);
    } else if (lst != SL_ENOTFOUND) {
      st = lst;
    }
  }
  if (st == SL_OK) {
    Sluice__V1__GetManagedLedgerRequest mreq = SLUICE__V1__GET_MANAGED_LEDGER_REQUEST__INIT;
    mreq.partition = req->topic;
    Sluice__V1__ManagedLedgerResponse *ml = NULL;
    sl_status mst = sl_metadata_service_get_managed_ledger(sc->b->md, &mreq, &ml, &co, &err);
    if (mst == SL_OK && ml->info != NULL) {
      stats.ledgers = (uint32_t)ml->info->n_ledgers;
      stats.terminated = ml->info->terminated;
      for (size_t i = 0; i < ml->info->n_ledgers; i++) {
        const Sluice__V1__LedgerRef *r = ml->info->ledgers[i];
        if (r->entries > 0) stats.entries += (uint64_t)r->entries;
        stats.size_bytes += r->size_bytes;
      }
    } else if (mst != SL_OK && mst != SL_ENOTFOUND) {
      st = mst;
    }
    if (ml) protobuf_c_message_free_unpacked(&ml->base, NULL);
  }
  /* Subscriptions: from the consume side, where this broker serves it. */
  bool subs = st == SL_OK && sc->b->sub_stats != NULL &&
              sc->b->sub_stats(sc->b->consume, req->topic, sc->b->rpc_timeout_ms, &stats);
  if (st == SL_OK) sl_broker_service_get_topic_stats_reply(sc->call, &stats);
  else sl_rpc_call_finish(sc->call, st, sl_err_msg(&err, st), NULL);
  if (subs) sc->b->sub_stats_free(&stats);
  if (ti) protobuf_c_message_free_unpacked(&ti->base, NULL);
}

static void get_topic_stats(sl_rpc_call *call, const Sluice__V1__TopicStatsRequest *req,
                            void *ctx) {
  run_slow(call, ctx, &req->base, topic_stats_run);
}

/* ---- TerminateTopic: on each partition's owner ---- */

/* One asynchronous step (resolve, terminate) waited for by the slow call's
 * thread. Two references: the waiter's and the callback's, so a waiter that
 * gives up leaves the box to the late callback. */
typedef struct box {
  atomic_int refs;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool done;
  sl_status st;
  char msg[SL_ERR_MAX];
  bool local;                 /* resolve: this broker owns it */
  uint64_t epoch;
  char address[SL_MD_NAME_MAX + 1];
  sl_ml_pos last;             /* terminate: the last entry */
} box;

static box *box_new(void) {
  box *x = sl_xcalloc(1, sizeof(*x));
  atomic_init(&x->refs, 2);
  pthread_mutex_init(&x->mu, NULL);
  pthread_cond_init(&x->cv, NULL);
  return x;
}

static void box_unref(box *x) {
  if (atomic_fetch_sub(&x->refs, 1) != 1) return;
  pthread_mutex_destroy(&x->mu);
  pthread_cond_destroy(&x->cv);
  free(x);
}

/* Called with x->mu held by the callback, which fills the box first. */
static void box_done(box *x, sl_status st, const char *msg) {
  x->st = st;
  snprintf(x->msg, sizeof(x->msg), "%s", msg != NULL ? msg : sl_status_str(st));
  x->done = true;
  pthread_cond_signal(&x->cv);
  pthread_mutex_unlock(&x->mu);
  box_unref(x);
}

/* Waits until deadline (monotonic ms); SL_ETIMEDOUT if it passed first. */
static sl_status box_wait(box *x, int64_t deadline, sl_err *err) {
  pthread_mutex_lock(&x->mu);
  while (!x->done) {
    int64_t left = deadline - sl_clock_mono_ms();
    if (left <= 0) break;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += left / 1000;
    ts.tv_nsec += (left % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) ts.tv_sec++, ts.tv_nsec -= 1000000000;
    pthread_cond_timedwait(&x->cv, &x->mu, &ts);
  }
  sl_status st = x->done ? x->st : SL_ETIMEDOUT;
  if (st != SL_OK) sl_err_set(err, st, "%s", x->done ? x->msg : "no answer in time");
  pthread_mutex_unlock(&x->mu);
  return st;
}

static void resolved(sl_status st, const char *msg, const sl_ownership_owner *owner,
                     void *arg) {
  box *x = arg;
  pthread_mutex_lock(&x->mu);
  if (st == SL_OK) {
    x->local = owner->local;
    x->epoch = owner->epoch;
    snprintf(x->address, sizeof(x->address), "%s", owner->address);
  }
  box_done(x, st, msg);
}

static void terminated(sl_status st, const char *msg, sl_ml_pos last, void *arg) {
  box *x = arg;
  pthread_mutex_lock(&x->mu);
  x->last = last;
  box_done(x, st, msg);
}

/* Asks the owner (another broker) to terminate one partition. */
static sl_status terminate_remote(sl_broker *b, const char *partition, const char *address,
                                  sl_ml_pos *last, sl_err *err) {
  sl_rpc_channel_opts cho = b->peer;
  cho.target = address;
  sl_rpc_channel *ch = NULL;
  sl_status st = sl_rpc_channel_create(&cho, &ch, err);
  if (st != SL_OK) return st;
  Sluice__V1__TerminateTopicRequest req = SLUICE__V1__TERMINATE_TOPIC_REQUEST__INIT;
  req.topic = (char *)partition;
  Sluice__V1__TerminateTopicResponse *resp = NULL;
  /* The owner's own deadline for the partition, plus the way there. */
  sl_rpc_call_opts co = {.timeout_ms = 5 * b->rpc_timeout_ms};
  st = sl_broker_service_terminate_topic(ch, &req, &resp, &co, err);
  if (st == SL_OK && resp->n_last_ids != 1)
    st = sl_err_set(err, SL_ECORRUPT, "broker %s answered %zu ids for partition %s",
                    address, resp->n_last_ids, partition);
  if (st == SL_OK) {
    last->ledger_id = resp->last_ids[0]->ledger_id;
    last->entry_id = resp->last_ids[0]->entry_id;
  }
  if (resp != NULL) protobuf_c_message_free_unpacked(&resp->base, NULL);
  sl_rpc_channel_destroy(ch);
  return st;
}

/* Terminates one partition on its owner. A partition that is loading, or
 * moving between owners, is asked again until the deadline. */
static sl_status terminate_partition(sl_broker *b, const char *partition, int64_t deadline,
                                     sl_ml_pos *last, sl_err *err) {
  sl_ownership *own = atomic_load(&b->own);
  if (own == NULL || b->terminate == NULL)
    return sl_err_set(err, SL_EUNAVAIL, "broker not serving yet");
  for (;;) {
    box *x = box_new();
    sl_ownership_resolve(own, partition, false, resolved, x);
    sl_status st = box_wait(x, deadline, err);
    if (st == SL_OK) { /* done: the callback no longer touches the box */
      bool local = x->local;
      uint64_t epoch = x->epoch;
      char address[sizeof(x->address)];
      snprintf(address, sizeof(address), "%s", x->address);
      box_unref(x);
      if (!local) return terminate_remote(b, partition, address, last, err);
      x = box_new();
      b->terminate(b->produce, partition, epoch, terminated, x);
      st = box_wait(x, deadline, err);
      if (st == SL_OK) *last = x->last;
    }
    box_unref(x); /* else the late callback's, if any, now */
    if ((st != SL_EBUSY && st != SL_EUNAVAIL) || sl_clock_mono_ms() >= deadline) return st;
    struct timespec ts = {0, 20 * 1000000}; /* loading or moving: soon done */
    nanosleep(&ts, NULL);
  }
}

static void terminate_run(slow_call *sc) {
  const Sluice__V1__TerminateTopicRequest *req =
      (const Sluice__V1__TerminateTopicRequest *)sc->req;
  sl_err err = SL_ERR_INIT;
  sl_rpc_call_opts co = {.timeout_ms = sc->b->rpc_timeout_ms};
  size_t topic_len = 0;
  int64_t index = -1;
  sl_status st = sl_md_check_partition(req->topic, &topic_len, &index, &err);
  char topic[SL_MD_PARTITION_MAX + 1];
  snprintf(topic, sizeof(topic), "%.*s", (int)topic_len, req->topic);
  Sluice__V1__TopicInfo *ti = NULL;
  if (st == SL_OK) {
    Sluice__V1__GetTopicRequest treq = SLUICE__V1__GET_TOPIC_REQUEST__INIT;
    treq.name = topic;
    st = sl_metadata_service_get_topic(sc->b->md, &treq, &ti, &co, &err);
  }
  /* "ns/t-partition-N" is one partition of t; a plain name, all of them. */
  uint32_t first = 0, n = 0;
  if (st == SL_OK && index >= 0) {
    if (index < (int64_t)ti->partitions) first = (uint32_t)index, n = 1;
    else st = sl_err_set(&err, SL_EINVAL, "topic %s has %u partitions: no partition %lld",
                         topic, ti->partitions, (long long)index);
  } else if (st == SL_OK) {
    n = ti->partitions > 0 ? ti->partitions : 1;
  }
  Sluice__V1__MessageId *ids = sl_xcalloc(n + 1, sizeof(*ids));
  Sluice__V1__MessageId **id_ptrs = sl_xcalloc(n + 1, sizeof(*id_ptrs));
  for (uint32_t i = 0; st == SL_OK && i < n; i++) {
    char name[SL_MD_PARTITION_MAX + 1];
    if (ti->partitions > 0) snprintf(name, sizeof(name), "%s-partition-%u", topic, first + i);
    else snprintf(name, sizeof(name), "%s", topic);
    sl_ml_pos last = {0, -1};
    int64_t deadline = sl_clock_mono_ms() + 4 * (int64_t)sc->b->rpc_timeout_ms;
    st = terminate_partition(sc->b, name, deadline, &last, &err);
    if (st != SL_OK) {
      sl_err_wrap(&err, st, "partition %s", name);
      break;
    }
    sluice__v1__message_id__init(&ids[i]);
    ids[i].ledger_id = last.ledger_id;
    ids[i].entry_id = last.entry_id;
    ids[i].partition = ti->partitions > 0 ? (int32_t)(first + i) : -1;
    id_ptrs[i] = &ids[i];
  }
  if (st == SL_OK) {
    sl_log(SL_LOG_INFO, "event=topic_terminated topic=%s partitions=%u", req->topic, n);
    Sluice__V1__TerminateTopicResponse resp = SLUICE__V1__TERMINATE_TOPIC_RESPONSE__INIT;
    resp.n_last_ids = n;
    resp.last_ids = id_ptrs;
    sl_broker_service_terminate_topic_reply(sc->call, &resp);
  } else {
    sl_rpc_call_finish(sc->call, st, sl_err_msg(&err, st), NULL);
  }
  free(ids);
  free(id_ptrs);
  if (ti) protobuf_c_message_free_unpacked(&ti->base, NULL);
}

static void terminate_topic(sl_rpc_call *call, const Sluice__V1__TerminateTopicRequest *req,
                            void *ctx) {
  run_slow(call, ctx, &req->base, terminate_run);
}

void sl_broker_admin_handlers(sl_broker_service_handlers *h) {
  h->create_namespace = create_namespace;
  h->get_namespace = get_namespace;
  h->set_namespace_policies = set_namespace_policies;
  h->list_namespaces = list_namespaces;
  h->delete_namespace = delete_namespace;
  h->create_topic = create_topic;
  h->get_topic = get_topic;
  h->delete_topic = delete_topic;
  h->list_topics = list_topics;
  h->unload = unload;
  h->cluster_status = cluster_status;
  h->get_topic_stats = get_topic_stats;
  h->terminate_topic = terminate_topic;
}
