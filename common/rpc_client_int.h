/*
 * Internals of the RPC client runtime (not an API), shared by
 * rpc_client.c (channel, unary calls), rpc_astream.c (async streams, which
 * async unary calls ride on) and rpc_client_stream.c (blocking streams).
 */
#ifndef SL_COMMON_RPC_CLIENT_INT_H
#define SL_COMMON_RPC_CLIENT_INT_H

#include <grpc/grpc.h>
#include <pthread.h>

#include "common/rpc_astream.h"
#include "common/rpc_client.h"
#include "common/rpc_int.h"

/* A call on the channel's next-queue, listed from creation until it has
 * nothing left on the queue (so destroy can cancel it and wait). */
typedef struct sl_rpc_tracked {
  struct sl_rpc_tracked *prev, *next; /* on ch->tracked, under ch->lock */
  grpc_call *call;
} sl_rpc_tracked;

struct sl_rpc_channel {
  grpc_channel *channel;
  char *target;             /* as given */
  char *authorization;      /* default token, or NULL */
  size_t max_message_bytes;

  pthread_mutex_t lock;     /* guards the async fields below */
  pthread_cond_t cond;      /* signalled when n_tracked drops to 0 */
  pthread_cond_t work;      /* signalled when n_tracked leaves 0 or closing is set */
  grpc_completion_queue *cq; /* async next-queue, created on first use */
  pthread_t thread;         /* polls cq while n_tracked > 0 */
  sl_rpc_tracked *tracked;  /* calls with events still to come on cq */
  size_t n_tracked;
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

/* Creates t->call on the channel's next-queue (starting the completion
 * thread on first use) and lists it. SL_ECANCELED once destroy has begun. */
sl_status sl_rpc_client_track(sl_rpc_channel *ch, sl_rpc_tracked *t, const sl_rpc_method *m,
                              int timeout_ms, sl_err *err);
/* Unlists t; the caller unrefs t->call afterwards. */
void sl_rpc_client_untrack(sl_rpc_channel *ch, sl_rpc_tracked *t);

/* The single place where a finished client call becomes an sl_status: the
 * exact code the server raised, from the trailing metadata (rpc_status.h;
 * may be NULL), else the gRPC code; fills err with the details, or
 * "<path>: <status text>" when there are none. */
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

/* For async unary calls: during on_message, takes ownership of the message
 * (the stream then does not free it). */
void sl_rpc_astream_take_message_(sl_rpc_astream *s);
const sl_rpc_method *sl_rpc_astream_method_(const sl_rpc_astream *s);

/* A new byte buffer holding p's bytes (shared, not copied); the caller
 * destroys it. */
grpc_byte_buffer *sl_rpc_packed_buffer_(const sl_rpc_packed *p);

/* Default deadline of a unary call without timeout_ms. */
#define SL_RPC_UNARY_DEFAULT_TIMEOUT_MS 10000

#endif
