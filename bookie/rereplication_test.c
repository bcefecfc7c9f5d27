/*
 * The re-replication worker against a scripted MetadataService in the same
 * process (real gRPC over loopback). The script hands out work items from a
 * queue and answers GetLedger by ledger id: 5 is gone (NOT_FOUND), 6 is OPEN
 * (not for auto-recovery), 7 fails (UNAVAILABLE). The copy itself is the
 * ledger client's, tested on a real cluster (tests/ledger_rereplicate_test,
 * tests/autorecovery_test); here: which items end done or released, the
 * session and node on each call, the back-off after a failure, and stop.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "bookie/rereplication.h"
#include "bookie/testing/scripted_metadata.h"
#include "bookie/testing/test_util.h"
#include "common/clock.h"
#include "common/rpc.h"
#include "common/rpc_server.h"
#include "common/testing.h"
#include "metadata.slrpc.h"

#define SESSION 42
#define MAX_EVENTS 32

typedef struct finish_ev {
  uint64_t ledger;
  bool done;
  int64_t at_ms;
} finish_ev;

typedef struct fake {
  pthread_mutex_t mu;
  pthread_cond_t cv;            /* a call arrived */
  uint64_t queue[MAX_EVENTS];   /* items to hand out, in order */
  int n_queue, next;
  int claims;                   /* ClaimRereplication calls */
  int64_t last_claim_ms;
  bool bad_caller;              /* a call named another session or node */
  finish_ev fin[MAX_EVENTS];
  int n_fin;
  sl_rpc_server *srv;
  char target[64];
} fake;

static bool caller_ok(int64_t session, Sluice__V1__NodeKind kind, const char *node) {
  return session == SESSION && kind == SLUICE__V1__NODE_KIND__NODE_KIND_BOOKIE &&
         strcmp(node, "bookie-x") == 0;
}

static void claim(sl_rpc_call *call, const Sluice__V1__ClaimRereplicationRequest *req,
                  void *ctx) {
  fake *f = ctx;
  Sluice__V1__ClaimRereplicationResponse r = SLUICE__V1__CLAIM_REREPLICATION_RESPONSE__INIT;
  Sluice__V1__UnderReplicated item = SLUICE__V1__UNDER_REPLICATED__INIT;
  char *gone[] = {"gone-1"};
  pthread_mutex_lock(&f->mu);
  f->claims++;
  f->last_claim_ms = sl_clock_mono_ms();
  f->bad_caller |= !caller_ok(req->session_id, req->kind, req->node_id);
  if (f->next < f->n_queue) {
    item.ledger_id = f->queue[f->next++];
    item.bookie_ids = gone;
    item.n_bookie_ids = 1;
    r.claimed = true;
    r.work = &item;
  }
  pthread_cond_broadcast(&f->cv);
  pthread_mutex_unlock(&f->mu);
  sl_metadata_service_claim_rereplication_reply(call, &r);
}

static void finish(sl_rpc_call *call, const Sluice__V1__FinishRereplicationRequest *req,
                   void *ctx) {
  fake *f = ctx;
  pthread_mutex_lock(&f->mu);
  f->bad_caller |= !caller_ok(req->session_id, req->kind, req->node_id);
  if (f->n_fin < MAX_EVENTS)
    f->fin[f->n_fin++] = (finish_ev){req->ledger_id, req->done, sl_clock_mono_ms()};
  pthread_cond_broadcast(&f->cv);
  pthread_mutex_unlock(&f->mu);
  Sluice__V1__FinishRereplicationResponse r = SLUICE__V1__FINISH_REREPLICATION_RESPONSE__INIT;
  sl_metadata_service_finish_rereplication_reply(call, &r);
}

static void get_ledger(sl_rpc_call *call, const Sluice__V1__GetLedgerRequest *req,
                       void *ctx) {
  (void)ctx;
  if (req->ledger_id == 5) {
    sl_rpc_call_finish(call, SL_ENOTFOUND, "ledger 5: not found", NULL);
    return;
  }
  if (req->ledger_id != 6) {
    sl_rpc_call_finish(call, SL_EUNAVAIL, "store unreachable", NULL);
    return;
  }
  Sluice__V1__LedgerInfo info = SLUICE__V1__LEDGER_INFO__INIT;
  info.ledger_id = 6;
  info.state = SLUICE__V1__LEDGER_STATE__LEDGER_STATE_OPEN;
  Sluice__V1__LedgerResponse r = SLUICE__V1__LEDGER_RESPONSE__INIT;
  r.info = &info;
  r.version = 1;
  sl_metadata_service_get_ledger_reply(call, &r);
}

static void list_bookies(sl_rpc_call *call, const Sluice__V1__ListBookiesRequest *req,
                         void *ctx) {
  (void)req;
  (void)ctx;
  Sluice__V1__ListBookiesResponse r = SLUICE__V1__LIST_BOOKIES_RESPONSE__INIT;
  sl_metadata_service_list_bookies_reply(call, &r);
}

static fake *fake_start(const uint64_t *items, int n) {
  fake *f = calloc(1, sizeof(*f));
  assert_non_null(f);
  pthread_mutex_init(&f->mu, NULL);
  pthread_cond_init(&f->cv, NULL);
  if (n) memcpy(f->queue, items, (size_t)n * sizeof(*items));
  f->n_queue = n;
  sl_metadata_service_handlers h;
  memset(&h, 0, sizeof(h));
  h.claim_rereplication = claim;
  h.finish_rereplication = finish;
  h.get_ledger = get_ledger;
  h.list_bookies = list_bookies;
  f->srv = sl_test_md_start(&h, f, f->target, sizeof(f->target));
  return f;
}

static void fake_stop(fake *f) {
  sl_rpc_server_destroy(f->srv);
  pthread_cond_destroy(&f->cv);
  pthread_mutex_destroy(&f->mu);
  free(f);
}

/* Waits until pred holds under f->mu; false after timeout_ms. */
static bool await(fake *f, bool (*pred)(fake *f, int arg), int arg, int timeout_ms) {
  struct timespec deadline = sl_test_deadline_ms(timeout_ms);
  pthread_mutex_lock(&f->mu);
  while (!pred(f, arg) && pthread_cond_timedwait(&f->cv, &f->mu, &deadline) != ETIMEDOUT) {
  }
  bool ok = pred(f, arg);
  pthread_mutex_unlock(&f->mu);
  return ok;
}

static bool finishes(fake *f, int n) { return f->n_fin >= n; }
static bool claims(fake *f, int n) { return f->claims >= n; }

static _Atomic int64_t g_session = SESSION;
static _Atomic int g_session_calls;

static int64_t session_of(void *arg) {
  (void)arg;
  g_session_calls++;
  return g_session;
}

static sl_rerep *worker_start(fake *f, int poll_ms) {
  sl_rerep_opts o = SL_REREP_OPTS_INIT;
  o.target = f->target;
  o.node_id = "bookie-x";
  o.session = session_of;
  o.poll_ms = poll_ms;
  sl_rerep *w = NULL;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_rerep_start(&o, &w, &err);
  if (st != SL_OK) print_error("start: %s\n", sl_err_msg(&err, st));
  assert_int_equal(st, SL_OK);
  return w;
}

/* Gone and not-closed ledgers need nothing: both items end done, one after
 * the other without a pause; then the worker keeps asking. */
static void test_rereplication__settled_items_done(void **state) {
  (void)state;
  g_session = SESSION;
  const uint64_t items[] = {5, 6};
  fake *f = fake_start(items, 2);
  sl_rerep *w = worker_start(f, 60000);
  assert_true(await(f, finishes, 2, (int)sl_test_scaled_ms(10000)));
  assert_true(await(f, claims, 3, (int)sl_test_scaled_ms(10000)));
  sl_rerep_stop(w);
  assert_int_equal(f->fin[0].ledger, 5);
  assert_true(f->fin[0].done);
  assert_int_equal(f->fin[1].ledger, 6);
  assert_true(f->fin[1].done);
  assert_false(f->bad_caller);
  fake_stop(f);
}

/* A failed copy releases its item, and the next claim waits poll_ms. */
static void test_rereplication__failure_releases_and_backs_off(void **state) {
  (void)state;
  g_session = SESSION;
  const uint64_t items[] = {7, 7};
  fake *f = fake_start(items, 2);
  const int poll_ms = 400;
  sl_rerep *w = worker_start(f, poll_ms);
  assert_true(await(f, finishes, 2, (int)sl_test_scaled_ms(10000)));
  sl_rerep_stop(w);
  for (int i = 0; i < 2; i++) {
    assert_int_equal(f->fin[i].ledger, 7);
    assert_false(f->fin[i].done);
  }
  int64_t gap = f->fin[1].at_ms - f->fin[0].at_ms;
  print_message("gap between two failures: %ld ms\n", (long)gap);
  assert_true(gap >= poll_ms);
  fake_stop(f);
}

/* Without a session the worker claims nothing. */
static void test_rereplication__no_session_no_claims(void **state) {
  (void)state;
  g_session = 0;
  g_session_calls = 0;
  const uint64_t items[] = {5};
  fake *f = fake_start(items, 1);
  sl_rerep *w = worker_start(f, 20);
  int64_t deadline = sl_clock_mono_ms() + sl_test_scaled_ms(10000);
  while (g_session_calls < 5 && sl_clock_mono_ms() < deadline) usleep(5000);
  assert_true(g_session_calls >= 5);
  pthread_mutex_lock(&f->mu);
  assert_int_equal(f->claims, 0);
  pthread_mutex_unlock(&f->mu);
  g_session = SESSION; /* a session: the item is taken */
  assert_true(await(f, finishes, 1, (int)sl_test_scaled_ms(10000)));
  sl_rerep_stop(w);
  fake_stop(f);
}

/* Stop wakes a long wait at once. */
static void test_rereplication__stop_is_prompt(void **state) {
  (void)state;
  g_session = SESSION;
  fake *f = fake_start(NULL, 0);
  sl_rerep *w = worker_start(f, 3600000);
  assert_true(await(f, claims, 1, (int)sl_test_scaled_ms(10000)));
  int64_t t0 = sl_clock_mono_ms();
  sl_rerep_stop(w);
  int64_t took = sl_clock_mono_ms() - t0;
  print_message("stop took %ld ms\n", (long)took);
  assert_true(took < sl_test_scaled_ms(2000));
  fake_stop(f);
}

static void test_rereplication__bad_options(void **state) {
  (void)state;
  sl_rerep *w = NULL;
  sl_rerep_opts o = SL_REREP_OPTS_INIT;
  assert_int_equal(sl_rerep_start(&o, &w, NULL), SL_EINVAL);
  o.target = "127.0.0.1:1";
  o.node_id = "b";
  assert_int_equal(sl_rerep_start(&o, &w, NULL), SL_EINVAL); /* no session function */
  o.session = session_of;
  o.poll_ms = -1;
  assert_int_equal(sl_rerep_start(&o, &w, NULL), SL_EINVAL);
  assert_null(w);
  sl_rerep_stop(NULL);
}

static int teardown(void **state) {
  (void)state;
  sl_rpc_wait_shutdown(30000);
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_rereplication__settled_items_done),
      cmocka_unit_test(test_rereplication__failure_releases_and_backs_off),
      cmocka_unit_test(test_rereplication__no_session_no_claims),
      cmocka_unit_test(test_rereplication__stop_is_prompt),
      cmocka_unit_test(test_rereplication__bad_options),
  };
  return cmocka_run_group_tests(tests, NULL, teardown);
}
