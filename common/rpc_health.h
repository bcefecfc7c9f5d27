/*
 * grpc.health.v1.Health method tables (common/health.proto), for clients
 * such as probes and tests. Every sl_rpc_server serves this service itself;
 * set what it reports with sl_rpc_server_set_health().
 *
 *   Check: unary; SERVING or NOT_SERVING, or NOT_FOUND for a service never
 *          set (as the gRPC health spec says).
 *   Watch: server streaming; the current status at once (SERVICE_UNKNOWN
 *          for a service never set), then every change. Ends with
 *          UNAVAILABLE (after NOT_SERVING) when the server shuts down.
 */
#ifndef SL_COMMON_RPC_HEALTH_H
#define SL_COMMON_RPC_HEALTH_H

#include "common/rpc.h"
#include "health.pb-c.h"

extern const sl_rpc_method sl_rpc_health_check;  /* "/grpc.health.v1.Health/Check" */
extern const sl_rpc_method sl_rpc_health_watch;  /* "/grpc.health.v1.Health/Watch" */
extern const sl_rpc_service sl_rpc_health_service;

#endif
