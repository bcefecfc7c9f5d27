/* Design note: see entry_log.h (format, invariants, threads). */
#include "bookie/entry_log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "bookie/file_shrink.h"
#include "common/bytes.h"
#include "common/crc32c.h"
#include "common/log.h"

#define MAGIC "SLUICELG"
#define VERSION 1
#define NAME_LEN 20 /* 16 hex digits + ".log" */
#define SCAN_CHUNK (1u << 20)
#define IOV_BATCH 512 /* records per pwritev (two iovecs each) */
/* Fds kept open at most; past it those of older files are closed and
 * reopened as reads need them (a bookie holds thousands of files per TB,
 * more than a process's default fd limit). */
#define MAX_OPEN_FDS 256

typedef struct elfile {
  uint64_t id;
  atomic_int fd;        /* -1 until first needed; closed by remove/close */
  _Atomic uint64_t size;
  atomic_bool dirty;    /* appended to since the last sync */
} elfile;

struct sl_entry_log {
  sl_entry_log_opts opts;
  char *dir;
  int dirfd;
  atomic_bool dir_dirty;   /* a file was created or removed since the last sync */
  atomic_int open_fds;     /* files whose fd is open */
  pthread_rwlock_t files_lk;
  /* One sync at a time: a sync that finds a file clean must not return
   * while another's fdatasync of it is still running (invariant 2). */
  pthread_mutex_t sync_mu;
  elfile **files;          /* ascending id; the last is current */
  size_t nfiles, cap;
  uint64_t wb_off;         /* appender: writeback started up to here */
  uint8_t *hdrs;           /* appender: record headers of one batch */
  size_t hdrs_cap;
};

static void file_name(char *buf, size_t cap, uint64_t id) {
  snprintf(buf, cap, "%016" PRIx64 ".log", id);
}

static bool parse_name(const char *name, uint64_t *id) {
  if (strlen(name) != NAME_LEN || strcmp(name + 16, ".log") != 0) return false;
  uint64_t v = 0;
  for (int i = 0; i < 16; i++) {
    char c = name[i];
    int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
    if (d < 0) return false;
    v = (v << 4) | (uint64_t)d;
  }
  *id = v;
  return v != 0;
}

static void encode_rec_hdr(uint8_t *h, const sl_entry_log_rec *r) {
  sl_put_le32(h + 4, r->len);
  sl_put_le64(h + 8, r->ledger);
  sl_put_le64(h + 16, (uint64_t)r->entry);
  sl_put_le32(h + 24, r->crc);
  sl_put_le32(h, sl_crc32c(h + 4, SL_ENTRY_LOG_REC_HDR - 4));
}

static bool decode_rec_hdr(const uint8_t *h, sl_entry_log_hdr *out) {
  if (sl_get_le32(h) != sl_crc32c(h + 4, SL_ENTRY_LOG_REC_HDR - 4)) return false;
  out->loc.len = sl_get_le32(h + 4);
  out->ledger = sl_get_le64(h + 8);
  out->entry = (int64_t)sl_get_le64(h + 16);
  out->crc = sl_get_le32(h + 24);
  return true;
}

/* Index of the file with `id`, or -1. Caller holds files_lk (either mode)
 * or is the appender. */
static ssize_t find_file(const sl_entry_log *el, uint64_t id) {
  size_t lo = 0, hi = el->nfiles;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (el->files[mid]->id < id) lo = mid + 1;
    else hi = mid;
  }
  return lo < el->nfiles && el->files[lo]->id == id ? (ssize_t)lo : -1;
}

/* f's fd, opening it if needed; -1 with errno on failure. Shared lock held:
 * two readers may race to open, and the loser closes its fd. */
static int file_fd(sl_entry_log *el, elfile *f) {
  int fd = atomic_load(&f->fd);
  if (fd >= 0) return fd;
  char name[NAME_LEN + 1];
  file_name(name, sizeof(name), f->id);
  int nfd = openat(el->dirfd, name, O_RDONLY | O_CLOEXEC);
  if (nfd < 0) return -1;
  int expect = -1;
  if (atomic_compare_exchange_strong(&f->fd, &expect, nfd)) {
    atomic_fetch_add(&el->open_fds, 1);
    return nfd;
  }
  close(nfd);
  return expect;
}

/* Closes the fds of older files once too many are open. Takes files_lk
 * exclusively, so no read or sync is using them; the current file and any
 * file with unsynced appends keep theirs (sync needs it). */
static void trim_fds(sl_entry_log *el) {
  if (atomic_load(&el->open_fds) <= MAX_OPEN_FDS) return;
  pthread_rwlock_wrlock(&el->files_lk);
  for (size_t i = 0; i + 1 < el->nfiles; i++) {
    elfile *f = el->files[i];
    if (atomic_load(&f->dirty) || atomic_load(&f->fd) < 0) continue;
    close(atomic_exchange(&f->fd, -1));
    atomic_fetch_sub(&el->open_fds, 1);
  }
  pthread_rwlock_unlock(&el->files_lk);
}

static void file_free(elfile *f) {
  int fd = atomic_load(&f->fd);
  if (fd >= 0) close(fd);
  free(f);
}

static sl_status write_all(int fd, struct iovec *iov, int iovcnt, off_t off,
                           sl_err *err, const char *what) {
  while (iovcnt > 0) {
    ssize_t w = pwritev(fd, iov, iovcnt, off);
    if (w < 0) {
      if (errno == EINTR) continue;
      return sl_err_set(err, SL_EIO, "entry log: %s: %s", what, strerror(errno));
    }
    off += w;
    while (iovcnt > 0 && (size_t)w >= iov->iov_len) {
      w -= (ssize_t)iov->iov_len;
      iov++;
      iovcnt--;
    }
    if (iovcnt > 0) {
      iov->iov_base = (uint8_t *)iov->iov_base + w;
      iov->iov_len -= (size_t)w;
    }
  }
  return SL_OK;
}

/* Creates file `id` with its header and makes it current (invariant 1). */
static sl_status new_file(sl_entry_log *el, uint64_t id, sl_err *err) {
  char name[NAME_LEN + 1];
  file_name(name, sizeof(name), id);
  int fd = openat(el->dirfd, name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) {
    return sl_err_set(err, SL_EIO, "entry log %s/%s: create: %s", el->dir, name,
                      strerror(errno));
  }
  uint8_t h[SL_ENTRY_LOG_HEADER] = {0};
  memcpy(h, MAGIC, 8);
  sl_put_le32(h + 8, VERSION);
  sl_put_le64(h + 16, id);
  struct iovec iov = {h, sizeof(h)};
  sl_status st = write_all(fd, &iov, 1, 0, err, "header");
  if (st != SL_OK) {
    close(fd);
    (void)unlinkat(el->dirfd, name, 0);
    return st;
  }
  elfile *f = sl_xcalloc(1, sizeof(*f));
  f->id = id;
  atomic_init(&f->fd, fd);
  atomic_init(&f->size, SL_ENTRY_LOG_HEADER);
  atomic_init(&f->dirty, true);
  pthread_rwlock_wrlock(&el->files_lk);
  if (el->nfiles == el->cap) {
    el->cap = el->cap ? el->cap * 2 : 16;
    el->files = sl_xrealloc(el->files, el->cap * sizeof(*el->files));
  }
  el->files[el->nfiles++] = f;
  atomic_fetch_add(&el->open_fds, 1);
  pthread_rwlock_unlock(&el->files_lk);
  el->wb_off = 0;
  atomic_store(&el->dir_dirty, true);
  return SL_OK;
}

static sl_status list_files(sl_entry_log *el, sl_err *err) {
  DIR *d = fdopendir(dup(el->dirfd));
  if (d == NULL) {
    return sl_err_set(err, SL_EIO, "entry log %s: list: %s", el->dir, strerror(errno));
  }
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    uint64_t id;
    if (!parse_name(de->d_name, &id)) continue;
    struct stat sb;
    if (fstatat(el->dirfd, de->d_name, &sb, 0) != 0) {
      closedir(d);
      return sl_err_set(err, SL_EIO, "entry log %s/%s: stat: %s", el->dir, de->d_name,
                        strerror(errno));
    }
    /* Shorter than its header: a crash between the file's creation and its
     * header write. Nothing was ever appended to it. */
    if (sb.st_size < SL_ENTRY_LOG_HEADER) {
      sl_log(SL_LOG_INFO, "event=entry_log_removed_empty log=%" PRIu64, id);
      if (unlinkat(el->dirfd, de->d_name, 0) != 0) {
        closedir(d);
        return sl_err_set(err, SL_EIO, "entry log %s/%s: remove: %s", el->dir, de->d_name,
                          strerror(errno));
      }
      atomic_store(&el->dir_dirty, true);
      continue;
    }
    elfile *f = sl_xcalloc(1, sizeof(*f));
    f->id = id;
    atomic_init(&f->fd, -1);
    atomic_init(&f->size, (uint64_t)sb.st_size);
    atomic_init(&f->dirty, false);
    if (el->nfiles == el->cap) {
      el->cap = el->cap ? el->cap * 2 : 16;
      el->files = sl_xrealloc(el->files, el->cap * sizeof(*el->files));
    }
    el->files[el->nfiles++] = f;
  }
  closedir(d);
  return SL_OK;
}

static int cmp_file(const void *a, const void *b) {
  uint64_t x = (*(elfile *const *)a)->id, y = (*(elfile *const *)b)->id;
  return x < y ? -1 : x > y;
}

sl_status sl_entry_log_open(const char *dir, const sl_entry_log_opts *opts,
                            sl_entry_log **out, sl_err *err) {
  static const sl_entry_log_opts defaults = SL_ENTRY_LOG_OPTS_INIT;
  if (dir == NULL || dir[0] == '\0' || out == NULL) {
    return sl_err_set(err, SL_EINVAL, "entry log: dir is required");
  }
  if (opts == NULL) opts = &defaults;
  if (opts->file_bytes < SL_ENTRY_LOG_HEADER || opts->writeback_bytes == 0) {
    return sl_err_set(err, SL_EINVAL, "entry log: file_bytes and writeback_bytes "
                      "must be positive");
  }
  if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
    return sl_err_set(err, SL_EIO, "entry log %s: mkdir: %s", dir, strerror(errno));
  }
  sl_entry_log *el = sl_xcalloc(1, sizeof(*el));
  el->opts = *opts;
  el->dir = sl_xstrdup(dir);
  atomic_init(&el->dir_dirty, false);
  atomic_init(&el->open_fds, 0);
  pthread_rwlock_init(&el->files_lk, NULL);
  pthread_mutex_init(&el->sync_mu, NULL);
  sl_status st;
  el->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (el->dirfd < 0) {
    st = sl_err_set(err, SL_EIO, "entry log %s: open: %s", dir, strerror(errno));
    goto out_close;
  }
  if ((st = list_files(el, err)) != SL_OK) goto out_close;
  if (el->nfiles > 1) qsort(el->files, el->nfiles, sizeof(*el->files), cmp_file);
  uint64_t next = el->nfiles > 0 ? el->files[el->nfiles - 1]->id + 1 : 1;
  if ((st = new_file(el, next, err)) != SL_OK) goto out_close;
  *out = el;
  return SL_OK;
out_close:
  sl_entry_log_close(el);
  return st;
}

void sl_entry_log_close(sl_entry_log *el) {
  if (el == NULL) return;
  for (size_t i = 0; i < el->nfiles; i++) file_free(el->files[i]);
  free(el->files);
  free(el->hdrs);
  if (el->dirfd >= 0) close(el->dirfd);
  pthread_rwlock_destroy(&el->files_lk);
  pthread_mutex_destroy(&el->sync_mu);
  free(el->dir);
  free(el);
}

/* The file appends go to. Only the appender replaces it (new_file), but a
 * remove on another thread may move the table under files_lk. */
static elfile *current(sl_entry_log *el) {
  pthread_rwlock_rdlock(&el->files_lk);
  elfile *f = el->files[el->nfiles - 1];
  pthread_rwlock_unlock(&el->files_lk);
  return f;
}

/* Starts writeback of what the appender wrote since the last start, so the
 * next sync finds little dirty data (the design note's why). */
static void start_writeback(sl_entry_log *el, elfile *f, uint64_t size) {
  if (size - el->wb_off < el->opts.writeback_bytes) return;
  if (sync_file_range(atomic_load(&f->fd), (off_t)el->wb_off,
                      (off_t)(size - el->wb_off), SYNC_FILE_RANGE_WRITE) != 0) {
    sl_log(SL_LOG_WARN, "event=entry_log_writeback_failed log=%" PRIu64 " err=\"%s\"",
           f->id, strerror(errno));
  }
  el->wb_off = size;
}

sl_status sl_entry_log_append(sl_entry_log *el, const sl_entry_log_rec *recs,
                              size_t n, sl_entry_loc *locs, sl_err *err) {
  SL_ASSERT(el != NULL && (recs != NULL || n == 0));
  if (n == 0) return SL_OK;
  uint64_t total = 0;
  for (size_t i = 0; i < n; i++) total += SL_ENTRY_LOG_REC_HDR + (uint64_t)recs[i].len;
  elfile *f = current(el);
  uint64_t size = atomic_load(&f->size);
  if (size > SL_ENTRY_LOG_HEADER && size + total > el->opts.file_bytes) {
    sl_status st = new_file(el, f->id + 1, err);
    if (st != SL_OK) return st;
    f = current(el);
    size = SL_ENTRY_LOG_HEADER;
  }
  if (el->hdrs_cap < n * SL_ENTRY_LOG_REC_HDR) {
    el->hdrs_cap = n * SL_ENTRY_LOG_REC_HDR;
    el->hdrs = sl_xrealloc(el->hdrs, el->hdrs_cap);
  }
  struct iovec iov[2 * IOV_BATCH];
  uint64_t off = size;
  for (size_t i = 0; i < n; i += IOV_BATCH) {
    size_t m = n - i < IOV_BATCH ? n - i : IOV_BATCH;
    int cnt = 0;
    uint64_t start = off;
    for (size_t k = i; k < i + m; k++) {
      uint8_t *h = el->hdrs + k * SL_ENTRY_LOG_REC_HDR;
      encode_rec_hdr(h, &recs[k]);
      locs[k] = (sl_entry_loc){.log = f->id, .offset = off, .len = recs[k].len};
      iov[cnt++] = (struct iovec){h, SL_ENTRY_LOG_REC_HDR};
      if (recs[k].len > 0) iov[cnt++] = (struct iovec){(void *)recs[k].payload, recs[k].len};
      off += SL_ENTRY_LOG_REC_HDR + (uint64_t)recs[k].len;
    }
    sl_status st = write_all(atomic_load(&f->fd), iov, cnt, (off_t)start, err, "append");
    if (st != SL_OK) {
      sl_err_wrap(err, st, "log %" PRIu64, f->id);
      return st;
    }
  }
  atomic_store(&f->size, off);
  atomic_store(&f->dirty, true);
  start_writeback(el, f, off);
  return SL_OK;
}

static sl_status pread_all(int fd, void *buf, size_t len, uint64_t off, size_t *got) {
  size_t n = 0;
  while (n < len) {
    ssize_t r = pread(fd, (uint8_t *)buf + n, len - n, (off_t)(off + n));
    if (r < 0) {
      if (errno == EINTR) continue;
      return SL_EIO;
    }
    if (r == 0) break;
    n += (size_t)r;
  }
  *got = n;
  return SL_OK;
}

sl_status sl_entry_log_read(sl_entry_log *el, sl_entry_loc loc, uint64_t ledger,
                            int64_t entry, uint8_t **rec, uint32_t *crc, sl_err *err) {
  SL_ASSERT(el != NULL && rec != NULL && crc != NULL);
  sl_status st = SL_OK;
  size_t want = SL_ENTRY_LOG_REC_HDR + (size_t)loc.len, got = 0;
  uint8_t *buf = NULL;
  pthread_rwlock_rdlock(&el->files_lk);
  ssize_t i = find_file(el, loc.log);
  if (i < 0) {
    st = sl_err_set(err, SL_ENOTFOUND, "entry log %" PRIu64 ": removed", loc.log);
    goto out;
  }
  int fd = file_fd(el, el->files[i]);
  if (fd < 0) {
    st = sl_err_set(err, errno == ENOENT ? SL_ENOTFOUND : SL_EIO,
                    "entry log %" PRIu64 ": open: %s", loc.log, strerror(errno));
    goto out;
  }
  /* One read for header and payload: the index knows the length. */
  buf = sl_xmalloc(want);
  if (pread_all(fd, buf, want, loc.offset, &got) != SL_OK) {
    st = sl_err_set(err, SL_EIO, "entry log %" PRIu64 ": read: %s", loc.log,
                    strerror(errno));
    goto out;
  }
  sl_entry_log_hdr hd;
  if (got < SL_ENTRY_LOG_REC_HDR || !decode_rec_hdr(buf, &hd) || hd.ledger != ledger ||
      hd.entry != entry || hd.loc.len != loc.len) {
    st = sl_err_set(err, SL_ECORRUPT, "entry log %" PRIu64 " offset %" PRIu64
                    ": record header does not match its index", loc.log, loc.offset);
    goto out;
  }
  if (got != want) {
    st = sl_err_set(err, SL_ECORRUPT, "entry log %" PRIu64 " offset %" PRIu64
                    ": truncated record", loc.log, loc.offset);
    goto out;
  }
  *rec = buf;
  *crc = hd.crc;
  buf = NULL;
out:
  pthread_rwlock_unlock(&el->files_lk);
  free(buf);
  trim_fds(el);
  return st;
}

typedef struct dirty_fd {
  uint64_t id;
  int fd; /* a dup: syncs the same file whatever remove or trim_fds do */
} dirty_fd;

static void mark_dirty(sl_entry_log *el, uint64_t id) {
  pthread_rwlock_rdlock(&el->files_lk);
  ssize_t i = find_file(el, id);
  if (i >= 0) atomic_store(&el->files[i]->dirty, true);
  pthread_rwlock_unlock(&el->files_lk);
}

sl_status sl_entry_log_sync(sl_entry_log *el, sl_err *err) {
  SL_ASSERT(el != NULL);
  sl_status st = SL_OK;
  /* The fdatasyncs run without files_lk: the appender's roll to a new file
   * takes it exclusively, and must not wait on the disk behind them. */
  pthread_mutex_lock(&el->sync_mu);
  pthread_rwlock_rdlock(&el->files_lk);
  dirty_fd *d = sl_xmalloc(el->nfiles * sizeof(*d));
  size_t nd = 0;
  for (size_t i = 0; i < el->nfiles && st == SL_OK; i++) {
    elfile *f = el->files[i];
    if (!atomic_exchange(&f->dirty, false)) continue;
    int fd = dup(atomic_load(&f->fd));
    if (fd < 0) {
      atomic_store(&f->dirty, true);
      st = sl_err_set(err, SL_EIO, "entry log %" PRIu64 ": dup: %s", f->id, strerror(errno));
      break;
    }
    d[nd++] = (dirty_fd){f->id, fd};
  }
  pthread_rwlock_unlock(&el->files_lk);
  for (size_t i = 0; i < nd; i++) {
    if (st == SL_OK && fdatasync(d[i].fd) != 0)
      st = sl_err_set(err, SL_EIO, "entry log %" PRIu64 ": fdatasync: %s", d[i].id,
                      strerror(errno));
    if (st != SL_OK) mark_dirty(el, d[i].id); /* not synced: the next sync must */
    close(d[i].fd);
  }
  free(d);
  if (st == SL_OK && atomic_exchange(&el->dir_dirty, false) && fsync(el->dirfd) != 0) {
    atomic_store(&el->dir_dirty, true);
    st = sl_err_set(err, SL_EIO, "entry log %s: fsync dir: %s", el->dir, strerror(errno));
  }
  pthread_mutex_unlock(&el->sync_mu);
  trim_fds(el); /* files rolled since the last sync are clean now */
  return st;
}

/* Walks records from a private fd (a dup, so a concurrent remove is fine). */
static sl_status scan_fd(int fd, uint64_t log, sl_entry_log_scan_cb cb, void *arg,
                         bool *damaged, sl_err *err) {
  struct stat sb;
  if (fstat(fd, &sb) != 0) {
    return sl_err_set(err, SL_EIO, "entry log %" PRIu64 ": stat: %s", log, strerror(errno));
  }
  uint64_t end = (uint64_t)sb.st_size;
  uint8_t *buf = sl_xmalloc(SCAN_CHUNK);
  uint64_t base = 0; /* file offset of buf[0] */
  size_t have = 0;
  size_t got;
  sl_status st = SL_OK;
  if (pread_all(fd, buf, SL_ENTRY_LOG_HEADER, 0, &got) != SL_OK) goto out_io;
  if (got != SL_ENTRY_LOG_HEADER || memcmp(buf, MAGIC, 8) != 0 ||
      sl_get_le64(buf + 16) != log) {
    st = sl_err_set(err, SL_ECORRUPT, "entry log %" PRIu64 ": bad file header", log);
    goto out;
  }
  bool skipping = false;
  if (damaged != NULL) *damaged = false;
  for (uint64_t off = SL_ENTRY_LOG_HEADER; off + SL_ENTRY_LOG_REC_HDR <= end;) {
    if (off < base || off + SL_ENTRY_LOG_REC_HDR > base + have) {
      base = off;
      if (pread_all(fd, buf, SCAN_CHUNK, off, &have) != SL_OK) goto out_io;
      if (have < SL_ENTRY_LOG_REC_HDR) break;
    }
    sl_entry_log_hdr h;
    if (!decode_rec_hdr(buf + (off - base), &h) ||
        off + SL_ENTRY_LOG_REC_HDR + h.loc.len > end) {
      /* A torn tail, or a damaged record: look for the next intact header
       * byte by byte, so that records after damage are still found. */
      off++;
      skipping = true;
      continue;
    }
    if (skipping && damaged != NULL) *damaged = true; /* intact after skipped bytes */
    skipping = false;
    h.loc.log = log;
    h.loc.offset = off;
    if ((st = cb(&h, arg)) != SL_OK) goto out;
    off += SL_ENTRY_LOG_REC_HDR + (uint64_t)h.loc.len;
  }
  goto out;
out_io:
  st = sl_err_set(err, SL_EIO, "entry log %" PRIu64 ": read: %s", log, strerror(errno));
out:
  free(buf);
  return st;
}

sl_status sl_entry_log_scan(sl_entry_log *el, uint64_t log, sl_entry_log_scan_cb cb,
                            void *arg, bool *damaged, sl_err *err) {
  SL_ASSERT(el != NULL && cb != NULL);
  int fd = -1;
  pthread_rwlock_rdlock(&el->files_lk);
  ssize_t i = find_file(el, log);
  int ofd = i >= 0 ? file_fd(el, el->files[i]) : -1;
  if (ofd >= 0) fd = dup(ofd);
  int saved = errno;
  pthread_rwlock_unlock(&el->files_lk);
  if (i < 0) return sl_err_set(err, SL_ENOTFOUND, "entry log %" PRIu64 ": removed", log);
  if (fd < 0) {
    return sl_err_set(err, SL_EIO, "entry log %" PRIu64 ": open: %s", log, strerror(saved));
  }
  trim_fds(el);
  sl_status st = scan_fd(fd, log, cb, arg, damaged, err);
  close(fd);
  return st;
}

sl_status sl_entry_log_remove(sl_entry_log *el, uint64_t log, sl_err *err) {
  SL_ASSERT(el != NULL);
  char name[NAME_LEN + 1];
  file_name(name, sizeof(name), log);
  pthread_rwlock_wrlock(&el->files_lk);
  ssize_t i = find_file(el, log);
  SL_ASSERT(i < 0 || (size_t)i + 1 < el->nfiles); /* never the current file */
  elfile *f = NULL;
  if (i >= 0) {
    f = el->files[i];
    memmove(&el->files[i], &el->files[i + 1], (el->nfiles - (size_t)i - 1) * sizeof(f));
    el->nfiles--;
  }
  if (f != NULL && atomic_load(&f->fd) >= 0) atomic_fetch_sub(&el->open_fds, 1);
  pthread_rwlock_unlock(&el->files_lk);
  if (f != NULL) file_free(f);
  if (sl_file_shrink_unlink(el->dirfd, name) != 0) {
    return sl_err_set(err, SL_EIO, "entry log %s/%s: remove: %s", el->dir, name,
                      strerror(errno));
  }
  atomic_store(&el->dir_dirty, true);
  return SL_OK;
}

uint64_t sl_entry_log_current(sl_entry_log *el) {
  pthread_rwlock_rdlock(&el->files_lk);
  uint64_t id = el->files[el->nfiles - 1]->id;
  pthread_rwlock_unlock(&el->files_lk);
  return id;
}

size_t sl_entry_log_sealed(sl_entry_log *el, uint64_t **ids, uint64_t **sizes) {
  pthread_rwlock_rdlock(&el->files_lk);
  size_t n = el->nfiles - 1;
  *ids = sl_xmalloc((n + 1) * sizeof(**ids));
  if (sizes != NULL) *sizes = sl_xmalloc((n + 1) * sizeof(**sizes));
  for (size_t i = 0; i < n; i++) {
    (*ids)[i] = el->files[i]->id;
    if (sizes != NULL) (*sizes)[i] = atomic_load(&el->files[i]->size);
  }
  pthread_rwlock_unlock(&el->files_lk);
  return n;
}

void sl_entry_log_usage(sl_entry_log *el, uint64_t *files, uint64_t *bytes) {
  pthread_rwlock_rdlock(&el->files_lk);
  uint64_t b = 0;
  for (size_t i = 0; i < el->nfiles; i++) b += atomic_load(&el->files[i]->size);
  *files = el->nfiles;
  *bytes = b;
  pthread_rwlock_unlock(&el->files_lk);
}
