/*
 * sluice-bookie: entry point. Config table, then sl_service_main(): opens the
 * bookie store, serves BookieService, and (with --metadata) keeps a session
 * with the metadata service that says whether we are read-only, sweeps
 * away local ledgers the metadata service says are deleted (ledger_sweep.h),
 * and copies lost ledger copies for auto-recovery (rereplication.h).
 *
 * Shutdown order (SIGTERM): the server drains (every add in flight
 * completes, since each holds its call), the auto-recovery worker stops
 * (releasing its item), the session is closed and the sweep stopped, then
 * the store takes its final checkpoint and closes.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bookie.slrpc.h"
#include "bookie/bookie_store.h"
#include "bookie/entry_crypt.h"
#include "bookie/ledger_sweep.h"
#include "bookie/rereplication.h"
#include "bookie/registration.h"
#include "bookie/service.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/service.h"

typedef struct bookie_cfg {
  sl_service_opts svc;
  char *id;          /* unique bookie id */
  char *data_dir;    /* journal and ledger storage */
  char *journal_dir; /* empty: <data_dir>/journal */
  char *metadata;    /* metadata service target; empty = no registration */
  char *advertise;   /* address to register; empty = listen address */
  char *metadata_tls_ca; /* CA file for the metadata service; empty = plaintext */
  char *bookie_tls_ca;   /* CA file for other bookies (auto-recovery copies) */
  char *rack;
  long long registration_ttl;
  long long max_entry_bytes;
  long long journal_segment_bytes;
  long long journal_max_batch_bytes;
  long long checkpoint_interval_ms;
  long long disk_high_pct;
  long long disk_low_pct;
  long long disk_floor_pct;
  long long disk_limit_bytes;
  long long disk_check_interval_ms;
  long long ledger_cache_bytes;
  long long ledger_write_buffer_bytes;
  long long entry_log;
  long long entry_log_file_bytes;
  long long entry_log_writeback_bytes;
  long long gc_interval_ms;
  long long gc_rate_bytes;
  long long stream_max_adds;
  long long stream_max_bytes;
  long long max_inflight_bytes;
  long long read_threads;
  long long read_nice;
  long long sweep_interval_ms;
  char *encryption_key_file; /* AES-256 key for payloads at rest; "" = none */
  long long sweep_lookups_per_second;
  long long rereplication_poll_ms;
  long long rereplication_bytes_per_second;
} bookie_cfg;

static bookie_cfg cfg;

#define E "SLUICE_BOOKIE_"
static const sl_conf_entry table[] = {
    SL_SERVICE_CONF(bookie_cfg, E, "127.0.0.1:3181", "2"),
    SL_CONF_STR(bookie_cfg, id, "bookie-0", E "ID", "unique bookie id, e.g. the pod name"),
    SL_CONF_STR(bookie_cfg, data_dir, "/var/lib/sluice/bookie", E "DATA_DIR",
                "directory for ledger storage (and the journal by default)"),
    SL_CONF_STR(bookie_cfg, journal_dir, "", E "JOURNAL_DIR",
                "journal directory, ideally on its own disk; empty = <data_dir>/journal"),
    SL_CONF_STR(bookie_cfg, metadata, "", E "METADATA",
                "metadata service target host:port; empty = do not register"),
    SL_CONF_STR(bookie_cfg, advertise, "", E "ADVERTISE",
                "address brokers use to reach this bookie; empty = --listen"),
    SL_CONF_STR(bookie_cfg, metadata_tls_ca, "", E "METADATA_TLS_CA",
                "CA PEM file to verify the metadata service; empty = plaintext. With "
                "tls_cert/tls_key set they are presented as the client certificate"),
    SL_CONF_STR(bookie_cfg, bookie_tls_ca, "", E "BOOKIE_TLS_CA",
                "CA PEM file to verify other bookies, which the auto-recovery worker "
                "reads from and copies to; empty = plaintext. With tls_cert/tls_key set "
                "they are presented as the client certificate"),
    SL_CONF_STR(bookie_cfg, rack, "", E "RACK", "failure domain for ensemble placement"),
    SL_CONF_INT(bookie_cfg, registration_ttl, "6", 2, 300, E "REGISTRATION_TTL",
                "session TTL in seconds; the bookie counts as gone this long after it dies"),
    SL_CONF_INT(bookie_cfg, max_entry_bytes, "5242880", 1, 256 << 20, E "MAX_ENTRY_BYTES",
                "largest entry payload accepted (must fit in max_message_bytes)"),
    SL_CONF_INT(bookie_cfg, journal_segment_bytes, "67108864", 4096, 1LL << 34,
                E "JOURNAL_SEGMENT_BYTES", "journal segment size (preallocated)"),
    SL_CONF_INT(bookie_cfg, journal_max_batch_bytes, "16777216", 4096, 1LL << 30,
                E "JOURNAL_MAX_BATCH_BYTES", "most bytes one journal fdatasync covers"),
    SL_CONF_INT(bookie_cfg, checkpoint_interval_ms, "10000", 10, 3600000,
                E "CHECKPOINT_INTERVAL_MS", "how often ledger storage is synced and "
                "old journal segments dropped"),
    SL_CONF_INT(bookie_cfg, disk_high_pct, "95", 1, 100, E "DISK_HIGH_PCT",
                "turn read-only at or above this % of the disk used"),
    SL_CONF_INT(bookie_cfg, disk_low_pct, "90", 0, 99, E "DISK_LOW_PCT",
                "writable again below this % used (less than disk_high_pct)"),
    SL_CONF_INT(bookie_cfg, disk_floor_pct, "98", 1, 100, E "DISK_FLOOR_PCT",
                "hard floor: recovery adds, which a read-only bookie still takes, "
                "are refused at or above this % used"),
    SL_CONF_INT(bookie_cfg, disk_limit_bytes, "0", 0, LLONG_MAX, E "DISK_LIMIT_BYTES",
                "0 = measure the real disk; else a quota: the files under data_dir "
                "count against this many bytes"),
    SL_CONF_INT(bookie_cfg, disk_check_interval_ms, "1000", 10, 600000,
                E "DISK_CHECK_INTERVAL_MS", "how often disk usage is sampled"),
    SL_CONF_INT(bookie_cfg, ledger_cache_bytes, "33554432", 0, 1LL << 40,
                E "LEDGER_CACHE_BYTES", "leveldb block cache"),
    SL_CONF_INT(bookie_cfg, ledger_write_buffer_bytes, "8388608", 65536, 1LL << 32,
                E "LEDGER_WRITE_BUFFER_BYTES", "leveldb memtable size"),
    SL_CONF_INT(bookie_cfg, entry_log, "1", 0, 1, E "ENTRY_LOG",
                "1 = payloads in entry log files, only their index in leveldb; "
                "0 = payloads in leveldb values (entries written either way stay "
                "readable after a switch)"),
    SL_CONF_INT(bookie_cfg, entry_log_file_bytes, "134217728", 1 << 20, 1LL << 34,
                E "ENTRY_LOG_FILE_BYTES", "entry log file size before a new one starts "
                "(the unit garbage collection removes or compacts)"),
    SL_CONF_INT(bookie_cfg, entry_log_writeback_bytes, "262144", 4096, 1LL << 30,
                E "ENTRY_LOG_WRITEBACK_BYTES", "start disk writeback of the entry log "
                "every this many bytes, so checkpoints sync little at once"),
    SL_CONF_INT(bookie_cfg, gc_interval_ms, "60000", 0, 86400000, E "GC_INTERVAL_MS",
                "entry log garbage collection period; 0 = never"),
    SL_CONF_INT(bookie_cfg, gc_rate_bytes, "16777216", 4096, 1LL << 34,
                E "GC_RATE_BYTES", "most bytes per second compaction copies"),
    SL_CONF_INT(bookie_cfg, stream_max_adds, "1024", 1, 1000000, E "STREAM_MAX_ADDS",
                "adds in flight per AddEntry stream before it stops reading"),
    SL_CONF_INT(bookie_cfg, stream_max_bytes, "67108864", 1, 1LL << 34,
                E "STREAM_MAX_BYTES",
                "payload bytes in flight per AddEntry stream before it stops reading"),
    SL_CONF_INT(bookie_cfg, max_inflight_bytes, "268435456", 1, 1LL << 40,
                E "MAX_INFLIGHT_BYTES",
                "payload bytes of adds in flight over all streams; more are refused BUSY"),
    SL_CONF_INT(bookie_cfg, read_threads, "2", 1, 64, E "READ_THREADS",
                "threads serving ReadEntry/ReadEntries, apart from the add path"),
    SL_CONF_INT(bookie_cfg, read_nice, "5", 0, 19, E "READ_NICE",
                "nice value of the read threads: higher lets adds take the CPU first"),
    SL_CONF_STR(bookie_cfg, encryption_key_file, "", E "ENCRYPTION_KEY_FILE",
                "file with a 256-bit key (32 bytes, or 64 hex digits): entry payloads "
                "are stored AES-256-GCM encrypted; only on an empty store, and the "
                "store then opens only with this key"),
    SL_CONF_INT(bookie_cfg, sweep_interval_ms, "600000", 0, 86400000,
                E "SWEEP_INTERVAL_MS",
                "how often ledgers deleted in metadata are dropped here; 0 = never"),
    SL_CONF_INT(bookie_cfg, sweep_lookups_per_second, "100", 1, 100000,
                E "SWEEP_LOOKUPS_PER_SECOND",
                "most GetLedger calls per second the sweep makes to the metadata service"),
    SL_CONF_INT(bookie_cfg, rereplication_poll_ms, "10000", 0, 3600000,
                E "REREPLICATION_POLL_MS",
                "auto-recovery worker: how often it asks for work when it has none; "
                "0 = no worker on this bookie"),
    SL_CONF_INT(bookie_cfg, rereplication_bytes_per_second, "4194304", 0, 1LL << 40,
                E "REREPLICATION_BYTES_PER_SECOND",
                "auto-recovery worker: most bytes a second it copies, so recovery "
                "leaves CPU, disk and network to adds (every bookie runs a worker, "
                "so a lost bookie is copied at this times the others); 0 = no bound"),
};
#undef E

typedef struct bookie {
  const bookie_cfg *cfg;
  sl_bookie_store *store;
  sl_bookie_svc *svc;
  pthread_mutex_t reg_mu; /* guards reg: the disk watcher pokes it */
  sl_registration *reg;
  sl_sweep *sweep;        /* NULL without --metadata or with sweeps off */
  sl_rerep *rerep;        /* NULL without --metadata or with the worker off */
  sl_service_peer_tls bookie_tls; /* the worker's bookie channels use it */
  sl_entry_crypt *crypt;  /* NULL without --encryption_key_file */
  char cluster[64];       /* the cluster the data belongs to (<data_dir>/
                             CLUSTER), "" before the first registration;
                             the registration thread's once it runs */
  atomic_bool cluster_ok; /* the metadata service serves that cluster */
} bookie;

/* ---- cluster identity ---- */

static void cluster_path(const bookie *b, char *path, size_t cap) {
  snprintf(path, cap, "%s/CLUSTER", b->cfg->data_dir);
}

static sl_status read_cluster(bookie *b, sl_err *err) {
  char path[PATH_MAX];
  cluster_path(b, path, sizeof(path));
  if (access(path, F_OK) != 0) return SL_OK; /* never registered yet */
  char *text = NULL;
  sl_status st = sl_service_read_file(path, &text, err);
  if (st != SL_OK) return st;
  text[strcspn(text, "\r\n")] = '\0';
  snprintf(b->cluster, sizeof(b->cluster), "%s", text);
  free(text);
  return SL_OK;
}

/* Written once, durably (temp file, fsync, rename, fsync of the dir). */
static sl_status record_cluster(bookie *b, const char *id, sl_err *err) {
  char path[PATH_MAX], tmp[PATH_MAX + 8];
  cluster_path(b, path, sizeof(path));
  snprintf(tmp, sizeof(tmp), "%s.tmp", path);
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) return sl_err_set(err, SL_EIO, "%s: %s", tmp, strerror(errno));
  size_t len = strlen(id);
  bool ok = write(fd, id, len) == (ssize_t)len && write(fd, "\n", 1) == 1 && fsync(fd) == 0;
  ok = close(fd) == 0 && ok;
  if (!ok || rename(tmp, path) != 0) return sl_err_set(err, SL_EIO, "%s: %s", path, strerror(errno));
  int dfd = open(b->cfg->data_dir, O_RDONLY | O_DIRECTORY);
  ok = dfd >= 0 && fsync(dfd) == 0;
  if (dfd >= 0) close(dfd);
  return ok ? SL_OK : sl_err_set(err, SL_EIO, "%s: fsync: %s", b->cfg->data_dir, strerror(errno));
}

/* Registration thread, at each session: the service serves `id`, which is
 * ours (it refuses another cluster's bookie) or, the first time, becomes
 * ours. Until then the sweep drops nothing. */
static void on_cluster(void *arg, const char *id) {
  bookie *b = arg;
  if (b->cluster[0] == '\0') {
    sl_err err = SL_ERR_INIT;
    if (record_cluster(b, id, &err) != SL_OK) {
      sl_log(SL_LOG_ERROR, "event=cluster_record_failed cluster_id=%s error=\"%s\"", id, err.msg);
      return;
    }
    snprintf(b->cluster, sizeof(b->cluster), "%s", id);
    sl_log(SL_LOG_INFO, "event=cluster_recorded cluster_id=%s", id);
  }
  if (strcmp(b->cluster, id) == 0 && !atomic_exchange(&b->cluster_ok, true))
    sl_log(SL_LOG_INFO, "event=cluster_confirmed cluster_id=%s", id);
}

/* Any thread (the sweep's). */
static bool cluster_trusted(void *arg) { return atomic_load(&((bookie *)arg)->cluster_ok); }

/* Disk watcher thread. */
static void on_readonly_change(bool readonly, void *arg) {
  bookie *b = arg;
  sl_log(SL_LOG_WARN, "event=read_only_changed read_only=%d", (int)readonly);
  pthread_mutex_lock(&b->reg_mu);
  if (b->reg != NULL) sl_registration_poke(b->reg);
  pthread_mutex_unlock(&b->reg_mu);
}

/* Registration thread. */
static void get_state(void *arg, bool *read_only, uint64_t *free_bytes,
                      uint64_t *total_bytes) {
  bookie *b = arg;
  sl_bookie_store_info info;
  sl_bookie_store_info_get(b->store, &info);
  *read_only = info.readonly || info.failed;
  *free_bytes = info.free_bytes;
  *total_bytes = info.total_bytes;
}

static sl_status mkdir_p(const char *path, sl_err *err) {
  char buf[PATH_MAX];
  if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
    return sl_err_set(err, SL_EINVAL, "%s: path too long", path);
  for (char *p = buf + 1;; p++) {
    bool end = *p == '\0';
    if (*p == '/' || end) {
      *p = '\0';
      if (mkdir(buf, 0755) != 0 && errno != EEXIST)
        return sl_err_set(err, SL_EIO, "%s: mkdir: %s", buf, strerror(errno));
      if (end) return SL_OK;
      *p = '/';
    }
  }
}

static sl_status check_cfg(const bookie_cfg *c, sl_err *err) {
  if (c->disk_low_pct >= c->disk_high_pct)
    return sl_err_set(err, SL_EINVAL, "disk_low_pct (%lld) must be below disk_high_pct (%lld)",
                      c->disk_low_pct, c->disk_high_pct);
  /* Between the two a read-only bookie still takes recovery adds. */
  if (c->disk_floor_pct < c->disk_high_pct)
    return sl_err_set(err, SL_EINVAL, "disk_floor_pct (%lld) must not be below "
                      "disk_high_pct (%lld)", c->disk_floor_pct, c->disk_high_pct);
  /* An entry travels in one gRPC message with a few dozen bytes of fields. */
  if (c->max_entry_bytes + 1024 > c->svc.max_message_bytes)
    return sl_err_set(err, SL_EINVAL, "max_entry_bytes (%lld) must be at least 1 KiB below "
                      "max_message_bytes (%lld)", c->max_entry_bytes, c->svc.max_message_bytes);
  if (c->id[0] == '\0') return sl_err_set(err, SL_EINVAL, "id must not be empty");
  return SL_OK;
}

static void bookie_free(bookie *b) {
  sl_bookie_svc_destroy(b->svc);
  sl_bookie_store_close(b->store);
  sl_entry_crypt_destroy(b->crypt); /* after the store that uses it */
  pthread_mutex_destroy(&b->reg_mu);
  sl_service_peer_tls_release(&b->bookie_tls);
  free(b);
}

static sl_status start(void *cv, sl_rpc_server *srv, void **state, sl_err *err) {
  const bookie_cfg *c = cv;
  sl_status st = check_cfg(c, err);
  if (st != SL_OK) return st;
  if ((st = mkdir_p(c->data_dir, err)) != SL_OK) return st;
  bookie *b = sl_xcalloc(1, sizeof(*b));
  b->cfg = c;
  pthread_mutex_init(&b->reg_mu, NULL);
  sl_bookie_store_opts so = SL_BOOKIE_STORE_OPTS_INIT;
  so.journal_dir = c->journal_dir[0] ? c->journal_dir : NULL;
  so.max_entry_bytes = (uint32_t)c->max_entry_bytes;
  so.journal_segment_bytes = (uint64_t)c->journal_segment_bytes;
  so.journal_max_batch_bytes = (size_t)c->journal_max_batch_bytes;
  so.checkpoint_interval_ms = (int)c->checkpoint_interval_ms;
  so.disk_high_pct = (double)c->disk_high_pct;
  so.disk_low_pct = (double)c->disk_low_pct;
  so.disk_floor_pct = (double)c->disk_floor_pct;
  so.max_inflight_bytes = (uint64_t)c->max_inflight_bytes;
  so.metrics = sl_metrics_default();
  so.disk_limit_bytes = (uint64_t)c->disk_limit_bytes;
  so.disk_interval_ms = (int)c->disk_check_interval_ms;
  so.leveldb.cache_bytes = (size_t)c->ledger_cache_bytes;
  so.leveldb.write_buffer_bytes = (size_t)c->ledger_write_buffer_bytes;
  so.leveldb.entry_log = c->entry_log != 0;
  so.leveldb.log.file_bytes = (uint64_t)c->entry_log_file_bytes;
  so.leveldb.log.writeback_bytes = (uint64_t)c->entry_log_writeback_bytes;
  so.leveldb.gc_interval_ms = (int)c->gc_interval_ms;
  so.leveldb.gc_rate_bytes = (uint64_t)c->gc_rate_bytes;
  so.on_readonly_change = on_readonly_change;
  so.arg = b;
  if (c->encryption_key_file[0] != '\0' &&
      (st = sl_entry_crypt_create(c->encryption_key_file, &b->crypt, err)) != SL_OK)
    goto out_free;
  so.crypt = b->crypt;
  st = sl_bookie_store_open(c->data_dir, &so, &b->store, err);
  if (st != SL_OK) goto out_free;
  sl_bookie_svc_opts vo = SL_BOOKIE_SVC_OPTS_INIT;
  vo.bookie_id = c->id;
  vo.max_stream_adds = (uint32_t)c->stream_max_adds;
  vo.max_stream_bytes = (size_t)c->stream_max_bytes;
  vo.metrics = sl_metrics_default();
  vo.read_threads = (int)c->read_threads;
  vo.read_nice = (int)c->read_nice;
  if ((st = sl_bookie_svc_create(b->store, &vo, &b->svc, err)) != SL_OK) goto out_free;
  if ((st = sl_bookie_svc_register(b->svc, srv, err)) != SL_OK) goto out_free;
  *state = b;
  return SL_OK;
out_free:
  bookie_free(b);
  return st;
}

/* The address to register: --advertise, else --listen with the bound port
 * (and this host's name for a wildcard host). */
static void advertised(const bookie_cfg *c, int port, char *out, size_t n) {
  if (c->advertise[0] != '\0') {
    snprintf(out, n, "%s", c->advertise);
    return;
  }
  char host[256];
  snprintf(host, sizeof(host), "%s", c->svc.listen);
  char *colon = strrchr(host, ':');
  if (colon != NULL) *colon = '\0';
  if (host[0] == '\0' || strcmp(host, "0.0.0.0") == 0 || strcmp(host, "[::]") == 0 ||
      strcmp(host, "::") == 0) {
    if (gethostname(host, sizeof(host)) != 0) snprintf(host, sizeof(host), "localhost");
    host[sizeof(host) - 1] = '\0';
  }
  snprintf(out, n, "%s:%d", host, port);
}

static sl_status start_registration(bookie *b, int port, const sl_service_peer_tls *p,
                                    sl_err *err) {
  const bookie_cfg *c = b->cfg;
  char addr[300];
  advertised(c, port, addr, sizeof(addr));
  sl_registration_opts ro = SL_REGISTRATION_OPTS_INIT;
  ro.target = c->metadata;
  ro.bookie_id = c->id;
  ro.address = addr;
  ro.rack = c->rack;
  ro.instance_id = sl_bookie_store_instance_id(b->store);
  ro.cluster_id = b->cluster;
  ro.on_cluster = on_cluster;
  ro.ttl_seconds = (uint32_t)c->registration_ttl;
  ro.get_state = get_state;
  ro.arg = b;
  ro.tls_root_pem = p->ca;
  ro.tls_cert_pem = p->cert;
  ro.tls_key_pem = p->key;
  ro.authorization = p->authorization;
  sl_registration *reg = NULL;
  sl_status st = sl_registration_start(&ro, &reg, err);
  if (st != SL_OK) return st;
  pthread_mutex_lock(&b->reg_mu);
  b->reg = reg;
  pthread_mutex_unlock(&b->reg_mu);
  return SL_OK;
}

static sl_status start_sweep(bookie *b, const sl_service_peer_tls *p, sl_err *err) {
  const bookie_cfg *c = b->cfg;
  if (c->sweep_interval_ms == 0) {
    sl_log(SL_LOG_INFO, "event=sweep_disabled reason=\"sweep_interval_ms is 0\"");
    return SL_OK;
  }
  sl_sweep_opts so = SL_SWEEP_OPTS_INIT;
  so.target = c->metadata;
  so.tls_root_pem = p->ca;
  so.tls_cert_pem = p->cert;
  so.tls_key_pem = p->key;
  so.authorization = p->authorization;
  so.bookie_id = c->id;
  so.interval_ms = (int)c->sweep_interval_ms;
  so.lookups_per_second = (int)c->sweep_lookups_per_second;
  so.metrics = sl_metrics_default();
  so.trusted = cluster_trusted;
  so.trusted_arg = b;
  return sl_sweep_start(b->store, &so, &b->sweep, err);
}

/* Worker thread: the session the auto-recovery worker claims work with. */
static int64_t current_session(void *arg) {
  bookie *b = arg;
  sl_registration_status s = {.session_id = 0};
  pthread_mutex_lock(&b->reg_mu);
  if (b->reg != NULL) sl_registration_get_status(b->reg, &s);
  pthread_mutex_unlock(&b->reg_mu);
  return s.registered ? s.session_id : 0;
}

static sl_status start_rerep(bookie *b, const sl_service_peer_tls *p, sl_err *err) {
  const bookie_cfg *c = b->cfg;
  if (c->rereplication_poll_ms == 0) {
    sl_log(SL_LOG_INFO, "event=rereplication_disabled reason=\"rereplication_poll_ms is 0\"");
    return SL_OK;
  }
  sl_rerep_opts ro = SL_REREP_OPTS_INIT;
  ro.target = c->metadata;
  ro.tls_root_pem = p->ca;
  ro.tls_cert_pem = p->cert;
  ro.tls_key_pem = p->key;
  ro.authorization = p->authorization;
  ro.node_id = c->id;
  ro.session = current_session;
  ro.session_arg = b;
  ro.poll_ms = (int)c->rereplication_poll_ms;
  ro.bytes_per_second = (uint64_t)c->rereplication_bytes_per_second;
  sl_rpc_channel_opts bookie_channel = sl_service_peer_channel(&b->bookie_tls);
  ro.bookie_channel = &bookie_channel;
  ro.metrics = sl_metrics_default();
  return sl_rerep_start(&ro, &b->rerep, err);
}

/* With --metadata: registers, sweeps ledgers deleted in metadata and runs
 * the auto-recovery worker. What started before a failure is stopped by
 * stop(). */
static sl_status serving(void *state, int port, sl_err *err) {
  bookie *b = state;
  if (b->cfg->metadata[0] == '\0') {
    sl_log(SL_LOG_INFO, "event=registration_disabled reason=\"no --metadata\"");
    return SL_OK;
  }
  /* The metadata PEMs are used only while the channels are made; the
   * bookie ones by every channel the worker makes later. */
  sl_service_peer_tls p;
  sl_status st = read_cluster(b, err);
  if (st != SL_OK) return st;
  st = sl_service_peer_tls_read(&b->cfg->svc, b->cfg->metadata_tls_ca, &p, err);
  if (st == SL_OK)
    st = sl_service_peer_tls_read(&b->cfg->svc, b->cfg->bookie_tls_ca, &b->bookie_tls, err);
  if (st == SL_OK) st = start_registration(b, port, &p, err);
  if (st == SL_OK) st = start_sweep(b, &p, err);
  if (st == SL_OK) st = start_rerep(b, &p, err);
  sl_service_peer_tls_release(&p);
  return st;
}

static void stop(void *state) {
  bookie *b = state;
  if (b == NULL) return;
  /* While the session lives: an item in progress is released, not left
   * claimed until the session closes. */
  sl_rerep_stop(b->rerep);
  b->rerep = NULL;
  pthread_mutex_lock(&b->reg_mu);
  sl_registration *reg = b->reg;
  b->reg = NULL;
  pthread_mutex_unlock(&b->reg_mu);
  sl_registration_stop(reg);
  /* Before the store closes: the sweep drops ledgers through it. */
  sl_sweep_stop(b->sweep);
  b->sweep = NULL;
  sl_bookie_svc_stats s;
  sl_bookie_svc_get_stats(b->svc, &s);
  sl_log(SL_LOG_INFO, "event=service_stats streams=%llu adds=%llu adds_ok=%llu "
         "adds_refused=%llu acks_deferred=%llu pauses=%llu",
         (unsigned long long)s.streams, (unsigned long long)s.adds,
         (unsigned long long)s.adds_ok, (unsigned long long)s.adds_refused,
         (unsigned long long)s.acks_deferred, (unsigned long long)s.pauses);
  bookie_free(b);
}

int main(int argc, char **argv) {
  sl_service_def def = {
      .name = "bookie",
      .table = table,
      .n_table = sizeof(table) / sizeof(table[0]),
      .cfg = &cfg,
      .opts = &cfg.svc,
      .start = start,
      .serving = serving,
      .stop = stop,
      .superuser_only = true,
  };
  return sl_service_main(&def, argc, argv);
}
