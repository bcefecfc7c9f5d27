/*
 * Internals shared by the RPC server and client runtimes (not an API).
 *
 * Message codec between protobuf-c messages and gRPC byte buffers, the
 * completion-queue tag used by every event, and the channel arguments both
 * sides set.
 */
#ifndef SL_COMMON_RPC_INT_H
#define SL_COMMON_RPC_INT_H

#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "common/rpc.h"
#include "common/status.h"

/* Every event we put on a next-queue carries one of these as its tag,
 * embedded in the object the event belongs to; fn runs on the thread that
 * polled the queue. */
typedef struct sl_rpc_tag {
  void (*fn)(struct sl_rpc_tag *tag, bool ok);
} sl_rpc_tag;

#define SL_RPC_CONTAINER_OF(ptr, type, member) \
  ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

/* Packs `msg` into a new byte buffer (*out, caller destroys). SL_ETOOBIG if
 * the packed size exceeds max_bytes (0 = no limit). */
sl_status sl_rpc_buf_pack(const ProtobufCMessage *msg, size_t max_bytes,
                          grpc_byte_buffer **out, sl_err *err);

/* Decodes `bb` (borrowed; may be multi-slice or compressed) as a message of
 * type `desc`. *out is a heap message freed with
 * protobuf_c_message_free_unpacked(). SL_EINVAL if the bytes are not a valid
 * message of that type.
 *
 * A message that arrived in several slices must be gathered into one run of
 * bytes first. `scratch` (may be NULL) is where: a buffer the caller keeps
 * for one stream or call and never uses from two threads at once, so that a
 * stream of large messages gathers into the same warm memory each time
 * instead of a fresh allocation (whose pages must be faulted in and zeroed)
 * per message. Buffers past SL_RPC_SCRATCH_KEEP are released after use, so
 * one huge message does not pin its size for the stream's life. With NULL,
 * or if scratch cannot grow, the bytes are gathered into a fresh slice. */
#define SL_RPC_SCRATCH_KEEP (1u << 20)
sl_status sl_rpc_buf_unpack(const ProtobufCMessageDescriptor *desc,
                            grpc_byte_buffer *bb, sl_buf *scratch,
                            ProtobufCMessage **out, sl_err *err);

/* Channel arguments both sides use: message size caps (0 = the default
 * SL_RPC_DEFAULT_MAX_MESSAGE); on servers also SO_REUSEPORT off and the
 * keepalive policy that accepts clients' pings (rpc_server.h). Clients add
 * their own with sl_rpc_args_add_int/str. `storage` must outlive `out`. */
#define SL_RPC_ARGS_MAX 12
typedef struct sl_rpc_args {
  grpc_arg arg[SL_RPC_ARGS_MAX];
  grpc_channel_args args;
} sl_rpc_args;
const grpc_channel_args *sl_rpc_args_init(sl_rpc_args *storage, size_t max_message,
                                          bool server);
/* Appends one argument (key and string value are retained). */
void sl_rpc_args_add_int(sl_rpc_args *storage, const char *key, int value);
void sl_rpc_args_add_str(sl_rpc_args *storage, const char *key, const char *value);

/* Absolute monotonic deadline `ms` from now; ms <= 0 means never. */
gpr_timespec sl_rpc_deadline(int64_t ms);

/* Routes gRPC core's own log lines through sl_log() (one line, key=value);
 * idempotent, called by every server and channel create. */
void sl_rpc_log_init(void);

/* Copies a slice into a NUL-terminated string in `buf` (truncating). */
void sl_rpc_slice_str(grpc_slice s, char *buf, size_t cap);

#endif
