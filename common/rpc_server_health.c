/*
 * grpc.health.v1.Health, built into every server.
 *
 * Design
 *   A small table service -> serving, and a list of open Watch calls, both
 *   under health->lock. A change pushes the new status to every watcher of
 *   that service; a watcher whose write queue is full is caught up from
 *   on_writable, so a stuck watcher costs one queued message, not a backlog.
 *
 * Invariants
 *   1. Lock order: health->lock, then a call's lock (inside send/finish).
 *   2. A watcher is on the list from on_start until on_done; it lives in its
 *      call's arena, which outlives on_done.
 *   3. After sl_rpc_health_stop_() everything reports NOT_SERVING, new
 *      watches end at once, and sl_rpc_server_set_health() has no effect.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/rpc_health.h"
#include "common/rpc_server_int.h"

typedef Grpc__Health__V1__HealthCheckRequest check_req;
typedef Grpc__Health__V1__HealthCheckResponse check_resp;

#define ST_SERVING GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
#define ST_NOT_SERVING GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING
#define ST_SERVICE_UNKNOWN GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN

typedef struct health_entry {
  struct health_entry *next;
  bool serving;
  char service[];
} health_entry;

typedef struct watcher {
  struct watcher *prev, *next;
  sl_rpc_call *call;
  const char *service; /* call arena */
  int last_sent;       /* -1 before the first message */
} watcher;

struct sl_rpc_health {
  pthread_mutex_t lock; /* guards everything below */
  health_entry *entries;
  watcher *watchers;
  bool stopped;
};

static health_entry *find(sl_rpc_health *h, const char *service) {
  for (health_entry *e = h->entries; e != NULL; e = e->next)
    if (strcmp(e->service, service) == 0) return e;
  return NULL;
}

/* The Watch view of a service's status. health->lock held. */
static int watch_status(sl_rpc_health *h, const char *service) {
  health_entry *e = find(h, service);
  if (e == NULL) return ST_SERVICE_UNKNOWN;
  return e->serving ? ST_SERVING : ST_NOT_SERVING;
}

/* Sends the current status if the watcher has not seen it. SL_EBUSY is
 * fine: on_writable retries. health->lock held. */
static void push_locked(sl_rpc_health *h, watcher *w) {
  int status = watch_status(h, w->service);
  if (status == w->last_sent) return;
  check_resp resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
  resp.status = status;
  if (sl_rpc_call_send(w->call, &resp.base) == SL_OK) w->last_sent = status;
}

static void check_start(sl_rpc_call *call, const ProtobufCMessage *msg, void *ctx) {
  sl_rpc_health *h = ((sl_rpc_server *)ctx)->health;
  const check_req *req = (const check_req *)msg;
  check_resp resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
  pthread_mutex_lock(&h->lock);
  health_entry *e = find(h, req->service);
  if (e != NULL) resp.status = e->serving ? ST_SERVING : ST_NOT_SERVING;
  pthread_mutex_unlock(&h->lock);
  if (e == NULL) {
    char text[SL_ERR_MAX];
    snprintf(text, sizeof(text), "health: unknown service \"%.200s\"", req->service);
    sl_rpc_call_finish(call, SL_ENOTFOUND, text, NULL);
  } else {
    sl_rpc_call_finish(call, SL_OK, NULL, &resp.base);
  }
}

static void watch_start(sl_rpc_call *call, const ProtobufCMessage *msg, void *ctx) {
  sl_rpc_health *h = ((sl_rpc_server *)ctx)->health;
  const check_req *req = (const check_req *)msg;
  watcher *w = sl_rpc_call_alloc(call, sizeof(*w));
  size_t n = strlen(req->service);
  char *service = sl_rpc_call_alloc(call, n + 1);
  memcpy(service, req->service, n);
  w->call = call;
  w->service = service;
  w->last_sent = -1;
  pthread_mutex_lock(&h->lock);
  if (h->stopped) {
    pthread_mutex_unlock(&h->lock);
    sl_rpc_call_finish(call, SL_EUNAVAIL, "health: server shutting down", NULL);
    return;
  }
  w->next = h->watchers;
  if (h->watchers != NULL) h->watchers->prev = w;
  h->watchers = w;
  sl_rpc_call_set_user(call, w);
  push_locked(h, w);
  pthread_mutex_unlock(&h->lock);
}

static void watch_writable(sl_rpc_call *call, void *ctx) {
  sl_rpc_health *h = ((sl_rpc_server *)ctx)->health;
  watcher *w = sl_rpc_call_user(call);
  pthread_mutex_lock(&h->lock);
  if (w != NULL) push_locked(h, w);
  pthread_mutex_unlock(&h->lock);
}

static void watch_done(sl_rpc_call *call, bool cancelled, void *ctx) {
  (void)cancelled;
  sl_rpc_health *h = ((sl_rpc_server *)ctx)->health;
  watcher *w = sl_rpc_call_user(call);
  if (w == NULL) return; /* ended by the stopped check in watch_start */
  pthread_mutex_lock(&h->lock);
  if (w->prev != NULL) w->prev->next = w->next;
  else h->watchers = w->next;
  if (w->next != NULL) w->next->prev = w->prev;
  pthread_mutex_unlock(&h->lock);
}

sl_status sl_rpc_health_create_(sl_rpc_server *srv, sl_err *err) {
  sl_rpc_health *h = sl_xcalloc(1, sizeof(*h));
  pthread_mutex_init(&h->lock, NULL);
  srv->health = h;
  sl_rpc_handler check = {.on_start = check_start, .ctx = srv};
  sl_rpc_handler watch = {.on_start = watch_start, .on_writable = watch_writable,
                          .on_done = watch_done, .ctx = srv};
  sl_status st = sl_rpc_server_add_(srv, &sl_rpc_health_check, &check, err);
  if (st == SL_OK) st = sl_rpc_server_add_(srv, &sl_rpc_health_watch, &watch, err);
  return st;
}

void sl_rpc_server_set_health(sl_rpc_server *srv, const char *service, bool serving) {
  sl_rpc_health *h = srv->health;
  if (service == NULL) service = "";
  pthread_mutex_lock(&h->lock);
  if (!h->stopped) {
    health_entry *e = find(h, service);
    if (e == NULL) {
      size_t n = strlen(service);
      e = sl_xcalloc(1, sizeof(*e) + n + 1);
      memcpy(e->service, service, n);
      e->next = h->entries;
      h->entries = e;
    }
    e->serving = serving;
    for (watcher *w = h->watchers; w != NULL; w = w->next)
      if (strcmp(w->service, service) == 0) push_locked(h, w);
  }
  pthread_mutex_unlock(&h->lock);
}

void sl_rpc_health_stop_(sl_rpc_server *srv) {
  sl_rpc_health *h = srv->health;
  pthread_mutex_lock(&h->lock);
  h->stopped = true;
  for (health_entry *e = h->entries; e != NULL; e = e->next) e->serving = false;
  for (watcher *w = h->watchers; w != NULL; w = w->next) {
    push_locked(h, w);
    /* The status goes out after the queued NOT_SERVING. */
    sl_rpc_call_finish(w->call, SL_EUNAVAIL, "health: server shutting down", NULL);
  }
  pthread_mutex_unlock(&h->lock);
}

void sl_rpc_health_destroy_(sl_rpc_server *srv) {
  sl_rpc_health *h = srv->health;
  if (h == NULL) return;
  SL_ASSERT(h->watchers == NULL);
  while (h->entries != NULL) {
    health_entry *e = h->entries;
    h->entries = e->next;
    free(e);
  }
  pthread_mutex_destroy(&h->lock);
  free(h);
  srv->health = NULL;
}
