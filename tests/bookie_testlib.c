#include "tests/bookie_testlib.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "common/clock.h"
#include "common/crc32c.h"
#include "tests/proc.h"

sl_cluster *sl_bktest_cluster(const char *name, int bookies,
                              const char *const *bookie_args) {
  sl_cluster_opts o = SL_CLUSTER_OPTS_INIT;
  o.metadata = 1;
  o.local_store = true;
  o.bookies = bookies;
  o.brokers = 0;
  o.name = name;
  o.bookie_args = bookie_args;
  sl_cluster *c = NULL;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_cluster_start(&o, &c, &err);
  if (st != SL_OK) fail_msg("cluster: %s", sl_err_msg(&err, st));
  return c;
}

void sl_bktest_check_log_clean(const char *log_path) {
  FILE *f = fopen(log_path, "r");
  if (f == NULL) fail_msg("%s: cannot open", log_path);
  char line[4096];
  while (fgets(line, sizeof(line), f) != NULL) {
    if (strstr(line, "AddressSanitizer") || strstr(line, "LeakSanitizer") ||
        strstr(line, "runtime error:")) {
      fclose(f);
      fail_msg("%s: sanitizer report: %s", log_path, line);
    }
  }
  fclose(f);
}

void sl_bktest_cluster_destroy(sl_cluster *c) {
  sl_err err = SL_ERR_INIT;
  for (int i = 0; i < sl_cluster_count(c, SL_NODE_BOOKIE); i++) {
    if (sl_cluster_running(c, SL_NODE_BOOKIE, i))
      assert_int_equal(sl_cluster_stop_node(c, SL_NODE_BOOKIE, i, &err), SL_OK);
    sl_bktest_check_log_clean(sl_cluster_log(c, SL_NODE_BOOKIE, i));
  }
  sl_cluster_destroy(c);
}

sl_rpc_channel *sl_bktest_channel(const char *addr) {
  sl_rpc_channel_opts co = {.target = addr, .max_message_bytes = 64u << 20};
  sl_rpc_channel *ch = NULL;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_rpc_channel_create(&co, &ch, &err);
  if (st != SL_OK) fail_msg("channel %s: %s", addr, sl_err_msg(&err, st));
  return ch;
}

sl_rpc_channel *sl_bktest_bookie_channel(const sl_cluster *c, int i) {
  return sl_bktest_channel(sl_cluster_addr(c, SL_NODE_BOOKIE, i));
}

void sl_bktest_finish(sl_cluster *c, sl_rpc_channel *ch) {
  sl_rpc_channel_destroy(ch);
  sl_bktest_cluster_destroy(c);
}

static uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

uint8_t *sl_bktest_payload(uint64_t ledger, int64_t entry, uint32_t max_len,
                           uint32_t *len) {
  uint64_t h = mix(ledger * 0x100000001b3ull ^ mix((uint64_t)entry));
  uint64_t h2 = mix(h);
  uint32_t n;
  if (max_len > 0) {
    n = (uint32_t)(h2 % ((uint64_t)max_len + 1));
  } else {
    uint64_t kind = h % 64;
    n = kind == 0 ? 0 : kind == 1 ? (uint32_t)(h2 % (200u << 10))
                                  : (uint32_t)(h2 % (16u << 10));
  }
  uint8_t *buf = malloc(n + 1u);
  uint64_t s = h2 | 1;
  for (uint32_t i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    buf[i] = (uint8_t)s;
  }
  *len = n;
  return buf;
}

char *sl_bktest_password(uint64_t ledger, char *buf, size_t n) {
  snprintf(buf, n, "ledger-%llu", (unsigned long long)ledger);
  return buf;
}

void sl_bktest_add_req(Sluice__V1__AddEntryRequest *r, uint64_t ledger, int64_t entry,
                       uint32_t max_len, uint64_t epoch) {
  sluice__v1__add_entry_request__init(r);
  uint32_t len;
  uint8_t *p = sl_bktest_payload(ledger, entry, max_len, &len);
  /* The password lives after the payload, so one free releases both. */
  p = realloc(p, (size_t)len + SL_BKTEST_PASSWORD_MAX);
  if (p == NULL) fail_msg("out of memory");
  char *pw = sl_bktest_password(ledger, (char *)p + len, SL_BKTEST_PASSWORD_MAX);
  r->ledger_id = ledger;
  r->entry_id = entry;
  r->lac = entry - 1;
  r->payload.data = p;
  r->payload.len = len;
  r->password.data = (uint8_t *)pw;
  r->password.len = strlen(pw);
  r->crc32c = sl_entry_crc(ledger, entry, p, len);
  r->epoch = epoch;
  r->tag = (uint64_t)entry;
}

int sl_bktest_add(sl_rpc_channel *ch, const Sluice__V1__AddEntryRequest *r, char *error,
                  size_t n) {
  sl_rpc_stream *s = NULL;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_bookie_service_add_entry_open(ch, NULL, &s, &err);
  if (st != SL_OK) fail_msg("AddEntry open: %s", sl_err_msg(&err, st));
  st = sl_bookie_service_add_entry_send(s, r, 10000, &err);
  if (st != SL_OK) fail_msg("AddEntry send: %s", sl_err_msg(&err, st));
  Sluice__V1__AddEntryResponse *a = NULL;
  st = sl_bookie_service_add_entry_recv(s, &a, 10000, &err);
  if (st != SL_OK || a == NULL) fail_msg("AddEntry recv: %s", sl_err_msg(&err, st));
  int code = a->code;
  if (error != NULL) snprintf(error, n, "%s", a->error);
  protobuf_c_message_free_unpacked(&a->base, NULL);
  sl_rpc_stream_destroy(s);
  return code;
}

void sl_bktest_write(sl_rpc_channel *ch, uint64_t ledger, int64_t from, int64_t to,
                     uint32_t max_len, uint64_t epoch) {
  sl_rpc_stream *s = NULL;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_bookie_service_add_entry_open(ch, NULL, &s, &err);
  if (st != SL_OK) fail_msg("AddEntry open: %s", sl_err_msg(&err, st));
  for (int64_t e = from; e < to; e++) {
    Sluice__V1__AddEntryRequest r;
    sl_bktest_add_req(&r, ledger, e, max_len, epoch);
    st = sl_bookie_service_add_entry_send(s, &r, 10000, &err);
    free(r.payload.data);
    if (st != SL_OK) fail_msg("AddEntry send: %s", sl_err_msg(&err, st));
  }
  assert_int_equal(sl_rpc_stream_close_send(s, &err), SL_OK);
  for (int64_t i = from; i < to; i++) {
    Sluice__V1__AddEntryResponse *a = NULL;
    st = sl_bookie_service_add_entry_recv(s, &a, 10000, &err);
    if (st != SL_OK || a == NULL) fail_msg("AddEntry recv: %s", sl_err_msg(&err, st));
    if (a->code != 0)
      fail_msg("ledger %llu entry %lld: code %d: %s", (unsigned long long)a->ledger_id,
               (long long)a->entry_id, a->code, a->error);
    protobuf_c_message_free_unpacked(&a->base, NULL);
  }
  sl_rpc_stream_destroy(s);
}

sl_status sl_bktest_read_pw(sl_rpc_channel *ch, uint64_t ledger, int64_t entry, bool fence,
                            uint64_t epoch, const char *password,
                            Sluice__V1__ReadEntryResponse **out, sl_err *err) {
  Sluice__V1__ReadEntryRequest r = SLUICE__V1__READ_ENTRY_REQUEST__INIT;
  r.ledger_id = ledger;
  r.entry_id = entry;
  r.fence = fence;
  r.epoch = epoch;
  if (password != NULL) {
    r.password.data = (uint8_t *)password;
    r.password.len = strlen(password);
  }
  *out = NULL;
  return sl_bookie_service_read_entry(ch, &r, out, NULL, err);
}

sl_status sl_bktest_read(sl_rpc_channel *ch, uint64_t ledger, int64_t entry, bool fence,
                         uint64_t epoch, Sluice__V1__ReadEntryResponse **out, sl_err *err) {
  char pw[SL_BKTEST_PASSWORD_MAX];
  return sl_bktest_read_pw(ch, ledger, entry, fence, epoch,
                           fence ? sl_bktest_password(ledger, pw, sizeof(pw)) : NULL, out,
                           err);
}

void sl_bktest_check_entry(sl_rpc_channel *ch, uint64_t ledger, int64_t entry,
                           uint32_t max_len) {
  Sluice__V1__ReadEntryResponse *r = NULL;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_bktest_read(ch, ledger, entry, false, 0, &r, &err);
  if (st != SL_OK)
    fail_msg("read ledger %llu entry %lld: %s", (unsigned long long)ledger,
             (long long)entry, sl_err_msg(&err, st));
  if (!r->found)
    fail_msg("read ledger %llu entry %lld: not found", (unsigned long long)ledger,
             (long long)entry);
  uint32_t len;
  uint8_t *want = sl_bktest_payload(ledger, entry, max_len, &len);
  if (r->payload.len != len || (len > 0 && memcmp(r->payload.data, want, len) != 0))
    fail_msg("ledger %llu entry %lld: %zu bytes read, not the %u written",
             (unsigned long long)ledger, (long long)entry, r->payload.len, len);
  if (r->crc32c != sl_entry_crc(ledger, entry, want, len) || r->entry_id != entry)
    fail_msg("ledger %llu entry %lld: bad crc or id", (unsigned long long)ledger,
             (long long)entry);
  free(want);
  protobuf_c_message_free_unpacked(&r->base, NULL);
}

/* Reads in flight for sl_bktest_check_many; `mu` guards all of it. */
typedef struct many {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int inflight;
  uint32_t max_len;
  char failure[512];
} many;

typedef struct one_read {
  many *m;
  sl_bktest_item item;
} one_read;

/* Channel thread: checks one answer. */
static void on_read(sl_status st, const char *details, ProtobufCMessage *resp, void *arg) {
  one_read *o = arg;
  many *m = o->m;
  char why[300] = "";
  Sluice__V1__ReadEntryResponse *r = (Sluice__V1__ReadEntryResponse *)resp;
  bool absent = st == SL_ENOTFOUND || (st == SL_OK && !r->found);
  if (absent && o->item.may_be_absent) {
    /* fine: never acked, never stored */
  } else if (absent) {
    snprintf(why, sizeof(why), "not found");
  } else if (st != SL_OK) {
    snprintf(why, sizeof(why), "%s", details ? details : sl_status_str(st));
  } else {
    uint32_t len;
    uint8_t *want = sl_bktest_payload(o->item.ledger, o->item.entry, m->max_len, &len);
    if (r->payload.len != len || (len > 0 && memcmp(r->payload.data, want, len) != 0))
      snprintf(why, sizeof(why), "%zu bytes read, not the %u written", r->payload.len, len);
    else if (r->crc32c != sl_entry_crc(o->item.ledger, o->item.entry, want, len) ||
             r->entry_id != o->item.entry)
      snprintf(why, sizeof(why), "bad crc or entry id");
    free(want);
  }
  if (resp != NULL) protobuf_c_message_free_unpacked(resp, NULL);
  pthread_mutex_lock(&m->mu);
  if (why[0] != '\0' && m->failure[0] == '\0')
    snprintf(m->failure, sizeof(m->failure), "ledger %llu entry %lld: %s",
             (unsigned long long)o->item.ledger, (long long)o->item.entry, why);
  m->inflight--;
  pthread_cond_broadcast(&m->cv);
  pthread_mutex_unlock(&m->mu);
  free(o);
}

void sl_bktest_check_many(sl_rpc_channel *ch, const sl_bktest_item *items, size_t n,
                          uint32_t max_len) {
  many m = {.max_len = max_len};
  pthread_mutex_init(&m.mu, NULL);
  pthread_cond_init(&m.cv, NULL);
  sl_rpc_call_opts opts = {.timeout_ms = 30000};
  for (size_t i = 0; i < n; i++) {
    pthread_mutex_lock(&m.mu);
    while (m.inflight >= 32) pthread_cond_wait(&m.cv, &m.mu);
    m.inflight++;
    pthread_mutex_unlock(&m.mu);
    one_read *o = malloc(sizeof(*o));
    o->m = &m;
    o->item = items[i];
    Sluice__V1__ReadEntryRequest q = SLUICE__V1__READ_ENTRY_REQUEST__INIT;
    q.ledger_id = items[i].ledger;
    q.entry_id = items[i].entry;
    sl_err err = SL_ERR_INIT;
    sl_status st = sl_bookie_service_read_entry_async(ch, &q, &opts, on_read, o, &err);
    if (st != SL_OK) fail_msg("ReadEntry: %s", sl_err_msg(&err, st));
  }
  pthread_mutex_lock(&m.mu);
  while (m.inflight > 0) pthread_cond_wait(&m.cv, &m.mu);
  pthread_mutex_unlock(&m.mu);
  pthread_mutex_destroy(&m.mu);
  pthread_cond_destroy(&m.cv);
  if (m.failure[0] != '\0') fail_msg("%s", m.failure);
}

Sluice__V1__GetInfoResponse *sl_bktest_info(sl_rpc_channel *ch) {
  Sluice__V1__GetInfoRequest q = SLUICE__V1__GET_INFO_REQUEST__INIT;
  Sluice__V1__GetInfoResponse *r = NULL;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_bookie_service_get_info(ch, &q, &r, NULL, &err);
  if (st != SL_OK) fail_msg("GetInfo: %s", sl_err_msg(&err, st));
  return r;
}

bool sl_bktest_poll(bool (*pred)(void *arg), void *arg, int timeout_ms) {
  long long deadline = sl_clock_mono_ms() + timeout_ms;
  for (;;) {
    if (pred(arg)) return true;
    if (sl_clock_mono_ms() > deadline) return false;
    struct timespec ts = {0, 5 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
}

const char *sl_bktest_data_dir(const sl_cluster *c, int i) {
  static char buf[4096];
  snprintf(buf, sizeof(buf), "%s/%s", sl_cluster_dir(c),
           sl_cluster_id(c, SL_NODE_BOOKIE, i));
  return buf;
}
