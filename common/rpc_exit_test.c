/*
 * A process that used gRPC may still have TLS threads exiting while its
 * atexit handlers run (gRPC hands its last teardown to a thread of its own).
 * Each such thread must still free its OpenSSL error queue: run under
 * LeakSanitizer (--config=asan), this test fails with a 904-byte leak when
 * OpenSSL's own atexit cleanup runs first (rpc_buf.c). Without a leak
 * checker it only checks that such an exit is clean.
 */
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "common/rpc.h"
#include "common/rpc_server.h"

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int ready, may_exit;
static pthread_t late;

/* Initializes OpenSSL as gRPC does for its first TLS credentials and
 * touches the thread's error queue as a handshake does, then exits only
 * once the process is running its atexit handlers. */
static void *late_thread(void *arg) {
  (void)arg;
  if (OPENSSL_init_ssl(0, NULL) != 1) abort();
  ERR_clear_error();
  pthread_mutex_lock(&mu);
  ready = 1;
  pthread_cond_broadcast(&cv);
  while (!may_exit) pthread_cond_wait(&cv, &mu);
  pthread_mutex_unlock(&mu);
  return NULL;
}

/* Registered before anything touches OpenSSL, so it runs after any handler
 * OpenSSL registers: atexit handlers run last-registered first. */
static void release_late_thread(void) {
  pthread_mutex_lock(&mu);
  may_exit = 1;
  pthread_cond_broadcast(&cv);
  pthread_mutex_unlock(&mu);
  if (pthread_join(late, NULL) != 0) abort();
}

int main(void) {
  if (atexit(release_late_thread) != 0) return 1;
  sl_rpc_server_opts o = {.addr = "127.0.0.1:0"};
  sl_rpc_server *srv = NULL;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_rpc_server_create(&o, &srv, &err);
  if (st != SL_OK) {
    fprintf(stderr, "server: %s\n", sl_err_msg(&err, st));
    return 1;
  }
  sl_rpc_server_destroy(srv);
  if (sl_rpc_wait_shutdown(30000) != SL_OK) {
    fprintf(stderr, "grpc did not shut down\n");
    return 1;
  }
  if (pthread_create(&late, NULL, late_thread, NULL) != 0) return 1;
  pthread_mutex_lock(&mu);
  while (!ready) pthread_cond_wait(&cv, &mu);
  pthread_mutex_unlock(&mu);
  printf("exiting with a TLS thread still to exit\n");
  return 0;
}
