/*
 * The host's CPU time split, read from /proc/stat around a benchmark run.
 * On a shared VM the hypervisor's steal time moves tail latency more than
 * anything in the system under test (a 20 s e2e run's p99 went from 15.6 ms
 * at 3.6% steal to 34.6 ms at 9.8%), so every figure is printed with it.
 */
#ifndef SL_CLIENT_HOST_CPU_H
#define SL_CLIENT_HOST_CPU_H

#include <stdbool.h>
#include <stdint.h>

/* Cumulative ticks of all CPUs. */
typedef struct sl_host_cpu {
  uint64_t busy;  /* user, nice, system, irq, softirq */
  uint64_t idle;  /* idle, iowait */
  uint64_t steal;
  int cpus;       /* "cpuN" lines */
} sl_host_cpu;

/* Shares of the time between two samples, in percent (they sum to 100). */
typedef struct sl_host_cpu_split {
  double busy_pct, idle_pct, steal_pct;
} sl_host_cpu_split;

/* Parses /proc/stat's text. False when its "cpu" line is missing or short. */
bool sl_host_cpu_parse(const char *text, sl_host_cpu *out);

/* Reads /proc/stat. False where there is none (not Linux) or it is unreadable. */
bool sl_host_cpu_read(sl_host_cpu *out);

/* False when no tick passed between a and b or b is older than a. */
bool sl_host_cpu_split_of(const sl_host_cpu *a, const sl_host_cpu *b, sl_host_cpu_split *out);

#endif
