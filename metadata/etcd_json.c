#include "metadata/etcd_json.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- base64 ---- */

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *sl_etcd_b64_encode(const void *data, size_t n) {
  const uint8_t *in = data;
  char *out = sl_xmalloc((n + 2) / 3 * 4 + 1);
  size_t o = 0, i = 0;
  for (; i + 3 <= n; i += 3) {
    uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
    out[o++] = b64_alphabet[v >> 18 & 63];
    out[o++] = b64_alphabet[v >> 12 & 63];
    out[o++] = b64_alphabet[v >> 6 & 63];
    out[o++] = b64_alphabet[v & 63];
  }
  if (i < n) {
    uint32_t v = (uint32_t)in[i] << 16;
    if (i + 1 < n) v |= (uint32_t)in[i + 1] << 8;
    out[o++] = b64_alphabet[v >> 18 & 63];
    out[o++] = b64_alphabet[v >> 12 & 63];
    out[o++] = (i + 1 < n) ? b64_alphabet[v >> 6 & 63] : '=';
    out[o++] = '=';
  }
  out[o] = '\0';
  return out;
}

static int b64_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

sl_status sl_etcd_b64_decode(const char *text, size_t len, uint8_t **out,
                             size_t *out_len, sl_err *err) {
  if (len % 4 != 0)
    return sl_err_set(err, SL_EINVAL, "base64: length %zu is not a multiple of 4", len);
  size_t pad = 0;
  if (len > 0 && text[len - 1] == '=') pad++;
  if (len > 1 && text[len - 2] == '=') pad++;
  uint8_t *buf = sl_xmalloc(len / 4 * 3 + 1);
  size_t o = 0;
  for (size_t i = 0; i < len; i += 4) {
    uint32_t v = 0;
    bool last = i + 4 == len;
    for (size_t j = 0; j < 4; j++) {
      int d = b64_value(text[i + j]);
      bool is_pad = last && j >= 4 - pad;
      if (d < 0 && !is_pad) {
        free(buf);
        return sl_err_set(err, SL_EINVAL, "base64: bad character at offset %zu",
                          i + j);
      }
      v = v << 6 | (uint32_t)(is_pad ? 0 : d);
    }
    buf[o++] = (uint8_t)(v >> 16);
    if (!(last && pad >= 2)) buf[o++] = (uint8_t)(v >> 8);
    if (!(last && pad >= 1)) buf[o++] = (uint8_t)v;
  }
  buf[o] = '\0';
  *out = buf;
  *out_len = o;
  return SL_OK;
}

/* ---- request building ---- */

/* cJSON fails only when malloc does; servers abort on out-of-memory. */
static void add_or_die(cJSON *obj, const char *name, cJSON *item) {
  bool added = item != NULL && cJSON_AddItemToObject(obj, name, item);
  SL_ASSERT(added); /* out of memory */
}

void sl_etcd_json_add_bytes(cJSON *obj, const char *name, const void *data,
                            size_t n) {
  char *text = sl_etcd_b64_encode(data, n);
  add_or_die(obj, name, cJSON_CreateString(text));
  free(text);
}

void sl_etcd_json_add_int64(cJSON *obj, const char *name, int64_t v) {
  char text[24];
  snprintf(text, sizeof(text), "%" PRId64, v);
  add_or_die(obj, name, cJSON_CreateString(text));
}

/* ---- reply parsing helpers ---- */

static sl_status bad(sl_err *err, const char *what, const char *field,
                     const char *problem) {
  return sl_err_set(err, SL_EINTERNAL, "etcd %s: reply field %s: %s", what,
                    field, problem);
}

/* Reads an int64 carried as a JSON string; a missing field reads as 0. */
static sl_status get_int64(const cJSON *obj, const char *name, const char *what,
                           int64_t *out, sl_err *err) {
  const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, name);
  *out = 0;
  if (item == NULL || cJSON_IsNull(item)) return SL_OK;
  if (!cJSON_IsString(item) || item->valuestring == NULL)
    return bad(err, what, name, "not an int64 string");
  const char *s = item->valuestring;
  char *end = NULL;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (s[0] == '\0' || *end != '\0' || errno == ERANGE ||
      (s[0] != '-' && (s[0] < '0' || s[0] > '9')))
    return bad(err, what, name, "not a decimal int64");
  *out = (int64_t)v;
  return SL_OK;
}

static sl_status get_bool(const cJSON *obj, const char *name, const char *what,
                          bool *out, sl_err *err) {
  const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, name);
  *out = false;
  if (item == NULL || cJSON_IsNull(item)) return SL_OK;
  if (!cJSON_IsBool(item)) return bad(err, what, name, "not a boolean");
  *out = cJSON_IsTrue(item);
  return SL_OK;
}

/* Optional object: NULL when missing; error when present but not an object. */
static sl_status get_object(const cJSON *obj, const char *name, const char *what,
                            const cJSON **out, sl_err *err) {
  const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, name);
  *out = NULL;
  if (item == NULL || cJSON_IsNull(item)) return SL_OK;
  if (!cJSON_IsObject(item)) return bad(err, what, name, "not an object");
  *out = item;
  return SL_OK;
}

/* Optional array: NULL when missing. */
static sl_status get_array(const cJSON *obj, const char *name, const char *what,
                           const cJSON **out, sl_err *err) {
  const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, name);
  *out = NULL;
  if (item == NULL || cJSON_IsNull(item)) return SL_OK;
  if (!cJSON_IsArray(item)) return bad(err, what, name, "not an array");
  *out = item;
  return SL_OK;
}

/* Optional base64 bytes; missing reads as empty (a NUL-terminated buffer). */
static sl_status get_bytes(const cJSON *obj, const char *name, const char *what,
                           uint8_t **out, size_t *out_len, sl_err *err) {
  const cJSON *item = cJSON_GetObjectItemCaseSensitive(obj, name);
  if (item == NULL || cJSON_IsNull(item)) {
    *out = sl_xcalloc(1, 1);
    *out_len = 0;
    return SL_OK;
  }
  if (!cJSON_IsString(item) || item->valuestring == NULL)
    return bad(err, what, name, "not a string");
  if (sl_etcd_b64_decode(item->valuestring, strlen(item->valuestring), out,
                         out_len, NULL) != SL_OK)
    return bad(err, what, name, "not valid base64");
  return SL_OK;
}

static sl_status get_header_revision(const cJSON *obj, const char *what,
                                     int64_t *rev, sl_err *err) {
  const cJSON *header;
  sl_status st = get_object(obj, "header", what, &header, err);
  *rev = 0;
  if (st != SL_OK || header == NULL) return st;
  return get_int64(header, "revision", what, rev, err);
}

/* An error reply, either unary or stream-shaped, as a status + message. */
static sl_status error_reply(const cJSON *root, const cJSON *error, const char *what,
                             sl_err *err) {
  const cJSON *msg, *code;
  if (cJSON_IsObject(error)) { /* stream: {"error":{"grpc_code":..}} */
    msg = cJSON_GetObjectItemCaseSensitive(error, "message");
    code = cJSON_GetObjectItemCaseSensitive(error, "grpc_code");
  } else {
    msg = cJSON_GetObjectItemCaseSensitive(root, "message");
    if (!cJSON_IsString(msg)) msg = error;
    code = cJSON_GetObjectItemCaseSensitive(root, "code");
  }
  int c = (cJSON_IsNumber(code) && code->valuedouble >= 0 &&
           code->valuedouble <= 64) ? (int)code->valuedouble : 2;
  const char *text = (cJSON_IsString(msg) && msg->valuestring != NULL)
                         ? msg->valuestring : "(no message)";
  sl_status st = sl_status_from_grpc(c);
  if (st == SL_OK) st = SL_EINTERNAL; /* an error reply must not read as OK */
  return sl_err_set(err, st, "etcd %s: %s (code %d)", what, text, c);
}

/* A short printable copy of untrusted bytes, for error messages. */
static void printable(const char *body, size_t len, char *out, size_t cap) {
  size_t n = len < cap - 1 ? len : cap - 1;
  for (size_t i = 0; i < n; i++)
    out[i] = (body[i] >= 0x20 && body[i] < 0x7f) ? body[i] : '?';
  out[n] = '\0';
}

/* Parses the text to an object and turns an error reply into its status. */
static sl_status parse_root(const char *body, size_t len, const char *what,
                            cJSON **out, sl_err *err) {
  *out = NULL;
  if (body == NULL || len == 0)
    return sl_err_set(err, SL_EINTERNAL, "etcd %s: empty reply", what);
  cJSON *root = cJSON_ParseWithLength(body, len);
  if (root == NULL) {
    char snippet[64];
    printable(body, len, snippet, sizeof(snippet));
    return sl_err_set(err, SL_EINTERNAL, "etcd %s: reply is not JSON: %s", what,
                      snippet);
  }
  if (!cJSON_IsObject(root)) {
    cJSON_Delete(root);
    return sl_err_set(err, SL_EINTERNAL, "etcd %s: reply is not a JSON object", what);
  }
  const cJSON *error = cJSON_GetObjectItemCaseSensitive(root, "error");
  if (error != NULL && !cJSON_IsNull(error)) {
    sl_status st = error_reply(root, error, what, err);
    cJSON_Delete(root);
    return st;
  }
  *out = root;
  return SL_OK;
}

/* ---- kvs and range ---- */

static void kv_release(sl_etcd_kv *kv) {
  free(kv->key);
  free(kv->value);
  memset(kv, 0, sizeof(*kv));
}

static sl_status parse_kv(const cJSON *obj, const char *what, sl_etcd_kv *kv,
                          sl_err *err) {
  memset(kv, 0, sizeof(*kv));
  if (!cJSON_IsObject(obj)) return bad(err, what, "kv", "not an object");
  sl_status st = get_bytes(obj, "key", what, &kv->key, &kv->key_len, err);
  if (st == SL_OK) st = get_bytes(obj, "value", what, &kv->value, &kv->value_len, err);
  if (st == SL_OK) st = get_int64(obj, "create_revision", what, &kv->create_revision, err);
  if (st == SL_OK) st = get_int64(obj, "mod_revision", what, &kv->mod_revision, err);
  if (st == SL_OK) st = get_int64(obj, "version", what, &kv->version, err);
  if (st == SL_OK) st = get_int64(obj, "lease", what, &kv->lease, err);
  if (st != SL_OK) kv_release(kv);
  return st;
}

void sl_etcd_range_reply_release(sl_etcd_range_reply *r) {
  if (r == NULL) return;
  for (size_t i = 0; i < r->n; i++) kv_release(&r->kvs[i]);
  free(r->kvs);
  memset(r, 0, sizeof(*r));
}

/* Fills a range reply from an object holding header/kvs/more/count. */
static sl_status range_from(const cJSON *obj, const char *what,
                            sl_etcd_range_reply *out, sl_err *err) {
  memset(out, 0, sizeof(*out));
  const cJSON *kvs;
  sl_status st = get_header_revision(obj, what, &out->revision, err);
  if (st == SL_OK) st = get_bool(obj, "more", what, &out->more, err);
  if (st == SL_OK) st = get_int64(obj, "count", what, &out->count, err);
  if (st == SL_OK) st = get_array(obj, "kvs", what, &kvs, err);
  if (st != SL_OK || kvs == NULL) return st;
  size_t n = (size_t)cJSON_GetArraySize(kvs);
  out->kvs = sl_xcalloc(n ? n : 1, sizeof(sl_etcd_kv));
  const cJSON *item;
  cJSON_ArrayForEach(item, kvs) {
    st = parse_kv(item, what, &out->kvs[out->n], err);
    if (st != SL_OK) {
      sl_etcd_range_reply_release(out);
      return st;
    }
    out->n++;
  }
  return SL_OK;
}

sl_status sl_etcd_parse_range(const char *body, size_t len, const char *what,
                              sl_etcd_range_reply *out, sl_err *err) {
  cJSON *root;
  memset(out, 0, sizeof(*out));
  sl_status st = parse_root(body, len, what, &root, err);
  if (st != SL_OK) return st;
  st = range_from(root, what, out, err);
  cJSON_Delete(root);
  return st;
}

/* ---- txn ---- */

void sl_etcd_txn_reply_release(sl_etcd_txn_reply *r) {
  if (r == NULL) return;
  for (size_t i = 0; i < r->n_ops; i++)
    if (r->ops[i].type == SL_ETCD_OP_RANGE) sl_etcd_range_reply_release(&r->ops[i].range);
  free(r->ops);
  memset(r, 0, sizeof(*r));
}

static sl_status parse_op_reply(const cJSON *obj, const char *what,
                                sl_etcd_op_reply *op, sl_err *err) {
  memset(op, 0, sizeof(*op));
  if (!cJSON_IsObject(obj)) return bad(err, what, "responses[]", "not an object");
  const cJSON *r;
  sl_status st = get_object(obj, "response_range", what, &r, err);
  if (st != SL_OK) return st;
  if (r != NULL) {
    op->type = SL_ETCD_OP_RANGE;
    return range_from(r, what, &op->range, err);
  }
  if ((st = get_object(obj, "response_put", what, &r, err)) != SL_OK) return st;
  if (r != NULL) {
    op->type = SL_ETCD_OP_PUT;
    return SL_OK;
  }
  if ((st = get_object(obj, "response_delete_range", what, &r, err)) != SL_OK) return st;
  if (r != NULL) {
    op->type = SL_ETCD_OP_DELETE;
    return get_int64(r, "deleted", what, &op->deleted, err);
  }
  return bad(err, what, "responses[]", "no known response kind");
}

sl_status sl_etcd_parse_txn(const char *body, size_t len, const char *what,
                            sl_etcd_txn_reply *out, sl_err *err) {
  cJSON *root;
  memset(out, 0, sizeof(*out));
  sl_status st = parse_root(body, len, what, &root, err);
  if (st != SL_OK) return st;
  const cJSON *responses;
  st = get_header_revision(root, what, &out->revision, err);
  if (st == SL_OK) st = get_bool(root, "succeeded", what, &out->succeeded, err);
  if (st == SL_OK) st = get_array(root, "responses", what, &responses, err);
  if (st == SL_OK && responses != NULL) {
    size_t n = (size_t)cJSON_GetArraySize(responses);
    out->ops = sl_xcalloc(n ? n : 1, sizeof(sl_etcd_op_reply));
    const cJSON *item;
    cJSON_ArrayForEach(item, responses) {
      st = parse_op_reply(item, what, &out->ops[out->n_ops], err);
      if (st != SL_OK) break;
      out->n_ops++;
    }
  }
  if (st != SL_OK) sl_etcd_txn_reply_release(out);
  cJSON_Delete(root);
  return st;
}

/* ---- delete, header, lease ---- */

sl_status sl_etcd_parse_delete(const char *body, size_t len, const char *what,
                               sl_etcd_delete_reply *out, sl_err *err) {
  cJSON *root;
  memset(out, 0, sizeof(*out));
  sl_status st = parse_root(body, len, what, &root, err);
  if (st != SL_OK) return st;
  st = get_header_revision(root, what, &out->revision, err);
  if (st == SL_OK) st = get_int64(root, "deleted", what, &out->deleted, err);
  cJSON_Delete(root);
  return st;
}

sl_status sl_etcd_parse_header(const char *body, size_t len, const char *what,
                               int64_t *revision, sl_err *err) {
  cJSON *root;
  *revision = 0;
  sl_status st = parse_root(body, len, what, &root, err);
  if (st != SL_OK) return st;
  st = get_header_revision(root, what, revision, err);
  cJSON_Delete(root);
  return st;
}

sl_status sl_etcd_parse_lease(const char *body, size_t len, const char *what,
                              sl_etcd_lease_reply *out, sl_err *err) {
  cJSON *root;
  memset(out, 0, sizeof(*out));
  sl_status st = parse_root(body, len, what, &root, err);
  if (st != SL_OK) return st;
  /* keepalive is a stream RPC, so its one reply comes as {"result":{...}} */
  const cJSON *obj = root, *result;
  st = get_object(root, "result", what, &result, err);
  if (st == SL_OK && result != NULL) obj = result;
  if (st == SL_OK) st = get_header_revision(obj, what, &out->revision, err);
  if (st == SL_OK) st = get_int64(obj, "ID", what, &out->id, err);
  if (st == SL_OK) st = get_int64(obj, "TTL", what, &out->ttl, err);
  cJSON_Delete(root);
  return st;
}

/* ---- watch ---- */

void sl_etcd_watch_reply_release(sl_etcd_watch_reply *r) {
  if (r == NULL) return;
  for (size_t i = 0; i < r->n; i++) kv_release(&r->events[i].kv);
  free(r->events);
  free(r->cancel_reason);
  memset(r, 0, sizeof(*r));
}

static sl_status parse_event(const cJSON *obj, const char *what,
                             sl_etcd_event *ev, sl_err *err) {
  memset(ev, 0, sizeof(*ev));
  if (!cJSON_IsObject(obj)) return bad(err, what, "events[]", "not an object");
  const cJSON *type = cJSON_GetObjectItemCaseSensitive(obj, "type");
  if (type != NULL && !cJSON_IsNull(type)) {
    if (!cJSON_IsString(type) || type->valuestring == NULL)
      return bad(err, what, "events[].type", "not a string");
    if (strcmp(type->valuestring, "DELETE") == 0)
      ev->type = SL_ETCD_EVENT_DELETE;
    else if (strcmp(type->valuestring, "PUT") == 0)
      ev->type = SL_ETCD_EVENT_PUT;
    else
      return bad(err, what, "events[].type", "unknown event type");
  }
  const cJSON *kv;
  sl_status st = get_object(obj, "kv", what, &kv, err);
  if (st != SL_OK) return st;
  if (kv == NULL) return bad(err, what, "events[].kv", "missing");
  st = parse_kv(kv, what, &ev->kv, err);
  if (st == SL_OK && ev->kv.mod_revision <= 0) {
    kv_release(&ev->kv);
    return bad(err, what, "events[].kv.mod_revision", "missing or not positive");
  }
  return st;
}

sl_status sl_etcd_parse_watch(const char *body, size_t len, const char *what,
                              sl_etcd_watch_reply *out, sl_err *err) {
  cJSON *root;
  memset(out, 0, sizeof(*out));
  sl_status st = parse_root(body, len, what, &root, err);
  if (st != SL_OK) return st;
  const cJSON *result, *events, *reason;
  st = get_object(root, "result", what, &result, err);
  if (st == SL_OK && result == NULL) st = bad(err, what, "result", "missing");
  if (st == SL_OK) st = get_header_revision(result, what, &out->revision, err);
  if (st == SL_OK) st = get_bool(result, "created", what, &out->created, err);
  if (st == SL_OK) st = get_bool(result, "canceled", what, &out->canceled, err);
  if (st == SL_OK)
    st = get_int64(result, "compact_revision", what, &out->compact_revision, err);
  if (st == SL_OK) {
    reason = cJSON_GetObjectItemCaseSensitive(result, "cancel_reason");
    if (cJSON_IsString(reason) && reason->valuestring != NULL)
      out->cancel_reason = sl_xstrdup(reason->valuestring);
    st = get_array(result, "events", what, &events, err);
  }
  if (st == SL_OK && events != NULL) {
    size_t n = (size_t)cJSON_GetArraySize(events);
    out->events = sl_xcalloc(n ? n : 1, sizeof(sl_etcd_event));
    const cJSON *item;
    cJSON_ArrayForEach(item, events) {
      st = parse_event(item, what, &out->events[out->n], err);
      if (st != SL_OK) break;
      out->n++;
    }
  }
  if (st != SL_OK) sl_etcd_watch_reply_release(out);
  cJSON_Delete(root);
  return st;
}
