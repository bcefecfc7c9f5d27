/*
 * Internals shared by the ledger client's files (design in ledger.h):
 *   client.c     the client: bookie cache, channel pool, metadata helpers
 *   handle.c     handle life (refs, destroy, getters, stats)
 *   writer.c     create, append, ensemble change, close
 *   recovery.c   fence and recover
 *   reader.c     open for reading, reads: the window and ReadEntry
 *   reader_range.c  reads: ReadEntries range streams
 *   delete.c     delete on the bookies, then the metadata
 *   rereplicate.c  auto-recovery: copy a CLOSED ledger's lost copies
 */
#ifndef SL_BROKER_LEDGER_LEDGER_INT_H
#define SL_BROKER_LEDGER_LEDGER_INT_H

#include <pthread.h>
#include <stdatomic.h>

#include "bookie.pb-c.h"
#include "bookie.slrpc.h"
#include "broker/ledger/addq.h"
#include "broker/ledger/ledger.h"
#include "broker/ledger/quorum.h"
#include "common/metrics.h"
#include "common/rpc_astream.h"
#include "common/timer.h"
#include "metadata.pb-c.h"
#include "metadata.slrpc.h"

/* ---- client (client.c) ---- */

/* One bookie the client has seen in ListBookies. Entries are never removed
 * while the client lives, so handles may keep `ch` (channels are created on
 * first use and destroyed with the client). Fields under client->mu. */
typedef struct lc_bookie {
  char *id;
  char *address;
  char *rack;
  char *instance;          /* instance id from its registration, "" unknown */
  bool read_only;
  bool live;               /* in the last ListBookies answer */
  uint64_t free_bytes;
  uint32_t usage;          /* writer handles with it in their ensemble */
  int64_t failed_ms;       /* monotonic: its last failed add, 0 = none */
  sl_rpc_channel *ch;      /* NULL until first use */
  sl_rpc_channel **old;    /* channels to earlier addresses (kept: streams
                              may still use them) */
  size_t n_old;
} lc_bookie;

struct sl_ledger_client {
  sl_ledger_client_opts opts;   /* defaults filled in */
  sl_rpc_channel_opts chopts;   /* bookie channel template (target unset) */
  pthread_mutex_t mu;           /* guards bookies, n_bookies, listed_ms,
                                   handles */
  pthread_cond_t handles_gone;  /* signalled when handles drops to 0 */
  int handles;                  /* not yet released: a handle's last
                                   reference can be a stream's, released on
                                   a gRPC thread after sl_ledger_destroy,
                                   and its release still uses the client */
  lc_bookie **bookies;
  size_t n_bookies;
  int64_t listed_ms;            /* when the last ListBookies answer came */
};

/* A handle is made, or finished releasing (sl_ledger_client_destroy waits
 * for every handle's release). The client must not be touched after
 * sl_lc_handle_gone. */
void sl_lc_handle_made(sl_ledger_client *c);
void sl_lc_handle_gone(sl_ledger_client *c);

/* The ledger metrics of this process (every client shares the series;
 * registered once by the first sl_ledger_client_create; a handle whose
 * registration failed is NULL, which the update functions accept). */
typedef struct lc_metrics {
  sl_metrics_counter *ensemble_changes;   /* segments added by writers */
  sl_metrics_counter *recoveries_ok, *recoveries_failed;
  sl_metrics_counter *deletes_ok, *deletes_failed;
  sl_metrics_gauge *pending_bytes;        /* appended, not yet complete */
  sl_metrics_histogram *add_seconds;      /* append to Qa acks, in order */
} lc_metrics;
extern lc_metrics sl_lc_m;

/* Refreshes the bookie cache if it is older than bookie_cache_ms (or
 * `force`), then posts cb on `serial`. st is SL_OK or the ListBookies
 * failure (the cache is then as it was). */
typedef void (*sl_lc_done_cb)(sl_status st, const char *details, void *arg);
void sl_lc_refresh(sl_ledger_client *c, sl_serial *serial, bool force,
                   sl_lc_done_cb cb, void *arg);

/* Picks `want` live writable bookies (placement.h rules) not in `avoid` (n
 * ids) and not in `taken` (n_taken ids, whose racks count), and not in
 * quarantine unless too few others are (ledger.h, "Placement"). Writes heap
 * copies of their ids and instance ids to ids[] and instances[]. Errors:
 * SL_EUNAVAIL, SL_ENOMEM. */
sl_status sl_lc_pick(sl_ledger_client *c, const char *const *avoid,
                     size_t n_avoid, const char *const *taken, size_t n_taken,
                     size_t want, char **ids, char **instances, sl_err *err);

/* The channel to a bookie by id (created on first use), or NULL if the
 * bookie is unknown or its channel cannot be made. Valid while the client
 * lives. */
sl_rpc_channel *sl_lc_channel(sl_ledger_client *c, const char *bookie_id);

/* The outcome of one add as a bookie answered it: the typed status, else
 * the gRPC code, else SL_OK. */
sl_status sl_lc_add_status(const Sluice__V1__AddEntryResponse *r);
/* Whether a bookie was live in the last ListBookies answer; *instance (if
 * not NULL) gets a heap copy of its instance id ("" unknown), or NULL when
 * the bookie is unknown or memory ran out. */
bool sl_lc_bookie_state(sl_ledger_client *c, const char *bookie_id, char **instance);
/* A writer saw an add to the bookie fail: quarantine it (ledger.h). */
void sl_lc_bookie_failed(sl_ledger_client *c, const char *bookie_id);
/* Writer handles on a bookie: +1 / -1. */
void sl_lc_usage(sl_ledger_client *c, const char *bookie_id, int delta);

/* Call options for a metadata call or a bookie call posted on serial. */
sl_rpc_call_opts sl_lc_meta_opts(const sl_ledger_client *c, sl_serial *serial);
sl_rpc_call_opts sl_lc_bookie_opts(const sl_ledger_client *c, sl_serial *serial,
                                   int timeout_ms);

/* ---- handle (handle.c) ---- */

/* One position of a handle's current ensemble (writer). */
typedef struct lh_slot {
  char *bookie;              /* id */
  char *instance;            /* recorded instance id, "" unknown */
  sl_rpc_channel *ch;        /* from the client pool; NULL: unknown bookie */
  sl_rpc_astream *add;       /* AddEntry stream; NULL when none */
  struct lh_stream *sctx;    /* its callback argument */
  int64_t next_send;         /* first entry not yet considered for sending */
  int64_t last_ack_ms;       /* last ack from it (or when its stream opened) */
  bool failed;               /* to be replaced by the ensemble change */
  bool busy;                 /* answered BUSY: stream reopened after a pause */
} lh_slot;

/* Callback argument of one AddEntry stream. When the slot's bookie is
 * replaced or the handle stops, `detached` is set (on the serial) and the
 * stream's later callbacks do nothing. Holds a handle reference. */
typedef struct lh_stream {
  struct sl_ledger *lh;
  uint32_t slot;
  bool detached;
} lh_stream;

/* One append in flight: queued in lh->pending (addq) on the serial. */
typedef struct lh_add {
  struct sl_ledger *lh;
  int64_t entry;
  sl_rpc_packed *packed;     /* the AddEntryRequest, packed once */
  size_t len;
  uint64_t start_ns;         /* sl_metrics_now_ns() at the append */
  sl_ledger_append_cb cb;
  void *arg;
} lh_add;

struct sl_ledger {
  sl_ledger_client *client;
  sl_serial *serial;             /* everything below runs on it */
  atomic_int refs;
  uint64_t id;
  sl_quorum q;
  uint64_t epoch;                /* epoch sent with adds and updates */
  uint8_t *password;
  size_t password_len;
  Sluice__V1__LedgerInfo *info;  /* current metadata (heap message) */
  int64_t version;               /* its version for CAS */
  bool writer;                   /* created here: appends allowed */
  _Atomic int state;             /* sl_ledger_state */
  _Atomic int64_t lac;
  _Atomic int64_t last_entry;       /* end once CLOSED, else = lac */
  bool destroyed;                /* sl_ledger_destroy ran on the serial */
  uint64_t read_avg;             /* reads: average entry bytes of the last
                                    read, 0 unknown (serial) */

  /* writer (serial only, except where atomic) */
  _Atomic int64_t next_entry;       /* caller side: the next append's id */
  atomic_bool close_called;
  sl_addq pending;               /* lh_add * in entry order */
  lh_slot *slots;                /* E positions of the current ensemble */
  char **failed_ids;             /* bookies that failed on this handle */
  size_t n_failed_ids;
  bool changing;                 /* an ensemble change is in flight */
  int64_t change_deadline_ms;
  sl_status fail_st;             /* why FENCED or FAILED */
  sl_timer tick;                 /* add timeouts */
  bool tick_armed;
  sl_timer retry;                /* a metadata update to try again */
  sl_timer busy;                 /* reopens the streams of busy slots */
  sl_timer lac_timer;            /* WriteLac once appends pause */
  int64_t lac_written;           /* highest LAC sent by WriteLac */
  int64_t last_add_ms;           /* when the last append reached the serial */
  void (*retry_fn)(struct sl_ledger *lh);
  uint64_t chg_mask;             /* slots the in-flight change replaces */
  char **chg_ids;                /* their new bookie ids [E] */
  char **chg_instances;          /* and instance ids [E] */
  sl_ledger_fenced_cb on_fenced;
  void *fenced_arg;
  sl_ledger_close_cb close_cb;   /* pending close */
  void *close_arg;
  int64_t close_deadline_ms;
  bool close_cas_inflight;

  /* stats */
  _Atomic uint64_t pending_count;
  _Atomic uint64_t pending_bytes;
  _Atomic uint64_t ensemble_changes;
  _Atomic uint64_t bytes_appended;
};

/* A handle with one reference (the caller's), state `state`, on `serial`
 * (retained; NULL = a new one), taking ownership of info. */
sl_status sl_lh_create(sl_ledger_client *c, sl_serial *serial,
                       Sluice__V1__LedgerInfo *info, int64_t version,
                       sl_ledger_state state, sl_ledger **out, sl_err *err);
void sl_lh_ref(sl_ledger *lh);
void sl_lh_unref(sl_ledger *lh);

/* The index of the segment of info that covers entry (the last one whose
 * first_entry <= entry). */
size_t sl_lh_segment_of(const Sluice__V1__LedgerInfo *info, int64_t entry);

/* Replaces lh->info (frees the old one). */
void sl_lh_set_info(sl_ledger *lh, Sluice__V1__LedgerInfo *info,
                    int64_t version);

/* A deep copy of a metadata message, or NULL on ENOMEM. */
Sluice__V1__LedgerInfo *sl_lh_info_dup(const Sluice__V1__LedgerInfo *info);

/* ---- reads (reader.c, reader_range.c) ---- */

#define SL_RD_WINDOW 128   /* entries of one read in flight at most */

typedef struct rd_op rd_op;
typedef struct rd_range rd_range;

/* One entry of a read's window (ring slot entry % SL_RD_WINDOW). */
typedef struct rd_slot {
  rd_op *op;
  int64_t entry;         /* -1: unused */
  uint32_t ranged;       /* range streams that may still bring it */
  uint32_t asked;        /* replicas asked with ReadEntry (write set index) */
  uint32_t inflight;     /* of them, not answered */
  bool bad_crc;          /* some replica returned bytes that do not verify */
  bool have;
  uint8_t *data;
  size_t len;
  sl_timer spec;         /* speculative second ReadEntry */
} rd_slot;

/* One sl_ledger_read_async; lives on the handle's serial. */
struct rd_op {
  sl_ledger *lh;
  int64_t last;
  int64_t next_deliver;
  int64_t next_issue;
  sl_ledger_entry_cb on_entry;
  sl_ledger_read_done_cb on_done;
  void *arg;
  bool finished;
  int outstanding;       /* calls and streams in flight, plus one while not
                            finished */
  uint64_t got, got_bytes; /* entries taken so far, their bytes (sizing) */
  uint32_t rotation;     /* start slot of the next range cover */
  uint64_t shunned;      /* slots of segment shunned_seg whose range failed */
  size_t shunned_seg;
  rd_range *ranges;      /* open range streams */
  rd_slot ring[SL_RD_WINDOW];
};

/* reader.c: a copy of sl->entry arrived; checks its CRC32C and, if good,
 * keeps it and delivers what is now in order (which may finish op). False:
 * it does not verify (sl->bad_crc set, nothing kept). */
bool sl_rd_take(rd_op *op, rd_slot *sl, const uint8_t *data, size_t len, uint32_t crc);
/* reader.c: a source of sl->entry is gone without a good copy; once none is
 * left (no range, no ReadEntry in flight) asks the next replica, or fails
 * the read when every replica was asked. */
void sl_rd_retry(rd_op *op, rd_slot *sl);
/* reader.c: drops a reference of op (the last frees it). */
void sl_rd_put(rd_op *op);

/* reader_range.c: reads [first, last] (within one segment and the window,
 * slots set up) with ReadEntries streams to bookies that together hold it,
 * counting in each slot's `ranged` the streams that serve it. Entries left
 * with ranged 0 are the caller's to read another way. */
void sl_rd_range_start(rd_op *op, int64_t first, int64_t last);
/* reader_range.c: cancels op's open streams (the read finished). */
void sl_rd_range_cancel(rd_op *op);

/* Writer teardown on the serial (writer.c): fails what is pending with st,
 * cancels streams and the timer. */
void sl_lh_writer_stop(sl_ledger *lh, sl_status st, const char *details);
/* Frees the writer's state at the last unref (writer.c). */
void sl_lh_writer_release(sl_ledger *lh);

#endif
