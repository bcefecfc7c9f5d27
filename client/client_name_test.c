/* Generated producer and consumer names must differ between processes,
 * also between forks of one process that name in the same millisecond. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client/client_int.h"

#define CHILDREN 4

static void child_names(char names[][64], const char *prefix) {
  int fd[2];
  assert_int_equal(pipe(fd), 0);
  pid_t pids[CHILDREN];
  for (int i = 0; i < CHILDREN; i++) {
    pids[i] = fork();
    assert_true(pids[i] >= 0);
    if (pids[i] == 0) {
      char name[64] = "";
      sl_client_gen_name(name, sizeof(name), prefix);
      _exit(write(fd[1], name, sizeof(name)) == (ssize_t)sizeof(name) ? 0 : 1);
    }
  }
  close(fd[1]);
  for (int i = 0; i < CHILDREN; i++)
    assert_int_equal(read(fd[0], names[i], sizeof(names[i])), (ssize_t)sizeof(names[i]));
  close(fd[0]);
  for (int i = 0; i < CHILDREN; i++) {
    int ws;
    assert_int_equal(waitpid(pids[i], &ws, 0), pids[i]);
    assert_true(WIFEXITED(ws) && WEXITSTATUS(ws) == 0);
  }
}

/* The part after the last '-': the only part that tells apart two names
 * given in the same millisecond. */
static const char *random_part(const char *name) {
  const char *dash = strrchr(name, '-');
  assert_non_null(dash);
  assert_int_equal(strlen(dash + 1), 16);
  return dash + 1;
}

static void test_client_name__forks_get_different_names(void **state) {
  (void)state;
  char names[CHILDREN][64];
  child_names(names, "sluice");
  for (int i = 0; i < CHILDREN; i++) {
    assert_int_equal(strncmp(names[i], "sluice-", 7), 0);
    for (int k = 0; k < i; k++)
      assert_string_not_equal(random_part(names[i]), random_part(names[k]));
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_client_name__forks_get_different_names),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
