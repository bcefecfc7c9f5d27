/* Design note: see ownership.h. */
#include "broker/ownership.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "broker.slrpc.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/rpc_client.h"
#include "metadata.slrpc.h"

typedef enum entry_state { ENTRY_OWNED, ENTRY_UNLOADING } entry_state;

/* One partition this broker owns. */
typedef struct entry {
  char *partition;
  uint64_t epoch;
  entry_state state;
  sl_ownership_unload_cb unload_cb; /* Unload waiting for the release, or NULL */
  void *unload_arg;
  int64_t unload_start_ms;
} entry;

/* A partition owned by another broker, remembered until until_ms. */
typedef struct cached {
  char *partition, *broker_id, *address;
  uint64_t epoch;
  int64_t until_ms;
} cached;

typedef enum job_kind { JOB_RESOLVE, JOB_UNLOAD, JOB_RELEASE, JOB_DRAIN } job_kind;

typedef struct job {
  struct job *next;
  job_kind kind;
  sl_ownership *o;
  char *partition;
  bool authoritative;
  sl_ownership_resolve_cb resolve_cb;
  sl_ownership_unload_cb unload_cb;
  void *arg;
} job;

/* A channel to another broker, for forwarded Lookup and Unload calls. */
typedef struct peer {
  struct peer *next;
  char *address;
  sl_rpc_channel *ch;
} peer;

struct sl_ownership {
  char *target, *broker_id, *address, *version;
  uint32_t ttl_asked;
  int rpc_timeout_ms, cache_ms;
  sl_ownership_hooks hooks;
  int64_t start_wall_ms;
  sl_rpc_channel *ch;
  pthread_t thread;

  pthread_mutex_t mu;  /* guards everything down to the thread-only part */
  pthread_cond_t cv;   /* a job, stop, or the drain finished */
  bool stop;           /* the thread exits */
  bool stopping;       /* graceful stop under way (invariant 5) */
  bool drained;        /* graceful stop finished: released, session closed */
  job *head, *tail;
  entry *entries;
  size_t n_entries, cap_entries;
  cached *cache;
  size_t n_cache, cap_cache;
  peer *peers;
  int64_t session_id;  /* 0 = none */

  /* Ownership thread only. */
  uint32_t ttl_ms;
  int64_t last_ok_ms;  /* send time of the last keep-alive that succeeded */
  int64_t next_due_ms; /* next session step */
  int retry_ms;
  uint32_t reported_owned;
};

static sl_metrics_gauge *owned_gauge;
static sl_metrics_counter *lookups_local, *lookups_redirect, *lookups_acquired,
    *lookups_error;

/* ---- small helpers ---- */

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

static char *dup_or_empty(const char *s) { return sl_xstrdup(s ? s : ""); }

/* Under o->mu. */
static entry *find_entry(sl_ownership *o, const char *partition) {
  for (size_t i = 0; i < o->n_entries; i++)
    if (strcmp(o->entries[i].partition, partition) == 0) return &o->entries[i];
  return NULL;
}

/* Under o->mu. Takes the entry out (its partition string goes to the caller). */
static entry take_entry(sl_ownership *o, entry *e) {
  entry out = *e;
  *e = o->entries[--o->n_entries];
  sl_metrics_gauge_set(owned_gauge, (double)o->n_entries);
  return out;
}

/* Under o->mu. */
static void add_entry(sl_ownership *o, const char *partition, uint64_t epoch) {
  if (o->n_entries == o->cap_entries) {
    o->cap_entries = o->cap_entries ? 2 * o->cap_entries : 16;
    o->entries = realloc(o->entries, o->cap_entries * sizeof(*o->entries));
    if (o->entries == NULL) sl_xmalloc(SIZE_MAX); /* aborts with a message */
  }
  o->entries[o->n_entries++] = (entry){.partition = sl_xstrdup(partition),
                                       .epoch = epoch, .state = ENTRY_OWNED};
  sl_metrics_gauge_set(owned_gauge, (double)o->n_entries);
}

static void free_cached(cached *c) {
  free(c->partition);
  free(c->broker_id);
  free(c->address);
}

/* Under o->mu. A fresh cache entry for partition, or NULL. */
static cached *find_cached(sl_ownership *o, const char *partition) {
  int64_t now = now_ms();
  for (size_t i = 0; i < o->n_cache; i++) {
    cached *c = &o->cache[i];
    if (strcmp(c->partition, partition) == 0) return c->until_ms > now ? c : NULL;
  }
  return NULL;
}

static void cache_forget(sl_ownership *o, const char *partition) {
  pthread_mutex_lock(&o->mu);
  for (size_t i = 0; i < o->n_cache; i++) {
    if (strcmp(o->cache[i].partition, partition) == 0) {
      free_cached(&o->cache[i]);
      o->cache[i] = o->cache[--o->n_cache];
      break;
    }
  }
  pthread_mutex_unlock(&o->mu);
}

static void cache_put(sl_ownership *o, const char *partition, const char *broker_id,
                      const char *address, uint64_t epoch) {
  cache_forget(o, partition);
  pthread_mutex_lock(&o->mu);
  int64_t now = now_ms();
  for (size_t i = 0; i < o->n_cache;) { /* prune what expired */
    if (o->cache[i].until_ms <= now) {
      free_cached(&o->cache[i]);
      o->cache[i] = o->cache[--o->n_cache];
    } else {
      i++;
    }
  }
  if (o->n_cache == o->cap_cache) {
    o->cap_cache = o->cap_cache ? 2 * o->cap_cache : 16;
    o->cache = realloc(o->cache, o->cap_cache * sizeof(*o->cache));
    if (o->cache == NULL) sl_xmalloc(SIZE_MAX);
  }
  o->cache[o->n_cache++] = (cached){
      .partition = sl_xstrdup(partition), .broker_id = dup_or_empty(broker_id),
      .address = dup_or_empty(address), .epoch = epoch, .until_ms = now + o->cache_ms};
  pthread_mutex_unlock(&o->mu);
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
  sl_rpc_channel_opts co = {.target = address};
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

/* ---- session (invariant 2) ---- */

static void report_count(sl_ownership *o, Sluice__V1__BrokerInfo *info) {
  info->id = o->broker_id;
  info->address = o->address;
  info->version = o->version;
  info->start_time_ms = o->start_wall_ms;
  pthread_mutex_lock(&o->mu);
  info->owned_partitions = (uint32_t)o->n_entries;
  pthread_mutex_unlock(&o->mu);
}

/* Every partition leaves the table at once; the holders hear it. */
static void session_lost(sl_ownership *o, const char *why) {
  pthread_mutex_lock(&o->mu);
  entry *lost = o->entries;
  size_t n = o->n_entries;
  int64_t id = o->session_id;
  o->entries = NULL;
  o->n_entries = o->cap_entries = 0;
  o->session_id = 0;
  sl_metrics_gauge_set(owned_gauge, 0);
  pthread_mutex_unlock(&o->mu);
  sl_log(SL_LOG_WARN, "event=session_lost broker=%s session=%" PRId64
         " partitions=%zu reason=\"%s\"", o->broker_id, id, n, why);
  for (size_t i = 0; i < n; i++) {
    if (o->hooks.lost) o->hooks.lost(o->hooks.arg, lost[i].partition, lost[i].epoch);
    /* The lease is gone, so the partition is released as asked. */
    finish_unload(lost[i].unload_cb, lost[i].unload_arg, SL_OK, NULL, lost[i].epoch);
    free(lost[i].partition);
  }
  free(lost);
}

static void session_retry(sl_ownership *o, const char *op, sl_status st,
                          const sl_err *err) {
  sl_log(o->retry_ms >= 1600 ? SL_LOG_DEBUG : SL_LOG_WARN,
         "event=session_failed op=%s broker=%s status=\"%s\" error=\"%s\"", op,
         o->broker_id, sl_status_str(st), sl_err_msg(err, st));
  o->next_due_ms = now_ms() + o->retry_ms;
  o->retry_ms = o->retry_ms * 2 > 2000 ? 2000 : o->retry_ms * 2;
}

static void open_session(sl_ownership *o) {
  sl_err err = SL_ERR_INIT;
  Sluice__V1__BrokerInfo info = SLUICE__V1__BROKER_INFO__INIT;
  report_count(o, &info);
  Sluice__V1__OpenSessionRequest req = SLUICE__V1__OPEN_SESSION_REQUEST__INIT;
  req.kind = SLUICE__V1__NODE_KIND__NODE_KIND_BROKER;
  req.broker = &info;
  req.ttl_seconds = o->ttl_asked;
  Sluice__V1__OpenSessionResponse *resp = NULL;
  sl_rpc_call_opts co = call_opts(o);
  int64_t t0 = now_ms();
  sl_status st = sl_metadata_service_open_session(o->ch, &req, &resp, &co, &err);
  if (st != SL_OK) {
    session_retry(o, "open", st, &err);
    return;
  }
  o->ttl_ms = resp->ttl_seconds * 1000u;
  o->last_ok_ms = t0;
  o->next_due_ms = now_ms() + o->ttl_ms / 4;
  o->retry_ms = 100;
  o->reported_owned = info.owned_partitions;
  pthread_mutex_lock(&o->mu);
  o->session_id = resp->session_id;
  pthread_mutex_unlock(&o->mu);
  sl_log(SL_LOG_INFO, "event=session_opened broker=%s ttl_s=%u", o->broker_id,
         resp->ttl_seconds);
  protobuf_c_message_free_unpacked(&resp->base, NULL);
}

/* Reports the owned-partition count, which brokers pick by (invariant 4). */
static void update_node(sl_ownership *o) {
  Sluice__V1__BrokerInfo info = SLUICE__V1__BROKER_INFO__INIT;
  report_count(o, &info);
  if (info.owned_partitions == o->reported_owned) return;
  Sluice__V1__UpdateNodeRequest req = SLUICE__V1__UPDATE_NODE_REQUEST__INIT;
  req.session_id = sl_ownership_session(o);
  req.kind = SLUICE__V1__NODE_KIND__NODE_KIND_BROKER;
  req.broker = &info;
  Sluice__V1__UpdateNodeResponse *resp = NULL;
  sl_rpc_call_opts co = call_opts(o);
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_metadata_service_update_node(o->ch, &req, &resp, &co, &err);
  if (st == SL_OK) {
    o->reported_owned = info.owned_partitions;
    protobuf_c_message_free_unpacked(&resp->base, NULL);
  } else {
    sl_log(SL_LOG_DEBUG, "event=update_node_failed status=\"%s\" error=\"%s\"",
           sl_status_str(st), sl_err_msg(&err, st));
  }
}

static void keep_alive(sl_ownership *o) {
  Sluice__V1__KeepAliveRequest req = SLUICE__V1__KEEP_ALIVE_REQUEST__INIT;
  req.session_id = sl_ownership_session(o);
  Sluice__V1__KeepAliveResponse *resp = NULL;
  sl_rpc_call_opts co = call_opts(o);
  /* Never wait past the point where the session would count as lost. */
  int64_t left = o->last_ok_ms + o->ttl_ms - now_ms();
  if (left < co.timeout_ms) co.timeout_ms = left > 50 ? (int)left : 50;
  sl_err err = SL_ERR_INIT;
  int64_t t0 = now_ms();
  sl_status st = sl_metadata_service_keep_alive(o->ch, &req, &resp, &co, &err);
  if (st == SL_OK) {
    o->last_ok_ms = t0;
    o->next_due_ms = now_ms() + o->ttl_ms / 4;
    o->retry_ms = 100;
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    update_node(o);
  } else if (st == SL_ENOTFOUND) {
    session_lost(o, "lease expired");
    o->next_due_ms = now_ms();
  } else {
    session_retry(o, "keepalive", st, &err);
    if (o->next_due_ms > o->last_ok_ms + o->ttl_ms)
      o->next_due_ms = o->last_ok_ms + o->ttl_ms;
  }
}

static void close_session(sl_ownership *o) {
  int64_t id = sl_ownership_session(o);
  if (id == 0) return;
  Sluice__V1__CloseSessionRequest req = SLUICE__V1__CLOSE_SESSION_REQUEST__INIT;
  req.session_id = id;
  Sluice__V1__CloseSessionResponse *resp = NULL;
  sl_rpc_call_opts co = call_opts(o);
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_metadata_service_close_session(o->ch, &req, &resp, &co, &err);
  if (resp) protobuf_c_message_free_unpacked(&resp->base, NULL);
  pthread_mutex_lock(&o->mu);
  o->session_id = 0;
  pthread_mutex_unlock(&o->mu);
  sl_log(SL_LOG_INFO, "event=session_closed broker=%s status=\"%s\"", o->broker_id,
         sl_status_str(st));
}

static void finish_drain_if_empty(sl_ownership *o);

static void session_step(sl_ownership *o) {
  pthread_mutex_lock(&o->mu);
  bool closed = o->drained, stopping = o->stopping;
  pthread_mutex_unlock(&o->mu);
  if (closed) {
    o->next_due_ms = INT64_MAX;
    return;
  }
  if (sl_ownership_session(o) != 0 && now_ms() - o->last_ok_ms >= o->ttl_ms)
    session_lost(o, "no successful keep-alive within the TTL");
  if (sl_ownership_session(o) == 0) {
    if (!stopping) open_session(o);
  } else {
    keep_alive(o);
  }
  finish_drain_if_empty(o); /* a lost session ends a drain too */
}

/* ---- picking a broker (invariant 4) ---- */

static uint64_t spread_hash(const char *partition, const char *broker_id) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  for (const char *s = partition; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
  h = (h ^ '/') * 1099511628211ull;
  for (const char *s = broker_id; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
  return h;
}

/* The least loaded live broker for partition, or NULL (none, or only this
 * one when exclude_self). */
static const Sluice__V1__BrokerInfo *pick(sl_ownership *o,
                                          const Sluice__V1__ListBrokersResponse *l,
                                          const char *partition, bool exclude_self) {
  const Sluice__V1__BrokerInfo *best = NULL;
  uint64_t best_load = 0, best_hash = 0;
  for (size_t i = 0; i < l->n_brokers; i++) {
    const Sluice__V1__BrokerInfo *b = l->brokers[i];
    if (b->address == NULL || b->address[0] == '\0') continue;
    if (exclude_self && strcmp(b->id, o->broker_id) == 0) continue;
    uint64_t load = (uint64_t)b->owned_partitions * 1000u + b->load_permille;
    uint64_t h = spread_hash(partition, b->id);
    if (best == NULL || load < best_load || (load == best_load && h < best_hash)) {
      best = b;
      best_load = load;
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
  sl_status st = sl_metadata_service_acquire_ownership(o->ch, &req, &resp, &co, &err);
  if (st != SL_OK) {
    finish_resolve(j, st, sl_err_msg(&err, st), NULL, NULL);
    return;
  }
  const Sluice__V1__OwnerInfo *ow = resp->owner;
  if (resp->acquired && ow != NULL) {
    pthread_mutex_lock(&o->mu);
    /* A session lost meanwhile makes the answer worthless (invariant 1). */
    bool valid = o->session_id == session && !o->stopping;
    if (valid && find_entry(o, j->partition) == NULL)
      add_entry(o, j->partition, ow->epoch);
    pthread_mutex_unlock(&o->mu);
    if (!valid) {
      finish_resolve(j, SL_EUNAVAIL, "session lost while acquiring", NULL, NULL);
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
    pthread_mutex_unlock(&o->mu);
    if (state == ENTRY_OWNED) resolve_local(j, epoch, lookups_local);
    else finish_resolve(j, SL_EUNAVAIL, "partition is being unloaded; look it up again",
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
    if (owner->session_id == session) {
      /* Ours (e.g. dropped by its holder): acquiring again is idempotent. */
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
    e->unload_start_ms = now_ms();
    uint64_t epoch = e->epoch;
    pthread_mutex_unlock(&o->mu);
    sl_log(SL_LOG_INFO, "event=unloading partition=%s epoch=%" PRIu64, j->partition, epoch);
    begin_unload(o, j->partition, epoch);
    free_job(j);
    return;
  }
  int64_t session = o->session_id;
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
  if (st != SL_OK || strcmp(owner->broker_id, o->broker_id) == 0 ||
      owner->session_id == session) {
    if (st == SL_OK)
      st = sl_err_set(&err, SL_EUNAVAIL, "partition %s: held by an earlier session of "
                      "this broker, which lapses within its TTL", j->partition);
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
           now_ms() - h->start_ms);
  else
    sl_log(SL_LOG_WARN, "event=handoff_failed status=\"%s\" error=\"%s\"",
           sl_status_str(st), msg ? msg : "");
  finish_unload(h->cb, h->arg, SL_OK, NULL, h->epoch);
  free(h);
}

static void finish_drain_if_empty(sl_ownership *o) {
  pthread_mutex_lock(&o->mu);
  bool done = o->stopping && !o->drained && o->n_entries == 0;
  pthread_mutex_unlock(&o->mu);
  if (!done) return;
  close_session(o);
  pthread_mutex_lock(&o->mu);
  o->drained = true;
  pthread_cond_broadcast(&o->cv);
  pthread_mutex_unlock(&o->mu);
}

static void run_release(sl_ownership *o, job *j) {
  pthread_mutex_lock(&o->mu);
  entry *e = find_entry(o, j->partition);
  if (e == NULL || e->state != ENTRY_UNLOADING) { /* lost or dropped meanwhile */
    pthread_mutex_unlock(&o->mu);
    free_job(j);
    return;
  }
  entry gone = take_entry(o, e);
  int64_t session = o->session_id;
  bool stopping = o->stopping;
  pthread_mutex_unlock(&o->mu);
  Sluice__V1__ReleaseOwnershipRequest req = SLUICE__V1__RELEASE_OWNERSHIP_REQUEST__INIT;
  req.partition = gone.partition;
  req.session_id = session;
  req.epoch = gone.epoch;
  Sluice__V1__ReleaseOwnershipResponse *resp = NULL;
  sl_rpc_call_opts co = call_opts(o);
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_metadata_service_release_ownership(o->ch, &req, &resp, &co, &err);
  if (resp) protobuf_c_message_free_unpacked(&resp->base, NULL);
  sl_log(st == SL_OK ? SL_LOG_INFO : SL_LOG_WARN,
         "event=ownership_released partition=%s epoch=%" PRIu64 " ms=%" PRId64
         " status=\"%s\"", gone.partition, gone.epoch, now_ms() - gone.unload_start_ms,
         sl_status_str(st));
  Sluice__V1__ListBrokersResponse *l = NULL;
  const Sluice__V1__BrokerInfo *b = NULL;
  if (st == SL_OK && gone.unload_cb != NULL && !stopping &&
      list_brokers(o, &l, &err) == SL_OK)
    b = pick(o, l, gone.partition, true);
  if (b != NULL) {
    handoff *h = sl_xcalloc(1, sizeof(*h));
    *h = (handoff){gone.unload_cb, gone.unload_arg, gone.epoch, gone.unload_start_ms};
    job *next = new_job(o, JOB_RESOLVE, gone.partition);
    next->authoritative = true;
    next->resolve_cb = handoff_done;
    next->arg = h;
    forward(o, next, b->address);
  } else {
    finish_unload(gone.unload_cb, gone.unload_arg, st, sl_err_msg(&err, st), gone.epoch);
  }
  if (l) protobuf_c_message_free_unpacked(&l->base, NULL);
  free(gone.partition);
  free_job(j);
  finish_drain_if_empty(o);
}

static void run_drain(sl_ownership *o, job *j) {
  pthread_mutex_lock(&o->mu);
  size_t n = 0;
  entry *todo = sl_xcalloc(o->n_entries + 1, sizeof(*todo));
  for (size_t i = 0; i < o->n_entries; i++) {
    entry *e = &o->entries[i];
    if (e->state != ENTRY_OWNED) continue;
    e->state = ENTRY_UNLOADING;
    e->unload_start_ms = now_ms();
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

static void *run(void *arg) {
  sl_ownership *o = arg;
  pthread_mutex_lock(&o->mu);
  for (;;) {
    while (!o->stop && o->head == NULL) {
      int64_t left = o->next_due_ms - now_ms();
      if (left <= 0) break;
      if (left > 60000) left = 60000;
      struct timespec ts;
      clock_gettime(CLOCK_REALTIME, &ts);
      ts.tv_sec += left / 1000;
      ts.tv_nsec += (left % 1000) * 1000000;
      if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
      }
      pthread_cond_timedwait(&o->cv, &o->mu, &ts);
    }
    if (o->stop) break;
    job *j = o->head;
    if (j != NULL) {
      o->head = j->next;
      if (o->head == NULL) o->tail = NULL;
    }
    pthread_mutex_unlock(&o->mu);
    if (now_ms() >= o->next_due_ms) session_step(o);
    if (j != NULL) {
      switch (j->kind) {
        case JOB_RESOLVE: run_resolve(o, j); break;
        case JOB_UNLOAD: run_unload(o, j); break;
        case JOB_RELEASE: run_release(o, j); break;
        case JOB_DRAIN: run_drain(o, j); break;
      }
    }
    pthread_mutex_lock(&o->mu);
  }
  job *left = o->head;
  o->head = o->tail = NULL;
  pthread_mutex_unlock(&o->mu);
  while (left != NULL) {
    job *next = left->next;
    cancel_job(left);
    left = next;
  }
  return NULL;
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
  o->ttl_asked = opts->ttl_seconds;
  o->rpc_timeout_ms = opts->rpc_timeout_ms > 0 ? opts->rpc_timeout_ms : 1000;
  o->cache_ms = opts->cache_ms > 0 ? opts->cache_ms : 1000;
  o->hooks = opts->hooks;
  o->start_wall_ms = wall_ms();
  o->retry_ms = 100;
  pthread_mutex_init(&o->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_cond_init(&o->cv, &ca);
  pthread_condattr_destroy(&ca);
  sl_rpc_channel_opts co = {.target = o->target};
  sl_status st = sl_rpc_channel_create(&co, &o->ch, err);
  if (st != SL_OK) goto out_free;
  if (pthread_create(&o->thread, NULL, run, o) != 0) {
    st = sl_err_set(err, SL_EINTERNAL, "ownership: cannot start its thread");
    goto out_channel;
  }
  *out = o;
  return SL_OK;
out_channel:
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
  int64_t deadline = now_ms() + timeout_ms;
  pthread_mutex_lock(&o->mu);
  while (!o->drained && now_ms() < deadline) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 20 * 1000000;
    if (ts.tv_nsec >= 1000000000) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000;
    }
    pthread_cond_timedwait(&o->cv, &o->mu, &ts);
  }
  bool drained = o->drained;
  size_t left = o->n_entries;
  pthread_mutex_unlock(&o->mu);
  if (!drained)
    sl_log(SL_LOG_WARN, "event=drain_incomplete broker=%s partitions=%zu timeout_ms=%d",
           o->broker_id, left, timeout_ms);
}

void sl_ownership_destroy(sl_ownership *o) {
  if (o == NULL) return;
  pthread_mutex_lock(&o->mu);
  o->stop = true;
  pthread_cond_broadcast(&o->cv);
  pthread_mutex_unlock(&o->mu);
  pthread_join(o->thread, NULL);
  close_session(o);
  /* Forwarded calls still in flight end here, their callbacks with
   * SL_ECANCELED (they see o->stop and do not post again). */
  for (peer *p = o->peers; p != NULL;) {
    peer *next = p->next;
    sl_rpc_channel_destroy(p->ch);
    free(p->address);
    free(p);
    p = next;
  }
  for (size_t i = 0; i < o->n_entries; i++) {
    finish_unload(o->entries[i].unload_cb, o->entries[i].unload_arg, SL_ECANCELED,
                  "broker stopping", 0);
    free(o->entries[i].partition);
  }
  for (size_t i = 0; i < o->n_cache; i++) free_cached(&o->cache[i]);
  sl_metrics_gauge_set(owned_gauge, 0);
  sl_rpc_channel_destroy(o->ch);
  free(o->entries);
  free(o->cache);
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
  bool owned = e != NULL && e->state == ENTRY_OWNED;
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
  entry gone = {0};
  if (e != NULL && e->epoch == epoch) gone = take_entry(o, e);
  bool stopping = o->stopping;
  pthread_mutex_unlock(&o->mu);
  if (gone.partition == NULL) return;
  sl_log(SL_LOG_WARN, "event=ownership_dropped partition=%s epoch=%" PRIu64, partition,
         epoch);
  finish_unload(gone.unload_cb, gone.unload_arg, SL_OK, NULL, gone.epoch);
  free(gone.partition);
  /* The drain may have waited for this one; the thread checks (and closes
   * the session) so that this call never blocks. */
  if (stopping) post(o, new_job(o, JOB_DRAIN, NULL));
}

uint32_t sl_ownership_count(sl_ownership *o) {
  pthread_mutex_lock(&o->mu);
  uint32_t n = (uint32_t)o->n_entries;
  pthread_mutex_unlock(&o->mu);
  return n;
}

int64_t sl_ownership_session(sl_ownership *o) {
  pthread_mutex_lock(&o->mu);
  int64_t id = o->session_id;
  pthread_mutex_unlock(&o->mu);
  return id;
}
