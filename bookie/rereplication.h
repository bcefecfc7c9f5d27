/*
 * Re-replication worker: the bookie's part of auto-recovery (DESIGN.md §4).
 *
 * The metadata service's auditor lists CLOSED ledgers that lost copies (a
 * bookie gone past the grace period, or wiped) as work items
 * (proto/metadata.proto, "auto-recovery"). Every bookie runs one worker,
 * which takes one item at a time:
 *   1. ClaimRereplication with this bookie's session. The claim is bound to
 *      the session, so if this bookie dies the item frees itself.
 *   2. sl_ledger_rereplicate_async (broker/ledger/ledger.h) copies what the
 *      item's bookies held to replacements, at most bytes_per_second, and
 *      names them in the ledger's metadata.
 *   3. FinishRereplication: done (the item goes) when the copy succeeded or
 *      there was nothing to do (the bookies came back, the ledger is gone or
 *      not CLOSED); else released for a later try, and the worker waits
 *      poll_ms before its next claim so a failing item cannot spin.
 * With no work (or no session yet) the worker waits poll_ms between
 * claims.
 *
 * Invariants
 *  1. At most one item is worked on per worker, and only while this bookie
 *     holds the claim's session (a claim that lapsed is not finished).
 *  2. Copies are paced to bytes_per_second so recovery does not take the
 *     disk and network from adds; the rate is per worker.
 *  3. Stop is prompt: the wait is woken, an item in progress is cancelled
 *     (before its next chunk, at most about a second) and released.
 *
 * States
 *   RUNNING  sl_rerep_start: the thread ("bookie-rerep") claims and works
 *   STOPPED  sl_rerep_stop: the thread is joined, the client and channel
 *            destroyed
 *
 * Threads and locks: the worker thread makes every call (metadata calls
 * are blocking, each bounded by rpc_timeout_ms); the ledger client's
 * completion runs on its serial and only records the outcome under w->mu
 * and signals w->cv. w->mu guards the stop flag and that outcome.
 */
#ifndef SL_BOOKIE_REREPLICATION_H
#define SL_BOOKIE_REREPLICATION_H

#include <stdint.h>

#include "common/rpc_client.h"
#include "common/status.h"

struct sl_metrics;

typedef struct sl_rerep sl_rerep;

/* The bookie's current session id, 0 while it has none. Called on the
 * worker thread. */
typedef int64_t (*sl_rerep_session_fn)(void *arg);

typedef struct sl_rerep_opts {
  const char *target;         /* metadata service gRPC target; copied */
  const char *tls_root_pem;   /* CA for the metadata service; NULL =
                                 plaintext; the PEMs are borrowed for the
                                 call */
  const char *tls_cert_pem;
  const char *tls_key_pem;
  const char *authorization; /* "authorization" metadata (a token), or
                               NULL; copied */
  const sl_rpc_channel_opts *bookie_channel; /* template for channels to
                                 bookies (TLS PEMs; target unset), NULL =
                                 plaintext; copied, but the PEMs it points
                                 at must outlive the worker */
  const char *node_id;        /* this bookie's id; copied */
  sl_rerep_session_fn session;
  void *session_arg;          /* retained until stop returns */
  int poll_ms;                /* between claims when idle or after a
                                 failure; 0 = 10000 */
  uint64_t bytes_per_second;  /* copy rate; 0 = unbounded */
  int rpc_timeout_ms;         /* per metadata call; 0 = 5000 */
  struct sl_metrics *metrics; /* for sluice_bookie_rereplication_*; NULL:
                                 none. Retained until stop */
} sl_rerep_opts;

#define SL_REREP_OPTS_INIT \
  {.target = NULL, .poll_ms = 10000, .bytes_per_second = 0, .rpc_timeout_ms = 5000}

/* Creates the metadata channel and ledger client and starts the thread.
 * Errors: SL_EINVAL (no target, node id or session function, a negative
 * setting), the channel's, the metrics registry's. */
sl_status sl_rerep_start(const sl_rerep_opts *opts, sl_rerep **out, sl_err *err);

/* Stops promptly (invariant 3), joins, frees. NULL does nothing. */
void sl_rerep_stop(sl_rerep *w);

#endif
