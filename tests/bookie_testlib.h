/*
 * Helpers for the process-level bookie tests (tests/bookie_*_test.c): a
 * cluster with one metadata service and N bookies from tests/cluster.h,
 * deterministic entry payloads, and blocking BookieService calls through
 * the generated client helpers. Every helper fails the running cmocka test
 * on an unexpected transport error, so tests read as the scenario.
 */
#ifndef SL_TESTS_BOOKIE_TESTLIB_H
#define SL_TESTS_BOOKIE_TESTLIB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "bookie.slrpc.h"
#include "common/rpc_client.h"
#include "tests/cluster.h"

/* Starts metadata (embedded store) + `bookies` bookies, no broker, each
 * bookie with the extra flags in `bookie_args` (NULL-terminated, or NULL).
 * Fails the test on error. */
sl_cluster *sl_bktest_cluster(const char *name, int bookies,
                              const char *const *bookie_args);

/* SIGTERMs every bookie, checks each log for sanitizer reports, destroys. */
void sl_bktest_cluster_destroy(sl_cluster *c);

/* Fails the test if the log holds an AddressSanitizer, LeakSanitizer or
 * UBSan report. */
void sl_bktest_check_log_clean(const char *log_path);

/* A fresh channel to a node (a new one after each restart, so that no
 * reconnect backoff slows the test). */
sl_rpc_channel *sl_bktest_channel(const char *addr);

/* sl_bktest_channel to bookie i of c. */
sl_rpc_channel *sl_bktest_bookie_channel(const sl_cluster *c, int i);

/* Ends a test: destroys the channel ch, then the cluster as
 * sl_bktest_cluster_destroy does. */
void sl_bktest_finish(sl_cluster *c, sl_rpc_channel *ch);

/* Deterministic payload of (ledger, entry): *len bytes (size drawn from the
 * pair too, up to max_len; max_len 0 = the usual mix: mostly < 16 KiB, now
 * and then empty or up to 200 KiB). Heap buffer; caller frees. */
uint8_t *sl_bktest_payload(uint64_t ledger, int64_t entry, uint32_t max_len,
                           uint32_t *len);

/* The ledger's password, as a writer would read it from the ledger's
 * metadata: "ledger-<id>". Every helper below sends it wherever the protocol
 * carries one (adds, fencing reads), so a bookie records and checks it
 * consistently. Writes it (NUL-terminated) into buf and returns buf. */
#define SL_BKTEST_PASSWORD_MAX 32
char *sl_bktest_password(uint64_t ledger, char *buf, size_t n);

/* Fills an add request for (ledger, entry) with its payload and the ledger's
 * password. The caller frees r->payload.data, which also holds the
 * password's bytes (r->password points into it). */
void sl_bktest_add_req(Sluice__V1__AddEntryRequest *r, uint64_t ledger, int64_t entry,
                       uint32_t max_len, uint64_t epoch);

/* One add on its own stream; waits for the ack and returns its gRPC code,
 * copying its error text into `error` (may be NULL). */
int sl_bktest_add(sl_rpc_channel *ch, const Sluice__V1__AddEntryRequest *r, char *error,
                  size_t n);

/* Writes entries [from, to) of a ledger with deterministic payloads on one
 * stream (all in flight at once) and fails the test unless all are acked. */
void sl_bktest_write(sl_rpc_channel *ch, uint64_t ledger, int64_t from, int64_t to,
                     uint32_t max_len, uint64_t epoch);

/* ReadEntry (with the ledger's password when fencing). On SL_OK *out is a
 * heap message. */
sl_status sl_bktest_read(sl_rpc_channel *ch, uint64_t ledger, int64_t entry, bool fence,
                         uint64_t epoch, Sluice__V1__ReadEntryResponse **out, sl_err *err);

/* ReadEntry with a given password (NULL: none sent). */
sl_status sl_bktest_read_pw(sl_rpc_channel *ch, uint64_t ledger, int64_t entry, bool fence,
                            uint64_t epoch, const char *password,
                            Sluice__V1__ReadEntryResponse **out, sl_err *err);

/* Reads (ledger, entry) and fails the test unless it is byte-exact with its
 * deterministic payload and the CRC32C matches. */
void sl_bktest_check_entry(sl_rpc_channel *ch, uint64_t ledger, int64_t entry,
                           uint32_t max_len);

/* One entry for sl_bktest_check_many. */
typedef struct sl_bktest_item {
  uint64_t ledger;
  int64_t entry;
  bool may_be_absent;  /* NOT_FOUND is fine too (sent, never acked) */
} sl_bktest_item;

/* sl_bktest_check_entry for many entries, with up to 32 reads in flight.
 * Fails the test naming the first bad entry. */
void sl_bktest_check_many(sl_rpc_channel *ch, const sl_bktest_item *items, size_t n,
                          uint32_t max_len);

/* GetInfo; fails the test on error. Caller frees. */
Sluice__V1__GetInfoResponse *sl_bktest_info(sl_rpc_channel *ch);

/* Polls pred(arg) every 5 ms until true or timeout_ms passes. */
bool sl_bktest_poll(bool (*pred)(void *arg), void *arg, int timeout_ms);

/* Path of bookie i's data dir (static buffer, valid until the next call). */
const char *sl_bktest_data_dir(const sl_cluster *c, int i);

#endif
