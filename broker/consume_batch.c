/* Consume batch: messages serialized as they come, sent as one
 * MessageBatch. See consume_batch.h. */
#include "broker/consume_batch.h"

#include <stdlib.h>

#include "common/status.h"

/* Bytes of v as a protobuf varint. */
static size_t varint_size(size_t v) {
  size_t n = 1;
  for (; v >= 0x80; v >>= 7) n++;
  return n;
}

static size_t varint_put(size_t v, uint8_t *out) {
  size_t n = 0;
  for (; v >= 0x80; v >>= 7) out[n++] = (uint8_t)(v | 0x80);
  out[n++] = (uint8_t)v;
  return n;
}

void sl_cbatch_release(sl_cbatch *b) {
  sl_buf_release(&b->buf);
  free(b->ends);
  free(b->fields);
  *b = (sl_cbatch)SL_CBATCH_INIT;
}

void sl_cbatch_reset(sl_cbatch *b) {
  if (b->buf.cap > SL_CBATCH_KEEP_BYTES) sl_buf_release(&b->buf);
  else sl_buf_reset(&b->buf);
  b->n = 0;
}

/* The messages field holds buf.len bytes plus one tag byte per message
 * (tag 1 fits one byte); the batch's own tag and length cost the rest. */
size_t sl_cbatch_bytes_with(const sl_cbatch *b, const Sluice__V1__Message *m) {
  size_t msz = sluice__v1__message__get_packed_size(m);
  size_t inner = b->buf.len + b->n + 1 + varint_size(msz) + msz;
  return 1 + varint_size(inner) + inner;
}

void sl_cbatch_add(sl_cbatch *b, const Sluice__V1__Message *m) {
  if (b->n == b->cap) {
    b->cap = b->cap ? 2 * b->cap : 16;
    b->ends = sl_xrealloc(b->ends, b->cap * sizeof(*b->ends));
    b->fields = sl_xrealloc(b->fields, b->cap * sizeof(*b->fields));
  }
  size_t msz = sluice__v1__message__get_packed_size(m);
  sl_buf_reserve(&b->buf, varint_size(msz) + msz);
  uint8_t *at = (uint8_t *)b->buf.data + b->buf.len;
  size_t n = varint_put(msz, at);
  n += sluice__v1__message__pack(m, at + n);
  b->buf.len += n;
  b->buf.data[b->buf.len] = '\0'; /* sl_buf invariant 1 */
  b->ends[b->n++] = b->buf.len;
}

/* protobuf-c writes an unknown field as its tag, then `data` as is: for a
 * length-prefixed field that is the length varint and the bytes, which is
 * how sl_cbatch_add stored each message. */
void sl_cbatch_response(sl_cbatch *b, Sluice__V1__ConsumeResponse *r) {
  SL_ASSERT(b->n > 0);
  size_t start = 0;
  for (uint32_t i = 0; i < b->n; i++) {
    ProtobufCMessageUnknownField *f = &b->fields[i];
    f->tag = 1; /* MessageBatch.messages */
    f->wire_type = PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED;
    f->len = b->ends[i] - start;
    f->data = (uint8_t *)b->buf.data + start;
    start = b->ends[i];
  }
  sluice__v1__message_batch__init(&b->batch);
  b->batch.base.n_unknown_fields = b->n;
  b->batch.base.unknown_fields = b->fields;
  r->kind_case = SLUICE__V1__CONSUME_RESPONSE__KIND_MESSAGE_BATCH;
  r->message_batch = &b->batch;
}
