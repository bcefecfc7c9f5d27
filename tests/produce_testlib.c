/* Produce integration test helpers: see produce_testlib.h. */
#include "tests/produce_testlib.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <signal.h>
#include <sys/types.h>
#include <cmocka.h>

#include "broker.slrpc.h"
#include "common/clock.h"
#include "entry.pb-c.h"
#include "metadata.slrpc.h"
#include "tests/bookie_testlib.h"

static const char *err_msg(const sl_err *err, sl_status st) {
  return err->msg[0] != '\0' ? err->msg : sl_status_str(st);
}

void sl_pt_start(sl_pt *t, const char *name, int metadata, int bookies, int brokers) {
  sl_pt_start_ttl(t, name, metadata, bookies, brokers, 2);
}

void sl_pt_start_ttl(sl_pt *t, const char *name, int metadata, int bookies, int brokers,
                     int ttl_s) {
  sl_pt_start_args(t, name, metadata, bookies, brokers, ttl_s, NULL, NULL);
}

void sl_pt_start_args(sl_pt *t, const char *name, int metadata, int bookies, int brokers,
                      int ttl_s, const char *const *metadata_args,
                      const char *const *bookie_args_more) {
  /* Static: the cluster keeps these for restarts (one cluster a process). */
  static char ttl[16];
  static const char *bookie_args[8] = {"--registration_ttl", ttl, NULL};
  static const char *broker_args[] = {"--session_ttl", ttl, NULL};
  snprintf(ttl, sizeof(ttl), "%d", ttl_s);
  for (int i = 0; i < 5; i++) { /* up to 5 more, NULL-terminated */
    bookie_args[2 + i] = bookie_args_more ? bookie_args_more[i] : NULL;
    if (bookie_args[2 + i] == NULL) break;
  }
  memset(t, 0, sizeof(*t));
  assert_true(brokers <= SL_PT_MAX_BROKERS);
  sl_cluster_opts o = SL_CLUSTER_OPTS_INIT;
  o.metadata = metadata;
  o.bookies = bookies;
  o.brokers = brokers;
  o.name = name;
  o.bookie_args = bookie_args;
  o.broker_args = broker_args;
  o.metadata_args = metadata_args;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_cluster_start(&o, &t->c, &err);
  if (st != SL_OK) fail_msg("cluster: %s", err_msg(&err, st));
  t->meta = sl_bktest_channel(sl_cluster_metadata_target(t->c));
  for (int i = 0; i < brokers; i++)
    t->broker[i] = sl_bktest_channel(sl_cluster_addr(t->c, SL_NODE_BROKER, i));
  sl_ledger_client_opts co = SL_LEDGER_CLIENT_OPTS_INIT;
  co.metadata = t->meta;
  st = sl_ledger_client_create(&co, &t->ledgers, &err);
  if (st != SL_OK) fail_msg("ledger client: %s", err_msg(&err, st));
}

void sl_pt_stop(sl_pt *t) {
  sl_ledger_client_destroy(t->ledgers);
  for (int i = 0; i < SL_PT_MAX_BROKERS; i++) sl_rpc_channel_destroy(t->broker[i]);
  sl_rpc_channel_destroy(t->meta);
  for (int i = 0; i < sl_cluster_count(t->c, SL_NODE_BROKER); i++)
    sl_bktest_check_log_clean(sl_cluster_log(t->c, SL_NODE_BROKER, i));
  sl_cluster_destroy(t->c);
}

int sl_pt_teardown(void **state) {
  sl_pt *t = *state;
  sl_pt_stop(t);
  free(t);
  return 0;
}

static sl_rpc_call_opts opts(int ms) {
  sl_rpc_call_opts o = {0};
  o.timeout_ms = ms;
  o.wait_for_ready = true;
  return o;
}

void sl_pt_namespace(sl_pt *t, const char *ns, bool dedup, uint32_t max_message_bytes) {
  Sluice__V1__NamespacePolicies pol = SLUICE__V1__NAMESPACE_POLICIES__INIT;
  pol.deduplication = dedup;
  pol.max_message_bytes = max_message_bytes;
  pol.retention_minutes = -1;
  pol.retention_megabytes = -1;
  Sluice__V1__CreateNamespaceRequest req = SLUICE__V1__CREATE_NAMESPACE_REQUEST__INIT;
  req.name = (char *)ns;
  req.policies = &pol;
  Sluice__V1__Namespace *resp = NULL;
  sl_rpc_call_opts o = opts(10000);
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_metadata_service_create_namespace(t->meta, &req, &resp, &o, &err);
  if (st != SL_OK) fail_msg("namespace %s: %s", ns, err_msg(&err, st));
  protobuf_c_message_free_unpacked(&resp->base, NULL);
}

void sl_pt_topic(sl_pt *t, const char *topic, uint32_t partitions) {
  Sluice__V1__CreateTopicRequest req = SLUICE__V1__CREATE_TOPIC_REQUEST__INIT;
  req.name = (char *)topic;
  req.partitions = partitions;
  Sluice__V1__TopicInfo *resp = NULL;
  sl_rpc_call_opts o = opts(10000);
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_metadata_service_create_topic(t->meta, &req, &resp, &o, &err);
  if (st != SL_OK) fail_msg("topic %s: %s", topic, err_msg(&err, st));
  protobuf_c_message_free_unpacked(&resp->base, NULL);
}

int sl_pt_try_owner(sl_pt *t, int via, const char *partition, uint64_t *epoch) {
  Sluice__V1__LookupRequest req = SLUICE__V1__LOOKUP_REQUEST__INIT;
  req.topic = (char *)partition;
  Sluice__V1__LookupResponse *resp = NULL;
  sl_rpc_call_opts o = {0};
  o.timeout_ms = 5000;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_broker_service_lookup(t->broker[via], &req, &resp, &o, &err);
  if (st != SL_OK) return -1;
  int found = -1;
  if (resp->n_owners == 1) {
    for (int i = 0; i < sl_cluster_count(t->c, SL_NODE_BROKER); i++)
      if (strcmp(sl_cluster_addr(t->c, SL_NODE_BROKER, i), resp->owners[0]->broker_address) == 0)
        found = i;
    if (epoch != NULL) *epoch = resp->owners[0]->epoch;
  }
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  return found;
}

int sl_pt_owner(sl_pt *t, int via, const char *partition, uint64_t *epoch) {
  int64_t end = sl_clock_mono_ms() + 20000;
  for (;;) {
    int i = sl_pt_try_owner(t, via, partition, epoch);
    if (i >= 0) return i;
    if (sl_clock_mono_ms() > end) fail_msg("lookup %s: no owner", partition);
    struct timespec ts = {0, 50 * 1000000};
    nanosleep(&ts, NULL);
  }
}

/* From the harness, never by matching command lines: other clusters on
 * the machine (parallel tests) run nodes with the same ids. */
int sl_pt_pid(sl_pt *t, sl_node_kind kind, int i) { return sl_cluster_pid(t->c, kind, i); }

void sl_pt_signal_broker(sl_pt *t, int i, int sig) {
  pid_t pid = sl_cluster_pid(t->c, SL_NODE_BROKER, i);
  if (pid <= 0) fail_msg("broker %s: no process", sl_cluster_id(t->c, SL_NODE_BROKER, i));
  assert_int_equal(kill(pid, sig), 0);
  if (sig != SIGSTOP) return;
  /* kill() returns before the stop lands: wait until it did, so that what
   * the test sends next surely reaches a stopped process. */
  char path[64], buf[512];
  snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
  int64_t end = sl_clock_mono_ms() + 5000;
  for (;;) {
    FILE *f = fopen(path, "r");
    size_t n = f != NULL ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
    if (f != NULL) fclose(f);
    buf[n] = '\0';
    const char *rp = strrchr(buf, ')');
    if (rp != NULL && rp[1] == ' ' && rp[2] == 'T') return;
    if (sl_clock_mono_ms() > end) fail_msg("broker %s: not stopped", sl_cluster_id(t->c, SL_NODE_BROKER, i));
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
  }
}

int sl_pt_ensemble_bookie(sl_pt *t, const char *partition, uint32_t slot) {
  Sluice__V1__GetManagedLedgerRequest mreq = SLUICE__V1__GET_MANAGED_LEDGER_REQUEST__INIT;
  mreq.partition = (char *)partition;
  Sluice__V1__ManagedLedgerResponse *ml = NULL;
  sl_rpc_call_opts o = opts(10000);
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_metadata_service_get_managed_ledger(t->meta, &mreq, &ml, &o, &err);
  if (st != SL_OK) fail_msg("list %s: %s", partition, err_msg(&err, st));
  assert_true(ml->info->n_ledgers > 0);
  Sluice__V1__GetLedgerRequest lreq = SLUICE__V1__GET_LEDGER_REQUEST__INIT;
  lreq.ledger_id = ml->info->ledgers[ml->info->n_ledgers - 1]->ledger_id;
  protobuf_c_message_free_unpacked(&ml->base, NULL);
  Sluice__V1__LedgerResponse *l = NULL;
  st = sl_metadata_service_get_ledger(t->meta, &lreq, &l, &o, &err);
  if (st != SL_OK) fail_msg("ledger: %s", err_msg(&err, st));
  const Sluice__V1__EnsembleSegment *seg = l->info->ensembles[l->info->n_ensembles - 1];
  assert_true(slot < seg->n_bookie_ids);
  int found = -1;
  for (int i = 0; i < sl_cluster_count(t->c, SL_NODE_BOOKIE); i++)
    if (strcmp(sl_cluster_id(t->c, SL_NODE_BOOKIE, i), seg->bookie_ids[slot]) == 0) found = i;
  protobuf_c_message_free_unpacked(&l->base, NULL);
  assert_true(found >= 0);
  return found;
}

sl_status sl_pt_open(sl_pt *t, int b, const char *topic, const char *name, bool resume,
                     sl_pt_producer *p, Sluice__V1__Redirect **redirect, sl_err *err) {
  memset(p, 0, sizeof(*p));
  if (redirect != NULL) *redirect = NULL;
  sl_rpc_call_opts o = {0};
  o.wait_for_ready = true;
  sl_status st = sl_broker_service_produce_open(t->broker[b], &o, &p->s, err);
  if (st != SL_OK) return st;
  Sluice__V1__ProducerOpen op = SLUICE__V1__PRODUCER_OPEN__INIT;
  op.topic = (char *)topic;
  op.producer_name = (char *)name;
  op.resume = resume;
  Sluice__V1__ProduceRequest req = SLUICE__V1__PRODUCE_REQUEST__INIT;
  req.kind_case = SLUICE__V1__PRODUCE_REQUEST__KIND_OPEN;
  req.open = &op;
  st = sl_broker_service_produce_send(p->s, &req, 10000, err);
  if (st != SL_OK && st != SL_ECANCELED) return st;
  Sluice__V1__ProduceResponse *r = NULL;
  st = sl_broker_service_produce_recv(p->s, &r, 20000, err);
  if (st != SL_OK) return st;
  if (r == NULL) return sl_err_set(err, SL_EINTERNAL, "stream ended without an answer");
  if (r->kind_case == SLUICE__V1__PRODUCE_RESPONSE__KIND_OPENED) {
    snprintf(p->name, sizeof(p->name), "%s", r->opened->producer_name);
    p->last_sequence_id = r->opened->last_sequence_id;
    st = SL_OK;
  } else if (r->kind_case == SLUICE__V1__PRODUCE_RESPONSE__KIND_REDIRECT) {
    if (redirect != NULL) {
      *redirect = r->redirect;
      r->redirect = NULL;
      r->kind_case = SLUICE__V1__PRODUCE_RESPONSE__KIND__NOT_SET;
    }
    /* The stream's status follows the redirect. */
    Sluice__V1__ProduceResponse *end = NULL;
    st = sl_broker_service_produce_recv(p->s, &end, 10000, err);
    if (end != NULL) protobuf_c_message_free_unpacked(&end->base, NULL);
  } else {
    st = sl_err_set(err, SL_EINTERNAL, "unexpected first answer %d", r->kind_case);
  }
  protobuf_c_message_free_unpacked(&r->base, NULL);
  return st;
}

void sl_pt_close(sl_pt_producer *p) {
  sl_rpc_stream_destroy(p->s);
  p->s = NULL;
}

void sl_pt_payload(uint64_t seq, uint8_t *buf, size_t len) {
  uint64_t x = seq * 0x9e3779b97f4a7c15ull + 1;
  for (size_t i = 0; i < len; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    buf[i] = (uint8_t)x;
  }
}

bool sl_pt_payload_ok(uint64_t seq, const uint8_t *buf, size_t len) {
  uint8_t *want = malloc(len + 1);
  sl_pt_payload(seq, want, len);
  bool ok = memcmp(want, buf, len) == 0;
  free(want);
  return ok;
}

sl_status sl_pt_send(sl_pt_producer *p, uint64_t first, int count, size_t len, sl_err *err) {
  Sluice__V1__SendRequest *sends = calloc((size_t)count, sizeof(*sends));
  Sluice__V1__SendRequest **ptrs = calloc((size_t)count, sizeof(*ptrs));
  uint8_t *bufs = malloc((size_t)count * len + 1);
  for (int i = 0; i < count; i++) {
    sluice__v1__send_request__init(&sends[i]);
    sends[i].sequence_id = first + (uint64_t)i;
    sl_pt_payload(first + (uint64_t)i, bufs + (size_t)i * len, len);
    sends[i].payload.data = bufs + (size_t)i * len;
    sends[i].payload.len = len;
    ptrs[i] = &sends[i];
  }
  Sluice__V1__SendBatch batch = SLUICE__V1__SEND_BATCH__INIT;
  batch.n_messages = (size_t)count;
  batch.messages = ptrs;
  Sluice__V1__ProduceRequest req = SLUICE__V1__PRODUCE_REQUEST__INIT;
  if (count == 1) {
    req.kind_case = SLUICE__V1__PRODUCE_REQUEST__KIND_SEND;
    req.send = &sends[0];
  } else {
    req.kind_case = SLUICE__V1__PRODUCE_REQUEST__KIND_BATCH;
    req.batch = &batch;
  }
  sl_status st = sl_broker_service_produce_send(p->s, &req, 10000, err);
  free(bufs);
  free(ptrs);
  free(sends);
  return st;
}

sl_status sl_pt_recv_acks(sl_pt_producer *p, sl_pt_ack *acks, int n, int *got,
                          int timeout_ms, sl_err *err) {
  *got = 0;
  int64_t end = sl_clock_mono_ms() + timeout_ms;
  while (*got < n) {
    int left = (int)(end - sl_clock_mono_ms());
    if (left <= 0) return sl_err_set(err, SL_ETIMEDOUT, "%d of %d receipts", *got, n);
    Sluice__V1__ProduceResponse *r = NULL;
    sl_status st = sl_broker_service_produce_recv(p->s, &r, left, err);
    if (st != SL_OK) return st;
    if (r == NULL) return sl_err_set(err, SL_ECANCELED, "stream ended with OK");
    if (r->kind_case == SLUICE__V1__PRODUCE_RESPONSE__KIND_REDIRECT) {
      protobuf_c_message_free_unpacked(&r->base, NULL);
      continue; /* the stream's end status follows */
    }
    if (r->kind_case != SLUICE__V1__PRODUCE_RESPONSE__KIND_RECEIPT) {
      protobuf_c_message_free_unpacked(&r->base, NULL);
      return sl_err_set(err, SL_EINTERNAL, "unexpected answer %d", r->kind_case);
    }
    const Sluice__V1__SendReceipt *rc = r->receipt;
    uint32_t count = rc->count ? rc->count : 1;
    for (uint32_t i = 0; i < count && *got < n; i++) {
      sl_pt_ack *a = &acks[(*got)++];
      memset(a, 0, sizeof(*a));
      a->seq = i == 0 ? rc->sequence_id : (i == count - 1 ? rc->last_sequence_id : 0);
      a->status = rc->status;
      a->duplicate = rc->duplicate;
      snprintf(a->error, sizeof(a->error), "%s", rc->error);
      if (rc->id != NULL) {
        a->has_id = true;
        a->pos.ledger_id = rc->id->ledger_id;
        a->pos.entry_id = rc->id->entry_id;
        a->batch_index = rc->id->batch_index + (int32_t)i;
      }
    }
    protobuf_c_message_free_unpacked(&r->base, NULL);
  }
  return SL_OK;
}

int sl_pt_ack_cmp(const sl_pt_ack *a, const sl_pt_ack *b) {
  int c = sl_ml_pos_cmp(a->pos, b->pos);
  if (c != 0) return c;
  return a->batch_index < b->batch_index ? -1 : a->batch_index > b->batch_index;
}

void sl_pt_unload(sl_pt *t, int via, const char *partition) {
  Sluice__V1__UnloadRequest req = SLUICE__V1__UNLOAD_REQUEST__INIT;
  req.topic = (char *)partition;
  Sluice__V1__UnloadResponse *resp = NULL;
  sl_rpc_call_opts o = opts(20000);
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_broker_service_unload(t->broker[via], &req, &resp, &o, &err);
  if (st != SL_OK) fail_msg("unload %s: %s", partition, err_msg(&err, st));
  protobuf_c_message_free_unpacked(&resp->base, NULL);
}

/* ---- the log ---- */

typedef struct reader {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool done;
  sl_status st;
  char details[256];
  sl_pt_msg *msgs;
  size_t n, cap;
} reader;

static void read_entry(sl_ml_pos pos, const void *data, size_t len, void *arg) {
  reader *r = arg;
  Sluice__V1__StoredEntry *e = sluice__v1__stored_entry__unpack(NULL, len, data);
  if (e == NULL) {
    r->st = SL_ECORRUPT;
    return;
  }
  for (size_t i = 0; i < e->n_messages; i++) {
    if (r->n == r->cap) {
      r->cap = r->cap ? r->cap * 2 : 1024;
      r->msgs = realloc(r->msgs, r->cap * sizeof(*r->msgs));
    }
    sl_pt_msg *m = &r->msgs[r->n++];
    const Sluice__V1__StoredMessage *sm = e->messages[i];
    snprintf(m->producer, sizeof(m->producer), "%s", sm->producer_name);
    m->seq = sm->sequence_id;
    m->pos = pos;
    m->index = (int32_t)i;
    m->payload_ok = sl_pt_payload_ok(sm->sequence_id, sm->payload.data, sm->payload.len);
  }
  sluice__v1__stored_entry__free_unpacked(e, NULL);
}

static void read_done(sl_status st, const char *details, void *arg) {
  reader *r = arg;
  pthread_mutex_lock(&r->mu);
  if (r->st == SL_OK) r->st = st;
  snprintf(r->details, sizeof(r->details), "%s", details != NULL ? details : "");
  r->done = true;
  pthread_cond_broadcast(&r->cv);
  pthread_mutex_unlock(&r->mu);
}

size_t sl_pt_read_log(sl_pt *t, const char *partition, sl_pt_msg **out) {
  reader r;
  memset(&r, 0, sizeof(r));
  pthread_mutex_init(&r.mu, NULL);
  pthread_cond_init(&r.cv, NULL);
  sl_ml_pos from = {0, 0};
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_ml_scan_async(t->ledgers, t->meta, partition, from, NULL, read_entry,
                                  read_done, &r, &err);
  if (st != SL_OK) fail_msg("read %s: %s", partition, err_msg(&err, st));
  pthread_mutex_lock(&r.mu);
  while (!r.done) pthread_cond_wait(&r.cv, &r.mu);
  pthread_mutex_unlock(&r.mu);
  if (r.st != SL_OK) fail_msg("read %s: %s %s", partition, sl_status_str(r.st), r.details);
  pthread_mutex_destroy(&r.mu);
  pthread_cond_destroy(&r.cv);
  *out = r.msgs;
  return r.n;
}
