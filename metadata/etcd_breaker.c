#include "metadata/etcd_breaker.h"

#include <stdio.h>
#include <stdlib.h>

#include "common/status.h"

void sl_etcd_breaker_init(sl_etcd_breaker *b, size_t n_eps, int down_ms) {
  SL_ASSERT(n_eps >= 1 && down_ms >= 0);
  pthread_mutex_init(&b->lock, NULL);
  b->eps = sl_xcalloc(n_eps, sizeof(*b->eps));
  b->n_eps = n_eps;
  b->down_ms = down_ms;
  b->probing = false;
  b->last_at = 0;
  snprintf(b->last, sizeof(b->last), "none");
}

void sl_etcd_breaker_release(sl_etcd_breaker *b) {
  free(b->eps);
  b->eps = NULL;
  pthread_mutex_destroy(&b->lock);
}

/* Invariant 2. Caller holds b->lock. */
static bool open_locked(const sl_etcd_breaker *b, long long now) {
  if (b->down_ms == 0) return false;
  for (size_t i = 0; i < b->n_eps; i++)
    if (!b->eps[i].down || now - b->eps[i].down_at >= b->down_ms) return false;
  return true;
}

bool sl_etcd_breaker_admit(sl_etcd_breaker *b, long long now, bool may_probe,
                           bool *probe, char *why, size_t why_cap) {
  bool go = true;
  *probe = false;
  pthread_mutex_lock(&b->lock);
  if (open_locked(b, now)) {
    if (may_probe && !b->probing) {
      b->probing = true;
      *probe = true;
    } else {
      go = false;
      snprintf(why, why_cap, "all endpoints unreachable (last: %s, %lld ms ago)", b->last,
               now - b->last_at);
    }
  }
  pthread_mutex_unlock(&b->lock);
  return go;
}

void sl_etcd_breaker_probe_done(sl_etcd_breaker *b) {
  pthread_mutex_lock(&b->lock);
  SL_ASSERT(b->probing);
  b->probing = false;
  pthread_mutex_unlock(&b->lock);
}

bool sl_etcd_breaker_failed(sl_etcd_breaker *b, size_t ep, long long now,
                            const char *detail) {
  SL_ASSERT(ep < b->n_eps);
  pthread_mutex_lock(&b->lock);
  bool was_open = open_locked(b, now);
  b->eps[ep].down = true;
  b->eps[ep].down_at = now;
  b->last_at = now;
  snprintf(b->last, sizeof(b->last), "%s", detail);
  bool opened = !was_open && open_locked(b, now);
  pthread_mutex_unlock(&b->lock);
  return opened;
}

bool sl_etcd_breaker_reached(sl_etcd_breaker *b, size_t ep, long long now) {
  SL_ASSERT(ep < b->n_eps);
  pthread_mutex_lock(&b->lock);
  bool was_open = open_locked(b, now);
  b->eps[ep].down = false;
  pthread_mutex_unlock(&b->lock);
  return was_open;
}

bool sl_etcd_breaker_is_open(sl_etcd_breaker *b, long long now) {
  pthread_mutex_lock(&b->lock);
  bool open = open_locked(b, now);
  pthread_mutex_unlock(&b->lock);
  return open;
}
