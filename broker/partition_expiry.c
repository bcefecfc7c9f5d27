/*
 * Expiry of one partition's messages (contract in partition_consume_int.h):
 * message TTL here, and the backlog quota's eviction (partition_quota.c)
 * through pc_expiry_expire_all.
 *
 * A pass
 *   1. with a TTL, finds `before`, the first entry published at or after
 *      now - TTL (broker/seek_time.h; when every message is older, the
 *      position just past the last entry);
 *   2. ListCursors names the subscriptions; those without a psub are kept
 *      as the idle list (name, type, mark-delete), which the quota reads;
 *   3. with a TTL, expire_all(before): every open subscription expires what
 *      is before it (sl_sub_expire); each idle one with entries before it
 *      gets a visit: its cursor is opened here, acked before `before` and
 *      closed, which persists the move (its idle entry then moves too).
 *
 * Invariants
 *  1. At most one pass at a time. A pass and each visit hold a partition
 *     reference until their last callback, and once the partition is gone
 *     (pc_expiry_gone cleared their pexpiry pointer) they only free
 *     themselves.
 *  2. A subscription is open (a psub) or visited, never both, so one cursor
 *     of it exists here at a time: a visit starts only for a name without a
 *     psub, and a stream that subscribes to a visited name is held until the
 *     visit's cursor is closed, then subscribes as usual.
 *  3. Nothing published less than TTL ago is expired, as long as publish
 *     times do not decrease along the partition (seek_time.h invariant 1).
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "broker/partition_consume_int.h"
#include "broker/seek_time.h"
#include "common/clock.h"
#include "common/log.h"
#include "metadata.slrpc.h"

#define PASS_MIN_MS 1000
#define PASS_MAX_MS 60000

typedef struct pass pass;
typedef struct visit visit;

typedef struct idle_sub {
  char *name;
  Sluice__V1__SubscriptionType type;
  sl_ml_pos md;              /* mark-delete as last listed or visited */
} idle_sub;

struct pexpiry {
  pconsume *pc;
  int64_t ttl_ms;            /* 0: no TTL (the state serves the quota) */
  int64_t next_ms;           /* monotonic time of the next pass */
  pass *pass;                /* the pass running, or NULL */
  visit *visits;             /* visits running */
  idle_sub *idle;            /* subscriptions without a psub when listed */
  size_t n_idle;
  bool idle_known;           /* a ListCursors answered */
};

struct pass {
  pexpiry *x;                /* NULL once the partition is gone */
  ptopic *t;                 /* referenced */
  bool expire;               /* the TTL found something to expire */
  sl_ml_pos before;
};

struct visit {
  visit *next;               /* in x->visits */
  pexpiry *x;                /* NULL once the partition is gone */
  ptopic *t;                 /* referenced */
  char *name;
  sl_ml_pos before;
  sl_cursor *cursor;         /* once opened */
  cstream *held;             /* streams waiting to subscribe; a reference
                                each (the partition's list reference) */
};

void pc_expiry_init(pconsume *pc, int64_t ttl_seconds, bool quota) {
  if (ttl_seconds <= 0 && !quota) return;
  pexpiry *x = sl_xcalloc(1, sizeof(*x));
  x->pc = pc;
  x->ttl_ms = ttl_seconds > 0 ? ttl_seconds * 1000 : 0;
  x->next_ms = sl_clock_mono_ms(); /* the first tick runs one */
  pc->expiry = x;
}

static int64_t interval_ms(const pexpiry *x) {
  if (x->ttl_ms == 0) return PASS_MAX_MS; /* only to refresh the idle list */
  int64_t every = x->ttl_ms / 4;
  return every < PASS_MIN_MS ? PASS_MIN_MS : every > PASS_MAX_MS ? PASS_MAX_MS : every;
}

static idle_sub *idle_find(pexpiry *x, const char *name) {
  for (size_t i = 0; i < x->n_idle; i++)
    if (strcmp(x->idle[i].name, name) == 0) return &x->idle[i];
  return NULL;
}

static void idle_clear(pexpiry *x) {
  for (size_t i = 0; i < x->n_idle; i++) free(x->idle[i].name);
  free(x->idle);
  x->idle = NULL;
  x->n_idle = 0;
}

/* ---- visits: subscriptions without a psub ---- */

static void visit_end(visit *v) {
  pexpiry *x = v->x;
  if (x != NULL) {
    for (visit **pp = &x->visits; *pp != NULL; pp = &(*pp)->next) {
      if (*pp == v) {
        *pp = v->next;
        break;
      }
    }
  }
  while (v->held != NULL) {
    cstream *cs = v->held;
    v->held = cs->next;
    cs->next = NULL;
    if (x != NULL) pc_subscribe_now(x->pc, cs); /* passes the reference on */
    else cs_unref(cs); /* ended by pc_expiry_gone */
  }
  pt_unref(v->t);
  free(v->name);
  free(v);
}

static void visit_closed(sl_status st, const char *details, void *arg) {
  visit *v = arg;
  if (st != SL_OK)
    sl_log(SL_LOG_WARN, "event=expiry_cursor_close_failed partition=%s subscription=%s "
           "status=%s details=\"%s\"", v->t->name, v->name, sl_status_str(st),
           details != NULL ? details : "");
  sl_cursor_destroy(v->cursor);
  visit_end(v);
}

static void visit_lost(sl_cursor *c, sl_status st, const char *details, void *arg) {
  (void)c;
  visit *v = arg;
  sl_log(SL_LOG_WARN, "event=expiry_cursor_lost partition=%s subscription=%s status=%s "
         "details=\"%s\"", v->t->name, v->name, sl_status_str(st), details ? details : "");
}

static void visit_opened(sl_status st, const char *details, sl_cursor *c, void *arg) {
  visit *v = arg;
  sl_err err = SL_ERR_INIT;
  v->cursor = c;
  if (st == SL_OK && v->x == NULL) {
    st = SL_ECANCELED; /* the partition went meanwhile */
  } else if (st == SL_OK) {
    /* Entries made durable while it opened (partition_consume.c inv. 3). */
    sl_ml_stats ms;
    sl_ml_stats_get(v->t->ml, &ms);
    if (ms.last_confirmed.entry_id >= 0) sl_cursor_extend(c, ms.last_confirmed, 0);
    sl_ml_pos was = sl_cursor_mark_delete(c);
    st = sl_cursor_ack_before(c, v->before, NULL, NULL, &err);
    idle_sub *is = st == SL_OK ? idle_find(v->x, v->name) : NULL;
    if (is != NULL) is->md = sl_cursor_mark_delete(c);
    if (st != SL_OK) details = err.msg;
    else if (sl_ml_pos_cmp(sl_cursor_mark_delete(c), was) > 0)
      sl_log(SL_LOG_INFO, "event=expired partition=%s subscription=%s before=%" PRIu64
             ":%" PRId64, v->t->name, v->name, v->before.ledger_id, v->before.entry_id);
  }
  if (st == SL_OK) {
    /* Closing flushes the move; visit_closed ends the visit. */
    st = sl_cursor_close_async(c, visit_closed, v, &err);
    if (st == SL_OK) return;
    details = err.msg;
  }
  if (st != SL_ECANCELED)
    sl_log(SL_LOG_WARN, "event=expiry_failed partition=%s subscription=%s status=%s "
           "details=\"%s\"", v->t->name, v->name, sl_status_str(st), details ? details : "");
  sl_cursor_destroy(c);
  visit_end(v);
}

static void visit_start(pexpiry *x, const char *name, Sluice__V1__SubscriptionType type,
                        sl_ml_pos before) {
  ptopic *t = x->pc->t;
  visit *v = sl_xcalloc(1, sizeof(*v));
  v->x = x;
  v->t = t;
  pt_ref(t);
  v->name = sl_xstrdup(name);
  v->before = before;
  v->next = x->visits;
  x->visits = v;
  sl_err err = SL_ERR_INIT;
  /* EARLIEST is for a new subscription: this one exists, its record
   * decides. */
  sl_status st = pc_cursor_open(t, v->name, (int)type, SL_CURSOR_EARLIEST, visit_lost,
                                visit_opened, v, &err);
  if (st != SL_OK) visit_opened(st, err.msg, NULL, v);
}

static visit *visit_find(pexpiry *x, const char *name) {
  for (visit *v = x->visits; v != NULL; v = v->next)
    if (strcmp(v->name, name) == 0) return v;
  return NULL;
}

bool pc_expiry_holds(pconsume *pc, cstream *cs) {
  visit *v = pc->expiry != NULL ? visit_find(pc->expiry, cs->o.subscription) : NULL;
  if (v == NULL) return false;
  cs->next = v->held;
  v->held = cs;
  return true;
}

/* ---- passes ---- */

static bool has_psub(pconsume *pc, const char *name) {
  for (psub *ps = pc->subs; ps != NULL; ps = ps->next)
    if (strcmp(ps->name, name) == 0) return true;
  return false;
}

static void pass_end(pass *p) {
  if (p->x != NULL) p->x->pass = NULL;
  pt_unref(p->t);
  free(p);
}

/* True when the chain holds an entry after md and before `before`: only
 * then has a subscription at md something to expire (a record may name a
 * mark-delete in a ledger trimmed since, which stands for the same place). */
static bool entries_between(const sl_ml_ledger_info *chain, size_t n, sl_ml_pos md,
                            sl_ml_pos before) {
  for (size_t i = 0; i < n; i++) {
    const sl_ml_ledger_info *l = &chain[i];
    if (l->ledger_id > before.ledger_id || l->ledger_id < md.ledger_id) continue;
    int64_t first = l->ledger_id == md.ledger_id ? md.entry_id + 1 : 0;
    int64_t end = l->ledger_id == before.ledger_id ? before.entry_id : l->entries;
    if (end > l->entries) end = l->entries;
    if (first < end) return true;
  }
  return false;
}

static bool has_cursor(pconsume *pc, const char *name) {
  for (psub *ps = pc->subs; ps != NULL; ps = ps->next)
    if (strcmp(ps->name, name) == 0) return ps->cursor != NULL;
  return false;
}

void pc_expiry_expire_all(pconsume *pc, sl_ml_pos before) {
  pexpiry *x = pc->expiry;
  ptopic *t = pc->t;
  for (psub *ps = pc->subs; ps != NULL; ps = ps->next) {
    if (ps->sub == NULL) continue;
    sl_err err = SL_ERR_INIT;
    sl_ml_pos was = sl_cursor_mark_delete(ps->cursor);
    if (sl_sub_expire(ps->sub, before, NULL, NULL, &err) != SL_OK)
      sl_log(SL_LOG_DEBUG, "event=expire_skipped partition=%s subscription=%s "
             "details=\"%s\"", t->name, ps->name, err.msg);
    else if (sl_ml_pos_cmp(sl_cursor_mark_delete(ps->cursor), was) > 0)
      sl_log(SL_LOG_INFO, "event=expired partition=%s subscription=%s before=%" PRIu64
             ":%" PRId64, t->name, ps->name, before.ledger_id, before.entry_id);
  }
  if (x == NULL) return;
  sl_ml_ledger_info *chain = NULL;
  size_t n = sl_ml_chain(t->ml, &chain);
  for (size_t i = 0; i < x->n_idle; i++) {
    idle_sub *is = &x->idle[i];
    if (has_psub(pc, is->name) || visit_find(x, is->name) != NULL) continue;
    if (entries_between(chain, n, is->md, before)) visit_start(x, is->name, is->type, before);
  }
  free(chain);
}

bool pc_expiry_slowest(pconsume *pc, sl_ml_pos *slowest, bool *any) {
  pexpiry *x = pc->expiry;
  *any = false;
  if (x == NULL || !x->idle_known) return false;
  for (psub *ps = pc->subs; ps != NULL; ps = ps->next) {
    if (ps->cursor == NULL) continue;
    sl_ml_pos md = sl_cursor_mark_delete(ps->cursor);
    if (!*any || sl_ml_pos_cmp(md, *slowest) < 0) *slowest = md;
    *any = true;
  }
  for (size_t i = 0; i < x->n_idle; i++) {
    if (has_cursor(pc, x->idle[i].name)) continue; /* its psub counts */
    if (!*any || sl_ml_pos_cmp(x->idle[i].md, *slowest) < 0) *slowest = x->idle[i].md;
    *any = true;
  }
  return true;
}

static void cursors_listed(sl_status st, const char *details, ProtobufCMessage *resp,
                           void *arg) {
  pass *p = arg;
  pexpiry *x = p->x;
  const Sluice__V1__ListCursorsResponse *r = (const void *)resp;
  if (st != SL_OK && x != NULL)
    sl_log(SL_LOG_WARN, "event=expiry_list_cursors_failed partition=%s status=%s "
           "details=\"%s\"", p->t->name, sl_status_str(st), details != NULL ? details : "");
  if (st == SL_OK && x != NULL) {
    idle_clear(x);
    x->idle = sl_xcalloc(r->n_cursors + 1, sizeof(idle_sub));
    for (size_t i = 0; i < r->n_cursors; i++) {
      const Sluice__V1__CursorInfo *ci = r->cursors[i];
      if (has_cursor(x->pc, ci->subscription)) continue;
      idle_sub *is = &x->idle[x->n_idle++];
      is->name = sl_xstrdup(ci->subscription);
      is->type = ci->type;
      is->md = (sl_ml_pos){ci->mark_delete ? ci->mark_delete->ledger_id : 0,
                           ci->mark_delete ? ci->mark_delete->entry_id : -1};
    }
    x->idle_known = true;
    if (p->expire) pc_expiry_expire_all(x->pc, p->before);
  }
  if (resp != NULL) protobuf_c_message_free_unpacked(resp, NULL);
  pass_end(p);
}

static void list_cursors(pass *p) {
  Sluice__V1__ListCursorsRequest req = SLUICE__V1__LIST_CURSORS_REQUEST__INIT;
  req.partition = p->t->name;
  const sl_produce_opts *po = &p->t->p->o;
  sl_rpc_call_opts o = {.timeout_ms = po->metadata_timeout_ms > 0 ? po->metadata_timeout_ms
                                                                   : 5000,
                        .serial = p->t->serial};
  sl_err err = SL_ERR_INIT;
  if (sl_rpc_unary_async(po->metadata, SL_METADATA_SERVICE_LIST_CURSORS, &req.base, &o,
                         cursors_listed, p, &err) != SL_OK)
    cursors_listed(SL_EUNAVAIL, err.msg, NULL, p);
}

static void found(sl_status st, const char *details, const sl_seek_time_result *r,
                  void *arg) {
  pass *p = arg;
  if (p->x == NULL) {
    pass_end(p);
    return;
  }
  if (st != SL_OK)
    sl_log(SL_LOG_WARN, "event=ttl_search_failed partition=%s status=%s details=\"%s\"",
           p->t->name, sl_status_str(st), details != NULL ? details : "");
  else if (!(r->at_end && r->pos.ledger_id == 0)) /* else an empty partition */
    p->expire = true, p->before = r->pos;
  list_cursors(p);
}

void pc_expiry_tick(pconsume *pc, int64_t now_ms) {
  pexpiry *x = pc->expiry;
  if (x == NULL || x->pass != NULL || now_ms < x->next_ms) return;
  x->next_ms = now_ms + interval_ms(x);
  ptopic *t = pc->t;
  pass *p = sl_xcalloc(1, sizeof(*p));
  p->x = x;
  p->t = t;
  pt_ref(t);
  x->pass = p;
  if (x->ttl_ms == 0) {
    list_cursors(p);
    return;
  }
  const sl_produce_opts *po = &t->p->o;
  sl_seek_time_opts so = {po->ledgers, po->metadata, t->name,
                          sl_clock_wall_ms() - x->ttl_ms, t->serial, po->metadata_timeout_ms};
  sl_err err = SL_ERR_INIT;
  if (sl_seek_time_async(&so, found, p, &err) != SL_OK) found(SL_EINVAL, err.msg, NULL, p);
}

void pc_expiry_gone(pconsume *pc, sl_status st, const char *msg) {
  pexpiry *x = pc->expiry;
  if (x == NULL) return;
  if (x->pass != NULL) x->pass->x = NULL;
  for (visit *v = x->visits; v != NULL; v = v->next) {
    v->x = NULL;
    for (cstream *cs = v->held; cs != NULL; cs = cs->next) cs_end(cs, st, msg, NULL);
  }
  pc->expiry = NULL;
  idle_clear(x);
  free(x);
}
