/*
 * The core of `sluice-perf e2e` (issue 10, benchmark): producers publish at
 * a fixed rate (or as fast as their window allows) while consumers on one
 * subscription receive and ack, and every message is timed from its send
 * to its receive. The send time travels in the payload (monotonic clock,
 * so producers and consumers are in this process). At a fixed rate the
 * time stamped is the time the message was due, not the time it went
 * out, so a stalled sender shows up as latency instead of hiding it
 * (coordinated omission).
 *
 * A fixed-rate sender wakes at most once per pace_us and sends every
 * message due by then, each stamped with its own due time, so the wait for
 * the wakeup is in the latency. Waking once per message costs the load
 * generator about 15% of a core at 5k msgs/s, on the CPUs the cluster
 * under test shares in a single-host run (Kafka's perf tool likewise
 * sleeps only when 2 ms or more ahead).
 *
 * Then, optionally, the catch-up read: a new subscription reads the topic
 * from its oldest message while nothing is published, and the rate it
 * receives this run's messages at is reported in MB/s. It reads whatever
 * the topic held before the run too (use a fresh topic for a clean figure),
 * and its subscription ("<subscription>-catchup-<n>") stays behind. With a backlog
 * larger than the broker's entry cache, that is the rate of range reads
 * from bookies.
 *
 * The host's CPU split (busy, idle, hypervisor steal) over the measured
 * time comes with the figures: on a shared VM, steal decides the tail.
 *
 * Threads: one sender per producer, one receiver per consumer, plus the
 * caller's, which paces the run. on_latency runs on receiver threads.
 */
#ifndef SL_CLIENT_PERF_E2E_H
#define SL_CLIENT_PERF_E2E_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "client/host_cpu.h"
#include "client/sluice.h"
#include "common/status.h"

typedef struct sl_perf_e2e_opts {
  sl_client *client;        /* borrowed for the run */
  const char *topic;        /* "ns/topic"; must exist */
  double rate;              /* messages/s over all producers; 0 = max */
  size_t message_bytes;     /* payload size; 0 = 1024; at least 24 */
  int producers;            /* 0 = 1 */
  int consumers;            /* 0 = 1; more than one share the subscription */
  int in_flight;            /* unacked sends per producer; 0 = 256 */
  int batch_delay_us;       /* producers' batch_delay_us (sl_producer_opts) */
  int pace_us;              /* fixed rate: wake at most this often (above);
                               0 = SL_PERF_E2E_PACE_US, < 0 = per message,
                               at most 1000000 */
  double seconds;           /* measured time; 0 = 10 */
  double warmup_seconds;    /* published and received, not measured */
  const char *subscription; /* NULL = "perf-e2e" */
  bool catch_up;            /* then read the run's messages back (above) */
  /* Optional: every measured latency, on a receiver thread. */
  void (*on_latency)(int64_t latency_ns, void *arg);
  void *arg;
} sl_perf_e2e_opts;

typedef struct sl_perf_e2e_result {
  uint64_t sent;            /* measured sends accepted by the producer */
  uint64_t acked;           /* of which durable */
  uint64_t failed;          /* of which failed */
  uint64_t received;        /* measured messages received */
  double seconds;           /* measured time */
  double msgs_per_s;        /* received / seconds */
  double p50_ms, p99_ms, p999_ms, max_ms; /* send -> receive */
  double pub_p50_ms, pub_p99_ms; /* send -> durable receipt (the part
                                    that is the publish) */
  uint64_t catchup_msgs;    /* this run's messages read back */
  double catchup_seconds;
  double catchup_mb_per_s;  /* payload MB (1e6 bytes) per second */
  bool host_known;          /* host_cpu holds the measured time's split */
  sl_host_cpu_split host_cpu;
  int host_cpus;
} sl_perf_e2e_result;

#define SL_PERF_E2E_PACE_US 1000
#define SL_PERF_E2E_OPTS_INIT {.client = NULL, .topic = NULL, .rate = 0}

/* Runs the benchmark (blocking). SL_OK with *out filled, SL_EINVAL for bad
 * options, or the first producer/consumer error (err says which). A run
 * where fewer messages arrive than were acked fails with SL_EIO after a
 * drain of 10 s (lost messages are a bug, not a figure). */
sl_status sl_perf_e2e_run(const sl_perf_e2e_opts *opts,
                          sl_perf_e2e_result *out, sl_err *err);

#endif
