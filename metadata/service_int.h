/*
 * Internals shared by the MetadataService files:
 *   service.c        lifecycle, registration, handler table
 *   md_kv.c          keys, protobuf values, CAS with an epoch guard, errors
 *   md_sessions.c    OpenSession ... ListBookies
 *   md_namespaces.c  namespaces and topics
 *   md_ownership.c   AcquireOwnership, LookupOwner, ReleaseOwnership, epochs
 *   md_ledgers.c     ledger ids and ledger metadata
 *   md_cursors.c     managed-ledger lists and cursors
 *   md_watch.c       Watch streams
 *   md_monitor.c     store probe: health and gauges
 *   md_rereplication.c  ClaimRereplication ... ListUnderReplicated
 *   md_auditor.c     the auditor: elected, lists under-replicated ledgers
 */
#ifndef SL_METADATA_SERVICE_INT_H
#define SL_METADATA_SERVICE_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "metadata.pb-c.h"
#include "metadata.slrpc.h"
#include "metadata/service.h"
#include "metadata/store.h"

#define SL_MD_ROOT "/sluice/"
#define SL_MD_KEY_MAX 1024
/* Internal retries of a read-check-write cycle that lost a race to another
 * writer before the call gives up with ABORTED. */
#define SL_MD_RETRIES 16

/* Upper bound of the margin kept between a call's store deadline and the
 * client's own deadline (see sl_md_deadline_begin). */
#define SL_MD_DEADLINE_MARGIN_MS 100

/* Slots of the epoch cache (see sl_md_epoch_check). */
#define SL_MD_EPOCH_CACHE 4096

typedef struct sl_md_epoch_slot {
  char *partition; /* heap; NULL if empty */
  int64_t rev;     /* mod revision of epochs/<partition> when read */
  uint64_t epoch;  /* its epoch at that revision */
} sl_md_epoch_slot;

struct sl_md_service {
  sl_md_service_opts opts;
  sl_store *store;

  pthread_mutex_t epochs_lock; /* guards epochs */
  sl_md_epoch_slot epochs[SL_MD_EPOCH_CACHE]; /* direct-mapped by hash */

  pthread_mutex_t cluster_lock; /* guards cluster_id */
  char cluster_id[33];      /* the store's cluster-id once read; "" before */

  pthread_mutex_t ids_lock; /* guards next_id, end_id */
  uint64_t next_id;         /* reserved ledger ids are [next_id, end_id) */
  uint64_t end_id;

  pthread_mutex_t watch_lock; /* guards n_watch_threads */
  pthread_cond_t watch_cond;  /* signalled when a watch thread exits */
  int n_watch_threads;

  /* md_monitor.c */
  pthread_mutex_t monitor_lock; /* guards monitor_stop */
  pthread_cond_t monitor_cond;  /* signalled on stop */
  bool monitor_stop;
  bool monitor_running;         /* owner thread only */
  bool monitor_up;              /* the monitor thread only */
  pthread_t monitor;
  sl_rpc_server *monitor_srv;
  int monitor_interval_ms;

  /* md_auditor.c */
  char *replica_id;               /* heap: opts.replica_id or hostname:pid */
  pthread_mutex_t auditor_lock;   /* guards auditor_stop, audit_stats */
  pthread_cond_t auditor_cond;    /* signalled on stop; monotonic clock */
  bool auditor_stop;
  sl_md_audit_stats audit_stats;
  struct sl_md_auditor *auditor;  /* owner thread only; NULL when not running */
};

/* ---- md_monitor.c ---- */

/* Adds d to the open-watches gauge. */
void sl_md_watches_add(int d);

/* ---- md_kv.c ---- */

typedef struct sl_md_key {
  char s[SL_MD_KEY_MAX];
  size_t len;
} sl_md_key;

/* Formats SL_MD_ROOT + fmt into k. Names are validated before, so keys
 * always fit; overflow is a bug (asserted). */
void sl_md_key_fmt(sl_md_key *k, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/*
 * Bounds this thread's store calls by the call's deadline (store.h,
 * "per-thread deadline"): the client's time left minus a margin of a tenth
 * of it, at most SL_MD_DEADLINE_MARGIN_MS, so that a store that does not
 * answer ends the call with our UNAVAILABLE while the client still waits
 * for it, rather than with the client's own DEADLINE_EXCEEDED. A call with
 * no deadline keeps the store's timeout alone. End with
 * sl_store_deadline_end(d) on the same thread. service.c does this around
 * every unary handler.
 */
void sl_md_deadline_begin(sl_store_deadline *d, const sl_rpc_call *call);

/* The store's status as the service reports it: a store that does not
 * answer in time is UNAVAILABLE to our clients (their own deadline is
 * separate), everything else passes through. */
sl_status sl_md_store_status(sl_status st);

/* Packs a message into a heap buffer (sl_xmalloc; caller frees). */
uint8_t *sl_md_pack(const ProtobufCMessage *msg, size_t *len);

/* Decodes a stored value as `desc`. SL_ECORRUPT naming the key if it does
 * not decode. *out is a heap message (protobuf_c_message_free_unpacked). */
sl_status sl_md_unpack(const sl_store_kv *kv, const ProtobufCMessageDescriptor *desc,
                       ProtobufCMessage **out, sl_err *err);

/* Reads and decodes one key. SL_ENOTFOUND (message left to the caller to
 * set, naming the object) if missing. *version (may be NULL) gets the
 * mod revision, *lease (may be NULL) the key's lease. */
sl_status sl_md_read(sl_md_service *md, const sl_md_key *key,
                     const ProtobufCMessageDescriptor *desc, ProtobufCMessage **out,
                     int64_t *version, int64_t *lease, sl_err *err);

/* Every key under a prefix, decoded, in key order, all pages read at one
 * revision (out->revision). Caller frees with sl_md_list_release. */
typedef struct sl_md_list {
  ProtobufCMessage **msgs;
  int64_t *versions;
  char **keys; /* the key after the prefix, heap strings */
  size_t n;
  int64_t revision;
} sl_md_list;

sl_status sl_md_list_read(sl_md_service *md, const sl_md_key *prefix,
                          const ProtobufCMessageDescriptor *desc, sl_md_list *out,
                          sl_err *err);
void sl_md_list_release(sl_md_list *l);

/* Keys per page of a listing: pages after the first are read at the
 * first's revision (sl_store_range_at); 0 (all at once) on the local store,
 * which reads only the latest. */
size_t sl_md_page_limit(const sl_md_service *md);

/* Paging a range: if page r said there is more, replaces *start (heap, may
 * be NULL) with the start of the next page (its last key + "\0") and returns
 * true; else returns false and leaves *start for the caller to free. */
bool sl_md_next_page(const sl_store_range_result *r, uint8_t **start, size_t *start_len);

/* Every key-value under a prefix, undecoded, in key order, all pages read
 * at one revision (out->revision), for values that are not one message
 * type or must be decoded one at a time. Caller frees with
 * sl_md_kvs_release. */
typedef struct sl_md_kvs {
  sl_store_kv *kvs;
  size_t n;
  int64_t revision;
} sl_md_kvs;

sl_status sl_md_kvs_read(sl_md_service *md, const sl_md_key *prefix, sl_md_kvs *out,
                         sl_err *err);
void sl_md_kvs_release(sl_md_kvs *l);

/* The epoch state of a partition, read from epochs/<partition>. */
typedef struct sl_md_epoch {
  sl_md_key key; /* epochs/<partition> */
  int64_t rev;   /* its mod revision; 0 if the partition was never owned */
  uint64_t epoch; /* the current epoch; 0 if never owned */
} sl_md_epoch;

/* Reads the partition's current epoch into *out. */
sl_status sl_md_epoch_read(sl_md_service *md, const char *partition, sl_md_epoch *out,
                           sl_err *err);

/*
 * Checks that `epoch` is the partition's current one: lower is stale
 * (SL_ESTALE_EPOCH), higher was never granted (SL_EPRECOND). *out becomes the
 * guard for sl_md_cas.
 *
 * The epoch may come from a cache instead of the store. That is safe
 * because the guarded txn compares the epoch key's revision, and one
 * revision of a key names one value: if the compare holds, the cached epoch
 * was the current one. A stale entry only costs a failed txn and a re-read.
 * Epochs never decrease, so an epoch below a cached one is stale for sure.
 */
sl_status sl_md_epoch_check(sl_md_service *md, const char *partition, uint64_t epoch,
                            sl_md_epoch *out, sl_err *err);

/* Records a partition's epoch as of revision rev (after a take-over). */
void sl_md_epoch_note(sl_md_service *md, const char *partition, int64_t rev, uint64_t epoch);

/*
 * Writes `value` at key as a compare-and-swap: expected > 0 is the version
 * read before (SL_EVERSION if it changed, SL_ENOTFOUND if deleted);
 * expected 0 creates (SL_EEXIST if it exists). With a guard (may be NULL)
 * the write happens in one txn with a compare on the partition's epoch key,
 * so a take-over in between refuses it with SL_ESTALE_EPOCH. `what` names the
 * object in messages ("cursor public/t/s"). *version gets the new version.
 */
sl_status sl_md_cas(sl_md_service *md, const char *what, const sl_md_key *key,
                    const ProtobufCMessage *value, int64_t expected,
                    const sl_md_epoch *guard, int64_t *version, sl_err *err);

/* More of one txn, beyond sl_md_write's own key and guard: compares that
 * must hold too and ops applied with it (e.g. a tombstone that must be
 * absent, a second key written at the same revision). */
typedef struct sl_md_extra {
  const sl_store_cmp *cmps;
  size_t n_cmps; /* at most SL_STORE_TXN_MAX - 2 */
  const sl_store_op *ops;
  size_t n_ops;  /* at most SL_STORE_TXN_MAX - 1 */
} sl_md_extra;

/*
 * sl_md_cas generalised, in one txn: value NULL deletes the key instead of
 * writing it; expected may also be SL_STORE_REV_EXISTS; `extra` (may be
 * NULL) adds compares and ops. Failure as for sl_md_cas; if only an extra
 * compare failed, SL_EVERSION (re-read and retry).
 */
sl_status sl_md_write(sl_md_service *md, const char *what, const sl_md_key *key,
                      const ProtobufCMessage *value, int64_t expected,
                      const sl_md_epoch *guard, const sl_md_extra *extra, int64_t *version,
                      sl_err *err);

/* Largest ensemble a namespace or ledger may ask for. */
#define SL_MD_MAX_ENSEMBLE 64

/* Checks E >= Qw >= Qa >= 1 and E <= SL_MD_MAX_ENSEMBLE; `what` names the
 * owner of the values in the message. */
sl_status sl_md_check_quorum(const char *what, uint32_t e, uint32_t qw, uint32_t qa,
                             sl_err *err);

/* Ends a call with a failure status, logging it: client mistakes at debug,
 * store trouble and corruption at warn. */
void sl_md_fail(sl_rpc_call *call, sl_status st, const sl_err *err);

/* ---- md_sessions.c ---- */

/*
 * The holder rule of KeepAlive (md_sessions.c, invariant 5): `session`
 * holds the registration of (kind, node_id). SL_EINVAL for a bad kind, id
 * or session id, SL_ENOTFOUND if the node is not registered, SL_EPERM if
 * another session holds it, else the store's status (sl_md_store_status).
 * Messages name the node, never a session id.
 */
sl_status sl_md_check_holder(sl_md_service *md, Sluice__V1__NodeKind kind, const char *node_id,
                             int64_t session, sl_err *err);

/* ---- md_rereplication.c: keys shared with md_auditor.c ---- */

#define SL_MD_ITEMS "under-replicated/"      /* + ledger id: UnderReplicated */
#define SL_MD_CLAIMS "rereplication-claims/" /* + ledger id: claimer's node id */
#define SL_MD_AUDITOR "auditor"              /* the auditing replica's id */
#define SL_MD_GONE "bookies-gone/"           /* + bookie id: gone since (text) */

/* ---- md_sessions.c: the cluster's identity ---- */

#define SL_MD_CLUSTER_ID "cluster-id" /* 32 hex digits, made once, never changed */

/* ---- md_orphans.c: the auditor's orphan rule ---- */

/* One pass's reading of partitions' epochs, lists and cursors. */
typedef struct sl_md_orphans sl_md_orphans;
sl_md_orphans *sl_md_orphans_new(sl_md_service *md);
void sl_md_orphans_free(sl_md_orphans *o);

/* Whether ledger `id` (record l) is an orphan: its partition's epoch is
 * above l's owner_epoch and neither the partition's list nor a cursor of
 * it names the ledger (md_orphans.c says why that is final). */
sl_status sl_md_orphan_check(sl_md_orphans *o, uint64_t id, const Sluice__V1__LedgerInfo *l,
                             bool *orphan, sl_err *err);

/* A decimal ledger id as keys spell it: digits only, no leading zero, at
 * least 1, fits in 64 bits. */
bool sl_md_parse_id(const char *s, uint64_t *id);

/* ---- handlers: one per rpc, with the generated signatures ---- */

#define SL_MD_HANDLER(name, Req)                                               \
  void sl_md_##name(sl_rpc_call *call, const Sluice__V1__##Req *req, void *ctx)

SL_MD_HANDLER(open_session, OpenSessionRequest);
SL_MD_HANDLER(keep_alive, KeepAliveRequest);
SL_MD_HANDLER(update_node, UpdateNodeRequest);
SL_MD_HANDLER(close_session, CloseSessionRequest);
SL_MD_HANDLER(list_brokers, ListBrokersRequest);
SL_MD_HANDLER(list_bookies, ListBookiesRequest);

SL_MD_HANDLER(create_namespace, CreateNamespaceRequest);
SL_MD_HANDLER(get_namespace, GetNamespaceRequest);
SL_MD_HANDLER(list_namespaces, ListNamespacesRequest);
SL_MD_HANDLER(set_namespace_policies, SetNamespacePoliciesRequest);
SL_MD_HANDLER(delete_namespace, DeleteNamespaceRequest);
SL_MD_HANDLER(create_topic, CreateTopicRequest);
SL_MD_HANDLER(get_topic, GetTopicRequest);
SL_MD_HANDLER(list_topics, ListTopicsRequest);
SL_MD_HANDLER(delete_topic, DeleteTopicRequest);

SL_MD_HANDLER(acquire_ownership, AcquireOwnershipRequest);
SL_MD_HANDLER(lookup_owner, LookupOwnerRequest);
SL_MD_HANDLER(release_ownership, ReleaseOwnershipRequest);

/* Replaces the records of ledgers `ids` (any state; missing ones too) with
 * their tombstones, SL_STORE_TXN_MAX / 2 ledgers per txn, so that a re-run
 * after a failure only repeats what is done. The ledgers of a deleted
 * topic: its bookies drop their copies on their own when they see the
 * tombstone (bookie/ledger_sweep.h). */
sl_status sl_md_ledgers_tombstone(sl_md_service *md, const uint64_t *ids, size_t n,
                                  sl_err *err);

/* The keys of ledger id's record and of its tombstone. */
sl_md_key sl_md_ledger_key(uint64_t id);
sl_md_key sl_md_tombstone_key(uint64_t id);

SL_MD_HANDLER(allocate_ledger_id, AllocateLedgerIdRequest);
SL_MD_HANDLER(create_ledger, CreateLedgerRequest);
SL_MD_HANDLER(get_ledger, GetLedgerRequest);
SL_MD_HANDLER(update_ledger, UpdateLedgerRequest);
SL_MD_HANDLER(delete_ledger, DeleteLedgerRequest);

SL_MD_HANDLER(get_managed_ledger, GetManagedLedgerRequest);
SL_MD_HANDLER(update_managed_ledger, UpdateManagedLedgerRequest);
SL_MD_HANDLER(get_cursor, GetCursorRequest);
SL_MD_HANDLER(update_cursor, UpdateCursorRequest);
SL_MD_HANDLER(delete_cursor, DeleteCursorRequest);
SL_MD_HANDLER(list_cursors, ListCursorsRequest);

SL_MD_HANDLER(claim_rereplication, ClaimRereplicationRequest);
SL_MD_HANDLER(finish_rereplication, FinishRereplicationRequest);
SL_MD_HANDLER(list_under_replicated, ListUnderReplicatedRequest);

SL_MD_HANDLER(watch, WatchRequest);
void sl_md_watch_writable(sl_rpc_call *call, void *ctx);
void sl_md_watch_done(sl_rpc_call *call, bool cancelled, void *ctx);

#endif
