/* Produce internals shared by produce.c (streams) and produce_topic.c
 * (partitions). See produce.h for the design note. */
#ifndef SL_BROKER_PRODUCE_INT_H
#define SL_BROKER_PRODUCE_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "broker/dedup.h"
#include "broker/managed_ledger.h"
#include "broker/produce.h"
#include "common/buf.h"
#include "common/map.h"
#include "common/metrics.h"
#include "common/timer.h"

typedef struct ptopic ptopic;
typedef struct pstream pstream;

/* A receipt waiting for room in the stream's write queue. */
typedef struct preceipt {
  struct preceipt *next;
  uint64_t seq, last_seq;
  uint32_t count;
  sl_status st;
  bool duplicate;
  bool has_id;
  uint64_t ledger_id;
  int64_t entry_id;
  int32_t batch_index, batch_size;
  int32_t partition;         /* partition index; -1 non-partitioned */
  char error[160];
} preceipt;

typedef enum pstream_state {
  PS_NEW = 0,     /* waiting for open */
  PS_OPENING = 1, /* open being resolved and loaded; reads paused */
  PS_OPEN = 2,    /* sends accepted */
  PS_ENDED = 3,   /* finish called or call over */
} pstream_state;

/* One Produce stream. Refcounted: the call holds one until on_done, every
 * member in a partition's group one. */
struct pstream {
  atomic_int refs;
  sl_produce *p;
  struct sl_authz *authz;    /* the broker's (authz.h) */
  const char *opening;       /* the topic being opened (call arena) */
  pthread_mutex_t mu;        /* guards everything below */
  sl_rpc_call *call;         /* referenced while call_live */
  bool call_live;            /* on_done has not run */
  pstream_state state;
  ptopic *topic;             /* referenced once OPEN */
  char *producer;            /* name in use, once open */
  bool resume;
  bool half_closed;          /* the client is done sending */
  size_t inflight;           /* bytes received, not yet answered */
  bool paused;               /* reads paused for back-pressure */
  bool paused_global;        /* in p->paused list */
  struct pstream *paused_next;
  preceipt *rq_head, *rq_tail; /* receipts waiting for on_writable */
  struct pstream *topic_next;  /* in topic->streams (topic serial only) */
};

/* One message on its way through a partition: stored form (or an outcome
 * decided on the worker thread) plus the stream to answer. */
typedef struct pmember {
  pstream *ps;               /* referenced */
  uint64_t seq;
  size_t inflight;           /* bytes counted in ps->inflight */
  int64_t recv_ns;           /* for the ack-latency histogram */
  int64_t publish_ms, deliver_at_ms;
  sl_status st;              /* SL_OK = to store; else the receipt's status */
  char error[160];           /* for st != SL_OK */
  bool duplicate;
  bool has_orig;
  sl_dedup_id orig;
  uint8_t *wire;             /* tag + length + StoredMessage, or NULL */
  size_t wire_len;
} pmember;

/* Messages of one stream message, posted to the partition's serial. */
typedef struct pbatch {
  struct pbatch *held_next;  /* in topic->held_* (PRODUCER_HOLD) */
  ptopic *topic;             /* referenced */
  pstream *ps;               /* referenced */
  size_t n;
  pmember m[];
} pbatch;

/* Members that become one entry (or, without payload, only receipts). */
typedef struct pgroup {
  struct pgroup *next;       /* FIFO of groups not yet answered */
  ptopic *topic;
  pmember *m;
  size_t n, cap;
  size_t n_payload;
  sl_buf data;               /* the entry being built */
  int64_t min_publish_ms, max_deliver_at_ms;
  bool done;
  sl_status st;
  sl_ml_pos pos;
} pgroup;

typedef enum ptopic_state {
  PT_LOADING = 0,
  PT_READY = 1,
  PT_CLOSING = 2,
  PT_GONE = 3,
} ptopic_state;

/* One owned partition. Refcounted (atomic): the table, each post in flight,
 * each pgroup, each open stream. Everything but refs, name and serial is
 * touched on the serial only. */
struct ptopic {
  atomic_int refs;
  sl_produce *p;
  char *name;
  int32_t partition_index;
  uint64_t epoch;
  sl_serial *serial;
  ptopic_state state;
  sl_ml *ml;
  sl_dedup *dedup;
  bool dedup_on;
  uint32_t max_message_bytes;
  pstream *streams;          /* attached (OPEN) streams */
  pstream *waiters;          /* streams waiting for LOADING to end */
  pgroup *open;              /* group collecting messages, or NULL */
  pgroup *fifo_head, *fifo_tail; /* flushed groups, oldest first */
  uint32_t entries_pending;  /* appended, not yet completed */
  sl_timer group_timer;
  uint32_t since_snapshot;   /* entries since the last dedup snapshot */
  uint64_t producer_names;   /* for generated names */
  bool unload_wanted;        /* close once the FIFO is empty */
  bool consume_closing;      /* closing told; pt_closing_done not yet */
  uint32_t max_redeliveries; /* namespace policy, for subscriptions */
  int64_t message_ttl_s;     /* namespace policy: unacked messages expire
                                this long after publishing; 0 = never */
  int64_t backlog_quota_bytes; /* namespace policy; 0 = none */
  int backlog_policy;        /* Sluice__V1__BacklogPolicy */
  bool backlog_over;         /* over the quota (hold or refuse sends) */
  uint64_t backlog_bytes;    /* as last measured */
  pbatch *held_head, *held_tail; /* sends held by PRODUCER_HOLD, in order */
  void *consume;             /* the consume side (partition_consume.h), owned
                                by it through the listener; NULL if none */
};

/* The consume side of a partition (broker/partition_consume.h) hears of the
 * partition's life through these, on the partition's serial. */
typedef struct pt_listener {
  void *arg;                 /* the consume side's own state */
  void (*ready)(ptopic *t);  /* loaded: READY */
  /* An entry is durable at pos (its bytes borrowed for the call). */
  void (*appended)(ptopic *t, sl_ml_pos pos, const void *data, size_t len);
  /* A graceful unload began. The partition closes its ledger and gives
   * its ownership up only once the consume side called pt_closing_done
   * (later, on the serial: never inside this call), so that what it must
   * persist (acks) is durable before the next owner reads it. */
  void (*closing)(ptopic *t);
  /* Gone (unloaded, fenced, lost, failed to load): end the consumers with
   * st (SL_EREDIRECT when ownership moves) and details. */
  void (*gone)(ptopic *t, sl_status st, const char *details);
} pt_listener;

struct sl_produce {
  sl_produce_opts o;
  sl_ownership *_Atomic own;
  pthread_mutex_t mu;        /* guards topics and paused */
  sl_map topics;             /* name -> ptopic (table reference) */
  pstream *paused;           /* streams paused for the broker-wide limit */
  atomic_size_t inflight;    /* bytes, all streams */
  sl_metrics_counter *m_msgs, *m_bytes, *m_dups, *m_recoveries;
  sl_metrics_histogram *m_ack;
  sl_metrics_callback *m_inflight;
  const pt_listener *listener; /* set before serving; NULL = none */
};

/* ---- produce.c (streams) ---- */
void ps_ref(pstream *ps);
void ps_unref(pstream *ps);
/* One receipt for a run of members (in order); frees nothing. */
void ps_answer(pstream *ps, const preceipt *r, size_t inflight_bytes);
/* Gives back in-flight bytes of members that get no receipt. */
void ps_release(pstream *ps, size_t inflight_bytes);
/* Tells an opening stream its answer, or ends it. */
/* Tells an opening stream it is open on t (the stream takes a reference on
 * t). False if the call is already over (then nothing changed). */
bool ps_opened(pstream *ps, ptopic *t, const char *producer, int64_t last_seq,
               const sl_dedup_id *last_id);
/* Ends the stream with st. With SL_EREDIRECT, redirect (if NULL: the
 * partition with owner unknown, epoch 0, "look it up again") goes first. */
void ps_end(pstream *ps, sl_status st, const char *msg,
            const Sluice__V1__Redirect *redirect, const char *partition);

/* ---- produce_topic.c (partitions) ---- */
void pt_ref(ptopic *t);
void pt_unref(ptopic *t);
/* The partition for an open from this broker as owner at epoch (table
 * lookup, or a new LOADING one); then ps is attached on its serial and
 * answered through ps_opened/ps_end. */
void pt_attach(sl_produce *p, const char *partition, uint64_t epoch, pstream *ps);
/* The partition for this broker as owner at epoch, referenced (table
 * lookup, or a new LOADING one whose load is posted). */
ptopic *pt_get(sl_produce *p, const char *partition, uint64_t epoch);
/* Posts a batch (takes its references) to the partition's serial. */
void pt_post_batch(pbatch *b);
/* Posts the stream's detach (call over). */
void pt_detach(ptopic *t, pstream *ps);
/* Ownership hooks. */
void pt_unload(sl_produce *p, const char *partition);
void pt_lost(sl_produce *p, const char *partition, const char *why);
/* Drops every partition (destroy). */
void pt_drop_all(sl_produce *p);

/* The consume side measured the backlog (bytes) against the quota: over it
 * (PRODUCER_HOLD, PRODUCER_EXCEPTION) sends are held or refused until a
 * later call says it is back under. Serial only. */
void pt_backlog_over(ptopic *t, bool over, uint64_t bytes);

/* The consume side finished what a graceful unload needs (listener
 * closing); the unload goes on. Serial only. */
void pt_closing_done(ptopic *t);

/* Sets the consume side's listener (before the broker serves). */
void sl_produce_set_listener(sl_produce *p, const pt_listener *l);

/* Resumes streams paused for the broker-wide limit once under half. */
void produce_resume_paused(sl_produce *p);

#endif
