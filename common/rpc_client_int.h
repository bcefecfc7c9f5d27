/*
 * Internals of the RPC client runtime (not an API), shared by
 * rpc_client.c (channel, unary calls) and rpc_client_stream.c (streams).
 */
#ifndef SL_COMMON_RPC_CLIENT_INT_H
#define SL_COMMON_RPC_CLIENT_INT_H

#include <grpc/grpc.h>
#include <pthread.h>

#include "common/rpc_client.h"
#include "common/rpc_int.h"

typedef struct sl_rpc_async sl_rpc_async;

struct sl_rpc_channel {
  grpc_channel *channel;
  char *target;
  char *authorization;      /* default token, or NULL */
  size_t max_message_bytes;

  pthread_mutex_t lock;     /* guards the async fields below */
  pthread_cond_t cond;      /* signalled when n_async drops to 0 */
  pthread_cond_t work;      /* signalled when n_async leaves 0 or closing is set */
  grpc_completion_queue *cq; /* async next-queue, created on first use */
  pthread_t thread;         /* polls cq while n_async > 0; runs async callbacks */
  sl_rpc_async *async;      /* in-flight async calls (for destroy) */
  size_t n_async;
  bool closing;             /* destroy has begun: no new async calls */
};

/* Initial metadata of one client call; slices are copies owned here. */
typedef struct sl_rpc_client_md {
  grpc_metadata md[1];
  size_t count;
  uint32_t flags; /* GRPC_INITIAL_METADATA_* for the SEND_INITIAL_METADATA op */
} sl_rpc_client_md;

void sl_rpc_client_md_init(sl_rpc_client_md *md, const sl_rpc_channel *ch,
                           const sl_rpc_call_opts *opts);
void sl_rpc_client_md_release(sl_rpc_client_md *md);

/* Creates a call of `m` on `cq` with the deadline from timeout_ms (<= 0:
 * none). */
grpc_call *sl_rpc_client_call(sl_rpc_channel *ch, const sl_rpc_method *m,
                              grpc_completion_queue *cq, int timeout_ms);

/* The sl_status for a received gRPC status and its trailing metadata (the
 * exact code the server raised, rpc_status.h); fills err with the details,
 * or "<path>: <status text>" when there are none. */
sl_status sl_rpc_client_status(const sl_rpc_method *m, grpc_status_code code,
                               const grpc_metadata_array *trailing, grpc_slice details,
                               sl_err *err);

/* Checks that msg is a `want` message and packs it within the channel's
 * limit. */
sl_status sl_rpc_client_pack(const sl_rpc_channel *ch, const sl_rpc_method *m,
                             const ProtobufCMessageDescriptor *want,
                             const ProtobufCMessage *msg, grpc_byte_buffer **out,
                             sl_err *err);

/* Shuts down and destroys a pluck queue whose events were all plucked. */
void sl_rpc_client_cq_destroy(grpc_completion_queue *cq);

#endif
