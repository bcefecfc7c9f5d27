/* Design note: see registration.h. */
#include "bookie/registration.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "common/rpc_client.h"
#include "metadata.slrpc.h"

struct sl_registration {
  char *target, *bookie_id, *address, *rack, *instance_id;
  uint32_t ttl_seconds;
  int retry_min_ms, retry_max_ms, rpc_timeout_ms, close_timeout_ms;
  sl_registration_state_fn get_state;
  void *arg;
  int64_t start_time_ms;
  sl_rpc_channel *ch;
  pthread_t thread;
  bool started;

  pthread_mutex_t mu;  /* guards the fields below and every waiter */
  pthread_cond_t cv;   /* poke, stop, or an RPC answered */
  bool stop, poked;
  sl_registration_status status;

  /* Registration thread only. */
  uint64_t reported_free;
  int streak;          /* failures in a row */
  sl_status streak_st; /* status of the last of them */
  unsigned seed;
};

/* ---- time ---- */

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits until `deadline` (monotonic ms), a poke or stop. Under r->mu. */
static void wait_until_locked(sl_registration *r, int64_t deadline) {
  while (!r->stop && !r->poked) {
    int64_t left = deadline - now_ms();
    if (left <= 0) return;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += left / 1000;
    ts.tv_nsec += (left % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000;
    }
    pthread_cond_timedwait(&r->cv, &r->mu, &ts);
  }
}

/* ---- one RPC, abandoned on stop ---- */

/* An async call the thread waits for. If the thread stops waiting first
 * (stop), the callback frees it; the channel is destroyed (running every
 * callback) before r is freed, so the callback may always touch r. */
typedef struct waiter {
  sl_registration *r;
  bool done, abandoned; /* under r->mu */
  sl_status st;
  ProtobufCMessage *resp;
  char details[SL_ERR_MAX];
} waiter;

static void on_reply(sl_status st, const char *details, ProtobufCMessage *resp,
                     void *arg) {
  waiter *w = arg;
  sl_registration *r = w->r;
  pthread_mutex_lock(&r->mu);
  bool abandoned = w->abandoned;
  w->st = st;
  w->resp = resp;
  snprintf(w->details, sizeof(w->details), "%s", details ? details : "");
  w->done = true;
  pthread_cond_broadcast(&r->cv);
  pthread_mutex_unlock(&r->mu);
  if (abandoned) {
    if (resp != NULL) protobuf_c_message_free_unpacked(resp, NULL);
    free(w);
  }
}

/* Calls m and waits for the answer; gives up with SL_ECANCELED on stop
 * unless ignore_stop. */
static sl_status call(sl_registration *r, const sl_rpc_method *m,
                      const ProtobufCMessage *req, ProtobufCMessage **resp,
                      int timeout_ms, bool ignore_stop, sl_err *err) {
  waiter *w = sl_xcalloc(1, sizeof(*w));
  w->r = r;
  sl_rpc_call_opts o = {.timeout_ms = timeout_ms};
  sl_status st = sl_rpc_unary_async(r->ch, m, req, &o, on_reply, w, err);
  if (st != SL_OK) {
    free(w);
    return st;
  }
  pthread_mutex_lock(&r->mu);
  while (!w->done && (ignore_stop || !r->stop)) pthread_cond_wait(&r->cv, &r->mu);
  bool done = w->done;
  if (!done) w->abandoned = true;
  pthread_mutex_unlock(&r->mu);
  if (!done) return sl_err_set(err, SL_ECANCELED, "registration stopping");
  st = w->st;
  if (st == SL_OK) {
    *resp = w->resp;
  } else {
    sl_err_set(err, st, "%s", w->details[0] ? w->details : sl_status_str(st));
  }
  free(w);
  return st;
}

/* ---- steps ---- */

static void fill_info(sl_registration *r, Sluice__V1__BookieInfo *info) {
  bool ro = false;
  uint64_t free_b = 0, total = 0;
  if (r->get_state != NULL) r->get_state(r->arg, &ro, &free_b, &total);
  info->id = r->bookie_id;
  info->address = r->address;
  info->rack = r->rack;
  info->instance_id = r->instance_id;
  info->start_time_ms = r->start_time_ms;
  info->read_only = ro;
  info->free_bytes = free_b;
  info->total_bytes = total;
}

static void note_reported(sl_registration *r, const Sluice__V1__BookieInfo *info) {
  r->reported_free = info->free_bytes;
  pthread_mutex_lock(&r->mu);
  r->status.reported_read_only = info->read_only;
  pthread_mutex_unlock(&r->mu);
}

static void note_failure(sl_registration *r, const char *op, sl_status st,
                         const sl_err *err) {
  bool loud = r->streak == 0 || st != r->streak_st;
  r->streak++;
  r->streak_st = st;
  pthread_mutex_lock(&r->mu);
  r->status.failures++;
  r->status.last_error = st;
  pthread_mutex_unlock(&r->mu);
  sl_log(loud ? SL_LOG_WARN : SL_LOG_DEBUG,
         "event=registration_failed op=%s target=%s status=\"%s\" error=\"%s\""
         " attempt=%d", op, r->target, sl_status_str(st), sl_err_msg(err, st), r->streak);
}

static void note_success(sl_registration *r) {
  r->streak = 0;
  r->streak_st = SL_OK;
}

/* Exponential backoff with +-25% jitter. */
static int backoff_ms(sl_registration *r) {
  int shift = r->streak > 16 ? 16 : r->streak;
  int64_t d = (int64_t)r->retry_min_ms << (shift > 0 ? shift - 1 : 0);
  if (d > r->retry_max_ms) d = r->retry_max_ms;
  int64_t j = d / 4;
  if (j > 0) d += (int64_t)(rand_r(&r->seed) % (unsigned)(2 * j + 1)) - j;
  return (int)d;
}

static void set_session(sl_registration *r, int64_t id, uint32_t ttl) {
  pthread_mutex_lock(&r->mu);
  r->status.registered = id != 0;
  r->status.session_id = id;
  r->status.ttl_seconds = ttl;
  if (id != 0) r->status.opens++;
  pthread_mutex_unlock(&r->mu);
}

static sl_status open_session(sl_registration *r, int64_t *session, uint32_t *ttl) {
  sl_err err = SL_ERR_INIT;
  Sluice__V1__BookieInfo info = SLUICE__V1__BOOKIE_INFO__INIT;
  fill_info(r, &info);
  Sluice__V1__OpenSessionRequest req = SLUICE__V1__OPEN_SESSION_REQUEST__INIT;
  req.kind = SLUICE__V1__NODE_KIND__NODE_KIND_BOOKIE;
  req.bookie = &info;
  req.ttl_seconds = r->ttl_seconds;
  ProtobufCMessage *resp = NULL;
  sl_status st = call(r, SL_METADATA_SERVICE_OPEN_SESSION, &req.base, &resp,
                      r->rpc_timeout_ms, false, &err);
  if (st == SL_ECANCELED) return st;
  if (st == SL_OK) {
    Sluice__V1__OpenSessionResponse *o = (Sluice__V1__OpenSessionResponse *)resp;
    if (o->session_id == 0)
      st = sl_err_set(&err, SL_EINTERNAL, "metadata service returned session 0");
    *session = o->session_id;
    *ttl = o->ttl_seconds ? o->ttl_seconds : (r->ttl_seconds ? r->ttl_seconds : 5);
    protobuf_c_message_free_unpacked(resp, NULL);
  }
  if (st != SL_OK) {
    note_failure(r, "OpenSession", st, &err);
    return st;
  }
  note_reported(r, &info);
  set_session(r, *session, *ttl);
  sl_log(SL_LOG_INFO, "event=registered session=%" PRId64 " ttl_s=%" PRIu32
         " address=%s read_only=%d after_failures=%d", *session, *ttl, r->address,
         (int)info.read_only, r->streak);
  note_success(r);
  return SL_OK;
}

static sl_status keep_alive(sl_registration *r, int64_t session) {
  sl_err err = SL_ERR_INIT;
  Sluice__V1__KeepAliveRequest req = SLUICE__V1__KEEP_ALIVE_REQUEST__INIT;
  req.session_id = session;
  ProtobufCMessage *resp = NULL;
  sl_status st = call(r, SL_METADATA_SERVICE_KEEP_ALIVE, &req.base, &resp,
                      r->rpc_timeout_ms, false, &err);
  if (st == SL_ECANCELED) return st;
  if (st != SL_OK) {
    note_failure(r, "KeepAlive", st, &err);
    return st;
  }
  protobuf_c_message_free_unpacked(resp, NULL);
  pthread_mutex_lock(&r->mu);
  r->status.keepalives++;
  pthread_mutex_unlock(&r->mu);
  note_success(r);
  return SL_OK;
}

static sl_status update_node(sl_registration *r, int64_t session) {
  sl_err err = SL_ERR_INIT;
  Sluice__V1__BookieInfo info = SLUICE__V1__BOOKIE_INFO__INIT;
  fill_info(r, &info);
  Sluice__V1__UpdateNodeRequest req = SLUICE__V1__UPDATE_NODE_REQUEST__INIT;
  req.session_id = session;
  req.kind = SLUICE__V1__NODE_KIND__NODE_KIND_BOOKIE;
  req.bookie = &info;
  ProtobufCMessage *resp = NULL;
  sl_status st = call(r, SL_METADATA_SERVICE_UPDATE_NODE, &req.base, &resp,
                      r->rpc_timeout_ms, false, &err);
  if (st == SL_ECANCELED) return st;
  if (st != SL_OK) {
    note_failure(r, "UpdateNode", st, &err);
    return st;
  }
  protobuf_c_message_free_unpacked(resp, NULL);
  note_reported(r, &info);
  pthread_mutex_lock(&r->mu);
  r->status.updates++;
  pthread_mutex_unlock(&r->mu);
  sl_log(SL_LOG_INFO, "event=registration_updated session=%" PRId64
         " read_only=%d free_bytes=%" PRIu64, session, (int)info.read_only,
         info.free_bytes);
  note_success(r);
  return SL_OK;
}

static void close_session(sl_registration *r, int64_t session) {
  sl_err err = SL_ERR_INIT;
  Sluice__V1__CloseSessionRequest req = SLUICE__V1__CLOSE_SESSION_REQUEST__INIT;
  req.session_id = session;
  ProtobufCMessage *resp = NULL;
  sl_status st = call(r, SL_METADATA_SERVICE_CLOSE_SESSION, &req.base, &resp,
                      r->close_timeout_ms, true, &err);
  if (st == SL_OK) {
    protobuf_c_message_free_unpacked(resp, NULL);
    sl_log(SL_LOG_INFO, "event=unregistered session=%" PRId64, session);
  } else {
    sl_log(SL_LOG_WARN, "event=unregister_failed session=%" PRId64
           " status=\"%s\" error=\"%s\"", session, sl_status_str(st),
           sl_err_msg(&err, st));
  }
  set_session(r, 0, 0);
}

/* Whether what we reported differs from the state now. */
static bool state_changed(sl_registration *r) {
  if (r->get_state == NULL) return false;
  bool ro = false;
  uint64_t free_b = 0, total = 0;
  r->get_state(r->arg, &ro, &free_b, &total);
  pthread_mutex_lock(&r->mu);
  bool reported_ro = r->status.reported_read_only;
  pthread_mutex_unlock(&r->mu);
  uint64_t diff = free_b > r->reported_free ? free_b - r->reported_free
                                            : r->reported_free - free_b;
  return ro != reported_ro || diff > total / 20;
}

/* ---- the thread ---- */

static void *reg_main(void *arg) {
  sl_registration *r = arg;
  int64_t session = 0;
  uint32_t ttl = 0;
  int64_t next_ka = 0;  /* when the next keep-alive is due */
  bool want_update = false;
  for (;;) {
    pthread_mutex_lock(&r->mu);
    bool stop = r->stop;
    want_update |= r->poked;
    r->poked = false;
    pthread_mutex_unlock(&r->mu);
    if (stop) break;

    sl_status st = SL_OK;
    if (session == 0) {
      st = open_session(r, &session, &ttl);
      if (st == SL_OK) {
        want_update = false; /* OpenSession carried fresh state */
        next_ka = now_ms() + (int64_t)ttl * 1000 / 3;
      }
    } else if (want_update || (now_ms() >= next_ka && state_changed(r))) {
      st = update_node(r, session);
      if (st == SL_OK) want_update = false;
    } else if (now_ms() >= next_ka) {
      st = keep_alive(r, session);
      if (st == SL_OK) next_ka = now_ms() + (int64_t)ttl * 1000 / 3;
    }
    if (st == SL_ENOTFOUND && session != 0) {
      /* The lease lapsed: register again at once. */
      sl_log(SL_LOG_WARN, "event=session_lost session=%" PRId64, session);
      session = 0;
      set_session(r, 0, 0);
      continue;
    }
    int64_t deadline = st == SL_OK ? next_ka : now_ms() + backoff_ms(r);
    pthread_mutex_lock(&r->mu);
    wait_until_locked(r, deadline);
    pthread_mutex_unlock(&r->mu);
  }
  if (session != 0) close_session(r, session);
  return NULL;
}

/* ---- public ---- */

void sl_registration_poke(sl_registration *r) {
  pthread_mutex_lock(&r->mu);
  r->poked = true;
  pthread_cond_broadcast(&r->cv);
  pthread_mutex_unlock(&r->mu);
}

void sl_registration_get_status(sl_registration *r, sl_registration_status *out) {
  pthread_mutex_lock(&r->mu);
  *out = r->status;
  pthread_mutex_unlock(&r->mu);
}

static void reg_free(sl_registration *r) {
  sl_rpc_channel_destroy(r->ch); /* runs the callbacks of abandoned calls */
  pthread_cond_destroy(&r->cv);
  pthread_mutex_destroy(&r->mu);
  free(r->target);
  free(r->bookie_id);
  free(r->address);
  free(r->rack);
  free(r->instance_id);
  free(r);
}

sl_status sl_registration_start(const sl_registration_opts *o, sl_registration **out,
                                sl_err *err) {
  if (o == NULL || o->target == NULL || o->target[0] == '\0' || o->bookie_id == NULL ||
      o->address == NULL || o->address[0] == '\0')
    return sl_err_set(err, SL_EINVAL, "registration: needs a target, an id and an address");
  sl_registration *r = sl_xcalloc(1, sizeof(*r));
  r->target = sl_xstrdup(o->target);
  r->bookie_id = sl_xstrdup(o->bookie_id);
  r->address = sl_xstrdup(o->address);
  r->rack = sl_xstrdup(o->rack ? o->rack : "");
  r->instance_id = sl_xstrdup(o->instance_id ? o->instance_id : "");
  r->ttl_seconds = o->ttl_seconds;
  r->retry_min_ms = o->retry_min_ms > 0 ? o->retry_min_ms : 100;
  r->retry_max_ms = o->retry_max_ms > 0 ? o->retry_max_ms : 5000;
  if (r->retry_max_ms < r->retry_min_ms) r->retry_max_ms = r->retry_min_ms;
  r->rpc_timeout_ms = o->rpc_timeout_ms > 0 ? o->rpc_timeout_ms : 2000;
  r->close_timeout_ms = o->close_timeout_ms > 0 ? o->close_timeout_ms : 300;
  r->get_state = o->get_state;
  r->arg = o->arg;
  r->start_time_ms = wall_ms();
  r->seed = (unsigned)now_ms();
  pthread_mutex_init(&r->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&r->cv, &ca);
  pthread_condattr_destroy(&ca);
  sl_rpc_channel_opts co = {.target = r->target,
                            .tls_root_pem = o->tls_root_pem,
                            .tls_cert_pem = o->tls_cert_pem,
                            .tls_key_pem = o->tls_key_pem};
  sl_status st = sl_rpc_channel_create(&co, &r->ch, err);
  if (st != SL_OK) goto out_free;
  if (pthread_create(&r->thread, NULL, reg_main, r) != 0) {
    st = sl_err_set(err, SL_EINTERNAL, "registration: cannot start thread");
    goto out_free;
  }
  r->started = true;
  sl_log(SL_LOG_INFO, "event=registration_started target=%s id=%s address=%s",
         r->target, r->bookie_id, r->address);
  *out = r;
  return SL_OK;
out_free:
  reg_free(r);
  return sl_err_wrap(err, st, "registration with %s", o->target);
}

void sl_registration_stop(sl_registration *r) {
  if (r == NULL) return;
  pthread_mutex_lock(&r->mu);
  r->stop = true;
  pthread_cond_broadcast(&r->cv);
  pthread_mutex_unlock(&r->mu);
  if (r->started) pthread_join(r->thread, NULL);
  reg_free(r);
}
