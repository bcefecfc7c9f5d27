/*
 * sluice-perf: produce, consume and end-to-end benchmarks against any
 * broker (issue 11), the one benchmark tool. `produce` runs
 * client/perf_produce (raw Produce streams, a window of --in-flight per
 * producer, one run per partition); `e2e` runs client/perf_e2e (libsluice
 * producers and consumers at once); `consume` reads the topic with
 * libsluice consumers. Latency: produce = send to receipt; e2e = send to
 * receive (the send time travels in the payload); consume = publish time to
 * receive (wall clock, ms resolution). This file parses the command line,
 * prints the live lines and the summary.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "client/histogram.h"
#include "client/perf_e2e.h"
#include "client/perf_produce.h"
#include "client/sluice.h"
#include "common/clock.h"

static const char usage_text[] =
    "usage: sluice-perf produce|consume|e2e TOPIC [--rate R] [--size BYTES]\n"
    "         [--producers N] [--consumers N] [--in-flight W] [--duration S]\n"
    "         [--partitions P] [--url HOST:PORT] [--json] [--histogram FILE]\n"
    "         [--catch-up] [--batch-delay-us US] [--pace-us US]\n"
    "  produce   N producers, W messages in flight each, send -> durable receipt\n"
    "  consume   N consumers read the topic from the oldest message\n"
    "  e2e       producers and consumers at once, send -> receive\n"
    "  --rate R        messages/s over all producers (e2e; 0 = as fast as the window)\n"
    "  --size BYTES    payload size (default 1024)\n"
    "  --in-flight W   unacked messages per producer (default 1 for produce, 256 for e2e)\n"
    "  --duration S    seconds to measure (default 10)\n"
    "  --partitions P  create TOPIC with P partitions if it does not exist\n"
    "  --histogram F   write the latency distribution as CSV to F\n"
    "  --catch-up      e2e: then read the run's messages back from the oldest (MB/s)\n"
    "  --batch-delay-us US  e2e: the producers' batching window (default 1000,\n"
    "                  the library's; 0 sends each message at once)\n"
    "  --pace-us US    e2e at a fixed rate: senders wake at most every US and send\n"
    "                  what is due, each timed from its due time (default 1000;\n"
    "                  0 wakes once per message)\n"
    "A line every second: msgs/s, MB/s, p50/p99; then a summary with\n"
    "p50/p95/p99/p99.9/max (e2e: and the host's CPU busy/idle/steal while\n"
    "measured, from /proc/stat). --url as for sluice (env SLUICE_URL); the\n"
    "token, if the cluster wants one, from SLUICE_TOKEN.\n"
    "examples:\n"
    "  sluice-perf produce public/perf --in-flight 256 --duration 10\n"
    "  sluice-perf e2e public/perf --rate 5000 --partitions 4 --json\n";

typedef struct perf {
  const char *mode, *topic, *url, *hist_file;
  double rate;
  size_t size;
  int producers, consumers, in_flight, partitions;
  int batch_delay_us;           /* as sl_producer_opts: 0 default, < 0 off */
  int pace_us;                  /* as sl_perf_e2e_opts: 0 default, < 0 off */
  double duration;
  bool json, catch_up;
  sl_client *c;
  sl_perf_e2e_result e2e;       /* e2e's own counts and catch-up figures */
  sl_hist total, window;        /* whole run; since the last live line */
  _Atomic uint64_t sent, acked, failed, received;
  atomic_bool stop_receiving;
  sl_status st;
  char why[SL_ERR_MAX];
  pthread_mutex_t mu;
} perf;

static void perf_fail(perf *p, sl_status st, const char *why) {
  pthread_mutex_lock(&p->mu);
  if (p->st == SL_OK) {
    p->st = st;
    snprintf(p->why, sizeof(p->why), "%s", why);
  }
  pthread_mutex_unlock(&p->mu);
}

static void record(perf *p, int64_t lat_ns) {
  sl_hist_record(&p->total, lat_ns);
  sl_hist_record(&p->window, lat_ns);
}

/* ------------------------------------------------------------- produce */

typedef struct prun {
  perf *p;
  char *partition, *address;
  pthread_t t;
  sl_perf_produce_result r;
  sl_status st;
  sl_err err;
} prun;

static void on_ack(int64_t lat_ns, void *arg) {
  perf *p = arg;
  atomic_fetch_add(&p->acked, 1);
  record(p, lat_ns);
}

static void *produce_thread(void *arg) {
  prun *r = arg;
  (void)pthread_setname_np(pthread_self(), "perf-produce");
  sl_perf_produce_opts o = {0};
  o.target = r->address;
  o.topic = r->partition;
  o.producers = r->p->producers;
  o.in_flight = r->p->in_flight;
  o.message_bytes = r->p->size;
  o.seconds = r->p->duration;
  o.on_ack = on_ack;
  o.on_ack_arg = r->p;
  r->st = sl_perf_produce_run(&o, &r->r, &r->err);
  if (r->st != SL_OK) perf_fail(r->p, r->st, r->err.msg);
  return NULL;
}

/* ------------------------------------------------------------- e2e */

static void on_latency(int64_t lat_ns, void *arg) {
  perf *p = arg;
  atomic_fetch_add(&p->received, 1);
  record(p, lat_ns);
}

typedef struct e2e_run {
  perf *p;
  pthread_t t;
  sl_status st;
  sl_err err;
} e2e_run;

static void *e2e_thread(void *arg) {
  e2e_run *r = arg;
  (void)pthread_setname_np(pthread_self(), "perf-e2e");
  perf *p = r->p;
  sl_perf_e2e_opts o = SL_PERF_E2E_OPTS_INIT;
  o.client = p->c;
  o.topic = p->topic;
  o.rate = p->rate;
  o.message_bytes = p->size;
  o.producers = p->producers;
  o.consumers = p->consumers;
  o.in_flight = p->in_flight;
  o.batch_delay_us = p->batch_delay_us;
  o.pace_us = p->pace_us;
  o.seconds = p->duration;
  o.catch_up = p->catch_up;
  o.on_latency = on_latency;
  o.arg = p;
  r->st = sl_perf_e2e_run(&o, &p->e2e, &r->err);
  if (r->st != SL_OK) perf_fail(p, r->st, r->err.msg);
  atomic_store(&p->stop_receiving, true); /* ends the live lines */
  return NULL;
}

/* ------------------------------------------------------------- consume */

typedef struct receiver {
  perf *p;
  sl_consumer *cons;
  pthread_t t;
} receiver;

static void *recv_thread(void *arg) {
  receiver *r = arg;
  (void)pthread_setname_np(pthread_self(), "perf-recv");
  perf *p = r->p;
  while (!atomic_load(&p->stop_receiving)) {
    sl_received *m;
    sl_err err = SL_ERR_INIT;
    sl_status st = sl_consumer_receive(r->cons, 100, &m, &err);
    if (st == SL_ETIMEDOUT) continue;
    if (st != SL_OK) {
      perf_fail(p, st, err.msg);
      break;
    }
    record(p, (sl_clock_wall_ms() - m->publish_time_ms) * 1000000);
    atomic_fetch_add(&p->received, 1);
    st = sl_consumer_ack(r->cons, &m->id, &err);
    sl_received_free(m);
    if (st != SL_OK && st != SL_EUNAVAIL) { /* reconnecting: redelivered later */
      perf_fail(p, st, err.msg);
      break;
    }
  }
  return NULL;
}

/* ------------------------------------------------------------- output */

static void live_line(perf *p, double t, uint64_t n, double secs) {
  double rate = (double)n / secs;
  double mb = rate * (double)p->size / 1e6;
  fprintf(p->json ? stderr : stdout,
          "[%5.1fs] %10.0f msgs/s %8.2f MB/s  p50 %7.3f ms  p99 %7.3f ms\n", t, rate, mb,
          (double)sl_hist_quantile(&p->window, 0.50) / 1e6,
          (double)sl_hist_quantile(&p->window, 0.99) / 1e6);
  fflush(p->json ? stderr : stdout);
  sl_hist_reset(&p->window);
}

/* The senders' wakeup interval in effect; 0 when they do not sleep to a
 * rate or wake once per message. */
static int pace_us(const perf *p) {
  if (strcmp(p->mode, "e2e") != 0 || p->rate <= 0 || p->pace_us < 0) return 0;
  return p->pace_us > 0 ? p->pace_us : SL_PERF_E2E_PACE_US;
}

static void summary(perf *p, double secs) {
  uint64_t n = strcmp(p->mode, "produce") == 0 ? atomic_load(&p->acked) : atomic_load(&p->received);
  double rate = secs > 0 ? (double)n / secs : 0, mb = rate * (double)p->size / 1e6;
  double q[5];
  const double qs[5] = {0.50, 0.95, 0.99, 0.999, 1.0};
  for (int i = 0; i < 5; i++)
    q[i] = (double)(i == 4 ? sl_hist_max(&p->total) : sl_hist_quantile(&p->total, qs[i])) / 1e6;
  if (p->json) {
    printf("{\"mode\":\"%s\",\"topic\":\"%s\",\"seconds\":%.3f,\"sent\":%llu,\"acked\":%llu,"
           "\"failed\":%llu,\"received\":%llu,\"msgs_per_s\":%.1f,\"mb_per_s\":%.3f,"
           "\"size\":%zu,\"latency_ms\":{\"p50\":%.3f,\"p95\":%.3f,\"p99\":%.3f,"
           "\"p999\":%.3f,\"max\":%.3f},\"pace_us\":%d,\"catchup_msgs\":%llu,"
           "\"catchup_mb_per_s\":%.3f",
           p->mode, p->topic, secs, (unsigned long long)atomic_load(&p->sent),
           (unsigned long long)atomic_load(&p->acked), (unsigned long long)atomic_load(&p->failed),
           (unsigned long long)atomic_load(&p->received), rate, mb, p->size, q[0], q[1], q[2],
           q[3], q[4], pace_us(p), (unsigned long long)p->e2e.catchup_msgs,
           p->e2e.catchup_mb_per_s);
    const sl_host_cpu_split *h = &p->e2e.host_cpu;
    if (p->e2e.host_known)
      printf(",\"host_cpu\":{\"cpus\":%d,\"busy_pct\":%.1f,\"idle_pct\":%.1f,"
             "\"steal_pct\":%.1f}}\n",
             p->e2e.host_cpus, h->busy_pct, h->idle_pct, h->steal_pct);
    else
      printf(",\"host_cpu\":null}\n");
  } else {
    printf("summary %s %s: %.1f s", p->mode, p->topic, secs);
    if (strcmp(p->mode, "consume") != 0)
      printf(", sent %llu, acked %llu, failed %llu", (unsigned long long)atomic_load(&p->sent),
             (unsigned long long)atomic_load(&p->acked),
             (unsigned long long)atomic_load(&p->failed));
    if (strcmp(p->mode, "produce") != 0)
      printf(", received %llu", (unsigned long long)atomic_load(&p->received));
    printf("\n");
    printf("  %.0f msgs/s, %.2f MB/s (%zu-byte messages)\n", rate, mb, p->size);
    printf("  latency ms: p50 %.3f  p95 %.3f  p99 %.3f  p99.9 %.3f  max %.3f\n", q[0], q[1],
           q[2], q[3], q[4]);
    if (strcmp(p->mode, "e2e") == 0)
      printf("  of which publish (send -> durable receipt) ms: p50 %.3f  p99 %.3f\n",
             p->e2e.pub_p50_ms, p->e2e.pub_p99_ms);
    if (pace_us(p) > 0)
      printf("  senders woke at most every %d us; latency counts from each message's due time\n",
             pace_us(p));
    if (p->e2e.host_known)
      printf("  host cpu while measured (%d cpus): busy %.1f%%, idle %.1f%%, steal %.1f%%\n",
             p->e2e.host_cpus, p->e2e.host_cpu.busy_pct, p->e2e.host_cpu.idle_pct,
             p->e2e.host_cpu.steal_pct);
    if (p->catch_up)
      printf("  catch-up read: %llu messages in %.1f s, %.2f MB/s\n",
             (unsigned long long)p->e2e.catchup_msgs, p->e2e.catchup_seconds,
             p->e2e.catchup_mb_per_s);
  }
}

static bool running(perf *p, int64_t until_ns) {
  pthread_mutex_lock(&p->mu);
  bool ok = p->st == SL_OK;
  pthread_mutex_unlock(&p->mu);
  return ok && !atomic_load(&p->stop_receiving) && sl_clock_mono_ns() < until_ns;
}

/* Runs the live lines until `until_ns`, a failure, or stop_receiving. */
static void tick_until(perf *p, int64_t start, int64_t until_ns, _Atomic uint64_t *counter) {
  uint64_t last = atomic_load(counter);
  int64_t last_t = start;
  while (running(p, until_ns)) {
    int64_t next = last_t + 1000000000;
    while (sl_clock_mono_ns() < next && running(p, until_ns)) {
      struct timespec ts = {0, 20000000};
      nanosleep(&ts, NULL);
    }
    int64_t now = sl_clock_mono_ns();
    uint64_t cur = atomic_load(counter);
    if (now - last_t > 100000000)
      live_line(p, (double)(now - start) / 1e9, cur - last, (double)(now - last_t) / 1e9);
    last = cur;
    last_t = now;
  }
}

/* ------------------------------------------------------------- main */

static int usage(const char *fmt, const char *a) {
  fprintf(stderr, "sluice-perf: ");
  fprintf(stderr, fmt, a);
  fprintf(stderr, "; see `sluice-perf --help`\n");
  return 2;
}

static int parse(perf *p, int argc, char **argv) {
  if (argc < 2) {
    fputs(usage_text, stderr);
    return 2;
  }
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
      fputs(usage_text, stdout);
      return -1;
    }
  }
  p->mode = argv[1];
  if (strcmp(p->mode, "produce") && strcmp(p->mode, "consume") && strcmp(p->mode, "e2e"))
    return usage("unknown mode %s (produce, consume or e2e)", p->mode);
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i];
    if (a[0] != '-') {
      if (p->topic) return usage("unexpected argument %s", a);
      p->topic = a;
      continue;
    }
    if (strcmp(a, "--json") == 0 || strcmp(a, "--catch-up") == 0) {
      if (a[2] == 'j') p->json = true;
      else p->catch_up = true;
      continue;
    }
    if (i + 1 >= argc) return usage("%s needs a value", a);
    const char *v = argv[++i];
    char *end;
    double d = strtod(v, &end);
    bool num = *end == '\0' && end != v && d >= 0;
    if (strcmp(a, "--url") == 0) p->url = v;
    else if (strcmp(a, "--histogram") == 0) p->hist_file = v;
    else if (!num) return usage("%s: expected a number >= 0", a);
    else if (strcmp(a, "--rate") == 0) p->rate = d;
    else if (strcmp(a, "--size") == 0) p->size = (size_t)d;
    else if (strcmp(a, "--producers") == 0) p->producers = (int)d;
    else if (strcmp(a, "--consumers") == 0) p->consumers = (int)d;
    else if (strcmp(a, "--in-flight") == 0) p->in_flight = (int)d;
    else if (strcmp(a, "--duration") == 0) p->duration = d;
    else if (strcmp(a, "--partitions") == 0) p->partitions = (int)d;
    else if (strcmp(a, "--batch-delay-us") == 0) {
      if (d > 10e6) return usage("%s: at most 10000000 (10 s)", a);
      p->batch_delay_us = d == 0 ? -1 : (int)d;
    } else if (strcmp(a, "--pace-us") == 0) {
      if (d > 1e6) return usage("%s: at most 1000000 (1 s)", a);
      p->pace_us = d == 0 ? -1 : (int)d;
    } else return usage("unknown option %s", a);
  }
  if (p->topic == NULL) return usage("%s needs a TOPIC", p->mode);
  if (p->rate > 0 && strcmp(p->mode, "produce") == 0)
    return usage("%s: --rate is for e2e; produce is paced by --in-flight", "produce");
  if (p->catch_up && strcmp(p->mode, "e2e") != 0)
    return usage("%s: --catch-up is for e2e", p->mode);
  if (p->batch_delay_us != 0 && strcmp(p->mode, "e2e") != 0)
    return usage("%s: --batch-delay-us is for e2e (produce sends raw batches)", p->mode);
  if (p->pace_us != 0 && (strcmp(p->mode, "e2e") != 0 || p->rate <= 0))
    return usage("%s is for e2e at a fixed --rate", "--pace-us");
  if (p->size == 0) p->size = 1024;
  if (p->producers <= 0) p->producers = 1;
  if (p->consumers <= 0) p->consumers = 1;
  if (p->in_flight <= 0) p->in_flight = strcmp(p->mode, "produce") == 0 ? 1 : 256;
  if (p->duration <= 0) p->duration = 10;
  return 0;
}

static sl_status run_produce(perf *p, sl_err *err) {
  sl_lookup l;
  sl_status st = sl_client_lookup(p->c, p->topic, true, &l, err);
  if (st != SL_OK) return st;
  prun *runs = calloc(l.n, sizeof(*runs));
  if (runs == NULL) {
    sl_lookup_free(&l);
    return sl_err_set(err, SL_ENOMEM, "out of memory");
  }
  int64_t start = sl_clock_mono_ns();
  size_t started = 0;
  for (size_t i = 0; i < l.n; i++) {
    runs[i].p = p;
    runs[i].partition = l.partition[i];
    runs[i].address = l.address[i];
    if (pthread_create(&runs[i].t, NULL, produce_thread, &runs[i]) != 0) break;
    started++;
  }
  tick_until(p, start, start + (int64_t)(p->duration * 1e9), &p->acked);
  for (size_t i = 0; i < started; i++) pthread_join(runs[i].t, NULL);
  for (size_t i = 0; i < started; i++) atomic_fetch_add(&p->failed, runs[i].r.failed);
  atomic_store(&p->sent, atomic_load(&p->acked) + atomic_load(&p->failed));
  free(runs);
  bool all = started == l.n;
  sl_lookup_free(&l);
  return all ? SL_OK : sl_err_set(err, SL_ENOMEM, "no thread");
}

static sl_status run_e2e(perf *p, sl_err *err) {
  e2e_run r = {.p = p, .err = SL_ERR_INIT};
  int64_t start = sl_clock_mono_ns();
  if (pthread_create(&r.t, NULL, e2e_thread, &r) != 0) return sl_err_set(err, SL_ENOMEM, "no thread");
  /* Live lines over the measured time; then the drain (and the catch-up
   * read) run silently to the summary. */
  tick_until(p, start, start + (int64_t)(p->duration * 1e9), &p->received);
  pthread_join(r.t, NULL);
  atomic_store(&p->sent, p->e2e.sent);
  atomic_store(&p->acked, p->e2e.acked);
  atomic_store(&p->failed, p->e2e.failed);
  atomic_store(&p->received, p->e2e.received);
  return SL_OK; /* a failure is in p->st */
}

/* Consumers on a new subscription read the topic from its oldest message. */
static sl_status run_consume(perf *p, sl_err *err) {
  receiver *rs = calloc((size_t)p->consumers, sizeof(*rs));
  if (rs == NULL) return sl_err_set(err, SL_ENOMEM, "out of memory");
  sl_status st = SL_OK;
  char sub[64];
  snprintf(sub, sizeof(sub), "perf-%lld", (long long)sl_clock_wall_ms());
  int nr = 0;
  for (int i = 0; st == SL_OK && i < p->consumers; i++) {
    sl_consumer_opts co = SL_CONSUMER_OPTS_INIT;
    co.topic = p->topic;
    co.subscription = sub;
    co.type = p->consumers > 1 ? SL_SUB_SHARED : SL_SUB_EXCLUSIVE;
    co.from_earliest = true;
    st = sl_consumer_create(p->c, &co, &rs[i].cons, err);
    if (st != SL_OK) break;
    rs[i].p = p;
    if (pthread_create(&rs[i].t, NULL, recv_thread, &rs[i]) != 0) {
      sl_consumer_destroy(rs[i].cons);
      st = sl_err_set(err, SL_ENOMEM, "no thread");
      break;
    }
    nr++;
  }
  int64_t start = sl_clock_mono_ns();
  if (st == SL_OK) tick_until(p, start, start + (int64_t)(p->duration * 1e9), &p->received);
  atomic_store(&p->stop_receiving, true);
  for (int i = 0; i < nr; i++) {
    pthread_join(rs[i].t, NULL);
    sl_consumer_destroy(rs[i].cons);
  }
  free(rs);
  return st;
}

int main(int argc, char **argv) {
  static perf p;
  int rc = parse(&p, argc, argv);
  if (rc != 0) return rc < 0 ? 0 : rc;
  pthread_mutex_init(&p.mu, NULL);
  sl_hist_reset(&p.total);
  sl_hist_reset(&p.window);
  sl_err err = SL_ERR_INIT;
  sl_client_opts co = SL_CLIENT_OPTS_INIT;
  co.url = p.url;
  if (getenv("SLUICE_TOKEN") != NULL && getenv("SLUICE_TOKEN")[0] != '\0')
    co.token = getenv("SLUICE_TOKEN");
  sl_status st = sl_client_create(&co, &p.c, &err);
  if (st == SL_OK && p.partitions > 0) {
    st = sl_admin_topic_create(p.c, p.topic, (uint32_t)p.partitions, &err);
    if (st == SL_EEXIST) st = SL_OK;
  }
  int64_t start = sl_clock_mono_ns();
  if (st == SL_OK) {
    if (strcmp(p.mode, "produce") == 0) st = run_produce(&p, &err);
    else if (strcmp(p.mode, "e2e") == 0) st = run_e2e(&p, &err);
    else st = run_consume(&p, &err);
  }
  if (st == SL_OK && p.st != SL_OK) st = sl_err_set(&err, p.st, "%s", p.why);
  double secs = (double)(sl_clock_mono_ns() - start) / 1e9;
  if (strcmp(p.mode, "e2e") == 0) secs = p.e2e.seconds; /* measured, without warmup or drain */
  if (st == SL_OK) {
    summary(&p, secs > p.duration ? p.duration : secs);
    if (p.hist_file) {
      FILE *f = fopen(p.hist_file, "w");
      if (f == NULL || sl_hist_write_csv(&p.total, f) != 0)
        st = sl_err_set(&err, SL_EIO, "%s: cannot write the histogram", p.hist_file);
      if (f != NULL && fclose(f) != 0 && st == SL_OK)
        st = sl_err_set(&err, SL_EIO, "%s: cannot write the histogram", p.hist_file);
    }
  }
  if (st != SL_OK) {
    fprintf(stderr, "sluice-perf: %s (%s)%s\n", sl_err_msg(&err, st), sl_status_str(st),
            st == SL_EUNAVAIL || st == SL_ETIMEDOUT
                ? "; is the cluster up (tools/cluster up)? pass --url or set SLUICE_URL"
                : "");
    rc = 1;
  }
  sl_client_destroy(p.c);
  pthread_mutex_destroy(&p.mu);
  return rc;
}
