#include "common/testdata/rpc_fixture.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

void sl_echo_fx_start(sl_echo_fx *fx, const sl_rpc_server_opts *so, const sl_rpc_channel_opts *co) {
  sl_err err = SL_ERR_INIT;
  sl_rpc_server_opts sopts = {.addr = "127.0.0.1:0", .n_threads = 2};
  if (so != NULL) sopts = *so;
  memset(fx, 0, sizeof(*fx));
  sl_status st = sl_echo_server_start(&sopts, &fx->stats, &fx->srv, &err);
  if (st != SL_OK) fail_msg("server: %s", sl_err_msg(&err, st));
  snprintf(fx->target, sizeof(fx->target), "127.0.0.1:%d", sl_rpc_server_port(fx->srv));
  sl_rpc_channel_opts copts = {0};
  if (co != NULL) copts = *co;
  copts.target = fx->target;
  st = sl_rpc_channel_create(&copts, &fx->ch, &err);
  if (st != SL_OK) fail_msg("channel: %s", sl_err_msg(&err, st));
}

void sl_echo_fx_stop(sl_echo_fx *fx) {
  sl_rpc_channel_destroy(fx->ch);
  sl_rpc_server_destroy(fx->srv);
}

int sl_echo_fx_teardown_group(void **state) {
  (void)state;
  if (sl_rpc_wait_shutdown(30000) == SL_OK) return 0;
  fprintf(stderr, "grpc is still initialized: a server or channel was not destroyed\n");
  return -1;
}

int sl_echo_fx_drain(sl_rpc_stream *s) {
  sl_err err = SL_ERR_INIT;
  ProtobufCMessage *msg;
  int got = 0;
  while (sl_rpc_stream_recv(s, &msg, 5000, &err) == SL_OK && msg != NULL) {
    protobuf_c_message_free_unpacked(msg, NULL);
    got++;
  }
  return got;
}
