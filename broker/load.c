/* Design note: see load.h. */
#include "broker/load.h"

#include <time.h>
#include <unistd.h>

#define MIN_INTERVAL_NS 10000000LL

static int64_t now_ns(clockid_t clock) {
  struct timespec ts;
  clock_gettime(clock, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

void sl_load_sampler_init(sl_load_sampler *s) {
  s->cpu_ns = now_ns(CLOCK_PROCESS_CPUTIME_ID);
  s->wall_ns = now_ns(CLOCK_MONOTONIC);
  s->last = 0;
}

uint32_t sl_load_sample(sl_load_sampler *s) {
  int64_t cpu = now_ns(CLOCK_PROCESS_CPUTIME_ID), wall = now_ns(CLOCK_MONOTONIC);
  int64_t dwall = wall - s->wall_ns;
  if (dwall < MIN_INTERVAL_NS) return s->last;
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  if (cores < 1) cores = 1;
  double permille = (double)(cpu - s->cpu_ns) * 1000.0 / ((double)dwall * (double)cores);
  s->cpu_ns = cpu;
  s->wall_ns = wall;
  s->last = permille <= 0 ? 0 : permille >= 1000 ? 1000 : (uint32_t)(permille + 0.5);
  return s->last;
}
