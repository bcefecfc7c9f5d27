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
 * message of that type. */
sl_status sl_rpc_buf_unpack(const ProtobufCMessageDescriptor *desc,
                            grpc_byte_buffer *bb, ProtobufCMessage **out,
                            sl_err *err);

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
