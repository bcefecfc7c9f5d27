/*
 * Ledger storage with everything in one leveldb database: entries, per-ledger
 * state and the checkpoint. Layout in ledger_storage.h.
 *
 * Why entries live in leveldb directly rather than in an entry log with a
 * leveldb index (measured with //bookie/bench:bookie-bench-storage on our
 * 2-core test VM, figures in the bench's output and the bookie report):
 *  - Adds are acked after the journal's fdatasync; leveldb is written
 *    unsynced on the applier thread, overlapping the next journal sync. At
 *    1 KiB the store takes 44-80k adds/s with 256 in flight, about half to
 *    two thirds of the journal alone and above what one gRPC server on this
 *    machine can deliver (~35k calls/s), so leveldb is not the bottleneck.
 *  - At 64 KiB every payload byte is written three times (journal, leveldb
 *    log, level-0 table; sequential keys make most later compactions trivial
 *    moves): 60-210 MB/s against 200-260 MB/s for the journal alone, and
 *    memtable flushes stall the applier (ack p99 of hundreds of ms). An
 *    entry log would write twice and avoid the memtable, so at best ~1.5x
 *    for large entries, at the price of entry-log garbage collection. That
 *    trade is worth revisiting if large entries dominate; this interface is
 *    where it would go.
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
 *     bytes filed under another id never verify.
 *  4. paranoid_checks is off: after a power cut leveldb's own unsynced log
 *     may end in garbage, and with paranoid checks leveldb would refuse to
 *     open. Everything in that log since the last checkpoint is rebuilt from
 *     the journal anyway. Reads still verify block checksums.
 *
 * No state of its own beyond the leveldb handle, so no lock: leveldb is
 * thread-safe for concurrent reads and writes.
 */
#include <leveldb/c.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bookie/ledger_storage.h"
#include "common/crc32c.h"
#include "common/log.h"

#define ENTRY_KEY_LEN 17
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

typedef struct ldb_storage {
  sl_ledger_storage base; /* first: ops */
  char *path;
  leveldb_t *db;
  leveldb_options_t *options;
  leveldb_cache_t *cache;
  leveldb_filterpolicy_t *bloom;
  leveldb_readoptions_t *ro;      /* verify checksums */
  leveldb_readoptions_t *ro_scan; /* verify checksums, no cache fill */
  leveldb_writeoptions_t *wo;      /* no sync */
  leveldb_writeoptions_t *wo_sync; /* sync */
} ldb_storage;

static void put_be64(uint8_t *p, uint64_t v) {
  for (int i = 7; i >= 0; i--, v >>= 8) p[i] = (uint8_t)v;
}
static uint64_t get_be64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
  return v;
}
static void put_le64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint64_t get_le64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}
static void put_le32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get_le32(const uint8_t *p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

static void entry_key(uint8_t *k, uint64_t ledger, int64_t entry) {
  k[0] = 'E';
  put_be64(k + 1, ledger);
  put_be64(k + 9, (uint64_t)entry);
}

static void meta_key(uint8_t *k, uint64_t ledger) {
  k[0] = 'L';
  put_be64(k + 1, ledger);
}

static void encode_meta(uint8_t *v, const sl_ledger_meta *m) {
  v[0] = META_VERSION;
  v[1] = (uint8_t)((m->fenced ? META_F_FENCED : 0) | (m->has_key ? META_F_KEY : 0) |
                   (m->deleted ? META_F_DELETED : 0));
  put_le64(v + 2, m->max_epoch);
  put_le64(v + 10, (uint64_t)m->lac);
  put_le64(v + 18, (uint64_t)m->last_entry);
  put_le64(v + 26, m->entries);
  put_le64(v + 34, m->bytes);
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
  m->ledger = get_be64(k + 1);
  m->fenced = (v[1] & META_F_FENCED) != 0;
  m->deleted = (v[1] & META_F_DELETED) != 0;
  m->max_epoch = get_le64(v + 2);
  m->lac = (int64_t)get_le64(v + 10);
  m->last_entry = (int64_t)get_le64(v + 18);
  m->entries = get_le64(v + 26);
  m->bytes = get_le64(v + 34);
  m->has_key = v2 && (v[1] & META_F_KEY) != 0;
  if (m->has_key) memcpy(m->key, v + META_VAL_LEN_V1, SL_LEDGER_KEY_BYTES);
  return true;
}

/* Maps a leveldb error string to a status and frees it. */
static sl_status ldb_error(char *errptr, sl_err *err, const char *what) {
  sl_status st = strncmp(errptr, "Corruption", 10) == 0 ? SL_ECORRUPT : SL_EIO;
  sl_err_set(err, st, "ledger storage: %s: %s", what, errptr);
  leveldb_free(errptr);
  return st;
}

/* Adds deletes for every stored entry of `ledger` and its state to b. */
static sl_status batch_delete_ledger(ldb_storage *s, leveldb_writebatch_t *b,
                                     uint64_t ledger, sl_err *err) {
  uint8_t k[ENTRY_KEY_LEN];
  entry_key(k, ledger, 0);
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

static sl_status ldb_write(sl_ledger_storage *ls, const sl_ls_op *ops, size_t n,
                           const sl_journal_pos *checkpoint, sl_err *err) {
  ldb_storage *s = (ldb_storage *)ls;
  sl_status st = SL_OK;
  leveldb_writebatch_t *b = leveldb_writebatch_create();
  uint8_t *val = NULL;
  size_t cap = 0;
  uint8_t k[ENTRY_KEY_LEN];
  uint8_t mv[META_VAL_LEN];
  for (size_t i = 0; i < n && st == SL_OK; i++) {
    const sl_ls_op *op = &ops[i];
    switch (op->kind) {
      case SL_LS_PUT_ENTRY:
        if (ENTRY_HDR + (size_t)op->len > cap) {
          cap = ENTRY_HDR + (size_t)op->len;
          val = sl_xrealloc(val, cap);
        }
        val[0] = FORMAT_VERSION;
        put_le32(val + 1, op->crc);
        if (op->len > 0) memcpy(val + ENTRY_HDR, op->payload, op->len);
        entry_key(k, op->ledger, op->entry);
        leveldb_writebatch_put(b, (const char *)k, ENTRY_KEY_LEN, (const char *)val,
                               ENTRY_HDR + (size_t)op->len);
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
  if (st == SL_OK && checkpoint != NULL) {
    /* Invariant 2. No key starts with 0x00, so nothing is compacted: only
     * the memtable is written out (synced) and the call waits for it. A
     * failure there sets leveldb's background error, which fails the synced
     * write below. */
    leveldb_compact_range(s->db, "\0", 1, "\0", 1);
    uint8_t cv[16];
    put_le64(cv, checkpoint->segment);
    put_le64(cv + 8, checkpoint->offset);
    leveldb_writebatch_put(b, ckpt_key, sizeof(ckpt_key) - 1, (const char *)cv,
                           sizeof(cv));
  }
  if (st == SL_OK) {
    char *errptr = NULL;
    leveldb_write(s->db, checkpoint != NULL ? s->wo_sync : s->wo, b, &errptr);
    if (errptr != NULL) st = ldb_error(errptr, err, "write");
  }
  free(val);
  leveldb_writebatch_destroy(b);
  return st;
}

static void free_value(void *p) { leveldb_free(p); }

static sl_status ldb_get_entry(sl_ledger_storage *ls, uint64_t ledger, int64_t entry,
                               sl_ledger_entry *out, sl_err *err) {
  ldb_storage *s = (ldb_storage *)ls;
  uint8_t k[ENTRY_KEY_LEN];
  entry_key(k, ledger, entry);
  char *errptr = NULL;
  size_t vlen = 0;
  char *v = leveldb_get(s->db, s->ro, (const char *)k, sizeof(k), &vlen, &errptr);
  if (errptr != NULL) {
    sl_status st = ldb_error(errptr, err, "get");
    return sl_err_wrap(err, st, "ledger %" PRIu64 " entry %" PRId64, ledger, entry);
  }
  if (v == NULL) {
    return sl_err_set(err, SL_ENOTFOUND, "ledger %" PRIu64 " entry %" PRId64
                      ": not found", ledger, entry);
  }
  const uint8_t *u = (const uint8_t *)v;
  if (vlen < ENTRY_HDR || (u[0] != FORMAT_VERSION && u[0] != FORMAT_VERSION_V1) ||
      vlen - ENTRY_HDR > UINT32_MAX) {
    leveldb_free(v);
    return sl_err_set(err, SL_ECORRUPT, "ledger %" PRIu64 " entry %" PRId64
                      ": malformed stored value", ledger, entry);
  }
  uint32_t crc = get_le32(u + 1);
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
    sl_log(SL_LOG_ERROR, "event=entry_corrupt ledger=%" PRIu64 " entry=%" PRId64,
           ledger, entry);
    return sl_err_set(err, SL_ECORRUPT, "ledger %" PRIu64 " entry %" PRId64
                      ": checksum mismatch", ledger, entry);
  }
  out->payload = u + ENTRY_HDR;
  out->len = len;
  out->crc = crc;
  out->base_ = v;
  out->free_ = free_value;
  return SL_OK;
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
    out->segment = get_le64((const uint8_t *)v);
    out->offset = get_le64((const uint8_t *)v + 8);
  }
  leveldb_free(v);
  return st;
}

static void ldb_close(sl_ledger_storage *ls) {
  ldb_storage *s = (ldb_storage *)ls;
  if (s->db != NULL) leveldb_close(s->db);
  leveldb_options_destroy(s->options);
  leveldb_cache_destroy(s->cache);
  leveldb_filterpolicy_destroy(s->bloom);
  leveldb_readoptions_destroy(s->ro);
  leveldb_readoptions_destroy(s->ro_scan);
  leveldb_writeoptions_destroy(s->wo);
  leveldb_writeoptions_destroy(s->wo_sync);
  free(s->path);
  free(s);
}

static const sl_ledger_storage_ops ldb_ops = {
    "leveldb", ldb_write, ldb_get_entry, ldb_scan_meta, ldb_get_checkpoint, ldb_close,
};

sl_status sl_ledger_storage_leveldb_open(const char *path,
                                         const sl_ledger_storage_leveldb_opts *opts,
                                         sl_ledger_storage **out, sl_err *err) {
  static const sl_ledger_storage_leveldb_opts defaults =
      SL_LEDGER_STORAGE_LEVELDB_OPTS_INIT;
  if (path == NULL || path[0] == '\0' || out == NULL) {
    return sl_err_set(err, SL_EINVAL, "ledger storage: path is required");
  }
  if (opts == NULL) opts = &defaults;
  ldb_storage *s = sl_xcalloc(1, sizeof(*s));
  s->base.ops = &ldb_ops;
  s->path = sl_xstrdup(path);
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
  if (errptr != NULL) {
    sl_status st = ldb_error(errptr, err, "open");
    sl_err_wrap(err, st, "%s", path);
    s->db = NULL;
    ldb_close(&s->base);
    return st;
  }
  *out = &s->base;
  return SL_OK;
}
