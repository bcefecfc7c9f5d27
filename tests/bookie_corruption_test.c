/*
 * Bytes of a stored entry flipped on disk while the bookie is stopped: the
 * read gives DATA_LOSS (never the bad bytes), every other entry still reads,
 * and a resend of the entry by its writer repairs it.
 *
 * The entry has a recognizable payload, which the test finds in the bookie's
 * entry log files (ledgers/entrylogs) and flips one byte of.
 */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <grpc/status.h>

#include "common/crc32c.h"
#include "tests/bookie_testlib.h"

#define LEDGER 9
#define TARGET 5 /* the entry to damage */
#define PAD 4    /* the padding entry before it */
#define MARK "SLUICE-CORRUPT!!"
#define TARGET_LEN (16u << 10)
#define PAD_LEN 6000u

/* Payloads of LEDGER: entries PAD and TARGET are fixed, the rest follow
 * tests/bookie_testlib (max 512 bytes). */
static uint8_t *payload(int64_t e, uint32_t *len) {
  if (e == TARGET) {
    uint8_t *p = malloc(TARGET_LEN);
    for (size_t i = 0; i < TARGET_LEN; i++) p[i] = (uint8_t)MARK[i % 16];
    *len = TARGET_LEN;
    return p;
  }
  if (e == PAD) {
    uint8_t *p = malloc(PAD_LEN);
    for (size_t i = 0; i < PAD_LEN; i++) p[i] = (uint8_t)('a' + i % 26);
    *len = PAD_LEN;
    return p;
  }
  return sl_bktest_payload(LEDGER, e, 512, len);
}

static int add(sl_rpc_channel *ch, int64_t e) {
  Sluice__V1__AddEntryRequest r = SLUICE__V1__ADD_ENTRY_REQUEST__INIT;
  uint32_t len;
  uint8_t *p = payload(e, &len);
  r.ledger_id = LEDGER;
  r.entry_id = e;
  r.lac = e - 1;
  r.payload.data = p;
  r.payload.len = len;
  r.crc32c = sl_entry_crc(LEDGER, e, p, len);
  r.epoch = 1;
  char error[256];
  int code = sl_bktest_add(ch, &r, error, sizeof(error));
  if (code != 0) print_error("add %lld: %s\n", (long long)e, error);
  free(p);
  return code;
}

static void check(sl_rpc_channel *ch, int64_t e) {
  Sluice__V1__ReadEntryResponse *r = NULL;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_bktest_read(ch, LEDGER, e, false, 0, &r, &err);
  if (st != SL_OK) fail_msg("entry %lld: %s", (long long)e, sl_err_msg(&err, st));
  uint32_t len;
  uint8_t *p = payload(e, &len);
  assert_int_equal(r->payload.len, len);
  assert_memory_equal(r->payload.data, p, len);
  assert_int_equal(r->crc32c, sl_entry_crc(LEDGER, e, p, len));
  free(p);
  protobuf_c_message_free_unpacked(&r->base, NULL);
}

/* Flips one byte in the middle of the marked payload in every entry log
 * file holding it. Returns how many copies were damaged. */
static int flip_in_entry_logs(const char *data_dir) {
  char dir[4096];
  snprintf(dir, sizeof(dir), "%s/ledgers/entrylogs", data_dir);
  DIR *d = opendir(dir);
  assert_non_null(d);
  int flipped = 0;
  struct dirent *de;
  char pattern[64 * 16 + 1] = {0};
  for (int i = 0; i < 64; i++) memcpy(pattern + i * 16, MARK, 16);
  while ((de = readdir(d)) != NULL) {
    size_t n = strlen(de->d_name);
    if (n < 4 || strcmp(de->d_name + n - 4, ".log") != 0) continue;
    char path[8192];
    snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    uint8_t *buf = malloc((size_t)size + 1);
    fseek(f, 0, SEEK_SET);
    assert_int_equal(fread(buf, 1, (size_t)size, f), (size_t)size);
    uint8_t *hit = memmem(buf, (size_t)size, pattern, sizeof(pattern) - 1);
    if (hit != NULL) {
      long off = (long)(hit - buf) + 8000;
      assert_true(off < size);
      uint8_t b = buf[off] ^ 0x5a;
      fseek(f, off, SEEK_SET);
      assert_int_equal(fwrite(&b, 1, 1, f), 1);
      flipped++;
    }
    free(buf);
    assert_int_equal(fclose(f), 0);
  }
  closedir(d);
  return flipped;
}

static void restart(sl_cluster *c) {
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_cluster_restart(c, SL_NODE_BOOKIE, 0, &err);
  if (st != SL_OK) fail_msg("restart: %s", sl_err_msg(&err, st));
}

static void stop(sl_cluster *c) {
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_cluster_stop_node(c, SL_NODE_BOOKIE, 0, &err), SL_OK);
}

static void test_bookie_corruption__flipped_byte_gives_data_loss(void **state) {
  (void)state;
  sl_cluster *c = sl_bktest_cluster("bookie_corruption", 1, NULL);
  sl_rpc_channel *ch = sl_bktest_bookie_channel(c, 0);
  for (int64_t e = 0; e < 20; e++) assert_int_equal(add(ch, e), 0);
  sl_bktest_write(ch, 10, 0, 10, 2048, 1); /* a bystander ledger */
  sl_rpc_channel_destroy(ch);

  /* A clean stop checkpoints: the restart replays nothing over the damage. */
  stop(c);
  const char *dir = sl_bktest_data_dir(c, 0);
  assert_true(flip_in_entry_logs(dir) >= 1);
  restart(c);

  ch = sl_bktest_bookie_channel(c, 0);
  Sluice__V1__ReadEntryResponse *r = NULL;
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_bktest_read(ch, LEDGER, TARGET, false, 0, &r, &err), SL_ECORRUPT);
  assert_null(r);
  print_message("DATA_LOSS as expected: %s\n", err.msg);
  /* Asking again does not change the answer or the bookie. */
  assert_int_equal(sl_bktest_read(ch, LEDGER, TARGET, false, 0, &r, &err), SL_ECORRUPT);
  for (int64_t e = 0; e < 20; e++)
    if (e != TARGET) check(ch, e);
  for (int64_t e = 0; e < 10; e++) sl_bktest_check_entry(ch, 10, e, 2048);
  Sluice__V1__GetInfoResponse *info = sl_bktest_info(ch);
  assert_false(info->read_only);
  protobuf_c_message_free_unpacked(&info->base, NULL);

  /* The writer (or recovery) resends the entry: the bad copy is replaced. */
  assert_int_equal(add(ch, TARGET), 0);
  check(ch, TARGET);
  sl_bktest_finish(c, ch);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_bookie_corruption__flipped_byte_gives_data_loss),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
