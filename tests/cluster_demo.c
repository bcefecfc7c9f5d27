#include "tests/cluster_demo.h"

#include <inttypes.h>
#include <string.h>
#include <time.h>

#include "bookie.slrpc.h"
#include "broker.slrpc.h"
#include "common/clock.h"
#include "common/crc32c.h"
#include "metadata.slrpc.h"
#include "tests/proc.h"

#define DEMO_TIMEOUT_MS 10000
#define WRITE_QUORUM 2

static const char kPayload[] = "hello from sluice";

/* Registration is asynchronous: poll ListBookies until every bookie shows. */
static sl_status wait_bookies(sl_rpc_channel *md, int want, FILE *out, sl_err *err) {
  long long deadline = sl_clock_mono_ms() + DEMO_TIMEOUT_MS;
  Sluice__V1__ListBookiesRequest req = SLUICE__V1__LIST_BOOKIES_REQUEST__INIT;
  sl_rpc_call_opts opts = {.timeout_ms = 2000};
  for (;;) {
    Sluice__V1__ListBookiesResponse *resp = NULL;
    sl_status st = sl_metadata_service_list_bookies(md, &req, &resp, &opts, err);
    if (st == SL_OK && (int)resp->n_bookies >= want) {
      fprintf(out, "registered bookies (metadata ListBookies):\n");
      for (size_t i = 0; i < resp->n_bookies; i++)
        fprintf(out, "  %-10s %-22s free %" PRIu64 " MiB%s\n", resp->bookies[i]->id,
                resp->bookies[i]->address, resp->bookies[i]->free_bytes >> 20,
                resp->bookies[i]->read_only ? " read-only" : "");
      protobuf_c_message_free_unpacked(&resp->base, NULL);
      return SL_OK;
    }
    if (resp != NULL) protobuf_c_message_free_unpacked(&resp->base, NULL);
    if (sl_clock_mono_ms() > deadline)
      return st != SL_OK ? sl_err_wrap(err, st, "list bookies")
                         : sl_err_set(err, SL_ETIMEDOUT, "bookies did not register");
    struct timespec ts = {0, 50 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
}

/* Writes entry 0 of `ledger` to one bookie and waits for its durable ack. */
static sl_status add_entry(sl_rpc_channel *ch, uint64_t ledger, sl_err *err) {
  sl_rpc_stream *s = NULL;
  sl_rpc_call_opts opts = {.timeout_ms = 5000};
  sl_status st = sl_bookie_service_add_entry_open(ch, &opts, &s, err);
  if (st != SL_OK) return st;
  Sluice__V1__AddEntryRequest req = SLUICE__V1__ADD_ENTRY_REQUEST__INIT;
  req.ledger_id = ledger;
  req.entry_id = 0;
  req.lac = -1;
  req.payload.data = (uint8_t *)kPayload;
  req.payload.len = strlen(kPayload);
  req.crc32c = sl_entry_crc(ledger, 0, kPayload, strlen(kPayload));
  req.epoch = 1;
  st = sl_bookie_service_add_entry_send(s, &req, 5000, err);
  if (st == SL_OK) st = sl_rpc_stream_close_send(s, err);
  Sluice__V1__AddEntryResponse *ack = NULL;
  if (st == SL_OK) st = sl_bookie_service_add_entry_recv(s, &ack, 5000, err);
  if (st == SL_OK && ack == NULL) st = sl_err_set(err, SL_EIO, "stream ended without an ack");
  if (st == SL_OK && ack->code != 0)
    st = sl_err_set(err, sl_status_from_grpc(ack->code), "add refused: %s", ack->error);
  if (ack != NULL) protobuf_c_message_free_unpacked(&ack->base, NULL);
  sl_rpc_stream_destroy(s);
  return st;
}

static sl_status read_back(sl_rpc_channel *ch, uint64_t ledger, FILE *out,
                           const char *id, sl_err *err) {
  Sluice__V1__ReadEntryRequest req = SLUICE__V1__READ_ENTRY_REQUEST__INIT;
  req.ledger_id = ledger;
  req.entry_id = 0;
  Sluice__V1__ReadEntryResponse *resp = NULL;
  sl_rpc_call_opts opts = {.timeout_ms = 5000};
  sl_status st = sl_bookie_service_read_entry(ch, &req, &resp, &opts, err);
  if (st != SL_OK) return st;
  if (resp->payload.len != strlen(kPayload) ||
      memcmp(resp->payload.data, kPayload, resp->payload.len) != 0 ||
      sl_entry_crc(ledger, 0, resp->payload.data, resp->payload.len) != resp->crc32c)
    st = sl_err_set(err, SL_ECORRUPT, "%s: read back different bytes", id);
  else
    fprintf(out, "  read back from %-8s '%.*s' crc32c=%08x\n", id,
            (int)resp->payload.len, (const char *)resp->payload.data, resp->crc32c);
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  return st;
}

static sl_status quorum_write(sl_cluster *c, uint64_t ledger, FILE *out, sl_err *err) {
  sl_rpc_channel *ch[WRITE_QUORUM] = {NULL};
  sl_status st = SL_OK;
  for (int i = 0; i < WRITE_QUORUM && st == SL_OK; i++) {
    sl_rpc_channel_opts co = {.target = sl_cluster_addr(c, SL_NODE_BOOKIE, i)};
    st = sl_rpc_channel_create(&co, &ch[i], err);
  }
  for (int i = 0; i < WRITE_QUORUM && st == SL_OK; i++) {
    const char *id = sl_cluster_id(c, SL_NODE_BOOKIE, i);
    st = add_entry(ch[i], ledger, err);
    if (st != SL_OK) st = sl_err_wrap(err, st, "%s", id);
    else fprintf(out, "  entry 0 of ledger %" PRIu64 " durable on %s\n", ledger, id);
  }
  for (int i = 0; i < WRITE_QUORUM && st == SL_OK; i++)
    st = read_back(ch[i], ledger, out, sl_cluster_id(c, SL_NODE_BOOKIE, i), err);
  for (int i = 0; i < WRITE_QUORUM; i++) sl_rpc_channel_destroy(ch[i]);
  return st;
}

/* A partitioned topic through the first broker, looked up through the last:
 * the owners picked by load, and the redirects for those it does not own. */
static sl_status lookup_demo(sl_cluster *c, FILE *out, sl_err *err) {
  int last = sl_cluster_count(c, SL_NODE_BROKER) - 1;
  sl_rpc_channel *ch[2] = {NULL, NULL};
  sl_status st = SL_OK;
  for (int i = 0; i < 2 && st == SL_OK; i++) {
    sl_rpc_channel_opts co = {.target = sl_cluster_addr(c, SL_NODE_BROKER, i ? last : 0)};
    st = sl_rpc_channel_create(&co, &ch[i], err);
  }
  sl_rpc_call_opts opts = {.timeout_ms = 5000};
  Sluice__V1__CreateTopicRequest creq = SLUICE__V1__CREATE_TOPIC_REQUEST__INIT;
  creq.name = "public/demo";
  creq.partitions = 4;
  Sluice__V1__TopicInfo *t = NULL;
  if (st == SL_OK) st = sl_broker_service_create_topic(ch[0], &creq, &t, &opts, err);
  if (st == SL_EEXIST) st = SL_OK;
  if (t != NULL) protobuf_c_message_free_unpacked(&t->base, NULL);
  Sluice__V1__LookupRequest lreq = SLUICE__V1__LOOKUP_REQUEST__INIT;
  lreq.topic = "public/demo";
  Sluice__V1__LookupResponse *l = NULL;
  if (st == SL_OK) st = sl_broker_service_lookup(ch[1], &lreq, &l, &opts, err);
  if (st == SL_OK) {
    fprintf(out, "topic public/demo looked up through %s (BrokerService Lookup):\n",
            sl_cluster_id(c, SL_NODE_BROKER, last));
    for (size_t i = 0; i < l->n_owners; i++)
      fprintf(out, "  %-24s owner %-9s %-22s epoch %" PRIu64 "%s\n",
              l->owners[i]->partition, l->owners[i]->broker_id,
              l->owners[i]->broker_address, l->owners[i]->epoch,
              l->owners[i]->redirect ? "  (redirect)" : "");
    protobuf_c_message_free_unpacked(&l->base, NULL);
  }
  for (int i = 0; i < 2; i++) sl_rpc_channel_destroy(ch[i]);
  return st == SL_OK ? SL_OK : sl_err_wrap(err, st, "lookup demo");
}

sl_status sl_cluster_demo(sl_cluster *c, FILE *out, sl_err *err) {
  int bookies = sl_cluster_count(c, SL_NODE_BOOKIE);
  sl_rpc_channel *md = NULL;
  sl_rpc_channel_opts co = {.target = sl_cluster_metadata_target(c)};
  sl_status st = sl_rpc_channel_create(&co, &md, err);
  if (st != SL_OK) return st;
  st = wait_bookies(md, bookies, out, err);
  if (st == SL_OK && bookies >= WRITE_QUORUM) {
    Sluice__V1__AllocateLedgerIdRequest req = SLUICE__V1__ALLOCATE_LEDGER_ID_REQUEST__INIT;
    Sluice__V1__AllocateLedgerIdResponse *resp = NULL;
    sl_rpc_call_opts opts = {.timeout_ms = 5000};
    st = sl_metadata_service_allocate_ledger_id(md, &req, &resp, &opts, err);
    if (st == SL_OK) {
      uint64_t ledger = resp->ledger_id;
      protobuf_c_message_free_unpacked(&resp->base, NULL);
      fprintf(out, "one entry through a write quorum of %d bookies:\n", WRITE_QUORUM);
      st = quorum_write(c, ledger, out, err);
    } else {
      st = sl_err_wrap(err, st, "allocate ledger id");
    }
  }
  sl_rpc_channel_destroy(md);
  if (st == SL_OK && sl_cluster_count(c, SL_NODE_BROKER) > 0) st = lookup_demo(c, out, err);
  return st;
}
