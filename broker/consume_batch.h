/*
 * Consume batch: several messages for one consumer packed into one
 * ConsumeResponse (a MessageBatch, proto/broker.proto), so a dispatch round
 * that hands a consumer many messages costs one gRPC message, not one each.
 *
 * A delivery's fields are borrowed for the deliver call only (the entry is
 * freed right after, subscription.h), so each message is serialized into
 * the batch's buffer as it is added. sl_cbatch_response() then hands those
 * bytes to protobuf-c as the MessageBatch's unknown fields of tag 1 (a
 * repeated Message on the wire is exactly such fields), so packing the
 * response copies them once and nothing is decoded again.
 *
 * Invariants
 *  1. The response carries the messages added since the last reset, in the
 *     order they were added, each byte for byte as sluice__v1__message__pack
 *     wrote it.
 *  2. bytes is what the response's MessageBatch adds to a ConsumeResponse
 *     at most (sl_cbatch_bytes_with tells before an add), so a caller
 *     keeping it under a cap keeps the response under that cap plus a few
 *     bytes of framing.
 *
 * Not thread-safe: one owner at a time. Aborts on out-of-memory (servers
 * do).
 */
#ifndef SL_BROKER_CONSUME_BATCH_H
#define SL_BROKER_CONSUME_BATCH_H

#include <stddef.h>
#include <stdint.h>

#include "broker.pb-c.h"
#include "common/buf.h"

typedef struct sl_cbatch {
  sl_buf buf;                /* tag, length and bytes of each message */
  size_t *ends;              /* end offset in buf of each message */
  uint32_t n, cap;
  ProtobufCMessageUnknownField *fields; /* built by sl_cbatch_response */
  Sluice__V1__MessageBatch batch;       /* ditto */
} sl_cbatch;

/* All-zero is an empty batch. */
#define SL_CBATCH_INIT {0}

/* Frees its memory; b is empty again. */
void sl_cbatch_release(sl_cbatch *b);

/* Empties b, keeping its memory for the next batch up to
 * SL_CBATCH_KEEP_BYTES of buffer (an idle consumer holds no more). */
#define SL_CBATCH_KEEP_BYTES (64u << 10)
void sl_cbatch_reset(sl_cbatch *b);

/* Messages in b. */
static inline uint32_t sl_cbatch_count(const sl_cbatch *b) { return b->n; }

/* Bytes b's MessageBatch would take with m added (m not added). */
size_t sl_cbatch_bytes_with(const sl_cbatch *b, const Sluice__V1__Message *m);

/* Serializes m (borrowed for the call) at the end of b. */
void sl_cbatch_add(sl_cbatch *b, const Sluice__V1__Message *m);

/* Fills r (initialized by the caller) as a message_batch response over b's
 * messages. r points into b: valid until b changes. b must hold at least
 * one message. */
void sl_cbatch_response(sl_cbatch *b, Sluice__V1__ConsumeResponse *r);

#endif
