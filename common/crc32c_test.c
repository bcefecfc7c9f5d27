#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "common/crc32c.h"

static void test_crc32c__known_vectors(void **state) {
  (void)state;
  uint8_t buf[48];
  assert_int_equal(sl_crc32c("123456789", 9), 0xE3069283u);
  assert_int_equal(sl_crc32c(NULL, 0), 0u);
  assert_int_equal(sl_crc32c("a", 1), 0xC1D04330u);
  /* RFC 3720 (iSCSI) appendix B.4 vectors. */
  memset(buf, 0, 32);
  assert_int_equal(sl_crc32c(buf, 32), 0x8A9136AAu);
  memset(buf, 0xFF, 32);
  assert_int_equal(sl_crc32c(buf, 32), 0x62A8AB43u);
  for (int i = 0; i < 32; i++) buf[i] = (uint8_t)i;
  assert_int_equal(sl_crc32c(buf, 32), 0x46DD794Eu);
  for (int i = 0; i < 32; i++) buf[i] = (uint8_t)(31 - i);
  assert_int_equal(sl_crc32c(buf, 32), 0x113FDB5Cu);
  static const uint8_t iscsi_read[48] = {
      0x01, 0xc0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
      0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00,
      0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x18, 0x28, 0x00, 0x00, 0x00,
      0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};
  assert_int_equal(sl_crc32c(iscsi_read, 48), 0xD9963A56u);
}

static void test_crc32c__sw_matches_vectors(void **state) {
  (void)state;
  assert_int_equal(sl_crc32c_sw_extend(0, "123456789", 9), 0xE3069283u);
  assert_int_equal(sl_crc32c_hw_extend(0, "123456789", 9), 0xE3069283u);
}

/* Every length and alignment up to a few words, hardware against table. */
static void test_crc32c__hw_equals_sw(void **state) {
  (void)state;
  enum { N = 4096 + 64 };
  uint8_t *buf = malloc(N);
  assert_non_null(buf);
  srand(7);
  for (int i = 0; i < N; i++) buf[i] = (uint8_t)rand();
  for (size_t off = 0; off < 16; off++) {
    for (size_t len = 0; len < 100; len++) {
      assert_int_equal(sl_crc32c_hw_extend(0, buf + off, len),
                       sl_crc32c_sw_extend(0, buf + off, len));
    }
    assert_int_equal(sl_crc32c_hw_extend(0, buf + off, 4096),
                     sl_crc32c_sw_extend(0, buf + off, 4096));
  }
  free(buf);
}

static void test_crc32c__extend_concatenates(void **state) {
  (void)state;
  const char *s = "The quick brown fox jumps over the lazy dog";
  size_t n = strlen(s);
  uint32_t whole = sl_crc32c(s, n);
  assert_int_equal(whole, 0x22620404u);
  for (size_t cut = 0; cut <= n; cut++) {
    assert_int_equal(sl_crc32c_extend(sl_crc32c(s, cut), s + cut, n - cut), whole);
    assert_int_equal(sl_crc32c_sw_extend(sl_crc32c_sw_extend(0, s, cut), s + cut,
                                         n - cut), whole);
  }
}

/* The entry checksum binds the ids, in the documented byte order. */
static void test_crc32c__entry_crc_covers_ids(void **state) {
  (void)state;
  const char payload[] = "hello";
  uint8_t buf[16 + 5];
  uint64_t ledger = 0x0102030405060708ull;
  int64_t entry = 7;
  for (int i = 0; i < 8; i++) {
    buf[i] = (uint8_t)(ledger >> (8 * i));
    buf[8 + i] = (uint8_t)((uint64_t)entry >> (8 * i));
  }
  memcpy(buf + 16, payload, 5);
  uint32_t crc = sl_entry_crc(ledger, entry, payload, 5);
  assert_int_equal(crc, sl_crc32c(buf, sizeof(buf)));
  assert_int_not_equal(crc, sl_entry_crc(ledger, entry + 1, payload, 5));
  assert_int_not_equal(crc, sl_entry_crc(ledger + 1, entry, payload, 5));
  assert_int_not_equal(crc, sl_crc32c(payload, 5));
  assert_int_equal(sl_entry_crc(1, 0, NULL, 0), sl_entry_crc(1, 0, "", 0));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_crc32c__known_vectors),
      cmocka_unit_test(test_crc32c__sw_matches_vectors),
      cmocka_unit_test(test_crc32c__hw_equals_sw),
      cmocka_unit_test(test_crc32c__extend_concatenates),
      cmocka_unit_test(test_crc32c__entry_crc_covers_ids),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
