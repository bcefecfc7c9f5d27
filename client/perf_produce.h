/*
 * The core of `sluice-perf produce`: N producers, each on its own Produce
 * stream to one broker, keep a window of messages in flight and measure
 * every message from send to receipt. Producers batch on the client side
 * as a real client does: whatever the window allows (up to max_batch) goes
 * in one SendBatch. sluice-perf starts one run per partition of the topic,
 * each against the partition's owner; tools/produce_bench runs it on a
 * cluster it starts, beside the server-side figures.
 *
 * Threads: two per producer (sender and receiver over the blocking stream
 * API). Nothing is shared between producers but the results, merged at the
 * end.
 */
#ifndef SL_CLIENT_PERF_PRODUCE_H
#define SL_CLIENT_PERF_PRODUCE_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

typedef struct sl_perf_produce_opts {
  const char *target;     /* the owner broker of topic, host:port */
  const char *topic;      /* one partition or a non-partitioned topic */
  int producers;          /* 0 = 1 */
  int in_flight;          /* messages in flight per producer; 0 = 1 */
  int max_batch;          /* messages per SendBatch at most; 0 = 128 */
  size_t message_bytes;   /* payload size; 0 = 1024 */
  double seconds;         /* measuring time; 0 = 5 */
  double warmup_seconds;  /* not measured; 0 = none */
  /* Optional: called for every measured message with its latency, on the
   * producer's receiver thread (sluice-perf's live line and histogram). */
  void (*on_ack)(int64_t latency_ns, void *arg);
  void *on_ack_arg;
} sl_perf_produce_opts;

typedef struct sl_perf_produce_result {
  uint64_t acked;         /* messages acked in the measured time */
  uint64_t failed;        /* receipts with a status other than OK */
  double seconds;         /* measured time */
  double msgs_per_s;
  double p50_ms, p99_ms, p999_ms, max_ms;  /* send -> receipt */
} sl_perf_produce_result;

/* Runs the load (blocking). SL_OK with *out filled, or the first stream
 * error (err says which producer and why). */
sl_status sl_perf_produce_run(const sl_perf_produce_opts *opts,
                              sl_perf_produce_result *out, sl_err *err);

#endif
