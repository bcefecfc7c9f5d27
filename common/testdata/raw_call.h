/*
 * One gRPC call made with gRPC core alone, sending arbitrary bytes as the
 * only request message: how tests show a server what no encoder would
 * produce (garbage, truncated protobuf).
 */
#ifndef SL_COMMON_TESTDATA_RAW_CALL_H
#define SL_COMMON_TESTDATA_RAW_CALL_H

#include <grpc/status.h>
#include <stddef.h>

/* Calls `path` on plaintext `target` with `bytes` as the request, then
 * half-closes and waits (up to timeout_ms) for the status, which it returns;
 * the status details go to details (NUL-terminated, cut to cap). If the call
 * cannot be started, returns GRPC_STATUS_INTERNAL with a reason. */
grpc_status_code sl_test_raw_call(const char *target, const char *path,
                                  const void *bytes, size_t n, int timeout_ms,
                                  char *details, size_t cap);

#endif
