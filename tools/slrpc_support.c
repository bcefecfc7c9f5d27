#include "tools/slrpc_support.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "common/status.h"

/* Every binding ever made, newest first. Reachable from here for the life
 * of the process, so leak checkers do not count them. Guarded by g_lock. */
typedef struct binding {
  struct binding *next;
  size_t n;
  max_align_t bytes[]; /* n bytes, aligned for any generated struct */
} binding;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static binding *g_bindings;

void *sl_slrpc_bind(const void *bytes, size_t n) {
  SL_ASSERT(bytes != NULL && n > 0);
  pthread_mutex_lock(&g_lock);
  binding *b = g_bindings;
  while (b != NULL && !(b->n == n && memcmp(b->bytes, bytes, n) == 0)) b = b->next;
  if (b == NULL) {
    b = sl_xmalloc(sizeof(*b) + n);
    b->n = n;
    memcpy(b->bytes, bytes, n);
    b->next = g_bindings;
    g_bindings = b;
  }
  pthread_mutex_unlock(&g_lock);
  return b->bytes;
}

void sl_slrpc_unimplemented(sl_rpc_call *call) {
  const sl_rpc_method *m = sl_rpc_call_method(call);
  const char *path = m != NULL && m->path[0] == '/' ? m->path + 1 : "method";
  char msg[512];
  snprintf(msg, sizeof(msg), "%s is not implemented yet", path);
  /* The only failure is a call already finished, which needs nothing. */
  (void)sl_rpc_call_finish(call, SL_EUNIMPL, msg, NULL);
}
