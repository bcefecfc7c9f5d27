/*
 * Helpers for bookie tests: private temp directories under $TEST_TMPDIR and
 * a waiter that counts completion callbacks.
 */
#ifndef SL_BOOKIE_TESTING_TEST_UTIL_H
#define SL_BOOKIE_TESTING_TEST_UTIL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "common/clock.h"
#include "common/status.h"

/* A new empty directory under $TEST_TMPDIR (or /tmp), named after `tag`.
 * Returns a malloc'd path; aborts on failure. */
char *sl_test_mkdtemp(const char *tag);

/* Removes a directory tree (best effort). */
void sl_test_rm_rf(const char *path);

/* Removes a directory from sl_test_mkdtemp (best effort) and frees its path;
 * NULL is a no-op. */
void sl_test_rmdtemp(char *path);

/* Copies a directory tree of regular files (dst must not exist). Copying a
 * live store's directory while nothing is being written is what a kill -9
 * at that moment would leave behind. Aborts on failure. */
void sl_test_copy_tree(const char *src, const char *dst);

/* Counts callbacks of the shape (status, msg, arg). Thread-safe. */
typedef struct sl_test_waiter {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  uint64_t done;
  uint64_t ok;
  sl_status last_st;   /* last non-OK status seen */
  char last_msg[SL_ERR_MAX];
} sl_test_waiter;

void sl_test_waiter_init(sl_test_waiter *w);
void sl_test_waiter_release(sl_test_waiter *w);

/* The callback: pass the waiter as arg. */
void sl_test_waiter_cb(sl_status st, const char *msg, void *arg);

/* CLOCK_REALTIME `ms` from now, for pthread_cond_timedwait. */
struct timespec sl_test_deadline_ms(int ms);

/* Waits until `n` callbacks ran in total; false after timeout_ms. */
bool sl_test_waiter_wait(sl_test_waiter *w, uint64_t n, int timeout_ms);

/* Polls pred(arg) every millisecond until true; false after timeout_ms. */
bool sl_test_poll(bool (*pred)(void *arg), void *arg, int timeout_ms);


/* Blocks or fails the journal's syncs on demand: a store's sync_hook
 * (sl_test_gate_hook, with the gate as hook_arg). */
typedef struct sl_test_gate {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool closed;  /* syncs wait while closed */
  bool fail;    /* syncs fail with EIO */
  int waiting;  /* syncs blocked right now */
} sl_test_gate;

#define SL_TEST_GATE_INIT {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, false, 0}

int sl_test_gate_hook(int fd, void *gate);
void sl_test_gate_set(sl_test_gate *g, bool closed, bool fail);
/* Waits until a sync is blocked in the gate. */
void sl_test_gate_wait_blocked(sl_test_gate *g);

#endif
