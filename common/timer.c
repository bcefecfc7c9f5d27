/*
 * Timers (timer.h): one process-wide thread and a binary min-heap of
 * armings, all under one lock.
 *
 * An arming (sl_timer_arm) is heap memory separate from the caller's
 * sl_timer, so that a fire already posted on the serial never touches a
 * timer the caller has stopped and freed: stop marks the arming dead (it
 * frees it at once if still in the heap; the posted item frees it
 * otherwise), and the item runs fn only if its arming is still the timer's
 * current one (invariant 2).
 *
 * States of an arming: IN_HEAP (start) -> POSTED (timer thread, deadline
 * passed) -> freed by the item (fire or, if dead, nothing). stop or a new
 * start: IN_HEAP -> freed; POSTED -> dead, freed by its item.
 */
#include "common/timer.h"

#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "common/clock.h"
#include "common/status.h"

struct sl_timer_arm {
  sl_timer *timer;    /* NULL once dead (stopped or re-started) */
  sl_serial *serial;  /* one reference, dropped when the arming is freed */
  int64_t deadline_ns;
  size_t heap_idx;    /* SIZE_MAX once posted */
};

static struct {
  pthread_mutex_t lock; /* guards everything here and every sl_timer.arm */
  pthread_cond_t cond;  /* the earliest deadline changed (timer_init) */
  sl_timer_arm **heap;
  size_t len, cap;
  pthread_t thread;
} g = {.lock = PTHREAD_MUTEX_INITIALIZER};

static pthread_once_t init_once = PTHREAD_ONCE_INIT;

/* ---- heap (under g.lock) ---- */

static void heap_set(size_t i, sl_timer_arm *a) {
  g.heap[i] = a;
  a->heap_idx = i;
}

static void sift_up(size_t i) {
  sl_timer_arm *a = g.heap[i];
  while (i > 0) {
    size_t p = (i - 1) / 2;
    if (g.heap[p]->deadline_ns <= a->deadline_ns) break;
    heap_set(i, g.heap[p]);
    i = p;
  }
  heap_set(i, a);
}

static void sift_down(size_t i) {
  sl_timer_arm *a = g.heap[i];
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= g.len) break;
    if (c + 1 < g.len && g.heap[c + 1]->deadline_ns < g.heap[c]->deadline_ns) c++;
    if (a->deadline_ns <= g.heap[c]->deadline_ns) break;
    heap_set(i, g.heap[c]);
    i = c;
  }
  heap_set(i, a);
}

static void heap_push(sl_timer_arm *a) {
  if (g.len == g.cap) {
    g.cap = g.cap ? g.cap * 2 : 64;
    g.heap = sl_xrealloc(g.heap, g.cap * sizeof(*g.heap));
  }
  heap_set(g.len++, a);
  sift_up(g.len - 1);
}

static void heap_remove(sl_timer_arm *a) {
  size_t i = a->heap_idx;
  SL_ASSERT(i < g.len && g.heap[i] == a);
  a->heap_idx = SIZE_MAX;
  sl_timer_arm *last = g.heap[--g.len];
  if (i == g.len) return;
  heap_set(i, last);
  sift_up(i);
  sift_down(last->heap_idx);
}

/* ---- firing ---- */

static void arm_free(sl_timer_arm *a) {
  sl_serial_unref(a->serial);
  free(a);
}

/* Posted on the arming's serial. */
static void run_arm(void *arg) {
  sl_timer_arm *a = arg;
  void (*fn)(void *) = NULL;
  void *fn_arg = NULL;
  pthread_mutex_lock(&g.lock);
  sl_timer *t = a->timer;
  if (t != NULL) { /* still current (invariant 2) */
    SL_ASSERT(t->arm == a);
    t->arm = NULL;
    fn = t->fn;
    fn_arg = t->arg;
  }
  pthread_mutex_unlock(&g.lock);
  if (fn != NULL) fn(fn_arg);
  arm_free(a); /* after fn: the serial stays referenced while it runs */
}

static void *timer_main(void *unused) {
  (void)unused;
  (void)pthread_setname_np(pthread_self(), "sl-timer");
  pthread_mutex_lock(&g.lock);
  for (;;) {
    if (g.len == 0) {
      pthread_cond_wait(&g.cond, &g.lock);
      continue;
    }
    sl_timer_arm *a = g.heap[0];
    int64_t now = sl_clock_mono_ns();
    if (a->deadline_ns > now) {
      struct timespec ts = {a->deadline_ns / 1000000000, a->deadline_ns % 1000000000};
      pthread_cond_timedwait(&g.cond, &g.lock, &ts);
      continue;
    }
    heap_remove(a);
    /* Post without the lock: an idle serial runs run_arm right here, and
     * it takes the lock. The arming cannot be freed meanwhile: stop only
     * marks a posted arming dead. */
    pthread_mutex_unlock(&g.lock);
    sl_serial_post(a->serial, run_arm, a);
    pthread_mutex_lock(&g.lock);
  }
  return NULL;
}

/* Once per process: a monotonic condition variable and the timer thread,
 * which runs for the life of the process (like gRPC's own threads). */
static void timer_init(void) {
  pthread_condattr_t attr;
  pthread_condattr_init(&attr);
  pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
  pthread_cond_init(&g.cond, &attr);
  pthread_condattr_destroy(&attr);
  pthread_attr_t tattr;
  pthread_attr_init(&tattr);
  pthread_attr_setdetachstate(&tattr, PTHREAD_CREATE_DETACHED);
  int rc = pthread_create(&g.thread, &tattr, timer_main, NULL);
  pthread_attr_destroy(&tattr);
  SL_ASSERT(rc == 0); /* no timer thread means no timers at all */
}

/* ---- API ---- */

void sl_timer_init(sl_timer *t, sl_serial *serial, void (*fn)(void *arg), void *arg) {
  t->serial = serial;
  t->fn = fn;
  t->arg = arg;
  t->arm = NULL;
}

/* Under g.lock: drops t's arming; returns the arming to free (NULL if none
 * or if its posted item will free it). */
static sl_timer_arm *disarm(sl_timer *t, bool *was_armed) {
  sl_timer_arm *a = t->arm;
  *was_armed = a != NULL;
  if (a == NULL) return NULL;
  t->arm = NULL;
  a->timer = NULL;
  if (a->heap_idx == SIZE_MAX) return NULL; /* posted: its item frees it */
  heap_remove(a);
  return a;
}

void sl_timer_start(sl_timer *t, int64_t delay_ms) {
  pthread_once(&init_once, timer_init);
  sl_timer_arm *a = sl_xmalloc(sizeof(*a));
  a->timer = t;
  a->serial = t->serial;
  sl_serial_ref(a->serial);
  a->deadline_ns = sl_clock_mono_ns() + (delay_ms > 0 ? delay_ms * 1000000 : 0);
  bool was_armed;
  pthread_mutex_lock(&g.lock);
  sl_timer_arm *old = disarm(t, &was_armed);
  t->arm = a;
  heap_push(a);
  if (a->heap_idx == 0) pthread_cond_signal(&g.cond);
  pthread_mutex_unlock(&g.lock);
  if (old != NULL) arm_free(old);
}

bool sl_timer_stop(sl_timer *t) {
  bool was_armed;
  pthread_mutex_lock(&g.lock);
  sl_timer_arm *old = disarm(t, &was_armed);
  pthread_mutex_unlock(&g.lock);
  if (old != NULL) arm_free(old);
  return was_armed;
}

bool sl_timer_active(sl_timer *t) {
  pthread_mutex_lock(&g.lock);
  bool armed = t->arm != NULL;
  pthread_mutex_unlock(&g.lock);
  return armed;
}
