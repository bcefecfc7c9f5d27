/* Shared dispatcher: round-robin over the consumers with permits, the
 * highest priority level (lowest number) first. d->impl is the consumer
 * that got the last message (where the next turn starts after). */
#include <stddef.h>

#include "broker/dispatcher_int.h"

static void leaving(sl_disp *d, dconsumer *c, sl_disp_back_cb back, void *arg) {
  (void)back;
  (void)arg;
  if (d->impl == c) d->impl = c->next;
}

/* One turn from after the last pick, wrapping: the first consumer with
 * permits at the best priority level present. */
static dconsumer *choose(sl_disp *d, const sl_disp_msg *m, uint64_t key_hash) {
  (void)m;
  (void)key_hash;
  if (d->consumers == NULL) return NULL;
  dconsumer *last = d->impl;
  dconsumer *start = last != NULL && last->next != NULL ? last->next : d->consumers;
  dconsumer *best = NULL;
  dconsumer *c = start;
  do {
    if (c->permits > 0 && (best == NULL || c->priority < best->priority)) best = c;
    c = c->next != NULL ? c->next : d->consumers;
  } while (c != start);
  if (best != NULL) d->impl = best;
  return best;
}

static bool can_dispatch(const sl_disp *d) {
  for (const dconsumer *c = d->consumers; c != NULL; c = c->next)
    if (c->permits > 0) return true;
  return false;
}

const disp_ops sl_disp_shared_ops = {
    .leaving = leaving,
    .choose = choose,
    .can_dispatch = can_dispatch,
};
