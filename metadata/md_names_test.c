/* Name rules (md_names.h): what passes, what is refused, and the messages. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "metadata/md_names.h"

static char *repeat(char c, size_t n) {
  static char buf[1024];
  memset(buf, c, n);
  buf[n] = '\0';
  return buf;
}

static void test_md_names__segments(void **state) {
  (void)state;
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_md_check_namespace("public", NULL), SL_OK);
  assert_int_equal(sl_md_check_namespace("a-b_c.D9", NULL), SL_OK);
  assert_int_equal(sl_md_check_namespace(repeat('x', 255), NULL), SL_OK);
  assert_int_equal(sl_md_check_namespace(repeat('x', 256), &err), SL_EINVAL);
  assert_non_null(strstr(err.msg, "256 bytes"));
  assert_int_equal(sl_md_check_namespace("", &err), SL_EINVAL);
  assert_non_null(strstr(err.msg, "empty"));
  assert_int_equal(sl_md_check_namespace(NULL, NULL), SL_EINVAL);
  assert_int_equal(sl_md_check_namespace("a/b", NULL), SL_EINVAL);
  assert_int_equal(sl_md_check_namespace("a b", NULL), SL_EINVAL);
  assert_int_equal(sl_md_check_namespace(".", NULL), SL_EINVAL);
  assert_int_equal(sl_md_check_namespace("..", NULL), SL_EINVAL);
  assert_int_equal(sl_md_check_namespace("...", NULL), SL_OK);
  assert_int_equal(sl_md_check_segment("bookie id", "b\xff", &err), SL_EINVAL);
  /* The message names the input, escaped, and what it is. */
  assert_non_null(strstr(err.msg, "bookie id \"b\\xff\""));
}

static void test_md_names__topics(void **state) {
  (void)state;
  size_t ns_len = 0;
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_md_check_topic("public/orders", &ns_len, NULL), SL_OK);
  assert_int_equal(ns_len, 6);
  assert_int_equal(sl_md_check_topic("public", &ns_len, &err), SL_EINVAL);
  assert_non_null(strstr(err.msg, "namespace/topic"));
  assert_int_equal(sl_md_check_topic("public/", NULL, NULL), SL_EINVAL);
  assert_int_equal(sl_md_check_topic("/orders", NULL, NULL), SL_EINVAL);
  assert_int_equal(sl_md_check_topic("a/b/c", NULL, NULL), SL_EINVAL);
  assert_int_equal(sl_md_check_topic("a/b%", NULL, NULL), SL_EINVAL);
  /* 255 bytes in all is the limit for the whole name. */
  char name[300];
  snprintf(name, sizeof(name), "ns/%s", repeat('t', 252));
  assert_int_equal(sl_md_check_topic(name, NULL, NULL), SL_OK);
  snprintf(name, sizeof(name), "ns/%s", repeat('t', 253));
  assert_int_equal(sl_md_check_topic(name, NULL, &err), SL_EINVAL);
  /* The partition suffix is reserved. */
  assert_int_equal(sl_md_check_topic("a/t-partition-1", NULL, &err), SL_EINVAL);
  assert_non_null(strstr(err.msg, "reserved"));
  assert_int_equal(sl_md_check_topic("a/t-partition-", NULL, NULL), SL_OK);
  assert_int_equal(sl_md_check_topic("a/t-partition-x", NULL, NULL), SL_OK);
}

static void test_md_names__partitions(void **state) {
  (void)state;
  size_t tl = 0;
  int64_t idx = 0;
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_md_check_partition("public/orders", &tl, &idx, NULL), SL_OK);
  assert_int_equal(tl, 13);
  assert_int_equal(idx, -1);
  assert_int_equal(sl_md_check_partition("public/orders-partition-0", &tl, &idx, NULL), SL_OK);
  assert_int_equal(tl, 13);
  assert_int_equal(idx, 0);
  assert_int_equal(sl_md_check_partition("public/orders-partition-9999", &tl, &idx, NULL), SL_OK);
  assert_int_equal(idx, 9999);
  assert_int_equal(sl_md_check_partition("public/orders-partition-10000", NULL, NULL, &err),
                   SL_EINVAL);
  assert_int_equal(sl_md_check_partition("public/orders-partition-01", NULL, NULL, NULL),
                   SL_EINVAL);
  assert_int_equal(sl_md_check_partition("public/-partition-1", NULL, NULL, NULL), SL_EINVAL);
  assert_int_equal(sl_md_check_partition("p/t-partition-1-partition-2", NULL, NULL, NULL),
                   SL_EINVAL);
  assert_int_equal(sl_md_check_partition("nope", NULL, NULL, NULL), SL_EINVAL);
  assert_int_equal(sl_md_check_partition("", NULL, NULL, NULL), SL_EINVAL);
  /* A 255-byte topic with the longest suffix is still a partition. */
  char name[300];
  snprintf(name, sizeof(name), "ns/%s-partition-9999", repeat('t', 252));
  assert_int_equal(sl_md_check_partition(name, NULL, NULL, NULL), SL_OK);
}

static void test_md_names__prefixes_addresses_text(void **state) {
  (void)state;
  assert_int_equal(sl_md_check_partition_prefix("", NULL), SL_OK);
  assert_int_equal(sl_md_check_partition_prefix(NULL, NULL), SL_OK);
  assert_int_equal(sl_md_check_partition_prefix("public/", NULL), SL_OK);
  assert_int_equal(sl_md_check_partition_prefix("public/ord", NULL), SL_OK);
  assert_int_equal(sl_md_check_partition_prefix("/x", NULL), SL_EINVAL);
  assert_int_equal(sl_md_check_partition_prefix("a/b/", NULL), SL_EINVAL);
  assert_int_equal(sl_md_check_partition_prefix("a\n", NULL), SL_EINVAL);

  assert_int_equal(sl_md_check_address("addr", "127.0.0.1:7000", NULL), SL_OK);
  assert_int_equal(sl_md_check_address("addr", "host-1.svc:1", NULL), SL_OK);
  assert_int_equal(sl_md_check_address("addr", "[::1]:65535", NULL), SL_OK);
  assert_int_equal(sl_md_check_address("addr", "", NULL), SL_EINVAL);
  assert_int_equal(sl_md_check_address("addr", NULL, NULL), SL_EINVAL);
  assert_int_equal(sl_md_check_address("addr", "host", NULL), SL_EINVAL);
  assert_int_equal(sl_md_check_address("addr", "host:", NULL), SL_EINVAL);
  assert_int_equal(sl_md_check_address("addr", ":80", NULL), SL_EINVAL);
  assert_int_equal(sl_md_check_address("addr", "host:0", NULL), SL_EINVAL);
  assert_int_equal(sl_md_check_address("addr", "host:65536", NULL), SL_EINVAL);
  assert_int_equal(sl_md_check_address("addr", "host:8x", NULL), SL_EINVAL);
  assert_int_equal(sl_md_check_address("addr", "ho st:80", NULL), SL_EINVAL);

  assert_int_equal(sl_md_check_text("rack", NULL, 10, NULL), SL_OK);
  assert_int_equal(sl_md_check_text("rack", "r1 east", 10, NULL), SL_OK);
  assert_int_equal(sl_md_check_text("rack", "r1\teast", 10, NULL), SL_EINVAL);
  assert_int_equal(sl_md_check_text("rack", "12345678901", 10, NULL), SL_EINVAL);
}

static void test_md_names__long_input_message_is_bounded(void **state) {
  (void)state;
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_md_check_namespace(repeat('\x01', 1000), &err), SL_EINVAL);
  assert_true(strlen(err.msg) < SL_ERR_MAX);
  assert_non_null(strstr(err.msg, "...\""));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_md_names__segments),
      cmocka_unit_test(test_md_names__topics),
      cmocka_unit_test(test_md_names__partitions),
      cmocka_unit_test(test_md_names__prefixes_addresses_text),
      cmocka_unit_test(test_md_names__long_input_message_is_bounded),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
