/*
 * BookieService over gRPC (proto/bookie.proto): the bookie's wire API on top
 * of the bookie store (bookie/bookie_store.h). It only translates: requests
 * in, store calls, answers out. Durability, fencing and checksums are the
 * store's business.
 *
 * AddEntry is a bidi stream with many adds in flight. Each add is copied
 * (the decoded request lives only during the callback), handed to the store,
 * and acked from the journal thread once durable, so acks come back in the
 * order of group commits, not of requests; the tag echoes back to match.
 * A refused add gets its ack at once; the stream goes on. Every ack carries
 * the typed outcome (AddEntryResponse.status, the negated sl_status) and
 * the gRPC code derived from it, so a writer can tell FENCED from
 * STALE_EPOCH from READ_ONLY (proto/bookie.proto lists them all).
 *
 * Memory per stream stays bounded:
 *   - acks the call's write queue has no room for (a client that does not
 *     read) wait in a per-stream list and are flushed from on_writable; an
 *     ack is never dropped while the call is alive;
 *   - once adds in flight plus waiting acks reach max_stream_adds, or their
 *     payload bytes reach max_stream_bytes, the stream stops reading; gRPC
 *     flow control then holds the client back. Reads resume below half.
 * After the client half-closes, the stream ends with OK once every ack is
 * out.
 *
 * Status codes (one place: sl_status_to_grpc, for call statuses and for the
 * per-add code in AddEntryResponse alike):
 *   SL_EPERM        -> PERMISSION_DENIED "ledger 7: wrong password"
 *   SL_EFENCED      -> FAILED_PRECONDITION "ledger 7: fenced"
 *   SL_ESTALE_EPOCH -> FAILED_PRECONDITION "ledger 7: stale epoch 3 < 5"
 *   SL_ECONFLICT    -> FAILED_PRECONDITION (same entry id, other bytes)
 *   SL_EREADONLY    -> FAILED_PRECONDITION "... read-only ..."
 *   SL_EBADCRC      -> DATA_LOSS (the writer's entry checksum is wrong)
 *   SL_ECORRUPT     -> DATA_LOSS (a stored entry fails its checksum)
 *   SL_ETOOBIG      -> RESOURCE_EXHAUSTED
 *   SL_EFAILED      -> UNAVAILABLE (the journal failed; needs a restart)
 *   SL_EINVAL       -> INVALID_ARGUMENT (negative ids, lac >= entry)
 *   SL_EDELETED     -> NOT_FOUND "ledger 7: deleted" (a tombstone)
 *   SL_ENOTFOUND    -> NOT_FOUND (a ledger this bookie never saw)
 * A request that does not decode never reaches us: the RPC runtime answers
 * INVALID_ARGUMENT.
 *
 * ReadEntry with fence set fences the ledger first (durably: the answer
 * comes from the store's callback after the journal sync) and then reads;
 * entry_id -1 means the last entry this bookie stores. An entry the bookie
 * does not have is an OK answer with found=false; every read answer also
 * carries the LAC, last entry id, fenced flag and instance id. ReadEntries
 * does the same for a range, as a stream of batches (max entries and max
 * bytes per message), stopping at the first missing entry; a striped range
 * (ensemble size, write quorum, ensemble index) covers only the entries
 * whose write set holds that index (bookie.proto). It pumps from
 * on_writable when the call's write queue is full. WriteLac and
 * DeleteLedger carry the ledger's password; a delete leaves a tombstone. The password of
 * AddEntry, Fence and a fencing ReadEntry goes to the store, which checks it
 * against the ledger's master key (bookie_store.h); a plain read needs none.
 * GetInfo's journal_bytes is the journal written after the last checkpoint.
 *
 * Metrics (opts.metrics): sluice_bookie_adds_total and
 * sluice_bookie_reads_total by outcome (the typed status, lowercased:
 * "ok", "fenced", "stale_epoch" ...; a read answered found=false counts as
 * "not_found"), sluice_bookie_add_latency_seconds from an add's arrival to
 * its ack (accepted adds). The store and journal add their own.
 *
 * Threads: handlers run on the call's worker thread; add, fence, WriteLac
 * and delete completions run on the store's applier thread and answer from
 * there, each holding an sl_rpc_call_ref() until it has answered. Reads
 * (ReadEntry, ReadEntries, a fencing read once its fence is durable) are
 * served on read threads of their own (opts.read_threads) at a lower CPU
 * priority (opts.read_nice), so a read never waits in front of an add on a
 * worker or the applier (service_read.c). At most 4096 reads wait for a
 * read thread; more are refused with RESOURCE_EXHAUSTED (SL_EBUSY).
 */
#ifndef SL_BOOKIE_SERVICE_H
#define SL_BOOKIE_SERVICE_H

#include <stddef.h>
#include <stdint.h>

#include "bookie/bookie_store.h"
#include "common/metrics.h"
#include "common/rpc_server.h"
#include "common/status.h"

typedef struct sl_bookie_svc sl_bookie_svc;

typedef struct sl_bookie_svc_opts {
  const char *bookie_id;     /* copied; GetInfo reports it */
  uint32_t max_stream_adds;  /* adds in flight + acks waiting per stream
                                before its reads pause; 0 = 1024 */
  size_t max_stream_bytes;   /* payload bytes in flight per stream before
                                its reads pause; 0 = 64 MiB */
  sl_metrics *metrics;       /* where adds/reads by outcome and add latency
                                go; NULL: none. Retained. */
  int read_threads;          /* threads serving reads; 0 = 2 */
  int read_nice;             /* their nice value, added to the process's
                                (0..19; higher = yields more to adds) */
} sl_bookie_svc_opts;

#define SL_BOOKIE_SVC_OPTS_INIT {.bookie_id = "bookie", .read_nice = 5}

/* Counters since create, for logs and tests. */
typedef struct sl_bookie_svc_stats {
  uint64_t streams;        /* AddEntry streams opened */
  uint64_t adds;           /* add requests received */
  uint64_t adds_ok;        /* acked with code 0 */
  uint64_t adds_refused;   /* acked with a non-zero code */
  uint64_t acks_deferred;  /* acks that waited for room in the write queue */
  uint64_t pauses;         /* times a stream stopped reading */
} sl_bookie_svc_stats;

/* Creates the service over `store` (retained: it must outlive the service)
 * and starts its read threads. opts may be NULL for defaults. Errors:
 * SL_EINVAL (also for read_threads outside 0..64 or read_nice outside
 * 0..19), SL_ENOMEM (no thread). */
sl_status sl_bookie_svc_create(sl_bookie_store *store, const sl_bookie_svc_opts *opts,
                               sl_bookie_svc **out, sl_err *err);

/* Registers BookieService's methods on srv (before sl_rpc_server_start).
 * svc is retained until the server is destroyed. */
sl_status sl_bookie_svc_register(sl_bookie_svc *svc, sl_rpc_server *srv, sl_err *err);

void sl_bookie_svc_get_stats(sl_bookie_svc *svc, sl_bookie_svc_stats *out);

/* Frees the service. Only after the server it was registered on has been
 * destroyed (which waits for every call, and so every add in flight).
 * NULL does nothing. */
void sl_bookie_svc_destroy(sl_bookie_svc *svc);

#endif
