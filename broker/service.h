/*
 * BrokerService handlers: thin gRPC glue over the broker's modules. Each
 * handler decodes, checks names, calls ownership (broker/ownership.h) or the
 * metadata service, and encodes. None blocks a server worker thread on a
 * metadata round trip: metadata calls are async (their callbacks answer the
 * call) and ownership work runs on the ownership thread.
 *
 *   service_lookup.c  Lookup: topic -> partitions -> owners, with redirects
 *   service_admin.c   namespaces, topics, Unload, ClusterStatus,
 *                     GetTopicStats, TerminateTopic
 *   service_authz.c   who may call which of them
 */
#ifndef SL_BROKER_SERVICE_H
#define SL_BROKER_SERVICE_H

#include "broker.slrpc.h"
#include "broker/managed_ledger.h"
#include "broker/ownership.h"
#include "common/rpc_client.h"

/* What every handler reaches (the ctx of sl_broker_service_register). */
typedef struct sl_broker {
  sl_ownership *_Atomic own; /* retained; NULL until the broker serves */
  sl_rpc_channel *md;       /* metadata service channel; retained */
  struct sl_authz *authz;   /* who may do what (authz.h); retained */
  sl_rpc_channel_opts peer; /* template for channels to other brokers (TLS
                               PEMs; target unset) */
  int rpc_timeout_ms;       /* per forwarded metadata call */
  struct sl_produce *produce; /* Produce handlers' state (broker/produce.h) */
  struct sl_consume *consume; /* Consume handlers' state (broker/consume.h) */
  /* GetTopicStats' subscriptions (sl_consume_topic_stats and its free; set
   * by main.c, NULL = none). */
  bool (*sub_stats)(struct sl_consume *c, const char *partition, int timeout_ms,
                    Sluice__V1__TopicStats *out);
  void (*sub_stats_free)(Sluice__V1__TopicStats *out);
  /* TerminateTopic of a partition owned here at epoch (sl_produce_terminate;
   * set by main.c, NULL = refused). */
  void (*terminate)(struct sl_produce *p, const char *partition, uint64_t epoch,
                    sl_ml_terminate_cb cb, void *arg);
} sl_broker;

/* Fill in the Lookup handler. */
void sl_broker_lookup_handlers(sl_broker_service_handlers *h);

/* Fill in the admin handlers (namespaces, topics, Unload, ClusterStatus). */
void sl_broker_admin_handlers(sl_broker_service_handlers *h);

/* Wraps the unary handlers in *h (set before) so that each runs only once
 * the caller's rights allow it (service_authz.c has the table). Once per
 * process, before the server starts. */
void sl_broker_authz_handlers(sl_broker_service_handlers *h);

#endif
