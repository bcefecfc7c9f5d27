/*
 * Reads (design in service.h): ReadEntry and ReadEntries are served on the
 * bookie's read threads, never on the gRPC workers that carry the AddEntry
 * streams nor on the store's applier thread that completes adds.
 *
 * Why: a read is a leveldb lookup (a disk read when the block is not
 * cached) plus packing and sending the payload. On a worker it holds up
 * every AddEntry message that arrives on that worker's completion queue;
 * on the applier (a fencing read used to answer from the fence's
 * completion) it holds up the acks of every add behind it. BookKeeper keeps
 * separate read and write thread pools for the same reason. The read
 * threads also run at a lower CPU priority (opts.read_nice): on a busy
 * machine the journal, the applier and the workers, which carry the adds,
 * get the CPU first and reads take what is left.
 *
 * Invariants
 *  1. Handlers only queue a job; the job holds a call reference until it
 *     has answered (or ended the call).
 *  2. At most READ_QUEUE_MAX jobs wait; beyond that a read is refused at
 *     once with SL_EBUSY (RESOURCE_EXHAUSTED: a reader asks another
 *     replica), so a flood of reads cannot grow the bookie's memory.
 *  3. Two pumps of one range read never run at the same time.
 *
 * Threads: handlers on workers; jobs on the read threads; a fencing
 * ReadEntry's fence completes on the applier, which queues its read.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/log.h"
#include "service_int.h"

#define RANGE_DEFAULT_ENTRIES 64u
#define RANGE_DEFAULT_BYTES (1u << 20)
#define READ_QUEUE_MAX 4096

typedef enum job_kind { JOB_READ, JOB_RANGE } job_kind;

/* One queued read. */
typedef struct read_job {
  struct read_job *next;
  job_kind kind;
  sl_bookie_svc *svc;
  sl_rpc_call *call;    /* referenced (invariant 1) */
  uint64_t ledger;      /* JOB_READ */
  int64_t entry;
} read_job;

struct sl_bookie_read_pool {
  pthread_mutex_t mu;   /* guards the queue and stop */
  pthread_cond_t cv;
  read_job *head, *tail;
  size_t queued;
  bool stop;
  int nice;
  int n_threads;        /* started */
  pthread_t *threads;
};

/* ---- ReadEntry ---- */

/* Counts one read by outcome: found, not found here, or an error. */
static void count_read(sl_bookie_svc *svc, sl_status st, bool found) {
  sl_bookie_svc_count_(svc->m_reads, st == SL_OK && !found ? SL_ENOTFOUND : st);
}

/* Reads (ledger, entry), entry -1 meaning the last one stored, and answers:
 * OK with found=false when this bookie does not have the entry. */
static void answer_read(sl_bookie_svc *svc, sl_rpc_call *call, uint64_t ledger,
                        int64_t entry) {
  sl_err err = SL_ERR_INIT;
  sl_ledger_meta meta;
  sl_ledger_entry e = SL_LEDGER_ENTRY_INIT;
  sl_status st = sl_bookie_store_ledger_meta(svc->store, ledger, &meta, &err);
  if (st != SL_OK) goto out_fail;
  if (entry == -1) entry = meta.last_entry;
  bool found = false;
  if (entry >= 0) {
    st = sl_bookie_store_read(svc->store, ledger, entry, &e, &err);
    found = st == SL_OK;
    if (st == SL_ENOTFOUND) st = SL_OK;
    if (st != SL_OK) goto out_fail;
  }
  Sluice__V1__ReadEntryResponse r = SLUICE__V1__READ_ENTRY_RESPONSE__INIT;
  r.ledger_id = ledger;
  r.entry_id = entry;
  r.found = found;
  r.payload.data = (uint8_t *)e.payload;
  r.payload.len = e.len;
  r.crc32c = e.crc;
  r.lac = meta.lac;
  r.last_entry_id = meta.last_entry;
  r.fenced = meta.fenced;
  r.instance_id = (char *)sl_bookie_store_instance_id(svc->store);
  sl_bookie_service_read_entry_reply(call, &r);
  sl_ledger_entry_release(&e);
  count_read(svc, SL_OK, found);
  return;
out_fail:
  count_read(svc, st, false);
  sl_bookie_svc_fail_(call, st, sl_err_msg(&err, st));
}

/* ---- ReadEntries ----
 *
 * State of one range read, the call's user state (freed at its last
 * unref). pump()
 * runs on a read thread, first from the handler's job and then from
 * on_writable's, which the runtime queues only after a send came back
 * SL_EBUSY; rr->mu keeps a pump from starting before the last one returned
 * (invariant 3).
 */
typedef struct range_read {
  sl_bookie_svc *svc;
  const Sluice__V1__ReadEntriesRequest *req; /* until the first run (its
                                                fence); the call holds it */
  pthread_mutex_t mu; /* held by a pump (invariant 3) */
  uint64_t ledger;
  int64_t next;       /* first entry not yet sent (maybe not in the range) */
  int64_t last;       /* last entry wanted */
  uint32_t max_entries;
  uint32_t max_bytes;
  uint32_t ens;       /* striped range: ensemble size; 0 = consecutive */
  uint32_t wq;        /* striped range: write quorum */
  uint32_t index;     /* striped range: our ensemble index */
} range_read;

/* The first entry of the range at or after id (ids past rr->last included):
 * with striping, the first whose write set (ids (e + k) mod ens, k < wq)
 * holds rr->index. */
static int64_t range_from(const range_read *rr, int64_t id) {
  if (rr->ens == 0) return id;
  /* index is member d of id's write set; each later id lowers d by one. */
  uint32_t d = (uint32_t)((rr->index + rr->ens - (uint64_t)id % rr->ens) % rr->ens);
  return d < rr->wq ? id : id + (int64_t)(d - rr->wq + 1);
}

/* Fills one batch from rr->next. Returns SL_OK (with *found false and
 * *missing set if an entry of the range was missing), or an error. *next is
 * where the following batch starts. Entries in *batch must be released. */
static sl_status fill_batch(range_read *rr, sl_ledger_entry *ents, Sluice__V1__Entry *pb,
                            Sluice__V1__Entry **ptrs, size_t *n, bool *found,
                            int64_t *missing, int64_t *next, sl_err *err) {
  size_t bytes = 0;
  *n = 0;
  *found = true;
  int64_t id = range_from(rr, rr->next);
  for (; id <= rr->last && *n < rr->max_entries; id = range_from(rr, id + 1)) {
    sl_ledger_entry e = SL_LEDGER_ENTRY_INIT;
    sl_status st = sl_bookie_store_read(rr->svc->store, rr->ledger, id, &e, err);
    if (st == SL_ENOTFOUND) {
      *found = false;
      *missing = id;
      break;
    }
    if (st != SL_OK) return st;
    /* An entry larger than max_bytes still goes, alone. */
    if (*n > 0 && bytes + e.len > rr->max_bytes) {
      sl_ledger_entry_release(&e);
      break;
    }
    bytes += e.len;
    ents[*n] = e;
    sluice__v1__entry__init(&pb[*n]);
    pb[*n].entry_id = id;
    pb[*n].payload.data = (uint8_t *)e.payload;
    pb[*n].payload.len = e.len;
    pb[*n].crc32c = e.crc;
    ptrs[*n] = &pb[*n];
    (*n)++;
  }
  *next = id;
  return SL_OK;
}

/* Sends batches until the range is done, an entry is missing, an error, or
 * the write queue is full (then on_writable calls again). */
static void pump(sl_rpc_call *call, range_read *rr) {
  sl_bookie_svc *svc = rr->svc;
  size_t cap = rr->max_entries;
  sl_ledger_entry *ents = sl_xcalloc(cap, sizeof(*ents));
  Sluice__V1__Entry *pb = sl_xcalloc(cap, sizeof(*pb));
  Sluice__V1__Entry **ptrs = sl_xcalloc(cap, sizeof(*ptrs));
  for (;;) {
    sl_err err = SL_ERR_INIT;
    sl_ledger_meta meta;
    size_t n = 0;
    bool found = true;
    int64_t missing = 0, next = rr->next;
    sl_status st = sl_bookie_store_ledger_meta(svc->store, rr->ledger, &meta, &err);
    if (st == SL_OK)
      st = fill_batch(rr, ents, pb, ptrs, &n, &found, &missing, &next, &err);
    if (st != SL_OK) {
      count_read(svc, st, false);
      sl_bookie_svc_fail_(call, st, sl_err_msg(&err, st));
      break;
    }
    Sluice__V1__ReadEntriesResponse r = SLUICE__V1__READ_ENTRIES_RESPONSE__INIT;
    r.ledger_id = rr->ledger;
    r.n_entries = n;
    r.entries = n > 0 ? ptrs : NULL;
    r.found = found;
    r.missing_entry_id = found ? 0 : missing;
    r.lac = meta.lac;
    r.last_entry_id = meta.last_entry;
    r.fenced = meta.fenced;
    r.instance_id = (char *)sl_bookie_store_instance_id(svc->store);
    bool end = !found || next > rr->last;
    if (end) {
      sl_rpc_call_finish(call, SL_OK, NULL, &r.base);
    } else {
      st = sl_bookie_service_read_entries_write(call, &r);
    }
    for (size_t i = 0; i < n; i++) sl_ledger_entry_release(&ents[i]);
    if (st == SL_EBUSY) break; /* on_writable sends this batch again */
    for (size_t i = 0; i < n; i++) count_read(svc, SL_OK, true);
    if (!found) count_read(svc, SL_OK, false);
    if (end || st != SL_OK) break; /* done, or the call is over */
    rr->next = next;
  }
  free(ptrs);
  free(pb);
  free(ents);
}

/* A fence a range read's job waits for (one journal sync) on its read
 * thread, then streams from there. */
typedef struct fence_wait {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool done;
  sl_status st;
  char msg[SL_ERR_MAX];
} fence_wait;

static void on_range_fenced(sl_status st, const char *msg, void *arg) {
  fence_wait *w = arg;
  pthread_mutex_lock(&w->mu);
  w->st = st;
  snprintf(w->msg, sizeof(w->msg), "%s", msg[0] ? msg : sl_status_str(st));
  w->done = true;
  pthread_cond_signal(&w->cv);
  pthread_mutex_unlock(&w->mu);
}

/* Fences and waits until the fence is durable (or failed). */
static sl_status fence_and_wait(sl_bookie_svc *svc, const Sluice__V1__ReadEntriesRequest *req,
                                sl_err *err) {
  fence_wait w = {.done = false};
  pthread_mutex_init(&w.mu, NULL);
  pthread_cond_init(&w.cv, NULL);
  sl_status st = sl_bookie_store_fence(svc->store, req->ledger_id, req->epoch,
                                       req->password.data, req->password.len,
                                       on_range_fenced, &w, err);
  if (st == SL_OK) {
    pthread_mutex_lock(&w.mu);
    while (!w.done) pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    st = w.st;
    if (st != SL_OK) sl_err_set(err, st, "%s", w.msg);
  }
  pthread_cond_destroy(&w.cv);
  pthread_mutex_destroy(&w.mu);
  return st;
}


/* ---- the queue ---- */

/* Queues a job for call (invariants 1, 2); false: refused, the call ended
 * with SL_EBUSY. */
static bool job_post(sl_bookie_svc *svc, sl_rpc_call *call, job_kind kind, uint64_t ledger,
                     int64_t entry) {
  sl_bookie_read_pool *p = svc->reads;
  pthread_mutex_lock(&p->mu);
  bool full = p->queued >= READ_QUEUE_MAX;
  if (!full) {
    read_job *j = sl_xmalloc(sizeof(*j));
    *j = (read_job){NULL, kind, svc, call, ledger, entry};
    sl_rpc_call_ref(call);
    if (p->tail != NULL) p->tail->next = j;
    else p->head = j;
    p->tail = j;
    p->queued++;
    pthread_cond_signal(&p->cv);
  }
  pthread_mutex_unlock(&p->mu);
  if (full) {
    count_read(svc, SL_EBUSY, false);
    sl_bookie_svc_fail_(call, SL_EBUSY, "bookie: too many reads queued");
  }
  return !full;
}

static void range_run(sl_rpc_call *call, range_read *rr) {
  if (rr->req != NULL) { /* the first run: fence first if asked */
    const Sluice__V1__ReadEntriesRequest *req = rr->req;
    rr->req = NULL;
    sl_err err = SL_ERR_INIT;
    sl_status st = req->fence ? fence_and_wait(rr->svc, req, &err) : SL_OK;
    if (st != SL_OK) {
      count_read(rr->svc, st, false);
      sl_bookie_svc_fail_(call, st, sl_err_msg(&err, st));
      return;
    }
  }
  pump(call, rr);
}

static void job_run(read_job *j) {
  switch (j->kind) {
    case JOB_READ:
      answer_read(j->svc, j->call, j->ledger, j->entry);
      break;
    case JOB_RANGE: {
      range_read *rr = sl_rpc_call_user(j->call);
      pthread_mutex_lock(&rr->mu);
      range_run(j->call, rr);
      pthread_mutex_unlock(&rr->mu);
      break;
    }
  }
  sl_rpc_call_unref(j->call);
  free(j);
}

static void *read_thread(void *arg) {
  sl_bookie_read_pool *p = arg;
  (void)pthread_setname_np(pthread_self(), "bookie-read");
  /* Only this thread: a nice value is per thread on Linux. Failing to
   * lower our own priority is harmless (reads then compete evenly). */
  if (p->nice != 0 && setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), p->nice) != 0)
    sl_log(SL_LOG_DEBUG, "event=read_thread_nice_failed nice=%d", p->nice);
  pthread_mutex_lock(&p->mu);
  for (;;) {
    while (p->head == NULL && !p->stop) pthread_cond_wait(&p->cv, &p->mu);
    if (p->head == NULL) break; /* stopping, and nothing is left */
    read_job *j = p->head;
    p->head = j->next;
    if (p->head == NULL) p->tail = NULL;
    p->queued--;
    pthread_mutex_unlock(&p->mu);
    job_run(j);
    pthread_mutex_lock(&p->mu);
  }
  pthread_mutex_unlock(&p->mu);
  return NULL;
}

/* ---- handlers ---- */

/* Applier thread: the fence of a fencing read is durable (or failed); the
 * read itself goes to a read thread. */
static void on_read_fenced(sl_status st, const char *msg, void *arg) {
  read_job *j = arg;
  if (st != SL_OK) {
    count_read(j->svc, st, false);
    sl_bookie_svc_fail_(j->call, st, msg[0] ? msg : sl_status_str(st));
  } else {
    (void)job_post(j->svc, j->call, JOB_READ, j->ledger, j->entry);
  }
  sl_rpc_call_unref(j->call);
  free(j);
}

static void read_entry(sl_rpc_call *call, const Sluice__V1__ReadEntryRequest *req,
                       void *ctx) {
  sl_bookie_svc *svc = ctx;
  sl_err err = SL_ERR_INIT;
  if (req->entry_id < -1) {
    sl_err_set(&err, SL_EINVAL, "ledger %" PRIu64 " entry %" PRId64
               ": bad entry id (>= 0, or -1 for the last)", req->ledger_id, req->entry_id);
    count_read(svc, SL_EINVAL, false);
    sl_bookie_svc_fail_(call, SL_EINVAL, err.msg);
    return;
  }
  if (!req->fence) {
    (void)job_post(svc, call, JOB_READ, req->ledger_id, req->entry_id);
    return;
  }
  read_job *j = sl_xmalloc(sizeof(*j));
  *j = (read_job){NULL, JOB_READ, svc, call, req->ledger_id, req->entry_id};
  sl_rpc_call_ref(call);
  sl_status st = sl_bookie_store_fence(svc->store, req->ledger_id, req->epoch,
                                       req->password.data, req->password.len,
                                       on_read_fenced, j, &err);
  if (st != SL_OK) {
    sl_rpc_call_unref(call);
    free(j);
    count_read(svc, st, false);
    sl_bookie_svc_fail_(call, st, sl_err_msg(&err, st));
  }
}

static void range_destroy(void *user) {
  range_read *rr = user;
  pthread_mutex_destroy(&rr->mu);
  free(rr);
}

/* SL_OK, or SL_EINVAL naming what is wrong with the range. */
static sl_status check_range(const Sluice__V1__ReadEntriesRequest *req, sl_err *err) {
  if (req->first_entry_id < 0 || req->last_entry_id < req->first_entry_id)
    return sl_err_set(err, SL_EINVAL, "ledger %" PRIu64 ": bad range %" PRId64 "..%" PRId64
                      " (0 <= first <= last)", req->ledger_id, req->first_entry_id,
                      req->last_entry_id);
  if (req->ensemble_size == 0 && (req->write_quorum != 0 || req->ensemble_index != 0))
    return sl_err_set(err, SL_EINVAL, "ledger %" PRIu64 ": striped range without "
                      "ensemble_size (write_quorum %" PRIu32 ", ensemble_index %" PRIu32 ")",
                      req->ledger_id, req->write_quorum, req->ensemble_index);
  if (req->ensemble_size != 0 &&
      (req->write_quorum < 1 || req->write_quorum > req->ensemble_size ||
       req->ensemble_index >= req->ensemble_size))
    return sl_err_set(err, SL_EINVAL, "ledger %" PRIu64 ": bad striped range (need "
                      "1 <= write_quorum <= ensemble_size and ensemble_index < "
                      "ensemble_size, got write_quorum %" PRIu32 ", ensemble_size %" PRIu32
                      ", ensemble_index %" PRIu32 ")",
                      req->ledger_id, req->write_quorum, req->ensemble_size,
                      req->ensemble_index);
  return SL_OK;
}

static void read_entries(sl_rpc_call *call, const Sluice__V1__ReadEntriesRequest *req,
                         void *ctx) {
  sl_bookie_svc *svc = ctx;
  sl_err err = SL_ERR_INIT;
  if (check_range(req, &err) != SL_OK) {
    count_read(svc, SL_EINVAL, false);
    sl_bookie_svc_fail_(call, SL_EINVAL, err.msg);
    return;
  }
  range_read *rr = sl_xcalloc(1, sizeof(*rr));
  rr->svc = svc;
  rr->req = req;
  pthread_mutex_init(&rr->mu, NULL);
  rr->ledger = req->ledger_id;
  rr->next = req->first_entry_id;
  rr->last = req->last_entry_id;
  rr->max_entries = req->max_entries ? req->max_entries : RANGE_DEFAULT_ENTRIES;
  if (rr->max_entries > 4096) rr->max_entries = 4096; /* bounds one batch's arrays */
  rr->max_bytes = req->max_bytes ? req->max_bytes : RANGE_DEFAULT_BYTES;
  rr->ens = req->ensemble_size;
  rr->wq = req->write_quorum;
  rr->index = req->ensemble_index;
  sl_rpc_call_set_user_destroy(call, rr, range_destroy);
  (void)job_post(svc, call, JOB_RANGE, rr->ledger, rr->next);
}

static void read_entries_writable(sl_rpc_call *call, void *ctx) {
  (void)job_post(ctx, call, JOB_RANGE, 0, 0);
}

void sl_bookie_svc_read_handlers_(sl_bookie_service_handlers *h) {
  h->read_entry = read_entry;
  h->read_entries = read_entries;
  h->read_entries_writable = read_entries_writable;
}

/* ---- the pool ---- */

sl_status sl_bookie_read_pool_start(sl_bookie_svc *svc, int n_threads, int nice, sl_err *err) {
  sl_bookie_read_pool *p = sl_xcalloc(1, sizeof(*p));
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->cv, NULL);
  p->nice = nice;
  p->threads = sl_xcalloc((size_t)n_threads, sizeof(*p->threads));
  svc->reads = p;
  for (; p->n_threads < n_threads; p->n_threads++) {
    if (pthread_create(&p->threads[p->n_threads], NULL, read_thread, p) != 0)
      return sl_err_set(err, SL_ENOMEM, "bookie service: cannot start read threads");
  }
  return SL_OK;
}

void sl_bookie_read_pool_stop(sl_bookie_svc *svc) {
  sl_bookie_read_pool *p = svc->reads;
  if (p == NULL) return;
  pthread_mutex_lock(&p->mu);
  p->stop = true;
  pthread_cond_broadcast(&p->cv);
  pthread_mutex_unlock(&p->mu);
  for (int i = 0; i < p->n_threads; i++) pthread_join(p->threads[i], NULL);
  SL_ASSERT(p->head == NULL);
  pthread_cond_destroy(&p->cv);
  pthread_mutex_destroy(&p->mu);
  free(p->threads);
  free(p);
  svc->reads = NULL;
}
