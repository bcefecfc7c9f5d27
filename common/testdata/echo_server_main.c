/*
 * A stand-alone echo server (echo_service.h) for tests that need the server
 * in another process, e.g. to freeze it with SIGSTOP and check that client
 * keepalive notices. Usage: echo_server 127.0.0.1:PORT. Serves until
 * SIGTERM or SIGINT, then shuts down cleanly.
 */
#include <signal.h>
#include <stdio.h>

#include "common/testdata/echo_service.h"

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s host:port\n", argv[0]);
    return 2;
  }
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  /* Blocked before gRPC starts threads, so only sigwait sees them. */
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  static sl_echo_stats stats;
  sl_rpc_server_opts opts = {.addr = argv[1], .n_threads = 1};
  sl_rpc_server *srv = NULL;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_echo_server_start(&opts, &stats, &srv, &err);
  if (st != SL_OK) {
    fprintf(stderr, "echo_server: %s\n", sl_err_msg(&err, st));
    sl_rpc_server_destroy(srv);
    return 1;
  }
  printf("event=ready port=%d\n", sl_rpc_server_port(srv));
  fflush(stdout);
  int sig;
  sigwait(&set, &sig);
  sl_rpc_server_destroy(srv);
  return 0;
}
