/*
 * sl_md_service: the MetadataService gRPC service (proto/metadata.proto)
 * over an sl_store (metadata/store.h), as DESIGN.md §5 lays it out.
 *
 *   sl_md_service_opts o = SL_MD_SERVICE_OPTS_INIT;
 *   o.store = store;                       // etcd or local, opened by caller
 *   sl_md_service *md;
 *   sl_md_service_create(&o, &md, &err);
 *   sl_md_service_register(md, srv, &err); // before sl_rpc_server_start()
 *   ... serve ...
 *   sl_rpc_server_destroy(srv);            // ends every call first
 *   sl_md_service_destroy(md);
 *   sl_store_close(store);
 *
 * The service itself is stateless apart from a block of reserved ledger ids
 * and the open watch streams, so any number of replicas may serve one etcd.
 * Its key layout, under "/sluice/":
 *
 *   brokers/<id>, bookies/<id>   BrokerInfo / BookieInfo, bound to the
 *                                session's lease
 *   namespaces/<ns>              Namespace (policies)
 *   namespace-topics/<ns>        empty; touched by every topic create and
 *                                delete so DeleteNamespace can check
 *                                "no topics" atomically
 *   topics/<ns>/<topic>          TopicInfo
 *   owners/<partition>           OwnerInfo, bound to the owner's lease
 *   epochs/<partition>           OwnerInfo of the last take-over; persistent,
 *                                its epoch is the partition's current epoch
 *   deleted-topics/<ns>/<topic>  TopicInfo of a topic whose partitions are
 *                                being wiped (md_namespaces.c, invariant 3)
 *   ledger-id                    AllocateLedgerIdResponse: next unreserved id
 *   ledgers/<id>                 LedgerInfo (id in decimal)
 *   deleted-ledgers/<id>         empty: the id was deleted, never reused
 *   last-ledger/<partition>      AllocateLedgerIdResponse: the highest ledger
 *                                id created for the partition
 *   managed-ledgers/<partition>  ManagedLedgerInfo
 *   cursors/<partition>/<sub>    CursorInfo
 *   under-replicated/<id>        UnderReplicated: a CLOSED ledger whose
 *                                copies on some bookies are to be replaced;
 *                                written by the auditor only
 *   rereplication-claims/<id>    the claiming node's id (text), bound to
 *                                the worker's session lease
 *   auditor                      the auditing replica's id (text), bound to
 *                                that replica's own lease
 *   bookies-gone/<bookie id>     Unix ms (decimal text) when an auditor
 *                                first found the bookie unregistered;
 *                                written by the auditor only
 *
 * Values are packed protobuf messages. The `version` of anything is the
 * key's mod revision; every update is a compare-and-swap on it.
 *
 * Status codes: SL_EINVAL bad input (overflowing numbers included);
 * SL_ENOTFOUND unknown names, ids and sessions; SL_EDELETED a deleted
 * ledger id (NOT_FOUND); SL_EEXIST create of something that exists;
 * SL_EPRECOND failed preconditions, SL_ESTALE_EPOCH an ownership epoch that
 * is no longer (or, for an OPEN ledger, not) the one allowed, SL_EFENCED a
 * writer's update of a ledger in recovery (all gRPC FAILED_PRECONDITION); SL_EVERSION version mismatch (ABORTED); SL_EUNAVAIL
 * store unreachable or not answering (UNAVAILABLE; a write may or may not
 * have happened: re-read); SL_ECORRUPT a stored value that does not decode
 * (DATA_LOSS, naming the key); SL_ETOOBIG a value past the store's limit
 * (RESOURCE_EXHAUSTED).
 *
 * Store outages: a unary call's store calls end by the call's own deadline
 * minus a small margin (or the store timeout, if sooner), so the client
 * reads UNAVAILABLE rather than DEADLINE_EXCEEDED; while every etcd
 * endpoint is known to be unreachable, calls fail UNAVAILABLE at once
 * (metadata/etcd.h, "Fail fast") instead of holding a worker thread.
 *
 * Threads: handlers run on the gRPC worker threads and block on the store
 * (run the server with enough threads, e.g. 16). Each Watch stream has a
 * thread of its own for (re)reading state, plus the store watch's thread.
 */
#ifndef SL_METADATA_SERVICE_H
#define SL_METADATA_SERVICE_H

#include <stddef.h>
#include <stdint.h>

#include "common/rpc_server.h"
#include "common/status.h"
#include "metadata/store.h"

typedef struct sl_md_service sl_md_service;

typedef struct sl_md_service_opts {
  sl_store *store;            /* retained until destroy; not closed by it */
  int64_t default_ttl_s;      /* session TTL when a request says 0; >= 2 */
  int64_t max_ttl_s;          /* largest session TTL accepted */
  uint64_t ledger_id_block;   /* ledger ids reserved per store round trip */
  size_t watch_buffer;        /* events buffered per slow watcher before its
                                 stream ends with RESOURCE_EXHAUSTED */
  /* The auditor (sl_md_service_auditor_start). */
  int64_t audit_interval_ms;      /* between passes; 0 = this replica never
                                     audits */
  int64_t rereplication_grace_ms; /* a bookie unregistered this long has its
                                     CLOSED ledgers listed (>= 0) */
  int64_t auditor_ttl_s;          /* TTL of the auditor's lease (>= 2): how
                                     long a dead auditor keeps the role */
  const char *replica_id;         /* this replica's name in the `auditor` key
                                     (copied); NULL or "" = hostname:pid */
} sl_md_service_opts;

#define SL_MD_SERVICE_OPTS_INIT                                              \
  {.store = NULL, .default_ttl_s = 5, .max_ttl_s = 300, .ledger_id_block = 1000, \
   .watch_buffer = 16384, .audit_interval_ms = 60000,                       \
   .rereplication_grace_ms = 300000, .auditor_ttl_s = 10, .replica_id = NULL}

/* Checks opts and creates the service. SL_EINVAL for bad opts. */
sl_status sl_md_service_create(const sl_md_service_opts *opts,
                               sl_md_service **out, sl_err *err);

/* Registers every MetadataService method on srv (not started yet). The
 * service must outlive the server. */
sl_status sl_md_service_register(sl_md_service *md, sl_rpc_server *srv,
                                 sl_err *err);

/*
 * Monitor: a thread that probes the store every interval_ms (10..60000)
 * with a revision read bounded by interval_ms, and reports
 *   - gRPC health for "" and "sluice.v1.MetadataService" on srv: NOT_SERVING
 *     while the store does not answer, SERVING once it does (so Kubernetes
 *     stops routing to a replica that can only fail);
 *   - gauges on sl_metrics_default(): sluice_metadata_store_up,
 *     sluice_metadata_store_breaker_open, sluice_metadata_sessions{kind}.
 * Every replica also keeps sluice_metadata_watches (open Watch streams),
 * and the store sluice_metadata_store_request_duration_seconds{op} and
 * sluice_metadata_store_cas_conflicts_total (metadata/store.c).
 * Start it once srv is started and stop it before destroying srv
 * (sluice-metadata: sl_service_def.serving and .quiesce).
 */
sl_status sl_md_service_monitor_start(sl_md_service *md, sl_rpc_server *srv,
                                      int interval_ms, sl_err *err);
/* Stops the monitor thread; a no-op if it is not running. */
void sl_md_service_monitor_stop(sl_md_service *md);

/*
 * Auditor (DESIGN.md §4; md_auditor.c has its design note): a thread that
 * competes with the other replicas for the store key `auditor` (bound to a
 * lease of opts.auditor_ttl_s, kept alive every TTL/3, retried every TTL/3
 * while another replica holds it). While this replica holds it, a pass
 * every opts.audit_interval_ms (the first at once) lists as work items
 * under-replicated/<ledger id> the CLOSED ledgers naming a bookie that has
 * been unregistered for opts.rereplication_grace_ms, or that is registered
 * with another instance id than the ledger recorded, and removes items that
 * need nothing any more. Every tenth pass (and the first) also tombstones
 * orphan ledgers: ledgers of a partition that moved to a later epoch than
 * the one they were created at, which neither its list nor a cursor names
 * (md_orphans.c). Metrics on sl_metrics_default():
 * sluice_metadata_auditor (1 while this replica holds the role),
 * sluice_metadata_under_replicated_ledgers (items after the last pass; 0
 * on other replicas), sluice_metadata_audit_passes_total{outcome="ok" or
 * "failed"}, sluice_metadata_orphan_ledgers_deleted_total. Start it once the service serves, stop it before destroying
 * the service or closing the store; stop revokes the lease, so another
 * replica takes over within its TTL/3. A no-op when
 * opts.audit_interval_ms is 0. SL_EEXIST if running.
 */
sl_status sl_md_service_auditor_start(sl_md_service *md, sl_err *err);
/* Stops the auditor thread (promptly: a store call in flight at most);
 * a no-op if it is not running. */
void sl_md_service_auditor_stop(sl_md_service *md);

/* This replica's auditor counts since the service was created, e.g. for a
 * test awaiting a pass: read `passes`, change the store, wait until it has
 * grown by 2 (the pass running at the change may have read before it). */
typedef struct sl_md_audit_stats {
  uint64_t passes; /* passes completed as auditor */
  uint64_t failed; /* passes that failed (store errors, the role lost) */
  uint64_t scans;  /* passes that read every ledger (others found nothing
                      that could have changed) */
  uint64_t campaigns; /* looks at the `auditor` key while not holding it */
  uint64_t orphans;  /* orphan ledgers tombstoned (md_orphans.c) */
  bool auditor;    /* this replica holds the role now */
} sl_md_audit_stats;

void sl_md_service_audit_stats(sl_md_service *md, sl_md_audit_stats *out);

/* Frees the service. Precondition: the server it was registered on has been
 * destroyed (so no handler runs). Waits for watch threads still winding
 * down. NULL is a no-op. */
void sl_md_service_destroy(sl_md_service *md);

#endif
