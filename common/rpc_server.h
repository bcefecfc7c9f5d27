/*
 * RPC server runtime over gRPC core.
 *
 * N worker threads, each polling its own completion queue. Every registered
 * method keeps several requests posted on every queue; one generic request
 * per queue answers unknown methods with UNIMPLEMENTED. Every server also
 * serves grpc.health.v1.Health (Check and Watch).
 *
 * Threads: every handler callback for one call runs on the worker thread of
 * that call's queue, never two at once for the same call. sl_rpc_call_send,
 * sl_rpc_call_finish, sl_rpc_call_ref/unref and sl_rpc_call_resume_reads may
 * be called from any thread.
 *
 * Lifetime of a call: the runtime holds one reference until on_done has run.
 * A handler that answers from another thread (e.g. after a journal fsync)
 * takes a reference with sl_rpc_call_ref() and drops it when done. Memory
 * from sl_rpc_call_alloc() lives until the last reference is dropped, and
 * the destructor from sl_rpc_call_set_user_destroy() runs then.
 *
 * Keepalive: servers accept HTTP/2 pings from clients every
 * SL_RPC_MIN_PING_INTERVAL_MS (rpc_client.h), also without calls in flight,
 * and never answer frequent pings with GOAWAY, so clients' keepalive
 * (on by default) works against every Sluice server.
 *
 * Writes: each call has a bounded write queue (opts.write_queue_max
 * messages). sl_rpc_call_send() returns SL_EBUSY when it is full; the
 * handler's on_writable then runs once the queue has room again. This is how
 * a slow reader pushes back instead of growing our memory.
 */
#ifndef SL_COMMON_RPC_SERVER_H
#define SL_COMMON_RPC_SERVER_H

#include <stdbool.h>
#include <stdint.h>

#include "common/auth.h"
#include "common/rpc.h"
#include "common/status.h"

typedef struct sl_rpc_server sl_rpc_server;
typedef struct sl_rpc_call sl_rpc_call;

typedef struct sl_rpc_server_opts {
  const char *addr;          /* "127.0.0.1:0" picks a free port */
  int n_threads;             /* worker threads, one completion queue each;
                                0 = 2 */
  size_t max_message_bytes;  /* 0 = SL_RPC_DEFAULT_MAX_MESSAGE */
  size_t write_queue_max;    /* per-call queued sends, 0 = 64 */
  int shutdown_grace_ms;     /* wait this long for calls, then cancel; 0 = 500 */
  const char *tls_cert_pem;  /* PEM text; NULL = plaintext */
  const char *tls_key_pem;
  const char *tls_client_ca_pem; /* non-NULL: require and verify client certs */
  /* Token authentication (common/auth.h); retained until destroy. NULL =
   * off. When set, every call but grpc.health.v1 (probes carry no token)
   * must carry a valid token, else it ends UNAUTHENTICATED before any
   * handler runs; sl_rpc_call_role() then names the caller. */
  const sl_auth *auth;
  /* With auth: every call but health needs a super-user role, else
   * PERMISSION_DENIED. For the internal services (metadata, bookie), whose
   * only callers are other services and operators. */
  bool superuser_only;
} sl_rpc_server_opts;

/* Callbacks for one method. Any may be NULL except on_start. */
typedef struct sl_rpc_handler {
  /* A new call. Unary and server-streaming calls get the decoded request
   * (borrowed, valid until the call is released); client- and
   * bidi-streaming calls get req == NULL and then on_message per message. */
  void (*on_start)(sl_rpc_call *call, const ProtobufCMessage *req, void *ctx);
  /* Client/bidi streams: one decoded message (borrowed, valid only during
   * the callback), or NULL when the client half-closed. */
  void (*on_message)(sl_rpc_call *call, const ProtobufCMessage *msg, void *ctx);
  /* The write queue was full and has room again. */
  void (*on_writable)(sl_rpc_call *call, void *ctx);
  /* The call is over: status sent, or cancelled by the peer or a deadline
   * (cancelled == true). No callback for this call runs after this one.
   * Handler state hung on the call should be released here. */
  void (*on_done)(sl_rpc_call *call, bool cancelled, void *ctx);
  void *ctx; /* retained; passed to every callback */
} sl_rpc_handler;

sl_status sl_rpc_server_create(const sl_rpc_server_opts *opts,
                               sl_rpc_server **out, sl_err *err);

/* Registers a method before sl_rpc_server_start(). `method` and `h` are
 * copied (method->path and the descriptors are retained: use literals or
 * static tables); h->ctx is retained until the server is destroyed.
 * SL_EEXIST for a path registered twice or a grpc.health.v1 method;
 * SL_EPRECOND after start; SL_EINVAL for a bad method or no on_start. */
sl_status sl_rpc_server_add_method(sl_rpc_server *srv, const sl_rpc_method *method,
                                   const sl_rpc_handler *h, sl_err *err);

/* Binds and starts the worker threads. SL_EUNAVAIL if the address cannot
 * be bound (in use, malformed, or a bad TLS key pair); destroy the server
 * afterwards in any case. */
sl_status sl_rpc_server_start(sl_rpc_server *srv, sl_err *err);

/* The bound port (useful after binding port 0). */
int sl_rpc_server_port(const sl_rpc_server *srv);

/* Memory that lives until the server is destroyed (zeroed; aborts on OOM),
 * e.g. for handler contexts registered with sl_rpc_server_add_method().
 * Thread-safe. */
void *sl_rpc_server_alloc(sl_rpc_server *srv, size_t n);

/* Health status reported for `service` ("" = the whole server; NULL is
 * taken as ""). Starts as SERVING for "" once started; other services are
 * unknown (Check answers NOT_FOUND) until set. Pushed to Watch streams.
 * Thread-safe; no effect once destroy has begun. See rpc_health.h. */
void sl_rpc_server_set_health(sl_rpc_server *srv, const char *service, bool serving);

/* Graceful shutdown: stop accepting, end health Watch streams, wait up to
 * the grace period for calls, cancel the rest, wait until every call object
 * is released (so handlers must drop their sl_rpc_call_ref()s, at the latest
 * in on_done), drain the queues, join the threads, free. Works on a server
 * that was never started or failed to start. NULL is a no-op. Must not be
 * called from a handler callback. */
void sl_rpc_server_destroy(sl_rpc_server *srv);

/* ---- per call ---- */

const sl_rpc_method *sl_rpc_call_method(const sl_rpc_call *call);

/* Per-call user pointer for the handler's own state. */
void sl_rpc_call_set_user(sl_rpc_call *call, void *user);
void *sl_rpc_call_user(const sl_rpc_call *call);

/* Sets the user pointer and a destructor that runs destroy(user) at the
 * call's last unref, on the thread that drops it (a worker, or a thread
 * that held an sl_rpc_call_ref), after on_done. Freeing handler state there
 * instead of in on_done means another thread still holding a reference (an
 * fsync completion about to send an ack) can never touch freed state, so the
 * handler needs no refcount of its own. Set it at most once, from on_start
 * (or before anything else can hold a reference). */
void sl_rpc_call_set_user_destroy(sl_rpc_call *call, void *user,
                                  void (*destroy)(void *user));

/* Client metadata value for a lowercase key, e.g. "authorization".
 * Returns NULL if absent. The value is copied into the call arena and is
 * NUL-terminated (a binary "-bin" value may hold NULs itself). */
const char *sl_rpc_call_metadata(sl_rpc_call *call, const char *key);

/* The caller's role from its token (call arena), or NULL when the server
 * runs without authentication. */
const char *sl_rpc_call_role(const sl_rpc_call *call);

/* True when the server runs without authentication or the caller's role is
 * a super-user: the check for rights that need no per-namespace grant. */
bool sl_rpc_call_is_superuser(const sl_rpc_call *call);

/* The peer address, e.g. "ipv4:127.0.0.1:5555" (call arena). */
const char *sl_rpc_call_peer(sl_rpc_call *call);

/* Milliseconds until the client's deadline; INT64_MAX if none. */
int64_t sl_rpc_call_time_left_ms(const sl_rpc_call *call);

/* Memory that lives as long as the call (zeroed; aborts on OOM). */
void *sl_rpc_call_alloc(sl_rpc_call *call, size_t n);

/* Queues one response message (packed now; `msg` is borrowed).
 * SL_EBUSY: queue full (nothing queued), wait for on_writable, which runs
 * once the queue has drained to half. SL_ECANCELED: the call is over or
 * finish was already called. SL_EINVAL: msg is not of the method's
 * response type (a bug; logged). */
sl_status sl_rpc_call_send(sl_rpc_call *call, const ProtobufCMessage *msg);

/* Ends the call: sends `last` (if non-NULL, e.g. a unary response) after
 * every queued message, then the status. `st` maps to the gRPC code through
 * sl_status_to_grpc(); `message` (may be NULL) becomes the status details.
 * Only the first finish counts; later ones return SL_ECANCELED. `last` is
 * packed immediately and may be freed on return. Unlike send, finish never
 * fails for a full queue. A `last` of the wrong type is a handler bug: it
 * is logged and the client gets INTERNAL. A unary or client-streaming
 * method that finishes with SL_OK must pass `last`. */
sl_status sl_rpc_call_finish(sl_rpc_call *call, sl_status st, const char *message,
                             const ProtobufCMessage *last);

/* Stops posting reads after the current on_message returns, until
 * resume_reads. gRPC flow control then pushes back on the client. */
void sl_rpc_call_pause_reads(sl_rpc_call *call);
void sl_rpc_call_resume_reads(sl_rpc_call *call);

/* Messages accepted by sl_rpc_call_send() and not yet written to gRPC
 * (the one being written included); never above write_queue_max. */
size_t sl_rpc_call_write_queue_len(sl_rpc_call *call);

void sl_rpc_call_ref(sl_rpc_call *call);
void sl_rpc_call_unref(sl_rpc_call *call);

#endif
