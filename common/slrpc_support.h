/*
 * Run-time support for the code protoc-gen-slrpc generates (*.slrpc.c).
 * Not for hand-written code: use the generated functions instead.
 */
#ifndef SL_COMMON_SLRPC_SUPPORT_H
#define SL_COMMON_SLRPC_SUPPORT_H

#include <stddef.h>

#include "common/rpc_server.h"

/* Finishes `call` with SL_EUNIMPL and the details
 * "<package>.<Service>/<Method> is not implemented yet". */
void sl_slrpc_unimplemented(sl_rpc_call *call);

#endif
