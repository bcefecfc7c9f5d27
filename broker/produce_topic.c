/* Produce partitions: load (policy, managed ledger, dedup), grouping into
 * entries, receipts, unload and loss. Everything of one partition runs on
 * its serial. See produce.h. */
#include "broker/produce_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "common/log.h"
#include "entry.pb-c.h"
#include "metadata.slrpc.h"
#include "metadata/md_names.h"
#include "common/status.h"

#define DEFAULT_MAX_MESSAGE (5u << 20)
#define DEFAULT_GROUP_MSGS 1000u
#define DEFAULT_GROUP_BYTES (1u << 20)
#define DEFAULT_GROUP_DELAY_MS 2
#define DEFAULT_GROUP_INFLIGHT 2u
#define DEFAULT_SNAPSHOT_ENTRIES 1000u
/* Room the dedup snapshot may take of the list's properties (the metadata
 * service allows 64 KiB and 1024 pairs in all). */
#define SNAPSHOT_MAX_BYTES (48u << 10)
#define SNAPSHOT_MAX_PROPS 900u

void pt_ref(ptopic *t) { atomic_fetch_add(&t->refs, 1); }

void pt_unref(ptopic *t) {
  if (atomic_fetch_sub(&t->refs, 1) != 1) return;
  SL_ASSERT(t->ml == NULL && t->streams == NULL && t->waiters == NULL &&
            t->open == NULL && t->fifo_head == NULL);
  sl_dedup_destroy(t->dedup);
  sl_serial_unref(t->serial);
  free(t->name);
  free(t);
}

/* A small work item for a partition's serial. */
typedef struct ptask {
  ptopic *t;     /* referenced */
  pstream *ps;   /* referenced or NULL */
} ptask;

static void post(ptopic *t, pstream *ps, void (*fn)(void *arg)) {
  ptask *k = sl_xcalloc(1, sizeof(*k));
  pt_ref(t);
  k->t = t;
  if (ps != NULL) ps_ref(ps);
  k->ps = ps;
  sl_serial_post(t->serial, fn, k);
}

static void task_free(ptask *k) {
  if (k->ps != NULL) ps_unref(k->ps);
  pt_unref(k->t);
  free(k);
}

static const sl_produce_opts *opts(const ptopic *t) { return &t->p->o; }

/* ---- groups ---- */

static void member_drop(pmember *m) {
  ps_release(m->ps, m->inflight);
  ps_unref(m->ps);
  free(m->wire);
  m->wire = NULL;
}

static void group_free(pgroup *g) {
  for (size_t i = 0; i < g->n; i++)
    if (g->m[i].ps != NULL) member_drop(&g->m[i]);
  sl_buf_release(&g->data);
  free(g->m);
  pt_unref(g->topic);
  free(g);
}

static pgroup *open_group(ptopic *t) {
  if (t->open != NULL) return t->open;
  pgroup *g = sl_xcalloc(1, sizeof(*g));
  pt_ref(t);
  g->topic = t;
  g->min_publish_ms = INT64_MAX;
  t->open = g;
  return g;
}

/* Takes over the member (its stream reference and wire bytes). */
static void group_add(pgroup *g, pmember *m) {
  if (g->n == g->cap) {
    g->cap = g->cap ? g->cap * 2 : 16;
    g->m = realloc(g->m, g->cap * sizeof(*g->m));
    if (g->m == NULL) abort();
  }
  if (m->st == SL_OK && !m->duplicate) {
    sl_buf_append(&g->data, m->wire, m->wire_len);
    free(m->wire);
    m->wire = NULL;
    g->n_payload++;
    if (m->publish_ms < g->min_publish_ms) g->min_publish_ms = m->publish_ms;
    if (m->deliver_at_ms > g->max_deliver_at_ms) g->max_deliver_at_ms = m->deliver_at_ms;
  }
  g->m[g->n++] = *m;
  memset(m, 0, sizeof(*m));
}

static void pt_gone(ptopic *t, sl_status st, const char *details);
static void pt_close_ml(ptopic *t);
static void drain(ptopic *t);
static void flush(ptopic *t);

static void maybe_snapshot(ptopic *t, sl_ml_pos pos) {
  uint32_t every = opts(t)->dedup_snapshot_entries ? opts(t)->dedup_snapshot_entries
                                                   : DEFAULT_SNAPSHOT_ENTRIES;
  if (!t->dedup_on || ++t->since_snapshot < every) return;
  t->since_snapshot = 0;
  sl_dedup_prop *props;
  size_t n, dropped;
  sl_dedup_snapshot(t->dedup, pos.ledger_id, pos.entry_id, SNAPSHOT_MAX_BYTES,
                    SNAPSHOT_MAX_PROPS, &props, &n, &dropped);
  if (dropped > 0)
    sl_log(SL_LOG_WARN, "event=dedup_snapshot_full partition=%s producers_left_out=%zu",
           t->name, dropped);
  sl_ml_prop *mp = sl_xcalloc(n + 1, sizeof(*mp));
  for (size_t i = 0; i < n; i++) {
    mp[i].key = props[i].key;
    mp[i].value = props[i].value;
  }
  sl_err err = SL_ERR_INIT;
  if (sl_ml_set_properties(t->ml, "dedup", mp, n, NULL, NULL, &err) != SL_OK)
    sl_log(SL_LOG_WARN, "event=dedup_snapshot_failed partition=%s details=\"%s\"",
           t->name, err.msg);
  free(mp);
  sl_dedup_props_free(props, n);
}

static void entry_done(sl_status st, sl_ml_pos pos, void *arg) {
  pgroup *g = arg;
  ptopic *t = g->topic;
  t->entries_pending--;
  g->done = true;
  g->st = st;
  g->pos = pos;
  const pt_listener *l = t->p->listener;
  if (st == SL_OK && l != NULL && t->consume != NULL)
    l->appended(t, pos, g->data.data, g->data.len);
  drain(t);
  if (st == SL_OK && t->state != PT_GONE && t->ml != NULL) maybe_snapshot(t, pos);
  /* A completion is the moment to send what gathered meanwhile. */
  if (t->open != NULL && t->state != PT_GONE) flush(t);
}

static void flush(ptopic *t) {
  pgroup *g = t->open;
  if (g == NULL) return;
  t->open = NULL;
  sl_timer_stop(&t->group_timer);
  if (t->fifo_tail != NULL) t->fifo_tail->next = g;
  else t->fifo_head = g;
  t->fifo_tail = g;
  if (g->n_payload == 0) {
    g->done = true; /* only receipts: answered in order with the others */
    drain(t);
    return;
  }
  Sluice__V1__StoredEntry summary = SLUICE__V1__STORED_ENTRY__INIT;
  summary.min_publish_time_ms = g->min_publish_ms;
  summary.max_deliver_at_ms = g->max_deliver_at_ms;
  size_t n = sluice__v1__stored_entry__get_packed_size(&summary);
  sl_buf_reserve(&g->data, n);
  g->data.len +=
      sluice__v1__stored_entry__pack(&summary, (uint8_t *)g->data.data + g->data.len);
  sl_err err = SL_ERR_INIT;
  /* The bytes stay with the group until the entry is durable: the consume
   * side caches them then (group_free releases them). */
  sl_status st = sl_ml_append(t->ml, g->data.data, g->data.len, entry_done, g, &err);
  if (st != SL_OK) {
    g->done = true;
    g->st = st;
    drain(t);
    return;
  }
  t->entries_pending++;
}

static void group_timer_fired(void *arg) {
  ptopic *t = arg;
  if (t->state == PT_READY || t->state == PT_CLOSING) flush(t);
}

static void answer_group(ptopic *t, pgroup *g) {
  sl_produce *p = t->p;
  int32_t batch = 0;
  int32_t batch_size = (int32_t)g->n_payload;
  int64_t now_ns = sl_clock_mono_ns();
  size_t i = 0;
  while (i < g->n) {
    pmember *m = &g->m[i];
    preceipt r = {0};
    r.seq = r.last_seq = m->seq;
    r.count = 1;
    r.st = m->st;
    r.partition = t->partition_index;
    size_t bytes = m->inflight;
    size_t j = i + 1;
    if (m->st != SL_OK) {
      snprintf(r.error, sizeof(r.error), "%s", m->error);
    } else if (m->duplicate) {
      r.duplicate = true;
      r.has_id = m->has_orig;
      r.ledger_id = m->orig.ledger_id;
      r.entry_id = m->orig.entry_id;
      r.batch_index = m->orig.batch_index;
      sl_metrics_counter_inc(p->m_dups);
    } else {
      /* A run of stored messages of one stream: one receipt. */
      r.has_id = true;
      r.ledger_id = g->pos.ledger_id;
      r.entry_id = g->pos.entry_id;
      r.batch_index = batch;
      r.batch_size = batch_size;
      for (size_t k = i;; k++) {
        pmember *x = &g->m[k];
        if (t->dedup_on) {
          sl_dedup_id id = {g->pos.ledger_id, g->pos.entry_id, batch};
          sl_dedup_stored(t->dedup, x->ps->producer, x->seq, id);
        }
        batch++;
        sl_metrics_counter_inc(p->m_msgs);
        sl_metrics_counter_add(p->m_bytes, x->inflight);
        sl_metrics_histogram_observe(p->m_ack, (double)(now_ns - x->recv_ns) / 1e9);
        if (k > i) {
          r.last_seq = x->seq;
          r.count++;
          bytes += x->inflight;
        }
        j = k + 1;
        if (j == g->n) break;
        const pmember *y = &g->m[j];
        if (y->ps != m->ps || y->st != SL_OK || y->duplicate) break;
      }
    }
    ps_answer(m->ps, &r, bytes);
    for (size_t k = i; k < j; k++) {
      ps_unref(g->m[k].ps);
      free(g->m[k].wire);
      g->m[k].ps = NULL;
    }
    i = j;
  }
}

/* Answers finished groups from the front, in order (invariant 1). */
static void drain(ptopic *t) {
  while (t->fifo_head != NULL && t->fifo_head->done) {
    pgroup *g = t->fifo_head;
    t->fifo_head = g->next;
    if (t->fifo_head == NULL) t->fifo_tail = NULL;
    if (g->st == SL_OK) {
      answer_group(t, g);
    } else {
      /* Not stored: the resends must be accepted (dedup), and the stream
       * ends without these receipts (invariant 3). */
      for (size_t i = 0; i < g->n && t->dedup_on; i++)
        if (g->m[i].ps != NULL && g->m[i].ps->producer != NULL)
          sl_dedup_failed(t->dedup, g->m[i].ps->producer);
      char msg[SL_ERR_MAX];
      snprintf(msg, sizeof(msg), "partition %s: append failed: %s", t->name,
               sl_status_str(g->st));
      if (g->st != SL_ECANCELED) pt_gone(t, g->st, msg);
    }
    group_free(g);
  }
  if (t->fifo_head == NULL && t->open == NULL && t->unload_wanted &&
      t->state == PT_CLOSING && !t->consume_closing) {
    t->unload_wanted = false;
    pt_close_ml(t);
  }
}

/* ---- sends ---- */

/* A READY partition whose log takes no appends is terminated or being
 * terminated (an unload leaves READY first). */
static bool terminated(const ptopic *t) {
  sl_ml_stats s;
  sl_ml_stats_get(t->ml, &s);
  return s.state == SL_ML_CLOSING || s.state == SL_ML_CLOSED;
}

static void terminated_msg(const ptopic *t, char *msg, size_t cap) {
  snprintf(msg, cap, "topic %s is terminated: nothing more can be published", t->name);
}

static void refuse_terminated(ptopic *t, pstream *ps) {
  char msg[SL_ERR_MAX];
  terminated_msg(t, msg, sizeof(msg));
  ps_end(ps, SL_EPRECOND, msg, NULL, NULL);
}

static void batch_apply(pbatch *b) {
  ptopic *t = b->topic;
  const sl_produce_opts *o = opts(t);
  uint32_t max_msgs = o->group_max_msgs ? o->group_max_msgs : DEFAULT_GROUP_MSGS;
  size_t max_bytes = o->group_max_bytes ? o->group_max_bytes : DEFAULT_GROUP_BYTES;
  bool ended = t->state == PT_READY && terminated(t);
  for (size_t i = 0; i < b->n; i++) {
    pmember *m = &b->m[i];
    if (t->state != PT_READY || ended) {
      if (ended) refuse_terminated(t, m->ps);
      else ps_end(m->ps, SL_EREDIRECT, "partition is moving: look it up again", NULL, t->name);
      member_drop(m);
      m->ps = NULL;
      continue;
    }
    if (m->st == SL_OK && t->backlog_over &&
        t->backlog_policy == SLUICE__V1__BACKLOG_POLICY__BACKLOG_POLICY_PRODUCER_EXCEPTION) {
      m->st = SL_EBUSY;
      snprintf(m->error, sizeof(m->error),
               "partition %s: backlog of %llu bytes is over the quota of %lld bytes "
               "(backlog_policy producer_exception): consume or wait", t->name,
               (unsigned long long)t->backlog_bytes, (long long)t->backlog_quota_bytes);
      free(m->wire);
      m->wire = NULL;
    }
    if (m->st == SL_OK && t->dedup_on) {
      switch (sl_dedup_check(t->dedup, m->ps->producer, m->seq, &m->orig, &m->has_orig)) {
        case SL_DEDUP_NEW:
          sl_dedup_push(t->dedup, m->ps->producer, m->seq);
          break;
        case SL_DEDUP_STORED:
          m->duplicate = true;
          free(m->wire);
          m->wire = NULL;
          break;
        case SL_DEDUP_IN_FLIGHT:
          m->st = SL_EBUSY;
          snprintf(m->error, sizeof(m->error),
                   "sequence %llu of producer %s is still being stored: resend after "
                   "its receipt", (unsigned long long)m->seq, m->ps->producer);
          free(m->wire);
          m->wire = NULL;
          break;
      }
    }
    pgroup *g = open_group(t);
    if (g->n_payload > 0 && m->st == SL_OK && !m->duplicate &&
        g->data.len + m->wire_len > max_bytes)
      flush(t), g = open_group(t);
    group_add(g, m);
    if (g->n_payload >= max_msgs || g->data.len >= max_bytes) flush(t);
  }
  if (t->open != NULL) {
    uint32_t inflight = o->group_inflight ? o->group_inflight : DEFAULT_GROUP_INFLIGHT;
    if (t->entries_pending < inflight || t->open->n_payload == 0) flush(t);
    else if (!sl_timer_active(&t->group_timer))
      sl_timer_start(&t->group_timer,
                     o->group_delay_ms > 0 ? o->group_delay_ms : DEFAULT_GROUP_DELAY_MS);
  }
  pt_unref(t);
  free(b);
}

/* Sends held by PRODUCER_HOLD go on, in order: into the log once the
 * backlog is under the quota, or refused as batch_apply refuses them when
 * the partition is leaving. */
static void release_held(ptopic *t) {
  while (t->held_head != NULL) {
    pbatch *b = t->held_head;
    t->held_head = b->held_next;
    if (t->held_head == NULL) t->held_tail = NULL;
    batch_apply(b);
  }
}

static void batch_run(void *arg) {
  pbatch *b = arg;
  ptopic *t = b->topic;
  bool hold = t->state == PT_READY && t->backlog_over &&
              t->backlog_policy == SLUICE__V1__BACKLOG_POLICY__BACKLOG_POLICY_PRODUCER_HOLD;
  if (!hold) {
    batch_apply(b);
    return;
  }
  /* The streams' in-flight limits (produce.c) bound what waits here. */
  b->held_next = NULL;
  if (t->held_tail != NULL) t->held_tail->held_next = b;
  else t->held_head = b;
  t->held_tail = b;
}

void pt_post_batch(pbatch *b) { sl_serial_post(b->topic->serial, batch_run, b); }

void pt_backlog_over(ptopic *t, bool over, uint64_t bytes) {
  if (over != t->backlog_over)
    sl_log(SL_LOG_INFO, "event=backlog_quota partition=%s over=%d backlog_bytes=%llu "
           "quota_bytes=%lld policy=%d", t->name, over, (unsigned long long)bytes,
           (long long)t->backlog_quota_bytes, t->backlog_policy);
  t->backlog_over = over;
  t->backlog_bytes = bytes;
  if (!over) release_held(t);
}

/* ---- attach and detach ---- */

static void answer_open(ptopic *t, pstream *ps) {
  if (terminated(t)) {
    refuse_terminated(t, ps);
    return;
  }
  /* The name: the producer's own, or one made unique here. */
  char gen[64];
  const char *name = ps->producer;
  if (name == NULL || name[0] == '\0') {
    snprintf(gen, sizeof(gen), "p-%llu-%llu", (unsigned long long)t->epoch,
             (unsigned long long)++t->producer_names);
    name = gen;
  }
  /* A reconnecting producer replaces its old stream (the newest wins). */
  for (pstream *o = t->streams; o != NULL; o = o->topic_next)
    if (o->producer != NULL && strcmp(o->producer, name) == 0)
      ps_end(o, SL_EEXIST, "producer reconnected on another stream", NULL, NULL);
  uint64_t seq = 0;
  sl_dedup_id id;
  bool known = false;
  bool has = t->dedup_on && sl_dedup_last(t->dedup, name, &seq, &id, &known);
  if (!ps_opened(ps, t, name, has ? (int64_t)seq : -1, known ? &id : NULL)) return;
  ps_ref(ps);
  ps->topic_next = t->streams;
  t->streams = ps;
}

static void attach_run(void *arg) {
  ptask *k = arg;
  ptopic *t = k->t;
  switch (t->state) {
    case PT_READY:
      answer_open(t, k->ps);
      break;
    case PT_LOADING:
      ps_ref(k->ps);
      k->ps->topic_next = t->waiters;
      t->waiters = k->ps;
      break;
    default:
      ps_end(k->ps, SL_EREDIRECT, "partition is moving: look it up again", NULL, t->name);
  }
  task_free(k);
}

static void unlink_stream(pstream **list, pstream *ps) {
  for (pstream **pp = list; *pp != NULL; pp = &(*pp)->topic_next) {
    if (*pp == ps) {
      *pp = ps->topic_next;
      ps->topic_next = NULL;
      ps_unref(ps);
      return;
    }
  }
}

static void detach_run(void *arg) {
  ptask *k = arg;
  unlink_stream(&k->t->streams, k->ps);
  pt_unref(k->t); /* the stream's reference, handed over by pt_detach */
  task_free(k);
}

void pt_detach(ptopic *t, pstream *ps) {
  post(t, ps, detach_run);
}

/* ---- load ---- */

static void load_failed(ptopic *t, sl_status st, const char *details);

static void end_all(ptopic *t, sl_status st, const char *msg) {
  pstream *lists[2] = {t->streams, t->waiters};
  t->streams = t->waiters = NULL;
  for (int l = 0; l < 2; l++) {
    pstream *ps = lists[l];
    while (ps != NULL) {
      pstream *next = ps->topic_next;
      ps->topic_next = NULL;
      ps_end(ps, st, msg, NULL, t->name);
      ps_unref(ps);
      ps = next;
    }
  }
}

static void table_remove(ptopic *t) {
  sl_produce *p = t->p;
  bool mine = false;
  pthread_mutex_lock(&p->mu);
  if (sl_map_get(&p->topics, t->name) == t) {
    sl_map_remove(&p->topics, t->name, NULL);
    mine = true;
  }
  pthread_mutex_unlock(&p->mu);
  if (mine) pt_unref(t);
}

static void consume_gone(ptopic *t, sl_status st, const char *details) {
  const pt_listener *l = t->p->listener;
  if (l != NULL) l->gone(t, st, details);
}

static bool fencing(sl_status st) {
  return st == SL_EFENCED || st == SL_ESTALE_EPOCH || st == SL_EVERSION;
}

/* Fenced, lost or failed: redirect everyone, drop the partition. */
static void pt_gone(ptopic *t, sl_status st, const char *details) {
  if (t->state == PT_GONE) return;
  sl_log(SL_LOG_WARN, "event=partition_gone partition=%s epoch=%llu status=%s details=\"%s\"",
         t->name, (unsigned long long)t->epoch, sl_status_str(st),
         details != NULL ? details : "");
  t->state = PT_GONE;
  sl_timer_stop(&t->group_timer);
  release_held(t);
  table_remove(t);
  end_all(t, SL_EREDIRECT, "partition is no longer owned here: look it up again");
  consume_gone(t, SL_EREDIRECT, "partition is no longer owned here: look it up again");
  if (t->open != NULL) {
    group_free(t->open);
    t->open = NULL;
  }
  if (fencing(st)) {
    sl_ownership *own = atomic_load(&t->p->own);
    if (own != NULL) sl_ownership_drop(own, t->name, t->epoch);
  }
  /* Pending appends complete with SL_ECANCELED and free their groups. */
  sl_ml *ml = t->ml;
  t->ml = NULL;
  sl_ml_destroy(ml);
}

static void ml_lost(sl_ml *ml, sl_status st, const char *details, void *arg) {
  (void)ml;
  pt_gone(arg, st, details);
}

/* A graceful unload: the consume side is told and holds the ledger's close
 * until pt_closing_done (pt_listener.closing). */
static void begin_closing(ptopic *t) {
  const pt_listener *l = t->p->listener;
  t->state = PT_CLOSING;
  release_held(t);
  t->consume_closing = l != NULL;
  if (l != NULL) l->closing(t);
}

void pt_closing_done(ptopic *t) {
  if (!t->consume_closing) return;
  t->consume_closing = false;
  if (t->state == PT_CLOSING) drain(t);
}

static void become_ready(ptopic *t) {
  t->state = PT_READY;
  sl_log(SL_LOG_INFO, "event=partition_ready partition=%s epoch=%llu dedup=%d producers=%zu",
         t->name, (unsigned long long)t->epoch, t->dedup_on, sl_dedup_count(t->dedup));
  pstream *w = t->waiters;
  t->waiters = NULL;
  while (w != NULL) {
    pstream *next = w->topic_next;
    w->topic_next = NULL;
    answer_open(t, w);
    ps_unref(w);
    w = next;
  }
  const pt_listener *l = t->p->listener;
  if (l != NULL) l->ready(t);
  if (t->unload_wanted) {
    begin_closing(t);
    drain(t);
  }
}

static void replay_entry(sl_ml_pos pos, const void *data, size_t len, void *arg) {
  ptopic *t = arg;
  Sluice__V1__StoredEntry *e = sluice__v1__stored_entry__unpack(NULL, len, data);
  if (e == NULL) {
    sl_log(SL_LOG_WARN, "event=replay_bad_entry partition=%s ledger=%llu entry=%lld",
           t->name, (unsigned long long)pos.ledger_id, (long long)pos.entry_id);
    return;
  }
  for (size_t i = 0; i < e->n_messages; i++) {
    sl_dedup_id id = {pos.ledger_id, pos.entry_id, (int32_t)i};
    sl_dedup_stored(t->dedup, e->messages[i]->producer_name, e->messages[i]->sequence_id, id);
  }
  sluice__v1__stored_entry__free_unpacked(e, NULL);
}

static void replay_done(sl_status st, const char *details, void *arg) {
  ptopic *t = arg;
  if (t->state == PT_LOADING) {
    if (st == SL_OK) become_ready(t);
    else load_failed(t, st, details);
  }
  pt_unref(t);
}

static void ml_opened(sl_status st, const char *details, sl_ml *ml, void *arg) {
  ptopic *t = arg;
  if (st != SL_OK || t->state != PT_LOADING) {
    if (ml != NULL) sl_ml_destroy(ml);
    if (t->state == PT_LOADING) load_failed(t, st != SL_OK ? st : SL_ECANCELED, details);
    pt_unref(t);
    return;
  }
  t->ml = ml;
  sl_ml_stats s;
  sl_ml_stats_get(ml, &s);
  if (s.ledgers > 1) sl_metrics_counter_inc(t->p->m_recoveries);
  if (!t->dedup_on) {
    become_ready(t);
    pt_unref(t);
    return;
  }
  const sl_ml_prop *props;
  size_t n = sl_ml_properties(ml, &props);
  sl_dedup_prop *dp = sl_xcalloc(n + 1, sizeof(*dp));
  for (size_t i = 0; i < n; i++) {
    dp[i].key = (char *)props[i].key;
    dp[i].value = (char *)props[i].value;
  }
  uint64_t at_ledger;
  int64_t at_entry;
  sl_err err = SL_ERR_INIT;
  if (sl_dedup_restore(t->dedup, dp, n, &at_ledger, &at_entry, &err) != SL_OK) {
    /* A broken snapshot: rebuild from the whole log instead. */
    sl_log(SL_LOG_WARN, "event=dedup_snapshot_bad partition=%s details=\"%s\"", t->name,
           err.msg);
    at_ledger = 0;
    at_entry = -1;
  }
  free(dp);
  sl_ml_pos from = {at_ledger, at_entry + 1};
  st = sl_ml_read_async(ml, from, replay_entry, replay_done, t, &err);
  if (st != SL_OK) {
    load_failed(t, st, err.msg);
    pt_unref(t);
  }
}

static void namespace_read(sl_status st, const char *details, ProtobufCMessage *resp,
                           void *arg) {
  ptopic *t = arg;
  const Sluice__V1__Namespace *ns = (const void *)resp;
  if (st != SL_OK || t->state != PT_LOADING) {
    if (t->state == PT_LOADING) load_failed(t, st, details);
    if (resp != NULL) protobuf_c_message_free_unpacked(resp, NULL);
    pt_unref(t);
    return;
  }
  const Sluice__V1__NamespacePolicies *pol = ns->policies;
  sl_ml_opts mo = {0};
  if (pol != NULL) {
    t->dedup_on = pol->deduplication;
    t->max_redeliveries = pol->max_redeliveries;
    t->message_ttl_s = pol->message_ttl_seconds > 0 ? pol->message_ttl_seconds : 0;
    t->backlog_quota_bytes = pol->backlog_quota_bytes > 0 ? pol->backlog_quota_bytes : 0;
    t->backlog_policy = (int)pol->backlog_policy;
    if (pol->max_message_bytes > 0) t->max_message_bytes = pol->max_message_bytes;
    mo.policy.ensemble_size = pol->ensemble_size;
    mo.policy.write_quorum = pol->write_quorum;
    mo.policy.ack_quorum = pol->ack_quorum;
    mo.policy.rollover_entries = pol->ledger_rollover_entries;
    mo.policy.rollover_ms = (int64_t)pol->ledger_rollover_minutes * 60000;
    mo.policy.backlog_read_rate = pol->backlog_read_bytes_per_second;
    mo.policy.retention_ms =
        pol->retention_minutes < 0 ? -1 : pol->retention_minutes * 60000;
    mo.policy.retention_bytes =
        pol->retention_megabytes < 0 ? -1 : pol->retention_megabytes << 20;
  }
  protobuf_c_message_free_unpacked(resp, NULL);
  mo.policy.trim_interval_ms = opts(t)->trim_interval_ms;
  mo.ledgers = opts(t)->ledgers;
  mo.metadata = opts(t)->metadata;
  mo.partition = t->name;
  mo.epoch = t->epoch;
  mo.serial = t->serial;
  mo.metadata_timeout_ms = opts(t)->metadata_timeout_ms;
  mo.on_lost = ml_lost;
  mo.lost_arg = t;
  sl_err err = SL_ERR_INIT;
  /* The reference moves on to ml_opened. */
  if (sl_ml_open_async(&mo, ml_opened, t, &err) != SL_OK) {
    load_failed(t, SL_EINVAL, err.msg);
    pt_unref(t);
  }
}

static void load_run(void *arg) {
  ptask *k = arg;
  ptopic *t = k->t;
  const char *slash = strchr(t->name, '/');
  size_t ns_len = slash != NULL ? (size_t)(slash - t->name) : 0;
  char ns[SL_MD_NAME_MAX + 1];
  snprintf(ns, sizeof(ns), "%.*s", (int)ns_len, t->name);
  Sluice__V1__GetNamespaceRequest req = SLUICE__V1__GET_NAMESPACE_REQUEST__INIT;
  req.name = ns;
  sl_rpc_call_opts o = {0};
  o.timeout_ms = opts(t)->metadata_timeout_ms > 0 ? opts(t)->metadata_timeout_ms : 5000;
  o.serial = t->serial;
  sl_err err = SL_ERR_INIT;
  pt_ref(t);
  if (sl_rpc_unary_start(opts(t)->metadata, SL_METADATA_SERVICE_GET_NAMESPACE, &req.base,
                         &o, namespace_read, t, NULL, &err) != SL_OK) {
    load_failed(t, SL_EUNAVAIL, err.msg);
    pt_unref(t);
  }
  task_free(k);
}

/* The partition could not be loaded: the waiting producers get the status
 * and the next open tries again. Ownership stays (it is still ours). */
static void load_failed(ptopic *t, sl_status st, const char *details) {
  char msg[SL_ERR_MAX];
  snprintf(msg, sizeof(msg), "partition %s: cannot open its log: %s", t->name,
           details != NULL ? details : sl_status_str(st));
  sl_log(SL_LOG_WARN, "event=partition_load_failed partition=%s status=%s details=\"%s\"",
         t->name, sl_status_str(st), msg);
  if (fencing(st)) {
    pt_gone(t, st, msg);
    return;
  }
  t->state = PT_GONE;
  table_remove(t);
  end_all(t, st == SL_EREDIRECT ? SL_EUNAVAIL : st, msg);
  consume_gone(t, st == SL_EREDIRECT ? SL_EUNAVAIL : st, msg);
  sl_ml *ml = t->ml; /* opened, then the replay failed */
  t->ml = NULL;
  sl_ml_destroy(ml);
  if (t->unload_wanted) {
    sl_ownership *own = atomic_load(&t->p->own);
    if (own != NULL) sl_ownership_unloaded(own, t->name);
  }
}

void pt_attach(sl_produce *p, const char *partition, uint64_t epoch, pstream *ps) {
  ptopic *t = pt_get(p, partition, epoch);
  post(t, ps, attach_run);
  pt_unref(t);
}

ptopic *pt_get(sl_produce *p, const char *partition, uint64_t epoch) {
  pthread_mutex_lock(&p->mu);
  ptopic *t = sl_map_get(&p->topics, partition);
  bool fresh = t == NULL || t->epoch != epoch;
  if (fresh) {
    ptopic *old = t;
    t = sl_xcalloc(1, sizeof(*t));
    atomic_init(&t->refs, 1); /* the table's */
    t->p = p;
    t->name = strdup(partition);
    if (t->name == NULL) abort();
    int64_t index = -1;
    sl_md_check_partition(partition, NULL, &index, NULL);
    t->partition_index = (int32_t)index;
    t->epoch = epoch;
    if (sl_serial_create(&t->serial, NULL) != SL_OK) abort();
    t->state = PT_LOADING;
    t->dedup = sl_dedup_create(0);
    t->max_message_bytes = DEFAULT_MAX_MESSAGE;
    sl_timer_init(&t->group_timer, t->serial, group_timer_fired, t);
    if (sl_map_put(&p->topics, partition, t, NULL) != SL_OK) abort();
    /* An older epoch's partition still in the table is on its way out. */
    if (old != NULL) pt_unref(old);
  }
  pt_ref(t);
  pthread_mutex_unlock(&p->mu);
  if (fresh) post(t, NULL, load_run);
  return t;
}

void sl_produce_set_listener(sl_produce *p, const pt_listener *l) { p->listener = l; }

/* ---- unload and loss ---- */

static void ml_closed(sl_status st, const char *details, void *arg) {
  ptopic *t = arg;
  if (st != SL_OK)
    sl_log(SL_LOG_WARN, "event=partition_close_failed partition=%s status=%s details=\"%s\"",
           t->name, sl_status_str(st), details != NULL ? details : "");
  else
    sl_log(SL_LOG_INFO, "event=partition_unloaded partition=%s epoch=%llu", t->name,
           (unsigned long long)t->epoch);
  t->state = PT_GONE;
  table_remove(t);
  end_all(t, SL_EREDIRECT, "partition unloaded: look it up again");
  consume_gone(t, SL_EREDIRECT, "partition unloaded: look it up again");
  sl_ml *ml = t->ml;
  t->ml = NULL;
  sl_ml_destroy(ml);
  sl_ownership *own = atomic_load(&t->p->own);
  if (own != NULL) sl_ownership_unloaded(own, t->name);
  pt_unref(t);
}

static void pt_close_ml(ptopic *t) {
  sl_err err = SL_ERR_INIT;
  pt_ref(t);
  if (t->ml != NULL && sl_ml_terminated(t->ml)) {
    ml_closed(SL_OK, NULL, t); /* closed for good already */
    return;
  }
  if (t->ml == NULL || sl_ml_close_async(t->ml, ml_closed, t, &err) != SL_OK)
    ml_closed(SL_EPRECOND, err.msg, t);
}

static void unload_run(void *arg) {
  ptask *k = arg;
  ptopic *t = k->t;
  switch (t->state) {
    case PT_LOADING:
      t->unload_wanted = true; /* after loading */
      break;
    case PT_READY:
      t->unload_wanted = true;
      begin_closing(t); /* new sends are redirected from now on */
      flush(t);
      drain(t);
      break;
    case PT_CLOSING:
      break; /* already on its way */
    case PT_GONE: {
      /* Gone between the lookup and now: nothing to flush or close. */
      sl_ownership *own = atomic_load(&t->p->own);
      if (own != NULL) sl_ownership_unloaded(own, t->name);
      break;
    }
  }
  task_free(k);
}

static ptopic *find(sl_produce *p, const char *partition) {
  pthread_mutex_lock(&p->mu);
  ptopic *t = sl_map_get(&p->topics, partition);
  if (t != NULL) pt_ref(t);
  pthread_mutex_unlock(&p->mu);
  return t;
}

void pt_unload(sl_produce *p, const char *partition) {
  ptopic *t = find(p, partition);
  if (t == NULL) {
    sl_ownership *own = atomic_load(&p->own);
    if (own != NULL) sl_ownership_unloaded(own, partition);
    return;
  }
  post(t, NULL, unload_run);
  pt_unref(t);
}

/* ---- terminate ---- */

typedef struct pterm {
  ptopic *t;                 /* referenced */
  sl_ml_terminate_cb cb;
  void *arg;
} pterm;

static void pterm_finish(pterm *k, sl_status st, const char *msg, sl_ml_pos last) {
  k->cb(st, msg, last, k->arg);
  pt_unref(k->t);
  free(k);
}

static void terminate_done(sl_status st, const char *details, sl_ml_pos last, void *arg) {
  pterm *k = arg;
  ptopic *t = k->t;
  if (st == SL_OK) {
    char msg[SL_ERR_MAX];
    terminated_msg(t, msg, sizeof(msg));
    end_all(t, SL_EPRECOND, msg);
  }
  pterm_finish(k, st, details, last);
}

static void terminate_run(void *arg) {
  pterm *k = arg;
  ptopic *t = k->t;
  sl_err err = SL_ERR_INIT;
  sl_status st;
  switch (t->state) {
    case PT_READY:
      flush(t); /* what was accepted is stored before the flag */
      st = sl_ml_terminate_async(t->ml, terminate_done, k, &err);
      if (st == SL_OK) return;
      break;
    case PT_LOADING:
      st = sl_err_set(&err, SL_EBUSY, "partition %s is loading: ask again", t->name);
      break;
    default:
      st = sl_err_set(&err, SL_EUNAVAIL, "partition %s is moving: look it up again", t->name);
  }
  sl_ml_pos none = {0, -1};
  pterm_finish(k, st, err.msg, none);
}

void sl_produce_terminate(sl_produce *p, const char *partition, uint64_t epoch,
                          sl_ml_terminate_cb cb, void *arg) {
  pterm *k = sl_xcalloc(1, sizeof(*k));
  k->t = pt_get(p, partition, epoch); /* loads it if need be */
  k->cb = cb;
  k->arg = arg;
  sl_serial_post(k->t->serial, terminate_run, k);
}

typedef struct plost {
  ptopic *t; /* referenced */
  char why[128];
} plost;

static void lost_run(void *arg) {
  plost *k = arg;
  pt_gone(k->t, SL_EUNAVAIL, k->why);
  pt_unref(k->t);
  free(k);
}

void pt_lost(sl_produce *p, const char *partition, const char *why) {
  ptopic *t = find(p, partition);
  if (t == NULL) return;
  plost *k = sl_xcalloc(1, sizeof(*k));
  k->t = t; /* find's reference */
  snprintf(k->why, sizeof(k->why), "%s", why);
  sl_serial_post(t->serial, lost_run, k);
}

static void drop_run(void *arg) {
  ptask *k = arg;
  pt_gone(k->t, SL_ECANCELED, "broker stopping");
  task_free(k);
}

void pt_drop_all(sl_produce *p) {
  for (;;) {
    pthread_mutex_lock(&p->mu);
    sl_map_iter it = SL_MAP_ITER_INIT;
    void *v = NULL;
    bool any = sl_map_next(&p->topics, &it, NULL, &v);
    ptopic *t = v;
    if (any) pt_ref(t);
    pthread_mutex_unlock(&p->mu);
    if (!any) return;
    post(t, NULL, drop_run);
    /* drop_run removes it from the table; wait for that on this thread. */
    for (;;) {
      pthread_mutex_lock(&p->mu);
      bool still = sl_map_get(&p->topics, t->name) == t;
      pthread_mutex_unlock(&p->mu);
      if (!still) break;
      struct timespec ts = {0, 1000000};
      nanosleep(&ts, NULL);
    }
    pt_unref(t);
  }
}
