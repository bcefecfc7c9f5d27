#include "tests/etcd_proc.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/clock.h"

#define START_TIMEOUT_MS 30000
#define START_ATTEMPTS 4

static const char *etcd_bin(void) {
  const char *bin = getenv("SL_ETCD_BIN");
  return (bin != NULL && bin[0] != '\0') ? bin : "/usr/bin/etcd";
}

/* $name if set and not empty, else def. */
static const char *env_or(const char *name, const char *def) {
  const char *v = getenv(name);
  return (v != NULL && v[0] != '\0') ? v : def;
}

static void global_init(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

typedef struct reply {
  char buf[2048];
  size_t len;
} reply;

static size_t keep(char *ptr, size_t size, size_t nmemb, void *arg) {
  reply *r = arg;
  size_t n = size * nmemb;
  size_t room = sizeof(r->buf) - 1 - r->len;
  size_t take = n < room ? n : room;
  memcpy(r->buf + r->len, ptr, take);
  r->len += take;
  r->buf[r->len] = '\0';
  return n;
}

/* POSTs body to endpoint + path; the reply (truncated) in *out. */
static sl_status post(const char *endpoint, const char *path, const char *body, long timeout_ms,
                      reply *out, sl_err *err) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, global_init);
  CURL *h = curl_easy_init();
  if (h == NULL) return sl_err_set(err, SL_ENOMEM, "etcd %s: no curl handle", endpoint);
  char url[160];
  snprintf(url, sizeof(url), "%s%s", endpoint, path);
  struct curl_slist *hdr = curl_slist_append(NULL, "Expect:");
  memset(out, 0, sizeof(*out));
  curl_easy_setopt(h, CURLOPT_URL, url);
  curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_PROXY, ""); /* never via $http_proxy */
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, keep);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, out);
  CURLcode rc = curl_easy_perform(h);
  long http = 0;
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &http);
  curl_slist_free_all(hdr);
  curl_easy_cleanup(h);
  if (rc != CURLE_OK)
    return sl_err_set(err, SL_EUNAVAIL, "etcd %s: %s", url, curl_easy_strerror(rc));
  if (http != 200) return sl_err_set(err, SL_EIO, "etcd %s: http %ld: %s", url, http, out->buf);
  return SL_OK;
}

/* The number in `"field":"123"` of a JSON reply (int64 travel as strings). */
static sl_status json_int(const reply *r, const char *field, long long *out, sl_err *err) {
  char pat[64];
  snprintf(pat, sizeof(pat), "\"%s\":\"", field);
  const char *p = strstr(r->buf, pat);
  if (p == NULL) return sl_err_set(err, SL_ECORRUPT, "etcd status: no %s in %s", field, r->buf);
  *out = strtoll(p + strlen(pat), NULL, 10);
  return SL_OK;
}

sl_status sl_etcd_proc_db_size(sl_etcd_proc *e, long long *size, long long *in_use,
                               sl_err *err) {
  reply r;
  sl_status st = post(e->endpoint, "/v3/maintenance/status", "{}", 5000, &r, err);
  if (st == SL_OK) st = json_int(&r, "dbSize", size, err);
  if (st == SL_OK) st = json_int(&r, "dbSizeInUse", in_use, err);
  return st;
}

sl_status sl_etcd_proc_defragment(sl_etcd_proc *e, sl_err *err) {
  reply r;
  return post(e->endpoint, "/v3/maintenance/defragment", "{}", 30000, &r, err);
}

/* One linearizable range of key "\0"; true on HTTP 200. */
static bool answers(const char *endpoint) {
  reply r;
  return post(endpoint, "/v3/kv/range", "{\"key\":\"AA==\"}", 1000, &r, NULL) == SL_OK;
}

sl_status sl_etcd_proc_wait_healthy(sl_etcd_proc *e, int timeout_ms, sl_err *err) {
  long long deadline = sl_clock_mono_ms() + timeout_ms;
  for (;;) {
    if (answers(e->endpoint)) return SL_OK;
    if (!sl_proc_running(&e->proc))
      return sl_err_set(err, SL_EUNAVAIL,
                        "etcd %s: exited (wait status 0x%x), see %s/etcd.log",
                        e->endpoint, e->proc.wait_status, e->dir);
    if (sl_clock_mono_ms() >= deadline)
      return sl_err_set(err, SL_ETIMEDOUT, "etcd %s: not healthy after %d ms, see %s/etcd.log",
                        e->endpoint, timeout_ms, e->dir);
    usleep(50 * 1000);
  }
}

static sl_status spawn(sl_etcd_proc *e, sl_err *err) {
  char data[1024], log[1024], client[64], peer[64], cluster[96];
  snprintf(data, sizeof(data), "%s/data", e->dir);
  snprintf(log, sizeof(log), "%s/etcd.log", e->dir);
  snprintf(client, sizeof(client), "http://127.0.0.1:%d", e->client_port);
  snprintf(peer, sizeof(peer), "http://127.0.0.1:%d", e->peer_port);
  snprintf(cluster, sizeof(cluster), "default=%s", peer);
  snprintf(e->endpoint, sizeof(e->endpoint), "%s", client);
  /* etcd's own limits, as deployed (k8s/etcd.yaml): old revisions are
   * compacted away, and the backend has a quota far above what a busy test
   * writes. Tests that measure the db size shorten the retention. */
  const char *argv[] = {etcd_bin(),
                        "--auto-compaction-mode", "periodic",
                        "--auto-compaction-retention",
                        env_or("SL_ETCD_COMPACTION_RETENTION", "1m"),
                        "--quota-backend-bytes", env_or("SL_ETCD_QUOTA_BYTES", "2147483648"),
                        "--name", "default",
                        "--data-dir", data,
                        "--listen-client-urls", client,
                        "--advertise-client-urls", client,
                        "--listen-peer-urls", peer,
                        "--initial-advertise-peer-urls", peer,
                        "--initial-cluster", cluster,
                        NULL};
  return sl_proc_start(&e->proc, argv, NULL, log, err);
}

sl_status sl_etcd_proc_start(sl_etcd_proc *e, const char *name, sl_err *err) {
  SL_ASSERT(e->dir == NULL && e->proc.pid == 0);
  sl_status st = sl_proc_tempdir(name, &e->dir, err);
  if (st != SL_OK) return st;
  for (int attempt = 1;; attempt++) {
    st = sl_proc_free_port(&e->client_port, err);
    if (st == SL_OK) st = sl_proc_free_port(&e->peer_port, err);
    if (st != SL_OK) return st;
    if (e->peer_port == e->client_port) continue;
    st = spawn(e, err);
    if (st != SL_OK) return st;
    st = sl_etcd_proc_wait_healthy(e, START_TIMEOUT_MS, err);
    if (st == SL_OK) return SL_OK;
    sl_proc_kill(&e->proc, NULL);
    /* Exited at start: most likely a port was taken between pick and bind. */
    if (st != SL_EUNAVAIL || attempt == START_ATTEMPTS) return st;
    char data[1024];
    snprintf(data, sizeof(data), "%s/data", e->dir);
    sl_proc_rmtree(data, NULL);
  }
}

sl_status sl_etcd_proc_restart(sl_etcd_proc *e, sl_err *err) {
  SL_ASSERT(e->dir != NULL);
  if (sl_proc_running(&e->proc))
    return sl_err_set(err, SL_EINVAL, "etcd %s: restart while running", e->endpoint);
  sl_status st = spawn(e, err);
  if (st != SL_OK) return st;
  return sl_etcd_proc_wait_healthy(e, START_TIMEOUT_MS, err);
}

sl_status sl_etcd_proc_kill9(sl_etcd_proc *e, sl_err *err) {
  return sl_proc_kill(&e->proc, err);
}

sl_status sl_etcd_proc_stop(sl_etcd_proc *e, sl_err *err) {
  return sl_proc_stop(&e->proc, 5000, err);
}

void sl_etcd_proc_release(sl_etcd_proc *e) {
  sl_proc_stop(&e->proc, 5000, NULL);
  if (e->dir != NULL) {
    /* etcd preallocates 64 MB of WAL; keep only the log. */
    char data[1024];
    snprintf(data, sizeof(data), "%s/data", e->dir);
    sl_proc_rmtree(data, NULL);
  }
  free(e->dir);
  e->dir = NULL;
}
