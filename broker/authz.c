/*
 * Namespace grants, cached (authz.h).
 *
 * Invariants
 *  1. A cache entry holds the grants of one namespace as read at fetched_ms
 *     (or that it did not exist); it answers checks only while younger than
 *     cache_ms.
 *  2. The cache holds at most CACHE_MAX entries: any authenticated caller can
 *     name namespaces, so a full cache is emptied rather than grown.
 *  3. Every fetch in flight holds a reference to the authz, so its answer
 *     never touches freed memory, whatever the order of shutdown.
 */
#include "broker/authz.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/map.h"
#include "metadata.slrpc.h"
#include "metadata/md_names.h"

#define CACHE_MAX 4096

typedef struct grant {
  char *role;
  uint32_t actions; /* bit (1 << Sluice__V1__Action) per action held */
} grant;

typedef struct grants {
  int64_t fetched_ms;
  bool exists;
  size_t n;
  grant *g;
} grants;

struct sl_authz {
  sl_authz_opts o;
  atomic_int refs;
  pthread_mutex_t mu; /* guards cache */
  sl_map cache;       /* namespace -> grants */
};

typedef struct fetch {
  sl_authz *z;
  char ns[SL_MD_NAME_MAX + 1];
  char role[SL_AUTH_ROLE_MAX];
  sl_authz_need need;
  sl_authz_cb cb;
  void *arg;
} fetch;

static void grants_free(void *v) {
  grants *gs = v;
  if (gs == NULL) return;
  for (size_t i = 0; i < gs->n; i++) free(gs->g[i].role);
  free(gs->g);
  free(gs);
}

static void z_unref(sl_authz *z) {
  if (atomic_fetch_sub(&z->refs, 1) != 1) return;
  sl_map_release(&z->cache, grants_free);
  pthread_mutex_destroy(&z->mu);
  free(z);
}

sl_status sl_authz_create(const sl_authz_opts *opts, sl_authz **out, sl_err *err) {
  if (opts->metadata == NULL) return sl_err_set(err, SL_EINVAL, "authz: no metadata channel");
  sl_authz *z = sl_xcalloc(1, sizeof(*z));
  z->o = *opts;
  if (z->o.timeout_ms <= 0) z->o.timeout_ms = 5000;
  if (z->o.cache_ms <= 0) z->o.cache_ms = 10000;
  atomic_init(&z->refs, 1);
  pthread_mutex_init(&z->mu, NULL);
  sl_map_init(&z->cache);
  *out = z;
  return SL_OK;
}

void sl_authz_destroy(sl_authz *z) {
  if (z != NULL) z_unref(z);
}

static const char *need_str(sl_authz_need need) {
  switch (need) {
    case SL_AUTHZ_PRODUCE: return "produce";
    case SL_AUTHZ_CONSUME: return "consume";
    case SL_AUTHZ_ADMIN: return "administer";
    case SL_AUTHZ_ANY: return "use";
    case SL_AUTHZ_SUPERUSER: return "call this on";
  }
  return "?";
}

/* The answer from one namespace's grants; msg[SL_ERR_MAX] says why not. */
static sl_status judge(const grants *gs, const char *ns, const char *role, sl_authz_need need,
                       char *msg) {
  if (!gs->exists) {
    snprintf(msg, SL_ERR_MAX, "namespace %s: not found", ns);
    return SL_ENOTFOUND;
  }
  uint32_t want = need == SL_AUTHZ_ANY ? UINT32_MAX : 1u << need;
  for (size_t i = 0; i < gs->n; i++)
    if (strcmp(gs->g[i].role, role) == 0 && (gs->g[i].actions & want) != 0) return SL_OK;
  snprintf(msg, SL_ERR_MAX, "role %s may not %s namespace %s", role, need_str(need), ns);
  return SL_EPERM;
}

static grants *grants_from(const Sluice__V1__Namespace *ns) {
  grants *gs = sl_xcalloc(1, sizeof(*gs));
  gs->fetched_ms = sl_clock_mono_ms();
  gs->exists = ns != NULL;
  const Sluice__V1__NamespacePolicies *pol = ns != NULL ? ns->policies : NULL;
  if (pol == NULL || pol->n_permissions == 0) return gs;
  gs->g = sl_xcalloc(pol->n_permissions, sizeof(grant));
  for (size_t i = 0; i < pol->n_permissions; i++) {
    const Sluice__V1__Permission *p = pol->permissions[i];
    gs->g[gs->n].role = sl_xstrdup(p->role);
    for (size_t k = 0; k < p->n_actions; k++)
      if ((unsigned)p->actions[k] < 32) gs->g[gs->n].actions |= 1u << p->actions[k];
    gs->n++;
  }
  return gs;
}

static void cache_put(sl_authz *z, const char *ns, grants *gs) {
  pthread_mutex_lock(&z->mu);
  if (sl_map_len(&z->cache) >= CACHE_MAX) sl_map_release(&z->cache, grants_free);
  void *old = NULL;
  if (sl_map_put(&z->cache, ns, gs, &old) != SL_OK) abort(); /* servers abort on OOM */
  grants_free(old);
  pthread_mutex_unlock(&z->mu);
}

/* Answers from a fresh cache entry; false when there is none. cb runs after
 * the lock is dropped: it may start the caller's work. */
static bool decide_cached(sl_authz *z, const char *ns, const char *role, sl_authz_need need,
                          sl_authz_cb cb, void *arg) {
  char msg[SL_ERR_MAX];
  sl_status st = SL_OK;
  pthread_mutex_lock(&z->mu);
  grants *gs = sl_map_get(&z->cache, ns);
  bool fresh = gs != NULL && sl_clock_mono_ms() - gs->fetched_ms < z->o.cache_ms;
  if (fresh) st = judge(gs, ns, role, need, msg);
  pthread_mutex_unlock(&z->mu);
  if (fresh) cb(st, st == SL_OK ? NULL : msg, arg);
  return fresh;
}

static void fetched(sl_status st, const char *details, ProtobufCMessage *resp, void *arg) {
  fetch *f = arg;
  if (st == SL_OK || st == SL_ENOTFOUND) {
    grants *gs = grants_from(st == SL_OK ? (const Sluice__V1__Namespace *)resp : NULL);
    char msg[SL_ERR_MAX];
    sl_status verdict = judge(gs, f->ns, f->role, f->need, msg);
    cache_put(f->z, f->ns, gs);
    f->cb(verdict, verdict == SL_OK ? NULL : msg, f->arg);
  } else {
    char msg[SL_ERR_MAX];
    snprintf(msg, sizeof(msg), "namespace %.100s: cannot read its permissions: %.100s", f->ns,
             details != NULL ? details : sl_status_str(st));
    f->cb(st == SL_ECANCELED ? SL_ECANCELED : SL_EUNAVAIL, msg, f->arg);
  }
  if (resp != NULL) protobuf_c_message_free_unpacked(resp, NULL);
  z_unref(f->z);
  free(f);
}

void sl_authz_check(sl_authz *z, sl_rpc_call *call, const char *name, sl_authz_need need,
                    sl_authz_cb cb, void *arg) {
  if (sl_rpc_call_is_superuser(call)) {
    cb(SL_OK, NULL, arg);
    return;
  }
  const char *role = sl_rpc_call_role(call);
  if (need == SL_AUTHZ_SUPERUSER || role == NULL) {
    char msg[SL_ERR_MAX];
    snprintf(msg, sizeof(msg), "role %s: %s needs a super-user role", role ? role : "(none)",
             sl_rpc_call_method(call)->path);
    cb(SL_EPERM, msg, arg);
    return;
  }
  const char *slash = strchr(name, '/');
  size_t len = slash != NULL ? (size_t)(slash - name) : strlen(name);
  fetch *f = sl_xcalloc(1, sizeof(*f));
  snprintf(f->ns, sizeof(f->ns), "%.*s", (int)len, name);
  sl_err err = SL_ERR_INIT;
  if (len == 0 || len > SL_MD_NAME_MAX || sl_md_check_namespace(f->ns, &err) != SL_OK) {
    free(f);
    cb(SL_EINVAL, err.msg[0] ? err.msg : "no namespace in the name", arg);
    return;
  }
  if (decide_cached(z, f->ns, role, need, cb, arg)) {
    free(f);
    return;
  }
  f->z = z;
  snprintf(f->role, sizeof(f->role), "%s", role);
  f->need = need;
  f->cb = cb;
  f->arg = arg;
  atomic_fetch_add(&z->refs, 1);
  Sluice__V1__GetNamespaceRequest req = SLUICE__V1__GET_NAMESPACE_REQUEST__INIT;
  req.name = f->ns;
  sl_rpc_call_opts co = {.timeout_ms = z->o.timeout_ms};
  if (sl_rpc_unary_async(z->o.metadata, SL_METADATA_SERVICE_GET_NAMESPACE, &req.base, &co,
                         fetched, f, &err) != SL_OK)
    fetched(SL_EUNAVAIL, err.msg, NULL, f);
}

void sl_authz_forget(sl_authz *z, const char *ns) {
  pthread_mutex_lock(&z->mu);
  void *old = NULL;
  if (sl_map_remove(&z->cache, ns, &old)) grants_free(old);
  pthread_mutex_unlock(&z->mu);
}
