/*
 * Internals of the local (leveldb) sl_store backend, shared by
 * store_local.c (data, leases, compaction) and store_local_watch.c.
 *
 * leveldb layout (first byte is a tag; integers are big-endian so that
 * byte order is numeric order):
 *   "mrev"                 -> u64 current revision
 *   "mcompact"             -> u64 oldest revision whose history is kept
 *   "mlease"               -> u64 last lease id handed out
 *   'k' key                -> u64 create_rev, u64 mod_rev, u64 lease, value
 *   'h' u64 rev, u32 idx   -> u8 type, u64 create_rev, u64 lease,
 *                             u32 key_len, key, value    (one change)
 *   'l' u64 lease          -> u64 ttl seconds
 *   'L' u64 lease, key     -> ""   (key is bound to lease)
 */
#ifndef SL_METADATA_STORE_LOCAL_INT_H
#define SL_METADATA_STORE_LOCAL_INT_H

#include <leveldb/c.h>
#include <pthread.h>

#include "metadata/store_int.h"

#define LOCAL_EV_PUT 1
#define LOCAL_EV_DELETE 2
#define LOCAL_HIST_KEY_LEN 13 /* 'h' + u64 rev + u32 idx */

typedef struct local_lease {
  int64_t id;
  int64_t ttl;          /* seconds */
  long long expiry_ms;  /* monotonic; renewed by keepalive */
} local_lease;

typedef struct local_store {
  sl_store base;
  char *path;
  leveldb_t *db;
  leveldb_options_t *options;
  leveldb_readoptions_t *ropts;
  leveldb_writeoptions_t *wopts;

  pthread_mutex_t lock; /* guards everything below and serialises writes */
  pthread_cond_t changed; /* broadcast when rev moves or a watch stops */
  pthread_cond_t lease_cv; /* wakes the lease thread */
  int64_t rev;
  int64_t compact_rev;
  int64_t lease_seq;
  local_lease *leases;
  size_t n_leases, cap_leases;
  size_t n_watches;
  bool closing;
  pthread_t lease_thread;
} local_store;

void sl_local_put_u64_(uint8_t *p, uint64_t v);
uint64_t sl_local_get_u64_(const uint8_t *p);
void sl_local_put_u32_(uint8_t *p, uint32_t v);
uint32_t sl_local_get_u32_(const uint8_t *p);

/* A decoded 'h' record; key/value point into the record (not owned). */
typedef struct local_event {
  int64_t rev;
  uint32_t idx;
  int type; /* LOCAL_EV_PUT or LOCAL_EV_DELETE */
  int64_t create_rev;
  int64_t lease;
  const uint8_t *key;
  size_t key_len;
  const uint8_t *value;
  size_t value_len;
} local_event;

/* Decodes one 'h' key/value pair; false if malformed. */
bool sl_local_decode_event_(const char *k, size_t klen, const char *v, size_t vlen,
                            local_event *out);

sl_status sl_local_watch_start_(sl_store *s, const void *prefix, size_t prefix_len,
                                int64_t start_revision, sl_store_watch_cb cb,
                                void *arg, sl_store_watch **out, sl_err *err);
void sl_local_watch_stop_(sl_store_watch *w);

#endif
