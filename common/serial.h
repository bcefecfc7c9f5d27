/*
 * Serial executors ("strands", "combiners"): run posted work one item at a
 * time, in post order, on whichever thread happens to be delivering.
 *
 * Threading model of Sluice's async code (the manual; rpc_astream.h and
 * timer.h refer here)
 *   There is no event-loop thread that user code lives on. Work reaches a
 *   module through three kinds of callbacks:
 *     - RPC completions (async stream on_message/on_writable/on_done, async
 *       unary callbacks): produced on a channel's completion thread;
 *     - timers (timer.h): produced on the process-wide timer thread;
 *     - work the module posts itself (sl_serial_post) from any thread.
 *   Each is *posted on a serial* chosen by the user (sl_rpc_call_opts.serial,
 *   sl_timer_init's serial), never called directly. So everything posted on
 *   one serial, whatever produced it, runs one at a time and in post order:
 *   a ledger writer that gives its streams, its timers and its own posts the
 *   same serial needs no lock for the state those callbacks share.
 *   As in libuv, long-lived objects (streams, timers) are handles with
 *   start/stop/close, and a handle's memory must stay valid until its final
 *   callback (on_release for streams; sl_timer_stop returning for timers).
 *
 * Invariants
 *   1. Two items of one serial never run at the same time, and they run in
 *      the order their posts returned (posts racing on two threads are
 *      ordered by whichever took the lock first).
 *   2. sl_serial_post() runs the item before returning, on the caller's
 *      thread, when the serial is idle; otherwise it queues it and returns
 *      at once, and the thread already draining runs it. So a poster must
 *      not hold a lock that any item of that serial takes, and an item must
 *      never block (wait on a condition, do blocking I/O, fsync): it would
 *      stall every other item of the serial and the completion or timer
 *      thread that is draining it.
 *   3. An item posted from inside an item of the same serial runs after the
 *      current item returns (never nested), still in post order.
 *   4. The drainer holds a reference, so an item may drop the last outside
 *      reference to its own serial.
 *
 * Memory: a post allocates nothing while the queue's ring has room; the ring
 * grows by doubling and aborts the process if memory runs out (a post has no
 * way to fail, and losing a callback would break the callers' contracts).
 */
#ifndef SL_COMMON_SERIAL_H
#define SL_COMMON_SERIAL_H

#include <stdbool.h>

#include "common/status.h"

typedef struct sl_serial sl_serial;

/* A new serial with one reference owned by the caller. */
sl_status sl_serial_create(sl_serial **out, sl_err *err);

/* Runs fn(arg) serially with every other item of `s` (invariants 1-3).
 * Any thread. `arg` is retained until fn has run. */
void sl_serial_post(sl_serial *s, void (*fn)(void *arg), void *arg);

/* True while the calling thread is running an item of `s` (for asserts). */
bool sl_serial_running_here(const sl_serial *s);

/* Reference counting, any thread. The last unref frees the serial; items
 * still queued then are run first by the draining thread (invariant 4), so
 * nothing posted is ever dropped. NULL is a no-op for unref. */
void sl_serial_ref(sl_serial *s);
void sl_serial_unref(sl_serial *s);

#endif
