/* sluice-perf produce: see perf_produce.h. */
#include "client/perf_produce.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker.slrpc.h"
#include "common/clock.h"
#include "common/rpc_client.h"

typedef struct producer {
  const sl_perf_produce_opts *o;
  int index;
  sl_rpc_channel *ch;
  sl_rpc_stream *s;
  pthread_t sender, receiver;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int window;             /* messages that may still be sent */
  bool stop;              /* sender: stop sending */
  bool over;              /* receiver: stream ended or failed */
  sl_status st;
  char why[SL_ERR_MAX];
  uint64_t next_send;     /* sequence id of the next message */
  uint64_t next_ack;      /* sequence id the next receipt covers */
  int64_t *sent_ns;       /* ring of in_flight send times, by sequence */
  int64_t measure_from_ns, measure_to_ns;
  int64_t *lat;           /* latencies of measured messages */
  size_t n_lat, cap_lat;
  uint64_t failed;
} producer;

static void fail(producer *p, sl_status st, const char *why) {
  pthread_mutex_lock(&p->mu);
  if (p->st == SL_OK) {
    p->st = st;
    snprintf(p->why, sizeof(p->why), "producer %d: %s", p->index, why);
  }
  p->over = p->stop = true;
  pthread_cond_broadcast(&p->cv);
  pthread_mutex_unlock(&p->mu);
}

static void *send_loop(void *arg) {
  producer *p = arg;
  (void)pthread_setname_np(pthread_self(), "perf-send");
  const sl_perf_produce_opts *o = p->o;
  int max_batch = o->max_batch > 0 ? o->max_batch : 128;
  size_t len = o->message_bytes ? o->message_bytes : 1024;
  uint8_t *payload = calloc(1, len);
  Sluice__V1__SendRequest *sends = calloc((size_t)max_batch, sizeof(*sends));
  Sluice__V1__SendRequest **ptrs = calloc((size_t)max_batch, sizeof(*ptrs));
  for (int i = 0; i < max_batch; i++) {
    sluice__v1__send_request__init(&sends[i]);
    sends[i].payload.data = payload;
    sends[i].payload.len = len;
    ptrs[i] = &sends[i];
  }
  for (;;) {
    pthread_mutex_lock(&p->mu);
    while (p->window == 0 && !p->stop) pthread_cond_wait(&p->cv, &p->mu);
    if (p->stop) {
      pthread_mutex_unlock(&p->mu);
      break;
    }
    int n = p->window < max_batch ? p->window : max_batch;
    p->window -= n;
    uint64_t first = p->next_send;
    p->next_send += (uint64_t)n;
    int64_t now = sl_clock_mono_ns();
    int in_flight = o->in_flight > 0 ? o->in_flight : 1;
    for (int i = 0; i < n; i++) p->sent_ns[(first + (uint64_t)i) % (uint64_t)in_flight] = now;
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < n; i++) sends[i].sequence_id = first + (uint64_t)i;
    Sluice__V1__SendBatch batch = SLUICE__V1__SEND_BATCH__INIT;
    batch.n_messages = (size_t)n;
    batch.messages = ptrs;
    Sluice__V1__ProduceRequest req = SLUICE__V1__PRODUCE_REQUEST__INIT;
    if (n == 1) {
      req.kind_case = SLUICE__V1__PRODUCE_REQUEST__KIND_SEND;
      req.send = &sends[0];
    } else {
      req.kind_case = SLUICE__V1__PRODUCE_REQUEST__KIND_BATCH;
      req.batch = &batch;
    }
    sl_err err = SL_ERR_INIT;
    sl_status st = sl_broker_service_produce_send(p->s, &req, 30000, &err);
    if (st != SL_OK) {
      fail(p, st, err.msg);
      break;
    }
  }
  free(ptrs);
  free(sends);
  free(payload);
  return NULL;
}

static void record(producer *p, int64_t lat_ns, int64_t now) {
  if (now < p->measure_from_ns || now > p->measure_to_ns) return;
  if (p->o->on_ack) p->o->on_ack(lat_ns, p->o->on_ack_arg);
  if (p->n_lat == p->cap_lat) {
    p->cap_lat = p->cap_lat ? p->cap_lat * 2 : 65536;
    p->lat = realloc(p->lat, p->cap_lat * sizeof(*p->lat));
    if (p->lat == NULL) abort();
  }
  p->lat[p->n_lat++] = lat_ns;
}

static void *recv_loop(void *arg) {
  producer *p = arg;
  (void)pthread_setname_np(pthread_self(), "perf-acks");
  int in_flight = p->o->in_flight > 0 ? p->o->in_flight : 1;
  for (;;) {
    Sluice__V1__ProduceResponse *r = NULL;
    sl_err err = SL_ERR_INIT;
    sl_status st = sl_broker_service_produce_recv(p->s, &r, 0, &err);
    if (st != SL_OK || r == NULL) {
      bool stopping;
      pthread_mutex_lock(&p->mu);
      stopping = p->stop;
      pthread_mutex_unlock(&p->mu);
      if (!stopping) fail(p, st != SL_OK ? st : SL_ECANCELED, err.msg);
      break;
    }
    if (r->kind_case == SLUICE__V1__PRODUCE_RESPONSE__KIND_RECEIPT) {
      uint32_t count = r->receipt->count ? r->receipt->count : 1;
      int64_t now = sl_clock_mono_ns();
      pthread_mutex_lock(&p->mu);
      for (uint32_t i = 0; i < count; i++) {
        uint64_t seq = p->next_ack++;
        if (r->receipt->status != 0) p->failed++;
        else record(p, now - p->sent_ns[seq % (uint64_t)in_flight], now);
      }
      p->window += (int)count;
      pthread_cond_broadcast(&p->cv);
      pthread_mutex_unlock(&p->mu);
    }
    protobuf_c_message_free_unpacked(&r->base, NULL);
  }
  pthread_mutex_lock(&p->mu);
  p->over = true;
  pthread_cond_broadcast(&p->cv);
  pthread_mutex_unlock(&p->mu);
  return NULL;
}

static sl_status open_producer(producer *p, sl_err *err) {
  sl_rpc_channel_opts co = {.target = p->o->target};
  sl_status st = sl_rpc_channel_create(&co, &p->ch, err);
  if (st != SL_OK) return st;
  sl_rpc_call_opts o = {0};
  o.wait_for_ready = true;
  st = sl_broker_service_produce_open(p->ch, &o, &p->s, err);
  if (st != SL_OK) return st;
  char name[64];
  snprintf(name, sizeof(name), "perf-%d-%lld", p->index, (long long)sl_clock_wall_ms());
  Sluice__V1__ProducerOpen op = SLUICE__V1__PRODUCER_OPEN__INIT;
  op.topic = (char *)p->o->topic;
  op.producer_name = name;
  Sluice__V1__ProduceRequest req = SLUICE__V1__PRODUCE_REQUEST__INIT;
  req.kind_case = SLUICE__V1__PRODUCE_REQUEST__KIND_OPEN;
  req.open = &op;
  st = sl_broker_service_produce_send(p->s, &req, 10000, err);
  if (st != SL_OK) return st;
  Sluice__V1__ProduceResponse *r = NULL;
  st = sl_broker_service_produce_recv(p->s, &r, 30000, err);
  if (st != SL_OK) return st;
  bool opened = r != NULL && r->kind_case == SLUICE__V1__PRODUCE_RESPONSE__KIND_OPENED;
  if (r != NULL) protobuf_c_message_free_unpacked(&r->base, NULL);
  if (!opened) return sl_err_set(err, SL_EREDIRECT, "%s: not opened (owner elsewhere?)",
                                 p->o->target);
  return SL_OK;
}

static int cmp64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

static double pct(const int64_t *v, size_t n, double q) {
  if (n == 0) return 0;
  size_t i = (size_t)(q * (double)(n - 1) + 0.5);
  return (double)v[i] / 1e6;
}

sl_status sl_perf_produce_run(const sl_perf_produce_opts *opts,
                              sl_perf_produce_result *out, sl_err *err) {
  memset(out, 0, sizeof(*out));
  int n = opts->producers > 0 ? opts->producers : 1;
  int in_flight = opts->in_flight > 0 ? opts->in_flight : 1;
  double secs = opts->seconds > 0 ? opts->seconds : 5;
  producer *ps = calloc((size_t)n, sizeof(*ps));
  sl_status st = SL_OK;
  int64_t start = sl_clock_mono_ns();
  int64_t from = start + (int64_t)(opts->warmup_seconds * 1e9);
  int64_t to = from + (int64_t)(secs * 1e9);
  int started = 0;
  for (int i = 0; i < n && st == SL_OK; i++) {
    producer *p = &ps[i];
    p->o = opts;
    p->index = i;
    p->window = in_flight;
    p->sent_ns = calloc((size_t)in_flight, sizeof(*p->sent_ns));
    p->measure_from_ns = from;
    p->measure_to_ns = to;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    st = open_producer(p, err);
    if (st != SL_OK) break;
    pthread_create(&p->receiver, NULL, recv_loop, p);
    pthread_create(&p->sender, NULL, send_loop, p);
    started++;
  }
  if (st == SL_OK) {
    while (sl_clock_mono_ns() < to) {
      struct timespec ts = {0, 20 * 1000000};
      nanosleep(&ts, NULL);
    }
  }
  for (int i = 0; i < started; i++) {
    producer *p = &ps[i];
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    pthread_join(p->sender, NULL);
    sl_rpc_stream_cancel(p->s);
    pthread_join(p->receiver, NULL);
  }
  size_t total = 0;
  for (int i = 0; i < n; i++) total += ps[i].n_lat;
  int64_t *all = calloc(total + 1, sizeof(*all));
  size_t k = 0;
  for (int i = 0; i < n; i++) {
    producer *p = &ps[i];
    if (st == SL_OK && p->st != SL_OK) st = sl_err_set(err, p->st, "%s", p->why);
    memcpy(all + k, p->lat, p->n_lat * sizeof(*all));
    k += p->n_lat;
    out->failed += p->failed;
    sl_rpc_stream_destroy(p->s);
    sl_rpc_channel_destroy(p->ch);
    free(p->lat);
    free(p->sent_ns);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
  }
  qsort(all, total, sizeof(*all), cmp64);
  out->acked = total;
  out->seconds = secs;
  out->msgs_per_s = (double)total / secs;
  out->p50_ms = pct(all, total, 0.50);
  out->p99_ms = pct(all, total, 0.99);
  out->p999_ms = pct(all, total, 0.999);
  out->max_ms = total ? (double)all[total - 1] / 1e6 : 0;
  free(all);
  free(ps);
  return st;
}
