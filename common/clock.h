/*
 * Clocks: the one place Sluice reads the time.
 *
 * Use the monotonic clock for every duration, timeout and deadline: it never
 * jumps when the wall clock is set (NTP, an operator). Use the wall clock
 * only for timestamps that leave the process (publish times, log lines,
 * etcd-visible fields), never to measure an interval.
 *
 * All three are safe to call from any thread and cannot fail on Linux
 * (clock_gettime on CLOCK_MONOTONIC and CLOCK_REALTIME is always supported);
 * should it ever fail, they abort with a clear message rather than return a
 * time that would silently break timeouts.
 */
#ifndef SL_COMMON_CLOCK_H
#define SL_COMMON_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Milliseconds on CLOCK_MONOTONIC since an arbitrary fixed point (boot). */
int64_t sl_clock_mono_ms(void);

/* Nanoseconds on CLOCK_MONOTONIC, for latency measurements. */
int64_t sl_clock_mono_ns(void);

/* Milliseconds since the Unix epoch on CLOCK_REALTIME. May jump. */
int64_t sl_clock_wall_ms(void);

/* The absolute time ns nanoseconds from now on `clock` (CLOCK_MONOTONIC or
 * CLOCK_REALTIME), for pthread_cond_timedwait: pass the clock the
 * condition variable was made with. ns <= 0 is now. */
struct timespec sl_clock_deadline(clockid_t clock, int64_t ns);

#endif
