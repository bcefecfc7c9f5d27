/*
 * Admin calls. Namespace and topic calls are the metadata service's own
 * messages: the request is forwarded as is (async) and the answer, or the
 * exact failure, goes back. Unload goes to ownership. ClusterStatus reads
 * brokers, bookies and every partition's owner on a short-lived thread of
 * its own, because it takes many metadata round trips.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/service.h"
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

/* ---- ClusterStatus ---- */

typedef struct status_job {
  sl_rpc_call *call;
  sl_broker *b;
  Sluice__V1__ClusterStatusResponse resp;
  size_t cap;
} status_job;

static void add_partition(status_job *s, const char *name) {
  if (s->resp.n_partitions == s->cap) {
    s->cap = s->cap ? 2 * s->cap : 64;
    s->resp.partitions = realloc(s->resp.partitions, s->cap * sizeof(*s->resp.partitions));
    if (s->resp.partitions == NULL) sl_xmalloc(SIZE_MAX); /* aborts with a message */
  }
  Sluice__V1__OwnedPartition *p = sl_xcalloc(1, sizeof(*p));
  sluice__v1__owned_partition__init(p);
  p->partition = sl_xstrdup(name);
  p->broker_id = sl_xstrdup("");
  s->resp.partitions[s->resp.n_partitions++] = p;
}

/* Every partition of every topic of every namespace, with its owner. */
static sl_status list_partitions(status_job *s, sl_err *err) {
  sl_rpc_call_opts co = {.timeout_ms = s->b->rpc_timeout_ms};
  Sluice__V1__ListNamespacesRequest nreq = SLUICE__V1__LIST_NAMESPACES_REQUEST__INIT;
  Sluice__V1__ListNamespacesResponse *ns = NULL;
  sl_status st = sl_metadata_service_list_namespaces(s->b->md, &nreq, &ns, &co, err);
  for (size_t i = 0; st == SL_OK && i < ns->n_namespaces; i++) {
    Sluice__V1__ListTopicsRequest treq = SLUICE__V1__LIST_TOPICS_REQUEST__INIT;
    treq.namespace_ = ns->namespaces[i]->name;
    Sluice__V1__ListTopicsResponse *ts = NULL;
    st = sl_metadata_service_list_topics(s->b->md, &treq, &ts, &co, err);
    for (size_t t = 0; st == SL_OK && t < ts->n_topics; t++) {
      const Sluice__V1__TopicInfo *ti = ts->topics[t];
      if (ti->partitions == 0) add_partition(s, ti->name);
      for (uint32_t p = 0; p < ti->partitions; p++) {
        char name[SL_MD_PARTITION_MAX + 1];
        snprintf(name, sizeof(name), "%s-partition-%u", ti->name, p);
        add_partition(s, name);
      }
    }
    if (ts) protobuf_c_message_free_unpacked(&ts->base, NULL);
  }
  if (ns) protobuf_c_message_free_unpacked(&ns->base, NULL);
  for (size_t i = 0; st == SL_OK && i < s->resp.n_partitions; i++) {
    Sluice__V1__OwnedPartition *p = s->resp.partitions[i];
    Sluice__V1__LookupOwnerRequest lreq = SLUICE__V1__LOOKUP_OWNER_REQUEST__INIT;
    lreq.partition = p->partition;
    Sluice__V1__OwnerInfo *ow = NULL;
    sl_status lst = sl_metadata_service_lookup_owner(s->b->md, &lreq, &ow, &co, err);
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

static void *cluster_status_run(void *arg) {
  status_job *s = arg;
  sl_err err = SL_ERR_INIT;
  sl_rpc_call_opts co = {.timeout_ms = s->b->rpc_timeout_ms};
  Sluice__V1__ListBrokersRequest breq = SLUICE__V1__LIST_BROKERS_REQUEST__INIT;
  Sluice__V1__ListBrokersResponse *brokers = NULL;
  Sluice__V1__ListBookiesRequest kreq = SLUICE__V1__LIST_BOOKIES_REQUEST__INIT;
  Sluice__V1__ListBookiesResponse *bookies = NULL;
  sl_status st = sl_metadata_service_list_brokers(s->b->md, &breq, &brokers, &co, &err);
  if (st == SL_OK)
    st = sl_metadata_service_list_bookies(s->b->md, &kreq, &bookies, &co, &err);
  if (st == SL_OK) st = list_partitions(s, &err);
  if (st == SL_OK) {
    s->resp.n_brokers = brokers->n_brokers;
    s->resp.brokers = brokers->brokers;
    s->resp.n_bookies = bookies->n_bookies;
    s->resp.bookies = bookies->bookies;
    sl_broker_service_cluster_status_reply(s->call, &s->resp);
  } else {
    sl_rpc_call_finish(s->call, st, sl_err_msg(&err, st), NULL);
  }
  if (brokers) protobuf_c_message_free_unpacked(&brokers->base, NULL);
  if (bookies) protobuf_c_message_free_unpacked(&bookies->base, NULL);
  for (size_t i = 0; i < s->resp.n_partitions; i++) {
    free(s->resp.partitions[i]->partition);
    free(s->resp.partitions[i]->broker_id);
    free(s->resp.partitions[i]);
  }
  free(s->resp.partitions);
  sl_rpc_call_unref(s->call);
  free(s);
  return NULL;
}

static void cluster_status(sl_rpc_call *call, const Sluice__V1__ClusterStatusRequest *req,
                           void *ctx) {
  (void)req;
  status_job *s = sl_xcalloc(1, sizeof(*s));
  s->call = call;
  s->b = ctx;
  sluice__v1__cluster_status_response__init(&s->resp);
  sl_rpc_call_ref(call);
  pthread_t t;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  int rc = pthread_create(&t, &attr, cluster_status_run, s);
  pthread_attr_destroy(&attr);
  if (rc != 0) {
    sl_rpc_call_finish(call, SL_EBUSY, "cannot start a thread for ClusterStatus", NULL);
    sl_rpc_call_unref(call);
    free(s);
  }
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
}
