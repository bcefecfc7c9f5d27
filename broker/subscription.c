/* Subscription: dispatch loop over the dispatcher, the replay set and the
 * partition's ports. See subscription.h. */
#include "broker/subscription.h"

#include <stdlib.h>
#include <string.h>

#include "broker/subscription_replay.h"
#include "common/log.h"

/* An operation waiting for a port callback. destroy detaches it (s = NULL)
 * so a late callback only frees it. */
typedef enum op_kind { OP_READ, OP_REPLAY, OP_DEAD_LETTER } op_kind;

typedef struct sub_op {
  struct sub_op *next, *prev;   /* s->ops */
  sl_sub *s;
  op_kind kind;
  sl_msg_id id;                 /* OP_REPLAY, OP_DEAD_LETTER */
  uint32_t count;               /* OP_REPLAY: redelivery count */
  int32_t batch_size;           /* OP_DEAD_LETTER, once read */
  uint64_t entries;             /* OP_READ: entries seen */
  bool stop;                    /* OP_READ: nobody could take a message */
  bool found;                   /* OP_REPLAY, OP_DEAD_LETTER: entry seen */
  bool read_over;               /* OP_DEAD_LETTER: read's on_done ran */
  bool publishing;              /* OP_DEAD_LETTER: publish started, not done */
  sl_status publish_st;         /* OP_DEAD_LETTER: its outcome */
} sub_op;

struct sl_sub {
  char *name;
  sl_disp_type type;
  sl_sub_ports p;
  uint32_t max_redeliveries;
  int64_t nack_delay_ms;
  uint32_t max_read, max_held;
  sl_disp *disp;
  sl_replay *replay;
  sl_ml_pos read_pos;           /* next entry to read */
  int32_t read_batch;           /* next message within read_pos's entry */
  bool reading;                 /* an OP_READ or OP_REPLAY is in flight */
  bool caught_up;               /* the last read found nothing: wait for notify */
  int64_t now_ms;               /* of the call being served */
  int64_t back_delay_ms;        /* delay of messages handed back right now */
  sl_msg_id *dlq;               /* ids waiting to be dead-lettered */
  size_t n_dlq, cap_dlq;
  bool dlq_busy;                /* an OP_DEAD_LETTER is in flight */
  bool has_after;               /* this pass skips replay ids <= after */
  sl_msg_id after;
  sub_op *ops;
  sl_sub_stats st;
};

static void pump(sl_sub *s);

static sub_op *op_new(sl_sub *s, op_kind kind) {
  sub_op *op = sl_xcalloc(1, sizeof(*op));
  op->s = s;
  op->kind = kind;
  op->next = s->ops;
  if (s->ops) s->ops->prev = op;
  s->ops = op;
  return op;
}

/* Unlinks and frees op; returns its subscription (NULL if destroyed). */
static sl_sub *op_end(sub_op *op) {
  sl_sub *s = op->s;
  if (s != NULL) {
    if (op->prev) op->prev->next = op->next;
    else s->ops = op->next;
    if (op->next) op->next->prev = op->prev;
  }
  free(op);
  return s;
}

static void on_active(uint64_t consumer, bool active, void *arg) {
  sl_sub *s = arg;
  if (s->p.active) s->p.active(s->p.ctx, consumer, active);
}

static void dlq_push(sl_sub *s, sl_msg_id id) {
  if (s->n_dlq == s->cap_dlq) {
    s->cap_dlq = s->cap_dlq ? s->cap_dlq * 2 : 8;
    s->dlq = sl_xrealloc(s->dlq, s->cap_dlq * sizeof(*s->dlq));
  }
  s->dlq[s->n_dlq++] = id;
}

/* The dispatcher handed id back (leave, nack, timeout, active change). */
static void handed_back(sl_msg_id id, void *arg) {
  sl_sub *s = arg;
  switch (sl_replay_push(s->replay, id, s->now_ms + s->back_delay_ms)) {
    case SL_REPLAY_DEAD_LETTER: dlq_push(s, id); break;
    case SL_REPLAY_QUEUED:
    case SL_REPLAY_ALREADY: break;
  }
}

sl_status sl_sub_create(const sl_sub_opts *o, sl_sub **out, sl_err *err) {
  const sl_sub_ports *p = &o->ports;
  if (p->read == NULL || p->read_start == NULL || p->is_acked == NULL ||
      p->ack == NULL || p->ack_cumulative == NULL || p->ack_before == NULL ||
      p->deliver == NULL ||
      p->dead_letter == NULL)
    return sl_err_set(err, SL_EINVAL, "subscription %s: missing port",
                      o->name ? o->name : "");
  sl_sub *s = sl_xcalloc(1, sizeof(*s));
  sl_disp_opts d = {.type = o->type, .subscription = o->name,
                    .on_active = on_active, .active_arg = s};
  sl_status st = sl_disp_create(&d, &s->disp, err);
  if (st != SL_OK) {
    free(s);
    return st;
  }
  s->name = sl_xstrdup(o->name ? o->name : "");
  s->type = o->type;
  s->p = *p;
  s->max_redeliveries = o->max_redeliveries;
  s->nack_delay_ms = o->nack_delay_ms > 0 ? o->nack_delay_ms : 1000;
  s->max_read = o->max_read ? o->max_read : 100;
  s->max_held = o->max_held ? o->max_held : 10000;
  s->replay = sl_replay_create(o->max_redeliveries);
  s->read_pos = p->read_start(p->cursor_ctx);
  *out = s;
  return SL_OK;
}

void sl_sub_destroy(sl_sub *s) {
  if (s == NULL) return;
  for (sub_op *op = s->ops; op != NULL; op = op->next) op->s = NULL;
  sl_disp_destroy(s->disp);
  sl_replay_destroy(s->replay);
  free(s->dlq);
  free(s->name);
  free(s);
}

sl_disp_type sl_sub_type(const sl_sub *s) { return s->type; }
const char *sl_sub_name(const sl_sub *s) { return s->name; }
sl_ml_pos sl_sub_read_pos(const sl_sub *s) { return s->read_pos; }

/* ---- reading and offering ---- */

static Sluice__V1__StoredEntry *decode(sl_sub *s, sl_ml_pos pos, const void *data,
                                       size_t len) {
  Sluice__V1__StoredEntry *e = sluice__v1__stored_entry__unpack(NULL, len, data);
  if (e == NULL || e->n_messages == 0) {
    sl_log(SL_LOG_ERROR, "event=entry_undecodable subscription=%s ledger=%llu "
           "entry=%lld", s->name, (unsigned long long)pos.ledger_id,
           (long long)pos.entry_id);
    if (e) sluice__v1__stored_entry__free_unpacked(e, NULL);
    return NULL;
  }
  return e;
}

/* Offers one message; SL_OK delivered (or nothing to do), SL_EBUSY nobody
 * can take it now. */
static sl_status offer(sl_sub *s, sl_msg_id id, int32_t batch_size,
                       const Sluice__V1__StoredMessage *m, uint32_t count) {
  if (s->p.is_acked(s->p.cursor_ctx, id, batch_size)) {
    sl_replay_forget(s->replay, id);
    return SL_OK;
  }
  sl_disp_msg dm = {.id = id, .key = m->key, .key_len = m->key ? strlen(m->key) : 0};
  uint64_t consumer;
  sl_status st = sl_disp_pick(s->disp, &dm, s->now_ms, &consumer);
  if (st == SL_EEXIST) return SL_OK; /* already out at a consumer */
  if (st != SL_OK) return st;
  sl_sub_delivery d = {.id = id, .batch_size = batch_size, .msg = m,
                       .redelivery_count = count};
  s->st.delivered++;
  if (count > 0) s->st.redelivered++;
  s->p.deliver(s->p.ctx, consumer, &d);
  return SL_OK;
}

static void read_entry(sl_ml_pos pos, const void *data, size_t len, void *arg) {
  sub_op *op = arg;
  sl_sub *s = op->s;
  if (s == NULL || op->stop || sl_ml_pos_cmp(pos, s->read_pos) < 0) return;
  op->entries++;
  Sluice__V1__StoredEntry *e = decode(s, pos, data, len);
  int32_t first = sl_ml_pos_cmp(pos, s->read_pos) == 0 ? s->read_batch : 0;
  for (size_t i = (size_t)first; e != NULL && i < e->n_messages; i++) {
    sl_msg_id id = {pos.ledger_id, pos.entry_id, (int32_t)i};
    if (offer(s, id, (int32_t)e->n_messages, e->messages[i], 0) == SL_OK) continue;
    if (s->type == SL_DISP_KEY_SHARED &&
        sl_replay_queued(s->replay) < s->max_held) {
      sl_replay_hold(s->replay, id, s->now_ms);
      continue;
    }
    op->stop = true; /* resume at this message when someone can take it */
    s->read_pos = pos;
    s->read_batch = (int32_t)i;
    sluice__v1__stored_entry__free_unpacked(e, NULL);
    return;
  }
  if (e) sluice__v1__stored_entry__free_unpacked(e, NULL);
  s->read_pos.ledger_id = pos.ledger_id;
  s->read_pos.entry_id = pos.entry_id + 1;
  s->read_batch = 0;
}

static void read_done(sl_status st, void *arg) {
  sub_op *op = arg;
  bool nothing = op->entries == 0 && !op->stop;
  sl_sub *s = op_end(op);
  if (s == NULL) return;
  s->reading = false;
  if (st != SL_OK)
    sl_log(SL_LOG_WARN, "event=subscription_read_failed subscription=%s "
           "status=%s", s->name, sl_status_str(st));
  if (st != SL_OK || nothing) s->caught_up = true; /* retried on notify/tick */
  pump(s);
}

/* One entry read again for a queued message. */
static void replay_entry(sl_ml_pos pos, const void *data, size_t len, void *arg) {
  sub_op *op = arg;
  sl_sub *s = op->s;
  if (s == NULL || op->found || pos.ledger_id != op->id.ledger_id ||
      pos.entry_id != op->id.entry_id)
    return;
  op->found = true;
  Sluice__V1__StoredEntry *e = decode(s, pos, data, len);
  if (e == NULL || (size_t)op->id.batch_index >= e->n_messages) {
    sl_replay_forget(s->replay, op->id); /* nothing there to deliver */
  } else if (offer(s, op->id, (int32_t)e->n_messages,
                   e->messages[op->id.batch_index], op->count) != SL_OK) {
    /* Nobody can take it now; this pass goes on after it. */
    sl_replay_hold(s->replay, op->id, s->now_ms);
    s->has_after = true;
    s->after = op->id;
  }
  if (e) sluice__v1__stored_entry__free_unpacked(e, NULL);
}

static void replay_done(sl_status st, void *arg) {
  sub_op *op = arg;
  bool found = op->found;
  sl_msg_id id = op->id;
  sl_sub *s = op_end(op);
  if (s == NULL) return;
  s->reading = false;
  if (st != SL_OK) {
    sl_replay_hold(s->replay, id, s->now_ms + 1000); /* bookies away: later */
  } else if (!found) {
    sl_replay_forget(s->replay, id); /* trimmed or beyond the log */
  }
  pump(s);
}

static void start_read(sl_sub *s, sub_op *op, sl_ml_pos from, uint32_t max,
                       sl_sub_entry_cb on_entry, sl_sub_read_cb on_done) {
  s->reading = true;
  sl_status st = s->p.read(s->p.ctx, from, max, on_entry, on_done, op);
  if (st == SL_OK) return;
  s->reading = false;
  sl_log(SL_LOG_WARN, "event=subscription_read_refused subscription=%s status=%s",
         s->name, sl_status_str(st));
  if (op->kind == OP_REPLAY) sl_replay_hold(s->replay, op->id, s->now_ms + 1000);
  op_end(op);
  s->caught_up = true;
}

/* ---- dead letters ---- */

static void dead_letter_done(sl_status st, void *arg);

static void dead_letter_entry(sl_ml_pos pos, const void *data, size_t len,
                              void *arg) {
  sub_op *op = arg;
  sl_sub *s = op->s;
  if (s == NULL || op->found || pos.ledger_id != op->id.ledger_id ||
      pos.entry_id != op->id.entry_id)
    return;
  Sluice__V1__StoredEntry *e = decode(s, pos, data, len);
  if (e == NULL || (size_t)op->id.batch_index >= e->n_messages) {
    if (e) sluice__v1__stored_entry__free_unpacked(e, NULL);
    return;
  }
  op->found = true;
  op->batch_size = (int32_t)e->n_messages;
  sl_sub_delivery d = {.id = op->id, .batch_size = op->batch_size,
                       .msg = e->messages[op->id.batch_index],
                       .redelivery_count = sl_replay_count(s->replay, op->id)};
  op->publishing = true;
  op->publish_st = s->p.dead_letter(s->p.ctx, &d, dead_letter_done, op);
  if (op->publish_st != SL_OK) op->publishing = false;
  sluice__v1__stored_entry__free_unpacked(e, NULL);
}

/* Both the read and the publish (if it started) are over. */
static void dead_letter_finish(sub_op *op) {
  sl_msg_id id = op->id;
  int32_t batch_size = op->batch_size;
  bool found = op->found;
  sl_status st = op->publish_st; /* the read's outcome if not found */
  sl_sub *s = op_end(op);
  if (s == NULL) return;
  s->dlq_busy = false;
  if (!found && st == SL_OK) {
    sl_log(SL_LOG_WARN, "event=dead_letter_gone subscription=%s ledger=%llu "
           "entry=%lld", s->name, (unsigned long long)id.ledger_id,
           (long long)id.entry_id);
    sl_replay_forget(s->replay, id); /* trimmed: nothing left to move */
    return;
  }
  if (st != SL_OK) {
    sl_log(SL_LOG_WARN, "event=dead_letter_failed subscription=%s status=%s",
           s->name, sl_status_str(st));
    dlq_push(s, id); /* retried on the next tick */
    return;
  }
  s->st.dead_lettered++;
  sl_replay_forget(s->replay, id);
  sl_err err = SL_ERR_INIT;
  sl_status ast = s->p.ack(s->p.cursor_ctx, id, batch_size, NULL, NULL, &err);
  if (ast != SL_OK)
    sl_log(SL_LOG_WARN, "event=dead_letter_ack_failed subscription=%s error=%s",
           s->name, sl_err_msg(&err, ast));
  pump(s);
}

static void dead_letter_read_done(sl_status st, void *arg) {
  sub_op *op = arg;
  op->read_over = true;
  if (!op->found) op->publish_st = st;
  if (!op->publishing) dead_letter_finish(op);
}

static void dead_letter_done(sl_status st, void *arg) {
  sub_op *op = arg;
  op->publishing = false;
  op->publish_st = st;
  if (op->read_over) dead_letter_finish(op);
}

static void dead_letter_next(sl_sub *s) {
  if (s->dlq_busy || s->n_dlq == 0) return;
  sub_op *op = op_new(s, OP_DEAD_LETTER);
  op->id = s->dlq[0];
  memmove(s->dlq, s->dlq + 1, (s->n_dlq - 1) * sizeof(*s->dlq));
  s->n_dlq--;
  s->dlq_busy = true;
  sl_ml_pos pos = {op->id.ledger_id, op->id.entry_id};
  sl_status st = s->p.read(s->p.ctx, pos, 1, dead_letter_entry,
                           dead_letter_read_done, op);
  if (st != SL_OK) {
    dlq_push(s, op->id);
    s->dlq_busy = false;
    op_end(op);
  }
}

/* ---- the loop ---- */

static uint32_t read_budget(const sl_sub *s) {
  sl_disp_stats ds;
  sl_disp_stats_get(s->disp, &ds);
  uint64_t n = ds.permits < s->max_read ? ds.permits : s->max_read;
  return n > 0 ? (uint32_t)n : 1;
}

/* A change that may let held messages go: the next pass tries them all. */
static void changed(sl_sub *s) {
  s->has_after = false;
  pump(s);
}

static void pump(sl_sub *s) {
  dead_letter_next(s);
  while (!s->reading && sl_disp_can_dispatch(s->disp)) {
    sl_msg_id id;
    uint32_t count;
    if (sl_replay_pop_due(s->replay, s->now_ms, s->has_after ? &s->after : NULL,
                          &id, &count)) {
      sub_op *op = op_new(s, OP_REPLAY);
      op->id = id;
      op->count = count;
      sl_ml_pos pos = {id.ledger_id, id.entry_id};
      start_read(s, op, pos, 1, replay_entry, replay_done);
      continue;
    }
    if (s->caught_up) return;
    start_read(s, op_new(s, OP_READ), s->read_pos, read_budget(s), read_entry,
               read_done);
  }
}

/* ---- requests ---- */

sl_status sl_sub_add_consumer(sl_sub *s, const sl_disp_consumer *c,
                              sl_err *err) {
  s->back_delay_ms = 0;
  sl_status st = sl_disp_add(s->disp, c, handed_back, s, err);
  if (st == SL_OK) changed(s);
  return st;
}

void sl_sub_remove_consumer(sl_sub *s, uint64_t consumer) {
  s->back_delay_ms = 0;
  if (sl_disp_remove(s->disp, consumer, handed_back, s)) changed(s);
}

sl_status sl_sub_flow(sl_sub *s, uint64_t consumer, int64_t permits,
                      sl_err *err) {
  if (permits <= 0 || permits > UINT32_MAX)
    return sl_err_set(err, SL_EINVAL, "subscription %s: permits must be > 0 "
                      "(got %lld)", s->name, (long long)permits);
  sl_status st = sl_disp_flow(s->disp, consumer, (uint32_t)permits, err);
  if (st == SL_OK) changed(s);
  return st;
}

sl_status sl_sub_ack(sl_sub *s, sl_msg_id id, int32_t batch_size,
                     sl_sub_done_cb cb, void *arg, sl_err *err) {
  if (batch_size <= 0) batch_size = 1;
  if (id.batch_index < 0 || id.batch_index >= batch_size)
    return sl_err_set(err, SL_EINVAL, "subscription %s: batch index %d not in "
                      "a batch of %d", s->name, id.batch_index, batch_size);
  sl_status st = s->p.ack(s->p.cursor_ctx, id, batch_size, cb, arg, err);
  if (st != SL_OK) return st;
  sl_disp_ack(s->disp, id);
  sl_replay_forget(s->replay, id);
  changed(s);
  return SL_OK;
}

sl_status sl_sub_ack_cumulative(sl_sub *s, uint64_t consumer, sl_msg_id id,
                                sl_sub_done_cb cb, void *arg, sl_err *err) {
  if (s->type != SL_DISP_EXCLUSIVE && s->type != SL_DISP_FAILOVER)
    return sl_err_set(err, SL_EINVAL, "subscription %s: cumulative ack needs an "
                      "exclusive or failover subscription", s->name);
  sl_status st = s->p.ack_cumulative(s->p.cursor_ctx, id, cb, arg, err);
  if (st != SL_OK) return st;
  sl_disp_ack_upto(s->disp, consumer, id);
  sl_replay_forget_upto(s->replay, id);
  changed(s);
  return SL_OK;
}

sl_status sl_sub_expire(sl_sub *s, sl_ml_pos to, sl_sub_done_cb cb, void *arg,
                        sl_err *err) {
  sl_status st = s->p.ack_before(s->p.cursor_ctx, to, cb, arg, err);
  if (st != SL_OK) return st;
  /* The last possible message of the entry before `to`. */
  sl_msg_id last = {to.ledger_id, to.entry_id - 1, INT32_MAX};
  sl_replay_forget_upto(s->replay, last);
  if (sl_ml_pos_cmp(s->read_pos, to) < 0) {
    /* A read in flight from before `to` delivers nothing older than it
     * (read_entry skips entries before the read position). */
    s->read_pos = to;
    s->read_batch = 0;
  }
  s->has_after = false;
  s->caught_up = false;
  pump(s);
  return SL_OK;
}

bool sl_sub_nack(sl_sub *s, sl_msg_id id, int64_t delay_ms, int64_t now_ms) {
  s->now_ms = now_ms;
  s->back_delay_ms = delay_ms > 0 ? delay_ms : s->nack_delay_ms;
  bool known = sl_disp_release(s->disp, id, handed_back, s);
  s->back_delay_ms = 0;
  if (known) changed(s);
  return known;
}

int64_t sl_sub_tick(sl_sub *s, int64_t now_ms) {
  s->now_ms = now_ms;
  s->back_delay_ms = 0;
  sl_disp_expire(s->disp, now_ms, handed_back, s);
  s->caught_up = false; /* retry a failed read too */
  changed(s);
  int64_t due;
  return sl_replay_next_due(s->replay, &due) ? due : -1;
}

void sl_sub_notify(sl_sub *s, int64_t now_ms) {
  s->now_ms = now_ms;
  s->caught_up = false;
  pump(s);
}

void sl_sub_seek(sl_sub *s, sl_ml_pos to, int64_t now_ms) {
  s->now_ms = now_ms;
  /* Drop what is out: a read in flight delivers nothing more (its op is
   * detached), the dispatcher forgets the unacked. */
  for (sub_op *op = s->ops; op != NULL; op = op->next) {
    if (op->kind == OP_DEAD_LETTER) continue;
    op->s = NULL;
  }
  sub_op **pp = &s->ops;
  while (*pp != NULL) {
    if ((*pp)->s == NULL) {
      sub_op *gone = *pp;
      *pp = gone->next;
      if (*pp) (*pp)->prev = gone->prev;
      gone->next = gone->prev = NULL;
    } else {
      pp = &(*pp)->next;
    }
  }
  s->reading = false;
  sl_disp_forget_all(s->disp);
  sl_replay_clear(s->replay);
  s->read_pos = to;
  s->read_batch = 0;
  s->caught_up = false;
  changed(s);
}

void sl_sub_stats_get(const sl_sub *s, sl_sub_stats *out) {
  *out = s->st;
  sl_disp_stats ds;
  sl_disp_stats_get(s->disp, &ds);
  out->consumers = ds.consumers;
  out->unacked = ds.unacked;
  out->replay = sl_replay_queued(s->replay);
}
