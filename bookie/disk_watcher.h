/*
 * Disk watcher: samples how full the bookie's disk is and turns the bookie
 * read-only before it fills up, writable again once space is freed.
 *
 * A thread samples every interval_ms (statvfs on `dir`). With hysteresis:
 *
 *   WRITABLE --(used >= high_pct)--> READONLY --(used < low_pct)--> WRITABLE
 *
 * Each transition calls on_change(readonly, arg) on the watcher thread, so the
 * owner can refuse adds and tell the metadata service. For tests (and for a
 * bookie given a quota on a shared disk), limit_bytes != 0 replaces statvfs:
 * total = limit_bytes, used = bytes allocated by the files under `dir`.
 *
 * Invariants
 *  1. The state changes only on the watcher thread, and on_change is called
 *     once per change, in order, never with the lock held.
 *  2. high_pct > low_pct, so the state cannot flap on one sample.
 *
 * Lock: w->mu guards the last sample, the state, the limit and the
 * check-now/stop requests. sl_disk_watcher_readonly reads an atomic flag.
 */
#ifndef SL_BOOKIE_DISK_WATCHER_H
#define SL_BOOKIE_DISK_WATCHER_H

#include <stdbool.h>
#include <stdint.h>

#include "common/status.h"

typedef void (*sl_disk_watcher_cb)(bool readonly, void *arg);

typedef struct sl_disk_watcher_opts {
  const char *dir;         /* borrowed for the call; watched directory */
  double high_pct;         /* read-only at or above this % used */
  double low_pct;          /* writable again below this % used */
  uint64_t limit_bytes;    /* 0: statvfs; else a quota (see above) */
  int interval_ms;         /* sampling period */
  sl_disk_watcher_cb on_change; /* may be NULL */
  void *arg;
} sl_disk_watcher_opts;

#define SL_DISK_WATCHER_OPTS_INIT                                          \
  {.dir = NULL, .high_pct = 95.0, .low_pct = 90.0, .limit_bytes = 0,       \
   .interval_ms = 1000, .on_change = NULL, .arg = NULL}

typedef struct sl_disk_usage {
  uint64_t total_bytes;
  uint64_t free_bytes; /* available to the bookie */
  double used_pct;
  bool readonly;
} sl_disk_usage;

typedef struct sl_disk_watcher sl_disk_watcher;

/*
 * Takes a first sample, sets the initial state from it (read-only if it is
 * at or above high_pct; on_change is not called for this initial state:
 * read sl_disk_watcher_readonly after start) and starts the thread.
 * Errors: SL_EINVAL (bad thresholds or interval), SL_EIO (the first sample
 * failed).
 */
sl_status sl_disk_watcher_start(const sl_disk_watcher_opts *opts,
                                sl_disk_watcher **out, sl_err *err);

/* True while read-only. Cheap; any thread. */
bool sl_disk_watcher_readonly(sl_disk_watcher *w);

/* The last sample. */
void sl_disk_watcher_usage(sl_disk_watcher *w, sl_disk_usage *out);

/* Asks the thread for a sample now and waits until it is taken (and any
 * on_change it causes has returned). Not from inside on_change. */
void sl_disk_watcher_check_now(sl_disk_watcher *w);

/* Changes limit_bytes (0 switches to statvfs). Takes effect at the next
 * sample; call sl_disk_watcher_check_now to apply it at once. */
void sl_disk_watcher_set_limit(sl_disk_watcher *w, uint64_t limit_bytes);

/* Stops and joins the thread, frees w. NULL does nothing. */
void sl_disk_watcher_stop(sl_disk_watcher *w);

#endif
