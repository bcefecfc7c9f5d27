#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/clock.h"
#include "tests/proc.h"

static char *read_file(const char *path) {
  FILE *f = fopen(path, "r");
  if (f == NULL) return NULL;
  char *buf = calloc(1, 4096);
  size_t n = fread(buf, 1, 4095, f);
  buf[n] = '\0';
  fclose(f);
  return buf;
}

static void test_proc__spawn_logs_env_and_exit(void **state) {
  (void)state;
  sl_err err = SL_ERR_INIT;
  char *dir = NULL;
  assert_int_equal(sl_proc_tempdir("proc", &dir, &err), SL_OK);
  char log[512];
  snprintf(log, sizeof(log), "%s/out.log", dir);
  sl_proc p = SL_PROC_INIT;
  const char *argv[] = {"/bin/sh", "-c", "echo out=$SL_X; echo err >&2; exit 3", NULL};
  const char *env[] = {"SL_X=hello", NULL};
  assert_int_equal(sl_proc_start(&p, argv, env, log, &err), SL_OK);
  assert_int_equal(sl_proc_wait_exit(&p, 10000, &err), SL_OK);
  assert_false(sl_proc_running(&p));
  assert_true(p.exited);
  assert_true(WIFEXITED(p.wait_status));
  assert_int_equal(WEXITSTATUS(p.wait_status), 3);
  char *text = read_file(log);
  assert_non_null(text);
  assert_non_null(strstr(text, "out=hello"));
  assert_non_null(strstr(text, "err"));
  free(text);
  assert_int_equal(sl_proc_rmtree(dir, &err), SL_OK);
  struct stat sb;
  assert_int_not_equal(stat(dir, &sb), 0);
  free(dir);
}

static void test_proc__stop_escalates_to_sigkill(void **state) {
  (void)state;
  sl_err err = SL_ERR_INIT;
  char *dir = NULL;
  assert_int_equal(sl_proc_tempdir("proc", &dir, &err), SL_OK);
  char log[512];
  snprintf(log, sizeof(log), "%s/out.log", dir);
  sl_proc p = SL_PROC_INIT;
  /* Ignores SIGTERM, so only the SIGKILL after the grace period ends it. */
  const char *argv[] = {"/bin/sh", "-c",
                        "trap '' TERM; echo ready; while :; do sleep 1; done", NULL};
  assert_int_equal(sl_proc_start(&p, argv, NULL, log, &err), SL_OK);
  /* The trap must be in place before the SIGTERM is sent. */
  long long deadline = sl_clock_mono_ms() + 10000;
  char *text = NULL;
  while ((text = read_file(log)) != NULL && strstr(text, "ready") == NULL &&
         sl_clock_mono_ms() < deadline) {
    free(text);
    usleep(10000);
  }
  assert_non_null(text);
  assert_non_null(strstr(text, "ready"));
  free(text);
  free(dir);
  assert_true(sl_proc_running(&p));
  long long t0 = sl_clock_mono_ms();
  assert_int_equal(sl_proc_stop(&p, 300, &err), SL_OK);
  long long took = sl_clock_mono_ms() - t0;
  assert_true(took >= 290 && took < 5000);
  assert_false(sl_proc_running(&p));
  assert_true(WIFSIGNALED(p.wait_status));
  assert_int_equal(WTERMSIG(p.wait_status), SIGKILL);
}

static void test_proc__stop_uses_sigterm_first(void **state) {
  (void)state;
  sl_err err = SL_ERR_INIT;
  sl_proc p = SL_PROC_INIT;
  const char *argv[] = {"/bin/sleep", "100", NULL};
  assert_int_equal(sl_proc_start(&p, argv, NULL, "/dev/null", &err), SL_OK);
  assert_int_equal(sl_proc_stop(&p, 5000, &err), SL_OK);
  assert_true(WIFSIGNALED(p.wait_status));
  assert_int_equal(WTERMSIG(p.wait_status), SIGTERM);
  /* Stopping again is a no-op. */
  assert_int_equal(sl_proc_stop(&p, 5000, &err), SL_OK);
  assert_int_equal(sl_proc_kill(&p, &err), SL_OK);
}

static void test_proc__kill_is_sigkill(void **state) {
  (void)state;
  sl_err err = SL_ERR_INIT;
  sl_proc p = SL_PROC_INIT;
  const char *argv[] = {"/bin/sleep", "100", NULL};
  assert_int_equal(sl_proc_start(&p, argv, NULL, "/dev/null", &err), SL_OK);
  assert_int_equal(sl_proc_wait_exit(&p, 50, &err), SL_ETIMEDOUT);
  assert_int_equal(sl_proc_kill(&p, &err), SL_OK);
  assert_true(WIFSIGNALED(p.wait_status));
  assert_int_equal(WTERMSIG(p.wait_status), SIGKILL);
}

static void test_proc__rejects_bad_spawn(void **state) {
  (void)state;
  sl_err err = SL_ERR_INIT;
  sl_proc p = SL_PROC_INIT;
  const char *rel[] = {"sleep", "1", NULL};
  assert_int_equal(sl_proc_start(&p, rel, NULL, "/dev/null", &err), SL_EINVAL);
  assert_non_null(strstr(err.msg, "absolute"));
  const char *missing[] = {"/nonexistent/bin", NULL};
  assert_int_equal(sl_proc_start(&p, missing, NULL, "/dev/null", &err), SL_EINVAL);
  assert_non_null(strstr(err.msg, "/nonexistent/bin"));
  const char *ok[] = {"/bin/true", NULL};
  assert_int_equal(sl_proc_start(&p, ok, NULL, "/nonexistent/dir/log", &err), SL_EIO);
  assert_non_null(strstr(err.msg, "/nonexistent/dir/log"));
  assert_int_equal(p.pid, 0);
}

static void test_proc__free_port_and_wait_port(void **state) {
  (void)state;
  sl_err err = SL_ERR_INIT;
  int port = 0;
  assert_int_equal(sl_proc_free_port(&port, &err), SL_OK);
  assert_true(port > 0 && port < 65536);
  /* Nobody listens yet: the wait times out. */
  long long t0 = sl_clock_mono_ms();
  assert_int_equal(sl_proc_wait_port(NULL, port, 200, &err), SL_ETIMEDOUT);
  assert_true(sl_clock_mono_ms() - t0 >= 190);
  assert_non_null(strstr(err.msg, "not accepting"));

  int fd = socket(AF_INET, SOCK_STREAM, 0);
  assert_true(fd >= 0);
  int one = 1;
  assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)), 0);
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof(sa));
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
  assert_int_equal(listen(fd, 8), 0);
  assert_int_equal(sl_proc_wait_port(NULL, port, 2000, &err), SL_OK);
  close(fd);
}

static void test_proc__wait_port_notices_exit(void **state) {
  (void)state;
  sl_err err = SL_ERR_INIT;
  int port = 0;
  assert_int_equal(sl_proc_free_port(&port, &err), SL_OK);
  sl_proc p = SL_PROC_INIT;
  const char *argv[] = {"/bin/false", NULL};
  assert_int_equal(sl_proc_start(&p, argv, NULL, "/dev/null", &err), SL_OK);
  long long t0 = sl_clock_mono_ms();
  assert_int_equal(sl_proc_wait_port(&p, port, 20000, &err), SL_EUNAVAIL);
  assert_true(sl_clock_mono_ms() - t0 < 10000);
  assert_non_null(strstr(err.msg, "exited"));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_proc__spawn_logs_env_and_exit),
      cmocka_unit_test(test_proc__stop_escalates_to_sigkill),
      cmocka_unit_test(test_proc__stop_uses_sigterm_first),
      cmocka_unit_test(test_proc__kill_is_sigkill),
      cmocka_unit_test(test_proc__rejects_bad_spawn),
      cmocka_unit_test(test_proc__free_port_and_wait_port),
      cmocka_unit_test(test_proc__wait_port_notices_exit),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
