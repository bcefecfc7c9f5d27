#include "tests/etcd_proc.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define START_TIMEOUT_MS 30000
#define START_ATTEMPTS 4

static const char *etcd_bin(void) {
  const char *bin = getenv("SL_ETCD_BIN");
  return (bin != NULL && bin[0] != '\0') ? bin : "/usr/bin/etcd";
}

static void global_init(void) { curl_global_init(CURL_GLOBAL_DEFAULT); }

static size_t discard(char *ptr, size_t size, size_t nmemb, void *arg) {
  (void)ptr;
  (void)arg;
  return size * nmemb;
}

/* One linearizable range of key "\0"; true on HTTP 200. */
static bool answers(const char *endpoint) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, global_init);
  CURL *h = curl_easy_init();
  if (h == NULL) return false;
  char url[128];
  snprintf(url, sizeof(url), "%s/v3/kv/range", endpoint);
  struct curl_slist *hdr = curl_slist_append(NULL, "Expect:");
  curl_easy_setopt(h, CURLOPT_URL, url);
  curl_easy_setopt(h, CURLOPT_POSTFIELDS, "{\"key\":\"AA==\"}");
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 1000L);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_PROXY, ""); /* never via $http_proxy */
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
  long code = 0;
  bool ok = curl_easy_perform(h) == CURLE_OK &&
            curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code) == CURLE_OK &&
            code == 200;
  curl_slist_free_all(hdr);
  curl_easy_cleanup(h);
  return ok;
}

sl_status sl_etcd_proc_wait_healthy(sl_etcd_proc *e, int timeout_ms, sl_err *err) {
  long long deadline = sl_proc_now_ms() + timeout_ms;
  for (;;) {
    if (answers(e->endpoint)) return SL_OK;
    if (!sl_proc_running(&e->proc))
      return sl_err_set(err, SL_EUNAVAIL,
                        "etcd %s: exited (wait status 0x%x), see %s/etcd.log",
                        e->endpoint, e->proc.wait_status, e->dir);
    if (sl_proc_now_ms() >= deadline)
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
  const char *argv[] = {etcd_bin(),
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
