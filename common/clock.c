#include "common/clock.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static int64_t read_ns(clockid_t id, const char *name) {
  struct timespec ts;
  if (clock_gettime(id, &ts) != 0) {
    fprintf(stderr, "level=fatal event=clock_gettime_failed clock=%s\n", name);
    abort();
  }
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t sl_clock_mono_ns(void) {
  return read_ns(CLOCK_MONOTONIC, "monotonic");
}

int64_t sl_clock_mono_ms(void) { return sl_clock_mono_ns() / 1000000; }

int64_t sl_clock_wall_ms(void) {
  return read_ns(CLOCK_REALTIME, "realtime") / 1000000;
}

struct timespec sl_clock_deadline(clockid_t clock, int64_t ns) {
  int64_t at = read_ns(clock, clock == CLOCK_MONOTONIC ? "monotonic" : "realtime") +
               (ns > 0 ? ns : 0);
  return (struct timespec){.tv_sec = (time_t)(at / 1000000000), .tv_nsec = (long)(at % 1000000000)};
}
