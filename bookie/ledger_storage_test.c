#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <leveldb/c.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bookie/ledger_storage.h"
#include "bookie/testing/test_util.h"
#include "common/bytes.h"
#include "common/crc32c.h"

static sl_ledger_storage *open_ls(const char *path) {
  sl_ledger_storage *ls = NULL;
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_ledger_storage_leveldb_open(path, NULL, &ls, &err), SL_OK);
  return ls;
}

static void put_entry(sl_ledger_storage *ls, uint64_t ledger, int64_t entry,
                      const char *payload) {
  uint32_t len = (uint32_t)strlen(payload);
  sl_ls_op op = {SL_LS_PUT_ENTRY, ledger, entry, sl_entry_crc(ledger, entry, payload, len),
                 payload, len, {0}};
  assert_int_equal(sl_ledger_storage_write(ls, &op, 1, NULL, NULL), SL_OK);
}

static void expect_entry(sl_ledger_storage *ls, uint64_t ledger, int64_t entry,
                         const char *payload) {
  sl_ledger_entry e = SL_LEDGER_ENTRY_INIT;
  assert_int_equal(sl_ledger_storage_get_entry(ls, ledger, entry, &e, NULL), SL_OK);
  assert_int_equal(e.len, strlen(payload));
  assert_memory_equal(e.payload, payload, e.len);
  assert_int_equal(e.crc, sl_entry_crc(ledger, entry, payload, e.len));
  sl_ledger_entry_release(&e);
}

typedef struct metas {
  int n;
  sl_ledger_meta m[16];
} metas;

static sl_status collect_meta(const sl_ledger_meta *m, void *arg) {
  metas *c = arg;
  if (c->n < 16) c->m[c->n++] = *m;
  return SL_OK;
}

static void test_ledger_storage__put_get_meta(void **state) {
  (void)state;
  char *dir = sl_test_mkdtemp("lsput");
  sl_ledger_storage *ls = open_ls(dir);
  put_entry(ls, 7, 0, "zero");
  put_entry(ls, 7, 1, "one");
  put_entry(ls, 256, 0, "other ledger");
  put_entry(ls, 7, 300, "");
  expect_entry(ls, 7, 0, "zero");
  expect_entry(ls, 7, 1, "one");
  expect_entry(ls, 7, 300, "");
  expect_entry(ls, 256, 0, "other ledger");
  sl_ledger_entry e = SL_LEDGER_ENTRY_INIT;
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_ledger_storage_get_entry(ls, 7, 2, &e, &err), SL_ENOTFOUND);
  assert_string_equal(err.msg, "ledger 7 entry 2: not found");
  assert_null(e.payload);

  /* Metas come back in ledger id order (big-endian keys). */
  sl_ls_op ops[3];
  uint64_t ids[3] = {1u << 16, 5, 300};
  for (int i = 0; i < 3; i++) {
    ops[i] = (sl_ls_op){.kind = SL_LS_PUT_META,
                        .meta = {ids[i], i == 1, 10u + (uint64_t)i, i - 1, 4, 5, 6}};
  }
  assert_int_equal(sl_ledger_storage_write(ls, ops, 3, NULL, NULL), SL_OK);
  metas c = {0};
  assert_int_equal(sl_ledger_storage_scan_meta(ls, collect_meta, &c, NULL), SL_OK);
  assert_int_equal(c.n, 3);
  assert_int_equal(c.m[0].ledger, 5);
  assert_true(c.m[0].fenced);
  assert_int_equal(c.m[0].max_epoch, 11);
  assert_int_equal(c.m[0].lac, 0);
  assert_int_equal(c.m[1].ledger, 300);
  assert_int_equal(c.m[1].lac, 1);
  assert_int_equal(c.m[2].ledger, 1u << 16);
  assert_int_equal(c.m[2].lac, -1);
  assert_int_equal(c.m[2].last_entry, 4);
  assert_int_equal(c.m[2].entries, 5);
  assert_int_equal(c.m[2].bytes, 6);
  sl_ledger_storage_close(ls);
  sl_test_rmdtemp(dir);
}

static void test_ledger_storage__delete_ledger(void **state) {
  (void)state;
  char *dir = sl_test_mkdtemp("lsdel");
  sl_ledger_storage *ls = open_ls(dir);
  for (int e = 0; e < 50; e++) {
    put_entry(ls, 9, e, "nine");
    put_entry(ls, 10, e, "ten");
  }
  put_entry(ls, 8, 0, "eight");
  sl_ls_op meta = {.kind = SL_LS_PUT_META, .meta = {9, false, 1, 49, 49, 50, 200}};
  assert_int_equal(sl_ledger_storage_write(ls, &meta, 1, NULL, NULL), SL_OK);
  sl_ls_op del = {.kind = SL_LS_DELETE_LEDGER, .ledger = 9};
  assert_int_equal(sl_ledger_storage_write(ls, &del, 1, NULL, NULL), SL_OK);
  sl_ledger_entry e = SL_LEDGER_ENTRY_INIT;
  for (int i = 0; i < 50; i++) {
    assert_int_equal(sl_ledger_storage_get_entry(ls, 9, i, &e, NULL), SL_ENOTFOUND);
  }
  expect_entry(ls, 8, 0, "eight");
  expect_entry(ls, 10, 0, "ten");
  expect_entry(ls, 10, 49, "ten");
  metas c = {0};
  assert_int_equal(sl_ledger_storage_scan_meta(ls, collect_meta, &c, NULL), SL_OK);
  assert_int_equal(c.n, 0);
  sl_ledger_storage_close(ls);
  sl_test_rmdtemp(dir);
}

static void test_ledger_storage__checkpoint_survives_reopen(void **state) {
  (void)state;
  char *dir = sl_test_mkdtemp("lsckpt");
  sl_ledger_storage *ls = open_ls(dir);
  sl_journal_pos p;
  assert_int_equal(sl_ledger_storage_get_checkpoint(ls, &p, NULL), SL_OK);
  assert_int_equal(p.segment, 0);
  put_entry(ls, 1, 0, "a");
  sl_journal_pos want = {3, 4096};
  assert_int_equal(sl_ledger_storage_write(ls, NULL, 0, &want, NULL), SL_OK);
  sl_ledger_storage_close(ls);
  ls = open_ls(dir);
  assert_int_equal(sl_ledger_storage_get_checkpoint(ls, &p, NULL), SL_OK);
  assert_int_equal(sl_journal_pos_cmp(p, want), 0);
  expect_entry(ls, 1, 0, "a");
  sl_ledger_storage_close(ls);
  sl_test_rmdtemp(dir);
}

static uint64_t log_bytes(const char *dir) {
  DIR *d = opendir(dir);
  assert_non_null(d);
  uint64_t total = 0;
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    size_t n = strlen(de->d_name);
    if (n < 4 || strcmp(de->d_name + n - 4, ".log") != 0) continue;
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    total += (uint64_t)sb.st_size;
  }
  closedir(d);
  return total;
}

/* leveldb leaves an older log unsynced when it switches logs, so a checkpoint
 * must move everything out of the logs into synced tables. */
static void test_ledger_storage__checkpoint_flushes_logs(void **state) {
  (void)state;
  char *dir = sl_test_mkdtemp("lsflush");
  sl_ledger_storage_leveldb_opts o = SL_LEDGER_STORAGE_LEVELDB_OPTS_INIT;
  o.entry_log = false; /* payloads in leveldb values, so in its logs */
  o.write_buffer_bytes = 256u << 10; /* several log switches below */
  sl_ledger_storage *ls = NULL;
  assert_int_equal(sl_ledger_storage_leveldb_open(dir, &o, &ls, NULL), SL_OK);
  static char payload[4000];
  memset(payload, 'p', sizeof(payload) - 1);
  for (int e = 0; e < 300; e++) put_entry(ls, 3, e, payload);
  assert_true(log_bytes(dir) > 100000);
  sl_journal_pos ck = {1, 32};
  assert_int_equal(sl_ledger_storage_write(ls, NULL, 0, &ck, NULL), SL_OK);
  /* What remains in logs is the checkpoint record itself. */
  assert_true(log_bytes(dir) < 1024);
  expect_entry(ls, 3, 299, payload);
  sl_ledger_storage_close(ls);
  sl_test_rmdtemp(dir);
}

/* Writes key k = val straight into the leveldb under dir (storage closed). */
static void raw_put_key(const char *dir, const uint8_t *k, size_t klen, const void *val,
                        size_t len) {
  char *errptr = NULL;
  leveldb_options_t *o = leveldb_options_create();
  leveldb_t *db = leveldb_open(o, dir, &errptr);
  assert_null(errptr);
  leveldb_writeoptions_t *wo = leveldb_writeoptions_create();
  leveldb_put(db, wo, (const char *)k, klen, val, len, &errptr);
  assert_null(errptr);
  leveldb_writeoptions_destroy(wo);
  leveldb_close(db);
  leveldb_options_destroy(o);
}

/* Rewrites an entry's stored value behind the storage's back. */
static void raw_put(const char *dir, uint64_t ledger, int64_t entry, const void *val,
                    size_t len) {
  uint8_t k[17] = {'E'};
  for (int i = 0; i < 8; i++) {
    k[1 + i] = (uint8_t)(ledger >> (56 - 8 * i));
    k[9 + i] = (uint8_t)((uint64_t)entry >> (56 - 8 * i));
  }
  raw_put_key(dir, k, sizeof(k), val, len);
}

/* The checkpoint key sorts after every entry and ledger key (else every
 * table's key range spans all entries and each compaction rewrites all of
 * level 1); a data dir that still has the old key opens at its checkpoint. */
static void test_ledger_storage__checkpoint_key_last_old_key_read(void **state) {
  (void)state;
  char *dir = sl_test_mkdtemp("lsckkey");
  sl_ledger_storage *ls = open_ls(dir); /* creates the db */
  sl_ledger_storage_close(ls);
  uint8_t old[16] = {5, 0, 0, 0, 0, 0, 0, 0, 77, 0, 0, 0, 0, 0, 0, 0};
  raw_put_key(dir, (const uint8_t *)"Ccheckpoint", 11, old, sizeof(old));
  ls = open_ls(dir);
  sl_journal_pos got = {0, 0};
  assert_int_equal(sl_ledger_storage_get_checkpoint(ls, &got, NULL), SL_OK);
  assert_int_equal(got.segment, 5);
  assert_int_equal(got.offset, 77);
  put_entry(ls, UINT64_MAX, 1, "last ledger");
  sl_journal_pos ck = {6, 10};
  assert_int_equal(sl_ledger_storage_write(ls, NULL, 0, &ck, NULL), SL_OK);
  sl_ledger_storage_close(ls);

  ls = open_ls(dir); /* the new key wins over the old one still stored */
  assert_int_equal(sl_ledger_storage_get_checkpoint(ls, &got, NULL), SL_OK);
  assert_int_equal(got.segment, 6);
  assert_int_equal(got.offset, 10);
  sl_ledger_storage_close(ls);

  char *errptr = NULL;
  leveldb_options_t *o = leveldb_options_create();
  leveldb_t *db = leveldb_open(o, dir, &errptr);
  assert_null(errptr);
  leveldb_readoptions_t *ro = leveldb_readoptions_create();
  leveldb_iterator_t *it = leveldb_create_iterator(db, ro);
  leveldb_iter_seek_to_last(it);
  assert_true(leveldb_iter_valid(it));
  size_t klen = 0;
  const char *k = leveldb_iter_key(it, &klen);
  assert_true(klen > 0 && (uint8_t)k[0] > (uint8_t)'L'); /* after 'E' and 'L' */
  leveldb_iter_destroy(it);
  leveldb_readoptions_destroy(ro);
  leveldb_close(db);
  leveldb_options_destroy(o);
  sl_test_rmdtemp(dir);
}

static void test_ledger_storage__corruption_detected(void **state) {
  (void)state;
  char *dir = sl_test_mkdtemp("lscorrupt");
  sl_ledger_storage *ls = open_ls(dir);
  put_entry(ls, 42, 7, "hello world");
  sl_ledger_storage_close(ls);
  /* Same layout (version, crc of the original), one payload byte flipped. */
  uint8_t val[5 + 11];
  uint32_t crc = sl_crc32c("hello world", 11);
  val[0] = 1;
  sl_put_le32(val + 1, crc);
  memcpy(val + 5, "hello world", 11);
  val[5 + 3] ^= 0x01;
  raw_put(dir, 42, 7, val, sizeof(val));
  raw_put(dir, 42, 8, "\x01\x00", 2); /* too short */
  raw_put(dir, 42, 9, "\x09\x00\x00\x00\x00", 5); /* unknown version */
  ls = open_ls(dir);
  sl_ledger_entry e = SL_LEDGER_ENTRY_INIT;
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_ledger_storage_get_entry(ls, 42, 7, &e, &err), SL_ECORRUPT);
  assert_string_equal(err.msg, "ledger 42 entry 7: checksum mismatch");
  assert_null(e.payload);
  assert_int_equal(sl_ledger_storage_get_entry(ls, 42, 8, &e, &err), SL_ECORRUPT);
  assert_int_equal(sl_ledger_storage_get_entry(ls, 42, 9, &e, &err), SL_ECORRUPT);
  /* Writing the entry again repairs it. */
  put_entry(ls, 42, 7, "hello world");
  expect_entry(ls, 42, 7, "hello world");
  sl_ledger_storage_close(ls);
  sl_test_rmdtemp(dir);
}

/* A stored value moved under another id (a misfiled write, a bad index)
 * never verifies there; a version 1 value (payload-only CRC) still reads,
 * with today's entry checksum. */
static void test_ledger_storage__entry_bound_to_its_id(void **state) {
  (void)state;
  char *dir = sl_test_mkdtemp("lsid");
  sl_ledger_storage *ls = open_ls(dir);
  sl_ledger_storage_close(ls);
  uint8_t val[5 + 5];
  uint32_t crc = sl_entry_crc(42, 7, "hello", 5);
  val[0] = 2;
  sl_put_le32(val + 1, crc);
  memcpy(val + 5, "hello", 5);
  raw_put(dir, 42, 7, val, sizeof(val));
  raw_put(dir, 42, 8, val, sizeof(val)); /* entry 7's bytes under entry 8 */
  raw_put(dir, 43, 7, val, sizeof(val)); /* and under ledger 43 */
  crc = sl_crc32c("hello", 5);
  val[0] = 1;
  sl_put_le32(val + 1, crc);
  raw_put(dir, 44, 0, val, sizeof(val));
  ls = open_ls(dir);
  expect_entry(ls, 42, 7, "hello");
  sl_ledger_entry e = SL_LEDGER_ENTRY_INIT;
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_ledger_storage_get_entry(ls, 42, 8, &e, &err), SL_ECORRUPT);
  assert_string_equal(err.msg, "ledger 42 entry 8: checksum mismatch");
  assert_int_equal(sl_ledger_storage_get_entry(ls, 43, 7, &e, &err), SL_ECORRUPT);
  assert_null(e.payload);
  expect_entry(ls, 44, 0, "hello");
  sl_ledger_storage_close(ls);
  sl_test_rmdtemp(dir);
}

/* A tombstone's deleted flag survives a write and a scan. */
static void test_ledger_storage__tombstone_meta(void **state) {
  (void)state;
  char *dir = sl_test_mkdtemp("lstomb");
  sl_ledger_storage *ls = open_ls(dir);
  put_entry(ls, 9, 0, "x");
  sl_ls_op ops[2] = {{.kind = SL_LS_DELETE_LEDGER, .ledger = 9},
                     {.kind = SL_LS_PUT_META,
                      .meta = {.ledger = 9, .lac = -1, .last_entry = -1, .deleted = true}}};
  assert_int_equal(sl_ledger_storage_write(ls, ops, 2, NULL, NULL), SL_OK);
  sl_ledger_storage_close(ls);
  ls = open_ls(dir);
  sl_ledger_entry e = SL_LEDGER_ENTRY_INIT;
  assert_int_equal(sl_ledger_storage_get_entry(ls, 9, 0, &e, NULL), SL_ENOTFOUND);
  metas c = {0};
  assert_int_equal(sl_ledger_storage_scan_meta(ls, collect_meta, &c, NULL), SL_OK);
  assert_int_equal(c.n, 1);
  assert_int_equal(c.m[0].ledger, 9);
  assert_true(c.m[0].deleted);
  assert_false(c.m[0].fenced);
  sl_ledger_storage_close(ls);
  sl_test_rmdtemp(dir);
}

/* Writes a raw 'L' value for a ledger behind the storage's back. */
static void raw_put_meta(const char *dir, uint64_t ledger, const void *val, size_t len) {
  uint8_t k[9] = {'L'};
  for (int i = 0; i < 8; i++) k[1 + i] = (uint8_t)(ledger >> (56 - 8 * i));
  raw_put_key(dir, k, sizeof(k), val, len);
}

/* The master key round-trips; a version 1 state (before keys) reads as a
 * state without one; other shapes are corrupt. */
static void test_ledger_storage__meta_key_and_version_1(void **state) {
  (void)state;
  char *dir = sl_test_mkdtemp("lskey");
  sl_ledger_storage *ls = open_ls(dir);
  sl_ls_op op = {.kind = SL_LS_PUT_META,
                 .meta = {.ledger = 4, .fenced = true, .max_epoch = 3, .lac = 1,
                          .last_entry = 2, .entries = 3, .bytes = 30, .has_key = true}};
  for (int i = 0; i < (int)SL_LEDGER_KEY_BYTES; i++) op.meta.key[i] = (uint8_t)(0xa0 + i);
  assert_int_equal(sl_ledger_storage_write(ls, &op, 1, NULL, NULL), SL_OK);
  op.meta = (sl_ledger_meta){.ledger = 5, .lac = -1, .last_entry = -1};
  assert_int_equal(sl_ledger_storage_write(ls, &op, 1, NULL, NULL), SL_OK);
  sl_ledger_storage_close(ls);

  uint8_t v1[42] = {1, 1}; /* version 1, fenced */
  sl_put_le64(v1 + 2, 9);
  sl_put_le64(v1 + 10, 7);
  sl_put_le64(v1 + 18, 8);
  sl_put_le64(v1 + 26, 9);
  sl_put_le64(v1 + 34, 900);
  raw_put_meta(dir, 6, v1, sizeof(v1));
  ls = open_ls(dir);
  metas c = {0};
  assert_int_equal(sl_ledger_storage_scan_meta(ls, collect_meta, &c, NULL), SL_OK);
  assert_int_equal(c.n, 3);
  assert_true(c.m[0].has_key);
  assert_true(c.m[0].fenced);
  assert_int_equal(c.m[0].bytes, 30);
  for (int i = 0; i < (int)SL_LEDGER_KEY_BYTES; i++) assert_int_equal(c.m[0].key[i], 0xa0 + i);
  assert_false(c.m[1].has_key);
  assert_false(c.m[1].fenced);
  assert_int_equal(c.m[1].last_entry, -1);
  assert_int_equal(c.m[2].ledger, 6);
  assert_false(c.m[2].has_key);
  assert_true(c.m[2].fenced);
  assert_int_equal(c.m[2].max_epoch, 9);
  assert_int_equal(c.m[2].lac, 7);
  assert_int_equal(c.m[2].last_entry, 8);
  assert_int_equal(c.m[2].entries, 9);
  assert_int_equal(c.m[2].bytes, 900);
  sl_ledger_storage_close(ls);

  /* A version 1 value with a key's length, or version 2 without it, is not
   * a state we wrote. */
  uint8_t odd[42 + SL_LEDGER_KEY_BYTES] = {1};
  raw_put_meta(dir, 7, odd, sizeof(odd));
  ls = open_ls(dir);
  sl_err err = SL_ERR_INIT;
  c.n = 0;
  assert_int_equal(sl_ledger_storage_scan_meta(ls, collect_meta, &c, &err), SL_ECORRUPT);
  sl_ledger_storage_close(ls);
  v1[0] = 2;
  raw_put_meta(dir, 7, v1, sizeof(v1));
  ls = open_ls(dir);
  assert_int_equal(sl_ledger_storage_scan_meta(ls, collect_meta, &c, &err), SL_ECORRUPT);
  assert_non_null(strstr(err.msg, "malformed ledger state"));
  sl_ledger_storage_close(ls);
  sl_test_rmdtemp(dir);
}

static void test_ledger_storage__bad_input(void **state) {
  (void)state;
  sl_ledger_storage *ls = NULL;
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_ledger_storage_leveldb_open(NULL, NULL, &ls, &err), SL_EINVAL);
  assert_int_equal(sl_ledger_storage_leveldb_open("", NULL, &ls, &err), SL_EINVAL);
  assert_int_equal(sl_ledger_storage_leveldb_open("/proc/nope/x", NULL, &ls, &err), SL_EIO);
  assert_non_null(strstr(err.msg, "/proc/nope/x"));
  sl_ledger_storage_close(NULL);
  sl_ledger_entry_release(NULL);
}

/* ---- entry log ---- */

static sl_ledger_storage *open_el(const char *dir, uint64_t file_bytes) {
  sl_ledger_storage_leveldb_opts o = SL_LEDGER_STORAGE_LEVELDB_OPTS_INIT;
  o.log.file_bytes = file_bytes;
  o.gc_interval_ms = 0; /* rounds only when the test runs one */
  o.gc_rate_bytes = 1u << 30;
  sl_ledger_storage *ls = NULL;
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_ledger_storage_leveldb_open(dir, &o, &ls, &err), SL_OK);
  return ls;
}

/* A payload that names its ledger and entry, len bytes (len >= 24). */
static void fill(char *buf, size_t len, uint64_t ledger, int64_t entry) {
  for (size_t i = 0; i < len; i++) buf[i] = (char)('a' + (ledger * 7 + (uint64_t)entry + i) % 26);
  char head[24];
  int n = snprintf(head, sizeof(head), "L%" PRIu64 "E%" PRId64 ":", ledger, entry);
  memcpy(buf, head, (size_t)n); /* without its NUL: put_entry takes strlen */
  buf[len] = '\0';
}

static void put_many(sl_ledger_storage *ls, uint64_t ledger, int64_t from, int64_t to,
                     size_t len) {
  char buf[4096];
  for (int64_t e = from; e < to; e++) {
    fill(buf, len, ledger, e);
    put_entry(ls, ledger, e, buf);
  }
}

static void expect_many(sl_ledger_storage *ls, uint64_t ledger, int64_t from, int64_t to,
                        size_t len) {
  char buf[4096];
  for (int64_t e = from; e < to; e++) {
    fill(buf, len, ledger, e);
    expect_entry(ls, ledger, e, buf);
  }
}

static void put_meta(sl_ledger_storage *ls, uint64_t ledger, bool deleted) {
  sl_ls_op ops[2];
  size_t n = 0;
  if (deleted) ops[n++] = (sl_ls_op){.kind = SL_LS_DELETE_LEDGER, .ledger = ledger};
  ops[n++] = (sl_ls_op){.kind = SL_LS_PUT_META,
                        .meta = {.ledger = ledger, .lac = -1, .last_entry = -1,
                                 .deleted = deleted}};
  assert_int_equal(sl_ledger_storage_write(ls, ops, n, NULL, NULL), SL_OK);
}

static sl_ledger_storage_stats stats(sl_ledger_storage *ls) {
  sl_ledger_storage_stats st;
  sl_ledger_storage_stats_get(ls, &st);
  return st;
}

/* Payloads go to entry log files, not leveldb; files roll at file_bytes;
 * everything reads back before and after a checkpoint and a reopen. */
static void test_ledger_storage__entry_log_roll_reopen(void **state) {
  (void)state;
  char *dir = sl_test_mkdtemp("lselog");
  sl_ledger_storage *ls = open_el(dir, 64u << 10);
  put_many(ls, 5, 0, 200, 1000);
  put_many(ls, 6, 0, 10, 30);
  expect_many(ls, 5, 0, 200, 1000); /* read before any sync */
  sl_ledger_storage_stats st = stats(ls);
  assert_true(st.entry_log_files >= 3);
  assert_true(st.entry_log_bytes > 200 * 1000);
  sl_journal_pos ck = {1, 32};
  assert_int_equal(sl_ledger_storage_write(ls, NULL, 0, &ck, NULL), SL_OK);
  sl_ledger_storage_close(ls);
  /* leveldb holds only 25-byte index values: its files are small. */
  assert_true(log_bytes(dir) < 64u << 10);
  ls = open_el(dir, 64u << 10);
  expect_many(ls, 5, 0, 200, 1000);
  expect_many(ls, 6, 0, 10, 30);
  put_entry(ls, 6, 10, "after reopen");
  expect_entry(ls, 6, 10, "after reopen");
  sl_ledger_storage_close(ls);
  sl_test_rmdtemp(dir);
}

/* Entries written with payloads in leveldb still read once the entry log is
 * on, and new ones go to the log. */
static void test_ledger_storage__inline_entries_read_with_entry_log(void **state) {
  (void)state;
  char *dir = sl_test_mkdtemp("lsinline");
  sl_ledger_storage_leveldb_opts o = SL_LEDGER_STORAGE_LEVELDB_OPTS_INIT;
  o.entry_log = false;
  sl_ledger_storage *ls = NULL;
  assert_int_equal(sl_ledger_storage_leveldb_open(dir, &o, &ls, NULL), SL_OK);
  put_many(ls, 3, 0, 20, 100);
  assert_int_equal(stats(ls).entry_log_files, 0);
  sl_ledger_storage_close(ls);
  ls = open_el(dir, 1u << 20);
  expect_many(ls, 3, 0, 20, 100);
  put_many(ls, 3, 20, 40, 100);
  expect_many(ls, 3, 0, 40, 100);
  assert_true(stats(ls).entry_log_bytes > 20 * 100);
  sl_ledger_storage_close(ls);
  sl_test_rmdtemp(dir);
}

/* Flips the byte at `off` of entry log file `id` under dir. */
static void flip_log_byte(const char *dir, uint64_t id, long off) {
  char path[4096];
  snprintf(path, sizeof(path), "%s/entrylogs/%016" PRIx64 ".log", dir, id);
  FILE *f = fopen(path, "r+b");
  assert_non_null(f);
  assert_int_equal(fseek(f, off, SEEK_SET), 0);
  int c = fgetc(f);
  assert_true(c != EOF);
  assert_int_equal(fseek(f, off, SEEK_SET), 0);
  assert_int_equal(fputc(c ^ 0x10, f), c ^ 0x10);
  assert_int_equal(fclose(f), 0);
}

/* A flipped payload byte fails the entry checksum; a flipped header byte
 * fails the record check; neither hands out bytes, and neighbours read. */
static void test_ledger_storage__entry_log_corruption(void **state) {
  (void)state;
  char *dir = sl_test_mkdtemp("lselcorrupt");
  sl_ledger_storage *ls = open_el(dir, 1u << 20);
  put_entry(ls, 42, 0, "zero zero");
  put_entry(ls, 42, 1, "one one one");
  put_entry(ls, 42, 2, "two two");
  sl_journal_pos ck = {1, 32};
  assert_int_equal(sl_ledger_storage_write(ls, NULL, 0, &ck, NULL), SL_OK);
  sl_ledger_storage_close(ls);
  /* File 1: header 32, then records of 28 + len. */
  flip_log_byte(dir, 1, 32 + 28 + 9 + 28 + 3);  /* a payload byte of entry 1 */
  flip_log_byte(dir, 1, 32 + 28 + 9 + 28 + 11 + 10); /* a header byte of entry 2 */
  ls = open_el(dir, 1u << 20);
  sl_ledger_entry e = SL_LEDGER_ENTRY_INIT;
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_ledger_storage_get_entry(ls, 42, 1, &e, &err), SL_ECORRUPT);
  assert_string_equal(err.msg, "ledger 42 entry 1: checksum mismatch");
  assert_null(e.payload);
  assert_int_equal(sl_ledger_storage_get_entry(ls, 42, 2, &e, &err), SL_ECORRUPT);
  assert_non_null(strstr(err.msg, "record header does not match its index"));
  expect_entry(ls, 42, 0, "zero zero");
  put_entry(ls, 42, 1, "one one one"); /* a resend repairs it */
  expect_entry(ls, 42, 1, "one one one");
  sl_ledger_storage_close(ls);
  sl_test_rmdtemp(dir);
}

static void gc_until_quiet(sl_ledger_storage *ls) {
  for (int i = 0; i < 64; i++) {
    sl_ledger_storage_stats before = stats(ls);
    sl_err err = SL_ERR_INIT;
    assert_int_equal(sl_ledger_storage_gc(ls, &err), SL_OK);
    sl_ledger_storage_stats after = stats(ls);
    if (after.gc_removed_files == before.gc_removed_files &&
        after.gc_compacted_bytes == before.gc_compacted_bytes)
      return;
  }
  fail_msg("gc never settled");
}

/* Files whose ledgers are all deleted go; files where a deleted ledger left
 * most of the bytes dead are compacted; the live ledger reads throughout,
 * and after a reopen; a live ledger's files are kept. */
static void test_ledger_storage__gc_removes_and_compacts(void **state) {
  (void)state;
  char *dir = sl_test_mkdtemp("lsgc");
  sl_ledger_storage *ls = open_el(dir, 64u << 10);
  put_meta(ls, 1, false);
  put_meta(ls, 2, false);
  put_meta(ls, 3, false);
  put_many(ls, 1, 0, 150, 1000); /* ledger 1 alone: ~3 files */
  for (int64_t e = 0; e < 300; e++) { /* 2 and 3 mixed, 1 in 10 is ledger 2 */
    if (e % 10 == 0) put_many(ls, 2, e / 10, e / 10 + 1, 1000);
    put_many(ls, 3, e, e + 1, 1000);
  }
  put_many(ls, 4, 0, 5, 100); /* a ledger without a state: kept */
  sl_ledger_storage_stats st0 = stats(ls);
  gc_until_quiet(ls); /* nothing is dead yet */
  assert_int_equal(stats(ls).gc_removed_files, 0);
  expect_many(ls, 1, 0, 150, 1000);
  put_meta(ls, 1, true);
  put_meta(ls, 3, true);
  gc_until_quiet(ls);
  sl_ledger_storage_stats st1 = stats(ls);
  print_message("entry log: %" PRIu64 " files %" PRIu64 " bytes -> %" PRIu64 " files %"
                PRIu64 " bytes; removed %" PRIu64 ", compacted %" PRIu64 " bytes\n",
                st0.entry_log_files, st0.entry_log_bytes, st1.entry_log_files,
                st1.entry_log_bytes, st1.gc_removed_files, st1.gc_compacted_bytes);
  assert_true(st1.gc_removed_files >= 8);
  assert_true(st1.gc_compacted_bytes >= 30 * 1000);
  assert_true(st1.entry_log_bytes < (64u << 10) + 40 * 1100);
  expect_many(ls, 2, 0, 30, 1000);
  expect_many(ls, 4, 0, 5, 100);
  sl_ledger_entry e = SL_LEDGER_ENTRY_INIT;
  assert_int_equal(sl_ledger_storage_get_entry(ls, 3, 0, &e, NULL), SL_ENOTFOUND);
  sl_ledger_storage_close(ls);
  ls = open_el(dir, 64u << 10); /* the compaction's moves are durable */
  expect_many(ls, 2, 0, 30, 1000);
  expect_many(ls, 4, 0, 5, 100);
  sl_ledger_storage_close(ls);
  sl_test_rmdtemp(dir);
}

typedef struct reader_arg {
  sl_ledger_storage *ls;
  atomic_bool stop;
  atomic_int reads;
} reader_arg;

static void *reader_main(void *p) {
  reader_arg *r = p;
  char buf[4096];
  for (int64_t e = 0; !atomic_load(&r->stop); e = (e + 7) % 40) {
    fill(buf, 1000, 2, e);
    expect_entry(r->ls, 2, e, buf);
    atomic_fetch_add(&r->reads, 1);
  }
  return NULL;
}

/* Compaction moves entries and removes their old files while another thread
 * reads them and the writer appends: every read succeeds (a read that finds
 * its file gone follows the index to the new place). */
static void test_ledger_storage__gc_races_reads_and_writes(void **state) {
  (void)state;
  char *dir = sl_test_mkdtemp("lsgcrace");
  sl_ledger_storage *ls = open_el(dir, 32u << 10);
  put_meta(ls, 2, false);
  put_meta(ls, 3, false);
  put_meta(ls, 5, false);
  for (int64_t e = 0; e < 400; e++) {
    if (e % 10 == 0) put_many(ls, 2, e / 10, e / 10 + 1, 1000);
    put_many(ls, 3, e, e + 1, 1000);
  }
  put_meta(ls, 3, true);
  reader_arg r = {.ls = ls};
  pthread_t th;
  assert_int_equal(pthread_create(&th, NULL, reader_main, &r), 0);
  for (int round = 0; round < 20; round++) {
    put_many(ls, 5, round * 20, round * 20 + 20, 500);
    assert_int_equal(sl_ledger_storage_gc(ls, NULL), SL_OK);
  }
  atomic_store(&r.stop, true);
  assert_int_equal(pthread_join(th, NULL), 0);
  assert_true(atomic_load(&r.reads) > 0);
  assert_true(stats(ls).gc_removed_files >= 5);
  expect_many(ls, 2, 0, 40, 1000);
  expect_many(ls, 5, 0, 400, 500);
  sl_ledger_storage_close(ls);
  sl_test_rmdtemp(dir);
}

/* A crash loses what the page cache held of the entry log, while leveldb's
 * own log kept index entries pointing there: the storage reopens on a new
 * file, the journal's replay writes those entries again, and they read. */
static void test_ledger_storage__lost_tail_rewritten_by_replay(void **state) {
  (void)state;
  char *dir = sl_test_mkdtemp("lslost");
  sl_ledger_storage *ls = open_el(dir, 1u << 20);
  put_many(ls, 8, 0, 10, 500);
  sl_journal_pos ck = {1, 32};
  assert_int_equal(sl_ledger_storage_write(ls, NULL, 0, &ck, NULL), SL_OK);
  put_many(ls, 8, 10, 20, 500); /* after the checkpoint: only in the journal */
  sl_ledger_storage_close(ls);
  char path[4096];
  snprintf(path, sizeof(path), "%s/entrylogs/%016" PRIx64 ".log", dir, (uint64_t)1);
  struct stat sb;
  assert_int_equal(stat(path, &sb), 0);
  /* Keep the checkpointed records and half of the next one. */
  assert_int_equal(truncate(path, 32 + 10 * (28 + 500) + 200), 0);
  ls = open_el(dir, 1u << 20);
  expect_many(ls, 8, 0, 10, 500);
  sl_ledger_entry e = SL_LEDGER_ENTRY_INIT;
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_ledger_storage_get_entry(ls, 8, 10, &e, &err), SL_ECORRUPT);
  put_many(ls, 8, 10, 20, 500); /* replay */
  expect_many(ls, 8, 0, 20, 500);
  /* New records went to a new file, never after the torn tail. */
  assert_int_equal(stats(ls).entry_log_files, 2);
  assert_int_equal(sl_ledger_storage_gc(ls, &err), SL_OK);
  expect_many(ls, 8, 0, 20, 500);
  sl_ledger_storage_close(ls);
  sl_test_rmdtemp(dir);
}

static int open_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  assert_non_null(d);
  int n = 0;
  while (readdir(d) != NULL) n++;
  closedir(d);
  return n;
}

/* Hundreds of entry log files do not hold hundreds of fds: past a cap the
 * older files' fds are closed and reopened by the reads that need them. */
static void test_ledger_storage__entry_log_fds_bounded(void **state) {
  (void)state;
  char *dir = sl_test_mkdtemp("lsfds");
  int before = open_fds();
  sl_ledger_storage *ls = open_el(dir, 4096);
  put_many(ls, 9, 0, 2000, 1000); /* 4 records a file: 500 files */
  sl_journal_pos ck = {1, 32};
  assert_int_equal(sl_ledger_storage_write(ls, NULL, 0, &ck, NULL), SL_OK);
  assert_true(stats(ls).entry_log_files >= 500);
  assert_true(open_fds() - before < 300);
  expect_many(ls, 9, 0, 2000, 1000);
  assert_true(open_fds() - before < 300);
  sl_ledger_storage_close(ls);
  assert_int_equal(open_fds(), before);
  sl_test_rmdtemp(dir);
}

/* Deletes every entry log usage record ('G' keys) from the leveldb under dir
 * (storage closed), as a crash before their checkpoint would. */
static int drop_usage_records(const char *dir) {
  char *errptr = NULL;
  leveldb_options_t *o = leveldb_options_create();
  leveldb_t *db = leveldb_open(o, dir, &errptr);
  assert_null(errptr);
  leveldb_readoptions_t *ro = leveldb_readoptions_create();
  leveldb_writeoptions_t *wo = leveldb_writeoptions_create();
  leveldb_iterator_t *it = leveldb_create_iterator(db, ro);
  int n = 0;
  for (leveldb_iter_seek(it, "G", 1); leveldb_iter_valid(it); leveldb_iter_next(it)) {
    size_t klen;
    const char *k = leveldb_iter_key(it, &klen);
    if (klen != 9 || k[0] != 'G') break;
    leveldb_delete(db, wo, k, klen, &errptr);
    assert_null(errptr);
    n++;
  }
  leveldb_iter_destroy(it);
  leveldb_writeoptions_destroy(wo);
  leveldb_readoptions_destroy(ro);
  leveldb_close(db);
  leveldb_options_destroy(o);
  return n;
}

/* Writes two ledgers mixed over several files, reopens, deletes ledger 2
 * and collects: ledger 1 still reads. Returns the stats after. */
static sl_ledger_storage_stats reopen_and_collect(const char *dir, bool drop_usage) {
  sl_ledger_storage *ls = open_el(dir, 64u << 10);
  put_meta(ls, 1, false);
  put_meta(ls, 2, false);
  for (int64_t e = 0; e < 100; e++) { /* a quarter of each file is ledger 1 */
    put_many(ls, 1, e, e + 1, 1000);
    put_many(ls, 2, 3 * e, 3 * e + 3, 1000);
  }
  sl_journal_pos ck = {1, 32};
  assert_int_equal(sl_ledger_storage_write(ls, NULL, 0, &ck, NULL), SL_OK);
  sl_ledger_storage_close(ls);
  if (drop_usage) assert_true(drop_usage_records(dir) >= 5);
  ls = open_el(dir, 64u << 10);
  put_meta(ls, 2, true);
  gc_until_quiet(ls);
  expect_many(ls, 1, 0, 100, 1000);
  sl_ledger_storage_stats st = stats(ls);
  sl_ledger_storage_close(ls);
  ls = open_el(dir, 64u << 10);
  /* Files written by compaction are sealed now: their usage must name the
   * ledgers copied into them, or this round would remove live entries. */
  gc_until_quiet(ls);
  expect_many(ls, 1, 0, 100, 1000);
  sl_ledger_storage_close(ls);
  return st;
}

/* Each sealed file's usage is stored, so the collector reads no file to
 * learn it; without those records (a crash) it scans, with the same result. */
static void test_ledger_storage__gc_usage_stored_or_scanned(void **state) {
  (void)state;
  char *dir = sl_test_mkdtemp("lsgcusage");
  sl_ledger_storage_stats st = reopen_and_collect(dir, false);
  print_message("stored usage: removed %" PRIu64 ", compacted %" PRIu64 ", scanned %" PRIu64
                "\n", st.gc_removed_files, st.gc_compacted_bytes, st.gc_scanned_bytes);
  assert_int_equal(st.gc_scanned_bytes, 0);
  assert_true(st.gc_removed_files >= 5);
  sl_test_rmdtemp(dir);
  dir = sl_test_mkdtemp("lsgcscan");
  st = reopen_and_collect(dir, true);
  print_message("scanned usage: removed %" PRIu64 ", compacted %" PRIu64 ", scanned %" PRIu64
                "\n", st.gc_removed_files, st.gc_compacted_bytes, st.gc_scanned_bytes);
  assert_true(st.gc_scanned_bytes >= 5 * (64u << 10) / 2);
  assert_true(st.gc_removed_files >= 5);
  sl_test_rmdtemp(dir);
}

/* What a crash can leave in the entry log dir: a file created but killed
 * before its header (removed at open), and a file with a bad header (the
 * collector skips it and still collects the others). */
static void test_ledger_storage__gc_past_crash_leftovers(void **state) {
  (void)state;
  char *dir = sl_test_mkdtemp("lsleft");
  sl_ledger_storage *ls = open_el(dir, 64u << 10);
  put_meta(ls, 1, false);
  put_many(ls, 1, 0, 200, 1000);
  sl_ledger_storage_close(ls);
  char path[4096];
  snprintf(path, sizeof(path), "%s/entrylogs/%016" PRIx64 ".log", dir, (uint64_t)1000);
  FILE *f = fopen(path, "w"); /* empty: creation interrupted */
  assert_non_null(f);
  assert_int_equal(fclose(f), 0);
  snprintf(path, sizeof(path), "%s/entrylogs/%016" PRIx64 ".log", dir, (uint64_t)999);
  f = fopen(path, "w");
  assert_non_null(f);
  static const char junk[100] = "not an entry log header";
  assert_int_equal(fwrite(junk, 1, sizeof(junk), f), sizeof(junk));
  assert_int_equal(fclose(f), 0);
  ls = open_el(dir, 64u << 10);
  snprintf(path, sizeof(path), "%s/entrylogs/%016" PRIx64 ".log", dir, (uint64_t)1000);
  struct stat sb;
  /* The empty one went; its id is the new current file's, with a header. */
  assert_int_equal(stat(path, &sb), 0);
  assert_int_equal(sb.st_size, 32);
  put_meta(ls, 1, true);
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_ledger_storage_gc(ls, &err), SL_OK);
  assert_true(stats(ls).gc_removed_files >= 3);
  sl_ledger_storage_close(ls);
  sl_test_rmdtemp(dir);
}

/* A record header damaged in the middle of a file: the scan finds the
 * intact records after it again, compaction moves them all, sees the
 * damaged entry still indexed in the file and keeps the file; every entry
 * but the damaged one reads. */
static void test_ledger_storage__gc_keeps_file_past_damage(void **state) {
  (void)state;
  char *dir = sl_test_mkdtemp("lsdamage");
  sl_ledger_storage *ls = open_el(dir, 1u << 20);
  put_meta(ls, 1, false);
  put_meta(ls, 2, false);
  for (int64_t e = 0; e < 20; e++) { /* one of ledger 1 per three of 2 */
    put_many(ls, 1, e, e + 1, 1000);
    put_many(ls, 2, 3 * e, 3 * e + 3, 1000);
  }
  sl_ledger_storage_close(ls); /* file 1 is sealed at the next open */
  /* Ledger 1 entry 5's header: 5 rounds of 4 records of 1028 bytes in. */
  flip_log_byte(dir, 1, 32 + 5 * 4 * 1028 + 10);
  ls = open_el(dir, 1u << 20);
  put_meta(ls, 2, true);
  sl_err err = SL_ERR_INIT;
  for (int i = 0; i < 3; i++) assert_int_equal(sl_ledger_storage_gc(ls, &err), SL_OK);
  sl_ledger_storage_stats st = stats(ls);
  assert_int_equal(st.gc_removed_files, 0);
  assert_true(st.gc_compacted_bytes >= 19 * 1000); /* all but the damaged one */
  expect_many(ls, 1, 0, 5, 1000);
  expect_many(ls, 1, 6, 20, 1000);
  sl_ledger_entry e = SL_LEDGER_ENTRY_INIT;
  assert_int_equal(sl_ledger_storage_get_entry(ls, 1, 5, &e, &err), SL_ECORRUPT);
  sl_ledger_storage_close(ls);
  sl_test_rmdtemp(dir);
}

/* Without a stored usage record (a crash), a scan past a damaged header
 * cannot tell whose record it was: a file where it found intact records
 * after damage is kept, even when every ledger it did see is deleted. */
static void test_ledger_storage__gc_keeps_damaged_scanned_file(void **state) {
  (void)state;
  char *dir = sl_test_mkdtemp("lsdmgscan");
  sl_ledger_storage *ls = open_el(dir, 1u << 20);
  put_meta(ls, 2, false);
  put_meta(ls, 3, false);
  put_meta(ls, 4, false);
  put_many(ls, 2, 0, 10, 1000);
  put_many(ls, 3, 0, 1, 1000); /* ledger 3's only record, to be damaged */
  put_many(ls, 4, 0, 10, 1000);
  sl_ledger_storage_close(ls);
  flip_log_byte(dir, 1, 32 + 10 * 1028 + 10);
  assert_true(drop_usage_records(dir) >= 1);
  ls = open_el(dir, 1u << 20);
  put_meta(ls, 2, true);
  put_meta(ls, 4, true);
  sl_err err = SL_ERR_INIT;
  for (int i = 0; i < 3; i++) assert_int_equal(sl_ledger_storage_gc(ls, &err), SL_OK);
  assert_int_equal(stats(ls).gc_removed_files, 0);
  sl_ledger_entry e = SL_LEDGER_ENTRY_INIT;
  assert_int_equal(sl_ledger_storage_get_entry(ls, 3, 0, &e, &err), SL_ECORRUPT);
  sl_ledger_storage_close(ls);
  sl_test_rmdtemp(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_ledger_storage__put_get_meta),
      cmocka_unit_test(test_ledger_storage__delete_ledger),
      cmocka_unit_test(test_ledger_storage__checkpoint_survives_reopen),
      cmocka_unit_test(test_ledger_storage__checkpoint_flushes_logs),
      cmocka_unit_test(test_ledger_storage__checkpoint_key_last_old_key_read),
      cmocka_unit_test(test_ledger_storage__corruption_detected),
      cmocka_unit_test(test_ledger_storage__entry_bound_to_its_id),
      cmocka_unit_test(test_ledger_storage__tombstone_meta),
      cmocka_unit_test(test_ledger_storage__bad_input),
      cmocka_unit_test(test_ledger_storage__meta_key_and_version_1),
      cmocka_unit_test(test_ledger_storage__entry_log_roll_reopen),
      cmocka_unit_test(test_ledger_storage__inline_entries_read_with_entry_log),
      cmocka_unit_test(test_ledger_storage__entry_log_corruption),
      cmocka_unit_test(test_ledger_storage__gc_removes_and_compacts),
      cmocka_unit_test(test_ledger_storage__gc_races_reads_and_writes),
      cmocka_unit_test(test_ledger_storage__lost_tail_rewritten_by_replay),
      cmocka_unit_test(test_ledger_storage__entry_log_fds_bounded),
      cmocka_unit_test(test_ledger_storage__gc_usage_stored_or_scanned),
      cmocka_unit_test(test_ledger_storage__gc_past_crash_leftovers),
      cmocka_unit_test(test_ledger_storage__gc_keeps_file_past_damage),
      cmocka_unit_test(test_ledger_storage__gc_keeps_damaged_scanned_file),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
