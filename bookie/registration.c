/* Design note: see registration.h. */
#include "bookie/registration.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/session.h"

struct sl_registration {
  char *rack, *instance_id;
  char cluster_id[64];      /* session thread only once started */
  void (*on_cluster)(void *arg, const char *cluster_id);
  int64_t start_time_ms;
  sl_registration_state_fn get_state;
  void *arg;
  sl_session *session;

  pthread_mutex_t mu;     /* guards the two fields below */
  bool reported_ro;       /* what the service holds */
  uint64_t reported_free;
};

static void read_state(sl_registration *r, bool *ro, uint64_t *free_b, uint64_t *total) {
  *ro = false;
  *free_b = *total = 0;
  if (r->get_state != NULL) r->get_state(r->arg, ro, free_b, total);
}

/* ---- session callbacks (session thread) ---- */

static void describe(void *arg, ProtobufCMessage *m) {
  sl_registration *r = arg;
  Sluice__V1__BookieInfo *info = (Sluice__V1__BookieInfo *)m;
  info->rack = r->rack;
  info->instance_id = r->instance_id;
  info->cluster_id = r->cluster_id;
  info->start_time_ms = r->start_time_ms;
  bool ro;
  read_state(r, &ro, &info->free_bytes, &info->total_bytes);
  info->read_only = ro;
}

static void reported(void *arg, const ProtobufCMessage *m) {
  sl_registration *r = arg;
  const Sluice__V1__BookieInfo *info = (const Sluice__V1__BookieInfo *)m;
  pthread_mutex_lock(&r->mu);
  r->reported_ro = info->read_only;
  r->reported_free = info->free_bytes;
  pthread_mutex_unlock(&r->mu);
}

static void established(void *arg, const sl_session_event *ev) {
  sl_registration *r = arg;
  if (ev->cluster_id == NULL || ev->cluster_id[0] == '\0') return; /* an older service */
  if (r->cluster_id[0] == '\0')
    snprintf(r->cluster_id, sizeof(r->cluster_id), "%s", ev->cluster_id);
  if (r->on_cluster != NULL) r->on_cluster(r->arg, ev->cluster_id);
}

/* The read-only flag flipped, or free space moved by more than 5%. */
static bool changed(void *arg) {
  sl_registration *r = arg;
  bool ro;
  uint64_t free_b, total;
  if (r->get_state == NULL) return false;
  read_state(r, &ro, &free_b, &total);
  pthread_mutex_lock(&r->mu);
  bool was_ro = r->reported_ro;
  uint64_t was_free = r->reported_free;
  pthread_mutex_unlock(&r->mu);
  uint64_t diff = free_b > was_free ? free_b - was_free : was_free - free_b;
  return ro != was_ro || diff > total / 20;
}

/* ---- public ---- */

void sl_registration_poke(sl_registration *r) { sl_session_poke(r->session); }

void sl_registration_get_status(sl_registration *r, sl_registration_status *out) {
  sl_session_status s;
  sl_session_get_status(r->session, &s);
  *out = (sl_registration_status){
      .registered = s.live,
      .session_id = s.session_id,
      .ttl_seconds = s.ttl_seconds,
      .opens = s.opens,
      .takeovers = s.takeovers,
      .losses = s.losses,
      .keepalives = s.keepalives,
      .updates = s.updates,
      .failures = s.failures,
      .last_error = s.last_error,
  };
  pthread_mutex_lock(&r->mu);
  out->reported_read_only = r->reported_ro;
  pthread_mutex_unlock(&r->mu);
}

static void reg_free(sl_registration *r) {
  pthread_mutex_destroy(&r->mu);
  free(r->rack);
  free(r->instance_id);
  free(r);
}

sl_status sl_registration_start(const sl_registration_opts *o, sl_registration **out,
                                sl_err *err) {
  if (o == NULL || o->bookie_id == NULL)
    return sl_err_set(err, SL_EINVAL, "registration: needs a target, an id and an address");
  sl_registration *r = sl_xcalloc(1, sizeof(*r));
  r->rack = sl_xstrdup(o->rack ? o->rack : "");
  r->instance_id = sl_xstrdup(o->instance_id ? o->instance_id : "");
  snprintf(r->cluster_id, sizeof(r->cluster_id), "%s", o->cluster_id ? o->cluster_id : "");
  r->on_cluster = o->on_cluster;
  r->start_time_ms = sl_clock_wall_ms();
  r->get_state = o->get_state;
  r->arg = o->arg;
  pthread_mutex_init(&r->mu, NULL);
  sl_session_opts so = {
      .target = o->target,
      .kind = SLUICE__V1__NODE_KIND__NODE_KIND_BOOKIE,
      .node_id = o->bookie_id,
      .address = o->address,
      .tls_root_pem = o->tls_root_pem,
      .tls_cert_pem = o->tls_cert_pem,
      .tls_key_pem = o->tls_key_pem,
      .authorization = o->authorization,
      .ttl_seconds = o->ttl_seconds,
      .retry_min_ms = o->retry_min_ms,
      .retry_max_ms = o->retry_max_ms,
      .rpc_timeout_ms = o->rpc_timeout_ms,
      .close_timeout_ms = o->close_timeout_ms,
      .describe = describe,
      .changed = changed,
      .reported = reported,
      .on_established = established,
      .arg = r,
  };
  sl_status st = sl_session_start(&so, &r->session, err);
  if (st != SL_OK) {
    reg_free(r);
    return sl_err_wrap(err, st, "registration of bookie %s", o->bookie_id);
  }
  *out = r;
  return SL_OK;
}

void sl_registration_stop(sl_registration *r) {
  if (r == NULL) return;
  sl_session_stop(r->session);
  reg_free(r);
}
