/*
 * Process utilities for integration tests: start a real binary, stop it,
 * kill it, find free loopback ports, wait for a port, make temp dirs.
 *
 * Every process started here is also recorded in a small process-wide table.
 * If the test process exits (normally, or through abort() from a failed
 * assert) while a child still runs, an exit hook and a SIGABRT/SIGSEGV
 * handler SIGKILL the leftovers, so a failing test does not leave an etcd or
 * a broker running. Tests should still stop what they start.
 *
 *   sl_proc p = SL_PROC_INIT;
 *   const char *argv[] = {"/usr/bin/etcd", "--data-dir", dir, NULL};
 *   sl_proc_start(&p, argv, NULL, "/tmp/x/etcd.log", &err);
 *   sl_proc_wait_port(port, 10000, &err);
 *   ...
 *   sl_proc_stop(&p, 2000, &err);
 *
 * Not thread-safe per handle: one thread drives one sl_proc.
 */
#ifndef SL_TESTS_PROC_H
#define SL_TESTS_PROC_H

#include <stdbool.h>
#include <sys/types.h>

#include "common/status.h"

typedef struct sl_proc {
  pid_t pid;       /* > 0 while started and not yet reaped */
  int wait_status; /* waitpid() status of the last exit, when pid == 0 */
  bool exited;     /* true once a started process has been reaped */
} sl_proc;

#define SL_PROC_INIT {.pid = 0, .wait_status = 0, .exited = false}

/*
 * Starts argv[0] (an absolute path; no PATH search) with argv, in its own
 * process group. The child inherits this process's environment plus `env`
 * (NULL-terminated "NAME=value" strings that override inherited names; may be
 * NULL). stdout and stderr are appended to `log_path` (created if missing),
 * stdin is /dev/null. All arguments are borrowed.
 * Precondition: p is not running. Returns SL_EINVAL if argv[0] is not an
 * executable absolute path, SL_EIO if the log cannot be opened or spawn fails.
 */
sl_status sl_proc_start(sl_proc *p, const char *const *argv,
                        const char *const *env, const char *log_path,
                        sl_err *err);

/* True if the process was started and has not exited (reaps it if it has). */
bool sl_proc_running(sl_proc *p);

/*
 * Sends SIGTERM to the process group, waits up to grace_ms for the exit, then
 * sends SIGKILL and waits. Returns SL_OK once reaped (also if it had already
 * exited or was never started).
 */
sl_status sl_proc_stop(sl_proc *p, int grace_ms, sl_err *err);

/* SIGKILL to the process group, then waits for the exit (a crash, kill -9). */
sl_status sl_proc_kill(sl_proc *p, sl_err *err);

/*
 * Waits up to timeout_ms for the process to exit by itself. SL_ETIMEDOUT if
 * it is still running at the deadline.
 */
sl_status sl_proc_wait_exit(sl_proc *p, int timeout_ms, sl_err *err);

/*
 * Picks a TCP port on 127.0.0.1 that is free right now: binds port 0, reads
 * the port, closes. Another process may take it before it is used, so
 * callers that start a server on it should retry with a new port when the
 * server fails to bind.
 */
sl_status sl_proc_free_port(int *port, sl_err *err);

/*
 * Polls until 127.0.0.1:port accepts a TCP connection or timeout_ms passes
 * (SL_ETIMEDOUT). If `p` is not NULL and the process exits meanwhile,
 * returns SL_EUNAVAIL at once.
 */
sl_status sl_proc_wait_port(sl_proc *p, int port, int timeout_ms, sl_err *err);

/*
 * Creates a fresh directory "<base>/<name>.XXXXXX" where base is
 * $TEST_TMPDIR (or /tmp when unset). *out is heap-allocated; caller frees.
 */
sl_status sl_proc_tempdir(const char *name, char **out, sl_err *err);

/* Removes a directory tree (like rm -rf). Missing is not an error. */
sl_status sl_proc_rmtree(const char *path, sl_err *err);

#endif
