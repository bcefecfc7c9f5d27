/*
 * Serial executor (serial.h): a mutex-guarded ring of items and a
 * "draining" flag. Whoever posts to an idle serial becomes its drainer and
 * runs items until the ring is empty; posts that find a drainer only
 * enqueue. That is the whole of invariants 1-3.
 */
#include "common/serial.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>


#define RING_MIN 16

typedef struct item {
  void (*fn)(void *arg);
  void *arg;
} item;

struct sl_serial {
  atomic_int refs;
  pthread_mutex_t lock; /* guards the ring and draining */
  item *ring;
  size_t cap, head, len;
  bool draining;
  /* The running item's thread, as the address of that thread's
   * `thread_mark` (for sl_serial_running_here); NULL between items. */
  _Atomic(const char *) drainer;
};

static _Thread_local char thread_mark;

sl_status sl_serial_create(sl_serial **out, sl_err *err) {
  sl_serial *s = calloc(1, sizeof(*s));
  item *ring = calloc(RING_MIN, sizeof(*ring));
  if (s == NULL || ring == NULL) {
    free(s);
    free(ring);
    *out = NULL;
    return sl_err_set(err, SL_ENOMEM, "serial: out of memory");
  }
  atomic_init(&s->refs, 1);
  pthread_mutex_init(&s->lock, NULL);
  s->ring = ring;
  s->cap = RING_MIN;
  atomic_init(&s->drainer, NULL);
  *out = s;
  return SL_OK;
}

static void destroy(sl_serial *s) {
  SL_ASSERT(s->len == 0 && !s->draining);
  pthread_mutex_destroy(&s->lock);
  free(s->ring);
  free(s);
}

void sl_serial_ref(sl_serial *s) {
  int old = atomic_fetch_add(&s->refs, 1);
  SL_ASSERT(old > 0);
}

void sl_serial_unref(sl_serial *s) {
  if (s == NULL) return;
  int old = atomic_fetch_sub(&s->refs, 1);
  SL_ASSERT(old > 0);
  /* A drainer holds a reference (invariant 4), so the last one cannot go
   * while items are queued. */
  if (old == 1) destroy(s);
}

/* Under s->lock. */
static void push(sl_serial *s, item it) {
  if (s->len == s->cap) {
    size_t cap = s->cap * 2;
    item *ring = sl_xmalloc(cap * sizeof(*ring)); /* see "Memory" in serial.h */
    for (size_t i = 0; i < s->len; i++) ring[i] = s->ring[(s->head + i) % s->cap];
    free(s->ring);
    s->ring = ring;
    s->cap = cap;
    s->head = 0;
  }
  s->ring[(s->head + s->len) % s->cap] = it;
  s->len++;
}

void sl_serial_post(sl_serial *s, void (*fn)(void *arg), void *arg) {
  pthread_mutex_lock(&s->lock);
  push(s, (item){fn, arg});
  if (s->draining) {
    pthread_mutex_unlock(&s->lock);
    return;
  }
  s->draining = true;
  sl_serial_ref(s); /* invariant 4 */
  while (s->len > 0) {
    item it = s->ring[s->head];
    s->head = (s->head + 1) % s->cap;
    s->len--;
    pthread_mutex_unlock(&s->lock);
    atomic_store(&s->drainer, &thread_mark);
    it.fn(it.arg);
    atomic_store(&s->drainer, NULL);
    pthread_mutex_lock(&s->lock);
  }
  s->draining = false;
  pthread_mutex_unlock(&s->lock);
  sl_serial_unref(s);
}

bool sl_serial_running_here(const sl_serial *s) {
  return atomic_load(&((sl_serial *)s)->drainer) == &thread_mark;
}
