/* Dead letters: one publish = lookup (create if missing), one Produce
 * stream to the owner, one send (see dead_letter.h). */
#include "broker/dead_letter.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker.slrpc.h"
#include "common/log.h"
#include "common/map.h"
#include "common/rpc_astream.h"

#define MAX_HOPS 4      /* redirects followed before looking up again */
#define MAX_LOOKUPS 3   /* lookups per publish */
#define PARTITION_SUFFIX "-partition-"

struct sl_dead_letter {
  char *lookup_target;
  int timeout_ms;
  sl_rpc_channel_opts tmpl; /* channel template (opts->channel) */
  pthread_mutex_t mu;   /* guards channels */
  sl_map channels;      /* address -> sl_rpc_channel */
};

typedef struct pub {
  atomic_int refs;      /* the publish (until cb) + one per stream */
  sl_dead_letter *dl;
  sl_serial *serial;
  sl_dead_letter_cb cb;
  void *arg;
  char *topic;
  char producer[96];    /* the shared name */
  char own[160];        /* this message's own name */
  bool use_own;
  uint64_t seq;
  /* The send: copies of the message's fields. */
  Sluice__V1__SendRequest req;
  Sluice__V1__KeyValue *kv;
  Sluice__V1__KeyValue **kvp;
  char id_str[64];
  char *source;
  /* Progress. */
  bool done;            /* cb ran */
  bool created;         /* CreateTopic tried */
  int hops, lookups;
  char *address;        /* owner the stream goes to */
  char *redirect_to;    /* from a Redirect with a known owner */
  bool relookup;        /* a Redirect with the owner unknown */
  bool retry_own;       /* ambiguous duplicate: send under own name */
  sl_status fail_st;    /* a receipt's refusal */
  char fail_msg[160];
  sl_rpc_astream *s;
} pub;

static void pub_unref(pub *p) {
  if (atomic_fetch_sub(&p->refs, 1) != 1) return;
  for (size_t i = 0; i < p->req.n_properties; i++) {
    if (p->kv[i].key != protobuf_c_empty_string) free(p->kv[i].key);
    if (p->kv[i].value != protobuf_c_empty_string) free(p->kv[i].value);
  }
  free(p->kv);
  free(p->kvp);
  free(p->req.payload.data);
  if (p->req.key != protobuf_c_empty_string) free(p->req.key);
  sl_serial_unref(p->serial);
  free(p->topic);
  free(p->source);
  free(p->address);
  free(p->redirect_to);
  free(p);
}

/* Runs cb once (invariant 2). */
static void pub_finish(pub *p, sl_status st, const char *why) {
  if (p->done) return;
  p->done = true;
  if (st != SL_OK)
    sl_log(SL_LOG_WARN, "event=dead_letter_publish_failed topic=%s original=%s status=%s why=\"%s\"",
           p->topic, p->id_str, sl_status_str(st), why ? why : "");
  p->cb(st, p->arg);
  pub_unref(p);
}

static sl_rpc_channel *channel(sl_dead_letter *dl, const char *address, sl_err *err) {
  pthread_mutex_lock(&dl->mu);
  sl_rpc_channel *ch = sl_map_get(&dl->channels, address);
  if (ch == NULL) {
    sl_rpc_channel_opts co = dl->tmpl;
    co.target = address;
    if (sl_rpc_channel_create(&co, &ch, err) == SL_OK &&
        sl_map_put(&dl->channels, address, ch, NULL) != SL_OK)
      abort();
  }
  pthread_mutex_unlock(&dl->mu);
  return ch;
}

static sl_rpc_call_opts call_opts(const pub *p) {
  sl_rpc_call_opts o = {0};
  o.timeout_ms = p->dl->timeout_ms;
  o.serial = p->serial;
  return o;
}

static void lookup(pub *p);
static void open_stream(pub *p, const char *address);

/* ---- the Produce stream ---- */

static void stream_message(sl_rpc_astream *s, const ProtobufCMessage *msg, void *arg) {
  pub *p = arg;
  const Sluice__V1__ProduceResponse *r = (const void *)msg;
  switch (r->kind_case) {
    case SLUICE__V1__PRODUCE_RESPONSE__KIND_OPENED: {
      if (!r->opened->deduplication)
        sl_log(SL_LOG_WARN, "event=dead_letter_no_dedup topic=%s (a retry may be stored twice)",
               p->topic);
      p->req.sequence_id = p->use_own ? 0 : p->seq;
      Sluice__V1__ProduceRequest req = SLUICE__V1__PRODUCE_REQUEST__INIT;
      req.kind_case = SLUICE__V1__PRODUCE_REQUEST__KIND_SEND;
      req.send = &p->req;
      if (sl_broker_service_produce_asend(s, &req) != SL_OK) sl_rpc_astream_cancel(s);
      return;
    }
    case SLUICE__V1__PRODUCE_RESPONSE__KIND_RECEIPT: {
      const Sluice__V1__SendReceipt *rc = r->receipt;
      if (rc->status != SLUICE__V1__STATUS__STATUS_OK) {
        p->fail_st = (sl_status)(-(int)rc->status);
        snprintf(p->fail_msg, sizeof(p->fail_msg), "%s", rc->error);
      } else if (rc->duplicate && rc->id == NULL && !p->use_own) {
        p->retry_own = true; /* ambiguous: dead_letter.h, Deduplication */
      } else {
        pub_finish(p, SL_OK, NULL);
      }
      sl_rpc_astream_cancel(s);
      return;
    }
    case SLUICE__V1__PRODUCE_RESPONSE__KIND_REDIRECT:
      free(p->redirect_to);
      p->redirect_to = NULL;
      if (r->redirect->epoch > 0 && r->redirect->broker_address[0] != '\0')
        p->redirect_to = strdup(r->redirect->broker_address);
      else
        p->relookup = true;
      return;
    default:
      return;
  }
}

static void stream_done(sl_rpc_astream *s, sl_status st, const char *details, void *arg) {
  pub *p = arg;
  p->s = NULL;
  sl_rpc_astream_unref(s);
  if (p->done) return;
  if (p->retry_own) {
    p->retry_own = false;
    p->use_own = true;
    char *addr = strdup(p->address);
    open_stream(p, addr);
    free(addr);
    return;
  }
  if (p->fail_st != SL_OK) {
    pub_finish(p, p->fail_st, p->fail_msg);
    return;
  }
  if (p->redirect_to != NULL && p->hops < MAX_HOPS) {
    p->hops++;
    char *addr = p->redirect_to;
    p->redirect_to = NULL;
    open_stream(p, addr);
    free(addr);
    return;
  }
  if ((p->relookup || p->redirect_to != NULL || st == SL_EREDIRECT) &&
      p->lookups < MAX_LOOKUPS) {
    p->relookup = false;
    p->hops = 0;
    lookup(p);
    return;
  }
  pub_finish(p, st != SL_OK ? st : SL_EUNAVAIL, details);
}

static void stream_release(void *arg) { pub_unref(arg); }

static void open_stream(pub *p, const char *address) {
  sl_err err = SL_ERR_INIT;
  free(p->address);
  p->address = strdup(address);
  if (p->address == NULL) abort();
  sl_rpc_channel *ch = channel(p->dl, address, &err);
  if (ch == NULL) {
    pub_finish(p, SL_EUNAVAIL, err.msg);
    return;
  }
  sl_rpc_call_opts o = call_opts(p);
  sl_rpc_astream_handler h = {stream_message, NULL, stream_done, stream_release};
  atomic_fetch_add(&p->refs, 1);
  sl_status st = sl_broker_service_produce_astream_open(ch, &o, &h, p, &p->s, &err);
  if (st != SL_OK) {
    atomic_fetch_sub(&p->refs, 1);
    pub_finish(p, st, err.msg);
    return;
  }
  Sluice__V1__ProducerOpen op = SLUICE__V1__PRODUCER_OPEN__INIT;
  op.topic = p->topic;
  op.producer_name = p->use_own ? p->own : p->producer;
  op.resume = true;
  Sluice__V1__ProduceRequest req = SLUICE__V1__PRODUCE_REQUEST__INIT;
  req.kind_case = SLUICE__V1__PRODUCE_REQUEST__KIND_OPEN;
  req.open = &op;
  if (sl_broker_service_produce_asend(p->s, &req) != SL_OK) sl_rpc_astream_cancel(p->s);
}

/* ---- lookup and create ---- */

static void created(sl_status st, const char *details, ProtobufCMessage *resp, void *arg) {
  pub *p = arg;
  if (resp != NULL) protobuf_c_message_free_unpacked(resp, NULL);
  if (st != SL_OK && st != SL_EEXIST) {
    pub_finish(p, st, details);
    return;
  }
  sl_log(SL_LOG_INFO, "event=dead_letter_topic_created topic=%s", p->topic);
  lookup(p);
}

static void looked_up(sl_status st, const char *details, ProtobufCMessage *resp, void *arg) {
  pub *p = arg;
  const Sluice__V1__LookupResponse *r = (const void *)resp;
  if (st == SL_ENOTFOUND && !p->created) {
    p->created = true;
    Sluice__V1__CreateTopicRequest req = SLUICE__V1__CREATE_TOPIC_REQUEST__INIT;
    req.name = p->topic;
    sl_rpc_call_opts o = call_opts(p);
    sl_err err = SL_ERR_INIT;
    sl_rpc_channel *ch = channel(p->dl, p->dl->lookup_target, &err);
    if (ch != NULL)
      st = sl_broker_service_create_topic_async(ch, &req, &o, created, p, &err);
    if (ch == NULL || st != SL_OK) pub_finish(p, ch == NULL ? SL_EUNAVAIL : st, err.msg);
    return;
  }
  if (st == SL_OK && (r->n_owners == 0 || r->owners[0]->broker_address[0] == '\0')) {
    st = SL_EUNAVAIL;
    details = "no owner";
  }
  if (st == SL_OK) {
    char *addr = strdup(r->owners[0]->broker_address);
    if (addr == NULL) abort();
    protobuf_c_message_free_unpacked(resp, NULL);
    open_stream(p, addr);
    free(addr);
    return;
  }
  if (resp != NULL) protobuf_c_message_free_unpacked(resp, NULL);
  pub_finish(p, st, details);
}

static void lookup(pub *p) {
  p->lookups++;
  Sluice__V1__LookupRequest req = SLUICE__V1__LOOKUP_REQUEST__INIT;
  req.topic = p->topic;
  sl_rpc_call_opts o = call_opts(p);
  sl_err err = SL_ERR_INIT;
  sl_rpc_channel *ch = channel(p->dl, p->dl->lookup_target, &err);
  sl_status st = ch == NULL ? SL_EUNAVAIL
                            : sl_broker_service_lookup_async(ch, &req, &o, looked_up, p, &err);
  if (st != SL_OK) pub_finish(p, st, err.msg);
}

static void pub_start(void *arg) { lookup(arg); }

/* ---- public ---- */

sl_status sl_dead_letter_create(const sl_dead_letter_opts *opts, sl_dead_letter **out,
                                sl_err *err) {
  if (opts == NULL || opts->lookup_target == NULL || opts->lookup_target[0] == '\0')
    return sl_err_set(err, SL_EINVAL, "dead letter: lookup_target required");
  sl_dead_letter *dl = calloc(1, sizeof(*dl));
  if (dl == NULL || (dl->lookup_target = strdup(opts->lookup_target)) == NULL) abort();
  dl->timeout_ms = opts->timeout_ms > 0 ? opts->timeout_ms : 10000;
  if (opts->channel != NULL) dl->tmpl = *opts->channel;
  pthread_mutex_init(&dl->mu, NULL);
  sl_map_init(&dl->channels);
  *out = dl;
  return SL_OK;
}

static void channel_free(void *v) { sl_rpc_channel_destroy(v); }

void sl_dead_letter_destroy(sl_dead_letter *dl) {
  if (dl == NULL) return;
  sl_map_release(&dl->channels, channel_free);
  pthread_mutex_destroy(&dl->mu);
  free(dl->lookup_target);
  free(dl);
}

sl_status sl_dead_letter_topic(const char *source, const char *subscription, char *buf,
                               size_t size, sl_err *err) {
  if (source == NULL || subscription == NULL)
    return sl_err_set(err, SL_EINVAL, "dead letter: topic and subscription required");
  size_t base = strlen(source);
  const char *suffix = NULL;
  for (const char *s = strstr(source, PARTITION_SUFFIX); s; s = strstr(s + 1, PARTITION_SUFFIX))
    suffix = s;
  if (suffix != NULL) {
    const char *d = suffix + strlen(PARTITION_SUFFIX);
    bool digits = *d != '\0';
    for (; *d; d++) digits = digits && *d >= '0' && *d <= '9';
    if (digits) base = (size_t)(suffix - source);
  }
  int n = snprintf(buf, size, "%.*s-%s-DLQ", (int)base, source, subscription);
  if (n < 0 || (size_t)n >= size || n > 255)
    return sl_err_set(err, SL_ETOOBIG, "dead letter topic of %s/%s: name too long", source,
                      subscription);
  return SL_OK;
}

/* FNV-1a: a short stable name for (source, subscription), which may hold
 * characters a producer name may not. */
static uint64_t fnv1a(const char *a, const char *b) {
  uint64_t h = 1469598103934665603ULL;
  for (const char *s = a; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ULL;
  h = (h ^ 0xff) * 1099511628211ULL;
  for (const char *s = b; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ULL;
  return h;
}

static char *dup_or_empty(const char *s) {
  if (s == NULL || s[0] == '\0') return (char *)protobuf_c_empty_string;
  char *d = strdup(s);
  if (d == NULL) abort();
  return d;
}

static void add_prop(pub *p, const char *key, const char *value) {
  Sluice__V1__KeyValue *kv = &p->kv[p->req.n_properties];
  sluice__v1__key_value__init(kv);
  kv->key = dup_or_empty(key);
  kv->value = dup_or_empty(value);
  p->kvp[p->req.n_properties++] = kv;
}

sl_status sl_dead_letter_publish(sl_dead_letter *dl, const sl_dead_letter_msg *m,
                                 sl_serial *serial, sl_dead_letter_cb cb, void *arg,
                                 sl_err *err) {
  if (dl == NULL || m == NULL || m->source == NULL || m->subscription == NULL ||
      m->msg == NULL || serial == NULL || cb == NULL)
    return sl_err_set(err, SL_EINVAL, "dead letter: missing argument");
  char topic[300];
  if (m->topic != NULL && m->topic[0] != '\0') {
    if (snprintf(topic, sizeof(topic), "%s", m->topic) >= 256)
      return sl_err_set(err, SL_ETOOBIG, "dead letter topic: name too long");
  } else {
    sl_status st = sl_dead_letter_topic(m->source, m->subscription, topic, sizeof(topic), err);
    if (st != SL_OK) return st;
  }
  pub *p = calloc(1, sizeof(*p));
  if (p == NULL) abort();
  atomic_init(&p->refs, 1);
  p->dl = dl;
  sl_serial_ref(serial);
  p->serial = serial;
  p->cb = cb;
  p->arg = arg;
  p->topic = strdup(topic);
  p->source = strdup(m->source);
  if (p->topic == NULL || p->source == NULL) abort();
  uint64_t h = fnv1a(m->source, m->subscription);
  snprintf(p->producer, sizeof(p->producer), "sl-dlq-%016" PRIx64, h);
  snprintf(p->own, sizeof(p->own), "sl-dlq-%016" PRIx64 "-%" PRIu64 "-%" PRId64 "-%" PRId32, h,
           m->ledger_id, m->entry_id, m->batch_index);
  snprintf(p->id_str, sizeof(p->id_str), "%" PRIu64 ":%" PRId64 ":%" PRId32, m->ledger_id,
           m->entry_id, m->batch_index);
  bool fits = m->ledger_id < (1ULL << 24) && m->entry_id >= 0 && m->entry_id < (1LL << 24) &&
              m->batch_index >= 0 && m->batch_index < (1 << 16);
  p->seq = fits ? m->ledger_id << 40 | (uint64_t)m->entry_id << 16 | (uint64_t)m->batch_index
                : 0;
  p->use_own = !fits;

  const Sluice__V1__StoredMessage *sm = m->msg;
  sluice__v1__send_request__init(&p->req);
  if (sm->payload.len > 0) {
    p->req.payload.data = malloc(sm->payload.len);
    if (p->req.payload.data == NULL) abort();
    memcpy(p->req.payload.data, sm->payload.data, sm->payload.len);
    p->req.payload.len = sm->payload.len;
  }
  p->req.key = dup_or_empty(sm->key);
  p->req.event_time_ms = sm->event_time_ms;
  p->req.priority = sm->priority;
  size_t n = sm->n_properties + 2;
  p->kv = calloc(n, sizeof(*p->kv));
  p->kvp = calloc(n, sizeof(*p->kvp));
  if (p->kv == NULL || p->kvp == NULL) abort();
  p->req.properties = p->kvp;
  for (size_t i = 0; i < sm->n_properties; i++) {
    /* A message dead-lettered twice (from a DLQ's own subscription) keeps
     * only the latest original. */
    if (strcmp(sm->properties[i]->key, SL_DLQ_PROP_ORIGINAL_ID) == 0 ||
        strcmp(sm->properties[i]->key, SL_DLQ_PROP_ORIGINAL_TOPIC) == 0)
      continue;
    add_prop(p, sm->properties[i]->key, sm->properties[i]->value);
  }
  add_prop(p, SL_DLQ_PROP_ORIGINAL_ID, p->id_str);
  add_prop(p, SL_DLQ_PROP_ORIGINAL_TOPIC, m->source);
  sl_serial_post(serial, pub_start, p);
  return SL_OK;
}
