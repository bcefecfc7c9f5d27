/*
 * Helpers for the Consume integration tests (tests/consume*_test.c): a
 * consumer on one Consume stream over the generated stubs, on a cluster
 * from tests/produce_testlib.h (which also produces the messages).
 * Helpers fail the running cmocka test on transport errors they cannot
 * report.
 */
#ifndef SL_TESTS_CONSUME_TESTLIB_H
#define SL_TESTS_CONSUME_TESTLIB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "broker.pb-c.h"
#include "tests/produce_testlib.h"

typedef struct sl_ct_consumer {
  sl_rpc_stream *s;
  char name[64];
  bool active;                 /* from Subscribed, then ActiveConsumerChange */
  int active_changes;          /* ActiveConsumerChange events seen */
  int seek_done;               /* SeekDone events seen */
  int msg_responses;           /* responses that carried messages (sl_ct_recv) */
  int most_per_response;       /* most messages one of them carried */
  Sluice__V1__ConsumeResponse *held; /* a MessageBatch not all taken yet */
  size_t held_next;            /* its next message */
} sl_ct_consumer;

/* What a test subscribes with (zero = defaults). */
typedef struct sl_ct_sub {
  const char *topic;
  const char *subscription;
  int type;                    /* SubscriptionType */
  const char *name;            /* consumer name; NULL = generated */
  bool earliest;
  uint32_t priority;
  uint32_t ack_timeout_ms;
  uint32_t nack_delay_ms;
  uint32_t max_redeliveries;   /* then dead-letter; 0 = namespace policy */
  const char *dead_letter_topic; /* NULL = the default */
  uint32_t max_per_response;   /* MessageBatch size asked; 0 = one each */
} sl_ct_sub;

/* The first broker of the cluster that is running (lookups go there). */
int sl_ct_live_broker(sl_pt *t);

/* Publishes count messages with sequence ids first.. through the owner of
 * topic (producer `name`, payloads sl_pt_payload of 100 bytes, in
 * SendBatches of at most 10); message i gets key "k<(first+i) % nkeys>"
 * when nkeys > 0. Waits for every receipt (OK) or fails the test. */
void sl_ct_produce(sl_pt *t, const char *topic, const char *name, uint64_t first,
                   int count, int nkeys);
/* The same with payloads of len bytes (at least 24). */
void sl_ct_produce_len(sl_pt *t, const char *topic, const char *name, uint64_t first,
                       int count, int nkeys, size_t len);

/* Opens a stream to broker b and subscribes. SL_OK: Subscribed came;
 * SL_EREDIRECT: *redirect (if not NULL, caller frees) got the Redirect;
 * else the Closed status (err has its reason). */
/* GetTopicStats of topic, asked of broker b (fails the test on an error);
 * *row gets the subscription sub's row, or NULL if it has none. The caller
 * frees the result (protobuf_c_message_free_unpacked). */
Sluice__V1__TopicStats *sl_ct_topic_stats(sl_pt *t, int b, const char *topic, const char *sub,
                                          const Sluice__V1__SubscriptionStats **row);

sl_status sl_ct_subscribe(sl_pt *t, int b, const sl_ct_sub *sub, sl_ct_consumer *c,
                          Sluice__V1__Redirect **redirect, sl_err *err);

/* Subscribes at the partition's owner (looked up through a live broker). */
void sl_ct_subscribe_owner(sl_pt *t, const sl_ct_sub *sub, sl_ct_consumer *c);

void sl_ct_close(sl_ct_consumer *c);

sl_status sl_ct_flow(sl_ct_consumer *c, int32_t permits, sl_err *err);

/* One id per message; receipt_id != 0 asks for an AckReceipt. */
sl_status sl_ct_ack(sl_ct_consumer *c, const Sluice__V1__MessageId *ids, size_t n,
                    bool cumulative, uint64_t receipt_id, sl_err *err);
sl_status sl_ct_nack(sl_ct_consumer *c, const Sluice__V1__MessageId *ids, size_t n,
                     uint32_t delay_ms, sl_err *err);
sl_status sl_ct_seek(sl_ct_consumer *c, const Sluice__V1__MessageId *id,
                     int64_t publish_time_ms, sl_err *err);

/* The next response that is not an event counted in c (active changes,
 * seek done): a message, a receipt, a redirect or closed. SL_OK with *out
 * (caller frees), SL_ETIMEDOUT, or the stream's final status. */
sl_status sl_ct_next(sl_ct_consumer *c, int timeout_ms, Sluice__V1__ConsumeResponse **out,
                     sl_err *err);

/* One received message, kept. */
typedef struct sl_ct_msg {
  Sluice__V1__MessageId id;
  uint64_t seq;
  char key[32];
  char producer[64];
  uint32_t redelivery_count;
  bool payload_ok;             /* sl_pt_payload of seq */
} sl_ct_msg;

/* Receives until n messages came (receipts are skipped) or the stream
 * ended; a MessageBatch counts its messages, and what the n do not take of
 * one is kept for the next call. Returns SL_OK or the stream's status;
 * *got says how many. */
sl_status sl_ct_recv(sl_ct_consumer *c, sl_ct_msg *out, int n, int *got, int timeout_ms,
                     sl_err *err);

/* Waits for the AckReceipt of receipt_id (messages meanwhile are dropped).
 * Returns its status, or the stream's if it ended first. */
sl_status sl_ct_wait_receipt(sl_ct_consumer *c, uint64_t receipt_id, int timeout_ms,
                             sl_err *err);

#endif
