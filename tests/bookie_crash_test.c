/*
 * kill -9 a sluice-bookie process while a writer streams adds to it, then
 * restart it on the same data: every add that was acked must read back
 * byte-exact with a valid CRC32C, and an add that was sent but not acked
 * must be either absent or byte-exact (never garbage).
 *
 * Each cycle writes to the same four ledgers, resuming each at its lowest
 * unacked entry, so resends of entries that survived unacked are part of
 * the test. Payloads are a function of (ledger, entry) (tests/bookie_testlib)
 * and of mixed sizes. The crash moment is random: after a random number of
 * acks (0 included), with adds in flight.
 *
 * 20 cycles by default; SLUICE_LONG=1 runs 200 (through Bazel:
 * --test_env=SLUICE_LONG=1). SLUICE_SEED=N replays a run's choices.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "common/clock.h"
#include "tests/bookie_testlib.h"
#include "tests/proc.h"

#define NL 4               /* ledgers */
#define MAX_ACK_TARGET 2000 /* kill after 0..this many acks */
#define MAX_SENDS 6000      /* per cycle */

typedef struct ledger_log {
  uint64_t id;
  uint8_t *acked;   /* acked[e]: entry e was acked in some cycle */
  size_t cap;
  int64_t start;    /* first entry sent this cycle */
  int64_t next;     /* next entry to send this cycle (sender thread) */
} ledger_log;

typedef struct writer {
  ledger_log l[NL];
  sl_rpc_stream *s;
  pthread_mutex_t mu;       /* guards acked, n_acked, bad */
  uint64_t n_acked;         /* this cycle */
  char bad[512];            /* a refused add (a bug), if any */
  atomic_bool sender_done;
} writer;

static void mark_acked(ledger_log *l, int64_t e) {
  if ((size_t)e >= l->cap) {
    size_t cap = l->cap ? l->cap : 1024;
    while (cap <= (size_t)e) cap *= 2;
    l->acked = realloc(l->acked, cap);
    memset(l->acked + l->cap, 0, cap - l->cap);
    l->cap = cap;
  }
  l->acked[e] = 1;
}

static bool is_acked(const ledger_log *l, int64_t e) {
  return e >= 0 && (size_t)e < l->cap && l->acked[e];
}

static void *sender_main(void *arg) {
  writer *w = arg;
  for (int i = 0; i < MAX_SENDS; i++) {
    ledger_log *l = &w->l[i % NL];
    Sluice__V1__AddEntryRequest r;
    sl_bktest_add_req(&r, l->id, l->next, 0, 1);
    r.tag = l->id;
    sl_status st = sl_bookie_service_add_entry_send(w->s, &r, 5000, NULL);
    free(r.payload.data);
    if (st != SL_OK) break; /* the bookie died */
    l->next++;
  }
  atomic_store(&w->sender_done, true);
  return NULL;
}

static void *receiver_main(void *arg) {
  writer *w = arg;
  for (;;) {
    Sluice__V1__AddEntryResponse *a = NULL;
    sl_status st = sl_bookie_service_add_entry_recv(w->s, &a, 20000, NULL);
    if (st != SL_OK || a == NULL) break;
    pthread_mutex_lock(&w->mu);
    if (a->code == 0) {
      for (int k = 0; k < NL; k++)
        if (w->l[k].id == a->ledger_id) mark_acked(&w->l[k], a->entry_id);
      w->n_acked++;
    } else if (w->bad[0] == '\0') {
      snprintf(w->bad, sizeof(w->bad), "ledger %llu entry %lld refused: code %d: %s",
               (unsigned long long)a->ledger_id, (long long)a->entry_id, a->code,
               a->error);
    }
    pthread_mutex_unlock(&w->mu);
    protobuf_c_message_free_unpacked(&a->base, NULL);
  }
  return NULL;
}

typedef struct target_arg {
  writer *w;
  uint64_t target;
} target_arg;

static bool reached(void *arg) {
  target_arg *t = arg;
  pthread_mutex_lock(&t->w->mu);
  bool ok = t->w->n_acked >= t->target;
  pthread_mutex_unlock(&t->w->mu);
  return ok || atomic_load(&t->w->sender_done);
}

/* Appends an item to a growing list. */
static void push_item(sl_bktest_item **v, size_t *n, size_t *cap, uint64_t ledger,
                      int64_t e, bool may_be_absent) {
  if (*n == *cap) {
    *cap = *cap ? *cap * 2 : 1024;
    *v = realloc(*v, *cap * sizeof(**v));
  }
  (*v)[(*n)++] = (sl_bktest_item){ledger, e, may_be_absent};
}

/* One cycle: write, kill at a random moment, restart, verify. Returns the
 * number of adds acked in it. */
static uint64_t cycle(sl_cluster *c, writer *w, unsigned *seed, int n) {
  sl_rpc_channel *ch = sl_bktest_bookie_channel(c, 0);
  sl_err err = SL_ERR_INIT;
  for (int k = 0; k < NL; k++) {
    ledger_log *l = &w->l[k];
    int64_t e = 0;
    while (is_acked(l, e)) e++;
    l->start = l->next = e;
  }
  w->n_acked = 0;
  atomic_store(&w->sender_done, false);
  sl_status st = sl_bookie_service_add_entry_open(ch, NULL, &w->s, &err);
  if (st != SL_OK) fail_msg("open: %s", sl_err_msg(&err, st));
  pthread_t ts, tr;
  assert_int_equal(pthread_create(&ts, NULL, sender_main, w), 0);
  assert_int_equal(pthread_create(&tr, NULL, receiver_main, w), 0);
  target_arg t = {w, (uint64_t)(rand_r(seed) % (MAX_ACK_TARGET + 1))};
  assert_true(sl_bktest_poll(reached, &t, 60000));
  assert_int_equal(sl_cluster_kill9(c, SL_NODE_BOOKIE, 0, &err), SL_OK);
  sl_rpc_stream_cancel(w->s);
  pthread_join(ts, NULL);
  pthread_join(tr, NULL);
  sl_rpc_stream_destroy(w->s);
  w->s = NULL;
  sl_rpc_channel_destroy(ch);
  if (w->bad[0] != '\0') fail_msg("cycle %d: %s", n, w->bad);

  st = sl_cluster_restart(c, SL_NODE_BOOKIE, 0, &err);
  if (st != SL_OK) fail_msg("cycle %d: restart: %s", n, sl_err_msg(&err, st));
  /* Acked: byte-exact. Sent, not acked: absent or byte-exact. Plus a few
   * acked in earlier cycles. */
  ch = sl_bktest_bookie_channel(c, 0);
  sl_bktest_item *items = NULL;
  size_t n_items = 0, cap = 0;
  for (int k = 0; k < NL; k++) {
    ledger_log *l = &w->l[k];
    for (int64_t e = l->start; e < l->next; e++)
      push_item(&items, &n_items, &cap, l->id, e, !is_acked(l, e));
    for (int i = 0; i < 10 && l->start > 0; i++) {
      int64_t e = (int64_t)(rand_r(seed) % (unsigned)l->start);
      if (is_acked(l, e)) push_item(&items, &n_items, &cap, l->id, e, false);
    }
  }
  sl_bktest_check_many(ch, items, n_items, 0);
  free(items);
  sl_rpc_channel_destroy(ch);
  return w->n_acked;
}

static void test_bookie_crash__acked_adds_survive_kill9(void **state) {
  (void)state;
  const char *lng = getenv("SLUICE_LONG");
  int cycles = lng != NULL && strcmp(lng, "1") == 0 ? 200 : 20;
  const char *seed_env = getenv("SLUICE_SEED");
  unsigned seed = seed_env ? (unsigned)strtoul(seed_env, NULL, 10) : (unsigned)time(NULL);
  printf("bookie_crash: %d cycles, SLUICE_SEED=%u\n", cycles, seed);
  /* Small segments and frequent checkpoints, so that crashes also land
   * around rotations and checkpoints. */
  static const char *const args[] = {"--journal_segment_bytes", "4194304",
                                     "--checkpoint_interval_ms", "200", NULL};
  sl_cluster *c = sl_bktest_cluster("bookie_crash", 1, args);
  writer *w = calloc(1, sizeof(*w));
  pthread_mutex_init(&w->mu, NULL);
  for (int k = 0; k < NL; k++) w->l[k].id = 100 + (uint64_t)k;
  uint64_t total = 0;
  long long t0 = sl_clock_mono_ms();
  for (int n = 0; n < cycles; n++) total += cycle(c, w, &seed, n);

  /* Everything acked in every cycle, once more. */
  sl_rpc_channel *ch = sl_bktest_bookie_channel(c, 0);
  sl_bktest_item *items = NULL;
  size_t checked = 0, cap = 0;
  for (int k = 0; k < NL; k++) {
    ledger_log *l = &w->l[k];
    for (size_t e = 0; e < l->cap; e++)
      if (l->acked[e]) push_item(&items, &checked, &cap, l->id, (int64_t)e, false);
  }
  sl_bktest_check_many(ch, items, checked, 0);
  free(items);
  assert_true(checked > 0 && checked <= total); /* an entry may be acked again after a resend */
  Sluice__V1__GetInfoResponse *info = sl_bktest_info(ch);
  assert_int_equal(info->ledger_count, NL);
  assert_true(info->entry_count >= total);
  protobuf_c_message_free_unpacked(&info->base, NULL);
  sl_rpc_channel_destroy(ch);
  printf("bookie_crash: %d cycles, %zu acked entries verified, %.1f s per cycle\n", cycles,
         checked, (double)(sl_clock_mono_ms() - t0) / 1000.0 / cycles);
  for (int k = 0; k < NL; k++) free(w->l[k].acked);
  pthread_mutex_destroy(&w->mu);
  free(w);
  sl_bktest_cluster_destroy(c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_bookie_crash__acked_adds_survive_kill9),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
