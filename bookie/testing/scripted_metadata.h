/*
 * A scripted MetadataService for bookie unit tests: the test's own handlers
 * (the rest answer UNIMPLEMENTED) on a gRPC server at 127.0.0.1 on a free
 * port, in the test's process. Fails the running cmocka test if it cannot
 * start.
 */
#ifndef SL_BOOKIE_TESTING_SCRIPTED_METADATA_H
#define SL_BOOKIE_TESTING_SCRIPTED_METADATA_H

#include <stddef.h>

#include "common/rpc_server.h"
#include "metadata.slrpc.h"

/* Starts a server with handlers h (copied) and ctx (retained until the
 * server is destroyed); writes "127.0.0.1:PORT" to target. The caller
 * destroys it with sl_rpc_server_destroy. */
sl_rpc_server *sl_test_md_start(const sl_metadata_service_handlers *h, void *ctx,
                                char *target, size_t target_len);

#endif
