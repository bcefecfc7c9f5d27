#include "common/slrpc_support.h"

#include <stdio.h>

#include "common/status.h"

void sl_slrpc_unimplemented(sl_rpc_call *call) {
  const sl_rpc_method *m = sl_rpc_call_method(call);
  const char *path = m != NULL && m->path[0] == '/' ? m->path + 1 : "method";
  char msg[512];
  snprintf(msg, sizeof(msg), "%s is not implemented yet", path);
  /* The only failure is a call already finished, which needs nothing. */
  (void)sl_rpc_call_finish(call, SL_EUNIMPL, msg, NULL);
}
