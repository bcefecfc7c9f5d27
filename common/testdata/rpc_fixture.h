/*
 * Test fixture shared by rpc_client_test.c and rpc_server_test.c: an echo
 * server (echo_service.h) on a free loopback port and a channel to it.
 * Test-only: it fails the running cmocka test on any setup error instead of
 * returning a status, so each test reads as its own steps.
 */
#ifndef SL_COMMON_TESTDATA_RPC_FIXTURE_H
#define SL_COMMON_TESTDATA_RPC_FIXTURE_H

#include <stdint.h>

#include "common/rpc_client.h"
#include "common/rpc_server.h"
#include "common/testdata/echo_service.h"

typedef struct sl_echo_fx {
  sl_rpc_server *srv;
  sl_rpc_channel *ch;
  sl_echo_stats stats; /* what the server saw (echo_service.h) */
  char target[64];     /* "127.0.0.1:<port>" */
} sl_echo_fx;

/* Starts an echo server on a free loopback port and a channel to it.
 * Either opts may be NULL for defaults (server: 127.0.0.1:0, 2 threads);
 * co->target is ignored and set to the server. Fails the test on error. */
void sl_echo_fx_start(sl_echo_fx *fx, const sl_rpc_server_opts *so, const sl_rpc_channel_opts *co);

/* Destroys the channel, then the server. */
void sl_echo_fx_stop(sl_echo_fx *fx);

/* cmocka group teardown for every test binary that uses gRPC: waits (up
 * to 30 s) until gRPC has torn itself down after the tests destroyed their
 * servers and channels (sl_rpc_wait_shutdown, rpc.h), so that the process
 * exits with no gRPC thread unjoined. Fails the group if some test left a
 * server or channel alive. */
int sl_echo_fx_teardown_group(void **state);

/* Receives and frees messages from `s` until the stream ends or a receive
 * fails (5 s each); returns how many came. */
int sl_echo_fx_drain(sl_rpc_stream *s);

#endif
