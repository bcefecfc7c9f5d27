/*
 * Managed ledger against a real cluster (etcd, metadata service, 4 bookies)
 * with the real ledger client: registration before writing, rollover,
 * positions increasing across ledgers, take-over with recovery that fences
 * the old owner, properties across a reopen, trim by cursors and retention,
 * terminate (during a rollover) and the read-only open after it, bookies
 * dropping what was deleted without them, bad input.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "broker/managed_ledger.h"
#include "common/clock.h"
#include "bookie.slrpc.h"
#include "metadata.slrpc.h"
#include "tests/ledger_testlib.h"
#include "tests/metadata_util.h"
#include "tests/waiter.h"

#define WAIT_MS 30000

/* ---- waiting for callbacks on the managed ledger's serial ---- */

static void opened(sl_status st, const char *details, sl_ml *ml, void *arg) {
  sl_tw_done_out(arg, st, details, ml);
}

static void done_cb(sl_status st, const char *details, void *arg) {
  sl_tw_done(arg, st, details);
}

/* ---- the fixture ---- */

typedef struct fixture {
  sl_lt lt;
  int64_t session_a, session_b;
  mdt_keeper *keep_a, *keep_b;
} fixture;

static int setup(void **state) {
  fixture *f = calloc(1, sizeof(*f));
  static const char *const bookie_args[] = {"--sweep_interval_ms", "300", NULL};
  sl_lt_start(&f->lt, "produce_ml", 4, bookie_args, NULL);
  f->session_a = mdt_open_broker(f->lt.meta, "broker-a", 0);
  f->session_b = mdt_open_broker(f->lt.meta, "broker-b", 0);
  f->keep_a = mdt_keeper_start(f->lt.meta, "broker-a", f->session_a, 500);
  f->keep_b = mdt_keeper_start(f->lt.meta, "broker-b", f->session_b, 500);
  *state = f;
  return 0;
}

/* Managed ledgers open now, by serial: a test that fails leaves its own
 * open (its ml_handle went with its frame), and teardown destroys them
 * before the client they use. */
#define MAX_OPEN 8
static struct open_ml {
  sl_serial *serial;
  sl_ml *ml;
} open_mls[MAX_OPEN];

static void track(sl_serial *serial, sl_ml *ml) {
  for (int i = 0; i < MAX_OPEN; i++)
    if (open_mls[i].serial == NULL) {
      open_mls[i] = (struct open_ml){serial, ml};
      return;
    }
  fail_msg("more than %d managed ledgers open", MAX_OPEN);
}

static void untrack(sl_serial *serial) {
  for (int i = 0; i < MAX_OPEN; i++)
    if (open_mls[i].serial == serial) open_mls[i] = (struct open_ml){NULL, NULL};
}

static void destroy_run(void *arg) { sl_ml_destroy(arg); }

static void destroy_on(sl_serial *serial, sl_ml *ml) {
  if (ml != NULL) sl_tw_run_on(serial, destroy_run, ml);
  /* Let completions cancelled by the destroy drain before the serial goes. */
  sl_tw_run_on(serial, destroy_run, NULL);
  sl_serial_unref(serial);
}

static int teardown(void **state) {
  fixture *f = *state;
  for (int i = 0; i < MAX_OPEN; i++)
    if (open_mls[i].serial != NULL) destroy_on(open_mls[i].serial, open_mls[i].ml);
  mdt_keeper_stop(f->keep_a, NULL);
  mdt_keeper_stop(f->keep_b, NULL);
  sl_lt_stop(&f->lt);
  free(f);
  return 0;
}

static uint64_t acquire(fixture *f, const char *partition, const char *broker,
                        int64_t session) {
  Sluice__V1__AcquireOwnershipResponse *r = mdt_acquire(f->lt.meta, partition, broker, session);
  assert_true(r->acquired);
  uint64_t epoch = r->owner->epoch;
  protobuf_c_message_free_unpacked(&r->base, NULL);
  return epoch;
}

static void release(fixture *f, const char *partition, int64_t session, uint64_t epoch) {
  Sluice__V1__ReleaseOwnershipRequest req = SLUICE__V1__RELEASE_OWNERSHIP_REQUEST__INIT;
  req.partition = (char *)partition;
  req.session_id = session;
  req.epoch = epoch;
  Sluice__V1__ReleaseOwnershipResponse *resp = NULL;
  sl_rpc_call_opts o = mdt_opts(10000);
  sl_err err = SL_ERR_INIT;
  mdt_expect(sl_metadata_service_release_ownership(f->lt.meta, &req, &resp, &o, &err),
             SL_OK, &err);
  protobuf_c_message_free_unpacked(&resp->base, NULL);
}

/* The stored list: ledger ids (at most max) and their entry counts. */
static size_t list_ledgers(fixture *f, const char *partition, uint64_t *ids,
                           int64_t *entries, size_t max) {
  Sluice__V1__GetManagedLedgerRequest req = SLUICE__V1__GET_MANAGED_LEDGER_REQUEST__INIT;
  req.partition = (char *)partition;
  Sluice__V1__ManagedLedgerResponse *resp = NULL;
  sl_rpc_call_opts o = mdt_opts(10000);
  sl_err err = SL_ERR_INIT;
  mdt_expect(sl_metadata_service_get_managed_ledger(f->lt.meta, &req, &resp, &o, &err),
             SL_OK, &err);
  size_t n = resp->info->n_ledgers;
  for (size_t i = 0; i < n && i < max; i++) {
    ids[i] = resp->info->ledgers[i]->ledger_id;
    if (entries != NULL) entries[i] = resp->info->ledgers[i]->entries;
  }
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  return n;
}

typedef struct ml_handle {
  sl_serial *serial;
  sl_ml *ml;
  sl_tw lost;
} ml_handle;

static void lost_cb(sl_ml *ml, sl_status st, const char *details, void *arg) {
  (void)ml;
  sl_tw_done(arg, st, details);
}

static sl_status ml_open(fixture *f, ml_handle *h, const char *partition, uint64_t epoch,
                         const sl_ml_policy *policy, char *details) {
  memset(h, 0, sizeof(*h));
  sl_tw_init(&h->lost);
  assert_int_equal(sl_serial_create(&h->serial, NULL), SL_OK);
  sl_ml_opts o = {0};
  o.ledgers = f->lt.client;
  o.metadata = f->lt.meta;
  o.partition = partition;
  o.epoch = epoch;
  o.serial = h->serial;
  if (policy != NULL) o.policy = *policy;
  else o.policy.trim_interval_ms = -1;
  o.on_lost = lost_cb;
  o.lost_arg = &h->lost;
  sl_tw s;
  sl_tw_init(&s);
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_ml_open_async(&o, opened, &s, &err), SL_OK);
  sl_tw_wait_n(&s, 1, WAIT_MS);
  h->ml = s.out;
  track(h->serial, h->ml);
  if (details != NULL) snprintf(details, 256, "%s", s.details);
  return s.st;
}

static void ml_destroy(ml_handle *h) {
  untrack(h->serial);
  destroy_on(h->serial, h->ml);
  h->ml = NULL;
}

/* Waits until a rollover in progress is over (state WRITING). */
static void wait_writing(ml_handle *h) {
  int64_t end = sl_clock_mono_ms() + WAIT_MS;
  for (;;) {
    sl_ml_stats st;
    sl_ml_stats_get(h->ml, &st);
    if (st.state == SL_ML_WRITING) return;
    if (sl_clock_mono_ms() > end) fail_msg("managed ledger not WRITING: %d", st.state);
    struct timespec ts = {0, 5 * 1000000};
    nanosleep(&ts, NULL);
  }
}

/* ---- appends ---- */

#define MAX_APPENDS 256

typedef struct appends {
  sl_tw s;
  int n;
  sl_status st[MAX_APPENDS];
  sl_ml_pos pos[MAX_APPENDS];
  bool out_of_order;
  int last_cb;
} appends;

typedef struct append_cb_arg {
  appends *a;
  int i;
} append_cb_arg;

static append_cb_arg cb_args[MAX_APPENDS];

static void append_cb(sl_status st, sl_ml_pos pos, void *arg) {
  append_cb_arg *c = arg;
  appends *a = c->a;
  a->st[c->i] = st;
  a->pos[c->i] = pos;
  if (c->i < a->last_cb) a->out_of_order = true;
  a->last_cb = c->i;
  sl_tw_done(&a->s, st, NULL);
}

typedef struct append_job {
  sl_ml *ml;
  appends *a;
  int from, count;
  const char *tag;
  sl_status ret;
} append_job;

static void append_run(void *arg) {
  append_job *j = arg;
  for (int i = j->from; i < j->from + j->count; i++) {
    char data[64];
    int len = snprintf(data, sizeof(data), "%s-%d", j->tag, i);
    cb_args[i].a = j->a;
    cb_args[i].i = i;
    j->ret = sl_ml_append(j->ml, data, (size_t)len, append_cb, &cb_args[i], NULL);
    if (j->ret != SL_OK) return;
    j->a->n++;
  }
}

/* Appends [from, from+count) tagged `tag`, waits for their callbacks. */
static sl_status append_wait(ml_handle *h, appends *a, int from, int count, const char *tag) {
  append_job j = {h->ml, a, from, count, tag, SL_OK};
  sl_tw_run_on(h->serial, append_run, &j);
  sl_tw_wait_n(&a->s, a->n, WAIT_MS);
  return j.ret;
}

/* ---- scanning ---- */

typedef struct scanned {
  sl_tw s;
  int n;
  char data[MAX_APPENDS][64];
  sl_ml_pos pos[MAX_APPENDS];
} scanned;

static void scan_entry(sl_ml_pos pos, const void *data, size_t len, void *arg) {
  scanned *sc = arg;
  if (sc->n < MAX_APPENDS) {
    snprintf(sc->data[sc->n], sizeof(sc->data[0]), "%.*s", (int)len, (const char *)data);
    sc->pos[sc->n] = pos;
  }
  sc->n++;
}

static void scan(fixture *f, const char *partition, scanned *sc) {
  memset(sc, 0, sizeof(*sc));
  sl_tw_init(&sc->s);
  sl_ml_pos from = {0, 0};
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_ml_scan_async(f->lt.client, f->lt.meta, partition, from, NULL,
                                    scan_entry, done_cb, sc, &err),
                   SL_OK);
  sl_tw_wait_n(&sc->s, 1, WAIT_MS);
  assert_int_equal(sc->s.st, SL_OK);
  for (int i = 1; i < sc->n && i < MAX_APPENDS; i++)
    assert_true(sl_ml_pos_cmp(sc->pos[i - 1], sc->pos[i]) < 0);
}

typedef struct close_job {
  sl_ml *ml;
  sl_tw *s;
  sl_status ret;
} close_job;

static void close_run(void *arg) {
  close_job *c = arg;
  c->ret = sl_ml_close_async(c->ml, done_cb, c->s, NULL);
}

static sl_status ml_close(ml_handle *h) {
  sl_tw s;
  sl_tw_init(&s);
  close_job c = {h->ml, &s, SL_OK};
  sl_tw_run_on(h->serial, close_run, &c);
  if (c.ret != SL_OK) return c.ret;
  sl_tw_wait_n(&s, 1, WAIT_MS);
  return s.st;
}

/* ---- cases ---- */

/* The ledger is in the list before anything is written; appends roll over
 * by entry count; positions strictly increase across ledgers; a reader
 * without ownership gets every entry back in order; close records counts. */
static void test_managed_ledger__append_rollover_scan(void **state) {
  fixture *f = *state;
  const char *part = "mlt/rollover";
  uint64_t epoch = acquire(f, part, "broker-a", f->session_a);
  sl_ml_policy pol = {0};
  pol.rollover_entries = 20;
  pol.trim_interval_ms = -1;
  ml_handle h;
  assert_int_equal(ml_open(f, &h, part, epoch, &pol, NULL), SL_OK);

  uint64_t ids[16];
  int64_t entries[16];
  assert_int_equal(list_ledgers(f, part, ids, NULL, 16), 1);
  sl_ml_stats st;
  sl_ml_stats_get(h.ml, &st);
  assert_int_equal(st.state, SL_ML_WRITING);
  assert_int_equal(st.current_ledger, ids[0]);

  static appends a;
  memset(&a, 0, sizeof(a));
  sl_tw_init(&a.s);
  assert_int_equal(append_wait(&h, &a, 0, 50, "r"), SL_OK);
  sl_tw_wait_n(&a.s, 50, WAIT_MS);
  assert_false(a.out_of_order);
  for (int i = 0; i < 50; i++) {
    assert_int_equal(a.st[i], SL_OK);
    if (i > 0) assert_true(sl_ml_pos_cmp(a.pos[i - 1], a.pos[i]) < 0);
  }
  assert_int_equal(a.pos[0].entry_id, 0);
  assert_int_equal(a.pos[20].entry_id, 0);
  assert_true(a.pos[20].ledger_id > a.pos[19].ledger_id);
  wait_writing(&h);
  sl_ml_stats_get(h.ml, &st);
  assert_int_equal(st.rollovers, 2);
  assert_int_equal(st.entries_appended, 50);

  size_t n = list_ledgers(f, part, ids, entries, 16);
  assert_int_equal(n, 3);
  for (size_t i = 1; i < n; i++) assert_true(ids[i] > ids[i - 1]);
  assert_int_equal(entries[0], 20);
  assert_int_equal(entries[1], 20);

  /* Close first: a reader of an open ledger sees only what bookies know
   * to be confirmed. */
  assert_int_equal(ml_close(&h), SL_OK);
  static scanned sc;
  scan(f, part, &sc);
  assert_int_equal(sc.n, 50);
  for (int i = 0; i < 50; i++) {
    char want[64];
    snprintf(want, sizeof(want), "r-%d", i);
    assert_string_equal(sc.data[i], want);
    assert_int_equal(sc.pos[i].ledger_id, a.pos[i].ledger_id);
    assert_int_equal(sc.pos[i].entry_id, a.pos[i].entry_id);
  }

  n = list_ledgers(f, part, ids, entries, 16);
  assert_int_equal(entries[n - 1], 10);
  sl_ml_stats_get(h.ml, &st);
  assert_int_equal(st.state, SL_ML_CLOSED);
  ml_destroy(&h);
}

/* A bookie of the current ledger fails: the ledger replaces it (ensemble
 * change) and then rolls over, so that it is CLOSED and auto-recovery can
 * give its older entries their second copy back, not hours later at the
 * age limit. Every append succeeds, in order. */
static void test_managed_ledger__ensemble_change_rolls_over(void **state) {
  fixture *f = *state;
  const char *part = "mlt/ensemble-change";
  uint64_t epoch = acquire(f, part, "broker-a", f->session_a);
  sl_ml_policy pol = {0};
  pol.trim_interval_ms = -1;
  ml_handle h;
  assert_int_equal(ml_open(f, &h, part, epoch, &pol, NULL), SL_OK);
  static appends a;
  memset(&a, 0, sizeof(a));
  sl_tw_init(&a.s);
  assert_int_equal(append_wait(&h, &a, 0, 10, "e"), SL_OK);
  uint64_t ids[16];
  assert_int_equal(list_ledgers(f, part, ids, NULL, 16), 1);
  Sluice__V1__LedgerResponse *r = mdt_get_ledger(f->lt.meta, ids[0]);
  int victim = sl_lt_bookie_index(&f->lt, r->info->ensembles[0]->bookie_ids[0]);
  protobuf_c_message_free_unpacked(&r->base, NULL);

  sl_lt_stop_bookie(&f->lt, victim);
  assert_int_equal(append_wait(&h, &a, 10, 10, "e"), SL_OK);
  wait_writing(&h);
  assert_int_equal(append_wait(&h, &a, 20, 1, "e"), SL_OK);
  assert_false(a.out_of_order);
  for (int i = 0; i < 21; i++) assert_int_equal(a.st[i], SL_OK);
  int64_t entries[16];
  size_t n = list_ledgers(f, part, ids, entries, 16);
  sl_ml_stats st;
  sl_ml_stats_get(h.ml, &st);
  assert_int_equal(st.rollovers, 1);
  assert_int_equal(n, 2);
  assert_true(entries[0] >= 11); /* the change came with the first append after the stop */
  r = mdt_get_ledger(f->lt.meta, ids[0]);
  assert_int_equal(r->info->state, SLUICE__V1__LEDGER_STATE__LEDGER_STATE_CLOSED);
  assert_int_equal(r->info->n_ensembles, 2);
  protobuf_c_message_free_unpacked(&r->base, NULL);
  assert_int_equal(a.pos[20].ledger_id, ids[1]);
  sl_lt_restart_bookie(&f->lt, victim);
  assert_int_equal(ml_close(&h), SL_OK);
  ml_destroy(&h);
}

/* An idle partition's ledger reaches the age limit too: the trim timer
 * rolls it over without an append. */
static void test_managed_ledger__idle_ledger_rolls_at_age(void **state) {
  fixture *f = *state;
  const char *part = "mlt/idle-age";
  uint64_t epoch = acquire(f, part, "broker-a", f->session_a);
  sl_ml_policy pol = {0};
  pol.rollover_ms = 300;
  pol.trim_interval_ms = 100;
  pol.retention_ms = -1; /* no cursors: trim would take the closed ledger */
  pol.retention_bytes = -1;
  ml_handle h;
  assert_int_equal(ml_open(f, &h, part, epoch, &pol, NULL), SL_OK);
  static appends a;
  memset(&a, 0, sizeof(a));
  sl_tw_init(&a.s);
  assert_int_equal(append_wait(&h, &a, 0, 1, "i"), SL_OK);
  assert_int_equal(a.st[0], SL_OK);
  int64_t deadline = sl_clock_mono_ms() + WAIT_MS;
  sl_ml_stats st;
  do {
    if (sl_clock_mono_ms() > deadline) fail_msg("no rollover of the idle ledger");
    struct timespec ts = {0, 20 * 1000000};
    nanosleep(&ts, NULL);
    sl_ml_stats_get(h.ml, &st);
  } while (st.rollovers == 0 || st.state != SL_ML_WRITING);
  uint64_t ids[16];
  int64_t entries[16];
  assert_int_equal(list_ledgers(f, part, ids, entries, 16), 2);
  assert_int_equal(entries[0], 1);
  assert_int_equal(st.current_ledger, ids[1]);
  assert_int_equal(ml_close(&h), SL_OK);
  ml_destroy(&h);
}

/* ---- terminate ---- */

typedef struct term_job {
  ml_handle *h;
  appends *a;
  int appends;                /* before the terminate, in the same job */
  sl_tw s;
  sl_ml_pos last;
  sl_status ret, append_ret;
  bool terminated;
} term_job;

static void terminated_cb(sl_status st, const char *details, sl_ml_pos last, void *arg) {
  term_job *j = arg;
  j->last = last;
  sl_tw_done(&j->s, st, details);
}

static void term_run(void *arg) {
  term_job *j = arg;
  if (j->appends > 0) {
    append_job aj = {j->h->ml, j->a, 0, j->appends, "t", SL_OK};
    append_run(&aj);
    assert_int_equal(aj.ret, SL_OK);
  }
  j->ret = sl_ml_terminate_async(j->h->ml, terminated_cb, j, NULL);
}

/* Terminates (after `appends` appends in the same serial item) and waits. */
static void terminate(ml_handle *h, appends *a, int appends, term_job *j) {
  memset(j, 0, sizeof(*j));
  sl_tw_init(&j->s);
  j->h = h;
  j->a = a;
  j->appends = appends;
  sl_tw_run_on(h->serial, term_run, j);
  assert_int_equal(j->ret, SL_OK);
  sl_tw_wait_n(&j->s, 1, WAIT_MS);
  assert_int_equal(j->s.st, SL_OK);
}

static void probe_run(void *arg) {
  term_job *j = arg;
  j->terminated = sl_ml_terminated(j->h->ml);
  j->append_ret = sl_ml_append(j->h->ml, "x", 1, append_cb, &cb_args[0], NULL);
}

static bool stored_terminated(fixture *f, const char *partition) {
  Sluice__V1__GetManagedLedgerRequest req = SLUICE__V1__GET_MANAGED_LEDGER_REQUEST__INIT;
  req.partition = (char *)partition;
  Sluice__V1__ManagedLedgerResponse *resp = NULL;
  sl_rpc_call_opts o = mdt_opts(10000);
  sl_err err = SL_ERR_INIT;
  mdt_expect(sl_metadata_service_get_managed_ledger(f->lt.meta, &req, &resp, &o, &err),
             SL_OK, &err);
  bool t = resp->info->terminated;
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  return t;
}

typedef struct read_job {
  sl_ml *ml;
  scanned *sc;
  sl_status ret;
} read_job;

static void read_run(void *arg) {
  read_job *r = arg;
  sl_ml_pos from = {0, 0};
  r->ret = sl_ml_read_async(r->ml, from, scan_entry, done_cb, r->sc, NULL);
}

/* A terminate that comes while a rollover runs waits for it; the stored
 * list is terminated with every ledger closed; appends are refused; a new
 * owner opens it read-only (no recovery, no new ledger) and reads it all. */
static void test_managed_ledger__terminate_then_read_only(void **state) {
  fixture *f = *state;
  const char *part = "mlt/terminate";
  uint64_t e1 = acquire(f, part, "broker-a", f->session_a);
  sl_ml_policy pol = {0};
  pol.rollover_entries = 10;
  pol.trim_interval_ms = -1;
  ml_handle h;
  assert_int_equal(ml_open(f, &h, part, e1, &pol, NULL), SL_OK);
  static appends a;
  memset(&a, 0, sizeof(a));
  sl_tw_init(&a.s);
  term_job j;
  terminate(&h, &a, 10, &j); /* the 10th append starts a rollover */
  sl_tw_wait_n(&a.s, 10, WAIT_MS);
  for (int i = 0; i < 10; i++) assert_int_equal(a.st[i], SL_OK);
  assert_int_equal(j.last.ledger_id, a.pos[9].ledger_id);
  assert_int_equal(j.last.entry_id, 9);
  sl_ml_stats st;
  sl_ml_stats_get(h.ml, &st);
  assert_int_equal(st.state, SL_ML_CLOSED);
  assert_int_equal(st.rollovers, 1);
  assert_true(stored_terminated(f, part));
  uint64_t ids[8];
  int64_t entries[8];
  assert_int_equal(list_ledgers(f, part, ids, entries, 8), 2);
  assert_int_equal(entries[0], 10);
  assert_int_equal(entries[1], 0); /* the rollover's ledger, closed empty */

  sl_tw_run_on(h.serial, probe_run, &j);
  assert_true(j.terminated);
  assert_int_equal(j.append_ret, SL_EPRECOND);
  term_job again;
  terminate(&h, &a, 0, &again);
  assert_int_equal(again.last.ledger_id, j.last.ledger_id);
  assert_int_equal(again.last.entry_id, 9);
  ml_destroy(&h);

  release(f, part, f->session_a, e1);
  uint64_t e2 = acquire(f, part, "broker-b", f->session_b);
  assert_int_equal(ml_open(f, &h, part, e2, &pol, NULL), SL_OK);
  sl_ml_stats_get(h.ml, &st);
  assert_int_equal(st.state, SL_ML_CLOSED);
  assert_int_equal(st.last_confirmed.ledger_id, j.last.ledger_id);
  assert_int_equal(st.last_confirmed.entry_id, 9);
  assert_int_equal(list_ledgers(f, part, ids, entries, 8), 2); /* nothing added */
  term_job probe = {.h = &h};
  sl_tw_run_on(h.serial, probe_run, &probe);
  assert_true(probe.terminated);
  assert_int_equal(probe.append_ret, SL_EPRECOND);
  static scanned sc;
  memset(&sc, 0, sizeof(sc));
  sl_tw_init(&sc.s);
  read_job r = {h.ml, &sc, SL_OK};
  sl_tw_run_on(h.serial, read_run, &r);
  assert_int_equal(r.ret, SL_OK);
  sl_tw_wait_n(&sc.s, 1, WAIT_MS);
  assert_int_equal(sc.s.st, SL_OK);
  assert_int_equal(sc.n, 10);
  assert_string_equal(sc.data[9], "t-9");
  terminate(&h, &a, 0, &again);
  assert_int_equal(again.last.entry_id, 9);
  ml_destroy(&h);
}

/* A new owner recovers the old owner's open ledger (fencing it): the old
 * owner's next append fails with SL_EFENCED and it is told it lost the
 * partition; every entry the old owner had acked is in the log, followed by
 * the new owner's, positions still increasing. */
static void test_managed_ledger__takeover_fences_old_owner(void **state) {
  fixture *f = *state;
  const char *part = "mlt/takeover";
  uint64_t e1 = acquire(f, part, "broker-a", f->session_a);
  ml_handle ha;
  assert_int_equal(ml_open(f, &ha, part, e1, NULL, NULL), SL_OK);
  static appends a;
  memset(&a, 0, sizeof(a));
  sl_tw_init(&a.s);
  append_wait(&ha, &a, 0, 10, "a");
  sl_tw_wait_n(&a.s, 10, WAIT_MS);
  for (int i = 0; i < 10; i++) assert_int_equal(a.st[i], SL_OK);

  release(f, part, f->session_a, e1);
  uint64_t e2 = acquire(f, part, "broker-b", f->session_b);
  assert_true(e2 > e1);
  ml_handle hb;
  assert_int_equal(ml_open(f, &hb, part, e2, NULL, NULL), SL_OK);
  sl_ml_stats st;
  sl_ml_stats_get(hb.ml, &st);
  assert_int_equal(st.recovered_entries, 10);
  assert_int_equal(st.last_confirmed.ledger_id, a.pos[9].ledger_id);
  assert_int_equal(st.last_confirmed.entry_id, 9);

  /* The old owner is fenced on its next write. */
  append_wait(&ha, &a, 10, 1, "a");
  sl_tw_wait_n(&a.s, 11, WAIT_MS);
  assert_int_equal(a.st[10], SL_EFENCED);
  sl_tw_wait_n(&ha.lost, 1, WAIT_MS);
  assert_true(ha.lost.st == SL_EFENCED || ha.lost.st == SL_ESTALE_EPOCH);
  sl_ml_stats_get(ha.ml, &st);
  assert_int_equal(st.state, SL_ML_FENCED);

  static appends b;
  memset(&b, 0, sizeof(b));
  sl_tw_init(&b.s);
  append_wait(&hb, &b, 0, 5, "b");
  sl_tw_wait_n(&b.s, 5, WAIT_MS);
  for (int i = 0; i < 5; i++) {
    assert_int_equal(b.st[i], SL_OK);
    assert_true(sl_ml_pos_cmp(a.pos[9], b.pos[i]) < 0);
  }
  /* While B writes, a reader sees A's entries and at most B's confirmed
   * ones; once B closed, everything. */
  static scanned sc;
  scan(f, part, &sc);
  assert_true(sc.n >= 10 && sc.n <= 15);
  assert_string_equal(sc.data[9], "a-9");
  assert_int_equal(ml_close(&hb), SL_OK);
  scan(f, part, &sc);
  assert_int_equal(sc.n, 15);
  assert_string_equal(sc.data[9], "a-9");
  assert_string_equal(sc.data[10], "b-0");
  assert_string_equal(sc.data[14], "b-4");

  /* The old owner cannot come back with its epoch. */
  ml_handle hc;
  char details[256];
  assert_int_not_equal(ml_open(f, &hc, part, e1, NULL, details), SL_OK);
  ml_destroy(&hc);
  ml_destroy(&ha);
  ml_destroy(&hb);
}

typedef struct props_job {
  sl_ml *ml;
  const char *prefix;
  const sl_ml_prop *props;
  size_t n;
  sl_tw *s;
  sl_status ret;
} props_job;

static void props_run(void *arg) {
  props_job *j = arg;
  j->ret = sl_ml_set_properties(j->ml, j->prefix, j->props, j->n, done_cb, j->s, NULL);
}

static const char *prop(sl_ml *ml, const char *key) {
  const sl_ml_prop *p;
  size_t n = sl_ml_properties(ml, &p);
  for (size_t i = 0; i < n; i++)
    if (strcmp(p[i].key, key) == 0) return p[i].value;
  return NULL;
}

/* Properties are written with the list and read back by the next open;
 * a prefix replaces only its own keys. */
static void test_managed_ledger__properties_survive_reopen(void **state) {
  fixture *f = *state;
  const char *part = "mlt/props";
  uint64_t e1 = acquire(f, part, "broker-a", f->session_a);
  ml_handle h;
  assert_int_equal(ml_open(f, &h, part, e1, NULL, NULL), SL_OK);
  sl_tw s;
  sl_tw_init(&s);
  sl_ml_prop first[] = {{"dedup:p1", "5"}, {"other", "keep"}};
  props_job j = {h.ml, "", first, 2, &s, SL_OK};
  sl_tw_run_on(h.serial, props_run, &j);
  assert_int_equal(j.ret, SL_OK);
  sl_ml_prop second[] = {{"dedup:p2", "7 1 2 3"}};
  props_job k = {h.ml, "dedup", second, 1, &s, SL_OK};
  sl_tw_run_on(h.serial, props_run, &k);
  assert_int_equal(k.ret, SL_OK);
  sl_tw_wait_n(&s, 2, WAIT_MS);
  assert_int_equal(s.st, SL_OK);
  assert_int_equal(ml_close(&h), SL_OK);
  ml_destroy(&h);

  release(f, part, f->session_a, e1);
  uint64_t e2 = acquire(f, part, "broker-b", f->session_b);
  assert_int_equal(ml_open(f, &h, part, e2, NULL, NULL), SL_OK);
  assert_null(prop(h.ml, "dedup:p1"));
  assert_string_equal(prop(h.ml, "dedup:p2"), "7 1 2 3");
  assert_string_equal(prop(h.ml, "other"), "keep");
  ml_destroy(&h);
}

/* Writes a cursor (expected: its version, 0 = new); returns the new version. */
static int64_t update_cursor(fixture *f, const char *part, const char *sub, sl_ml_pos md,
                             uint64_t epoch, int64_t expected) {
  Sluice__V1__Position pos = SLUICE__V1__POSITION__INIT;
  pos.ledger_id = md.ledger_id;
  pos.entry_id = md.entry_id;
  Sluice__V1__CursorInfo c = SLUICE__V1__CURSOR_INFO__INIT;
  c.partition = (char *)part;
  c.subscription = (char *)sub;
  c.mark_delete = &pos;
  Sluice__V1__UpdateCursorRequest req = SLUICE__V1__UPDATE_CURSOR_REQUEST__INIT;
  req.info = &c;
  req.epoch = epoch;
  req.expected_version = expected;
  Sluice__V1__CursorResponse *resp = NULL;
  sl_rpc_call_opts o = mdt_opts(10000);
  sl_err err = SL_ERR_INIT;
  mdt_expect(sl_metadata_service_update_cursor(f->lt.meta, &req, &resp, &o, &err), SL_OK,
             &err);
  int64_t version = resp->version;
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  return version;
}

typedef struct trim_job {
  sl_ml *ml;
  sl_tw *s;
  sl_status ret;
} trim_job;

static void trim_run(void *arg) {
  trim_job *j = arg;
  j->ret = sl_ml_trim_async(j->ml, done_cb, j->s, NULL);
}

/* Runs a trim pass and returns what its callback said. */
static sl_status trim_status(ml_handle *h) {
  sl_tw s;
  sl_tw_init(&s);
  trim_job j = {h->ml, &s, SL_OK};
  sl_tw_run_on(h->serial, trim_run, &j);
  assert_int_equal(j.ret, SL_OK);
  sl_tw_wait_n(&s, 1, WAIT_MS);
  return s.st;
}

static void trim(ml_handle *h) { assert_int_equal(trim_status(h), SL_OK); }

/* Opens the partition (epoch e) with 5 entries per ledger, trim only when
 * asked and no retention, then appends `count` entries tagged `tag` into *a
 * and waits until they are written and the ledger after them is open. */
static void open_rolled(fixture *f, ml_handle *h, const char *part, uint64_t e, appends *a,
                        int count, const char *tag) {
  sl_ml_policy pol = {0};
  pol.rollover_entries = 5;
  pol.retention_ms = 0;
  pol.retention_bytes = -1;
  pol.trim_interval_ms = -1;
  assert_int_equal(ml_open(f, h, part, e, &pol, NULL), SL_OK);
  memset(a, 0, sizeof(*a));
  sl_tw_init(&a->s);
  append_wait(h, a, 0, count, tag);
  sl_tw_wait_n(&a->s, count, WAIT_MS);
  wait_writing(h);
}

/* Without retention, ledgers every cursor has passed go (list first, then
 * their metadata); the slowest cursor holds the rest; the current ledger
 * always stays. */
static void test_managed_ledger__trim_follows_slowest_cursor(void **state) {
  fixture *f = *state;
  const char *part = "mlt/trim";
  uint64_t e = acquire(f, part, "broker-a", f->session_a);
  ml_handle h;
  static appends a;
  open_rolled(f, &h, part, e, &a, 20, "t");
  uint64_t ids[16];
  size_t n = list_ledgers(f, part, ids, NULL, 16);
  assert_true(n >= 4);

  /* Slow cursor at the end of the second ledger, fast one at the end. */
  int64_t slow = update_cursor(f, part, "slow", a.pos[9], e, 0);
  update_cursor(f, part, "fast", a.pos[19], e, 0);
  trim(&h);
  uint64_t after[16];
  size_t m = list_ledgers(f, part, after, NULL, 16);
  assert_int_equal(m, n - 2);
  assert_int_equal(after[0], a.pos[10].ledger_id);
  sl_ml_stats st;
  sl_ml_stats_get(h.ml, &st);
  assert_int_equal(st.ledgers_trimmed, 2);

  /* Everyone at the end: all but the current ledger go. */
  update_cursor(f, part, "slow", a.pos[19], e, slow);
  trim(&h);
  m = list_ledgers(f, part, after, NULL, 16);
  assert_int_equal(m, 1);
  sl_ml_stats_get(h.ml, &st);
  assert_int_equal(after[0], st.current_ledger);
  ml_destroy(&h);
}

/* ---- what the bookies and the metadata hold ---- */

/* The bookie indexes of every ensemble of a ledger (each once); n is set. */
static void ledger_bookies(fixture *f, uint64_t ledger, int *out, size_t *n) {
  Sluice__V1__GetLedgerRequest req = SLUICE__V1__GET_LEDGER_REQUEST__INIT;
  req.ledger_id = ledger;
  Sluice__V1__LedgerResponse *r = NULL;
  sl_rpc_call_opts o = mdt_opts(10000);
  sl_err err = SL_ERR_INIT;
  mdt_expect(sl_metadata_service_get_ledger(f->lt.meta, &req, &r, &o, &err), SL_OK, &err);
  *n = 0;
  for (size_t s = 0; s < r->info->n_ensembles; s++)
    for (size_t k = 0; k < r->info->ensembles[s]->n_bookie_ids; k++) {
      int i = sl_lt_bookie_index(&f->lt, r->info->ensembles[s]->bookie_ids[k]);
      assert_true(i >= 0);
      bool seen = false;
      for (size_t j = 0; j < *n; j++) seen |= out[j] == i;
      if (!seen) out[(*n)++] = i;
    }
  protobuf_c_message_free_unpacked(&r->base, NULL);
}

static sl_status ledger_meta_status(fixture *f, uint64_t ledger) {
  Sluice__V1__GetLedgerRequest req = SLUICE__V1__GET_LEDGER_REQUEST__INIT;
  req.ledger_id = ledger;
  Sluice__V1__LedgerResponse *r = NULL;
  sl_rpc_call_opts o = mdt_opts(10000);
  sl_status st = sl_metadata_service_get_ledger(f->lt.meta, &req, &r, &o, NULL);
  if (r != NULL) protobuf_c_message_free_unpacked(&r->base, NULL);
  return st;
}

/* ReadEntry(ledger, entry) on bookie i: the call's status, *found set. */
static sl_status bookie_read(fixture *f, int i, uint64_t ledger, int64_t entry, bool *found) {
  sl_rpc_channel_opts co = {.target = sl_cluster_addr(f->lt.cluster, SL_NODE_BOOKIE, i)};
  sl_rpc_channel *ch = NULL;
  assert_int_equal(sl_rpc_channel_create(&co, &ch, NULL), SL_OK);
  Sluice__V1__ReadEntryRequest req = SLUICE__V1__READ_ENTRY_REQUEST__INIT;
  req.ledger_id = ledger;
  req.entry_id = entry;
  Sluice__V1__ReadEntryResponse *r = NULL;
  sl_rpc_call_opts o = mdt_opts(10000);
  sl_status st = sl_bookie_service_read_entry(ch, &req, &r, &o, NULL);
  *found = st == SL_OK && r->found;
  if (r != NULL) protobuf_c_message_free_unpacked(&r->base, NULL);
  sl_rpc_channel_destroy(ch);
  return st;
}

/* Entries stored on bookie i (GetInfo). */
static uint64_t bookie_entries(fixture *f, int i) {
  sl_rpc_channel_opts co = {.target = sl_cluster_addr(f->lt.cluster, SL_NODE_BOOKIE, i)};
  sl_rpc_channel *ch = NULL;
  assert_int_equal(sl_rpc_channel_create(&co, &ch, NULL), SL_OK);
  Sluice__V1__GetInfoRequest req = SLUICE__V1__GET_INFO_REQUEST__INIT;
  Sluice__V1__GetInfoResponse *r = NULL;
  sl_rpc_call_opts o = mdt_opts(10000);
  sl_err err = SL_ERR_INIT;
  mdt_expect(sl_bookie_service_get_info(ch, &req, &r, &o, &err), SL_OK, &err);
  uint64_t n = r->entry_count;
  protobuf_c_message_free_unpacked(&r->base, NULL);
  sl_rpc_channel_destroy(ch);
  return n;
}

/* The list's "trim:deleting" mark, copied into buf ("" when absent). */
static void trim_mark(fixture *f, const char *partition, char *buf, size_t cap) {
  Sluice__V1__GetManagedLedgerRequest req = SLUICE__V1__GET_MANAGED_LEDGER_REQUEST__INIT;
  req.partition = (char *)partition;
  Sluice__V1__ManagedLedgerResponse *resp = NULL;
  sl_rpc_call_opts o = mdt_opts(10000);
  sl_err err = SL_ERR_INIT;
  mdt_expect(sl_metadata_service_get_managed_ledger(f->lt.meta, &req, &resp, &o, &err),
             SL_OK, &err);
  buf[0] = '\0';
  for (size_t i = 0; i < resp->info->n_properties; i++)
    if (strcmp(resp->info->properties[i]->key, "trim:deleting") == 0)
      snprintf(buf, cap, "%s", resp->info->properties[i]->value);
  protobuf_c_message_free_unpacked(&resp->base, NULL);
}

/* A trimmed ledger leaves the bookies too: every bookie of its ensemble
 * answers DELETED (a tombstone) and stores fewer entries, and its metadata
 * is gone. A bookie that cannot delete (SIGSTOPped) keeps the ledger's
 * metadata and its id in the list's mark, and the next pass finishes the
 * job: the state a crash between the steps would leave. */
static void test_managed_ledger__trim_deletes_bookie_data(void **state) {
  fixture *f = *state;
  const char *part = "mlt/trimdata";
  uint64_t e = acquire(f, part, "broker-a", f->session_a);
  ml_handle h;
  static appends a;
  open_rolled(f, &h, part, e, &a, 15, "d");
  uint64_t first = a.pos[0].ledger_id, second = a.pos[5].ledger_id;
  assert_true(first < second && second < a.pos[10].ledger_id);
  int nb = sl_cluster_count(f->lt.cluster, SL_NODE_BOOKIE);
  uint64_t before[8];
  for (int i = 0; i < nb; i++) before[i] = bookie_entries(f, i);
  int ens[8];
  size_t n_ens = 0;
  ledger_bookies(f, first, ens, &n_ens);
  bool found = false;
  assert_int_equal(bookie_read(f, ens[0], first, 0, &found), SL_OK);
  assert_true(found);

  /* First pass: only the first ledger is passed. */
  int64_t cv = update_cursor(f, part, "c", a.pos[4], e, 0);
  trim(&h);
  assert_int_equal(ledger_meta_status(f, first), SL_EDELETED);
  uint64_t removed = 0;
  for (size_t k = 0; k < n_ens; k++) {
    for (int64_t en = 0; en < 5; en++) {
      bool got = true;
      assert_int_equal(bookie_read(f, ens[k], first, en, &got), SL_EDELETED);
      assert_false(got);
    }
  }
  for (int i = 0; i < nb; i++) {
    uint64_t now = bookie_entries(f, i);
    assert_true(now <= before[i]);
    removed += before[i] - now;
  }
  /* Each of the 5 entries was on Qw = 2 bookies. */
  assert_int_equal(removed, 10);
  char mark[128];
  trim_mark(f, part, mark, sizeof(mark));
  assert_string_equal(mark, "");
  sl_ml_stats st;
  sl_ml_stats_get(h.ml, &st);
  assert_int_equal(st.ledgers_trimmed, 1);
  assert_int_equal(st.ledgers_deleted, 1);

  /* Second pass with a bookie of the second ledger stopped: it leaves the
   * list, but its metadata and the mark stay until the bookie answers. */
  ledger_bookies(f, second, ens, &n_ens);
  sl_lt_signal_bookie(&f->lt, ens[0], SIGSTOP);
  update_cursor(f, part, "c", a.pos[9], e, cv);
  sl_status ts = trim_status(&h);
  sl_lt_signal_bookie(&f->lt, ens[0], SIGCONT);
  assert_int_not_equal(ts, SL_OK);
  uint64_t ids[16];
  size_t m = list_ledgers(f, part, ids, NULL, 16);
  assert_true(m >= 1);
  assert_true(ids[0] > second);
  assert_int_equal(ledger_meta_status(f, second), SL_OK);
  trim_mark(f, part, mark, sizeof(mark));
  char want[32];
  snprintf(want, sizeof(want), "%llu", (unsigned long long)second);
  assert_string_equal(mark, want);

  sl_lt_wait_registered(&f->lt, ens[0], WAIT_MS);
  trim(&h);
  assert_int_equal(ledger_meta_status(f, second), SL_EDELETED);
  for (size_t k = 0; k < n_ens; k++) {
    bool got = true;
    assert_int_equal(bookie_read(f, ens[k], second, 0, &got), SL_EDELETED);
  }
  trim_mark(f, part, mark, sizeof(mark));
  assert_string_equal(mark, "");
  sl_ml_stats_get(h.ml, &st);
  assert_int_equal(st.ledgers_trimmed, 2);
  assert_int_equal(st.ledgers_deleted, 2);

  /* Deleting again (a re-run after a crash past the metadata delete) is a
   * no-op that succeeds. */
  sl_tw again;
  sl_tw_init(&again);
  sl_ledger_delete_opts dopt = {e, NULL};
  assert_int_equal(sl_ledger_delete_async(f->lt.client, first, &dopt, done_cb, &again, NULL),
                   SL_OK);
  sl_tw_wait_n(&again, 1, WAIT_MS);
  assert_int_equal(again.st, SL_OK);
  ml_destroy(&h);
}

/* Bookies drop what the metadata service deleted without them (each
 * bookie's sweep, set to run every 300 ms in setup):
 *  - a bookie whose session had lapsed when its ledger was trimmed: the
 *    broker skips it and deletes the metadata, and the bookie comes back
 *    with its copy;
 *  - every bookie of a deleted topic, whose ledgers the metadata service
 *    only tombstones. */
static void test_managed_ledger__sweep_drops_deleted_ledgers(void **state) {
  fixture *f = *state;
  const char *part = "mlt/sweep";
  uint64_t e = acquire(f, part, "broker-a", f->session_a);
  ml_handle h;
  static appends a;
  open_rolled(f, &h, part, e, &a, 12, "s");
  uint64_t first = a.pos[0].ledger_id, second = a.pos[5].ledger_id,
           third = a.pos[10].ledger_id;
  assert_true(first < second && second < third);
  int ens[8];
  size_t n_ens = 0;
  ledger_bookies(f, first, ens, &n_ens);
  int away = ens[0];
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_cluster_kill9(f->lt.cluster, SL_NODE_BOOKIE, away, &err), SL_OK);
  sl_lt_wait_gone(&f->lt, away, WAIT_MS);
  update_cursor(f, part, "c", a.pos[4], e, 0);
  trim(&h);
  assert_int_equal(ledger_meta_status(f, first), SL_EDELETED);
  assert_int_equal(sl_cluster_restart(f->lt.cluster, SL_NODE_BOOKIE, away, &err), SL_OK);
  sl_lt_wait_registered(&f->lt, away, WAIT_MS);
  sl_lt_await_dropped(&f->lt, away, first, WAIT_MS);

  int later[16];
  size_t n_later = 0, n3 = 0;
  ledger_bookies(f, second, later, &n_later);
  ledger_bookies(f, third, later + n_later, &n3);
  n_later += n3;
  Sluice__V1__DeleteTopicRequest dt = SLUICE__V1__DELETE_TOPIC_REQUEST__INIT;
  dt.name = (char *)part;
  Sluice__V1__DeleteTopicResponse *dr = NULL;
  sl_rpc_call_opts o = mdt_opts(10000);
  mdt_expect(sl_metadata_service_delete_topic(f->lt.meta, &dt, &dr, &o, &err), SL_OK, &err);
  protobuf_c_message_free_unpacked(&dr->base, NULL);
  assert_int_equal(ledger_meta_status(f, second), SL_EDELETED);
  assert_int_equal(ledger_meta_status(f, third), SL_EDELETED);
  for (size_t k = 0; k < n_later; k++)
    sl_lt_await_dropped(&f->lt, later[k], k < n_later - n3 ? second : third, WAIT_MS);
  ml_destroy(&h);
}

/* Bad options, appends after close, a stale epoch: clear statuses. */
static void test_managed_ledger__bad_input(void **state) {
  fixture *f = *state;
  sl_err err = SL_ERR_INIT;
  sl_ml_opts o = {0};
  assert_int_equal(sl_ml_open_async(NULL, opened, NULL, &err), SL_EINVAL);
  assert_int_equal(sl_ml_open_async(&o, opened, NULL, &err), SL_EINVAL);
  assert_non_null(strstr(err.msg, "missing option"));
  /* Deleting a ledger needs a ledger id and an epoch. */
  sl_ledger_delete_opts dopt = {0, NULL};
  assert_int_equal(sl_ledger_delete_async(f->lt.client, 7, &dopt, done_cb, NULL, &err),
                   SL_EINVAL);
  dopt.epoch = 1;
  assert_int_equal(sl_ledger_delete_async(f->lt.client, 0, &dopt, done_cb, NULL, &err),
                   SL_EINVAL);

  const char *part = "mlt/bad";
  uint64_t e = acquire(f, part, "broker-a", f->session_a);
  ml_handle h;
  /* An epoch that is not the partition's: the metadata service refuses. */
  char details[256];
  sl_status st = ml_open(f, &h, part, e + 100, NULL, details);
  assert_int_not_equal(st, SL_OK);
  assert_null(h.ml);
  ml_destroy(&h);

  assert_int_equal(ml_open(f, &h, part, e, NULL, NULL), SL_OK);
  assert_int_equal(ml_close(&h), SL_OK);
  assert_int_equal(ml_close(&h), SL_EPRECOND);
  static appends a;
  memset(&a, 0, sizeof(a));
  sl_tw_init(&a.s);
  assert_int_equal(append_wait(&h, &a, 0, 1, "x"), SL_EPRECOND);
  ml_destroy(&h);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_managed_ledger__append_rollover_scan),
      cmocka_unit_test(test_managed_ledger__takeover_fences_old_owner),
      cmocka_unit_test(test_managed_ledger__properties_survive_reopen),
      cmocka_unit_test(test_managed_ledger__trim_follows_slowest_cursor),
      cmocka_unit_test(test_managed_ledger__trim_deletes_bookie_data),
      cmocka_unit_test(test_managed_ledger__sweep_drops_deleted_ledgers),
      cmocka_unit_test(test_managed_ledger__terminate_then_read_only),
      cmocka_unit_test(test_managed_ledger__ensemble_change_rolls_over),
      cmocka_unit_test(test_managed_ledger__idle_ledger_rolls_at_age),
      cmocka_unit_test(test_managed_ledger__bad_input),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
