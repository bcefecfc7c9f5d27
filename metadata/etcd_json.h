/*
 * etcd v3 JSON gateway: request encoding helpers and reply parsers.
 *
 * Pure functions, no I/O: metadata/etcd.c sends what these build and hands
 * the reply bytes to these parsers. The parsers take untrusted bytes: any
 * input gives either SL_OK with a filled struct, or an error status with a
 * message saying which field was wrong. They never crash; a libFuzzer target
 * (metadata/fuzz/etcd_parse_fuzz.c) holds them to that.
 *
 * Gateway conventions these functions handle (as etcd 3.4's gateway behaves):
 *  - keys and values are standard base64 with padding;
 *  - int64 fields (revisions, lease ids, TTLs, counts) are JSON strings.
 *    They are parsed with strtoll, never through a double: a lease id that
 *    went through a double names a different lease. A JSON number in an
 *    int64 field is rejected;
 *  - fields at their default value are left out (0, false, empty, PUT), so a
 *    missing field reads as its default;
 *  - an error reply is {"error","message","code"} with a gRPC code, or, in a
 *    stream, {"error":{"grpc_code","http_code","message","http_status"}}.
 *
 * Statuses from the parsers: SL_OK; the mapped status of an etcd error reply
 * (its gRPC code through sl_status_from_grpc, the one map); SL_EINTERNAL for a reply that is not what
 * etcd sends ("etcd reply: kvs[0].key: not valid base64").
 */
#ifndef SL_METADATA_ETCD_JSON_H
#define SL_METADATA_ETCD_JSON_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

/* ---- base64 (standard alphabet, with padding) ---- */

/* Returns a heap NUL-terminated encoding of data[0..n). Never NULL. */
char *sl_etcd_b64_encode(const void *data, size_t n);

/*
 * Decodes `len` bytes of text. Strict: length a multiple of 4, '=' only as
 * the last one or two characters, nothing outside the alphabet. On success
 * *out is a heap buffer of *out_len bytes plus a NUL (not counted), so text
 * keys can be printed. SL_EINVAL on bad input.
 */
sl_status sl_etcd_b64_decode(const char *text, size_t len, uint8_t **out,
                             size_t *out_len, sl_err *err);

/* ---- request building (cJSON objects; abort on out-of-memory) ---- */

/* Adds `name: "<base64 of data>"`. */
void sl_etcd_json_add_bytes(cJSON *obj, const char *name, const void *data,
                            size_t n);
/* Adds `name: "<decimal>"` (int64 as a string, as the gateway wants). */
void sl_etcd_json_add_int64(cJSON *obj, const char *name, int64_t v);

/* ---- reply parsing ---- */

/* One key-value as etcd returns it; buffers heap-owned by the containing
 * reply struct. key and value carry a NUL past their length. */
typedef struct sl_etcd_kv {
  uint8_t *key;
  size_t key_len;
  uint8_t *value;
  size_t value_len;
  int64_t create_revision;
  int64_t mod_revision;
  int64_t version;
  int64_t lease; /* 0 when not bound to a lease */
} sl_etcd_kv;

typedef struct sl_etcd_range_reply {
  int64_t revision; /* header.revision: store revision the read saw */
  sl_etcd_kv *kvs;
  size_t n;
  bool more;     /* more keys in the range past the limit */
  int64_t count; /* keys in the range (ignoring the limit) */
} sl_etcd_range_reply;

typedef enum sl_etcd_op_type {
  SL_ETCD_OP_RANGE = 1,
  SL_ETCD_OP_PUT = 2,
  SL_ETCD_OP_DELETE = 3,
} sl_etcd_op_type;

typedef struct sl_etcd_op_reply {
  sl_etcd_op_type type;
  sl_etcd_range_reply range; /* for RANGE */
  int64_t deleted;           /* for DELETE */
} sl_etcd_op_reply;

typedef struct sl_etcd_txn_reply {
  int64_t revision; /* header.revision: the txn's revision if it wrote */
  bool succeeded;   /* compares held; the success branch ran */
  sl_etcd_op_reply *ops;
  size_t n_ops;
} sl_etcd_txn_reply;

typedef struct sl_etcd_delete_reply {
  int64_t revision;
  int64_t deleted;
} sl_etcd_delete_reply;

/* Grant, keepalive ({"result":{...}} is unwrapped) and revoke replies. */
typedef struct sl_etcd_lease_reply {
  int64_t revision;
  int64_t id;
  int64_t ttl; /* seconds; 0 in a keepalive reply means the lease is gone */
} sl_etcd_lease_reply;

typedef enum sl_etcd_event_type {
  SL_ETCD_EVENT_PUT = 0,
  SL_ETCD_EVENT_DELETE = 1,
} sl_etcd_event_type;

typedef struct sl_etcd_event {
  sl_etcd_event_type type;
  sl_etcd_kv kv; /* for DELETE only key and mod_revision are set */
} sl_etcd_event;

/* One line of a /v3/watch stream. */
typedef struct sl_etcd_watch_reply {
  int64_t revision;         /* header.revision (0 when left out) */
  bool created;
  bool canceled;
  int64_t compact_revision; /* > 0: the start revision was compacted */
  char *cancel_reason;      /* heap, or NULL */
  sl_etcd_event *events;
  size_t n;
} sl_etcd_watch_reply;

/*
 * Each parser reads `len` bytes of `body` (need not be NUL-terminated) into
 * *out, which it zeroes first. On failure *out holds nothing to release;
 * on success the caller releases it with the matching _release function.
 * `what` names the request in error messages (e.g. "range /sluice/a").
 */
sl_status sl_etcd_parse_range(const char *body, size_t len, const char *what,
                              sl_etcd_range_reply *out, sl_err *err);
sl_status sl_etcd_parse_txn(const char *body, size_t len, const char *what,
                            sl_etcd_txn_reply *out, sl_err *err);
sl_status sl_etcd_parse_delete(const char *body, size_t len, const char *what,
                               sl_etcd_delete_reply *out, sl_err *err);
sl_status sl_etcd_parse_lease(const char *body, size_t len, const char *what,
                              sl_etcd_lease_reply *out, sl_err *err);
sl_status sl_etcd_parse_watch(const char *body, size_t len, const char *what,
                              sl_etcd_watch_reply *out, sl_err *err);
/* Any reply that only needs its header: put, compaction, status. */
sl_status sl_etcd_parse_header(const char *body, size_t len, const char *what,
                               int64_t *revision, sl_err *err);

void sl_etcd_range_reply_release(sl_etcd_range_reply *r);
void sl_etcd_txn_reply_release(sl_etcd_txn_reply *r);
void sl_etcd_watch_reply_release(sl_etcd_watch_reply *r);

#endif
