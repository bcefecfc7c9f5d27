/*
 * produce-bench: Produce throughput and latency on a local cluster (real
 * etcd, 1 metadata service, 3 bookies with fdatasync, 1 broker; E=3 Qw=2
 * Qa=2), 1 KiB messages, with 1 and 256 in flight and 1 and 8 producers
 * (client/perf_produce, the core of `sluice-perf produce`). In the same run
 * it prints the bookie-only figure (the ledger client appending 1 KiB
 * entries straight to the same bookies) and the raw fdatasync rate of this
 * disk, so the broker's overhead shows as a ratio. It is not a second
 * tool: the load is sluice-perf's own core; what this adds is what a client
 * cannot see (server CPU per message, broker RSS, the bookie and disk
 * floors), which needs a cluster it started itself.
 *
 *   bazel run -c opt //tools:produce-bench -- [seconds per run, default 5]
 *
 * Measured 2026-12-02 23:45 UTC, opt build, machine otherwise idle (load
 * 3.5-4 from the run itself; raw fdatasync 5.5k-7.5k/s, p50 0.13-0.17 ms):
 * 1x1 1.44k-1.48k msgs/s p50 0.62 ms p99 1.2-1.4 ms (bookie-only p50
 * 0.44-0.46 ms: the broker and client add about 0.17 ms); 1x256 45.9k-48.3k
 * msgs/s p50 2.1-2.4 ms; 8x1 1.8k-2.9k msgs/s; 8x256 54.6k-59.6k msgs/s;
 * broker 3.7-5.3 us CPU/msg at 256 in flight, about 300 at 1; broker RSS
 * 16 MB idle, 33-38 MB after. Targets: 35k msgs/s met; p50 under 0.5 ms at
 * one in flight not met (0.62). The same disk earlier that day under other
 * builds gave raw fdatasync 175/s and 15k msgs/s: the disk sets the floor.
 * After the bookie storage fix (2 MiB tables, checkpoint key last), 00:10
 * UTC: 1x256 59.1k msgs/s p99 18 ms (was 82-99 ms); 8x256 83.2k msgs/s.
 * With the entry log (payloads out of leveldb), 2026-12-03 01:48 UTC, load
 * 1.3 before: 1x1 1.43k msgs/s p50 0.62 ms; 1x256 78.8k msgs/s p99 10.8 ms;
 * 8x1 3.6k; 8x256 118k msgs/s p99 32 ms; bookies 5.4-9 us CPU/msg at 256
 * in flight (was 9-16); broker RSS 17 MB idle, 33 MB after.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "client/perf_produce.h"
#include "common/clock.h"
#include "tests/produce_testlib.h"
#include "tools/bench_util.h"

/* utime + stime of a process, in seconds. */
static double cpu_of(int pid) {
  char path[64], buf[1024];
  snprintf(path, sizeof(path), "/proc/%d/stat", pid);
  FILE *f = fopen(path, "r");
  if (f == NULL) return 0;
  size_t n = fread(buf, 1, sizeof(buf) - 1, f);
  fclose(f);
  buf[n] = '\0';
  const char *p = strrchr(buf, ')');
  if (p == NULL) return 0;
  unsigned long utime = 0, stime = 0;
  /* Fields after the command: state is 3, utime 14, stime 15. */
  sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime);
  return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

static long rss_kb(int pid) {
  char path[64], line[256];
  snprintf(path, sizeof(path), "/proc/%d/status", pid);
  FILE *f = fopen(path, "r");
  long kb = -1;
  while (f != NULL && fgets(line, sizeof(line), f) != NULL)
    if (sscanf(line, "VmRSS: %ld kB", &kb) == 1) break;
  if (f != NULL) fclose(f);
  return kb;
}

/* ---- bookie-only: the ledger client straight to the bookies ---- */

typedef struct direct {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int window;
  uint64_t done;
  int64_t *sent;      /* by entry id modulo window */
  int64_t *lat;
  size_t n_lat, cap;
  int in_flight;
} direct;

static void direct_cb(sl_status st, int64_t entry_id, void *arg) {
  direct *d = arg;
  int64_t now = sl_clock_mono_ns();
  pthread_mutex_lock(&d->mu);
  if (st == SL_OK && entry_id >= 0) {
    if (d->n_lat == d->cap) {
      d->cap = d->cap ? d->cap * 2 : 65536;
      d->lat = realloc(d->lat, d->cap * sizeof(*d->lat));
    }
    d->lat[d->n_lat++] = now - d->sent[entry_id % d->in_flight];
  }
  d->done++;
  d->window++;
  pthread_cond_broadcast(&d->cv);
  pthread_mutex_unlock(&d->mu);
}

typedef struct created {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool done;
  sl_status st;
  sl_ledger *lh;
} created;

static void created_cb(sl_status st, const char *details, sl_ledger *lh, void *arg) {
  (void)details;
  created *c = arg;
  pthread_mutex_lock(&c->mu);
  c->st = st;
  c->lh = lh;
  c->done = true;
  pthread_cond_broadcast(&c->cv);
  pthread_mutex_unlock(&c->mu);
}

static void bookie_only(sl_pt *t, int in_flight, double secs) {
  created c = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, SL_OK, NULL};
  sl_ledger_create_opts o = SL_LEDGER_CREATE_OPTS_INIT;
  o.epoch = 1;
  sl_err err = SL_ERR_INIT;
  if (sl_ledger_create_async(t->ledgers, &o, created_cb, &c, &err) != SL_OK) {
    printf("bookie-only: %s\n", err.msg);
    return;
  }
  pthread_mutex_lock(&c.mu);
  while (!c.done) pthread_cond_wait(&c.cv, &c.mu);
  pthread_mutex_unlock(&c.mu);
  if (c.st != SL_OK) {
    printf("bookie-only: create failed: %s\n", sl_status_str(c.st));
    return;
  }
  direct d = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, in_flight, 0, NULL,
              NULL, 0, 0, in_flight};
  d.sent = calloc((size_t)in_flight, sizeof(*d.sent));
  uint8_t payload[1024] = {0};
  int64_t end = sl_clock_mono_ns() + (int64_t)(secs * 1e9);
  uint64_t appended = 0;
  sl_serial *serial = sl_ledger_serial(c.lh);
  (void)serial;
  while (sl_clock_mono_ns() < end) {
    pthread_mutex_lock(&d.mu);
    while (d.window == 0) pthread_cond_wait(&d.cv, &d.mu);
    d.window--;
    d.sent[appended % (uint64_t)in_flight] = sl_clock_mono_ns();
    pthread_mutex_unlock(&d.mu);
    /* Appends come from this thread only (the handle's rule). */
    if (sl_ledger_append(c.lh, payload, sizeof(payload), direct_cb, &d, NULL, &err) != SL_OK) {
      printf("bookie-only: append: %s\n", err.msg);
      break;
    }
    appended++;
  }
  pthread_mutex_lock(&d.mu);
  while (d.done < appended) pthread_cond_wait(&d.cv, &d.mu);
  pthread_mutex_unlock(&d.mu);
  sl_bench_sort(d.lat, d.n_lat);
  printf("bookie-only  in_flight=%-3d entries/s=%8.0f p50=%.3fms p99=%.3fms\n", in_flight,
         (double)d.n_lat / secs, sl_bench_pct_ms(d.lat, d.n_lat, 0.5),
         sl_bench_pct_ms(d.lat, d.n_lat, 0.99));
  sl_ledger_destroy(c.lh);
  free(d.sent);
  free(d.lat);
}

int main(int argc, char **argv) {
  double secs = argc > 1 ? atof(argv[1]) : 5;
  if (secs <= 0) secs = 5;
  sl_pt t;
  sl_pt_start(&t, "produce_bench", 1, 3, 1);
  sl_pt_namespace(&t, "bench", false, 0);
  int broker = sl_pt_pid(&t, SL_NODE_BROKER, 0);
  int bookies[3];
  for (int i = 0; i < 3; i++) bookies[i] = sl_pt_pid(&t, SL_NODE_BOOKIE, i);
  printf("produce-bench: 1 KiB messages, 1 broker, 3 bookies, E=3 Qw=2 Qa=2, %.0f s per run\n",
         secs);
  printf("broker RSS idle: %ld KiB\n", rss_kb(broker));

  static const int configs[][2] = {{1, 1}, {1, 256}, {8, 1}, {8, 256}};
  for (size_t k = 0; k < sizeof(configs) / sizeof(configs[0]); k++) {
    char topic[64];
    snprintf(topic, sizeof(topic), "bench/p%d-w%d", configs[k][0], configs[k][1]);
    sl_pt_topic(&t, topic, 0);
    sl_pt_owner(&t, 0, topic, NULL);
    double b0 = cpu_of(broker), k0 = 0;
    for (int i = 0; i < 3; i++) k0 += cpu_of(bookies[i]);
    sl_perf_produce_opts o = {0};
    o.target = sl_cluster_addr(t.c, SL_NODE_BROKER, 0);
    o.topic = topic;
    o.producers = configs[k][0];
    o.in_flight = configs[k][1];
    o.message_bytes = 1024;
    o.seconds = secs;
    o.warmup_seconds = 1;
    sl_perf_produce_result r;
    sl_err err = SL_ERR_INIT;
    sl_status st = sl_perf_produce_run(&o, &r, &err);
    double b1 = cpu_of(broker), k1 = 0;
    for (int i = 0; i < 3; i++) k1 += cpu_of(bookies[i]);
    if (st != SL_OK) {
      printf("producers=%d in_flight=%d: %s\n", o.producers, o.in_flight, err.msg);
      continue;
    }
    double total = r.msgs_per_s * (secs + 1); /* CPU was counted over warmup too */
    printf("producers=%d in_flight=%-3d msgs/s=%8.0f p50=%.3fms p99=%.3fms p99.9=%.3fms "
           "failed=%llu broker_cpu_us/msg=%.1f bookies_cpu_us/msg=%.1f broker_rss=%ldKiB\n",
           o.producers, o.in_flight, r.msgs_per_s, r.p50_ms, r.p99_ms, r.p999_ms,
           (unsigned long long)r.failed, (b1 - b0) / total * 1e6, (k1 - k0) / total * 1e6,
           rss_kb(broker));
  }
  bookie_only(&t, 1, secs / 2);
  bookie_only(&t, 256, secs / 2);
  sl_bench_raw raw;
  if (sl_bench_raw_fsync(sl_cluster_dir(t.c), 2, &raw) == 0)
    printf("raw fdatasync (4 KiB append + fdatasync): %.0f/s p50=%.3fms p99=%.3fms\n",
           raw.per_sec, raw.p50_ms, raw.p99_ms);
  printf("broker RSS after: %ld KiB\n", rss_kb(broker));
  sl_pt_stop(&t);
  return 0;
}
