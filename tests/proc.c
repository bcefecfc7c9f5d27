#include "tests/proc.h"
#include "common/clock.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/*
 * Table of children still running, read by the exit hook and by signal
 * handlers; slots are written with atomic builtins so a handler never sees a
 * torn value. 0 marks a free slot.
 */
#define MAX_LIVE 64
static pid_t live[MAX_LIVE];
static pthread_once_t hooks_once = PTHREAD_ONCE_INIT;

static void kill_live(void) {
  for (int i = 0; i < MAX_LIVE; i++) {
    pid_t pid = __atomic_load_n(&live[i], __ATOMIC_SEQ_CST);
    if (pid > 0) kill(-pid, SIGKILL);
  }
}

static void on_fatal_signal(int sig) {
  kill_live();
  signal(sig, SIG_DFL);
  raise(sig);
}

static void install_hooks(void) {
  atexit(kill_live);
  /* SIGSEGV is left to cmocka and the sanitizers, which catch it first. */
  int sigs[] = {SIGABRT, SIGTERM, SIGINT};
  for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_fatal_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(sigs[i], &sa, NULL);
  }
}

static void track(pid_t pid) {
  for (int i = 0; i < MAX_LIVE; i++) {
    pid_t expected = 0;
    if (__atomic_compare_exchange_n(&live[i], &expected, pid, false,
                                    __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
      return;
  }
  /* Table full: the child is still stopped by the test; only the crash-time
   * safety net misses it. */
}

static void untrack(pid_t pid) {
  for (int i = 0; i < MAX_LIVE; i++) {
    pid_t expected = pid;
    if (__atomic_compare_exchange_n(&live[i], &expected, 0, false,
                                    __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
      return;
  }
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

/* environ minus names that `env` overrides, plus `env`. Shallow copy. */
static char **merge_env(const char *const *env) {
  size_t n_env = 0, n_extra = 0;
  while (environ[n_env] != NULL) n_env++;
  while (env != NULL && env[n_extra] != NULL) n_extra++;
  char **out = sl_xcalloc(n_env + n_extra + 1, sizeof(char *));
  size_t k = 0;
  for (size_t i = 0; i < n_env; i++) {
    const char *eq = strchr(environ[i], '=');
    size_t name_len = eq ? (size_t)(eq - environ[i]) : strlen(environ[i]);
    bool overridden = false;
    for (size_t j = 0; j < n_extra && !overridden; j++)
      overridden = strncmp(env[j], environ[i], name_len) == 0 &&
                   env[j][name_len] == '=';
    if (!overridden) out[k++] = environ[i];
  }
  for (size_t j = 0; j < n_extra; j++) out[k++] = (char *)env[j];
  out[k] = NULL;
  return out;
}

sl_status sl_proc_start(sl_proc *p, const char *const *argv,
                        const char *const *env, const char *log_path,
                        sl_err *err) {
  SL_ASSERT(p->pid == 0);
  if (argv == NULL || argv[0] == NULL || argv[0][0] != '/')
    return sl_err_set(err, SL_EINVAL, "spawn: argv[0] must be an absolute path");
  if (access(argv[0], X_OK) != 0)
    return sl_err_set(err, SL_EINVAL, "spawn %s: not executable: %s", argv[0],
                      strerror(errno));
  pthread_once(&hooks_once, install_hooks);

  sl_status st = SL_OK;
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  int rc = posix_spawn_file_actions_init(&fa);
  if (rc != 0)
    return sl_err_set(err, SL_EIO, "spawn %s: %s", argv[0], strerror(rc));
  rc = posix_spawnattr_init(&attr);
  if (rc != 0) {
    st = sl_err_set(err, SL_EIO, "spawn %s: %s", argv[0], strerror(rc));
    goto out_fa;
  }
  /* Own process group, so stop/kill reach any grandchildren too. */
  rc = posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
  if (rc == 0) rc = posix_spawnattr_setpgroup(&attr, 0);
  if (rc == 0)
    rc = posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  if (rc == 0)
    rc = posix_spawn_file_actions_addopen(
        &fa, 1, log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (rc == 0) rc = posix_spawn_file_actions_adddup2(&fa, 1, 2);
  if (rc != 0) {
    st = sl_err_set(err, SL_EIO, "spawn %s: %s", argv[0], strerror(rc));
    goto out_attr;
  }
  /* Fail early with a clear message rather than a child that dies at once. */
  int probe = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (probe < 0) {
    st = sl_err_set(err, SL_EIO, "spawn %s: log %s: %s", argv[0], log_path,
                    strerror(errno));
    goto out_attr;
  }
  close(probe);

  char **envp = merge_env(env);
  pid_t pid;
  rc = posix_spawn(&pid, argv[0], &fa, &attr, (char *const *)argv, envp);
  free(envp);
  if (rc != 0) {
    st = sl_err_set(err, SL_EIO, "spawn %s: %s", argv[0], strerror(rc));
    goto out_attr;
  }
  track(pid);
  p->pid = pid;
  p->exited = false;
  p->wait_status = 0;
out_attr:
  posix_spawnattr_destroy(&attr);
out_fa:
  posix_spawn_file_actions_destroy(&fa);
  return st;
}

/* Reaps if exited; returns true if reaped (or nothing to reap). */
static bool reap(sl_proc *p, bool block) {
  if (p->pid <= 0) return true;
  int status;
  pid_t r;
  do {
    r = waitpid(p->pid, &status, block ? 0 : WNOHANG);
  } while (r < 0 && errno == EINTR);
  if (r == 0) return false;
  /* r < 0 (ECHILD) means someone else reaped it; treat it as gone. */
  untrack(p->pid);
  p->wait_status = r > 0 ? status : 0;
  p->exited = true;
  p->pid = 0;
  return true;
}

bool sl_proc_running(sl_proc *p) { return p->pid > 0 && !reap(p, false); }

sl_status sl_proc_wait_exit(sl_proc *p, int timeout_ms, sl_err *err) {
  long long deadline = sl_clock_mono_ms() + timeout_ms;
  pid_t pid = p->pid;
  while (!reap(p, false)) {
    if (sl_clock_mono_ms() >= deadline)
      return sl_err_set(err, SL_ETIMEDOUT, "process %d: still running after %d ms",
                        (int)pid, timeout_ms);
    sleep_ms(10);
  }
  return SL_OK;
}

sl_status sl_proc_stop(sl_proc *p, int grace_ms, sl_err *err) {
  if (p->pid <= 0) return SL_OK;
  kill(-p->pid, SIGTERM);
  if (sl_proc_wait_exit(p, grace_ms, NULL) == SL_OK) return SL_OK;
  return sl_proc_kill(p, err);
}

sl_status sl_proc_kill(sl_proc *p, sl_err *err) {
  (void)err;
  if (p->pid <= 0) return SL_OK;
  kill(-p->pid, SIGKILL);
  reap(p, true);
  return SL_OK;
}

sl_status sl_proc_free_port(int *port, sl_err *err) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return sl_err_set(err, SL_EIO, "free port: socket: %s", strerror(errno));
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof(sa));
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(sa);
  sl_status st = SL_OK;
  if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
      getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
    st = sl_err_set(err, SL_EIO, "free port: bind 127.0.0.1:0: %s", strerror(errno));
  } else {
    *port = ntohs(sa.sin_port);
  }
  close(fd);
  return st;
}

static bool port_accepts(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof(sa));
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
  close(fd);
  return ok;
}

sl_status sl_proc_wait_port(sl_proc *p, int port, int timeout_ms, sl_err *err) {
  long long deadline = sl_clock_mono_ms() + timeout_ms;
  for (;;) {
    if (port_accepts(port)) return SL_OK;
    if (p != NULL && !sl_proc_running(p))
      return sl_err_set(err, SL_EUNAVAIL,
                        "port %d: process exited (wait status 0x%x) before listening",
                        port, p->wait_status);
    if (sl_clock_mono_ms() >= deadline)
      return sl_err_set(err, SL_ETIMEDOUT, "port %d: not accepting after %d ms",
                        port, timeout_ms);
    sleep_ms(20);
  }
}

sl_status sl_proc_tempdir(const char *name, char **out, sl_err *err) {
  const char *base = getenv("TEST_TMPDIR");
  if (base == NULL || base[0] == '\0') base = "/tmp";
  size_t n = strlen(base) + strlen(name) + 16;
  char *path = sl_xmalloc(n);
  snprintf(path, n, "%s/%s.XXXXXX", base, name);
  if (mkdtemp(path) == NULL) {
    sl_status st = sl_err_set(err, SL_EIO, "tempdir %s: %s", path, strerror(errno));
    free(path);
    return st;
  }
  *out = path;
  return SL_OK;
}

static int rm_one(const char *path, const struct stat *sb, int type,
                  struct FTW *ftw) {
  (void)sb;
  (void)ftw;
  int rc = (type == FTW_DP) ? rmdir(path) : unlink(path);
  return (rc != 0 && errno != ENOENT) ? -1 : 0;
}

sl_status sl_proc_rmtree(const char *path, sl_err *err) {
  struct stat sb;
  if (lstat(path, &sb) != 0 && errno == ENOENT) return SL_OK;
  if (nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS) != 0)
    return sl_err_set(err, SL_EIO, "rmtree %s: %s", path, strerror(errno));
  return SL_OK;
}
