/*
 * Watches of the local sl_store backend.
 *
 * Each watch has a thread. It waits until the store revision reaches its
 * next revision, then, under the store lock, checks that history from there
 * still exists and opens a leveldb iterator (a consistent snapshot, so a
 * concurrent compaction cannot remove records under it). Outside the lock
 * it delivers the 'h' records from next_rev through the revision it saw,
 * filtered by prefix, and moves next_rev past them. History is the single
 * source, so catching up from an old revision and following live changes
 * are the same loop, and order is leveldb's key order = revision order.
 */
#include <stdlib.h>
#include <string.h>

#include "metadata/store_local_int.h"

typedef struct local_watch {
  sl_store_watch base;
  local_store *s;
  uint8_t *prefix;
  size_t prefix_len;
  sl_store_watch_cb cb;
  void *arg;
  int64_t next_rev; /* owned by the watch thread after start */
  bool stop;        /* guarded by s->lock */
  pthread_t thread;
} local_watch;

/* An event held back until we know whether its revision continues. */
typedef struct pending {
  bool has;
  sl_store_event ev;
} pending;

static void pending_flush(local_watch *w, pending *p, bool last) {
  if (!p->has) return;
  p->ev.last_in_revision = last;
  w->cb(w->arg, &p->ev);
  sl_store_kv_release(&p->ev.kv);
  p->has = false;
}

static void pending_set(pending *p, const local_event *e) {
  memset(&p->ev, 0, sizeof(p->ev));
  p->ev.type = e->type == LOCAL_EV_PUT ? SL_STORE_EVENT_PUT : SL_STORE_EVENT_DELETE;
  p->ev.revision = e->rev;
  p->ev.kv.key = sl_store_dup_(e->key, e->key_len);
  p->ev.kv.key_len = e->key_len;
  p->ev.kv.value = sl_store_dup_(e->value, e->value_len);
  p->ev.kv.value_len = e->value_len;
  p->ev.kv.create_revision = e->create_rev;
  p->ev.kv.mod_revision = e->rev;
  p->ev.kv.lease = e->lease;
  p->has = true;
}

/* Delivers history records with revision in [w->next_rev, through]. */
static void deliver(local_watch *w, leveldb_iterator_t *it, int64_t through) {
  uint8_t start[LOCAL_HIST_KEY_LEN] = {'h'};
  sl_local_put_u64_(start + 1, (uint64_t)w->next_rev);
  pending p = {0};
  for (leveldb_iter_seek(it, (const char *)start, sizeof(start)); leveldb_iter_valid(it);
       leveldb_iter_next(it)) {
    size_t klen, vlen;
    const char *k = leveldb_iter_key(it, &klen);
    const char *v = leveldb_iter_value(it, &vlen);
    local_event e;
    if (klen == 0 || k[0] != 'h') break;
    /* A malformed record is skipped rather than stalling the watch; the
     * store itself never writes one. */
    if (!sl_local_decode_event_(k, klen, v, vlen, &e)) continue;
    if (e.rev > through) break;
    if (e.key_len < w->prefix_len || memcmp(e.key, w->prefix, w->prefix_len) != 0)
      continue;
    if (p.has) pending_flush(w, &p, p.ev.revision != e.rev);
    pending_set(&p, &e);
  }
  pending_flush(w, &p, true);
}

static void *watch_main(void *arg) {
  local_watch *w = arg;
  local_store *s = w->s;
  pthread_mutex_lock(&s->lock);
  for (;;) {
    while (!w->stop && s->rev < w->next_rev && w->next_rev >= s->compact_rev)
      pthread_cond_wait(&s->changed, &s->lock);
    if (w->stop) break;
    if (w->next_rev < s->compact_rev) {
      sl_store_event ev;
      memset(&ev, 0, sizeof(ev));
      ev.type = SL_STORE_EVENT_COMPACTED;
      ev.compact_revision = s->compact_rev;
      pthread_mutex_unlock(&s->lock);
      w->cb(w->arg, &ev);
      pthread_mutex_lock(&s->lock);
      break;
    }
    int64_t through = s->rev;
    leveldb_iterator_t *it = leveldb_create_iterator(s->db, s->ropts);
    pthread_mutex_unlock(&s->lock);
    deliver(w, it, through);
    leveldb_iter_destroy(it);
    w->next_rev = through + 1;
    pthread_mutex_lock(&s->lock);
  }
  pthread_mutex_unlock(&s->lock);
  return NULL;
}

sl_status sl_local_watch_start_(sl_store *base, const void *prefix, size_t prefix_len,
                                int64_t start_revision, sl_store_watch_cb cb,
                                void *arg, sl_store_watch **out, sl_err *err) {
  local_store *s = (local_store *)base;
  local_watch *w = sl_xcalloc(1, sizeof(*w));
  w->base.vt = base->vt;
  w->s = s;
  w->prefix = sl_store_dup_(prefix, prefix_len);
  w->prefix_len = prefix_len;
  w->cb = cb;
  w->arg = arg;
  pthread_mutex_lock(&s->lock);
  w->next_rev = start_revision > 0 ? start_revision : s->rev + 1;
  s->n_watches++;
  pthread_mutex_unlock(&s->lock);
  if (pthread_create(&w->thread, NULL, watch_main, w) != 0) {
    pthread_mutex_lock(&s->lock);
    s->n_watches--;
    pthread_mutex_unlock(&s->lock);
    free(w->prefix);
    free(w);
    return sl_err_set(err, SL_EINTERNAL, "local watch: cannot start thread");
  }
  *out = &w->base;
  return SL_OK;
}

void sl_local_watch_stop_(sl_store_watch *base) {
  local_watch *w = (local_watch *)base;
  local_store *s = w->s;
  pthread_mutex_lock(&s->lock);
  w->stop = true;
  pthread_cond_broadcast(&s->changed);
  pthread_mutex_unlock(&s->lock);
  pthread_join(w->thread, NULL);
  pthread_mutex_lock(&s->lock);
  s->n_watches--;
  pthread_mutex_unlock(&s->lock);
  free(w->prefix);
  free(w);
}
