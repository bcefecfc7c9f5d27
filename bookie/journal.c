#include "bookie/journal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "bookie/file_shrink.h"
#include "common/buf.h"
#include "common/bytes.h"
#include "common/clock.h"
#include "common/crc32c.h"
#include "common/log.h"
#include "common/metrics.h"

#define SEG_MAGIC "SLJOURN1"
#define SEG_VERSION 3u     /* written; 1 and 2 are still read (journal.h) */
#define SEG_VERSION_MIN 1u
#define SEG_HEADER_V2 32u  /* segment header size of versions 1 and 2 */
#define IOV_CHUNK 512 /* iovecs per pwritev, well under IOV_MAX */
/* Zeros are written this far ahead of the records, a chunk at a time (see
 * zero_ahead). */
#define ZERO_CHUNK (256u << 10)
#define ZERO_LEAD (256u << 10)

typedef enum jstate { J_OPEN, J_RUNNING, J_FAILED } jstate;

/* A segment file on disk and how many of its bytes hold data. */
typedef struct seg {
  uint64_t id;
  uint64_t bytes; /* header + records written (or found valid by replay) */
} seg;

struct sl_journal {
  sl_journal_opts opts;
  char *dir;
  const uint8_t *instance;   /* SL_JOURNAL_INSTANCE_BYTES, stamped into
                                segments; opts.instance_id or zeros */
  int dirfd;

  pthread_mutex_t mu;        /* guards everything down to `stats` */
  pthread_cond_t cv;         /* queue non-empty or stopping */
  jstate state;
  bool started;
  bool stopping;
  char errmsg[SL_ERR_MAX];   /* why FAILED */
  sl_journal_req *head, *tail;
  seg *segs;                 /* segment files on disk, ascending ids */
  size_t nsegs, segs_cap;
  sl_journal_pos tail_pos;
  uint64_t cur_seg;          /* segment being written, 0 before start */
  sl_journal_stats stats;

  /* Journal thread only. */
  pthread_t thread;
  int fd;                    /* current segment, -1 if none */
  uint64_t seg_id;
  uint64_t off;
  uint64_t zeroed;           /* segment bytes written (zeros or records) */
  uint8_t *zeros;            /* ZERO_CHUNK zero bytes */
  sl_buf hdrs;               /* record headers of the batch being written */

  /* Metrics (NULL without a registry; updates are lock-free). */
  sl_metrics_histogram *m_sync_seconds, *m_batch_records, *m_batch_bytes;
};

/* Group-commit batch sizes: records, then bytes, per fdatasync. */
static const double kBatchRecordBounds[] = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096};
static const double kBatchByteBounds[] = {512, 4096, 16384, 65536, 262144, 1048576,
                                          4194304, 16777216};

static sl_status register_metrics(sl_journal *j, sl_err *err) {
  sl_metrics *m = j->opts.metrics;
  if (m == NULL) return SL_OK;
  sl_status st = sl_metrics_register_histogram(
      m, "sluice_bookie_journal_sync_seconds",
      "latency of one journal fdatasync (the floor of add latency)", NULL, NULL, 0,
      &j->m_sync_seconds, err);
  if (st == SL_OK)
    st = sl_metrics_register_histogram(
        m, "sluice_bookie_journal_batch_records",
        "records made durable by one group commit (one fdatasync)", NULL,
        kBatchRecordBounds, sizeof(kBatchRecordBounds) / sizeof(double),
        &j->m_batch_records, err);
  if (st == SL_OK)
    st = sl_metrics_register_histogram(
        m, "sluice_bookie_journal_batch_bytes",
        "record bytes made durable by one group commit (one fdatasync)", NULL,
        kBatchByteBounds, sizeof(kBatchByteBounds) / sizeof(double),
        &j->m_batch_bytes, err);
  return st;
}

int sl_journal_pos_cmp(sl_journal_pos a, sl_journal_pos b) {
  if (a.segment != b.segment) return a.segment < b.segment ? -1 : 1;
  if (a.offset != b.offset) return a.offset < b.offset ? -1 : 1;
  return 0;
}

static bool valid_type(uint8_t t) {
  return t >= SL_JOURNAL_ADD && t <= SL_JOURNAL_DELETE;
}

/* Only adds and fences may carry a ledger key. */
static bool key_allowed(uint8_t t) {
  return t == SL_JOURNAL_ADD || t == SL_JOURNAL_FENCE;
}

uint64_t sl_journal_record_bytes(const sl_journal_record *r) {
  return SL_JOURNAL_RECORD_HEADER + (r->key != NULL ? SL_LEDGER_KEY_BYTES : 0) +
         (uint64_t)r->len;
}

/* CRC of a record's header bytes [4, 48) and its key (key may be NULL). */
static uint32_t header_crc(const uint8_t *h, const uint8_t *key) {
  uint32_t crc = sl_crc32c(h + 4, SL_JOURNAL_RECORD_HEADER - 4);
  if (key != NULL) crc = sl_crc32c_extend(crc, key, SL_LEDGER_KEY_BYTES);
  return crc;
}

/* The CRC a record's payload_crc must hold (journal.h): ADD records carry
 * the entry checksum, which binds the ledger and entry ids. */
static uint32_t expected_payload_crc(const sl_journal_record *r) {
  if (r->type == SL_JOURNAL_ADD) return sl_entry_crc(r->ledger, r->entry, r->payload, r->len);
  return sl_crc32c(r->payload, r->len);
}

/* Fills the 48-byte header. Its CRC covers the header and the key, and
 * through payload_crc the payload, so the journal thread never hashes
 * payloads. */
static void encode_header(uint8_t *h, const sl_journal_record *r) {
  memset(h, 0, SL_JOURNAL_RECORD_HEADER);
  sl_put_le32(h + 4, r->len);
  h[8] = (uint8_t)r->type;
  h[9] = r->key != NULL ? SL_JOURNAL_F_KEY : 0;
  sl_put_le32(h + 12, r->payload_crc);
  sl_put_le64(h + 16, r->ledger);
  sl_put_le64(h + 24, (uint64_t)r->entry);
  sl_put_le64(h + 32, r->epoch);
  sl_put_le64(h + 40, (uint64_t)r->lac);
  sl_put_le32(h, header_crc(h, r->key));
}

static void decode_header(const uint8_t *h, sl_journal_record *r) {
  r->len = sl_get_le32(h + 4);
  r->type = (sl_journal_rec_type)h[8];
  r->payload_crc = sl_get_le32(h + 12);
  r->ledger = sl_get_le64(h + 16);
  r->entry = (int64_t)sl_get_le64(h + 24);
  r->epoch = sl_get_le64(h + 32);
  r->lac = (int64_t)sl_get_le64(h + 40);
  r->payload = NULL;
  r->key = NULL;
}

/* Header fields a valid record has, before its CRC is checked. */
static bool header_plausible(const uint8_t *h) {
  uint8_t flags = h[9];
  if (!valid_type(h[8]) || h[10] != 0 || h[11] != 0) return false;
  if ((flags & ~SL_JOURNAL_F_KEY) != 0) return false;
  return (flags & SL_JOURNAL_F_KEY) == 0 || key_allowed(h[8]);
}

static void encode_seg_header(const sl_journal *j, uint8_t *h, uint64_t id) {
  memset(h, 0, SL_JOURNAL_SEGMENT_HEADER);
  memcpy(h, SEG_MAGIC, 8);
  sl_put_le32(h + 8, SEG_VERSION);
  sl_put_le32(h + 12, SL_JOURNAL_SEGMENT_HEADER);
  sl_put_le64(h + 16, id);
  memcpy(h + 24, j->instance, SL_JOURNAL_INSTANCE_BYTES);
  sl_put_le32(h + 44, sl_crc32c(h, 44));
}

/* Checks a segment header (h holds SL_JOURNAL_SEGMENT_HEADER bytes, fewer
 * valid for old versions) and returns its version, or 0 if it is not a
 * valid header of segment `id`. */
static uint32_t seg_header_version(const uint8_t *h, uint64_t id) {
  uint32_t v = sl_get_le32(h + 8);
  if (memcmp(h, SEG_MAGIC, 8) != 0 || v < SEG_VERSION_MIN || v > SEG_VERSION ||
      sl_get_le64(h + 16) != id)
    return 0;
  uint32_t size = v < 3 ? SEG_HEADER_V2 : SL_JOURNAL_SEGMENT_HEADER;
  uint32_t crc_at = size - 4; /* the crc covers every byte before it */
  return sl_get_le32(h + 12) == size && sl_get_le32(h + crc_at) == sl_crc32c(h, crc_at) ? v : 0;
}

/* ---- file helpers ---- */

static void seg_path(const sl_journal *j, uint64_t id, char *buf, size_t n) {
  snprintf(buf, n, "%s/%016" PRIx64 ".jnl", j->dir, id);
}

static bool parse_seg_name(const char *name, uint64_t *id) {
  size_t n = strlen(name);
  if (n != 20 || strcmp(name + 16, ".jnl") != 0) return false;
  uint64_t v = 0;
  for (int i = 0; i < 16; i++) {
    char c = name[i];
    int d = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
    if (d < 0) return false;
    v = (v << 4) | (uint64_t)d;
  }
  *id = v;
  return v != 0;
}

static int do_sync(sl_journal *j, int fd, bool data_only) {
  if (j->opts.sync_hook != NULL) return j->opts.sync_hook(fd, j->opts.hook_arg);
  return data_only ? fdatasync(fd) : fsync(fd);
}

static int cmp_seg(const void *a, const void *b) {
  uint64_t x = ((const seg *)a)->id, y = ((const seg *)b)->id;
  return x < y ? -1 : x > y;
}

/* Under j->mu once the journal is shared. */
static void segs_push(sl_journal *j, uint64_t id, uint64_t bytes) {
  if (j->nsegs == j->segs_cap) {
    j->segs_cap = j->segs_cap ? j->segs_cap * 2 : 16;
    j->segs = sl_xrealloc(j->segs, j->segs_cap * sizeof(*j->segs));
  }
  j->segs[j->nsegs++] = (seg){id, bytes};
}

/* Records how many bytes of segment `id` hold data. Under j->mu. */
static void segs_set_bytes(sl_journal *j, uint64_t id, uint64_t bytes) {
  for (size_t i = j->nsegs; i-- > 0;) { /* usually the last one */
    if (j->segs[i].id == id) {
      j->segs[i].bytes = bytes;
      return;
    }
  }
}

static sl_status list_segments(sl_journal *j, sl_err *err) {
  DIR *d = opendir(j->dir);
  if (d == NULL) {
    return sl_err_set(err, SL_EIO, "journal %s: opendir: %s", j->dir,
                      strerror(errno));
  }
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    uint64_t id;
    if (parse_seg_name(de->d_name, &id)) segs_push(j, id, 0);
  }
  closedir(d);
  if (j->nsegs > 0) qsort(j->segs, j->nsegs, sizeof(*j->segs), cmp_seg);
  j->stats.segments = j->nsegs;
  return SL_OK;
}

/* ---- open ---- */

sl_status sl_journal_open(const sl_journal_opts *opts, sl_journal **out,
                          sl_err *err) {
  sl_status st;
  if (opts == NULL || opts->dir == NULL || opts->dir[0] == '\0' ||
      out == NULL || opts->on_durable == NULL) {
    return sl_err_set(err, SL_EINVAL, "journal: dir and on_durable are required");
  }
  if (opts->segment_bytes < 4096 || opts->max_record_bytes == 0 ||
      opts->max_batch_bytes == 0) {
    return sl_err_set(err, SL_EINVAL,
                      "journal %s: segment_bytes must be at least 4096 and "
                      "limits non-zero", opts->dir);
  }
  if (mkdir(opts->dir, 0755) != 0 && errno != EEXIST) {
    return sl_err_set(err, SL_EIO, "journal %s: mkdir: %s", opts->dir,
                      strerror(errno));
  }
  sl_journal *j = sl_xcalloc(1, sizeof(*j));
  j->opts = *opts;
  j->dir = sl_xstrdup(opts->dir);
  static const uint8_t no_instance[SL_JOURNAL_INSTANCE_BYTES];
  j->instance = opts->instance_id != NULL ? opts->instance_id : no_instance;
  j->fd = -1;
  j->state = J_OPEN;
  j->dirfd = open(j->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (j->dirfd < 0) {
    st = sl_err_set(err, SL_EIO, "journal %s: open dir: %s", j->dir,
                    strerror(errno));
    goto out_free;
  }
  st = list_segments(j, err);
  if (st == SL_OK) st = register_metrics(j, err);
  if (st != SL_OK) goto out_close_dir;
  pthread_mutex_init(&j->mu, NULL);
  pthread_cond_init(&j->cv, NULL);
  *out = j;
  return SL_OK;

out_close_dir:
  close(j->dirfd);
out_free:
  free(j->segs);
  free(j->zeros);
  free(j->dir);
  free(j);
  return st;
}

/* ---- replay ---- */

static bool read_full(int fd, void *buf, size_t n, uint64_t off) {
  uint8_t *p = buf;
  while (n > 0) {
    ssize_t r = pread(fd, p, n, (off_t)off);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    n -= (size_t)r;
    off += (uint64_t)r;
  }
  return true;
}

static bool all_zero(const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (p[i] != 0) return false;
  }
  return true;
}

typedef struct replay_ctx {
  sl_journal *j;
  sl_journal_replay_cb cb;
  void *arg;
  sl_journal_replay_stats *stats;
  sl_buf buf;       /* payload of the record being read */
  uint32_t version; /* of the segment being read */
} replay_ctx;

/* Reads the record at `off` into *r (payload in c->buf.data, key in `key`);
 * false if it is not a valid record. */
static bool read_record(replay_ctx *c, int fd, uint64_t off, uint64_t size,
                        sl_journal_record *r, uint8_t *key) {
  uint8_t h[SL_JOURNAL_RECORD_HEADER];
  if (off + sizeof(h) > size || !read_full(fd, h, sizeof(h), off)) return false;
  if (!header_plausible(h)) return false;
  decode_header(h, r);
  uint64_t at = off + sizeof(h);
  if ((h[9] & SL_JOURNAL_F_KEY) != 0) {
    if (at + SL_LEDGER_KEY_BYTES > size || !read_full(fd, key, SL_LEDGER_KEY_BYTES, at))
      return false;
    r->key = key;
    at += SL_LEDGER_KEY_BYTES;
  }
  if (sl_get_le32(h) != header_crc(h, r->key) || r->len > c->j->opts.max_record_bytes ||
      at + r->len > size)
    return false;
  sl_buf_reset(&c->buf);
  sl_buf_reserve(&c->buf, r->len);
  if (!read_full(fd, c->buf.data, r->len, at)) return false;
  r->payload = c->buf.data;
  if (c->version >= 3) return expected_payload_crc(r) == r->payload_crc;
  /* Before version 3 an ADD's payload_crc covered the payload only; hand
   * it on as the entry checksum of today. */
  if (sl_crc32c(r->payload, r->len) != r->payload_crc) return false;
  r->payload_crc = expected_payload_crc(r);
  return true;
}

/* Reads records of one open segment from `off`; stops at the first bad one. */
static sl_status replay_records(replay_ctx *c, int fd, uint64_t id,
                                uint64_t off, uint64_t size, sl_err *err) {
  uint8_t h[SL_JOURNAL_RECORD_HEADER];
  uint8_t key[SL_LEDGER_KEY_BYTES];
  for (;;) {
    sl_journal_record r;
    bool ok = read_record(c, fd, off, size, &r, key);
    if (!ok) {
      /* Zeros are the unused preallocated space; anything else is a torn
       * write that was never acknowledged. */
      bool clean = off + sizeof(h) > size ||
                   (read_full(fd, h, sizeof(h), off) && all_zero(h, sizeof(h)));
      if (!clean) {
        c->stats->torn_tails++;
        sl_log(SL_LOG_WARN, "event=journal_torn_tail segment=%" PRIu64
               " offset=%" PRIu64, id, off);
      }
      break;
    }
    sl_journal_pos pos = {id, off};
    off += sl_journal_record_bytes(&r);
    c->stats->end = (sl_journal_pos){id, off};
    if (r.type == SL_JOURNAL_CHECKPOINT) {
      c->stats->have_marker = true;
      c->stats->marker = (sl_journal_pos){r.ledger, (uint64_t)r.entry};
      continue;
    }
    sl_status st = c->cb(&r, pos, c->arg);
    if (st != SL_OK) {
      return sl_err_wrap(err, st, "journal segment %" PRIu64 " offset %" PRIu64,
                         id, pos.offset);
    }
    c->stats->records++;
  }
  return SL_OK;
}

static sl_status replay_segment(replay_ctx *c, uint64_t id, sl_journal_pos from,
                                sl_err *err) {
  char path[PATH_MAX];
  seg_path(c->j, id, path, sizeof(path));
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return sl_err_set(err, SL_EIO, "journal %s: open: %s", path, strerror(errno));
  }
  sl_status st = SL_OK;
  struct stat sb;
  uint8_t h[SL_JOURNAL_SEGMENT_HEADER];
  if (fstat(fd, &sb) != 0) {
    st = sl_err_set(err, SL_EIO, "journal %s: stat: %s", path, strerror(errno));
    goto out_close;
  }
  c->stats->segments++;
  memset(h, 0, sizeof(h));
  uint64_t hsize = (uint64_t)sb.st_size < sizeof(h) ? (uint64_t)sb.st_size : sizeof(h);
  c->version = read_full(fd, h, hsize, 0) ? seg_header_version(h, id) : 0;
  if (c->version == 0) {
    /* A crash while creating the segment: nothing in it was acknowledged. */
    sl_log(SL_LOG_WARN, "event=journal_bad_segment_header segment=%" PRIu64, id);
    goto out_close;
  }
  if (c->version >= 3 && memcmp(h + 24, c->j->instance, SL_JOURNAL_INSTANCE_BYTES) != 0) {
    /* Another bookie's (or another life's) journal: replaying it would
     * serve entries this instance never acknowledged. */
    st = sl_err_set(err, SL_ECORRUPT, "journal segment %" PRIu64 ": of another bookie "
                    "instance", id);
    goto out_close;
  }
  uint64_t off = c->version >= 3 ? SL_JOURNAL_SEGMENT_HEADER : SEG_HEADER_V2;
  if (id == from.segment && from.offset > off) off = from.offset;
  c->stats->end = (sl_journal_pos){id, off};
  st = replay_records(c, fd, id, off, (uint64_t)sb.st_size, err);
  /* Single-threaded here (before start), but keep the lock's contract. */
  pthread_mutex_lock(&c->j->mu);
  segs_set_bytes(c->j, id, c->stats->end.offset);
  pthread_mutex_unlock(&c->j->mu);
out_close:
  close(fd);
  return st;
}

sl_status sl_journal_replay(sl_journal *j, sl_journal_pos from,
                            sl_journal_replay_cb cb, void *arg,
                            sl_journal_replay_stats *stats, sl_err *err) {
  SL_ASSERT(j != NULL && cb != NULL);
  sl_journal_replay_stats local;
  if (stats == NULL) stats = &local;
  memset(stats, 0, sizeof(*stats));
  stats->end = from;
  if (j->started) return sl_err_set(err, SL_EPRECOND, "journal %s: replay after start", j->dir);
  replay_ctx c = {.j = j, .cb = cb, .arg = arg, .stats = stats, .buf = SL_BUF_INIT};
  sl_status st = SL_OK;
  for (size_t i = 0; i < j->nsegs && st == SL_OK; i++) {
    if (j->segs[i].id < from.segment) continue;
    st = replay_segment(&c, j->segs[i].id, from, err);
  }
  sl_buf_release(&c.buf);
  if (st == SL_OK) {
    sl_log(SL_LOG_INFO, "event=journal_replayed dir=%s records=%" PRIu64
           " segments=%" PRIu64 " torn_tails=%" PRIu64, j->dir, stats->records,
           stats->segments, stats->torn_tails);
  }
  return st;
}

/* ---- segments ---- */

/* Creates, preallocates and durably names a new segment (journal thread, or
 * sl_journal_start before the thread exists). */
static sl_status new_segment(sl_journal *j, uint64_t id, sl_err *err) {
  int64_t t0 = sl_clock_mono_ns();
  char path[PATH_MAX];
  uint8_t h[SL_JOURNAL_SEGMENT_HEADER];
  seg_path(j, id, path, sizeof(path));
  int fd = open(path, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0644);
  if (fd < 0) {
    return sl_err_set(err, SL_EIO, "journal %s: create: %s", path, strerror(errno));
  }
  int rc = posix_fallocate(fd, 0, (off_t)j->opts.segment_bytes);
  if (rc != 0) {
    sl_err_set(err, SL_EIO, "journal %s: fallocate: %s", path, strerror(rc));
    goto out_unlink;
  }
  encode_seg_header(j, h, id);
  if (pwrite(fd, h, sizeof(h), 0) != (ssize_t)sizeof(h)) {
    sl_err_set(err, SL_EIO, "journal %s: write header: %s", path, strerror(errno));
    goto out_unlink;
  }
  /* Full fsync once: size and allocation are metadata; later appends inside
   * the preallocated space then need only fdatasync. */
  if (do_sync(j, fd, false) != 0 || do_sync(j, j->dirfd, false) != 0) {
    sl_err_set(err, SL_EIO, "journal %s: fsync: %s", path, strerror(errno));
    goto out_unlink;
  }
  if (j->fd >= 0) close(j->fd);
  pthread_mutex_lock(&j->mu);
  if (j->cur_seg != 0) segs_set_bytes(j, j->cur_seg, j->off); /* final size */
  j->fd = fd;
  j->seg_id = id;
  j->off = SL_JOURNAL_SEGMENT_HEADER;
  j->zeroed = SL_JOURNAL_SEGMENT_HEADER;
  segs_push(j, id, j->off);
  j->cur_seg = id;
  j->stats.segments_created++;
  j->stats.segments = j->nsegs;
  pthread_mutex_unlock(&j->mu);
  sl_log(SL_LOG_INFO, "event=journal_segment_created segment=%" PRIu64 " us=%lld", id,
         (long long)((sl_clock_mono_ns() - t0) / 1000));
  return SL_OK;

out_unlink:
  close(fd);
  unlink(path);
  return SL_EIO;
}

/* ---- writer ---- */

static bool write_all_v(int fd, struct iovec *iov, int n, uint64_t off) {
  while (n > 0) {
    ssize_t w = pwritev(fd, iov, n, (off_t)off);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    off += (uint64_t)w;
    size_t left = (size_t)w;
    while (n > 0 && left >= iov->iov_len) {
      left -= iov->iov_len;
      iov++;
      n--;
    }
    if (n > 0) {
      iov->iov_base = (uint8_t *)iov->iov_base + left;
      iov->iov_len -= left;
    }
  }
  return true;
}

typedef struct wbuf {
  struct iovec iov[IOV_CHUNK];
  int n;
  uint64_t start; /* file offset of iov[0] */
} wbuf;

static sl_status wbuf_flush(sl_journal *j, wbuf *w, sl_err *err) {
  if (w->n == 0) return SL_OK;
  bool ok = write_all_v(j->fd, w->iov, w->n, w->start);
  w->n = 0;
  if (!ok) {
    return sl_err_set(err, SL_EIO, "journal segment %" PRIu64 ": write: %s",
                      j->seg_id, strerror(errno));
  }
  return SL_OK;
}

static sl_status sync_current(sl_journal *j, sl_err *err) {
  uint64_t t0 = sl_metrics_now_ns();
  int rc = do_sync(j, j->fd, true);
  sl_metrics_histogram_observe_since(j->m_sync_seconds, t0);
  if (rc != 0) {
    return sl_err_set(err, SL_EIO, "journal segment %" PRIu64 ": fdatasync: %s",
                      j->seg_id, strerror(errno));
  }
  pthread_mutex_lock(&j->mu);
  j->stats.syncs++;
  pthread_mutex_unlock(&j->mu);
  return SL_OK;
}

/*
 * Writes zeros over the preallocated space ahead of the records, a chunk
 * at a time, and starts their writeback. posix_fallocate leaves unwritten
 * extents: the first write into each block converts it, and that extent
 * change is metadata, so every group commit's fdatasync also wrote the
 * inode (a second, serialized disk write; perf showed half the journal's
 * fdatasync I/O in ext4_write_inode). Overwriting blocks already written
 * needs only the data: one extent conversion per chunk instead of one per
 * commit. Replay stops at the zeros as it does at preallocated space.
 */
static sl_status zero_ahead(sl_journal *j, uint64_t end, sl_err *err) {
  while (j->zeroed < j->opts.segment_bytes && end + ZERO_LEAD > j->zeroed) {
    uint64_t len = j->opts.segment_bytes - j->zeroed;
    if (len > ZERO_CHUNK) len = ZERO_CHUNK;
    if (j->zeros == NULL) j->zeros = sl_xcalloc(1, ZERO_CHUNK);
    struct iovec iov = {j->zeros, (size_t)len};
    if (!write_all_v(j->fd, &iov, 1, j->zeroed)) {
      return sl_err_set(err, SL_EIO, "journal segment %" PRIu64 ": write zeros: %s",
                        j->seg_id, strerror(errno));
    }
    /* Best effort: the next fdatasync writes whatever this did not start. */
    (void)sync_file_range(j->fd, (off_t)j->zeroed, (off_t)len, SYNC_FILE_RANGE_WRITE);
    j->zeroed += len;
  }
  return SL_OK;
}

/* Writes and syncs a batch of n records; rotates segments as needed. */
static sl_status write_batch(sl_journal *j, sl_journal_req *batch, size_t n,
                             sl_err *err) {
  sl_status st;
  sl_buf_reset(&j->hdrs);
  sl_buf_reserve(&j->hdrs, n * SL_JOURNAL_RECORD_HEADER);
  wbuf *w = sl_xmalloc(sizeof(*w));
  w->n = 0;
  uint8_t *h = (uint8_t *)j->hdrs.data;
  for (sl_journal_req *r = batch; r != NULL; r = r->next) {
    uint64_t reclen = sl_journal_record_bytes(&r->rec);
    if (j->off + reclen > j->opts.segment_bytes && j->off > SL_JOURNAL_SEGMENT_HEADER) {
      if ((st = wbuf_flush(j, w, err)) != SL_OK) goto out;
      if ((st = sync_current(j, err)) != SL_OK) goto out;
      if ((st = new_segment(j, j->seg_id + 1, err)) != SL_OK) goto out;
    }
    if (w->n + 3 > IOV_CHUNK) {
      if ((st = wbuf_flush(j, w, err)) != SL_OK) goto out;
    }
    if (w->n == 0) w->start = j->off;
    /* Never over records still in w: zeroed >= off after every call. */
    if ((st = zero_ahead(j, j->off + reclen, err)) != SL_OK) goto out;
    encode_header(h, &r->rec);
    r->pos = (sl_journal_pos){j->seg_id, j->off};
    w->iov[w->n++] = (struct iovec){h, SL_JOURNAL_RECORD_HEADER};
    if (r->rec.key != NULL)
      w->iov[w->n++] = (struct iovec){(void *)r->rec.key, SL_LEDGER_KEY_BYTES};
    if (r->rec.len > 0) w->iov[w->n++] = (struct iovec){(void *)r->rec.payload, r->rec.len};
    h += SL_JOURNAL_RECORD_HEADER;
    j->off += reclen;
  }
  if ((st = wbuf_flush(j, w, err)) != SL_OK) goto out;
  st = sync_current(j, err);
out:
  free(w);
  return st;
}

/* Takes a prefix of the queue of at most max_batch_bytes (at least one). */
static sl_journal_req *take_batch(sl_journal *j, size_t *count, uint64_t *bytes) {
  sl_journal_req *first = j->head, *last = NULL, *r = j->head;
  size_t n = 0;
  uint64_t b = 0;
  while (r != NULL) {
    uint64_t len = sl_journal_record_bytes(&r->rec);
    if (n > 0 && b + len > j->opts.max_batch_bytes) break;
    b += len;
    n++;
    last = r;
    r = r->next;
  }
  j->head = r;
  if (r == NULL) j->tail = NULL;
  last->next = NULL;
  *count = n;
  *bytes = b;
  return first;
}

/* Frees journal-owned marker requests and returns the rest of the batch. */
static sl_journal_req *drop_internal(sl_journal_req *batch) {
  sl_journal_req *out = NULL, **link = &out;
  while (batch != NULL) {
    sl_journal_req *next = batch->next;
    if (batch->internal_) {
      free(batch);
    } else {
      *link = batch;
      link = &batch->next;
    }
    batch = next;
  }
  *link = NULL;
  return out;
}

static void *journal_main(void *arg) {
  sl_journal *j = arg;
  (void)pthread_setname_np(pthread_self(), "journal");
  sl_err err = SL_ERR_INIT;
  pthread_mutex_lock(&j->mu);
  for (;;) {
    while (j->head == NULL && !j->stopping) pthread_cond_wait(&j->cv, &j->mu);
    if (j->head == NULL) break;
    size_t n;
    uint64_t bytes;
    sl_journal_req *batch = take_batch(j, &n, &bytes);
    bool failed = j->state == J_FAILED;
    pthread_mutex_unlock(&j->mu);

    sl_status st = SL_EIO;
    if (!failed) st = write_batch(j, batch, n, &err);
    pthread_mutex_lock(&j->mu);
    if (st == SL_OK) {
      sl_metrics_histogram_observe(j->m_batch_records, (double)n);
      sl_metrics_histogram_observe(j->m_batch_bytes, (double)bytes);
      j->stats.batches++;
      j->stats.records += n;
      j->stats.bytes += bytes;
      j->tail_pos = (sl_journal_pos){j->seg_id, j->off};
      segs_set_bytes(j, j->seg_id, j->off);
    } else if (!failed) {
      j->state = J_FAILED;
      snprintf(j->errmsg, sizeof(j->errmsg), "%s", err.msg);
      sl_log(SL_LOG_ERROR, "event=journal_failed dir=%s err=\"%s\"", j->dir, err.msg);
    }
    sl_journal_pos end = j->tail_pos;
    char msg[SL_ERR_MAX];
    snprintf(msg, sizeof(msg), "%s", st == SL_OK ? "" : j->errmsg);
    pthread_mutex_unlock(&j->mu);

    batch = drop_internal(batch);
    if (batch != NULL) j->opts.on_durable(batch, st, msg, end, j->opts.arg);
    pthread_mutex_lock(&j->mu);
  }
  pthread_mutex_unlock(&j->mu);
  return NULL;
}

sl_status sl_journal_start(sl_journal *j, sl_journal_pos after, sl_err *err) {
  SL_ASSERT(j != NULL);
  if (j->started) return sl_err_set(err, SL_EPRECOND, "journal %s: already started", j->dir);
  uint64_t id = after.segment;
  if (j->nsegs > 0 && j->segs[j->nsegs - 1].id > id) id = j->segs[j->nsegs - 1].id;
  sl_status st = new_segment(j, id + 1, err);
  if (st != SL_OK) return st;
  j->tail_pos = (sl_journal_pos){j->seg_id, j->off};
  j->state = J_RUNNING;
  j->started = true;
  int rc = pthread_create(&j->thread, NULL, journal_main, j);
  SL_ASSERT(rc == 0); /* servers abort when out of resources */
  return SL_OK;
}

static sl_status enqueue(sl_journal *j, sl_journal_req *req, sl_err *err) {
  sl_status st = SL_OK;
  req->next = NULL;
  pthread_mutex_lock(&j->mu);
  if (j->state == J_FAILED) {
    st = sl_err_set(err, SL_EIO, "journal %s: failed earlier: %s", j->dir, j->errmsg);
  } else if (j->state != J_RUNNING || j->stopping) {
    st = sl_err_set(err, SL_EPRECOND, "journal %s: not running", j->dir);
  } else {
    if (j->tail != NULL) {
      j->tail->next = req;
    } else {
      j->head = req;
      pthread_cond_signal(&j->cv);
    }
    j->tail = req;
  }
  pthread_mutex_unlock(&j->mu);
  return st;
}

sl_status sl_journal_submit(sl_journal *j, sl_journal_req *req, sl_err *err) {
  SL_ASSERT(j != NULL);
  if (req == NULL) return sl_err_set(err, SL_EINVAL, "journal: no request");
  const sl_journal_record *r = &req->rec;
  if (r->type != SL_JOURNAL_ADD && r->type != SL_JOURNAL_FENCE &&
      r->type != SL_JOURNAL_LAC && r->type != SL_JOURNAL_DELETE) {
    return sl_err_set(err, SL_EINVAL, "journal: bad record type %d", (int)r->type);
  }
  if (r->payload == NULL && r->len > 0) {
    return sl_err_set(err, SL_EINVAL, "journal: payload missing");
  }
  if (r->key != NULL && !key_allowed((uint8_t)r->type)) {
    return sl_err_set(err, SL_EINVAL, "journal: a key on a record of type %d",
                      (int)r->type);
  }
  if (r->len > j->opts.max_record_bytes) {
    return sl_err_set(err, SL_ETOOBIG, "journal: record of %" PRIu32
                      " bytes over limit %" PRIu32, r->len, j->opts.max_record_bytes);
  }
  req->internal_ = false;
  return enqueue(j, req, err);
}

sl_status sl_journal_mark_checkpoint(sl_journal *j, sl_journal_pos pos, sl_err *err) {
  SL_ASSERT(j != NULL);
  sl_journal_req *req = sl_xcalloc(1, sizeof(*req));
  req->rec.type = SL_JOURNAL_CHECKPOINT;
  req->rec.ledger = pos.segment;
  req->rec.entry = (int64_t)pos.offset;
  req->rec.lac = -1;
  req->internal_ = true;
  sl_status st = enqueue(j, req, err);
  if (st != SL_OK) free(req);
  return st;
}

/* Puts a segment whose unlink failed back in the list, in id order. */
static void segs_restore(sl_journal *j, seg g) {
  pthread_mutex_lock(&j->mu);
  segs_push(j, g.id, g.bytes);
  size_t i = j->nsegs - 1;
  for (; i > 0 && j->segs[i - 1].id > g.id; i--) j->segs[i] = j->segs[i - 1];
  j->segs[i] = g;
  j->stats.segments = j->nsegs;
  pthread_mutex_unlock(&j->mu);
}

sl_status sl_journal_release(sl_journal *j, sl_journal_pos upto, sl_err *err) {
  SL_ASSERT(j != NULL);
  sl_status st = SL_OK;
  char path[PATH_MAX];
  seg *gone = NULL;
  size_t ngone = 0;
  pthread_mutex_lock(&j->mu);
  size_t keep = 0;
  for (size_t i = 0; i < j->nsegs; i++) {
    /* Invariant 4: never the segment being written. */
    if (j->segs[i].id >= upto.segment || j->segs[i].id == j->cur_seg) {
      j->segs[keep++] = j->segs[i];
      continue;
    }
    gone = sl_xrealloc(gone, (ngone + 1) * sizeof(*gone));
    gone[ngone++] = j->segs[i];
  }
  j->nsegs = keep;
  j->stats.segments = keep;
  pthread_mutex_unlock(&j->mu);
  /* Without j->mu, which the journal thread takes between group commits. */
  for (size_t i = 0; i < ngone; i++) {
    seg_path(j, gone[i].id, path, sizeof(path));
    if (sl_file_shrink_unlink(AT_FDCWD, path) != 0) {
      st = sl_err_set(err, SL_EIO, "journal %s: unlink: %s", path, strerror(errno));
      segs_restore(j, gone[i]);
      continue;
    }
    pthread_mutex_lock(&j->mu);
    j->stats.segments_deleted++;
    pthread_mutex_unlock(&j->mu);
  }
  free(gone);
  return st;
}

sl_journal_pos sl_journal_tail(sl_journal *j) {
  pthread_mutex_lock(&j->mu);
  sl_journal_pos p = j->tail_pos;
  pthread_mutex_unlock(&j->mu);
  return p;
}

uint64_t sl_journal_bytes_after(sl_journal *j, sl_journal_pos pos) {
  uint64_t n = 0;
  pthread_mutex_lock(&j->mu);
  for (size_t i = 0; i < j->nsegs; i++) {
    const seg *g = &j->segs[i];
    if (g->id > pos.segment) n += g->bytes;
    if (g->id == pos.segment && g->bytes > pos.offset) n += g->bytes - pos.offset;
  }
  pthread_mutex_unlock(&j->mu);
  return n;
}

void sl_journal_get_stats(sl_journal *j, sl_journal_stats *out) {
  pthread_mutex_lock(&j->mu);
  *out = j->stats;
  pthread_mutex_unlock(&j->mu);
}

void sl_journal_close(sl_journal *j) {
  if (j == NULL) return;
  pthread_mutex_lock(&j->mu);
  j->stopping = true;
  pthread_cond_broadcast(&j->cv);
  pthread_mutex_unlock(&j->mu);
  if (j->started) pthread_join(j->thread, NULL);
  if (j->fd >= 0) close(j->fd);
  close(j->dirfd);
  pthread_cond_destroy(&j->cv);
  pthread_mutex_destroy(&j->mu);
  sl_buf_release(&j->hdrs);
  free(j->segs);
  free(j->zeros);
  free(j->dir);
  free(j);
}
