#include "tests/metadata_util.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "common/testing.h"
#include "tests/proc.h"

void mdt_expect_(sl_status st, sl_status want, const sl_err *err, const char *file, int line) {
  if (st != want)
    fail_msg("%s:%d: got %s (%s), want %s", file, line, sl_status_str(st),
             sl_err_msg(err, st), sl_status_str(want));
}

sl_rpc_call_opts mdt_opts(int timeout_ms) {
  sl_rpc_call_opts o = {.timeout_ms = timeout_ms};
  return o;
}

sl_rpc_channel *mdt_connect(const char *target) {
  sl_rpc_channel_opts co = {.target = target};
  sl_rpc_channel *ch = NULL;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_rpc_channel_create(&co, &ch, &err);
  mdt_expect(st, SL_OK, &err);
  return ch;
}

/* The service, its server and a channel, over l->store. */
static void start_service(mdt_local *l, const sl_md_service_opts *opts, int n_threads) {
  sl_err err = SL_ERR_INIT;
  sl_md_service_opts mo = SL_MD_SERVICE_OPTS_INIT;
  if (opts != NULL) mo = *opts;
  mo.store = l->store;
  mdt_expect(sl_md_service_create(&mo, &l->md, &err), SL_OK, &err);
  sl_rpc_server_opts ro = {.addr = "127.0.0.1:0", .n_threads = n_threads};
  mdt_expect(sl_rpc_server_create(&ro, &l->srv, &err), SL_OK, &err);
  mdt_expect(sl_md_service_register(l->md, l->srv, &err), SL_OK, &err);
  mdt_expect(sl_rpc_server_start(l->srv, &err), SL_OK, &err);
  snprintf(l->addr, sizeof(l->addr), "127.0.0.1:%d", sl_rpc_server_port(l->srv));
  l->ch = mdt_connect(l->addr);
}

void mdt_local_start(mdt_local *l, const sl_md_service_opts *opts) {
  sl_err err = SL_ERR_INIT;
  memset(l, 0, sizeof(*l));
  mdt_expect(sl_proc_tempdir("mdlocal", &l->dir, &err), SL_OK, &err);
  char uri[4200];
  snprintf(uri, sizeof(uri), "local:%s/store", l->dir);
  sl_store_opts so = SL_STORE_OPTS_INIT;
  so.local_sync = false; /* durability is the store's own tests' business */
  mdt_expect(sl_store_open(uri, &so, &l->store, &err), SL_OK, &err);
  start_service(l, opts, 8);
}

void mdt_replica_start(mdt_local *l, sl_store *store, const sl_md_service_opts *opts) {
  memset(l, 0, sizeof(*l));
  l->store = store;
  start_service(l, opts, 2);
}

void mdt_local_stop(mdt_local *l) {
  sl_rpc_channel_destroy(l->ch);
  sl_rpc_server_destroy(l->srv);
  sl_md_service_destroy(l->md);
  if (l->dir != NULL) sl_store_close(l->store); /* a replica borrows it */
  free(l->dir);
  memset(l, 0, sizeof(*l));
}

mdt_local *mdt_local_new(const sl_md_service_opts *opts) {
  mdt_local *l = calloc(1, sizeof(*l));
  if (l == NULL) fail_msg("out of memory");
  mdt_local_start(l, opts);
  return l;
}

int mdt_local_setup(void **state) {
  *state = mdt_local_new(NULL);
  return 0;
}

int mdt_local_teardown(void **state) {
  mdt_local_stop(*state);
  free(*state);
  return 0;
}

/* ---- sessions ---- */

char *mdt_addr_for(const char *id) {
  static __thread char buf[64];
  unsigned h = 0;
  for (const char *p = id; *p; p++) h = h * 31 + (unsigned char)*p;
  snprintf(buf, sizeof(buf), "127.0.0.1:%u", 1024 + h % 60000);
  return buf;
}

sl_status mdt_st_open_broker(sl_rpc_channel *ch, const char *id, uint32_t ttl,
                             int64_t *session, sl_err *err) {
  return mdt_st_open_broker_at(ch, id, mdt_addr_for(id), ttl, session, err);
}

sl_status mdt_st_open_broker_at(sl_rpc_channel *ch, const char *id, const char *address,
                                uint32_t ttl, int64_t *session, sl_err *err) {
  Sluice__V1__BrokerInfo b = SLUICE__V1__BROKER_INFO__INIT;
  b.id = (char *)id;
  b.address = (char *)address;
  b.version = "test";
  Sluice__V1__OpenSessionRequest req = SLUICE__V1__OPEN_SESSION_REQUEST__INIT;
  req.kind = SLUICE__V1__NODE_KIND__NODE_KIND_BROKER;
  req.broker = &b;
  req.ttl_seconds = ttl;
  Sluice__V1__OpenSessionResponse *resp = NULL;
  sl_rpc_call_opts o = mdt_opts(10000);
  sl_status st = sl_metadata_service_open_session(ch, &req, &resp, &o, err);
  if (st == SL_OK) {
    *session = resp->session_id;
    protobuf_c_message_free_unpacked(&resp->base, NULL);
  }
  return st;
}

int64_t mdt_open_broker(sl_rpc_channel *ch, const char *id, uint32_t ttl) {
  sl_err err = SL_ERR_INIT;
  int64_t s = 0;
  mdt_expect(mdt_st_open_broker(ch, id, ttl, &s, &err), SL_OK, &err);
  assert_true(s > 0);
  return s;
}

int64_t mdt_open_bookie(sl_rpc_channel *ch, const char *id, bool read_only, uint32_t ttl) {
  Sluice__V1__BookieInfo b = SLUICE__V1__BOOKIE_INFO__INIT;
  b.id = (char *)id;
  b.address = mdt_addr_for(id);
  b.read_only = read_only;
  b.free_bytes = 10;
  b.total_bytes = 100;
  b.rack = "r1";
  Sluice__V1__OpenSessionRequest req = SLUICE__V1__OPEN_SESSION_REQUEST__INIT;
  req.kind = SLUICE__V1__NODE_KIND__NODE_KIND_BOOKIE;
  req.bookie = &b;
  req.ttl_seconds = ttl;
  Sluice__V1__OpenSessionResponse *resp = NULL;
  sl_err err = SL_ERR_INIT;
  sl_rpc_call_opts o = mdt_opts(10000);
  mdt_expect(sl_metadata_service_open_session(ch, &req, &resp, &o, &err), SL_OK, &err);
  int64_t s = resp->session_id;
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  return s;
}

/* ---- ownership ---- */

void mdt_ensure_topic(sl_rpc_channel *ch, const char *partition) {
  char ns[256], topic[600];
  /* Bad names are left for the call under test to refuse. */
  const char *slash = partition != NULL ? strchr(partition, '/') : NULL;
  if (slash == NULL || strlen(partition) >= 512) return;
  snprintf(ns, sizeof(ns), "%.*s", (int)(slash - partition), partition);
  snprintf(topic, sizeof(topic), "%s", partition);
  char *suffix = strstr(topic, "-partition-");
  uint32_t n = 0;
  if (suffix != NULL) {
    n = (uint32_t)atoi(suffix + strlen("-partition-")) + 1;
    if (n < MDT_TOPIC_PARTITIONS) n = MDT_TOPIC_PARTITIONS;
    *suffix = '\0';
  }
  sl_err err = SL_ERR_INIT;
  sl_rpc_call_opts o = mdt_opts(10000);
  Sluice__V1__CreateNamespaceRequest nr = SLUICE__V1__CREATE_NAMESPACE_REQUEST__INIT;
  nr.name = ns;
  Sluice__V1__Namespace *nresp = NULL;
  sl_status st = sl_metadata_service_create_namespace(ch, &nr, &nresp, &o, &err);
  if (st != SL_EEXIST && st != SL_EINVAL) mdt_expect(st, SL_OK, &err);
  if (nresp != NULL) protobuf_c_message_free_unpacked(&nresp->base, NULL);
  Sluice__V1__CreateTopicRequest tr = SLUICE__V1__CREATE_TOPIC_REQUEST__INIT;
  tr.name = topic;
  tr.partitions = n;
  Sluice__V1__TopicInfo *tresp = NULL;
  st = sl_metadata_service_create_topic(ch, &tr, &tresp, &o, &err);
  if (st != SL_EEXIST && st != SL_EINVAL) mdt_expect(st, SL_OK, &err);
  if (tresp != NULL) protobuf_c_message_free_unpacked(&tresp->base, NULL);
}

sl_status mdt_st_acquire(sl_rpc_channel *ch, const char *partition, const char *id,
                         int64_t session, Sluice__V1__AcquireOwnershipResponse **resp,
                         sl_err *err) {
  mdt_ensure_topic(ch, partition);
  Sluice__V1__BrokerInfo b = SLUICE__V1__BROKER_INFO__INIT;
  b.id = (char *)id;
  b.address = mdt_addr_for(id);
  Sluice__V1__AcquireOwnershipRequest req = SLUICE__V1__ACQUIRE_OWNERSHIP_REQUEST__INIT;
  req.partition = (char *)partition;
  req.session_id = session;
  req.broker = &b;
  sl_rpc_call_opts o = mdt_opts(10000);
  return sl_metadata_service_acquire_ownership(ch, &req, resp, &o, err);
}

Sluice__V1__AcquireOwnershipResponse *mdt_acquire(sl_rpc_channel *ch, const char *partition,
                                                  const char *id, int64_t session) {
  Sluice__V1__AcquireOwnershipResponse *resp = NULL;
  sl_err err = SL_ERR_INIT;
  mdt_expect(mdt_st_acquire(ch, partition, id, session, &resp, &err), SL_OK, &err);
  assert_non_null(resp->owner);
  return resp;
}

/* ---- namespaces, ledgers, cursors ---- */

void mdt_create_namespace(sl_rpc_channel *ch, const char *ns) {
  Sluice__V1__CreateNamespaceRequest req = SLUICE__V1__CREATE_NAMESPACE_REQUEST__INIT;
  req.name = (char *)ns;
  Sluice__V1__Namespace *resp = NULL;
  sl_err err = SL_ERR_INIT;
  sl_rpc_call_opts o = mdt_opts(10000);
  mdt_expect(sl_metadata_service_create_namespace(ch, &req, &resp, &o, &err), SL_OK, &err);
  protobuf_c_message_free_unpacked(&resp->base, NULL);
}

uint64_t mdt_own(sl_rpc_channel *ch, const char *partition, const char *broker,
                 int64_t *session) {
  *session = mdt_open_broker(ch, broker, 0);
  Sluice__V1__AcquireOwnershipResponse *r = mdt_acquire(ch, partition, broker, *session);
  if (!r->acquired) fail_msg("%s: not acquired by %s", partition, broker);
  uint64_t e = r->owner->epoch;
  protobuf_c_message_free_unpacked(&r->base, NULL);
  return e;
}

void mdt_disown(sl_rpc_channel *ch, const char *partition, int64_t session, uint64_t epoch) {
  Sluice__V1__ReleaseOwnershipRequest req = SLUICE__V1__RELEASE_OWNERSHIP_REQUEST__INIT;
  req.partition = (char *)partition;
  req.session_id = session;
  req.epoch = epoch;
  Sluice__V1__ReleaseOwnershipResponse *resp = NULL;
  sl_err err = SL_ERR_INIT;
  mdt_expect(sl_metadata_service_release_ownership(ch, &req, &resp, NULL, &err), SL_OK, &err);
  protobuf_c_message_free_unpacked(&resp->base, NULL);
}

sl_md_audit_stats mdt_audit_stats(mdt_local *l) {
  sl_md_audit_stats s;
  sl_md_service_audit_stats(l->md, &s);
  return s;
}

void mdt_await_audit_passes(mdt_local *l, uint64_t n) {
  uint64_t want = mdt_audit_stats(l).passes + n;
  int64_t deadline = sl_clock_mono_ms() + sl_test_scaled_ms(10000);
  while (mdt_audit_stats(l).passes < want) {
    if (sl_clock_mono_ms() > deadline)
      fail_msg("%llu audit passes after 10 s, want %llu (failed %llu)",
               (unsigned long long)mdt_audit_stats(l).passes, (unsigned long long)want,
               (unsigned long long)mdt_audit_stats(l).failed);
    struct timespec ts = {0, 5 * 1000000L};
    nanosleep(&ts, NULL);
  }
}

uint64_t mdt_allocate_ledger_id(sl_rpc_channel *ch) {
  Sluice__V1__AllocateLedgerIdRequest req = SLUICE__V1__ALLOCATE_LEDGER_ID_REQUEST__INIT;
  Sluice__V1__AllocateLedgerIdResponse *resp = NULL;
  sl_err err = SL_ERR_INIT;
  mdt_expect(sl_metadata_service_allocate_ledger_id(ch, &req, &resp, NULL, &err), SL_OK, &err);
  uint64_t id = resp->ledger_id;
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  return id;
}

Sluice__V1__LedgerResponse *mdt_get_ledger(sl_rpc_channel *ch, uint64_t ledger) {
  Sluice__V1__GetLedgerRequest req = SLUICE__V1__GET_LEDGER_REQUEST__INIT;
  req.ledger_id = ledger;
  Sluice__V1__LedgerResponse *r = NULL;
  sl_rpc_call_opts o = mdt_opts(10000);
  sl_err err = SL_ERR_INIT;
  mdt_expect(sl_metadata_service_get_ledger(ch, &req, &r, &o, &err), SL_OK, &err);
  return r;
}

size_t mdt_expect_named_ledgers(sl_rpc_channel *ch, const char *partition,
                                size_t *cursor_ledgers) {
  sl_rpc_call_opts o = mdt_opts(10000);
  sl_err err = SL_ERR_INIT;
  Sluice__V1__GetManagedLedgerRequest mreq = SLUICE__V1__GET_MANAGED_LEDGER_REQUEST__INIT;
  mreq.partition = (char *)partition;
  Sluice__V1__ManagedLedgerResponse *ml = NULL;
  sl_status st = sl_metadata_service_get_managed_ledger(ch, &mreq, &ml, &o, &err);
  if (st != SL_ENOTFOUND) mdt_expect(st, SL_OK, &err);
  Sluice__V1__ListCursorsRequest creq = SLUICE__V1__LIST_CURSORS_REQUEST__INIT;
  creq.partition = (char *)partition;
  Sluice__V1__ListCursorsResponse *cur = NULL;
  mdt_expect(sl_metadata_service_list_cursors(ch, &creq, &cur, &o, &err), SL_OK, &err);
  size_t n_list = ml != NULL ? ml->info->n_ledgers : 0, n = 0, n_cursor = 0;
  for (size_t i = 0; i < n_list + cur->n_cursors; i++) {
    uint64_t id;
    if (i < n_list) {
      id = ml->info->ledgers[i]->ledger_id;
    } else {
      const Sluice__V1__CursorInfo *c = cur->cursors[i - n_list];
      if (c->ack_ledger == NULL || c->ack_ledger->ledger_id == 0) continue;
      id = c->ack_ledger->ledger_id;
      n_cursor++;
    }
    Sluice__V1__GetLedgerRequest req = SLUICE__V1__GET_LEDGER_REQUEST__INIT;
    req.ledger_id = id;
    Sluice__V1__LedgerResponse *r = NULL;
    st = sl_metadata_service_get_ledger(ch, &req, &r, &o, &err);
    if (st != SL_OK)
      fail_msg("ledger %llu, named by %s's %s: %s", (unsigned long long)id, partition,
               i < n_list ? "list" : "cursor", sl_err_msg(&err, st));
    protobuf_c_message_free_unpacked(&r->base, NULL);
    n++;
  }
  if (ml != NULL) protobuf_c_message_free_unpacked(&ml->base, NULL);
  protobuf_c_message_free_unpacked(&cur->base, NULL);
  if (cursor_ledgers != NULL) *cursor_ledgers = n_cursor;
  return n;
}

bool mdt_ledger_names(sl_rpc_channel *ch, uint64_t ledger, const char *bookie) {
  Sluice__V1__LedgerResponse *r = mdt_get_ledger(ch, ledger);
  bool found = false;
  for (size_t s = 0; s < r->info->n_ensembles; s++)
    for (size_t i = 0; i < r->info->ensembles[s]->n_bookie_ids; i++)
      found |= strcmp(r->info->ensembles[s]->bookie_ids[i], bookie) == 0;
  protobuf_c_message_free_unpacked(&r->base, NULL);
  return found;
}

void mdt_ledger_init(Sluice__V1__LedgerInfo *l, Sluice__V1__EnsembleSegment *seg,
                     const char *partition) {
  static char *bookies[] = {"b0"};
  sluice__v1__ensemble_segment__init(seg);
  seg->first_entry = 0;
  seg->n_bookie_ids = 1;
  seg->bookie_ids = bookies;
  sluice__v1__ledger_info__init(l);
  l->ensemble_size = l->write_quorum = l->ack_quorum = 1;
  l->n_ensembles = 1;
  static __thread Sluice__V1__EnsembleSegment *segs[1];
  segs[0] = seg;
  l->ensembles = segs;
  l->last_entry_id = -1;
  l->partition = (char *)(partition ? partition : "");
}

uint64_t mdt_create_ledger(sl_rpc_channel *ch, const char *partition, uint64_t epoch,
                           int64_t *version) {
  Sluice__V1__LedgerInfo l;
  Sluice__V1__EnsembleSegment seg;
  mdt_ledger_init(&l, &seg, partition);
  Sluice__V1__CreateLedgerRequest req = SLUICE__V1__CREATE_LEDGER_REQUEST__INIT;
  req.info = &l;
  req.epoch = epoch;
  Sluice__V1__LedgerResponse *resp = NULL;
  sl_err err = SL_ERR_INIT;
  sl_rpc_call_opts o = mdt_opts(10000);
  mdt_expect(sl_metadata_service_create_ledger(ch, &req, &resp, &o, &err), SL_OK, &err);
  uint64_t id = resp->info->ledger_id;
  if (version != NULL) *version = resp->version;
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  return id;
}

sl_status mdt_st_update_cursor(sl_rpc_channel *ch, const char *partition, const char *sub,
                               int64_t entry, int64_t expected, uint64_t epoch,
                               int64_t *version, sl_err *err) {
  Sluice__V1__Position pos = SLUICE__V1__POSITION__INIT;
  pos.ledger_id = 1;
  pos.entry_id = entry;
  Sluice__V1__CursorInfo c = SLUICE__V1__CURSOR_INFO__INIT;
  c.partition = (char *)partition;
  c.subscription = (char *)sub;
  c.mark_delete = &pos;
  Sluice__V1__UpdateCursorRequest req = SLUICE__V1__UPDATE_CURSOR_REQUEST__INIT;
  req.info = &c;
  req.expected_version = expected;
  req.epoch = epoch;
  Sluice__V1__CursorResponse *resp = NULL;
  sl_rpc_call_opts o = mdt_opts(10000);
  sl_status st = sl_metadata_service_update_cursor(ch, &req, &resp, &o, err);
  if (st == SL_OK) {
    if (version != NULL) *version = resp->version;
    protobuf_c_message_free_unpacked(&resp->base, NULL);
  }
  return st;
}

sl_status mdt_st_get_cursor(sl_rpc_channel *ch, const char *partition, const char *sub,
                            int64_t *entry, int64_t *version, sl_err *err) {
  Sluice__V1__GetCursorRequest req = SLUICE__V1__GET_CURSOR_REQUEST__INIT;
  req.partition = (char *)partition;
  req.subscription = (char *)sub;
  Sluice__V1__CursorResponse *resp = NULL;
  sl_rpc_call_opts o = mdt_opts(10000);
  sl_status st = sl_metadata_service_get_cursor(ch, &req, &resp, &o, err);
  if (st == SL_OK) {
    if (entry != NULL) *entry = resp->info->mark_delete ? resp->info->mark_delete->entry_id : -2;
    if (version != NULL) *version = resp->version;
    protobuf_c_message_free_unpacked(&resp->base, NULL);
  }
  return st;
}

/* ---- keeper ---- */

struct mdt_keeper {
  sl_rpc_channel *ch;
  const char *broker_id;
  int64_t session;
  int interval_ms;
  pthread_t thread;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  bool stop;
  int failures;
  long long last_ok_ms;
};

static void *keeper_main(void *arg) {
  mdt_keeper *k = arg;
  pthread_mutex_lock(&k->lock);
  while (!k->stop) {
    pthread_mutex_unlock(&k->lock);
    Sluice__V1__KeepAliveRequest req = SLUICE__V1__KEEP_ALIVE_REQUEST__INIT;
    req.session_id = k->session;
    req.kind = SLUICE__V1__NODE_KIND__NODE_KIND_BROKER;
    req.node_id = (char *)k->broker_id;
    Sluice__V1__KeepAliveResponse *resp = NULL;
    sl_rpc_call_opts o = mdt_opts(2000);
    sl_status st = sl_metadata_service_keep_alive(k->ch, &req, &resp, &o, NULL);
    if (resp != NULL) protobuf_c_message_free_unpacked(&resp->base, NULL);
    pthread_mutex_lock(&k->lock);
    if (st != SL_OK)
      k->failures++;
    else
      k->last_ok_ms = sl_clock_mono_ms();
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += k->interval_ms / 1000;
    ts.tv_nsec += (long)(k->interval_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000L;
    }
    while (!k->stop && pthread_cond_timedwait(&k->cond, &k->lock, &ts) == 0) {
    }
  }
  pthread_mutex_unlock(&k->lock);
  return NULL;
}

mdt_keeper *mdt_keeper_start(sl_rpc_channel *ch, const char *broker_id, int64_t session,
                             int interval_ms) {
  mdt_keeper *k = calloc(1, sizeof(*k));
  assert_non_null(k);
  k->ch = ch;
  k->broker_id = broker_id;
  k->session = session;
  k->interval_ms = interval_ms;
  pthread_mutex_init(&k->lock, NULL);
  pthread_cond_init(&k->cond, NULL);
  assert_int_equal(pthread_create(&k->thread, NULL, keeper_main, k), 0);
  return k;
}

int mdt_keeper_stop(mdt_keeper *k, long long *last_ok_ms) {
  pthread_mutex_lock(&k->lock);
  k->stop = true;
  pthread_cond_broadcast(&k->cond);
  pthread_mutex_unlock(&k->lock);
  pthread_join(k->thread, NULL);
  int f = k->failures;
  if (last_ok_ms != NULL) *last_ok_ms = k->last_ok_ms;
  pthread_cond_destroy(&k->cond);
  pthread_mutex_destroy(&k->lock);
  free(k);
  return f;
}
