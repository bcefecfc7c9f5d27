/*
 * Watch: membership and ownership changes as a gRPC server stream.
 *
 * Each stream is a `watcher` with a thread of its own. The thread reads the
 * current state (start_revision 0, or after a compaction) and starts the
 * store watch; the store watch's thread then delivers changes through
 * on_event(). Events go to the call through a bounded pending list: the
 * call's own write queue takes what it can, the rest waits here until
 * on_writable drains it.
 *
 * Invariants
 *   1. Events reach the client in store revision order (non-decreasing;
 *      events of one txn share a revision), each once: the snapshot is the
 *      state at revision R and the store watch starts at R + 1.
 *   2. Memory per watcher is bounded: snapshot events wait (paced by
 *      on_writable) while the pending list is half full; a live event that
 *      finds it full ends the stream with RESOURCE_EXHAUSTED.
 *   3. After on_done nothing touches the call. The store watch is started
 *      and stopped only by the watcher's thread, so it never races itself.
 *
 * States (under w->lock)
 *   RUNNING  the thread (re)reads state or waits; store events flow.
 *   RESET    `reset`: the store watch reported COMPACTED; the thread sends
 *            a RESET event, the current state, and watches again.
 *   ENDED    `ended`: we finished the stream (error or overflow).
 *   DONE     `done`: on_done ran; the thread stops the store watch, exits.
 * The watcher is freed when both the call (on_done) and the thread have
 * dropped their reference.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "metadata/md_names.h"
#include "metadata/service_int.h"

typedef struct pending {
  struct pending *next;
  Sluice__V1__WatchEvent *ev;
} pending;

typedef struct watcher {
  sl_md_service *md;
  sl_rpc_call *call;      /* usable while !done */
  Sluice__V1__WatchTarget target;
  sl_md_key prefix;       /* store prefix watched */
  size_t strip;           /* key bytes before the reported name */
  int64_t start_revision; /* from the request */
  bool announce;          /* RESET before the first state (announce_state) */

  pthread_mutex_t lock;   /* guards everything below */
  pthread_cond_t cond;    /* reset, drained, ended or done */
  int refs;               /* the call's until on_done, the thread's */
  bool done, ended, reset;
  pending *head, *tail;   /* accepted from the store, not yet by the call */
  size_t n_pending;
  int64_t last_rev;       /* revision of the last event delivered */
} watcher;

/* ---- events ---- */

static void event_free(Sluice__V1__WatchEvent *ev) {
  if (ev == NULL) return;
  free(ev->key);
  if (ev->broker) protobuf_c_message_free_unpacked(&ev->broker->base, NULL);
  if (ev->bookie) protobuf_c_message_free_unpacked(&ev->bookie->base, NULL);
  if (ev->owner) protobuf_c_message_free_unpacked(&ev->owner->base, NULL);
  free(ev);
}

/* A PUT or DELETE event for kv; SL_ECORRUPT if a PUT's value is garbage. */
static sl_status event_make(const watcher *w, bool put, const sl_store_kv *kv, int64_t rev,
                            Sluice__V1__WatchEvent **out, sl_err *err) {
  Sluice__V1__WatchEvent *ev = sl_xmalloc(sizeof(*ev));
  sluice__v1__watch_event__init(ev);
  ev->type = put ? SLUICE__V1__WATCH_EVENT_TYPE__WATCH_EVENT_PUT
                 : SLUICE__V1__WATCH_EVENT_TYPE__WATCH_EVENT_DELETE;
  ev->revision = rev;
  SL_ASSERT(kv->key_len >= w->strip);
  size_t klen = kv->key_len - w->strip;
  ev->key = sl_xmalloc(klen + 1);
  memcpy(ev->key, kv->key + w->strip, klen);
  ev->key[klen] = '\0';
  sl_status st = SL_OK;
  if (put) {
    ProtobufCMessage *m = NULL;
    switch (w->target) {
      case SLUICE__V1__WATCH_TARGET__WATCH_TARGET_BROKERS:
        st = sl_md_unpack(kv, &sluice__v1__broker_info__descriptor, &m, err);
        ev->broker = (Sluice__V1__BrokerInfo *)m;
        break;
      case SLUICE__V1__WATCH_TARGET__WATCH_TARGET_BOOKIES:
        st = sl_md_unpack(kv, &sluice__v1__bookie_info__descriptor, &m, err);
        ev->bookie = (Sluice__V1__BookieInfo *)m;
        break;
      default:
        st = sl_md_unpack(kv, &sluice__v1__owner_info__descriptor, &m, err);
        ev->owner = (Sluice__V1__OwnerInfo *)m;
        break;
    }
  }
  if (st != SL_OK) {
    event_free(ev);
    ev = NULL;
  }
  *out = ev;
  return st;
}

/* ---- delivery (w->lock held) ---- */

static void drop_pending_locked(watcher *w) {
  while (w->head != NULL) {
    pending *p = w->head;
    w->head = p->next;
    event_free(p->ev);
    free(p);
  }
  w->tail = NULL;
  w->n_pending = 0;
}

/* Ends the stream with a status (once), from any thread but on_done. */
static void end_locked(watcher *w, sl_status st, const char *msg) {
  if (w->done || w->ended) return;
  w->ended = true;
  drop_pending_locked(w);
  sl_log(st == SL_OK ? SL_LOG_DEBUG : SL_LOG_WARN,
         "event=watch_ended target=%d status=\"%s\" error=\"%s\"", (int)w->target,
         sl_status_str(st), msg);
  sl_rpc_call_finish(w->call, st, msg, NULL);
  pthread_cond_broadcast(&w->cond);
}

/* Hands pending events to the call until its queue is full. */
static void drain_locked(watcher *w) {
  while (w->head != NULL && !w->done && !w->ended) {
    sl_status st = sl_metadata_service_watch_write(w->call, w->head->ev);
    if (st == SL_EBUSY) return; /* on_writable comes */
    pending *p = w->head;
    w->head = p->next;
    if (w->head == NULL) w->tail = NULL;
    w->n_pending--;
    event_free(p->ev);
    free(p);
    if (st != SL_OK) { /* the call is over; on_done follows */
      drop_pending_locked(w);
      return;
    }
  }
}

/* Takes ownership of ev. Invariants 1 and 2. */
static void deliver_locked(watcher *w, Sluice__V1__WatchEvent *ev) {
  char msg[160];
  if (w->done || w->ended) {
    event_free(ev);
    return;
  }
  if (ev->revision < w->last_rev) {
    snprintf(msg, sizeof(msg), "watch: store delivered revision %" PRId64 " after %" PRId64,
             ev->revision, w->last_rev);
    event_free(ev);
    end_locked(w, SL_EINTERNAL, msg);
    return;
  }
  if (w->n_pending >= w->md->opts.watch_buffer) {
    snprintf(msg, sizeof(msg), "watch: client fell more than %zu events behind; watch again",
             w->md->opts.watch_buffer);
    event_free(ev);
    end_locked(w, SL_ETOOBIG, msg);
    return;
  }
  w->last_rev = ev->revision;
  pending *p = sl_xmalloc(sizeof(*p));
  p->next = NULL;
  p->ev = ev;
  if (w->tail != NULL)
    w->tail->next = p;
  else
    w->head = p;
  w->tail = p;
  w->n_pending++;
  drain_locked(w);
}

/* Snapshot delivery: waits while the pending list is half full. */
static void deliver_paced(watcher *w, Sluice__V1__WatchEvent *ev) {
  pthread_mutex_lock(&w->lock);
  while (!w->done && !w->ended && w->n_pending >= w->md->opts.watch_buffer / 2)
    pthread_cond_wait(&w->cond, &w->lock);
  deliver_locked(w, ev);
  pthread_mutex_unlock(&w->lock);
}

/* ---- the store watch's thread ---- */

static void on_event(void *arg, const sl_store_event *sev) {
  watcher *w = arg;
  sl_err err = SL_ERR_INIT;
  pthread_mutex_lock(&w->lock);
  if (sev->type == SL_STORE_EVENT_COMPACTED) {
    w->reset = true;
    pthread_cond_broadcast(&w->cond);
  } else if (!w->done && !w->ended) {
    Sluice__V1__WatchEvent *ev = NULL;
    sl_status st = event_make(w, sev->type == SL_STORE_EVENT_PUT, &sev->kv, sev->revision, &ev,
                              &err);
    if (st == SL_OK)
      deliver_locked(w, ev);
    else
      end_locked(w, st, sl_err_msg(&err, st));
  }
  pthread_mutex_unlock(&w->lock);
}

/* ---- the watcher's thread ---- */

static void watcher_unref(watcher *w) {
  pthread_mutex_lock(&w->lock);
  bool last = --w->refs == 0;
  pthread_mutex_unlock(&w->lock);
  if (!last) return;
  drop_pending_locked(w);
  pthread_cond_destroy(&w->cond);
  pthread_mutex_destroy(&w->lock);
  free(w);
}

/* Sends the state at some revision R as PUTs (after a RESET event if
 * `reset`) and returns R. */
static sl_status send_state(watcher *w, bool reset, int64_t *rev, sl_err *err) {
  sl_store_range_result r;
  uint8_t *start = NULL;
  size_t start_len = 0;
  sl_status st;
  *rev = 0;
  for (;;) {
    /* Every page at the first page's revision R: a later page read newer
     * would show a key ahead of the changes replayed from R + 1, and the
     * client would see it go backwards. */
    st = sl_store_range_at(w->md->store, w->prefix.s, w->prefix.len, start, start_len,
                           sl_md_page_limit(w->md), *rev, &r, err);
    if (st != SL_OK) break;
    if (*rev == 0) {
      *rev = r.revision;
      if (reset) {
        Sluice__V1__WatchEvent *ev = sl_xmalloc(sizeof(*ev));
        sluice__v1__watch_event__init(ev);
        ev->type = SLUICE__V1__WATCH_EVENT_TYPE__WATCH_EVENT_RESET;
        ev->revision = *rev;
        ev->key = sl_xstrdup("");
        deliver_paced(w, ev);
      }
    }
    for (size_t i = 0; i < r.n && st == SL_OK; i++) {
      Sluice__V1__WatchEvent *ev = NULL;
      st = event_make(w, true, &r.kvs[i], *rev, &ev, err);
      if (st == SL_OK) deliver_paced(w, ev);
    }
    bool more = st == SL_OK && sl_md_next_page(&r, &start, &start_len);
    sl_store_range_result_release(&r);
    if (!more) break;
  }
  free(start);
  return sl_md_store_status(st);
}

/* (Re)starts the flow: state first unless resuming from a revision. */
static sl_status begin(watcher *w, int64_t from, bool reset, sl_store_watch **sw, sl_err *err) {
  sl_status st = SL_OK;
  if (from == 0) {
    int64_t rev;
    st = send_state(w, reset, &rev, err);
    from = rev + 1;
  }
  if (st == SL_OK)
    st = sl_md_store_status(sl_store_watch_start(w->md->store, w->prefix.s, w->prefix.len, from,
                                                 on_event, w, sw, err));
  return st;
}

static void *watcher_main(void *arg) {
  watcher *w = arg;
  sl_md_service *md = w->md;
  sl_store_watch *sw = NULL;
  bool first = true;
  pthread_mutex_lock(&w->lock);
  while (!w->done && !w->ended) {
    if (first || w->reset) {
      bool reset = w->reset;
      w->reset = false;
      pthread_mutex_unlock(&w->lock);
      sl_store_watch_stop(sw); /* a compacted watch has ended; free it */
      sw = NULL;
      sl_err err = SL_ERR_INIT;
      sl_status st = begin(w, first ? w->start_revision : 0, reset || (first && w->announce), &sw,
                           &err);
      first = false;
      pthread_mutex_lock(&w->lock);
      if (st != SL_OK) end_locked(w, st, sl_err_msg(&err, st));
      continue;
    }
    pthread_cond_wait(&w->cond, &w->lock);
  }
  pthread_mutex_unlock(&w->lock);
  sl_store_watch_stop(sw);
  watcher_unref(w);
  /* Tell destroy we are gone; it joins us. */
  pthread_mutex_lock(&md->watch_lock);
  md->n_watch_threads--;
  sl_md_watches_add(-1);
  pthread_cond_broadcast(&md->watch_cond);
  pthread_mutex_unlock(&md->watch_lock);
  return NULL;
}

/* ---- handlers ---- */

static sl_status watcher_init(watcher *w, const Sluice__V1__WatchRequest *req, sl_err *err) {
  switch (req->target) {
    case SLUICE__V1__WATCH_TARGET__WATCH_TARGET_BROKERS:
      sl_md_key_fmt(&w->prefix, "brokers/");
      break;
    case SLUICE__V1__WATCH_TARGET__WATCH_TARGET_BOOKIES:
      sl_md_key_fmt(&w->prefix, "bookies/");
      break;
    case SLUICE__V1__WATCH_TARGET__WATCH_TARGET_OWNERSHIP: {
      sl_status st = sl_md_check_partition_prefix(req->prefix, err);
      if (st != SL_OK) return st;
      sl_md_key_fmt(&w->prefix, "owners/%s", req->prefix ? req->prefix : "");
      w->strip = w->prefix.len - strlen(req->prefix ? req->prefix : "");
      break;
    }
    default:
      return sl_err_set(err, SL_EINVAL, "watch: unknown target %d", (int)req->target);
  }
  if (w->strip == 0) w->strip = w->prefix.len;
  if (req->target != SLUICE__V1__WATCH_TARGET__WATCH_TARGET_OWNERSHIP && req->prefix != NULL &&
      req->prefix[0] != '\0')
    return sl_err_set(err, SL_EINVAL, "watch: prefix applies to OWNERSHIP only");
  if (req->start_revision < 0)
    return sl_err_set(err, SL_EINVAL, "watch: start_revision %" PRId64 " is negative",
                      req->start_revision);
  w->target = req->target;
  w->start_revision = req->start_revision;
  w->announce = req->announce_state;
  return SL_OK;
}

SL_MD_HANDLER(watch, WatchRequest) {
  sl_md_service *md = ctx;
  sl_err err = SL_ERR_INIT;
  watcher *w = sl_xcalloc(1, sizeof(*w));
  w->md = md;
  w->call = call;
  sl_status st = watcher_init(w, req, &err);
  if (st != SL_OK) {
    free(w);
    sl_md_fail(call, st, &err);
    return;
  }
  pthread_mutex_init(&w->lock, NULL);
  pthread_cond_init(&w->cond, NULL);
  w->refs = 2;
  sl_rpc_call_set_user(call, w);
  pthread_t t;
  pthread_mutex_lock(&md->watch_lock);
  sl_md_watches_add(1); /* before the thread can send anything */
  int rc = pthread_create(&t, NULL, watcher_main, w);
  if (rc == 0) {
    md->n_watch_threads++;
    pthread_detach(t);
  } else {
    sl_md_watches_add(-1);
  }
  pthread_mutex_unlock(&md->watch_lock);
  if (rc != 0) {
    w->refs = 1; /* no thread: on_done drops the last reference */
    pthread_mutex_lock(&w->lock);
    end_locked(w, SL_EUNAVAIL, "watch: cannot start a thread");
    pthread_mutex_unlock(&w->lock);
  }
}

void sl_md_watch_writable(sl_rpc_call *call, void *ctx) {
  (void)ctx;
  watcher *w = sl_rpc_call_user(call);
  if (w == NULL) return;
  pthread_mutex_lock(&w->lock);
  drain_locked(w);
  pthread_cond_broadcast(&w->cond);
  pthread_mutex_unlock(&w->lock);
}

void sl_md_watch_done(sl_rpc_call *call, bool cancelled, void *ctx) {
  (void)ctx;
  (void)cancelled;
  watcher *w = sl_rpc_call_user(call);
  if (w == NULL) return;
  pthread_mutex_lock(&w->lock);
  w->done = true; /* invariant 3 */
  drop_pending_locked(w);
  pthread_cond_broadcast(&w->cond);
  pthread_mutex_unlock(&w->lock);
  watcher_unref(w);
}
