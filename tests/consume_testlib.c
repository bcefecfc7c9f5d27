/* Consume test helpers. See consume_testlib.h. */
#include "tests/consume_testlib.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "broker.slrpc.h"
#include "common/clock.h"
#include "common/status.h"

static sl_status send_req(sl_ct_consumer *c, Sluice__V1__ConsumeRequest *req, sl_err *err) {
  return sl_broker_service_consume_send(c->s, req, 10000, err);
}

int sl_ct_live_broker(sl_pt *t) {
  for (int b = 0; b < sl_cluster_count(t->c, SL_NODE_BROKER); b++)
    if (sl_cluster_running(t->c, SL_NODE_BROKER, b)) return b;
  fail_msg("no broker is running");
  return -1;
}

void sl_ct_produce(sl_pt *t, const char *topic, const char *name, uint64_t first,
                   int count, int nkeys) {
  sl_ct_produce_len(t, topic, name, first, count, nkeys, 100);
}

void sl_ct_produce_len(sl_pt *t, const char *topic, const char *name, uint64_t first,
                       int count, int nkeys, size_t len) {
  enum { BATCH = 10 };
  int owner = sl_pt_owner(t, sl_ct_live_broker(t), topic, NULL);
  sl_pt_producer p;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_pt_open(t, owner, topic, name, false, &p, NULL, &err);
  if (st != SL_OK) fail_msg("open producer on %s: %s", topic, sl_err_msg(&err, st));
  for (int i = 0; i < count; i += BATCH) {
    int n = count - i < BATCH ? count - i : BATCH;
    Sluice__V1__SendRequest sends[BATCH];
    Sluice__V1__SendRequest *ptrs[BATCH];
    uint8_t *bufs = malloc(BATCH * len);
    char keys[BATCH][16];
    for (int j = 0; j < n; j++) {
      uint64_t seq = first + (uint64_t)(i + j);
      sluice__v1__send_request__init(&sends[j]);
      sends[j].sequence_id = seq;
      sl_pt_payload(seq, bufs + (size_t)j * len, len);
      sends[j].payload.data = bufs + (size_t)j * len;
      sends[j].payload.len = len;
      if (nkeys > 0) {
        snprintf(keys[j], sizeof(keys[j]), "k%d", (int)(seq % (uint64_t)nkeys));
        sends[j].key = keys[j];
      }
      ptrs[j] = &sends[j];
    }
    Sluice__V1__SendBatch batch = SLUICE__V1__SEND_BATCH__INIT;
    batch.n_messages = (size_t)n;
    batch.messages = ptrs;
    Sluice__V1__ProduceRequest req = SLUICE__V1__PRODUCE_REQUEST__INIT;
    req.kind_case = SLUICE__V1__PRODUCE_REQUEST__KIND_BATCH;
    req.batch = &batch;
    st = sl_broker_service_produce_send(p.s, &req, 10000, &err);
    free(bufs);
    if (st != SL_OK) fail_msg("send on %s: %s", topic, sl_err_msg(&err, st));
  }
  sl_pt_ack *acks = calloc((size_t)count + 1, sizeof(*acks));
  int got = 0;
  st = sl_pt_recv_acks(&p, acks, count, &got, 30000, &err);
  if (st != SL_OK) fail_msg("receipts on %s: %d of %d: %s", topic, got, count,
                            sl_err_msg(&err, st));
  for (int i = 0; i < count; i++)
    if (acks[i].status != 0) fail_msg("receipt %d on %s: %s", i, topic, acks[i].error);
  free(acks);
  sl_pt_close(&p);
}

Sluice__V1__TopicStats *sl_ct_topic_stats(sl_pt *t, int b, const char *topic, const char *sub,
                                          const Sluice__V1__SubscriptionStats **row) {
  Sluice__V1__TopicStatsRequest req = SLUICE__V1__TOPIC_STATS_REQUEST__INIT;
  req.topic = (char *)topic;
  Sluice__V1__TopicStats *out = NULL;
  sl_rpc_call_opts o = {.timeout_ms = 10000};
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_broker_service_get_topic_stats(t->broker[b], &req, &out, &o, &err);
  if (st != SL_OK) fail_msg("GetTopicStats %s: %s", topic, sl_err_msg(&err, st));
  *row = NULL;
  for (size_t i = 0; i < out->n_subscriptions; i++)
    if (strcmp(out->subscriptions[i]->name, sub) == 0) *row = out->subscriptions[i];
  return out;
}

sl_status sl_ct_subscribe(sl_pt *t, int b, const sl_ct_sub *sub, sl_ct_consumer *c,
                          Sluice__V1__Redirect **redirect, sl_err *err) {
  memset(c, 0, sizeof(*c));
  if (redirect != NULL) *redirect = NULL;
  sl_rpc_call_opts o = {0};
  o.wait_for_ready = true;
  sl_status st = sl_broker_service_consume_open(t->broker[b], &o, &c->s, err);
  if (st != SL_OK) return st;
  Sluice__V1__Subscribe s = SLUICE__V1__SUBSCRIBE__INIT;
  s.topic = (char *)sub->topic;
  s.subscription = (char *)sub->subscription;
  s.type = (Sluice__V1__SubscriptionType)sub->type;
  s.consumer_name = (char *)(sub->name != NULL ? sub->name : "");
  s.initial_position = sub->earliest ? SLUICE__V1__INITIAL_POSITION__INITIAL_POSITION_EARLIEST
                                     : SLUICE__V1__INITIAL_POSITION__INITIAL_POSITION_LATEST;
  s.priority_level = sub->priority;
  s.ack_timeout_ms = sub->ack_timeout_ms;
  s.nack_delay_ms = sub->nack_delay_ms;
  s.max_redeliveries = sub->max_redeliveries;
  s.dead_letter_topic = (char *)(sub->dead_letter_topic != NULL ? sub->dead_letter_topic : "");
  s.max_messages_per_response = sub->max_per_response;
  Sluice__V1__ConsumeRequest req = SLUICE__V1__CONSUME_REQUEST__INIT;
  req.kind_case = SLUICE__V1__CONSUME_REQUEST__KIND_SUBSCRIBE;
  req.subscribe = &s;
  st = send_req(c, &req, err);
  if (st != SL_OK && st != SL_ECANCELED) return st;
  Sluice__V1__ConsumeResponse *r = NULL;
  st = sl_broker_service_consume_recv(c->s, &r, 30000, err);
  if (st != SL_OK) return st;
  if (r == NULL) return sl_err_set(err, SL_EINTERNAL, "stream ended without an answer");
  switch (r->kind_case) {
    case SLUICE__V1__CONSUME_RESPONSE__KIND_SUBSCRIBED:
      snprintf(c->name, sizeof(c->name), "%s", r->subscribed->consumer_name);
      c->active = r->subscribed->active;
      st = SL_OK;
      break;
    case SLUICE__V1__CONSUME_RESPONSE__KIND_REDIRECT:
      if (redirect != NULL) {
        *redirect = r->redirect;
        r->redirect = NULL;
        r->kind_case = SLUICE__V1__CONSUME_RESPONSE__KIND__NOT_SET;
      }
      st = SL_EREDIRECT;
      break;
    case SLUICE__V1__CONSUME_RESPONSE__KIND_CLOSED:
      st = sl_err_set(err, (sl_status)(-(int)r->closed->status), "%s", r->closed->reason);
      break;
    default:
      st = sl_err_set(err, SL_EINTERNAL, "unexpected first answer %d", r->kind_case);
  }
  protobuf_c_message_free_unpacked(&r->base, NULL);
  return st;
}

void sl_ct_subscribe_owner(sl_pt *t, const sl_ct_sub *sub, sl_ct_consumer *c) {
  int owner = sl_pt_owner(t, sl_ct_live_broker(t), sub->topic, NULL);
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_ct_subscribe(t, owner, sub, c, NULL, &err);
  if (st != SL_OK) fail_msg("subscribe %s/%s: %s", sub->topic, sub->subscription,
                            sl_err_msg(&err, st));
}

void sl_ct_close(sl_ct_consumer *c) {
  sl_rpc_stream_destroy(c->s);
  c->s = NULL;
  if (c->held != NULL) protobuf_c_message_free_unpacked(&c->held->base, NULL);
  c->held = NULL;
}

sl_status sl_ct_flow(sl_ct_consumer *c, int32_t permits, sl_err *err) {
  Sluice__V1__Flow f = SLUICE__V1__FLOW__INIT;
  f.permits = permits;
  Sluice__V1__ConsumeRequest req = SLUICE__V1__CONSUME_REQUEST__INIT;
  req.kind_case = SLUICE__V1__CONSUME_REQUEST__KIND_FLOW;
  req.flow = &f;
  return send_req(c, &req, err);
}

static Sluice__V1__MessageId **id_ptrs(const Sluice__V1__MessageId *ids, size_t n) {
  Sluice__V1__MessageId **p = calloc(n + 1, sizeof(*p));
  for (size_t i = 0; i < n; i++) p[i] = (Sluice__V1__MessageId *)&ids[i];
  return p;
}

sl_status sl_ct_ack(sl_ct_consumer *c, const Sluice__V1__MessageId *ids, size_t n,
                    bool cumulative, uint64_t receipt_id, sl_err *err) {
  Sluice__V1__Ack a = SLUICE__V1__ACK__INIT;
  a.type = cumulative ? SLUICE__V1__ACK_TYPE__ACK_TYPE_CUMULATIVE
                      : SLUICE__V1__ACK_TYPE__ACK_TYPE_INDIVIDUAL;
  a.n_ids = n;
  a.ids = id_ptrs(ids, n);
  a.receipt_id = receipt_id;
  Sluice__V1__ConsumeRequest req = SLUICE__V1__CONSUME_REQUEST__INIT;
  req.kind_case = SLUICE__V1__CONSUME_REQUEST__KIND_ACK;
  req.ack = &a;
  sl_status st = send_req(c, &req, err);
  free(a.ids);
  return st;
}

sl_status sl_ct_nack(sl_ct_consumer *c, const Sluice__V1__MessageId *ids, size_t n,
                     uint32_t delay_ms, sl_err *err) {
  Sluice__V1__Nack k = SLUICE__V1__NACK__INIT;
  k.n_ids = n;
  k.ids = id_ptrs(ids, n);
  k.delay_ms = delay_ms;
  Sluice__V1__ConsumeRequest req = SLUICE__V1__CONSUME_REQUEST__INIT;
  req.kind_case = SLUICE__V1__CONSUME_REQUEST__KIND_NACK;
  req.nack = &k;
  sl_status st = send_req(c, &req, err);
  free(k.ids);
  return st;
}

sl_status sl_ct_seek(sl_ct_consumer *c, const Sluice__V1__MessageId *id,
                     int64_t publish_time_ms, sl_err *err) {
  Sluice__V1__Seek s = SLUICE__V1__SEEK__INIT;
  s.id = (Sluice__V1__MessageId *)id;
  s.publish_time_ms = publish_time_ms;
  Sluice__V1__ConsumeRequest req = SLUICE__V1__CONSUME_REQUEST__INIT;
  req.kind_case = SLUICE__V1__CONSUME_REQUEST__KIND_SEEK;
  req.seek = &s;
  return send_req(c, &req, err);
}

sl_status sl_ct_next(sl_ct_consumer *c, int timeout_ms, Sluice__V1__ConsumeResponse **out,
                     sl_err *err) {
  int64_t end = sl_clock_mono_ms() + timeout_ms;
  for (;;) {
    int left = (int)(end - sl_clock_mono_ms());
    if (left <= 0) return sl_err_set(err, SL_ETIMEDOUT, "no response within %d ms",
                                     timeout_ms);
    Sluice__V1__ConsumeResponse *r = NULL;
    sl_status st = sl_broker_service_consume_recv(c->s, &r, left, err);
    if (st != SL_OK) return st;
    if (r == NULL) return sl_err_set(err, SL_ECANCELED, "stream ended with OK");
    if (r->kind_case == SLUICE__V1__CONSUME_RESPONSE__KIND_ACTIVE_CHANGE) {
      c->active = r->active_change->active;
      c->active_changes++;
    } else if (r->kind_case == SLUICE__V1__CONSUME_RESPONSE__KIND_SEEK_DONE) {
      c->seek_done++;
    } else {
      *out = r;
      return SL_OK;
    }
    protobuf_c_message_free_unpacked(&r->base, NULL);
  }
}

static void keep_msg(const Sluice__V1__Message *m, sl_ct_msg *x) {
  memset(x, 0, sizeof(*x));
  sluice__v1__message_id__init(&x->id);
  x->id.ledger_id = m->id->ledger_id;
  x->id.entry_id = m->id->entry_id;
  x->id.batch_index = m->id->batch_index;
  x->id.batch_size = m->id->batch_size;
  x->id.partition = m->id->partition;
  x->seq = m->sequence_id;
  snprintf(x->key, sizeof(x->key), "%s", m->key);
  snprintf(x->producer, sizeof(x->producer), "%s", m->producer_name);
  x->redelivery_count = m->redelivery_count;
  x->payload_ok = sl_pt_payload_ok(m->sequence_id, m->payload.data, m->payload.len);
}

static void count_response(sl_ct_consumer *c, size_t msgs) {
  c->msg_responses++;
  if ((int)msgs > c->most_per_response) c->most_per_response = (int)msgs;
}

sl_status sl_ct_recv(sl_ct_consumer *c, sl_ct_msg *out, int n, int *got, int timeout_ms,
                     sl_err *err) {
  *got = 0;
  int64_t end = sl_clock_mono_ms() + timeout_ms;
  while (*got < n) {
    if (c->held != NULL) {
      const Sluice__V1__MessageBatch *b = c->held->message_batch;
      while (*got < n && c->held_next < b->n_messages)
        keep_msg(b->messages[c->held_next++], &out[(*got)++]);
      if (c->held_next == b->n_messages) {
        protobuf_c_message_free_unpacked(&c->held->base, NULL);
        c->held = NULL;
      }
      continue;
    }
    int left = (int)(end - sl_clock_mono_ms());
    Sluice__V1__ConsumeResponse *r = NULL;
    sl_status st = left > 0 ? sl_ct_next(c, left, &r, err)
                            : sl_err_set(err, SL_ETIMEDOUT, "%d of %d messages", *got, n);
    if (st != SL_OK) return st;
    if (r->kind_case == SLUICE__V1__CONSUME_RESPONSE__KIND_MESSAGE) {
      count_response(c, 1);
      keep_msg(r->message, &out[(*got)++]);
    } else if (r->kind_case == SLUICE__V1__CONSUME_RESPONSE__KIND_MESSAGE_BATCH) {
      count_response(c, r->message_batch->n_messages);
      c->held = r; /* taken from above */
      c->held_next = 0;
      continue;
    } else if (r->kind_case == SLUICE__V1__CONSUME_RESPONSE__KIND_CLOSED) {
      st = sl_err_set(err, (sl_status)(-(int)r->closed->status), "closed: %s",
                      r->closed->reason);
    } else if (r->kind_case == SLUICE__V1__CONSUME_RESPONSE__KIND_REDIRECT) {
      st = sl_err_set(err, SL_EREDIRECT, "redirected");
    }
    protobuf_c_message_free_unpacked(&r->base, NULL);
    if (st != SL_OK) return st;
  }
  return SL_OK;
}

sl_status sl_ct_wait_receipt(sl_ct_consumer *c, uint64_t receipt_id, int timeout_ms,
                             sl_err *err) {
  int64_t end = sl_clock_mono_ms() + timeout_ms;
  for (;;) {
    int left = (int)(end - sl_clock_mono_ms());
    Sluice__V1__ConsumeResponse *r = NULL;
    sl_status st = left > 0 ? sl_ct_next(c, left, &r, err)
                            : sl_err_set(err, SL_ETIMEDOUT, "no receipt %llu",
                                         (unsigned long long)receipt_id);
    if (st != SL_OK) return st;
    bool mine = r->kind_case == SLUICE__V1__CONSUME_RESPONSE__KIND_ACK_RECEIPT &&
                r->ack_receipt->receipt_id == receipt_id;
    if (mine) {
      st = (sl_status)(-(int)r->ack_receipt->status);
      if (st != SL_OK) sl_err_set(err, st, "%s", r->ack_receipt->error);
    } else if (r->kind_case == SLUICE__V1__CONSUME_RESPONSE__KIND_CLOSED) {
      st = sl_err_set(err, (sl_status)(-(int)r->closed->status), "closed: %s",
                      r->closed->reason);
      mine = true;
    }
    protobuf_c_message_free_unpacked(&r->base, NULL);
    if (mine) return st;
  }
}
