/*
 * Lookup: name check, GetTopic (async) for the partition count, then one
 * ownership resolve per partition; the call is answered when the last one
 * comes back. Every piece of memory lives in the call's arena.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "broker/service.h"
#include "metadata.slrpc.h"
#include "metadata/md_names.h"

typedef struct lookup {
  sl_rpc_call *call;        /* one reference held until answered */
  sl_broker *b;
  char *topic;              /* the topic part of the request */
  int64_t index;            /* requested partition, -1 = every partition */
  bool authoritative;
  pthread_mutex_t mu;       /* guards the fields below */
  size_t pending;           /* resolves not answered yet */
  sl_status st;             /* first failure */
  char msg[SL_ERR_MAX];
  Sluice__V1__LookupResponse resp;
} lookup;

typedef struct slot {
  lookup *l;
  size_t i;                 /* index into resp.owners */
} slot;

static char *arena_strdup(sl_rpc_call *call, const char *s) {
  size_t n = strlen(s ? s : "");
  char *d = sl_rpc_call_alloc(call, n + 1);
  memcpy(d, s ? s : "", n);
  return d;
}

static void answer(lookup *l) {
  if (l->st == SL_OK) sl_broker_service_lookup_reply(l->call, &l->resp);
  else sl_rpc_call_finish(l->call, l->st, l->msg, NULL);
  pthread_mutex_destroy(&l->mu);
  sl_rpc_call_unref(l->call);
}

static void on_resolved(sl_status st, const char *msg, const sl_ownership_owner *ow,
                        void *arg) {
  slot *s = arg;
  lookup *l = s->l;
  sl_rpc_call *call = l->call;
  pthread_mutex_lock(&l->mu);
  if (st == SL_OK) {
    Sluice__V1__PartitionOwner *po = l->resp.owners[s->i];
    po->broker_id = arena_strdup(call, ow->broker_id);
    po->broker_address = arena_strdup(call, ow->address);
    po->epoch = ow->epoch;
    if (!ow->local) {
      Sluice__V1__Redirect *r = sl_rpc_call_alloc(call, sizeof(*r));
      sluice__v1__redirect__init(r);
      r->partition = po->partition;
      r->broker_address = po->broker_address;
      r->broker_id = po->broker_id;
      r->epoch = po->epoch;
      po->redirect = r;
    }
  } else if (l->st == SL_OK) {
    l->st = st;
    snprintf(l->msg, sizeof(l->msg), "%s: %s", l->resp.owners[s->i]->partition, msg ? msg : "");
  }
  bool last = --l->pending == 0;
  pthread_mutex_unlock(&l->mu);
  if (last) answer(l);
}

/* GetTopic answered: one resolve per partition asked for. */
static void on_topic(sl_status st, const char *details, ProtobufCMessage *resp,
                     void *arg) {
  lookup *l = arg;
  sl_rpc_call *call = l->call;
  Sluice__V1__TopicInfo *t = (Sluice__V1__TopicInfo *)resp;
  if (st != SL_OK) {
    l->st = st;
    snprintf(l->msg, sizeof(l->msg), "%s", details ? details : sl_status_str(st));
    answer(l);
    return;
  }
  uint32_t parts = t->partitions;
  protobuf_c_message_free_unpacked(resp, NULL);
  if (l->index >= 0 && l->index >= (int64_t)parts) {
    l->st = st = SL_ENOTFOUND;
    snprintf(l->msg, sizeof(l->msg), "topic %s has %u partitions; no partition %" PRId64,
             l->topic, parts, l->index);
    answer(l);
    return;
  }
  size_t n = l->index >= 0 || parts == 0 ? 1 : parts;
  l->resp.partitions = parts;
  l->resp.n_owners = n;
  l->resp.owners = sl_rpc_call_alloc(call, n * sizeof(*l->resp.owners));
  l->pending = n + 1; /* + 1: this function, until it has posted them all */
  slot *slots = sl_rpc_call_alloc(call, n * sizeof(*slots));
  for (size_t i = 0; i < n; i++) {
    Sluice__V1__PartitionOwner *po = sl_rpc_call_alloc(call, sizeof(*po));
    sluice__v1__partition_owner__init(po);
    int64_t index = l->index >= 0 ? l->index : parts == 0 ? -1 : (int64_t)i;
    char name[SL_MD_PARTITION_MAX + 1];
    if (index < 0) snprintf(name, sizeof(name), "%s", l->topic);
    else snprintf(name, sizeof(name), "%s-partition-%" PRId64, l->topic, index);
    po->partition = arena_strdup(call, name);
    po->index = (int32_t)index;
    l->resp.owners[i] = po;
    slots[i] = (slot){l, i};
  }
  for (size_t i = 0; i < n; i++) {
    const char *p = l->resp.owners[i]->partition;
    sl_ownership_resolve(l->b->own, p, l->authoritative, on_resolved, &slots[i]);
  }
  pthread_mutex_lock(&l->mu);
  bool last = --l->pending == 0;
  pthread_mutex_unlock(&l->mu);
  if (last) answer(l);
}

static void lookup_start(sl_rpc_call *call, const Sluice__V1__LookupRequest *req,
                         void *ctx) {
  sl_broker *b = ctx;
  sl_err err = SL_ERR_INIT;
  size_t topic_len = 0;
  int64_t index = -1;
  sl_status st = sl_md_check_partition(req->topic, &topic_len, &index, &err);
  if (st != SL_OK) {
    sl_rpc_call_finish(call, st, sl_err_msg(&err, st), NULL);
    return;
  }
  lookup *l = sl_rpc_call_alloc(call, sizeof(*l));
  l->call = call;
  l->b = b;
  l->topic = sl_rpc_call_alloc(call, topic_len + 1);
  memcpy(l->topic, req->topic, topic_len);
  l->index = index;
  l->authoritative = req->authoritative;
  pthread_mutex_init(&l->mu, NULL);
  sluice__v1__lookup_response__init(&l->resp);
  sl_rpc_call_ref(call);
  Sluice__V1__GetTopicRequest treq = SLUICE__V1__GET_TOPIC_REQUEST__INIT;
  treq.name = l->topic;
  sl_rpc_call_opts co = {.timeout_ms = b->rpc_timeout_ms};
  st = sl_metadata_service_get_topic_async(b->md, &treq, &co, on_topic, l, &err);
  if (st != SL_OK) {
    l->st = st;
    snprintf(l->msg, sizeof(l->msg), "%s", sl_err_msg(&err, st));
    answer(l);
  }
}

void sl_broker_lookup_handlers(sl_broker_service_handlers *h) {
  h->lookup = lookup_start;
}
