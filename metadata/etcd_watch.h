/*
 * etcd watch over the JSON gateway: one long POST /v3/watch per watch,
 * read by a dedicated thread, resumed across disconnects.
 *
 * Design note
 *  - Each watch owns a thread, a curl multi handle and one easy handle. The
 *    stream is a chunked reply of newline-separated JSON objects; bytes are
 *    buffered until '\n' and each line is parsed with sl_etcd_parse_watch.
 *  - Invariants:
 *      1. Events reach the callback in revision order, each exactly once:
 *         after delivering a reply's events the thread sets
 *         next_rev = last event's mod_revision + 1, and every reconnect asks
 *         for start_revision = next_rev. etcd never splits one revision's
 *         events across replies, so a reply is the unit of progress.
 *      2. A watch started "from now" (start_revision 0) pins next_rev to the
 *         created reply's header revision + 1, so a later reconnect does not
 *         skip anything written after the start returned.
 *      3. The transfer has no CURLOPT_TIMEOUT (a watch may be idle for
 *         hours); TCP keep-alive notices a dead peer.
 *  - States: STARTING -> RUNNING (first "created" reply, signalled to
 *    sl_etcd_watch_start) -> DONE (compaction reported, or stop). A
 *    connection failure or an error line in RUNNING leads to a reconnect
 *    after backoff (25 ms doubling to 1 s) on the next endpoint, forever,
 *    until stop.
 *  - Compaction: if next_rev has been compacted, etcd cancels the watch with
 *    compact_revision. The callback gets that once and the watch is DONE;
 *    the caller re-reads and starts a new watch (see metadata/store.h).
 */
#ifndef SL_METADATA_ETCD_WATCH_H
#define SL_METADATA_ETCD_WATCH_H

#include "metadata/etcd.h"

typedef struct sl_etcd_watch sl_etcd_watch;

/*
 * Runs on the watch's own thread, never concurrently with itself.
 * Either events[0..n) (n >= 1, one etcd reply, borrowed for the call), or
 * n == 0 and compact_revision > 0: the requested history is gone, no more
 * calls will follow.
 */
typedef void (*sl_etcd_watch_cb)(void *arg, const sl_etcd_event *events,
                                 size_t n, int64_t compact_revision);

/*
 * Watches [key, range_end) (range_end NULL: just key) from start_revision
 * (0: from now). Returns once etcd confirmed the watch, or fails within the
 * client's timeout: SL_EUNAVAIL (unreachable), SL_ETIMEDOUT, or etcd's error.
 * `c` is retained until sl_etcd_watch_stop; `arg` is passed to cb. The
 * callback may run before this function returns.
 */
sl_status sl_etcd_watch_start(sl_etcd *c, const void *key, size_t key_len,
                              const void *range_end, size_t range_end_len,
                              int64_t start_revision, sl_etcd_watch_cb cb,
                              void *arg, sl_etcd_watch **out, sl_err *err);

/*
 * Stops the watch: closes the stream, joins the thread, frees w. After it
 * returns the callback runs no more. Must not be called from the callback.
 * NULL is a no-op.
 */
void sl_etcd_watch_stop(sl_etcd_watch *w);

#endif
