/*
 * Shared RPC vocabulary: what a method is. The protoc plugin
 * (tools/protoc-gen-slrpc) emits one sl_rpc_method per RPC of every service
 * in proto/, and both rpc_server.h and rpc_client.h take them.
 */
#ifndef SL_COMMON_RPC_H
#define SL_COMMON_RPC_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>

#include "common/status.h"

typedef enum sl_rpc_kind {
  SL_RPC_UNARY = 0,
  SL_RPC_SERVER_STREAMING = 1,
  SL_RPC_CLIENT_STREAMING = 2,
  SL_RPC_BIDI_STREAMING = 3,
} sl_rpc_kind;

typedef struct sl_rpc_method {
  const char *path;                           /* "/sluice.v1.BookieService/GetInfo" */
  sl_rpc_kind kind;
  const ProtobufCMessageDescriptor *request;  /* what the client sends */
  const ProtobufCMessageDescriptor *response; /* what the server sends */
} sl_rpc_method;

typedef struct sl_rpc_service {
  const char *name; /* "sluice.v1.BookieService" */
  size_t n_methods;
  const sl_rpc_method *methods;
} sl_rpc_service;

/* Default cap on one message in either direction (gRPC's own is 4 MiB). */
#define SL_RPC_DEFAULT_MAX_MESSAGE (16u << 20)

/* Client keepalive defaults (rpc_client.h): a dead peer is noticed within
 * about 10 s. */
#define SL_RPC_KEEPALIVE_TIME_MS 5000
#define SL_RPC_KEEPALIVE_TIMEOUT_MS 5000
/* Cap on a client channel's reconnect back-off. gRPC's default (120 s)
 * suits clients on the internet; in a cluster a restarted node must be
 * usable again within seconds, else a ledger client keeps failing over to
 * others from a bookie that is back, and auto-recovery's copies to it fail. */
#define SL_RPC_MAX_RECONNECT_BACKOFF_MS 2000
/* Servers accept client pings this often, without strikes; clients never
 * ping more often (rpc_server.h). */
#define SL_RPC_MIN_PING_INTERVAL_MS 1000

/* Waits until gRPC core has finished tearing itself down, after the last
 * sl_rpc_server and sl_rpc_channel of the process were destroyed.
 *
 * Why: destroying our last server or channel does not always end gRPC's own
 * work. A channel keeps gRPC initialized until its last internal reference
 * drops, and that can happen later on one of gRPC's threads, which then
 * hands the final cleanup (joining its timer and executor threads) to a
 * detached thread. A process that exits meanwhile leaves those threads
 * unjoined or still running (ThreadSanitizer reports a thread leak). Call
 * this last, before returning from main, in programs and tests that want a
 * clean exit.
 *
 * SL_OK once gRPC is shut down (at once if it was never started);
 * SL_ETIMEDOUT if it is still initialized after timeout_ms, meaning some
 * server or channel is still alive. Any thread except gRPC's own and our
 * callbacks (they run inside the teardown being waited for). */
sl_status sl_rpc_wait_shutdown(int timeout_ms);

#endif
