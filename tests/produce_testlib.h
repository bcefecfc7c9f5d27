/*
 * Helpers for the Produce integration tests (tests/produce_*_test.c): a
 * cluster from tests/cluster.h (etcd, metadata replicas, bookies, brokers),
 * namespaces and topics, a blocking producer over the generated stubs, and
 * a reader that checks the partition's log through the ledger client (a
 * test-only reader: it reads the managed-ledger list and every ledger).
 * Helpers fail the running cmocka test on unexpected errors.
 */
#ifndef SL_TESTS_PRODUCE_TESTLIB_H
#define SL_TESTS_PRODUCE_TESTLIB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "broker.pb-c.h"
#include "broker/ledger/ledger.h"
#include "broker/managed_ledger.h"
#include "common/rpc_client.h"
#include "tests/cluster.h"

#define SL_PT_MAX_BROKERS 4

typedef struct sl_pt {
  sl_cluster *c;
  sl_rpc_channel *meta;
  sl_rpc_channel *broker[SL_PT_MAX_BROKERS];
  sl_ledger_client *ledgers;
} sl_pt;

/* Starts `metadata` replicas on etcd, `bookies` bookies and `brokers`
 * brokers (session TTL 2 s, so a killed owner's partitions free up fast). */
void sl_pt_start(sl_pt *t, const char *name, int metadata, int bookies, int brokers);
/* The same with session and registration TTLs of ttl_s seconds (long
 * tests on a loaded machine, where 2 s of etcd stalls end a session). */
void sl_pt_start_ttl(sl_pt *t, const char *name, int metadata, int bookies, int brokers,
                     int ttl_s);
/* The same with flags for the metadata service (NULL-terminated, or NULL)
 * and up to 5 more for the bookies; the harness keeps the pointers. */
void sl_pt_start_args(sl_pt *t, const char *name, int metadata, int bookies, int brokers,
                      int ttl_s, const char *const *metadata_args,
                      const char *const *bookie_args_more);
void sl_pt_stop(sl_pt *t);
/* cmocka group teardown: sl_pt_stop, then frees the calloc'd sl_pt. */
int sl_pt_teardown(void **state);

/* Creates a namespace (dedup on/off, max message bytes 0 = default) and a
 * topic with `partitions` (0 = non-partitioned). */
void sl_pt_namespace(sl_pt *t, const char *ns, bool dedup, uint32_t max_message_bytes);
void sl_pt_topic(sl_pt *t, const char *topic, uint32_t partitions);

/* Looks the partition up through broker `via`; returns the owner's index
 * (by address), *epoch its epoch. Fails the test if no owner. */
int sl_pt_owner(sl_pt *t, int via, const char *partition, uint64_t *epoch);

/* Like sl_pt_owner, but returns -1 when the lookup fails or names no
 * broker of the cluster (e.g. during a failover). */
int sl_pt_try_owner(sl_pt *t, int via, const char *partition, uint64_t *epoch);

/* The cluster index of the bookie in `slot` of the last ensemble of the
 * partition's current (last) ledger. */
int sl_pt_ensemble_bookie(sl_pt *t, const char *partition, uint32_t slot);

/* The pid of node i of a kind (by its --id), or -1. */
int sl_pt_pid(sl_pt *t, sl_node_kind kind, int i);

/* Sends sig (SIGSTOP, SIGCONT) to broker i's process. */
void sl_pt_signal_broker(sl_pt *t, int i, int sig);

/* A producer on one Produce stream. */
typedef struct sl_pt_producer {
  sl_rpc_stream *s;
  char name[64];
  int64_t last_sequence_id;   /* from ProducerOpened */
} sl_pt_producer;

/* Opens a stream to broker b and sends open; returns the status of the
 * first answer (SL_OK: opened; SL_EREDIRECT: *redirect, if not NULL, gets
 * the Redirect, caller frees). */
sl_status sl_pt_open(sl_pt *t, int b, const char *topic, const char *name, bool resume,
                     sl_pt_producer *p, Sluice__V1__Redirect **redirect, sl_err *err);
void sl_pt_close(sl_pt_producer *p);

/* The deterministic payload of a sequence id (len bytes, at least 24). */
void sl_pt_payload(uint64_t seq, uint8_t *buf, size_t len);
bool sl_pt_payload_ok(uint64_t seq, const uint8_t *buf, size_t len);

/* Sends count messages with sequence ids first.. (one SendBatch, or one
 * SendRequest when count == 1), payloads of len bytes. */
sl_status sl_pt_send(sl_pt_producer *p, uint64_t first, int count, size_t len, sl_err *err);

/* One outcome per message, in order. */
typedef struct sl_pt_ack {
  uint64_t seq;
  int status;               /* sluice.v1.Status */
  bool duplicate;
  bool has_id;
  sl_ml_pos pos;
  int32_t batch_index;
  char error[160];
} sl_pt_ack;

/* Receives answers until n message outcomes arrived (receipts expanded to
 * one ack per message) or the stream ended. Returns SL_OK, or the stream's
 * final status (then *got < n). */
sl_status sl_pt_recv_acks(sl_pt_producer *p, sl_pt_ack *acks, int n, int *got,
                          int timeout_ms, sl_err *err);

/* <0, 0, >0 over (ledger, entry, batch index). */
int sl_pt_ack_cmp(const sl_pt_ack *a, const sl_pt_ack *b);

/* Unloads the partition through broker `via` (its owner closes the ledger,
 * so that a reader sees everything acked; the next open moves it). */
void sl_pt_unload(sl_pt *t, int via, const char *partition);

/* One stored message as read back from the log. */
typedef struct sl_pt_msg {
  char producer[64];
  uint64_t seq;
  sl_ml_pos pos;
  int32_t index;
  bool payload_ok;
} sl_pt_msg;

/* Reads the partition's whole log (every ledger of the list; open ones up
 * to what bookies confirm). *out is a heap array the caller frees. */
size_t sl_pt_read_log(sl_pt *t, const char *partition, sl_pt_msg **out);

#endif
