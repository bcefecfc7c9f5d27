/*
 * bookie-bench-storage: how fast the bookie store takes adds, against how
 * fast this disk can sync.
 *
 * For each payload size (1 KiB, 64 KiB) and each number of adds in flight
 * (1, 16, 256) it opens a fresh store, submits adds asynchronously from one
 * thread with that many outstanding (as the gRPC layer does with pipelined
 * streams), and reports adds/s, MB/s, fdatasyncs per second, adds per sync and
 * ack latency percentiles. In the same run it measures the raw rate of
 * 4 KiB append + fdatasync on a plain file in the same directory and prints
 * the group-commit gain: adds/s at 1 KiB with 256 in flight over that rate.
 *
 *   bookie-bench-storage --dir /mnt/disk/tmp --seconds 5
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bookie/bookie_store.h"
#include "bookie/journal.h"
#include "common/config.h"
#include "common/crc32c.h"
#include "tools/bench_util.h"
#include "common/log.h"

typedef struct bench_cfg {
  char *dir;
  long long seconds;
  long long payload;
  long long inflight;
  bool keep;
  bool inline_payloads;
} bench_cfg;

static const sl_conf_entry table[] = {
    SL_CONF_STR(bench_cfg, dir, "/tmp", "SLUICE_BENCH_DIR",
                "directory on the disk to measure (a subdirectory is made and removed)"),
    SL_CONF_INT(bench_cfg, seconds, "3", 1, 3600, "SLUICE_BENCH_SECONDS",
                "seconds per measurement"),
    SL_CONF_INT(bench_cfg, payload, "0", 0, 4 << 20, "SLUICE_BENCH_PAYLOAD",
                "only this payload size in bytes (0: 1 KiB and 64 KiB)"),
    SL_CONF_INT(bench_cfg, inflight, "0", 0, 65536, "SLUICE_BENCH_INFLIGHT",
                "only this many adds in flight (0: 1, 16 and 256)"),
    SL_CONF_BOOL(bench_cfg, keep, "false", "SLUICE_BENCH_KEEP",
                 "keep the store directories afterwards"),
    SL_CONF_BOOL(bench_cfg, inline_payloads, "false", "SLUICE_BENCH_INLINE_PAYLOADS",
                 "payloads in leveldb values instead of the entry log (to compare)"),
};
#define NTABLE (sizeof(table) / sizeof(table[0]))

static int rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb;
  (void)flag;
  (void)ftw;
  if (remove(path) != 0) fprintf(stderr, "remove %s: %s\n", path, strerror(errno));
  return 0;
}

static void rm_tree(const char *path) { nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS); }

/* ---- store ---- */

typedef struct slot {
  uint8_t *buf;
  uint32_t crc;
  int64_t started_ns;
  struct bench *b;
} slot;

typedef struct bench {
  pthread_mutex_t mu; /* guards the fields below */
  pthread_cond_t cv;
  slot **free_slots;
  int nfree;
  uint64_t acked;
  uint64_t failed;
  int64_t *lat_ns;    /* one per ack, while measuring */
  size_t nlat, lat_cap;
  bool measuring;
} bench;

/* Store applier thread. */
static void on_ack(sl_status st, const char *msg, void *arg) {
  slot *s = arg;
  bench *b = s->b;
  int64_t lat = sl_bench_now_ns() - s->started_ns;
  pthread_mutex_lock(&b->mu);
  if (st != SL_OK) {
    b->failed++;
    fprintf(stderr, "add failed: %s\n", msg);
  }
  if (b->measuring) {
    b->acked++;
    if (b->nlat == b->lat_cap) {
      b->lat_cap = b->lat_cap ? b->lat_cap * 2 : 1 << 16;
      b->lat_ns = sl_xrealloc(b->lat_ns, b->lat_cap * sizeof(*b->lat_ns));
    }
    b->lat_ns[b->nlat++] = lat;
  }
  b->free_slots[b->nfree++] = s;
  pthread_cond_signal(&b->cv);
  pthread_mutex_unlock(&b->mu);
}

typedef struct result {
  double adds_per_s, mb_per_s, syncs_per_s, adds_per_sync, p50_ms, p99_ms;
} result;

static result run_case(const char *root, uint32_t size, int inflight, int seconds,
                       bool keep, bool inline_payloads) {
  char dir[4200];
  snprintf(dir, sizeof(dir), "%s/store-%u-%d", root, size, inflight);
  sl_bookie_store_opts o = SL_BOOKIE_STORE_OPTS_INIT;
  o.leveldb.entry_log = !inline_payloads;
  sl_bookie_store *s = NULL;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_bookie_store_open(dir, &o, &s, &err);
  if (st != SL_OK) {
    fprintf(stderr, "open %s: %s\n", dir, sl_err_msg(&err, st));
    exit(1);
  }
  bench b = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, 0, 0, 0, NULL, 0, 0, false};
  slot *slots = sl_xcalloc((size_t)inflight, sizeof(*slots));
  b.free_slots = sl_xcalloc((size_t)inflight, sizeof(*b.free_slots));
  uint64_t x = 88172645463325252ull;
  for (int i = 0; i < inflight; i++) {
    slots[i].buf = sl_xmalloc(size);
    for (uint32_t j = 0; j < size; j++) { /* xorshift: incompressible bytes */
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      slots[i].buf[j] = (uint8_t)x;
    }
    slots[i].b = &b;
    b.free_slots[b.nfree++] = &slots[i];
  }
  /* Half a second of warm-up, then the measured window. */
  int64_t t0 = sl_bench_now_ns();
  int64_t measure_from = t0 + 500000000, measure_to = measure_from + (int64_t)seconds * 1000000000;
  sl_bookie_store_info before = {0}, after = {0};
  int64_t entry = 0;
  pthread_mutex_lock(&b.mu);
  for (;;) {
    while (b.nfree == 0) pthread_cond_wait(&b.cv, &b.mu);
    int64_t now = sl_bench_now_ns();
    if (!b.measuring && now >= measure_from) {
      sl_bookie_store_info_get(s, &before);
      b.measuring = true;
      measure_from = now;
    }
    if (now >= measure_to) break;
    slot *sl = b.free_slots[--b.nfree];
    pthread_mutex_unlock(&b.mu);
    sl->started_ns = sl_bench_now_ns();
    sl->crc = sl_entry_crc(1, entry, sl->buf, size); /* the writer's checksum */
    sl_bookie_add_req r = {1, entry, 1, entry - 1, sl->buf, size, sl->crc, 0, NULL, 0};
    entry++;
    st = sl_bookie_store_add(s, &r, on_ack, sl, &err);
    if (st != SL_OK) {
      fprintf(stderr, "add refused: %s\n", sl_err_msg(&err, st));
      exit(1);
    }
    pthread_mutex_lock(&b.mu);
  }
  int64_t measured_ns = sl_bench_now_ns() - measure_from;
  b.measuring = false;
  uint64_t acked = b.acked;
  pthread_mutex_unlock(&b.mu);
  sl_bookie_store_info_get(s, &after);
  sl_bookie_store_close(s); /* waits for the rest */

  result res;
  double secs = (double)measured_ns / 1e9;
  uint64_t syncs = after.journal_syncs - before.journal_syncs;
  res.adds_per_s = (double)acked / secs;
  res.mb_per_s = res.adds_per_s * size / 1e6;
  res.syncs_per_s = (double)syncs / secs;
  res.adds_per_sync = syncs ? (double)acked / (double)syncs : 0;
  sl_bench_sort(b.lat_ns, b.nlat);
  res.p50_ms = sl_bench_pct_ms(b.lat_ns, b.nlat, 0.50);
  res.p99_ms = sl_bench_pct_ms(b.lat_ns, b.nlat, 0.99);
  if (b.failed) {
    fprintf(stderr, "%" PRIu64 " adds failed\n", b.failed);
    exit(1);
  }
  for (int i = 0; i < inflight; i++) free(slots[i].buf);
  free(slots);
  free(b.free_slots);
  free(b.lat_ns);
  if (!keep) rm_tree(dir);
  return res;
}

/* ---- journal alone (no ledger storage), to see what ledger storage costs ---- */

typedef struct jslot {
  sl_journal_req req; /* first */
  struct bench *b;
} jslot;

/* Journal thread: hands every slot of the batch back. */
static void on_journal_batch(sl_journal_req *batch, sl_status st, const char *msg,
                             sl_journal_pos end, void *arg) {
  (void)end;
  bench *b = arg;
  pthread_mutex_lock(&b->mu);
  while (batch != NULL) {
    sl_journal_req *next = batch->next;
    if (st != SL_OK) {
      b->failed++;
      fprintf(stderr, "journal write failed: %s\n", msg);
    }
    if (b->measuring) b->acked++;
    b->free_slots[b->nfree++] = (slot *)(void *)batch;
    batch = next;
  }
  pthread_cond_signal(&b->cv);
  pthread_mutex_unlock(&b->mu);
}

static double run_journal_case(const char *root, uint32_t size, int inflight, int seconds) {
  char dir[4200];
  snprintf(dir, sizeof(dir), "%s/journal-%u-%d", root, size, inflight);
  bench b = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, 0, 0, 0, NULL, 0, 0, false};
  sl_journal_opts o = SL_JOURNAL_OPTS_INIT;
  o.dir = dir;
  o.on_durable = on_journal_batch;
  o.arg = &b;
  sl_journal *j = NULL;
  sl_err err = SL_ERR_INIT;
  if (sl_journal_open(&o, &j, &err) != SL_OK ||
      sl_journal_start(j, (sl_journal_pos){0, 0}, &err) != SL_OK) {
    fprintf(stderr, "journal %s: %s\n", dir, err.msg);
    exit(1);
  }
  uint8_t *buf = sl_xcalloc(1, size);
  memset(buf, 0x5A, size);
  jslot *slots = sl_xcalloc((size_t)inflight, sizeof(*slots));
  b.free_slots = sl_xcalloc((size_t)inflight, sizeof(*b.free_slots));
  for (int i = 0; i < inflight; i++) b.free_slots[b.nfree++] = (slot *)(void *)&slots[i];
  int64_t measure_from = sl_bench_now_ns() + 500000000;
  int64_t measure_to = measure_from + (int64_t)seconds * 1000000000;
  int64_t entry = 0;
  pthread_mutex_lock(&b.mu);
  for (;;) {
    while (b.nfree == 0) pthread_cond_wait(&b.cv, &b.mu);
    int64_t now = sl_bench_now_ns();
    if (!b.measuring && now >= measure_from) {
      b.measuring = true;
      measure_from = now;
    }
    if (now >= measure_to) break;
    jslot *js = (jslot *)(void *)b.free_slots[--b.nfree];
    pthread_mutex_unlock(&b.mu);
    /* What the writer does per add: hash the payload with its ids. */
    uint32_t crc = sl_entry_crc(1, entry, buf, size);
    memset(&js->req, 0, sizeof(js->req));
    js->req.rec = (sl_journal_record){SL_JOURNAL_ADD, 1, entry, 1, entry - 1, crc, buf, size, NULL};
    entry++;
    if (sl_journal_submit(j, &js->req, &err) != SL_OK) {
      fprintf(stderr, "journal submit: %s\n", err.msg);
      exit(1);
    }
    pthread_mutex_lock(&b.mu);
  }
  double rate = (double)b.acked / ((double)(sl_bench_now_ns() - measure_from) / 1e9);
  b.measuring = false;
  pthread_mutex_unlock(&b.mu);
  sl_journal_close(j);
  free(slots);
  free(b.free_slots);
  free(buf);
  rm_tree(dir);
  return rate;
}

int main(int argc, char **argv) {
  bench_cfg cfg = {0};
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_conf_parse(table, NTABLE, &cfg, "bookie-bench-storage", argc, argv, &err);
  if (st == SL_ECANCELED) return 0;
  if (st != SL_OK) {
    fprintf(stderr, "%s\n", sl_err_msg(&err, st));
    return 2;
  }
  sl_log_set_service("bookie-bench");
  sl_log_set_level(SL_LOG_WARN);
  char root[4096];
  snprintf(root, sizeof(root), "%s/bookie-bench-%d", cfg.dir, (int)getpid());
  if (mkdir(root, 0755) != 0) {
    fprintf(stderr, "mkdir %s: %s\n", root, strerror(errno));
    return 1;
  }
  int seconds = (int)cfg.seconds;
  printf("bookie storage benchmark: dir=%s, %d s per case, crc32c %s\n", root, seconds,
         sl_crc32c_hw_available() ? "sse4.2" : "table");
  sl_bench_raw raw_disk;
  if (sl_bench_raw_fsync(root, seconds, &raw_disk) != 0) exit(1);
  double raw = raw_disk.per_sec;
  printf("raw disk: 4 KiB append + fdatasync: %.0f ops/s (p50 %.3f ms, p99 %.3f ms)\n\n", raw,
         raw_disk.p50_ms, raw_disk.p99_ms);
  printf("%8s %9s %11s %9s %9s %10s %9s %9s %13s\n", "payload", "inflight", "adds/s", "MB/s",
         "syncs/s", "adds/sync", "p50 ms", "p99 ms", "journal-only");
  uint32_t sizes[] = {1024, 65536};
  int inflights[] = {1, 16, 256};
  size_t nsizes = 2, ninflights = 3;
  if (cfg.payload > 0) {
    sizes[0] = (uint32_t)cfg.payload;
    nsizes = 1;
  }
  if (cfg.inflight > 0) {
    inflights[0] = (int)cfg.inflight;
    ninflights = 1;
  }
  double gain_rate = 0;
  for (size_t i = 0; i < nsizes; i++) {
    for (size_t k = 0; k < ninflights; k++) {
      result r = run_case(root, sizes[i], inflights[k], seconds, cfg.keep, cfg.inline_payloads);
      double jr = run_journal_case(root, sizes[i], inflights[k], seconds);
      printf("%7uK %9d %11.0f %9.1f %9.0f %10.1f %9.3f %9.3f %13.0f\n", sizes[i] / 1024,
             inflights[k], r.adds_per_s, r.mb_per_s, r.syncs_per_s, r.adds_per_sync,
             r.p50_ms, r.p99_ms, jr);
      fflush(stdout);
      if (sizes[i] == 1024 && inflights[k] == 256) gain_rate = r.adds_per_s;
    }
  }
  printf("\njournal-only: the same adds written to the journal alone (no ledger storage), "
         "adds/s\n");
  if (gain_rate > 0) printf("group commit gain at 1 KiB, 256 in flight: %.1fx the raw fdatasync rate "
         "(%.0f adds/s vs %.0f syncs/s)\n", gain_rate / raw, gain_rate, raw);
  if (!cfg.keep) rm_tree(root);
  sl_conf_release(table, NTABLE, &cfg);
  return 0;
}
