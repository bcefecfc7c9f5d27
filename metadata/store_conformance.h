/*
 * The sl_store conformance suite: one set of cmocka cases that every
 * backend must pass. store_local_test.c and store_etcd_test.c each supply
 * a backend (how to open a fresh store) and list SL_STORE_CONFORMANCE_TESTS
 * in their test array, next to their backend-specific cases.
 *
 * Each case runs against a store opened for it by the backend and uses keys
 * under a prefix unique to the case, so cases may share one etcd.
 */
#ifndef SL_METADATA_STORE_CONFORMANCE_H
#define SL_METADATA_STORE_CONFORMANCE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

#include "common/clock.h"
#include "metadata/store.h"

typedef struct sl_store_conf_backend {
  const char *name;
  /* Opens a store for one case; `ctx` is the backend's own state. */
  sl_status (*open)(void *ctx, sl_store **out, sl_err *err);
  /* Closes it again (and cleans up whatever open made). */
  void (*close)(void *ctx, sl_store *s);
  void *ctx;
} sl_store_conf_backend;

/* Must be called by the test main before cmocka runs the cases. */
void sl_store_conf_set_backend(const sl_store_conf_backend *b);

/* What each case gets as *state. */
typedef struct sl_store_conf {
  sl_store *store;
  char prefix[64]; /* unique per case, e.g. "/conf/7/" */
  size_t prefix_len;
} sl_store_conf;

int sl_store_conf_setup(void **state);
int sl_store_conf_teardown(void **state);

/* Writes prefix + suffix into buf (cap >= 128); returns the length. */
size_t sl_store_conf_key(const sl_store_conf *t, char *buf, const char *suffix);

/* ---- event collector, for watch tests ---- */

typedef struct sl_store_conf_events {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  sl_store_event *evs; /* deep copies */
  size_t n, cap;
} sl_store_conf_events;

void sl_store_conf_events_init(sl_store_conf_events *c);
void sl_store_conf_events_release(sl_store_conf_events *c);
/* A sl_store_watch_cb; arg is a sl_store_conf_events. */
void sl_store_conf_collect(void *arg, const sl_store_event *ev);
/* Waits until at least n events arrived or timeout_ms passed. */
bool sl_store_conf_wait_events(sl_store_conf_events *c, size_t n, int timeout_ms);
/* Events so far (locks around the read). */
size_t sl_store_conf_count(sl_store_conf_events *c);

void sl_store_conf_sleep_ms(int ms);

#define SL_STORE_CONFORMANCE(X) \
  X(get_put_basics)             \
  X(create_if_absent)           \
  X(cas_semantics)              \
  X(cas_one_winner_per_version) \
  X(cas_no_lost_updates)        \
  X(delete_with_version)        \
  X(txn_atomicity)              \
  X(txn_takes_ownership)        \
  X(range_prefix_limit_paging)  \
  X(input_validation)           \
  X(lease_keepalive_and_expiry) \
  X(lease_revoke)               \
  X(watch_in_order)             \
  X(watch_from_past_and_now)    \
  X(watch_sees_lease_expiry)    \
  X(compaction)

#define SL_STORE_CONF_DECL_(name) void test_store__##name(void **state);
SL_STORE_CONFORMANCE(SL_STORE_CONF_DECL_)
#undef SL_STORE_CONF_DECL_

#define SL_STORE_CONF_ENTRY_(name)                                          \
  cmocka_unit_test_setup_teardown(test_store__##name, sl_store_conf_setup, \
                                  sl_store_conf_teardown),
#define SL_STORE_CONFORMANCE_TESTS SL_STORE_CONFORMANCE(SL_STORE_CONF_ENTRY_)

#endif
