/*
 * RPC client runtime over gRPC core.
 *
 * A channel is thread-safe and long-lived. Calls are
 *   - unary, blocking: sl_rpc_unary();
 *   - unary, asynchronous: sl_rpc_unary_start() (cancellable, with a handle)
 *     or sl_rpc_unary_async() (fire and forget); the callback is posted on
 *     opts->serial, by default a private one, so it runs on the channel's
 *     own completion thread (started on first use). Many calls can be in
 *     flight from one thread;
 *   - streams of any shape, asynchronous: sl_rpc_astream_*() (rpc_astream.h),
 *     callbacks on a serial, no thread per stream. The threading model is
 *     written down in serial.h;
 *   - streams of any shape, blocking: sl_rpc_stream_*(), with one completion
 *     queue per stream. One thread may send while another receives.
 * Responses are heap messages the caller frees with
 * protobuf_c_message_free_unpacked(msg, NULL).
 *
 * Targets: "host:port", "host:port,host:port,..." (numeric IPv4 or IPv6
 * addresses, e.g. "127.0.0.1:7000,127.0.0.1:7001" or "[::1]:7000,[::1]:7001"),
 * a DNS name (every address it resolves to is used), or any gRPC URI
 * ("dns:///...", "ipv4:...", "unix:..."). Several addresses are balanced by
 * opts.lb_policy (pick_first by default: one connection, the next address
 * when it fails).
 *
 * Keepalive is on by default: the channel pings every keepalive_time_ms and
 * a peer that does not answer within keepalive_timeout_ms (a cut cable, a
 * frozen process) fails every call on that connection with SL_EUNAVAIL.
 * Our servers accept pings that often (rpc_server.h).
 */
#ifndef SL_COMMON_RPC_CLIENT_H
#define SL_COMMON_RPC_CLIENT_H

#include <stdbool.h>

#include <grpc/grpc.h>

#include "common/rpc.h"
#include "common/serial.h"
#include "common/status.h"

typedef struct sl_rpc_channel sl_rpc_channel;
typedef struct sl_rpc_stream sl_rpc_stream;
typedef struct sl_rpc_ucall sl_rpc_ucall;
typedef struct sl_rpc_packed sl_rpc_packed;


typedef struct sl_rpc_channel_opts {
  const char *target;          /* "127.0.0.1:7000" */
  const char *tls_root_pem;    /* NULL = plaintext */
  const char *tls_cert_pem;    /* client cert for mutual TLS, or NULL */
  const char *tls_key_pem;
  size_t max_message_bytes;    /* 0 = SL_RPC_DEFAULT_MAX_MESSAGE */
  const char *authorization;   /* sent as "authorization" metadata on every
                                  call unless the call overrides it; copied */
  int keepalive_time_ms;       /* 0 = SL_RPC_KEEPALIVE_TIME_MS; < 0 = off;
                                  at least SL_RPC_MIN_PING_INTERVAL_MS
                                  (smaller values are raised to it) */
  int keepalive_timeout_ms;    /* 0 = SL_RPC_KEEPALIVE_TIMEOUT_MS */
  const char *lb_policy;       /* "pick_first" (NULL) or "round_robin" */
  const grpc_channel_args *extra_args; /* passed through to gRPC after ours
                                  (a key given twice: gRPC takes the first
                                  one, so ours win); borrowed, copied */
} sl_rpc_channel_opts;

typedef struct sl_rpc_call_opts {
  int timeout_ms;              /* deadline: 0 = none for streams, 10 s for
                                  unary */
  const char *authorization;   /* overrides the channel's token; borrowed */
  bool wait_for_ready;         /* wait for the channel to connect instead of
                                  failing fast with UNAVAILABLE */
  sl_serial *serial;           /* async calls: callbacks are posted on it
                                  (retained by the call); NULL = a private
                                  serial per call */
  size_t send_queue_max;       /* async streams: queued sends, 0 = 64 */
} sl_rpc_call_opts;

sl_status sl_rpc_channel_create(const sl_rpc_channel_opts *opts,
                                sl_rpc_channel **out, sl_err *err);
/* Cancels async calls still in flight (their callbacks run with
 * SL_ECANCELED), joins the completion thread, frees. Destroy the channel's
 * streams first, and do not call from an async callback. NULL is a no-op. */
void sl_rpc_channel_destroy(sl_rpc_channel *ch);

/* Blocking unary call. On SL_OK *resp is a heap message. On failure err
 * holds the server's status details (or a local reason). opts may be NULL. */
sl_status sl_rpc_unary(sl_rpc_channel *ch, const sl_rpc_method *m,
                       const ProtobufCMessage *req, ProtobufCMessage **resp,
                       const sl_rpc_call_opts *opts, sl_err *err);

/* Completion of an async unary call: posted on opts->serial, or on a
 * private serial (then it runs on the channel's completion thread). `resp` is transferred to the callback (NULL unless st == SL_OK);
 * `details` is borrowed, valid during the callback. */
typedef void (*sl_rpc_unary_cb)(sl_status st, const char *details,
                                ProtobufCMessage *resp, void *arg);

/* sl_rpc_unary_start() without a handle. */
sl_status sl_rpc_unary_async(sl_rpc_channel *ch, const sl_rpc_method *m,
                             const ProtobufCMessage *req,
                             const sl_rpc_call_opts *opts, sl_rpc_unary_cb cb,
                             void *arg, sl_err *err);

/* Starts a cancellable async unary call; `req` is packed before return.
 * cb runs exactly once, posted on opts->serial (or a private serial), with
 * SL_ECANCELED if sl_rpc_ucall_cancel() won the race. If out is non-NULL it
 * receives one reference the caller drops with sl_rpc_ucall_unref() (at
 * any time, also before cb ran; the call goes on). */
sl_status sl_rpc_unary_start(sl_rpc_channel *ch, const sl_rpc_method *m,
                             const ProtobufCMessage *req,
                             const sl_rpc_call_opts *opts, sl_rpc_unary_cb cb,
                             void *arg, sl_rpc_ucall **out, sl_err *err);
/* Any thread; a no-op once the call is over. */
void sl_rpc_ucall_cancel(sl_rpc_ucall *c);
void sl_rpc_ucall_unref(sl_rpc_ucall *c);

/* ---- pack once, send many ---- */

/* Serializes `msg` once (SL_ETOOBIG if over max_bytes; 0 = no limit) into
 * an immutable, refcounted, thread-safe packed message that any number of
 * streams can send (sl_rpc_astream_send_packed) without copying the bytes.
 * *out holds one reference. */
sl_status sl_rpc_pack(const ProtobufCMessage *msg, size_t max_bytes,
                      sl_rpc_packed **out, sl_err *err);
void sl_rpc_packed_ref(sl_rpc_packed *p);
void sl_rpc_packed_unref(sl_rpc_packed *p); /* NULL is a no-op */
size_t sl_rpc_packed_size(const sl_rpc_packed *p);
/* The descriptor of the message that was packed (for type checks). */
const ProtobufCMessageDescriptor *sl_rpc_packed_type(const sl_rpc_packed *p);

/* Opens a stream. For server-streaming methods `first` is the one request
 * (required); for client/bidi methods it must be NULL. */
sl_status sl_rpc_stream_open(sl_rpc_channel *ch, const sl_rpc_method *m,
                             const ProtobufCMessage *first,
                             const sl_rpc_call_opts *opts, sl_rpc_stream **out,
                             sl_err *err);

/* Sends one message and waits until gRPC has taken it (flow control may
 * block here: that is back-pressure). timeout_ms <= 0 waits forever.
 * SL_ETIMEDOUT: not taken in time; the stream is then cancelled (the
 * message may or may not have gone out). If the stream is already over,
 * returns its final status when known, else SL_ECANCELED: gRPC hands the
 * final status only to the receiving side, so sl_rpc_stream_recv() tells
 * why. Not for server-streaming methods. One sender thread at a time. */
sl_status sl_rpc_stream_send(sl_rpc_stream *s, const ProtobufCMessage *msg,
                             int timeout_ms, sl_err *err);

/* Half-closes the sending side (a no-op for server streaming). If the
 * stream is already over: as for sl_rpc_stream_send(). */
sl_status sl_rpc_stream_close_send(sl_rpc_stream *s, sl_err *err);

/* Receives the next message. SL_OK with *msg set: a message (heap, caller
 * frees). SL_OK with *msg == NULL: the server ended the stream with OK.
 * Any other status: the stream's final status (err has the details), or
 * SL_ETIMEDOUT if timeout_ms (> 0) passed with no message; the stream stays
 * usable after a receive timeout. One receiver thread at a time. */
sl_status sl_rpc_stream_recv(sl_rpc_stream *s, ProtobufCMessage **msg,
                             int timeout_ms, sl_err *err);

/* Cancels the stream from any thread; blocked send/recv return
 * SL_ECANCELED. */
void sl_rpc_stream_cancel(sl_rpc_stream *s);

/* Cancels if still open, waits for outstanding operations, frees. No other
 * thread may be using the stream. NULL is a no-op. */
void sl_rpc_stream_destroy(sl_rpc_stream *s);

#endif
