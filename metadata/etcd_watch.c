#include "metadata/etcd_watch.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/buf.h"
#include "common/log.h"
#include "metadata/etcd_int.h"

#define MAX_LINE_BYTES (256u << 20)
#define BACKOFF_FIRST_MS 25
#define BACKOFF_MAX_MS 1000

typedef enum watch_state {
  STARTING, /* no "created" reply yet */
  RUNNING,  /* confirmed by etcd */
  DONE,     /* compaction reported or stop requested; thread exits */
} watch_state;

struct sl_etcd_watch {
  sl_etcd *client;
  uint8_t *key, *range_end; /* owned copies */
  size_t key_len, range_end_len;
  bool has_range_end;
  sl_etcd_watch_cb cb;
  void *arg;
  pthread_t thread;

  /* Owned by the watch thread. */
  int64_t next_rev; /* next revision to ask for; 0 until pinned */
  CURLM *multi;
  CURL *easy;
  struct curl_slist *headers;
  sl_buf line; /* bytes of the current, unfinished line */
  bool abort_stream; /* set by the write callback to end this stream */
  bool compacted;    /* compaction delivered; the watch is over */
  sl_status stream_st; /* why the last stream ended, for logs and start */
  sl_err stream_err;

  pthread_mutex_t lock; /* guards state, stop, start_st, start_err */
  pthread_cond_t cond;
  watch_state state;
  bool stop;
  sl_status start_st;
  sl_err start_err;
};

static void set_state(sl_etcd_watch *w, watch_state st) {
  pthread_mutex_lock(&w->lock);
  if (w->state != DONE) w->state = st;
  pthread_cond_broadcast(&w->cond);
  pthread_mutex_unlock(&w->lock);
}

static bool stopping(sl_etcd_watch *w) {
  pthread_mutex_lock(&w->lock);
  bool s = w->stop;
  pthread_mutex_unlock(&w->lock);
  return s;
}

/* Handles one complete JSON line. Returns false to end the stream. */
static bool on_line(sl_etcd_watch *w, const char *text, size_t len) {
  sl_etcd_watch_reply r;
  sl_err e = SL_ERR_INIT;
  sl_status st = sl_etcd_parse_watch(text, len, "watch", &r, &e);
  if (st != SL_OK) {
    w->stream_st = st;
    w->stream_err = e;
    return false;
  }
  bool keep = true;
  if (r.created || r.canceled) {
    if (w->next_rev == 0 && r.revision > 0) w->next_rev = r.revision + 1;
    pthread_mutex_lock(&w->lock);
    if (w->state == STARTING) {
      w->state = RUNNING;
      pthread_cond_broadcast(&w->cond);
    }
    pthread_mutex_unlock(&w->lock);
  }
  if (r.n > 0) {
    w->cb(w->arg, r.events, r.n, 0);
    w->next_rev = r.events[r.n - 1].kv.mod_revision + 1;
  }
  if (r.canceled && r.compact_revision > 0) {
    sl_log(SL_LOG_WARN, "event=etcd_watch_compacted next_rev=%" PRId64
           " compact_rev=%" PRId64, w->next_rev, r.compact_revision);
    w->cb(w->arg, NULL, 0, r.compact_revision);
    w->compacted = true;
    keep = false;
  } else if (r.canceled) {
    w->stream_st = SL_EUNAVAIL;
    sl_err_set(&w->stream_err, SL_EUNAVAIL, "etcd watch: canceled by server: %s",
               r.cancel_reason ? r.cancel_reason : "no reason given");
    keep = false;
  }
  sl_etcd_watch_reply_release(&r);
  return keep;
}

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *arg) {
  sl_etcd_watch *w = arg;
  size_t n = size * nmemb;
  if (w->abort_stream) return 0;
  for (size_t i = 0; i < n;) {
    const char *nl = memchr(ptr + i, '\n', n - i);
    size_t take = nl ? (size_t)(nl - (ptr + i)) : n - i;
    if (w->line.len + take + 1 > MAX_LINE_BYTES) {
      w->stream_st = SL_ETOOBIG;
      sl_err_set(&w->stream_err, SL_ETOOBIG, "etcd watch: reply line over %u bytes",
                 MAX_LINE_BYTES);
      w->abort_stream = true;
      return 0;
    }
    sl_buf_append(&w->line, ptr + i, take);
    i += take;
    if (nl == NULL) break;
    i++; /* the newline */
    bool blank = w->line.len == 0;
    if (!blank && !on_line(w, w->line.data, w->line.len)) {
      w->abort_stream = true;
      sl_buf_reset(&w->line);
      return 0;
    }
    sl_buf_reset(&w->line);
  }
  return n;
}

static char *request_body(sl_etcd_watch *w) {
  cJSON *root = cJSON_CreateObject();
  cJSON *create = cJSON_CreateObject();
  SL_ASSERT(root != NULL && create != NULL); /* out of memory */
  sl_etcd_json_add_bytes(create, "key", w->key, w->key_len);
  if (w->has_range_end)
    sl_etcd_json_add_bytes(create, "range_end", w->range_end, w->range_end_len);
  if (w->next_rev > 0) sl_etcd_json_add_int64(create, "start_revision", w->next_rev);
  bool ok = cJSON_AddItemToObject(root, "create_request", create);
  SL_ASSERT(ok);
  char *body = cJSON_PrintUnformatted(root);
  SL_ASSERT(body != NULL);
  cJSON_Delete(root);
  return body;
}

/* Runs one stream against endpoint ep until it ends. */
static void run_stream(sl_etcd_watch *w, size_t ep) {
  char url[1024];
  char errbuf[CURL_ERROR_SIZE] = "";
  snprintf(url, sizeof(url), "%s/v3/watch", sl_etcd_endpoint_(w->client, ep));
  char *body = request_body(w);
  sl_buf_reset(&w->line);
  w->abort_stream = false;
  w->stream_st = SL_OK;
  w->stream_err.msg[0] = '\0';
  curl_easy_setopt(w->easy, CURLOPT_URL, url);
  curl_easy_setopt(w->easy, CURLOPT_POSTFIELDS, body);
  curl_easy_setopt(w->easy, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
  curl_easy_setopt(w->easy, CURLOPT_CONNECTTIMEOUT_MS,
                   (long)sl_etcd_opts_(w->client)->connect_timeout_ms);
  curl_easy_setopt(w->easy, CURLOPT_ERRORBUFFER, errbuf);
  CURLMcode mc = curl_multi_add_handle(w->multi, w->easy);
  SL_ASSERT(mc == CURLM_OK);

  bool done = false;
  CURLcode rc = CURLE_OK;
  while (!done && !stopping(w)) {
    int running = 0;
    mc = curl_multi_perform(w->multi, &running);
    if (mc != CURLM_OK) break;
    int queued;
    CURLMsg *msg;
    while ((msg = curl_multi_info_read(w->multi, &queued)) != NULL) {
      if (msg->msg == CURLMSG_DONE) {
        done = true;
        rc = msg->data.result;
      }
    }
    if (done || running == 0) break;
    /* Returns on socket activity, after 1 s, or at curl_multi_wakeup. */
    curl_multi_poll(w->multi, NULL, 0, 1000, NULL);
  }
  curl_multi_remove_handle(w->multi, w->easy);
  curl_easy_setopt(w->easy, CURLOPT_ERRORBUFFER, NULL);
  cJSON_free(body);

  if (w->stream_st == SL_OK && !stopping(w) && !w->compacted) {
    long sent = 0;
    curl_easy_getinfo(w->easy, CURLINFO_REQUEST_SIZE, &sent);
    w->stream_st = SL_EUNAVAIL;
    sl_err_set(&w->stream_err, SL_EUNAVAIL, "etcd watch %s: %s", url,
               rc != CURLE_OK ? (errbuf[0] ? errbuf : curl_easy_strerror(rc))
                              : "stream ended");
    if (rc == CURLE_COULDNT_CONNECT || sent == 0)
      sl_etcd_endpoint_failed_(w->client, ep);
  }
}

/* Sleeps up to ms, waking early on stop. */
static void backoff_wait(sl_etcd_watch *w, int ms) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  ts.tv_sec += ms / 1000;
  ts.tv_nsec += (long)(ms % 1000) * 1000000L;
  if (ts.tv_nsec >= 1000000000L) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000L;
  }
  pthread_mutex_lock(&w->lock);
  while (!w->stop && pthread_cond_timedwait(&w->cond, &w->lock, &ts) == 0) {
  }
  pthread_mutex_unlock(&w->lock);
}

static void *watch_main(void *arg) {
  sl_etcd_watch *w = arg;
  int backoff = BACKOFF_FIRST_MS;
  bool was_running = false;
  while (!stopping(w) && !w->compacted) {
    size_t ep = sl_etcd_preferred_(w->client);
    int64_t before = w->next_rev;
    run_stream(w, ep);
    if (stopping(w) || w->compacted) break;
    pthread_mutex_lock(&w->lock);
    bool starting = w->state == STARTING;
    if (starting) {
      /* Remembered for sl_etcd_watch_start, which reports it at its deadline. */
      w->start_st = w->stream_st;
      w->start_err = w->stream_err;
      /* An error reply to the create request itself is final. */
      if (w->stream_st != SL_EUNAVAIL && w->stream_st != SL_ETOOBIG) {
        w->state = DONE;
        pthread_cond_broadcast(&w->cond);
      }
    }
    bool done = w->state == DONE;
    pthread_mutex_unlock(&w->lock);
    if (done) break;
    if (!starting) {
      if (!was_running || w->next_rev != before) backoff = BACKOFF_FIRST_MS;
      sl_log(SL_LOG_WARN, "event=etcd_watch_reconnect next_rev=%" PRId64 " reason=\"%s\"",
             w->next_rev, sl_err_msg(&w->stream_err, w->stream_st));
      was_running = true;
    }
    backoff_wait(w, backoff);
    backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
  }
  set_state(w, DONE);
  return NULL;
}

static void watch_free(sl_etcd_watch *w) {
  if (w->multi != NULL) curl_multi_cleanup(w->multi);
  if (w->easy != NULL) curl_easy_cleanup(w->easy);
  curl_slist_free_all(w->headers);
  free(w->key);
  free(w->range_end);
  sl_buf_release(&w->line);
  pthread_mutex_destroy(&w->lock);
  pthread_cond_destroy(&w->cond);
  free(w);
}

sl_status sl_etcd_watch_start(sl_etcd *c, const void *key, size_t key_len,
                              const void *range_end, size_t range_end_len,
                              int64_t start_revision, sl_etcd_watch_cb cb,
                              void *arg, sl_etcd_watch **out, sl_err *err) {
  if (start_revision < 0)
    return sl_err_set(err, SL_EINVAL, "etcd watch: negative start revision");
  sl_etcd_watch *w = sl_xcalloc(1, sizeof(*w));
  w->client = c;
  w->key = sl_xmalloc(key_len ? key_len : 1);
  memcpy(w->key, key, key_len);
  w->key_len = key_len;
  if (range_end != NULL) {
    w->has_range_end = true;
    w->range_end = sl_xmalloc(range_end_len ? range_end_len : 1);
    memcpy(w->range_end, range_end, range_end_len);
    w->range_end_len = range_end_len;
  }
  w->cb = cb;
  w->arg = arg;
  w->next_rev = start_revision;
  w->state = STARTING;
  w->start_st = SL_EUNAVAIL;
  pthread_mutex_init(&w->lock, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&w->cond, &ca);
  pthread_condattr_destroy(&ca);
  w->multi = curl_multi_init();
  w->easy = curl_easy_init();
  SL_ASSERT(w->multi != NULL && w->easy != NULL); /* out of memory */
  bool ok = sl_etcd_setup_handle_(w->easy, &w->headers) &&
            curl_easy_setopt(w->easy, CURLOPT_WRITEFUNCTION, on_body) == CURLE_OK &&
            curl_easy_setopt(w->easy, CURLOPT_WRITEDATA, w) == CURLE_OK;
  SL_ASSERT(ok);
  if (pthread_create(&w->thread, NULL, watch_main, w) != 0) {
    watch_free(w);
    return sl_err_set(err, SL_EINTERNAL, "etcd watch: cannot create thread");
  }

  /* Wait for etcd's "created" (or a final error) within the call timeout. */
  int timeout_ms = sl_etcd_opts_(c)->timeout_ms;
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  ts.tv_sec += timeout_ms / 1000;
  ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
  if (ts.tv_nsec >= 1000000000L) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000L;
  }
  pthread_mutex_lock(&w->lock);
  int rc = 0;
  while (w->state == STARTING && rc == 0)
    rc = pthread_cond_timedwait(&w->cond, &w->lock, &ts);
  bool started = w->state == RUNNING || (w->state == DONE && w->compacted);
  sl_status st = w->start_st;
  sl_err start_err = w->start_err;
  pthread_mutex_unlock(&w->lock);
  if (started) {
    *out = w;
    return SL_OK;
  }
  sl_etcd_watch_stop(w);
  if (rc == 0) /* etcd refused the watch: report its error as is */
    return sl_err_set(err, st, "%s", sl_err_msg(&start_err, st));
  if (start_err.msg[0] == '\0') /* connected, but etcd never confirmed */
    return sl_err_set(err, SL_ETIMEDOUT, "etcd watch: not confirmed within %d ms",
                      timeout_ms);
  return sl_err_set(err, st, "etcd watch: not confirmed within %d ms: %s", timeout_ms,
                    start_err.msg);
}

void sl_etcd_watch_stop(sl_etcd_watch *w) {
  if (w == NULL) return;
  pthread_mutex_lock(&w->lock);
  w->stop = true;
  pthread_cond_broadcast(&w->cond);
  pthread_mutex_unlock(&w->lock);
  curl_multi_wakeup(w->multi);
  pthread_join(w->thread, NULL);
  watch_free(w);
}
