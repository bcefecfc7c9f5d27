/*
 * bookie-bench: how fast a real sluice-bookie process acks adds over gRPC,
 * against how fast its disk can sync.
 *
 * It starts a bookie (and a metadata service on an embedded store, for the
 * registration) through the cluster harness (tests/cluster.h), then for each
 * payload size (1 KiB, 64 KiB) and number of adds in flight (1, 16, 256)
 * streams adds on one AddEntry stream into a fresh ledger for --seconds,
 * keeping exactly that many unacked, and reports adds/s, MB/s and ack
 * latency. In the same run, on the same directory as the bookie's journal,
 * it measures the raw rate of 4 KiB append + fdatasync on a plain file and
 * prints how many times that rate the bookie acks 1 KiB adds (group commit).
 *
 *   bazel run -c opt //bookie/svcbench:bookie-bench -- --dir /mnt/disk/tmp
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bookie.slrpc.h"
#include "common/config.h"
#include "common/crc32c.h"
#include "tools/bench_util.h"
#include "common/rpc_client.h"
#include "tests/cluster.h"
#include "tests/proc.h"

typedef struct bench_cfg {
  char *dir;
  long long seconds;
  long long payload;
  long long inflight;
  bool keep;
} bench_cfg;

static const sl_conf_entry table[] = {
    SL_CONF_STR(bench_cfg, dir, "/tmp", "SLUICE_BENCH_DIR",
                "directory on the disk to measure (the bookie's data goes below it)"),
    SL_CONF_INT(bench_cfg, seconds, "3", 1, 3600, "SLUICE_BENCH_SECONDS",
                "seconds per measurement"),
    SL_CONF_INT(bench_cfg, payload, "0", 0, 4 << 20, "SLUICE_BENCH_PAYLOAD",
                "only this payload size in bytes (0: 1 KiB and 64 KiB)"),
    SL_CONF_INT(bench_cfg, inflight, "0", 0, 65536, "SLUICE_BENCH_INFLIGHT",
                "only this many adds in flight (0: 1, 16 and 256)"),
    SL_CONF_BOOL(bench_cfg, keep, "false", "SLUICE_BENCH_KEEP",
                 "keep the bookie's directory afterwards"),
};
#define NTABLE (sizeof(table) / sizeof(table[0]))

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
  nanosleep(&ts, NULL);
}

/* ---- adds over gRPC ---- */

typedef struct run {
  sl_rpc_stream *s;
  uint64_t ledger;
  uint32_t size;
  int window;
  uint8_t *payload;
  uint32_t crc;
  int64_t *sent_at;        /* by entry % ring */
  size_t ring;

  pthread_mutex_t mu;      /* guards everything below */
  pthread_cond_t cv;
  int inflight;
  bool stop;
  bool measuring;
  uint64_t acked, failed;
  char first_error[256];
  int64_t *lat;            /* ack latencies while measuring */
  size_t n_lat, cap_lat;
} run;

static void *sender_main(void *arg) {
  run *r = arg;
  for (int64_t e = 0;; e++) {
    pthread_mutex_lock(&r->mu);
    while (r->inflight >= r->window && !r->stop) pthread_cond_wait(&r->cv, &r->mu);
    bool stop = r->stop;
    if (!stop) {
      r->inflight++;
      r->sent_at[(size_t)e % r->ring] = sl_bench_now_ns();
    }
    pthread_mutex_unlock(&r->mu);
    if (stop) break;
    Sluice__V1__AddEntryRequest q = SLUICE__V1__ADD_ENTRY_REQUEST__INIT;
    q.ledger_id = r->ledger;
    q.entry_id = e;
    q.lac = e - 1;
    q.payload.data = r->payload;
    q.payload.len = r->size;
    q.crc32c = r->crc;
    q.epoch = 1;
    q.tag = (uint64_t)e;
    sl_err err = SL_ERR_INIT;
    sl_status st = sl_bookie_service_add_entry_send(r->s, &q, 30000, &err);
    if (st != SL_OK) {
      fprintf(stderr, "bookie-bench: send: %s\n", sl_err_msg(&err, st));
      break;
    }
  }
  sl_rpc_stream_close_send(r->s, NULL);
  return NULL;
}

static void *receiver_main(void *arg) {
  run *r = arg;
  for (;;) {
    Sluice__V1__AddEntryResponse *a = NULL;
    sl_err err = SL_ERR_INIT;
    sl_status st = sl_bookie_service_add_entry_recv(r->s, &a, 60000, &err);
    if (st != SL_OK) fprintf(stderr, "bookie-bench: recv: %s\n", sl_err_msg(&err, st));
    if (st != SL_OK || a == NULL) break;
    int64_t t = sl_bench_now_ns();
    pthread_mutex_lock(&r->mu);
    r->inflight--;
    if (a->code != 0) {
      if (r->failed++ == 0) snprintf(r->first_error, sizeof(r->first_error), "%s", a->error);
    } else {
      r->acked++;
      if (r->measuring) {
        if (r->n_lat == r->cap_lat) {
          r->cap_lat = r->cap_lat ? r->cap_lat * 2 : 1 << 16;
          r->lat = realloc(r->lat, r->cap_lat * sizeof(*r->lat));
        }
        r->lat[r->n_lat++] = t - r->sent_at[(size_t)a->tag % r->ring];
      }
    }
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    protobuf_c_message_free_unpacked(&a->base, NULL);
  }
  return NULL;
}

typedef struct result {
  double adds_per_sec, mb_per_sec, p50_ms, p99_ms;
  uint64_t failed;
} result;

static int bench_adds(sl_rpc_channel *ch, uint64_t ledger, uint32_t size, int window,
                      int seconds, result *out) {
  run r;
  memset(&r, 0, sizeof(r));
  r.ledger = ledger;
  r.size = size;
  r.window = window;
  r.payload = malloc(size + 1u);
  for (uint32_t i = 0; i < size; i++) r.payload[i] = (uint8_t)(i * 131 + 7);
  r.crc = sl_crc32c(r.payload, size);
  r.ring = (size_t)window * 2 + 1;
  r.sent_at = calloc(r.ring, sizeof(*r.sent_at));
  pthread_mutex_init(&r.mu, NULL);
  pthread_cond_init(&r.cv, NULL);
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_bookie_service_add_entry_open(ch, NULL, &r.s, &err);
  if (st != SL_OK) {
    fprintf(stderr, "bookie-bench: open: %s\n", sl_err_msg(&err, st));
    return -1;
  }
  pthread_t ts, tr;
  pthread_create(&ts, NULL, sender_main, &r);
  pthread_create(&tr, NULL, receiver_main, &r);
  sleep_ms(500); /* warm-up: connection, first segment, caches */
  pthread_mutex_lock(&r.mu);
  r.measuring = true;
  uint64_t a0 = r.acked;
  int64_t t0 = sl_bench_now_ns();
  pthread_mutex_unlock(&r.mu);
  sleep_ms(seconds * 1000);
  pthread_mutex_lock(&r.mu);
  r.measuring = false;
  uint64_t a1 = r.acked;
  int64_t t1 = sl_bench_now_ns();
  r.stop = true;
  pthread_cond_broadcast(&r.cv);
  pthread_mutex_unlock(&r.mu);
  pthread_join(ts, NULL);
  pthread_join(tr, NULL);
  sl_rpc_stream_destroy(r.s);
  double secs = (double)(t1 - t0) / 1e9;
  out->adds_per_sec = (double)(a1 - a0) / secs;
  out->mb_per_sec = out->adds_per_sec * size / 1e6;
  sl_bench_sort(r.lat, r.n_lat);
  out->p50_ms = sl_bench_pct_ms(r.lat, r.n_lat, 0.50);
  out->p99_ms = sl_bench_pct_ms(r.lat, r.n_lat, 0.99);
  out->failed = r.failed;
  if (r.failed > 0)
    fprintf(stderr, "bookie-bench: %" PRIu64 " adds refused, first: %s\n", r.failed,
            r.first_error);
  free(r.lat);
  free(r.sent_at);
  free(r.payload);
  pthread_mutex_destroy(&r.mu);
  pthread_cond_destroy(&r.cv);
  return r.failed > 0 ? -1 : 0;
}

int main(int argc, char **argv) {
  bench_cfg cfg;
  memset(&cfg, 0, sizeof(cfg));
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_conf_parse(table, NTABLE, &cfg, argv[0], argc, argv, &err);
  if (st == SL_ECANCELED) return 0;
  if (st != SL_OK) {
    fprintf(stderr, "%s: %s\n", argv[0], sl_err_msg(&err, st));
    return 2;
  }
  /* The harness makes its temp dir under $TEST_TMPDIR. */
  setenv("TEST_TMPDIR", cfg.dir, 1);
  sl_cluster_opts co = SL_CLUSTER_OPTS_INIT;
  co.metadata = 1;
  co.local_store = true;
  co.bookies = 1;
  co.brokers = 0;
  co.name = "bookie-bench";
  sl_cluster *c = NULL;
  int rc = 1;
  if ((st = sl_cluster_start(&co, &c, &err)) != SL_OK) {
    fprintf(stderr, "bookie-bench: %s\n", sl_err_msg(&err, st));
    goto out;
  }
  char journal_dir[4096];
  snprintf(journal_dir, sizeof(journal_dir), "%s/%s/journal", sl_cluster_dir(c),
           sl_cluster_id(c, SL_NODE_BOOKIE, 0));
  const char *addr = sl_cluster_addr(c, SL_NODE_BOOKIE, 0);
  printf("bookie-bench: sluice-bookie at %s, journal in %s, %lld s per case\n", addr,
         journal_dir, cfg.seconds);

  sl_bench_raw raw;
  if (sl_bench_raw_fsync(journal_dir, (int)cfg.seconds, &raw) != 0) goto out;
  printf("raw disk: 4 KiB append + fdatasync: %.0f /s (p50 %.3f ms, p99 %.3f ms)\n\n",
         raw.per_sec, raw.p50_ms, raw.p99_ms);

  sl_rpc_channel_opts cho = {.target = addr};
  sl_rpc_channel *ch = NULL;
  if ((st = sl_rpc_channel_create(&cho, &ch, &err)) != SL_OK) {
    fprintf(stderr, "bookie-bench: %s\n", sl_err_msg(&err, st));
    goto out;
  }
  static const uint32_t sizes[] = {1024, 65536};
  static const int windows[] = {1, 16, 256};
  printf("%-8s %9s %10s %9s %8s %8s %9s\n", "payload", "in-flight", "adds/s", "MB/s",
         "p50 ms", "p99 ms", "x fsync/s");
  double gain = 0;
  uint64_t ledger = 1;
  rc = 0;
  for (size_t i = 0; i < 2; i++) {
    uint32_t size = cfg.payload ? (uint32_t)cfg.payload : sizes[i];
    for (size_t j = 0; j < 3; j++) {
      int window = cfg.inflight ? (int)cfg.inflight : windows[j];
      result res;
      if (bench_adds(ch, ledger++, size, window, (int)cfg.seconds, &res) != 0) rc = 1;
      double x = res.adds_per_sec / raw.per_sec;
      printf("%5u KiB %9d %10.0f %9.1f %8.3f %8.3f %9.2f\n", size / 1024, window,
             res.adds_per_sec, res.mb_per_sec, res.p50_ms, res.p99_ms, x);
      fflush(stdout);
      if (size == 1024 && window == 256) gain = x;
      if (cfg.inflight) break;
    }
    if (cfg.payload) break;
  }
  sl_rpc_channel_destroy(ch);
  if (gain > 0)
    printf("\ngroup commit: 1 KiB adds at 256 in flight = %.1fx the raw fdatasync rate "
           "(%.0f /s)\n", gain, raw.per_sec);
out:
  if (c != NULL) {
    char *dir = sl_xstrdup(sl_cluster_dir(c));
    sl_cluster_destroy(c);
    if (!cfg.keep) sl_proc_rmtree(dir, NULL);
    free(dir);
  }
  sl_conf_release(table, NTABLE, &cfg);
  return rc;
}
