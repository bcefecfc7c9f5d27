/* Consume internals shared by consume.c (streams) and partition_consume.c
 * (the partition's subscriptions). See consume.h for the design note. */
#ifndef SL_BROKER_CONSUME_INT_H
#define SL_BROKER_CONSUME_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "broker/consume.h"
#include "broker/consume_batch.h"
#include "broker/dispatcher.h"
#include "broker/produce_int.h"
#include "common/metrics.h"

typedef struct psub psub;

typedef enum cstream_state {
  CS_NEW = 0,         /* waiting for subscribe */
  CS_SUBSCRIBING = 1, /* resolving the owner, loading, opening the cursor */
  CS_OPEN = 2,        /* Subscribed sent */
  CS_ENDED = 3,       /* finish called or call over */
} cstream_state;

/* A response that found the write queue full, packed, waiting for
 * on_writable (in order). */
typedef struct cqueued {
  struct cqueued *next;
  uint32_t msgs;             /* user messages in it (invariant 2 counts) */
  size_t len;
  uint8_t data[];
} cqueued;

/* What Subscribe asked for (copied; read-only once subscribing). */
typedef struct csub_opts {
  char *topic;
  char *subscription;
  char *consumer;            /* name in use (generated if empty) */
  sl_disp_type type;
  bool earliest;
  uint32_t priority;
  uint32_t ack_timeout_ms;
  uint32_t max_redeliveries; /* 0 = namespace policy */
  uint32_t nack_delay_ms;
  char *dead_letter_topic;   /* "" = <topic>-<subscription>-DLQ */
  uint32_t max_batch;        /* messages per response; <= 1: one Message */
} csub_opts;

/* One Consume stream. Refcounted: the call holds one until on_done, the
 * partition one while the consumer is attached there, each posted task one. */
typedef struct cstream {
  atomic_int refs;
  sl_consume *c;
  struct sl_authz *authz;    /* the broker's (authz.h) */
  bool dlq_checked;          /* the dead-letter topic's right was checked */
  uint64_t id;               /* consumer id, unique in the broker */
  pthread_mutex_t mu;        /* guards call, call_live, state, queue,
                                batch */
  sl_rpc_call *call;         /* referenced while call_live */
  bool call_live;            /* on_done has not run */
  cstream_state state;
  cqueued *q_head, *q_tail;  /* responses waiting for room */
  size_t q_len;
  size_t q_msgs;             /* user messages in the queue */
  sl_cbatch batch;           /* messages of this round not yet sent: out
                                with cs_flush or before any other response */
  bool reads_paused;         /* too many responses queued */
  csub_opts o;
  ptopic *topic;             /* referenced once the owner is us (set under
                                mu, then never changed) */
  /* Partition serial only: */
  psub *sub;                 /* the subscription joined, or NULL */
  bool active;               /* failover: active (set during the join) */
  int64_t client_credit;     /* permits granted, not yet given on */
  int64_t disp_credit;       /* given to the dispatcher, not yet used */
  bool refill_posted;
  bool end_sent;             /* EndOfTopic sent (since the last seek) */
  struct cstream *next;      /* in its subscription's or the waiters' list */
} cstream;

struct sl_consume {
  sl_consume_opts o;
  size_t batch_bytes;        /* cap of one MessageBatch (consume.c) */
  atomic_uint_fast64_t next_id;
  pt_listener listener;      /* the partition hooks (partition_consume.c) */
  sl_dead_letter *_Atomic dead_letter; /* sl_consume_set_dead_letter */
  sl_metrics_counter *m_msgs, *m_redelivered, *m_acks;
};

/* ---- consume.c (streams); any thread, no partition lock held ---- */
void cs_ref(cstream *cs);
void cs_unref(cstream *cs);
/* Queues one response in order (packed now), after the messages of the
 * open batch; dropped once the stream ended. Returns the responses now
 * waiting for room. */
size_t cs_send(cstream *cs, const Sluice__V1__ConsumeResponse *r);
/* One message for the consumer (borrowed for the call). With max_batch > 1
 * it joins the open batch, which goes out once full (max_batch messages or
 * the byte cap) or at cs_flush; else it goes out alone at once. */
void cs_send_message(cstream *cs, const Sluice__V1__Message *m);
/* Sends the open batch, if any (the end of a dispatch round). */
void cs_flush(cstream *cs);
/* Messages sent to the stream and not yet written: queued or in the open
 * batch (consume.h invariant 2). */
size_t cs_unwritten(cstream *cs);
/* Ends the stream: SL_EREDIRECT sends redirect (NULL: the partition, owner
 * unknown), anything else a Closed with st and msg first. */
void cs_end(cstream *cs, sl_status st, const char *msg,
            const Sluice__V1__Redirect *redirect);
/* Subscribed was sent: the stream takes acks, flows and seeks. False if
 * the call is already over. */
bool cs_opened(cstream *cs, bool active);

/* ---- partition_consume.c (on the partition's serial) ---- */
/* Fills c->listener. */
void pc_listener_init(sl_consume *c);
/* Tasks posted by the handler, each taking over one stream reference. */
void pc_post_subscribe(cstream *cs);
void pc_post_flow(cstream *cs, int32_t permits);
void pc_post_ack(cstream *cs, const Sluice__V1__Ack *a);
void pc_post_nack(cstream *cs, const Sluice__V1__Nack *n);
void pc_post_seek(cstream *cs, const Sluice__V1__Seek *s);
void pc_post_leave(cstream *cs);
/* The write queue drained: give the dispatcher permits again. */
void pc_post_refill(cstream *cs);

#endif
