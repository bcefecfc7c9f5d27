/*
 * Re-replication of CLOSED ledgers (sl_ledger_rereplicate_async), against a
 * real cluster (etcd, metadata service, 5 bookies):
 *   - a stopped bookie's copies move to another bookie: afterwards a second
 *     original bookie can stop and every entry still reads;
 *   - a bookie that is back with its data is left alone (nothing copied);
 *   - a wiped bookie (same id, new instance) is replaced without waiting;
 *   - with no copy left of some entry, nothing changes in the metadata;
 *   - the copy rate bound holds; a cancel ends a copy; refusals for open and
 *     unknown ledgers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "metadata.slrpc.h"
#include "tests/ledger_testlib.h"
#include "tests/metadata_util.h"

static int setup(void **state) {
  sl_lt *t = calloc(1, sizeof(*t));
  sl_lt_start(t, "ledger_rereplicate", 5, NULL, NULL);
  *state = t;
  return 0;
}

/* Each test gets a client of its own: gRPC backs off reconnecting to a
 * bookie an earlier test stopped, and a channel in that backoff fails calls
 * for a while after the bookie is back. */
static int client_setup(void **state) {
  sl_lt *t = *state;
  sl_ledger_client_destroy(t->client);
  sl_ledger_client_opts o = SL_LEDGER_CLIENT_OPTS_INIT;
  o.metadata = t->meta;
  o.recovery_timeout_ms = 30000; /* as sl_lt_start's: ASan shares 2 cores */
  t->client = NULL;
  assert_int_equal(sl_ledger_client_create(&o, &t->client, NULL), SL_OK);
  return 0;
}

typedef struct rr_wait {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool done;
  sl_status st;
  uint32_t replaced;
  uint64_t copied;
  char details[256];
} rr_wait;

static void rr_done(sl_status st, const char *details, uint32_t replaced, uint64_t copied,
                    void *arg) {
  rr_wait *w = arg;
  pthread_mutex_lock(&w->mu);
  w->st = st;
  w->replaced = replaced;
  w->copied = copied;
  snprintf(w->details, sizeof(w->details), "%s", details);
  w->done = true;
  pthread_cond_signal(&w->cv);
  pthread_mutex_unlock(&w->mu);
}

/* Runs a re-replication of `ledger` for the bookie ids in gone and waits. */
static sl_status rerep(sl_lt *t, uint64_t ledger, const char *const *gone, uint64_t bps,
                       uint32_t *replaced, uint64_t *copied) {
  rr_wait w = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
  sl_ledger_rereplicate_opts o = {.gone = gone, .bytes_per_second = bps};
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_ledger_rereplicate_async(t->client, ledger, &o, rr_done, &w, &err);
  if (st != SL_OK) return st;
  struct timespec dl = sl_clock_deadline(CLOCK_REALTIME, INT64_C(120) * 1000000000);
  pthread_mutex_lock(&w.mu);
  while (!w.done)
    if (pthread_cond_timedwait(&w.cv, &w.mu, &dl) != 0) fail_msg("re-replication hangs");
  pthread_mutex_unlock(&w.mu);
  print_message("ledger %lu: %s replaced=%u copied=%lu %s\n", (unsigned long)ledger,
                sl_status_str(w.st), w.replaced, (unsigned long)w.copied, w.details);
  if (replaced) *replaced = w.replaced;
  if (copied) *copied = w.copied;
  return w.st;
}

/* Every entry reads back through a fresh handle. */
static void read_all(sl_lt *t, uint64_t ledger, int n) {
  sl_ledger *r = sl_lt_open(t, ledger);
  int64_t got = 0;
  assert_int_equal(sl_lt_read_check(r, 0, n - 1, &got), SL_OK);
  assert_int_equal(got, n);
  sl_lt_destroy(r);
}

/* Whether entry e's E=3 Qw=2 write set includes slot s. */
static bool holds(uint32_t s, int e) { return (s + 3 - (uint32_t)e % 3) % 3 < 2; }

/* Entries of [0, n) slot s holds. */
static uint64_t held_by(uint32_t s, int n) {
  uint64_t k = 0;
  for (int e = 0; e < n; e++) k += holds(s, e);
  return k;
}

static void test_ledger_rereplicate__stopped_bookie_copied(void **state) {
  sl_lt *t = *state;
  const int n = 150;
  sl_ledger *lh = sl_lt_filled(t, n, true);
  uint64_t id = sl_ledger_id(lh);
  int A = sl_lt_ensemble_bookie(t, lh, 0), B = sl_lt_ensemble_bookie(t, lh, 1);
  sl_lt_destroy(lh);
  const char *a_id = sl_cluster_id(t->cluster, SL_NODE_BOOKIE, A);
  sl_lt_stop_bookie(t, A);

  const char *gone[] = {a_id, NULL};
  uint32_t replaced = 0;
  uint64_t copied = 0;
  assert_int_equal(rerep(t, id, gone, 0, &replaced, &copied), SL_OK);
  assert_int_equal(replaced, 1);
  assert_int_equal(copied, held_by(0, n));

  Sluice__V1__LedgerResponse *r = mdt_get_ledger(t->meta, id);
  const Sluice__V1__LedgerInfo *info = r->info;
  const char *to = info->ensembles[0]->bookie_ids[0];
  assert_string_not_equal(to, a_id);
  assert_int_equal(info->n_rereplications, 1);
  assert_string_equal(info->rereplications[0]->from_bookie, a_id);
  assert_string_equal(info->rereplications[0]->to_bookie, to);
  assert_int_equal(info->rereplications[0]->segment, 0);
  /* The replacement's instance id is recorded: recovery counts its votes. */
  assert_true(info->ensembles[0]->n_instance_ids == 3 &&
              info->ensembles[0]->instance_ids[0][0] != '\0');
  protobuf_c_message_free_unpacked(&r->base, NULL);

  /* Entries whose write set was {A, B} now live on the replacement only. */
  sl_lt_stop_bookie(t, B);
  read_all(t, id, n);
  sl_lt_restart_bookie(t, A);
  sl_lt_restart_bookie(t, B);

  /* A second run finds nothing to do: A is no longer in the ensemble. */
  assert_int_equal(rerep(t, id, gone, 0, &replaced, &copied), SL_OK);
  assert_int_equal(replaced, 0);
  assert_int_equal(copied, 0);
}

static void test_ledger_rereplicate__bookie_back_left_alone(void **state) {
  sl_lt *t = *state;
  sl_ledger *lh = sl_lt_filled(t, 30, true);
  uint64_t id = sl_ledger_id(lh);
  int A = sl_lt_ensemble_bookie(t, lh, 0);
  sl_lt_destroy(lh);
  sl_lt_stop_bookie(t, A);
  sl_lt_restart_bookie(t, A); /* back with its data, before any worker ran */
  const char *gone[] = {sl_cluster_id(t->cluster, SL_NODE_BOOKIE, A), NULL};
  uint32_t replaced = 9;
  uint64_t copied = 9;
  assert_int_equal(rerep(t, id, gone, 0, &replaced, &copied), SL_OK);
  assert_int_equal(replaced, 0);
  assert_int_equal(copied, 0);
  Sluice__V1__LedgerResponse *r = mdt_get_ledger(t->meta, id);
  assert_int_equal(r->info->n_rereplications, 0);
  protobuf_c_message_free_unpacked(&r->base, NULL);
}

static void test_ledger_rereplicate__wiped_bookie_replaced(void **state) {
  sl_lt *t = *state;
  const int n = 60;
  sl_ledger *lh = sl_lt_filled(t, n, true);
  uint64_t id = sl_ledger_id(lh);
  int A = sl_lt_ensemble_bookie(t, lh, 1), B = sl_lt_ensemble_bookie(t, lh, 2);
  sl_lt_destroy(lh);
  sl_lt_wipe_bookie(t, A); /* registered again, its copies gone */
  const char *gone[] = {sl_cluster_id(t->cluster, SL_NODE_BOOKIE, A), NULL};
  uint32_t replaced = 0;
  uint64_t copied = 0;
  assert_int_equal(rerep(t, id, gone, 0, &replaced, &copied), SL_OK);
  assert_int_equal(replaced, 1);
  assert_int_equal(copied, held_by(1, n));
  sl_lt_stop_bookie(t, B);
  read_all(t, id, n);
  sl_lt_restart_bookie(t, B);
}

static void test_ledger_rereplicate__no_copy_left_changes_nothing(void **state) {
  sl_lt *t = *state;
  sl_ledger *lh = sl_lt_filled(t, 30, true);
  uint64_t id = sl_ledger_id(lh);
  int A = sl_lt_ensemble_bookie(t, lh, 0), B = sl_lt_ensemble_bookie(t, lh, 1);
  sl_lt_destroy(lh);
  Sluice__V1__LedgerResponse *before = mdt_get_ledger(t->meta, id);
  int64_t version = before->version;
  const char *gone[] = {sl_cluster_id(t->cluster, SL_NODE_BOOKIE, A),
                        sl_cluster_id(t->cluster, SL_NODE_BOOKIE, B), NULL};
  /* The client is made after both stopped: it never knew them. */
  sl_lt_stop_bookie(t, A);
  sl_lt_stop_bookie(t, B);
  client_setup(state);
  assert_int_equal(rerep(t, id, gone, 0, NULL, NULL), SL_EUNAVAIL);
  /* Entry 0 (write set {A, B}) alone: no range read, and no replica this
   * client can even ask, so the read gives up inside the call that issues
   * it (the reader once read its freed op there). */
  sl_ledger *r = sl_lt_open(t, id);
  assert_int_equal(sl_lt_read_check(r, 0, 0, NULL), SL_EUNAVAIL);
  sl_lt_destroy(r);
  Sluice__V1__LedgerResponse *after = mdt_get_ledger(t->meta, id);
  assert_int_equal(after->version, version);
  assert_int_equal(after->info->n_rereplications, 0);
  protobuf_c_message_free_unpacked(&before->base, NULL);
  protobuf_c_message_free_unpacked(&after->base, NULL);
  sl_lt_restart_bookie(t, A);
  sl_lt_restart_bookie(t, B);
}

/* The rate bound: the copy takes at least (bytes - one chunk) / rate. */
static void test_ledger_rereplicate__paced(void **state) {
  sl_lt *t = *state;
  const int n = 300;
  sl_ledger *lh = sl_lt_filled(t, n, true);
  uint64_t id = sl_ledger_id(lh);
  int A = sl_lt_ensemble_bookie(t, lh, 2);
  sl_lt_destroy(lh);
  uint8_t buf[SL_LT_PAYLOAD_MAX];
  uint64_t bytes = 0;
  for (int e = 0; e < n; e++)
    if (holds(2, e)) bytes += sl_lt_payload(id, e, buf);
  sl_lt_stop_bookie(t, A);
  const uint64_t bps = 100 * 1000;
  const char *gone[] = {sl_cluster_id(t->cluster, SL_NODE_BOOKIE, A), NULL};
  int64_t t0 = sl_clock_mono_ms();
  assert_int_equal(rerep(t, id, gone, bps, NULL, NULL), SL_OK);
  int64_t took = sl_clock_mono_ms() - t0;
  int64_t floor_ms = (int64_t)((bytes - 32 * SL_LT_PAYLOAD_MAX) * 1000 / bps);
  print_message("copied %lu bytes at %lu B/s in %ld ms (floor %ld ms)\n",
                (unsigned long)bytes, (unsigned long)bps, (long)took, (long)floor_ms);
  assert_true(floor_ms > 500);
  assert_true(took >= floor_ms);
  sl_lt_restart_bookie(t, A);
}

/* A cancel ends a paced copy with SL_ECANCELED, the metadata untouched. */
static void test_ledger_rereplicate__cancelled(void **state) {
  sl_lt *t = *state;
  sl_ledger *lh = sl_lt_filled(t, 300, true);
  uint64_t id = sl_ledger_id(lh);
  int A = sl_lt_ensemble_bookie(t, lh, 0);
  sl_lt_destroy(lh);
  sl_lt_stop_bookie(t, A);
  const char *gone[] = {sl_cluster_id(t->cluster, SL_NODE_BOOKIE, A), NULL};
  atomic_bool cancel = false;
  rr_wait w = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
  sl_ledger_rereplicate_opts o = {.gone = gone, .bytes_per_second = 1000, .cancel = &cancel};
  assert_int_equal(sl_ledger_rereplicate_async(t->client, id, &o, rr_done, &w, NULL), SL_OK);
  atomic_store(&cancel, true);
  struct timespec dl = sl_clock_deadline(CLOCK_REALTIME, INT64_C(30) * 1000000000);
  pthread_mutex_lock(&w.mu);
  while (!w.done)
    if (pthread_cond_timedwait(&w.cv, &w.mu, &dl) != 0) fail_msg("cancel not seen");
  pthread_mutex_unlock(&w.mu);
  assert_int_equal(w.st, SL_ECANCELED);
  Sluice__V1__LedgerResponse *r = mdt_get_ledger(t->meta, id);
  assert_int_equal(r->info->n_rereplications, 0);
  protobuf_c_message_free_unpacked(&r->base, NULL);
  sl_lt_restart_bookie(t, A);
}

static void test_ledger_rereplicate__refusals(void **state) {
  sl_lt *t = *state;
  sl_ledger *lh = sl_lt_create(t, 3, 2, 2, 1, NULL, NULL);
  const char *gone[] = {"bookie-0", NULL};
  assert_int_equal(rerep(t, sl_ledger_id(lh), gone, 0, NULL, NULL), SL_EPRECOND);
  assert_int_equal(rerep(t, sl_ledger_id(lh) + 100000, gone, 0, NULL, NULL), SL_ENOTFOUND);
  sl_lt_destroy(lh);
  sl_ledger_rereplicate_opts o = {.gone = gone};
  assert_int_equal(sl_ledger_rereplicate_async(t->client, 0, &o, rr_done, NULL, NULL),
                   SL_EINVAL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup(test_ledger_rereplicate__stopped_bookie_copied, client_setup),
      cmocka_unit_test_setup(test_ledger_rereplicate__bookie_back_left_alone, client_setup),
      cmocka_unit_test_setup(test_ledger_rereplicate__wiped_bookie_replaced, client_setup),
      cmocka_unit_test_setup(test_ledger_rereplicate__no_copy_left_changes_nothing, client_setup),
      cmocka_unit_test_setup(test_ledger_rereplicate__paced, client_setup),
      cmocka_unit_test_setup(test_ledger_rereplicate__cancelled, client_setup),
      cmocka_unit_test_setup(test_ledger_rereplicate__refusals, client_setup),
  };
  return cmocka_run_group_tests(tests, setup, sl_lt_teardown);
}
