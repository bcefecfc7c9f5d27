/*
 * Compare-and-swap through sluice-metadata on a real etcd: many concurrent
 * updaters of one cursor and of one ledger (exactly one wins each version,
 * none is lost), and writes with a stale ownership epoch are refused.
 */
#include <pthread.h>
#include <stdbool.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "tests/metadata_cluster.h"
#include "tests/metadata_util.h"

#define P "public/cas-partition-0"
#define THREADS 8
#define WINS 25 /* successful updates per thread */

typedef struct race {
  sl_rpc_channel *chs[THREADS];
  uint64_t epoch;
  uint64_t ledger_id;
  pthread_mutex_t lock;
  int64_t won_versions[THREADS * WINS]; /* expected version of each win */
  int64_t written[THREADS * WINS];      /* counter value each win wrote */
  int n_won;
  int aborted;                          /* ABORTED answers: lost races */
  char failure[256];                    /* first unexpected status */
} race;

typedef struct worker {
  race *r;
  int i;
} worker;

static void record(race *r, sl_status st, const sl_err *err, int64_t expected, int64_t value) {
  pthread_mutex_lock(&r->lock);
  if (st == SL_OK) {
    r->won_versions[r->n_won] = expected;
    r->written[r->n_won] = value;
    r->n_won++;
  } else if (st == SL_EVERSION) {
    r->aborted++;
  } else if (r->failure[0] == '\0') {
    snprintf(r->failure, sizeof(r->failure), "%s: %s", sl_status_str(st), sl_err_msg(err, st));
  }
  pthread_mutex_unlock(&r->lock);
}

static bool failed(race *r) {
  pthread_mutex_lock(&r->lock);
  bool f = r->failure[0] != '\0';
  pthread_mutex_unlock(&r->lock);
  return f;
}

static void *cursor_worker(void *arg) {
  worker *w = arg;
  race *r = w->r;
  for (int wins = 0; wins < WINS && !failed(r);) {
    sl_err err = SL_ERR_INIT;
    int64_t entry = 0, version = 0;
    sl_status st = mdt_st_get_cursor(r->chs[w->i], P, "sub", &entry, &version, &err);
    if (st != SL_OK) {
      record(r, st, &err, 0, 0);
      break;
    }
    st = mdt_st_update_cursor(r->chs[w->i], P, "sub", entry + 1, version, r->epoch, NULL, &err);
    record(r, st, &err, version, entry + 1);
    if (st == SL_OK) wins++;
  }
  return NULL;
}

static void *ledger_worker(void *arg) {
  worker *w = arg;
  race *r = w->r;
  sl_rpc_channel *ch = r->chs[w->i];
  for (int wins = 0; wins < WINS && !failed(r);) {
    sl_err err = SL_ERR_INIT;
    Sluice__V1__GetLedgerRequest gr = SLUICE__V1__GET_LEDGER_REQUEST__INIT;
    gr.ledger_id = r->ledger_id;
    Sluice__V1__LedgerResponse *got = NULL;
    sl_rpc_call_opts o = mdt_opts(10000);
    sl_status st = sl_metadata_service_get_ledger(ch, &gr, &got, &o, &err);
    if (st != SL_OK) {
      record(r, st, &err, 0, 0);
      break;
    }
    /* The counter is the ledger's length; any field would do. */
    got->info->length_bytes++;
    Sluice__V1__UpdateLedgerRequest ur = SLUICE__V1__UPDATE_LEDGER_REQUEST__INIT;
    ur.info = got->info;
    ur.expected_version = got->version;
    ur.epoch = r->epoch;
    Sluice__V1__LedgerResponse *resp = NULL;
    st = sl_metadata_service_update_ledger(ch, &ur, &resp, &o, &err);
    record(r, st, &err, got->version, (int64_t)got->info->length_bytes);
    if (st == SL_OK) {
      wins++;
      protobuf_c_message_free_unpacked(&resp->base, NULL);
    }
    protobuf_c_message_free_unpacked(&got->base, NULL);
  }
  return NULL;
}

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

/* Runs the workers, then checks: every win has its own version, and the
 * values written are exactly 1..THREADS*WINS (no update lost). */
static void run_race(race *r, void *(*fn)(void *)) {
  pthread_t t[THREADS];
  worker w[THREADS];
  for (int i = 0; i < THREADS; i++) {
    w[i] = (worker){r, i};
    assert_int_equal(pthread_create(&t[i], NULL, fn, &w[i]), 0);
  }
  for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
  if (r->failure[0] != '\0') fail_msg("unexpected answer: %s", r->failure);
  assert_int_equal(r->n_won, THREADS * WINS);
  qsort(r->won_versions, (size_t)r->n_won, sizeof(int64_t), cmp_i64);
  qsort(r->written, (size_t)r->n_won, sizeof(int64_t), cmp_i64);
  for (int i = 0; i < r->n_won; i++) {
    if (i > 0) assert_true(r->won_versions[i] > r->won_versions[i - 1]);
    assert_int_equal(r->written[i], i + 1);
  }
  print_message("%d wins, %d lost races (ABORTED)\n", r->n_won, r->aborted);
  assert_true(r->aborted > 0); /* it was a race */
}

typedef struct fixture {
  sl_cluster *c;
  sl_rpc_channel *ch;
  int64_t session;
  uint64_t epoch;
} fixture;

static int setup(void **state) {
  fixture *f = calloc(1, sizeof(*f));
  f->c = mdt_cluster_start("mdcas", 1, false, NULL);
  f->ch = mdt_cluster_connect(f->c, 0);
  f->session = mdt_open_broker(f->ch, "b1", 30);
  Sluice__V1__AcquireOwnershipResponse *r = mdt_acquire(f->ch, P, "b1", f->session);
  assert_true(r->acquired);
  f->epoch = r->owner->epoch;
  protobuf_c_message_free_unpacked(&r->base, NULL);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  mdt_cluster_stop(f->c, f->ch);
  free(f);
  return 0;
}

static void race_init(race *r, fixture *f) {
  memset(r, 0, sizeof(*r));
  pthread_mutex_init(&r->lock, NULL);
  r->epoch = f->epoch;
  for (int i = 0; i < THREADS; i++)
    r->chs[i] = mdt_connect(sl_cluster_addr(f->c, SL_NODE_METADATA, 0));
}

static void race_release(race *r) {
  for (int i = 0; i < THREADS; i++) sl_rpc_channel_destroy(r->chs[i]);
  pthread_mutex_destroy(&r->lock);
}

static void test_metadata_cas__one_cursor_many_writers(void **state) {
  fixture *f = *state;
  sl_err err = SL_ERR_INIT;
  mdt_expect(mdt_st_update_cursor(f->ch, P, "sub", 0, 0, f->epoch, NULL, &err), SL_OK, &err);
  race *r = malloc(sizeof(*r));
  race_init(r, f);
  run_race(r, cursor_worker);
  int64_t entry = 0;
  mdt_expect(mdt_st_get_cursor(f->ch, P, "sub", &entry, NULL, &err), SL_OK, &err);
  assert_int_equal(entry, THREADS * WINS);
  race_release(r);
  free(r);
}

static void test_metadata_cas__one_ledger_many_writers(void **state) {
  fixture *f = *state;
  race *r = malloc(sizeof(*r));
  race_init(r, f);
  r->ledger_id = mdt_create_ledger(f->ch, P, f->epoch, NULL);
  run_race(r, ledger_worker);
  race_release(r);
  free(r);
}

static void test_metadata_cas__stale_epoch_refused(void **state) {
  fixture *f = *state;
  sl_err err = SL_ERR_INIT;
  uint64_t e1 = f->epoch;
  int64_t lv = 0, cv = 0, mv = 0;
  uint64_t id = mdt_create_ledger(f->ch, P, e1, &lv);
  mdt_expect(mdt_st_update_cursor(f->ch, P, "s", 1, 0, e1, &cv, &err), SL_OK, &err);
  Sluice__V1__LedgerRef ref = SLUICE__V1__LEDGER_REF__INIT;
  ref.ledger_id = id;
  Sluice__V1__LedgerRef *refs[] = {&ref};
  Sluice__V1__ManagedLedgerInfo ml = SLUICE__V1__MANAGED_LEDGER_INFO__INIT;
  ml.partition = P;
  ml.n_ledgers = 1;
  ml.ledgers = refs;
  Sluice__V1__UpdateManagedLedgerRequest mr = SLUICE__V1__UPDATE_MANAGED_LEDGER_REQUEST__INIT;
  mr.info = &ml;
  mr.epoch = e1;
  Sluice__V1__ManagedLedgerResponse *mresp = NULL;
  mdt_expect(sl_metadata_service_update_managed_ledger(f->ch, &mr, &mresp, NULL, &err), SL_OK,
             &err);
  mv = mresp->version;
  protobuf_c_message_free_unpacked(&mresp->base, NULL);

  /* b1's session ends; b2 takes over with a higher epoch. */
  Sluice__V1__CloseSessionRequest cr = SLUICE__V1__CLOSE_SESSION_REQUEST__INIT;
  cr.session_id = f->session;
  Sluice__V1__CloseSessionResponse *cresp = NULL;
  mdt_expect(sl_metadata_service_close_session(f->ch, &cr, &cresp, NULL, &err), SL_OK, &err);
  protobuf_c_message_free_unpacked(&cresp->base, NULL);
  int64_t s2 = mdt_open_broker(f->ch, "b2", 30);
  Sluice__V1__AcquireOwnershipResponse *ar = mdt_acquire(f->ch, P, "b2", s2);
  assert_true(ar->acquired);
  uint64_t e2 = ar->owner->epoch;
  protobuf_c_message_free_unpacked(&ar->base, NULL);
  assert_true(e2 > e1);

  /* b1, with the versions it read and its old epoch: refused everywhere. */
  mdt_expect(mdt_st_update_cursor(f->ch, P, "s", 2, cv, e1, NULL, &err), SL_ESTALE_EPOCH, &err);
  mdt_expect(sl_metadata_service_update_managed_ledger(f->ch, &mr, &mresp, NULL, &err),
             SL_ESTALE_EPOCH, &err); /* expected 0 would also fail: it exists */
  mr.expected_version = mv;
  mdt_expect(sl_metadata_service_update_managed_ledger(f->ch, &mr, &mresp, NULL, &err),
             SL_ESTALE_EPOCH, &err);
  Sluice__V1__GetLedgerRequest gr = SLUICE__V1__GET_LEDGER_REQUEST__INIT;
  gr.ledger_id = id;
  Sluice__V1__LedgerResponse *got = NULL;
  mdt_expect(sl_metadata_service_get_ledger(f->ch, &gr, &got, NULL, &err), SL_OK, &err);
  assert_int_equal(got->version, lv);
  got->info->state = SLUICE__V1__LEDGER_STATE__LEDGER_STATE_CLOSED;
  Sluice__V1__UpdateLedgerRequest ur = SLUICE__V1__UPDATE_LEDGER_REQUEST__INIT;
  ur.info = got->info;
  ur.expected_version = lv;
  ur.epoch = e1;
  Sluice__V1__LedgerResponse *uresp = NULL;
  mdt_expect(sl_metadata_service_update_ledger(f->ch, &ur, &uresp, NULL, &err), SL_ESTALE_EPOCH,
             &err);
  assert_non_null(strstr(err.msg, "stale"));
  /* b1 cannot start a new ledger either. */
  Sluice__V1__CreateLedgerRequest clr = SLUICE__V1__CREATE_LEDGER_REQUEST__INIT;
  Sluice__V1__LedgerInfo fresh;
  Sluice__V1__EnsembleSegment seg;
  mdt_ledger_init(&fresh, &seg, P);
  clr.info = &fresh;
  clr.epoch = e1;
  mdt_expect(sl_metadata_service_create_ledger(f->ch, &clr, &uresp, NULL, &err), SL_ESTALE_EPOCH,
             &err);
  /* b2, with the same versions and its epoch, recovering: accepted. */
  got->info->state = SLUICE__V1__LEDGER_STATE__LEDGER_STATE_IN_RECOVERY;
  got->info->recovery_epoch = e2;
  ur.epoch = e2;
  ur.kind = SLUICE__V1__LEDGER_UPDATE_KIND__LEDGER_UPDATE_RECOVER;
  mdt_expect(sl_metadata_service_update_ledger(f->ch, &ur, &uresp, NULL, &err), SL_OK, &err);
  protobuf_c_message_free_unpacked(&uresp->base, NULL);
  protobuf_c_message_free_unpacked(&got->base, NULL);
  mdt_expect(mdt_st_update_cursor(f->ch, P, "s", 2, cv, e2, NULL, &err), SL_OK, &err);
  mr.epoch = e2;
  mdt_expect(sl_metadata_service_update_managed_ledger(f->ch, &mr, &mresp, NULL, &err), SL_OK,
             &err);
  protobuf_c_message_free_unpacked(&mresp->base, NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_metadata_cas__one_cursor_many_writers, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_metadata_cas__one_ledger_many_writers, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_metadata_cas__stale_epoch_refused, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
