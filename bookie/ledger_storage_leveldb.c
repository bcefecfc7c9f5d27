/*
 * Ledger storage in leveldb: per-ledger state, the checkpoint, and each
 * entry's index, with the payload either in the entry log (entry_log.h, the
 * default) or in the leveldb value. Layout in ledger_storage.h.
 *
 * Why an entry log (measured; figures in the bookie report and the
 * benchmarks' output):
 *  - With payloads in leveldb every byte is written three times (journal,
 *    leveldb log, level-0 table), and each checkpoint flushes the memtable
 *    (tens of MB at 5k adds/s) into a table with one fsync at the end. On a
 *    disk shared with the journal that burst held journal fdatasyncs for
 *    150-230 ms every 10 s: the e2e p99 at 5k msgs/s was 138-155 ms.
 *  - The entry log writes each payload once more, sequentially, and starts
 *    writeback as it goes, so the checkpoint syncs little; the memtable holds
 *    25-byte index values, so its flush is small too.
 *  - The price is garbage collection (ledger_storage_gc.c): deleted ledgers
 *    leave dead bytes in files shared with live ones.
 * Values are not compressed by default: producers usually compress.
 *
 * Invariants
 *  1. A write is one leveldb WriteBatch: all of its ops apply or none do.
 *  2. When a write that carries a checkpoint returns, every earlier write is
 *     durable. A synced write alone does not give this: leveldb syncs only
 *     its current log file, and when it switched to a new log (memtable
 *     full) it closed the old one unsynced. So a checkpoint first flushes
 *     the memtable into a synced table file (compact_range over an empty key
 *     range does exactly that and waits for it), then writes the checkpoint
 *     key with sync.
 *  3. An entry's bytes are never returned unless sl_entry_crc(ledger, entry,
 *     payload) of the key it was read under equals the CRC stored with it:
 *     bytes filed under another id never verify. An entry log record must
 *     also name the same (ledger, entry) in its own header.
 *  4. paranoid_checks is off: after a power cut leveldb's own unsynced log
 *     may end in garbage, and with paranoid checks leveldb would refuse to
 *     open. Everything in that log since the last checkpoint is rebuilt from
 *     the journal anyway. Reads still verify block checksums.
 *  5. A checkpoint syncs the entry log before it flushes the index, so a
 *     durable index never points at bytes that are not. Index entries
 *     written after the checkpoint may reach disk before their payloads;
 *     replay rewrites every one of them.
 *
 * Locks: leveldb is thread-safe for concurrent reads and writes; wmu (see
 * ledger_storage_leveldb_int.h) orders entry log appends and the
 * collector's moves.
 */
#include <leveldb/c.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bookie/ledger_storage.h"
#include "bookie/ledger_storage_leveldb_int.h"
#include "common/bytes.h"
#include "common/crc32c.h"
#include "common/log.h"

#define ENTRY_KEY_LEN LDB_ENTRY_KEY_LEN
#define META_KEY_LEN 9
#define META_VAL_LEN_V1 42 /* before ledger keys; read, never written */
#define META_VAL_LEN (META_VAL_LEN_V1 + SL_LEDGER_KEY_BYTES)
#define META_VERSION_V1 1
#define META_VERSION 2
#define META_F_FENCED 1
#define META_F_KEY 2
#define META_F_DELETED 4
#define ENTRY_HDR 5
#define FORMAT_VERSION 2    /* of entry values: crc is the entry checksum */
#define FORMAT_VERSION_V1 1 /* crc of the payload only; read, never written */
#define FORMAT_VERSION_LOG 3 /* the payload is in the entry log */
#define LOG_VAL_LEN 25
#define USAGE_KEY_LEN 9
#define USAGE_VERSION 1
/* Sorts after every entry ('E') and ledger ('L') key. Each checkpoint
 * writes it, so it is in every table flushed from the memtable; a key
 * before the entries made each such table's range span all of them, and
 * compactions rewrote whole levels (with 64 MiB tables: bursts of 80-130 MB
 * per bookie that stalled the journal's fdatasync on a shared disk for
 * 150-450 ms every 10 s). */
static const char ckpt_key[] = "Zcheckpoint";
/* Where data dirs written before that keep it until their next checkpoint
 * (read only; never written again, so it stays out of new tables). */
static const char old_ckpt_key[] = "Ccheckpoint";


void ldb_entry_key(uint8_t *k, uint64_t ledger, int64_t entry) {
  k[0] = 'E';
  sl_put_be64(k + 1, ledger);
  sl_put_be64(k + 9, (uint64_t)entry);
}

static void meta_key(uint8_t *k, uint64_t ledger) {
  k[0] = 'L';
  sl_put_be64(k + 1, ledger);
}

static void encode_meta(uint8_t *v, const sl_ledger_meta *m) {
  v[0] = META_VERSION;
  v[1] = (uint8_t)((m->fenced ? META_F_FENCED : 0) | (m->has_key ? META_F_KEY : 0) |
                   (m->deleted ? META_F_DELETED : 0));
  sl_put_le64(v + 2, m->max_epoch);
  sl_put_le64(v + 10, (uint64_t)m->lac);
  sl_put_le64(v + 18, (uint64_t)m->last_entry);
  sl_put_le64(v + 26, m->entries);
  sl_put_le64(v + 34, m->bytes);
  if (m->has_key)
    memcpy(v + META_VAL_LEN_V1, m->key, SL_LEDGER_KEY_BYTES);
  else
    memset(v + META_VAL_LEN_V1, 0, SL_LEDGER_KEY_BYTES);
}

/* Reads version 2, and version 1 (written before ledger keys) as a state
 * without a key, so that old ledgers stay readable and adopt a key later. */
static bool decode_meta(const uint8_t *k, size_t klen, const uint8_t *v,
                        size_t vlen, sl_ledger_meta *m) {
  if (klen != META_KEY_LEN || vlen < 1) return false;
  bool v1 = v[0] == META_VERSION_V1 && vlen == META_VAL_LEN_V1;
  bool v2 = v[0] == META_VERSION && vlen == META_VAL_LEN;
  if (!v1 && !v2) return false;
  memset(m, 0, sizeof(*m));
  m->ledger = sl_get_be64(k + 1);
  m->fenced = (v[1] & META_F_FENCED) != 0;
  m->deleted = (v[1] & META_F_DELETED) != 0;
  m->max_epoch = sl_get_le64(v + 2);
  m->lac = (int64_t)sl_get_le64(v + 10);
  m->last_entry = (int64_t)sl_get_le64(v + 18);
  m->entries = sl_get_le64(v + 26);
  m->bytes = sl_get_le64(v + 34);
  m->has_key = v2 && (v[1] & META_F_KEY) != 0;
  if (m->has_key) memcpy(m->key, v + META_VAL_LEN_V1, SL_LEDGER_KEY_BYTES);
  return true;
}

sl_status ldb_error(char *errptr, sl_err *err, const char *what) {
  sl_status st = strncmp(errptr, "Corruption", 10) == 0 ? SL_ECORRUPT : SL_EIO;
  sl_err_set(err, st, "ledger storage: %s: %s", what, errptr);
  leveldb_free(errptr);
  return st;
}

/* Adds deletes for every stored entry of `ledger` and its state to b. */
static sl_status batch_delete_ledger(ldb_storage *s, leveldb_writebatch_t *b,
                                     uint64_t ledger, sl_err *err) {
  uint8_t k[ENTRY_KEY_LEN];
  ldb_entry_key(k, ledger, 0);
  leveldb_iterator_t *it = leveldb_create_iterator(s->db, s->ro_scan);
  for (leveldb_iter_seek(it, (const char *)k, sizeof(k)); leveldb_iter_valid(it);
       leveldb_iter_next(it)) {
    size_t klen;
    const char *key = leveldb_iter_key(it, &klen);
    if (klen != ENTRY_KEY_LEN || memcmp(key, k, 9) != 0) break;
    leveldb_writebatch_delete(b, key, klen);
  }
  char *errptr = NULL;
  leveldb_iter_get_error(it, &errptr);
  leveldb_iter_destroy(it);
  if (errptr != NULL) return ldb_error(errptr, err, "delete ledger scan");
  meta_key(k, ledger);
  leveldb_writebatch_delete(b, (const char *)k, META_KEY_LEN);
  return SL_OK;
}

static void encode_log_index(uint8_t *v, uint32_t crc, sl_entry_loc loc) {
  v[0] = FORMAT_VERSION_LOG;
  sl_put_le32(v + 1, crc);
  sl_put_le64(v + 5, loc.log);
  sl_put_le64(v + 13, loc.offset);
  sl_put_le32(v + 21, loc.len);
}

sl_status ldb_put_index(ldb_storage *s, leveldb_writebatch_t *b, uint64_t ledger,
                        int64_t entry, uint32_t crc, sl_entry_loc loc) {
  (void)s;
  uint8_t k[ENTRY_KEY_LEN];
  uint8_t v[LOG_VAL_LEN];
  ldb_entry_key(k, ledger, entry);
  encode_log_index(v, crc, loc);
  leveldb_writebatch_put(b, (const char *)k, ENTRY_KEY_LEN, (const char *)v, sizeof(v));
  return SL_OK;
}

/* Appends this write's payloads to the entry log, one write for the call,
 * and fills locs in op order. Caller holds wmu. */
static sl_status append_payloads(ldb_storage *s, const sl_ls_op *ops, size_t n,
                                 sl_entry_loc **locs, sl_err *err) {
  size_t m = 0;
  for (size_t i = 0; i < n; i++) m += ops[i].kind == SL_LS_PUT_ENTRY;
  if (m == 0) return SL_OK;
  sl_entry_log_rec *recs = sl_xmalloc(m * sizeof(*recs));
  *locs = sl_xmalloc(m * sizeof(**locs));
  m = 0;
  for (size_t i = 0; i < n; i++) {
    if (ops[i].kind != SL_LS_PUT_ENTRY) continue;
    recs[m++] = (sl_entry_log_rec){.ledger = ops[i].ledger, .entry = ops[i].entry,
                                   .crc = ops[i].crc, .payload = ops[i].payload,
                                   .len = ops[i].len};
  }
  sl_status st = sl_entry_log_append(s->el, recs, m, *locs, err);
  if (st == SL_OK) ldb_note_appended(s, recs, *locs, m);
  free(recs);
  return st;
}

/* ---- entry log file usage ('G' records) ---- */

static void usage_key(uint8_t *k, uint64_t log) {
  k[0] = 'G';
  sl_put_be64(k + 1, log);
}

static void store_usage(ldb_storage *s, uint64_t log, const ldb_ledger_bytes *lb,
                        size_t n) {
  size_t vlen = 1 + 4 + 16 * n;
  uint8_t *v = sl_xmalloc(vlen);
  v[0] = USAGE_VERSION;
  sl_put_le32(v + 1, (uint32_t)n);
  for (size_t i = 0; i < n; i++) {
    sl_put_le64(v + 5 + 16 * i, lb[i].ledger);
    sl_put_le64(v + 13 + 16 * i, lb[i].bytes);
  }
  uint8_t k[USAGE_KEY_LEN];
  usage_key(k, log);
  char *errptr = NULL;
  leveldb_put(s->db, s->wo, (const char *)k, sizeof(k), (const char *)v, vlen, &errptr);
  free(v);
  /* Best effort: without it the collector scans the file instead. */
  if (errptr != NULL) {
    sl_log(SL_LOG_WARN, "event=entry_log_usage_not_stored log=%" PRIu64 " err=\"%s\"", log,
           errptr);
    leveldb_free(errptr);
  }
}

static int cmp_ledger_bytes(const void *a, const void *b) {
  uint64_t x = ((const ldb_ledger_bytes *)a)->ledger;
  uint64_t y = ((const ldb_ledger_bytes *)b)->ledger;
  return x < y ? -1 : x > y;
}

/* Stores the current file's usage and starts counting afresh. */
static void seal_usage(ldb_storage *s) {
  if (s->cur_log != 0 && s->cur_n > 0) {
    qsort(s->cur_lb, s->cur_n, sizeof(*s->cur_lb), cmp_ledger_bytes);
    store_usage(s, s->cur_log, s->cur_lb, s->cur_n);
  }
  s->cur_n = 0;
}

void ldb_note_appended(ldb_storage *s, const sl_entry_log_rec *recs,
                       const sl_entry_loc *locs, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (locs[i].log != s->cur_log) {
      seal_usage(s);
      s->cur_log = locs[i].log;
    }
    uint64_t bytes = SL_ENTRY_LOG_REC_HDR + (uint64_t)recs[i].len;
    size_t k = s->cur_n;
    /* Usually the ledger of the record before; else a short walk (a file
     * holds the ledgers of the partitions this bookie serves). */
    while (k > 0 && s->cur_lb[k - 1].ledger != recs[i].ledger) k--;
    if (k > 0) {
      s->cur_lb[k - 1].bytes += bytes;
      if (k != s->cur_n) { /* keep the last one used at the end */
        ldb_ledger_bytes t = s->cur_lb[k - 1];
        s->cur_lb[k - 1] = s->cur_lb[s->cur_n - 1];
        s->cur_lb[s->cur_n - 1] = t;
      }
      continue;
    }
    if (s->cur_n == s->cur_cap) {
      s->cur_cap = s->cur_cap ? s->cur_cap * 2 : 16;
      s->cur_lb = sl_xrealloc(s->cur_lb, s->cur_cap * sizeof(*s->cur_lb));
    }
    s->cur_lb[s->cur_n++] = (ldb_ledger_bytes){recs[i].ledger, bytes};
  }
}

sl_status ldb_get_usage(ldb_storage *s, uint64_t log, ldb_ledger_bytes **lb, size_t *n,
                        sl_err *err) {
  uint8_t k[USAGE_KEY_LEN];
  usage_key(k, log);
  char *errptr = NULL;
  size_t vlen = 0;
  char *v = leveldb_get(s->db, s->ro, (const char *)k, sizeof(k), &vlen, &errptr);
  if (errptr != NULL) return ldb_error(errptr, err, "get entry log usage");
  if (v == NULL) return SL_ENOTFOUND;
  const uint8_t *u = (const uint8_t *)v;
  sl_status st = SL_OK;
  if (vlen < 5 || u[0] != USAGE_VERSION || vlen != 5 + 16 * (size_t)sl_get_le32(u + 1)) {
    st = sl_err_set(err, SL_ECORRUPT, "entry log %" PRIu64 ": malformed usage record", log);
  } else {
    *n = sl_get_le32(u + 1);
    *lb = sl_xmalloc((*n + 1) * sizeof(**lb));
    for (size_t i = 0; i < *n; i++)
      (*lb)[i] = (ldb_ledger_bytes){sl_get_le64(u + 5 + 16 * i), sl_get_le64(u + 13 + 16 * i)};
  }
  leveldb_free(v);
  return st;
}

static bool decode_log_index(const uint8_t *u, size_t vlen, ldb_index *out);

sl_status ldb_ledger_uses_log(ldb_storage *s, uint64_t ledger, uint64_t log, bool *uses,
                              sl_err *err) {
  uint8_t k[ENTRY_KEY_LEN];
  ldb_entry_key(k, ledger, 0);
  *uses = false;
  leveldb_iterator_t *it = leveldb_create_iterator(s->db, s->ro_scan);
  for (leveldb_iter_seek(it, (const char *)k, sizeof(k)); leveldb_iter_valid(it) && !*uses;
       leveldb_iter_next(it)) {
    size_t klen, vlen;
    const char *key = leveldb_iter_key(it, &klen);
    if (klen != ENTRY_KEY_LEN || memcmp(key, k, 9) != 0) break;
    const char *v = leveldb_iter_value(it, &vlen);
    ldb_index ix;
    *uses = decode_log_index((const uint8_t *)v, vlen, &ix) && ix.loc.log == log;
  }
  char *errptr = NULL;
  leveldb_iter_get_error(it, &errptr);
  leveldb_iter_destroy(it);
  if (errptr != NULL) return ldb_error(errptr, err, "index scan");
  return SL_OK;
}

void ldb_drop_usage(ldb_storage *s, uint64_t log) {
  uint8_t k[USAGE_KEY_LEN];
  usage_key(k, log);
  char *errptr = NULL;
  leveldb_delete(s->db, s->wo, (const char *)k, sizeof(k), &errptr);
  if (errptr != NULL) leveldb_free(errptr);
}

static void batch_put_inline(leveldb_writebatch_t *b, const sl_ls_op *op, uint8_t **val,
                             size_t *cap) {
  if (ENTRY_HDR + (size_t)op->len > *cap) {
    *cap = ENTRY_HDR + (size_t)op->len;
    *val = sl_xrealloc(*val, *cap);
  }
  (*val)[0] = FORMAT_VERSION;
  sl_put_le32(*val + 1, op->crc);
  if (op->len > 0) memcpy(*val + ENTRY_HDR, op->payload, op->len);
  uint8_t k[ENTRY_KEY_LEN];
  ldb_entry_key(k, op->ledger, op->entry);
  leveldb_writebatch_put(b, (const char *)k, ENTRY_KEY_LEN, (const char *)*val,
                         ENTRY_HDR + (size_t)op->len);
}

static sl_status batch_ops(ldb_storage *s, leveldb_writebatch_t *b, const sl_ls_op *ops,
                           size_t n, const sl_entry_loc *locs, sl_err *err) {
  sl_status st = SL_OK;
  uint8_t *val = NULL;
  size_t cap = 0, nloc = 0;
  uint8_t k[ENTRY_KEY_LEN];
  uint8_t mv[META_VAL_LEN];
  for (size_t i = 0; i < n && st == SL_OK; i++) {
    const sl_ls_op *op = &ops[i];
    switch (op->kind) {
      case SL_LS_PUT_ENTRY:
        if (locs != NULL)
          st = ldb_put_index(s, b, op->ledger, op->entry, op->crc, locs[nloc++]);
        else
          batch_put_inline(b, op, &val, &cap);
        break;
      case SL_LS_PUT_META:
        meta_key(k, op->meta.ledger);
        encode_meta(mv, &op->meta);
        leveldb_writebatch_put(b, (const char *)k, META_KEY_LEN, (const char *)mv,
                               sizeof(mv));
        break;
      case SL_LS_DELETE_LEDGER:
        st = batch_delete_ledger(s, b, op->ledger, err);
        break;
      default:
        st = sl_err_set(err, SL_EINVAL, "ledger storage: bad op %d", (int)op->kind);
    }
  }
  free(val);
  return st;
}

/* Invariant 2, with the entry log synced first: an index made durable by
 * the flush below never points at payload bytes that are not. */
static sl_status make_durable(ldb_storage *s, leveldb_writebatch_t *b,
                              const sl_journal_pos *checkpoint, sl_err *err) {
  if (s->el != NULL) {
    sl_status st = sl_entry_log_sync(s->el, err);
    if (st != SL_OK) return st;
  }
  /* No key starts with 0x00, so nothing is compacted: only the memtable is
   * written out (synced) and the call waits for it. A failure there sets
   * leveldb's background error, which fails the synced write after. */
  leveldb_compact_range(s->db, "\0", 1, "\0", 1);
  uint8_t cv[16];
  sl_put_le64(cv, checkpoint->segment);
  sl_put_le64(cv + 8, checkpoint->offset);
  leveldb_writebatch_put(b, ckpt_key, sizeof(ckpt_key) - 1, (const char *)cv, sizeof(cv));
  return SL_OK;
}

static sl_status ldb_write(sl_ledger_storage *ls, const sl_ls_op *ops, size_t n,
                           const sl_journal_pos *checkpoint, sl_err *err) {
  ldb_storage *s = (ldb_storage *)ls;
  sl_status st = SL_OK;
  sl_entry_loc *locs = NULL;
  leveldb_writebatch_t *b = leveldb_writebatch_create();
  /* A checkpoint alone takes no wmu: its sync and memtable flush must not
   * hold up the applier's writes. */
  bool locked = n > 0;
  if (locked) pthread_mutex_lock(&s->wmu);
  if (s->el != NULL) st = append_payloads(s, ops, n, &locs, err);
  if (st == SL_OK) {
    st = batch_ops(s, b, ops, n, s->el != NULL ? locs : NULL, err);
  }
  if (st == SL_OK && checkpoint != NULL) st = make_durable(s, b, checkpoint, err);
  if (st == SL_OK) {
    char *errptr = NULL;
    leveldb_write(s->db, checkpoint != NULL ? s->wo_sync : s->wo, b, &errptr);
    if (errptr != NULL) st = ldb_error(errptr, err, "write");
  }
  if (locked) pthread_mutex_unlock(&s->wmu);
  if (st == SL_OK && checkpoint != NULL) atomic_fetch_add(&s->checkpoints, 1);
  free(locs);
  leveldb_writebatch_destroy(b);
  return st;
}

static void free_value(void *p) { leveldb_free(p); }

static sl_status malformed(uint64_t ledger, int64_t entry, sl_err *err) {
  return sl_err_set(err, SL_ECORRUPT, "ledger %" PRIu64 " entry %" PRId64
                    ": malformed stored value", ledger, entry);
}

/* Reads the raw index value. *v is NULL when there is none. */
static sl_status get_value(ldb_storage *s, uint64_t ledger, int64_t entry, char **v,
                           size_t *vlen, sl_err *err) {
  uint8_t k[ENTRY_KEY_LEN];
  ldb_entry_key(k, ledger, entry);
  char *errptr = NULL;
  *v = leveldb_get(s->db, s->ro, (const char *)k, sizeof(k), vlen, &errptr);
  if (errptr != NULL) {
    sl_status st = ldb_error(errptr, err, "get");
    return sl_err_wrap(err, st, "ledger %" PRIu64 " entry %" PRId64, ledger, entry);
  }
  return SL_OK;
}

static bool decode_log_index(const uint8_t *u, size_t vlen, ldb_index *out) {
  if (vlen != LOG_VAL_LEN || u[0] != FORMAT_VERSION_LOG) return false;
  out->in_log = true;
  out->crc = sl_get_le32(u + 1);
  out->loc = (sl_entry_loc){.log = sl_get_le64(u + 5), .offset = sl_get_le64(u + 13),
                            .len = sl_get_le32(u + 21)};
  return true;
}

sl_status ldb_get_index(ldb_storage *s, uint64_t ledger, int64_t entry, ldb_index *out,
                        sl_err *err) {
  char *v;
  size_t vlen = 0;
  sl_status st = get_value(s, ledger, entry, &v, &vlen, err);
  if (st != SL_OK) return st;
  if (v == NULL) return SL_ENOTFOUND;
  *out = (ldb_index){.in_log = false};
  if (((const uint8_t *)v)[0] == FORMAT_VERSION_LOG &&
      !decode_log_index((const uint8_t *)v, vlen, out))
    st = malformed(ledger, entry, err);
  leveldb_free(v);
  return st;
}

static sl_status corrupt(uint64_t ledger, int64_t entry, sl_err *err) {
  sl_log(SL_LOG_ERROR, "event=entry_corrupt ledger=%" PRIu64 " entry=%" PRId64, ledger,
         entry);
  return sl_err_set(err, SL_ECORRUPT, "ledger %" PRIu64 " entry %" PRId64
                    ": checksum mismatch", ledger, entry);
}

/* An entry whose payload is in the leveldb value (versions 1 and 2). */
static sl_status inline_entry(uint64_t ledger, int64_t entry, char *v, size_t vlen,
                              sl_ledger_entry *out, sl_err *err) {
  const uint8_t *u = (const uint8_t *)v;
  if (vlen < ENTRY_HDR || (u[0] != FORMAT_VERSION && u[0] != FORMAT_VERSION_V1) ||
      vlen - ENTRY_HDR > UINT32_MAX) {
    leveldb_free(v);
    return malformed(ledger, entry, err);
  }
  uint32_t crc = sl_get_le32(u + 1);
  uint32_t len = (uint32_t)(vlen - ENTRY_HDR);
  bool ok;
  if (u[0] == FORMAT_VERSION_V1) {
    /* Old value: check what it stored, hand out today's entry checksum. */
    ok = sl_crc32c(u + ENTRY_HDR, len) == crc;
    crc = sl_entry_crc(ledger, entry, u + ENTRY_HDR, len);
  } else {
    ok = sl_entry_crc(ledger, entry, u + ENTRY_HDR, len) == crc;
  }
  if (!ok) {
    leveldb_free(v); /* invariant 3: never hand out the bad bytes */
    return corrupt(ledger, entry, err);
  }
  *out = (sl_ledger_entry){.payload = u + ENTRY_HDR, .len = len, .crc = crc, .base_ = v,
                           .free_ = free_value};
  return SL_OK;
}

/* An entry whose payload is in the entry log. A read that finds its file
 * removed lost a race with the collector, which moved the entry and then
 * removed the file: the index read again says where it went. */
static sl_status log_entry(ldb_storage *s, uint64_t ledger, int64_t entry, char *v,
                           size_t vlen, sl_ledger_entry *out, sl_err *err) {
  ldb_index ix;
  for (int attempt = 0;; attempt++) {
    bool ok = decode_log_index((const uint8_t *)v, vlen, &ix);
    leveldb_free(v);
    if (!ok) return malformed(ledger, entry, err);
    if (s->el == NULL) {
      return sl_err_set(err, SL_EIO, "ledger %" PRIu64 " entry %" PRId64
                        ": in the entry log, which is switched off", ledger, entry);
    }
    uint8_t *rec = NULL;
    uint32_t crc = 0;
    sl_err rerr = SL_ERR_INIT;
    sl_status st = sl_entry_log_read(s->el, ix.loc, ledger, entry, &rec, &crc, &rerr);
    if (st == SL_OK) {
      const uint8_t *payload = rec + SL_ENTRY_LOG_REC_HDR;
      if (crc != ix.crc || sl_entry_crc(ledger, entry, payload, ix.loc.len) != crc) {
        free(rec); /* invariant 3 */
        return corrupt(ledger, entry, err);
      }
      *out = (sl_ledger_entry){.payload = payload, .len = ix.loc.len, .crc = crc,
                               .base_ = rec, .free_ = free};
      return SL_OK;
    }
    if (st != SL_ENOTFOUND || attempt == 2) {
      sl_err_set(err, st, "%s", rerr.msg);
      return sl_err_wrap(err, st, "ledger %" PRIu64 " entry %" PRId64, ledger, entry);
    }
    if ((st = get_value(s, ledger, entry, &v, &vlen, err)) != SL_OK) return st;
    if (v == NULL) break;
  }
  return sl_err_set(err, SL_ENOTFOUND, "ledger %" PRIu64 " entry %" PRId64
                    ": not found", ledger, entry);
}

static sl_status ldb_get_entry(sl_ledger_storage *ls, uint64_t ledger, int64_t entry,
                               sl_ledger_entry *out, sl_err *err) {
  ldb_storage *s = (ldb_storage *)ls;
  char *v;
  size_t vlen = 0;
  sl_status st = get_value(s, ledger, entry, &v, &vlen, err);
  if (st != SL_OK) return st;
  if (v == NULL) {
    return sl_err_set(err, SL_ENOTFOUND, "ledger %" PRIu64 " entry %" PRId64
                      ": not found", ledger, entry);
  }
  if (vlen >= 1 && (uint8_t)v[0] == FORMAT_VERSION_LOG)
    return log_entry(s, ledger, entry, v, vlen, out, err);
  return inline_entry(ledger, entry, v, vlen, out, err);
}

static sl_status ldb_scan_meta(sl_ledger_storage *ls, sl_ledger_meta_cb cb, void *arg,
                               sl_err *err) {
  ldb_storage *s = (ldb_storage *)ls;
  sl_status st = SL_OK;
  leveldb_iterator_t *it = leveldb_create_iterator(s->db, s->ro_scan);
  for (leveldb_iter_seek(it, "L", 1); leveldb_iter_valid(it) && st == SL_OK;
       leveldb_iter_next(it)) {
    size_t klen, vlen;
    const char *key = leveldb_iter_key(it, &klen);
    if (klen < 1 || key[0] != 'L') break;
    const char *val = leveldb_iter_value(it, &vlen);
    sl_ledger_meta m;
    if (!decode_meta((const uint8_t *)key, klen, (const uint8_t *)val, vlen, &m)) {
      st = sl_err_set(err, SL_ECORRUPT, "ledger storage: malformed ledger state");
      break;
    }
    st = cb(&m, arg);
  }
  char *errptr = NULL;
  leveldb_iter_get_error(it, &errptr);
  leveldb_iter_destroy(it);
  if (errptr != NULL) return ldb_error(errptr, err, "scan");
  return st;
}

static sl_status ldb_get_checkpoint(sl_ledger_storage *ls, sl_journal_pos *out,
                                    sl_err *err) {
  ldb_storage *s = (ldb_storage *)ls;
  char *errptr = NULL;
  size_t vlen = 0;
  char *v = leveldb_get(s->db, s->ro, ckpt_key, sizeof(ckpt_key) - 1, &vlen, &errptr);
  if (errptr == NULL && v == NULL)
    v = leveldb_get(s->db, s->ro, old_ckpt_key, sizeof(old_ckpt_key) - 1, &vlen, &errptr);
  if (errptr != NULL) return ldb_error(errptr, err, "get checkpoint");
  *out = (sl_journal_pos){0, 0};
  if (v == NULL) return SL_OK;
  sl_status st = SL_OK;
  if (vlen != 16) {
    st = sl_err_set(err, SL_ECORRUPT, "ledger storage: malformed checkpoint");
  } else {
    out->segment = sl_get_le64((const uint8_t *)v);
    out->offset = sl_get_le64((const uint8_t *)v + 8);
  }
  leveldb_free(v);
  return st;
}

sl_status ldb_ledger_alive(ldb_storage *s, uint64_t ledger, bool *alive, sl_err *err) {
  uint8_t k[META_KEY_LEN];
  meta_key(k, ledger);
  char *errptr = NULL;
  size_t vlen = 0;
  char *v = leveldb_get(s->db, s->ro, (const char *)k, sizeof(k), &vlen, &errptr);
  if (errptr != NULL) return ldb_error(errptr, err, "get ledger state");
  /* No state at all: keep the bytes. The bookie store writes a ledger's
   * state with its entries and leaves a tombstone when it deletes one, so
   * only a caller that skipped states ends up here. */
  *alive = true;
  if (v == NULL) return SL_OK;
  sl_ledger_meta m;
  bool ok = decode_meta(k, sizeof(k), (const uint8_t *)v, vlen, &m);
  leveldb_free(v);
  if (!ok) return sl_err_set(err, SL_ECORRUPT, "ledger %" PRIu64 ": malformed state", ledger);
  *alive = !m.deleted;
  return SL_OK;
}

static void ldb_stats(sl_ledger_storage *ls, sl_ledger_storage_stats *out) {
  ldb_storage *s = (ldb_storage *)ls;
  if (s->el == NULL) return;
  sl_entry_log_usage(s->el, &out->entry_log_files, &out->entry_log_bytes);
  ldb_gc_stats(s->gc, &out->gc_removed_files, &out->gc_compacted_bytes,
               &out->gc_scanned_bytes);
}

static sl_status ldb_gc(sl_ledger_storage *ls, sl_err *err) {
  ldb_storage *s = (ldb_storage *)ls;
  return s->el != NULL ? ldb_gc_round(s, err) : SL_OK;
}

static void ldb_close(sl_ledger_storage *ls) {
  ldb_storage *s = (ldb_storage *)ls;
  ldb_gc_stop(s->gc);
  /* The current file is sealed by the next open: store its usage now. */
  if (s->db != NULL) seal_usage(s);
  free(s->cur_lb);
  sl_entry_log_close(s->el);
  if (s->db != NULL) leveldb_close(s->db);
  leveldb_options_destroy(s->options);
  leveldb_cache_destroy(s->cache);
  leveldb_filterpolicy_destroy(s->bloom);
  leveldb_readoptions_destroy(s->ro);
  leveldb_readoptions_destroy(s->ro_scan);
  leveldb_writeoptions_destroy(s->wo);
  leveldb_writeoptions_destroy(s->wo_sync);
  pthread_mutex_destroy(&s->wmu);
  free(s->path);
  free(s);
}

static const sl_ledger_storage_ops ldb_ops = {
    .name = "leveldb",
    .write = ldb_write,
    .get_entry = ldb_get_entry,
    .scan_meta = ldb_scan_meta,
    .get_checkpoint = ldb_get_checkpoint,
    .stats = ldb_stats,
    .gc = ldb_gc,
    .close = ldb_close,
};

static sl_status open_entry_log(ldb_storage *s, sl_err *err) {
  size_t n = strlen(s->path) + sizeof("/entrylogs");
  char *dir = sl_xmalloc(n);
  snprintf(dir, n, "%s/entrylogs", s->path);
  sl_status st = sl_entry_log_open(dir, &s->opts.log, &s->el, err);
  free(dir);
  if (st == SL_OK) ldb_gc_start(s);
  return st;
}

sl_status sl_ledger_storage_leveldb_open(const char *path,
                                         const sl_ledger_storage_leveldb_opts *opts,
                                         sl_ledger_storage **out, sl_err *err) {
  static const sl_ledger_storage_leveldb_opts defaults =
      SL_LEDGER_STORAGE_LEVELDB_OPTS_INIT;
  if (path == NULL || path[0] == '\0' || out == NULL) {
    return sl_err_set(err, SL_EINVAL, "ledger storage: path is required");
  }
  if (opts == NULL) opts = &defaults;
  if (opts->entry_log && (opts->gc_interval_ms < 0 || opts->gc_rate_bytes == 0 ||
                          !(opts->gc_compact_ratio >= 0 && opts->gc_compact_ratio <= 1))) {
    return sl_err_set(err, SL_EINVAL, "ledger storage: gc_interval_ms, gc_rate_bytes "
                      "or gc_compact_ratio out of range");
  }
  ldb_storage *s = sl_xcalloc(1, sizeof(*s));
  s->base.ops = &ldb_ops;
  s->opts = *opts;
  s->path = sl_xstrdup(path);
  pthread_mutex_init(&s->wmu, NULL);
  atomic_init(&s->checkpoints, 0);
  s->options = leveldb_options_create();
  s->cache = leveldb_cache_create_lru(opts->cache_bytes);
  s->bloom = leveldb_filterpolicy_create_bloom(10);
  leveldb_options_set_create_if_missing(s->options, 1);
  leveldb_options_set_paranoid_checks(s->options, 0); /* invariant 4 */
  leveldb_options_set_cache(s->options, s->cache);
  leveldb_options_set_filter_policy(s->options, s->bloom);
  leveldb_options_set_write_buffer_size(s->options, opts->write_buffer_bytes);
  leveldb_options_set_max_file_size(s->options, opts->max_file_bytes);
  leveldb_options_set_compression(s->options, opts->compress ? leveldb_snappy_compression
                                                             : leveldb_no_compression);
  s->ro = leveldb_readoptions_create();
  leveldb_readoptions_set_verify_checksums(s->ro, 1);
  s->ro_scan = leveldb_readoptions_create();
  leveldb_readoptions_set_verify_checksums(s->ro_scan, 1);
  leveldb_readoptions_set_fill_cache(s->ro_scan, 0);
  s->wo = leveldb_writeoptions_create();
  s->wo_sync = leveldb_writeoptions_create();
  leveldb_writeoptions_set_sync(s->wo_sync, 1);
  char *errptr = NULL;
  s->db = leveldb_open(s->options, path, &errptr);
  sl_status st = SL_OK;
  if (errptr != NULL) {
    st = ldb_error(errptr, err, "open");
    sl_err_wrap(err, st, "%s", path);
    s->db = NULL;
  } else if (opts->entry_log) {
    st = open_entry_log(s, err);
  }
  if (st != SL_OK) {
    ldb_close(&s->base);
    return st;
  }
  *out = &s->base;
  return SL_OK;
}
