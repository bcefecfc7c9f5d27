/*
 * Echo service (echo.proto) over the RPC runtime, for the runtime's tests
 * and tools/rpc_bench.c. Method tables are written by hand so that nothing
 * here depends on the protoc plugin.
 *
 *   Unary         ECHO: payload and n back; HANG: never answers;
 *                 FAIL: finishes with sl_status n.
 *   ServerStream  n messages (n = 0, 1, ...) carrying the payload, as fast as
 *                 the write queue allows (SL_EBUSY -> wait for on_writable).
 *   ClientStream  on half-close: n = number of messages, payload = the
 *                 last one's; a FAIL message ends the call at once.
 *   Bidi          echoes every message (pausing reads while the write queue
 *                 is full); finishes OK on half-close.
 * Every response carries the call's authorization metadata, deadline and
 * peer, so tests can check what the server saw.
 */
#ifndef SL_COMMON_TESTDATA_ECHO_SERVICE_H
#define SL_COMMON_TESTDATA_ECHO_SERVICE_H

#include <stdatomic.h>

#include "common/rpc_server.h"
#include "echo.pb-c.h"

extern const sl_rpc_method sl_echo_unary;
extern const sl_rpc_method sl_echo_server_stream;
extern const sl_rpc_method sl_echo_client_stream;
extern const sl_rpc_method sl_echo_bidi;

/* What the server saw; tests poll these (all atomics). */
typedef struct sl_echo_stats {
  atomic_long started;      /* on_start calls */
  atomic_long messages;     /* on_message calls with a message */
  atomic_long done;         /* on_done calls */
  atomic_long cancelled;    /* ...of which cancelled */
  atomic_long ebusy;        /* sl_rpc_call_send() answered SL_EBUSY */
  atomic_long sent;         /* messages accepted by sl_rpc_call_send() */
  atomic_long max_queue;    /* largest write queue seen after a send */
  atomic_long writable;     /* on_writable calls */
} sl_echo_stats;

/* Registers the four Echo methods on `srv`; `stats` (retained, zeroed by
 * the caller) is updated from the worker threads. */
sl_status sl_echo_register(sl_rpc_server *srv, sl_echo_stats *stats, sl_err *err);

/* Creates, registers and starts an echo server on opts->addr. */
sl_status sl_echo_server_start(const sl_rpc_server_opts *opts, sl_echo_stats *stats,
                               sl_rpc_server **out, sl_err *err);

/* Polls until *counter >= want or timeout_ms pass; returns whether it got
 * there. For tests waiting on what the server saw. */
bool sl_echo_wait(atomic_long *counter, long want, int timeout_ms);

#endif
