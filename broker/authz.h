/*
 * Authorization of broker calls (DESIGN.md §8). A caller's role (from its
 * token, checked by the RPC runtime) may produce, consume or administer a
 * namespace when the namespace's policies grant it that action
 * (NamespacePolicies.permissions); super-user roles may do everything, and
 * with authentication off every call is allowed.
 *
 * Grants are read from the metadata service and cached per namespace for
 * opts.cache_ms, so opening a stream costs no metadata round trip most of
 * the time, and a grant changed by SetNamespacePolicies applies to new calls
 * within that time (at once on this broker: it drops its own entry when it
 * forwards the change). Streams already open are not re-checked.
 *
 * Thread-safety: every function may be called from any thread; the cache is
 * guarded by the authz's mutex.
 */
#ifndef SL_BROKER_AUTHZ_H
#define SL_BROKER_AUTHZ_H

#include <stdint.h>

#include "common/rpc_client.h"
#include "common/rpc_server.h"
#include "common/status.h"
#include "metadata.pb-c.h"

typedef struct sl_authz sl_authz;

/* What a call needs: one action, any action on the namespace (reading a
 * topic's description or stats, lookup), or a super-user (cluster-wide
 * calls). */
typedef enum sl_authz_need {
  SL_AUTHZ_PRODUCE = SLUICE__V1__ACTION__ACTION_PRODUCE,
  SL_AUTHZ_CONSUME = SLUICE__V1__ACTION__ACTION_CONSUME,
  SL_AUTHZ_ADMIN = SLUICE__V1__ACTION__ACTION_ADMIN,
  SL_AUTHZ_ANY = 100,
  SL_AUTHZ_SUPERUSER = 101,
} sl_authz_need;

typedef struct sl_authz_opts {
  sl_rpc_channel *metadata; /* retained until destroy */
  int timeout_ms;           /* per GetNamespace; 0 = 5000 */
  int cache_ms;             /* grant cache lifetime; 0 = 10000 */
} sl_authz_opts;

sl_status sl_authz_create(const sl_authz_opts *opts, sl_authz **out, sl_err *err);
/* Calls still in flight finish with SL_ECANCELED first. NULL is a no-op. */
void sl_authz_destroy(sl_authz *z);

/* Answer to sl_authz_check: SL_OK, SL_EPERM (naming role, action and
 * namespace), SL_ENOTFOUND (no such namespace), SL_EUNAVAIL (the grants
 * could not be read), SL_EINVAL (no namespace in `name`). */
typedef void (*sl_authz_cb)(sl_status st, const char *msg, void *arg);

/* May the caller of `call` do `need` on the namespace of `name` (a
 * namespace, topic or partition name; borrowed)? cb runs exactly once:
 * before this returns when the answer is known (authentication off,
 * super-user, cached grants), else on the metadata channel's thread after
 * one GetNamespace. The caller keeps `call` referenced until cb. */
void sl_authz_check(sl_authz *z, sl_rpc_call *call, const char *name, sl_authz_need need,
                    sl_authz_cb cb, void *arg);

/* Forgets the cached grants of namespace `ns` (after a policy change). */
void sl_authz_forget(sl_authz *z, const char *ns);

#endif
