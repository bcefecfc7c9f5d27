/*
 * Namespaces (with their policies) and topics.
 *
 * Invariants
 *   1. A topic exists only inside an existing namespace: CreateTopic's txn
 *      requires the namespace key, and DeleteNamespace deletes only when no
 *      topic exists, checked atomically through the namespace-topics/<ns>
 *      guard key, which every CreateTopic rewrites in the same txn. So a
 *      topic created after DeleteNamespace looked changes the guard and
 *      makes the delete's txn fail and look again.
 *   2. Policies are stored complete; readers apply the documented defaults
 *      (0 = default) themselves.
 *   3. A re-created topic inherits nothing. DeleteTopic swaps topics/<t>
 *      for a tombstone deleted-topics/<t> in one txn (from then on nobody
 *      can take ownership: AcquireOwnership compares the topic key), then
 *      wipes each partition: its epoch goes up by one (the old owner's
 *      writes fail STALE_EPOCH) in one txn with deleting its owner and
 *      managed-ledger list and copying that list to reaping-ledgers/<p>;
 *      then the copy's ledgers are tombstoned (md_ledgers.c, invariant 8)
 *      and the copy goes; then each cursor goes after its cursor ledger's
 *      tombstone; last the topic's tombstone. Every step can be repeated,
 *      so the pass that finishes an interrupted delete redoes what is left.
 *      CreateTopic finishes a wipe that a crash interrupted before it
 *      creates, and compares the tombstone absent in its txn.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "metadata/md_names.h"
#include "metadata/service_int.h"

#define MAX_PERMISSIONS 1000
#define MAX_MESSAGE_LIMIT (128u << 20)

static sl_status check_permission(const char *ns, const Sluice__V1__Permission *p,
                                  sl_err *err) {
  char what[SL_MD_NAME_MAX + 32];
  snprintf(what, sizeof(what), "namespace %s: role", ns);
  if (p->role == NULL || p->role[0] == '\0')
    return sl_err_set(err, SL_EINVAL, "namespace %s: permission with an empty role", ns);
  sl_status st = sl_md_check_text(what, p->role, SL_MD_NAME_MAX, err);
  if (st != SL_OK) return st;
  if (p->n_actions > 16)
    return sl_err_set(err, SL_EINVAL, "namespace %s: role %s lists %zu actions", ns,
                      p->role, p->n_actions);
  for (size_t i = 0; i < p->n_actions; i++) {
    if ((int)p->actions[i] < 0 || p->actions[i] > SLUICE__V1__ACTION__ACTION_ADMIN)
      return sl_err_set(err, SL_EINVAL, "namespace %s: role %s: unknown action %d", ns,
                        p->role, (int)p->actions[i]);
  }
  return SL_OK;
}

static sl_status check_policies(const char *ns, const Sluice__V1__NamespacePolicies *p,
                                sl_err *err) {
  if (p == NULL) return SL_OK;
  char what[SL_MD_NAME_MAX + 16];
  snprintf(what, sizeof(what), "namespace %s", ns);
  sl_status st = sl_md_check_quorum(what, p->ensemble_size ? p->ensemble_size : 3,
                                    p->write_quorum ? p->write_quorum : 2,
                                    p->ack_quorum ? p->ack_quorum : 2, err);
  if (st != SL_OK) return st;
  if (p->retention_minutes < -1 || p->retention_megabytes < -1)
    return sl_err_set(err, SL_EINVAL, "%s: retention must be -1 (unlimited) or >= 0", what);
  if (p->backlog_read_bytes_per_second < -1)
    return sl_err_set(err, SL_EINVAL, "%s: backlog read rate must be -1 (unlimited) or >= 0",
                      what);
  if (p->message_ttl_seconds < 0 || p->backlog_quota_bytes < 0)
    return sl_err_set(err, SL_EINVAL, "%s: message TTL and backlog quota must be >= 0", what);
  if ((int)p->backlog_policy < 0 ||
      p->backlog_policy > SLUICE__V1__BACKLOG_POLICY__BACKLOG_POLICY_CONSUMER_EVICTION)
    return sl_err_set(err, SL_EINVAL, "%s: unknown backlog policy %d", what,
                      (int)p->backlog_policy);
  if (p->max_message_bytes > MAX_MESSAGE_LIMIT)
    return sl_err_set(err, SL_EINVAL, "%s: max_message_bytes %u exceeds %u", what,
                      p->max_message_bytes, MAX_MESSAGE_LIMIT);
  if (p->n_permissions > MAX_PERMISSIONS)
    return sl_err_set(err, SL_EINVAL, "%s: %zu permissions, limit is %d", what,
                      p->n_permissions, MAX_PERMISSIONS);
  for (size_t i = 0; i < p->n_permissions; i++) {
    if (p->permissions[i] == NULL) continue;
    if ((st = check_permission(ns, p->permissions[i], err)) != SL_OK) return st;
  }
  return SL_OK;
}

/* Writes a namespace (create when expected == 0) and fills *out's version. */
static sl_status put_namespace(sl_md_service *md, const char *name,
                               Sluice__V1__NamespacePolicies *policies, int64_t expected,
                               int64_t *version, sl_err *err) {
  sl_status st = sl_md_check_namespace(name, err);
  if (st == SL_OK) st = check_policies(name, policies, err);
  if (st != SL_OK) return st;
  Sluice__V1__NamespacePolicies empty = SLUICE__V1__NAMESPACE_POLICIES__INIT;
  Sluice__V1__Namespace ns = SLUICE__V1__NAMESPACE__INIT;
  ns.name = (char *)name;
  ns.policies = policies != NULL ? policies : &empty;
  char what[SL_MD_NAME_MAX + 16];
  snprintf(what, sizeof(what), "namespace %s", name);
  sl_md_key key;
  sl_md_key_fmt(&key, "namespaces/%s", name);
  return sl_md_cas(md, what, &key, &ns.base, expected, NULL, version, err);
}

static void reply_namespace(sl_rpc_call *call, const char *name,
                            Sluice__V1__NamespacePolicies *policies, int64_t version) {
  Sluice__V1__NamespacePolicies empty = SLUICE__V1__NAMESPACE_POLICIES__INIT;
  Sluice__V1__Namespace ns = SLUICE__V1__NAMESPACE__INIT;
  ns.name = (char *)name;
  ns.policies = policies != NULL ? policies : &empty;
  ns.version = version;
  /* Both methods answer a Namespace. */
  sl_rpc_call_finish(call, SL_OK, NULL, &ns.base);
}

SL_MD_HANDLER(create_namespace, CreateNamespaceRequest) {
  sl_err err = SL_ERR_INIT;
  int64_t version = 0;
  sl_status st = put_namespace(ctx, req->name, req->policies, 0, &version, &err);
  if (st != SL_OK) {
    sl_md_fail(call, st, &err);
    return;
  }
  sl_log(SL_LOG_INFO, "event=namespace_created namespace=%s", req->name);
  reply_namespace(call, req->name, req->policies, version);
}

SL_MD_HANDLER(set_namespace_policies, SetNamespacePoliciesRequest) {
  sl_err err = SL_ERR_INIT;
  int64_t version = 0;
  sl_status st = req->expected_version > 0
                     ? put_namespace(ctx, req->name, req->policies, req->expected_version,
                                     &version, &err)
                     : sl_err_set(&err, SL_EINVAL,
                                  "namespace %.64s: expected_version must be the version read",
                                  req->name ? req->name : "");
  if (st != SL_OK) {
    sl_md_fail(call, st, &err);
    return;
  }
  reply_namespace(call, req->name, req->policies, version);
}

/* Reads one namespace; SL_ENOTFOUND names it. */
static sl_status read_namespace(sl_md_service *md, const char *name,
                                Sluice__V1__Namespace **out, sl_err *err) {
  sl_md_key key;
  int64_t version = 0;
  sl_status st = sl_md_check_namespace(name, err);
  if (st != SL_OK) return st;
  sl_md_key_fmt(&key, "namespaces/%s", name);
  st = sl_md_read(md, &key, &sluice__v1__namespace__descriptor, (ProtobufCMessage **)out,
                  &version, NULL, err);
  if (st == SL_ENOTFOUND) return sl_err_set(err, st, "namespace %s: not found", name);
  if (st == SL_OK) (*out)->version = version;
  return st;
}

SL_MD_HANDLER(get_namespace, GetNamespaceRequest) {
  sl_err err = SL_ERR_INIT;
  Sluice__V1__Namespace *ns = NULL;
  sl_status st = read_namespace(ctx, req->name, &ns, &err);
  if (st != SL_OK) {
    sl_md_fail(call, st, &err);
    return;
  }
  sl_metadata_service_get_namespace_reply(call, ns);
  protobuf_c_message_free_unpacked(&ns->base, NULL);
}

SL_MD_HANDLER(list_namespaces, ListNamespacesRequest) {
  (void)req;
  sl_err err = SL_ERR_INIT;
  sl_md_key prefix;
  sl_md_list l;
  sl_md_key_fmt(&prefix, "namespaces/");
  sl_status st = sl_md_list_read(ctx, &prefix, &sluice__v1__namespace__descriptor, &l, &err);
  if (st != SL_OK) {
    sl_md_fail(call, st, &err);
    return;
  }
  for (size_t i = 0; i < l.n; i++) ((Sluice__V1__Namespace *)l.msgs[i])->version = l.versions[i];
  Sluice__V1__ListNamespacesResponse resp = SLUICE__V1__LIST_NAMESPACES_RESPONSE__INIT;
  resp.n_namespaces = l.n;
  resp.namespaces = (Sluice__V1__Namespace **)l.msgs;
  sl_metadata_service_list_namespaces_reply(call, &resp);
  sl_md_list_release(&l);
}

/* One attempt: SL_EVERSION means a concurrent change, look again. */
static sl_status delete_namespace_once(sl_md_service *md, const char *name, sl_err *err) {
  sl_md_key key, guard, topics;
  sl_store_kv kv = {0};
  int64_t guard_rev = 0, ns_rev;
  sl_md_key_fmt(&key, "namespaces/%s", name);
  sl_md_key_fmt(&guard, "namespace-topics/%s", name);
  sl_md_key_fmt(&topics, "topics/%s/", name);
  /* Guard first: a topic created after this read changes it (invariant 1). */
  sl_status st = sl_store_get(md->store, guard.s, guard.len, &kv, err);
  if (st == SL_OK) guard_rev = kv.mod_revision;
  sl_store_kv_release(&kv);
  if (st != SL_OK && st != SL_ENOTFOUND) return sl_md_store_status(st);
  st = sl_store_get(md->store, key.s, key.len, &kv, err);
  if (st == SL_ENOTFOUND) return sl_err_set(err, st, "namespace %s: not found", name);
  if (st != SL_OK) return sl_md_store_status(st);
  ns_rev = kv.mod_revision;
  sl_store_kv_release(&kv);
  sl_store_range_result r;
  st = sl_store_range(md->store, topics.s, topics.len, NULL, 0, 1, &r, err);
  if (st != SL_OK) return sl_md_store_status(st);
  if (r.n > 0)
    st = sl_err_set(err, SL_EPRECOND, "namespace %s: still holds topics (%s, ...); delete them first",
                    name, (const char *)r.kvs[0].key + topics.len - strlen(name) - 1);
  sl_store_range_result_release(&r);
  if (st != SL_OK) return st;
  sl_store_cmp cmps[2] = {{key.s, key.len, ns_rev}, {guard.s, guard.len, guard_rev}};
  sl_store_op ops[2] = {{SL_STORE_OP_DELETE, key.s, key.len, NULL, 0, 0},
                        {SL_STORE_OP_DELETE, guard.s, guard.len, NULL, 0, 0}};
  st = sl_store_txn(md->store, cmps, 2, ops, 2, NULL, err);
  return st == SL_EVERSION ? st : sl_md_store_status(st);
}

SL_MD_HANDLER(delete_namespace, DeleteNamespaceRequest) {
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_md_check_namespace(req->name, &err);
  for (int i = 0; st == SL_OK; i++) {
    st = delete_namespace_once(ctx, req->name, &err);
    if (st != SL_EVERSION || i + 1 == SL_MD_RETRIES) break;
    st = SL_OK;
  }
  if (st == SL_EVERSION)
    st = sl_err_set(&err, st, "namespace %s: kept changing; try again", req->name);
  if (st != SL_OK) {
    sl_md_fail(call, st, &err);
    return;
  }
  sl_log(SL_LOG_INFO, "event=namespace_deleted namespace=%s", req->name);
  Sluice__V1__DeleteNamespaceResponse resp = SLUICE__V1__DELETE_NAMESPACE_RESPONSE__INIT;
  sl_metadata_service_delete_namespace_reply(call, &resp);
}

/* ---- topics ---- */

/* Partition p of a topic with n partitions (n 0: the topic itself). */
static void partition_name(char *buf, size_t cap, const char *topic, uint32_t n, uint32_t p) {
  if (n == 0)
    snprintf(buf, cap, "%s", topic);
  else
    snprintf(buf, cap, "%s-partition-%u", topic, p);
}

/* Invariant 3 for one partition: bump its epoch and drop its owner and
 * list in one txn, which also copies the list to reaping-ledgers/<p>. The
 * list is compared at the revision read, so an owner's last CAS before the
 * bump cannot slip a ledger past the copy. */
static sl_status bump_partition(sl_md_service *md, const char *partition, sl_err *err) {
  sl_md_key owner, ml, reap;
  sl_md_key_fmt(&owner, "owners/%s", partition);
  sl_md_key_fmt(&ml, "managed-ledgers/%s", partition);
  sl_md_key_fmt(&reap, "reaping-ledgers/%s", partition);
  sl_status st = SL_EVERSION;
  for (int i = 0; i < SL_MD_RETRIES && st == SL_EVERSION; i++) {
    sl_md_epoch ep;
    if ((st = sl_md_epoch_read(md, partition, &ep, err)) != SL_OK) return st;
    if (ep.epoch == UINT64_MAX)
      return sl_err_set(err, SL_ERANGE, "partition %s: epochs exhausted", partition);
    sl_store_kv list = {0};
    st = sl_store_get(md->store, ml.s, ml.len, &list, err);
    if (st != SL_OK && st != SL_ENOTFOUND) return sl_md_store_status(st);
    bool has_list = st == SL_OK;
    Sluice__V1__OwnerInfo bump = SLUICE__V1__OWNER_INFO__INIT;
    bump.partition = (char *)partition;
    bump.epoch = ep.epoch + 1;
    size_t len;
    uint8_t *val = sl_md_pack(&bump.base, &len);
    sl_store_cmp cmps[2] = {{ep.key.s, ep.key.len, ep.rev},
                            {ml.s, ml.len, has_list ? list.mod_revision : SL_STORE_REV_ABSENT}};
    sl_store_op ops[4] = {{SL_STORE_OP_PUT, ep.key.s, ep.key.len, val, len, 0},
                          {SL_STORE_OP_DELETE, owner.s, owner.len, NULL, 0, 0},
                          {SL_STORE_OP_DELETE, ml.s, ml.len, NULL, 0, 0},
                          {SL_STORE_OP_PUT, reap.s, reap.len, list.value, list.value_len, 0}};
    int64_t rev = 0;
    st = sl_store_txn(md->store, cmps, 2, ops, has_list ? 4 : 3, &rev, err);
    free(val);
    sl_store_kv_release(&list);
    if (st == SL_OK) sl_md_epoch_note(md, partition, rev, bump.epoch);
  }
  if (st == SL_EVERSION)
    return sl_err_set(err, st, "partition %s: epoch keeps changing; try again", partition);
  return sl_md_store_status(st);
}

/* Tombstones the ledgers of the list copied by bump_partition, then drops
 * the copy; a failure leaves it for the next pass of the delete. */
static sl_status reap_list(sl_md_service *md, const char *partition, sl_err *err) {
  sl_md_key reap;
  sl_md_key_fmt(&reap, "reaping-ledgers/%s", partition);
  sl_store_kv kv = {0};
  sl_status st = sl_store_get(md->store, reap.s, reap.len, &kv, err);
  if (st == SL_ENOTFOUND) return SL_OK;
  if (st != SL_OK) return sl_md_store_status(st);
  ProtobufCMessage *m = NULL;
  st = sl_md_unpack(&kv, &sluice__v1__managed_ledger_info__descriptor, &m, err);
  if (st == SL_OK) {
    const Sluice__V1__ManagedLedgerInfo *list = (const Sluice__V1__ManagedLedgerInfo *)m;
    uint64_t *ids = sl_xcalloc(list->n_ledgers + 1, sizeof(*ids));
    for (size_t i = 0; i < list->n_ledgers; i++) ids[i] = list->ledgers[i]->ledger_id;
    st = sl_md_ledgers_tombstone(md, ids, list->n_ledgers, err);
    if (st == SL_OK)
      sl_log(SL_LOG_INFO, "event=partition_ledgers_tombstoned partition=%s ledgers=%zu",
             partition, list->n_ledgers);
    free(ids);
    protobuf_c_message_free_unpacked(m, NULL);
  } else {
    /* It names no ledger we could find; keeping it would fail every later
     * pass of this delete. */
    sl_log(SL_LOG_WARN, "event=reaping_list_unreadable partition=%s error=\"%s\"", partition,
           sl_err_msg(err, st));
    st = SL_OK;
  }
  if (st == SL_OK) {
    st = sl_store_delete(md->store, kv.key, kv.key_len, kv.mod_revision, NULL, err);
    if (st == SL_ENOTFOUND || st == SL_EVERSION) st = SL_OK; /* another pass did it */
    st = sl_md_store_status(st);
  }
  sl_store_kv_release(&kv);
  return st;
}

/* Deletes the partition's cursors, each after tombstoning its cursor
 * ledger, if any (nobody can write them any more). */
static sl_status wipe_cursors(sl_md_service *md, const char *partition, sl_err *err) {
  sl_md_key prefix;
  sl_md_key_fmt(&prefix, "cursors/%s/", partition);
  for (;;) {
    sl_store_range_result r;
    sl_status st =
        sl_store_range(md->store, prefix.s, prefix.len, NULL, 0, SL_STORE_TXN_MAX, &r, err);
    if (st != SL_OK) return sl_md_store_status(st);
    uint64_t ledgers[SL_STORE_TXN_MAX];
    size_t n_ledgers = 0;
    for (size_t i = 0; i < r.n; i++) {
      ProtobufCMessage *m = NULL;
      /* A record that does not decode names no ledger we could find. */
      if (sl_md_unpack(&r.kvs[i], &sluice__v1__cursor_info__descriptor, &m, err) != SL_OK)
        continue;
      const Sluice__V1__CursorInfo *c = (const Sluice__V1__CursorInfo *)m;
      if (c->ack_ledger != NULL && c->ack_ledger->ledger_id != 0)
        ledgers[n_ledgers++] = c->ack_ledger->ledger_id;
      protobuf_c_message_free_unpacked(m, NULL);
    }
    st = sl_md_ledgers_tombstone(md, ledgers, n_ledgers, err);
    sl_store_op ops[SL_STORE_TXN_MAX];
    for (size_t i = 0; i < r.n; i++)
      ops[i] = (sl_store_op){SL_STORE_OP_DELETE, r.kvs[i].key, r.kvs[i].key_len, NULL, 0, 0};
    size_t n = r.n;
    if (st == SL_OK && n > 0) st = sl_md_store_status(sl_store_txn(md->store, NULL, 0, ops, n,
                                                                   NULL, err));
    sl_store_range_result_release(&r);
    if (st != SL_OK) return st;
    if (n == 0) return SL_OK;
  }
}

static sl_status wipe_partition(sl_md_service *md, const char *partition, sl_err *err) {
  sl_status st = bump_partition(md, partition, err);
  if (st == SL_OK) st = reap_list(md, partition, err);
  if (st == SL_OK) st = wipe_cursors(md, partition, err);
  return st;
}

/* Wipes every partition of a deleted topic, then drops its tombstone
 * (compared at the revision read, so a newer delete's stays). */
static sl_status finish_delete(sl_md_service *md, const char *name, const sl_store_kv *tomb,
                               sl_err *err) {
  ProtobufCMessage *m = NULL;
  sl_status st = sl_md_unpack(tomb, &sluice__v1__topic_info__descriptor, &m, err);
  if (st != SL_OK) return st;
  uint32_t n = ((Sluice__V1__TopicInfo *)m)->partitions;
  protobuf_c_message_free_unpacked(m, NULL);
  char partition[SL_MD_PARTITION_MAX + 1];
  for (uint32_t p = 0; p < (n == 0 ? 1 : n) && st == SL_OK; p++) {
    partition_name(partition, sizeof(partition), name, n, p);
    st = wipe_partition(md, partition, err);
  }
  if (st != SL_OK) return st;
  st = sl_store_delete(md->store, tomb->key, tomb->key_len, tomb->mod_revision, NULL, err);
  if (st == SL_ENOTFOUND || st == SL_EVERSION) st = SL_OK; /* someone else finished */
  if (st == SL_OK) sl_log(SL_LOG_INFO, "event=topic_wiped topic=%s partitions=%u", name, n);
  return sl_md_store_status(st);
}

/* Finishes an interrupted delete of `name`, if any (invariant 3). *found
 * (may be NULL) says whether there was one. */
static sl_status finish_pending_delete(sl_md_service *md, const char *name, bool *found,
                                       sl_err *err) {
  sl_md_key key;
  sl_md_key_fmt(&key, "deleted-topics/%s", name);
  sl_store_kv kv = {0};
  sl_status st = sl_store_get(md->store, key.s, key.len, &kv, err);
  if (found != NULL) *found = st == SL_OK;
  if (st == SL_ENOTFOUND) return SL_OK;
  if (st == SL_OK) st = finish_delete(md, name, &kv, err);
  sl_store_kv_release(&kv);
  return sl_md_store_status(st);
}

static sl_status create_topic(sl_md_service *md, const Sluice__V1__CreateTopicRequest *req,
                              Sluice__V1__TopicInfo *info, sl_err *err) {
  size_t ns_len;
  sl_status st = sl_md_check_topic(req->name, &ns_len, err);
  if (st != SL_OK) return st;
  if (req->partitions > SL_MD_MAX_PARTITIONS)
    return sl_err_set(err, SL_EINVAL, "topic %s: %u partitions, limit is %d", req->name,
                      req->partitions, SL_MD_MAX_PARTITIONS);
  if ((st = finish_pending_delete(md, req->name, NULL, err)) != SL_OK) return st;
  sl_md_key ns, guard, key, tomb;
  sl_md_key_fmt(&ns, "namespaces/%.*s", (int)ns_len, req->name);
  sl_md_key_fmt(&guard, "namespace-topics/%.*s", (int)ns_len, req->name);
  sl_md_key_fmt(&key, "topics/%s", req->name);
  sl_md_key_fmt(&tomb, "deleted-topics/%s", req->name);
  info->name = req->name;
  info->partitions = req->partitions;
  info->create_time_ms = sl_clock_wall_ms();
  size_t len;
  uint8_t *val = sl_md_pack(&info->base, &len);
  sl_store_cmp cmps[3] = {{ns.s, ns.len, SL_STORE_REV_EXISTS},
                          {key.s, key.len, SL_STORE_REV_ABSENT},
                          {tomb.s, tomb.len, SL_STORE_REV_ABSENT}};
  sl_store_op ops[2] = {{SL_STORE_OP_PUT, key.s, key.len, val, len, 0},
                        {SL_STORE_OP_PUT, guard.s, guard.len, "", 0, 0}};
  st = sl_store_txn(md->store, cmps, 3, ops, 2, &info->version, err);
  free(val);
  if (st != SL_EVERSION) return sl_md_store_status(st);
  bool deleting = false;
  if ((st = finish_pending_delete(md, req->name, &deleting, err)) != SL_OK) return st;
  if (deleting)
    return sl_err_set(err, SL_EVERSION, "topic %s: was being deleted; try again", req->name);
  /* Which compare failed? */
  sl_store_kv kv = {0};
  st = sl_store_get(md->store, ns.s, ns.len, &kv, err);
  sl_store_kv_release(&kv);
  if (st == SL_ENOTFOUND)
    return sl_err_set(err, st, "topic %s: namespace %.*s not found", req->name, (int)ns_len,
                      req->name);
  if (st != SL_OK) return sl_md_store_status(st);
  return sl_err_set(err, SL_EEXIST, "topic %s: already exists", req->name);
}

SL_MD_HANDLER(create_topic, CreateTopicRequest) {
  sl_err err = SL_ERR_INIT;
  Sluice__V1__TopicInfo info = SLUICE__V1__TOPIC_INFO__INIT;
  sl_status st = create_topic(ctx, req, &info, &err);
  if (st != SL_OK) {
    sl_md_fail(call, st, &err);
    return;
  }
  sl_log(SL_LOG_INFO, "event=topic_created topic=%s partitions=%u", req->name, req->partitions);
  sl_metadata_service_create_topic_reply(call, &info);
}

SL_MD_HANDLER(get_topic, GetTopicRequest) {
  sl_err err = SL_ERR_INIT;
  sl_md_key key;
  ProtobufCMessage *m = NULL;
  int64_t version = 0;
  sl_status st = sl_md_check_topic(req->name, NULL, &err);
  if (st == SL_OK) {
    sl_md_key_fmt(&key, "topics/%s", req->name);
    st = sl_md_read(ctx, &key, &sluice__v1__topic_info__descriptor, &m, &version, NULL, &err);
    if (st == SL_ENOTFOUND) st = sl_err_set(&err, st, "topic %s: not found", req->name);
  }
  if (st != SL_OK) {
    sl_md_fail(call, st, &err);
    return;
  }
  ((Sluice__V1__TopicInfo *)m)->version = version;
  sl_metadata_service_get_topic_reply(call, (Sluice__V1__TopicInfo *)m);
  protobuf_c_message_free_unpacked(m, NULL);
}

SL_MD_HANDLER(list_topics, ListTopicsRequest) {
  sl_err err = SL_ERR_INIT;
  Sluice__V1__Namespace *ns = NULL;
  sl_md_list l = {0};
  sl_status st = read_namespace(ctx, req->namespace_, &ns, &err);
  if (st == SL_OK) {
    sl_md_key prefix;
    sl_md_key_fmt(&prefix, "topics/%s/", req->namespace_);
    st = sl_md_list_read(ctx, &prefix, &sluice__v1__topic_info__descriptor, &l, &err);
  }
  if (ns != NULL) protobuf_c_message_free_unpacked(&ns->base, NULL);
  if (st != SL_OK) {
    sl_md_fail(call, st, &err);
    return;
  }
  for (size_t i = 0; i < l.n; i++) ((Sluice__V1__TopicInfo *)l.msgs[i])->version = l.versions[i];
  Sluice__V1__ListTopicsResponse resp = SLUICE__V1__LIST_TOPICS_RESPONSE__INIT;
  resp.n_topics = l.n;
  resp.topics = (Sluice__V1__TopicInfo **)l.msgs;
  sl_metadata_service_list_topics_reply(call, &resp);
  sl_md_list_release(&l);
}

/* Invariant 3. A delete that finds only a tombstone finishes it and
 * succeeds (a retry after a crash or UNAVAILABLE). */
static sl_status delete_topic(sl_md_service *md, const char *name, sl_err *err) {
  size_t ns_len;
  sl_status st = sl_md_check_topic(name, &ns_len, err);
  if (st != SL_OK) return st;
  sl_md_key key, tomb, guard;
  sl_md_key_fmt(&key, "topics/%s", name);
  sl_md_key_fmt(&tomb, "deleted-topics/%s", name);
  sl_md_key_fmt(&guard, "namespace-topics/%.*s", (int)ns_len, name);
  sl_store_kv kv = {0};
  for (int i = 0; i < SL_MD_RETRIES; i++) {
    st = sl_store_get(md->store, key.s, key.len, &kv, err);
    if (st == SL_ENOTFOUND) {
      bool found = false;
      st = finish_pending_delete(md, name, &found, err);
      if (st == SL_OK && !found) st = sl_err_set(err, SL_ENOTFOUND, "topic %s: not found", name);
      return st;
    }
    if (st != SL_OK) return sl_md_store_status(st);
    sl_store_cmp cmp = {key.s, key.len, kv.mod_revision};
    sl_store_op ops[3] = {{SL_STORE_OP_DELETE, key.s, key.len, NULL, 0, 0},
                          {SL_STORE_OP_PUT, tomb.s, tomb.len, kv.value, kv.value_len, 0},
                          {SL_STORE_OP_PUT, guard.s, guard.len, "", 0, 0}};
    int64_t rev = 0;
    st = sl_store_txn(md->store, &cmp, 1, ops, 3, &rev, err);
    if (st == SL_OK) {
      sl_store_kv done = {(uint8_t *)tomb.s, tomb.len, kv.value, kv.value_len, rev, rev, 0};
      st = finish_delete(md, name, &done, err);
    }
    sl_store_kv_release(&kv);
    if (st != SL_EVERSION) return sl_md_store_status(st);
  }
  return sl_err_set(err, SL_EVERSION, "topic %s: kept changing; try again", name);
}

SL_MD_HANDLER(delete_topic, DeleteTopicRequest) {
  sl_err err = SL_ERR_INIT;
  sl_status st = delete_topic(ctx, req->name, &err);
  if (st != SL_OK) {
    sl_md_fail(call, st, &err);
    return;
  }
  sl_log(SL_LOG_INFO, "event=topic_deleted topic=%s", req->name);
  Sluice__V1__DeleteTopicResponse resp = SLUICE__V1__DELETE_TOPIC_RESPONSE__INIT;
  sl_metadata_service_delete_topic_reply(call, &resp);
}
