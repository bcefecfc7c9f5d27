/*
 * etcd v3 client over the JSON gateway (libcurl + cJSON).
 *
 * Unary calls (range, put, delete, txn, lease grant/keepalive/revoke,
 * compaction) POST JSON to one of the configured endpoints. Watches live in
 * metadata/etcd_watch.h. The JSON encoding and reply parsing are in
 * metadata/etcd_json.h.
 *
 * Design note
 *  - Connections: a pool of curl easy handles, each with its keep-alive
 *    connection. A calling thread borrows one for the call and gives it back,
 *    so N threads calling at once use N connections and never share a handle.
 *  - Endpoints: the client keeps a preferred endpoint. A connection failure
 *    moves the preference to the next endpoint and the call tries it at once.
 *  - Deadline: every call has one: opts.timeout_ms from the call's start,
 *    or the caller's `deadline_ms` if that comes first. Within it a call
 *    retries with backoff (25 ms doubling to 500 ms) and gives up at the
 *    deadline: SL_EUNAVAIL when no endpoint could be reached, SL_ETIMEDOUT
 *    when etcd was reached but did not answer in time. Every curl transfer
 *    has CURLOPT_TIMEOUT set to the time left.
 *  - Fail fast (metadata/etcd_breaker.h): the client remembers, per
 *    endpoint, when a connection attempt last failed (refused, unresolvable,
 *    connect timeout; an etcd error reply does not count). While every
 *    endpoint has failed within the last opts.down_ms, a call does not
 *    retry: it fails at once with SL_EUNAVAIL, "all endpoints unreachable
 *    (last: ...)". One call at a time is still let through as a probe, so
 *    the first call after etcd is back reaches it. So during an outage a
 *    call costs at most one connection attempt per endpoint, not a thread
 *    blocked for the whole deadline. Watches keep their own reconnect loop
 *    and neither consult nor feed this gate.
 *  - Retry safety:
 *      1. A request that was never sent (connect refused or timed out) is
 *         always retried, on any endpoint.
 *      2. A read (range, keepalive, grant, revision) is retried after any
 *         transport failure: repeating it changes nothing (a repeated grant
 *         at worst leaves an unused lease that expires).
 *      3. A write that may have reached etcd (the connection broke after
 *         sending, or no reply came in time) is NOT retried: the caller gets
 *         SL_EUNAVAIL or SL_ETIMEDOUT with "outcome unknown" in the message
 *         and must re-read to learn whether it applied. Retrying it blindly
 *         could turn our own successful CAS into a reported conflict.
 *      4. etcd's "no leader" (code 14) is refused before proposing, so it is
 *         retried for writes too; other code 14 errors only for reads.
 *  - Errors from etcd map through sl_status_from_grpc and the message
 *    names the call and key: `etcd put "/sluice/a": etcdserver: requested
 *    lease not found (code 5)`.
 *
 * Thread-safety: all functions may be called from any number of threads at
 * once, except sl_etcd_destroy, which must be the last call.
 */
#ifndef SL_METADATA_ETCD_H
#define SL_METADATA_ETCD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/clock.h"
#include "common/status.h"
#include "metadata/etcd_json.h"

typedef struct sl_etcd sl_etcd;

typedef struct sl_etcd_opts {
  int timeout_ms;         /* whole-call deadline, retries included; > 0 */
  int connect_timeout_ms; /* one connection attempt; > 0 */
  int down_ms;            /* fail fast while every endpoint failed to
                             connect within this long; 0 = never (retry
                             until the deadline); >= 0 */
} sl_etcd_opts;

#define SL_ETCD_OPTS_INIT {.timeout_ms = 5000, .connect_timeout_ms = 1000, .down_ms = 500}

/* `deadline_ms` of the calls below: an absolute time on the CLOCK_MONOTONIC
 * clock in milliseconds (sl_clock_mono_ms), by which the call must end even
 * if opts.timeout_ms would allow more. SL_ETCD_NO_DEADLINE: opts.timeout_ms
 * alone. A deadline already passed fails the call with SL_ETIMEDOUT before
 * any attempt. */
#define SL_ETCD_NO_DEADLINE INT64_MAX

/* True while the fail-fast gate is open (etcd_breaker.h, invariant 2):
 * every endpoint failed to connect within down_ms. */
bool sl_etcd_failing_fast(sl_etcd *c);

/*
 * Creates a client for `endpoints`: one or more comma-separated base URLs,
 * e.g. "http://127.0.0.1:2379,http://10.0.0.2:2379". Nothing is contacted
 * yet. opts may be NULL for defaults. SL_EINVAL on a malformed list.
 */
sl_status sl_etcd_create(const char *endpoints, const sl_etcd_opts *opts,
                         sl_etcd **out, sl_err *err);

/* Closes all connections and frees the client. NULL is a no-op.
 * Precondition: no call is in flight and no watch is open on it. */
void sl_etcd_destroy(sl_etcd *c);

/* ---- compare and op descriptions for txn (all pointers borrowed) ---- */

typedef enum sl_etcd_cmp_target {
  SL_ETCD_TARGET_VERSION,
  SL_ETCD_TARGET_CREATE,
  SL_ETCD_TARGET_MOD,
  SL_ETCD_TARGET_LEASE,
} sl_etcd_cmp_target;

typedef enum sl_etcd_cmp_result {
  SL_ETCD_CMP_EQUAL,
  SL_ETCD_CMP_GREATER,
  SL_ETCD_CMP_LESS,
  SL_ETCD_CMP_NOT_EQUAL,
} sl_etcd_cmp_result;

typedef struct sl_etcd_cmp {
  const void *key;
  size_t key_len;
  sl_etcd_cmp_target target;
  sl_etcd_cmp_result result;
  int64_t value; /* a missing key reads as 0 for every target */
} sl_etcd_cmp;

typedef struct sl_etcd_op {
  sl_etcd_op_type type;
  const void *key;
  size_t key_len;
  const void *range_end; /* RANGE/DELETE: NULL for the single key */
  size_t range_end_len;
  const void *value;     /* PUT */
  size_t value_len;
  int64_t lease;         /* PUT: 0 for none */
  int64_t limit;         /* RANGE: 0 for no limit */
  int64_t revision;      /* RANGE: read as of this revision; 0 = latest */
} sl_etcd_op;

/* ---- calls; each fills *out only on SL_OK (release it after); each
 * ends by deadline_ms (see above) ---- */

/* Linearizable range [key, range_end) (range_end NULL: just key), sorted by
 * key, at most `limit` kvs (0: all), as of `revision` (0: the latest;
 * SL_ERANGE once compacted). */
sl_status sl_etcd_range(sl_etcd *c, int64_t deadline_ms, const void *key,
                        size_t key_len, const void *range_end,
                        size_t range_end_len, int64_t limit, int64_t revision,
                        sl_etcd_range_reply *out, sl_err *err);

/* Unconditional put; *revision (may be NULL) gets the new revision. */
sl_status sl_etcd_put(sl_etcd *c, int64_t deadline_ms, const void *key,
                      size_t key_len, const void *value, size_t value_len,
                      int64_t lease, int64_t *revision, sl_err *err);

/* Deletes [key, range_end) (range_end NULL: just key). */
sl_status sl_etcd_delete(sl_etcd *c, int64_t deadline_ms, const void *key,
                         size_t key_len, const void *range_end,
                         size_t range_end_len, sl_etcd_delete_reply *out,
                         sl_err *err);

/*
 * Atomic txn: if every compare holds, runs `success`, else `failure`.
 * out->succeeded tells which; out->ops holds one reply per op of the branch
 * that ran. etcd allows at most 128 ops per branch and no key written twice.
 */
sl_status sl_etcd_txn(sl_etcd *c, int64_t deadline_ms, const sl_etcd_cmp *cmps,
                      size_t n_cmps, const sl_etcd_op *success, size_t n_success,
                      const sl_etcd_op *failure, size_t n_failure,
                      sl_etcd_txn_reply *out, sl_err *err);

/* Grants a lease of ttl_s seconds (etcd raises it to its minimum, 2 s). */
sl_status sl_etcd_lease_grant(sl_etcd *c, int64_t deadline_ms, int64_t ttl_s,
                              sl_etcd_lease_reply *out, sl_err *err);

/* Renews a lease to its full TTL. SL_ENOTFOUND if it expired or never was. */
sl_status sl_etcd_lease_keepalive(sl_etcd *c, int64_t deadline_ms, int64_t id,
                                  sl_etcd_lease_reply *out, sl_err *err);

/* Revokes a lease, deleting its keys. SL_ENOTFOUND if unknown. */
sl_status sl_etcd_lease_revoke(sl_etcd *c, int64_t deadline_ms, int64_t id,
                               sl_err *err);

/* Compacts history before `revision`. SL_ERANGE if already compacted there
 * or if revision is in the future. */
sl_status sl_etcd_compact(sl_etcd *c, int64_t deadline_ms, int64_t revision,
                          sl_err *err);

/* The current store revision (linearizable). */
sl_status sl_etcd_revision(sl_etcd *c, int64_t deadline_ms, int64_t *revision,
                           sl_err *err);

/*
 * Writes a printable, quoted rendering of a key into buf (bytes outside
 * printable ASCII as \xNN, truncated with "..."), for error messages.
 * Returns buf.
 */
const char *sl_etcd_key_text(const void *key, size_t len, char *buf, size_t cap);

#endif
