/*
 * catchup-bench: does a consumer catching up on a backlog from bookies slow
 * the producers of the same partition (issue 10)? Against a running
 * cluster (tools/cluster up):
 *   1. backlog: publishes --backlog bytes to one partition (raw Produce
 *      streams at full speed, client/perf_produce.h);
 *   2. alone: one closed-loop producer run (--in-flight messages in flight)
 *      of --duration seconds: msgs/s and p99 send -> durable receipt;
 *   3. with catch-up: the same run while a new subscription reads the
 *      partition from its oldest message (libsluice consumer, acking): the
 *      same figures, plus the catch-up MB/s over the run;
 * then prints the ratios (with / alone); --rounds repeats 2 and 3 back to
 * back (each catch-up run a new subscription from the oldest message).
 * --backlog 0 skips 1 and uses what the topic already holds (A/B runs on
 * one backlog). The backlog is larger than the
 * broker's entry cache once it exceeds the cache (16 MiB per partition by default), so
 * the catch-up reads come from bookies. The topic is created when missing;
 * use a fresh one for a clean figure (its subscriptions stay behind).
 *
 * usage: catchup-bench TOPIC [--url HOST:PORT] [--backlog BYTES]
 *          [--size BYTES] [--in-flight W] [--duration S] [--rounds N]
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client/perf_produce.h"
#include "client/sluice.h"
#include "common/clock.h"

typedef struct bench {
  const char *topic, *url;
  uint64_t backlog;
  size_t size;
  int in_flight;
  double duration;
  int rounds;
  sl_client *c;
  char *partition, *owner;
} bench;

/* ---- catch-up reader ---- */

typedef struct reader {
  bench *b;
  sl_consumer *cons;
  pthread_t t;
  atomic_bool stop;
  _Atomic uint64_t bytes, msgs;
  sl_status st;
  sl_err err;
} reader;

static void *read_thread(void *arg) {
  reader *r = arg;
  while (!atomic_load(&r->stop)) {
    sl_received *m;
    sl_status st = sl_consumer_receive(r->cons, 100, &m, &r->err);
    if (st == SL_ETIMEDOUT) continue;
    if (st != SL_OK) {
      r->st = st;
      break;
    }
    atomic_fetch_add(&r->bytes, m->len);
    atomic_fetch_add(&r->msgs, 1);
    st = sl_consumer_ack(r->cons, &m->id, &r->err);
    sl_received_free(m);
    if (st != SL_OK && st != SL_EUNAVAIL) {
      r->st = st;
      break;
    }
  }
  return NULL;
}

/* ---- phases ---- */

static sl_status produce(bench *b, int in_flight, double seconds,
                         sl_perf_produce_result *out, sl_err *err) {
  sl_perf_produce_opts o = {0};
  o.target = b->owner;
  o.topic = b->partition;
  o.producers = 1;
  o.in_flight = in_flight;
  o.message_bytes = b->size;
  o.seconds = seconds;
  return sl_perf_produce_run(&o, out, err);
}

static sl_status build_backlog(bench *b, sl_err *err) {
  uint64_t bytes = 0;
  int64_t start = sl_clock_mono_ns();
  while (bytes < b->backlog) {
    sl_perf_produce_result r;
    sl_status st = produce(b, 256, 2, &r, err);
    if (st != SL_OK) return st;
    bytes += r.acked * b->size;
    fprintf(stderr, "backlog: %.1f of %.1f MB\n", (double)bytes / 1e6, (double)b->backlog / 1e6);
  }
  double secs = (double)(sl_clock_mono_ns() - start) / 1e9;
  printf("backlog: %.1f MB in %.1f s (%.1f MB/s)\n", (double)bytes / 1e6, secs,
         (double)bytes / 1e6 / secs);
  return SL_OK;
}

static void print_run(const char *what, const sl_perf_produce_result *r) {
  printf("%-22s %9.0f msgs/s  p50 %7.2f ms  p99 %7.2f ms  max %7.2f ms  failed %llu\n", what,
         r->msgs_per_s, r->p50_ms, r->p99_ms, r->max_ms, (unsigned long long)r->failed);
}

static sl_status with_catch_up(bench *b, sl_perf_produce_result *out, double *mb_per_s,
                               uint64_t *msgs, sl_err *err) {
  reader *r = calloc(1, sizeof(*r));
  if (r == NULL) return sl_err_set(err, SL_ENOMEM, "out of memory");
  r->b = b;
  char sub[64];
  snprintf(sub, sizeof(sub), "catchup-%d-%lld", (int)getpid(), (long long)sl_clock_wall_ms());
  sl_consumer_opts co = SL_CONSUMER_OPTS_INIT;
  co.topic = b->topic;
  co.subscription = sub;
  co.from_earliest = true;
  sl_status st = sl_consumer_create(b->c, &co, &r->cons, err);
  if (st != SL_OK) {
    free(r);
    return st;
  }
  int64_t start = sl_clock_mono_ns();
  if (pthread_create(&r->t, NULL, read_thread, r) != 0) {
    sl_consumer_destroy(r->cons);
    free(r);
    return sl_err_set(err, SL_ENOMEM, "no thread");
  }
  st = produce(b, b->in_flight, b->duration, out, err);
  uint64_t bytes = atomic_load(&r->bytes);
  double secs = (double)(sl_clock_mono_ns() - start) / 1e9;
  atomic_store(&r->stop, true);
  pthread_join(r->t, NULL);
  *mb_per_s = (double)bytes / 1e6 / secs;
  *msgs = atomic_load(&r->msgs);
  if (st == SL_OK && r->st != SL_OK) {
    st = r->st;
    sl_err_set(err, st, "catch-up reader: %s", r->err.msg);
  }
  sl_consumer_destroy(r->cons);
  free(r);
  return st;
}

static int usage(void) {
  fprintf(stderr, "usage: catchup-bench TOPIC [--url HOST:PORT] [--backlog BYTES] "
                  "[--size BYTES] [--in-flight W] [--duration S] [--rounds N]\n");
  return 2;
}

static sl_status run(bench *b, sl_err *err) {
  sl_client_opts co = SL_CLIENT_OPTS_INIT;
  co.url = b->url;
  sl_status st = sl_client_create(&co, &b->c, err);
  if (st != SL_OK) return st;
  sl_err cerr = SL_ERR_INIT;
  (void)sl_admin_topic_create(b->c, b->topic, 0, &cerr); /* may exist */
  sl_lookup l;
  st = sl_client_lookup(b->c, b->topic, true, &l, err);
  if (st != SL_OK) return st;
  b->partition = strdup(l.partition[0]);
  b->owner = strdup(l.address[0]);
  sl_lookup_free(&l);
  if (b->partition == NULL || b->owner == NULL) return sl_err_set(err, SL_ENOMEM, "out of memory");
  double load[3] = {0, 0, 0};
  if (getloadavg(load, 3) < 0) load[0] = -1;
  printf("catchup-bench %s (owner %s): backlog %.1f MB, %zu-byte messages, "
         "%d in flight, %.0f s runs, load average %.2f\n",
         b->partition, b->owner, (double)b->backlog / 1e6, b->size, b->in_flight,
         b->duration, load[0]);
  if (b->backlog > 0 && (st = build_backlog(b, err)) != SL_OK) return st;
  for (int round = 0; round < b->rounds; round++) {
    sl_perf_produce_result alone, with;
    if ((st = produce(b, b->in_flight, b->duration, &alone, err)) != SL_OK) return st;
    print_run("producer alone:", &alone);
    double mb = 0;
    uint64_t msgs = 0;
    if ((st = with_catch_up(b, &with, &mb, &msgs, err)) != SL_OK) return st;
    print_run("with catch-up reader:", &with);
    printf("catch-up read: %llu messages, %.2f MB/s\n", (unsigned long long)msgs, mb);
    printf("ratio (with / alone): throughput %.3f, p99 %.3f\n",
           alone.msgs_per_s > 0 ? with.msgs_per_s / alone.msgs_per_s : 0,
           alone.p99_ms > 0 ? with.p99_ms / alone.p99_ms : 0);
    if (getloadavg(load, 3) >= 0) printf("load average: %.2f\n", load[0]);
  }
  return SL_OK;
}

int main(int argc, char **argv) {
  bench b = {.backlog = 64u << 20, .size = 1024, .in_flight = 16, .duration = 10, .rounds = 1};
  if (argc < 2 || argv[1][0] == '-') return usage();
  b.topic = argv[1];
  for (int i = 2; i < argc; i++) {
    if (i + 1 >= argc) return usage();
    const char *a = argv[i], *v = argv[++i];
    if (strcmp(a, "--url") == 0) b.url = v;
    else if (strcmp(a, "--backlog") == 0) b.backlog = strtoull(v, NULL, 10);
    else if (strcmp(a, "--size") == 0) b.size = strtoul(v, NULL, 10);
    else if (strcmp(a, "--in-flight") == 0) b.in_flight = atoi(v);
    else if (strcmp(a, "--duration") == 0) b.duration = atof(v);
    else if (strcmp(a, "--rounds") == 0) b.rounds = atoi(v);
    else return usage();
  }
  if (b.size < 16 || b.in_flight < 1 || b.duration <= 0 || b.rounds < 1) return usage();
  sl_err err = SL_ERR_INIT;
  sl_status st = run(&b, &err);
  if (st != SL_OK) fprintf(stderr, "catchup-bench: %s\n", sl_err_msg(&err, st));
  free(b.partition);
  free(b.owner);
  sl_client_destroy(b.c);
  return st == SL_OK ? 0 : 1;
}
