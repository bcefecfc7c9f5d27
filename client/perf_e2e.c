/* The core of `sluice-perf e2e` (see perf_e2e.h). */
#include "client/perf_e2e.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "client/histogram.h"
#include "common/clock.h"

/* Payload header: send time (mono ns), the run's nonce, and the sender's
 * index << 40 | its sequence (from 1). */
#define HDR_BYTES 24
#define DRAIN_MS 10000
#define CATCHUP_IDLE_MS 10000

typedef struct run {
  const sl_perf_e2e_opts *o;
  size_t size;
  uint64_t nonce;
  sl_hist hist;
  sl_hist pub;                  /* send -> durable receipt, measured sends */
  atomic_llong measure_from;    /* mono ns; sends due before are warmup */
  atomic_llong measure_until;   /* mono ns */
  atomic_bool stop_sending, stop_receiving;
  _Atomic uint64_t sent, acked, failed, received;     /* measured */
  _Atomic uint64_t all_acked, all_received;           /* whole run */
  pthread_mutex_t mu;           /* guards st, why */
  sl_status st;
  char why[SL_ERR_MAX];
} run;

static void run_fail(run *r, sl_status st, const char *what, const char *why) {
  pthread_mutex_lock(&r->mu);
  if (r->st == SL_OK) {
    r->st = st;
    snprintf(r->why, sizeof(r->why), "%s: %s", what, why);
  }
  pthread_mutex_unlock(&r->mu);
  atomic_store(&r->stop_sending, true);
}

static bool measured(run *r, int64_t t_ns) {
  return t_ns >= atomic_load(&r->measure_from) && t_ns < atomic_load(&r->measure_until);
}

static void sleep_ns(int64_t ns) {
  if (ns <= 0) return;
  struct timespec ts = {ns / 1000000000, ns % 1000000000};
  nanosleep(&ts, NULL);
}

/* ---- senders ---- */

typedef struct sender {
  run *r;
  int index;
  pthread_t t;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int window;                   /* sends that may still go out */
} sender;

typedef struct send_ctx {
  sender *s;
  int64_t stamp;                /* as in the payload */
} send_ctx;

static void on_sent(sl_status st, const sl_msg_id *id, void *arg) {
  (void)id;
  send_ctx *ctx = arg;
  sender *s = ctx->s;
  run *r = s->r;
  if (st == SL_OK) {
    atomic_fetch_add(&r->all_acked, 1);
    if (measured(r, ctx->stamp)) sl_hist_record(&r->pub, sl_clock_mono_ns() - ctx->stamp);
  } else {
    run_fail(r, st, "send", sl_status_str(st));
  }
  free(ctx);
  pthread_mutex_lock(&s->mu);
  s->window++;
  pthread_cond_signal(&s->cv);
  pthread_mutex_unlock(&s->mu);
}

/* Takes one slot of the window; false once stopping. */
static bool window_take(sender *s) {
  pthread_mutex_lock(&s->mu);
  while (s->window == 0 && !atomic_load(&s->r->stop_sending)) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 50000000;
    if (ts.tv_nsec >= 1000000000) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000;
    }
    pthread_cond_timedwait(&s->cv, &s->mu, &ts);
  }
  bool ok = s->window > 0 && !atomic_load(&s->r->stop_sending);
  if (ok) s->window--;
  pthread_mutex_unlock(&s->mu);
  return ok;
}

static void *send_thread(void *arg) {
  sender *s = arg;
  (void)pthread_setname_np(pthread_self(), "perf-send");
  run *r = s->r;
  sl_producer_opts po = SL_PRODUCER_OPTS_INIT;
  po.topic = r->o->topic;
  po.max_pending = s->window * 2;
  po.batch_delay_us = r->o->batch_delay_us;
  sl_producer *prod;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_producer_create(r->o->client, &po, &prod, &err);
  if (st != SL_OK) {
    run_fail(r, st, "producer", err.msg);
    return NULL;
  }
  uint8_t *payload = calloc(1, r->size);
  if (payload == NULL) abort();
  int producers = r->o->producers > 0 ? r->o->producers : 1;
  int64_t per_ns = r->o->rate > 0 ? (int64_t)(1e9 * producers / r->o->rate) : 0;
  int64_t due = sl_clock_mono_ns() + per_ns * s->index / producers;
  int64_t pace_ns = r->o->pace_us < 0   ? 0
                    : r->o->pace_us == 0 ? SL_PERF_E2E_PACE_US * 1000LL
                                         : r->o->pace_us * 1000LL;
  int64_t woke = 0;
  uint64_t seq = 0;
  while (window_take(s)) {
    int64_t stamp;
    if (per_ns > 0) {
      int64_t now = sl_clock_mono_ns();
      if (due > now) {
        sleep_ns((due > woke + pace_ns ? due : woke + pace_ns) - now);
        woke = sl_clock_mono_ns();
      }
      stamp = due; /* the time it was due: coordinated omission counted */
      due += per_ns;
    } else {
      stamp = sl_clock_mono_ns();
    }
    memcpy(payload, &stamp, 8);
    memcpy(payload + 8, &r->nonce, 8);
    seq++;
    uint64_t tag = (uint64_t)s->index << 40 | seq;
    memcpy(payload + 16, &tag, 8);
    sl_message m = {.payload = payload, .len = r->size};
    send_ctx *ctx = malloc(sizeof(*ctx));
    if (ctx == NULL) abort();
    *ctx = (send_ctx){s, stamp};
    st = sl_producer_send_async(prod, &m, on_sent, ctx, &err);
    if (st != SL_OK) {
      free(ctx); /* a refused send's callback does not run */
      run_fail(r, st, "send", err.msg);
      break;
    }
    if (measured(r, stamp)) atomic_fetch_add(&r->sent, 1);
  }
  sl_producer_destroy(prod); /* flushes: every send is acked or failed */
  free(payload);
  return NULL;
}

/* ---- receivers ---- */

typedef struct receiver {
  run *r;
  sl_consumer *c;
  pthread_t t;
} receiver;

static void *recv_thread(void *arg) {
  receiver *rc = arg;
  (void)pthread_setname_np(pthread_self(), "perf-recv");
  run *r = rc->r;
  while (!atomic_load(&r->stop_receiving)) {
    sl_received *m;
    sl_err err = SL_ERR_INIT;
    sl_status st = sl_consumer_receive(rc->c, 100, &m, &err);
    if (st == SL_ETIMEDOUT) continue;
    if (st != SL_OK) {
      run_fail(r, st, "receive", err.msg);
      break;
    }
    int64_t now = sl_clock_mono_ns();
    uint64_t nonce = 0;
    int64_t stamp = 0;
    if (m->len >= HDR_BYTES) {
      memcpy(&stamp, m->payload, 8);
      memcpy(&nonce, m->payload + 8, 8);
    }
    if (nonce == r->nonce) {
      atomic_fetch_add(&r->all_received, 1);
      if (measured(r, stamp)) {
        atomic_fetch_add(&r->received, 1);
        sl_hist_record(&r->hist, now - stamp);
        if (r->o->on_latency) r->o->on_latency(now - stamp, r->o->arg);
      }
    }
    st = sl_consumer_ack(rc->c, &m->id, &err);
    sl_received_free(m);
    if (st != SL_OK && st != SL_EUNAVAIL) { /* reconnecting: redelivered */
      run_fail(r, st, "ack", err.msg);
      break;
    }
  }
  return NULL;
}

/* ---- catch-up read ---- */

static sl_status catch_up(run *r, const char *sub, sl_perf_e2e_result *out, sl_err *err) {
  sl_consumer_opts co = SL_CONSUMER_OPTS_INIT;
  co.topic = r->o->topic;
  co.subscription = sub;
  co.from_earliest = true;
  sl_consumer *c;
  int64_t start = sl_clock_mono_ns();
  sl_status st = sl_consumer_create(r->o->client, &co, &c, err);
  if (st != SL_OK) return st;
  uint64_t want = atomic_load(&r->all_acked), got = 0;
  /* One bit per (sender, sequence): redeliveries are not counted twice. */
  int np = r->o->producers > 0 ? r->o->producers : 1;
  size_t per = (size_t)want + 2;
  uint8_t *seen = calloc((size_t)np * per / 8 + 1, 1);
  if (seen == NULL) abort();
  int64_t last = start;
  while (got < want && sl_clock_mono_ns() - last < (int64_t)CATCHUP_IDLE_MS * 1000000) {
    sl_received *m;
    st = sl_consumer_receive(c, 100, &m, err);
    if (st == SL_ETIMEDOUT) continue;
    if (st != SL_OK) break;
    uint64_t nonce = 0, tag = 0;
    if (m->len >= HDR_BYTES) {
      memcpy(&nonce, m->payload + 8, 8);
      memcpy(&tag, m->payload + 16, 8);
    }
    uint64_t sender = tag >> 40, seq = tag & ((1ULL << 40) - 1);
    if (nonce == r->nonce && sender < (uint64_t)np && seq < per) {
      size_t bit = (size_t)sender * per + (size_t)seq;
      if (!(seen[bit / 8] & (1u << (bit % 8)))) {
        seen[bit / 8] |= (uint8_t)(1u << (bit % 8));
        got++;
        last = sl_clock_mono_ns();
      }
    }
    st = sl_consumer_ack(c, &m->id, err);
    sl_received_free(m);
    if (st != SL_OK && st != SL_EUNAVAIL) break;
    st = SL_OK;
  }
  sl_consumer_destroy(c);
  free(seen);
  if (st != SL_OK && st != SL_ETIMEDOUT) return st;
  out->catchup_msgs = got;
  out->catchup_seconds = (double)(last - start) / 1e9;
  out->catchup_mb_per_s = out->catchup_seconds > 0
                              ? (double)got * (double)r->size / 1e6 / out->catchup_seconds
                              : 0;
  if (got < want)
    return sl_err_set(err, SL_EIO, "catch-up: %llu of %llu messages read back",
                      (unsigned long long)got, (unsigned long long)want);
  return SL_OK;
}

/* ---- the run ---- */

sl_status sl_perf_e2e_run(const sl_perf_e2e_opts *o, sl_perf_e2e_result *out, sl_err *err) {
  if (o == NULL || out == NULL || o->client == NULL || o->topic == NULL || o->rate < 0 ||
      o->seconds < 0 || o->warmup_seconds < 0 || o->producers < 0 || o->consumers < 0 ||
      o->in_flight < 0 || o->pace_us > 1000000)
    return sl_err_set(err, SL_EINVAL, "e2e: bad options");
  size_t size = o->message_bytes ? o->message_bytes : 1024;
  if (size < HDR_BYTES)
    return sl_err_set(err, SL_EINVAL, "e2e: messages of at least %d bytes", HDR_BYTES);
  memset(out, 0, sizeof(*out));
  run *r = calloc(1, sizeof(*r));
  if (r == NULL) return sl_err_set(err, SL_ENOMEM, "e2e: out of memory");
  r->o = o;
  r->size = size;
  r->nonce = (uint64_t)sl_clock_wall_ms() << 16 ^ (uint64_t)sl_clock_mono_ns();
  pthread_mutex_init(&r->mu, NULL);
  atomic_store(&r->measure_from, INT64_MAX);
  atomic_store(&r->measure_until, INT64_MAX);
  int np = o->producers > 0 ? o->producers : 1;
  int nc = o->consumers > 0 ? o->consumers : 1;
  const char *sub = o->subscription ? o->subscription : "perf-e2e";
  sender *snd = calloc((size_t)np, sizeof(*snd));
  receiver *rcv = calloc((size_t)nc, sizeof(*rcv));
  if (snd == NULL || rcv == NULL) abort();
  sl_status st = SL_OK;
  int nr = 0, ns = 0;

  /* Consumers first (from the latest message): nothing sent is missed. */
  for (; nr < nc; nr++) {
    sl_consumer_opts co = SL_CONSUMER_OPTS_INIT;
    co.topic = o->topic;
    co.subscription = sub;
    co.type = nc > 1 ? SL_SUB_SHARED : SL_SUB_EXCLUSIVE;
    rcv[nr].r = r;
    st = sl_consumer_create(o->client, &co, &rcv[nr].c, err);
    if (st != SL_OK) goto out_stop;
    if (pthread_create(&rcv[nr].t, NULL, recv_thread, &rcv[nr]) != 0) abort();
  }
  int64_t t0 = sl_clock_mono_ns();
  atomic_store(&r->measure_from, t0 + (int64_t)(o->warmup_seconds * 1e9));
  atomic_store(&r->measure_until, atomic_load(&r->measure_from) +
                                      (int64_t)((o->seconds > 0 ? o->seconds : 10) * 1e9));
  for (; ns < np; ns++) {
    snd[ns].r = r;
    snd[ns].index = ns;
    snd[ns].window = o->in_flight > 0 ? o->in_flight : 256;
    pthread_mutex_init(&snd[ns].mu, NULL);
    pthread_cond_init(&snd[ns].cv, NULL);
    if (pthread_create(&snd[ns].t, NULL, send_thread, &snd[ns]) != 0) abort();
  }
  int64_t from = atomic_load(&r->measure_from), until = atomic_load(&r->measure_until);
  sl_host_cpu cpu_from = {0}, cpu_until = {0};
  bool sampled = false, have_from = false;
  while (sl_clock_mono_ns() < until && !atomic_load(&r->stop_sending)) {
    if (!sampled && sl_clock_mono_ns() >= from) {
      have_from = sl_host_cpu_read(&cpu_from);
      sampled = true;
    }
    /* wake often near the start of the measured time, to sample it there */
    sleep_ns(sampled || from - sl_clock_mono_ns() > 20000000 ? 20000000 : 1000000);
  }
  out->host_known = have_from && sl_host_cpu_read(&cpu_until) &&
                    sl_host_cpu_split_of(&cpu_from, &cpu_until, &out->host_cpu);
  out->host_cpus = cpu_until.cpus;
  atomic_store(&r->stop_sending, true);

out_stop:
  for (int i = 0; i < ns; i++) {
    pthread_join(snd[i].t, NULL);
    pthread_mutex_destroy(&snd[i].mu);
    pthread_cond_destroy(&snd[i].cv);
  }
  /* Drain: everything acked must arrive (a loss is a bug, not a figure). */
  int64_t drain_end = sl_clock_mono_ms() + DRAIN_MS;
  while (st == SL_OK && r->st == SL_OK &&
         atomic_load(&r->all_received) < atomic_load(&r->all_acked) &&
         sl_clock_mono_ms() < drain_end)
    sleep_ns(10000000);
  atomic_store(&r->stop_receiving, true);
  for (int i = 0; i < nr; i++) {
    pthread_join(rcv[i].t, NULL);
    sl_consumer_destroy(rcv[i].c);
  }
  if (st == SL_OK && r->st != SL_OK) st = sl_err_set(err, r->st, "e2e: %s", r->why);
  if (st == SL_OK && atomic_load(&r->all_received) < atomic_load(&r->all_acked))
    st = sl_err_set(err, SL_EIO, "e2e: %llu messages acked, %llu received",
                    (unsigned long long)atomic_load(&r->all_acked),
                    (unsigned long long)atomic_load(&r->all_received));
  if (st == SL_OK) {
    out->sent = atomic_load(&r->sent);
    out->received = atomic_load(&r->received);
    out->acked = out->sent; /* every send was acked: a failure fails the run */
    out->seconds = o->seconds > 0 ? o->seconds : 10;
    out->msgs_per_s = (double)out->received / out->seconds;
    out->p50_ms = (double)sl_hist_quantile(&r->hist, 0.50) / 1e6;
    out->p99_ms = (double)sl_hist_quantile(&r->hist, 0.99) / 1e6;
    out->p999_ms = (double)sl_hist_quantile(&r->hist, 0.999) / 1e6;
    out->max_ms = (double)sl_hist_max(&r->hist) / 1e6;
    out->pub_p50_ms = (double)sl_hist_quantile(&r->pub, 0.50) / 1e6;
    out->pub_p99_ms = (double)sl_hist_quantile(&r->pub, 0.99) / 1e6;
  }
  if (st == SL_OK && o->catch_up) {
    char csub[256];
    snprintf(csub, sizeof(csub), "%s-catchup-%llx", sub, (unsigned long long)(r->nonce & 0xffffff));
    st = catch_up(r, csub, out, err);
  }
  pthread_mutex_destroy(&r->mu);
  free(snd);
  free(rcv);
  free(r);
  return st;
}
