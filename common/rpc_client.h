/*
 * RPC client runtime over gRPC core.
 *
 * A channel is thread-safe and long-lived. Calls are
 *   - unary, blocking: sl_rpc_unary();
 *   - unary, asynchronous: sl_rpc_unary_async(); the callback runs on the
 *     channel's own completion thread (started on first use), so many calls
 *     can be in flight from one thread;
 *   - streams of any shape: sl_rpc_stream_*(), blocking, with one completion
 *     queue per stream. One thread may send while another receives.
 * Responses are heap messages the caller frees with
 * protobuf_c_message_free_unpacked(msg, NULL).
 */
#ifndef SL_COMMON_RPC_CLIENT_H
#define SL_COMMON_RPC_CLIENT_H

#include <stdbool.h>

#include "common/rpc.h"
#include "common/status.h"

typedef struct sl_rpc_channel sl_rpc_channel;
typedef struct sl_rpc_stream sl_rpc_stream;

typedef struct sl_rpc_channel_opts {
  const char *target;          /* "127.0.0.1:7000" */
  const char *tls_root_pem;    /* NULL = plaintext */
  const char *tls_cert_pem;    /* client cert for mutual TLS, or NULL */
  const char *tls_key_pem;
  size_t max_message_bytes;    /* 0 = SL_RPC_DEFAULT_MAX_MESSAGE */
  const char *authorization;   /* sent as "authorization" metadata on every
                                  call unless the call overrides it; copied */
} sl_rpc_channel_opts;

typedef struct sl_rpc_call_opts {
  int timeout_ms;              /* 0 = no deadline for streams, 10 s for unary */
  const char *authorization;   /* overrides the channel's token; borrowed */
  bool wait_for_ready;         /* wait for the channel to connect instead of
                                  failing fast with UNAVAILABLE */
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

/* Completion of an async unary call: runs on the channel's completion
 * thread. `resp` is transferred to the callback (NULL unless st == SL_OK);
 * `details` is borrowed, valid during the callback. */
typedef void (*sl_rpc_unary_cb)(sl_status st, const char *details,
                                ProtobufCMessage *resp, void *arg);

/* Starts an async unary call; `req` is packed before return. */
sl_status sl_rpc_unary_async(sl_rpc_channel *ch, const sl_rpc_method *m,
                             const ProtobufCMessage *req,
                             const sl_rpc_call_opts *opts, sl_rpc_unary_cb cb,
                             void *arg, sl_err *err);

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
