/*
 * Sessions: a broker or bookie registers under brokers/<id> or bookies/<id>
 * with a key bound to a store lease; the lease id is the session id.
 *
 * Invariants
 *   1. A registration key is only ever written bound to the lease of the
 *      session that created or took it over, so it vanishes with that
 *      session (close or lapse) and with nothing else.
 *   2. One id has at most one live registration. OpenSession creates the
 *      key if absent; if a live session holds it, the same advertised
 *      address takes it over (a restart: the old process cannot still serve
 *      on that address) and another address gets ALREADY_EXISTS.
 *   3. A take-over is one CAS on the key's revision as read, so of two
 *      racing OpenSessions one wins; the old lease is revoked after it, so
 *      the old session's keys and credentials die with it (or lapse by
 *      TTL if the revoke does not get through).
 *   4. A failed OpenSession leaves no lease behind when the store answers
 *      (it revokes the lease it granted).
 *   5. Session ids are private: KeepAlive, UpdateNode and CloseSession act
 *      only for the session that holds the named node's registration, and
 *      no answer or error text names a session id. A registration's address
 *      never changes within a session (invariant 2 rests on it).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "common/log.h"
#include "metadata/md_names.h"
#include "metadata/service_int.h"

/* The registration a request names: its key, id and packed-to-be value. */
typedef struct node_ref {
  const char *kind_name; /* "broker" or "bookie" */
  const char *id;
  const char *address;
  const ProtobufCMessage *info;
  sl_md_key key;
} node_ref;

static sl_status check_broker(const Sluice__V1__BrokerInfo *b, sl_err *err) {
  sl_status st = sl_md_check_segment("broker id", b->id, err);
  if (st == SL_OK) st = sl_md_check_address("broker address", b->address, err);
  if (st == SL_OK) st = sl_md_check_text("broker version", b->version, SL_MD_NAME_MAX, err);
  if (st == SL_OK && b->load_permille > 1000)
    st = sl_err_set(err, SL_EINVAL, "broker %s: load_permille %u is above 1000", b->id,
                    b->load_permille);
  return st;
}

static sl_status check_bookie(const Sluice__V1__BookieInfo *b, sl_err *err) {
  sl_status st = sl_md_check_segment("bookie id", b->id, err);
  if (st == SL_OK) st = sl_md_check_address("bookie address", b->address, err);
  if (st == SL_OK) st = sl_md_check_text("bookie rack", b->rack, SL_MD_NAME_MAX, err);
  if (st == SL_OK && b->total_bytes > 0 && b->free_bytes > b->total_bytes)
    st = sl_err_set(err, SL_EINVAL, "bookie %s: free_bytes %" PRIu64
                    " exceeds total_bytes %" PRIu64, b->id, b->free_bytes, b->total_bytes);
  return st;
}

static sl_status node_from(Sluice__V1__NodeKind kind, const Sluice__V1__BrokerInfo *broker,
                           const Sluice__V1__BookieInfo *bookie, node_ref *n, sl_err *err) {
  sl_status st;
  switch (kind) {
    case SLUICE__V1__NODE_KIND__NODE_KIND_BROKER:
      if (broker == NULL) return sl_err_set(err, SL_EINVAL, "kind is BROKER but no broker info");
      if ((st = check_broker(broker, err)) != SL_OK) return st;
      *n = (node_ref){"broker", broker->id, broker->address, &broker->base, {{0}, 0}};
      sl_md_key_fmt(&n->key, "brokers/%s", broker->id);
      return SL_OK;
    case SLUICE__V1__NODE_KIND__NODE_KIND_BOOKIE:
      if (bookie == NULL) return sl_err_set(err, SL_EINVAL, "kind is BOOKIE but no bookie info");
      if ((st = check_bookie(bookie, err)) != SL_OK) return st;
      *n = (node_ref){"bookie", bookie->id, bookie->address, &bookie->base, {{0}, 0}};
      sl_md_key_fmt(&n->key, "bookies/%s", bookie->id);
      return SL_OK;
    default:
      return sl_err_set(err, SL_EINVAL, "node kind %d: want BROKER or BOOKIE", (int)kind);
  }
}

static sl_status check_session(int64_t id, sl_err *err) {
  if (id <= 0) return sl_err_set(err, SL_EINVAL, "session id %" PRId64 ": must be positive", id);
  return SL_OK;
}

static sl_status session_gone(const node_ref *n, sl_err *err) {
  return sl_err_set(err, SL_ENOTFOUND,
                    "%s %s: not registered (session expired or closed); open a new session",
                    n->kind_name, n->id);
}

static sl_status not_holder(const node_ref *n, sl_err *err) {
  return sl_err_set(err, SL_EPERM,
                    "%s %s: registered under another session (taken over, or not yours);"
                    " open a new session", n->kind_name, n->id);
}

/* The registration key of (kind, id), for calls that name a node by id. */
static sl_status node_key(Sluice__V1__NodeKind kind, const char *id, node_ref *n, sl_err *err) {
  bool broker = kind == SLUICE__V1__NODE_KIND__NODE_KIND_BROKER;
  if (!broker && kind != SLUICE__V1__NODE_KIND__NODE_KIND_BOOKIE)
    return sl_err_set(err, SL_EINVAL, "node kind %d: want BROKER or BOOKIE", (int)kind);
  *n = (node_ref){broker ? "broker" : "bookie", id, NULL, NULL, {{0}, 0}};
  sl_status st = sl_md_check_segment(broker ? "broker id" : "bookie id", id, err);
  if (st == SL_OK) sl_md_key_fmt(&n->key, broker ? "brokers/%s" : "bookies/%s", id);
  return st;
}

/* The advertised address in a stored registration of n's kind. */
static sl_status stored_address(const node_ref *n, const sl_store_kv *kv, char **addr,
                                sl_err *err) {
  bool broker = strcmp(n->kind_name, "broker") == 0;
  ProtobufCMessage *m = NULL;
  sl_status st = sl_md_unpack(kv, broker ? &sluice__v1__broker_info__descriptor
                                         : &sluice__v1__bookie_info__descriptor,
                              &m, err);
  if (st != SL_OK) return st;
  const char *a = broker ? ((Sluice__V1__BrokerInfo *)m)->address
                         : ((Sluice__V1__BookieInfo *)m)->address;
  *addr = sl_xstrdup(a ? a : "");
  protobuf_c_message_free_unpacked(m, NULL);
  return SL_OK;
}

/* Invariant 5: `session` holds n's registration, whose revision goes to
 * *rev (may be NULL). With n->address set, the registration must have that
 * address too: it never changes within a session, since invariant 2 rests
 * on it. */
static sl_status check_holder(sl_md_service *md, const node_ref *n, int64_t session,
                              int64_t *rev, sl_err *err) {
  sl_store_kv kv = {0};
  sl_status st = check_session(session, err);
  if (st == SL_OK) st = sl_store_get(md->store, n->key.s, n->key.len, &kv, err);
  if (st == SL_ENOTFOUND) return session_gone(n, err);
  if (st != SL_OK) return sl_md_store_status(st);
  if (kv.lease != session) st = not_holder(n, err);
  char *addr = NULL;
  if (st == SL_OK && n->address != NULL && (st = stored_address(n, &kv, &addr, err)) == SL_OK &&
      strcmp(addr, n->address) != 0)
    st = sl_err_set(err, SL_EINVAL, "%s %s: address %s is registered; it cannot become %s"
                    " within a session", n->kind_name, n->id, addr, n->address);
  free(addr);
  if (rev != NULL) *rev = kv.mod_revision;
  sl_store_kv_release(&kv);
  return st;
}

sl_status sl_md_check_holder(sl_md_service *md, Sluice__V1__NodeKind kind, const char *node_id,
                             int64_t session, sl_err *err) {
  node_ref n;
  sl_status st = node_key(kind, node_id, &n, err);
  if (st == SL_OK) st = check_holder(md, &n, session, NULL, err);
  return st;
}

/* Invariants 2 and 3: the key exists; take it over from the same address
 * (SL_EVERSION: it changed under us, look again), refuse another. *old gets
 * the lease taken over. */
static sl_status take_over(sl_md_service *md, const node_ref *n, const uint8_t *val,
                           size_t len, int64_t lease, int64_t *old, sl_err *err) {
  sl_store_kv kv = {0};
  sl_status st = sl_store_get(md->store, n->key.s, n->key.len, &kv, err);
  if (st == SL_ENOTFOUND) return SL_EVERSION; /* lapsed meanwhile: create it */
  if (st != SL_OK) return st;
  char *addr = NULL;
  st = stored_address(n, &kv, &addr, err);
  if (st == SL_OK && strcmp(addr, n->address) != 0)
    st = sl_err_set(err, SL_EEXIST,
                    "%s %s: registered by a live session from %s, not %s; two nodes with one"
                    " id? retry once that session is closed or lapses",
                    n->kind_name, n->id, addr, n->address);
  if (st == SL_OK) {
    *old = kv.lease;
    st = sl_store_put(md->store, n->key.s, n->key.len, val, len, kv.mod_revision, lease, NULL,
                      err);
    if (st == SL_ENOTFOUND) st = SL_EVERSION; /* the old key lapsed: create it */
  }
  free(addr);
  sl_store_kv_release(&kv);
  return st;
}

/* Creates or takes over the registration; *old gets the lease taken over
 * (0 if none). */
static sl_status register_node(sl_md_service *md, const node_ref *n, int64_t lease,
                               int64_t *old, sl_err *err) {
  size_t len;
  uint8_t *val = sl_md_pack(n->info, &len);
  sl_status st = SL_EVERSION;
  *old = 0;
  for (int i = 0; i < SL_MD_RETRIES && st == SL_EVERSION; i++) {
    st = sl_store_create(md->store, n->key.s, n->key.len, val, len, lease, NULL, err);
    if (st == SL_EEXIST) st = take_over(md, n, val, len, lease, old, err);
  }
  free(val);
  if (st == SL_EVERSION)
    st = sl_err_set(err, SL_EVERSION, "%s %s: registration keeps changing; try again",
                    n->kind_name, n->id);
  return st;
}

/* ---- the cluster's id ---- */

static bool hex32(const uint8_t *v, size_t len) {
  if (len != 32) return false;
  for (size_t i = 0; i < len; i++)
    if (!((v[i] >= '0' && v[i] <= '9') || (v[i] >= 'a' && v[i] <= 'f'))) return false;
  return true;
}

/* Reads the cluster's id, or makes it (the first session ever): a create
 * that only one replica can win, so every replica answers the same. It
 * never changes, so it is read once per process. */
static sl_status cluster_id(sl_md_service *md, char out[33], sl_err *err) {
  pthread_mutex_lock(&md->cluster_lock);
  memcpy(out, md->cluster_id, 33);
  pthread_mutex_unlock(&md->cluster_lock);
  if (out[0] != '\0') return SL_OK;
  sl_md_key k;
  sl_md_key_fmt(&k, SL_MD_CLUSTER_ID);
  sl_status st = SL_OK;
  for (int i = 0; i < SL_MD_RETRIES && out[0] == '\0'; i++) {
    sl_store_kv kv = {0};
    st = sl_store_get(md->store, k.s, k.len, &kv, err);
    if (st == SL_OK) {
      if (!hex32(kv.value, kv.value_len))
        st = sl_err_set(err, SL_ECORRUPT, "cluster id: stored value is not 32 hex digits");
      else
        memcpy(out, kv.value, 32), out[32] = '\0';
      sl_store_kv_release(&kv);
      if (st != SL_OK) return st;
      break;
    }
    if (st != SL_ENOTFOUND) return sl_md_store_status(st);
    uint8_t raw[16];
    if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw))
      return sl_err_set(err, SL_EINTERNAL, "cluster id: getrandom failed");
    char made[33];
    for (int b = 0; b < 16; b++) snprintf(made + 2 * b, 3, "%02x", raw[b]);
    st = sl_store_create(md->store, k.s, k.len, made, 32, 0, NULL, err);
    if (st == SL_OK) {
      memcpy(out, made, 33);
      sl_log(SL_LOG_INFO, "event=cluster_id_created cluster_id=%s", made);
    } else if (st != SL_EEXIST) {
      return sl_md_store_status(st); /* SL_EEXIST: another replica won; read it */
    }
  }
  if (out[0] == '\0') return sl_err_set(err, SL_EUNAVAIL, "cluster id: not settled");
  pthread_mutex_lock(&md->cluster_lock);
  memcpy(md->cluster_id, out, 33);
  pthread_mutex_unlock(&md->cluster_lock);
  return SL_OK;
}

/* A bookie whose data belongs to another cluster is refused: its sweep
 * would take this cluster's tombstones for its own ledgers' (ids are only
 * unique within a cluster). */
static sl_status check_cluster(sl_md_service *md, Sluice__V1__NodeKind kind,
                               const Sluice__V1__BookieInfo *bookie, char cid[33],
                               sl_err *err) {
  sl_status st = cluster_id(md, cid, err);
  if (st != SL_OK || kind != SLUICE__V1__NODE_KIND__NODE_KIND_BOOKIE || bookie == NULL ||
      bookie->cluster_id[0] == '\0' || strcmp(bookie->cluster_id, cid) == 0)
    return st;
  sl_log(SL_LOG_WARN, "event=bookie_of_another_cluster bookie=%s its_cluster=%.40s "
         "cluster=%s", bookie->id, bookie->cluster_id, cid);
  return sl_err_set(err, SL_EPRECOND, "bookie %s: its data belongs to cluster %.40s, this "
                    "metadata service serves cluster %s; point it at its own cluster's "
                    "metadata service", bookie->id, bookie->cluster_id, cid);
}

/* cid: the caller's buffer, which resp->cluster_id points into. */
static sl_status open_session(sl_md_service *md, const Sluice__V1__OpenSessionRequest *req,
                              Sluice__V1__OpenSessionResponse *resp, char cid[33],
                              sl_err *err) {
  node_ref n;
  sl_status st = node_from(req->kind, req->broker, req->bookie, &n, err);
  if (st != SL_OK) return st;
  st = check_cluster(md, req->kind, req->bookie, cid, err);
  if (st != SL_OK) return st;
  resp->cluster_id = cid;
  int64_t ttl = req->ttl_seconds == 0 ? md->opts.default_ttl_s : (int64_t)req->ttl_seconds;
  if (ttl < 2 || ttl > md->opts.max_ttl_s)
    return sl_err_set(err, SL_EINVAL, "%s %s: ttl_seconds %" PRId64 " not in [2, %" PRId64 "]",
                      n.kind_name, n.id, ttl, md->opts.max_ttl_s);
  int64_t lease = 0, granted = 0, old = 0;
  st = sl_store_lease_grant(md->store, ttl, &lease, &granted, err);
  if (st != SL_OK) return sl_md_store_status(st);
  st = register_node(md, &n, lease, &old, err);
  if (st != SL_OK) {
    sl_store_lease_revoke(md->store, lease, NULL); /* invariant 4; best effort */
    return st == SL_EEXIST ? st : sl_md_store_status(st);
  }
  if (old != 0) {
    /* Invariant 3: the old session ends now rather than after its TTL. */
    sl_status rst = sl_store_lease_revoke(md->store, old, NULL);
    sl_log(rst == SL_OK || rst == SL_ENOTFOUND ? SL_LOG_INFO : SL_LOG_WARN,
           "event=session_taken_over kind=%s id=%s address=%s revoke=\"%s\"", n.kind_name,
           n.id, n.address, sl_status_str(rst));
  }
  resp->session_id = lease;
  resp->ttl_seconds = (uint32_t)granted;
  resp->took_over = old != 0;
  sl_log(SL_LOG_INFO, "event=session_open kind=%s id=%s ttl=%" PRId64 " took_over=%d",
         n.kind_name, n.id, granted, (int)(old != 0));
  return SL_OK;
}

SL_MD_HANDLER(open_session, OpenSessionRequest) {
  sl_err err = SL_ERR_INIT;
  Sluice__V1__OpenSessionResponse resp = SLUICE__V1__OPEN_SESSION_RESPONSE__INIT;
  char cid[33] = "";
  sl_status st = open_session(ctx, req, &resp, cid, &err);
  if (st == SL_OK)
    sl_metadata_service_open_session_reply(call, &resp);
  else
    sl_md_fail(call, st, &err);
}

SL_MD_HANDLER(keep_alive, KeepAliveRequest) {
  sl_md_service *md = ctx;
  sl_err err = SL_ERR_INIT;
  node_ref n;
  int64_t ttl = 0;
  sl_status st = node_key(req->kind, req->node_id, &n, &err);
  if (st == SL_OK) st = check_holder(md, &n, req->session_id, NULL, &err);
  if (st == SL_OK) st = sl_store_lease_keepalive(md->store, req->session_id, &ttl, &err);
  if (st == SL_ENOTFOUND) st = session_gone(&n, &err);
  if (st == SL_OK) {
    Sluice__V1__KeepAliveResponse resp = SLUICE__V1__KEEP_ALIVE_RESPONSE__INIT;
    resp.ttl_seconds = (uint32_t)ttl;
    sl_metadata_service_keep_alive_reply(call, &resp);
  } else {
    sl_md_fail(call, sl_md_store_status(st), &err);
  }
}

static sl_status update_node(sl_md_service *md, const Sluice__V1__UpdateNodeRequest *req,
                             sl_err *err) {
  node_ref n;
  char cid[33];
  sl_status st = check_session(req->session_id, err);
  if (st == SL_OK) st = node_from(req->kind, req->broker, req->bookie, &n, err);
  if (st == SL_OK) st = check_cluster(md, req->kind, req->bookie, cid, err);
  if (st != SL_OK) return st;
  size_t len;
  uint8_t *val = sl_md_pack(n.info, &len);
  /* Only the node itself writes its key, so a lost race is its own
   * concurrent update: retry on the fresh version. */
  for (int i = 0; i < SL_MD_RETRIES; i++) {
    int64_t rev = 0;
    st = check_holder(md, &n, req->session_id, &rev, err);
    if (st != SL_OK) break;
    st = sl_store_put(md->store, n.key.s, n.key.len, val, len, rev, req->session_id, NULL, err);
    if (st == SL_ENOTFOUND) st = session_gone(&n, err);
    if (st != SL_EVERSION) break;
  }
  free(val);
  if (st == SL_EVERSION)
    st = sl_err_set(err, SL_EVERSION, "%s %s: too many concurrent updates", n.kind_name, n.id);
  return sl_md_store_status(st);
}

SL_MD_HANDLER(update_node, UpdateNodeRequest) {
  sl_err err = SL_ERR_INIT;
  sl_status st = update_node(ctx, req, &err);
  if (st == SL_OK) {
    Sluice__V1__UpdateNodeResponse resp = SLUICE__V1__UPDATE_NODE_RESPONSE__INIT;
    sl_metadata_service_update_node_reply(call, &resp);
  } else {
    sl_md_fail(call, st, &err);
  }
}

SL_MD_HANDLER(close_session, CloseSessionRequest) {
  sl_md_service *md = ctx;
  sl_err err = SL_ERR_INIT;
  node_ref n;
  sl_status st = node_key(req->kind, req->node_id, &n, &err);
  if (st == SL_OK) st = check_holder(md, &n, req->session_id, NULL, &err);
  if (st == SL_OK) st = sl_store_lease_revoke(md->store, req->session_id, &err);
  if (st == SL_ENOTFOUND) st = session_gone(&n, &err);
  if (st == SL_OK) {
    Sluice__V1__CloseSessionResponse resp = SLUICE__V1__CLOSE_SESSION_RESPONSE__INIT;
    sl_log(SL_LOG_INFO, "event=session_closed kind=%s id=%s", n.kind_name, n.id);
    sl_metadata_service_close_session_reply(call, &resp);
  } else {
    sl_md_fail(call, sl_md_store_status(st), &err);
  }
}

SL_MD_HANDLER(list_brokers, ListBrokersRequest) {
  (void)req;
  sl_md_service *md = ctx;
  sl_err err = SL_ERR_INIT;
  sl_md_key prefix;
  sl_md_list l;
  sl_md_key_fmt(&prefix, "brokers/");
  sl_status st = sl_md_list_read(md, &prefix, &sluice__v1__broker_info__descriptor, &l, &err);
  if (st != SL_OK) {
    sl_md_fail(call, st, &err);
    return;
  }
  Sluice__V1__ListBrokersResponse resp = SLUICE__V1__LIST_BROKERS_RESPONSE__INIT;
  resp.n_brokers = l.n;
  resp.brokers = (Sluice__V1__BrokerInfo **)l.msgs;
  sl_metadata_service_list_brokers_reply(call, &resp);
  sl_md_list_release(&l);
}

SL_MD_HANDLER(list_bookies, ListBookiesRequest) {
  sl_md_service *md = ctx;
  sl_err err = SL_ERR_INIT;
  sl_md_key prefix;
  sl_md_list l;
  sl_md_key_fmt(&prefix, "bookies/");
  sl_status st = sl_md_list_read(md, &prefix, &sluice__v1__bookie_info__descriptor, &l, &err);
  if (st != SL_OK) {
    sl_md_fail(call, st, &err);
    return;
  }
  Sluice__V1__BookieInfo **keep = sl_xmalloc((l.n + 1) * sizeof(*keep));
  size_t n = 0;
  for (size_t i = 0; i < l.n; i++) {
    Sluice__V1__BookieInfo *b = (Sluice__V1__BookieInfo *)l.msgs[i];
    if (!req->writable_only || !b->read_only) keep[n++] = b;
  }
  Sluice__V1__ListBookiesResponse resp = SLUICE__V1__LIST_BOOKIES_RESPONSE__INIT;
  resp.n_bookies = n;
  resp.bookies = keep;
  sl_metadata_service_list_bookies_reply(call, &resp);
  free(keep);
  sl_md_list_release(&l);
}
