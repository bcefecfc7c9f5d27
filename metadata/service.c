/*
 * sl_md_service lifecycle and the handler table (see service.h; the
 * handlers live in md_*.c, one file per concern).
 */
#include "metadata/service.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "metadata/md_names.h"
#include "metadata/service_int.h"

/* The auditor's settings; interval 0 (no auditor) needs none of the rest. */
static sl_status check_auditor_opts(const sl_md_service_opts *o, sl_err *err) {
  if (o->audit_interval_ms < 0)
    return sl_err_set(err, SL_EINVAL, "metadata service: audit interval must be >= 0");
  if (o->audit_interval_ms == 0) return SL_OK;
  if (o->rereplication_grace_ms < 0)
    return sl_err_set(err, SL_EINVAL, "metadata service: re-replication grace must be >= 0");
  if (o->auditor_ttl_s < 2 || o->auditor_ttl_s > 3600)
    return sl_err_set(err, SL_EINVAL, "metadata service: auditor lease ttl must be 2..3600 s");
  if (o->replica_id == NULL || o->replica_id[0] == '\0') return SL_OK;
  sl_status st = sl_md_check_text("metadata service: replica id", o->replica_id,
                                  SL_MD_NAME_MAX, err);
  /* It goes into log lines as replica=<id>. */
  if (st == SL_OK && strchr(o->replica_id, ' ') != NULL)
    st = sl_err_set(err, SL_EINVAL, "metadata service: replica id \"%s\" has a space",
                    o->replica_id);
  return st;
}

/* opts.replica_id, or hostname:pid: unique enough to tell operators which
 * replica audits (the role itself rests on the lease, not on the name). */
static char *replica_id(const sl_md_service_opts *o) {
  if (o->replica_id != NULL && o->replica_id[0] != '\0') return sl_xstrdup(o->replica_id);
  char host[256], id[300];
  if (gethostname(host, sizeof(host)) != 0) snprintf(host, sizeof(host), "localhost");
  host[sizeof(host) - 1] = '\0';
  snprintf(id, sizeof(id), "%s:%ld", host, (long)getpid());
  return sl_xstrdup(id);
}

sl_status sl_md_service_create(const sl_md_service_opts *opts, sl_md_service **out,
                               sl_err *err) {
  if (opts == NULL || opts->store == NULL)
    return sl_err_set(err, SL_EINVAL, "metadata service: no store");
  if (opts->default_ttl_s < 2 || opts->max_ttl_s < opts->default_ttl_s)
    return sl_err_set(err, SL_EINVAL,
                      "metadata service: need 2 <= default session ttl <= max ttl");
  if (opts->ledger_id_block < 1 || opts->ledger_id_block > (1u << 30))
    return sl_err_set(err, SL_EINVAL, "metadata service: ledger id block must be 1..2^30");
  if (opts->watch_buffer < 2)
    return sl_err_set(err, SL_EINVAL, "metadata service: watch buffer must be >= 2");
  sl_status st = check_auditor_opts(opts, err);
  if (st != SL_OK) return st;
  sl_md_service *md = sl_xcalloc(1, sizeof(*md));
  md->opts = *opts;
  md->store = opts->store;
  pthread_mutex_init(&md->ids_lock, NULL);
  pthread_mutex_init(&md->cluster_lock, NULL);
  pthread_mutex_init(&md->epochs_lock, NULL);
  pthread_mutex_init(&md->watch_lock, NULL);
  pthread_cond_init(&md->watch_cond, NULL);
  pthread_mutex_init(&md->monitor_lock, NULL);
  /* The monitor's deadlines are on the monotonic clock; a cond on the
   * default (realtime) clock would take them as long past and spin. */
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&md->monitor_cond, &ca);
  pthread_mutex_init(&md->auditor_lock, NULL);
  pthread_cond_init(&md->auditor_cond, &ca); /* the same, for the auditor */
  pthread_condattr_destroy(&ca);
  md->replica_id = replica_id(opts);
  md->opts.replica_id = md->replica_id; /* the caller's copy is borrowed */
  *out = md;
  return SL_OK;
}

/*
 * Every unary handler runs inside its call's store deadline, set here once
 * rather than in each handler so none can miss it: bounded_<name> wraps
 * sl_md_<name>. Handlers finish their calls before returning and make
 * their store calls on this thread (Watch, which hands its store work to a
 * thread of its own, is not wrapped), so the scope covers all of them.
 */
#define BOUNDED(name, Req)                                                        \
  static void bounded_##name(sl_rpc_call *call, const Sluice__V1__##Req *req,     \
                             void *ctx) {                                         \
    sl_store_deadline d;                                                          \
    sl_md_deadline_begin(&d, call);                                               \
    sl_md_##name(call, req, ctx);                                                 \
    sl_store_deadline_end(&d);                                                    \
  }

BOUNDED(open_session, OpenSessionRequest)
BOUNDED(keep_alive, KeepAliveRequest)
BOUNDED(update_node, UpdateNodeRequest)
BOUNDED(close_session, CloseSessionRequest)
BOUNDED(list_brokers, ListBrokersRequest)
BOUNDED(list_bookies, ListBookiesRequest)
BOUNDED(create_namespace, CreateNamespaceRequest)
BOUNDED(get_namespace, GetNamespaceRequest)
BOUNDED(list_namespaces, ListNamespacesRequest)
BOUNDED(set_namespace_policies, SetNamespacePoliciesRequest)
BOUNDED(delete_namespace, DeleteNamespaceRequest)
BOUNDED(create_topic, CreateTopicRequest)
BOUNDED(get_topic, GetTopicRequest)
BOUNDED(list_topics, ListTopicsRequest)
BOUNDED(delete_topic, DeleteTopicRequest)
BOUNDED(acquire_ownership, AcquireOwnershipRequest)
BOUNDED(lookup_owner, LookupOwnerRequest)
BOUNDED(release_ownership, ReleaseOwnershipRequest)
BOUNDED(allocate_ledger_id, AllocateLedgerIdRequest)
BOUNDED(create_ledger, CreateLedgerRequest)
BOUNDED(get_ledger, GetLedgerRequest)
BOUNDED(update_ledger, UpdateLedgerRequest)
BOUNDED(delete_ledger, DeleteLedgerRequest)
BOUNDED(get_managed_ledger, GetManagedLedgerRequest)
BOUNDED(update_managed_ledger, UpdateManagedLedgerRequest)
BOUNDED(get_cursor, GetCursorRequest)
BOUNDED(update_cursor, UpdateCursorRequest)
BOUNDED(delete_cursor, DeleteCursorRequest)
BOUNDED(list_cursors, ListCursorsRequest)
BOUNDED(claim_rereplication, ClaimRereplicationRequest)
BOUNDED(finish_rereplication, FinishRereplicationRequest)
BOUNDED(list_under_replicated, ListUnderReplicatedRequest)

sl_status sl_md_service_register(sl_md_service *md, sl_rpc_server *srv, sl_err *err) {
  static const sl_metadata_service_handlers h = {
      .open_session = bounded_open_session,
      .keep_alive = bounded_keep_alive,
      .update_node = bounded_update_node,
      .close_session = bounded_close_session,
      .list_brokers = bounded_list_brokers,
      .list_bookies = bounded_list_bookies,
      .create_namespace = bounded_create_namespace,
      .get_namespace = bounded_get_namespace,
      .list_namespaces = bounded_list_namespaces,
      .set_namespace_policies = bounded_set_namespace_policies,
      .delete_namespace = bounded_delete_namespace,
      .create_topic = bounded_create_topic,
      .get_topic = bounded_get_topic,
      .list_topics = bounded_list_topics,
      .delete_topic = bounded_delete_topic,
      .acquire_ownership = bounded_acquire_ownership,
      .lookup_owner = bounded_lookup_owner,
      .release_ownership = bounded_release_ownership,
      .allocate_ledger_id = bounded_allocate_ledger_id,
      .create_ledger = bounded_create_ledger,
      .get_ledger = bounded_get_ledger,
      .update_ledger = bounded_update_ledger,
      .delete_ledger = bounded_delete_ledger,
      .get_managed_ledger = bounded_get_managed_ledger,
      .update_managed_ledger = bounded_update_managed_ledger,
      .get_cursor = bounded_get_cursor,
      .update_cursor = bounded_update_cursor,
      .delete_cursor = bounded_delete_cursor,
      .list_cursors = bounded_list_cursors,
      .claim_rereplication = bounded_claim_rereplication,
      .finish_rereplication = bounded_finish_rereplication,
      .list_under_replicated = bounded_list_under_replicated,
      .watch = sl_md_watch,
      .watch_writable = sl_md_watch_writable,
      .watch_done = sl_md_watch_done,
  };
  return sl_metadata_service_register(srv, &h, md, err);
}

void sl_md_service_destroy(sl_md_service *md) {
  if (md == NULL) return;
  sl_md_service_monitor_stop(md); /* normally stopped already, before the server */
  pthread_cond_destroy(&md->monitor_cond);
  pthread_mutex_destroy(&md->monitor_lock);
  sl_md_service_auditor_stop(md); /* likewise (it uses the store, still open) */
  pthread_cond_destroy(&md->auditor_cond);
  pthread_mutex_destroy(&md->auditor_lock);
  free(md->replica_id);
  /* Watch threads end once their call is done; the server is gone, so
   * every call is done. Wait for the threads to let go of the store. */
  pthread_mutex_lock(&md->watch_lock);
  while (md->n_watch_threads > 0) pthread_cond_wait(&md->watch_cond, &md->watch_lock);
  pthread_mutex_unlock(&md->watch_lock);
  pthread_cond_destroy(&md->watch_cond);
  pthread_mutex_destroy(&md->watch_lock);
  pthread_mutex_destroy(&md->cluster_lock);
  pthread_mutex_destroy(&md->ids_lock);
  for (size_t i = 0; i < SL_MD_EPOCH_CACHE; i++) free(md->epochs[i].partition);
  pthread_mutex_destroy(&md->epochs_lock);
  free(md);
}
