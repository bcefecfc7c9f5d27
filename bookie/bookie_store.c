/* Design note: see bookie_store.h (life of an add, invariants, threads). */
#include "bookie/bookie_store.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bookie/disk_watcher.h"
#include "bookie/journal.h"
#include "bookie/ledger_table.h"
#include "bookie/entry_crypt.h"
#include "common/crc32c.h"
#include "common/log.h"
#include "common/metrics.h"

#define INSTANCE_FILE "INSTANCE"
#define ENCRYPTION_FILE "ENCRYPTION"

struct store_op;

/* In-memory state of one ledger. All fields under store->mu, except the
 * batch_* ones, which only the applier thread touches. */
typedef struct lstate {
  sl_ledger_meta meta;   /* durable state, as in ledger storage */
  bool persisted;        /* meta is in ledger storage */
  bool admit_fenced;     /* a fence was admitted (maybe not yet durable) */
  uint64_t admit_epoch;  /* highest epoch admitted */
  int64_t admit_last;    /* highest entry id admitted or stored */
  bool admit_has_key;    /* a key was admitted or stored (invariant 7) */
  uint8_t admit_key[SL_LEDGER_KEY_BYTES];
  bool admit_deleted;    /* a delete was admitted or stored (invariant 8) */
  uint32_t inflight;     /* admitted requests not yet completed */
  struct store_op **pending; /* admitted adds not yet applied */
  size_t npending, pending_cap;
  uint64_t batch_gen;    /* applier: batch that last touched it */
  sl_ledger_meta batch_meta; /* applier: meta after that batch */
} lstate;

typedef enum op_kind { OP_ADD, OP_FENCE, OP_LAC, OP_DELETE } op_kind;

typedef struct store_op {
  sl_journal_req jreq; /* first, so a journal req is a store_op */
  op_kind kind;
  lstate *l;
  bool is_new;         /* ADD: the entry was not stored or queued before */
  uint8_t key[SL_LEDGER_KEY_BYTES]; /* jreq.rec.key points here when this
                                       op records the ledger's key */
  sl_bookie_store_cb cb;
  void *arg;
  uint8_t *sealed;     /* ADD with encryption: the payload as stored */
} store_op;

static void op_free(store_op *op) {
  free(op->sealed);
  free(op);
}

/* A batch the journal has synced (or failed), waiting for the applier. */
typedef struct durable_batch {
  struct durable_batch *next;
  sl_journal_req *reqs;
  sl_status st;
  sl_journal_pos end;
  char msg[SL_ERR_MAX];
} durable_batch;

struct sl_bookie_store {
  sl_bookie_store_opts opts;
  char *dir;
  char *journal_dir;
  char *ledgers_dir;
  sl_ledger_storage *ls;
  sl_journal *j;
  sl_disk_watcher *dw;
  atomic_bool failed;

  pthread_mutex_t mu;       /* see the design note */
  pthread_cond_t idle_cv;   /* inflight dropped to 0 */
  sl_ledger_table ledgers;  /* id -> ledger* */
  uint64_t inflight;
  uint64_t inflight_bytes;  /* payload bytes of admitted, uncompleted adds */
  sl_journal_pos applied;   /* every record before it is in ledger storage */
  uint64_t bytes_since_ckpt;
  char failmsg[SL_ERR_MAX];

  pthread_mutex_t ckpt_mu;  /* serialises checkpoints; guards the two below */
  sl_journal_pos last_ckpt;
  uint64_t checkpoints;

  pthread_t maint;
  pthread_mutex_t maint_mu; /* guards maint_stop, maint_kick */
  pthread_cond_t maint_cv;
  bool maint_stop, maint_kick, maint_started;

  uint64_t replayed;        /* set once at open */
  uint8_t instance[SL_JOURNAL_INSTANCE_BYTES]; /* set once at open */
  char instance_hex[SL_BOOKIE_INSTANCE_ID_LEN];

  /* Metrics (NULL handles without a registry). */
  sl_metrics_histogram *m_ckpt_seconds;
  sl_metrics_callback *m_cbs[12];
  size_t n_m_cbs;

  /* Durable batches, from the journal thread to the applier thread. */
  pthread_t applier;
  pthread_mutex_t apply_mu; /* guards aq_*, apply_stop */
  pthread_cond_t apply_cv;
  struct durable_batch *aq_head, *aq_tail;
  bool apply_stop, applier_started;

  /* Applier thread only: scratch for one batch. */
  uint64_t batch_gen;
  sl_ls_op *ops;
  size_t ops_cap;
  lstate **touched;
  size_t touched_cap;
};

/* ---- ledgers ---- */

static lstate *ledger_new(uint64_t id) {
  lstate *l = sl_xcalloc(1, sizeof(*l));
  l->meta = (sl_ledger_meta){.ledger = id, .lac = -1, .last_entry = -1};
  l->admit_last = -1;
  return l;
}

static void ledger_free(lstate *l) {
  if (l == NULL) return;
  free(l->pending);
  free(l);
}

/* Makes the admission view match the durable one (open, replay). */
static void ledger_sync_admit(lstate *l) {
  l->admit_fenced = l->meta.fenced;
  l->admit_epoch = l->meta.max_epoch;
  l->admit_last = l->meta.last_entry;
  l->admit_has_key = l->meta.has_key;
  memcpy(l->admit_key, l->meta.key, sizeof(l->admit_key));
  l->admit_deleted = l->meta.deleted;
}

/* Finds or creates a ledger; *created says which. Under s->mu. */
static lstate *ledger_get_or_create(sl_bookie_store *s, uint64_t id, bool *created) {
  lstate *l = sl_ledger_table_get(&s->ledgers, id);
  *created = l == NULL;
  if (l == NULL) {
    l = ledger_new(id);
    sl_ledger_table_put(&s->ledgers, id, l);
  }
  return l;
}

/* Drops a ledger created for a request that was then refused. Under s->mu. */
static void ledger_drop_if_unused(sl_bookie_store *s, lstate *l, bool created) {
  if (created && l->inflight == 0 && !l->persisted) {
    sl_ledger_table_remove(&s->ledgers, l->meta.ledger);
    ledger_free(l);
  }
}

static void pending_push(lstate *l, store_op *op) {
  if (l->npending == l->pending_cap) {
    l->pending_cap = l->pending_cap ? l->pending_cap * 2 : 8;
    l->pending = sl_xrealloc(l->pending, l->pending_cap * sizeof(*l->pending));
  }
  l->pending[l->npending++] = op;
}

static void pending_remove(lstate *l, store_op *op) {
  for (size_t i = 0; i < l->npending; i++) {
    if (l->pending[i] == op) {
      l->pending[i] = l->pending[--l->npending];
      return;
    }
  }
  SL_ASSERT(!"pending op missing");
}

static void set_failed(sl_bookie_store *s, const char *msg) {
  pthread_mutex_lock(&s->mu);
  if (!atomic_load(&s->failed)) {
    snprintf(s->failmsg, sizeof(s->failmsg), "%s", msg);
    atomic_store(&s->failed, true);
    sl_log(SL_LOG_ERROR, "event=bookie_store_failed dir=%s err=\"%s\"", s->dir, msg);
  }
  pthread_mutex_unlock(&s->mu);
}

/* ---- applying durable records (applier thread, and replay at open) ---- */

static void ops_reserve(sl_bookie_store *s, size_t n) {
  if (n > s->ops_cap) {
    s->ops_cap = n;
    s->ops = sl_xrealloc(s->ops, n * sizeof(*s->ops));
  }
}

/* Applies one record's effect to a meta. */
static void meta_apply(sl_ledger_meta *m, const sl_journal_record *r, bool is_new) {
  if (r->epoch > m->max_epoch) m->max_epoch = r->epoch;
  if (r->key != NULL) { /* invariant 7: only the record that records it */
    m->has_key = true;
    memcpy(m->key, r->key, SL_LEDGER_KEY_BYTES);
  }
  switch (r->type) {
    case SL_JOURNAL_ADD:
      if (r->lac > m->lac) m->lac = r->lac;
      if (is_new) {
        m->entries++;
        m->bytes += r->len;
      }
      if (r->entry > m->last_entry) m->last_entry = r->entry;
      break;
    case SL_JOURNAL_FENCE:
      m->fenced = true;
      break;
    case SL_JOURNAL_LAC:
      if (r->lac > m->lac) m->lac = r->lac;
      break;
    case SL_JOURNAL_DELETE:
      /* Invariant 8: what is left is a tombstone. */
      *m = (sl_ledger_meta){.ledger = m->ledger, .lac = -1, .last_entry = -1,
                            .deleted = true};
      break;
    default:
      break;
  }
}

static sl_ls_op put_entry_op(const sl_journal_record *r) {
  sl_ls_op op = {SL_LS_PUT_ENTRY, r->ledger, r->entry, r->payload_crc, r->payload,
                 r->len, {0}};
  return op;
}

/* Builds one ledger-storage write for a whole batch and applies it. */
static sl_status apply_batch(sl_bookie_store *s, sl_journal_req *batch, sl_err *err) {
  uint64_t gen = ++s->batch_gen;
  size_t nops = 0, ntouched = 0, n = 0;
  for (sl_journal_req *r = batch; r != NULL; r = r->next) n++;
  ops_reserve(s, 2 * n);
  if (n > s->touched_cap) {
    s->touched_cap = n;
    s->touched = sl_xrealloc(s->touched, n * sizeof(*s->touched));
  }
  for (sl_journal_req *r = batch; r != NULL; r = r->next) {
    store_op *op = (store_op *)r;
    lstate *l = op->l;
    if (l->batch_gen != gen) {
      l->batch_gen = gen;
      l->batch_meta = l->meta; /* meta is written only by the applier */
      s->touched[ntouched++] = l;
    }
    if (op->kind == OP_ADD) s->ops[nops++] = put_entry_op(&r->rec);
    /* A delete is admitted only with nothing else in flight for its ledger,
     * so no entry of this batch is lost to it. */
    if (op->kind == OP_DELETE)
      s->ops[nops++] = (sl_ls_op){.kind = SL_LS_DELETE_LEDGER, .ledger = l->meta.ledger};
    meta_apply(&l->batch_meta, &r->rec, op->is_new);
  }
  /* After the deletes: a deleted ledger's state is rewritten as a tombstone. */
  for (size_t i = 0; i < ntouched; i++) {
    lstate *l = s->touched[i];
    s->ops[nops++] = (sl_ls_op){.kind = SL_LS_PUT_META, .meta = l->batch_meta};
  }
  return sl_ledger_storage_write(s->ls, s->ops, nops, NULL, err);
}

static void kick_maintenance(sl_bookie_store *s) {
  pthread_mutex_lock(&s->maint_mu);
  s->maint_kick = true;
  pthread_cond_signal(&s->maint_cv);
  pthread_mutex_unlock(&s->maint_mu);
}

/* Updates memory after a batch (applied or failed); returns the number of
 * requests completed. Under s->mu. */
static void finish_batch_locked(sl_bookie_store *s, sl_journal_req *batch, bool ok,
                                sl_journal_pos end) {
  uint64_t n = 0, bytes = 0;
  for (sl_journal_req *r = batch; r != NULL; r = r->next) {
    store_op *op = (store_op *)r;
    lstate *l = op->l;
    if (op->kind == OP_ADD) {
      pending_remove(l, op);
      s->inflight_bytes -= r->rec.len;
    }
    l->inflight--;
    bytes += sl_journal_record_bytes(&r->rec);
    n++;
    if (!ok) continue;
    l->meta = l->batch_meta;
    l->persisted = true;
  }
  if (ok) {
    s->applied = end;
    s->bytes_since_ckpt += bytes;
  }
  s->inflight -= n;
  if (s->inflight == 0) pthread_cond_broadcast(&s->idle_cv);
}

/* Applies one durable batch, updates memory, runs the callbacks (applier). */
static void complete_batch(sl_bookie_store *s, sl_journal_req *batch, sl_status st,
                           const char *msg, sl_journal_pos end) {
  sl_err err = SL_ERR_INIT;
  if (st == SL_OK) {
    st = apply_batch(s, batch, &err);
    if (st != SL_OK) {
      msg = err.msg;
      set_failed(s, msg);
    }
  } else {
    set_failed(s, msg);
  }
  if (st != SL_OK) st = SL_EFAILED; /* the store needs a restart now */
  pthread_mutex_lock(&s->mu);
  finish_batch_locked(s, batch, st == SL_OK, end);
  bool kick = s->bytes_since_ckpt >= s->opts.checkpoint_bytes;
  pthread_mutex_unlock(&s->mu);
  if (kick) kick_maintenance(s);
  /* The requests are ours again; nothing else references them. */
  while (batch != NULL) {
    store_op *op = (store_op *)batch;
    batch = batch->next;
    op->cb(st, st == SL_OK ? "" : msg, op->arg);
    op_free(op);
  }
}

/* The journal's on_durable (journal thread): hand the batch to the applier,
 * so that the next write and fdatasync overlap with this batch's leveldb
 * write and callbacks. */
static void on_durable(sl_journal_req *batch, sl_status st, const char *msg,
                       sl_journal_pos end, void *arg) {
  sl_bookie_store *s = arg;
  durable_batch *d = sl_xmalloc(sizeof(*d));
  d->next = NULL;
  d->reqs = batch;
  d->st = st;
  d->end = end;
  snprintf(d->msg, sizeof(d->msg), "%s", msg);
  pthread_mutex_lock(&s->apply_mu);
  if (s->aq_tail != NULL) {
    s->aq_tail->next = d;
  } else {
    s->aq_head = d;
    pthread_cond_signal(&s->apply_cv);
  }
  s->aq_tail = d;
  pthread_mutex_unlock(&s->apply_mu);
}

/* Applies batches in journal order until stopped and drained. */
static void *applier_main(void *arg) {
  sl_bookie_store *s = arg;
  (void)pthread_setname_np(pthread_self(), "bookie-apply");
  pthread_mutex_lock(&s->apply_mu);
  for (;;) {
    while (s->aq_head == NULL && !s->apply_stop) pthread_cond_wait(&s->apply_cv, &s->apply_mu);
    durable_batch *d = s->aq_head;
    if (d == NULL) break;
    s->aq_head = d->next;
    if (s->aq_head == NULL) s->aq_tail = NULL;
    pthread_mutex_unlock(&s->apply_mu);
    complete_batch(s, d->reqs, d->st, d->msg, d->end);
    free(d);
    pthread_mutex_lock(&s->apply_mu);
  }
  pthread_mutex_unlock(&s->apply_mu);
  return NULL;
}

static void stop_applier(sl_bookie_store *s) {
  if (!s->applier_started) return;
  pthread_mutex_lock(&s->apply_mu);
  s->apply_stop = true;
  pthread_cond_broadcast(&s->apply_cv);
  pthread_mutex_unlock(&s->apply_mu);
  pthread_join(s->applier, NULL);
  s->applier_started = false;
}

/* Replays one journal record into ledger storage (open, single-threaded). */
static sl_status replay_record(const sl_journal_record *r, sl_journal_pos pos,
                               void *arg) {
  (void)pos;
  sl_bookie_store *s = arg;
  bool created;
  lstate *l = ledger_get_or_create(s, r->ledger, &created);
  sl_ls_op ops[2];
  size_t n = 0;
  bool is_new = false;
  sl_status st;
  if (r->type == SL_JOURNAL_DELETE)
    ops[n++] = (sl_ls_op){.kind = SL_LS_DELETE_LEDGER, .ledger = r->ledger};
  if (r->type == SL_JOURNAL_ADD) {
    sl_ledger_entry e = SL_LEDGER_ENTRY_INIT;
    st = sl_ledger_storage_get_entry(s->ls, r->ledger, r->entry, &e, NULL);
    sl_ledger_entry_release(&e);
    /* A corrupt stored copy is rewritten from the journal, not counted. */
    if (st != SL_OK && st != SL_ENOTFOUND && st != SL_ECORRUPT) return st;
    is_new = st == SL_ENOTFOUND;
    ops[n++] = put_entry_op(r);
  }
  sl_ledger_meta m = l->meta;
  meta_apply(&m, r, is_new);
  ops[n++] = (sl_ls_op){.kind = SL_LS_PUT_META, .meta = m};
  st = sl_ledger_storage_write(s->ls, ops, n, NULL, NULL);
  if (st != SL_OK) return st;
  l->meta = m;
  l->persisted = true;
  return SL_OK;
}

/* ---- checkpoints ---- */

sl_status sl_bookie_store_checkpoint(sl_bookie_store *s, sl_err *err) {
  SL_ASSERT(s != NULL);
  sl_status st = SL_OK;
  pthread_mutex_lock(&s->ckpt_mu);
  uint64_t t0 = sl_metrics_now_ns();
  pthread_mutex_lock(&s->mu);
  sl_journal_pos pos = s->applied;
  s->bytes_since_ckpt = 0;
  pthread_mutex_unlock(&s->mu);
  if (atomic_load(&s->failed)) {
    st = sl_err_set(err, SL_EIO, "bookie store %s: failed earlier", s->dir);
    goto out;
  }
  if (sl_journal_pos_cmp(pos, s->last_ckpt) <= 0) goto out;
  /* Invariant 6: the synced write makes everything applied so far durable
   * in ledger storage, and records where replay must begin. */
  st = sl_ledger_storage_write(s->ls, NULL, 0, &pos, err);
  if (st != SL_OK) {
    set_failed(s, err != NULL ? err->msg : "checkpoint write failed");
    goto out;
  }
  /* A lost marker only makes the journal less self-describing. */
  (void)sl_journal_mark_checkpoint(s->j, pos, NULL);
  st = sl_journal_release(s->j, pos, err);
  s->last_ckpt = pos;
  s->checkpoints++;
  sl_metrics_histogram_observe_since(s->m_ckpt_seconds, t0);
  sl_log(SL_LOG_DEBUG, "event=checkpoint segment=%" PRIu64 " offset=%" PRIu64,
         pos.segment, pos.offset);
out:
  pthread_mutex_unlock(&s->ckpt_mu);
  return st;
}

static void *maintenance_main(void *arg) {
  sl_bookie_store *s = arg;
  (void)pthread_setname_np(pthread_self(), "bookie-maint");
  pthread_mutex_lock(&s->maint_mu);
  while (!s->maint_stop) {
    if (!s->maint_kick) {
      struct timespec ts;
      clock_gettime(CLOCK_MONOTONIC, &ts);
      long ms = s->opts.checkpoint_interval_ms;
      ts.tv_sec += ms / 1000;
      ts.tv_nsec += (ms % 1000) * 1000000L;
      if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
      }
      /* A timeout and a kick both mean: checkpoint now. */
      (void)pthread_cond_timedwait(&s->maint_cv, &s->maint_mu, &ts);
      if (s->maint_stop) break;
    }
    s->maint_kick = false;
    pthread_mutex_unlock(&s->maint_mu);
    sl_err err = SL_ERR_INIT;
    if (sl_bookie_store_checkpoint(s, &err) != SL_OK) {
      sl_log(SL_LOG_WARN, "event=checkpoint_failed err=\"%s\"", err.msg);
    }
    pthread_mutex_lock(&s->maint_mu);
  }
  pthread_mutex_unlock(&s->maint_mu);
  return NULL;
}

/* ---- open / close ---- */

static sl_status load_meta(const sl_ledger_meta *m, void *arg) {
  sl_bookie_store *s = arg;
  lstate *l = ledger_new(m->ledger);
  l->meta = *m;
  l->persisted = true;
  sl_ledger_table_put(&s->ledgers, m->ledger, l);
  return SL_OK;
}

/* ---- instance id ---- */

static char *path_join(const char *a, const char *b) {
  size_t n = strlen(a) + strlen(b) + 2;
  char *p = sl_xmalloc(n);
  snprintf(p, n, "%s/%s", a, b);
  return p;
}

static void hex_encode(const uint8_t *b, size_t n, char *out) {
  static const char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = digits[b[i] >> 4];
    out[2 * i + 1] = digits[b[i] & 15];
  }
  out[2 * n] = '\0';
}

static int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

/* Reads dir/INSTANCE into id; *found says whether the file exists. */
static sl_status read_instance(const char *dir, uint8_t id[SL_JOURNAL_INSTANCE_BYTES],
                               bool *found, sl_err *err) {
  char *path = path_join(dir, INSTANCE_FILE);
  char buf[2 * SL_JOURNAL_INSTANCE_BYTES + 2];
  sl_status st = SL_OK;
  *found = false;
  FILE *f = fopen(path, "r");
  if (f == NULL) {
    if (errno != ENOENT)
      st = sl_err_set(err, SL_EIO, "bookie store: %s: %s", path, strerror(errno));
    goto out;
  }
  size_t n = fread(buf, 1, sizeof(buf), f);
  fclose(f);
  *found = true;
  bool ok = n == sizeof(buf) - 1 && buf[sizeof(buf) - 2] == '\n';
  for (size_t i = 0; ok && i < SL_JOURNAL_INSTANCE_BYTES; i++) {
    int hi = hex_digit(buf[2 * i]), lo = hex_digit(buf[2 * i + 1]);
    ok = hi >= 0 && lo >= 0;
    id[i] = (uint8_t)(hi << 4 | lo);
  }
  if (!ok) st = sl_err_set(err, SL_ECORRUPT, "bookie store: %s: malformed instance id", path);
out:
  free(path);
  return st;
}

/* Writes dir/INSTANCE durably: a temporary file, fsync, rename, fsync dir. */
static sl_status write_line(const char *dir, const char *name, const char *text,
                            sl_err *err) {
  char *path = path_join(dir, name);
  char tmpname[64];
  snprintf(tmpname, sizeof(tmpname), "%s.tmp", name);
  char *tmp = path_join(dir, tmpname);
  sl_status st = SL_OK;
  int fd = open(tmp, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0644);
  if (fd < 0) {
    st = sl_err_set(err, SL_EIO, "bookie store: %s: %s", tmp, strerror(errno));
    goto out;
  }
  char line[128];
  int n = snprintf(line, sizeof(line), "%s\n", text);
  bool ok = write(fd, line, (size_t)n) == n && fsync(fd) == 0;
  ok = close(fd) == 0 && ok;
  ok = ok && rename(tmp, path) == 0;
  int dfd = ok ? open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
  ok = dfd >= 0 && fsync(dfd) == 0;
  if (dfd >= 0) close(dfd);
  if (!ok) st = sl_err_set(err, SL_EIO, "bookie store: %s: %s", path, strerror(errno));
out:
  free(tmp);
  free(path);
  return st;
}

static sl_status write_instance(const char *dir, const char *hex, sl_err *err) {
  return write_line(dir, INSTANCE_FILE, hex, err);
}

/* Whether the store holds anything a new instance id would disown. Before
 * replay: ledger states loaded, checkpoint read, journal segments listed. */
static bool store_has_data(sl_bookie_store *s, sl_journal_pos ckpt) {
  sl_journal_stats js;
  sl_journal_get_stats(s->j, &js);
  return s->ledgers.count > 0 || ckpt.segment != 0 || js.segments > 0;
}

/* Loads, checks or creates the instance id (see the design note). */
static sl_status setup_instance(sl_bookie_store *s, sl_journal_pos ckpt, sl_err *err) {
  uint8_t lid[SL_JOURNAL_INSTANCE_BYTES], jid[SL_JOURNAL_INSTANCE_BYTES];
  bool lfound, jfound;
  sl_status st = read_instance(s->ledgers_dir, lid, &lfound, err);
  if (st == SL_OK) st = read_instance(s->journal_dir, jid, &jfound, err);
  if (st != SL_OK) return st;
  bool has_data = store_has_data(s, ckpt);
  if (lfound && jfound && memcmp(lid, jid, sizeof(lid)) != 0) {
    return sl_err_set(err, SL_ECORRUPT, "bookie store %s: journal and ledger dirs of "
                      "different bookie instances", s->dir);
  }
  if (lfound != jfound && has_data) {
    return sl_err_set(err, SL_ECORRUPT, "bookie store %s: %s dir has no instance id, "
                      "%s dir has: one was wiped", s->dir, lfound ? "journal" : "ledger",
                      lfound ? "ledger" : "journal");
  }
  if (lfound || jfound) {
    memcpy(s->instance, lfound ? lid : jid, sizeof(s->instance));
  } else if (getrandom(s->instance, sizeof(s->instance), 0) != (ssize_t)sizeof(s->instance)) {
    return sl_err_set(err, SL_EIO, "bookie store %s: getrandom: %s", s->dir, strerror(errno));
  }
  hex_encode(s->instance, sizeof(s->instance), s->instance_hex);
  if (!lfound) st = write_instance(s->ledgers_dir, s->instance_hex, err);
  if (st == SL_OK && !jfound) st = write_instance(s->journal_dir, s->instance_hex, err);
  if (st == SL_OK && !(lfound && jfound)) {
    sl_log(SL_LOG_INFO, "event=bookie_instance_created dir=%s instance=%s had_data=%d",
           s->dir, s->instance_hex, (int)has_data);
  }
  return st;
}

/* Encryption at rest is a property of the whole store, recorded as the
 * key's fingerprint in ledgers/ENCRYPTION: it starts only on an empty
 * store, and a store opens only with the key it was written with (or,
 * unencrypted, with none), so no entry is ever read with the wrong key or
 * as plaintext when it is not. */
static sl_status setup_encryption(sl_bookie_store *s, sl_journal_pos ckpt, sl_err *err) {
  char *path = path_join(s->ledgers_dir, ENCRYPTION_FILE);
  char recorded[SL_ENTRY_CRYPT_FINGERPRINT_LEN + 2] = "";
  FILE *f = fopen(path, "r");
  free(path);
  if (f != NULL) {
    if (fgets(recorded, sizeof(recorded), f) == NULL) recorded[0] = '\0';
    fclose(f);
    recorded[strcspn(recorded, "\n")] = '\0';
  }
  const sl_entry_crypt *c = s->opts.crypt;
  if (c == NULL && f == NULL) return SL_OK;
  if (c == NULL)
    return sl_err_set(err, SL_EINVAL, "bookie store %s: its entries are encrypted; start it "
                      "with the key it was written with (encryption_key_file)", s->dir);
  char fp[SL_ENTRY_CRYPT_FINGERPRINT_LEN];
  sl_entry_crypt_fingerprint(c, fp);
  if (f != NULL && strcmp(recorded, fp) != 0)
    return sl_err_set(err, SL_EINVAL, "bookie store %s: encrypted with another key", s->dir);
  if (f != NULL) return SL_OK;
  if (store_has_data(s, ckpt))
    return sl_err_set(err, SL_EINVAL, "bookie store %s: holds unencrypted entries; "
                      "encryption can only start on an empty store", s->dir);
  sl_log(SL_LOG_INFO, "event=bookie_encryption_on dir=%s", s->dir);
  return write_line(s->ledgers_dir, ENCRYPTION_FILE, fp, err);
}

const char *sl_bookie_store_instance_id(const sl_bookie_store *s) {
  return s->instance_hex;
}

/* ---- metrics ---- */

static double m_ledgers(void *arg) {
  sl_bookie_store_info i;
  sl_bookie_store_info_get(arg, &i);
  return (double)i.ledgers;
}
static double m_entries(void *arg) {
  sl_bookie_store_info i;
  sl_bookie_store_info_get(arg, &i);
  return (double)i.entries;
}
static double m_entry_bytes(void *arg) {
  sl_bookie_store_info i;
  sl_bookie_store_info_get(arg, &i);
  return (double)i.entry_bytes;
}
static double m_journal_bytes(void *arg) {
  sl_bookie_store_info i;
  sl_bookie_store_info_get(arg, &i);
  return (double)i.journal_bytes;
}
static double m_disk_used(void *arg) {
  sl_bookie_store_info i;
  sl_bookie_store_info_get(arg, &i);
  return (double)(i.total_bytes - i.free_bytes);
}
static double m_disk_total(void *arg) {
  sl_bookie_store_info i;
  sl_bookie_store_info_get(arg, &i);
  return (double)i.total_bytes;
}
static double m_read_only(void *arg) {
  sl_bookie_store_info i;
  sl_bookie_store_info_get(arg, &i);
  return i.readonly || i.failed ? 1.0 : 0.0;
}

static sl_ledger_storage_stats ls_stats(void *arg) {
  sl_ledger_storage_stats st;
  sl_ledger_storage_stats_get(((sl_bookie_store *)arg)->ls, &st);
  return st;
}
static double m_el_files(void *arg) { return (double)ls_stats(arg).entry_log_files; }
static double m_el_bytes(void *arg) { return (double)ls_stats(arg).entry_log_bytes; }
static double m_gc_removed(void *arg) { return (double)ls_stats(arg).gc_removed_files; }
static double m_gc_compacted(void *arg) { return (double)ls_stats(arg).gc_compacted_bytes; }

static const struct {
  sl_metrics_type kind;
  const char *name, *help;
  double (*fn)(void *);
} kGauges[] = {
    {SL_METRICS_GAUGE, "sluice_bookie_ledgers", "ledgers stored (tombstones left out)", m_ledgers},
    {SL_METRICS_GAUGE, "sluice_bookie_entries", "entries stored", m_entries},
    {SL_METRICS_GAUGE, "sluice_bookie_entry_bytes", "payload bytes of the entries stored", m_entry_bytes},
    {SL_METRICS_GAUGE, "sluice_bookie_journal_uncheckpointed_bytes",
     "journal bytes written since the last checkpoint (what a restart replays)",
     m_journal_bytes},
    {SL_METRICS_GAUGE, "sluice_bookie_disk_used_bytes", "bytes used on the ledger disk (or quota)", m_disk_used},
    {SL_METRICS_GAUGE, "sluice_bookie_disk_total_bytes", "size of the ledger disk (or quota)", m_disk_total},
    {SL_METRICS_GAUGE, "sluice_bookie_read_only", "1 while the bookie refuses new adds (disk nearly "
     "full, or failed), else 0", m_read_only},
    {SL_METRICS_GAUGE, "sluice_bookie_entry_log_files", "entry log files on disk",
     m_el_files},
    {SL_METRICS_GAUGE, "sluice_bookie_entry_log_bytes",
     "size of the entry log files (live and garbage)", m_el_bytes},
    {SL_METRICS_COUNTER, "sluice_bookie_entry_log_gc_removed_files_total",
     "entry log files removed by garbage collection", m_gc_removed},
    {SL_METRICS_COUNTER, "sluice_bookie_entry_log_gc_compacted_bytes_total",
     "live payload bytes copied out of sparse entry log files", m_gc_compacted},
};

static sl_status register_metrics(sl_bookie_store *s, sl_err *err) {
  sl_metrics *m = s->opts.metrics;
  if (m == NULL) return SL_OK;
  SL_ASSERT(sizeof(kGauges) / sizeof(kGauges[0]) <= sizeof(s->m_cbs) / sizeof(s->m_cbs[0]));
  sl_status st = sl_metrics_register_histogram(
      m, "sluice_bookie_checkpoint_seconds",
      "duration of one checkpoint (ledger storage flush and sync)", NULL, NULL, 0,
      &s->m_ckpt_seconds, err);
  for (size_t i = 0; st == SL_OK && i < sizeof(kGauges) / sizeof(kGauges[0]); i++) {
    st = sl_metrics_register_callback(m, kGauges[i].kind, kGauges[i].name,
                                      kGauges[i].help, NULL, kGauges[i].fn, s,
                                      &s->m_cbs[s->n_m_cbs], err);
    if (st == SL_OK) s->n_m_cbs++;
  }
  return st;
}

static void unregister_metrics(sl_bookie_store *s) {
  for (size_t i = 0; i < s->n_m_cbs; i++)
    sl_metrics_unregister_callback(s->opts.metrics, s->m_cbs[i]);
  s->n_m_cbs = 0;
}

static void on_disk_change(bool readonly, void *arg) {
  sl_bookie_store *s = arg;
  if (s->opts.on_readonly_change != NULL) s->opts.on_readonly_change(readonly, s->opts.arg);
}

static sl_status check_opts(const char *dir, const sl_bookie_store_opts *o, sl_err *err) {
  if (o->max_entry_bytes == 0 || o->max_entry_bytes > (256u << 20) ||
      o->journal_segment_bytes < 4096 || o->journal_max_batch_bytes == 0 ||
      o->checkpoint_interval_ms <= 0 || o->checkpoint_bytes == 0 ||
      o->disk_interval_ms <= 0 || !(o->disk_floor_pct > 0 && o->disk_floor_pct <= 100) ||
      o->max_inflight_bytes == 0) {
    return sl_err_set(err, SL_EINVAL, "bookie store %s: bad options (entry size "
                      "1..256 MiB, segment >= 4096, intervals > 0, floor 0..100%%)", dir);
  }
  return SL_OK;
}

static void store_free(sl_bookie_store *s) {
  for (size_t i = 0; i < s->ledgers.cap; i++) ledger_free(s->ledgers.vals[i]);
  sl_ledger_table_release(&s->ledgers);
  pthread_mutex_destroy(&s->mu);
  pthread_cond_destroy(&s->idle_cv);
  pthread_mutex_destroy(&s->ckpt_mu);
  pthread_mutex_destroy(&s->maint_mu);
  pthread_cond_destroy(&s->maint_cv);
  pthread_mutex_destroy(&s->apply_mu);
  pthread_cond_destroy(&s->apply_cv);
  free(s->ops);
  free(s->touched);
  free(s->dir);
  free(s->journal_dir);
  free(s->ledgers_dir);
  free(s);
}

static sl_status open_storage_and_replay(sl_bookie_store *s, sl_err *err) {
  sl_status st = sl_ledger_storage_leveldb_open(s->ledgers_dir, &s->opts.leveldb,
                                                &s->ls, err);
  if (st != SL_OK) return st;
  sl_journal_pos from;
  if ((st = sl_ledger_storage_scan_meta(s->ls, load_meta, s, err)) != SL_OK) return st;
  if ((st = sl_ledger_storage_get_checkpoint(s->ls, &from, err)) != SL_OK) return st;
  sl_journal_opts jo = SL_JOURNAL_OPTS_INIT;
  jo.dir = s->journal_dir;
  jo.segment_bytes = s->opts.journal_segment_bytes;
  /* Sealed entries (encryption at rest) carry their tag too. */
  jo.max_record_bytes = s->opts.max_entry_bytes + SL_ENTRY_CRYPT_OVERHEAD;
  jo.max_batch_bytes = s->opts.journal_max_batch_bytes;
  jo.on_durable = on_durable;
  jo.arg = s;
  jo.sync_hook = s->opts.sync_hook;
  jo.hook_arg = s->opts.hook_arg;
  jo.instance_id = s->instance; /* filled in just below, before replay */
  jo.metrics = s->opts.metrics;
  if ((st = sl_journal_open(&jo, &s->j, err)) != SL_OK) return st;
  if ((st = setup_instance(s, from, err)) != SL_OK) return st;
  if ((st = setup_encryption(s, from, err)) != SL_OK) return st;
  sl_journal_replay_stats rs;
  st = sl_journal_replay(s->j, from, replay_record, s, &rs, err);
  if (st != SL_OK) return sl_err_wrap(err, st, "bookie store %s: replay", s->dir);
  s->replayed = rs.records;
  for (size_t i = 0; i < s->ledgers.cap; i++) {
    if (s->ledgers.vals[i] != NULL) ledger_sync_admit(s->ledgers.vals[i]);
  }
  sl_journal_pos after = sl_journal_pos_cmp(rs.end, from) > 0 ? rs.end : from;
  int rc = pthread_create(&s->applier, NULL, applier_main, s);
  SL_ASSERT(rc == 0);
  s->applier_started = true;
  if ((st = sl_journal_start(s->j, after, err)) != SL_OK) return st;
  s->applied = sl_journal_tail(s->j);
  /* Everything replayed is applied: make it durable and drop old segments. */
  return sl_bookie_store_checkpoint(s, err);
}

sl_status sl_bookie_store_open(const char *dir, const sl_bookie_store_opts *opts,
                               sl_bookie_store **out, sl_err *err) {
  static const sl_bookie_store_opts defaults = SL_BOOKIE_STORE_OPTS_INIT;
  if (dir == NULL || dir[0] == '\0' || out == NULL) {
    return sl_err_set(err, SL_EINVAL, "bookie store: dir is required");
  }
  if (opts == NULL) opts = &defaults;
  sl_status st = check_opts(dir, opts, err);
  if (st != SL_OK) return st;
  if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
    return sl_err_set(err, SL_EIO, "bookie store %s: mkdir: %s", dir, strerror(errno));
  }
  sl_bookie_store *s = sl_xcalloc(1, sizeof(*s));
  s->opts = *opts;
  s->dir = sl_xstrdup(dir);
  s->journal_dir = opts->journal_dir ? sl_xstrdup(opts->journal_dir) : path_join(dir, "journal");
  s->ledgers_dir = path_join(dir, "ledgers");
  s->opts.journal_dir = s->journal_dir;
  atomic_init(&s->failed, false);
  pthread_mutex_init(&s->mu, NULL);
  pthread_cond_init(&s->idle_cv, NULL);
  pthread_mutex_init(&s->ckpt_mu, NULL);
  pthread_mutex_init(&s->maint_mu, NULL);
  pthread_mutex_init(&s->apply_mu, NULL);
  pthread_cond_init(&s->apply_cv, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&s->maint_cv, &ca);
  pthread_condattr_destroy(&ca);

  st = open_storage_and_replay(s, err);
  if (st != SL_OK) goto out_close;
  sl_disk_watcher_opts wo = SL_DISK_WATCHER_OPTS_INIT;
  wo.dir = s->dir;
  wo.high_pct = opts->disk_high_pct;
  wo.low_pct = opts->disk_low_pct;
  wo.limit_bytes = opts->disk_limit_bytes;
  wo.interval_ms = opts->disk_interval_ms;
  wo.on_change = on_disk_change;
  wo.arg = s;
  if ((st = sl_disk_watcher_start(&wo, &s->dw, err)) != SL_OK) goto out_close;
  if ((st = register_metrics(s, err)) != SL_OK) goto out_unregister;
  int rc = pthread_create(&s->maint, NULL, maintenance_main, s);
  SL_ASSERT(rc == 0);
  s->maint_started = true;
  sl_log(SL_LOG_INFO, "event=bookie_store_open dir=%s instance=%s ledgers=%zu replayed=%" PRIu64,
         s->dir, s->instance_hex, s->ledgers.count, s->replayed);
  *out = s;
  return SL_OK;

out_unregister:
  unregister_metrics(s);
  sl_disk_watcher_stop(s->dw);
out_close:
  sl_journal_close(s->j);
  stop_applier(s);
  sl_ledger_storage_close(s->ls);
  store_free(s);
  return st;
}

void sl_bookie_store_close(sl_bookie_store *s) {
  if (s == NULL) return;
  pthread_mutex_lock(&s->maint_mu);
  s->maint_stop = true;
  pthread_cond_signal(&s->maint_cv);
  pthread_mutex_unlock(&s->maint_mu);
  if (s->maint_started) pthread_join(s->maint, NULL);
  /* Callbacks may still submit while we drain, so the watcher (which adds
   * consult) stays up until the journal and applier threads are gone. */
  pthread_mutex_lock(&s->mu);
  while (s->inflight > 0) pthread_cond_wait(&s->idle_cv, &s->mu);
  pthread_mutex_unlock(&s->mu);
  sl_err err = SL_ERR_INIT;
  if (!atomic_load(&s->failed) && sl_bookie_store_checkpoint(s, &err) != SL_OK) {
    sl_log(SL_LOG_WARN, "event=final_checkpoint_failed err=\"%s\"", err.msg);
  }
  unregister_metrics(s); /* its callbacks read the store */
  sl_journal_close(s->j);
  stop_applier(s);
  sl_disk_watcher_stop(s->dw);
  sl_ledger_storage_close(s->ls);
  sl_log(SL_LOG_INFO, "event=bookie_store_closed dir=%s", s->dir);
  store_free(s);
}

/* ---- admission ---- */

static bool same_payload(const sl_journal_record *a, const void *payload,
                         uint32_t len, uint32_t crc) {
  return a->len == len && a->payload_crc == crc &&
         (len == 0 || memcmp(a->payload, payload, len) == 0);
}

/* Duplicate check for an entry at or below the highest admitted one. Sets
 * *is_new. Under s->mu. */
static sl_status check_duplicate(sl_bookie_store *s, lstate *l,
                                 const sl_bookie_add_req *req, bool *is_new,
                                 sl_err *err) {
  *is_new = true;
  if (req->entry > l->admit_last) return SL_OK;
  for (size_t i = 0; i < l->npending; i++) {
    const sl_journal_record *p = &l->pending[i]->jreq.rec;
    if (p->entry != req->entry) continue;
    *is_new = false;
    if (same_payload(p, req->payload, req->len, req->crc)) return SL_OK;
    return sl_err_set(err, SL_ECONFLICT, "ledger %" PRIu64 " entry %" PRId64
                      ": already queued with a different payload", req->ledger, req->entry);
  }
  if (req->entry > l->meta.last_entry) return SL_OK;
  sl_ledger_entry e = SL_LEDGER_ENTRY_INIT;
  sl_status st = sl_ledger_storage_get_entry(s->ls, req->ledger, req->entry, &e, err);
  if (st == SL_ENOTFOUND) return SL_OK;
  *is_new = false;
  if (st == SL_ECORRUPT) {
    sl_log(SL_LOG_WARN, "event=entry_repair ledger=%" PRIu64 " entry=%" PRId64,
           req->ledger, req->entry);
    return SL_OK; /* invariant 4: a resend repairs a corrupt copy */
  }
  if (st != SL_OK) return st;
  sl_journal_record stored = {.payload = e.payload, .len = e.len, .payload_crc = e.crc};
  bool same = same_payload(&stored, req->payload, req->len, req->crc);
  sl_ledger_entry_release(&e);
  if (same) return SL_OK;
  return sl_err_set(err, SL_ECONFLICT, "ledger %" PRIu64 " entry %" PRId64
                    ": already stored with a different payload", req->ledger, req->entry);
}

/* The ledger key of a password: its SHA-256 digest (caller's thread, no
 * lock held). */
static sl_status password_key(uint64_t ledger, const void *password, size_t len,
                              uint8_t key[SL_LEDGER_KEY_BYTES], sl_err *err) {
  if (password == NULL && len > 0) {
    return sl_err_set(err, SL_EINVAL, "ledger %" PRIu64 ": password missing", ledger);
  }
  unsigned int n = 0;
  if (EVP_Digest(len > 0 ? password : "", len, key, &n, EVP_sha256(), NULL) != 1 ||
      n != SL_LEDGER_KEY_BYTES) {
    return sl_err_set(err, SL_EINTERNAL, "ledger %" PRIu64 ": sha-256 failed", ledger);
  }
  return SL_OK;
}

/* Invariant 7: checks a request's key against the ledger's. *records says
 * whether the request would record it (the ledger has none yet). Checked
 * before anything else, so a wrong password learns nothing about the
 * ledger. Under s->mu. */
static sl_status check_key(const lstate *l, const uint8_t *key, bool *records,
                           sl_err *err) {
  *records = !l->admit_has_key;
  if (*records || CRYPTO_memcmp(l->admit_key, key, SL_LEDGER_KEY_BYTES) == 0) return SL_OK;
  return sl_err_set(err, SL_EPERM, "ledger %" PRIu64 ": wrong password", l->meta.ledger);
}

/* Before submitting an op that records the ledger's key: its journal
 * record carries the key (the journal may write it at once). */
static void carry_key(store_op *op, bool records) {
  if (records) op->jreq.rec.key = op->key;
}

/* After that op was admitted: later requests are checked against its key.
 * Under s->mu. */
static void admit_key(lstate *l, const store_op *op, bool records) {
  if (!records) return;
  l->admit_has_key = true;
  memcpy(l->admit_key, op->key, SL_LEDGER_KEY_BYTES);
}

/* Invariant 8. Under s->mu. */
static sl_status check_not_deleted(const lstate *l, sl_err *err) {
  if (!l->admit_deleted) return SL_OK;
  return sl_err_set(err, SL_EDELETED, "ledger %" PRIu64 ": deleted", l->meta.ledger);
}

/* Epoch rule shared by adds, fences and LAC updates. Under s->mu. */
static sl_status check_epoch(const lstate *l, uint64_t epoch, sl_err *err) {
  if (epoch >= l->admit_epoch) return SL_OK;
  return sl_err_set(err, SL_ESTALE_EPOCH, "ledger %" PRIu64 ": stale epoch %" PRIu64
                    " < %" PRIu64, l->meta.ledger, epoch, l->admit_epoch);
}

/* Tombstone, fence and epoch rules shared by adds and LAC updates. Under
 * s->mu. */
static sl_status check_writer(const lstate *l, uint64_t epoch, bool recovery,
                              sl_err *err) {
  sl_status st = check_not_deleted(l, err);
  if (st != SL_OK) return st;
  if (l->admit_fenced && !recovery) {
    return sl_err_set(err, SL_EFENCED, "ledger %" PRIu64 ": fenced", l->meta.ledger);
  }
  return check_epoch(l, epoch, err);
}

/* Queues an admitted op on the journal and records it. Under s->mu. */
static sl_status submit_locked(sl_bookie_store *s, lstate *l, store_op *op, sl_err *err) {
  op->l = l;
  sl_status st = sl_journal_submit(s->j, &op->jreq, err);
  if (st != SL_OK) return st;
  l->inflight++;
  s->inflight++;
  if (op->kind == OP_ADD) {
    pending_push(l, op);
    s->inflight_bytes += op->jreq.rec.len;
  }
  return SL_OK;
}

static sl_status refuse_if_failed(sl_bookie_store *s, sl_err *err) {
  if (!atomic_load(&s->failed)) return SL_OK;
  pthread_mutex_lock(&s->mu);
  sl_status st = sl_err_set(err, SL_EFAILED, "bookie store %s: failed: %s", s->dir,
                            s->failmsg);
  pthread_mutex_unlock(&s->mu);
  return st;
}

static store_op *op_new(op_kind kind, sl_journal_rec_type type, uint64_t ledger,
                        uint64_t epoch, sl_bookie_store_cb cb, void *arg) {
  store_op *op = sl_xcalloc(1, sizeof(*op));
  op->kind = kind;
  op->jreq.rec.type = type;
  op->jreq.rec.ledger = ledger;
  op->jreq.rec.epoch = epoch;
  op->jreq.rec.lac = -1;
  op->cb = cb;
  op->arg = arg;
  return op;
}

/* Read-only refuses adds, except recovery adds below the hard floor: they
 * complete a dead writer's entries, and refusing them would stall recovery
 * exactly when a disk is nearly full. */
static sl_status check_space(sl_bookie_store *s, const sl_bookie_add_req *req,
                             sl_err *err) {
  if (!sl_disk_watcher_readonly(s->dw)) return SL_OK;
  if ((req->flags & SL_BOOKIE_ADD_RECOVERY) == 0) {
    return sl_err_set(err, SL_EREADONLY, "ledger %" PRIu64 " entry %" PRId64
                      ": bookie is read-only (disk nearly full)", req->ledger, req->entry);
  }
  sl_disk_usage u;
  sl_disk_watcher_usage(s->dw, &u);
  if (u.used_pct < s->opts.disk_floor_pct) return SL_OK;
  return sl_err_set(err, SL_EREADONLY, "ledger %" PRIu64 " entry %" PRId64
                    ": bookie is read-only and past its hard floor (%.1f%% used)",
                    req->ledger, req->entry, u.used_pct);
}

/* Checks what needs no lock and computes the request's key into `key`. */
static sl_status validate_add(sl_bookie_store *s, const sl_bookie_add_req *req,
                              uint8_t key[SL_LEDGER_KEY_BYTES], sl_err *err) {
  if (req->entry < 0 || req->lac < -1 || (req->payload == NULL && req->len > 0) ||
      (req->flags & ~SL_BOOKIE_ADD_RECOVERY) != 0) {
    return sl_err_set(err, SL_EINVAL, "ledger %" PRIu64 " entry %" PRId64
                      ": bad request (entry >= 0, lac >= -1, payload, flags)",
                      req->ledger, req->entry);
  }
  if (req->lac >= req->entry) {
    /* An entry cannot be confirmed before it is written: such a writer is
     * broken, and its LAC would let readers past unreplicated entries. */
    return sl_err_set(err, SL_EINVAL, "ledger %" PRIu64 " entry %" PRId64
                      ": lac %" PRId64 " is not below the entry", req->ledger,
                      req->entry, req->lac);
  }
  if (req->len > s->opts.max_entry_bytes) {
    return sl_err_set(err, SL_ETOOBIG, "ledger %" PRIu64 " entry %" PRId64
                      ": payload of %" PRIu32 " bytes over limit %" PRIu32,
                      req->ledger, req->entry, req->len, s->opts.max_entry_bytes);
  }
  sl_status st = refuse_if_failed(s, err);
  if (st == SL_OK) st = check_space(s, req, err);
  if (st != SL_OK) return st;
  /* Hashing happens here, on the caller's thread, outside every lock. */
  uint32_t crc = sl_entry_crc(req->ledger, req->entry, req->payload, req->len);
  if (crc != req->crc) {
    return sl_err_set(err, SL_EBADCRC, "ledger %" PRIu64 " entry %" PRId64
                      ": checksum mismatch (sent %08" PRIx32 ", payload has %08" PRIx32 ")",
                      req->ledger, req->entry, req->crc, crc);
  }
  return password_key(req->ledger, req->password, req->password_len, key, err);
}

/* The request with its payload encrypted (op->sealed holds the bytes) and
 * the checksum of those bytes, which ledger storage keeps and checks. */
static sl_status seal(sl_bookie_store *s, const sl_bookie_add_req *req, store_op *op,
                      sl_bookie_add_req *out, sl_err *err) {
  size_t len = (size_t)req->len + SL_ENTRY_CRYPT_OVERHEAD;
  op->sealed = sl_xmalloc(len);
  sl_status st = sl_entry_crypt_seal(s->opts.crypt, req->ledger, req->entry, req->payload,
                                     req->len, op->sealed, err);
  if (st != SL_OK) return st;
  *out = *req;
  out->payload = op->sealed;
  out->len = (uint32_t)len;
  out->crc = sl_entry_crc(req->ledger, req->entry, op->sealed, len);
  return SL_OK;
}

sl_status sl_bookie_store_add(sl_bookie_store *s, const sl_bookie_add_req *req,
                              sl_bookie_store_cb cb, void *arg, sl_err *err) {
  if (s == NULL || req == NULL || cb == NULL) {
    return sl_err_set(err, SL_EINVAL, "bookie store: add needs a request and a callback");
  }
  store_op *op = op_new(OP_ADD, SL_JOURNAL_ADD, req->ledger, req->epoch, cb, arg);
  sl_status st = validate_add(s, req, op->key, err);
  /* From here on the request is the entry as stored: sealed, with the
   * checksum of what is stored (the writer's was checked above). */
  sl_bookie_add_req sealed;
  if (st == SL_OK && s->opts.crypt != NULL) st = seal(s, req, op, &sealed, err);
  if (st != SL_OK) {
    op_free(op);
    return st;
  }
  if (s->opts.crypt != NULL) req = &sealed;
  op->jreq.rec.entry = req->entry;
  op->jreq.rec.lac = req->lac;
  op->jreq.rec.payload = req->payload;
  op->jreq.rec.len = req->len;
  op->jreq.rec.payload_crc = req->crc;
  bool created, records = false;
  pthread_mutex_lock(&s->mu);
  lstate *l = ledger_get_or_create(s, req->ledger, &created);
  st = check_key(l, op->key, &records, err);
  if (st == SL_OK)
    st = check_writer(l, req->epoch, (req->flags & SL_BOOKIE_ADD_RECOVERY) != 0, err);
  if (st == SL_OK && s->inflight_bytes > 0 &&
      s->inflight_bytes + req->len > s->opts.max_inflight_bytes) {
    st = sl_err_set(err, SL_EBUSY, "ledger %" PRIu64 " entry %" PRId64 ": %" PRIu64
                    " bytes of adds in flight, retry", req->ledger, req->entry,
                    s->inflight_bytes);
  }
  if (st == SL_OK) st = check_duplicate(s, l, req, &op->is_new, err);
  if (st == SL_OK) {
    carry_key(op, records);
    st = submit_locked(s, l, op, err);
  }
  if (st == SL_OK) {
    admit_key(l, op, records);
    if (req->epoch > l->admit_epoch) l->admit_epoch = req->epoch;
    if (req->entry > l->admit_last) l->admit_last = req->entry;
  } else {
    ledger_drop_if_unused(s, l, created);
  }
  pthread_mutex_unlock(&s->mu);
  if (st != SL_OK) op_free(op);
  return st;
}

sl_status sl_bookie_store_fence(sl_bookie_store *s, uint64_t ledger, uint64_t epoch,
                                const void *password, size_t password_len,
                                sl_bookie_store_cb cb, void *arg, sl_err *err) {
  if (s == NULL || cb == NULL) return sl_err_set(err, SL_EINVAL, "bookie store: fence needs a callback");
  sl_status st = refuse_if_failed(s, err);
  if (st != SL_OK) return st;
  store_op *op = op_new(OP_FENCE, SL_JOURNAL_FENCE, ledger, epoch, cb, arg);
  st = password_key(ledger, password, password_len, op->key, err);
  if (st != SL_OK) {
    op_free(op);
    return st;
  }
  bool created, records = false;
  pthread_mutex_lock(&s->mu);
  lstate *l = ledger_get_or_create(s, ledger, &created);
  /* A wrong password learns nothing else about the ledger. */
  st = check_key(l, op->key, &records, err);
  if (st == SL_OK) st = check_not_deleted(l, err);
  if (st == SL_OK) st = check_epoch(l, epoch, err);
  if (st == SL_OK) {
    carry_key(op, records);
    st = submit_locked(s, l, op, err);
  }
  if (st == SL_OK) {
    admit_key(l, op, records);
    /* Invariant 3: refuse adds from now on, before the fence is durable. */
    l->admit_fenced = true;
    l->admit_epoch = epoch;
  } else {
    ledger_drop_if_unused(s, l, created);
  }
  pthread_mutex_unlock(&s->mu);
  if (st != SL_OK) op_free(op);
  return st;
}

sl_status sl_bookie_store_write_lac(sl_bookie_store *s, uint64_t ledger, uint64_t epoch,
                                    int64_t lac, const void *password,
                                    size_t password_len, sl_bookie_store_cb cb,
                                    void *arg, sl_err *err) {
  if (s == NULL || cb == NULL) return sl_err_set(err, SL_EINVAL, "bookie store: write_lac needs a callback");
  if (lac < -1) return sl_err_set(err, SL_EINVAL, "ledger %" PRIu64 ": bad lac %" PRId64, ledger, lac);
  sl_status st = refuse_if_failed(s, err);
  if (st != SL_OK) return st;
  if (sl_disk_watcher_readonly(s->dw)) {
    return sl_err_set(err, SL_EREADONLY, "ledger %" PRIu64 ": bookie is read-only", ledger);
  }
  store_op *op = op_new(OP_LAC, SL_JOURNAL_LAC, ledger, epoch, cb, arg);
  op->jreq.rec.lac = lac;
  st = password_key(ledger, password, password_len, op->key, err);
  if (st != SL_OK) {
    op_free(op);
    return st;
  }
  bool created, records;
  pthread_mutex_lock(&s->mu);
  lstate *l = ledger_get_or_create(s, ledger, &created);
  st = check_key(l, op->key, &records, err);
  if (st == SL_OK) st = check_writer(l, epoch, false, err);
  if (st == SL_OK) st = submit_locked(s, l, op, err);
  if (st == SL_OK) {
    if (epoch > l->admit_epoch) l->admit_epoch = epoch;
  } else {
    ledger_drop_if_unused(s, l, created);
  }
  pthread_mutex_unlock(&s->mu);
  if (st != SL_OK) op_free(op);
  return st;
}

/* The one delete path. trusted (sl_bookie_store_drop_ledger) skips the
 * password check: the caller has the metadata service's tombstone, and the
 * bookie never learns a ledger's password. Everything else, the EBUSY rule
 * and the journal record, is the same, so a drop replays as a delete. */
static sl_status delete_ledger(sl_bookie_store *s, uint64_t ledger, bool trusted,
                               const void *password, size_t password_len,
                               sl_bookie_store_cb cb, void *arg, sl_err *err) {
  if (s == NULL || cb == NULL) return sl_err_set(err, SL_EINVAL, "bookie store: delete needs a callback");
  sl_status st = refuse_if_failed(s, err);
  if (st != SL_OK) return st;
  store_op *op = op_new(OP_DELETE, SL_JOURNAL_DELETE, ledger, 0, cb, arg);
  if (!trusted) st = password_key(ledger, password, password_len, op->key, err);
  if (st != SL_OK) {
    op_free(op);
    return st;
  }
  bool created, records;
  pthread_mutex_lock(&s->mu);
  /* An unknown ledger gets a tombstone too: a late add must not create it. */
  lstate *l = ledger_get_or_create(s, ledger, &created);
  if (!trusted) st = check_key(l, op->key, &records, err);
  if (st == SL_OK && l->inflight > 0) {
    /* Ordering adds before a delete in one batch would need the delete to
     * see unapplied entries; refusing keeps apply simple. */
    st = sl_err_set(err, SL_EBUSY, "ledger %" PRIu64 ": %" PRIu32
                    " requests in flight, retry", ledger, l->inflight);
  }
  if (st == SL_OK) st = submit_locked(s, l, op, err);
  if (st == SL_OK) {
    l->admit_deleted = true; /* invariant 8 */
    l->admit_has_key = false; /* as the tombstone will be, also after restart */
  } else {
    ledger_drop_if_unused(s, l, created);
  }
  pthread_mutex_unlock(&s->mu);
  if (st != SL_OK) op_free(op);
  return st;
}

sl_status sl_bookie_store_delete_ledger(sl_bookie_store *s, uint64_t ledger,
                                        const void *password, size_t password_len,
                                        sl_bookie_store_cb cb, void *arg, sl_err *err) {
  return delete_ledger(s, ledger, false, password, password_len, cb, arg, err);
}

sl_status sl_bookie_store_drop_ledger(sl_bookie_store *s, uint64_t ledger,
                                      sl_bookie_store_cb cb, void *arg, sl_err *err) {
  return delete_ledger(s, ledger, true, NULL, 0, cb, arg, err);
}

/* ---- reads ---- */

/* The durable meta of a known ledger. Under s->mu. */
static sl_status find_meta_locked(sl_bookie_store *s, uint64_t ledger,
                                  sl_ledger_meta *out, sl_err *err) {
  lstate *l = sl_ledger_table_get(&s->ledgers, ledger);
  if (l == NULL || !l->persisted) {
    return sl_err_set(err, SL_ENOTFOUND, "ledger %" PRIu64 ": not found", ledger);
  }
  if (l->meta.deleted) return sl_err_set(err, SL_EDELETED, "ledger %" PRIu64 ": deleted", ledger);
  *out = l->meta;
  return SL_OK;
}

/* Replaces a stored (sealed) entry by its plaintext, with the writer's
 * checksum of it, as a read answers. */
static sl_status unseal(sl_bookie_store *s, uint64_t ledger, int64_t entry,
                        sl_ledger_entry *e, sl_err *err) {
  size_t len = e->len >= SL_ENTRY_CRYPT_OVERHEAD ? e->len - SL_ENTRY_CRYPT_OVERHEAD : 0;
  uint8_t *plain = sl_xmalloc(len + 1);
  sl_status st = sl_entry_crypt_open(s->opts.crypt, ledger, entry, e->payload, e->len, plain,
                                     err);
  sl_ledger_entry_release(e);
  if (st != SL_OK) {
    free(plain);
    return st;
  }
  e->payload = plain;
  e->len = (uint32_t)len;
  e->crc = sl_entry_crc(ledger, entry, plain, len);
  e->base_ = plain;
  e->free_ = free;
  return SL_OK;
}

sl_status sl_bookie_store_read(sl_bookie_store *s, uint64_t ledger, int64_t entry,
                               sl_ledger_entry *out, sl_err *err) {
  if (s == NULL || out == NULL) return sl_err_set(err, SL_EINVAL, "bookie store: read needs an output");
  *out = (sl_ledger_entry)SL_LEDGER_ENTRY_INIT;
  if (entry < 0) {
    return sl_err_set(err, SL_EINVAL, "ledger %" PRIu64 " entry %" PRId64 ": bad entry id",
                      ledger, entry);
  }
  sl_ledger_meta m;
  pthread_mutex_lock(&s->mu);
  sl_status st = find_meta_locked(s, ledger, &m, err);
  pthread_mutex_unlock(&s->mu);
  if (st != SL_OK) return st;
  st = sl_ledger_storage_get_entry(s->ls, ledger, entry, out, err);
  if (st == SL_OK && s->opts.crypt != NULL) st = unseal(s, ledger, entry, out, err);
  return st;
}

sl_status sl_bookie_store_ledger_meta(sl_bookie_store *s, uint64_t ledger,
                                      sl_ledger_meta *out, sl_err *err) {
  if (s == NULL || out == NULL) return sl_err_set(err, SL_EINVAL, "bookie store: no output");
  pthread_mutex_lock(&s->mu);
  sl_status st = find_meta_locked(s, ledger, out, err);
  pthread_mutex_unlock(&s->mu);
  return st;
}

sl_status sl_bookie_store_read_lac(sl_bookie_store *s, uint64_t ledger, int64_t *lac,
                                   sl_err *err) {
  sl_ledger_meta m;
  if (lac == NULL) return sl_err_set(err, SL_EINVAL, "bookie store: no output");
  sl_status st = sl_bookie_store_ledger_meta(s, ledger, &m, err);
  if (st == SL_OK) *lac = m.lac;
  return st;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

void sl_bookie_store_list_ledgers(sl_bookie_store *s, uint64_t **ids, size_t *n) {
  SL_ASSERT(s != NULL && ids != NULL && n != NULL);
  *ids = NULL;
  *n = 0;
  pthread_mutex_lock(&s->mu);
  if (s->ledgers.count > 0) {
    *ids = sl_xmalloc(s->ledgers.count * sizeof(**ids));
    for (size_t i = 0; i < s->ledgers.cap; i++) {
      lstate *l = s->ledgers.vals[i];
      if (l != NULL && l->persisted && !l->meta.deleted) (*ids)[(*n)++] = l->meta.ledger;
    }
  }
  pthread_mutex_unlock(&s->mu);
  if (*n > 0) qsort(*ids, *n, sizeof(**ids), cmp_u64);
  if (*n == 0) {
    free(*ids);
    *ids = NULL;
  }
}

void sl_bookie_store_info_get(sl_bookie_store *s, sl_bookie_store_info *out) {
  SL_ASSERT(s != NULL && out != NULL);
  memset(out, 0, sizeof(*out));
  sl_disk_usage u;
  sl_disk_watcher_usage(s->dw, &u);
  out->total_bytes = u.total_bytes;
  out->free_bytes = u.free_bytes;
  out->used_pct = u.used_pct;
  out->readonly = sl_disk_watcher_readonly(s->dw);
  out->failed = atomic_load(&s->failed);
  pthread_mutex_lock(&s->mu);
  for (size_t i = 0; i < s->ledgers.cap; i++) {
    lstate *l = s->ledgers.vals[i];
    if (l == NULL || !l->persisted) continue;
    if (l->meta.deleted) {
      out->tombstones++;
      continue;
    }
    out->ledgers++;
    out->entries += l->meta.entries;
    out->entry_bytes += l->meta.bytes;
  }
  pthread_mutex_unlock(&s->mu);
  sl_journal_stats js;
  sl_journal_get_stats(s->j, &js);
  out->journal_syncs = js.syncs;
  out->journal_records = js.records;
  out->journal_segments = js.segments;
  pthread_mutex_lock(&s->ckpt_mu);
  out->checkpoints = s->checkpoints;
  out->journal_bytes = sl_journal_bytes_after(s->j, s->last_ckpt);
  pthread_mutex_unlock(&s->ckpt_mu);
  out->replayed_records = s->replayed;
}

void sl_bookie_store_check_disk(sl_bookie_store *s) { sl_disk_watcher_check_now(s->dw); }

void sl_bookie_store_set_disk_limit(sl_bookie_store *s, uint64_t limit_bytes) {
  sl_disk_watcher_set_limit(s->dw, limit_bytes);
  sl_disk_watcher_check_now(s->dw);
}
