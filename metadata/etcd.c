#include "metadata/etcd.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/buf.h"
#include "common/clock.h"
#include "common/log.h"
#include "metadata/etcd_breaker.h"
#include "metadata/etcd_int.h"

#define MAX_IDLE_CONNS 16
#define MAX_REPLY_BYTES (256u << 20) /* a reply past this is refused */
#define BACKOFF_FIRST_MS 25
#define BACKOFF_MAX_MS 500

/* One pooled curl handle with its keep-alive connection and reply buffer. */
typedef struct conn {
  CURL *h;
  struct curl_slist *headers;
  sl_buf reply; /* body of the last transfer */
  bool too_big; /* the last reply passed MAX_REPLY_BYTES */
  struct conn *next; /* in sl_etcd.idle */
} conn;

struct sl_etcd {
  char **endpoints; /* base URLs without trailing '/' */
  size_t n_endpoints;
  sl_etcd_opts opts;
  size_t preferred; /* atomic: index of the endpoint to try first */
  sl_etcd_breaker breaker; /* fail-fast gate; has its own lock */
  pthread_mutex_t lock; /* guards idle, n_idle */
  conn *idle;
  size_t n_idle;
};

/* ---- shared internals ---- */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }
void sl_etcd_global_init_(void) { pthread_once(&curl_once, curl_init_once); }


size_t sl_etcd_endpoint_count_(const sl_etcd *c) { return c->n_endpoints; }
const char *sl_etcd_endpoint_(const sl_etcd *c, size_t i) { return c->endpoints[i]; }
const sl_etcd_opts *sl_etcd_opts_(const sl_etcd *c) { return &c->opts; }

size_t sl_etcd_preferred_(sl_etcd *c) {
  return __atomic_load_n(&c->preferred, __ATOMIC_RELAXED) % c->n_endpoints;
}

void sl_etcd_endpoint_failed_(sl_etcd *c, size_t i) {
  size_t expected = i;
  size_t next = (i + 1) % c->n_endpoints;
  /* Only the first thread to see endpoint i fail moves the preference. */
  if (__atomic_compare_exchange_n(&c->preferred, &expected, next, false,
                                  __ATOMIC_RELAXED, __ATOMIC_RELAXED) &&
      c->n_endpoints > 1)
    sl_log(SL_LOG_WARN, "event=etcd_failover from=%s to=%s", c->endpoints[i],
           c->endpoints[next]);
}

bool sl_etcd_setup_handle_(CURL *h, struct curl_slist **headers) {
  struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
  struct curl_slist *h2 = hdr ? curl_slist_append(hdr, "Expect:") : NULL;
  if (h2 == NULL) {
    curl_slist_free_all(hdr);
    return false;
  }
  *headers = h2;
  bool ok = curl_easy_setopt(h, CURLOPT_HTTPHEADER, h2) == CURLE_OK &&
            curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L) == CURLE_OK &&
            curl_easy_setopt(h, CURLOPT_PROXY, "") == CURLE_OK &&
            curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L) == CURLE_OK &&
            curl_easy_setopt(h, CURLOPT_TCP_KEEPIDLE, 10L) == CURLE_OK &&
            curl_easy_setopt(h, CURLOPT_TCP_KEEPINTVL, 5L) == CURLE_OK &&
            curl_easy_setopt(h, CURLOPT_TCP_NODELAY, 1L) == CURLE_OK;
  return ok;
}

const char *sl_etcd_key_text(const void *key, size_t len, char *buf, size_t cap) {
  const uint8_t *k = key;
  size_t o = 0;
  SL_ASSERT(cap >= 16);
  buf[o++] = '"';
  for (size_t i = 0; i < len; i++) {
    if (o + 8 >= cap) {
      memcpy(buf + o, "...", 3);
      o += 3;
      break;
    }
    if (k[i] >= 0x20 && k[i] < 0x7f && k[i] != '"' && k[i] != '\\')
      buf[o++] = (char)k[i];
    else
      o += (size_t)snprintf(buf + o, cap - o, "\\x%02x", k[i]);
  }
  buf[o++] = '"';
  buf[o] = '\0';
  return buf;
}

/* ---- create / destroy ---- */

static sl_status parse_endpoints(sl_etcd *c, const char *list, sl_err *err) {
  char *copy = sl_xstrdup(list), *save = NULL;
  size_t cap = 4;
  c->endpoints = sl_xcalloc(cap, sizeof(char *));
  for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
    while (*tok == ' ') tok++;
    size_t n = strlen(tok);
    while (n > 0 && (tok[n - 1] == '/' || tok[n - 1] == ' ')) tok[--n] = '\0';
    if ((strncmp(tok, "http://", 7) != 0 && strncmp(tok, "https://", 8) != 0) ||
        strlen(strstr(tok, "//") + 2) == 0) {
      sl_status st = sl_err_set(err, SL_EINVAL,
                                "etcd endpoint \"%s\": want http://host:port", tok);
      free(copy);
      return st;
    }
    if (c->n_endpoints == cap)
      c->endpoints = sl_xrealloc(c->endpoints, (cap *= 2) * sizeof(char *));
    c->endpoints[c->n_endpoints++] = sl_xstrdup(tok);
  }
  free(copy);
  if (c->n_endpoints == 0)
    return sl_err_set(err, SL_EINVAL, "etcd endpoints \"%s\": none given", list);
  return SL_OK;
}

sl_status sl_etcd_create(const char *endpoints, const sl_etcd_opts *opts,
                         sl_etcd **out, sl_err *err) {
  sl_etcd_opts def = SL_ETCD_OPTS_INIT;
  if (opts == NULL) opts = &def;
  if (endpoints == NULL)
    return sl_err_set(err, SL_EINVAL, "etcd endpoints: none given");
  if (opts->timeout_ms <= 0 || opts->connect_timeout_ms <= 0)
    return sl_err_set(err, SL_EINVAL, "etcd: timeouts must be positive");
  if (opts->down_ms < 0)
    return sl_err_set(err, SL_EINVAL, "etcd: down_ms must be >= 0 (0 turns fail-fast off)");
  sl_etcd_global_init_();
  sl_etcd *c = sl_xcalloc(1, sizeof(*c));
  c->opts = *opts;
  pthread_mutex_init(&c->lock, NULL);
  sl_status st = parse_endpoints(c, endpoints, err);
  if (st != SL_OK) {
    sl_etcd_destroy(c);
    return st;
  }
  sl_etcd_breaker_init(&c->breaker, c->n_endpoints, c->opts.down_ms);
  *out = c;
  return SL_OK;
}

static void conn_destroy(conn *cn) {
  if (cn == NULL) return;
  curl_easy_cleanup(cn->h);
  curl_slist_free_all(cn->headers);
  sl_buf_release(&cn->reply);
  free(cn);
}

void sl_etcd_destroy(sl_etcd *c) {
  if (c == NULL) return;
  while (c->idle != NULL) {
    conn *next = c->idle->next;
    conn_destroy(c->idle);
    c->idle = next;
  }
  /* A failed parse_endpoints leaves the gate uninitialised. */
  if (c->breaker.eps != NULL) sl_etcd_breaker_release(&c->breaker);
  for (size_t i = 0; i < c->n_endpoints; i++) free(c->endpoints[i]);
  free(c->endpoints);
  pthread_mutex_destroy(&c->lock);
  free(c);
}

/* ---- connection pool ---- */

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *arg) {
  conn *cn = arg;
  size_t n = size * nmemb;
  if (cn->reply.len + n > MAX_REPLY_BYTES) {
    cn->too_big = true;
    return 0; /* makes curl fail the transfer with CURLE_WRITE_ERROR */
  }
  sl_buf_append(&cn->reply, ptr, n);
  return n;
}

static conn *conn_get(sl_etcd *c) {
  pthread_mutex_lock(&c->lock);
  conn *cn = c->idle;
  if (cn != NULL) {
    c->idle = cn->next;
    c->n_idle--;
  }
  pthread_mutex_unlock(&c->lock);
  if (cn != NULL) return cn;
  cn = sl_xcalloc(1, sizeof(*cn));
  cn->h = curl_easy_init();
  SL_ASSERT(cn->h != NULL); /* only fails on out-of-memory */
  bool ok = sl_etcd_setup_handle_(cn->h, &cn->headers) &&
            curl_easy_setopt(cn->h, CURLOPT_WRITEFUNCTION, on_body) == CURLE_OK &&
            curl_easy_setopt(cn->h, CURLOPT_WRITEDATA, cn) == CURLE_OK;
  SL_ASSERT(ok);
  return cn;
}

static void conn_put(sl_etcd *c, conn *cn) {
  pthread_mutex_lock(&c->lock);
  if (c->n_idle < MAX_IDLE_CONNS) {
    cn->next = c->idle;
    c->idle = cn;
    c->n_idle++;
    cn = NULL;
  }
  pthread_mutex_unlock(&c->lock);
  conn_destroy(cn);
}

/* ---- one call with deadline, failover and retries ---- */

typedef enum xfer_kind {
  XFER_HTTP,    /* a complete HTTP reply arrived (any status) */
  XFER_UNSENT,  /* failed before the request left: always safe to retry */
  XFER_LOST,    /* failed after sending: a write may or may not have applied */
  XFER_TOO_BIG, /* reply larger than MAX_REPLY_BYTES */
} xfer_kind;

typedef struct xfer {
  xfer_kind kind;
  long http;           /* XFER_HTTP: status code */
  bool timed_out;      /* the failure was our deadline */
  bool connect_failed; /* no connection could be made: feeds the gate */
  char detail[CURL_ERROR_SIZE + 64];
} xfer;

static xfer perform(sl_etcd *c, conn *cn, size_t ep, const char *path,
                    const char *body, int64_t left_ms) {
  xfer x = {0};
  char url[1024];
  char errbuf[CURL_ERROR_SIZE] = "";
  snprintf(url, sizeof(url), "%s%s", c->endpoints[ep], path);
  long connect_ms = left_ms < c->opts.connect_timeout_ms ? (long)left_ms
                                                         : c->opts.connect_timeout_ms;
  sl_buf_reset(&cn->reply);
  cn->too_big = false;
  curl_easy_setopt(cn->h, CURLOPT_URL, url);
  curl_easy_setopt(cn->h, CURLOPT_POSTFIELDS, body);
  curl_easy_setopt(cn->h, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
  curl_easy_setopt(cn->h, CURLOPT_TIMEOUT_MS, (long)left_ms);
  curl_easy_setopt(cn->h, CURLOPT_CONNECTTIMEOUT_MS, connect_ms);
  curl_easy_setopt(cn->h, CURLOPT_ERRORBUFFER, errbuf);
  CURLcode rc = curl_easy_perform(cn->h);
  curl_easy_setopt(cn->h, CURLOPT_ERRORBUFFER, NULL);
  if (rc == CURLE_OK) {
    x.kind = XFER_HTTP;
    curl_easy_getinfo(cn->h, CURLINFO_RESPONSE_CODE, &x.http);
    return x;
  }
  long sent = 0;
  curl_easy_getinfo(cn->h, CURLINFO_REQUEST_SIZE, &sent);
  x.timed_out = rc == CURLE_OPERATION_TIMEDOUT;
  if (cn->too_big)
    x.kind = XFER_TOO_BIG;
  else if (rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST ||
           sent == 0)
    x.kind = XFER_UNSENT;
  else
    x.kind = XFER_LOST;
  /* A connect cut short by this call's own little time left says nothing
   * about the endpoint; a full connect timeout does. */
  x.connect_failed = x.kind == XFER_UNSENT &&
                     (!x.timed_out || connect_ms >= c->opts.connect_timeout_ms);
  snprintf(x.detail, sizeof(x.detail), "%s: %s", c->endpoints[ep],
           errbuf[0] ? errbuf : curl_easy_strerror(rc));
  return x;
}

/* Feeds one attempt to the fail-fast gate (invariant 1 of etcd_breaker.h)
 * and logs the gate's transitions. */
static void note_attempt(sl_etcd *c, size_t ep, const xfer *x) {
  int64_t now = sl_clock_mono_ms();
  if (x->connect_failed) {
    if (sl_etcd_breaker_failed(&c->breaker, ep, now, x->detail))
      sl_log(SL_LOG_WARN, "event=etcd_down endpoints=%zu fail_fast_ms=%d last=\"%s\"",
             c->n_endpoints, c->opts.down_ms, x->detail);
  } else if (x->kind == XFER_HTTP || x->kind == XFER_TOO_BIG) {
    if (sl_etcd_breaker_reached(&c->breaker, ep, now))
      sl_log(SL_LOG_WARN, "event=etcd_up endpoint=%s", c->endpoints[ep]);
  }
}

/* A non-200 reply as a status; etcd's JSON error when there is one. */
static sl_status http_error(conn *cn, long http, const char *what, sl_err *err) {
  int64_t rev;
  sl_status st = sl_etcd_parse_header(cn->reply.data, cn->reply.len, what, &rev, err);
  if (st == SL_OK || st == SL_EINTERNAL) {
    char snippet[80];
    size_t n = cn->reply.len < sizeof(snippet) - 1 ? cn->reply.len : sizeof(snippet) - 1;
    for (size_t i = 0; i < n; i++) {
      char ch = cn->reply.data[i];
      snippet[i] = (ch >= 0x20 && ch < 0x7f) ? ch : ' ';
    }
    snippet[n] = '\0';
    st = sl_err_set(err, http == 404 ? SL_EUNIMPL : SL_EINTERNAL,
                    "etcd %s: http %ld: %s", what, http, snippet);
  }
  return st;
}

/* What one call is doing: its request, deadline and latest failure. */
typedef struct attempt {
  const char *path, *body, *what;
  bool is_read;     /* safe to repeat (retry rule 2) */
  int64_t deadline; /* sl_clock_mono_ms() clock */
  sl_status last_st; /* the latest retryable failure ... */
  char last[sizeof(((xfer *)0)->detail)]; /* ... and its text */
} attempt;

/*
 * One pass over the endpoints, preferred first, following the retry rules
 * in etcd.h. Returns true when the call is decided: *st is SL_OK with the
 * reply in cn->reply.data, or a final error set in err. Returns false when every
 * endpoint failed in a retryable way (a->last_st, a->last) or the deadline
 * came.
 */
static bool one_round(sl_etcd *c, conn *cn, attempt *a, sl_status *st, sl_err *err) {
  size_t first = sl_etcd_preferred_(c);
  for (size_t k = 0; k < c->n_endpoints; k++) {
    size_t ep = (first + k) % c->n_endpoints;
    int64_t left = a->deadline - sl_clock_mono_ms();
    if (left <= 0) return false;
    xfer x = perform(c, cn, ep, a->path, a->body, left);
    note_attempt(c, ep, &x);
    if (x.kind == XFER_HTTP && x.http == 200) {
      *st = SL_OK;
      return true;
    }
    if (x.kind == XFER_HTTP) {
      sl_err e = SL_ERR_INIT;
      sl_status hst = http_error(cn, x.http, a->what, &e);
      bool retry = hst == SL_EUNAVAIL && (a->is_read || strstr(e.msg, "no leader"));
      if (!retry) {
        *st = sl_err_set(err, hst, "%s", e.msg);
        return true;
      }
      a->last_st = hst;
      snprintf(a->last, sizeof(a->last), "%s", e.msg);
      sl_etcd_endpoint_failed_(c, ep);
      continue;
    }
    if (x.kind == XFER_TOO_BIG) {
      *st = sl_err_set(err, SL_ETOOBIG, "etcd %s: reply larger than %u bytes", a->what,
                       MAX_REPLY_BYTES);
      return true;
    }
    if (x.kind == XFER_LOST && !a->is_read) {
      *st = sl_err_set(err, x.timed_out ? SL_ETIMEDOUT : SL_EUNAVAIL,
                       "etcd %s: outcome unknown, connection lost after sending: %s",
                       a->what, x.detail);
      return true;
    }
    a->last_st = (x.kind == XFER_LOST && x.timed_out) ? SL_ETIMEDOUT : SL_EUNAVAIL;
    snprintf(a->last, sizeof(a->last), "%s", x.detail);
    sl_etcd_endpoint_failed_(c, ep);
  }
  return false;
}

/*
 * POSTs `body` to `path` until a 200 reply lands in cn->reply.data, or the call
 * fails: rounds over the endpoints with backoff in between, until the
 * deadline, or at once while the fail-fast gate says etcd is down.
 */
static sl_status call(sl_etcd *c, conn *cn, int64_t caller_deadline, const char *path,
                      const char *body, bool is_read, const char *what, sl_err *err) {
  int64_t start = sl_clock_mono_ms();
  attempt a = {path, body, what, is_read, start + c->opts.timeout_ms, SL_EUNAVAIL,
               "no attempt"};
  bool callers = caller_deadline < a.deadline;
  if (callers) a.deadline = caller_deadline;
  int64_t budget = a.deadline - start;
  if (budget <= 0)
    return sl_err_set(err, SL_ETIMEDOUT,
                      "etcd %s: the caller's deadline passed before the call", what);
  int backoff = BACKOFF_FIRST_MS;
  bool probe;
  char why[512];
  sl_status st;
  /* The first round goes ahead unless etcd is known down and another call
   * is already probing; later rounds only while it is not known down. */
  if (!sl_etcd_breaker_admit(&c->breaker, start, true, &probe, why, sizeof(why)))
    return sl_err_set(err, SL_EUNAVAIL, "etcd %s: %s", what, why);
  for (;;) {
    bool decided = one_round(c, cn, &a, &st, err);
    if (probe) sl_etcd_breaker_probe_done(&c->breaker);
    if (decided) return st;
    if (!sl_etcd_breaker_admit(&c->breaker, sl_clock_mono_ms(), false, &probe, why,
                               sizeof(why)))
      return sl_err_set(err, SL_EUNAVAIL, "etcd %s: %s", what, why);
    int64_t left = a.deadline - sl_clock_mono_ms();
    if (left <= 0) break;
    struct timespec ts = {0, (long)(backoff < left ? backoff : left) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
    backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
  }
  return sl_err_set(err, a.last_st, "etcd %s: %s within %" PRId64 " ms%s: %s", what,
                    a.last_st == SL_ETIMEDOUT ? "no reply" : "unreachable", budget,
                    callers ? " (the caller's deadline)" : "", a.last);
}

/* Runs one call: serialises req, calls, lets `parse` read the reply. */
typedef sl_status (*parse_fn)(const char *body, size_t len, const char *what,
                              void *out, sl_err *err);

static sl_status run(sl_etcd *c, int64_t deadline_ms, const char *path, cJSON *req,
                     bool is_read, const char *what, parse_fn parse, void *out,
                     sl_err *err) {
  char *body = cJSON_PrintUnformatted(req);
  SL_ASSERT(body != NULL); /* out of memory */
  conn *cn = conn_get(c);
  sl_status st = call(c, cn, deadline_ms, path, body, is_read, what, err);
  if (st == SL_OK) st = parse(cn->reply.data, cn->reply.len, what, out, err);
  conn_put(c, cn);
  cJSON_free(body);
  return st;
}

/* ---- typed calls ---- */

static cJSON *new_object(void) {
  cJSON *o = cJSON_CreateObject();
  SL_ASSERT(o != NULL); /* out of memory */
  return o;
}

static void add_string(cJSON *o, const char *name, const char *value) {
  bool ok = cJSON_AddStringToObject(o, name, value) != NULL;
  SL_ASSERT(ok); /* out of memory */
}

static void add_bool(cJSON *o, const char *name, bool value) {
  bool ok = cJSON_AddBoolToObject(o, name, value) != NULL;
  SL_ASSERT(ok); /* out of memory */
}

static void add_item(cJSON *o, const char *name, cJSON *item) {
  bool ok = cJSON_AddItemToObject(o, name, item);
  SL_ASSERT(ok); /* out of memory */
}

/* The body of a RangeRequest / PutRequest / DeleteRangeRequest. */
static cJSON *op_body(const sl_etcd_op *op) {
  cJSON *o = new_object();
  sl_etcd_json_add_bytes(o, "key", op->key, op->key_len);
  switch (op->type) {
    case SL_ETCD_OP_RANGE:
      if (op->range_end != NULL)
        sl_etcd_json_add_bytes(o, "range_end", op->range_end, op->range_end_len);
      if (op->limit > 0) sl_etcd_json_add_int64(o, "limit", op->limit);
      if (op->revision > 0) sl_etcd_json_add_int64(o, "revision", op->revision);
      break;
    case SL_ETCD_OP_PUT:
      sl_etcd_json_add_bytes(o, "value", op->value, op->value_len);
      if (op->lease != 0) sl_etcd_json_add_int64(o, "lease", op->lease);
      break;
    case SL_ETCD_OP_DELETE:
      if (op->range_end != NULL)
        sl_etcd_json_add_bytes(o, "range_end", op->range_end, op->range_end_len);
      break;
  }
  return o;
}

static const char *op_field(sl_etcd_op_type t) {
  switch (t) {
    case SL_ETCD_OP_RANGE: return "request_range";
    case SL_ETCD_OP_PUT: return "request_put";
    case SL_ETCD_OP_DELETE: return "request_delete_range";
  }
  return "request_range";
}

static cJSON *ops_array(const sl_etcd_op *ops, size_t n) {
  cJSON *arr = cJSON_CreateArray();
  SL_ASSERT(arr != NULL);
  for (size_t i = 0; i < n; i++) {
    cJSON *wrap = new_object();
    add_item(wrap, op_field(ops[i].type), op_body(&ops[i]));
    bool ok = cJSON_AddItemToArray(arr, wrap);
    SL_ASSERT(ok);
  }
  return arr;
}

static const char *const target_names[] = {"VERSION", "CREATE", "MOD", "LEASE"};
static const char *const target_fields[] = {"version", "create_revision",
                                             "mod_revision", "lease"};
static const char *const result_names[] = {"EQUAL", "GREATER", "LESS", "NOT_EQUAL"};

static cJSON *cmps_array(const sl_etcd_cmp *cmps, size_t n) {
  cJSON *arr = cJSON_CreateArray();
  SL_ASSERT(arr != NULL);
  for (size_t i = 0; i < n; i++) {
    cJSON *o = new_object();
    sl_etcd_json_add_bytes(o, "key", cmps[i].key, cmps[i].key_len);
    add_string(o, "target", target_names[cmps[i].target]);
    add_string(o, "result", result_names[cmps[i].result]);
    sl_etcd_json_add_int64(o, target_fields[cmps[i].target], cmps[i].value);
    bool ok = cJSON_AddItemToArray(arr, o);
    SL_ASSERT(ok);
  }
  return arr;
}

static sl_status parse_range_cb(const char *b, size_t n, const char *what,
                                void *out, sl_err *err) {
  return sl_etcd_parse_range(b, n, what, out, err);
}
static sl_status parse_txn_cb(const char *b, size_t n, const char *what,
                              void *out, sl_err *err) {
  return sl_etcd_parse_txn(b, n, what, out, err);
}
static sl_status parse_delete_cb(const char *b, size_t n, const char *what,
                                 void *out, sl_err *err) {
  return sl_etcd_parse_delete(b, n, what, out, err);
}
static sl_status parse_lease_cb(const char *b, size_t n, const char *what,
                                void *out, sl_err *err) {
  return sl_etcd_parse_lease(b, n, what, out, err);
}
static sl_status parse_header_cb(const char *b, size_t n, const char *what,
                                 void *out, sl_err *err) {
  return sl_etcd_parse_header(b, n, what, out, err);
}

#define WHAT_MAX 160

static const char *what_key(char *buf, const char *verb, const void *key, size_t len) {
  char k[WHAT_MAX - 24];
  snprintf(buf, WHAT_MAX, "%s %s", verb, sl_etcd_key_text(key, len, k, sizeof(k)));
  return buf;
}

sl_status sl_etcd_range(sl_etcd *c, int64_t deadline_ms, const void *key, size_t key_len,
                        const void *range_end, size_t range_end_len,
                        int64_t limit, int64_t revision, sl_etcd_range_reply *out,
                        sl_err *err) {
  char what[WHAT_MAX];
  sl_etcd_op op = {.type = SL_ETCD_OP_RANGE, .key = key, .key_len = key_len,
                   .range_end = range_end, .range_end_len = range_end_len,
                   .limit = limit, .revision = revision};
  cJSON *req = op_body(&op);
  sl_status st = run(c, deadline_ms, "/v3/kv/range", req, true,
                     what_key(what, "range", key, key_len), parse_range_cb, out, err);
  cJSON_Delete(req);
  return st;
}

sl_status sl_etcd_put(sl_etcd *c, int64_t deadline_ms, const void *key, size_t key_len,
                      const void *value, size_t value_len, int64_t lease,
                      int64_t *revision, sl_err *err) {
  char what[WHAT_MAX];
  int64_t rev = 0;
  sl_etcd_op op = {.type = SL_ETCD_OP_PUT, .key = key, .key_len = key_len,
                   .value = value, .value_len = value_len, .lease = lease};
  cJSON *req = op_body(&op);
  sl_status st = run(c, deadline_ms, "/v3/kv/put", req, false,
                     what_key(what, "put", key, key_len), parse_header_cb, &rev, err);
  cJSON_Delete(req);
  if (st == SL_OK && revision != NULL) *revision = rev;
  return st;
}

sl_status sl_etcd_delete(sl_etcd *c, int64_t deadline_ms, const void *key, size_t key_len,
                         const void *range_end, size_t range_end_len,
                         sl_etcd_delete_reply *out, sl_err *err) {
  char what[WHAT_MAX];
  sl_etcd_op op = {.type = SL_ETCD_OP_DELETE, .key = key, .key_len = key_len,
                   .range_end = range_end, .range_end_len = range_end_len};
  cJSON *req = op_body(&op);
  sl_status st = run(c, deadline_ms, "/v3/kv/deleterange", req, false,
                     what_key(what, "delete", key, key_len), parse_delete_cb, out, err);
  cJSON_Delete(req);
  return st;
}

sl_status sl_etcd_txn(sl_etcd *c, int64_t deadline_ms, const sl_etcd_cmp *cmps,
                      size_t n_cmps, const sl_etcd_op *success, size_t n_success,
                      const sl_etcd_op *failure, size_t n_failure,
                      sl_etcd_txn_reply *out, sl_err *err) {
  char what[WHAT_MAX];
  bool is_read = true;
  for (size_t i = 0; i < n_success; i++) is_read &= success[i].type == SL_ETCD_OP_RANGE;
  for (size_t i = 0; i < n_failure; i++) is_read &= failure[i].type == SL_ETCD_OP_RANGE;
  const sl_etcd_op *first = n_success ? success : n_failure ? failure : NULL;
  if (n_cmps > 0)
    what_key(what, "txn", cmps[0].key, cmps[0].key_len);
  else if (first != NULL)
    what_key(what, "txn", first->key, first->key_len);
  else
    snprintf(what, sizeof(what), "txn");
  cJSON *req = new_object();
  add_item(req, "compare", cmps_array(cmps, n_cmps));
  add_item(req, "success", ops_array(success, n_success));
  add_item(req, "failure", ops_array(failure, n_failure));
  sl_status st =
      run(c, deadline_ms, "/v3/kv/txn", req, is_read, what, parse_txn_cb, out, err);
  cJSON_Delete(req);
  return st;
}

sl_status sl_etcd_lease_grant(sl_etcd *c, int64_t deadline_ms, int64_t ttl_s,
                              sl_etcd_lease_reply *out, sl_err *err) {
  char what[WHAT_MAX];
  snprintf(what, sizeof(what), "lease grant ttl=%" PRId64 "s", ttl_s);
  cJSON *req = new_object();
  sl_etcd_json_add_int64(req, "TTL", ttl_s);
  sl_status st =
      run(c, deadline_ms, "/v3/lease/grant", req, true, what, parse_lease_cb, out, err);
  cJSON_Delete(req);
  if (st == SL_OK && (out->id == 0 || out->ttl <= 0))
    st = sl_err_set(err, SL_EINTERNAL, "etcd %s: reply has no lease id or ttl", what);
  return st;
}

sl_status sl_etcd_lease_keepalive(sl_etcd *c, int64_t deadline_ms, int64_t id,
                                  sl_etcd_lease_reply *out, sl_err *err) {
  char what[WHAT_MAX];
  snprintf(what, sizeof(what), "lease %" PRId64 " keepalive", id);
  cJSON *req = new_object();
  sl_etcd_json_add_int64(req, "ID", id);
  sl_status st =
      run(c, deadline_ms, "/v3/lease/keepalive", req, true, what, parse_lease_cb, out, err);
  cJSON_Delete(req);
  /* A lapsed lease gets a reply without TTL rather than an error. */
  if (st == SL_OK && out->ttl <= 0)
    st = sl_err_set(err, SL_ENOTFOUND, "lease %" PRId64 ": not found (expired or revoked)",
                    id);
  return st;
}

sl_status sl_etcd_lease_revoke(sl_etcd *c, int64_t deadline_ms, int64_t id, sl_err *err) {
  char what[WHAT_MAX];
  int64_t rev;
  snprintf(what, sizeof(what), "lease %" PRId64 " revoke", id);
  cJSON *req = new_object();
  sl_etcd_json_add_int64(req, "ID", id);
  sl_status st =
      run(c, deadline_ms, "/v3/lease/revoke", req, false, what, parse_header_cb, &rev, err);
  cJSON_Delete(req);
  return st;
}

sl_status sl_etcd_compact(sl_etcd *c, int64_t deadline_ms, int64_t revision, sl_err *err) {
  char what[WHAT_MAX];
  int64_t rev;
  snprintf(what, sizeof(what), "compact at %" PRId64, revision);
  cJSON *req = new_object();
  sl_etcd_json_add_int64(req, "revision", revision);
  add_bool(req, "physical", true);
  sl_status st = run(c, deadline_ms, "/v3/kv/compaction", req, false, what,
                     parse_header_cb, &rev, err);
  cJSON_Delete(req);
  return st;
}

bool sl_etcd_failing_fast(sl_etcd *c) {
  return sl_etcd_breaker_is_open(&c->breaker, sl_clock_mono_ms());
}

sl_status sl_etcd_revision(sl_etcd *c, int64_t deadline_ms, int64_t *revision,
                           sl_err *err) {
  /* The header of any linearizable read carries the current revision; a
   * one-key, count-only range is the cheapest. */
  cJSON *req = new_object();
  sl_etcd_json_add_bytes(req, "key", "\0", 1);
  add_bool(req, "count_only", true);
  sl_etcd_range_reply r;
  sl_status st =
      run(c, deadline_ms, "/v3/kv/range", req, true, "revision", parse_range_cb, &r, err);
  cJSON_Delete(req);
  if (st == SL_OK) {
    *revision = r.revision;
    sl_etcd_range_reply_release(&r);
  }
  return st;
}
