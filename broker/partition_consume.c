/*
 * The consume side of one partition: its entry cache, its subscriptions
 * (cursor + sl_sub each) and the consumers attached to them; the sl_sub
 * ports wired to the cache, the managed ledger and the Consume streams.
 * See consume.h for the design note.
 *
 * States of a subscription (psub)
 *   OPENING   the cursor is being opened or recovered; consumers wait
 *   OPEN      cursor and sl_sub exist; consumers join at once
 *   (gone)    the partition went: consumers were ended; an OPENING one is
 *             freed by its open callback (pc == NULL), an OPEN one at once
 *
 * Invariants
 *  1. Everything here runs on the partition's serial (t->serial); t->consume
 *     is this state while it exists and NULL once the partition is gone.
 *  2. The cache gets every entry the partition made durable since this
 *     state was created, in order (the produce path's append callback), so
 *     a read from a position at or after the cache's first entry is served
 *     from memory only (entry_cache.h invariant 1).
 *  3. Every open cursor is extended with every durable entry before its
 *     subscription is told of it, so acks of delivered messages are in
 *     range.
 *  4. A stream is in at most one list (a subscription's consumers, its
 *     waiters, or the partition's waiters), and each list holds one stream
 *     reference.
 *  5. A graceful unload (the closing hook) closes every open cursor, which
 *     flushes its acks, before the partition closes its ledger and gives
 *     its ownership up (waiting at most UNLOAD_FLUSH_MS); a loss (gone
 *     without closing: fenced, session lost) frees the cursors unflushed,
 *     as another owner may exist.
 */
#include "broker/partition_consume_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "broker/cursor.h"
#include "broker/entry_cache.h"
#include "broker/seek_time.h"
#include "broker/subscription.h"
#include "broker/subscription_cursor.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/timer.h"

/* A graceful unload waits at most this long for the cursors' last flushes
 * (well under the broker's drain timeout, 5 s by default, which bounds the
 * whole unload of a graceful stop). */
#define UNLOAD_FLUSH_MS 3000

/* A subscription's nack delay when its first consumer asked for none
 * (sl_sub_opts' own default, made explicit so that a consumer asking for
 * it by value is not told it conflicts). */
#define DEFAULT_NACK_DELAY_MS 1000

static pconsume *pc_of(ptopic *t) { return t->consume; }

static bool unlink_cs(cstream **list, cstream *cs) {
  for (cstream **pp = list; *pp != NULL; pp = &(*pp)->next) {
    if (*pp == cs) {
      *pp = cs->next;
      cs->next = NULL;
      return true;
    }
  }
  return false;
}

static bool fencing(sl_status st) {
  return st == SL_EFENCED || st == SL_ESTALE_EPOCH || st == SL_EVERSION;
}

/* Ends and releases every stream of a list. */
static void end_list(cstream **list, sl_status st, const char *msg) {
  while (*list != NULL) {
    cstream *cs = *list;
    *list = cs->next;
    cs->next = NULL;
    cs->sub = NULL;
    cs_end(cs, st, msg, NULL);
    cs_unref(cs);
  }
}

/* ---- ports ---- */

typedef struct pread {
  ptopic *t;                 /* referenced */
  sl_ml_pos from;
  uint32_t max;
  sl_sub_entry_cb on_entry;
  sl_sub_read_cb on_done;
  void *arg;
} pread;

/* A read is one dispatch round: what it handed each consumer goes out now,
 * in batches (consume.h), before the subscription reads on. */
static void flush_round(ptopic *t) {
  pconsume *pc = pc_of(t);
  for (psub *ps = pc != NULL ? pc->subs : NULL; ps != NULL; ps = ps->next)
    for (cstream *cs = ps->consumers; cs != NULL; cs = cs->next) cs_flush(cs);
}

static void pread_finish(pread *r, sl_status st) {
  flush_round(r->t);
  r->on_done(st, r->arg);
  pt_unref(r->t);
  free(r);
}

static void bookie_entry(sl_ml_pos pos, const void *data, size_t len, void *arg) {
  pread *r = arg;
  r->on_entry(pos, data, len, r->arg);
}

static void bookie_read_done(sl_status st, const char *details, void *arg) {
  pread *r = arg;
  if (st != SL_OK)
    sl_log(SL_LOG_WARN, "event=consume_read_failed partition=%s status=%s details=\"%s\"",
           r->t->name, sl_status_str(st), details != NULL ? details : "");
  pread_finish(r, st);
}

/* The cached entry at or after pos: true with its position and bytes. */
static bool cache_at_or_after(sl_entry_cache *c, sl_ml_pos pos, sl_ml_pos *at,
                              const void **data, size_t *len) {
  if (sl_entry_cache_get(c, pos, data, len)) {
    *at = pos;
    return true;
  }
  sl_ml_pos before = {pos.ledger_id, pos.entry_id - 1};
  return sl_entry_cache_next(c, before, at) && sl_entry_cache_get(c, *at, data, len);
}

/* A position at or past the end of a ledger that has a successor means the
 * successor's first entry: a subscription waiting there at the tail would
 * otherwise open that finished ledger again on every tick. */
static void skip_ledger_ends(sl_ml *ml, sl_ml_pos *from) {
  sl_ml_ledger_info *chain;
  size_t n = sl_ml_chain(ml, &chain);
  for (size_t i = 0; i + 1 < n; i++) {
    if (chain[i].ledger_id == from->ledger_id && from->entry_id >= chain[i].entries) {
      from->ledger_id = chain[i + 1].ledger_id;
      from->entry_id = 0;
    }
  }
  free(chain);
}

/* Decided when it runs (the cache may have moved since the port call):
 * from the cache when it covers `from` (invariant 2), else from bookies. */
static void read_run(void *arg) {
  pread *r = arg;
  pconsume *pc = pc_of(r->t);
  if (pc == NULL || r->t->ml == NULL) {
    pread_finish(r, SL_EUNAVAIL);
    return;
  }
  sl_ml_pos first;
  if (sl_entry_cache_first(pc->cache, &first) && sl_ml_pos_cmp(first, r->from) <= 0) {
    sl_ml_pos pos;
    const void *data;
    size_t len;
    bool have = cache_at_or_after(pc->cache, r->from, &pos, &data, &len);
    for (uint32_t n = 0; have && n < r->max; n++) {
      r->on_entry(pos, data, len, r->arg);
      have = sl_entry_cache_next(pc->cache, pos, &pos) &&
             sl_entry_cache_get(pc->cache, pos, &data, &len);
    }
    pread_finish(r, SL_OK);
    return;
  }
  skip_ledger_ends(r->t->ml, &r->from);
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_ml_read_max_async(r->t->ml, r->from, r->max, bookie_entry,
                                      bookie_read_done, r, &err);
  if (st != SL_OK) {
    sl_log(SL_LOG_WARN, "event=consume_read_refused partition=%s details=\"%s\"",
           r->t->name, err.msg);
    pread_finish(r, st);
  }
}

static sl_status port_read(void *ctx, sl_ml_pos from, uint32_t max,
                           sl_sub_entry_cb on_entry, sl_sub_read_cb on_done, void *arg) {
  psub *ps = ctx;
  if (ps->pc == NULL) return SL_EUNAVAIL;
  pread *r = sl_xcalloc(1, sizeof(*r));
  pt_ref(ps->pc->t);
  *r = (pread){ps->pc->t, from, max, on_entry, on_done, arg};
  sl_serial_post(ps->pc->t->serial, read_run, r); /* runs after this item */
  return SL_OK;
}

static cstream *find_consumer(psub *ps, uint64_t id) {
  for (cstream *cs = ps->consumers; cs != NULL; cs = cs->next)
    if (cs->id == id) return cs;
  return NULL;
}

static void refill(cstream *cs);

static void post_refill_once(cstream *cs) {
  if (cs->refill_posted) return;
  cs->refill_posted = true;
  cs_ref(cs);
  pc_post_refill(cs);
}

static void port_deliver(void *ctx, uint64_t consumer, const sl_sub_delivery *d) {
  psub *ps = ctx;
  cstream *cs = find_consumer(ps, consumer);
  SL_ASSERT(cs != NULL); /* the dispatcher only picks consumers it has */
  const Sluice__V1__StoredMessage *sm = d->msg;
  Sluice__V1__MessageId id = SLUICE__V1__MESSAGE_ID__INIT;
  id.ledger_id = d->id.ledger_id;
  id.entry_id = d->id.entry_id;
  id.batch_index = d->id.batch_index;
  id.batch_size = d->batch_size;
  id.partition = ps->pc->t->partition_index;
  Sluice__V1__Message m = SLUICE__V1__MESSAGE__INIT;
  m.id = &id;
  m.payload = sm->payload;
  m.key = sm->key;
  m.n_properties = sm->n_properties;
  m.properties = sm->properties;
  m.producer_name = sm->producer_name;
  m.sequence_id = sm->sequence_id;
  m.publish_time_ms = sm->publish_time_ms;
  m.event_time_ms = sm->event_time_ms;
  m.redelivery_count = d->redelivery_count;
  cs_send_message(cs, &m);
  cs->disp_credit--;
  sl_metrics_counter_inc(ps->pc->c->m_msgs);
  if (d->redelivery_count > 0) sl_metrics_counter_inc(ps->pc->c->m_redelivered);
  /* Top the dispatcher up before it runs dry (after this item). */
  if (cs->client_credit > 0 && cs->disp_credit < (int64_t)ps->pc->c->o.window / 2)
    post_refill_once(cs);
}

static void port_active(void *ctx, uint64_t consumer, bool active) {
  psub *ps = ctx;
  if (ps->joining != NULL && ps->joining->id == consumer) {
    ps->joining->active = active; /* told in Subscribed */
    return;
  }
  cstream *cs = find_consumer(ps, consumer);
  if (cs == NULL) return;
  cs->active = active;
  Sluice__V1__ActiveConsumerChange ch = SLUICE__V1__ACTIVE_CONSUMER_CHANGE__INIT;
  ch.active = active;
  Sluice__V1__ConsumeResponse r = SLUICE__V1__CONSUME_RESPONSE__INIT;
  r.kind_case = SLUICE__V1__CONSUME_RESPONSE__KIND_ACTIVE_CHANGE;
  r.active_change = &ch;
  cs_send(cs, &r);
}

/* Publishes through the broker's dead-letter publisher; cb runs on the
 * partition's serial (dead_letter.h). */
static sl_status port_dead_letter(void *ctx, const sl_sub_delivery *d,
                                  sl_sub_done_cb cb, void *arg) {
  psub *ps = ctx;
  sl_dead_letter *dl = ps->pc != NULL ? atomic_load(&ps->pc->c->dead_letter) : NULL;
  if (dl == NULL) return SL_EUNAVAIL;
  sl_dead_letter_msg m = {ps->pc->t->name, ps->name, ps->dead_letter_topic,
                          d->id.ledger_id, d->id.entry_id, d->id.batch_index, d->msg};
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_dead_letter_publish(dl, &m, ps->pc->t->serial, cb, arg, &err);
  if (st != SL_OK)
    sl_log(SL_LOG_WARN, "event=dead_letter_refused subscription=%s dlq=%s error=\"%s\"",
           ps->name, ps->dead_letter_topic, sl_err_msg(&err, st));
  return st;
}

/* ---- permits ---- */

/* Hands client permits on to the dispatcher up to the window (consume.h
 * invariant 2). */
static void refill(cstream *cs) {
  if (cs->sub == NULL || cs->sub->sub == NULL || cs->client_credit <= 0) return;
  int64_t room = (int64_t)cs->c->o.window - cs->disp_credit - (int64_t)cs_unwritten(cs);
  int64_t give = room < cs->client_credit ? room : cs->client_credit;
  if (give <= 0) return;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_sub_flow(cs->sub->sub, cs->id, give, &err);
  if (st != SL_OK) {
    sl_log(SL_LOG_WARN, "event=consume_flow_failed consumer=%s details=\"%s\"",
           cs->o.consumer, sl_err_msg(&err, st));
    return;
  }
  cs->disp_credit += give;
  cs->client_credit -= give;
}

/* ---- end of topic ---- */

/* No entry of the chain is at or after pos. */
static bool at_end(const sl_ml *ml, sl_ml_pos pos) {
  sl_ml_ledger_info *chain;
  size_t n = sl_ml_chain(ml, &chain);
  bool end = true;
  for (size_t i = 0; i < n && end; i++) {
    if (chain[i].ledger_id == pos.ledger_id) end = pos.entry_id >= chain[i].entries;
    else if (chain[i].ledger_id > pos.ledger_id) end = chain[i].entries <= 0;
  }
  free(chain);
  return end;
}

/* Once the partition is terminated and the subscription has offered every
 * entry of it and has nothing waiting for redelivery, each consumer gets
 * EndOfTopic once (after the messages sent to it: the stream keeps order).
 * Checked on every tick and join, so a consumer hears it within a tick of
 * the last read. */
static void check_end(psub *ps) {
  if (ps->sub == NULL || ps->pc == NULL || ps->pc->t->ml == NULL ||
      !sl_ml_terminated(ps->pc->t->ml))
    return;
  bool owed = false;
  for (cstream *cs = ps->consumers; cs != NULL; cs = cs->next) owed |= !cs->end_sent;
  sl_sub_stats ss;
  sl_sub_stats_get(ps->sub, &ss);
  if (!owed || ss.replay > 0 || !at_end(ps->pc->t->ml, sl_sub_read_pos(ps->sub))) return;
  Sluice__V1__EndOfTopic eot = SLUICE__V1__END_OF_TOPIC__INIT;
  Sluice__V1__ConsumeResponse r = SLUICE__V1__CONSUME_RESPONSE__INIT;
  r.kind_case = SLUICE__V1__CONSUME_RESPONSE__KIND_END_OF_TOPIC;
  r.end_of_topic = &eot;
  for (cstream *cs = ps->consumers; cs != NULL; cs = cs->next) {
    if (cs->end_sent) continue;
    cs->end_sent = true;
    cs_send(cs, &r);
    sl_log(SL_LOG_INFO, "event=end_of_topic partition=%s subscription=%s consumer=%s",
           ps->pc->t->name, ps->name, cs->o.consumer);
  }
}

/* ---- subscriptions ---- */

/* Redelivery counts, nack delays and dead letters are one state of the
 * subscription, kept and acted on by the broker for all its consumers (the
 * client does not dead-letter, unlike Pulsar's), so its consumers must
 * agree on them. A consumer that asks for other values than the
 * subscription has (0 or "" = no preference) is refused with
 * FAILED_PRECONDITION naming the option, rather than silently given values
 * it did not ask for; to change them, every consumer must leave and the
 * partition be reloaded (the first consumer then sets them again). */
static bool options_conflict(const psub *ps, const cstream *cs, char *msg, size_t n) {
  const csub_opts *o = &cs->o;
  if (o->max_redeliveries > 0 && o->max_redeliveries != ps->max_redeliveries)
    snprintf(msg, n, "subscription %s has max_redeliveries %u: consumer %s asked for %u",
             ps->name, ps->max_redeliveries, o->consumer, o->max_redeliveries);
  else if (o->nack_delay_ms > 0 && o->nack_delay_ms != ps->nack_delay_ms)
    snprintf(msg, n, "subscription %s has nack_delay_ms %u: consumer %s asked for %u",
             ps->name, ps->nack_delay_ms, o->consumer, o->nack_delay_ms);
  else if (o->dead_letter_topic[0] != '\0' &&
           strcmp(o->dead_letter_topic, ps->dead_letter_topic) != 0)
    snprintf(msg, n, "subscription %s has dead_letter_topic %s: consumer %s asked for %s",
             ps->name, ps->dead_letter_topic, o->consumer, o->dead_letter_topic);
  else
    return false;
  return true;
}

static void join(psub *ps, cstream *cs) {
  static const char *const types[] = {"exclusive", "failover", "shared", "key_shared"};
  char msg[SL_ERR_MAX];
  sl_status refused = SL_OK;
  if (ps->type != cs->o.type) {
    snprintf(msg, sizeof(msg), "subscription %s is %s: consumer %s asked for %s",
             ps->name, types[ps->type], cs->o.consumer, types[cs->o.type]);
    refused = SL_EINVAL;
  } else if (options_conflict(ps, cs, msg, sizeof(msg))) {
    refused = SL_EPRECOND;
  }
  if (refused != SL_OK) {
    cs_end(cs, refused, msg, NULL);
    cs_unref(cs);
    return;
  }
  cs->next = ps->consumers;
  ps->consumers = cs;
  cs->sub = ps;
  cs->active = cs->o.type != SL_DISP_FAILOVER;
  sl_disp_consumer dc = {.id = cs->id, .name = cs->o.consumer,
                         .priority = cs->o.priority,
                         .ack_timeout_ms = cs->o.ack_timeout_ms};
  sl_err err = SL_ERR_INIT;
  ps->joining = cs;
  sl_status st = sl_sub_add_consumer(ps->sub, &dc, &err);
  ps->joining = NULL;
  if (st != SL_OK) {
    unlink_cs(&ps->consumers, cs);
    cs->sub = NULL;
    cs_end(cs, st, sl_err_msg(&err, st), NULL);
    cs_unref(cs);
    return;
  }
  sl_log(SL_LOG_INFO, "event=consumer_joined partition=%s subscription=%s consumer=%s "
         "active=%d", ps->pc->t->name, ps->name, cs->o.consumer, cs->active);
  /* A call already over is left by its leave task. */
  if (cs_opened(cs, cs->active)) check_end(ps);
}

/* ---- stats ---- */

static double g_backlog(void *arg) { return (double)atomic_load(&((psub *)arg)->gauges.backlog); }
static double g_backlog_bytes(void *arg) {
  return (double)atomic_load(&((psub *)arg)->gauges.backlog_bytes);
}
static double g_unacked(void *arg) { return (double)atomic_load(&((psub *)arg)->gauges.unacked); }
static double g_consumers(void *arg) {
  return (double)atomic_load(&((psub *)arg)->gauges.consumers);
}

static void gauges_refresh(psub *ps) {
  sl_cursor_backlog b;
  sl_cursor_backlog_get(ps->cursor, &b);
  sl_sub_stats ss;
  sl_sub_stats_get(ps->sub, &ss);
  atomic_store(&ps->gauges.backlog, b.entries);
  atomic_store(&ps->gauges.backlog_bytes, b.bytes);
  atomic_store(&ps->gauges.unacked, ss.unacked);
  atomic_store(&ps->gauges.consumers, ss.consumers);
}

/* Best effort: a series that cannot be registered is left out. */
static void gauges_register(psub *ps) {
  static const struct {
    const char *name, *help;
    double (*fn)(void *arg);
  } series[4] = {
      {"sluice_broker_subscription_backlog_entries",
       "entries after the mark-delete not fully acknowledged", g_backlog},
      {"sluice_broker_subscription_backlog_bytes", "bytes of those entries (estimate)",
       g_backlog_bytes},
      {"sluice_broker_subscription_unacked_messages", "delivered, not acknowledged",
       g_unacked},
      {"sluice_broker_subscription_consumers", "consumers attached", g_consumers},
  };
  const char *const labels[] = {"partition", ps->pc->t->name, "subscription", ps->name,
                                NULL};
  gauges_refresh(ps);
  for (int i = 0; i < 4; i++)
    sl_metrics_register_callback(sl_metrics_default(), SL_METRICS_GAUGE, series[i].name,
                                 series[i].help, labels, series[i].fn, ps,
                                 &ps->gauges.cb[i], NULL);
}

static void psub_free(psub *ps) {
  for (int i = 0; i < 4; i++)
    sl_metrics_unregister_callback(sl_metrics_default(), ps->gauges.cb[i]);
  sl_sub_destroy(ps->sub);
  sl_cursor_destroy(ps->cursor);
  free(ps->name);
  free(ps->dead_letter_topic);
  free(ps);
}

static void cursor_lost(sl_cursor *c, sl_status st, const char *details, void *arg) {
  (void)c;
  psub *ps = arg;
  sl_log(SL_LOG_WARN, "event=cursor_lost subscription=%s status=%s details=\"%s\"",
         ps->name, sl_status_str(st), details != NULL ? details : "");
  /* Another owner, or the cursor cannot persist: consumers look it up again
   * (acks from now on would only be redelivered). */
  for (cstream *cs = ps->consumers; cs != NULL; cs = cs->next)
    cs_end(cs, SL_EREDIRECT, "subscription state moved: look the partition up again", NULL);
}

static void cursor_opened(sl_status st, const char *details, sl_cursor *c, void *arg) {
  psub *ps = arg;
  pconsume *pc = ps->pc;
  if (pc == NULL) { /* the partition went meanwhile */
    sl_cursor_destroy(c);
    psub_free(ps);
    return;
  }
  if (st == SL_OK) {
    ps->cursor = c;
    /* Entries made durable while it opened (invariant 3). */
    sl_ml_stats ms;
    sl_ml_stats_get(pc->t->ml, &ms);
    if (ms.last_confirmed.entry_id >= 0) sl_cursor_extend(c, ms.last_confirmed, 0);
    sl_sub_opts so = {.name = ps->name, .type = ps->type};
    so.max_redeliveries = ps->max_redeliveries;
    so.nack_delay_ms = ps->nack_delay_ms;
    so.ports.ctx = ps;
    so.ports.read = port_read;
    so.ports.deliver = port_deliver;
    so.ports.active = port_active;
    so.ports.dead_letter = port_dead_letter;
    sl_sub_cursor_ports(c, &so.ports);
    sl_err err = SL_ERR_INIT;
    st = sl_sub_create(&so, &ps->sub, &err);
    if (st != SL_OK) details = err.msg;
    else gauges_register(ps);
  }
  if (st != SL_OK) {
    sl_log(SL_LOG_WARN, "event=subscription_open_failed partition=%s subscription=%s "
           "status=%s details=\"%s\"", pc->t->name, ps->name, sl_status_str(st),
           details != NULL ? details : "");
    char msg[2 * SL_ERR_MAX];
    snprintf(msg, sizeof(msg), "subscription %s: cannot open its cursor: %s", ps->name,
             details != NULL ? details : sl_status_str(st));
    for (psub **pp = &pc->subs; *pp != NULL; pp = &(*pp)->next) {
      if (*pp == ps) {
        *pp = ps->next;
        break;
      }
    }
    end_list(&ps->waiters, fencing(st) ? SL_EREDIRECT : st, msg);
    psub_free(ps);
    return;
  }
  /* Oldest first, as they subscribed (the list is newest first). */
  cstream *w = NULL;
  while (ps->waiters != NULL) {
    cstream *cs = ps->waiters;
    ps->waiters = cs->next;
    cs->next = w;
    w = cs;
  }
  while (w != NULL) {
    cstream *cs = w;
    w = cs->next;
    cs->next = NULL;
    join(ps, cs);
  }
}

static psub *psub_find(pconsume *pc, const char *name) {
  for (psub *ps = pc->subs; ps != NULL; ps = ps->next)
    if (strcmp(ps->name, name) == 0) return ps;
  return NULL;
}

sl_status pc_cursor_open(ptopic *t, const char *sub, int type, sl_cursor_initial initial,
                         sl_cursor_lost_cb lost, sl_cursor_open_cb opened, void *arg,
                         sl_err *err) {
  sl_ml_ledger_info *chain;
  size_t n = sl_ml_chain(t->ml, &chain);
  sl_cursor_ledger *ledgers = sl_xcalloc(n + 1, sizeof(*ledgers));
  for (size_t i = 0; i < n; i++) {
    ledgers[i].ledger_id = chain[i].ledger_id;
    ledgers[i].entries = chain[i].entries;
    ledgers[i].bytes = chain[i].bytes;
  }
  free(chain);
  const sl_produce_opts *po = &t->p->o;
  sl_cursor_opts co = {
      .ledgers = po->ledgers,
      .metadata = po->metadata,
      .serial = t->serial,
      .partition = t->name,
      .subscription = sub,
      .epoch = t->epoch,
      .subscription_type = type,
      .initial = initial,
      .chain = {ledgers, n},
      .metadata_timeout_ms = po->metadata_timeout_ms,
      .on_lost = lost,
      .lost_arg = arg,
  };
  sl_status st = sl_cursor_open_async(&co, opened, arg, err);
  free(ledgers);
  return st;
}

/* Opens (or recovers) the cursor of a new subscription; cs waits for it. */
static void psub_open(pconsume *pc, cstream *cs) {
  ptopic *t = pc->t;
  psub *ps = sl_xcalloc(1, sizeof(*ps));
  ps->pc = pc;
  ps->name = sl_xstrdup(cs->o.subscription);
  ps->type = cs->o.type;
  ps->max_redeliveries = cs->o.max_redeliveries > 0 ? cs->o.max_redeliveries
                                                    : t->max_redeliveries;
  ps->nack_delay_ms = cs->o.nack_delay_ms > 0 ? cs->o.nack_delay_ms : DEFAULT_NACK_DELAY_MS;
  if (cs->o.dead_letter_topic[0] != '\0') {
    ps->dead_letter_topic = sl_xstrdup(cs->o.dead_letter_topic);
  } else {
    /* "<topic>-<sub>-DLQ", the topic without its partition suffix; a name
     * too long for a topic is refused when the first dead letter goes. */
    char buf[300];
    if (sl_dead_letter_topic(cs->o.topic, ps->name, buf, sizeof(buf), NULL) != SL_OK)
      snprintf(buf, sizeof(buf), "%s", "");
    ps->dead_letter_topic = sl_xstrdup(buf);
  }
  ps->waiters = cs;
  ps->next = pc->subs;
  pc->subs = ps;
  sl_err err = SL_ERR_INIT;
  sl_status st = pc_cursor_open(t, ps->name, (int)ps->type,
                                cs->o.earliest ? SL_CURSOR_EARLIEST : SL_CURSOR_LATEST,
                                cursor_lost, cursor_opened, ps, &err);
  if (st != SL_OK) cursor_opened(st, err.msg, NULL, ps);
}

void pc_subscribe_now(pconsume *pc, cstream *cs) {
  psub *ps = psub_find(pc, cs->o.subscription);
  if (ps == NULL && pc_expiry_holds(pc, cs)) return;
  if (ps == NULL) {
    psub_open(pc, cs);
  } else if (ps->sub == NULL) {
    cs->next = ps->waiters;
    ps->waiters = cs;
  } else {
    join(ps, cs);
  }
}

/* ---- partition hooks (produce_topic.c) ---- */

static void tick_fired(void *arg) {
  pconsume *pc = arg;
  int64_t now = sl_clock_mono_ms();
  for (psub *ps = pc->subs; ps != NULL; ps = ps->next) {
    if (ps->sub == NULL) continue;
    sl_sub_tick(ps->sub, now);
    check_end(ps);
    gauges_refresh(ps);
  }
  pc_expiry_tick(pc, now);
  pc_quota_check(pc, now);
  sl_timer_start(&pc->tick, pc->c->o.tick_ms);
}

static void close_timer_fired(void *arg);

static pconsume *pc_create(sl_consume *c, ptopic *t) {
  pconsume *pc = sl_xcalloc(1, sizeof(*pc));
  pc->t = t;
  pc->c = c;
  pc->cache = sl_entry_cache_create(c->o.cache_bytes);
  sl_timer_init(&pc->tick, t->serial, tick_fired, pc);
  sl_timer_init(&pc->close_timer, t->serial, close_timer_fired, pc);
  sl_timer_start(&pc->tick, c->o.tick_ms);
  t->consume = pc;
  return pc;
}

static void on_ready(ptopic *t) {
  pconsume *pc = pc_of(t);
  /* Messages expire, and the backlog is measured, whether or not a
   * consumer ever comes. */
  bool quota = t->backlog_quota_bytes > 0;
  if (pc == NULL && (t->message_ttl_s > 0 || quota)) pc = pc_create(t->p->listener->arg, t);
  if (pc == NULL) return;
  /* Here, not at create: the policies are read while the partition loads. */
  if (pc->expiry == NULL) pc_expiry_init(pc, t->message_ttl_s, quota);
  cstream *w = pc->waiters;
  pc->waiters = NULL;
  while (w != NULL) {
    cstream *cs = w;
    w = cs->next;
    cs->next = NULL;
    pc_subscribe_now(pc, cs);
  }
}

static void on_appended(ptopic *t, sl_ml_pos pos, const void *data, size_t len) {
  pconsume *pc = pc_of(t);
  sl_entry_cache_put(pc->cache, pos, data, len);
  int64_t now = sl_clock_mono_ms();
  for (psub *ps = pc->subs; ps != NULL; ps = ps->next) {
    if (ps->sub == NULL) continue;
    sl_cursor_extend(ps->cursor, pos, len);
    sl_sub_notify(ps->sub, now);
  }
}

static void closing_done_run(void *arg) {
  ptopic *t = arg;
  pt_closing_done(t);
  pt_unref(t);
}

/* Lets the unload go on (posted: never inside the closing hook). */
static void post_closing_done(ptopic *t) {
  pt_ref(t);
  sl_serial_post(t->serial, closing_done_run, t);
}

static void closing_put(pconsume *pc) {
  if (pc->closing == 0 || --pc->closing > 0) return;
  sl_timer_stop(&pc->close_timer);
  post_closing_done(pc->t);
}

static void cursor_closed(sl_status st, const char *details, void *arg) {
  psub *ps = arg;
  if (st != SL_OK)
    sl_log(SL_LOG_WARN, "event=cursor_close_failed subscription=%s status=%s details=\"%s\"",
           ps->name, sl_status_str(st), details != NULL ? details : "");
  if (ps->pc != NULL) closing_put(ps->pc);
}

static void close_timer_fired(void *arg) {
  pconsume *pc = arg;
  sl_log(SL_LOG_WARN, "event=unload_flush_timeout partition=%s cursors_left=%d timeout_ms=%d "
         "(their last acks will be redelivered)", pc->t->name, pc->closing - 1, UNLOAD_FLUSH_MS);
  pc->closing = 1;
  closing_put(pc);
}

/* A graceful unload (not a loss: then gone comes without this): every
 * cursor flushes what was acked and closes before the partition closes
 * its ledger and releases its ownership, so the next owner reads every
 * ack made here. Bounded by UNLOAD_FLUSH_MS. Acks that come after this are
 * refused (not durable) and their messages redelivered by the next owner. */
static void on_closing(ptopic *t) {
  pconsume *pc = pc_of(t);
  if (pc == NULL) {
    post_closing_done(t);
    return;
  }
  pc->closing = 1; /* this loop's, put below */
  for (psub *ps = pc->subs; ps != NULL; ps = ps->next) {
    sl_err err = SL_ERR_INIT;
    if (ps->cursor == NULL) continue; /* opening: nothing acked yet */
    if (sl_cursor_close_async(ps->cursor, cursor_closed, ps, &err) == SL_OK) pc->closing++;
    else sl_log(SL_LOG_WARN, "event=cursor_close_refused subscription=%s details=\"%s\"",
                ps->name, err.msg);
  }
  sl_timer_start(&pc->close_timer, UNLOAD_FLUSH_MS);
  closing_put(pc);
}

static void on_gone(ptopic *t, sl_status st, const char *details) {
  pconsume *pc = pc_of(t);
  if (pc == NULL) return;
  t->consume = NULL;
  sl_timer_stop(&pc->tick);
  sl_timer_stop(&pc->close_timer);
  end_list(&pc->waiters, st, details);
  pc_expiry_gone(pc, st, details);
  while (pc->subs != NULL) {
    psub *ps = pc->subs;
    pc->subs = ps->next;
    end_list(&ps->consumers, st, details);
    end_list(&ps->waiters, st, details);
    ps->pc = NULL;
    if (ps->sub != NULL || ps->cursor != NULL) psub_free(ps);
    /* else its cursor is opening: cursor_opened frees it */
  }
  sl_entry_cache_destroy(pc->cache);
  free(pc);
}

void pc_listener_init(sl_consume *c) {
  c->listener.arg = c;
  c->listener.ready = on_ready;
  c->listener.appended = on_appended;
  c->listener.closing = on_closing;
  c->listener.gone = on_gone;
}

/* ---- tasks from the streams ---- */

typedef struct ctask {
  cstream *cs;               /* referenced */
  int32_t permits;
  bool cumulative;
  uint64_t receipt_id;
  int64_t delay_ms;
  bool seek_time;
  int64_t publish_time_ms;   /* seek by time */
  size_t n;
  Sluice__V1__MessageId ids[];
} ctask;

static ctask *task_new(cstream *cs, size_t n) {
  ctask *k = sl_xcalloc(1, sizeof(*k) + n * sizeof(k->ids[0]));
  k->cs = cs;
  k->n = n;
  return k;
}

static void task_post(ctask *k, void (*fn)(void *arg)) {
  sl_serial_post(k->cs->topic->serial, fn, k);
}

static void task_free(ctask *k) {
  cs_unref(k->cs);
  free(k);
}

static void copy_ids(ctask *k, Sluice__V1__MessageId *const *ids) {
  for (size_t i = 0; i < k->n; i++) {
    sluice__v1__message_id__init(&k->ids[i]);
    k->ids[i].ledger_id = ids[i]->ledger_id;
    k->ids[i].entry_id = ids[i]->entry_id;
    k->ids[i].batch_index = ids[i]->batch_index;
    k->ids[i].batch_size = ids[i]->batch_size;
  }
}

static sl_msg_id msg_id(const Sluice__V1__MessageId *id) {
  sl_msg_id m = {id->ledger_id, id->entry_id, id->batch_index};
  return m;
}

/* The stream's subscription if it is joined and open, else NULL. */
static sl_sub *joined(cstream *cs) {
  return cs->sub != NULL && cs->sub->pc != NULL ? cs->sub->sub : NULL;
}

static void subscribe_run(void *arg) {
  ctask *k = arg;
  cstream *cs = k->cs;
  ptopic *t = cs->topic;
  pthread_mutex_lock(&cs->mu);
  bool live = cs->call_live && cs->state == CS_SUBSCRIBING;
  pthread_mutex_unlock(&cs->mu);
  if (!live) {
    task_free(k);
    return;
  }
  pconsume *pc = pc_of(t);
  if (pc == NULL && (t->state == PT_LOADING || t->state == PT_READY))
    pc = pc_create(cs->c, t);
  if (t->state == PT_CLOSING) pc = NULL; /* its cursors are closing */
  if (pc == NULL) {
    cs_end(cs, SL_EREDIRECT, "partition is moving: look it up again", NULL);
    task_free(k);
    return;
  }
  cs_ref(cs); /* the list's */
  if (t->state == PT_LOADING) {
    cs->next = pc->waiters;
    pc->waiters = cs;
  } else {
    pc_subscribe_now(pc, cs);
  }
  task_free(k);
}

void pc_post_subscribe(cstream *cs) { task_post(task_new(cs, 0), subscribe_run); }

static void flow_run(void *arg) {
  ctask *k = arg;
  k->cs->client_credit += k->permits;
  refill(k->cs);
  task_free(k);
}

void pc_post_flow(cstream *cs, int32_t permits) {
  ctask *k = task_new(cs, 0);
  k->permits = permits;
  task_post(k, flow_run);
}

static void refill_run(void *arg) {
  ctask *k = arg;
  k->cs->refill_posted = false;
  refill(k->cs);
  task_free(k);
}

void pc_post_refill(cstream *cs) { task_post(task_new(cs, 0), refill_run); }

/* One Ack's receipt: sent once every ack of it is durable (invariant 3). */
typedef struct receipt {
  cstream *cs;               /* referenced */
  uint64_t id;
  int pending;
  sl_status st;
  char error[160];
} receipt;

static void receipt_fail(receipt *r, sl_status st, const char *why) {
  if (r->st != SL_OK) return; /* the first failure is the one told */
  r->st = st;
  snprintf(r->error, sizeof(r->error), "%s", why);
}

static void receipt_put(receipt *r) {
  if (--r->pending > 0) return;
  Sluice__V1__AckReceipt ar = SLUICE__V1__ACK_RECEIPT__INIT;
  ar.receipt_id = r->id;
  ar.status = (Sluice__V1__Status)(-(int)r->st);
  ar.error = r->error;
  Sluice__V1__ConsumeResponse resp = SLUICE__V1__CONSUME_RESPONSE__INIT;
  resp.kind_case = SLUICE__V1__CONSUME_RESPONSE__KIND_ACK_RECEIPT;
  resp.ack_receipt = &ar;
  cs_send(r->cs, &resp);
  cs_unref(r->cs);
  free(r);
}

static void ack_durable(sl_status st, void *arg) {
  receipt *r = arg;
  if (st != SL_OK) receipt_fail(r, st, "ack not durable: the subscription moved or failed");
  receipt_put(r);
}

static void ack_run(void *arg) {
  ctask *k = arg;
  cstream *cs = k->cs;
  sl_sub *sub = joined(cs);
  receipt *r = NULL;
  if (k->receipt_id != 0) {
    r = sl_xcalloc(1, sizeof(*r));
    cs_ref(cs);
    r->cs = cs;
    r->id = k->receipt_id;
    r->pending = 1; /* this task's, put below */
  }
  for (size_t i = 0; i < k->n && sub != NULL; i++) {
    sl_msg_id id = msg_id(&k->ids[i]);
    sl_err err = SL_ERR_INIT;
    sl_status st = k->cumulative
        ? sl_sub_ack_cumulative(sub, cs->id, id, r ? ack_durable : NULL, r, &err)
        : sl_sub_ack(sub, id, k->ids[i].batch_size, r ? ack_durable : NULL, r, &err);
    if (st == SL_OK) {
      if (r != NULL) r->pending++;
      sl_metrics_counter_inc(cs->c->m_acks);
      continue;
    }
    /* An id outside the partition is NOT_FOUND for the consumer. */
    if (st == SL_ERANGE) st = SL_ENOTFOUND;
    sl_log(SL_LOG_DEBUG, "event=ack_refused consumer=%s ledger=%llu entry=%lld status=%s "
           "details=\"%s\"", cs->o.consumer, (unsigned long long)id.ledger_id,
           (long long)id.entry_id, sl_status_str(st), sl_err_msg(&err, st));
    if (r != NULL) receipt_fail(r, st, sl_err_msg(&err, st));
  }
  if (r != NULL) {
    if (sub == NULL) receipt_fail(r, SL_EUNAVAIL, "not subscribed any more");
    receipt_put(r);
  }
  task_free(k);
}

void pc_post_ack(cstream *cs, const Sluice__V1__Ack *a) {
  ctask *k = task_new(cs, a->n_ids);
  copy_ids(k, a->ids);
  k->cumulative = a->type == SLUICE__V1__ACK_TYPE__ACK_TYPE_CUMULATIVE;
  k->receipt_id = a->receipt_id;
  task_post(k, ack_run);
}

static void nack_run(void *arg) {
  ctask *k = arg;
  sl_sub *sub = joined(k->cs);
  int64_t now = sl_clock_mono_ms();
  for (size_t i = 0; i < k->n && sub != NULL; i++)
    sl_sub_nack(sub, msg_id(&k->ids[i]), k->delay_ms, now);
  task_free(k);
}

void pc_post_nack(cstream *cs, const Sluice__V1__Nack *n) {
  ctask *k = task_new(cs, n->n_ids);
  copy_ids(k, n->ids);
  k->delay_ms = n->delay_ms;
  task_post(k, nack_run);
}

static void seek_to(ctask *k, sl_ml_pos to, bool at_end);

/* Seek by publish time: the position comes from a search of the log
 * (broker/seek_time.h), on this serial. */
static void seek_time_done(sl_status st, const char *details, const sl_seek_time_result *r,
                           void *arg) {
  ctask *k = arg;
  if (joined(k->cs) == NULL) {
    task_free(k);
    return;
  }
  if (st != SL_OK) {
    char msg[SL_ERR_MAX];
    snprintf(msg, sizeof(msg), "subscription %s: seek to time %lld: %s", k->cs->sub->name,
             (long long)k->publish_time_ms, details != NULL ? details : sl_status_str(st));
    cs_end(k->cs, st, msg, NULL);
    task_free(k);
    return;
  }
  seek_to(k, r->pos, r->at_end);
}

static void seek_run(void *arg) {
  ctask *k = arg;
  cstream *cs = k->cs;
  sl_sub *sub = joined(cs);
  if (sub == NULL) {
    task_free(k);
    return;
  }
  psub *ps = cs->sub;
  if (k->seek_time) {
    ptopic *t = ps->pc->t;
    sl_seek_time_opts o = {t->p->o.ledgers, t->p->o.metadata, t->name, k->publish_time_ms,
                           t->serial, t->p->o.metadata_timeout_ms};
    sl_err err = SL_ERR_INIT;
    sl_status st = sl_seek_time_async(&o, seek_time_done, k, &err);
    if (st != SL_OK) seek_time_done(st, err.msg, NULL, k);
    return;
  }
  sl_ml_pos to = {k->ids[0].ledger_id, k->ids[0].entry_id};
  seek_to(k, to, false);
}

/* Moves the cursor and the subscription to `to`; SeekDone to every
 * consumer (next_id unset when at_end: only new messages follow). */
static void seek_to(ctask *k, sl_ml_pos to, bool at_end) {
  cstream *cs = k->cs;
  sl_sub *sub = joined(cs);
  psub *ps = cs->sub;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_cursor_seek(ps->cursor, to, NULL, NULL, &err);
  if (st != SL_OK) {
    char msg[SL_ERR_MAX];
    snprintf(msg, sizeof(msg), "subscription %s: seek to %llu:%lld: %s", ps->name,
             (unsigned long long)to.ledger_id, (long long)to.entry_id,
             sl_err_msg(&err, st));
    cs_end(cs, st == SL_ERANGE ? SL_EINVAL : st, msg, NULL);
    task_free(k);
    return;
  }
  sl_sub_seek(sub, to, sl_clock_mono_ms());
  sl_log(SL_LOG_INFO, "event=subscription_seek partition=%s subscription=%s ledger=%llu "
         "entry=%lld", ps->pc->t->name, ps->name, (unsigned long long)to.ledger_id,
         (long long)to.entry_id);
  /* Every consumer of the subscription: messages after this come from `to`. */
  Sluice__V1__MessageId next = SLUICE__V1__MESSAGE_ID__INIT;
  next.ledger_id = to.ledger_id;
  next.entry_id = to.entry_id;
  next.partition = ps->pc->t->partition_index;
  Sluice__V1__SeekDone done = SLUICE__V1__SEEK_DONE__INIT;
  done.next_id = at_end ? NULL : &next;
  Sluice__V1__ConsumeResponse resp = SLUICE__V1__CONSUME_RESPONSE__INIT;
  resp.kind_case = SLUICE__V1__CONSUME_RESPONSE__KIND_SEEK_DONE;
  resp.seek_done = &done;
  for (cstream *o = ps->consumers; o != NULL; o = o->next) {
    cs_send(o, &resp);
    o->end_sent = false; /* a terminated partition ends again from `to` on */
  }
  task_free(k);
}

void pc_post_seek(cstream *cs, const Sluice__V1__Seek *s) {
  ctask *k = task_new(cs, s->id != NULL ? 1 : 0);
  if (s->id != NULL) copy_ids(k, &s->id);
  k->seek_time = s->id == NULL;
  k->publish_time_ms = s->publish_time_ms;
  task_post(k, seek_run);
}

static void leave_run(void *arg) {
  ctask *k = arg;
  cstream *cs = k->cs;
  pconsume *pc = pc_of(cs->topic);
  psub *ps = cs->sub;
  bool listed = false;
  if (ps != NULL) {
    listed = unlink_cs(&ps->consumers, cs);
    cs->sub = NULL;
    if (ps->sub != NULL) sl_sub_remove_consumer(ps->sub, cs->id);
    sl_log(SL_LOG_INFO, "event=consumer_left partition=%s subscription=%s consumer=%s",
           cs->topic->name, ps->name, cs->o.consumer);
  } else if (pc != NULL) {
    listed = unlink_cs(&pc->waiters, cs);
    for (psub *s = pc->subs; s != NULL && !listed; s = s->next)
      listed = unlink_cs(&s->waiters, cs);
  }
  if (listed) cs_unref(cs); /* the list's */
  task_free(k);
}

void pc_post_leave(cstream *cs) { task_post(task_new(cs, 0), leave_run); }

/* ---- GetTopicStats ---- */

/* One stats question, answered on the partition's serial. Two references:
 * the asker's and the task's (the asker may stop waiting). */
typedef struct stats_req {
  atomic_int refs;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool done;
  ptopic *t;                 /* referenced */
  Sluice__V1__SubscriptionStats **subs;
  size_t n;
} stats_req;

static void stats_free_subs(Sluice__V1__SubscriptionStats **subs, size_t n) {
  for (size_t i = 0; i < n; i++) {
    free(subs[i]->name);
    free(subs[i]->mark_delete);
    free(subs[i]);
  }
  free(subs);
}

static void stats_req_unref(stats_req *r) {
  if (atomic_fetch_sub(&r->refs, 1) != 1) return;
  stats_free_subs(r->subs, r->n);
  pt_unref(r->t);
  pthread_cond_destroy(&r->cv);
  pthread_mutex_destroy(&r->mu);
  free(r);
}

static void stats_run(void *arg) {
  stats_req *r = arg;
  pconsume *pc = pc_of(r->t);
  size_t n = 0;
  for (psub *ps = pc != NULL ? pc->subs : NULL; ps != NULL; ps = ps->next) n++;
  Sluice__V1__SubscriptionStats **subs = sl_xcalloc(n + 1, sizeof(*subs));
  size_t k = 0;
  for (psub *ps = pc != NULL ? pc->subs : NULL; ps != NULL; ps = ps->next) {
    if (ps->sub == NULL) continue; /* still opening */
    gauges_refresh(ps);
    Sluice__V1__SubscriptionStats *x = sl_xcalloc(1, sizeof(*x));
    sluice__v1__subscription_stats__init(x);
    x->name = sl_xstrdup(ps->name);
    x->type = (Sluice__V1__SubscriptionType)ps->type;
    x->backlog = atomic_load(&ps->gauges.backlog);
    x->backlog_bytes = atomic_load(&ps->gauges.backlog_bytes);
    x->unacked = atomic_load(&ps->gauges.unacked);
    x->consumers = (uint32_t)atomic_load(&ps->gauges.consumers);
    sl_ml_pos md = sl_cursor_mark_delete(ps->cursor);
    x->mark_delete = sl_xcalloc(1, sizeof(*x->mark_delete));
    sluice__v1__position__init(x->mark_delete);
    x->mark_delete->ledger_id = md.ledger_id;
    x->mark_delete->entry_id = md.entry_id;
    subs[k++] = x;
  }
  pthread_mutex_lock(&r->mu);
  r->subs = subs;
  r->n = k;
  r->done = true;
  pthread_cond_broadcast(&r->cv);
  pthread_mutex_unlock(&r->mu);
  stats_req_unref(r);
}

bool sl_consume_topic_stats(sl_consume *c, const char *partition, int timeout_ms,
                            Sluice__V1__TopicStats *out) {
  sl_produce *p = c->o.produce;
  pthread_mutex_lock(&p->mu);
  ptopic *t = sl_map_get(&p->topics, partition);
  if (t != NULL) pt_ref(t);
  pthread_mutex_unlock(&p->mu);
  if (t == NULL) return false;
  stats_req *r = sl_xcalloc(1, sizeof(*r));
  atomic_init(&r->refs, 2);
  pthread_mutex_init(&r->mu, NULL);
  pthread_cond_init(&r->cv, NULL);
  r->t = t;
  sl_serial_post(t->serial, stats_run, r);
  int64_t end = sl_clock_mono_ms() + (timeout_ms > 0 ? timeout_ms : 1000);
  pthread_mutex_lock(&r->mu);
  while (!r->done && sl_clock_mono_ms() < end) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 10 * 1000000;
    if (ts.tv_nsec >= 1000000000) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000;
    }
    pthread_cond_timedwait(&r->cv, &r->mu, &ts);
  }
  bool done = r->done;
  if (done) { /* the answer moves to out */
    out->subscriptions = r->subs;
    out->n_subscriptions = r->n;
    r->subs = NULL;
    r->n = 0;
  }
  pthread_mutex_unlock(&r->mu);
  stats_req_unref(r);
  return done;
}

void sl_consume_topic_stats_free(Sluice__V1__TopicStats *out) {
  stats_free_subs(out->subscriptions, out->n_subscriptions);
  out->subscriptions = NULL;
  out->n_subscriptions = 0;
}
