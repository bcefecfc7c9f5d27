/*
 * libsluice producer (sluice.h): one connection thread and one receiver
 * thread per partition over the blocking stream API.
 *
 * The connection thread owns the stream: it opens it at the owner (looked
 * up again after a failure), sends what is unsent in batches, expires
 * messages past their send timeout, and on a broken stream joins the
 * receiver, reconnects and marks every pending message unsent so that it
 * goes again with its sequence id. The receiver matches receipts to pending
 * messages by sequence id and runs the callbacks.
 *
 * Batching delay: unsent messages wait on the connection thread until
 * batch_max of them (or BATCH_BYTES) are waiting, the oldest has waited
 * batch_delay_us, the partition is idle (nothing on its way and nothing
 * sent for a delay: the first message after a pause has no one to wait
 * for), or something must not wait (a sync send, a flush, destroy, resends
 * after a reconnect): one SendBatch then carries them all, where a
 * rate-paced sender would otherwise cost one stream message, one broker
 * wakeup and one receipt per message. Senders wake the connection thread
 * only when that changes what it waits for (the first unsent message, a
 * full batch, an urgent one), not on every message.
 *
 * Invariants
 *  1. A partition's pending list is in sequence order; the messages sent on
 *     the current stream are a prefix of it and the unsent ones the rest,
 *     starting at `unsent` (so a batch is always the next sequence ids).
 *  2. n_unsent and unsent_bytes count exactly the messages from `unsent` on.
 *
 * Memory of a pending message is freed only by whoever completes it (the
 * receiver on a receipt, the connection thread on expiry or failure). The
 * connection thread reads payloads outside the lock while sending; that is
 * safe because a receipt can only come for bytes the stream already took,
 * and expiry runs on the connection thread itself.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "broker.slrpc.h"
#include "client/client_int.h"
#include "common/clock.h"

/* Bytes of payload, key and properties per batch at most (a message larger
 * than this goes alone). A batch is one stream message and, at the broker,
 * one entry: this stays far under the gRPC message limit (16 MiB), the
 * broker's entry group (1 MiB) and the stored entry limit (5 MiB). */
#define BATCH_BYTES (256u << 10)
#define DEFAULT_DELAY_US 1000
#define MAX_DELAY_US 10000000
#define DEFAULT_BATCH 128
#define MAX_BATCH 512
#define ROUTE_WINDOW_DELAYS 10 /* unkeyed: a partition's window, in batch delays */

typedef struct pending {
  struct pending *next;
  uint64_t seq;
  Sluice__V1__SendRequest req;   /* payload, key, properties owned here */
  Sluice__V1__KeyValue *kv;
  Sluice__V1__KeyValue **kvp;
  sl_send_cb cb;
  void *arg;
  int64_t deadline_ns;           /* 0 = never */
  int64_t queued_ns;             /* when send_async took it */
  size_t bytes;                  /* payload, key and properties */
  bool sent;
} pending;

typedef struct part {
  struct sl_producer *p;
  int index;                     /* -1 for a non-partitioned topic */
  char *name;
  pthread_t conn, receiver;
  pthread_cond_t cv;             /* wakes the connection thread (p->mu) */
  bool receiver_running;
  sl_rpc_stream *s;              /* connection thread's */
  pending *head, *tail;          /* by sequence id */
  pending *unsent;               /* first not sent on this stream, or NULL */
  size_t n_pending, n_unsent, unsent_bytes;
  uint64_t urgent_end;           /* unsent messages below this sequence id
                                    go without the delay (sync sends and
                                    resends after a reconnect) */
  uint64_t next_seq;
  int64_t last_send_ns;          /* when the last batch went (0: never) */
  bool connected, broken, opened_once;
  bool redirected;               /* the stream ended on a redirect: the cache
                                    holds the new owner, no lookup needed */
  sl_status failed;              /* permanent failure of the partition */
  char why[SL_ERR_MAX];
} part;

struct sl_producer {
  sl_client *c;
  char *name;
  sl_producer_opts o;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  part *parts;
  size_t n_parts;
  size_t pending;
  uint64_t rr;                   /* unkeyed routing: next, or window offset */
  uint64_t duplicates;
  int64_t delay_ns;              /* batching delay; 0 = none */
  size_t batch_max;
  int flushing;                  /* sl_producer_flush calls waiting */
  bool closing;
  int64_t close_deadline_ns;
};

static void pending_free(pending *e) {
  if (e == NULL) return;
  free(e->req.payload.data);
  if (e->req.key != protobuf_c_empty_string) free(e->req.key);
  for (size_t i = 0; i < e->req.n_properties; i++) {
    free(e->kv[i].key);
    free(e->kv[i].value);
  }
  free(e->kv);
  free(e->kvp);
  free(e);
}

static pending *pending_new(const sl_message *m) {
  pending *e = calloc(1, sizeof(*e));
  if (e == NULL) return NULL;
  sluice__v1__send_request__init(&e->req);
  e->req.payload.data = malloc(m->len ? m->len : 1);
  if (e->req.payload.data == NULL) goto out_free;
  if (m->len) memcpy(e->req.payload.data, m->payload, m->len);
  e->req.payload.len = m->len;
  e->bytes = m->len;
  if (m->key != NULL && (e->req.key = strdup(m->key)) == NULL) goto out_free;
  if (m->key != NULL) e->bytes += strlen(m->key);
  if (m->n_props) {
    e->kv = calloc(m->n_props, sizeof(*e->kv));
    e->kvp = calloc(m->n_props, sizeof(*e->kvp));
    if (e->kv == NULL || e->kvp == NULL) goto out_free;
    for (size_t i = 0; i < m->n_props; i++) {
      sluice__v1__key_value__init(&e->kv[i]);
      e->req.n_properties = i + 1;
      e->kv[i].key = strdup(m->props[i].key ? m->props[i].key : "");
      e->kv[i].value = strdup(m->props[i].value ? m->props[i].value : "");
      e->kvp[i] = &e->kv[i];
      if (e->kv[i].key == NULL || e->kv[i].value == NULL) goto out_free;
      e->bytes += strlen(e->kv[i].key) + strlen(e->kv[i].value);
    }
    e->req.properties = e->kvp;
  }
  return e;
out_free:
  pending_free(e);
  return NULL;
}

static void id_from(sl_msg_id *id, const Sluice__V1__MessageId *m, uint32_t i, int index) {
  memset(id, 0, sizeof(*id));
  id->partition = index;
  if (m == NULL) return;
  id->ledger_id = m->ledger_id;
  id->entry_id = m->entry_id;
  id->batch_index = m->batch_index + (int32_t)i;
  id->batch_size = m->batch_size;
}

/* Unlinks every message of pt for which `take` holds into *out (in order);
 * they stay counted in p->pending until complete(). Keeps invariants 1 and
 * 2. Caller holds the lock. */
static size_t take_where(part *pt, bool (*take)(const pending *, const void *),
                         const void *ctx, pending **out) {
  pending **pp = &pt->head, *last = NULL, *tail_out = NULL;
  size_t n = 0;
  *out = NULL;
  while (*pp != NULL) {
    pending *e = *pp;
    if (take(e, ctx)) {
      *pp = e->next;
      if (pt->unsent == e) pt->unsent = e->next;
      if (!e->sent) {
        pt->n_unsent--;
        pt->unsent_bytes -= e->bytes;
      }
      e->next = NULL;
      if (tail_out) tail_out->next = e;
      else *out = e;
      tail_out = e;
      n++;
    } else {
      last = e;
      pp = &e->next;
    }
  }
  pt->tail = last;
  pt->n_pending -= n;
  return n;
}

/* Runs the callbacks of a taken list, then counts them done (so that flush
 * returns only after every callback ran). Called without the lock. */
/* sl_producer_send's wait for one message. */
typedef struct waiter {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool done;
  sl_status st;
  sl_msg_id id;
  char reason[SL_ERR_MAX];   /* the broker's, when it gave one */
} waiter;

static void wake(sl_status st, const sl_msg_id *id, void *arg) {
  waiter *w = arg;
  pthread_mutex_lock(&w->mu);
  w->st = st;
  w->id = *id;
  w->done = true;
  pthread_cond_signal(&w->cv);
  pthread_mutex_unlock(&w->mu);
}

/* reason: the broker's words for a failure, or NULL. A send callback has no
 * place for them, but sl_producer_send's error does. */
static void complete(part *pt, pending *list, sl_status st, const Sluice__V1__MessageId *id,
                     const char *reason) {
  uint32_t i = 0;
  while (list != NULL) {
    pending *next = list->next;
    sl_msg_id mid;
    id_from(&mid, st == SL_OK ? id : NULL, i++, pt->index);
    if (list->cb == wake && reason != NULL && reason[0] != '\0')
      snprintf(((waiter *)list->arg)->reason, SL_ERR_MAX, "%s", reason);
    if (list->cb) list->cb(st, &mid, list->arg);
    pending_free(list);
    list = next;
  }
  pthread_mutex_lock(&pt->p->mu);
  pt->p->pending -= i;
  pthread_cond_broadcast(&pt->p->cv);
  if (pt->p->closing) pthread_cond_signal(&pt->cv); /* it waits for the last */
  pthread_mutex_unlock(&pt->p->mu);
}

typedef struct seq_range {
  uint64_t first, last;
} seq_range;

static bool in_range(const pending *e, const void *ctx) {
  const seq_range *r = ctx;
  return e->sent && e->seq >= r->first && e->seq <= r->last;
}

static bool any(const pending *e, const void *ctx) {
  (void)e;
  (void)ctx;
  return true;
}

static bool expired(const pending *e, const void *ctx) {
  int64_t now = *(const int64_t *)ctx;
  return e->deadline_ns != 0 && e->deadline_ns <= now;
}

static void mark_broken(part *pt) {
  pthread_mutex_lock(&pt->p->mu);
  pt->broken = true;
  pthread_cond_signal(&pt->cv);
  pthread_mutex_unlock(&pt->p->mu);
}

static void on_receipt(part *pt, const Sluice__V1__SendReceipt *r) {
  sl_producer *p = pt->p;
  uint32_t count = r->count ? r->count : 1;
  seq_range range = {r->sequence_id, r->sequence_id + count - 1};
  pending *done;
  pthread_mutex_lock(&p->mu);
  take_where(pt, in_range, &range, &done);
  if (r->duplicate) p->duplicates += count;
  pthread_mutex_unlock(&p->mu);
  complete(pt, done, (sl_status)(-(int)r->status), r->id, r->error);
}

static void *recv_loop(void *arg) {
  part *pt = arg;
  (void)pthread_setname_np(pthread_self(), "sl-produce-acks");
  for (;;) {
    Sluice__V1__ProduceResponse *r = NULL;
    sl_err err = SL_ERR_INIT;
    sl_status st = sl_broker_service_produce_recv(pt->s, &r, 0, &err);
    if (st != SL_OK || r == NULL) break;
    if (r->kind_case == SLUICE__V1__PRODUCE_RESPONSE__KIND_RECEIPT) {
      on_receipt(pt, r->receipt);
    } else if (r->kind_case == SLUICE__V1__PRODUCE_RESPONSE__KIND_REDIRECT) {
      /* The stream ends next; the reconnect goes where this points. */
      sl_client_redirect(pt->p->c, pt->name, r->redirect->broker_address, r->redirect->epoch);
      pthread_mutex_lock(&pt->p->mu);
      pt->redirected = true;
      pthread_mutex_unlock(&pt->p->mu);
    }
    protobuf_c_message_free_unpacked(&r->base, NULL);
  }
  mark_broken(pt);
  return NULL;
}

/* Opens the stream at the partition's owner. Called without the lock. */
static sl_status connect_part(part *pt, bool refresh, sl_err *err) {
  sl_producer *p = pt->p;
  char *address = NULL;
  sl_status st = sl_client_owner(p->c, pt->name, refresh, &address, err);
  if (st != SL_OK) return st;
  sl_rpc_channel *ch;
  st = sl_client_channel(p->c, address, &ch, err);
  free(address);
  if (st != SL_OK) return st;
  sl_rpc_call_opts o = {0};
  o.wait_for_ready = false;
  st = sl_broker_service_produce_open(ch, &o, &pt->s, err);
  if (st != SL_OK) return st;
  Sluice__V1__ProducerOpen op = SLUICE__V1__PRODUCER_OPEN__INIT;
  op.topic = pt->name;
  op.producer_name = p->name;
  op.resume = true;
  Sluice__V1__ProduceRequest req = SLUICE__V1__PRODUCE_REQUEST__INIT;
  req.kind_case = SLUICE__V1__PRODUCE_REQUEST__KIND_OPEN;
  req.open = &op;
  int timeout = sl_client_timeout_ms(p->c);
  Sluice__V1__ProduceResponse *r = NULL;
  st = sl_broker_service_produce_send(pt->s, &req, timeout, err);
  if (st == SL_OK) st = sl_broker_service_produce_recv(pt->s, &r, timeout, err);
  if (st == SL_OK && r != NULL && r->kind_case == SLUICE__V1__PRODUCE_RESPONSE__KIND_REDIRECT) {
    sl_client_redirect(p->c, pt->name, r->redirect->broker_address, r->redirect->epoch);
    pthread_mutex_lock(&p->mu);
    pt->redirected = true;
    pthread_mutex_unlock(&p->mu);
  }
  if (st == SL_OK && (r == NULL || r->kind_case != SLUICE__V1__PRODUCE_RESPONSE__KIND_OPENED))
    st = sl_err_set(err, SL_EREDIRECT, "%s: not opened (owner moved)", pt->name);
  if (st == SL_OK) {
    pthread_mutex_lock(&p->mu);
    int64_t last = r->opened->last_sequence_id;
    if (!pt->opened_once && last >= 0) pt->next_seq = (uint64_t)last + 1;
    pt->opened_once = true;
    /* Everything pending goes again, at once (it has waited enough). */
    pt->n_unsent = 0;
    pt->unsent_bytes = 0;
    for (pending *e = pt->head; e != NULL; e = e->next) {
      e->sent = false;
      pt->n_unsent++;
      pt->unsent_bytes += e->bytes;
    }
    pt->unsent = pt->head;
    if (pt->tail) pt->urgent_end = pt->tail->seq + 1;
    pt->connected = true;
    pt->broken = false;
    pthread_mutex_unlock(&p->mu);
  }
  if (r != NULL) protobuf_c_message_free_unpacked(&r->base, NULL);
  if (st != SL_OK) {
    sl_rpc_stream_destroy(pt->s);
    pt->s = NULL;
    return sl_err_wrap(err, st, "producer %s", pt->name);
  }
  pt->receiver_running = pthread_create(&pt->receiver, NULL, recv_loop, pt) == 0;
  if (!pt->receiver_running) {
    sl_rpc_stream_destroy(pt->s);
    pt->s = NULL;
    pthread_mutex_lock(&p->mu);
    pt->connected = false;
    pthread_mutex_unlock(&p->mu);
    return sl_err_set(err, SL_ENOMEM, "producer %s: no thread", pt->name);
  }
  return SL_OK;
}

/* Called with the lock; returns with it. */
static void disconnect(part *pt) {
  sl_producer *p = pt->p;
  pt->connected = false;
  pthread_mutex_unlock(&p->mu);
  if (pt->s) sl_rpc_stream_cancel(pt->s);
  if (pt->receiver_running) pthread_join(pt->receiver, NULL);
  pt->receiver_running = false;
  sl_rpc_stream_destroy(pt->s);
  pt->s = NULL;
  pthread_mutex_lock(&p->mu);
}

static void timed_wait(sl_producer *p, int ms) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_nsec += (long)ms * 1000000L;
  ts.tv_sec += ts.tv_nsec / 1000000000L;
  ts.tv_nsec %= 1000000000L;
  pthread_cond_timedwait(&p->cv, &p->mu, &ts);
}

/* The connection thread's wait: until woken or `at` (monotonic ns; pt->cv
 * runs on the monotonic clock). Caller holds the lock. */
static void conn_wait_until(part *pt, int64_t at) {
  struct timespec ts = {(time_t)(at / 1000000000), (long)(at % 1000000000)};
  pthread_cond_timedwait(&pt->cv, &pt->p->mu, &ts);
}

static void conn_wait(part *pt, int ms) {
  conn_wait_until(pt, sl_clock_mono_ns() + (int64_t)ms * 1000000);
}

/* Whether pt's unsent messages go now; if not, *at (may be NULL) is when
 * the oldest will have waited the delay. Caller holds the lock. */
static bool send_due(const part *pt, int64_t now, int64_t *at) {
  const sl_producer *p = pt->p;
  if (pt->n_unsent == 0) return false;
  if (p->delay_ns == 0 || p->flushing > 0 || p->closing || pt->unsent->seq < pt->urgent_end ||
      pt->n_unsent >= p->batch_max || pt->unsent_bytes >= BATCH_BYTES)
    return true;
  /* Idle: nothing on its way (sent, no receipt yet) and nothing sent for a
   * delay. The first message after a pause has no batch to join. */
  if (pt->n_pending == pt->n_unsent && pt->unsent->queued_ns - pt->last_send_ns >= p->delay_ns)
    return true;
  int64_t when = pt->unsent->queued_ns + p->delay_ns;
  if (at != NULL) *at = when;
  return now >= when;
}

static void wake_all_parts(sl_producer *p) {
  for (size_t i = 0; i < p->n_parts; i++) pthread_cond_signal(&p->parts[i].cv);
}

/* Fails (or expires) messages; caller holds the lock, which is dropped
 * around the callbacks. */
static void fail_where(part *pt, bool (*take)(const pending *, const void *), const void *ctx,
                       sl_status st) {
  pending *done;
  if (take_where(pt, take, ctx, &done) == 0) return;
  pthread_mutex_unlock(&pt->p->mu);
  complete(pt, done, st, NULL, NULL);
  pthread_mutex_lock(&pt->p->mu);
}

/* Sends the next unsent messages, up to batch_max and BATCH_BYTES (the
 * first always goes); caller holds the lock. */
static void send_some(part *pt) {
  sl_producer *p = pt->p;
  Sluice__V1__SendRequest *batch[MAX_BATCH];
  size_t n = 0, bytes = 0;
  while (pt->unsent != NULL && n < p->batch_max &&
         (n == 0 || bytes + pt->unsent->bytes <= BATCH_BYTES)) {
    pending *e = pt->unsent;
    e->sent = true;
    e->req.sequence_id = e->seq;
    batch[n++] = &e->req;
    bytes += e->bytes;
    pt->unsent = e->next;
  }
  pt->n_unsent -= n;
  pt->unsent_bytes -= bytes;
  if (n == 0) return;
  pt->last_send_ns = sl_clock_mono_ns();
  pthread_mutex_unlock(&p->mu);
  Sluice__V1__SendBatch b = SLUICE__V1__SEND_BATCH__INIT;
  b.n_messages = n;
  b.messages = batch;
  Sluice__V1__ProduceRequest req = SLUICE__V1__PRODUCE_REQUEST__INIT;
  if (n == 1) {
    req.kind_case = SLUICE__V1__PRODUCE_REQUEST__KIND_SEND;
    req.send = batch[0];
  } else {
    req.kind_case = SLUICE__V1__PRODUCE_REQUEST__KIND_BATCH;
    req.batch = &b;
  }
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_broker_service_produce_send(pt->s, &req, sl_client_timeout_ms(p->c), &err);
  if (st != SL_OK) sl_rpc_stream_cancel(pt->s); /* the receiver sees it and marks broken */
  pthread_mutex_lock(&p->mu);
}

static void *conn_loop(void *arg) {
  part *pt = arg;
  (void)pthread_setname_np(pthread_self(), "sl-produce");
  sl_producer *p = pt->p;
  int attempt = 0;
  bool reconnecting = false;
  pthread_mutex_lock(&p->mu);
  for (;;) {
    int64_t now = sl_clock_mono_ns();
    fail_where(pt, expired, &now, SL_ETIMEDOUT);
    if (p->closing && (pt->n_pending == 0 || now >= p->close_deadline_ns)) break;
    if (pt->failed != SL_OK && !pt->connected) {
      fail_where(pt, any, NULL, pt->failed);
      if (p->closing) break;
      conn_wait(pt, 100);
      continue;
    }
    if (pt->connected && pt->broken) {
      disconnect(pt);
      reconnecting = true;
      continue;
    }
    if (!pt->connected) {
      /* After a redirect the cache names the owner; after any other
       * failure the cached owner is suspect. */
      bool refresh = (reconnecting || attempt > 0) && !pt->redirected;
      pt->redirected = false;
      pthread_mutex_unlock(&p->mu);
      sl_err err = SL_ERR_INIT;
      sl_status st = connect_part(pt, refresh, &err);
      pthread_mutex_lock(&p->mu);
      if (st == SL_OK) {
        attempt = 0;
        reconnecting = false;
      } else if (st == SL_EREDIRECT && pt->redirected && attempt++ < 3) {
        continue; /* straight to the owner it named (a few hops at most) */
      } else if (sl_client_permanent(st)) {
        pt->failed = st;
        snprintf(pt->why, sizeof(pt->why), "%s", err.msg);
        pthread_cond_broadcast(&p->cv);
      } else {
        attempt++;
        conn_wait(pt, attempt < 10 ? 50 * attempt : 500);
      }
      continue;
    }
    /* Expiry is checked at least every 100 ms. */
    int64_t at = now + 100000000;
    if (send_due(pt, now, &at)) {
      send_some(pt);
      continue;
    }
    conn_wait_until(pt, at < now + 100000000 ? at : now + 100000000);
  }
  fail_where(pt, any, NULL, SL_ECANCELED);
  if (pt->connected) disconnect(pt);
  pthread_mutex_unlock(&p->mu);
  return NULL;
}

static sl_status start_parts(sl_producer *p, const sl_lookup *l, sl_err *err) {
  p->parts = calloc(l->n, sizeof(*p->parts));
  if (p->parts == NULL) return sl_err_set(err, SL_ENOMEM, "producer: out of memory");
  for (size_t i = 0; i < l->n; i++) {
    part *pt = &p->parts[i];
    pt->p = p;
    pt->index = l->partitions ? (int)i : -1;
    pt->name = strdup(l->partition[i]);
    if (pt->name == NULL) return sl_err_set(err, SL_ENOMEM, "producer: out of memory");
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&pt->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&pt->conn, NULL, conn_loop, pt) != 0) {
      free(pt->name);
      pthread_cond_destroy(&pt->cv);
      return sl_err_set(err, SL_ENOMEM, "producer: no thread");
    }
    p->n_parts = i + 1;
  }
  return SL_OK;
}

sl_status sl_producer_create(sl_client *c, const sl_producer_opts *opts, sl_producer **out,
                             sl_err *err) {
  sl_status st = sl_topic_name_check(opts->topic, err);
  if (st != SL_OK) return st;
  if (opts->batch_max < 0 || opts->batch_max > MAX_BATCH)
    return sl_err_set(err, SL_EINVAL, "producer %s: batch_max %d not in 0..%d", opts->topic,
                      opts->batch_max, MAX_BATCH);
  if (opts->batch_delay_us > MAX_DELAY_US)
    return sl_err_set(err, SL_EINVAL, "producer %s: batch_delay_us %d over %d (10 s)",
                      opts->topic, opts->batch_delay_us, MAX_DELAY_US);
  sl_lookup l;
  if ((st = sl_client_lookup(c, opts->topic, false, &l, err)) != SL_OK) return st;
  sl_producer *p = calloc(1, sizeof(*p));
  if (p == NULL) {
    sl_lookup_free(&l);
    return sl_err_set(err, SL_ENOMEM, "producer: out of memory");
  }
  p->c = c;
  p->o = *opts;
  p->o.topic = NULL;
  p->o.name = NULL;
  p->batch_max = opts->batch_max > 0 ? (size_t)opts->batch_max : DEFAULT_BATCH;
  int delay_us = opts->batch_delay_us == 0 ? DEFAULT_DELAY_US : opts->batch_delay_us;
  p->delay_ns = delay_us > 0 ? (int64_t)delay_us * 1000 : 0;
  p->rr = sl_client_random(); /* producers start on different partitions */
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->cv, NULL);
  char gen[96];
  sl_client_gen_name(gen, sizeof(gen), "sluice");
  p->name = strdup(opts->name ? opts->name : gen);
  st = p->name ? start_parts(p, &l, err) : sl_err_set(err, SL_ENOMEM, "producer: out of memory");
  sl_lookup_free(&l);
  if (st != SL_OK) goto out_destroy;
  /* Wait until every partition opened once, or one failed for good. */
  int64_t deadline = sl_clock_mono_ns() + (int64_t)sl_client_timeout_ms(c) * 1000000;
  pthread_mutex_lock(&p->mu);
  for (;;) {
    size_t opened = 0;
    for (size_t i = 0; i < p->n_parts; i++) {
      if (p->parts[i].failed != SL_OK) {
        st = sl_err_set(err, p->parts[i].failed, "%s", p->parts[i].why);
        break;
      }
      opened += p->parts[i].opened_once;
    }
    if (st != SL_OK || opened == p->n_parts) break;
    if (sl_clock_mono_ns() >= deadline) {
      st = sl_err_set(err, SL_EUNAVAIL, "topic %s: no broker accepted the producer within %d ms",
                      opts->topic, sl_client_timeout_ms(c));
      break;
    }
    timed_wait(p, 50);
  }
  pthread_mutex_unlock(&p->mu);
  if (st != SL_OK) goto out_destroy;
  *out = p;
  return SL_OK;
out_destroy:
  sl_producer_destroy(p);
  return st;
}

static uint64_t fnv1a(const char *s) {
  uint64_t h = 1469598103934665603ULL;
  for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ULL;
  return h;
}

/*
 * The partition of an unkeyed message. With batching on, every unkeyed
 * message of a window of ROUTE_WINDOW_DELAYS batch delays goes to one
 * partition, the next window's to the next (Pulsar's batch-level round
 * robin). Message-by-message round robin split a steady rate into n
 * batches of 1/n the size: 8 partitions at 5k msgs/s stored 3.5 messages
 * per entry instead of 6.7, and the per-entry work saturated the machine
 * (e2e p50 31-51 ms against 5 ms for one partition). Batching off:
 * message by message. Caller holds mu.
 */
static size_t route_unkeyed(sl_producer *p) {
  if (p->delay_ns == 0 || p->n_parts == 1) return (size_t)(p->rr++ % p->n_parts);
  uint64_t window = (uint64_t)(sl_clock_mono_ns() / (p->delay_ns * ROUTE_WINDOW_DELAYS));
  return (size_t)((window + p->rr) % p->n_parts);
}

/* Queues one message on its partition; `urgent` sends it (and every unsent
 * message before it) without the batching delay. */
static sl_status enqueue(sl_producer *p, const sl_message *m, sl_send_cb cb, void *arg,
                         bool urgent, sl_err *err) {
  if (m == NULL || (m->len && m->payload == NULL))
    return sl_err_set(err, SL_EINVAL, "send: no message");
  pending *e = pending_new(m);
  if (e == NULL) return sl_err_set(err, SL_ENOMEM, "send: out of memory");
  e->cb = cb;
  e->arg = arg;
  int timeout = p->o.send_timeout_ms == 0 ? 30000 : p->o.send_timeout_ms;
  if (timeout > 0) e->deadline_ns = sl_clock_mono_ns() + (int64_t)timeout * 1000000;
  size_t max = p->o.max_pending > 0 ? (size_t)p->o.max_pending : 1000;
  pthread_mutex_lock(&p->mu);
  while (p->pending >= max && !p->closing) {
    if (!p->o.block_if_full) {
      pthread_mutex_unlock(&p->mu);
      pending_free(e);
      return sl_err_set(err, SL_EBUSY, "send: %zu messages pending (the limit); retry later",
                        max);
    }
    if (e->deadline_ns && sl_clock_mono_ns() >= e->deadline_ns) {
      pthread_mutex_unlock(&p->mu);
      pending_free(e);
      return sl_err_set(err, SL_ETIMEDOUT, "send: pending queue stayed full for %d ms", timeout);
    }
    timed_wait(p, 50);
  }
  if (p->closing) {
    pthread_mutex_unlock(&p->mu);
    pending_free(e);
    return sl_err_set(err, SL_ECANCELED, "send: producer closing");
  }
  size_t i = m->key && *m->key ? (size_t)(fnv1a(m->key) % p->n_parts) : route_unkeyed(p);
  part *pt = &p->parts[i];
  if (pt->failed != SL_OK) {
    sl_status st = sl_err_set(err, pt->failed, "%s", pt->why);
    pthread_mutex_unlock(&p->mu);
    pending_free(e);
    return st;
  }
  e->seq = pt->next_seq++;
  e->queued_ns = sl_clock_mono_ns();
  if (pt->tail) pt->tail->next = e;
  else pt->head = e;
  pt->tail = e;
  if (pt->unsent == NULL) pt->unsent = e;
  pt->n_pending++;
  pt->n_unsent++;
  pt->unsent_bytes += e->bytes;
  if (urgent) pt->urgent_end = e->seq + 1;
  p->pending++;
  /* The connection thread needs to know only when this changes its wait:
   * a first unsent message starts the delay, and a due one ends it. */
  if (pt->n_unsent == 1 || send_due(pt, e->queued_ns, NULL)) pthread_cond_signal(&pt->cv);
  pthread_mutex_unlock(&p->mu);
  return SL_OK;
}

sl_status sl_producer_send_async(sl_producer *p, const sl_message *m, sl_send_cb cb, void *arg,
                                 sl_err *err) {
  return enqueue(p, m, cb, arg, false, err);
}

sl_status sl_producer_send(sl_producer *p, const sl_message *m, sl_msg_id *id, sl_err *err) {
  waiter w = {.done = false};
  pthread_mutex_init(&w.mu, NULL);
  pthread_cond_init(&w.cv, NULL);
  /* Nothing will join this message from this thread: no delay. */
  sl_status st = enqueue(p, m, wake, &w, true, err);
  if (st == SL_OK) {
    pthread_mutex_lock(&w.mu);
    while (!w.done) pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    st = w.st;
    if (st != SL_OK)
      sl_err_set(err, st, "send: %s", w.reason[0] ? w.reason : sl_status_str(st));
    else if (id) *id = w.id;
  }
  pthread_mutex_destroy(&w.mu);
  pthread_cond_destroy(&w.cv);
  return st;
}

sl_status sl_producer_flush(sl_producer *p, sl_err *err) {
  (void)err;
  pthread_mutex_lock(&p->mu);
  p->flushing++; /* what is unsent goes without the delay */
  wake_all_parts(p);
  while (p->pending > 0) timed_wait(p, 50);
  p->flushing--;
  pthread_mutex_unlock(&p->mu);
  return SL_OK;
}

uint64_t sl_producer_duplicates(const sl_producer *p) {
  pthread_mutex_lock((pthread_mutex_t *)&p->mu);
  uint64_t n = p->duplicates;
  pthread_mutex_unlock((pthread_mutex_t *)&p->mu);
  return n;
}

void sl_producer_destroy(sl_producer *p) {
  if (p == NULL) return;
  int timeout = p->o.send_timeout_ms > 0 ? p->o.send_timeout_ms
                                          : (p->o.send_timeout_ms == 0 ? 30000
                                                                       : sl_client_timeout_ms(p->c));
  pthread_mutex_lock(&p->mu);
  p->closing = true;
  p->close_deadline_ns = sl_clock_mono_ns() + (int64_t)timeout * 1000000;
  pthread_cond_broadcast(&p->cv);
  wake_all_parts(p);
  pthread_mutex_unlock(&p->mu);
  for (size_t i = 0; i < p->n_parts; i++) pthread_join(p->parts[i].conn, NULL);
  for (size_t i = 0; i < p->n_parts; i++) {
    free(p->parts[i].name);
    pthread_cond_destroy(&p->parts[i].cv);
  }
  free(p->parts);
  free(p->name);
  pthread_mutex_destroy(&p->mu);
  pthread_cond_destroy(&p->cv);
  free(p);
}
