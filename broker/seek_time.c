/* Seek by publish time: binary search over a partition's ledgers, then
 * over one ledger's entries (see seek_time.h). */
#include "broker/seek_time.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "entry.pb-c.h"
#include "metadata.slrpc.h"

typedef enum seek_phase {
  PH_LEDGERS = 0,  /* which ledger holds the answer */
  PH_ENTRIES = 1,  /* which entry of ledger ids[lo] */
  PH_END = 2,      /* nothing at or after T: find the end position */
} seek_phase;

typedef struct seek {
  sl_ledger_client *ledgers;
  sl_rpc_channel *metadata;
  char *partition;
  int64_t t;
  sl_serial *serial;
  int timeout_ms;
  sl_seek_time_cb cb;
  void *arg;

  uint64_t *ids;       /* the ledger list, oldest first */
  size_t n;
  seek_phase phase;
  size_t lo, hi;       /* ledger search: the answer is in [lo, hi]; hi == n
                          means "maybe none". The first ledger at or after
                          hi that is not empty has its last entry >= T. */
  size_t probe0, probe;/* ledger probed; probe moves past empty ledgers */
  sl_ledger *lh;       /* the ledger being read */
  int64_t elo, ehi;    /* entry search in lh: the answer is in [elo, ehi] */
  int64_t probe_entry; /* entry being read */
  /* The last entry read: its id, whether it has a message >= T, and the
   * first such message's index. */
  int64_t read_id;
  bool read_ok;
  bool read_hit;
  int32_t read_first;
  sl_seek_time_result r;
} seek;

static void seek_finish(seek *s, sl_status st, const char *details) {
  s->cb(st, st == SL_OK ? NULL : details, st == SL_OK ? &s->r : NULL, s->arg);
  sl_ledger_destroy(s->lh);
  sl_serial_unref(s->serial);
  free(s->ids);
  free(s->partition);
  free(s);
}

static void step(seek *s);

/* ---- one entry read ---- */

static void entry_read(int64_t entry_id, const void *data, size_t len, void *arg) {
  seek *s = arg;
  Sluice__V1__StoredEntry *e = sluice__v1__stored_entry__unpack(NULL, len, data);
  s->read_id = entry_id;
  s->read_ok = e != NULL && e->n_messages > 0;
  s->read_hit = false;
  s->read_first = -1;
  if (e == NULL) return;
  for (size_t i = 0; i < e->n_messages; i++) {
    if (e->messages[i]->publish_time_ms >= s->t) {
      s->read_hit = true;
      s->read_first = (int32_t)i;
      break;
    }
  }
  sluice__v1__stored_entry__free_unpacked(e, NULL);
}

static void entry_done(sl_status st, const char *details, void *arg) {
  seek *s = arg;
  if (st == SL_OK && (!s->read_ok || s->read_id != s->probe_entry)) {
    char msg[SL_ERR_MAX];
    snprintf(msg, sizeof(msg), "seek %s: ledger %llu entry %lld: not a stored entry",
             s->partition, (unsigned long long)sl_ledger_id(s->lh),
             (long long)s->probe_entry);
    seek_finish(s, SL_ECORRUPT, msg);
    return;
  }
  if (st != SL_OK) {
    seek_finish(s, st, details);
    return;
  }
  s->r.entries_read++;
  if (s->phase == PH_LEDGERS) {
    if (s->read_hit) s->hi = s->probe0;
    else s->lo = s->probe + 1;
    sl_ledger_destroy(s->lh);
    s->lh = NULL;
  } else if (s->read_hit) {
    s->ehi = s->probe_entry;
  } else {
    s->elo = s->probe_entry + 1;
  }
  step(s);
}

static void read_entry(seek *s, int64_t entry_id) {
  s->probe_entry = entry_id;
  s->read_ok = false;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_ledger_read_async(s->lh, entry_id, entry_id, entry_read,
                                      entry_done, s, &err);
  if (st != SL_OK) seek_finish(s, st, err.msg);
}

/* ---- ledger opens ---- */

static void open_ledger(seek *s, size_t i);

static void ledger_opened(sl_status st, const char *details, sl_ledger *lh, void *arg) {
  seek *s = arg;
  if (st != SL_OK) {
    char msg[SL_ERR_MAX];
    snprintf(msg, sizeof(msg), "seek %s: ledger %llu: %s", s->partition,
             (unsigned long long)s->ids[s->probe], details ? details : sl_status_str(st));
    seek_finish(s, st, msg);
    return;
  }
  s->lh = lh;
  int64_t last = sl_ledger_last_entry(lh);
  switch (s->phase) {
    case PH_LEDGERS:
      if (last >= 0) {
        read_entry(s, last);
        return;
      }
      /* Empty: it stands for the next non-empty ledger before hi. */
      sl_ledger_destroy(s->lh);
      s->lh = NULL;
      if (s->probe + 1 < s->hi) {
        open_ledger(s, s->probe + 1);
        return;
      }
      s->hi = s->probe0; /* none of [probe0, hi) holds an entry */
      step(s);
      return;
    case PH_ENTRIES:
      if (last < 0) { /* empty: the answer is in the next ledger */
        sl_ledger_destroy(s->lh);
        s->lh = NULL;
        s->lo++;
        step(s);
        return;
      }
      s->elo = 0;
      s->ehi = last;
      s->read_id = -1;
      step(s);
      return;
    case PH_END:
      s->r.at_end = true;
      s->r.pos.ledger_id = s->ids[s->probe];
      s->r.pos.entry_id = last + 1;
      s->r.batch_index = 0;
      seek_finish(s, SL_OK, NULL);
      return;
  }
}

static void open_ledger(seek *s, size_t i) {
  s->probe = i;
  sl_ledger_open_opts o = {s->serial};
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_ledger_open_async(s->ledgers, s->ids[i], &o, ledger_opened, s, &err);
  if (st != SL_OK) ledger_opened(st, err.msg, NULL, s);
}

/* The next move, after every answer. */
static void step(seek *s) {
  if (s->phase == PH_LEDGERS) {
    if (s->lo < s->hi) {
      s->probe0 = s->lo + (s->hi - s->lo) / 2;
      open_ledger(s, s->probe0);
      return;
    }
    s->phase = PH_ENTRIES;
  }
  if (s->phase == PH_ENTRIES && s->lh == NULL) {
    if (s->lo < s->n) {
      open_ledger(s, s->lo);
      return;
    }
    s->phase = PH_END;
  }
  if (s->phase == PH_END) {
    if (s->n == 0) {
      s->r.at_end = true;
      seek_finish(s, SL_OK, NULL);
      return;
    }
    open_ledger(s, s->n - 1);
    return;
  }
  /* PH_ENTRIES: the first entry in [elo, ehi] with a message >= T; ehi
   * has one (inv. of the ledger search). */
  if (s->elo < s->ehi) {
    read_entry(s, s->elo + (s->ehi - s->elo) / 2);
    return;
  }
  if (s->read_id != s->elo) {
    read_entry(s, s->elo);
    return;
  }
  s->r.at_end = false;
  s->r.pos.ledger_id = sl_ledger_id(s->lh);
  s->r.pos.entry_id = s->elo;
  /* Publish times that went backwards can leave the last read entry with
   * no message >= T (seek_time.h inv. 1): start at its first message. */
  s->r.batch_index = s->read_first >= 0 ? s->read_first : 0;
  seek_finish(s, SL_OK, NULL);
}

static void listed(sl_status st, const char *details, ProtobufCMessage *resp, void *arg) {
  seek *s = arg;
  const Sluice__V1__ManagedLedgerResponse *r = (const void *)resp;
  if (st == SL_OK && r->info == NULL) st = SL_ECORRUPT;
  if (st == SL_ENOTFOUND) {
    st = SL_OK; /* never written: an empty partition */
  } else if (st == SL_OK) {
    s->ids = calloc(r->info->n_ledgers + 1, sizeof(*s->ids));
    if (s->ids == NULL) abort();
    for (size_t i = 0; i < r->info->n_ledgers; i++) s->ids[i] = r->info->ledgers[i]->ledger_id;
    s->n = r->info->n_ledgers;
  }
  if (resp != NULL) protobuf_c_message_free_unpacked(resp, NULL);
  if (st != SL_OK) {
    char msg[SL_ERR_MAX];
    snprintf(msg, sizeof(msg), "seek %s: ledger list: %s", s->partition,
             details ? details : sl_status_str(st));
    seek_finish(s, st, msg);
    return;
  }
  s->lo = 0;
  s->hi = s->n;
  s->phase = PH_LEDGERS;
  step(s);
}

sl_status sl_seek_time_async(const sl_seek_time_opts *opts, sl_seek_time_cb cb,
                             void *arg, sl_err *err) {
  if (opts == NULL || opts->ledgers == NULL || opts->metadata == NULL ||
      opts->partition == NULL || opts->serial == NULL || cb == NULL)
    return sl_err_set(err, SL_EINVAL, "seek: missing option");
  seek *s = calloc(1, sizeof(*s));
  if (s == NULL || (s->partition = strdup(opts->partition)) == NULL) abort();
  s->ledgers = opts->ledgers;
  s->metadata = opts->metadata;
  s->t = opts->publish_time_ms;
  sl_serial_ref(opts->serial);
  s->serial = opts->serial;
  s->timeout_ms = opts->metadata_timeout_ms > 0 ? opts->metadata_timeout_ms : 5000;
  s->cb = cb;
  s->arg = arg;
  s->read_id = -1;
  Sluice__V1__GetManagedLedgerRequest req = SLUICE__V1__GET_MANAGED_LEDGER_REQUEST__INIT;
  req.partition = s->partition;
  sl_rpc_call_opts o = {0};
  o.serial = s->serial;
  o.timeout_ms = s->timeout_ms;
  sl_status st = sl_rpc_unary_start(s->metadata, SL_METADATA_SERVICE_GET_MANAGED_LEDGER,
                                    &req.base, &o, listed, s, NULL, err);
  if (st != SL_OK) {
    sl_serial_unref(s->serial);
    free(s->partition);
    free(s);
  }
  return st;
}
