/* Design note: see ownership.h. */
#include "broker/ownership.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "broker.slrpc.h"
#include "broker/load.h"
#include "broker/owner_watch.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/map.h"
#include "common/metrics.h"
#include "common/rpc_client.h"
#include "common/session.h"
#include "metadata.slrpc.h"

typedef enum entry_state { ENTRY_OWNED, ENTRY_UNLOADING } entry_state;

/* One partition this broker owns (a value of o->entries). */
typedef struct entry {
  char *partition;
  uint64_t epoch;
  entry_state state;
  bool seen;       /* the owner watch showed our own key at this epoch */
  sl_ownership_unload_cb unload_cb; /* Unload waiting for the release, or NULL */
  void *unload_arg;
  int64_t unload_start_ms;
} entry;

/* What the owner watch showed of a partition while our AcquireOwnership for
 * it was in flight (a value of o->acquiring): its events can come before
 * the answer. */
typedef struct acq_note {
  uint64_t epoch;  /* our key at this epoch was shown; 0: not yet */
  bool gone;       /* after it, deleted or owned at a later epoch */
} acq_note;

/* A partition owned by another broker, remembered until until_ms (a value
 * of o->cache). */
typedef struct cached {
  char *broker_id, *address;
  uint64_t epoch;
  int64_t until_ms;
} cached;

typedef enum job_kind {
  JOB_RESOLVE,
  JOB_UNLOAD,
  JOB_RELEASE, /* the holder unloaded: release (async) */
  JOB_HANDOFF, /* released after an Unload: offer it to another broker */
  JOB_DRAIN,
} job_kind;

typedef struct job {
  struct job *next;
  job_kind kind;
  sl_ownership *o;
  char *partition;
  bool authoritative;
  sl_ownership_resolve_cb resolve_cb;
  sl_ownership_unload_cb unload_cb;
  void *arg;
  uint64_t epoch;      /* JOB_HANDOFF: the epoch released */
  int64_t start_ms;    /* JOB_HANDOFF: when the unload began */
} job;

/* Worker threads: jobs of different partitions run side by side, so one
 * slow metadata round trip holds up only its own partition's jobs. */
#define WORKERS 4

typedef struct worker {
  struct sl_ownership *o;
  pthread_t thread;
  char *busy;          /* partition of the job it runs (under o->mu), or NULL */
} worker;

/* A channel to another broker, for forwarded Lookup and Unload calls. */
typedef struct peer {
  struct peer *next;
  char *address;
  sl_rpc_channel *ch;
} peer;

struct sl_ownership {
  char *target, *broker_id, *address, *version;
  int rpc_timeout_ms, cache_ms;
  sl_ownership_hooks hooks;
  int64_t start_wall_ms;
  sl_rpc_channel_opts md_tmpl, peer_tmpl; /* channel templates (opts) */
  sl_rpc_channel *ch;
  worker workers[WORKERS];
  size_t n_workers;    /* started */

  pthread_mutex_t mu;  /* guards everything down to the thread-only part */
  pthread_cond_t cv;   /* a job, a partition no longer busy, stop, or the
                          drain finished */
  bool stop;           /* the workers exit */
  bool stopping;       /* graceful stop under way (invariant 5) */
  bool drained;        /* graceful stop finished: released, session closed */
  job *head, *tail;
  size_t releasing;    /* ReleaseOwnership calls in flight */
  sl_map entries;      /* partition -> entry*: what this broker owns */
  sl_map cache;        /* partition -> cached*: owned elsewhere */
  sl_map acquiring;    /* partition -> acq_note*: AcquireOwnership in flight */
  peer *peers;
  int64_t session_id;  /* 0 = none */

  uint32_t reported_owned; /* owned count the metadata service has */
  uint32_t load_permille;  /* last sampled load */
  uint32_t reported_load;  /* load the metadata service has */
  sl_load_sampler load;    /* session thread only */

  sl_session *session; /* set before the thread runs; NULL once the drain
                          closed it (taken out under o->mu, then stopped) */
  sl_owner_watch *watch;
  bool watch_synced;   /* the watch reports every change from now on */
};

static sl_metrics_gauge *owned_gauge;
static sl_metrics_counter *lookups_local, *lookups_redirect, *lookups_acquired,
    *lookups_error;

/* ---- small helpers ---- */

static char *dup_or_empty(const char *s) { return sl_xstrdup(s ? s : ""); }

/* Under o->mu. Whether the session still certainly holds: the table means
 * nothing once a TTL may have passed since the last keep-alive that
 * succeeded, even before on_lost has run (a process paused past its TTL
 * resumes with a stale table). */
static bool lease_fresh_locked(sl_ownership *o) {
  if (o->session == NULL) return false;
  sl_session_status st;
  sl_session_get_status(o->session, &st);
  return st.live &&
         sl_clock_mono_ms() < st.renewed_ms + (int64_t)st.ttl_seconds * 1000 -
                        sl_session_lost_guard_ms(st.ttl_seconds);
}

/* Under o->mu. */
static entry *find_entry(sl_ownership *o, const char *partition) {
  return sl_map_get(&o->entries, partition);
}

static void put_or_abort(sl_map *m, const char *key, void *value) {
  if (sl_map_put(m, key, value, NULL) != SL_OK) sl_xmalloc(SIZE_MAX); /* aborts */
}

/* Under o->mu. Takes the entry out of the table; the caller frees it. */
static entry *take_entry(sl_ownership *o, entry *e) {
  sl_map_remove(&o->entries, e->partition, NULL);
  sl_metrics_gauge_set(owned_gauge, (double)sl_map_len(&o->entries));
  return e;
}

static void free_entry(entry *e) {
  free(e->partition);
  free(e);
}

/* Under o->mu. */
static void add_entry(sl_ownership *o, const char *partition, uint64_t epoch, bool seen) {
  entry *e = sl_xcalloc(1, sizeof(*e));
  *e = (entry){.partition = sl_xstrdup(partition), .epoch = epoch, .state = ENTRY_OWNED,
               .seen = seen};
  put_or_abort(&o->entries, partition, e);
  sl_metrics_gauge_set(owned_gauge, (double)sl_map_len(&o->entries));
}

static void free_cached(void *v) {
  cached *c = v;
  free(c->broker_id);
  free(c->address);
  free(c);
}

/* Under o->mu. A fresh cache entry for partition, or NULL. */
static cached *find_cached(sl_ownership *o, const char *partition) {
  cached *c = sl_map_get(&o->cache, partition);
  return c != NULL && c->until_ms > sl_clock_mono_ms() ? c : NULL;
}

static void cache_forget(sl_ownership *o, const char *partition) {
  void *old = NULL;
  pthread_mutex_lock(&o->mu);
  sl_map_remove(&o->cache, partition, &old);
  pthread_mutex_unlock(&o->mu);
  if (old != NULL) free_cached(old);
}

static void cache_put(sl_ownership *o, const char *partition, const char *broker_id,
                      const char *address, uint64_t epoch) {
  cached *c = sl_xcalloc(1, sizeof(*c));
  int64_t now = sl_clock_mono_ms();
  *c = (cached){.broker_id = dup_or_empty(broker_id), .address = dup_or_empty(address),
                .epoch = epoch, .until_ms = now + o->cache_ms};
  pthread_mutex_lock(&o->mu);
  sl_map_iter it = SL_MAP_ITER_INIT;
  const char *key;
  void *v;
  while (sl_map_next(&o->cache, &it, &key, &v)) { /* prune what expired */
    if (((cached *)v)->until_ms <= now) {
      sl_map_remove(&o->cache, key, NULL);
      free_cached(v);
    }
  }
  void *old = NULL;
  if (sl_map_put(&o->cache, partition, c, &old) != SL_OK) sl_xmalloc(SIZE_MAX);
  pthread_mutex_unlock(&o->mu);
  if (old != NULL) free_cached(old);
}

static void post(sl_ownership *o, job *j) {
  pthread_mutex_lock(&o->mu);
  j->next = NULL;
  if (o->tail) o->tail->next = j;
  else o->head = j;
  o->tail = j;
  pthread_cond_broadcast(&o->cv);
  pthread_mutex_unlock(&o->mu);
}

static job *new_job(sl_ownership *o, job_kind kind, const char *partition) {
  job *j = sl_xcalloc(1, sizeof(*j));
  j->o = o;
  j->kind = kind;
  j->partition = partition ? sl_xstrdup(partition) : NULL;
  return j;
}

static void free_job(job *j) {
  free(j->partition);
  free(j);
}

static sl_rpc_call_opts call_opts(const sl_ownership *o) {
  return (sl_rpc_call_opts){.timeout_ms = o->rpc_timeout_ms};
}

/* Under o->mu. A channel to another broker, created on first use. */
static sl_rpc_channel *peer_channel_locked(sl_ownership *o, const char *address,
                                           sl_err *err) {
  for (peer *p = o->peers; p; p = p->next)
    if (strcmp(p->address, address) == 0) return p->ch;
  sl_rpc_channel_opts co = o->peer_tmpl;
  co.target = address;
  sl_rpc_channel *ch = NULL;
  if (sl_rpc_channel_create(&co, &ch, err) != SL_OK) return NULL;
  peer *p = sl_xcalloc(1, sizeof(*p));
  p->address = sl_xstrdup(address);
  p->ch = ch;
  p->next = o->peers;
  o->peers = p;
  return ch;
}

/* ---- finishing jobs ---- */

static void finish_resolve(job *j, sl_status st, const char *msg,
                           const sl_ownership_owner *owner,
                           sl_metrics_counter *outcome) {
  sl_metrics_counter_inc(st == SL_OK ? outcome : lookups_error);
  j->resolve_cb(st, msg, owner, j->arg);
  free_job(j);
}

static void resolve_local(job *j, uint64_t epoch, sl_metrics_counter *outcome) {
  sl_ownership *o = j->o;
  sl_ownership_owner ow = {j->partition, o->broker_id, o->address, epoch, true};
  finish_resolve(j, SL_OK, NULL, &ow, outcome);
}

static void resolve_remote(job *j, const char *broker_id, const char *address,
                           uint64_t epoch) {
  sl_ownership_owner ow = {j->partition, broker_id, address, epoch, false};
  finish_resolve(j, SL_OK, NULL, &ow, lookups_redirect);
}

static void finish_unload(sl_ownership_unload_cb cb, void *arg, sl_status st,
                          const char *msg, uint64_t epoch) {
  if (cb != NULL) cb(st, msg, epoch, arg);
}

static void cancel_job(job *j) {
  const char *msg = "broker stopping";
  if (j->kind == JOB_RESOLVE) finish_resolve(j, SL_ECANCELED, msg, NULL, NULL);
  else {
    finish_unload(j->unload_cb, j->arg, SL_ECANCELED, msg, 0);
    free_job(j);
  }
}

/* ---- session (invariant 2): common/session.h keeps it ---- */

/* Session thread: what the registration says about us. */
static void describe(void *arg, ProtobufCMessage *msg) {
  sl_ownership *o = arg;
  Sluice__V1__BrokerInfo *info = (Sluice__V1__BrokerInfo *)msg;
  info->version = o->version;
  info->start_time_ms = o->start_wall_ms;
  pthread_mutex_lock(&o->mu);
  info->owned_partitions = (uint32_t)sl_map_len(&o->entries);
  info->load_permille = o->load_permille;
  pthread_mutex_unlock(&o->mu);
}

/* A load change smaller than this is noise, not worth an UpdateNode. */
#define LOAD_REPORT_STEP 50

/* Session thread, at each keep-alive: brokers pick by the owned count and
 * the load (invariant 4), so re-report them when they moved. */
static bool changed(void *arg) {
  sl_ownership *o = arg;
  uint32_t load = sl_load_sample(&o->load);
  pthread_mutex_lock(&o->mu);
  o->load_permille = load;
  uint32_t was = o->reported_load;
  bool c = sl_map_len(&o->entries) != o->reported_owned ||
           (load > was ? load - was : was - load) >= LOAD_REPORT_STEP;
  pthread_mutex_unlock(&o->mu);
  return c;
}

static void reported(void *arg, const ProtobufCMessage *msg) {
  sl_ownership *o = arg;
  const Sluice__V1__BrokerInfo *info = (const Sluice__V1__BrokerInfo *)msg;
  pthread_mutex_lock(&o->mu);
  o->reported_owned = info->owned_partitions;
  o->reported_load = info->load_permille;
  pthread_mutex_unlock(&o->mu);
}

static void on_established(void *arg, const sl_session_event *ev) {
  sl_ownership *o = arg;
  pthread_mutex_lock(&o->mu);
  o->session_id = ev->session_id;
  pthread_mutex_unlock(&o->mu);
  sl_log(SL_LOG_INFO, "event=session_opened broker=%s generation=%" PRIu64
         " ttl_s=%u took_over=%d", o->broker_id, ev->generation, ev->ttl_seconds,
         (int)ev->took_over);
}

/* Session thread, before the lease can have lapsed: every partition leaves
 * the table at once and the holders hear it. */
static void on_lost(void *arg, const sl_session_event *ev) {
  sl_ownership *o = arg;
  pthread_mutex_lock(&o->mu);
  sl_map lost = o->entries;
  sl_map_init(&o->entries);
  size_t n = sl_map_len(&lost);
  o->session_id = 0;
  bool stopping = o->stopping;
  sl_metrics_gauge_set(owned_gauge, 0);
  pthread_mutex_unlock(&o->mu);
  sl_log(SL_LOG_WARN, "event=session_lost broker=%s generation=%" PRIu64
         " partitions=%zu reason=\"%s\"", o->broker_id, ev->generation, n,
         sl_status_str(ev->why));
  sl_map_iter it = SL_MAP_ITER_INIT;
  void *v;
  while (sl_map_next(&lost, &it, NULL, &v)) {
    entry *e = v;
    if (o->hooks.lost)
      o->hooks.lost(o->hooks.arg, e->partition, e->epoch,
                    "session with the metadata service lost");
    /* The lease is gone, so the partition is released as asked. */
    finish_unload(e->unload_cb, e->unload_arg, SL_OK, NULL, e->epoch);
    free_entry(e);
  }
  sl_map_release(&lost, NULL);
  /* A drain waiting for these is over; the ownership thread finishes it. */
  if (stopping) post(o, new_job(o, JOB_DRAIN, NULL));
}

/* Watch thread (owner_watch.h). A partition owned here whose owner key went
 * away, or moved to a later epoch, while our session holds: its topic was
 * deleted (or another broker took over a lease that lapsed on the server
 * first). Our own key for the epoch we hold must have been shown first: the
 * stream is in store order, so a DELETE before it belongs to an earlier
 * tenure (our own release before a re-acquire). */
static void watch_changed(void *arg, const char *partition, const char *broker_id,
                          uint64_t epoch) {
  sl_ownership *o = arg;
  pthread_mutex_lock(&o->mu);
  entry *e = find_entry(o, partition);
  entry *gone = NULL;
  acq_note *note = e == NULL ? sl_map_get(&o->acquiring, partition) : NULL;
  if (note != NULL) {
    bool mine = broker_id != NULL && strcmp(broker_id, o->broker_id) == 0;
    if (mine) {
      note->epoch = epoch;
      note->gone = false;
    } else if (note->epoch != 0 && (broker_id == NULL || epoch > note->epoch)) {
      note->gone = true;
    }
  }
  if (e != NULL && e->state == ENTRY_OWNED) {
    if (broker_id == NULL) {
      if (e->seen) gone = take_entry(o, e);
    } else if (strcmp(broker_id, o->broker_id) == 0 && epoch == e->epoch) {
      e->seen = true;
    } else if (epoch > e->epoch) {
      gone = take_entry(o, e);
    }
  }
  bool stopping = o->stopping;
  pthread_mutex_unlock(&o->mu);
  if (gone == NULL) return;
  sl_log(SL_LOG_WARN, "event=ownership_revoked partition=%s epoch=%" PRIu64
         " new_owner=%s new_epoch=%" PRIu64, partition, gone->epoch,
         broker_id != NULL ? broker_id : "none", epoch);
  if (o->hooks.lost)
    o->hooks.lost(o->hooks.arg, gone->partition, gone->epoch,
                  broker_id != NULL ? "another broker owns the partition now"
                                    : "the partition's ownership was revoked (topic deleted)");
  finish_unload(gone->unload_cb, gone->unload_arg, SL_OK, NULL, gone->epoch);
  free_entry(gone);
  if (stopping) post(o, new_job(o, JOB_DRAIN, NULL));
}

/* Watch thread: the current state follows, so our keys come again. */
static void watch_reset(void *arg) {
  sl_ownership *o = arg;
  pthread_mutex_lock(&o->mu);
  sl_map_iter it = SL_MAP_ITER_INIT;
  void *v;
  while (sl_map_next(&o->entries, &it, NULL, &v)) ((entry *)v)->seen = false;
  o->watch_synced = true;
  pthread_cond_broadcast(&o->cv);
  pthread_mutex_unlock(&o->mu);
}

/* Before the session opens, and so before anything is acquired: a key
 * created and deleted before the watch's first state would never be shown.
 * Bounded, since an unreachable metadata service delays the session too;
 * past the bound such a revocation is only noticed at the next write. */
static void await_watch(sl_ownership *o, int timeout_ms) {
  struct timespec dl = sl_clock_deadline(CLOCK_REALTIME, (int64_t)timeout_ms * 1000000);
  pthread_mutex_lock(&o->mu);
  while (!o->watch_synced && pthread_cond_timedwait(&o->cv, &o->mu, &dl) == 0) {
  }
  bool synced = o->watch_synced;
  pthread_mutex_unlock(&o->mu);
  if (!synced)
    sl_log(SL_LOG_WARN, "event=owner_watch_not_ready waited_ms=%d", timeout_ms);
}

/* ---- picking a broker (invariant 4) ---- */

static uint64_t spread_hash(const char *partition, const char *broker_id) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  for (const char *s = partition; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
  h = (h ^ '/') * 1099511628211ull;
  for (const char *s = broker_id; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
  return h;
}

/* Brokers within this margin of the least loaded count as equally loaded.
 * Reported counts lag by a keep-alive period, so a burst of lookups would
 * otherwise all pile onto the one broker that looked idlest. */
static bool near_least(const Sluice__V1__BrokerInfo *b, uint32_t min_owned,
                       uint32_t min_permille) {
  return b->owned_partitions <= min_owned + 1 + min_owned / 8 &&
         b->load_permille <= min_permille + 100;
}

static bool pickable(sl_ownership *o, const Sluice__V1__BrokerInfo *b, bool exclude_self) {
  return b->address != NULL && b->address[0] != '\0' &&
         !(exclude_self && strcmp(b->id, o->broker_id) == 0);
}

/* A live broker for partition among the least loaded, spread by a hash of
 * the partition name; NULL if none (or only this one when exclude_self). */
static const Sluice__V1__BrokerInfo *pick(sl_ownership *o,
                                          const Sluice__V1__ListBrokersResponse *l,
                                          const char *partition, bool exclude_self) {
  uint32_t min_owned = UINT32_MAX, min_permille = UINT32_MAX;
  for (size_t i = 0; i < l->n_brokers; i++) {
    const Sluice__V1__BrokerInfo *b = l->brokers[i];
    if (!pickable(o, b, exclude_self)) continue;
    if (b->owned_partitions < min_owned) min_owned = b->owned_partitions;
    if (b->load_permille < min_permille) min_permille = b->load_permille;
  }
  const Sluice__V1__BrokerInfo *best = NULL;
  uint64_t best_hash = 0;
  for (size_t i = 0; i < l->n_brokers; i++) {
    const Sluice__V1__BrokerInfo *b = l->brokers[i];
    if (!pickable(o, b, exclude_self) || !near_least(b, min_owned, min_permille)) continue;
    uint64_t h = spread_hash(partition, b->id);
    if (best == NULL || h < best_hash) {
      best = b;
      best_hash = h;
    }
  }
  return best;
}

static sl_status list_brokers(sl_ownership *o, Sluice__V1__ListBrokersResponse **out,
                              sl_err *err) {
  Sluice__V1__ListBrokersRequest req = SLUICE__V1__LIST_BROKERS_REQUEST__INIT;
  sl_rpc_call_opts co = call_opts(o);
  return sl_metadata_service_list_brokers(o->ch, &req, out, &co, err);
}

/* ---- resolve ---- */

static void acquire(sl_ownership *o, job *j);

static void forward_done(sl_status st, const char *details, ProtobufCMessage *resp,
                         void *arg) {
  job *j = arg;
  sl_ownership *o = j->o;
  Sluice__V1__LookupResponse *r = (Sluice__V1__LookupResponse *)resp;
  if (st == SL_OK && r->n_owners == 1) {
    const Sluice__V1__PartitionOwner *ow = r->owners[0];
    uint64_t epoch = 0;
    if (sl_ownership_owns(o, j->partition, &epoch)) {
      resolve_local(j, epoch, lookups_local);
    } else {
      cache_put(o, j->partition, ow->broker_id, ow->broker_address, ow->epoch);
      resolve_remote(j, ow->broker_id, ow->broker_address, ow->epoch);
    }
  } else {
    pthread_mutex_lock(&o->mu);
    bool stopped = o->stop;
    pthread_mutex_unlock(&o->mu);
    sl_log(SL_LOG_WARN, "event=lookup_forward_failed partition=%s status=\"%s\" "
           "error=\"%s\"", j->partition, sl_status_str(st), details ? details : "");
    if (stopped || st == SL_ENOTFOUND || st == SL_EINVAL) {
      finish_resolve(j, st == SL_OK ? SL_EINTERNAL : st, details, NULL, NULL);
    } else {
      /* The picked broker is gone or unhappy: take the partition here. */
      j->authoritative = true;
      post(o, j);
    }
  }
  if (resp != NULL) protobuf_c_message_free_unpacked(resp, NULL);
}

/* Asks the broker at address to take j's partition (authoritative Lookup). */
static void forward(sl_ownership *o, job *j, const char *address) {
  sl_err err = SL_ERR_INIT;
  pthread_mutex_lock(&o->mu);
  sl_rpc_channel *ch = peer_channel_locked(o, address, &err);
  pthread_mutex_unlock(&o->mu);
  Sluice__V1__LookupRequest req = SLUICE__V1__LOOKUP_REQUEST__INIT;
  req.topic = j->partition;
  req.authoritative = true;
  sl_rpc_call_opts co = call_opts(o);
  if (ch == NULL ||
      sl_broker_service_lookup_async(ch, &req, &co, forward_done, j, &err) != SL_OK) {
    sl_log(SL_LOG_WARN, "event=lookup_forward_failed partition=%s to=%s error=\"%s\"",
           j->partition, address, sl_err_msg(&err, SL_EUNAVAIL));
    acquire(o, j);
  }
}

static void acquire(sl_ownership *o, job *j) {
  pthread_mutex_lock(&o->mu);
  bool stopping = o->stopping;
  int64_t session = o->session_id;
  pthread_mutex_unlock(&o->mu);
  if (stopping) {
    finish_resolve(j, SL_EUNAVAIL, "broker stopping", NULL, NULL);
    return;
  }
  Sluice__V1__BrokerInfo info = SLUICE__V1__BROKER_INFO__INIT;
  info.id = o->broker_id;
  info.address = o->address;
  Sluice__V1__AcquireOwnershipRequest req = SLUICE__V1__ACQUIRE_OWNERSHIP_REQUEST__INIT;
  req.partition = j->partition;
  req.session_id = session;
  req.broker = &info;
  Sluice__V1__AcquireOwnershipResponse *resp = NULL;
  sl_rpc_call_opts co = call_opts(o);
  sl_err err = SL_ERR_INIT;
  acq_note *note = sl_xcalloc(1, sizeof(*note));
  pthread_mutex_lock(&o->mu);
  put_or_abort(&o->acquiring, j->partition, note); /* one job per partition at a time */
  pthread_mutex_unlock(&o->mu);
  sl_status st = sl_metadata_service_acquire_ownership(o->ch, &req, &resp, &co, &err);
  pthread_mutex_lock(&o->mu);
  sl_map_remove(&o->acquiring, j->partition, NULL);
  pthread_mutex_unlock(&o->mu);
  if (st != SL_OK) {
    free(note);
    finish_resolve(j, st, sl_err_msg(&err, st), NULL, NULL);
    return;
  }
  const Sluice__V1__OwnerInfo *ow = resp->owner;
  if (resp->acquired && ow != NULL) {
    bool seen = note->epoch == ow->epoch;
    bool revoked = seen && note->gone;
    pthread_mutex_lock(&o->mu);
    /* A session lost meanwhile makes the answer worthless (invariant 1). */
    bool valid = o->session_id == session && !o->stopping && lease_fresh_locked(o);
    if (valid && !revoked && find_entry(o, j->partition) == NULL)
      add_entry(o, j->partition, ow->epoch, seen);
    pthread_mutex_unlock(&o->mu);
    if (!valid) {
      finish_resolve(j, SL_EUNAVAIL, "session lost while acquiring", NULL, NULL);
    } else if (revoked) {
      sl_log(SL_LOG_WARN, "event=ownership_revoked partition=%s epoch=%" PRIu64
             " while=acquiring", j->partition, ow->epoch);
      finish_resolve(j, SL_EUNAVAIL, "ownership revoked as it was taken (topic deleted?); "
                     "look it up again", NULL, NULL);
    } else {
      sl_log(SL_LOG_INFO, "event=ownership_acquired partition=%s epoch=%" PRIu64,
             j->partition, ow->epoch);
      resolve_local(j, ow->epoch, lookups_acquired);
    }
  } else if (ow != NULL) {
    cache_put(o, j->partition, ow->broker_id, ow->broker_address, ow->epoch);
    resolve_remote(j, ow->broker_id, ow->broker_address, ow->epoch);
  } else {
    finish_resolve(j, SL_EINTERNAL, "AcquireOwnership answered no owner", NULL, NULL);
  }
  free(note);
  protobuf_c_message_free_unpacked(&resp->base, NULL);
}

static void run_resolve(sl_ownership *o, job *j) {
  pthread_mutex_lock(&o->mu);
  int64_t session = o->session_id;
  bool stopping = o->stopping;
  entry *e = find_entry(o, j->partition);
  if (e != NULL) {
    entry_state state = e->state;
    uint64_t epoch = e->epoch;
    bool fresh = lease_fresh_locked(o);
    pthread_mutex_unlock(&o->mu);
    if (!fresh)
      finish_resolve(j, SL_EUNAVAIL, "this broker's session is expiring; look it up again",
                     NULL, NULL);
    else if (state == ENTRY_OWNED)
      resolve_local(j, epoch, lookups_local);
    else
      finish_resolve(j, SL_EUNAVAIL, "partition is being unloaded; look it up again",
                     NULL, NULL);
    return;
  }
  cached *c = find_cached(o, j->partition);
  if (c != NULL && !j->authoritative) {
    char *id = sl_xstrdup(c->broker_id), *addr = sl_xstrdup(c->address);
    uint64_t epoch = c->epoch;
    pthread_mutex_unlock(&o->mu);
    resolve_remote(j, id, addr, epoch);
    free(id);
    free(addr);
    return;
  }
  pthread_mutex_unlock(&o->mu);
  if (session == 0) {
    finish_resolve(j, SL_EUNAVAIL, "broker has no session with the metadata service yet",
                   NULL, NULL);
    return;
  }
  sl_err err = SL_ERR_INIT;
  Sluice__V1__LookupOwnerRequest lreq = SLUICE__V1__LOOKUP_OWNER_REQUEST__INIT;
  lreq.partition = j->partition;
  Sluice__V1__OwnerInfo *owner = NULL;
  sl_rpc_call_opts co = call_opts(o);
  sl_status st = sl_metadata_service_lookup_owner(o->ch, &lreq, &owner, &co, &err);
  if (st == SL_OK) {
    if (strcmp(owner->broker_id, o->broker_id) == 0) {
      /* Ours (e.g. dropped by its holder): acquiring again under the same
       * session is idempotent, and a session of ours taken over is gone. */
      protobuf_c_message_free_unpacked(&owner->base, NULL);
      acquire(o, j);
      return;
    }
    cache_put(o, j->partition, owner->broker_id, owner->broker_address, owner->epoch);
    resolve_remote(j, owner->broker_id, owner->broker_address, owner->epoch);
    protobuf_c_message_free_unpacked(&owner->base, NULL);
    return;
  }
  if (st != SL_ENOTFOUND) {
    finish_resolve(j, st, sl_err_msg(&err, st), NULL, NULL);
    return;
  }
  if (j->authoritative) {
    acquire(o, j);
    return;
  }
  Sluice__V1__ListBrokersResponse *l = NULL;
  st = list_brokers(o, &l, &err);
  if (st != SL_OK) {
    finish_resolve(j, st, sl_err_msg(&err, st), NULL, NULL);
    return;
  }
  const Sluice__V1__BrokerInfo *b = pick(o, l, j->partition, stopping);
  if (b == NULL && stopping)
    finish_resolve(j, SL_EUNAVAIL, "broker stopping and no other broker is live", NULL,
                   NULL);
  else if (b == NULL || strcmp(b->id, o->broker_id) == 0)
    acquire(o, j);
  else
    forward(o, j, b->address);
  protobuf_c_message_free_unpacked(&l->base, NULL);
}

/* ---- unload and release ---- */

static void unload_forward_done(sl_status st, const char *details,
                                ProtobufCMessage *resp, void *arg) {
  job *j = arg;
  uint64_t epoch = st == SL_OK ? ((Sluice__V1__UnloadResponse *)resp)->released_epoch : 0;
  cache_forget(j->o, j->partition);
  finish_unload(j->unload_cb, j->arg, st, details, epoch);
  if (resp != NULL) protobuf_c_message_free_unpacked(resp, NULL);
  free_job(j);
}

static void begin_unload(sl_ownership *o, const char *partition, uint64_t epoch) {
  if (o->hooks.unload) o->hooks.unload(o->hooks.arg, partition, epoch);
  else sl_ownership_unloaded(o, partition);
}

static void run_unload(sl_ownership *o, job *j) {
  pthread_mutex_lock(&o->mu);
  entry *e = find_entry(o, j->partition);
  if (e != NULL && e->state == ENTRY_OWNED) {
    e->state = ENTRY_UNLOADING;
    e->unload_cb = j->unload_cb;
    e->unload_arg = j->arg;
    e->unload_start_ms = sl_clock_mono_ms();
    uint64_t epoch = e->epoch;
    pthread_mutex_unlock(&o->mu);
    sl_log(SL_LOG_INFO, "event=unloading partition=%s epoch=%" PRIu64, j->partition, epoch);
    begin_unload(o, j->partition, epoch);
    free_job(j);
    return;
  }
  pthread_mutex_unlock(&o->mu);
  if (e != NULL) {
    finish_unload(j->unload_cb, j->arg, SL_EBUSY, "partition is being unloaded already", 0);
    free_job(j);
    return;
  }
  Sluice__V1__LookupOwnerRequest lreq = SLUICE__V1__LOOKUP_OWNER_REQUEST__INIT;
  lreq.partition = j->partition;
  Sluice__V1__OwnerInfo *owner = NULL;
  sl_rpc_call_opts co = call_opts(o);
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_metadata_service_lookup_owner(o->ch, &lreq, &owner, &co, &err);
  if (st == SL_ENOTFOUND) {
    finish_unload(j->unload_cb, j->arg, SL_OK, NULL, 0);
    free_job(j);
    return;
  }
  if (st != SL_OK || strcmp(owner->broker_id, o->broker_id) == 0) {
    if (st == SL_OK) /* dropped by its holder: nothing left to unload here */
      st = sl_err_set(&err, SL_EUNAVAIL, "partition %s: owned by this broker but not "
                      "served; look it up again", j->partition);
    finish_unload(j->unload_cb, j->arg, st, sl_err_msg(&err, st), 0);
    if (owner) protobuf_c_message_free_unpacked(&owner->base, NULL);
    free_job(j);
    return;
  }
  pthread_mutex_lock(&o->mu);
  sl_rpc_channel *ch = peer_channel_locked(o, owner->broker_address, &err);
  pthread_mutex_unlock(&o->mu);
  Sluice__V1__UnloadRequest ureq = SLUICE__V1__UNLOAD_REQUEST__INIT;
  ureq.topic = j->partition;
  st = ch == NULL ? SL_EUNAVAIL
                  : sl_broker_service_unload_async(ch, &ureq, &co, unload_forward_done, j,
                                                   &err);
  protobuf_c_message_free_unpacked(&owner->base, NULL);
  if (st != SL_OK) {
    finish_unload(j->unload_cb, j->arg, st, sl_err_msg(&err, st), 0);
    free_job(j);
  }
}

/* The unload that asked for the release answers once the partition has been
 * offered to another broker, so that its caller sees it moved. */
typedef struct handoff {
  sl_ownership_unload_cb cb;
  void *arg;
  uint64_t epoch;
  int64_t start_ms;
} handoff;

static void handoff_done(sl_status st, const char *msg, const sl_ownership_owner *owner,
                         void *arg) {
  handoff *h = arg;
  if (st == SL_OK)
    sl_log(SL_LOG_INFO, "event=partition_moved partition=%s to=%s epoch=%" PRIu64
           " ms=%" PRId64, owner->partition, owner->broker_id, owner->epoch,
           sl_clock_mono_ms() - h->start_ms);
  else
    sl_log(SL_LOG_WARN, "event=handoff_failed status=\"%s\" error=\"%s\"",
           sl_status_str(st), msg ? msg : "");
  finish_unload(h->cb, h->arg, SL_OK, NULL, h->epoch);
  free(h);
}

static void finish_drain_if_empty(sl_ownership *o) {
  pthread_mutex_lock(&o->mu);
  /* Whoever takes the session out closes it: two workers may get here. */
  bool done = o->stopping && !o->drained && sl_map_len(&o->entries) == 0 &&
              o->releasing == 0 && o->session != NULL;
  sl_session *sess = done ? o->session : NULL;
  if (done) o->session = NULL;
  pthread_mutex_unlock(&o->mu);
  if (!done) return;
  /* CloseSession: this broker's registration goes at once. */
  sl_session_stop(sess);
  pthread_mutex_lock(&o->mu);
  o->session_id = 0;
  o->drained = true;
  pthread_cond_broadcast(&o->cv);
  pthread_mutex_unlock(&o->mu);
}

/* Channel thread: ReleaseOwnership answered. Partitions are released in
 * parallel, so a drain of many takes about one round trip. */
static void on_released(sl_status st, const char *details, ProtobufCMessage *resp,
                        void *arg) {
  job *j = arg;
  sl_ownership *o = j->o;
  if (resp != NULL) protobuf_c_message_free_unpacked(resp, NULL);
  sl_log(st == SL_OK ? SL_LOG_INFO : SL_LOG_WARN,
         "event=ownership_released partition=%s epoch=%" PRIu64 " ms=%" PRId64
         " status=\"%s\"", j->partition, j->epoch, sl_clock_mono_ms() - j->start_ms,
         sl_status_str(st));
  pthread_mutex_lock(&o->mu);
  o->releasing--;
  bool stopping = o->stopping, stopped = o->stop;
  pthread_mutex_unlock(&o->mu);
  if (st == SL_OK && j->unload_cb != NULL && !stopping && !stopped) {
    j->kind = JOB_HANDOFF;
    post(o, j);
    return;
  }
  finish_unload(j->unload_cb, j->arg, st, details, j->epoch);
  free_job(j);
  if (stopping && !stopped) post(o, new_job(o, JOB_DRAIN, NULL));
}

static void run_release(sl_ownership *o, job *j) {
  pthread_mutex_lock(&o->mu);
  entry *e = find_entry(o, j->partition);
  if (e == NULL || e->state != ENTRY_UNLOADING) { /* lost or dropped meanwhile */
    pthread_mutex_unlock(&o->mu);
    free_job(j);
    return;
  }
  entry *gone = take_entry(o, e);
  int64_t session = o->session_id;
  o->releasing++;
  pthread_mutex_unlock(&o->mu);
  j->unload_cb = gone->unload_cb;
  j->arg = gone->unload_arg;
  j->epoch = gone->epoch;
  j->start_ms = gone->unload_start_ms;
  free_entry(gone);
  Sluice__V1__ReleaseOwnershipRequest req = SLUICE__V1__RELEASE_OWNERSHIP_REQUEST__INIT;
  req.partition = j->partition;
  req.session_id = session;
  req.epoch = j->epoch;
  sl_rpc_call_opts co = call_opts(o);
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_metadata_service_release_ownership_async(o->ch, &req, &co, on_released,
                                                             j, &err);
  if (st != SL_OK) on_released(st, sl_err_msg(&err, st), NULL, j);
}

/* Offers a partition just unloaded to another live broker, so that it moves
 * at once; the Unload answers once that is done (handoff_done). */
static void run_handoff(sl_ownership *o, job *j) {
  Sluice__V1__ListBrokersResponse *l = NULL;
  const Sluice__V1__BrokerInfo *b = NULL;
  sl_err err = SL_ERR_INIT;
  if (list_brokers(o, &l, &err) == SL_OK) b = pick(o, l, j->partition, true);
  if (b != NULL) {
    handoff *h = sl_xcalloc(1, sizeof(*h));
    *h = (handoff){j->unload_cb, j->arg, j->epoch, j->start_ms};
    job *next = new_job(o, JOB_RESOLVE, j->partition);
    next->authoritative = true;
    next->resolve_cb = handoff_done;
    next->arg = h;
    forward(o, next, b->address);
  } else {
    finish_unload(j->unload_cb, j->arg, SL_OK, NULL, j->epoch);
  }
  if (l) protobuf_c_message_free_unpacked(&l->base, NULL);
  free_job(j);
}

static void run_drain(sl_ownership *o, job *j) {
  pthread_mutex_lock(&o->mu);
  size_t n = 0;
  entry *todo = sl_xcalloc(sl_map_len(&o->entries) + 1, sizeof(*todo));
  sl_map_iter it = SL_MAP_ITER_INIT;
  void *v;
  while (sl_map_next(&o->entries, &it, NULL, &v)) {
    entry *e = v;
    if (e->state != ENTRY_OWNED) continue;
    e->state = ENTRY_UNLOADING;
    e->unload_start_ms = sl_clock_mono_ms();
    todo[n++] = (entry){.partition = sl_xstrdup(e->partition), .epoch = e->epoch};
  }
  pthread_mutex_unlock(&o->mu);
  sl_log(SL_LOG_INFO, "event=draining broker=%s partitions=%zu", o->broker_id, n);
  for (size_t i = 0; i < n; i++) {
    begin_unload(o, todo[i].partition, todo[i].epoch);
    free(todo[i].partition);
  }
  free(todo);
  free_job(j);
  finish_drain_if_empty(o);
}

/* ---- the thread ---- */

/* Ends every queued job with SL_ECANCELED (the thread has stopped). */
static void cancel_queued(sl_ownership *o) {
  pthread_mutex_lock(&o->mu);
  job *left = o->head;
  o->head = o->tail = NULL;
  pthread_mutex_unlock(&o->mu);
  while (left != NULL) {
    job *next = left->next;
    cancel_job(left);
    left = next;
  }
}

/* Under o->mu. True if a worker runs a job of `partition`. */
static bool partition_busy_locked(sl_ownership *o, const char *partition) {
  for (size_t i = 0; i < o->n_workers; i++)
    if (o->workers[i].busy != NULL && strcmp(o->workers[i].busy, partition) == 0)
      return true;
  return false;
}

/* Under o->mu. Takes the oldest job whose partition no worker is on, so the
 * jobs of one partition still run one at a time, in order; NULL if none. */
static job *next_job_locked(sl_ownership *o) {
  job *prev = NULL;
  for (job *j = o->head; j != NULL; prev = j, j = j->next) {
    if (j->partition != NULL && partition_busy_locked(o, j->partition)) continue;
    if (prev) prev->next = j->next;
    else o->head = j->next;
    if (o->tail == j) o->tail = prev;
    return j;
  }
  return NULL;
}

static void *run(void *arg) {
  worker *w = arg;
  (void)pthread_setname_np(pthread_self(), "ownership");
  sl_ownership *o = w->o;
  pthread_mutex_lock(&o->mu);
  for (;;) {
    job *j = NULL;
    while (!o->stop && (j = next_job_locked(o)) == NULL) pthread_cond_wait(&o->cv, &o->mu);
    if (o->stop) {
      if (j != NULL) { /* back to the queue: cancel_queued ends it */
        j->next = o->head;
        o->head = j;
        if (o->tail == NULL) o->tail = j;
      }
      break;
    }
    w->busy = j->partition != NULL ? sl_xstrdup(j->partition) : NULL;
    pthread_mutex_unlock(&o->mu);
    switch (j->kind) {
      case JOB_RESOLVE: run_resolve(o, j); break;
      case JOB_UNLOAD: run_unload(o, j); break;
      case JOB_RELEASE: run_release(o, j); break;
      case JOB_HANDOFF: run_handoff(o, j); break;
      case JOB_DRAIN: run_drain(o, j); break;
    }
    pthread_mutex_lock(&o->mu);
    free(w->busy);
    w->busy = NULL;
    pthread_cond_broadcast(&o->cv); /* its partition's next job may run now */
  }
  pthread_mutex_unlock(&o->mu);
  cancel_queued(o);
  return NULL;
}

/* Stops and joins every worker started. */
static void join_workers(sl_ownership *o) {
  pthread_mutex_lock(&o->mu);
  o->stop = true;
  pthread_cond_broadcast(&o->cv);
  pthread_mutex_unlock(&o->mu);
  for (size_t i = 0; i < o->n_workers; i++) pthread_join(o->workers[i].thread, NULL);
}

/* ---- public ---- */

static void register_metrics(void) {
  sl_metrics *reg = sl_metrics_default();
  sl_metrics_register_gauge(reg, "sluice_broker_owned_partitions",
                            "partitions this broker owns", NULL, &owned_gauge, NULL);
  static const char *const help = "Lookup and ownership resolutions by outcome";
  static const char *const local[] = {"outcome", "local", NULL};
  static const char *const redirect[] = {"outcome", "redirect", NULL};
  static const char *const acquired[] = {"outcome", "acquired", NULL};
  static const char *const error[] = {"outcome", "error", NULL};
  const char *name = "sluice_broker_lookups_total";
  sl_metrics_register_counter(reg, name, help, local, &lookups_local, NULL);
  sl_metrics_register_counter(reg, name, help, redirect, &lookups_redirect, NULL);
  sl_metrics_register_counter(reg, name, help, acquired, &lookups_acquired, NULL);
  sl_metrics_register_counter(reg, name, help, error, &lookups_error, NULL);
}

sl_status sl_ownership_create(const sl_ownership_opts *opts, sl_ownership **out,
                              sl_err *err) {
  if (opts->target == NULL || opts->broker_id == NULL || opts->address == NULL)
    return sl_err_set(err, SL_EINVAL, "ownership: target, broker id and address are required");
  register_metrics();
  sl_ownership *o = sl_xcalloc(1, sizeof(*o));
  o->target = sl_xstrdup(opts->target);
  o->broker_id = sl_xstrdup(opts->broker_id);
  o->address = sl_xstrdup(opts->address);
  o->version = dup_or_empty(opts->version);
  o->rpc_timeout_ms = opts->rpc_timeout_ms > 0 ? opts->rpc_timeout_ms : 1000;
  o->cache_ms = opts->cache_ms > 0 ? opts->cache_ms : 1000;
  o->hooks = opts->hooks;
  o->start_wall_ms = sl_clock_wall_ms();
  sl_load_sampler_init(&o->load);
  pthread_mutex_init(&o->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_cond_init(&o->cv, &ca);
  pthread_condattr_destroy(&ca);
  if (opts->metadata_channel != NULL) o->md_tmpl = *opts->metadata_channel;
  if (opts->broker_channel != NULL) o->peer_tmpl = *opts->broker_channel;
  sl_rpc_channel_opts co = o->md_tmpl;
  co.target = o->target;
  sl_status st = sl_rpc_channel_create(&co, &o->ch, err);
  if (st != SL_OK) goto out_free;
  for (; o->n_workers < WORKERS; o->n_workers++) {
    worker *w = &o->workers[o->n_workers];
    w->o = o;
    if (pthread_create(&w->thread, NULL, run, w) != 0) {
      st = sl_err_set(err, SL_EINTERNAL, "ownership: cannot start its threads");
      goto out_thread;
    }
  }
  sl_session_opts so = {
      .target = o->target,
      .kind = SLUICE__V1__NODE_KIND__NODE_KIND_BROKER,
      .node_id = o->broker_id,
      .address = o->address,
      .tls_root_pem = o->md_tmpl.tls_root_pem,
      .tls_cert_pem = o->md_tmpl.tls_cert_pem,
      .tls_key_pem = o->md_tmpl.tls_key_pem,
      .authorization = o->md_tmpl.authorization,
      .ttl_seconds = opts->ttl_seconds,
      .rpc_timeout_ms = o->rpc_timeout_ms,
      .describe = describe,
      .changed = changed,
      .reported = reported,
      .on_established = on_established,
      .on_lost = on_lost,
      .arg = o,
  };
  sl_owner_watch_opts wo = {.metadata = o->ch, .changed = watch_changed,
                             .reset = watch_reset, .arg = o};
  st = sl_owner_watch_start(&wo, &o->watch, err);
  if (st != SL_OK) goto out_thread;
  await_watch(o, 2 * o->rpc_timeout_ms);
  sl_session *sess = NULL;
  st = sl_session_start(&so, &sess, err);
  if (st != SL_OK) goto out_watch;
  pthread_mutex_lock(&o->mu);
  o->session = sess;
  pthread_mutex_unlock(&o->mu);
  *out = o;
  return SL_OK;
out_watch:
  sl_owner_watch_stop(o->watch);
out_thread:
  join_workers(o);
  sl_rpc_channel_destroy(o->ch);
out_free:
  pthread_cond_destroy(&o->cv);
  pthread_mutex_destroy(&o->mu);
  free(o->target);
  free(o->broker_id);
  free(o->address);
  free(o->version);
  free(o);
  return st;
}

void sl_ownership_stop(sl_ownership *o, int timeout_ms) {
  pthread_mutex_lock(&o->mu);
  bool first = !o->stopping;
  o->stopping = true;
  pthread_mutex_unlock(&o->mu);
  if (first) post(o, new_job(o, JOB_DRAIN, NULL));
  int64_t deadline = sl_clock_mono_ms() + timeout_ms;
  pthread_mutex_lock(&o->mu);
  while (!o->drained && sl_clock_mono_ms() < deadline) {
    struct timespec ts = sl_clock_deadline(CLOCK_REALTIME, 20 * 1000000);
    pthread_cond_timedwait(&o->cv, &o->mu, &ts);
  }
  bool drained = o->drained;
  size_t left = sl_map_len(&o->entries);
  pthread_mutex_unlock(&o->mu);
  if (!drained)
    sl_log(SL_LOG_WARN, "event=drain_incomplete broker=%s partitions=%zu timeout_ms=%d",
           o->broker_id, left, timeout_ms);
}

void sl_ownership_destroy(sl_ownership *o) {
  if (o == NULL) return;
  sl_owner_watch_stop(o->watch); /* first: its callback posts jobs */
  join_workers(o);
  sl_session_stop(o->session); /* CloseSession, unless the drain did */
  /* Forwarded calls still in flight end here, their callbacks with
   * SL_ECANCELED (they see o->stop and finish their jobs themselves). */
  for (peer *p = o->peers; p != NULL;) {
    peer *next = p->next;
    sl_rpc_channel_destroy(p->ch);
    free(p->address);
    free(p);
    p = next;
  }
  sl_map_iter it = SL_MAP_ITER_INIT;
  void *v;
  while (sl_map_next(&o->entries, &it, NULL, &v)) {
    entry *e = v;
    finish_unload(e->unload_cb, e->unload_arg, SL_ECANCELED, "broker stopping", 0);
    free_entry(e);
  }
  sl_map_release(&o->entries, NULL);
  sl_map_release(&o->cache, free_cached);
  sl_map_release(&o->acquiring, NULL); /* notes belong to their jobs */
  sl_metrics_gauge_set(owned_gauge, 0);
  sl_rpc_channel_destroy(o->ch);
  cancel_queued(o); /* what callbacks of the calls just ended posted */
  pthread_cond_destroy(&o->cv);
  pthread_mutex_destroy(&o->mu);
  free(o->target);
  free(o->broker_id);
  free(o->address);
  free(o->version);
  free(o);
}

void sl_ownership_resolve(sl_ownership *o, const char *partition, bool authoritative,
                          sl_ownership_resolve_cb cb, void *arg) {
  job *j = new_job(o, JOB_RESOLVE, partition);
  j->authoritative = authoritative;
  j->resolve_cb = cb;
  j->arg = arg;
  post(o, j);
}

bool sl_ownership_owns(sl_ownership *o, const char *partition, uint64_t *epoch) {
  pthread_mutex_lock(&o->mu);
  entry *e = find_entry(o, partition);
  bool owned = e != NULL && e->state == ENTRY_OWNED && lease_fresh_locked(o);
  if (owned && epoch != NULL) *epoch = e->epoch;
  pthread_mutex_unlock(&o->mu);
  return owned;
}

void sl_ownership_unload(sl_ownership *o, const char *partition,
                         sl_ownership_unload_cb cb, void *arg) {
  job *j = new_job(o, JOB_UNLOAD, partition);
  j->unload_cb = cb;
  j->arg = arg;
  post(o, j);
}

void sl_ownership_unloaded(sl_ownership *o, const char *partition) {
  post(o, new_job(o, JOB_RELEASE, partition));
}

void sl_ownership_drop(sl_ownership *o, const char *partition, uint64_t epoch) {
  pthread_mutex_lock(&o->mu);
  entry *e = find_entry(o, partition);
  entry *gone = e != NULL && e->epoch == epoch ? take_entry(o, e) : NULL;
  bool stopping = o->stopping;
  pthread_mutex_unlock(&o->mu);
  if (gone == NULL) return;
  sl_log(SL_LOG_WARN, "event=ownership_dropped partition=%s epoch=%" PRIu64, partition,
         epoch);
  finish_unload(gone->unload_cb, gone->unload_arg, SL_OK, NULL, gone->epoch);
  free_entry(gone);
  /* The drain may have waited for this one; the thread checks (and closes
   * the session) so that this call never blocks. */
  if (stopping) post(o, new_job(o, JOB_DRAIN, NULL));
}

uint32_t sl_ownership_count(sl_ownership *o) {
  pthread_mutex_lock(&o->mu);
  uint32_t n = (uint32_t)sl_map_len(&o->entries);
  pthread_mutex_unlock(&o->mu);
  return n;
}

int64_t sl_ownership_session(sl_ownership *o) {
  pthread_mutex_lock(&o->mu);
  int64_t id = o->session_id;
  pthread_mutex_unlock(&o->mu);
  return id;
}
