/*
 * Packed messages (rpc_client.h): one refcounted grpc_slice. Every send
 * wraps it in a fresh byte buffer that takes a slice reference, so the bytes
 * are serialized once and never copied, and gRPC may hold them as long as it
 * likes after the sender dropped the packed message.
 */
#include <stdatomic.h>
#include <stdlib.h>

#include "common/rpc_client_int.h"

struct sl_rpc_packed {
  atomic_int refs;
  grpc_slice slice; /* immutable once packed */
  const ProtobufCMessageDescriptor *type;
};

sl_status sl_rpc_pack(const ProtobufCMessage *msg, size_t max_bytes, sl_rpc_packed **out,
                      sl_err *err) {
  *out = NULL;
  if (msg == NULL) return sl_err_set(err, SL_EINVAL, "rpc pack: null message");
  size_t n = protobuf_c_message_get_packed_size(msg);
  if (max_bytes != 0 && n > max_bytes)
    return sl_err_set(err, SL_ETOOBIG, "%s: message of %zu bytes exceeds the limit of %zu",
                      msg->descriptor->name, n, max_bytes);
  sl_rpc_packed *p = malloc(sizeof(*p));
  if (p == NULL) return sl_err_set(err, SL_ENOMEM, "rpc pack: out of memory");
  atomic_init(&p->refs, 1);
  p->type = msg->descriptor;
  p->slice = grpc_slice_malloc(n);
  size_t packed = protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(p->slice));
  SL_ASSERT(packed == n);
  *out = p;
  return SL_OK;
}

void sl_rpc_packed_ref(sl_rpc_packed *p) {
  int old = atomic_fetch_add(&p->refs, 1);
  SL_ASSERT(old > 0);
}

void sl_rpc_packed_unref(sl_rpc_packed *p) {
  if (p == NULL) return;
  int old = atomic_fetch_sub(&p->refs, 1);
  SL_ASSERT(old > 0);
  if (old > 1) return;
  grpc_slice_unref(p->slice);
  free(p);
}

size_t sl_rpc_packed_size(const sl_rpc_packed *p) { return GRPC_SLICE_LENGTH(p->slice); }

const ProtobufCMessageDescriptor *sl_rpc_packed_type(const sl_rpc_packed *p) { return p->type; }

grpc_byte_buffer *sl_rpc_packed_buffer_(const sl_rpc_packed *p) {
  grpc_slice s = p->slice;
  return grpc_raw_byte_buffer_create(&s, 1); /* takes its own slice ref */
}
