/*
 * The conformance suite on the local (leveldb) backend, plus what only the
 * local backend has: persistence across reopen, the directory lock, and
 * automatic history trimming.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metadata/store_conformance.h"
#include "tests/proc.h"

#define EXPECT(want, expr)                                                         \
  do {                                                                             \
    err = (sl_err)SL_ERR_INIT;                                                     \
    sl_status st_ = (expr);                                                        \
    if (st_ != (want))                                                             \
      fail_msg("%s:%d: %s -> %s (%s), want %s", __FILE__, __LINE__, #expr,         \
               sl_status_str(st_), err.msg, sl_status_str(want));                  \
  } while (0)

/* A fresh directory per store; uri gets "local:<dir>". */
static void fresh_uri(char *uri, size_t cap) {
  char *dir = NULL;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_proc_tempdir("store", &dir, &err);
  if (st != SL_OK) fail_msg("tempdir: %s", sl_err_msg(&err, st));
  snprintf(uri, cap, "local:%s/db", dir);
  free(dir);
}

static sl_status open_local(void *ctx, sl_store **out, sl_err *err) {
  (void)ctx;
  char uri[1024];
  fresh_uri(uri, sizeof(uri));
  return sl_store_open(uri, NULL, out, err);
}

static void close_local(void *ctx, sl_store *s) {
  (void)ctx;
  sl_store_close(s);
}

static void test_store_local__persists_across_reopen(void **state) {
  (void)state;
  sl_err err;
  char uri[1024];
  fresh_uri(uri, sizeof(uri));
  sl_store *s = NULL;
  EXPECT(SL_OK, sl_store_open(uri, NULL, &s, &err));
  assert_string_equal(sl_store_backend(s), "local");
  int64_t ra, rb, lease, rev;
  EXPECT(SL_OK, sl_store_put(s, "a", 1, "A", 1, SL_STORE_REV_ANY, 0, &ra, &err));
  EXPECT(SL_OK, sl_store_lease_grant(s, 60, &lease, NULL, &err));
  EXPECT(SL_OK, sl_store_put(s, "b", 1, "B", 1, SL_STORE_REV_ANY, lease, &rb, &err));
  sl_store_close(s);

  EXPECT(SL_OK, sl_store_open(uri, NULL, &s, &err));
  EXPECT(SL_OK, sl_store_revision(s, &rev, &err));
  assert_int_equal(rev, rb);
  sl_store_kv kv;
  EXPECT(SL_OK, sl_store_get(s, "b", 1, &kv, &err));
  assert_string_equal((char *)kv.value, "B");
  assert_int_equal(kv.lease, lease);
  assert_int_equal(kv.mod_revision, rb);
  sl_store_kv_release(&kv);
  /* The lease came back with the store, renewed. */
  int64_t ttl;
  EXPECT(SL_OK, sl_store_lease_keepalive(s, lease, &ttl, &err));
  assert_int_equal(ttl, 60);
  /* New ids and revisions keep counting up. */
  int64_t lease2, rc;
  EXPECT(SL_OK, sl_store_lease_grant(s, 60, &lease2, NULL, &err));
  assert_true(lease2 > lease);
  EXPECT(SL_OK, sl_store_create(s, "c", 1, "C", 1, 0, &rc, &err));
  assert_int_equal(rc, rb + 1);
  /* History survived too: a watch from the start replays it. */
  sl_store_conf_events ev;
  sl_store_conf_events_init(&ev);
  sl_store_watch *w = NULL;
  EXPECT(SL_OK, sl_store_watch_start(s, "", 0, 1, sl_store_conf_collect, &ev, &w, &err));
  assert_true(sl_store_conf_wait_events(&ev, 3, 5000));
  sl_store_watch_stop(w);
  assert_int_equal(ev.evs[0].revision, ra);
  assert_int_equal(ev.evs[1].revision, rb);
  assert_int_equal(ev.evs[2].revision, rc);
  sl_store_conf_events_release(&ev);
  EXPECT(SL_OK, sl_store_lease_revoke(s, lease, &err));
  sl_store_close(s);
}

static void test_store_local__second_open_is_busy(void **state) {
  (void)state;
  sl_err err;
  char uri[1024];
  fresh_uri(uri, sizeof(uri));
  sl_store *a = NULL, *b = NULL;
  EXPECT(SL_OK, sl_store_open(uri, NULL, &a, &err));
  EXPECT(SL_EBUSY, sl_store_open(uri, NULL, &b, &err));
  assert_non_null(strstr(err.msg, uri + strlen("local:")));
  sl_store_close(a);
  EXPECT(SL_OK, sl_store_open(uri, NULL, &b, &err));
  sl_store_close(b);
  sl_store_close(NULL);
}

static void test_store_local__history_trimmed(void **state) {
  (void)state;
  sl_err err;
  char uri[1024];
  fresh_uri(uri, sizeof(uri));
  sl_store_opts opts = SL_STORE_OPTS_INIT;
  opts.local_history = 10;
  opts.local_sync = false;
  sl_store *s = NULL;
  EXPECT(SL_OK, sl_store_open(uri, &opts, &s, &err));
  int64_t last = 0;
  for (int i = 0; i < 40; i++)
    EXPECT(SL_OK, sl_store_put(s, "k", 1, "v", 1, SL_STORE_REV_ANY, 0, &last, &err));
  /* The lease thread trims within about a second; poll for it. */
  long long deadline = sl_clock_mono_ms() + 5000;
  bool compacted = false;
  while (!compacted && sl_clock_mono_ms() < deadline) {
    sl_store_conf_events ev;
    sl_store_conf_events_init(&ev);
    sl_store_watch *w = NULL;
    EXPECT(SL_OK, sl_store_watch_start(s, "k", 1, 2, sl_store_conf_collect, &ev, &w, &err));
    assert_true(sl_store_conf_wait_events(&ev, 1, 5000));
    sl_store_watch_stop(w);
    /* A trim pass may run mid-loop and compact at an earlier revision;
     * await the pass that follows the last put. */
    compacted = ev.evs[0].type == SL_STORE_EVENT_COMPACTED &&
                ev.evs[0].compact_revision == last - 10 + 1;
    sl_store_conf_events_release(&ev);
    if (!compacted) sl_store_conf_sleep_ms(100);
  }
  assert_true(compacted);
  sl_store_close(s);
}

static void test_store_local__bad_uris(void **state) {
  (void)state;
  sl_err err;
  sl_store *s = NULL;
  EXPECT(SL_EINVAL, sl_store_open("local:", NULL, &s, &err));
  EXPECT(SL_EINVAL, sl_store_open("nope:/x", NULL, &s, &err));
  assert_non_null(strstr(err.msg, "nope:/x"));
  EXPECT(SL_EINVAL, sl_store_open(NULL, NULL, &s, &err));
  EXPECT(SL_EIO, sl_store_open("local:/nonexistent/deep/dir", NULL, &s, &err));
  assert_non_null(strstr(err.msg, "/nonexistent/deep/dir"));
  sl_store_opts opts = SL_STORE_OPTS_INIT;
  opts.local_history = 0;
  EXPECT(SL_EINVAL, sl_store_open("local:/tmp/x", &opts, &s, &err));
  assert_null(s);
}

int main(void) {
  static const sl_store_conf_backend local = {"local", open_local, close_local, NULL};
  sl_store_conf_set_backend(&local);
  const struct CMUnitTest tests[] = {
      SL_STORE_CONFORMANCE_TESTS
      cmocka_unit_test(test_store_local__persists_across_reopen),
      cmocka_unit_test(test_store_local__second_open_is_busy),
      cmocka_unit_test(test_store_local__history_trimmed),
      cmocka_unit_test(test_store_local__bad_uris),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
