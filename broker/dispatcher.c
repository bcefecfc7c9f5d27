/* Dispatcher: what every subscription type shares (consumers, permits, the
 * unacked messages). See dispatcher.h. */
#include "broker/dispatcher.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker/dispatcher_int.h"

/* Upper bound of one consumer's permits, so a peer cannot overflow them. */
#define MAX_PERMITS ((uint64_t)1 << 31)

int sl_msg_id_cmp(sl_msg_id a, sl_msg_id b) {
  if (a.ledger_id != b.ledger_id) return a.ledger_id < b.ledger_id ? -1 : 1;
  if (a.entry_id != b.entry_id) return a.entry_id < b.entry_id ? -1 : 1;
  if (a.batch_index != b.batch_index) return a.batch_index < b.batch_index ? -1 : 1;
  return 0;
}

static void msg_key(sl_msg_id id, char out[64]) {
  snprintf(out, 64, "%" PRIx64 ":%" PRIx64 ":%" PRIx32, id.ledger_id,
           (uint64_t)id.entry_id, (uint32_t)id.batch_index);
}

/* FNV-1a, then a final mix so that ring points spread. */
uint64_t disp_hash(const char *key, size_t len) {
  uint64_t h = 14695981039346656037ULL;
  for (size_t i = 0; i < len; i++) {
    h ^= (unsigned char)key[i];
    h *= 1099511628211ULL;
  }
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  return h;
}

bool disp_consumer_before(const dconsumer *a, const dconsumer *b) {
  if (a->priority != b->priority) return a->priority < b->priority;
  int c = strcmp(a->name, b->name);
  if (c != 0) return c < 0;
  return a->arrival < b->arrival;
}

static const disp_ops *ops_for(sl_disp_type t) {
  switch (t) {
    case SL_DISP_EXCLUSIVE: return &sl_disp_exclusive_ops;
    case SL_DISP_FAILOVER: return &sl_disp_failover_ops;
    case SL_DISP_SHARED: return &sl_disp_shared_ops;
    case SL_DISP_KEY_SHARED: return &sl_disp_key_shared_ops;
  }
  return NULL;
}

sl_status sl_disp_create(const sl_disp_opts *opts, sl_disp **out, sl_err *err) {
  const disp_ops *ops = ops_for(opts->type);
  if (ops == NULL) {
    return sl_err_set(err, SL_EINVAL, "subscription %s: unknown subscription type %d",
                      opts->subscription ? opts->subscription : "",
                      (int)opts->type);
  }
  sl_disp *d = sl_xcalloc(1, sizeof(*d));
  d->type = opts->type;
  d->ops = ops;
  d->subscription = sl_xstrdup(opts->subscription ? opts->subscription : "");
  d->on_active = opts->on_active;
  d->active_arg = opts->active_arg;
  sl_map_init(&d->unacked);
  *out = d;
  return SL_OK;
}

void sl_disp_destroy(sl_disp *d) {
  if (d == NULL) return;
  if (d->ops->release_impl) d->ops->release_impl(d);
  sl_map_release(&d->unacked, free);
  dconsumer *c = d->consumers;
  while (c != NULL) {
    dconsumer *next = c->next;
    free(c->name);
    free(c);
    c = next;
  }
  free(d->subscription);
  free(d);
}

sl_disp_type sl_disp_get_type(const sl_disp *d) { return d->type; }

static dconsumer *find(const sl_disp *d, uint64_t id) {
  for (dconsumer *c = d->consumers; c != NULL; c = c->next)
    if (c->id == id) return c;
  return NULL;
}

sl_status sl_disp_add(sl_disp *d, const sl_disp_consumer *in,
                      sl_disp_back_cb back, void *arg, sl_err *err) {
  if (find(d, in->id) != NULL) {
    return sl_err_set(err, SL_EEXIST, "subscription %s: consumer %" PRIu64
                      " already attached", d->subscription, in->id);
  }
  if (d->ops->admit) {
    sl_status st = d->ops->admit(d, in, err);
    if (st != SL_OK) return st;
  }
  dconsumer *c = sl_xcalloc(1, sizeof(*c));
  c->id = in->id;
  c->name = sl_xstrdup(in->name ? in->name : "");
  c->priority = in->priority;
  c->ack_timeout_ms = in->ack_timeout_ms;
  c->arrival = d->arrivals++;
  dconsumer **tail = &d->consumers;
  while (*tail != NULL) tail = &(*tail)->next;
  *tail = c;
  d->n_consumers++;
  if (d->ops->joined) d->ops->joined(d, c, back, arg);
  return SL_OK;
}

static int cmp_unacked(const void *a, const void *b) {
  const dunacked *x = *(dunacked *const *)a, *y = *(dunacked *const *)b;
  return sl_msg_id_cmp(x->id, y->id);
}

static void forget(sl_disp *d, dunacked *u) {
  char k[64];
  msg_key(u->id, k);
  sl_map_remove(&d->unacked, k, NULL);
  u->c->unacked--;
  if (d->ops->forgotten) d->ops->forgotten(d, u->c, u->key_hash);
}

/* Removes the unacked messages that match, then hands them back in id
 * order. c == NULL with expire_at >= 0: those past their consumer's ack
 * timeout at expire_at; else those of c. */
static size_t hand_back(sl_disp *d, dconsumer *c, int64_t expire_at,
                        sl_disp_back_cb back, void *arg) {
  size_t n = 0, cap = 0;
  dunacked **v = NULL;
  sl_map_iter it = SL_MAP_ITER_INIT;
  void *val;
  while (sl_map_next(&d->unacked, &it, NULL, &val)) {
    dunacked *u = val;
    bool match = c != NULL ? u->c == c
                           : u->c->ack_timeout_ms > 0 &&
                                 expire_at - u->delivered_ms >= u->c->ack_timeout_ms;
    if (!match) continue;
    if (n == cap) {
      cap = cap ? cap * 2 : 16;
      v = sl_xrealloc(v, cap * sizeof(*v));
    }
    v[n++] = u;
  }
  if (n > 1) qsort(v, n, sizeof(*v), cmp_unacked);
  for (size_t i = 0; i < n; i++) {
    sl_msg_id id = v[i]->id;
    forget(d, v[i]);
    free(v[i]);
    if (back) back(id, arg);
  }
  free(v);
  return n;
}

void disp_hand_back_consumer(sl_disp *d, dconsumer *c, sl_disp_back_cb back,
                             void *arg) {
  hand_back(d, c, -1, back, arg);
}

bool sl_disp_remove(sl_disp *d, uint64_t id, sl_disp_back_cb back, void *arg) {
  dconsumer *c = find(d, id);
  if (c == NULL) return false;
  hand_back(d, c, -1, back, arg);
  if (d->ops->leaving) d->ops->leaving(d, c, back, arg);
  dconsumer **pp = &d->consumers;
  while (*pp != c) pp = &(*pp)->next;
  *pp = c->next;
  d->n_consumers--;
  free(c->name);
  free(c);
  return true;
}

sl_status sl_disp_flow(sl_disp *d, uint64_t id, uint32_t permits, sl_err *err) {
  dconsumer *c = find(d, id);
  if (c == NULL) {
    return sl_err_set(err, SL_ENOTFOUND, "subscription %s: no consumer %" PRIu64,
                      d->subscription, id);
  }
  if (permits == 0 || c->permits + permits > MAX_PERMITS) {
    return sl_err_set(err, SL_EINVAL, "subscription %s: permits must be > 0 and "
                      "at most 2^31 outstanding (got %" PRIu32 ")",
                      d->subscription, permits);
  }
  c->permits += permits;
  return SL_OK;
}

sl_status sl_disp_pick(sl_disp *d, const sl_disp_msg *m, int64_t now_ms,
                       uint64_t *consumer) {
  char k[64];
  msg_key(m->id, k);
  if (sl_map_find(&d->unacked, k, NULL)) return SL_EEXIST;
  uint64_t h = disp_hash(m->key ? m->key : "", m->key ? m->key_len : 0);
  dconsumer *c = d->ops->choose(d, m, h);
  if (c == NULL) return SL_EBUSY;
  SL_ASSERT(c->permits > 0);
  dunacked *u = sl_xcalloc(1, sizeof(*u));
  u->id = m->id;
  u->c = c;
  u->key_hash = h;
  u->delivered_ms = now_ms;
  sl_status pst = sl_map_put(&d->unacked, k, u, NULL);
  SL_ASSERT(pst == SL_OK); /* servers abort on out-of-memory */
  c->permits--;
  c->unacked++;
  if (d->ops->placed) d->ops->placed(d, c, h);
  *consumer = c->id;
  return SL_OK;
}

bool sl_disp_ack(sl_disp *d, sl_msg_id id) {
  char k[64];
  msg_key(id, k);
  void *val;
  if (!sl_map_find(&d->unacked, k, &val)) return false;
  forget(d, val);
  free(val);
  return true;
}

size_t sl_disp_ack_upto(sl_disp *d, uint64_t consumer, sl_msg_id id) {
  dconsumer *c = find(d, consumer);
  if (c == NULL) return 0;
  size_t n = 0;
  sl_map_iter it = SL_MAP_ITER_INIT;
  void *val;
  while (sl_map_next(&d->unacked, &it, NULL, &val)) {
    dunacked *u = val;
    if (u->c != c || sl_msg_id_cmp(u->id, id) > 0) continue;
    forget(d, u);
    free(u);
    n++;
  }
  return n;
}

bool sl_disp_release(sl_disp *d, sl_msg_id id, sl_disp_back_cb back, void *arg) {
  if (!sl_disp_ack(d, id)) return false;
  if (back) back(id, arg);
  return true;
}

size_t sl_disp_expire(sl_disp *d, int64_t now_ms, sl_disp_back_cb back,
                      void *arg) {
  return hand_back(d, NULL, now_ms, back, arg);
}

void sl_disp_forget_all(sl_disp *d) {
  sl_map_iter it = SL_MAP_ITER_INIT;
  void *val;
  while (sl_map_next(&d->unacked, &it, NULL, &val)) {
    forget(d, val);
    free(val);
  }
}

bool sl_disp_is_active(const sl_disp *d, uint64_t id) {
  const dconsumer *c = find(d, id);
  if (c == NULL) return false;
  if (d->type == SL_DISP_EXCLUSIVE || d->type == SL_DISP_FAILOVER)
    return d->impl == c;
  return true;
}

bool sl_disp_can_dispatch(const sl_disp *d) { return d->ops->can_dispatch(d); }

void sl_disp_stats_get(const sl_disp *d, sl_disp_stats *out) {
  memset(out, 0, sizeof(*out));
  for (const dconsumer *c = d->consumers; c != NULL; c = c->next) {
    out->consumers++;
    out->unacked += c->unacked;
    out->permits += c->permits;
  }
}

bool sl_disp_consumer_stats(const sl_disp *d, uint64_t id, uint64_t *unacked,
                            uint64_t *permits) {
  const dconsumer *c = find(d, id);
  if (c == NULL) return false;
  if (unacked) *unacked = c->unacked;
  if (permits) *permits = c->permits;
  return true;
}
