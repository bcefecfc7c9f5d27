#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <leveldb/c.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bookie/bookie_store.h"
#include "bookie/entry_crypt.h"
#include "bookie/testing/test_util.h"
#include "common/testing.h"
#include "common/crc32c.h"

/* ---- helpers ---- */

static sl_test_gate g_gate = SL_TEST_GATE_INIT;

static sl_bookie_store_opts test_opts(void) {
  sl_bookie_store_opts o = SL_BOOKIE_STORE_OPTS_INIT;
  o.journal_segment_bytes = 1u << 20;
  o.checkpoint_interval_ms = 600000; /* tests checkpoint explicitly */
  o.disk_interval_ms = 600000;
  o.max_entry_bytes = 256u << 10;
  o.leveldb.write_buffer_bytes = 4u << 20;
  o.leveldb.cache_bytes = 1u << 20;
  return o;
}

/* test_opts with the journal's syncs going through g_gate, left open. */
static sl_bookie_store_opts gated_opts(void) {
  sl_bookie_store_opts o = test_opts();
  o.sync_hook = sl_test_gate_hook;
  o.hook_arg = &g_gate;
  sl_test_gate_set(&g_gate, false, false);
  return o;
}

static sl_bookie_store *open_store(const char *dir, const sl_bookie_store_opts *o) {
  sl_bookie_store *s = NULL;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_bookie_store_open(dir, o, &s, &err);
  if (st != SL_OK) print_error("open %s: %s\n", dir, sl_err_msg(&err, st));
  assert_int_equal(st, SL_OK);
  return s;
}

static sl_bookie_add_req make_add(uint64_t ledger, int64_t entry, uint64_t epoch,
                                  const char *payload) {
  uint32_t len = (uint32_t)strlen(payload);
  sl_bookie_add_req r = {ledger, entry, epoch, entry - 1, payload, len,
                         sl_entry_crc(ledger, entry, payload, len), 0, NULL, 0};
  return r;
}

/* Submits and waits for the callback; returns the refusal or the cb status. */
static sl_status add_wait(sl_bookie_store *s, const sl_bookie_add_req *r, sl_err *err) {
  sl_test_waiter w;
  sl_test_waiter_init(&w);
  sl_status st = sl_bookie_store_add(s, r, sl_test_waiter_cb, &w, err);
  if (st == SL_OK) {
    assert_true(sl_test_waiter_wait(&w, 1, 10000));
    if (w.ok != 1) {
      st = w.last_st;
      if (err != NULL) snprintf(err->msg, sizeof(err->msg), "%s", w.last_msg);
    }
  }
  sl_test_waiter_release(&w);
  return st;
}

static sl_status add_str(sl_bookie_store *s, uint64_t ledger, int64_t entry,
                         uint64_t epoch, const char *payload, sl_err *err) {
  sl_bookie_add_req r = make_add(ledger, entry, epoch, payload);
  return add_wait(s, &r, err);
}

/* Fences with a password and waits for the callback. */
static sl_status fence_pw(sl_bookie_store *s, uint64_t ledger, uint64_t epoch,
                          const char *password, size_t password_len, sl_err *err) {
  sl_test_waiter w;
  sl_test_waiter_init(&w);
  sl_status st = sl_bookie_store_fence(s, ledger, epoch, password, password_len,
                                       sl_test_waiter_cb, &w, err);
  if (st == SL_OK) {
    assert_true(sl_test_waiter_wait(&w, 1, 10000));
    if (w.ok != 1) st = w.last_st;
  }
  sl_test_waiter_release(&w);
  return st;
}

/* Fences with the empty password (the one add_str sends). */
static sl_status fence_wait(sl_bookie_store *s, uint64_t ledger, uint64_t epoch,
                            sl_err *err) {
  return fence_pw(s, ledger, epoch, NULL, 0, err);
}

/* Deletes with a password and waits for the callback. */
static sl_status delete_pw(sl_bookie_store *s, uint64_t ledger, const char *password,
                           sl_err *err) {
  sl_test_waiter w;
  sl_test_waiter_init(&w);
  sl_status st = sl_bookie_store_delete_ledger(s, ledger, password,
                                               password ? strlen(password) : 0,
                                               sl_test_waiter_cb, &w, err);
  if (st == SL_OK) {
    assert_true(sl_test_waiter_wait(&w, 1, 10000));
    if (w.ok != 1) st = w.last_st;
  }
  sl_test_waiter_release(&w);
  return st;
}

/* Deletes with the empty password (the one add_str sends). */
static sl_status delete_wait(sl_bookie_store *s, uint64_t ledger, sl_err *err) {
  return delete_pw(s, ledger, NULL, err);
}

static void expect_read(sl_bookie_store *s, uint64_t ledger, int64_t entry,
                        const char *payload) {
  sl_ledger_entry e = SL_LEDGER_ENTRY_INIT;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_bookie_store_read(s, ledger, entry, &e, &err);
  if (st != SL_OK) print_error("read %" PRIu64 "/%" PRId64 ": %s\n", ledger, entry, err.msg);
  assert_int_equal(st, SL_OK);
  assert_int_equal(e.len, strlen(payload));
  assert_memory_equal(e.payload, payload, e.len);
  assert_int_equal(e.crc, sl_entry_crc(ledger, entry, payload, e.len));
  sl_ledger_entry_release(&e);
}

static sl_status read_status(sl_bookie_store *s, uint64_t ledger, int64_t entry,
                             sl_err *err) {
  sl_ledger_entry e = SL_LEDGER_ENTRY_INIT;
  sl_status st = sl_bookie_store_read(s, ledger, entry, &e, err);
  if (st != SL_OK) assert_null(e.payload);
  sl_ledger_entry_release(&e);
  return st;
}

static char *subdir(const char *dir, const char *name) {
  char *p = malloc(strlen(dir) + strlen(name) + 2);
  sprintf(p, "%s/%s", dir, name);
  return p;
}

/* Ends a test: closes its store and removes its directory. */
static void close_and_drop(sl_bookie_store *s, char *dir) {
  sl_bookie_store_close(s);
  sl_test_rmdtemp(dir);
}

/* A path under $TEST_TMPDIR that does not exist yet. */
static char *fresh_path(const char *tag) {
  char *p = sl_test_mkdtemp(tag);
  assert_int_equal(rmdir(p), 0);
  return p;
}

/* The two halves of a store and of its copy, for the power-cut model: the
 * copy takes ledger storage and journal from different moments. */
typedef struct split_dirs {
  char *ledgers, *journal, *copy_ledgers, *copy_journal;
} split_dirs;

static split_dirs split_dirs_make(const char *dir, const char *copy) {
  split_dirs sd = {subdir(dir, "ledgers"), subdir(dir, "journal"), subdir(copy, "ledgers"),
                   subdir(copy, "journal")};
  return sd;
}

static void split_dirs_free(split_dirs *sd) {
  free(sd->ledgers);
  free(sd->journal);
  free(sd->copy_ledgers);
  free(sd->copy_journal);
}

/* SHA-256 of a password: what the store must keep as the ledger's key. */
static void sha256(const void *password, size_t len, uint8_t out[SL_LEDGER_KEY_BYTES]) {
  unsigned int n = 0;
  assert_int_equal(EVP_Digest(len > 0 ? password : "", len, out, &n, EVP_sha256(), NULL), 1);
  assert_int_equal(n, SL_LEDGER_KEY_BYTES);
}

static sl_status add_pw(sl_bookie_store *s, uint64_t ledger, int64_t entry, uint64_t epoch,
                        const char *payload, const char *password, sl_err *err) {
  sl_bookie_add_req r = make_add(ledger, entry, epoch, payload);
  r.password = password;
  r.password_len = password != NULL ? strlen(password) : 0;
  return add_wait(s, &r, err);
}

/* Fails unless the ledger's stored key is the digest of `password`. */
static void expect_key(sl_bookie_store *s, uint64_t ledger, const char *password) {
  sl_ledger_meta m;
  assert_int_equal(sl_bookie_store_ledger_meta(s, ledger, &m, NULL), SL_OK);
  uint8_t want[SL_LEDGER_KEY_BYTES];
  sha256(password, strlen(password), want);
  assert_true(m.has_key);
  assert_memory_equal(m.key, want, sizeof(want));
}

/* True if some file under `dir` holds the bytes needle[0..n). */
static bool tree_contains(const char *dir, const void *needle, size_t n) {
  DIR *d = opendir(dir);
  assert_non_null(d);
  bool found = false;
  struct dirent *de;
  while (!found && (de = readdir(d)) != NULL) {
    if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
    char *path = subdir(dir, de->d_name);
    if (de->d_type == DT_DIR) {
      found = tree_contains(path, needle, n);
    } else {
      FILE *f = fopen(path, "rb");
      assert_non_null(f);
      assert_int_equal(fseek(f, 0, SEEK_END), 0);
      long size = ftell(f);
      assert_true(size >= 0);
      rewind(f);
      char *buf = malloc((size_t)size + 1);
      assert_non_null(buf);
      assert_int_equal(fread(buf, 1, (size_t)size, f), (size_t)size);
      found = memmem(buf, (size_t)size, needle, n) != NULL;
      free(buf);
      fclose(f);
    }
    free(path);
  }
  closedir(d);
  return found;
}

/* ---- tests ---- */

static void test_bookie_store__add_read_reopen(void **state) {
  (void)state;
  char *dir = sl_test_mkdtemp("bsrw");
  sl_bookie_store_opts o = test_opts();
  sl_bookie_store *s = open_store(dir, &o);
  char buf[64];
  for (int e = 0; e < 20; e++) {
    snprintf(buf, sizeof(buf), "ledger one entry %d", e);
    assert_int_equal(add_str(s, 1, e, 1, buf, NULL), SL_OK);
    snprintf(buf, sizeof(buf), "ledger 1<<40 entry %d", e);
    assert_int_equal(add_str(s, 1ull << 40, e, 1, buf, NULL), SL_OK);
  }
  assert_int_equal(add_str(s, 3, 0, 0, "", NULL), SL_OK); /* empty payload */
  int64_t lac = 0;
  assert_int_equal(sl_bookie_store_read_lac(s, 1, &lac, NULL), SL_OK);
  assert_int_equal(lac, 18); /* the last add carried lac = entry - 1 */
  uint64_t *ids = NULL;
  size_t n = 0;
  sl_bookie_store_list_ledgers(s, &ids, &n);
  assert_int_equal(n, 3);
  assert_int_equal(ids[0], 1);
  assert_int_equal(ids[1], 3);
  assert_int_equal(ids[2], 1ull << 40);
  free(ids);
  sl_bookie_store_info info;
  sl_bookie_store_info_get(s, &info);
  assert_int_equal(info.ledgers, 3);
  assert_int_equal(info.entries, 41);
  assert_false(info.readonly);
  assert_false(info.failed);
  assert_true(info.total_bytes > 0);
  sl_bookie_store_close(s);

  s = open_store(dir, &o);
  for (int e = 0; e < 20; e++) {
    snprintf(buf, sizeof(buf), "ledger one entry %d", e);
    expect_read(s, 1, e, buf);
    snprintf(buf, sizeof(buf), "ledger 1<<40 entry %d", e);
    expect_read(s, 1ull << 40, e, buf);
  }
  expect_read(s, 3, 0, "");
  assert_int_equal(sl_bookie_store_read_lac(s, 1, &lac, NULL), SL_OK);
  assert_int_equal(lac, 18);
  sl_bookie_store_info_get(s, &info);
  assert_int_equal(info.entries, 41);
  assert_int_equal(info.replayed_records, 0); /* clean close checkpointed */
  close_and_drop(s, dir);
}

static sl_entry_crypt *crypt_from(const char *dir, const char *name, const char *hex) {
  char path[4096];
  snprintf(path, sizeof(path), "%s/%s", dir, name);
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  fprintf(f, "%s\n", hex);
  fclose(f);
  sl_entry_crypt *c = NULL;
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_entry_crypt_create(path, &c, &err), SL_OK);
  return c;
}

/* Encrypted at rest: nothing stored (journal, entry log, index) holds a
 * payload in the clear, reads give the plaintext back (also after reopen
 * and journal replay), resends still compare equal, and a store opens only
 * with its own key. */
static void test_bookie_store__encryption_at_rest(void **state) {
  (void)state;
  char *keys = sl_test_mkdtemp("bskeys");
  sl_entry_crypt *k1 = crypt_from(keys, "k1",
      "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f");
  sl_entry_crypt *k2 = crypt_from(keys, "k2",
      "ff0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f");
  char *dir = sl_test_mkdtemp("bsenc");
  sl_bookie_store_opts o = test_opts();
  o.crypt = k1;
  sl_bookie_store *s = open_store(dir, &o);
  char buf[64];
  for (int e = 0; e < 20; e++) {
    snprintf(buf, sizeof(buf), "SECRET-PAYLOAD-%02d", e);
    assert_int_equal(add_str(s, 1, e, 1, buf, NULL), SL_OK);
  }
  assert_int_equal(add_str(s, 1, 3, 1, "SECRET-PAYLOAD-03", NULL), SL_OK); /* a resend */
  sl_err err = SL_ERR_INIT;
  assert_int_equal(add_str(s, 1, 3, 1, "SECRET-PAYLOAD-XX", &err), SL_ECONFLICT);
  assert_int_equal(add_str(s, 2, 0, 0, "", NULL), SL_OK);
  expect_read(s, 1, 7, "SECRET-PAYLOAD-07");
  expect_read(s, 2, 0, "");
  assert_false(sl_test_tree_holds(dir, "SECRET-PAYLOAD"));
  sl_bookie_store_close(s);

  s = open_store(dir, &o);
  for (int e = 0; e < 20; e++) {
    snprintf(buf, sizeof(buf), "SECRET-PAYLOAD-%02d", e);
    expect_read(s, 1, e, buf);
  }
  sl_bookie_store_close(s);

  /* No key, or another key: refused, and nothing changed. */
  sl_bookie_store *bad = NULL;
  sl_bookie_store_opts plain = test_opts();
  assert_int_equal(sl_bookie_store_open(dir, &plain, &bad, &err), SL_EINVAL);
  assert_non_null(strstr(err.msg, "encrypted"));
  sl_bookie_store_opts other = test_opts();
  other.crypt = k2;
  assert_int_equal(sl_bookie_store_open(dir, &other, &bad, &err), SL_EINVAL);
  assert_non_null(strstr(err.msg, "another key"));
  s = open_store(dir, &o);
  expect_read(s, 1, 19, "SECRET-PAYLOAD-19");
  close_and_drop(s, dir);

  /* A store with plaintext entries cannot start encrypting. */
  dir = sl_test_mkdtemp("bsplain");
  s = open_store(dir, &plain);
  assert_int_equal(add_str(s, 1, 0, 1, "in the clear", NULL), SL_OK);
  sl_bookie_store_close(s);
  assert_int_equal(sl_bookie_store_open(dir, &o, &bad, &err), SL_EINVAL);
  assert_non_null(strstr(err.msg, "unencrypted"));
  s = open_store(dir, &plain);
  expect_read(s, 1, 0, "in the clear");
  close_and_drop(s, dir);

  /* A sealed entry opens only at its own place. */
  uint8_t sealed[5 + SL_ENTRY_CRYPT_OVERHEAD], out[5];
  assert_int_equal(sl_entry_crypt_seal(k1, 7, 3, "hello", 5, sealed, NULL), SL_OK);
  assert_int_equal(sl_entry_crypt_open(k1, 7, 3, sealed, sizeof(sealed), out, NULL), SL_OK);
  assert_memory_equal(out, "hello", 5);
  assert_int_equal(sl_entry_crypt_open(k1, 7, 4, sealed, sizeof(sealed), out, NULL),
                   SL_ECORRUPT);
  assert_int_equal(sl_entry_crypt_open(k2, 7, 3, sealed, sizeof(sealed), out, NULL),
                   SL_ECORRUPT);
  sl_entry_crypt_destroy(k1);
  sl_entry_crypt_destroy(k2);
  sl_test_rmdtemp(keys);
}

typedef struct adder_arg {
  sl_bookie_store *s;
  uint64_t ledger;
  int count;
} adder_arg;

static void *sync_adder(void *p) {
  adder_arg *a = p;
  char buf[1024];
  memset(buf, 'a' + (int)(a->ledger % 26), sizeof(buf) - 1);
  buf[sizeof(buf) - 1] = '\0';
  for (int e = 0; e < a->count; e++) {
    if (add_str(a->s, a->ledger, e, 1, buf, NULL) != SL_OK) abort();
  }
  return NULL;
}

static void test_bookie_store__group_commit_batches(void **state) {
  (void)state;
  enum { THREADS = 16, PER = 40 };
  char *dir = sl_test_mkdtemp("bsgc");
  sl_bookie_store_opts o = test_opts();
  sl_bookie_store *s = open_store(dir, &o);
  sl_bookie_store_info before, after;
  sl_bookie_store_info_get(s, &before);
  pthread_t th[THREADS];
  adder_arg args[THREADS];
  for (int i = 0; i < THREADS; i++) {
    args[i] = (adder_arg){s, 100u + (uint64_t)i, PER};
    assert_int_equal(pthread_create(&th[i], NULL, sync_adder, &args[i]), 0);
  }
  for (int i = 0; i < THREADS; i++) pthread_join(th[i], NULL);
  sl_bookie_store_info_get(s, &after);
  uint64_t syncs = after.journal_syncs - before.journal_syncs;
  print_message("adds=%d syncs=%" PRIu64 "\n", THREADS * PER, syncs);
  assert_int_equal(after.entries, THREADS * PER);
  assert_true(syncs < (uint64_t)(THREADS * PER));
  close_and_drop(s, dir);
}

static void test_bookie_store__fence_durable_across_reopen(void **state) {
  (void)state;
  char *dir = sl_test_mkdtemp("bsfence");
  sl_bookie_store_opts o = test_opts();
  sl_bookie_store *s = open_store(dir, &o);
  sl_err err = SL_ERR_INIT;
  for (int e = 0; e < 5; e++) assert_int_equal(add_str(s, 42, e, 3, "x", NULL), SL_OK);
  assert_int_equal(fence_wait(s, 42, 5, NULL), SL_OK);
  assert_int_equal(add_str(s, 42, 5, 3, "late", &err), SL_EFENCED);
  assert_string_equal(err.msg, "ledger 42: fenced");
  assert_int_equal(add_str(s, 42, 5, 9, "new owner", &err), SL_EFENCED);
  /* A fence of an unknown ledger creates its state. */
  assert_int_equal(fence_wait(s, 77, 1, NULL), SL_OK);

  /* What a kill -9 right after the fence callback would leave behind. */
  sl_bookie_store_close(s);
  s = open_store(dir, &o);
  sl_ledger_meta m;
  assert_int_equal(sl_bookie_store_ledger_meta(s, 42, &m, NULL), SL_OK);
  assert_true(m.fenced);
  assert_int_equal(m.max_epoch, 5);
  assert_int_equal(add_str(s, 42, 5, 5, "late", &err), SL_EFENCED);
  assert_int_equal(sl_bookie_store_ledger_meta(s, 77, &m, NULL), SL_OK);
  assert_true(m.fenced);
  /* Recovery write-back is allowed on a fenced ledger, at a current epoch. */
  sl_bookie_add_req r = make_add(42, 5, 5, "recovered");
  r.flags = SL_BOOKIE_ADD_RECOVERY;
  assert_int_equal(add_wait(s, &r, NULL), SL_OK);
  r = make_add(42, 6, 4, "old recovery");
  r.flags = SL_BOOKIE_ADD_RECOVERY;
  assert_int_equal(add_wait(s, &r, &err), SL_ESTALE_EPOCH);
  assert_string_equal(err.msg, "ledger 42: stale epoch 4 < 5");
  /* A stale fence is refused too. */
  assert_int_equal(fence_wait(s, 42, 2, &err), SL_ESTALE_EPOCH);
  expect_read(s, 42, 5, "recovered");

  /* Durable before completion: snapshot the live directory right after the
   * fence callback, with no close and no checkpoint. */
  assert_int_equal(add_str(s, 43, 0, 1, "y", NULL), SL_OK);
  assert_int_equal(fence_wait(s, 43, 2, NULL), SL_OK);
  char *copy = fresh_path("bsfence-copy");
  sl_test_copy_tree(dir, copy);
  sl_bookie_store *c = open_store(copy, &o);
  assert_int_equal(sl_bookie_store_ledger_meta(c, 43, &m, NULL), SL_OK);
  assert_true(m.fenced);
  assert_int_equal(m.max_epoch, 2);
  assert_int_equal(add_str(c, 43, 1, 2, "late", &err), SL_EFENCED);
  sl_bookie_store_info info;
  sl_bookie_store_info_get(c, &info);
  assert_true(info.replayed_records >= 2);
  sl_bookie_store_close(c);
  sl_bookie_store_close(s);
  sl_test_rmdtemp(copy);
  sl_test_rmdtemp(dir);
}

/* A fence admitted while earlier adds wait for their sync refuses later adds
 * at once, before the fence itself is durable. */
static void test_bookie_store__fence_refuses_before_durable(void **state) {
  (void)state;
  char *dir = sl_test_mkdtemp("bsfence2");
  sl_bookie_store_opts o = gated_opts();
  sl_bookie_store *s = open_store(dir, &o);
  sl_test_waiter w;
  sl_test_waiter_init(&w);
  sl_test_gate_set(&g_gate, true, false);
  sl_bookie_add_req r0 = make_add(5, 0, 1, "before");
  assert_int_equal(sl_bookie_store_add(s, &r0, sl_test_waiter_cb, &w, NULL), SL_OK);
  sl_test_gate_wait_blocked(&g_gate);
  assert_int_equal(sl_bookie_store_fence(s, 5, 1, NULL, 0, sl_test_waiter_cb, &w, NULL), SL_OK);
  sl_err err = SL_ERR_INIT;
  sl_bookie_add_req r1 = make_add(5, 1, 1, "after");
  assert_int_equal(sl_bookie_store_add(s, &r1, sl_test_waiter_cb, &w, &err), SL_EFENCED);
  /* A delete must wait for the requests in flight. */
  assert_int_equal(sl_bookie_store_delete_ledger(s, 5, NULL, 0, sl_test_waiter_cb, &w, &err), SL_EBUSY);
  assert_int_equal(w.done, 0);
  sl_test_gate_set(&g_gate, false, false);
  assert_true(sl_test_waiter_wait(&w, 2, 10000));
  assert_int_equal(w.ok, 2);
  expect_read(s, 5, 0, "before");
  sl_bookie_store_close(s);
  sl_test_waiter_release(&w);
  sl_test_rmdtemp(dir);
}

static void test_bookie_store__stale_epoch_refused(void **state) {
  (void)state;
  char *dir = sl_test_mkdtemp("bsepoch");
  sl_bookie_store_opts o = test_opts();
  sl_bookie_store *s = open_store(dir, &o);
  sl_err err = SL_ERR_INIT;
  assert_int_equal(add_str(s, 42, 0, 5, "a", NULL), SL_OK);
  assert_int_equal(add_str(s, 42, 1, 3, "b", &err), SL_ESTALE_EPOCH);
  assert_string_equal(err.msg, "ledger 42: stale epoch 3 < 5");
  assert_int_equal(read_status(s, 42, 1, NULL), SL_ENOTFOUND);
  assert_int_equal(add_str(s, 42, 1, 5, "b", NULL), SL_OK);
  assert_int_equal(add_str(s, 42, 2, 6, "c", NULL), SL_OK);
  assert_int_equal(add_str(s, 42, 3, 5, "d", &err), SL_ESTALE_EPOCH);
  assert_string_equal(err.msg, "ledger 42: stale epoch 5 < 6");
  sl_test_waiter w;
  sl_test_waiter_init(&w);
  assert_int_equal(sl_bookie_store_write_lac(s, 42, 4, 2, NULL, 0, sl_test_waiter_cb, &w, &err),
                   SL_ESTALE_EPOCH);
  assert_int_equal(sl_bookie_store_write_lac(s, 42, 6, 2, NULL, 0, sl_test_waiter_cb, &w, &err), SL_OK);
  assert_true(sl_test_waiter_wait(&w, 1, 10000));
  sl_test_waiter_release(&w);
  int64_t lac;
  assert_int_equal(sl_bookie_store_read_lac(s, 42, &lac, NULL), SL_OK);
  assert_int_equal(lac, 2);
  sl_bookie_store_close(s);
  /* The epoch survives restart. */
  s = open_store(dir, &o);
  assert_int_equal(add_str(s, 42, 3, 5, "d", &err), SL_ESTALE_EPOCH);
  assert_string_equal(err.msg, "ledger 42: stale epoch 5 < 6");
  assert_int_equal(sl_bookie_store_read_lac(s, 42, &lac, NULL), SL_OK);
  assert_int_equal(lac, 2);
  close_and_drop(s, dir);
}

/* The store's ledger database opened through the raw leveldb API, to plant
 * state the store itself would never write. The store must be closed. */
typedef struct raw_db {
  char *path;
  leveldb_options_t *o;
  leveldb_t *db;
  leveldb_readoptions_t *ro;
  leveldb_writeoptions_t *wo;
} raw_db;

static raw_db raw_open(const char *store_dir, bool sync) {
  raw_db r;
  char *errptr = NULL;
  r.path = subdir(store_dir, "ledgers");
  r.o = leveldb_options_create();
  r.db = leveldb_open(r.o, r.path, &errptr);
  assert_null(errptr);
  r.ro = leveldb_readoptions_create();
  r.wo = leveldb_writeoptions_create();
  if (sync) leveldb_writeoptions_set_sync(r.wo, 1);
  return r;
}

/* The stored value of key k (must exist); free with leveldb_free. */
static char *raw_get(raw_db *r, const uint8_t *k, size_t klen, size_t *vlen) {
  char *errptr = NULL;
  char *v = leveldb_get(r->db, r->ro, (const char *)k, klen, vlen, &errptr);
  assert_null(errptr);
  assert_non_null(v);
  return v;
}

static void raw_put(raw_db *r, const uint8_t *k, size_t klen, const char *v, size_t vlen) {
  char *errptr = NULL;
  leveldb_put(r->db, r->wo, (const char *)k, klen, v, vlen, &errptr);
  assert_null(errptr);
}

static void raw_close(raw_db *r) {
  leveldb_readoptions_destroy(r->ro);
  leveldb_writeoptions_destroy(r->wo);
  leveldb_close(r->db);
  leveldb_options_destroy(r->o);
  free(r->path);
}

/* Flips one bit of `payload` where it is stored in the store's entry log
 * files, keeping the stored crc. */
static void corrupt_entry(const char *store_dir, const char *payload) {
  char dir[4096];
  snprintf(dir, sizeof(dir), "%s/ledgers/entrylogs", store_dir);
  DIR *d = opendir(dir);
  assert_non_null(d);
  int flipped = 0;
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    if (strstr(de->d_name, ".log") == NULL) continue;
    char path[8192];
    snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    char buf[65536];
    size_t n = fread(buf, 1, sizeof(buf), f);
    char *hit = memmem(buf, n, payload, strlen(payload));
    if (hit != NULL) {
      char b = (char)(hit[strlen(payload) - 1] ^ 0x20);
      assert_int_equal(fseek(f, (long)(hit - buf) + (long)strlen(payload) - 1, SEEK_SET), 0);
      assert_int_equal(fwrite(&b, 1, 1, f), 1);
      flipped++;
    }
    assert_int_equal(fclose(f), 0);
  }
  closedir(d);
  assert_int_equal(flipped, 1);
}

static void test_bookie_store__corrupt_entry_read(void **state) {
  (void)state;
  char *dir = sl_test_mkdtemp("bscorrupt");
  sl_bookie_store_opts o = test_opts();
  sl_bookie_store *s = open_store(dir, &o);
  assert_int_equal(add_str(s, 42, 6, 1, "fine", NULL), SL_OK);
  assert_int_equal(add_str(s, 42, 7, 1, "the payload", NULL), SL_OK);
  sl_bookie_store_close(s); /* checkpoints: replay will not rewrite it */
  corrupt_entry(dir, "the payload");
  s = open_store(dir, &o);
  sl_err err = SL_ERR_INIT;
  assert_int_equal(read_status(s, 42, 7, &err), SL_ECORRUPT);
  assert_string_equal(err.msg, "ledger 42 entry 7: checksum mismatch");
  expect_read(s, 42, 6, "fine");
  /* The writer's resend repairs the corrupt copy. */
  assert_int_equal(add_str(s, 42, 7, 1, "the payload", NULL), SL_OK);
  expect_read(s, 42, 7, "the payload");
  close_and_drop(s, dir);
}

static atomic_int ro_changes_on, ro_changes_off;
static void on_ro(bool ro, void *arg) {
  (void)arg;
  atomic_fetch_add(ro ? &ro_changes_on : &ro_changes_off, 1);
}

static void test_bookie_store__readonly_and_back(void **state) {
  (void)state;
  char *dir = sl_test_mkdtemp("bsro");
  sl_bookie_store_opts o = test_opts();
  o.disk_limit_bytes = 1ull << 40;
  o.on_readonly_change = on_ro;
  sl_bookie_store *s = open_store(dir, &o);
  assert_int_equal(add_str(s, 1, 0, 1, "before", NULL), SL_OK);
  sl_bookie_store_info info;
  sl_bookie_store_info_get(s, &info);
  uint64_t used = info.total_bytes - info.free_bytes;
  assert_true(used > 0);
  /* A quota just above what is used now: over the 95% mark. */
  sl_bookie_store_set_disk_limit(s, used + used / 100);
  sl_bookie_store_info_get(s, &info);
  assert_true(info.readonly);
  assert_int_equal(atomic_load(&ro_changes_on), 1);
  sl_err err = SL_ERR_INIT;
  assert_int_equal(add_str(s, 1, 1, 1, "refused", &err), SL_EREADONLY);
  assert_non_null(strstr(err.msg, "read-only"));
  expect_read(s, 1, 0, "before");                     /* reads served */
  assert_int_equal(fence_wait(s, 1, 1, NULL), SL_OK); /* fencing still works */
  sl_bookie_store_set_disk_limit(s, used * 10);
  sl_bookie_store_info_get(s, &info);
  assert_false(info.readonly);
  assert_int_equal(atomic_load(&ro_changes_off), 1);
  assert_int_equal(add_str(s, 2, 0, 1, "after", NULL), SL_OK);
  close_and_drop(s, dir);
}

/* The real disk with a tiny threshold: read-only from the first sample. */
static void test_bookie_store__readonly_tiny_threshold(void **state) {
  (void)state;
  char *dir = sl_test_mkdtemp("bstiny");
  sl_bookie_store_opts o = test_opts();
  o.disk_high_pct = 0.0001;
  o.disk_low_pct = 0.00005;
  sl_bookie_store *s = open_store(dir, &o);
  sl_bookie_store_info info;
  sl_bookie_store_info_get(s, &info);
  assert_true(info.readonly);
  sl_err err = SL_ERR_INIT;
  assert_int_equal(add_str(s, 1, 0, 1, "refused", &err), SL_EREADONLY);
  assert_int_equal(read_status(s, 1, 0, NULL), SL_ENOTFOUND);
  /* An effectively unlimited quota brings usage under the low mark. */
  sl_bookie_store_set_disk_limit(s, 1ull << 62);
  sl_bookie_store_info_get(s, &info);
  assert_false(info.readonly);
  assert_int_equal(add_str(s, 1, 0, 1, "accepted", NULL), SL_OK);
  close_and_drop(s, dir);
}

static void test_bookie_store__bad_input(void **state) {
  (void)state;
  char *dir = sl_test_mkdtemp("bsbad");
  sl_bookie_store_opts o = test_opts();
  sl_bookie_store *s = NULL;
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_bookie_store_open(NULL, &o, &s, &err), SL_EINVAL);
  sl_bookie_store_opts bad = o;
  bad.max_entry_bytes = 0;
  assert_int_equal(sl_bookie_store_open(dir, &bad, &s, &err), SL_EINVAL);
  assert_int_equal(sl_bookie_store_open("/proc/version/x", &o, &s, &err), SL_EIO);
  s = open_store(dir, &o);
  sl_test_waiter w;
  sl_test_waiter_init(&w);

  sl_bookie_add_req r = make_add(42, 7, 1, "payload");
  r.crc ^= 1;
  assert_int_equal(sl_bookie_store_add(s, &r, sl_test_waiter_cb, &w, &err), SL_EBADCRC);
  assert_non_null(strstr(err.msg, "ledger 42 entry 7: checksum mismatch"));
  static char big[(256u << 10) + 1];
  r = (sl_bookie_add_req){42, 7, 1, -1, big, sizeof(big), sl_entry_crc(42, 7, big, sizeof(big)), 0,
                         NULL, 0};
  assert_int_equal(sl_bookie_store_add(s, &r, sl_test_waiter_cb, &w, &err), SL_ETOOBIG);
  r = make_add(42, -1, 1, "x");
  assert_int_equal(sl_bookie_store_add(s, &r, sl_test_waiter_cb, &w, &err), SL_EINVAL);
  r = make_add(42, 1, 1, "x");
  r.lac = -2;
  assert_int_equal(sl_bookie_store_add(s, &r, sl_test_waiter_cb, &w, &err), SL_EINVAL);
  r = make_add(42, 1, 1, "x");
  r.payload = NULL;
  assert_int_equal(sl_bookie_store_add(s, &r, sl_test_waiter_cb, &w, &err), SL_EINVAL);
  r = make_add(42, 1, 1, "x");
  r.flags = 0x80;
  assert_int_equal(sl_bookie_store_add(s, &r, sl_test_waiter_cb, &w, &err), SL_EINVAL);
  assert_int_equal(sl_bookie_store_add(s, &r, NULL, &w, &err), SL_EINVAL);
  assert_int_equal(sl_bookie_store_add(s, NULL, sl_test_waiter_cb, &w, &err), SL_EINVAL);
  assert_int_equal(sl_bookie_store_write_lac(s, 42, 1, -5, NULL, 0, sl_test_waiter_cb, &w, &err), SL_EINVAL);
  assert_int_equal(w.done, 0); /* refused requests never call back */
  /* Nothing was stored by any of them. */
  uint64_t *ids;
  size_t n;
  sl_bookie_store_list_ledgers(s, &ids, &n);
  assert_int_equal(n, 0);
  assert_null(ids);
  assert_int_equal(read_status(s, 42, 7, &err), SL_ENOTFOUND);
  assert_string_equal(err.msg, "ledger 42: not found");

  assert_int_equal(add_str(s, 42, 0, 1, "x", NULL), SL_OK);
  assert_int_equal(read_status(s, 42, 1, &err), SL_ENOTFOUND);
  assert_string_equal(err.msg, "ledger 42 entry 1: not found");
  assert_int_equal(read_status(s, 42, -1, &err), SL_EINVAL);
  int64_t lac;
  assert_int_equal(sl_bookie_store_read_lac(s, 99, &lac, &err), SL_ENOTFOUND);
  assert_int_equal(delete_wait(s, 99, &err), SL_OK);
  sl_test_waiter_release(&w);
  sl_bookie_store_close(s);
  sl_bookie_store_close(NULL);
  sl_test_rmdtemp(dir);
}

static void test_bookie_store__duplicate_add(void **state) {
  (void)state;
  char *dir = sl_test_mkdtemp("bsdup");
  sl_bookie_store_opts o = gated_opts();
  sl_bookie_store *s = open_store(dir, &o);
  sl_err err = SL_ERR_INIT;
  assert_int_equal(add_str(s, 9, 0, 1, "same", NULL), SL_OK);
  assert_int_equal(add_str(s, 9, 1, 1, "one", NULL), SL_OK);
  assert_int_equal(add_str(s, 9, 0, 1, "same", NULL), SL_OK); /* resend: ok */
  assert_int_equal(add_str(s, 9, 0, 1, "different", &err), SL_ECONFLICT);
  assert_non_null(strstr(err.msg, "ledger 9 entry 0"));
  expect_read(s, 9, 0, "same");

  /* Resends of an entry still waiting for its sync. */
  sl_test_waiter w;
  sl_test_waiter_init(&w);
  sl_test_gate_set(&g_gate, true, false);
  sl_bookie_add_req a = make_add(9, 2, 1, "queued");
  sl_bookie_add_req b = make_add(9, 3, 1, "filler");
  assert_int_equal(sl_bookie_store_add(s, &a, sl_test_waiter_cb, &w, NULL), SL_OK);
  sl_test_gate_wait_blocked(&g_gate);
  assert_int_equal(sl_bookie_store_add(s, &b, sl_test_waiter_cb, &w, NULL), SL_OK);
  assert_int_equal(sl_bookie_store_add(s, &a, sl_test_waiter_cb, &w, NULL), SL_OK);
  sl_bookie_add_req c = make_add(9, 2, 1, "other");
  assert_int_equal(sl_bookie_store_add(s, &c, sl_test_waiter_cb, &w, &err), SL_ECONFLICT);
  sl_test_gate_set(&g_gate, false, false);
  assert_true(sl_test_waiter_wait(&w, 3, 10000));
  assert_int_equal(w.ok, 3);
  expect_read(s, 9, 2, "queued");
  sl_ledger_meta m;
  assert_int_equal(sl_bookie_store_ledger_meta(s, 9, &m, NULL), SL_OK);
  assert_int_equal(m.entries, 4); /* resends are not counted twice */
  assert_int_equal(m.last_entry, 3);
  sl_test_waiter_release(&w);
  close_and_drop(s, dir);
}

/* A large payload that differs per entry in its first byte and its letter. */
static void fill_payload(char *payload, size_t size, int e) {
  memset(payload, 'a' + e % 26, size - 1);
  payload[size - 1] = '\0';
  payload[0] = (char)('0' + e % 10);
}

static void test_bookie_store__checkpoint_and_replay(void **state) {
  (void)state;
  char *dir = sl_test_mkdtemp("bsckpt");
  sl_bookie_store_opts o = test_opts();
  o.journal_segment_bytes = 64u << 10;
  sl_bookie_store *s = open_store(dir, &o);
  char payload[2000];
  for (int e = 0; e < 200; e++) {
    fill_payload(payload, sizeof(payload), e);
    assert_int_equal(add_str(s, 11, e, 1, payload, NULL), SL_OK);
  }
  sl_bookie_store_info info;
  sl_bookie_store_info_get(s, &info);
  assert_true(info.journal_segments > 3);
  assert_int_equal(sl_bookie_store_checkpoint(s, NULL), SL_OK);
  sl_bookie_store_info_get(s, &info);
  assert_int_equal(info.journal_segments, 1);

  /* After the checkpoint: more adds, a fence, a whole ledger added and then
   * deleted. None of it is checkpointed. */
  for (int e = 200; e < 260; e++) {
    snprintf(payload, sizeof(payload), "after checkpoint %d", e);
    assert_int_equal(add_str(s, 11, e, 1, payload, NULL), SL_OK);
  }
  for (int e = 0; e < 10; e++) assert_int_equal(add_str(s, 12, e, 1, "doomed", NULL), SL_OK);
  assert_int_equal(delete_wait(s, 12, NULL), SL_OK);
  assert_int_equal(fence_wait(s, 11, 2, NULL), SL_OK);

  /* A snapshot now is what kill -9 would leave: replay must rebuild it. */
  char *copy = fresh_path("bsckpt-copy");
  sl_test_copy_tree(dir, copy);
  sl_bookie_store *c = open_store(copy, &o);
  sl_bookie_store_info_get(c, &info);
  assert_int_equal(info.replayed_records, 60 + 10 + 1 + 1);
  assert_int_equal(info.ledgers, 1);
  assert_int_equal(info.entries, 260);
  for (int e = 0; e < 260; e += 7) {
    if (e < 200) {
      fill_payload(payload, sizeof(payload), e);
    } else {
      snprintf(payload, sizeof(payload), "after checkpoint %d", e);
    }
    expect_read(c, 11, e, payload);
  }
  assert_int_equal(read_status(c, 12, 0, NULL), SL_EDELETED);
  sl_ledger_meta m;
  assert_int_equal(sl_bookie_store_ledger_meta(c, 11, &m, NULL), SL_OK);
  assert_true(m.fenced);
  assert_int_equal(m.last_entry, 259);
  assert_int_equal(m.lac, 258);
  sl_bookie_store_close(c);
  /* Replaying again (the copy was checkpointed at open and close) is clean. */
  c = open_store(copy, &o);
  sl_bookie_store_info_get(c, &info);
  assert_int_equal(info.replayed_records, 0);
  assert_int_equal(info.entries, 260);
  sl_bookie_store_close(c);
  sl_bookie_store_close(s);
  sl_test_rmdtemp(copy);
  sl_test_rmdtemp(dir);
}

/* Power-cut model: ledger storage loses everything since the last checkpoint
 * (its unsynced writes), the journal keeps everything that was acked (it was
 * synced). Replay alone must rebuild the acked state. */
static void test_bookie_store__power_cut_replays_from_checkpoint(void **state) {
  (void)state;
  char *dir = sl_test_mkdtemp("bspower");
  char *copy = sl_test_mkdtemp("bspower-copy");
  split_dirs sd = split_dirs_make(dir, copy);
  sl_bookie_store_opts o = test_opts();
  o.journal_segment_bytes = 8u << 10;
  sl_bookie_store *s = open_store(dir, &o);
  char payload[64];
  for (int e = 0; e < 100; e++) {
    snprintf(payload, sizeof(payload), "early %d", e);
    assert_int_equal(add_str(s, 21, e, 1, payload, NULL), SL_OK);
    assert_int_equal(add_str(s, 22, e, 1, payload, NULL), SL_OK);
  }
  assert_int_equal(sl_bookie_store_checkpoint(s, NULL), SL_OK);
  sl_test_copy_tree(sd.ledgers, sd.copy_ledgers); /* synced state at the checkpoint */
  for (int e = 100; e < 400; e++) {
    snprintf(payload, sizeof(payload), "late %d", e);
    assert_int_equal(add_str(s, 21, e, 2, payload, NULL), SL_OK);
  }
  assert_int_equal(delete_wait(s, 22, NULL), SL_OK);
  assert_int_equal(fence_wait(s, 21, 3, NULL), SL_OK);
  sl_bookie_store_info info;
  sl_bookie_store_info_get(s, &info);
  assert_true(info.journal_segments > 1);
  sl_test_copy_tree(sd.journal, sd.copy_journal); /* everything acked, synced */
  sl_bookie_store_close(s);

  s = open_store(copy, &o);
  sl_bookie_store_info_get(s, &info);
  assert_int_equal(info.replayed_records, 300 + 2);
  assert_int_equal(info.ledgers, 1);
  assert_int_equal(info.entries, 400);
  for (int e = 0; e < 400; e++) {
    snprintf(payload, sizeof(payload), e < 100 ? "early %d" : "late %d", e);
    expect_read(s, 21, e, payload);
  }
  assert_int_equal(read_status(s, 22, 0, NULL), SL_EDELETED);
  sl_ledger_meta m;
  assert_int_equal(sl_bookie_store_ledger_meta(s, 21, &m, NULL), SL_OK);
  assert_true(m.fenced);
  assert_int_equal(m.max_epoch, 3);
  assert_int_equal(m.lac, 398);
  sl_bookie_store_close(s);
  split_dirs_free(&sd);
  sl_test_rmdtemp(copy);
  sl_test_rmdtemp(dir);
}

/* Writes a LAC and waits for the callback. */
static sl_status write_lac_wait(sl_bookie_store *s, uint64_t ledger, uint64_t epoch,
                                int64_t lac, sl_err *err) {
  sl_test_waiter w;
  sl_test_waiter_init(&w);
  sl_status st = sl_bookie_store_write_lac(s, ledger, epoch, lac, NULL, 0,
                                           sl_test_waiter_cb, &w, err);
  if (st == SL_OK) {
    assert_true(sl_test_waiter_wait(&w, 1, 10000));
    if (w.ok != 1) st = w.last_st;
  }
  sl_test_waiter_release(&w);
  return st;
}

/* Everything that could bring a deleted ledger back is refused. */
static void expect_tombstone(sl_bookie_store *s, uint64_t ledger) {
  sl_err err = SL_ERR_INIT;
  assert_int_equal(read_status(s, ledger, 0, &err), SL_EDELETED);
  int64_t lac;
  assert_int_equal(sl_bookie_store_read_lac(s, ledger, &lac, NULL), SL_EDELETED);
  assert_int_equal(add_str(s, ledger, 0, 1, "reborn", &err), SL_EDELETED);
  assert_string_equal(err.msg, "ledger 2: deleted");
  sl_bookie_add_req r = make_add(ledger, 30, 9, "recovery");
  r.flags = SL_BOOKIE_ADD_RECOVERY;
  assert_int_equal(add_wait(s, &r, NULL), SL_EDELETED);
  assert_int_equal(fence_wait(s, ledger, 9, NULL), SL_EDELETED);
  assert_int_equal(write_lac_wait(s, ledger, 9, 5, NULL), SL_EDELETED);
}

static void test_bookie_store__delete_leaves_tombstone(void **state) {
  (void)state;
  char *dir = sl_test_mkdtemp("bsdel");
  sl_bookie_store_opts o = test_opts();
  sl_bookie_store *s = open_store(dir, &o);
  for (int e = 0; e < 30; e++) {
    assert_int_equal(add_pw(s, 1, e, 1, "keep", "pw1", NULL), SL_OK);
    assert_int_equal(add_pw(s, 2, e, 1, "drop", "pw2", NULL), SL_OK);
  }
  assert_int_equal(fence_pw(s, 2, 1, "pw2", 3, NULL), SL_OK);
  sl_err err = SL_ERR_INIT;
  assert_int_equal(delete_pw(s, 2, "pw1", &err), SL_EPERM); /* not its password */
  expect_read(s, 2, 0, "drop");
  assert_int_equal(delete_pw(s, 2, "pw2", NULL), SL_OK);
  expect_tombstone(s, 2);
  assert_int_equal(delete_pw(s, 2, "pw2", NULL), SL_OK); /* again: idempotent */
  uint64_t *ids;
  size_t n;
  sl_bookie_store_list_ledgers(s, &ids, &n);
  assert_int_equal(n, 1);
  assert_int_equal(ids[0], 1);
  free(ids);
  /* An unknown ledger is tombstoned too, so a late add cannot create it. */
  assert_int_equal(delete_wait(s, 3, NULL), SL_OK);
  assert_int_equal(add_str(s, 3, 0, 1, "late", NULL), SL_EDELETED);

  /* Clean restart: tombstones come from ledger storage. */
  sl_bookie_store_close(s);
  s = open_store(dir, &o);
  expect_read(s, 1, 29, "keep");
  expect_tombstone(s, 2);
  sl_bookie_store_info info;
  sl_bookie_store_info_get(s, &info);
  assert_int_equal(info.entries, 30);
  assert_int_equal(info.ledgers, 1);
  assert_int_equal(info.tombstones, 2);
  sl_bookie_store_close(s);
  sl_test_rmdtemp(dir);
}

/* Power-cut model: the delete is only in the journal; replay must rebuild
 * the tombstone, not just drop the entries. */
static void test_bookie_store__tombstone_replayed(void **state) {
  (void)state;
  char *dir = sl_test_mkdtemp("bsdelp");
  char *copy = sl_test_mkdtemp("bsdelp-copy");
  split_dirs sd = split_dirs_make(dir, copy);
  sl_bookie_store_opts o = test_opts();
  sl_bookie_store *s = open_store(dir, &o);
  for (int e = 0; e < 10; e++) assert_int_equal(add_str(s, 2, e, 1, "drop", NULL), SL_OK);
  assert_int_equal(sl_bookie_store_checkpoint(s, NULL), SL_OK);
  sl_test_copy_tree(sd.ledgers, sd.copy_ledgers); /* holds ledger 2's entries */
  assert_int_equal(delete_wait(s, 2, NULL), SL_OK);
  sl_test_copy_tree(sd.journal, sd.copy_journal);
  sl_bookie_store_close(s);
  s = open_store(copy, &o);
  sl_bookie_store_info info;
  sl_bookie_store_info_get(s, &info);
  assert_int_equal(info.replayed_records, 1);
  assert_int_equal(info.entries, 0);
  expect_tombstone(s, 2);
  sl_bookie_store_close(s);
  split_dirs_free(&sd);
  sl_test_rmdtemp(copy);
  sl_test_rmdtemp(dir);
}

static void test_bookie_store__sync_failure_fails_store(void **state) {
  (void)state;
  char *dir = sl_test_mkdtemp("bsfail");
  sl_bookie_store_opts o = gated_opts();
  sl_bookie_store *s = open_store(dir, &o);
  assert_int_equal(add_str(s, 1, 0, 1, "good", NULL), SL_OK);
  sl_test_gate_set(&g_gate, false, true);
  sl_err err = SL_ERR_INIT;
  assert_int_equal(add_str(s, 1, 1, 1, "lost", &err), SL_EFAILED);
  assert_non_null(strstr(err.msg, "fdatasync"));
  sl_test_gate_set(&g_gate, false, false);
  assert_int_equal(add_str(s, 1, 2, 1, "refused", &err), SL_EFAILED);
  assert_int_equal(fence_wait(s, 1, 1, &err), SL_EFAILED);
  expect_read(s, 1, 0, "good"); /* reads still served */
  sl_bookie_store_info info;
  sl_bookie_store_info_get(s, &info);
  assert_true(info.failed);
  sl_bookie_store_close(s);
  /* Restart recovers: everything acked is there. */
  s = open_store(dir, &o);
  expect_read(s, 1, 0, "good");
  /* The writer resends what failed; the record may or may not have made it
   * to disk before the failed sync, and either way the resend succeeds. */
  assert_int_equal(add_str(s, 1, 1, 1, "lost", NULL), SL_OK);
  expect_read(s, 1, 1, "lost");
  close_and_drop(s, dir);
}

typedef struct rw_arg {
  sl_bookie_store *s;
  uint64_t ledger;
  atomic_int *errors;
} rw_arg;

/* Pipelined adds (32 in flight) and reads of what is already acked. */
static void *adder_reader(void *p) {
  rw_arg *a = p;
  enum { N = 300, WINDOW = 32 };
  static char payloads[8][N][32];
  char (*pl)[32] = payloads[a->ledger % 8];
  sl_test_waiter w;
  sl_test_waiter_init(&w);
  sl_bookie_add_req *reqs = calloc(N, sizeof(*reqs));
  for (int e = 0; e < N; e++) {
    snprintf(pl[e], sizeof(pl[e]), "l%" PRIu64 "e%d", a->ledger, e);
    reqs[e] = make_add(a->ledger, e, 1, pl[e]);
    if (e >= WINDOW && !sl_test_waiter_wait(&w, (uint64_t)(e - WINDOW + 1), 10000)) abort();
    if (sl_bookie_store_add(a->s, &reqs[e], sl_test_waiter_cb, &w, NULL) != SL_OK) abort();
    if (e >= WINDOW && e % 10 == 0) {
      sl_ledger_entry en = SL_LEDGER_ENTRY_INIT;
      /* Entry 0's callback ran before any other, and acks imply readable. */
      if (sl_bookie_store_read(a->s, a->ledger, 0, &en, NULL) != SL_OK) atomic_fetch_add(a->errors, 1);
      else if (en.len != strlen(pl[0]) || memcmp(en.payload, pl[0], en.len) != 0) atomic_fetch_add(a->errors, 1);
      sl_ledger_entry_release(&en);
    }
  }
  if (!sl_test_waiter_wait(&w, N, 10000)) abort();
  if (w.ok != N) atomic_fetch_add(a->errors, 1);
  sl_test_waiter_release(&w);
  free(reqs);
  return NULL;
}

static void test_bookie_store__concurrent_adds_and_reads(void **state) {
  (void)state;
  enum { THREADS = 8 };
  char *dir = sl_test_mkdtemp("bsconc");
  sl_bookie_store_opts o = test_opts();
  o.checkpoint_interval_ms = 20; /* checkpoints race with adds too */
  o.journal_segment_bytes = 64u << 10;
  sl_bookie_store *s = open_store(dir, &o);
  atomic_int errors = 0;
  pthread_t th[THREADS];
  rw_arg args[THREADS];
  for (int i = 0; i < THREADS; i++) {
    args[i] = (rw_arg){s, (uint64_t)i, &errors};
    assert_int_equal(pthread_create(&th[i], NULL, adder_reader, &args[i]), 0);
  }
  for (int i = 0; i < THREADS; i++) pthread_join(th[i], NULL);
  assert_int_equal(atomic_load(&errors), 0);
  sl_bookie_store_close(s);
  s = open_store(dir, &o);
  char buf[32];
  for (int i = 0; i < THREADS; i++) {
    for (int e = 0; e < 300; e += 13) {
      snprintf(buf, sizeof(buf), "l%de%d", i, e);
      expect_read(s, (uint64_t)i, e, buf);
    }
  }
  sl_bookie_store_info info;
  sl_bookie_store_info_get(s, &info);
  assert_int_equal(info.entries, THREADS * 300);
  close_and_drop(s, dir);
}

/* Invariant 7: the first add records the digest of its password; another
 * password is refused on add and fence and changes nothing. */
static void test_bookie_store__password_recorded_and_checked(void **state) {
  (void)state;
  char *dir = sl_test_mkdtemp("bspw");
  sl_bookie_store_opts o = test_opts();
  sl_bookie_store *s = open_store(dir, &o);
  sl_err err = SL_ERR_INIT;
  const char *pw = "ledger-42-password-3f9a7c";
  assert_int_equal(add_pw(s, 42, 0, 1, "first", pw, NULL), SL_OK);
  expect_key(s, 42, pw);
  sl_ledger_meta before, after;
  assert_int_equal(sl_bookie_store_ledger_meta(s, 42, &before, NULL), SL_OK);

  assert_int_equal(add_pw(s, 42, 1, 1, "intruder", "ledger-42-password-3f9a7d", &err),
                   SL_EPERM);
  assert_string_equal(err.msg, "ledger 42: wrong password");
  assert_int_equal(add_pw(s, 42, 1, 1, "intruder", NULL, &err), SL_EPERM); /* empty */
  assert_int_equal(add_pw(s, 42, 0, 1, "first", "x", &err), SL_EPERM);     /* resend */
  assert_int_equal(fence_pw(s, 42, 5, "nope", 4, &err), SL_EPERM);
  assert_string_equal(err.msg, "ledger 42: wrong password");
  /* Checked first: even a stale epoch hears only about the password. */
  assert_int_equal(fence_pw(s, 42, 0, "nope", 4, &err), SL_EPERM);
  assert_int_equal(sl_bookie_store_ledger_meta(s, 42, &after, NULL), SL_OK);
  assert_false(after.fenced);
  assert_int_equal(after.max_epoch, before.max_epoch);
  assert_int_equal(after.entries, before.entries);
  assert_int_equal(after.last_entry, before.last_entry);
  assert_int_equal(after.lac, before.lac);
  assert_true(after.has_key);
  assert_memory_equal(after.key, before.key, sizeof(after.key));
  assert_int_equal(read_status(s, 42, 1, NULL), SL_ENOTFOUND);

  /* The right password goes on working, for adds and for the fence. */
  assert_int_equal(add_pw(s, 42, 1, 1, "second", pw, NULL), SL_OK);
  assert_int_equal(fence_pw(s, 42, 2, pw, strlen(pw), NULL), SL_OK);
  assert_int_equal(add_pw(s, 42, 2, 2, "late", pw, &err), SL_EFENCED);
  expect_key(s, 42, pw);

  /* The empty password is a password: it is recorded and must match. */
  assert_int_equal(add_str(s, 43, 0, 1, "empty", NULL), SL_OK);
  expect_key(s, 43, "");
  assert_int_equal(add_pw(s, 43, 1, 1, "x", "x", &err), SL_EPERM);
  assert_int_equal(add_str(s, 43, 1, 1, "empty again", NULL), SL_OK);

  /* A fence of an unknown ledger records the key too. */
  assert_int_equal(fence_pw(s, 44, 1, "fencer", 6, NULL), SL_OK);
  expect_key(s, 44, "fencer");
  assert_int_equal(fence_pw(s, 44, 2, "other", 5, &err), SL_EPERM);
  sl_bookie_add_req r = make_add(44, 0, 1, "recovered");
  r.flags = SL_BOOKIE_ADD_RECOVERY;
  r.password = "fencer";
  r.password_len = 6;
  assert_int_equal(add_wait(s, &r, NULL), SL_OK);

  /* A NULL password with a length is a bad request, and creates nothing. */
  sl_test_waiter w;
  sl_test_waiter_init(&w);
  r = make_add(45, 0, 1, "x");
  r.password_len = 3;
  assert_int_equal(sl_bookie_store_add(s, &r, sl_test_waiter_cb, &w, &err), SL_EINVAL);
  assert_int_equal(sl_bookie_store_fence(s, 45, 1, NULL, 3, sl_test_waiter_cb, &w, &err),
                   SL_EINVAL);
  assert_int_equal(w.done, 0);
  sl_test_waiter_release(&w);
  assert_int_equal(sl_bookie_store_ledger_meta(s, 45, &after, &err), SL_ENOTFOUND);
  sl_bookie_store_close(s);

  /* Only the digest is kept, never the password (leveldb does not compress
   * here, so a stored copy would show). */
  uint8_t key[SL_LEDGER_KEY_BYTES];
  sha256(pw, strlen(pw), key);
  assert_true(tree_contains(dir, key, sizeof(key)));
  assert_false(tree_contains(dir, pw, strlen(pw)));
  sl_test_rmdtemp(dir);
}

/* The key survives a clean restart, and replay rebuilds it from the journal
 * alone (the ledger storage copy predates it: the power-cut model). */
static void test_bookie_store__password_survives_reopen_and_replay(void **state) {
  (void)state;
  char *dir = sl_test_mkdtemp("bspwre");
  char *copy = sl_test_mkdtemp("bspwre-copy");
  split_dirs sd = split_dirs_make(dir, copy);
  sl_bookie_store_opts o = test_opts();
  sl_bookie_store *s = open_store(dir, &o);
  sl_err err = SL_ERR_INIT;
  assert_int_equal(add_str(s, 1, 0, 1, "bystander", NULL), SL_OK);
  assert_int_equal(sl_bookie_store_checkpoint(s, NULL), SL_OK);
  sl_test_copy_tree(sd.ledgers, sd.copy_ledgers); /* synced state: no ledger 7 or 8 */
  for (int e = 0; e < 3; e++) assert_int_equal(add_pw(s, 7, e, 1, "seven", "pw7", NULL), SL_OK);
  assert_int_equal(fence_pw(s, 8, 1, "pw8", 3, NULL), SL_OK);
  sl_test_copy_tree(sd.journal, sd.copy_journal); /* everything acked, synced */
  sl_bookie_store_close(s);

  s = open_store(dir, &o);
  expect_key(s, 7, "pw7");
  expect_key(s, 8, "pw8");
  assert_int_equal(add_pw(s, 7, 3, 1, "x", "pw8", &err), SL_EPERM);
  assert_int_equal(fence_pw(s, 8, 2, "pw7", 3, &err), SL_EPERM);
  sl_bookie_store_close(s);

  s = open_store(copy, &o);
  sl_bookie_store_info info;
  sl_bookie_store_info_get(s, &info);
  assert_int_equal(info.replayed_records, 4);
  expect_key(s, 7, "pw7");
  expect_key(s, 8, "pw8");
  sl_ledger_meta m;
  assert_int_equal(sl_bookie_store_ledger_meta(s, 8, &m, NULL), SL_OK);
  assert_true(m.fenced);
  assert_int_equal(add_pw(s, 7, 3, 1, "x", "", &err), SL_EPERM);
  assert_string_equal(err.msg, "ledger 7: wrong password");
  assert_int_equal(fence_pw(s, 8, 2, "", 0, &err), SL_EPERM);
  assert_int_equal(add_pw(s, 7, 3, 1, "eight", "pw7", NULL), SL_OK);
  sl_bookie_store_close(s);
  s = open_store(copy, &o); /* replayed state was checkpointed: still keyed */
  expect_key(s, 7, "pw7");
  expect_read(s, 7, 3, "eight");
  assert_int_equal(add_pw(s, 7, 4, 1, "x", "pw8", &err), SL_EPERM);
  sl_bookie_store_close(s);
  split_dirs_free(&sd);
  sl_test_rmdtemp(copy);
  sl_test_rmdtemp(dir);
}

/* Rewrites a ledger's stored state in the format from before keys (version
 * 1, 42 bytes, no key), through the raw leveldb API. */
static void make_legacy_state(const char *store_dir, uint64_t ledger) {
  raw_db r = raw_open(store_dir, true);
  uint8_t k[9] = {'L'};
  for (int i = 0; i < 8; i++) k[1 + i] = (uint8_t)(ledger >> (56 - 8 * i));
  size_t vlen;
  char *v = raw_get(&r, k, sizeof(k), &vlen);
  assert_int_equal(vlen, 42 + SL_LEDGER_KEY_BYTES);
  assert_int_equal(v[0], 2);
  v[0] = 1;
  v[1] &= 1; /* only "fenced" existed */
  raw_put(&r, k, sizeof(k), v, 42);
  leveldb_free(v);
  raw_close(&r);
}

/* A state from before keys stays readable and adopts the next password. */
static void test_bookie_store__legacy_state_adopts_key(void **state) {
  (void)state;
  char *dir = sl_test_mkdtemp("bslegacy");
  sl_bookie_store_opts o = test_opts();
  sl_bookie_store *s = open_store(dir, &o);
  sl_err err = SL_ERR_INIT;
  for (int e = 0; e < 3; e++) assert_int_equal(add_pw(s, 9, e, 1, "old", "forgotten", NULL), SL_OK);
  assert_int_equal(add_pw(s, 10, 0, 1, "old", "forgotten", NULL), SL_OK);
  assert_int_equal(fence_pw(s, 10, 1, "forgotten", 9, NULL), SL_OK);
  sl_bookie_store_close(s);
  make_legacy_state(dir, 9);
  make_legacy_state(dir, 10);

  s = open_store(dir, &o);
  sl_ledger_meta m;
  assert_int_equal(sl_bookie_store_ledger_meta(s, 9, &m, NULL), SL_OK);
  assert_false(m.has_key);
  assert_int_equal(m.entries, 3);
  assert_int_equal(m.last_entry, 2);
  for (int e = 0; e < 3; e++) expect_read(s, 9, e, "old");
  assert_int_equal(sl_bookie_store_ledger_meta(s, 10, &m, NULL), SL_OK);
  assert_false(m.has_key);
  assert_true(m.fenced);
  /* The next add adopts its password; the one before is now refused. */
  assert_int_equal(add_pw(s, 9, 3, 1, "new", "adopted", NULL), SL_OK);
  expect_key(s, 9, "adopted");
  assert_int_equal(add_pw(s, 9, 4, 1, "x", "forgotten", &err), SL_EPERM);
  /* A fence adopts too. */
  assert_int_equal(fence_pw(s, 10, 2, "fencer", 6, NULL), SL_OK);
  expect_key(s, 10, "fencer");
  assert_int_equal(fence_pw(s, 10, 3, "forgotten", 9, &err), SL_EPERM);
  /* So does a state created by a LAC update, which carries no password. */
  sl_test_waiter w;
  sl_test_waiter_init(&w);
  assert_int_equal(sl_bookie_store_write_lac(s, 11, 1, 0, NULL, 0, sl_test_waiter_cb, &w, NULL), SL_OK);
  assert_true(sl_test_waiter_wait(&w, 1, 10000));
  assert_int_equal(w.ok, 1);
  sl_test_waiter_release(&w);
  assert_int_equal(sl_bookie_store_ledger_meta(s, 11, &m, NULL), SL_OK);
  assert_false(m.has_key);
  assert_int_equal(add_pw(s, 11, 0, 1, "a", "lac-first", NULL), SL_OK);
  expect_key(s, 11, "lac-first");
  sl_bookie_store_close(s);

  s = open_store(dir, &o);
  expect_key(s, 9, "adopted");
  expect_key(s, 10, "fencer");
  expect_key(s, 11, "lac-first");
  assert_int_equal(add_pw(s, 9, 4, 1, "x", "forgotten", &err), SL_EPERM);
  expect_read(s, 9, 3, "new");
  close_and_drop(s, dir);
}

/* journal_bytes: the journal after the last checkpoint, across segments. */
static void test_bookie_store__journal_bytes(void **state) {
  (void)state;
  char *dir = sl_test_mkdtemp("bsjbytes");
  sl_bookie_store_opts o = test_opts();
  o.journal_segment_bytes = 64u << 10;
  sl_bookie_store *s = open_store(dir, &o);
  sl_bookie_store_info info;
  sl_bookie_store_info_get(s, &info);
  uint64_t idle = info.journal_bytes; /* the open's checkpoint marker */
  assert_true(idle < 1024);
  char payload[2001];
  memset(payload, 'j', sizeof(payload) - 1);
  payload[sizeof(payload) - 1] = '\0';
  uint64_t prev = idle;
  for (int e = 0; e < 100; e++) {
    assert_int_equal(add_str(s, 3, e, 1, payload, NULL), SL_OK);
    sl_bookie_store_info_get(s, &info);
    assert_true(info.journal_bytes >= prev + 2000);
    prev = info.journal_bytes;
  }
  assert_true(info.journal_segments > 2);
  assert_true(info.journal_bytes >= idle + 100 * (2000 + SL_JOURNAL_RECORD_HEADER));
  assert_int_equal(sl_bookie_store_checkpoint(s, NULL), SL_OK);
  sl_bookie_store_info_get(s, &info);
  assert_true(info.journal_bytes < 1024);
  assert_int_equal(add_str(s, 3, 100, 1, "small", NULL), SL_OK);
  sl_bookie_store_info_get(s, &info);
  assert_true(info.journal_bytes >= 5 + SL_JOURNAL_RECORD_HEADER);
  close_and_drop(s, dir);
}

/* Adds in flight over all writers are bounded: past the cap, BUSY (and
 * nothing queued); once they complete, adds are admitted again. */
static void test_bookie_store__busy_past_inflight_cap(void **state) {
  (void)state;
  char *dir = sl_test_mkdtemp("bsbusy");
  sl_bookie_store_opts o = gated_opts();
  o.max_inflight_bytes = 100;
  sl_bookie_store *s = open_store(dir, &o);
  sl_test_waiter w;
  sl_test_waiter_init(&w);
  sl_test_gate_set(&g_gate, true, false);
  char big[151];
  memset(big, 'b', 150);
  big[150] = '\0';
  sl_bookie_add_req r0 = make_add(6, 0, 1, big); /* alone: admitted */
  assert_int_equal(sl_bookie_store_add(s, &r0, sl_test_waiter_cb, &w, NULL), SL_OK);
  sl_test_gate_wait_blocked(&g_gate);
  sl_err err = SL_ERR_INIT;
  sl_bookie_add_req r1 = make_add(7, 0, 1, "x");
  assert_int_equal(sl_bookie_store_add(s, &r1, sl_test_waiter_cb, &w, &err), SL_EBUSY);
  assert_non_null(strstr(err.msg, "150 bytes of adds in flight"));
  sl_test_gate_set(&g_gate, false, false);
  assert_true(sl_test_waiter_wait(&w, 1, 10000));
  assert_int_equal(w.ok, 1);
  assert_int_equal(add_str(s, 7, 0, 1, "x", NULL), SL_OK);
  sl_bookie_store_close(s);
  sl_test_waiter_release(&w);
  sl_test_rmdtemp(dir);
}

/* ---- contracts a ledger writer relies on (issue 8) ---- */

/* The checksum binds ledger and entry ids: the right bytes under the wrong
 * id are refused, and so is the old payload-only CRC. */
static void test_bookie_store__checksum_covers_ids(void **state) {
  (void)state;
  char *dir = sl_test_mkdtemp("bscrcid");
  sl_bookie_store_opts o = test_opts();
  sl_bookie_store *s = open_store(dir, &o);
  sl_err err = SL_ERR_INIT;
  sl_bookie_add_req r = make_add(42, 7, 1, "payload");
  r.crc = sl_entry_crc(42, 8, "payload", 7); /* another entry's checksum */
  assert_int_equal(add_wait(s, &r, &err), SL_EBADCRC);
  assert_non_null(strstr(err.msg, "ledger 42 entry 7: checksum mismatch"));
  r.crc = sl_entry_crc(43, 7, "payload", 7); /* another ledger's */
  assert_int_equal(add_wait(s, &r, NULL), SL_EBADCRC);
  r.crc = sl_crc32c("payload", 7); /* payload only */
  assert_int_equal(add_wait(s, &r, NULL), SL_EBADCRC);
  assert_int_equal(read_status(s, 42, 7, NULL), SL_ENOTFOUND);
  r.crc = sl_entry_crc(42, 7, "payload", 7);
  assert_int_equal(add_wait(s, &r, NULL), SL_OK);
  expect_read(s, 42, 7, "payload");
  close_and_drop(s, dir);
}

/* An entry cannot be confirmed before it is written. */
static void test_bookie_store__lac_must_be_below_entry(void **state) {
  (void)state;
  char *dir = sl_test_mkdtemp("bslac");
  sl_bookie_store_opts o = test_opts();
  sl_bookie_store *s = open_store(dir, &o);
  sl_err err = SL_ERR_INIT;
  sl_bookie_add_req r = make_add(5, 3, 1, "x");
  r.lac = 3;
  assert_int_equal(add_wait(s, &r, &err), SL_EINVAL);
  assert_string_equal(err.msg, "ledger 5 entry 3: lac 3 is not below the entry");
  r.lac = 10;
  assert_int_equal(add_wait(s, &r, NULL), SL_EINVAL);
  r = make_add(5, 0, 1, "x");
  r.lac = 0;
  assert_int_equal(add_wait(s, &r, NULL), SL_EINVAL);
  int64_t lac;
  assert_int_equal(sl_bookie_store_read_lac(s, 5, &lac, NULL), SL_ENOTFOUND);
  r.lac = -1;
  assert_int_equal(add_wait(s, &r, NULL), SL_OK);
  r = make_add(5, 1, 1, "y"); /* lac 0 */
  assert_int_equal(add_wait(s, &r, NULL), SL_OK);
  assert_int_equal(sl_bookie_store_read_lac(s, 5, &lac, NULL), SL_OK);
  assert_int_equal(lac, 0);
  close_and_drop(s, dir);
}

/* Read-only refuses adds but takes recovery adds, down to the hard floor. */
static void test_bookie_store__readonly_takes_recovery_adds_to_floor(void **state) {
  (void)state;
  char *dir = sl_test_mkdtemp("bsfloor");
  sl_bookie_store_opts o = test_opts();
  o.disk_limit_bytes = 1ull << 40;
  o.disk_high_pct = 50;
  o.disk_low_pct = 40;
  o.disk_floor_pct = 90;
  sl_bookie_store *s = open_store(dir, &o);
  assert_int_equal(add_str(s, 1, 0, 1, "before", NULL), SL_OK);
  sl_bookie_store_info info;
  sl_bookie_store_info_get(s, &info);
  uint64_t used = info.total_bytes - info.free_bytes;
  sl_bookie_store_set_disk_limit(s, used * 100 / 70); /* 70% used */
  sl_bookie_store_info_get(s, &info);
  assert_true(info.readonly);
  sl_err err = SL_ERR_INIT;
  assert_int_equal(add_str(s, 1, 1, 1, "plain", &err), SL_EREADONLY);
  sl_bookie_add_req r = make_add(1, 1, 1, "recovered");
  r.flags = SL_BOOKIE_ADD_RECOVERY;
  assert_int_equal(add_wait(s, &r, &err), SL_OK);
  expect_read(s, 1, 1, "recovered");
  sl_bookie_store_info_get(s, &info);
  used = info.total_bytes - info.free_bytes;
  sl_bookie_store_set_disk_limit(s, used * 100 / 95); /* 95%: past the floor */
  r = make_add(1, 2, 1, "too late");
  r.flags = SL_BOOKIE_ADD_RECOVERY;
  assert_int_equal(add_wait(s, &r, &err), SL_EREADONLY);
  assert_non_null(strstr(err.msg, "hard floor"));
  close_and_drop(s, dir);
}

static bool file_exists(const char *dir, const char *name) {
  char *p = subdir(dir, name);
  bool ok = access(p, F_OK) == 0;
  free(p);
  return ok;
}

static sl_status try_open(const char *dir, const sl_bookie_store_opts *o, sl_err *err) {
  sl_bookie_store *s = NULL;
  sl_status st = sl_bookie_store_open(dir, o, &s, err);
  sl_bookie_store_close(s);
  return st;
}

static void hex_decode(const char *hex, uint8_t *out, size_t n) {
  for (size_t i = 0; i < n; i++) {
    unsigned v;
    assert_int_equal(sscanf(hex + 2 * i, "%2x", &v), 1);
    out[i] = (uint8_t)v;
  }
}

/* The instance id: kept across restarts, stamped into the journal, new
 * after a wipe, and a store whose two dirs disagree does not open. */
static void test_bookie_store__instance_id(void **state) {
  (void)state;
  char *dir = sl_test_mkdtemp("bsinst");
  sl_bookie_store_opts o = test_opts();
  sl_bookie_store *s = open_store(dir, &o);
  char id[SL_BOOKIE_INSTANCE_ID_LEN];
  snprintf(id, sizeof(id), "%s", sl_bookie_store_instance_id(s));
  assert_int_equal(strlen(id), 32);
  assert_int_equal(strspn(id, "0123456789abcdef"), 32);
  assert_int_equal(add_str(s, 1, 0, 1, "x", NULL), SL_OK);
  sl_bookie_store_close(s);
  s = open_store(dir, &o);
  assert_string_equal(sl_bookie_store_instance_id(s), id);
  sl_bookie_store_close(s);
  char *journal = subdir(dir, "journal"), *ledgers = subdir(dir, "ledgers");
  assert_true(file_exists(journal, "INSTANCE"));
  assert_true(file_exists(ledgers, "INSTANCE"));
  uint8_t raw[16];
  hex_decode(id, raw, sizeof(raw));
  assert_true(tree_contains(journal, raw, sizeof(raw))); /* in segment headers */

  /* One dir wiped (journal, then ledgers): refuses to start. */
  sl_err err = SL_ERR_INIT;
  char *copy = fresh_path("bsinst-copy");
  char *copy_journal = subdir(copy, "journal"), *copy_ledgers = subdir(copy, "ledgers");
  sl_test_copy_tree(dir, copy);
  sl_test_rm_rf(copy_journal);
  assert_int_equal(try_open(copy, &o, &err), SL_ECORRUPT);
  assert_non_null(strstr(err.msg, "journal dir has no instance id, ledger dir has"));
  sl_test_rm_rf(copy);
  sl_test_copy_tree(dir, copy);
  sl_test_rm_rf(copy_ledgers);
  assert_int_equal(try_open(copy, &o, &err), SL_ECORRUPT);
  sl_test_rm_rf(copy);

  /* A journal segment stamped by another instance is never replayed. */
  sl_test_copy_tree(dir, copy);
  char *other = fresh_path("bsinst-other");
  s = open_store(other, &o);
  assert_string_not_equal(sl_bookie_store_instance_id(s), id);
  sl_bookie_store_close(s);
  char *other_journal = subdir(other, "journal");
  sl_test_rm_rf(copy_journal);
  sl_test_copy_tree(other_journal, copy_journal); /* a journal from another disk */
  assert_int_equal(try_open(copy, &o, &err), SL_ECORRUPT);
  assert_non_null(strstr(err.msg, "different bookie instances"));
  sl_test_rm_rf(copy);

  /* Whole disk wiped: a new instance. */
  sl_test_rm_rf(dir);
  s = open_store(dir, &o);
  assert_string_not_equal(sl_bookie_store_instance_id(s), id);
  sl_bookie_store_close(s);

  free(other_journal);
  sl_test_rmdtemp(other);
  free(copy_journal);
  free(copy_ledgers);
  free(copy);
  free(journal);
  free(ledgers);
  sl_test_rmdtemp(dir);
}

/* The id of the newest journal segment in `journal`. */
static uint64_t newest_segment(const char *journal) {
  DIR *d = opendir(journal);
  assert_non_null(d);
  uint64_t newest = 0;
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    unsigned long long id;
    if (strstr(de->d_name, ".jnl") != NULL && sscanf(de->d_name, "%16llx", &id) == 1 &&
        id > newest)
      newest = id;
  }
  closedir(d);
  assert_true(newest > 0);
  return newest;
}

static char *segment_path(const char *journal, uint64_t id) {
  char name[32];
  snprintf(name, sizeof(name), "%016" PRIx64 ".jnl", id);
  return subdir(journal, name);
}

/* A segment whose header claims this segment but another instance: replay
 * refuses it instead of serving its records. */
static void test_bookie_store__foreign_segment_refused(void **state) {
  (void)state;
  char *dir = sl_test_mkdtemp("bsforeign");
  sl_bookie_store_opts o = test_opts();
  sl_bookie_store *s = open_store(dir, &o);
  assert_int_equal(add_str(s, 1, 0, 1, "x", NULL), SL_OK);
  sl_bookie_store_close(s);
  /* Restamp the newest segment (the one replay starts in). */
  char *journal = subdir(dir, "journal");
  char *seg = segment_path(journal, newest_segment(journal));
  FILE *f = fopen(seg, "r+b");
  assert_non_null(f);
  uint8_t h[SL_JOURNAL_SEGMENT_HEADER];
  assert_int_equal(fread(h, 1, sizeof(h), f), sizeof(h));
  h[24] ^= 0xff;
  uint32_t crc = sl_crc32c(h, 44);
  for (int i = 0; i < 4; i++) h[44 + i] = (uint8_t)(crc >> (8 * i));
  rewind(f);
  assert_int_equal(fwrite(h, 1, sizeof(h), f), sizeof(h));
  fclose(f);
  sl_err err = SL_ERR_INIT;
  assert_int_equal(try_open(dir, &o, &err), SL_ECORRUPT);
  assert_non_null(strstr(err.msg, "of another bookie instance"));
  free(seg);
  free(journal);
  sl_test_rmdtemp(dir);
}

/* Power cut during a journal segment rotation: the new segment was created
 * but its header never reached the disk (empty, torn, or preallocated
 * zeros). Everything acked is in earlier segments; the store must open,
 * serve it, skip the broken segment and keep writing after it. */
static void test_bookie_store__power_cut_during_rotation(void **state) {
  (void)state;
  static const long kTorn[] = {0, 20, 64 << 10}; /* file sizes left behind */
  char *dir = sl_test_mkdtemp("bsrot");
  sl_bookie_store_opts o = test_opts();
  o.journal_segment_bytes = 8u << 10;
  sl_bookie_store *s = open_store(dir, &o);
  char payload[256];
  for (int e = 0; e < 100; e++) {
    snprintf(payload, sizeof(payload), "%0200d", e);
    assert_int_equal(add_str(s, 7, e, 1, payload, NULL), SL_OK);
  }
  sl_bookie_store_info info;
  sl_bookie_store_info_get(s, &info);
  assert_true(info.journal_segments > 2); /* rotations happened */
  for (size_t t = 0; t < sizeof(kTorn) / sizeof(kTorn[0]); t++) {
    /* Snapshot a live store (no close, no checkpoint): acked = durable. */
    char *copy = fresh_path("bsrot-copy");
    sl_test_copy_tree(dir, copy);
    char *cj = subdir(copy, "journal");
    char *seg = segment_path(cj, newest_segment(cj) + 1); /* the rotation's */
    FILE *f = fopen(seg, "wb");
    assert_non_null(f);
    for (long i = 0; i < kTorn[t]; i++) fputc(i < 8 ? "SLJOURN1"[i] : 0, f);
    fclose(f);
    sl_bookie_store *c = open_store(copy, &o);
    for (int e = 0; e < 100; e++) {
      snprintf(payload, sizeof(payload), "%0200d", e);
      expect_read(c, 7, e, payload);
    }
    assert_int_equal(add_str(c, 7, 100, 1, "after", NULL), SL_OK);
    sl_bookie_store_close(c);
    c = open_store(copy, &o); /* and again, with the broken segment still there */
    expect_read(c, 7, 100, "after");
    sl_bookie_store_close(c);
    free(seg);
    free(cj);
    sl_test_rmdtemp(copy);
  }
  sl_bookie_store_close(s);
  sl_test_rmdtemp(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_bookie_store__add_read_reopen),
      cmocka_unit_test(test_bookie_store__encryption_at_rest),
      cmocka_unit_test(test_bookie_store__group_commit_batches),
      cmocka_unit_test(test_bookie_store__fence_durable_across_reopen),
      cmocka_unit_test(test_bookie_store__fence_refuses_before_durable),
      cmocka_unit_test(test_bookie_store__stale_epoch_refused),
      cmocka_unit_test(test_bookie_store__corrupt_entry_read),
      cmocka_unit_test(test_bookie_store__readonly_and_back),
      cmocka_unit_test(test_bookie_store__readonly_tiny_threshold),
      cmocka_unit_test(test_bookie_store__bad_input),
      cmocka_unit_test(test_bookie_store__duplicate_add),
      cmocka_unit_test(test_bookie_store__checkpoint_and_replay),
      cmocka_unit_test(test_bookie_store__power_cut_replays_from_checkpoint),
      cmocka_unit_test(test_bookie_store__delete_leaves_tombstone),
      cmocka_unit_test(test_bookie_store__tombstone_replayed),
      cmocka_unit_test(test_bookie_store__sync_failure_fails_store),
      cmocka_unit_test(test_bookie_store__concurrent_adds_and_reads),
      cmocka_unit_test(test_bookie_store__password_recorded_and_checked),
      cmocka_unit_test(test_bookie_store__password_survives_reopen_and_replay),
      cmocka_unit_test(test_bookie_store__legacy_state_adopts_key),
      cmocka_unit_test(test_bookie_store__journal_bytes),
      cmocka_unit_test(test_bookie_store__checksum_covers_ids),
      cmocka_unit_test(test_bookie_store__lac_must_be_below_entry),
      cmocka_unit_test(test_bookie_store__readonly_takes_recovery_adds_to_floor),
      cmocka_unit_test(test_bookie_store__instance_id),
      cmocka_unit_test(test_bookie_store__foreign_segment_refused),
      cmocka_unit_test(test_bookie_store__power_cut_during_rotation),
      cmocka_unit_test(test_bookie_store__busy_past_inflight_cap),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
