/*
 * The AddEntry stream (design in service.h).
 *
 * State of one stream lives in an add_stream, the call's user state: the
 * runtime frees it (stream_destroy) at the call's last unref. Each add in
 * flight in the store holds an sl_rpc_call_ref() until its completion on the
 * applier thread has acked, so the stream and its call stay valid for it,
 * even after on_done.
 *
 * Invariants (under stream->mu)
 *   1. Every add the store accepted gets exactly one ack attempt, from its
 *      completion; every refused add gets one at once. An ack is either
 *      handed to the runtime or kept in the waiting list, in order, until
 *      on_writable has room; acks are dropped only once the call is over.
 *   2. reads are paused iff `paused`; paused is set when inflight + waiting
 *      reaches max_stream_adds or inflight_bytes reaches max_stream_bytes,
 *      and cleared once both are at or below half.
 *   3. The stream is finished with OK only after the client half-closed,
 *      no add is in flight and no ack waits.
 *
 * Lock order: stream->mu, then the runtime's call lock (taken inside
 * sl_rpc_call_send/pause/resume). The runtime calls our handlers without its
 * lock held, so this order cannot invert.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "service_int.h"

typedef struct waiting_ack {
  struct waiting_ack *next;
  uint64_t ledger;
  int64_t entry;
  uint64_t tag;
  sl_status st;
  char error[]; /* "" on success */
} waiting_ack;

typedef struct add_stream {
  sl_bookie_svc *svc;
  sl_rpc_call *call;        /* valid while a reference is held */
  pthread_mutex_t mu;       /* guards everything below */
  uint32_t inflight;        /* adds the store accepted, not completed */
  size_t inflight_bytes;
  waiting_ack *head, *tail; /* acks waiting for room (invariant 1) */
  uint32_t waiting;
  bool paused;              /* invariant 2 */
  bool half_closed;         /* the client will send no more adds */
  bool finished;            /* we ended the call */
  bool done;                /* on_done ran: nothing can be sent any more */
} add_stream;

/* One add in flight in the store. The store retains `payload` until the
 * completion runs. */
typedef struct add_op {
  add_stream *s;
  uint64_t ledger;
  int64_t entry;
  uint64_t tag;
  uint64_t arrival_ns; /* sl_metrics_now_ns() when the add arrived */
  uint32_t len;
  uint8_t payload[];
} add_op;

/* The call's last unref: nothing else can reach the stream now. */
static void stream_destroy(void *user) {
  add_stream *s = user;
  while (s->head != NULL) {
    waiting_ack *a = s->head;
    s->head = a->next;
    free(a);
  }
  pthread_mutex_destroy(&s->mu);
  free(s);
}

/* Sends one ack now. SL_EBUSY: the write queue is full. */
static sl_status send_ack(add_stream *s, uint64_t ledger, int64_t entry, uint64_t tag,
                          sl_status st, const char *error) {
  Sluice__V1__AddEntryResponse r = SLUICE__V1__ADD_ENTRY_RESPONSE__INIT;
  r.ledger_id = ledger;
  r.entry_id = entry;
  r.tag = tag;
  r.code = sl_status_to_grpc(st);
  r.status = (Sluice__V1__Status)(-(int)st); /* proto/common.proto: negated */
  r.error = (char *)error;
  return sl_bookie_service_add_entry_write(s->call, &r);
}

/* Hands waiting acks to the runtime until it has no room. Under s->mu. */
static void flush_waiting_locked(add_stream *s) {
  while (s->head != NULL && !s->done && !s->finished) {
    waiting_ack *a = s->head;
    sl_status st = send_ack(s, a->ledger, a->entry, a->tag, a->st, a->error);
    if (st == SL_EBUSY) return;
    /* SL_OK, or SL_ECANCELED: the call is over and the ack has nowhere to go. */
    s->head = a->next;
    if (s->head == NULL) s->tail = NULL;
    s->waiting--;
    free(a);
  }
}

/* Invariant 1: send now if nothing waits before it, else wait in line. */
static void ack_locked(add_stream *s, uint64_t ledger, int64_t entry, uint64_t tag,
                       sl_status st, const char *error) {
  if (s->done || s->finished) return;
  if (s->head == NULL &&
      send_ack(s, ledger, entry, tag, st, error) != SL_EBUSY)
    return;
  size_t n = strlen(error) + 1;
  waiting_ack *a = sl_xmalloc(sizeof(*a) + n);
  a->next = NULL;
  a->ledger = ledger;
  a->entry = entry;
  a->tag = tag;
  a->st = st;
  memcpy(a->error, error, n);
  if (s->tail != NULL)
    s->tail->next = a;
  else
    s->head = a;
  s->tail = a;
  s->waiting++;
  atomic_fetch_add(&s->svc->acks_deferred, 1);
}

static bool over_limit(const add_stream *s) {
  return s->inflight + s->waiting >= s->svc->max_stream_adds ||
         s->inflight_bytes >= s->svc->max_stream_bytes;
}

static bool under_half(const add_stream *s) {
  return s->inflight + s->waiting <= s->svc->max_stream_adds / 2 &&
         s->inflight_bytes <= s->svc->max_stream_bytes / 2;
}

/* Invariants 2 and 3, after any change of the counters. Under s->mu. */
static void settle_locked(add_stream *s) {
  if (s->done || s->finished) return;
  if (!s->paused && !s->half_closed && over_limit(s)) {
    s->paused = true;
    sl_rpc_call_pause_reads(s->call);
    atomic_fetch_add(&s->svc->pauses, 1);
  } else if (s->paused && under_half(s)) {
    s->paused = false;
    sl_rpc_call_resume_reads(s->call);
  }
  if (s->half_closed && s->inflight == 0 && s->head == NULL) {
    s->finished = true;
    sl_bookie_service_add_entry_reply(s->call, NULL);
  }
}

/* Journal thread: the add is durable (SL_OK) or failed. */
static void on_added(sl_status st, const char *msg, void *arg) {
  add_op *op = arg;
  add_stream *s = op->s;
  sl_bookie_svc *svc = s->svc;
  atomic_fetch_add(st == SL_OK ? &svc->adds_ok : &svc->adds_refused, 1);
  sl_bookie_svc_count_(svc->m_adds, st);
  if (st == SL_OK) sl_metrics_histogram_observe_since(svc->m_add_seconds, op->arrival_ns);
  if (st != SL_OK) {
    sl_log(SL_LOG_WARN, "event=add_failed ledger=%" PRIu64 " entry=%" PRId64
           " status=\"%s\" error=\"%s\"", op->ledger, op->entry, sl_status_str(st), msg);
  }
  pthread_mutex_lock(&s->mu);
  s->inflight--;
  s->inflight_bytes -= op->len;
  ack_locked(s, op->ledger, op->entry, op->tag, st,
             st == SL_OK ? "" : (msg[0] ? msg : sl_status_str(st)));
  settle_locked(s);
  sl_rpc_call *call = s->call;
  pthread_mutex_unlock(&s->mu);
  free(op);
  sl_rpc_call_unref(call); /* may run stream_destroy */
}

static void on_start(sl_rpc_call *call, void *ctx) {
  sl_bookie_svc *svc = ctx;
  add_stream *s = sl_xcalloc(1, sizeof(*s));
  s->svc = svc;
  s->call = call;
  pthread_mutex_init(&s->mu, NULL);
  sl_rpc_call_set_user_destroy(call, s, stream_destroy);
  atomic_fetch_add(&svc->streams, 1);
}

/* Submits one add; a refusal is acked at once. */
static void submit(add_stream *s, const Sluice__V1__AddEntryRequest *m) {
  sl_bookie_svc *svc = s->svc;
  uint64_t arrival_ns = sl_metrics_now_ns();
  sl_err err = SL_ERR_INIT;
  sl_status st = SL_OK;
  if (m->payload.len > UINT32_MAX) {
    st = sl_err_set(&err, SL_ETOOBIG, "ledger %" PRIu64 " entry %" PRId64
                    ": payload too large", m->ledger_id, m->entry_id);
  }
  add_op *op = NULL;
  if (st == SL_OK) {
    op = sl_xmalloc(sizeof(*op) + m->payload.len);
    op->s = s;
    op->ledger = m->ledger_id;
    op->entry = m->entry_id;
    op->tag = m->tag;
    op->arrival_ns = arrival_ns;
    op->len = (uint32_t)m->payload.len;
    if (op->len > 0) memcpy(op->payload, m->payload.data, op->len);
    /* Count it first: the completion may run before the store returns. */
    pthread_mutex_lock(&s->mu);
    s->inflight++;
    s->inflight_bytes += op->len;
    pthread_mutex_unlock(&s->mu);
    sl_rpc_call_ref(s->call);
    sl_bookie_add_req req = {
        .ledger = m->ledger_id,
        .entry = m->entry_id,
        .epoch = m->epoch,
        .lac = m->lac,
        .payload = op->payload,
        .len = op->len,
        .crc = m->crc32c,
        .flags = m->recovery ? SL_BOOKIE_ADD_RECOVERY : 0,
        .password = m->password.data,
        .password_len = m->password.len,
    };
    st = sl_bookie_store_add(svc->store, &req, on_added, op, &err);
    if (st != SL_OK) {
      pthread_mutex_lock(&s->mu);
      s->inflight--;
      s->inflight_bytes -= op->len;
      pthread_mutex_unlock(&s->mu);
      free(op);
      sl_rpc_call_unref(s->call); /* the runtime's reference remains */
    }
  }
  pthread_mutex_lock(&s->mu);
  if (st != SL_OK) {
    atomic_fetch_add(&svc->adds_refused, 1);
    sl_bookie_svc_count_(svc->m_adds, st);
    sl_log(SL_LOG_DEBUG, "event=add_refused ledger=%" PRIu64 " entry=%" PRId64
           " status=\"%s\" error=\"%s\"", m->ledger_id, m->entry_id,
           sl_status_str(st), sl_err_msg(&err, st));
    ack_locked(s, m->ledger_id, m->entry_id, m->tag, st, sl_err_msg(&err, st));
  }
  settle_locked(s);
  pthread_mutex_unlock(&s->mu);
}

static void on_message(sl_rpc_call *call, const Sluice__V1__AddEntryRequest *m,
                       void *ctx) {
  add_stream *s = sl_rpc_call_user(call);
  if (m == NULL) {
    pthread_mutex_lock(&s->mu);
    s->half_closed = true;
    settle_locked(s);
    pthread_mutex_unlock(&s->mu);
    return;
  }
  atomic_fetch_add(&((sl_bookie_svc *)ctx)->adds, 1);
  submit(s, m);
}

static void on_writable(sl_rpc_call *call, void *ctx) {
  (void)ctx;
  add_stream *s = sl_rpc_call_user(call);
  pthread_mutex_lock(&s->mu);
  flush_waiting_locked(s);
  settle_locked(s);
  pthread_mutex_unlock(&s->mu);
}

static void on_done(sl_rpc_call *call, bool cancelled, void *ctx) {
  (void)ctx;
  add_stream *s = sl_rpc_call_user(call);
  pthread_mutex_lock(&s->mu);
  s->done = true;
  if (cancelled && (s->inflight > 0 || s->waiting > 0)) {
    sl_log(SL_LOG_DEBUG, "event=add_stream_cancelled inflight=%" PRIu32
           " waiting_acks=%" PRIu32, s->inflight, s->waiting);
  }
  pthread_mutex_unlock(&s->mu);
}

void sl_bookie_svc_add_handlers_(sl_bookie_service_handlers *h) {
  h->add_entry_start = on_start;
  h->add_entry_message = on_message;
  h->add_entry_writable = on_writable;
  h->add_entry_done = on_done;
}
