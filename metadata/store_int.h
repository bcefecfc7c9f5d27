/*
 * Backend table of sl_store (SQLite VFS / git ref-backend style). store.c
 * validates arguments and builds the single-key calls (create, put, delete)
 * on top of the backend's txn; backends implement only what differs.
 */
#ifndef SL_METADATA_STORE_INT_H
#define SL_METADATA_STORE_INT_H

#include "metadata/store.h"

typedef struct sl_store_vtable {
  const char *name;
  void (*close)(sl_store *s);
  sl_status (*get)(sl_store *s, const void *key, size_t key_len,
                   sl_store_kv *out, sl_err *err);
  /* Keys in [from, prefix_end) where from = max(prefix, start), as of
   * `revision` (0: the latest; a backend that keeps no old versions
   * returns SL_EUNIMPL for any other). */
  sl_status (*range)(sl_store *s, const void *prefix, size_t prefix_len,
                     const void *start, size_t start_len, size_t limit,
                     int64_t revision, sl_store_range_result *out, sl_err *err);
  /*
   * As sl_store_txn, except that on a failed compare it returns SL_EVERSION
   * without a message and fills found[i] (for every i < n_cmps) with the
   * current mod_revision of cmps[i].key, 0 if absent, read atomically with
   * the check. Arguments are already validated.
   */
  sl_status (*txn)(sl_store *s, const sl_store_cmp *cmps, size_t n_cmps,
                   const sl_store_op *ops, size_t n_ops, int64_t *revision,
                   int64_t *found, sl_err *err);
  sl_status (*lease_grant)(sl_store *s, int64_t ttl_s, int64_t *lease,
                           int64_t *granted_ttl, sl_err *err);
  sl_status (*lease_keepalive)(sl_store *s, int64_t lease, int64_t *ttl,
                               sl_err *err);
  sl_status (*lease_revoke)(sl_store *s, int64_t lease, sl_err *err);
  sl_status (*watch_start)(sl_store *s, const void *prefix, size_t prefix_len,
                           int64_t start_revision, sl_store_watch_cb cb,
                           void *arg, sl_store_watch **out, sl_err *err);
  void (*watch_stop)(sl_store_watch *w);
  sl_status (*revision)(sl_store *s, int64_t *revision, sl_err *err);
  sl_status (*compact)(sl_store *s, int64_t revision, sl_err *err);
  /* May be NULL (never fails fast): true while calls fail at once because
   * the store is known to be unreachable. */
  bool (*failing_fast)(sl_store *s);
} sl_store_vtable;

/* First member of every backend's store struct. */
struct sl_store {
  const sl_store_vtable *vt;
  sl_store_opts opts;
};

/* First member of every backend's watch struct. */
struct sl_store_watch {
  const sl_store_vtable *vt;
};

/* The calling thread's deadline (sl_store_deadline_begin) on the
 * CLOCK_MONOTONIC millisecond clock (the one of sl_clock_mono_ms), or
 * INT64_MAX when it has none. */
int64_t sl_store_deadline_(void);

/* Backend constructors; `where` is the URI after "etcd:" / "local:". */
sl_status sl_store_etcd_open_(const char *where, const sl_store_opts *opts,
                              sl_store **out, sl_err *err);
sl_status sl_store_local_open_(const char *where, const sl_store_opts *opts,
                               sl_store **out, sl_err *err);

/*
 * The first key after every key starting with prefix: prefix with trailing
 * 0xff bytes dropped and the last byte incremented. *end_len 0 means "no
 * upper bound" (prefix empty or all 0xff). *end is heap (free it), never NULL.
 */
void sl_store_prefix_end_(const void *prefix, size_t len, uint8_t **end,
                          size_t *end_len);

/* Copies bytes into a fresh heap buffer with a NUL after them. */
uint8_t *sl_store_dup_(const void *data, size_t len);

#endif
