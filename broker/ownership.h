/*
 * Ownership: which partitions this broker owns, who owns the others, and
 * the broker's session with the metadata service (DESIGN.md §5-6).
 *
 * A broker serves a partition only while it owns it: the metadata service
 * holds owners/<p> = (broker, epoch) bound to the owner's session lease, and
 * each take-over gets a higher epoch. This module holds the broker's session
 * (common/session.h, reporting the owned count and its CPU load, load.h,
 * re-reported at a keep-alive when either moved), acquires and
 * releases partitions, answers "who owns p" (with a short cache for
 * partitions owned elsewhere) and tells the partitions' holders (the managed
 * ledgers) when they must stop.
 *
 * Invariants:
 *   1. A partition is in the local table as OWNED only after AcquireOwnership
 *      answered acquired=true under the current session; its epoch is the one
 *      that answer gave. Nothing else adds OWNED entries.
 *   2. When the session keeper says the session is lost (a TTL since the last
 *      keep-alive that succeeded, before the lease can lapse), every partition
 *      leaves the table at once and hooks.lost runs for each, before any other
 *      broker can have taken over. The keeper then opens a new session;
 *      partitions are acquired afresh, with new epochs.
 *   3. A partition leaves the table in exactly one of four ways: session loss
 *      (hooks.lost), revocation (hooks.lost: the owner watch showed its key
 *      deleted, as DeleteTopic does, or owned at a later epoch, after our own
 *      key at our epoch), sl_ownership_drop() (its holder was fenced), or a
 *      finished unload (hooks.unload, then sl_ownership_unloaded(), then
 *      ReleaseOwnership). While UNLOADING it is neither served nor re-acquired.
 *   4. An unowned partition is picked for the live broker with the least load
 *      (owned partitions, then load_permille, ties spread by a hash of the
 *      partition name). If that is another broker, it is asked with an
 *      authoritative Lookup, which takes the partition without picking again,
 *      so a pick is never forwarded twice.
 *   5. While stopping (sl_ownership_stop) nothing new is acquired: lookups of
 *      unowned partitions go to other brokers or fail with SL_EUNAVAIL.
 *
 * States of one local entry:
 *   (absent) --acquired--> OWNED --sl_ownership_unload/stop--> UNLOADING
 *   UNLOADING --sl_ownership_unloaded + ReleaseOwnership--> (absent)
 *   OWNED|UNLOADING --session lost / sl_ownership_drop--> (absent)
 *
 * Threads: a few ownership worker threads do the metadata calls (blocking,
 * bounded by rpc_timeout_ms) and run hooks.unload and most callbacks. Jobs
 * (lookups, unloads, releases) of different partitions run side by side, so
 * one slow etcd round trip delays only its own partition; the jobs of one
 * partition run one at a time, in the order they were asked for. Callbacks
 * of requests forwarded to other brokers run on a channel completion
 * thread; hooks.lost runs on the session keeper's thread or the owner
 * watch's.
 * Every public function may be called from any thread and never blocks on the
 * network, except sl_ownership_stop() and sl_ownership_destroy().
 * Lock: o->mu guards the table, the job queue, the cache and the session
 * fields read by other threads. Hooks and callbacks run without it.
 */
#ifndef SL_BROKER_OWNERSHIP_H
#define SL_BROKER_OWNERSHIP_H

#include <stdbool.h>
#include <stdint.h>

#include "common/rpc_client.h"
#include "common/status.h"

typedef struct sl_ownership sl_ownership;

/* Called by the partitions' holders (the managed-ledger registry). Neither
 * may block (see Threads above). */
typedef struct sl_ownership_hooks {
  /* Unload (Unload or graceful stop): stop taking sends, flush in-flight ones,
   * close the ledgers, then call sl_ownership_unloaded(o, partition) from any
   * thread. NULL: the partition is released at once. */
  void (*unload)(void *arg, const char *partition, uint64_t epoch);
  /* The session is lost, or the owner watch (owner_watch.h) showed the
   * partition's owner key deleted or taken over: stop acting as owner now,
   * fail in-flight work with a redirect (owner unknown). `why` is for logs.
   * May be NULL. */
  void (*lost)(void *arg, const char *partition, uint64_t epoch, const char *why);
  void *arg;  /* retained until sl_ownership_destroy() returns */
} sl_ownership_hooks;

typedef struct sl_ownership_opts {
  const char *target;        /* metadata service gRPC target; copied */
  const char *broker_id;     /* this broker's id; copied */
  const char *address;       /* host:port clients reach this broker on; copied */
  const char *version;       /* reported in BrokerInfo; copied; may be NULL */
  uint32_t ttl_seconds;      /* session TTL asked for; 0 = the server's */
  int rpc_timeout_ms;        /* per metadata or peer call; 0 = 1000 */
  int cache_ms;              /* remember other brokers' partitions; 0 = 1000 */
  sl_ownership_hooks hooks;  /* copied; all NULL = nothing to unload */
  /* Templates (target unset; TLS PEMs, which must outlive the ownership)
   * for the channels to the metadata service and to other brokers; NULL =
   * plaintext. Copied. */
  const sl_rpc_channel_opts *metadata_channel;
  const sl_rpc_channel_opts *broker_channel;
} sl_ownership_opts;

/* The owner of one partition, as resolved. */
typedef struct sl_ownership_owner {
  const char *partition;  /* borrowed, valid during the callback */
  const char *broker_id;
  const char *address;
  uint64_t epoch;
  bool local;             /* this broker is the owner */
} sl_ownership_owner;

/* Outcome of sl_ownership_resolve(). On SL_OK `owner` is set (borrowed);
 * otherwise `msg` says why (SL_ENOTFOUND: the partition's topic does not
 * exist; SL_EUNAVAIL: no session yet, stopping, or unloading; or the
 * metadata service's status). Runs on the ownership thread or a channel
 * thread, never inside sl_ownership_resolve(). */
typedef void (*sl_ownership_resolve_cb)(sl_status st, const char *msg,
                                        const sl_ownership_owner *owner,
                                        void *arg);

/* Outcome of sl_ownership_unload(): the epoch given up (0: was unowned). */
typedef void (*sl_ownership_unload_cb)(sl_status st, const char *msg,
                                       uint64_t released_epoch, void *arg);

/* Starts the ownership thread and the session keeper, which opens the
 * session at once (and retries until it succeeds). Call once this process
 * serves on opts->address (common/session.h, invariant 5). SL_EINVAL for a
 * missing target, id or address. */
sl_status sl_ownership_create(const sl_ownership_opts *opts, sl_ownership **out,
                              sl_err *err);

/* Graceful stop (SIGTERM): no new acquisitions (invariant 5), every owned
 * partition is unloaded through the hooks and released, then the session is
 * closed so this broker's registration disappears at once. Waits up to
 * timeout_ms for the unloads; whatever is left then goes with the session.
 * Blocks; call once, before the gRPC server stops, so in-flight sends can
 * still be answered. */
void sl_ownership_stop(sl_ownership *o, int timeout_ms);

/* Stops the thread (after sl_ownership_stop() if a graceful stop is wanted),
 * closes the session if still open, frees. Callbacks still pending run with
 * SL_ECANCELED first. NULL is a no-op. */
void sl_ownership_destroy(sl_ownership *o);

/* Who owns `partition` (a valid partition name: the caller checks it):
 * this broker, another one, or after a pick by load a new owner (which may
 * be this broker). With authoritative set, an unowned partition is taken by
 * this broker without a pick (invariant 4). cb runs exactly once, and arg is
 * retained until then. `partition` is copied. */
void sl_ownership_resolve(sl_ownership *o, const char *partition,
                          bool authoritative, sl_ownership_resolve_cb cb,
                          void *arg);

/* True with *epoch set if this broker owns `partition` now (OWNED, not
 * UNLOADING). */
bool sl_ownership_owns(sl_ownership *o, const char *partition, uint64_t *epoch);

/* Moves `partition`: if owned here, hooks.unload, then release, then another
 * live broker (if any) is asked to take it; if owned elsewhere, the owner is
 * asked to unload it. cb runs exactly once (arg retained until then). */
void sl_ownership_unload(sl_ownership *o, const char *partition,
                         sl_ownership_unload_cb cb, void *arg);

/* The holder finished hooks.unload for `partition` (any thread). */
void sl_ownership_unloaded(sl_ownership *o, const char *partition);

/* The holder found it is no longer the owner of `partition` at `epoch`
 * (fenced, stale epoch): forget it without releasing (invariant 3). A
 * different epoch (an older holder) is ignored. */
void sl_ownership_drop(sl_ownership *o, const char *partition, uint64_t epoch);

/* Partitions owned now (OWNED or UNLOADING). */
uint32_t sl_ownership_count(sl_ownership *o);

/* The current session id, 0 when none (tests and logs; never shown to
 * clients). */
int64_t sl_ownership_session(sl_ownership *o);

#endif
