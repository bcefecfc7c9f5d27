/*
 * Tests of protoc-gen-slrpc as protoc runs it: the real protoc, the real
 * plugin binary, .proto files from tools/testdata. What the generated code
 * does over gRPC is plugin_test.c's business.
 */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "tests/proc.h"
#include "tools/slrpc_names.h"

#define PROTOC "/usr/bin/protoc"
#define PLUGIN "tools/protoc-gen-slrpc" /* in the runfiles, our cwd */
#define TESTDATA "tools/testdata"

typedef struct run {
  char *dir;     /* temp dir: out/ and log */
  int exit_code; /* -1 if killed by a signal */
  char *log;     /* stdout + stderr */
} run;

static char *read_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) return NULL;
  char *buf = NULL;
  size_t len = 0, cap = 0;
  for (;;) {
    if (cap - len < 4096) {
      cap = cap ? 2 * cap : 8192;
      buf = realloc(buf, cap);
      assert_non_null(buf);
    }
    size_t n = fread(buf + len, 1, cap - len - 1, f);
    len += n;
    if (n == 0) break;
  }
  buf[len] = '\0';
  assert_int_equal(fclose(f), 0);
  return buf;
}

/* Runs argv (argv[0] absolute; "@OUT@" in an argument becomes the out dir)
 * to completion within 30 s. */
static void run_cmd(run *r, const char *const *args) {
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_proc_tempdir("slrpc", &r->dir, &err), SL_OK);
  char out[PATH_MAX], log[PATH_MAX];
  snprintf(out, sizeof(out), "%s/out", r->dir);
  snprintf(log, sizeof(log), "%s/log", r->dir);
  assert_int_equal(mkdir(out, 0755), 0);

  const char *argv[32];
  char *storage[32] = {NULL};
  size_t n = 0;
  for (; args[n] != NULL; n++) {
    assert_true(n < 31);
    const char *at = strstr(args[n], "@OUT@");
    if (at == NULL) {
      argv[n] = args[n];
      continue;
    }
    assert_true(asprintf(&storage[n], "%.*s%s%s", (int)(at - args[n]), args[n], out,
                         at + 5) > 0);
    argv[n] = storage[n];
  }
  argv[n] = NULL;

  sl_proc p = SL_PROC_INIT;
  assert_int_equal(sl_proc_start(&p, argv, NULL, log, &err), SL_OK);
  sl_status st = sl_proc_wait_exit(&p, 30000, &err);
  if (st != SL_OK) assert_int_equal(sl_proc_kill(&p, &err), SL_OK);
  assert_int_equal(st, SL_OK);
  r->exit_code = WIFEXITED(p.wait_status) ? WEXITSTATUS(p.wait_status) : -1;
  r->log = read_file(log);
  assert_non_null(r->log);
  for (size_t i = 0; i < n; i++) free(storage[i]);
}

/* protoc with the plugin on `protos` (NULL-terminated). */
static void run_protoc(run *r, const char *param, const char *const *protos) {
  char plugin[PATH_MAX], plugin_arg[PATH_MAX + 32], out_arg[64];
  assert_non_null(realpath(PLUGIN, plugin));
  snprintf(plugin_arg, sizeof(plugin_arg), "--plugin=protoc-gen-slrpc=%s", plugin);
  snprintf(out_arg, sizeof(out_arg), "--slrpc_out=%s%s@OUT@", param ? param : "",
           param ? ":" : "");
  const char *argv[16] = {PROTOC, "-I" TESTDATA, "-I/usr/include", plugin_arg, out_arg};
  size_t n = 5;
  for (size_t i = 0; protos[i] != NULL; i++) argv[n++] = protos[i];
  argv[n] = NULL;
  run_cmd(r, argv);
}

static char *out_file(const run *r, const char *name) {
  char path[PATH_MAX];
  snprintf(path, sizeof(path), "%s/out/%s", r->dir, name);
  return read_file(path);
}

static void run_release(run *r) {
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_proc_rmtree(r->dir, &err), SL_OK);
  free(r->dir);
  free(r->log);
}

static void expect_refusal(const char *proto, const char *message) {
  run r = {0};
  const char *protos[] = {proto, NULL};
  run_protoc(&r, NULL, protos);
  assert_int_not_equal(r.exit_code, 0);
  if (strstr(r.log, message) == NULL) fail_msg("no \"%s\" in:\n%s", message, r.log);
  run_release(&r);
}

static void expect_name(char *got, const char *want) {
  assert_string_equal(got, want);
  free(got);
}

/* protoc-c's spellings, taken from its output on these names. */
static void test_protoc_gen_slrpc__names_match_protoc_c(void **state) {
  (void)state;
  expect_name(sl_names_lower("GetInfo"), "get_info");
  expect_name(sl_names_lower("HTTP2Thing"), "http2_thing");
  expect_name(sl_names_lower("ABCdef3Ghi"), "abcdef3_ghi");
  expect_name(sl_names_lower("X1y2Z"), "x1y2_z");
  expect_name(sl_names_lower("Foo_Bar_baz"), "foo__bar_baz");
  expect_name(sl_names_lower("a_b__c"), "a_b__c");
  expect_name(sl_names_upper("InnerMSG"), "INNER_MSG");
  expect_name(sl_names_c_type(".sluice.test_pkg.V2x.HTTP2Thing.InnerMSG"),
              "Sluice__TestPkg__V2x__HTTP2Thing__InnerMSG");
  expect_name(sl_names_c_type(".p.a_b__c"), "P__ABC");
  expect_name(sl_names_c_type(".p.get_info_request"), "P__GetInfoRequest");
  expect_name(sl_names_descriptor(".sluice.v1.GetInfoRequest"),
              "sluice__v1__get_info_request__descriptor");
  expect_name(sl_names_descriptor(".sluice.test_pkg.V2x.HTTP2Thing.InnerMSG"),
              "sluice__test_pkg__v2x__http2_thing__inner_msg__descriptor");
  expect_name(sl_names_guard("sub/a-b.slrpc.h"), "SL_SLRPC_SUB_A_B_SLRPC_H");
}

static void test_protoc_gen_slrpc__writes_two_files_per_proto(void **state) {
  (void)state;
  run r = {0};
  const char *protos[] = {"plugin_test_types.proto", "plugin_test.proto", NULL};
  run_protoc(&r, NULL, protos);
  if (r.exit_code != 0) fail_msg("protoc failed:\n%s", r.log);

  /* No service: a guarded header and a source with no code. */
  char *h = out_file(&r, "plugin_test_types.slrpc.h");
  char *c = out_file(&r, "plugin_test_types.slrpc.c");
  assert_non_null(h);
  assert_non_null(c);
  assert_non_null(strstr(h, "#ifndef SL_SLRPC_PLUGIN_TEST_TYPES_SLRPC_H\n"));
  assert_null(strstr(h, "common/rpc_server.h"));
  assert_null(strstr(c, "sl_"));
  free(h);
  free(c);

  /* Spot checks; the compiler checks the rest in plugin_test. */
  h = out_file(&r, "plugin_test.slrpc.h");
  c = out_file(&r, "plugin_test.slrpc.c");
  assert_non_null(h);
  assert_non_null(c);
  assert_non_null(strstr(h, "#define SL_HTTP2_SERVICE_GET_HTTP2_FRAME (&sl_http2_service_methods[0])"));
  assert_non_null(strstr(h, "Sluice__Test__Plugin__HTTP2Frame__InnerMSG **resp"));
  assert_non_null(strstr(h, " * Unary: answers with the same text and seq + 1.\n"));
  assert_non_null(strstr(c, "{\"/sluice.test.plugin.HTTP2Service/X1y2Z\", SL_RPC_CLIENT_STREAMING"));
  free(h);
  free(c);
  run_release(&r);
}

static void test_protoc_gen_slrpc__refuses_method_name_clash(void **state) {
  (void)state;
  expect_refusal("bad_clash.proto",
                 "bad_clash.proto: method sluice.test.bad.ClashService/Foo and method "
                 "sluice.test.bad.ClashService/FooOpen both generate the C name "
                 "sl_clash_service_foo_open; rename one");
}

static void test_protoc_gen_slrpc__refuses_service_name_clash(void **state) {
  (void)state;
  expect_refusal("bad_service_clash.proto",
                 "service sluice.test.bad.Foo and service sluice.test.bad.FooMethods "
                 "both generate the C name sl_foo_methods");
}

static void test_protoc_gen_slrpc__refuses_c_package(void **state) {
  (void)state;
  expect_refusal("bad_c_package.proto",
                 "bad_c_package.proto: protoc-c's c_package option (set in "
                 "bad_c_package.proto) is not supported");
}

static void test_protoc_gen_slrpc__refuses_parameters(void **state) {
  (void)state;
  run r = {0};
  const char *protos[] = {"plugin_test.proto", NULL};
  run_protoc(&r, "fast=1", protos);
  assert_int_not_equal(r.exit_code, 0);
  assert_non_null(strstr(r.log, "protoc-gen-slrpc takes no parameters (got \"fast=1\")"));
  run_release(&r);
}

static void test_protoc_gen_slrpc__refuses_garbage_on_stdin(void **state) {
  (void)state;
  char plugin[PATH_MAX], cmd[PATH_MAX + 64];
  assert_non_null(realpath(PLUGIN, plugin));
  /* 0xff is a truncated varint: no CodeGeneratorRequest starts like that. */
  snprintf(cmd, sizeof(cmd), "printf '\\377' | '%s'", plugin);
  const char *argv[] = {"/bin/sh", "-c", cmd, NULL};
  run r = {0};
  run_cmd(&r, argv);
  assert_int_equal(r.exit_code, 1);
  assert_non_null(strstr(r.log, "protoc-gen-slrpc: stdin: not a CodeGeneratorRequest"));
  run_release(&r);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_protoc_gen_slrpc__names_match_protoc_c),
      cmocka_unit_test(test_protoc_gen_slrpc__writes_two_files_per_proto),
      cmocka_unit_test(test_protoc_gen_slrpc__refuses_method_name_clash),
      cmocka_unit_test(test_protoc_gen_slrpc__refuses_service_name_clash),
      cmocka_unit_test(test_protoc_gen_slrpc__refuses_c_package),
      cmocka_unit_test(test_protoc_gen_slrpc__refuses_parameters),
      cmocka_unit_test(test_protoc_gen_slrpc__refuses_garbage_on_stdin),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
