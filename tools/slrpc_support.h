/*
 * Run-time support for the code protoc-gen-slrpc generates (*.slrpc.c).
 * Not for hand-written code: use the generated functions instead.
 */
#ifndef SL_TOOLS_SLRPC_SUPPORT_H
#define SL_TOOLS_SLRPC_SUPPORT_H

#include <stddef.h>

#include "common/rpc_server.h"

/*
 * Returns a copy of the `n` bytes at `binding` (a generated struct holding a
 * handler table and the user's ctx) that lives until the process exits.
 * Equal bytes give the same copy, so registering the same handlers and ctx
 * on many servers (as tests do) costs one copy, not one per server.
 *
 * Why: sl_rpc_server_add_method() retains one ctx pointer until the server
 * is destroyed but has no hook to free it, and the generated trampolines
 * need two pointers (the typed handlers and the user's ctx). If the runtime
 * gains server-lifetime memory (e.g. an sl_rpc_server_alloc()), this goes.
 * Thread-safe. Aborts on out of memory, like the server runtime.
 */
void *sl_slrpc_bind(const void *binding, size_t n);

/* Finishes `call` with SL_EUNIMPL and the details
 * "<package>.<Service>/<Method> is not implemented yet". */
void sl_slrpc_unimplemented(sl_rpc_call *call);

#endif
