/* Consume stream handler: decode and check, resolve the owner, post each
 * request to the partition (partition_consume.c); responses back through
 * the stream's bounded queue. See consume.h. */
#include "broker/consume_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/authz.h"
#include "broker/service.h"
#include "common/log.h"
#include "common/rpc.h"
#include "metadata/md_names.h"

/* Responses queued beyond the write queue before reads pause: acks with
 * receipts and seeks are answered even by a consumer that reads nothing,
 * so their answers are bounded by pausing its requests. */
#define QUEUE_PAUSE 1024u

/* Bytes of a MessageBatch at most (a quarter of the gRPC limit if that is
 * smaller): large enough that 1 KiB messages fill max_batch first, small
 * enough that one response never holds the stream's writes for long. */
#define BATCH_BYTES (1u << 20)

/* ---- stream lifetime ---- */

void cs_ref(cstream *cs) { atomic_fetch_add(&cs->refs, 1); }

static void free_queue(cstream *cs) {
  while (cs->q_head != NULL) {
    cqueued *q = cs->q_head;
    cs->q_head = q->next;
    free(q);
  }
  cs->q_tail = NULL;
  cs->q_len = 0;
  cs->q_msgs = 0;
  sl_cbatch_reset(&cs->batch);
}

void cs_unref(cstream *cs) {
  if (atomic_fetch_sub(&cs->refs, 1) != 1) return;
  SL_ASSERT(cs->sub == NULL);
  if (cs->topic != NULL) pt_unref(cs->topic);
  free_queue(cs);
  sl_cbatch_release(&cs->batch);
  pthread_mutex_destroy(&cs->mu);
  free(cs->o.topic);
  free(cs->o.subscription);
  free(cs->o.consumer);
  free(cs->o.dead_letter_topic);
  free(cs);
}

static sl_consume *consume_of(void *ctx) { return ((sl_broker *)ctx)->consume; }

static void consume_start(sl_rpc_call *call, void *ctx) {
  cstream *cs = sl_xcalloc(1, sizeof(*cs));
  atomic_init(&cs->refs, 1); /* the call's, dropped in on_done */
  cs->c = consume_of(ctx);
  cs->authz = ((sl_broker *)ctx)->authz;
  cs->id = atomic_fetch_add(&cs->c->next_id, 1) + 1;
  pthread_mutex_init(&cs->mu, NULL);
  sl_rpc_call_ref(call);
  cs->call = call;
  cs->call_live = true;
  sl_rpc_call_set_user(call, cs);
}

/* ---- responses (any thread) ---- */

/* Sends queued responses while the write queue takes them. cs->mu held. */
static void flush_queue(cstream *cs) {
  while (cs->q_head != NULL && cs->call_live && cs->state != CS_ENDED) {
    cqueued *q = cs->q_head;
    Sluice__V1__ConsumeResponse *r =
        sluice__v1__consume_response__unpack(NULL, q->len, q->data);
    SL_ASSERT(r != NULL); /* we packed it */
    sl_status st = sl_broker_service_consume_write(cs->call, r);
    sluice__v1__consume_response__free_unpacked(r, NULL);
    if (st == SL_EBUSY) return; /* on_writable comes */
    cs->q_head = q->next;
    if (cs->q_head == NULL) cs->q_tail = NULL;
    cs->q_len--;
    cs->q_msgs -= q->msgs;
    free(q);
  }
  if (cs->reads_paused && cs->q_len < QUEUE_PAUSE / 2 && cs->call_live) {
    cs->reads_paused = false;
    sl_rpc_call_resume_reads(cs->call);
  }
}

/* Writes r, or queues it behind what waits for room; msgs is how many
 * user messages it carries. cs->mu held, the stream live. */
static void send_locked(cstream *cs, const Sluice__V1__ConsumeResponse *r, uint32_t msgs) {
  sl_status st = SL_EBUSY;
  if (cs->q_head == NULL) st = sl_broker_service_consume_write(cs->call, r);
  if (st != SL_EBUSY) return;
  size_t n = sluice__v1__consume_response__get_packed_size(r);
  cqueued *q = sl_xcalloc(1, sizeof(*q) + n);
  q->msgs = msgs;
  q->len = sluice__v1__consume_response__pack(r, q->data);
  if (cs->q_tail != NULL) cs->q_tail->next = q;
  else cs->q_head = q;
  cs->q_tail = q;
  cs->q_len++;
  cs->q_msgs += msgs;
  if (cs->q_len >= QUEUE_PAUSE && !cs->reads_paused) {
    cs->reads_paused = true;
    sl_rpc_call_pause_reads(cs->call);
  }
}

static bool live_locked(const cstream *cs) { return cs->call_live && cs->state != CS_ENDED; }

/* Sends the open batch as one response. cs->mu held, the stream live. */
static void flush_batch_locked(cstream *cs) {
  uint32_t n = sl_cbatch_count(&cs->batch);
  if (n == 0) return;
  Sluice__V1__ConsumeResponse r = SLUICE__V1__CONSUME_RESPONSE__INIT;
  sl_cbatch_response(&cs->batch, &r);
  send_locked(cs, &r, n);
  sl_cbatch_reset(&cs->batch);
}

size_t cs_send(cstream *cs, const Sluice__V1__ConsumeResponse *r) {
  pthread_mutex_lock(&cs->mu);
  size_t waiting = 0;
  if (live_locked(cs)) {
    flush_batch_locked(cs); /* messages of this round go first */
    send_locked(cs, r, 0);
    waiting = cs->q_len;
  }
  pthread_mutex_unlock(&cs->mu);
  return waiting;
}

void cs_send_message(cstream *cs, const Sluice__V1__Message *m) {
  Sluice__V1__ConsumeResponse r = SLUICE__V1__CONSUME_RESPONSE__INIT;
  r.kind_case = SLUICE__V1__CONSUME_RESPONSE__KIND_MESSAGE;
  r.message = (Sluice__V1__Message *)m;
  uint32_t max = cs->o.max_batch;
  size_t cap = cs->c->batch_bytes;
  pthread_mutex_lock(&cs->mu);
  if (!live_locked(cs)) {
    pthread_mutex_unlock(&cs->mu);
    return;
  }
  if (max <= 1) {
    send_locked(cs, &r, 1);
  } else {
    if (sl_cbatch_bytes_with(&cs->batch, m) > cap) flush_batch_locked(cs);
    /* A message over the cap on its own goes alone, as without batches. */
    if (sl_cbatch_bytes_with(&cs->batch, m) > cap) send_locked(cs, &r, 1);
    else sl_cbatch_add(&cs->batch, m);
    if (sl_cbatch_count(&cs->batch) >= max) flush_batch_locked(cs);
  }
  pthread_mutex_unlock(&cs->mu);
}

void cs_flush(cstream *cs) {
  pthread_mutex_lock(&cs->mu);
  if (live_locked(cs)) flush_batch_locked(cs);
  pthread_mutex_unlock(&cs->mu);
}

size_t cs_unwritten(cstream *cs) {
  pthread_mutex_lock(&cs->mu);
  size_t n = cs->q_msgs + sl_cbatch_count(&cs->batch);
  pthread_mutex_unlock(&cs->mu);
  return n;
}

void cs_end(cstream *cs, sl_status st, const char *msg,
            const Sluice__V1__Redirect *redirect) {
  Sluice__V1__Redirect rd = SLUICE__V1__REDIRECT__INIT;
  Sluice__V1__Closed closed = SLUICE__V1__CLOSED__INIT;
  Sluice__V1__ConsumeResponse resp = SLUICE__V1__CONSUME_RESPONSE__INIT;
  if (st == SL_EREDIRECT) {
    if (redirect == NULL) {
      rd.partition = cs->o.topic; /* owner unknown: look it up again */
      redirect = &rd;
    }
    resp.kind_case = SLUICE__V1__CONSUME_RESPONSE__KIND_REDIRECT;
    resp.redirect = (Sluice__V1__Redirect *)redirect;
  } else {
    closed.status = (Sluice__V1__Status)(-(int)st);
    closed.reason = (char *)(msg != NULL ? msg : sl_status_str(st));
    resp.kind_case = SLUICE__V1__CONSUME_RESPONSE__KIND_CLOSED;
    resp.closed = &closed;
  }
  pthread_mutex_lock(&cs->mu);
  if (cs->call_live && cs->state != CS_ENDED) {
    cs->state = CS_ENDED;
    free_queue(cs); /* undelivered messages are unacked: redelivered */
    sl_rpc_call_finish(cs->call, st, msg, &resp.base);
  }
  pthread_mutex_unlock(&cs->mu);
}

bool cs_opened(cstream *cs, bool active) {
  Sluice__V1__Subscribed sub = SLUICE__V1__SUBSCRIBED__INIT;
  sub.consumer_name = cs->o.consumer;
  sub.active = active;
  Sluice__V1__ConsumeResponse resp = SLUICE__V1__CONSUME_RESPONSE__INIT;
  resp.kind_case = SLUICE__V1__CONSUME_RESPONSE__KIND_SUBSCRIBED;
  resp.subscribed = &sub;
  pthread_mutex_lock(&cs->mu);
  bool live = cs->call_live && cs->state == CS_SUBSCRIBING;
  if (live) {
    cs->state = CS_OPEN;
    /* The first response of the stream: the write queue is empty. */
    sl_broker_service_consume_write(cs->call, &resp);
    sl_rpc_call_resume_reads(cs->call);
  }
  pthread_mutex_unlock(&cs->mu);
  return live;
}

/* ---- subscribe ---- */

static void redirect_to(cstream *cs, const sl_ownership_owner *o) {
  Sluice__V1__Redirect rd = SLUICE__V1__REDIRECT__INIT;
  rd.partition = (char *)o->partition;
  rd.broker_address = (char *)o->address;
  rd.broker_id = (char *)o->broker_id;
  rd.epoch = o->epoch;
  char msg[SL_ERR_MAX];
  snprintf(msg, sizeof(msg), "partition %s is owned by broker %s at %s",
           o->partition, o->broker_id, o->address);
  cs_end(cs, SL_EREDIRECT, msg, &rd);
}

static void resolved(sl_status st, const char *msg, const sl_ownership_owner *o,
                     void *arg) {
  cstream *cs = arg;
  sl_produce *p = cs->c->o.produce;
  if (st != SL_OK) {
    cs_end(cs, st, msg, NULL);
  } else if (!o->local) {
    redirect_to(cs, o);
  } else {
    uint64_t epoch = o->epoch;
    sl_ownership *own = atomic_load(&p->own);
    if (own == NULL || !sl_ownership_owns(own, o->partition, &epoch)) epoch = o->epoch;
    ptopic *t = pt_get(p, o->partition, epoch);
    pthread_mutex_lock(&cs->mu);
    cs->topic = t; /* released with the stream */
    pthread_mutex_unlock(&cs->mu);
    pc_post_subscribe(cs); /* takes over this reference */
    return;
  }
  cs_unref(cs);
}

static sl_status check_subscribe(const Sluice__V1__Subscribe *s, sl_err *err) {
  sl_status st = sl_md_check_partition(s->topic, NULL, NULL, err);
  if (st != SL_OK) return st;
  st = sl_md_check_segment("subscription name", s->subscription, err);
  if (st != SL_OK) return st;
  if (s->consumer_name[0] != '\0') {
    st = sl_md_check_segment("consumer name", s->consumer_name, err);
    if (st != SL_OK) return st;
  }
  if ((int)s->type < SL_DISP_EXCLUSIVE || (int)s->type > SL_DISP_KEY_SHARED)
    return sl_err_set(err, SL_EINVAL, "subscription %s: unknown subscription type %d "
                      "(exclusive 0, failover 1, shared 2, key_shared 3)",
                      s->subscription, (int)s->type);
  if ((int)s->initial_position < 0 || (int)s->initial_position > 1)
    return sl_err_set(err, SL_EINVAL, "subscription %s: unknown initial position %d "
                      "(latest 0, earliest 1)", s->subscription,
                      (int)s->initial_position);
  if (s->dead_letter_topic[0] != '\0')
    return sl_md_check_topic(s->dead_letter_topic, NULL, err);
  return SL_OK;
}

/* True when a dead-letter topic is named outside the topic's namespace:
 * the broker publishes there with its own rights, so the consumer must hold
 * the produce right on it. */
static bool dlq_elsewhere(const csub_opts *o) {
  const char *d = o->dead_letter_topic, *t = o->topic;
  if (d == NULL || d[0] == '\0') return false;
  size_t dn = strcspn(d, "/"), tn = strcspn(t, "/");
  return dn != tn || strncmp(d, t, dn) != 0;
}

static void subscribe_allowed(sl_status st, const char *msg, void *arg) {
  cstream *cs = arg;
  if (st == SL_OK && !cs->dlq_checked && dlq_elsewhere(&cs->o)) {
    cs->dlq_checked = true;
    sl_authz_check(cs->authz, cs->call, cs->o.dead_letter_topic, SL_AUTHZ_PRODUCE,
                   subscribe_allowed, cs);
    return;
  }
  sl_ownership *own = atomic_load(&cs->c->o.produce->own);
  if (st == SL_OK && own == NULL) {
    st = SL_EUNAVAIL;
    msg = "broker is stopping";
  }
  sl_rpc_call *call = cs->call;
  if (st != SL_OK) {
    cs_end(cs, st, msg, NULL);
    cs_unref(cs);
  } else {
    sl_ownership_resolve(own, cs->o.topic, false, resolved, cs); /* takes our reference */
  }
  sl_rpc_call_unref(call); /* on_subscribe's: the second check reads the call */
}

static void on_subscribe(cstream *cs, const Sluice__V1__Subscribe *s) {
  sl_err err = SL_ERR_INIT;
  sl_status st = check_subscribe(s, &err);
  sl_ownership *own = atomic_load(&cs->c->o.produce->own);
  if (st == SL_OK && own == NULL) st = sl_err_set(&err, SL_EUNAVAIL, "broker is starting");
  pthread_mutex_lock(&cs->mu);
  if (st == SL_OK && cs->state != CS_NEW)
    st = sl_err_set(&err, SL_EPRECOND, "subscribe: already subscribed on this stream");
  if (st != SL_OK) {
    pthread_mutex_unlock(&cs->mu);
    cs_end(cs, st, err.msg, NULL);
    return;
  }
  cs->state = CS_SUBSCRIBING;
  csub_opts *o = &cs->o;
  o->topic = sl_xstrdup(s->topic);
  o->subscription = sl_xstrdup(s->subscription);
  if (s->consumer_name[0] != '\0') {
    o->consumer = sl_xstrdup(s->consumer_name);
  } else {
    char gen[32];
    snprintf(gen, sizeof(gen), "c-%llu", (unsigned long long)cs->id);
    o->consumer = sl_xstrdup(gen);
  }
  o->type = (sl_disp_type)s->type;
  o->earliest = s->initial_position == SLUICE__V1__INITIAL_POSITION__INITIAL_POSITION_EARLIEST;
  o->priority = s->priority_level;
  o->ack_timeout_ms = s->ack_timeout_ms;
  o->max_redeliveries = s->max_redeliveries;
  o->nack_delay_ms = s->nack_delay_ms;
  o->dead_letter_topic = sl_xstrdup(s->dead_letter_topic);
  o->max_batch = s->max_messages_per_response;
  /* Requests wait until the subscription is joined. */
  sl_rpc_call_pause_reads(cs->call);
  pthread_mutex_unlock(&cs->mu);
  cs_ref(cs);
  sl_rpc_call_ref(cs->call); /* the stream may end while the checks wait */
  sl_authz_check(cs->authz, cs->call, o->topic, SL_AUTHZ_CONSUME, subscribe_allowed, cs);
}

/* ---- requests after subscribe ---- */

static void consume_message(sl_rpc_call *call, const Sluice__V1__ConsumeRequest *msg,
                            void *ctx) {
  (void)ctx;
  cstream *cs = sl_rpc_call_user(call);
  if (msg == NULL) { /* half-close: the consumer is done */
    cs_end(cs, SL_OK, "consumer closed its side", NULL);
    return;
  }
  if (msg->kind_case == SLUICE__V1__CONSUME_REQUEST__KIND_SUBSCRIBE) {
    on_subscribe(cs, msg->subscribe);
    return;
  }
  pthread_mutex_lock(&cs->mu);
  cstream_state state = cs->state;
  pthread_mutex_unlock(&cs->mu);
  if (state == CS_ENDED) return;
  if (state != CS_OPEN) {
    cs_end(cs, SL_EINVAL, "request before subscribe: subscribe first", NULL);
    return;
  }
  char msgbuf[SL_ERR_MAX];
  switch (msg->kind_case) {
    case SLUICE__V1__CONSUME_REQUEST__KIND_FLOW:
      if (msg->flow->permits <= 0) {
        snprintf(msgbuf, sizeof(msgbuf), "subscription %s: permits must be > 0 (got %d)",
                 cs->o.subscription, msg->flow->permits);
        cs_end(cs, SL_EINVAL, msgbuf, NULL);
        return;
      }
      cs_ref(cs);
      pc_post_flow(cs, msg->flow->permits);
      return;
    case SLUICE__V1__CONSUME_REQUEST__KIND_ACK:
      if (msg->ack->type == SLUICE__V1__ACK_TYPE__ACK_TYPE_CUMULATIVE &&
          cs->o.type != SL_DISP_EXCLUSIVE && cs->o.type != SL_DISP_FAILOVER) {
        snprintf(msgbuf, sizeof(msgbuf), "subscription %s: cumulative ack needs an "
                 "exclusive or failover subscription", cs->o.subscription);
        cs_end(cs, SL_EINVAL, msgbuf, NULL);
        return;
      }
      cs_ref(cs);
      pc_post_ack(cs, msg->ack);
      return;
    case SLUICE__V1__CONSUME_REQUEST__KIND_NACK:
      cs_ref(cs);
      pc_post_nack(cs, msg->nack);
      return;
    case SLUICE__V1__CONSUME_REQUEST__KIND_SEEK:
      if ((msg->seek->id != NULL) == (msg->seek->publish_time_ms != 0)) {
        cs_end(cs, SL_EINVAL, "seek: set exactly one of id and publish_time_ms", NULL);
        return;
      }
      cs_ref(cs);
      pc_post_seek(cs, msg->seek);
      return;
    default:
      cs_end(cs, SL_EINVAL, "empty ConsumeRequest: set subscribe, flow, ack, nack or seek",
             NULL);
  }
}

static void consume_writable(sl_rpc_call *call, void *ctx) {
  (void)ctx;
  cstream *cs = sl_rpc_call_user(call);
  pthread_mutex_lock(&cs->mu);
  flush_queue(cs);
  bool refill = cs->q_head == NULL && cs->state == CS_OPEN;
  pthread_mutex_unlock(&cs->mu);
  if (refill) {
    cs_ref(cs);
    pc_post_refill(cs);
  }
}

static void consume_done(sl_rpc_call *call, bool cancelled, void *ctx) {
  (void)cancelled;
  (void)ctx;
  cstream *cs = sl_rpc_call_user(call);
  pthread_mutex_lock(&cs->mu);
  cs->call_live = false;
  cs->state = CS_ENDED;
  free_queue(cs);
  bool attached = cs->topic != NULL;
  pthread_mutex_unlock(&cs->mu);
  /* The partition lets the consumer go: its unacked messages go to others. */
  if (attached) pc_post_leave(cs); /* takes over the call's reference */
  sl_rpc_call_unref(call);
  if (!attached) cs_unref(cs);
}

void sl_consume_handlers(sl_broker_service_handlers *h) {
  h->consume_start = consume_start;
  h->consume_message = consume_message;
  h->consume_writable = consume_writable;
  h->consume_done = consume_done;
}

/* ---- the consume state ---- */

sl_status sl_consume_create(const sl_consume_opts *opts, sl_consume **out, sl_err *err) {
  if (opts == NULL || opts->produce == NULL)
    return sl_err_set(err, SL_EINVAL, "consume: the produce state is required");
  sl_consume *c = sl_xcalloc(1, sizeof(*c));
  c->o = *opts;
  if (c->o.window == 0) c->o.window = 256;
  if (c->o.max_response_bytes == 0) c->o.max_response_bytes = SL_RPC_DEFAULT_MAX_MESSAGE;
  c->batch_bytes = c->o.max_response_bytes / 4 < BATCH_BYTES ? c->o.max_response_bytes / 4
                                                             : BATCH_BYTES;
  if (c->o.cache_bytes == 0) c->o.cache_bytes = 16u << 20;
  if (c->o.tick_ms <= 0) c->o.tick_ms = 50;
  atomic_init(&c->next_id, 0);
  sl_metrics *reg = sl_metrics_default();
  /* Metrics are best effort: a failed registration leaves a NULL handle. */
  sl_metrics_register_counter(reg, "sluice_broker_deliver_messages_total",
                              "messages sent to consumers, redeliveries included",
                              NULL, &c->m_msgs, NULL);
  sl_metrics_register_counter(reg, "sluice_broker_redeliver_messages_total",
                              "messages sent again (nack, ack timeout, consumer gone)",
                              NULL, &c->m_redelivered, NULL);
  sl_metrics_register_counter(reg, "sluice_broker_ack_messages_total",
                              "messages acknowledged by consumers", NULL, &c->m_acks,
                              NULL);
  pc_listener_init(c);
  sl_produce_set_listener(opts->produce, &c->listener);
  *out = c;
  return SL_OK;
}

void sl_consume_set_dead_letter(sl_consume *c, sl_dead_letter *dl) {
  atomic_store(&c->dead_letter, dl);
}

void sl_consume_destroy(sl_consume *c) {
  if (c == NULL) return;
  free(c);
}
