/*
 * Internals of the RPC server runtime (not an API): the server, its workers,
 * posted requests and calls, shared by rpc_server.c (lifecycle, requests),
 * rpc_server_call.c (one call) and rpc_server_health.c (grpc.health.v1).
 */
#ifndef SL_COMMON_RPC_SERVER_INT_H
#define SL_COMMON_RPC_SERVER_INT_H

#include <grpc/grpc.h>
#include <pthread.h>
#include <stdatomic.h>

#include "common/metrics.h"
#include "common/rpc_int.h"
#include "common/rpc_server.h"

/* Requests kept posted per method per completion queue. */
#define SL_RPC_REQUESTS_PER_METHOD 4

typedef struct sl_rpc_worker {
  sl_rpc_server *srv;
  grpc_completion_queue *cq; /* created for next; polled only by `thread` */
  pthread_t thread;
} sl_rpc_worker;

/* gRPC status codes 0 (OK) to 16 (UNAUTHENTICATED). */
#define SL_RPC_N_CODES 17

/* One method's metric handles (rpc_server_metrics.c); any may be NULL if
 * registration failed, and updates then skip it. */
typedef struct sl_rpc_method_metrics {
  sl_metrics_counter *started;
  sl_metrics_counter *handled[SL_RPC_N_CODES]; /* by gRPC status code */
  sl_metrics_histogram *seconds;               /* begin to status sent */
  sl_metrics_counter *msg_received, *msg_sent;
  sl_metrics_gauge *open;                      /* calls begun, not yet over */
} sl_rpc_method_metrics;

/* A registered method. */
typedef struct sl_rpc_entry {
  sl_rpc_method method;
  sl_rpc_handler handler;
  void *registered; /* grpc_server_register_method() handle */
  sl_rpc_method_metrics metrics;
} sl_rpc_entry;

/* One posted grpc_server_request_*call; re-posted after each new call. */
typedef struct sl_rpc_request {
  sl_rpc_tag tag;
  sl_rpc_worker *w;
  sl_rpc_entry *entry; /* NULL: the generic request for unknown methods */
  grpc_call *call;
  gpr_timespec deadline;
  grpc_metadata_array md;
  grpc_byte_buffer *payload; /* unary and server-streaming only */
  grpc_call_details details; /* generic request only */
} sl_rpc_request;

typedef struct sl_rpc_health sl_rpc_health;

struct sl_rpc_server {
  char *addr;
  char *tls_cert_pem, *tls_key_pem, *tls_client_ca_pem;
  const sl_auth *auth; /* opts.auth; NULL = no authentication */
  bool superuser_only;
  size_t max_message_bytes;
  size_t write_queue_max;
  int shutdown_grace_ms;
  int n_workers;
  sl_rpc_worker *workers;
  grpc_server *server;
  int port;
  bool started;

  sl_rpc_entry **entries; /* fixed once started */
  size_t n_entries;

  atomic_bool stopping; /* set first thing in destroy: requests stop re-posting */

  pthread_mutex_t lock; /* guards the fields below */
  pthread_cond_t cond;  /* signalled on shutdown_done and when n_calls hits 0 */
  bool shutdown_done;   /* the shutdown_and_notify tag arrived */
  size_t n_calls;       /* sl_rpc_call objects not yet released */
  sl_rpc_tag shutdown_tag;

  sl_rpc_method_metrics unknown_metrics; /* calls to unregistered paths */
  sl_metrics_counter *write_queue_full;  /* sends answered SL_EBUSY */

  sl_rpc_health *health;
  void **allocs; /* sl_rpc_server_alloc() blocks, under lock */
  size_t n_allocs;
};

/* ---- rpc_server_call.c ---- */

/* Turns a completed request into a call and runs the handler's on_start (or
 * answers UNIMPLEMENTED / INVALID_ARGUMENT). Takes ownership of the call,
 * metadata and payload in `req` and leaves `req` ready to re-post. Runs on
 * the worker thread of req->w. */
void sl_rpc_call_begin_(sl_rpc_request *req);

/* ---- rpc_server_metrics.c ---- */

/* Registers (or finds) the handles of `method` ("unknown" for the
 * unregistered) in sl_metrics_default(); failures are logged and leave
 * NULL handles. `method` is copied. */
void sl_rpc_metrics_init_(sl_rpc_method_metrics *m, const char *method);
/* The server-wide write-queue-full counter (NULL if it failed). */
sl_metrics_counter *sl_rpc_metrics_queue_full_(void);
/* A call ended with gRPC status `code`, begun at t0_ns (sl_metrics_now_ns). */
void sl_rpc_metrics_ended_(const sl_rpc_method_metrics *m, int code, uint64_t t0_ns);

/* ---- rpc_server_health.c ---- */

sl_status sl_rpc_health_create_(sl_rpc_server *srv, sl_err *err);
/* Before shutdown: report NOT_SERVING to every watcher and end its stream. */
void sl_rpc_health_stop_(sl_rpc_server *srv);
void sl_rpc_health_destroy_(sl_rpc_server *srv);

/* ---- rpc_server.c ---- */

/* Registers a method; used for user methods and the built-in health ones. */
sl_status sl_rpc_server_add_(sl_rpc_server *srv, const sl_rpc_method *method,
                             const sl_rpc_handler *h, sl_err *err);
/* A call object was released (n_calls bookkeeping for destroy). */
void sl_rpc_server_call_released_(sl_rpc_server *srv);

#endif
