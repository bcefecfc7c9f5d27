/*
 * sl_store: the metadata store. Byte keys and values with revisions,
 * compare-and-swap, transactions, leases and ordered watches, behind one
 * table of function pointers with two backends:
 *
 *   "etcd:http://127.0.0.1:2379[,http://host2:2379...]"  etcd v3 (production)
 *   "local:/path/to/dir"   embedded leveldb store (standalone mode, tests)
 *
 * Both backends follow etcd's model, and one conformance suite
 * (metadata/store_conformance.c) holds them to the same behaviour:
 *  - The store has one revision counter. Every write (put, delete, txn,
 *    lease expiry) that changes something takes the next revision; all
 *    changes of one txn share it. Reads report the revision they saw.
 *  - Each key carries create_revision (when it was created) and mod_revision
 *    (its last change). A missing key has mod_revision 0. Every update in
 *    Sluice is a compare-and-swap on mod_revision, so of two writers holding
 *    the same version, exactly one wins.
 *  - A lease has a TTL in seconds (raised to at least 2). Keys put with a
 *    lease are deleted, in one revision, when the lease is revoked or lapses
 *    (between TTL and TTL+1 s after the last keepalive). A store restart
 *    renews every lease to its full TTL (etcd does the same).
 *  - A watch delivers every change under a prefix from a revision on, in
 *    revision order, each exactly once, across connection loss and etcd
 *    restarts (it resumes from the last delivered revision + 1).
 *  - Compaction drops history before a revision. A watch whose next
 *    revision is compacted gets one SL_STORE_EVENT_COMPACTED event and ends.
 *    The caller then re-reads (sl_store_range gives the state at some
 *    revision R) and starts a new watch from R + 1. The store does not do
 *    this re-read itself, so callers always see real events only.
 *
 * Errors (each with an sl_err message naming the key):
 *   SL_EVERSION   compare-and-swap mismatch (the key changed)
 *   SL_EEXIST     create (expected revision 0) of a key that exists
 *   SL_ENOTFOUND  missing key on get/delete/CAS, unknown or lapsed lease
 *   SL_EUNAVAIL   etcd unreachable after bounded retries within the deadline,
 *                 or at once while every etcd endpoint is known to be down
 *                 (opts.etcd_down_ms), or a write's outcome is unknown
 *                 (connection lost after sending: re-read to find out)
 *   SL_ETIMEDOUT  etcd reached but no answer within the deadline, or the
 *                 calling thread's deadline (sl_store_deadline_begin) had
 *                 passed before the call
 *   SL_EINVAL     bad input (empty or oversized key, bad revision, ...)
 *   SL_ERANGE     compaction at a compacted or future revision
 *   SL_EIO        local backend: disk error
 * Every call on the etcd backend has a deadline of opts.timeout_ms, or the
 * calling thread's deadline if that comes first (see "per-thread deadline").
 *
 * Threads: a store may be used by any number of threads at once (the etcd
 * backend gives each concurrent caller its own keep-alive connection).
 * Watch callbacks run on a thread owned by the watch.
 *
 * Memory: all pointer arguments are borrowed for the call. Results
 * (sl_store_kv, sl_store_range_result) are heap-owned by the caller, who
 * releases them with the matching _release function.
 */
#ifndef SL_METADATA_STORE_H
#define SL_METADATA_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

typedef struct sl_store sl_store;
typedef struct sl_store_watch sl_store_watch;

/* Expected revision values besides an exact mod_revision (> 0). */
#define SL_STORE_REV_ABSENT 0   /* the key must not exist */
#define SL_STORE_REV_ANY (-1)   /* put/delete: no check */
#define SL_STORE_REV_EXISTS (-2) /* txn compare: the key must exist */

/* Limits, the same on both backends (etcd's request limit is 1.5 MiB). */
#define SL_STORE_MAX_KEY 4096
#define SL_STORE_MAX_VALUE (1024 * 1024)
#define SL_STORE_TXN_MAX 64 /* compares, and ops, per txn */

typedef struct sl_store_opts {
  int timeout_ms;         /* etcd: deadline of each call, retries included */
  int connect_timeout_ms; /* etcd: one connection attempt */
  bool local_sync;        /* local: fsync each write before returning */
  int64_t local_history;  /* local: revisions of history kept for watches
                             (older ones are compacted automatically) */
  int etcd_down_ms;       /* etcd: fail at once while every endpoint failed
                             to connect within this long (metadata/etcd.h,
                             "Fail fast"); 0 = retry until the deadline */
} sl_store_opts;

#define SL_STORE_OPTS_INIT                                            \
  {.timeout_ms = 5000, .connect_timeout_ms = 1000, .local_sync = true, \
   .local_history = 100000, .etcd_down_ms = 500}

/* One key-value. key and value are heap buffers, each followed by a NUL
 * byte that is not counted in its length (so text keys print directly). */
typedef struct sl_store_kv {
  uint8_t *key;
  size_t key_len;
  uint8_t *value;
  size_t value_len;
  int64_t create_revision;
  int64_t mod_revision;
  int64_t lease; /* 0 when not bound to a lease */
} sl_store_kv;

/* Frees kv's buffers and zeroes it. NULL or a zeroed kv is fine. */
void sl_store_kv_release(sl_store_kv *kv);

typedef struct sl_store_range_result {
  sl_store_kv *kvs; /* sorted by key, bytewise */
  size_t n;
  bool more;        /* more keys matched beyond the limit */
  int64_t revision; /* store revision the read saw */
} sl_store_range_result;

void sl_store_range_result_release(sl_store_range_result *r);

/* ---- handle ---- */

/*
 * Opens a store from a URI (see top). The etcd backend contacts nobody until
 * the first call. The local backend creates the directory if needed and
 * holds leveldb's lock on it (a second open of the same dir gets SL_EBUSY).
 * opts may be NULL for SL_STORE_OPTS_INIT. SL_EINVAL for a bad URI or opts.
 */
sl_status sl_store_open(const char *uri, const sl_store_opts *opts,
                        sl_store **out, sl_err *err);

/* Closes the store. Precondition: no call in flight, all watches stopped.
 * Leases are not revoked (they lapse). NULL is a no-op. */
void sl_store_close(sl_store *s);

/* "etcd" or "local". */
const char *sl_store_backend(const sl_store *s);

/* ---- reads ---- */

/* Reads one key into *out (release it after). SL_ENOTFOUND if missing. */
sl_status sl_store_get(sl_store *s, const void *key, size_t key_len,
                       sl_store_kv *out, sl_err *err);

/*
 * Reads keys starting with `prefix` (may be empty: all keys), sorted, at
 * most `limit` of them (0: no limit). To page, pass the last key seen plus
 * a trailing '\0' byte as `start` (NULL: from the prefix); start must begin
 * with the prefix. Pages may come from different revisions.
 */
sl_status sl_store_range(sl_store *s, const void *prefix, size_t prefix_len,
                         const void *start, size_t start_len, size_t limit,
                         sl_store_range_result *out, sl_err *err);

/*
 * sl_store_range as of `revision` (> 0; 0 = the latest), so that the pages
 * of one listing are one snapshot: read page 1 at 0, the rest at its
 * revision. SL_ERANGE once that revision is compacted. The local backend
 * keeps no old values and returns SL_EUNIMPL for revision > 0; there, one
 * call with limit 0 is one snapshot.
 */
sl_status sl_store_range_at(sl_store *s, const void *prefix, size_t prefix_len,
                            const void *start, size_t start_len, size_t limit,
                            int64_t revision, sl_store_range_result *out, sl_err *err);

/* True while calls fail at once because the store is known to be
 * unreachable (etcd: the fail-fast gate of metadata/etcd_breaker.h is
 * open); always false on the local backend. */
bool sl_store_failing_fast(sl_store *s);

/* The current revision of the store. */
sl_status sl_store_revision(sl_store *s, int64_t *revision, sl_err *err);

/* ---- single-key writes; *revision (may be NULL) gets the write's revision ---- */

/* Creates key only if it does not exist: SL_EEXIST otherwise. lease 0: none. */
sl_status sl_store_create(sl_store *s, const void *key, size_t key_len,
                          const void *value, size_t value_len, int64_t lease,
                          int64_t *revision, sl_err *err);

/*
 * Compare-and-swap put. `expected` is the key's mod_revision as last read:
 *   > 0    the key must still have it: SL_EVERSION if it changed,
 *          SL_ENOTFOUND if it was deleted;
 *   0      (SL_STORE_REV_ABSENT) same as sl_store_create: SL_EEXIST;
 *   SL_STORE_REV_ANY  unconditional.
 * The put replaces the key's lease binding with `lease` (0: none); a lease
 * that does not exist gives SL_ENOTFOUND.
 */
sl_status sl_store_put(sl_store *s, const void *key, size_t key_len,
                       const void *value, size_t value_len, int64_t expected,
                       int64_t lease, int64_t *revision, sl_err *err);

/*
 * Deletes key if its mod_revision is `expected` (> 0), or whatever it is
 * (SL_STORE_REV_ANY). SL_ENOTFOUND if the key does not exist, SL_EVERSION
 * on a mismatch.
 */
sl_status sl_store_delete(sl_store *s, const void *key, size_t key_len,
                          int64_t expected, int64_t *revision, sl_err *err);

/* ---- transactions ---- */

/* Holds if key's mod_revision equals mod_revision (> 0), or the key is
 * absent (SL_STORE_REV_ABSENT), or it exists (SL_STORE_REV_EXISTS). */
typedef struct sl_store_cmp {
  const void *key;
  size_t key_len;
  int64_t mod_revision;
} sl_store_cmp;

typedef enum sl_store_op_type {
  SL_STORE_OP_PUT,
  SL_STORE_OP_DELETE, /* deleting a missing key is a no-op */
} sl_store_op_type;

typedef struct sl_store_op {
  sl_store_op_type type;
  const void *key;
  size_t key_len;
  const void *value; /* PUT */
  size_t value_len;
  int64_t lease; /* PUT: 0 for none */
} sl_store_op;

/*
 * Atomically: if every compare holds, applies every op (all at one new
 * revision, returned in *revision); otherwise applies nothing and returns
 * SL_EVERSION naming the first compare that failed and what it found.
 * At most SL_STORE_TXN_MAX compares and ops; no key may appear in two ops
 * (SL_EINVAL). A put naming a missing lease fails the whole txn with
 * SL_ENOTFOUND. If no op changes anything (say, deletes of missing keys),
 * the revision does not move and *revision is the current one.
 *
 * Example, taking ownership of a partition and bumping its epoch:
 *   cmps = {{owner_key, klen, SL_STORE_REV_ABSENT},
 *           {epoch_key, elen, epoch_mod_rev}};
 *   ops  = {{SL_STORE_OP_PUT, owner_key, klen, me, mlen, my_lease},
 *           {SL_STORE_OP_PUT, epoch_key, elen, epoch_plus_1, n, 0}};
 */
sl_status sl_store_txn(sl_store *s, const sl_store_cmp *cmps, size_t n_cmps,
                       const sl_store_op *ops, size_t n_ops, int64_t *revision,
                       sl_err *err);

/* ---- leases ---- */

/* Grants a lease; *lease gets its id (never 0), *granted_ttl (may be NULL)
 * the TTL in force (>= 2). ttl_s must be > 0. */
sl_status sl_store_lease_grant(sl_store *s, int64_t ttl_s, int64_t *lease,
                               int64_t *granted_ttl, sl_err *err);

/* Renews the lease to its full TTL, put in *ttl (may be NULL).
 * SL_ENOTFOUND if it lapsed or was revoked. */
sl_status sl_store_lease_keepalive(sl_store *s, int64_t lease, int64_t *ttl,
                                   sl_err *err);

/* Revokes the lease and deletes its keys. SL_ENOTFOUND if unknown. */
sl_status sl_store_lease_revoke(sl_store *s, int64_t lease, sl_err *err);

/* ---- watches ---- */

typedef enum sl_store_event_type {
  SL_STORE_EVENT_PUT,
  SL_STORE_EVENT_DELETE,
  SL_STORE_EVENT_COMPACTED, /* history gone; the watch has ended */
} sl_store_event_type;

typedef struct sl_store_event {
  sl_store_event_type type;
  /* PUT: the new key-value. DELETE: key, and mod_revision = the deletion's
   * revision (value empty). COMPACTED: empty. Borrowed for the callback. */
  sl_store_kv kv;
  int64_t revision;         /* PUT/DELETE: the change's revision */
  bool last_in_revision;    /* no more events of this revision follow */
  int64_t compact_revision; /* COMPACTED: oldest revision still kept */
} sl_store_event;

/*
 * Called on the watch's own thread, one event at a time, in revision order
 * (events of one revision, from one txn, in the txn's op order).
 * Must not call sl_store_watch_stop on its own watch.
 */
typedef void (*sl_store_watch_cb)(void *arg, const sl_store_event *ev);

/*
 * Watches keys starting with `prefix` (may be empty) for changes with
 * revision >= start_revision, or, for start_revision 0, changes after the
 * call returns. Returns once the watch is in place: a write that completes
 * after this returns is always delivered. Errors: SL_EUNAVAIL/SL_ETIMEDOUT
 * when etcd cannot confirm the watch in time. If start_revision is already
 * compacted, the only event is COMPACTED. `arg` is retained until stop; the
 * callback may run before this returns.
 */
sl_status sl_store_watch_start(sl_store *s, const void *prefix,
                               size_t prefix_len, int64_t start_revision,
                               sl_store_watch_cb cb, void *arg,
                               sl_store_watch **out, sl_err *err);

/* Stops the watch and frees it; no callback runs after it returns. Not from
 * the callback itself. NULL is a no-op. */
void sl_store_watch_stop(sl_store_watch *w);

/* ---- per-thread deadline ----
 *
 * A thread serving a request that has a deadline of its own (a gRPC handler)
 * bounds the store calls it makes for that request:
 *
 *   sl_store_deadline d;
 *   sl_store_deadline_begin(&d, time_left_ms);
 *   ... store calls, however deep in helpers ...
 *   sl_store_deadline_end(&d);
 *
 * In between, every call this thread makes (except sl_store_watch_start and
 * the watch itself, which are long-lived) ends by the deadline or by
 * opts.timeout_ms after it starts, whichever comes first; a call made once
 * the deadline has passed fails with SL_ETIMEDOUT without trying. Scopes
 * nest: an inner one can only shorten the deadline, and end restores the
 * enclosing one. The local backend has nothing to wait for and ignores it.
 *
 * Why per thread and not a parameter: the deadline belongs to the request,
 * not to one store call, and a request's store calls are made several helper
 * layers down (reads, compare-and-swap retry loops, epoch checks). Passing
 * it would add a parameter to every sl_store call and to every helper in
 * between, to carry the same number for all of them. The scope is still
 * explicit where it matters: set in the one place that knows the deadline,
 * and undone by the matching end, so it cannot outlive the request.
 */
typedef struct sl_store_deadline {
  int64_t outer; /* the enclosing deadline, restored by end */
  int64_t set;   /* the deadline this scope put in place */
} sl_store_deadline;

/* Starts a scope ending time_left_ms from now (<= 0: already passed;
 * INT64_MAX: no deadline of its own). Must be ended on this thread. */
void sl_store_deadline_begin(sl_store_deadline *d, int64_t time_left_ms);

/* Ends the innermost scope of this thread, which must be d. */
void sl_store_deadline_end(sl_store_deadline *d);

/* ---- maintenance ---- */

/* Drops history before `revision` (watches from older revisions then get
 * COMPACTED). SL_ERANGE if already compacted up to there or in the future. */
sl_status sl_store_compact(sl_store *s, int64_t revision, sl_err *err);

/* Printable, quoted rendering of a key for messages ("\x00" escapes,
 * truncated with "..."); returns buf. cap >= 16. */
const char *sl_store_key_text(const void *key, size_t len, char *buf, size_t cap);

#endif
