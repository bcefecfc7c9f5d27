/*
 * Broker load: how busy this broker process is, as the load_permille it
 * reports in its registration (0 idle .. 1000 every core busy). Brokers
 * place new partitions on the least loaded live broker (ownership.h,
 * invariant 4), so the figure must follow real work: it is the process's
 * CPU time over the wall time since the previous sample, divided by the
 * cores online. CPU covers everything the broker does for its partitions
 * (gRPC, packing, checksums, dispatch) without a per-message counter.
 *
 * Threads: a sampler is owned by one thread (the session thread); the
 * functions are not thread-safe for one sampler.
 */
#ifndef SL_BROKER_LOAD_H
#define SL_BROKER_LOAD_H

#include <stdint.h>

typedef struct sl_load_sampler {
  int64_t cpu_ns;   /* process CPU time at the last sample */
  int64_t wall_ns;  /* monotonic time at the last sample */
  uint32_t last;    /* the last figure returned */
} sl_load_sampler;

/* Starts a sampler now (the first sample covers the time from here). */
void sl_load_sampler_init(sl_load_sampler *s);

/* The load since the previous sample (or init), 0..1000, and starts the
 * next interval. An interval shorter than 10 ms is too noisy to mean
 * anything: it returns the previous figure and keeps the interval open. */
uint32_t sl_load_sample(sl_load_sampler *s);

#endif
