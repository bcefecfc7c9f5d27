/*
 * Owner watch: follows the metadata service's OWNERSHIP watch (every
 * partition's owner key) and reports each change, so that a broker learns at
 * once when a partition it serves stops being its own while its session is
 * fine: DeleteTopic deletes the owner keys of every partition of the topic,
 * and nothing else would tell the owner before its next metadata write.
 *
 * One thread reads the stream. The first one asks for the current state
 * announced (announce_state): `reset` runs first, once the server has read
 * that state, and the state follows as changes; from then on every change
 * is reported. A broken stream is opened again after a backoff (100 ms
 * doubling to 2 s), from the last revision received, so no change is
 * missed while history lasts; events of that revision may come twice, and
 * every report carries the full new state, so a repeat is harmless. When
 * history is lost (the server's RESET) `reset` runs again and the current
 * state follows.
 *
 * Threads: changed and reset run on the watch thread, one at a time, in
 * store order (revisions never decrease). sl_owner_watch_stop may be called
 * from any other thread.
 * Lock: w->mu guards the stop flag and the stream in flight (for stop to
 * cancel it).
 */
#ifndef SL_BROKER_OWNER_WATCH_H
#define SL_BROKER_OWNER_WATCH_H

#include <stdint.h>

#include "common/rpc_client.h"
#include "common/status.h"

typedef struct sl_owner_watch sl_owner_watch;

typedef struct sl_owner_watch_opts {
  sl_rpc_channel *metadata; /* borrowed; must outlive the watch */
  /* partition's owner is now broker_id at epoch; broker_id NULL: the
   * partition has no owner (released, its session ended, or its topic
   * was deleted). Strings are valid during the call. */
  void (*changed)(void *arg, const char *partition, const char *broker_id, uint64_t epoch);
  /* The current state follows (the first stream, or history was lost):
   * every change after it will be reported. May be NULL. */
  void (*reset)(void *arg);
  void *arg;                /* retained until stop returns */
} sl_owner_watch_opts;

/* Starts the thread, which opens the stream at once. SL_EINVAL without a
 * channel or `changed`; SL_EINTERNAL if the thread cannot start. */
sl_status sl_owner_watch_start(const sl_owner_watch_opts *opts, sl_owner_watch **out,
                               sl_err *err);

/* Cancels the stream, joins the thread, frees. No callback runs after it
 * returns. NULL does nothing. */
void sl_owner_watch_stop(sl_owner_watch *w);

#endif
