/*
 * Who may call which unary BrokerService method (DESIGN.md §8): each handler
 * is wrapped so that it runs only once broker/authz.h allows the caller.
 *
 *   Lookup, GetTopic, ListTopics, GetTopicStats   any right on the namespace
 *   GetNamespace, SetNamespacePolicies,
 *   CreateTopic, DeleteTopic, TerminateTopic      admin on the namespace
 *   CreateNamespace, DeleteNamespace,
 *   ListNamespaces, Unload, ClusterStatus         a super-user
 *
 * Produce and Consume check their own rights when a producer or consumer
 * opens (produce.c, consume.c): the first message names the topic.
 */
#include <string.h>

#include "broker/authz.h"
#include "broker/service.h"

/* The handlers being guarded; set once, before the server starts. */
static sl_broker_service_handlers inner;

/* One call waiting for its answer; the call's reference keeps req valid. */
typedef struct pending {
  sl_rpc_call *call;
  const ProtobufCMessage *req;
  void *ctx;
  void (*go)(sl_rpc_call *call, const ProtobufCMessage *req, void *ctx);
} pending;

static void answered(sl_status st, const char *msg, void *arg) {
  pending *p = arg;
  if (st == SL_OK) p->go(p->call, p->req, p->ctx);
  else sl_rpc_call_finish(p->call, st, msg, NULL);
  sl_rpc_call_unref(p->call);
}

static void guard(sl_rpc_call *call, const ProtobufCMessage *req, void *ctx,
                  sl_authz_need need, const char *name,
                  void (*go)(sl_rpc_call *, const ProtobufCMessage *, void *)) {
  sl_broker *b = ctx;
  pending *p = sl_rpc_call_alloc(call, sizeof(*p));
  *p = (pending){.call = call, .req = req, .ctx = ctx, .go = go};
  sl_rpc_call_ref(call);
  sl_authz_check(b->authz, call, name != NULL ? name : "", need, answered, p);
}

/* fn_go calls the inner handler with its own request type; fn_authz is what
 * the server runs. */
#define GUARD(fn, Req, NEED, name_expr)                                                \
  static void fn##_go(sl_rpc_call *call, const ProtobufCMessage *m, void *ctx) {       \
    inner.fn(call, (const Req *)m, ctx);                                               \
  }                                                                                    \
  static void fn##_authz(sl_rpc_call *call, const Req *req, void *ctx) {               \
    guard(call, &req->base, ctx, NEED, name_expr, fn##_go);                            \
  }
GUARD(lookup, Sluice__V1__LookupRequest, SL_AUTHZ_ANY, req->topic)
GUARD(get_topic, Sluice__V1__GetTopicRequest, SL_AUTHZ_ANY, req->name)
GUARD(list_topics, Sluice__V1__ListTopicsRequest, SL_AUTHZ_ANY, req->namespace_)
GUARD(get_topic_stats, Sluice__V1__TopicStatsRequest, SL_AUTHZ_ANY, req->topic)
GUARD(get_namespace, Sluice__V1__GetNamespaceRequest, SL_AUTHZ_ADMIN, req->name)
GUARD(create_topic, Sluice__V1__CreateTopicRequest, SL_AUTHZ_ADMIN, req->name)
GUARD(delete_topic, Sluice__V1__DeleteTopicRequest, SL_AUTHZ_ADMIN, req->name)
GUARD(terminate_topic, Sluice__V1__TerminateTopicRequest, SL_AUTHZ_ADMIN, req->topic)
GUARD(create_namespace, Sluice__V1__CreateNamespaceRequest, SL_AUTHZ_SUPERUSER, NULL)
GUARD(delete_namespace, Sluice__V1__DeleteNamespaceRequest, SL_AUTHZ_SUPERUSER, NULL)
GUARD(list_namespaces, Sluice__V1__ListNamespacesRequest, SL_AUTHZ_SUPERUSER, NULL)
GUARD(unload, Sluice__V1__UnloadRequest, SL_AUTHZ_SUPERUSER, NULL)
GUARD(cluster_status, Sluice__V1__ClusterStatusRequest, SL_AUTHZ_SUPERUSER, NULL)
#undef GUARD

/* This broker's cached grants of the namespace go before the change is
 * forwarded, so its callers see a new grant once the call returns, unless a
 * check of the namespace cached the old one while the change was in flight;
 * then, as on other brokers, the cache time bounds how long it lasts. */
static void set_namespace_policies_go(sl_rpc_call *call, const ProtobufCMessage *m,
                                      void *ctx) {
  const Sluice__V1__SetNamespacePoliciesRequest *req = (const void *)m;
  sl_authz_forget(((sl_broker *)ctx)->authz, req->name);
  inner.set_namespace_policies(call, req, ctx);
}

static void set_namespace_policies_authz(sl_rpc_call *call,
                                         const Sluice__V1__SetNamespacePoliciesRequest *req,
                                         void *ctx) {
  guard(call, &req->base, ctx, SL_AUTHZ_ADMIN, req->name, set_namespace_policies_go);
}

void sl_broker_authz_handlers(sl_broker_service_handlers *h) {
  inner = *h;
#define WRAP(fn) \
  if (h->fn != NULL) h->fn = fn##_authz
  WRAP(lookup);
  WRAP(get_topic);
  WRAP(list_topics);
  WRAP(get_topic_stats);
  WRAP(get_namespace);
  WRAP(set_namespace_policies);
  WRAP(create_topic);
  WRAP(delete_topic);
  WRAP(terminate_topic);
  WRAP(create_namespace);
  WRAP(delete_namespace);
  WRAP(list_namespaces);
  WRAP(unload);
  WRAP(cluster_status);
#undef WRAP
}
