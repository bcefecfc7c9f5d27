/*
 * One-shot timers whose callbacks are posted on a serial (serial.h).
 *
 * Batch delays, ack timeouts, retries and the like. An sl_timer is a
 * caller-owned handle (libuv style): init once, start/stop any number of
 * times, and the memory may be freed or reused as soon as sl_timer_stop()
 * has returned (or the callback has begun) — no release call is needed.
 *
 * Where timers fire: one process-wide timer thread, started on first use,
 * waits for the earliest deadline and then posts the callback on the timer's
 * serial. If that serial is idle the callback runs on the timer thread
 * itself (serial.h invariant 2), so callbacks must not block.
 *
 * Invariants
 *   1. fn runs at most once per start, never before delay_ms has passed,
 *      and always through the timer's serial.
 *   2. A timer stopped (or re-started) before fn began never runs that fn,
 *      even if its deadline passed and the post was already on its way: the
 *      posted item checks, under the timer lock, that it is still the
 *      current arming. So stop from inside the timer's serial is exact.
 *   3. While armed (started, not yet fired or stopped) the timer holds a
 *      reference on its serial.
 *   4. start, stop and the firing path are safe from any thread against each
 *      other; a timer must not be started concurrently with itself from two
 *      threads without the caller's own ordering (start/stop are atomic with
 *      respect to each other, but "which start wins" is then up to them).
 */
#ifndef SL_COMMON_TIMER_H
#define SL_COMMON_TIMER_H

#include <stdbool.h>
#include <stdint.h>

#include "common/serial.h"

typedef struct sl_timer_arm sl_timer_arm; /* internal: one arming */

typedef struct sl_timer {
  sl_serial *serial;    /* retained while armed (invariant 3) */
  void (*fn)(void *arg);
  void *arg;
  sl_timer_arm *arm;    /* current arming or NULL; under the timer lock */
} sl_timer;

/* Prepares a stopped timer. `serial` must be alive whenever the timer is
 * started (the timer then holds its own reference). */
void sl_timer_init(sl_timer *t, sl_serial *serial, void (*fn)(void *arg), void *arg);

/* Arms the timer to fire after delay_ms (<= 0: as soon as possible); if it
 * was armed, the old arming is dropped first (as sl_timer_stop). Aborts the
 * process if memory for the arming runs out. Any thread. */
void sl_timer_start(sl_timer *t, int64_t delay_ms);

/* Disarms. True if it was armed and fn will now not run for that arming;
 * false if it was not armed or fn has already begun. Any thread. */
bool sl_timer_stop(sl_timer *t);

/* True while armed. */
bool sl_timer_active(sl_timer *t);

#endif
