/*
 * Helpers for MetadataService tests: a service in this process on a local
 * store (fast unit tests), and client-side shorthands over the generated
 * helpers (metadata.slrpc.h) for those tests and the cluster ones.
 *
 * Every helper that can fail fails the current cmocka test with a message
 * (they are for tests only); the mdt_st_* variants return the status for
 * tests that expect an error.
 */
#ifndef SL_TESTS_METADATA_UTIL_H
#define SL_TESTS_METADATA_UTIL_H

#include <stdbool.h>
#include <stdint.h>

#include "common/clock.h"
#include "common/rpc_client.h"
#include "common/rpc_server.h"
#include "metadata.pb-c.h"
#include "metadata.slrpc.h"
#include "metadata/service.h"
#include "metadata/store.h"

/* A MetadataService in this process over a local store in a temp dir. */
typedef struct mdt_local {
  char *dir;       /* NULL for a replica (mdt_replica_start) */
  sl_store *store; /* owned unless this is a replica */
  sl_md_service *md;
  sl_rpc_server *srv;
  char addr[64];
  sl_rpc_channel *ch; /* a client channel to it */
} mdt_local;

/* Starts one; opts may be NULL (defaults; the store is filled in). */
void mdt_local_start(mdt_local *l, const sl_md_service_opts *opts);
void mdt_local_stop(mdt_local *l);

/* Starts a second service over `store` (retained; another mdt_local's),
 * standing for another replica; opts may be NULL. mdt_local_stop() stops
 * it and leaves the store open. */
void mdt_replica_start(mdt_local *l, sl_store *store, const sl_md_service_opts *opts);

/* cmocka setup/teardown: *state is a calloc'd mdt_local started with
 * default options (mdt_local_new() for others). */
int mdt_local_setup(void **state);
int mdt_local_teardown(void **state);
mdt_local *mdt_local_new(const sl_md_service_opts *opts);

/* A plaintext channel to target. */
sl_rpc_channel *mdt_connect(const char *target);

/* Call options with a deadline. */
sl_rpc_call_opts mdt_opts(int timeout_ms);

/* Opens a broker session for id (address mdt_addr_for(id)), ttl 0 =
 * server default. Returns the session id. */
int64_t mdt_open_broker(sl_rpc_channel *ch, const char *id, uint32_t ttl);
sl_status mdt_st_open_broker(sl_rpc_channel *ch, const char *id, uint32_t ttl,
                             int64_t *session, sl_err *err);
/* The same, advertising `address`. */
sl_status mdt_st_open_broker_at(sl_rpc_channel *ch, const char *id, const char *address,
                                uint32_t ttl, int64_t *session, sl_err *err);

/* The address the helpers register id with ("127.0.0.1:<port from id>"),
 * in a thread-local buffer valid until the next call. A registration's
 * address cannot change within a session. */
char *mdt_addr_for(const char *id);
int64_t mdt_open_bookie(sl_rpc_channel *ch, const char *id, bool read_only, uint32_t ttl);

/* Creates the namespace and topic of `partition` unless they exist; a
 * partitioned topic gets at least MDT_TOPIC_PARTITIONS partitions. */
#define MDT_TOPIC_PARTITIONS 64
void mdt_ensure_topic(sl_rpc_channel *ch, const char *partition);

/* Acquires partition for (id, session), creating its topic first if needed
 * (mdt_ensure_topic): returns the response (caller frees). */
Sluice__V1__AcquireOwnershipResponse *mdt_acquire(sl_rpc_channel *ch, const char *partition,
                                                  const char *id, int64_t session);
sl_status mdt_st_acquire(sl_rpc_channel *ch, const char *partition, const char *id,
                         int64_t session, Sluice__V1__AcquireOwnershipResponse **resp,
                         sl_err *err);

/* Opens a session for broker and acquires partition (it must be free);
 * returns the epoch, *session the session. */
uint64_t mdt_own(sl_rpc_channel *ch, const char *partition, const char *broker,
                 int64_t *session);
/* Releases partition held by session at epoch; fails the test on error. */
void mdt_disown(sl_rpc_channel *ch, const char *partition, int64_t session, uint64_t epoch);

/* The auditor's stats of an in-process service, and a wait for n more
 * completed passes (failing the test after 10 s, scaled). */
sl_md_audit_stats mdt_audit_stats(mdt_local *l);
void mdt_await_audit_passes(mdt_local *l, uint64_t n);

/* Allocates a ledger id; fails the test on error. */
uint64_t mdt_allocate_ledger_id(sl_rpc_channel *ch);

/* Namespace + topic shorthands. */
void mdt_create_namespace(sl_rpc_channel *ch, const char *ns);

/* A minimal valid OPEN ledger (E=Qw=Qa=1 on bookie "b0") for partition
 * (may be NULL). Fields point at static storage; copy before changing
 * repeated fields. */
void mdt_ledger_init(Sluice__V1__LedgerInfo *l, Sluice__V1__EnsembleSegment *seg,
                     const char *partition);

/* GetLedger; fails the test unless SL_OK. The caller frees the answer. */
Sluice__V1__LedgerResponse *mdt_get_ledger(sl_rpc_channel *ch, uint64_t ledger);

/* Checks that every ledger the partition's list and cursors name has its
 * record (none was deleted under them); returns how many they name, and
 * in *cursor_ledgers (may be NULL) how many of those are cursor ledgers. */
size_t mdt_expect_named_ledgers(sl_rpc_channel *ch, const char *partition,
                                size_t *cursor_ledgers);

/* Whether any ensemble segment of the ledger names the bookie. */
bool mdt_ledger_names(sl_rpc_channel *ch, uint64_t ledger, const char *bookie);

/* Creates a ledger; returns its id, *version gets its version. */
uint64_t mdt_create_ledger(sl_rpc_channel *ch, const char *partition, uint64_t epoch,
                           int64_t *version);

/* Writes a cursor whose mark-delete entry is `entry`; returns the status
 * and puts the new version in *version (may be NULL). */
sl_status mdt_st_update_cursor(sl_rpc_channel *ch, const char *partition, const char *sub,
                               int64_t entry, int64_t expected, uint64_t epoch,
                               int64_t *version, sl_err *err);

/* Reads a cursor: its mark-delete entry; version in *version. */
sl_status mdt_st_get_cursor(sl_rpc_channel *ch, const char *partition, const char *sub,
                            int64_t *entry, int64_t *version, sl_err *err);

/* Keeps broker broker_id's session alive from a thread every interval_ms
 * until stopped. broker_id is retained until mdt_keeper_stop. */
typedef struct mdt_keeper mdt_keeper;
mdt_keeper *mdt_keeper_start(sl_rpc_channel *ch, const char *broker_id, int64_t session,
                             int interval_ms);
/* Stops it; returns how many keepalives failed. *last_ok_ms (may be NULL)
 * gets the sl_clock_mono_ms() at which the last successful keepalive returned. */
int mdt_keeper_stop(mdt_keeper *k, long long *last_ok_ms);

/* Fails the test with the status and message unless st == want. */
#define mdt_expect(st, want, err)                                                   \
  mdt_expect_((st), (want), (err), __FILE__, __LINE__)
void mdt_expect_(sl_status st, sl_status want, const sl_err *err, const char *file, int line);

#endif
