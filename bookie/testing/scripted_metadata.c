#include "bookie/testing/scripted_metadata.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <cmocka.h>

sl_rpc_server *sl_test_md_start(const sl_metadata_service_handlers *h, void *ctx,
                                char *target, size_t target_len) {
  sl_err err = SL_ERR_INIT;
  sl_rpc_server_opts o = {.addr = "127.0.0.1:0"};
  sl_rpc_server *srv = NULL;
  sl_status st = sl_rpc_server_create(&o, &srv, &err);
  if (st == SL_OK) st = sl_metadata_service_register(srv, h, ctx, &err);
  if (st == SL_OK) st = sl_rpc_server_start(srv, &err);
  if (st != SL_OK) fail_msg("scripted metadata service: %s", sl_err_msg(&err, st));
  snprintf(target, target_len, "127.0.0.1:%d", sl_rpc_server_port(srv));
  return srv;
}
