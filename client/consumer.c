/*
 * libsluice consumer (sluice.h): one thread per partition subscribes at the
 * owner, grants permits and receives; received messages go to one queue
 * shared by all partitions (or straight to the callback). Taking a message
 * counts toward its partition's next Flow: once half the receiver queue has
 * been taken, the partition grants that many permits again.
 *
 * When a partition's stream ends for a reason other than a permanent one,
 * its thread drops that partition's queued messages (the broker redelivers
 * everything unacked) and subscribes again at the owner, looked up afresh.
 * Acks, nacks and seeks from any thread go out on the partition's current
 * stream under its send lock.
 *
 * A seek drops what is queued and, until the broker's SeekDone, every
 * message that arrives (those were in flight from the old position), so
 * that whatever receive returns after sl_consumer_seek comes from the new
 * position.
 *
 * Ack grouping: acks wait in their partition's group (under its send lock)
 * and go as one Ack per run of one type once ACK_GROUP_MAX are waiting or
 * the oldest has waited ack_group_us (the acker thread's timer). Invariants:
 *  1. Grouped acks reach the stream before anything sent after them on that
 *     partition: an ack with receipt, a nack, a seek and the half-close at
 *     destroy each send the group first, under the same lock.
 *  2. A grouped ack is dropped only when one sent later has exactly the same
 *     effect at the broker (see supersedes()); otherwise every ack goes, in
 *     call order.
 *  3. Acks still grouped when a stream ends go first on the next stream,
 *     before its permits (so the broker does not redeliver them).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "broker.slrpc.h"
#include "client/client_int.h"
#include "common/clock.h"

/* Acks per group at most: one Ack of 256 ids is about 8 KiB. */
#define ACK_GROUP_MAX 256
#define DEFAULT_ACK_GROUP_US 10000
#define MAX_ACK_GROUP_US 10000000
/* Messages per ConsumeResponse asked of the broker at most: messages ready
 * together come as one MessageBatch, one gRPC message and one wake-up. */
#define MAX_BATCH 256

typedef struct qmsg {
  struct qmsg *next;
  int part;
  sl_received *m;
} qmsg;

typedef struct receipt_wait {
  struct receipt_wait *next;
  uint64_t id;
  int part;
  bool done;
  sl_status st;
  char why[SL_ERR_MAX];
} receipt_wait;

typedef struct ack_ent {
  sl_msg_id id;
  bool cumulative;
} ack_ent;

typedef struct cpart {
  struct sl_consumer *c;
  int index;
  char *name;
  pthread_t thread;
  pthread_mutex_t smu;           /* sends on s; s changes under it */
  sl_rpc_stream *s;
  ack_ent *acks;                 /* grouped acks in call order (smu) */
  size_t n_acks;
  int64_t acks_since_ns;         /* when the oldest of them was grouped */
  bool subscribed;
  int taken;                     /* messages taken since the last Flow */
  int seeking;                   /* seeks sent and not yet done */
  sl_status seek_st;             /* why the stream ended during a seek */
  char seek_why[SL_ERR_MAX];
  bool redirected;               /* last stream ended on a redirect: the
                                    cache holds the owner (thread's own) */
  bool at_end;                   /* EndOfTopic on this stream (under c->mu) */
} cpart;

struct sl_consumer {
  sl_client *cl;
  sl_consumer_opts o;
  char *topic, *sub, *name;
  int queue_size;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  cpart *parts;
  size_t n_parts;
  qmsg *head, *tail;
  receipt_wait *receipts;
  uint64_t next_receipt;
  bool closing;
  int64_t ack_group_ns;          /* 0 = each ack at once */
  pthread_t acker;               /* sends groups that waited ack_group_ns */
  bool acker_running;
  pthread_mutex_t amu;           /* the acker's wait (after any smu) */
  pthread_cond_t acv;            /* monotonic clock */
  int64_t ack_due_ns;            /* when a group is next due; 0 = none */
  bool acker_stop;
  size_t subscribed_once;
  sl_status failed;              /* permanent: subscribe refused */
  char why[SL_ERR_MAX];
};

void sl_received_free(sl_received *m) {
  if (m == NULL) return;
  free(m->payload);
  free(m->key);
  for (size_t i = 0; i < m->n_props; i++) {
    free((char *)m->props[i].key);
    free((char *)m->props[i].value);
  }
  free(m->props);
  free(m->topic);
  free(m);
}

static sl_received *received_new(const Sluice__V1__Message *in, const cpart *pt) {
  sl_received *m = calloc(1, sizeof(*m));
  if (m == NULL) return NULL;
  if (in->id) {
    m->id.ledger_id = in->id->ledger_id;
    m->id.entry_id = in->id->entry_id;
    m->id.batch_index = in->id->batch_index;
    m->id.batch_size = in->id->batch_size;
  }
  m->id.partition = pt->index;
  m->publish_time_ms = in->publish_time_ms;
  m->redelivery_count = in->redelivery_count;
  m->payload = malloc(in->payload.len ? in->payload.len : 1);
  m->key = strdup(in->key ? in->key : "");
  m->topic = strdup(pt->name);
  if (m->payload == NULL || m->key == NULL || m->topic == NULL) goto out_free;
  if (in->payload.len) memcpy(m->payload, in->payload.data, in->payload.len);
  m->len = in->payload.len;
  if (in->n_properties) {
    m->props = calloc(in->n_properties, sizeof(*m->props));
    if (m->props == NULL) goto out_free;
    for (size_t i = 0; i < in->n_properties; i++) {
      m->n_props = i + 1;
      m->props[i].key = strdup(in->properties[i]->key);
      m->props[i].value = strdup(in->properties[i]->value);
      if (m->props[i].key == NULL || m->props[i].value == NULL) goto out_free;
    }
  }
  return m;
out_free:
  sl_received_free(m);
  return NULL;
}

static void timed_wait(sl_consumer *c, int ms) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_nsec += (long)ms * 1000000L;
  ts.tv_sec += ts.tv_nsec / 1000000000L;
  ts.tv_nsec %= 1000000000L;
  pthread_cond_timedwait(&c->cv, &c->mu, &ts);
}

/* Sends one request on the partition's stream, if it has one. Caller
 * holds pt->smu. */
static sl_status send_locked(cpart *pt, const Sluice__V1__ConsumeRequest *req, sl_err *err) {
  return pt->s == NULL
             ? sl_err_set(err, SL_EUNAVAIL, "%s: reconnecting; retry", pt->name)
             : sl_broker_service_consume_send(pt->s, req, sl_client_timeout_ms(pt->c->cl), err);
}

static sl_status part_send(cpart *pt, const Sluice__V1__ConsumeRequest *req, sl_err *err) {
  pthread_mutex_lock(&pt->smu);
  sl_status st = send_locked(pt, req, err);
  pthread_mutex_unlock(&pt->smu);
  return st;
}

static void id_to_pb(const sl_msg_id *id, Sluice__V1__MessageId *out) {
  sluice__v1__message_id__init(out);
  out->ledger_id = id->ledger_id;
  out->entry_id = id->entry_id;
  out->batch_index = id->batch_index;
  out->batch_size = id->batch_size;
  out->partition = id->partition;
}

/* Sends n acks of one type (n <= ACK_GROUP_MAX) as one Ack. Caller holds
 * pt->smu. */
static sl_status send_acks(cpart *pt, const ack_ent *a, size_t n, uint64_t receipt,
                           sl_err *err) {
  Sluice__V1__MessageId mid[ACK_GROUP_MAX];
  Sluice__V1__MessageId *ids[ACK_GROUP_MAX];
  for (size_t i = 0; i < n; i++) {
    id_to_pb(&a[i].id, &mid[i]);
    ids[i] = &mid[i];
  }
  Sluice__V1__Ack ack = SLUICE__V1__ACK__INIT;
  ack.type = a[0].cumulative ? SLUICE__V1__ACK_TYPE__ACK_TYPE_CUMULATIVE
                             : SLUICE__V1__ACK_TYPE__ACK_TYPE_INDIVIDUAL;
  ack.n_ids = n;
  ack.ids = ids;
  ack.receipt_id = receipt;
  Sluice__V1__ConsumeRequest req = SLUICE__V1__CONSUME_REQUEST__INIT;
  req.kind_case = SLUICE__V1__CONSUME_REQUEST__KIND_ACK;
  req.ack = &ack;
  return send_locked(pt, &req, err);
}

/* Sends pt's grouped acks, one Ack per run of one type, in call order. On a
 * failure the rest stay grouped for the next stream (an ack that reaches
 * the broker twice does no harm). Caller holds pt->smu. */
static sl_status flush_acks(cpart *pt, sl_err *err) {
  size_t done = 0;
  sl_status st = SL_OK;
  while (done < pt->n_acks && st == SL_OK) {
    size_t end = done + 1;
    while (end < pt->n_acks && pt->acks[end].cumulative == pt->acks[done].cumulative) end++;
    st = send_acks(pt, &pt->acks[done], end - done, 0, err);
    if (st == SL_OK) done = end;
  }
  if (done > 0) {
    memmove(pt->acks, pt->acks + done, (pt->n_acks - done) * sizeof(*pt->acks));
    pt->n_acks -= done;
  }
  return st;
}

/* Sends req after pt's grouped acks (invariant 1). */
static sl_status send_after_acks(cpart *pt, const Sluice__V1__ConsumeRequest *req,
                                 sl_err *err) {
  pthread_mutex_lock(&pt->smu);
  sl_status st = flush_acks(pt, err);
  if (st == SL_OK) st = send_locked(pt, req, err);
  pthread_mutex_unlock(&pt->smu);
  return st;
}

static void flow(cpart *pt, int permits) {
  Sluice__V1__Flow f = SLUICE__V1__FLOW__INIT;
  f.permits = permits;
  Sluice__V1__ConsumeRequest req = SLUICE__V1__CONSUME_REQUEST__INIT;
  req.kind_case = SLUICE__V1__CONSUME_REQUEST__KIND_FLOW;
  req.flow = &f;
  sl_err err = SL_ERR_INIT;
  (void)part_send(pt, &req, &err); /* a broken stream resubscribes with full permits */
}

/* Counts one message of pt as taken and grants permits back in halves. */
static void taken(cpart *pt) {
  sl_consumer *c = pt->c;
  pthread_mutex_lock(&c->mu);
  int n = ++pt->taken;
  bool refill = n >= (c->queue_size + 1) / 2;
  if (refill) pt->taken = 0;
  pthread_mutex_unlock(&c->mu);
  if (refill) flow(pt, n);
}

static sl_status subscribe(cpart *pt, bool refresh, sl_err *err) {
  sl_consumer *c = pt->c;
  char *address = NULL;
  sl_status st = sl_client_owner(c->cl, pt->name, refresh, &address, err);
  if (st != SL_OK) return st;
  sl_rpc_channel *ch;
  st = sl_client_channel(c->cl, address, &ch, err);
  free(address);
  if (st != SL_OK) return st;
  sl_rpc_stream *s = NULL;
  sl_rpc_call_opts o = {0};
  if ((st = sl_broker_service_consume_open(ch, &o, &s, err)) != SL_OK) return st;
  Sluice__V1__Subscribe sub = SLUICE__V1__SUBSCRIBE__INIT;
  sub.topic = pt->name;
  sub.subscription = c->sub;
  sub.type = (Sluice__V1__SubscriptionType)c->o.type;
  sub.consumer_name = c->name;
  sub.initial_position = c->o.from_earliest ? SLUICE__V1__INITIAL_POSITION__INITIAL_POSITION_EARLIEST
                                            : SLUICE__V1__INITIAL_POSITION__INITIAL_POSITION_LATEST;
  sub.ack_timeout_ms = c->o.ack_timeout_ms > 0 ? (uint32_t)c->o.ack_timeout_ms : 0;
  /* Messages ready together come in one response; half the queue keeps a
   * batch within what one Flow grants back. */
  sub.max_messages_per_response = (uint32_t)(c->queue_size / 2 < MAX_BATCH ? c->queue_size / 2
                                                                           : MAX_BATCH);
  Sluice__V1__ConsumeRequest req = SLUICE__V1__CONSUME_REQUEST__INIT;
  req.kind_case = SLUICE__V1__CONSUME_REQUEST__KIND_SUBSCRIBE;
  req.subscribe = &sub;
  int timeout = sl_client_timeout_ms(c->cl);
  Sluice__V1__ConsumeResponse *r = NULL;
  st = sl_broker_service_consume_send(s, &req, timeout, err);
  if (st == SL_OK) st = sl_broker_service_consume_recv(s, &r, timeout, err);
  if (st == SL_OK && r != NULL && r->kind_case == SLUICE__V1__CONSUME_RESPONSE__KIND_REDIRECT) {
    sl_client_redirect(c->cl, pt->name, r->redirect->broker_address, r->redirect->epoch);
    pt->redirected = true;
  }
  if (st == SL_OK && r != NULL && r->kind_case == SLUICE__V1__CONSUME_RESPONSE__KIND_CLOSED)
    st = sl_err_set(err, (sl_status)(-(int)r->closed->status), "%s", r->closed->reason);
  else if (st == SL_OK &&
           (r == NULL || r->kind_case != SLUICE__V1__CONSUME_RESPONSE__KIND_SUBSCRIBED))
    st = sl_err_set(err, SL_EREDIRECT, "not subscribed (owner moved)");
  if (r != NULL) protobuf_c_message_free_unpacked(&r->base, NULL);
  if (st != SL_OK) {
    sl_rpc_stream_destroy(s);
    return sl_err_wrap(err, st, "subscription %s on %s", c->sub, pt->name);
  }
  pthread_mutex_lock(&pt->smu);
  pt->s = s;
  sl_err ack_err = SL_ERR_INIT;
  (void)flush_acks(pt, &ack_err); /* invariant 3; what fails waits for the next */
  pthread_mutex_unlock(&pt->smu);
  pthread_mutex_lock(&c->mu);
  pt->taken = 0;
  pt->seeking = 0; /* a new stream starts at the subscription's position */
  if (!pt->subscribed) c->subscribed_once++;
  pt->subscribed = true;
  pthread_cond_broadcast(&c->cv);
  pthread_mutex_unlock(&c->mu);
  flow(pt, c->queue_size);
  return SL_OK;
}

static void finish_receipt(sl_consumer *c, uint64_t id, int part, sl_status st, const char *why) {
  pthread_mutex_lock(&c->mu);
  for (receipt_wait *w = c->receipts; w != NULL; w = w->next) {
    if ((id != 0 && w->id == id) || (id == 0 && w->part == part && !w->done)) {
      w->done = true;
      w->st = st;
      snprintf(w->why, sizeof(w->why), "%s", why);
    }
  }
  pthread_cond_broadcast(&c->cv);
  pthread_mutex_unlock(&c->mu);
}

/* Removes the queued messages of one partition (-1 = all); they count as
 * taken so that their permits are granted again. Caller holds the lock. */
static void drop_queued(sl_consumer *c, int part) {
  qmsg **pp = &c->head, *last = NULL;
  while (*pp != NULL) {
    qmsg *q = *pp;
    if (part < 0 || q->part == part) {
      *pp = q->next;
      c->parts[q->part].taken++;
      sl_received_free(q->m);
      free(q);
    } else {
      last = q;
      pp = &q->next;
    }
  }
  c->tail = last;
}

/* The messages of one response (one, or a MessageBatch), in order: to the
 * callback, or appended to the queue together (one wake-up). */
static void deliver(cpart *pt, Sluice__V1__Message *const *in, size_t n) {
  sl_consumer *c = pt->c;
  pthread_mutex_lock(&c->mu);
  bool stale = pt->seeking > 0;
  pthread_mutex_unlock(&c->mu);
  qmsg *first = NULL, *last = NULL;
  for (size_t i = 0; i < n; i++) {
    if (stale) {
      taken(pt); /* from before the seek: its permit is granted again */
      continue;
    }
    sl_received *m = received_new(in[i], pt);
    if (m == NULL) continue; /* not acked: the broker redelivers it */
    if (c->o.on_message) {
      c->o.on_message(c, m, c->o.arg);
      taken(pt);
      continue;
    }
    qmsg *q = calloc(1, sizeof(*q));
    if (q == NULL) {
      sl_received_free(m);
      continue;
    }
    q->part = (int)(pt - c->parts);
    q->m = m;
    if (last) last->next = q;
    else first = q;
    last = q;
  }
  if (first == NULL) return;
  pthread_mutex_lock(&c->mu);
  if (c->tail) c->tail->next = first;
  else c->head = first;
  c->tail = last;
  pthread_cond_broadcast(&c->cv);
  pthread_mutex_unlock(&c->mu);
}

/* Receives until the stream ends; returns its final status. */
static sl_status recv_all(cpart *pt, sl_err *err) {
  sl_consumer *c = pt->c;
  for (;;) {
    Sluice__V1__ConsumeResponse *r = NULL;
    sl_status st = sl_broker_service_consume_recv(pt->s, &r, 0, err);
    if (st != SL_OK) return st;
    if (r == NULL) return sl_err_set(err, SL_EUNAVAIL, "%s: stream ended", pt->name);
    switch (r->kind_case) {
      case SLUICE__V1__CONSUME_RESPONSE__KIND_MESSAGE: deliver(pt, &r->message, 1); break;
      case SLUICE__V1__CONSUME_RESPONSE__KIND_MESSAGE_BATCH:
        deliver(pt, r->message_batch->messages, r->message_batch->n_messages);
        break;
      case SLUICE__V1__CONSUME_RESPONSE__KIND_ACK_RECEIPT:
        finish_receipt(c, r->ack_receipt->receipt_id, -1,
                       (sl_status)(-(int)r->ack_receipt->status), r->ack_receipt->error);
        break;
      case SLUICE__V1__CONSUME_RESPONSE__KIND_SEEK_DONE:
        pthread_mutex_lock(&c->mu);
        if (pt->seeking > 0) pt->seeking--;
        pthread_cond_broadcast(&c->cv);
        pthread_mutex_unlock(&c->mu);
        break;
      case SLUICE__V1__CONSUME_RESPONSE__KIND_END_OF_TOPIC:
        /* After every message of the partition (the stream keeps order). */
        pthread_mutex_lock(&c->mu);
        pt->at_end = true;
        pthread_cond_broadcast(&c->cv);
        pthread_mutex_unlock(&c->mu);
        break;
      case SLUICE__V1__CONSUME_RESPONSE__KIND_CLOSED:
        sl_err_set(err, (sl_status)(-(int)r->closed->status), "%s: %s", pt->name,
                   r->closed->reason);
        break;
      case SLUICE__V1__CONSUME_RESPONSE__KIND_REDIRECT:
        /* The stream ends next; we subscribe where this points. */
        sl_client_redirect(c->cl, pt->name, r->redirect->broker_address, r->redirect->epoch);
        pt->redirected = true;
        break;
      default: break;
    }
    protobuf_c_message_free_unpacked(&r->base, NULL);
  }
}

static void *part_loop(void *arg) {
  cpart *pt = arg;
  (void)pthread_setname_np(pthread_self(), "sl-consume");
  sl_consumer *c = pt->c;
  int attempt = 0;
  for (;;) {
    pthread_mutex_lock(&c->mu);
    bool stop = c->closing || c->failed != SL_OK;
    pthread_mutex_unlock(&c->mu);
    if (stop) break;
    sl_err err = SL_ERR_INIT;
    /* After a redirect the cache names the owner; after any other failure
     * the cached owner is suspect. */
    bool follow = pt->redirected && attempt < 4;
    pt->redirected = false;
    sl_status st = subscribe(pt, attempt > 0 && !follow, &err);
    if (st == SL_EREDIRECT && pt->redirected && attempt < 4) {
      attempt++;
      continue; /* straight to the owner it named (a few hops at most) */
    }
    if (st == SL_OK) {
      attempt = 0;
      st = recv_all(pt, &err);
      pthread_mutex_lock(&pt->smu);
      sl_rpc_stream_destroy(pt->s);
      pt->s = NULL;
      pthread_mutex_unlock(&pt->smu);
      finish_receipt(c, 0, (int)(pt - c->parts), SL_EUNAVAIL,
                     "stream to the broker ended before the ack was confirmed; ack again");
      pthread_mutex_lock(&c->mu);
      drop_queued(c, (int)(pt - c->parts));
      pt->at_end = false; /* the next stream redelivers, then ends again */
      if (pt->seeking > 0) {
        /* The broker ends the stream over a seek it refuses: that is the
         * seek's error, not the consumer's, which subscribes again. */
        pt->seeking = 0;
        pt->seek_st = st != SL_OK ? st : SL_EUNAVAIL;
        snprintf(pt->seek_why, sizeof(pt->seek_why), "%s",
                 st != SL_OK ? err.msg : "stream ended before the seek was done; seek again");
        st = SL_EUNAVAIL;
      }
      pthread_mutex_unlock(&c->mu);
    }
    attempt++;
    pthread_mutex_lock(&c->mu);
    if (!c->closing && sl_client_permanent(st) && c->failed == SL_OK) {
      c->failed = st;
      snprintf(c->why, sizeof(c->why), "%s", err.msg);
    }
    if (!c->closing && c->failed == SL_OK) timed_wait(c, attempt < 10 ? 50 * attempt : 500);
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
  }
  return NULL;
}

/* Sends every group that has waited ack_group_ns by now; returns when the
 * next one is due (0 = none waiting). */
static int64_t flush_due_acks(sl_consumer *c, int64_t now) {
  int64_t next = 0;
  for (size_t i = 0; i < c->n_parts; i++) {
    cpart *pt = &c->parts[i];
    pthread_mutex_lock(&pt->smu);
    if (pt->n_acks > 0 && pt->s != NULL) {
      int64_t due = pt->acks_since_ns + c->ack_group_ns;
      sl_err err = SL_ERR_INIT;
      /* A failed send leaves the group for the next stream (invariant 3). */
      if (due <= now) (void)flush_acks(pt, &err);
      else if (next == 0 || due < next) next = due;
    }
    pthread_mutex_unlock(&pt->smu);
  }
  return next;
}

static void *ack_loop(void *arg) {
  sl_consumer *c = arg;
  (void)pthread_setname_np(pthread_self(), "sl-acks");
  pthread_mutex_lock(&c->amu);
  while (!c->acker_stop) {
    int64_t now = sl_clock_mono_ns();
    if (c->ack_due_ns == 0) {
      pthread_cond_wait(&c->acv, &c->amu);
    } else if (now < c->ack_due_ns) {
      struct timespec ts = {(time_t)(c->ack_due_ns / 1000000000),
                            (long)(c->ack_due_ns % 1000000000)};
      pthread_cond_timedwait(&c->acv, &c->amu, &ts);
    } else {
      c->ack_due_ns = 0;
      pthread_mutex_unlock(&c->amu);
      int64_t next = flush_due_acks(c, now);
      pthread_mutex_lock(&c->amu);
      if (next != 0 && (c->ack_due_ns == 0 || next < c->ack_due_ns)) c->ack_due_ns = next;
    }
  }
  pthread_mutex_unlock(&c->amu);
  return NULL;
}

/* The first ack of a group starts its timer. Caller holds pt->smu. */
static void arm_acker(sl_consumer *c, int64_t due) {
  pthread_mutex_lock(&c->amu);
  if (c->ack_due_ns == 0 || due < c->ack_due_ns) {
    c->ack_due_ns = due;
    pthread_cond_signal(&c->acv);
  }
  pthread_mutex_unlock(&c->amu);
}

static void stop_acker(sl_consumer *c) {
  if (!c->acker_running) return;
  pthread_mutex_lock(&c->amu);
  c->acker_stop = true;
  pthread_cond_signal(&c->acv);
  pthread_mutex_unlock(&c->amu);
  pthread_join(c->acker, NULL);
  c->acker_running = false;
}

static bool parts_ended(sl_consumer *c) {
  bool ended = true;
  for (size_t i = 0; i < c->n_parts && ended; i++) {
    pthread_mutex_lock(&c->parts[i].smu);
    ended = c->parts[i].s == NULL;
    pthread_mutex_unlock(&c->parts[i].smu);
  }
  return ended;
}

static void close_parts(sl_consumer *c) {
  pthread_mutex_lock(&c->mu);
  c->closing = true;
  pthread_cond_broadcast(&c->cv);
  pthread_mutex_unlock(&c->mu);
  /* Grouped acks go, then the half-close: the broker applies every ack
   * sent before it, then ends the stream (a cancel could drop acks still in
   * flight). Streams not ended within a second (a broker gone) are
   * cancelled. */
  for (size_t i = 0; i < c->n_parts; i++) {
    pthread_mutex_lock(&c->parts[i].smu);
    sl_err err = SL_ERR_INIT;
    if (c->parts[i].s && flush_acks(&c->parts[i], &err) == SL_OK)
      sl_rpc_stream_close_send(c->parts[i].s, NULL);
    pthread_mutex_unlock(&c->parts[i].smu);
  }
  int64_t end = sl_clock_mono_ms() + 1000;
  while (!parts_ended(c) && sl_clock_mono_ms() < end) {
    pthread_mutex_lock(&c->mu);
    timed_wait(c, 20);
    pthread_mutex_unlock(&c->mu);
  }
  for (size_t i = 0; i < c->n_parts; i++) {
    pthread_mutex_lock(&c->parts[i].smu);
    if (c->parts[i].s) sl_rpc_stream_cancel(c->parts[i].s);
    pthread_mutex_unlock(&c->parts[i].smu);
  }
  for (size_t i = 0; i < c->n_parts; i++) pthread_join(c->parts[i].thread, NULL);
}

void sl_consumer_destroy(sl_consumer *c) {
  if (c == NULL) return;
  stop_acker(c); /* close_parts sends what is still grouped */
  close_parts(c);
  drop_queued(c, -1);
  for (size_t i = 0; i < c->n_parts; i++) {
    free(c->parts[i].name);
    free(c->parts[i].acks);
    pthread_mutex_destroy(&c->parts[i].smu);
  }
  free(c->parts);
  free(c->topic);
  free(c->sub);
  free(c->name);
  pthread_mutex_destroy(&c->mu);
  pthread_cond_destroy(&c->cv);
  pthread_mutex_destroy(&c->amu);
  pthread_cond_destroy(&c->acv);
  free(c);
}

sl_status sl_consumer_create(sl_client *cl, const sl_consumer_opts *opts, sl_consumer **out,
                             sl_err *err) {
  sl_status st = sl_topic_name_check(opts->topic, err);
  if (st != SL_OK) return st;
  if (opts->subscription == NULL || *opts->subscription == '\0')
    return sl_err_set(err, SL_EINVAL, "consume %s: a subscription name is required",
                      opts->topic);
  if (opts->type < SL_SUB_EXCLUSIVE || opts->type > SL_SUB_KEY_SHARED)
    return sl_err_set(err, SL_EINVAL, "consume %s: unknown subscription type", opts->topic);
  if (opts->ack_group_us > MAX_ACK_GROUP_US)
    return sl_err_set(err, SL_EINVAL, "consume %s: ack_group_us %d over %d (10 s)", opts->topic,
                      opts->ack_group_us, MAX_ACK_GROUP_US);
  sl_lookup l;
  if ((st = sl_client_lookup(cl, opts->topic, false, &l, err)) != SL_OK) return st;
  sl_consumer *c = calloc(1, sizeof(*c));
  if (c == NULL) {
    sl_lookup_free(&l);
    return sl_err_set(err, SL_ENOMEM, "consumer: out of memory");
  }
  c->cl = cl;
  c->o = *opts;
  c->queue_size = opts->receiver_queue > 0 ? opts->receiver_queue : 1000;
  int group_us = opts->ack_group_us == 0 ? DEFAULT_ACK_GROUP_US : opts->ack_group_us;
  c->ack_group_ns = group_us > 0 ? (int64_t)group_us * 1000 : 0;
  pthread_mutex_init(&c->mu, NULL);
  pthread_cond_init(&c->cv, NULL);
  pthread_mutex_init(&c->amu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&c->acv, &ca);
  pthread_condattr_destroy(&ca);
  char gen[64];
  sl_client_gen_name(gen, sizeof(gen), "consumer");
  c->topic = strdup(opts->topic);
  c->sub = strdup(opts->subscription);
  c->name = strdup(opts->name ? opts->name : gen);
  c->parts = calloc(l.n, sizeof(*c->parts));
  st = SL_OK;
  if (!c->topic || !c->sub || !c->name || !c->parts)
    st = sl_err_set(err, SL_ENOMEM, "consumer: out of memory");
  if (st == SL_OK && c->ack_group_ns > 0) {
    c->acker_running = pthread_create(&c->acker, NULL, ack_loop, c) == 0;
    if (!c->acker_running) st = sl_err_set(err, SL_ENOMEM, "consumer: no thread");
  }
  for (size_t i = 0; st == SL_OK && i < l.n; i++) {
    cpart *pt = &c->parts[i];
    pt->c = c;
    pt->index = l.partitions ? (int)i : -1;
    pthread_mutex_init(&pt->smu, NULL);
    pt->name = strdup(l.partition[i]);
    if (c->ack_group_ns > 0) pt->acks = calloc(ACK_GROUP_MAX, sizeof(*pt->acks));
    if (pt->name == NULL || (c->ack_group_ns > 0 && pt->acks == NULL) ||
        pthread_create(&pt->thread, NULL, part_loop, pt) != 0) {
      free(pt->name);
      free(pt->acks);
      pthread_mutex_destroy(&pt->smu);
      st = sl_err_set(err, SL_ENOMEM, "consumer: out of memory");
      break;
    }
    c->n_parts = i + 1;
  }
  sl_lookup_free(&l);
  int64_t deadline = sl_clock_mono_ns() + (int64_t)sl_client_timeout_ms(cl) * 1000000;
  pthread_mutex_lock(&c->mu);
  while (st == SL_OK && c->subscribed_once < c->n_parts) {
    if (c->failed != SL_OK) {
      st = sl_err_set(err, c->failed, "%s", c->why);
    } else if (sl_clock_mono_ns() >= deadline) {
      st = sl_err_set(err, SL_EUNAVAIL, "subscription %s on %s: not subscribed within %d ms",
                      opts->subscription, opts->topic, sl_client_timeout_ms(cl));
    } else {
      timed_wait(c, 50);
    }
  }
  pthread_mutex_unlock(&c->mu);
  if (st != SL_OK) {
    sl_consumer_destroy(c);
    return st;
  }
  *out = c;
  return SL_OK;
}

static bool at_end_locked(const sl_consumer *c) {
  bool end = c->n_parts > 0;
  for (size_t i = 0; i < c->n_parts && end; i++) end = c->parts[i].at_end;
  return end;
}

bool sl_consumer_at_end(sl_consumer *c) {
  pthread_mutex_lock(&c->mu);
  bool end = at_end_locked(c);
  pthread_mutex_unlock(&c->mu);
  return end;
}

sl_status sl_consumer_receive(sl_consumer *c, int timeout_ms, sl_received **out, sl_err *err) {
  if (c->o.on_message)
    return sl_err_set(err, SL_EINVAL, "receive: the consumer is in callback mode");
  int64_t deadline = timeout_ms < 0 ? 0 : sl_clock_mono_ns() + (int64_t)timeout_ms * 1000000;
  pthread_mutex_lock(&c->mu);
  while (c->head == NULL) {
    if (c->failed != SL_OK) {
      sl_status st = sl_err_set(err, c->failed, "%s", c->why);
      pthread_mutex_unlock(&c->mu);
      return st;
    }
    if (at_end_locked(c)) {
      pthread_mutex_unlock(&c->mu);
      return sl_err_set(err, SL_ERANGE, "topic %s is terminated and every message was "
                        "received (end of topic)", c->topic);
    }
    int64_t now = sl_clock_mono_ns();
    if (deadline && now >= deadline) {
      pthread_mutex_unlock(&c->mu);
      return sl_err_set(err, SL_ETIMEDOUT, "receive: no message within %d ms", timeout_ms);
    }
    int64_t left = deadline ? (deadline - now) / 1000000 + 1 : 100;
    timed_wait(c, left < 100 ? (int)left : 100);
  }
  qmsg *q = c->head;
  c->head = q->next;
  if (c->head == NULL) c->tail = NULL;
  pthread_mutex_unlock(&c->mu);
  *out = q->m;
  cpart *pt = &c->parts[q->part];
  free(q);
  taken(pt);
  return SL_OK;
}

static cpart *part_of(sl_consumer *c, const sl_msg_id *id, sl_err *err) {
  size_t i = id->partition < 0 ? 0 : (size_t)id->partition;
  if (i >= c->n_parts) {
    sl_err_set(err, SL_EINVAL, "message id: partition %d not in %s", id->partition, c->topic);
    return NULL;
  }
  return &c->parts[i];
}

/* Whether a grouped ack `earlier` can be dropped because `later`, sent
 * after it, has exactly its effect at the broker, accepted or refused
 * alike: both cumulative on one entry, later not below. The broker checks
 * and moves the cursor by entry, so both pass or fail together, and
 * acking the consumer's messages up to `later` covers those up to
 * `earlier`. An individual ack is never dropped for a cumulative one:
 * a cumulative ack the broker refuses (an id past the partition's end)
 * would take it down too, and on a failover subscription the message may
 * be out at another consumer, which only the individual ack reaches. */
static bool supersedes(const ack_ent *later, const ack_ent *earlier) {
  return later->cumulative && earlier->cumulative &&
         later->id.ledger_id == earlier->id.ledger_id &&
         later->id.entry_id == earlier->id.entry_id &&
         later->id.batch_index >= earlier->id.batch_index;
}

/* Groups one ack on pt (or sends it at once with grouping off). */
static sl_status group_ack(sl_consumer *c, cpart *pt, const sl_msg_id *id, bool cumulative,
                           sl_err *err) {
  ack_ent a = {*id, cumulative};
  sl_status st = SL_OK;
  pthread_mutex_lock(&pt->smu);
  if (pt->s == NULL) {
    st = sl_err_set(err, SL_EUNAVAIL, "%s: reconnecting; retry", pt->name);
  } else if (c->ack_group_ns == 0) {
    st = send_acks(pt, &a, 1, 0, err);
  } else if (pt->n_acks == ACK_GROUP_MAX && (st = flush_acks(pt, err)) != SL_OK) {
    /* A full group that cannot go: this ack is refused, not queued. */
  } else if (pt->n_acks > 0 && supersedes(&a, &pt->acks[pt->n_acks - 1])) {
    pt->acks[pt->n_acks - 1] = a;
  } else {
    pt->acks[pt->n_acks++] = a;
    if (pt->n_acks == 1) {
      pt->acks_since_ns = sl_clock_mono_ns();
      arm_acker(c, pt->acks_since_ns + c->ack_group_ns);
    }
    sl_err full = SL_ERR_INIT;
    if (pt->n_acks == ACK_GROUP_MAX) (void)flush_acks(pt, &full); /* else: next stream */
  }
  pthread_mutex_unlock(&pt->smu);
  return st;
}

sl_status sl_consumer_ack(sl_consumer *c, const sl_msg_id *id, sl_err *err) {
  cpart *pt = part_of(c, id, err);
  return pt == NULL ? SL_EINVAL : group_ack(c, pt, id, false, err);
}

sl_status sl_consumer_ack_cumulative(sl_consumer *c, const sl_msg_id *id, sl_err *err) {
  /* Refused here: the broker would end the stream over it. */
  if (c->o.type == SL_SUB_SHARED || c->o.type == SL_SUB_KEY_SHARED)
    return sl_err_set(err, SL_EINVAL,
                      "subscription %s: cumulative ack needs an exclusive or failover "
                      "subscription; ack each message",
                      c->sub);
  cpart *pt = part_of(c, id, err);
  return pt == NULL ? SL_EINVAL : group_ack(c, pt, id, true, err);
}

sl_status sl_consumer_ack_sync(sl_consumer *c, const sl_msg_id *id, sl_err *err) {
  cpart *pt = part_of(c, id, err);
  if (pt == NULL) return SL_EINVAL;
  receipt_wait w = {.part = (int)(pt - c->parts)};
  pthread_mutex_lock(&c->mu);
  w.id = ++c->next_receipt;
  w.next = c->receipts;
  c->receipts = &w;
  pthread_mutex_unlock(&c->mu);
  /* After the group (invariant 1), alone: its receipt answers for it. */
  ack_ent a = {*id, false};
  pthread_mutex_lock(&pt->smu);
  sl_status st = flush_acks(pt, err);
  if (st == SL_OK) st = send_acks(pt, &a, 1, w.id, err);
  pthread_mutex_unlock(&pt->smu);
  int64_t deadline = sl_clock_mono_ns() + (int64_t)sl_client_timeout_ms(c->cl) * 1000000;
  pthread_mutex_lock(&c->mu);
  while (st == SL_OK && !w.done && sl_clock_mono_ns() < deadline) timed_wait(c, 50);
  if (st == SL_OK) {
    if (!w.done) st = sl_err_set(err, SL_ETIMEDOUT, "ack: no receipt within %d ms",
                                 sl_client_timeout_ms(c->cl));
    else if (w.st != SL_OK) st = sl_err_set(err, w.st, "ack: %s", w.why);
  }
  for (receipt_wait **pp = &c->receipts; *pp != NULL; pp = &(*pp)->next) {
    if (*pp == &w) {
      *pp = w.next;
      break;
    }
  }
  pthread_mutex_unlock(&c->mu);
  return st;
}

sl_status sl_consumer_nack(sl_consumer *c, const sl_msg_id *id, sl_err *err) {
  cpart *pt = part_of(c, id, err);
  if (pt == NULL) return SL_EINVAL;
  Sluice__V1__MessageId mid;
  id_to_pb(id, &mid);
  Sluice__V1__MessageId *ids[1] = {&mid};
  Sluice__V1__Nack n = SLUICE__V1__NACK__INIT;
  n.n_ids = 1;
  n.ids = ids;
  Sluice__V1__ConsumeRequest req = SLUICE__V1__CONSUME_REQUEST__INIT;
  req.kind_case = SLUICE__V1__CONSUME_REQUEST__KIND_NACK;
  req.nack = &n;
  return send_after_acks(pt, &req, err);
}

/* Sends a seek on the given partitions (-1 = all) and waits for SeekDone
 * from each. */
static sl_status seek(sl_consumer *c, int only, const Sluice__V1__Seek *sk, sl_err *err) {
  Sluice__V1__ConsumeRequest req = SLUICE__V1__CONSUME_REQUEST__INIT;
  req.kind_case = SLUICE__V1__CONSUME_REQUEST__KIND_SEEK;
  req.seek = (Sluice__V1__Seek *)sk;
  for (size_t i = 0; i < c->n_parts; i++) {
    if (only >= 0 && (size_t)only != i) continue;
    /* Counted before sending: SeekDone may come before the send returns. */
    pthread_mutex_lock(&c->mu);
    c->parts[i].seeking++;
    c->parts[i].at_end = false; /* the broker ends it again from there */
    c->parts[i].seek_st = SL_OK;
    /* Queued messages are from the old position, and so is whatever comes
     * until SeekDone. Dropped now, not after the send: by then messages
     * from the new position may be queued. */
    drop_queued(c, (int)i);
    pthread_mutex_unlock(&c->mu);
    /* Acks of the old position first: the seek forgets acks past it. */
    sl_status st = send_after_acks(&c->parts[i], &req, err);
    if (st != SL_OK) {
      pthread_mutex_lock(&c->mu);
      if (c->parts[i].seeking > 0) c->parts[i].seeking--;
      pthread_mutex_unlock(&c->mu);
      return sl_err_wrap(err, st, "seek %s", c->topic);
    }
  }
  int64_t deadline = sl_clock_mono_ns() + (int64_t)sl_client_timeout_ms(c->cl) * 1000000;
  sl_status st = SL_OK;
  pthread_mutex_lock(&c->mu);
  for (size_t i = 0; i < c->n_parts && st == SL_OK; i++) {
    cpart *pt = &c->parts[i];
    while (pt->seeking > 0 && st == SL_OK) {
      if (sl_clock_mono_ns() >= deadline)
        st = sl_err_set(err, SL_ETIMEDOUT, "seek %s: not done within %d ms", pt->name,
                        sl_client_timeout_ms(c->cl));
      else
        timed_wait(c, 50);
    }
    if (st == SL_OK && pt->seek_st != SL_OK)
      st = sl_err_set(err, pt->seek_st, "%s", pt->seek_why);
  }
  pthread_mutex_unlock(&c->mu);
  for (size_t i = 0; i < c->n_parts; i++) {
    pthread_mutex_lock(&c->mu);
    int n = c->parts[i].taken;
    c->parts[i].taken = 0;
    pthread_mutex_unlock(&c->mu);
    if (n > 0) flow(&c->parts[i], n);
  }
  return st;
}

sl_status sl_consumer_seek(sl_consumer *c, int64_t publish_time_ms, sl_err *err) {
  Sluice__V1__Seek sk = SLUICE__V1__SEEK__INIT;
  /* The proto takes exactly one of id / time: time 1 ms is "the oldest". */
  sk.publish_time_ms = publish_time_ms > 0 ? publish_time_ms : 1;
  return seek(c, -1, &sk, err);
}

sl_status sl_consumer_seek_id(sl_consumer *c, const sl_msg_id *id, sl_err *err) {
  cpart *pt = part_of(c, id, err);
  if (pt == NULL) return SL_EINVAL;
  Sluice__V1__MessageId mid;
  id_to_pb(id, &mid);
  Sluice__V1__Seek sk = SLUICE__V1__SEEK__INIT;
  sk.id = &mid;
  return seek(c, (int)(pt - c->parts), &sk, err);
}
