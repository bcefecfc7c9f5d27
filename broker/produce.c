/* Produce stream handler: decode, check, encode the stored form, hand to the
 * partition (produce_topic.c); receipts and redirects back. See produce.h. */
#include "broker/produce_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/authz.h"
#include "broker/service.h"
#include "common/clock.h"
#include "common/log.h"
#include "entry.pb-c.h"
#include "metadata/md_names.h"
#include "common/status.h"

static size_t per_producer_max(const sl_produce *p) {
  return p->o.max_inflight_per_producer ? p->o.max_inflight_per_producer : 8u << 20;
}

static size_t broker_max(const sl_produce *p) {
  return p->o.max_inflight_bytes ? p->o.max_inflight_bytes : 256u << 20;
}

/* ---- stream lifetime ---- */

void ps_ref(pstream *ps) { atomic_fetch_add(&ps->refs, 1); }

void ps_unref(pstream *ps) {
  if (atomic_fetch_sub(&ps->refs, 1) != 1) return;
  SL_ASSERT(ps->rq_head == NULL && ps->topic == NULL && !ps->paused_global);
  pthread_mutex_destroy(&ps->mu);
  free(ps->producer);
  free(ps);
}

static sl_produce *produce_of(void *ctx) { return ((sl_broker *)ctx)->produce; }

static void produce_start(sl_rpc_call *call, void *ctx) {
  pstream *ps = sl_xcalloc(1, sizeof(*ps));
  atomic_init(&ps->refs, 1); /* the call's, dropped in on_done */
  ps->p = produce_of(ctx);
  ps->authz = ((sl_broker *)ctx)->authz;
  pthread_mutex_init(&ps->mu, NULL);
  sl_rpc_call_ref(call);
  ps->call = call;
  ps->call_live = true;
  sl_rpc_call_set_user(call, ps);
}

/* ---- answers (any thread) ---- */

static void receipt_to_msg(const preceipt *r, Sluice__V1__SendReceipt *out,
                           Sluice__V1__MessageId *id) {
  sluice__v1__send_receipt__init(out);
  out->sequence_id = r->seq;
  out->last_sequence_id = r->last_seq;
  out->count = r->count;
  out->status = (Sluice__V1__Status)(-(int)r->st);
  out->duplicate = r->duplicate;
  out->error = (char *)r->error;
  if (r->has_id) {
    sluice__v1__message_id__init(id);
    id->ledger_id = r->ledger_id;
    id->entry_id = r->entry_id;
    id->batch_index = r->batch_index;
    id->batch_size = r->batch_size;
    id->partition = r->partition;
    out->id = id;
  }
}

/* Sends queued receipts while the write queue takes them. ps->mu held. */
static void flush_receipts(pstream *ps) {
  while (ps->rq_head != NULL && ps->call_live) {
    preceipt *r = ps->rq_head;
    Sluice__V1__SendReceipt rc;
    Sluice__V1__MessageId id;
    receipt_to_msg(r, &rc, &id);
    Sluice__V1__ProduceResponse resp = SLUICE__V1__PRODUCE_RESPONSE__INIT;
    resp.kind_case = SLUICE__V1__PRODUCE_RESPONSE__KIND_RECEIPT;
    resp.receipt = &rc;
    sl_status st = sl_broker_service_produce_write(ps->call, &resp);
    if (st == SL_EBUSY) return; /* on_writable comes */
    ps->rq_head = r->next;
    if (ps->rq_head == NULL) ps->rq_tail = NULL;
    free(r);
  }
}

static void free_receipts(pstream *ps) {
  while (ps->rq_head != NULL) {
    preceipt *r = ps->rq_head;
    ps->rq_head = r->next;
    free(r);
  }
  ps->rq_tail = NULL;
}

/* Back-pressure (invariant 4): resume once under half of both limits.
 * ps->mu held; returns true if the broker-wide limit still holds it. */
static bool maybe_resume(pstream *ps) {
  sl_produce *p = ps->p;
  if (!ps->paused || !ps->call_live) return false;
  if (ps->inflight > per_producer_max(p) / 2) return false;
  if (atomic_load(&p->inflight) > broker_max(p) / 2) return true;
  ps->paused = false;
  sl_rpc_call_resume_reads(ps->call);
  return false;
}

static void after_release(pstream *ps, size_t bytes, bool *wait_global) {
  sl_produce *p = ps->p;
  SL_ASSERT(ps->inflight >= bytes);
  ps->inflight -= bytes;
  size_t before = atomic_fetch_sub(&p->inflight, bytes);
  *wait_global = maybe_resume(ps);
  /* Crossing under half of the broker limit wakes streams paused for it. */
  if (before > broker_max(p) / 2 && before - bytes <= broker_max(p) / 2)
    *wait_global = true;
}

static void finish_if_drained(pstream *ps);

void ps_release(pstream *ps, size_t bytes) {
  bool wake;
  pthread_mutex_lock(&ps->mu);
  after_release(ps, bytes, &wake);
  finish_if_drained(ps);
  pthread_mutex_unlock(&ps->mu);
  if (wake) produce_resume_paused(ps->p);
}

void ps_answer(pstream *ps, const preceipt *r, size_t bytes) {
  bool wake;
  pthread_mutex_lock(&ps->mu);
  if (ps->call_live && ps->state == PS_OPEN) {
    preceipt *q = sl_xcalloc(1, sizeof(*q));
    *q = *r;
    q->next = NULL;
    if (ps->rq_tail != NULL) ps->rq_tail->next = q;
    else ps->rq_head = q;
    ps->rq_tail = q;
    flush_receipts(ps);
  }
  after_release(ps, bytes, &wake);
  finish_if_drained(ps);
  pthread_mutex_unlock(&ps->mu);
  if (wake) produce_resume_paused(ps->p);
}

void produce_resume_paused(sl_produce *p) {
  pthread_mutex_lock(&p->mu);
  pstream **pp = &p->paused;
  while (*pp != NULL) {
    pstream *ps = *pp;
    pthread_mutex_lock(&ps->mu);
    bool still = maybe_resume(ps) && ps->paused;
    if (!ps->paused || !ps->call_live) still = false;
    if (!still) {
      *pp = ps->paused_next;
      ps->paused_global = false;
      ps->paused_next = NULL;
      pthread_mutex_unlock(&ps->mu);
      ps_unref(ps);
      continue;
    }
    pthread_mutex_unlock(&ps->mu);
    pp = &ps->paused_next;
  }
  pthread_mutex_unlock(&p->mu);
}

void ps_end(pstream *ps, sl_status st, const char *msg,
            const Sluice__V1__Redirect *redirect, const char *partition) {
  Sluice__V1__Redirect rd = SLUICE__V1__REDIRECT__INIT;
  Sluice__V1__ProduceResponse resp = SLUICE__V1__PRODUCE_RESPONSE__INIT;
  if (st == SL_EREDIRECT) {
    if (redirect == NULL) {
      rd.partition = (char *)partition; /* owner unknown: look up again */
      redirect = &rd;
    }
    resp.kind_case = SLUICE__V1__PRODUCE_RESPONSE__KIND_REDIRECT;
    resp.redirect = (Sluice__V1__Redirect *)redirect;
  }
  pthread_mutex_lock(&ps->mu);
  if (ps->call_live && ps->state != PS_ENDED) {
    ps->state = PS_ENDED;
    free_receipts(ps);
    sl_rpc_call_finish(ps->call, st, msg, st == SL_EREDIRECT ? &resp.base : NULL);
  }
  pthread_mutex_unlock(&ps->mu);
}

bool ps_opened(pstream *ps, ptopic *t, const char *producer, int64_t last_seq,
               const sl_dedup_id *last_id) {
  pthread_mutex_lock(&ps->mu);
  if (!ps->call_live || ps->state != PS_OPENING) {
    pthread_mutex_unlock(&ps->mu);
    return false;
  }
  pt_ref(t);
  ps->topic = t;
  char *name = sl_xstrdup(producer); /* producer may be ps->producer itself */
  free(ps->producer);
  ps->producer = name;
  ps->state = PS_OPEN;
  Sluice__V1__ProducerOpened op = SLUICE__V1__PRODUCER_OPENED__INIT;
  Sluice__V1__MessageId id = SLUICE__V1__MESSAGE_ID__INIT;
  op.producer_name = ps->producer;
  op.last_sequence_id = last_seq;
  op.max_message_bytes = t->max_message_bytes;
  op.deduplication = t->dedup_on;
  if (last_id != NULL) {
    id.ledger_id = last_id->ledger_id;
    id.entry_id = last_id->entry_id;
    id.batch_index = last_id->batch_index;
    id.partition = t->partition_index;
    op.last_id = &id;
  }
  Sluice__V1__ProduceResponse resp = SLUICE__V1__PRODUCE_RESPONSE__INIT;
  resp.kind_case = SLUICE__V1__PRODUCE_RESPONSE__KIND_OPENED;
  resp.opened = &op;
  /* The first message of the stream: the write queue is empty. */
  sl_broker_service_produce_write(ps->call, &resp);
  sl_rpc_call_resume_reads(ps->call);
  pthread_mutex_unlock(&ps->mu);
  return true;
}

/* A client that half-closed gets the end of the stream once every message
 * is answered. ps->mu held. */
static void finish_if_drained(pstream *ps) {
  if (ps->half_closed && ps->inflight == 0 && ps->rq_head == NULL &&
      ps->call_live && ps->state != PS_ENDED) {
    ps->state = PS_ENDED;
    sl_rpc_call_finish(ps->call, SL_OK, NULL, NULL);
  }
}

/* ---- open ---- */

static void redirect_to(pstream *ps, const sl_ownership_owner *o) {
  Sluice__V1__Redirect rd = SLUICE__V1__REDIRECT__INIT;
  rd.partition = (char *)o->partition;
  rd.broker_address = (char *)o->address;
  rd.broker_id = (char *)o->broker_id;
  rd.epoch = o->epoch;
  char msg[SL_ERR_MAX];
  snprintf(msg, sizeof(msg), "partition %s is owned by broker %s at %s", o->partition,
           o->broker_id, o->address);
  ps_end(ps, SL_EREDIRECT, msg, &rd, o->partition);
}

static void resolved(sl_status st, const char *msg, const sl_ownership_owner *o,
                     void *arg) {
  pstream *ps = arg;
  sl_produce *p = ps->p;
  if (st != SL_OK) {
    ps_end(ps, st, msg, NULL, NULL);
  } else if (!o->local) {
    redirect_to(ps, o);
  } else {
    /* The resolve's epoch is the one acquired for us; every write the
     * partition makes is checked against the current epoch by the
     * metadata service, so a stale one only fails there (fenced). */
    uint64_t epoch = o->epoch;
    sl_ownership *own = atomic_load(&p->own);
    if (!sl_ownership_owns(own, o->partition, &epoch)) epoch = o->epoch;
    pt_attach(p, o->partition, epoch, ps);
  }
  ps_unref(ps);
}

static void open_allowed(sl_status st, const char *msg, void *arg) {
  pstream *ps = arg;
  sl_ownership *own = atomic_load(&ps->p->own);
  if (st == SL_OK && own == NULL) {
    st = SL_EUNAVAIL;
    msg = "broker is stopping";
  }
  sl_rpc_call *call = ps->call;
  if (st != SL_OK) {
    ps_end(ps, st, msg, NULL, NULL);
    ps_unref(ps);
  } else {
    sl_ownership_resolve(own, ps->opening, false, resolved, ps); /* takes our reference */
  }
  sl_rpc_call_unref(call); /* on_open's: ps->opening lives in the call's arena */
}

static void on_open(pstream *ps, const Sluice__V1__ProducerOpen *op) {
  sl_err err = SL_ERR_INIT;
  size_t topic_len;
  sl_status st = sl_md_check_partition(op->topic, &topic_len, NULL, &err);
  if (st == SL_OK && op->producer_name[0] != '\0')
    st = sl_md_check_segment("producer name", op->producer_name, &err);
  sl_ownership *own = atomic_load(&ps->p->own);
  if (st == SL_OK && own == NULL)
    st = sl_err_set(&err, SL_EUNAVAIL, "broker is starting");
  pthread_mutex_lock(&ps->mu);
  if (st == SL_OK && ps->state != PS_NEW)
    st = sl_err_set(&err, SL_EPRECOND, "producer already opened on this stream");
  if (st != SL_OK) {
    pthread_mutex_unlock(&ps->mu);
    ps_end(ps, st, err.msg, NULL, NULL);
    return;
  }
  ps->state = PS_OPENING;
  ps->producer = sl_xstrdup(op->producer_name);
  ps->resume = op->resume;
  size_t n = strlen(op->topic) + 1;
  char *topic = sl_rpc_call_alloc(ps->call, n);
  memcpy(topic, op->topic, n);
  ps->opening = topic;
  /* Sends wait until the partition is loaded. */
  sl_rpc_call_pause_reads(ps->call);
  pthread_mutex_unlock(&ps->mu);
  ps_ref(ps);
  sl_rpc_call_ref(ps->call); /* the stream may end while the check waits */
  sl_authz_check(ps->authz, ps->call, topic, SL_AUTHZ_PRODUCE, open_allowed, ps);
}

/* ---- sends ---- */

/* The stored form of one message, with its field-1 tag and length, so that
 * the partition builds an entry by concatenation (entry.proto). */
static void encode(pmember *m, const Sluice__V1__SendRequest *s, const char *producer) {
  Sluice__V1__StoredMessage sm = SLUICE__V1__STORED_MESSAGE__INIT;
  sm.producer_name = (char *)producer;
  sm.sequence_id = s->sequence_id;
  sm.key = s->key;
  sm.n_properties = s->n_properties;
  sm.properties = s->properties;
  sm.event_time_ms = s->event_time_ms;
  sm.publish_time_ms = m->publish_ms;
  sm.deliver_at_ms = s->deliver_at_ms;
  sm.priority = s->priority;
  sm.payload = s->payload;
  size_t n = sluice__v1__stored_message__get_packed_size(&sm);
  m->wire = malloc(n + 11);
  if (m->wire == NULL) abort();
  size_t k = 0;
  m->wire[k++] = 0x0a; /* field 1, length-delimited */
  for (size_t v = n; ; v >>= 7) {
    m->wire[k++] = (uint8_t)((v & 0x7f) | (v >= 0x80 ? 0x80 : 0));
    if (v < 0x80) break;
  }
  m->wire_len = k + sluice__v1__stored_message__pack(&sm, m->wire + k);
}

static void on_sends(pstream *ps, Sluice__V1__SendRequest *const *sends, size_t n) {
  sl_produce *p = ps->p;
  pthread_mutex_lock(&ps->mu);
  if (ps->state != PS_OPEN) {
    bool before_open = ps->state == PS_NEW;
    pthread_mutex_unlock(&ps->mu);
    if (before_open)
      ps_end(ps, SL_EPRECOND, "send before open: open the producer first", NULL, NULL);
    return;
  }
  ptopic *t = ps->topic;
  pthread_mutex_unlock(&ps->mu);

  pbatch *b = sl_xcalloc(1, sizeof(*b) + n * sizeof(pmember));
  b->n = n;
  int64_t now_ms = sl_clock_wall_ms();
  int64_t now_ns = sl_clock_mono_ns();
  size_t bytes = 0;
  for (size_t i = 0; i < n; i++) {
    pmember *m = &b->m[i];
    const Sluice__V1__SendRequest *s = sends[i];
    m->seq = s->sequence_id;
    m->recv_ns = now_ns;
    m->publish_ms = now_ms;
    m->deliver_at_ms = s->deliver_at_ms;
    if (s->payload.len > t->max_message_bytes) {
      m->st = SL_EINVAL;
      snprintf(m->error, sizeof(m->error),
               "message of %zu bytes is over the limit of %u bytes (max_message_bytes)",
               s->payload.len, t->max_message_bytes);
      m->inflight = 64;
    } else {
      encode(m, s, ps->producer);
      m->inflight = m->wire_len;
    }
    bytes += m->inflight;
  }
  pthread_mutex_lock(&ps->mu);
  ps->inflight += bytes;
  size_t global = atomic_fetch_add(&p->inflight, bytes) + bytes;
  bool over_own = ps->inflight > per_producer_max(p);
  bool over_global = global > broker_max(p);
  if ((over_own || over_global) && !ps->paused) {
    ps->paused = true;
    sl_rpc_call_pause_reads(ps->call);
  }
  pthread_mutex_unlock(&ps->mu);
  if (over_global) {
    pthread_mutex_lock(&p->mu);
    pthread_mutex_lock(&ps->mu);
    if (!ps->paused_global && ps->paused) {
      ps->paused_global = true;
      ps->paused_next = p->paused;
      p->paused = ps;
      ps_ref(ps);
    }
    pthread_mutex_unlock(&ps->mu);
    pthread_mutex_unlock(&p->mu);
  }
  pt_ref(t);
  b->topic = t;
  for (size_t i = 0; i < n; i++) {
    ps_ref(ps);
    b->m[i].ps = ps;
  }
  pt_post_batch(b);
}

static void produce_message(sl_rpc_call *call, const Sluice__V1__ProduceRequest *msg,
                            void *ctx) {
  (void)ctx;
  pstream *ps = sl_rpc_call_user(call);
  if (msg == NULL) { /* half-close: end once everything is answered */
    pthread_mutex_lock(&ps->mu);
    ps->half_closed = true;
    if (ps->state != PS_OPEN && ps->state != PS_OPENING && ps->call_live &&
        ps->state != PS_ENDED) {
      ps->state = PS_ENDED;
      sl_rpc_call_finish(ps->call, SL_OK, NULL, NULL);
    }
    finish_if_drained(ps);
    pthread_mutex_unlock(&ps->mu);
    return;
  }
  switch (msg->kind_case) {
    case SLUICE__V1__PRODUCE_REQUEST__KIND_OPEN:
      on_open(ps, msg->open);
      break;
    case SLUICE__V1__PRODUCE_REQUEST__KIND_SEND:
      on_sends(ps, &msg->send, 1);
      break;
    case SLUICE__V1__PRODUCE_REQUEST__KIND_BATCH:
      if (msg->batch->n_messages == 0) {
        ps_end(ps, SL_EINVAL, "empty batch: a SendBatch holds at least one message",
               NULL, NULL);
        break;
      }
      on_sends(ps, msg->batch->messages, msg->batch->n_messages);
      break;
    default:
      ps_end(ps, SL_EINVAL, "empty ProduceRequest: set open, send or batch", NULL, NULL);
  }
}

static void produce_writable(sl_rpc_call *call, void *ctx) {
  (void)ctx;
  pstream *ps = sl_rpc_call_user(call);
  pthread_mutex_lock(&ps->mu);
  flush_receipts(ps);
  finish_if_drained(ps);
  pthread_mutex_unlock(&ps->mu);
}

static void produce_done(sl_rpc_call *call, bool cancelled, void *ctx) {
  (void)cancelled;
  (void)ctx;
  pstream *ps = sl_rpc_call_user(call);
  sl_produce *p = ps->p;
  pthread_mutex_lock(&p->mu);
  pthread_mutex_lock(&ps->mu);
  ps->call_live = false;
  ps->state = PS_ENDED;
  free_receipts(ps);
  ptopic *t = ps->topic;
  ps->topic = NULL;
  bool unlink = ps->paused_global;
  if (unlink) {
    for (pstream **pp = &p->paused; *pp != NULL; pp = &(*pp)->paused_next) {
      if (*pp == ps) {
        *pp = ps->paused_next;
        break;
      }
    }
    ps->paused_global = false;
  }
  pthread_mutex_unlock(&ps->mu);
  pthread_mutex_unlock(&p->mu);
  if (unlink) ps_unref(ps);
  if (t != NULL) pt_detach(t, ps); /* takes over the stream's topic reference */
  sl_rpc_call_unref(call);
  ps_unref(ps);
}

void sl_produce_handlers(sl_broker_service_handlers *h) {
  h->produce_start = produce_start;
  h->produce_message = produce_message;
  h->produce_writable = produce_writable;
  h->produce_done = produce_done;
}

/* ---- the produce state ---- */

static double inflight_gauge(void *arg) {
  sl_produce *p = arg;
  return (double)atomic_load(&p->inflight);
}

sl_status sl_produce_create(const sl_produce_opts *opts, sl_produce **out,
                            sl_err *err) {
  if (opts == NULL || opts->metadata == NULL || opts->ledgers == NULL)
    return sl_err_set(err, SL_EINVAL, "produce: metadata channel and ledger client required");
  sl_produce *p = sl_xcalloc(1, sizeof(*p));
  p->o = *opts;
  pthread_mutex_init(&p->mu, NULL);
  sl_map_init(&p->topics);
  atomic_init(&p->inflight, 0);
  sl_metrics *reg = sl_metrics_default();
  /* Metrics are best effort: a failed registration leaves a NULL handle. */
  sl_metrics_register_counter(reg, "sluice_broker_publish_messages_total",
                              "messages stored durably", NULL, &p->m_msgs, NULL);
  sl_metrics_register_counter(reg, "sluice_broker_publish_bytes_total",
                              "bytes of stored messages (stored form)", NULL,
                              &p->m_bytes, NULL);
  sl_metrics_register_counter(reg, "sluice_broker_publish_duplicates_total",
                              "resends answered from the dedup state", NULL,
                              &p->m_dups, NULL);
  sl_metrics_register_counter(reg, "sluice_broker_ml_recoveries_total",
                              "partitions taken over with a ledger to recover",
                              NULL, &p->m_recoveries, NULL);
  sl_metrics_register_histogram(reg, "sluice_broker_publish_ack_seconds",
                                "from receiving a message to its receipt", NULL,
                                NULL, 0, &p->m_ack, NULL);
  sl_metrics_register_callback(reg, SL_METRICS_GAUGE, "sluice_broker_publish_inflight_bytes",
                               "bytes received and not yet answered", NULL,
                               inflight_gauge, p, &p->m_inflight, NULL);
  *out = p;
  return SL_OK;
}

void sl_produce_set_ownership(sl_produce *p, sl_ownership *own) {
  atomic_store(&p->own, own);
}

static void hook_unload(void *arg, const char *partition, uint64_t epoch) {
  (void)epoch;
  pt_unload(arg, partition);
}

static void hook_lost(void *arg, const char *partition, uint64_t epoch, const char *why) {
  (void)epoch;
  pt_lost(arg, partition, why);
}

sl_ownership_hooks sl_produce_hooks(sl_produce *p) {
  sl_ownership_hooks h = {hook_unload, hook_lost, p};
  return h;
}

void sl_produce_destroy(sl_produce *p) {
  if (p == NULL) return;
  sl_metrics_unregister_callback(sl_metrics_default(), p->m_inflight);
  pt_drop_all(p);
  sl_map_release(&p->topics, NULL);
  pthread_mutex_destroy(&p->mu);
  free(p);
}
