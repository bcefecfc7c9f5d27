#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "common/buf.h"

static void test_buf__empty_owns_nothing(void **state) {
  (void)state;
  sl_buf b = SL_BUF_INIT;
  size_t n = 99;
  assert_null(sl_buf_detach(&b, &n));
  assert_int_equal(n, 0);
  sl_buf_reset(&b);
  sl_buf_release(&b);
  assert_null(b.data);
}

static void test_buf__append_keeps_nul_and_bytes(void **state) {
  (void)state;
  sl_buf b;
  sl_buf_init(&b);
  sl_buf_append(&b, "ab\0c", 4);
  assert_int_equal(b.len, 4);
  assert_memory_equal(b.data, "ab\0c", 5);
  sl_buf_appends(&b, "xyz");
  sl_buf_append(&b, NULL, 0);
  assert_int_equal(b.len, 7);
  assert_memory_equal(b.data, "ab\0cxyz", 8);
  sl_buf_release(&b);
}

/* Many small appends cross several growths without losing a byte. */
static void test_buf__grows_across_many_appends(void **state) {
  (void)state;
  sl_buf b = SL_BUF_INIT;
  for (int i = 0; i < 10000; i++) {
    char c = (char)('a' + i % 26);
    sl_buf_append(&b, &c, 1);
    assert_true(b.len <= b.cap);
  }
  assert_int_equal(b.len, 10000);
  for (int i = 0; i < 10000; i++) assert_int_equal(b.data[i], 'a' + i % 26);
  assert_int_equal(b.data[10000], '\0');
  sl_buf_release(&b);
}

static void test_buf__appendf_short_and_long(void **state) {
  (void)state;
  sl_buf b = SL_BUF_INIT;
  sl_buf_appendf(&b, "ledger=%d ", 42);
  assert_string_equal(b.data, "ledger=42 ");
  /* Longer than the spare room: formats a second time after growing. */
  char big[5000];
  memset(big, 'x', sizeof(big) - 1);
  big[sizeof(big) - 1] = '\0';
  sl_buf_appendf(&b, "%s|%s", big, "end");
  assert_int_equal(b.len, 10 + 4999 + 4);
  assert_string_equal(b.data + b.len - 4, "|end");
  assert_int_equal(sl_buf_appendf_try(&b, "%d", 7), SL_OK);
  assert_string_equal(b.data + b.len - 1, "7");
  sl_buf_release(&b);
}

static void test_buf__reset_keeps_memory(void **state) {
  (void)state;
  sl_buf b = SL_BUF_INIT;
  sl_buf_appends(&b, "hello");
  char *p = b.data;
  size_t cap = b.cap;
  sl_buf_reset(&b);
  assert_int_equal(b.len, 0);
  assert_string_equal(b.data, "");
  assert_ptr_equal(b.data, p);
  assert_int_equal(b.cap, cap);
  sl_buf_release(&b);
}

static void test_buf__reserve_then_write_in_place(void **state) {
  (void)state;
  sl_buf b = SL_BUF_INIT;
  sl_buf_reserve(&b, 100);
  assert_true(b.cap >= 100);
  char *p = b.data;
  sl_buf_append(&b, "0123456789", 10); /* fits: no move (invariant 4) */
  assert_ptr_equal(b.data, p);
  assert_int_equal(sl_buf_reserve_try(&b, 1000), SL_OK);
  assert_true(b.cap - b.len >= 1000);
  sl_buf_release(&b);
}

/* The *_try family reports an impossible size instead of aborting, and
 * leaves the buffer as it was (invariant 3). */
static void test_buf__try_reports_enomem_unchanged(void **state) {
  (void)state;
  sl_buf b = SL_BUF_INIT;
  sl_buf_appends(&b, "keep");
  char *p = b.data;
  size_t cap = b.cap;
  assert_int_equal(sl_buf_reserve_try(&b, SIZE_MAX - 2), SL_ENOMEM);
  assert_int_equal(sl_buf_append_try(&b, "x", SIZE_MAX / 2 + 1), SL_ENOMEM);
  assert_ptr_equal(b.data, p);
  assert_int_equal(b.cap, cap);
  assert_int_equal(b.len, 4);
  assert_string_equal(b.data, "keep");
  assert_int_equal(sl_buf_append_try(&b, "!", 1), SL_OK);
  assert_string_equal(b.data, "keep!");
  sl_buf_release(&b);
}

static void test_buf__detach_transfers_ownership(void **state) {
  (void)state;
  sl_buf b = SL_BUF_INIT;
  sl_buf_appendf(&b, "%s-%s", "a", "b");
  size_t n = 0;
  char *s = sl_buf_detach(&b, &n);
  assert_int_equal(n, 3);
  assert_string_equal(s, "a-b");
  assert_null(b.data);
  assert_int_equal(b.len, 0);
  assert_int_equal(b.cap, 0);
  free(s);
  s = sl_buf_detach_str(&b); /* never grew: still a string */
  assert_string_equal(s, "");
  free(s);
  sl_buf_appends(&b, "reuse");
  assert_string_equal(b.data, "reuse");
  sl_buf_release(&b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_buf__empty_owns_nothing),
      cmocka_unit_test(test_buf__append_keeps_nul_and_bytes),
      cmocka_unit_test(test_buf__grows_across_many_appends),
      cmocka_unit_test(test_buf__appendf_short_and_long),
      cmocka_unit_test(test_buf__reset_keeps_memory),
      cmocka_unit_test(test_buf__reserve_then_write_in_place),
      cmocka_unit_test(test_buf__try_reports_enomem_unchanged),
      cmocka_unit_test(test_buf__detach_transfers_ownership),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
