/*
 * Asynchronous client streams: every shape (server, client and bidi
 * streaming), callbacks instead of threads.
 *
 * A stream is a handle (libuv's sense): open, send/close_send/cancel, and
 * callbacks until on_done; its memory lives until the last reference is
 * dropped, and then on_release frees the user's state.
 *
 * Threads (see serial.h for the model)
 *   Every callback of a stream is posted on its serial (opts->serial, or a
 *   private one), so callbacks of one stream never overlap, and they never
 *   overlap anything else posted on that serial (the user's timers and own
 *   posts). gRPC completions are taken by the channel's completion thread;
 *   if the serial is idle the callback runs right there, so callbacks must
 *   not block. send, send_packed, close_send, pause/resume, cancel, ref and
 *   unref may be called from any thread, also from inside callbacks.
 *
 * Invariants
 *   1. on_done runs exactly once, last: no on_message or on_writable of the
 *      stream runs after it, and on_done itself never runs while a callback
 *      of the same serial is running (it is posted like the others).
 *   2. on_message runs in the order the server sent, one message at a time;
 *      the next message is not read from gRPC until on_message returned
 *      (and reads are not paused), so a slow consumer pushes back on the
 *      server through HTTP/2 flow control instead of growing our memory.
 *   3. Sends go out in the order send returned SL_OK. At most
 *      send_queue_max messages are queued (the one being written included);
 *      a send that finds the queue full returns SL_EBUSY, queues nothing,
 *      and on_writable then runs once, when the queue has drained to half.
 *   4. After cancel() returns, no on_message or on_writable begins (one
 *      already running finishes), and on_done gets SL_ECANCELED unless the
 *      stream had already ended otherwise.
 *   5. The stream holds references on its serial and keeps its channel's
 *      completion thread polling until on_done has run. The channel must
 *      outlive its streams' on_done (sl_rpc_channel_destroy cancels open
 *      streams and waits for their on_done).
 *   6. on_release runs once, at the last unref, on the thread that dropped
 *      it (may be the completion thread or the serial's drainer), after
 *      on_done; nothing of the stream is used after it.
 *
 * Final status given to on_done: SL_OK (the server finished with OK), the
 * server's sl_status (carried in trailing metadata, or mapped from the gRPC
 * code), or local: SL_ECANCELED (cancel), SL_ETIMEDOUT (opts->timeout_ms
 * passed), SL_EUNAVAIL (no connection; keepalive found the peer dead),
 * SL_EINTERNAL (the server sent a message we cannot decode; the stream is
 * cancelled).
 */
#ifndef SL_COMMON_RPC_ASTREAM_H
#define SL_COMMON_RPC_ASTREAM_H

#include "common/rpc_client.h"

typedef struct sl_rpc_astream sl_rpc_astream;

/* Callbacks of one stream; all posted on its serial; any may be NULL. */
typedef struct sl_rpc_astream_handler {
  /* One response message, borrowed (valid during the callback only). */
  void (*on_message)(sl_rpc_astream *s, const ProtobufCMessage *msg, void *arg);
  /* The send queue was full (send returned SL_EBUSY) and has room again. */
  void (*on_writable)(sl_rpc_astream *s, void *arg);
  /* Exactly once: the stream is over (see the statuses above). details is
   * borrowed ("" for SL_OK). */
  void (*on_done)(sl_rpc_astream *s, sl_status st, const char *details, void *arg);
  /* Runs at the last unref: free user state here (never races a ref). */
  void (*on_release)(void *arg);
} sl_rpc_astream_handler;

/* Opens a stream of method m. For server-streaming methods `first` is the
 * request (packed before return); for client/bidi it must be NULL. (A unary
 * method with `first` as its request also works: one on_message, then
 * on_done; sl_rpc_unary_start() is built on that.) `h` is copied; `arg` is retained until on_release.
 * opts may be NULL (no deadline, private serial, queue of 64). *out holds
 * one reference owned by the caller. On failure no callback runs. */
sl_status sl_rpc_astream_open(sl_rpc_channel *ch, const sl_rpc_method *m,
                              const ProtobufCMessage *first,
                              const sl_rpc_call_opts *opts,
                              const sl_rpc_astream_handler *h, void *arg,
                              sl_rpc_astream **out, sl_err *err);

/* Queues one message (packed now; msg borrowed). SL_OK: queued.
 * SL_EBUSY: queue full, nothing queued, on_writable follows (invariant 3).
 * SL_ECANCELED: the stream is over or the send side closed. SL_EINVAL: not
 * the method's request type, or a server-streaming method. SL_ETOOBIG:
 * over the channel's message limit. */
sl_status sl_rpc_astream_send(sl_rpc_astream *s, const ProtobufCMessage *msg);
/* As send, with bytes packed once by sl_rpc_pack() (not copied): the
 * stream holds its own reference to the bytes for as long as it needs them,
 * and the caller keeps its reference on p (it may drop it at once). */
sl_status sl_rpc_astream_send_packed(sl_rpc_astream *s, sl_rpc_packed *p);
/* Half-closes after every queued message. SL_ECANCELED if over or already
 * closed; SL_OK (no-op) for server streaming. */
sl_status sl_rpc_astream_close_send(sl_rpc_astream *s);

/* Stops reading after the current message (invariant 2) until resume.
 * While paused, a server's end of stream is not seen either (gRPC reports
 * the status only once reads are drained), but cancel and deadlines are. */
void sl_rpc_astream_pause_reads(sl_rpc_astream *s);
void sl_rpc_astream_resume_reads(sl_rpc_astream *s);

/* Any thread, any number of times; on_done still runs exactly once. */
void sl_rpc_astream_cancel(sl_rpc_astream *s);

/* Messages queued and not yet taken by gRPC (the one being written
 * included). */
size_t sl_rpc_astream_queue_len(const sl_rpc_astream *s);

void sl_rpc_astream_ref(sl_rpc_astream *s);
void sl_rpc_astream_unref(sl_rpc_astream *s); /* NULL is a no-op */

#endif
