/*
 * sl_entry_log_sync against a controlled fdatasync: the test links with
 * --wrap=fdatasync, so the entry log's calls land in __wrap_fdatasync, which
 * can hold a call at a gate or fail it. A power loss cannot be staged here;
 * what can be seen is the order of returns against the fdatasyncs behind
 * them, which is what invariant 2 promises.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bookie/entry_log.h"
#include "bookie/testing/test_util.h"
#include "common/crc32c.h"
#include "common/testing.h"

int __real_fdatasync(int fd);
int __wrap_fdatasync(int fd);

static struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool hold_next;  /* the next call waits at the gate */
  bool held;       /* a call is waiting at the gate */
  bool open;       /* the gate let it through */
  int fail_next;   /* errno for the next call; 0 = none */
  int calls;
} fake = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

int __wrap_fdatasync(int fd) {
  pthread_mutex_lock(&fake.mu);
  fake.calls++;
  int fail = fake.fail_next;
  fake.fail_next = 0;
  if (fake.hold_next) {
    fake.hold_next = false;
    fake.held = true;
    pthread_cond_broadcast(&fake.cv);
    while (!fake.open) pthread_cond_wait(&fake.cv, &fake.mu);
  }
  pthread_mutex_unlock(&fake.mu);
  if (fail != 0) {
    errno = fail;
    return -1;
  }
  return __real_fdatasync(fd);
}

static void fake_reset(void) {
  pthread_mutex_lock(&fake.mu);
  fake.hold_next = fake.held = fake.open = false;
  fake.fail_next = 0;
  fake.calls = 0;
  pthread_mutex_unlock(&fake.mu);
}

static int fake_calls(void) {
  pthread_mutex_lock(&fake.mu);
  int n = fake.calls;
  pthread_mutex_unlock(&fake.mu);
  return n;
}

typedef struct fixture {
  char *dir;
  sl_entry_log *el;
} fixture;

static int setup(void **state) {
  fixture *f = calloc(1, sizeof(*f));
  f->dir = sl_test_mkdtemp("entry_log_sync");
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_entry_log_open(f->dir, NULL, &f->el, &err), SL_OK);
  fake_reset();
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  sl_entry_log_close(f->el);
  sl_test_rmdtemp(f->dir);
  free(f);
  return 0;
}

static void append_one(sl_entry_log *el, int64_t entry) {
  static const char payload[] = "payload";
  sl_entry_log_rec rec = {.ledger = 7, .entry = entry, .payload = payload,
                          .len = sizeof(payload)};
  rec.crc = sl_entry_crc(rec.ledger, rec.entry, payload, rec.len);
  sl_entry_loc loc;
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_entry_log_append(el, &rec, 1, &loc, &err), SL_OK);
}

typedef struct syncer {
  sl_entry_log *el;
  pthread_t t;
  sl_status st;
  bool done;
  bool gate_was_open; /* when it returned */
} syncer;

static void *sync_main(void *arg) {
  syncer *s = arg;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_entry_log_sync(s->el, &err);
  pthread_mutex_lock(&fake.mu);
  s->st = st;
  s->done = true;
  s->gate_was_open = fake.open;
  pthread_cond_broadcast(&fake.cv);
  pthread_mutex_unlock(&fake.mu);
  return NULL;
}

/* Waits up to ms for `*flag` (under fake.mu) to become true. */
static bool wait_for(const bool *flag, int ms) {
  struct timespec limit = sl_test_deadline_ms(ms);
  pthread_mutex_lock(&fake.mu);
  int rc = 0;
  while (!*flag && rc != ETIMEDOUT) rc = pthread_cond_timedwait(&fake.cv, &fake.mu, &limit);
  bool got = *flag;
  pthread_mutex_unlock(&fake.mu);
  return got;
}

static void open_gate(void) {
  pthread_mutex_lock(&fake.mu);
  fake.open = true;
  pthread_cond_broadcast(&fake.cv);
  pthread_mutex_unlock(&fake.mu);
}

/* A sync that finds the file clean because another sync took it must not
 * return before that sync's fdatasync has: its caller (the collector, the
 * checkpoint) would act on bytes not yet durable. Asserts come after the
 * gate is open and both threads are joined, so a failure cannot hang. */
static void second_sync_waits_for_the_first(void **state) {
  fixture *f = *state;
  append_one(f->el, 0);
  pthread_mutex_lock(&fake.mu);
  fake.hold_next = true;
  pthread_mutex_unlock(&fake.mu);

  syncer a = {.el = f->el}, b = {.el = f->el};
  assert_int_equal(pthread_create(&a.t, NULL, sync_main, &a), 0);
  bool held = wait_for(&fake.held, (int)sl_test_scaled_ms(10000));
  bool b_early = false;
  if (held) {
    assert_int_equal(pthread_create(&b.t, NULL, sync_main, &b), 0);
    /* B has nothing left to sync of its own; it may only return once A's
     * fdatasync is through. Give it time to return wrongly. */
    b_early = wait_for(&b.done, 300);
  }
  open_gate();
  assert_int_equal(pthread_join(a.t, NULL), 0);
  if (held) assert_int_equal(pthread_join(b.t, NULL), 0);

  assert_true(held);
  assert_false(b_early);
  assert_int_equal(a.st, SL_OK);
  assert_int_equal(b.st, SL_OK);
  assert_true(b.gate_was_open);
  assert_int_equal(fake_calls(), 1); /* one dirty file, synced once */
}

/* A failed fdatasync leaves the file dirty: the next sync tries it again
 * instead of reporting bytes durable that never were. */
static void failed_sync_is_retried(void **state) {
  fixture *f = *state;
  append_one(f->el, 0);
  pthread_mutex_lock(&fake.mu);
  fake.fail_next = EIO;
  pthread_mutex_unlock(&fake.mu);
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_entry_log_sync(f->el, &err), SL_EIO);
  assert_non_null(strstr(err.msg, "fdatasync"));
  assert_int_equal(fake_calls(), 1);

  err = (sl_err)SL_ERR_INIT;
  assert_int_equal(sl_entry_log_sync(f->el, &err), SL_OK);
  assert_int_equal(fake_calls(), 2);
  /* Now clean: nothing to sync. */
  assert_int_equal(sl_entry_log_sync(f->el, &err), SL_OK);
  assert_int_equal(fake_calls(), 2);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(second_sync_waits_for_the_first, setup, teardown),
      cmocka_unit_test_setup_teardown(failed_sync_is_retried, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
