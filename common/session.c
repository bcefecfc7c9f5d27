/* Design note: see session.h. */
#include "common/session.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/rpc_client.h"
#include "metadata.slrpc.h"

struct sl_session {
  char *target, *node_id, *address;
  const char *kind_name;
  sl_session_opts o; /* callbacks, arg and numbers; strings are ours above */
  sl_rpc_channel *ch;
  pthread_t thread;
  bool started;

  pthread_mutex_t mu; /* guards the fields below and every waiter */
  pthread_cond_t cv;  /* poke, stop, or an RPC answered */
  bool stop, poked;
  sl_session_status status;

  /* Session thread only. */
  int64_t session;   /* 0 = none */
  uint32_t ttl;      /* granted */
  int64_t lost_at;   /* monotonic ms: invariant 1's deadline */
  int64_t next_ka;   /* when the next keep-alive is due */
  int streak;        /* failures in a row */
  sl_status streak_st;
  unsigned seed;
};

/* ---- time ---- */

/* Waits on s->cv until `deadline` (monotonic ms). Under s->mu. Returns
 * false once the deadline has passed. */
static bool timed_wait_locked(sl_session *s, int64_t deadline) {
  int64_t left = deadline - sl_clock_mono_ms();
  if (left <= 0) return false;
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  ts.tv_sec += left / 1000;
  ts.tv_nsec += (left % 1000) * 1000000;
  if (ts.tv_nsec >= 1000000000) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000;
  }
  pthread_cond_timedwait(&s->cv, &s->mu, &ts);
  return true;
}

/* ---- one RPC, abandoned on stop or at a deadline ---- */

/* An async call the thread waits for. If the thread stops waiting first,
 * the callback frees it; the channel is destroyed (running every callback)
 * before s is freed, so the callback may always touch s. */
typedef struct waiter {
  sl_session *s;
  bool done, abandoned; /* under s->mu */
  sl_status st;
  ProtobufCMessage *resp;
  char details[SL_ERR_MAX];
} waiter;

static void on_reply(sl_status st, const char *details, ProtobufCMessage *resp, void *arg) {
  waiter *w = arg;
  sl_session *s = w->s;
  pthread_mutex_lock(&s->mu);
  bool abandoned = w->abandoned;
  w->st = st;
  w->resp = resp;
  snprintf(w->details, sizeof(w->details), "%s", details ? details : "");
  w->done = true;
  pthread_cond_broadcast(&s->cv);
  pthread_mutex_unlock(&s->mu);
  if (abandoned) {
    if (resp != NULL) protobuf_c_message_free_unpacked(resp, NULL);
    free(w);
  }
}

/* Calls m and waits for the answer. Gives up with SL_ECANCELED on stop
 * (unless ignore_stop) and with SL_ETIMEDOUT at give_up_at (monotonic ms;
 * 0 = only the call's own timeout). */
static sl_status call(sl_session *s, const sl_rpc_method *m, const ProtobufCMessage *req,
                      ProtobufCMessage **resp, int timeout_ms, int64_t give_up_at,
                      bool ignore_stop, sl_err *err) {
  waiter *w = sl_xcalloc(1, sizeof(*w));
  w->s = s;
  sl_rpc_call_opts co = {.timeout_ms = timeout_ms};
  sl_status st = sl_rpc_unary_async(s->ch, m, req, &co, on_reply, w, err);
  if (st != SL_OK) {
    free(w);
    return st;
  }
  bool timed_out = false;
  pthread_mutex_lock(&s->mu);
  while (!w->done && (ignore_stop || !s->stop) && !timed_out) {
    if (give_up_at == 0)
      pthread_cond_wait(&s->cv, &s->mu);
    else
      timed_out = !timed_wait_locked(s, give_up_at);
  }
  bool done = w->done;
  if (!done) w->abandoned = true;
  pthread_mutex_unlock(&s->mu);
  if (!done && timed_out)
    return sl_err_set(err, SL_ETIMEDOUT, "no answer before the session's TTL ran out");
  if (!done) return sl_err_set(err, SL_ECANCELED, "session keeper stopping");
  st = w->st;
  if (st == SL_OK)
    *resp = w->resp;
  else
    sl_err_set(err, st, "%s", w->details[0] ? w->details : sl_status_str(st));
  free(w);
  return st;
}

/* ---- bookkeeping ---- */

static void note_failure(sl_session *s, const char *op, sl_status st, const sl_err *err) {
  bool loud = s->streak == 0 || st != s->streak_st;
  s->streak++;
  s->streak_st = st;
  pthread_mutex_lock(&s->mu);
  s->status.failures++;
  s->status.last_error = st;
  pthread_mutex_unlock(&s->mu);
  sl_log(loud ? SL_LOG_WARN : SL_LOG_DEBUG,
         "event=session_call_failed op=%s kind=%s id=%s target=%s status=\"%s\" error=\"%s\""
         " attempt=%d", op, s->kind_name, s->node_id, s->target, sl_status_str(st),
         sl_err_msg(err, st), s->streak);
}

/* Exponential backoff with +-25% jitter. */
static int backoff_ms(sl_session *s) {
  int shift = s->streak > 16 ? 16 : s->streak;
  int64_t d = (int64_t)s->o.retry_min_ms << (shift > 0 ? shift - 1 : 0);
  if (d > s->o.retry_max_ms) d = s->o.retry_max_ms;
  int64_t j = d / 4;
  if (j > 0) d += (int64_t)(rand_r(&s->seed) % (unsigned)(2 * j + 1)) - j;
  return (int)d;
}

/* The registration as describe fills it; *info is a BrokerInfo or a
 * BookieInfo by kind. */
typedef union node_info {
  ProtobufCMessage base;
  Sluice__V1__BrokerInfo broker;
  Sluice__V1__BookieInfo bookie;
} node_info;

static void describe(sl_session *s, node_info *info) {
  if (s->o.kind == SLUICE__V1__NODE_KIND__NODE_KIND_BROKER) {
    info->broker = (Sluice__V1__BrokerInfo)SLUICE__V1__BROKER_INFO__INIT;
    info->broker.id = s->node_id;
    info->broker.address = s->address;
  } else {
    info->bookie = (Sluice__V1__BookieInfo)SLUICE__V1__BOOKIE_INFO__INIT;
    info->bookie.id = s->node_id;
    info->bookie.address = s->address;
  }
  if (s->o.describe != NULL) s->o.describe(s->o.arg, &info->base);
}

static void set_info(sl_session *s, node_info *info, Sluice__V1__BrokerInfo **broker,
                     Sluice__V1__BookieInfo **bookie) {
  bool is_broker = s->o.kind == SLUICE__V1__NODE_KIND__NODE_KIND_BROKER;
  *broker = is_broker ? &info->broker : NULL;
  *bookie = is_broker ? NULL : &info->bookie;
}

/* ---- steps (session thread) ---- */

static sl_status open_session(sl_session *s) {
  sl_err err = SL_ERR_INIT;
  node_info info;
  describe(s, &info);
  Sluice__V1__OpenSessionRequest req = SLUICE__V1__OPEN_SESSION_REQUEST__INIT;
  req.kind = s->o.kind;
  set_info(s, &info, &req.broker, &req.bookie);
  req.ttl_seconds = s->o.ttl_seconds;
  ProtobufCMessage *resp = NULL;
  int64_t sent = sl_clock_mono_ms(); /* invariant 1: the lease was granted after this */
  sl_status st = call(s, SL_METADATA_SERVICE_OPEN_SESSION, &req.base, &resp,
                      s->o.rpc_timeout_ms, 0, false, &err);
  if (st == SL_ECANCELED) return st;
  sl_session_event ev = {0};
  char cluster[64] = "";
  ev.cluster_id = cluster;
  if (st == SL_OK) {
    Sluice__V1__OpenSessionResponse *o = (Sluice__V1__OpenSessionResponse *)resp;
    snprintf(cluster, sizeof(cluster), "%s", o->cluster_id);
    ev.session_id = o->session_id;
    ev.ttl_seconds = o->ttl_seconds;
    ev.took_over = o->took_over;
    protobuf_c_message_free_unpacked(resp, NULL);
    if (ev.session_id <= 0 || ev.ttl_seconds == 0)
      st = sl_err_set(&err, SL_EINTERNAL, "metadata service returned session %" PRId64
                      " with ttl %" PRIu32, ev.session_id, ev.ttl_seconds);
  }
  if (st != SL_OK) {
    note_failure(s, "OpenSession", st, &err);
    return st;
  }
  s->session = ev.session_id;
  s->ttl = ev.ttl_seconds;
  s->lost_at = sent + (int64_t)s->ttl * 1000 - sl_session_lost_guard_ms(s->ttl);
  s->next_ka = sent + (int64_t)s->ttl * 1000 / 3;
  pthread_mutex_lock(&s->mu);
  ev.generation = ++s->status.generation;
  s->status.live = true;
  s->status.session_id = ev.session_id;
  s->status.ttl_seconds = ev.ttl_seconds;
  s->status.renewed_ms = sent;
  s->status.opens++;
  if (ev.took_over) s->status.takeovers++;
  pthread_mutex_unlock(&s->mu);
  sl_log(SL_LOG_INFO, "event=session_established kind=%s id=%s address=%s generation=%" PRIu64
         " ttl_s=%" PRIu32 " took_over=%d after_failures=%d", s->kind_name, s->node_id,
         s->address, ev.generation, ev.ttl_seconds, (int)ev.took_over, s->streak);
  s->streak = 0;
  if (s->o.reported != NULL) s->o.reported(s->o.arg, &info.base);
  if (s->o.on_established != NULL) s->o.on_established(s->o.arg, &ev);
  return SL_OK;
}

static sl_status keep_alive(sl_session *s) {
  sl_err err = SL_ERR_INIT;
  Sluice__V1__KeepAliveRequest req = SLUICE__V1__KEEP_ALIVE_REQUEST__INIT;
  req.session_id = s->session;
  req.kind = s->o.kind;
  req.node_id = s->node_id;
  ProtobufCMessage *resp = NULL;
  int64_t sent = sl_clock_mono_ms();
  sl_status st = call(s, SL_METADATA_SERVICE_KEEP_ALIVE, &req.base, &resp, s->o.rpc_timeout_ms,
                      s->lost_at, false, &err);
  if (st == SL_ECANCELED) return st;
  if (st != SL_OK) {
    note_failure(s, "KeepAlive", st, &err);
    return st;
  }
  protobuf_c_message_free_unpacked(resp, NULL);
  /* Invariant 1: renewed by the service after `sent`, to the full TTL. */
  s->lost_at = sent + (int64_t)s->ttl * 1000 - sl_session_lost_guard_ms(s->ttl);
  s->next_ka = sent + (int64_t)s->ttl * 1000 / 3;
  pthread_mutex_lock(&s->mu);
  s->status.renewed_ms = sent;
  s->status.keepalives++;
  pthread_mutex_unlock(&s->mu);
  s->streak = 0;
  return SL_OK;
}

static sl_status update_node(sl_session *s) {
  sl_err err = SL_ERR_INIT;
  node_info info;
  describe(s, &info);
  Sluice__V1__UpdateNodeRequest req = SLUICE__V1__UPDATE_NODE_REQUEST__INIT;
  req.session_id = s->session;
  req.kind = s->o.kind;
  set_info(s, &info, &req.broker, &req.bookie);
  ProtobufCMessage *resp = NULL;
  sl_status st = call(s, SL_METADATA_SERVICE_UPDATE_NODE, &req.base, &resp, s->o.rpc_timeout_ms,
                      s->lost_at, false, &err);
  if (st == SL_ECANCELED) return st;
  if (st != SL_OK) {
    note_failure(s, "UpdateNode", st, &err);
    return st;
  }
  protobuf_c_message_free_unpacked(resp, NULL);
  pthread_mutex_lock(&s->mu);
  s->status.updates++;
  pthread_mutex_unlock(&s->mu);
  sl_log(SL_LOG_INFO, "event=session_node_updated kind=%s id=%s", s->kind_name, s->node_id);
  s->streak = 0;
  if (s->o.reported != NULL) s->o.reported(s->o.arg, &info.base);
  return SL_OK;
}

/* Ends the current session locally and tells the user (invariant 2). */
static void lose(sl_session *s, sl_status why) {
  sl_session_event ev = {.session_id = s->session, .ttl_seconds = s->ttl, .why = why};
  pthread_mutex_lock(&s->mu);
  ev.generation = s->status.generation;
  s->status.live = false;
  s->status.session_id = 0;
  s->status.losses++;
  pthread_mutex_unlock(&s->mu);
  s->session = 0;
  sl_log(SL_LOG_WARN, "event=session_lost kind=%s id=%s generation=%" PRIu64 " why=\"%s\"",
         s->kind_name, s->node_id, ev.generation, sl_status_str(why));
  if (s->o.on_lost != NULL) s->o.on_lost(s->o.arg, &ev);
}

static void close_session(sl_session *s) {
  sl_err err = SL_ERR_INIT;
  Sluice__V1__CloseSessionRequest req = SLUICE__V1__CLOSE_SESSION_REQUEST__INIT;
  req.session_id = s->session;
  req.kind = s->o.kind;
  req.node_id = s->node_id;
  ProtobufCMessage *resp = NULL;
  sl_status st = call(s, SL_METADATA_SERVICE_CLOSE_SESSION, &req.base, &resp,
                      s->o.close_timeout_ms, 0, true, &err);
  if (st == SL_OK) {
    protobuf_c_message_free_unpacked(resp, NULL);
    sl_log(SL_LOG_INFO, "event=session_closed kind=%s id=%s", s->kind_name, s->node_id);
  } else {
    sl_log(SL_LOG_WARN, "event=session_close_failed kind=%s id=%s status=\"%s\" error=\"%s\"",
           s->kind_name, s->node_id, sl_status_str(st), sl_err_msg(&err, st));
  }
  s->session = 0;
  pthread_mutex_lock(&s->mu);
  s->status.live = false;
  s->status.session_id = 0;
  pthread_mutex_unlock(&s->mu);
}

/* The service says the session is over. */
static bool gone(sl_status st) { return st == SL_ENOTFOUND || st == SL_EPERM; }

/* One step with a live session; returns when to look again. An UpdateNode
 * never stands in for a due keep-alive (UpdateNode does not renew), so one
 * that keeps failing cannot starve the session. */
static int64_t step_live(sl_session *s, bool *want_update) {
  if (sl_clock_mono_ms() >= s->lost_at) {
    lose(s, SL_ETIMEDOUT);
    return 0;
  }
  bool due = sl_clock_mono_ms() >= s->next_ka;
  sl_status up = SL_OK, ka = SL_OK;
  if (*want_update || (due && s->o.changed != NULL && s->o.changed(s->o.arg))) {
    up = update_node(s);
    *want_update = up != SL_OK; /* retried at the next step */
  }
  if (due && !gone(up) && up != SL_ECANCELED) ka = keep_alive(s);
  /* The worse of the two: "gone" or stop first, then any failure. */
  sl_status st = gone(up) || up == SL_ECANCELED ? up : (ka != SL_OK ? ka : up);
  if (gone(st)) {
    lose(s, st); /* open a new session at once */
    return 0;
  }
  if (st == SL_ECANCELED) return 0;
  if (sl_clock_mono_ms() >= s->lost_at) {
    lose(s, SL_ETIMEDOUT);
    return 0;
  }
  int64_t next = s->next_ka;
  if (st != SL_OK) {
    /* Retry several times within the TTL however large the backoff cap. */
    int d = backoff_ms(s), cap = (int)s->ttl * 1000 / 6;
    next = sl_clock_mono_ms() + (d < cap ? d : cap);
  }
  return next < s->lost_at ? next : s->lost_at;
}

static void *session_main(void *arg) {
  sl_session *s = arg;
  (void)pthread_setname_np(pthread_self(), "sl-session");
  bool want_update = false;
  for (;;) {
    pthread_mutex_lock(&s->mu);
    bool stop = s->stop;
    want_update |= s->poked;
    s->poked = false;
    pthread_mutex_unlock(&s->mu);
    if (stop) break;

    int64_t next;
    if (s->session == 0) {
      sl_status st = open_session(s);
      if (st == SL_OK) want_update = false; /* OpenSession carried fresh state */
      next = st == SL_OK ? 0 : sl_clock_mono_ms() + backoff_ms(s);
    } else {
      next = step_live(s, &want_update);
    }
    pthread_mutex_lock(&s->mu);
    while (!s->stop && !s->poked && timed_wait_locked(s, next)) {
    }
    pthread_mutex_unlock(&s->mu);
  }
  if (s->session != 0) close_session(s);
  return NULL;
}

/* ---- public ---- */

void sl_session_poke(sl_session *s) {
  pthread_mutex_lock(&s->mu);
  s->poked = true;
  pthread_cond_broadcast(&s->cv);
  pthread_mutex_unlock(&s->mu);
}

void sl_session_get_status(sl_session *s, sl_session_status *out) {
  pthread_mutex_lock(&s->mu);
  *out = s->status;
  pthread_mutex_unlock(&s->mu);
}

static void session_free(sl_session *s) {
  sl_rpc_channel_destroy(s->ch); /* runs the callbacks of abandoned calls */
  pthread_cond_destroy(&s->cv);
  pthread_mutex_destroy(&s->mu);
  free(s->target);
  free(s->node_id);
  free(s->address);
  free(s);
}

static int or_default(int v, int dflt) { return v > 0 ? v : dflt; }

sl_status sl_session_start(const sl_session_opts *o, sl_session **out, sl_err *err) {
  if (o == NULL || o->target == NULL || o->target[0] == '\0' || o->node_id == NULL ||
      o->node_id[0] == '\0' || o->address == NULL || o->address[0] == '\0')
    return sl_err_set(err, SL_EINVAL, "session: needs a target, a node id and an address");
  if (o->kind != SLUICE__V1__NODE_KIND__NODE_KIND_BROKER &&
      o->kind != SLUICE__V1__NODE_KIND__NODE_KIND_BOOKIE)
    return sl_err_set(err, SL_EINVAL, "session: node kind %d: want BROKER or BOOKIE",
                      (int)o->kind);
  sl_session *s = sl_xcalloc(1, sizeof(*s));
  s->o = *o;
  s->target = sl_xstrdup(o->target);
  s->node_id = sl_xstrdup(o->node_id);
  s->address = sl_xstrdup(o->address);
  s->o.target = s->o.node_id = s->o.address = NULL; /* use ours */
  s->o.tls_root_pem = s->o.tls_cert_pem = s->o.tls_key_pem = NULL; /* used below only */
  s->o.authorization = NULL;
  s->kind_name = o->kind == SLUICE__V1__NODE_KIND__NODE_KIND_BROKER ? "broker" : "bookie";
  s->o.retry_min_ms = or_default(o->retry_min_ms, 100);
  s->o.retry_max_ms = or_default(o->retry_max_ms, 5000);
  if (s->o.retry_max_ms < s->o.retry_min_ms) s->o.retry_max_ms = s->o.retry_min_ms;
  s->o.rpc_timeout_ms = or_default(o->rpc_timeout_ms, 2000);
  s->o.close_timeout_ms = or_default(o->close_timeout_ms, 300);
  s->seed = (unsigned)sl_clock_mono_ms();
  pthread_mutex_init(&s->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&s->cv, &ca);
  pthread_condattr_destroy(&ca);
  sl_rpc_channel_opts co = {.target = s->target,
                            .tls_root_pem = o->tls_root_pem,
                            .tls_cert_pem = o->tls_cert_pem,
                            .tls_key_pem = o->tls_key_pem,
                            .authorization = o->authorization};
  sl_status st = sl_rpc_channel_create(&co, &s->ch, err);
  if (st != SL_OK) goto out_free;
  if (pthread_create(&s->thread, NULL, session_main, s) != 0) {
    st = sl_err_set(err, SL_EINTERNAL, "session: cannot start thread");
    goto out_free;
  }
  s->started = true;
  sl_log(SL_LOG_INFO, "event=session_keeper_started target=%s kind=%s id=%s address=%s",
         s->target, s->kind_name, s->node_id, s->address);
  *out = s;
  return SL_OK;
out_free:
  session_free(s);
  return sl_err_wrap(err, st, "session with %s", o->target);
}

void sl_session_stop(sl_session *s) {
  if (s == NULL) return;
  pthread_mutex_lock(&s->mu);
  s->stop = true;
  pthread_cond_broadcast(&s->cv);
  pthread_mutex_unlock(&s->mu);
  if (s->started) pthread_join(s->thread, NULL);
  session_free(s);
}
