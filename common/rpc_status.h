/*
 * Errors that survive the wire: the exact sl_status of a failed call, carried
 * next to its gRPC status code.
 *
 * A gRPC status code is coarse: SL_EFENCED, SL_EREADONLY, SL_EREDIRECT and
 * SL_ESTALE_EPOCH are all FAILED_PRECONDITION, and SL_EBUSY, SL_ENOMEM and
 * SL_ETOOBIG all RESOURCE_EXHAUSTED, yet a caller must react to each
 * differently. So a server sends, with every non-OK status, one trailing
 * metadata entry
 *
 *   sl-status: <the sl_status as a decimal integer, e.g. "-5">
 *
 * and a client reads it back. The gRPC code itself stays the one
 * sl_status_to_grpc gives (status.h), so stock gRPC clients, which ignore the
 * entry, still see a meaningful code.
 *
 * Invariants
 *  1. The server sends the entry only with a non-OK status, and only its
 *     value (the code comes from sl_status_to_grpc of the same status).
 *  2. The client trusts the entry only when it names a known sl_status whose
 *     gRPC code equals the code received. Otherwise (no entry: a status made
 *     by the gRPC library itself, such as a deadline or a lost connection, a
 *     non-Sluice server, or a value that disagrees) it falls back to
 *     sl_status_from_grpc. An OK code is SL_OK whatever the metadata says.
 */
#ifndef SL_COMMON_RPC_STATUS_H
#define SL_COMMON_RPC_STATUS_H

#include <grpc/grpc.h>

#include "common/status.h"

/* The trailing-metadata key (lowercase, as gRPC requires). */
#define SL_RPC_STATUS_KEY "sl-status"

/* The trailing-metadata entry that carries st, or NULL for SL_OK and for a
 * value that is not an sl_status. The entry lives in static storage and its
 * slices are static: pass it to SEND_STATUS_FROM_SERVER as is, and never
 * unref or free it. Thread-safe. */
const grpc_metadata *sl_rpc_status_encode(sl_status st);

/* The sl_status of a finished call from its gRPC code and the trailing
 * metadata received with it (borrowed; NULL means none), per invariant 2. */
sl_status sl_rpc_status_decode(int grpc_code, const grpc_metadata_array *trailing);

#endif
