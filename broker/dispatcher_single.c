/* Exclusive and failover dispatchers: one active consumer gets everything.
 * d->impl is the active dconsumer (or NULL). See dispatcher.h. */
#include <stddef.h>

#include "broker/dispatcher_int.h"

/* Makes the best consumer other than `leaving` active. The one that stops
 * being active (and stays) gives its unacked messages back, so that the
 * caller redelivers them to the new one before anything newer. */
static void elect(sl_disp *d, const dconsumer *leaving, sl_disp_back_cb back,
                  void *arg) {
  dconsumer *best = NULL;
  for (dconsumer *c = d->consumers; c != NULL; c = c->next)
    if (c != leaving && (best == NULL || disp_consumer_before(c, best))) best = c;
  dconsumer *old = d->impl;
  if (best == old) return;
  d->impl = best;
  if (old != NULL && old != leaving) {
    disp_hand_back_consumer(d, old, back, arg);
    if (d->on_active) d->on_active(old->id, false, d->active_arg);
  }
  if (best != NULL && d->on_active) d->on_active(best->id, true, d->active_arg);
}

static sl_status exclusive_admit(sl_disp *d, const sl_disp_consumer *c,
                                 sl_err *err) {
  (void)c;
  if (d->consumers == NULL) return SL_OK;
  return sl_err_set(err, SL_EBUSY,
                    "subscription %s: exclusive and consumer %s is attached",
                    d->subscription, d->consumers->name);
}

static void joined(sl_disp *d, dconsumer *c, sl_disp_back_cb back, void *arg) {
  (void)c;
  elect(d, NULL, back, arg);
}

static void leaving(sl_disp *d, dconsumer *c, sl_disp_back_cb back, void *arg) {
  if (d->impl == c) elect(d, c, back, arg);
}

static dconsumer *choose(sl_disp *d, const sl_disp_msg *m, uint64_t key_hash) {
  (void)m;
  (void)key_hash;
  dconsumer *a = d->impl;
  return a != NULL && a->permits > 0 ? a : NULL;
}

static bool can_dispatch(const sl_disp *d) {
  const dconsumer *a = d->impl;
  return a != NULL && a->permits > 0;
}

const disp_ops sl_disp_exclusive_ops = {
    .admit = exclusive_admit,
    .joined = joined,
    .leaving = leaving,
    .choose = choose,
    .can_dispatch = can_dispatch,
};

const disp_ops sl_disp_failover_ops = {
    .joined = joined,
    .leaving = leaving,
    .choose = choose,
    .can_dispatch = can_dispatch,
};
