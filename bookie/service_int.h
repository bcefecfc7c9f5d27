/* Internals shared by service.c (unary methods), service_add.c (the
 * AddEntry stream) and service_read.c (reads and their threads). See
 * service.h for the design. */
#ifndef SL_BOOKIE_SERVICE_INT_H
#define SL_BOOKIE_SERVICE_INT_H

#include <stdatomic.h>

#include "bookie.slrpc.h"
#include "bookie/service.h"
#include "common/metrics.h"

typedef struct sl_bookie_read_pool sl_bookie_read_pool;

/* One counter per sl_status (indexed by -st), labelled with its outcome. */
#define SVC_N_OUTCOMES 27

struct sl_bookie_svc {
  sl_bookie_store *store; /* retained */
  char *bookie_id;
  uint32_t max_stream_adds;
  size_t max_stream_bytes;
  /* sl_bookie_svc_stats, updated from worker and journal threads */
  atomic_uint_fast64_t streams, adds, adds_ok, adds_refused, acks_deferred, pauses;
  /* Metrics (NULL handles without a registry). */
  sl_metrics_counter *m_adds[SVC_N_OUTCOMES];  /* sluice_bookie_adds_total */
  sl_metrics_counter *m_reads[SVC_N_OUTCOMES]; /* sluice_bookie_reads_total */
  sl_metrics_histogram *m_add_seconds;         /* arrival to ack, accepted adds */
  sl_bookie_read_pool *reads;                  /* service_read.c */
};

/* Fills the add_entry_* callbacks of h (service_add.c). */
void sl_bookie_svc_add_handlers_(sl_bookie_service_handlers *h);

/* Fills the read_entry* callbacks of h (service_read.c). */
void sl_bookie_svc_read_handlers_(sl_bookie_service_handlers *h);

/* Starts / stops (joins) the read threads (service_read.c). Stop only once
 * the server is destroyed: queued reads hold calls. Stop after a failed
 * start cleans up too; stop without a start does nothing. */
sl_status sl_bookie_read_pool_start(sl_bookie_svc *svc, int n_threads, int nice, sl_err *err);
void sl_bookie_read_pool_stop(sl_bookie_svc *svc);

/* Ends a call with a failure, logging what deserves an operator's eye. */
void sl_bookie_svc_fail_(sl_rpc_call *call, sl_status st, const char *msg);

/* Counts one add or read by outcome (any thread). */
void sl_bookie_svc_count_(sl_metrics_counter *const *by_outcome, sl_status st);

#endif
