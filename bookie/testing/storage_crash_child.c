/*
 * storage_crash_child DIR CYCLE
 *
 * Opens the bookie store in DIR and adds entries as fast as it can (64 in
 * flight) to four ledgers numbered (CYCLE+1)*100 + 0..3, until it is killed.
 * Each line on stdout is written (one write(2), so it is whole) only after the
 * store acknowledged what it reports:
 *
 *   R                 the store is open
 *   A <ledger> <entry> the add is acknowledged (durable)
 *   F <ledger>        the fence is acknowledged
 *   d <ledger>        a delete is about to be submitted
 *   D <ledger>        the delete is acknowledged
 *   DONE              it ran out of work and closed the store cleanly
 *
 * Ledger +2 is fenced after 100 acked adds; ledger +3 is deleted after 100.
 * Every add and fence sends the ledger's password (sl_crash_password).
 * bookie_store_crash_test SIGKILLs it at a random moment and checks that
 * everything reported survived.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bookie/bookie_store.h"
#include "bookie/testing/crash_payload.h"
#include "common/crc32c.h"
#include "common/log.h"

#define WINDOW 64
#define MAX_ADDS 100000

typedef struct child {
  pthread_mutex_t mu; /* guards everything below */
  pthread_cond_t cv;
  int inflight;
  int outstanding[4];   /* per ledger */
  int acked[4];
  int64_t next_entry[4];
} child;

static child g = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, {0}, {0}, {0}};

typedef struct add_ctx {
  int k;
  uint64_t ledger;
  int64_t entry;
  uint8_t *buf;
} add_ctx;

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...) {
  char line[128];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof(line), fmt, ap);
  va_end(ap);
  if (n <= 0 || (size_t)n >= sizeof(line) || write(STDOUT_FILENO, line, (size_t)n) != n) {
    abort(); /* the parent would misread a partial report */
  }
}

/* Store applier thread. */
static void on_added(sl_status st, const char *msg, void *arg) {
  add_ctx *c = arg;
  if (st == SL_OK) {
    say("A %" PRIu64 " %" PRId64 "\n", c->ledger, c->entry);
  } else {
    fprintf(stderr, "add %" PRIu64 "/%" PRId64 " failed: %s\n", c->ledger, c->entry, msg);
  }
  pthread_mutex_lock(&g.mu);
  g.inflight--;
  g.outstanding[c->k]--;
  if (st == SL_OK) g.acked[c->k]++;
  pthread_cond_broadcast(&g.cv);
  pthread_mutex_unlock(&g.mu);
  free(c->buf);
  free(c);
}

static void on_fenced(sl_status st, const char *msg, void *arg) {
  uint64_t ledger = (uint64_t)(uintptr_t)arg;
  if (st == SL_OK) say("F %" PRIu64 "\n", ledger);
  else fprintf(stderr, "fence %" PRIu64 " failed: %s\n", ledger, msg);
}

static void on_deleted(sl_status st, const char *msg, void *arg) {
  uint64_t ledger = (uint64_t)(uintptr_t)arg;
  if (st == SL_OK) say("D %" PRIu64 "\n", ledger);
  else fprintf(stderr, "delete %" PRIu64 " failed: %s\n", ledger, msg);
}

static void submit_add(sl_bookie_store *s, int k, uint64_t ledger) {
  add_ctx *c = sl_xcalloc(1, sizeof(*c));
  c->k = k;
  c->ledger = ledger;
  c->entry = g.next_entry[k]++;
  uint32_t len = sl_crash_payload_len(ledger, c->entry);
  c->buf = sl_xmalloc(len);
  sl_crash_payload_fill(ledger, c->entry, c->buf);
  char pw[32];
  sl_crash_password(ledger, pw, sizeof(pw));
  sl_bookie_add_req r = {ledger, c->entry, 1, c->entry - 1, c->buf, len,
                         sl_entry_crc(ledger, c->entry, c->buf, len), 0, pw, strlen(pw)};
  g.inflight++;
  g.outstanding[k]++;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_bookie_store_add(s, &r, on_added, c, &err);
  if (st != SL_OK) {
    fprintf(stderr, "add refused: %s\n", sl_err_msg(&err, st));
    exit(1);
  }
}

/* Runs under g.mu; returns when MAX_ADDS were submitted. */
static void run(sl_bookie_store *s, uint64_t base) {
  bool fenced = false, deleted = false;
  sl_err err = SL_ERR_INIT;
  for (int n = 0; n < MAX_ADDS; n++) {
    while (g.inflight >= WINDOW) pthread_cond_wait(&g.cv, &g.mu);
    if (!fenced && g.acked[2] >= 100) {
      fenced = true;
      char pw[32];
      sl_crash_password(base + 2, pw, sizeof(pw));
      if (sl_bookie_store_fence(s, base + 2, 2, pw, strlen(pw), on_fenced,
                                (void *)(uintptr_t)(base + 2), &err) != SL_OK) {
        fprintf(stderr, "fence refused: %s\n", err.msg);
        exit(1);
      }
    }
    if (!deleted && g.acked[3] >= 100 && g.outstanding[3] == 0) {
      deleted = true;
      say("d %" PRIu64 "\n", base + 3);
      char dpw[32];
      sl_crash_password(base + 3, dpw, sizeof(dpw));
      if (sl_bookie_store_delete_ledger(s, base + 3, dpw, strlen(dpw), on_deleted,
                                        (void *)(uintptr_t)(base + 3), &err) != SL_OK) {
        fprintf(stderr, "delete refused: %s\n", err.msg);
        exit(1);
      }
    }
    int k = n % 4;
    if ((k == 2 && fenced) || (k == 3 && (deleted || g.acked[3] >= 100))) k = n % 2;
    submit_add(s, k, base + (uint64_t)k);
  }
  while (g.inflight > 0) pthread_cond_wait(&g.cv, &g.mu);
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s DIR CYCLE\n", argv[0]);
    return 2;
  }
  sl_log_set_service("crash-child");
  sl_log_set_level(SL_LOG_WARN);
  uint64_t base = ((uint64_t)strtoull(argv[2], NULL, 10) + 1) * 100;
  sl_bookie_store_opts o = SL_BOOKIE_STORE_OPTS_INIT;
  o.journal_segment_bytes = 256u << 10;
  o.checkpoint_interval_ms = 30;
  o.checkpoint_bytes = 1u << 20;
  o.max_entry_bytes = SL_CRASH_PAYLOAD_MAX;
  o.leveldb.write_buffer_bytes = 2u << 20;
  /* Small entry log files and an eager collector: kills land in the middle
   * of compactions and removals too. */
  o.leveldb.log.file_bytes = 64u << 10;
  o.leveldb.gc_interval_ms = 20;
  o.leveldb.gc_compact_ratio = 0.9;
  o.leveldb.gc_rate_bytes = 256u << 20;
  sl_bookie_store *s = NULL;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_bookie_store_open(argv[1], &o, &s, &err);
  if (st != SL_OK) {
    fprintf(stderr, "open %s: %s\n", argv[1], sl_err_msg(&err, st));
    return 1;
  }
  say("R\n");
  pthread_mutex_lock(&g.mu);
  run(s, base);
  pthread_mutex_unlock(&g.mu);
  sl_bookie_store_close(s);
  say("DONE\n");
  return 0;
}
