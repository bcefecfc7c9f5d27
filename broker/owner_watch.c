/* Design note: see owner_watch.h. */
#include "broker/owner_watch.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "common/log.h"
#include "metadata.slrpc.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 2000

struct sl_owner_watch {
  sl_owner_watch_opts opts;
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv;      /* stop */
  bool stop;
  sl_rpc_stream *stream;  /* open now, for stop to cancel */
};

static void deliver(sl_owner_watch *w, const Sluice__V1__WatchEvent *ev) {
  switch (ev->type) {
    case SLUICE__V1__WATCH_EVENT_TYPE__WATCH_EVENT_PUT:
      if (ev->owner != NULL)
        w->opts.changed(w->opts.arg, ev->key, ev->owner->broker_id, ev->owner->epoch);
      break;
    case SLUICE__V1__WATCH_EVENT_TYPE__WATCH_EVENT_DELETE:
      w->opts.changed(w->opts.arg, ev->key, NULL, 0);
      break;
    case SLUICE__V1__WATCH_EVENT_TYPE__WATCH_EVENT_RESET:
      sl_log(SL_LOG_INFO, "event=owner_watch_state revision=%" PRId64, ev->revision);
      if (w->opts.reset != NULL) w->opts.reset(w->opts.arg);
      break;
    default:
      break;
  }
}

/* Reads one stream until it ends or stop; *rev follows what was received. */
static sl_status follow(sl_owner_watch *w, int64_t *rev, sl_err *err) {
  Sluice__V1__WatchRequest req = SLUICE__V1__WATCH_REQUEST__INIT;
  req.target = SLUICE__V1__WATCH_TARGET__WATCH_TARGET_OWNERSHIP;
  req.start_revision = *rev;
  req.announce_state = *rev == 0;
  sl_rpc_stream *s = NULL;
  sl_status st = sl_metadata_service_watch_open(w->opts.metadata, &req, NULL, &s, err);
  if (st != SL_OK) return st;
  /* Published for stop to cancel; a stop that came first ends it here. */
  pthread_mutex_lock(&w->mu);
  bool stop = w->stop;
  w->stream = s;
  pthread_mutex_unlock(&w->mu);
  while (!stop) {
    Sluice__V1__WatchEvent *ev = NULL;
    st = sl_metadata_service_watch_recv(s, &ev, 0, err);
    if (st != SL_OK) break;
    if (ev == NULL) {
      st = sl_err_set(err, SL_EUNAVAIL, "owner watch: the server ended the stream");
      break;
    }
    if (ev->revision > *rev) *rev = ev->revision;
    deliver(w, ev);
    protobuf_c_message_free_unpacked(&ev->base, NULL);
  }
  pthread_mutex_lock(&w->mu);
  w->stream = NULL;
  pthread_mutex_unlock(&w->mu);
  sl_rpc_stream_destroy(s);
  return st;
}

static bool stopped(sl_owner_watch *w) {
  pthread_mutex_lock(&w->mu);
  bool stop = w->stop;
  pthread_mutex_unlock(&w->mu);
  return stop;
}

/* Waits ms unless stop comes first; false on stop. */
static bool pause_ms(sl_owner_watch *w, int ms) {
  struct timespec ts = sl_clock_deadline(CLOCK_MONOTONIC, (int64_t)ms * 1000000);
  pthread_mutex_lock(&w->mu);
  while (!w->stop && pthread_cond_timedwait(&w->cv, &w->mu, &ts) == 0) {
  }
  bool go_on = !w->stop;
  pthread_mutex_unlock(&w->mu);
  return go_on;
}

static void *run(void *arg) {
  sl_owner_watch *w = arg;
  (void)pthread_setname_np(pthread_self(), "owner-watch");
  int64_t rev = 0;
  int backoff = BACKOFF_MIN_MS;
  for (;;) {
    int64_t before = rev;
    sl_err err = SL_ERR_INIT;
    sl_status st = follow(w, &rev, &err);
    if (rev > before) backoff = BACKOFF_MIN_MS; /* it worked for a while */
    if (stopped(w)) break;
    sl_log(SL_LOG_WARN, "event=owner_watch_broken status=%s error=\"%s\" retry_ms=%d",
           sl_status_str(st), sl_err_msg(&err, st), backoff);
    if (!pause_ms(w, backoff)) break;
    backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
  }
  return NULL;
}

sl_status sl_owner_watch_start(const sl_owner_watch_opts *opts, sl_owner_watch **out,
                               sl_err *err) {
  if (opts == NULL || opts->metadata == NULL || opts->changed == NULL)
    return sl_err_set(err, SL_EINVAL, "owner watch: needs a channel and a changed callback");
  sl_owner_watch *w = sl_xcalloc(1, sizeof(*w));
  w->opts = *opts;
  pthread_mutex_init(&w->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&w->cv, &ca);
  pthread_condattr_destroy(&ca);
  if (pthread_create(&w->thread, NULL, run, w) != 0) {
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w);
    return sl_err_set(err, SL_EINTERNAL, "owner watch: cannot start its thread");
  }
  *out = w;
  return SL_OK;
}

void sl_owner_watch_stop(sl_owner_watch *w) {
  if (w == NULL) return;
  pthread_mutex_lock(&w->mu);
  w->stop = true;
  /* Under mu the thread cannot destroy the stream under us. */
  if (w->stream != NULL) sl_rpc_stream_cancel(w->stream);
  pthread_cond_broadcast(&w->cv);
  pthread_mutex_unlock(&w->mu);
  pthread_join(w->thread, NULL);
  pthread_cond_destroy(&w->cv);
  pthread_mutex_destroy(&w->mu);
  free(w);
}
