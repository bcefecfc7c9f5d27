/*
 * Partition ownership with epochs.
 *
 * owners/<p> holds the current OwnerInfo, bound to the owner's session
 * lease, so ownership ends with the session. epochs/<p> holds the OwnerInfo
 * of the last take-over with no lease: it survives owners, sessions and
 * service restarts, and its epoch is the partition's current epoch.
 *
 * Invariants
 *   1. Taking ownership is one txn: compare owners/<p> absent and
 *      epochs/<p> at the revision read, then put the owner (with lease) and
 *      the epoch + 1. Of two racing brokers exactly one txn succeeds, and
 *      each take-over's epoch is strictly higher than every earlier one.
 *   2. Writes that carry an epoch (ledgers, managed ledgers, cursors) compare
 *      epochs/<p> in their own txn (sl_md_cas with a guard), so a take-over
 *      committed first makes them fail with FAILED_PRECONDITION.
 *   3. Only a broker registered under the session it names may own.
 *   4. Only a partition of an existing topic may be owned: the take-over
 *      txn compares topics/<topic> at the revision whose partition count
 *      was checked, so a topic deleted (or re-created) meanwhile fails it.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "metadata/md_names.h"
#include "metadata/service_int.h"

static sl_status read_owner(sl_md_service *md, const char *partition, sl_md_key *key,
                            Sluice__V1__OwnerInfo **owner, int64_t *rev, sl_err *err) {
  sl_md_key_fmt(key, "owners/%s", partition);
  return sl_md_read(md, key, &sluice__v1__owner_info__descriptor, (ProtobufCMessage **)owner,
                    rev, NULL, err);
}

/* Invariant 3: the broker's registration, bound to this session. */
static sl_status registered_broker(sl_md_service *md, const char *id, int64_t session,
                                   Sluice__V1__BrokerInfo **out, sl_err *err) {
  sl_md_key key;
  int64_t lease = 0;
  sl_md_key_fmt(&key, "brokers/%s", id);
  sl_status st = sl_md_read(md, &key, &sluice__v1__broker_info__descriptor,
                            (ProtobufCMessage **)out, NULL, &lease, err);
  if (st == SL_ENOTFOUND)
    return sl_err_set(err, SL_EPRECOND, "broker %s: not registered (open a session first)", id);
  if (st != SL_OK) return st;
  if (lease != session) {
    protobuf_c_message_free_unpacked(&(*out)->base, NULL);
    *out = NULL;
    return sl_err_set(err, SL_EPRECOND,
                      "broker %s: registered by session %" PRId64 ", not %" PRId64, id, lease,
                      session);
  }
  return SL_OK;
}

/* Invariant 4: the topic exists and has this partition; *topic_key and
 * *topic_rev are for the take-over's compare. */
static sl_status check_topic(sl_md_service *md, const char *partition, sl_md_key *topic_key,
                             int64_t *topic_rev, sl_err *err) {
  size_t topic_len;
  int64_t index;
  sl_status st = sl_md_check_partition(partition, &topic_len, &index, err);
  if (st != SL_OK) return st;
  sl_md_key_fmt(topic_key, "topics/%.*s", (int)topic_len, partition);
  ProtobufCMessage *m = NULL;
  st = sl_md_read(md, topic_key, &sluice__v1__topic_info__descriptor, &m, topic_rev, NULL, err);
  if (st == SL_ENOTFOUND)
    return sl_err_set(err, st, "partition %s: topic %.*s not found", partition, (int)topic_len,
                      partition);
  if (st != SL_OK) return st;
  uint32_t n = ((Sluice__V1__TopicInfo *)m)->partitions;
  protobuf_c_message_free_unpacked(m, NULL);
  if (n == 0 && index >= 0)
    return sl_err_set(err, SL_ENOTFOUND, "partition %s: topic %.*s is not partitioned",
                      partition, (int)topic_len, partition);
  if (n > 0 && (index < 0 || index >= (int64_t)n))
    return sl_err_set(err, SL_ENOTFOUND, "partition %s: topic %.*s has partitions 0..%u",
                      partition, (int)topic_len, partition, n - 1);
  return SL_OK;
}

/* One attempt at the take-over txn; SL_EVERSION means someone raced us. */
static sl_status try_acquire(sl_md_service *md, const char *partition,
                             const sl_md_key *owner_key, const Sluice__V1__BrokerInfo *broker,
                             int64_t session, Sluice__V1__OwnerInfo *mine, sl_err *err) {
  sl_md_key topic_key;
  int64_t topic_rev = 0;
  sl_status st = check_topic(md, partition, &topic_key, &topic_rev, err);
  if (st != SL_OK) return st;
  sl_md_epoch ep;
  st = sl_md_epoch_read(md, partition, &ep, err);
  if (st != SL_OK) return st;
  if (ep.epoch == UINT64_MAX)
    return sl_err_set(err, SL_ERANGE, "partition %s: epochs exhausted", partition);
  mine->partition = (char *)partition;
  mine->broker_id = broker->id;
  mine->broker_address = broker->address;
  mine->epoch = ep.epoch + 1;
  mine->session_id = session;
  size_t len;
  uint8_t *val = sl_md_pack(&mine->base, &len);
  sl_store_cmp cmps[3] = {{owner_key->s, owner_key->len, SL_STORE_REV_ABSENT},
                          {ep.key.s, ep.key.len, ep.rev},
                          {topic_key.s, topic_key.len, topic_rev}};
  sl_store_op ops[2] = {{SL_STORE_OP_PUT, owner_key->s, owner_key->len, val, len, session},
                        {SL_STORE_OP_PUT, ep.key.s, ep.key.len, val, len, 0}};
  int64_t rev = 0;
  st = sl_store_txn(md->store, cmps, 3, ops, 2, &rev, err);
  free(val);
  if (st == SL_OK) sl_md_epoch_note(md, partition, rev, mine->epoch);
  if (st == SL_ENOTFOUND)
    return sl_err_set(err, st, "session %" PRId64 ": expired or closed; open a new session",
                      session);
  return st == SL_EVERSION ? st : sl_md_store_status(st);
}

static sl_status acquire(sl_md_service *md, const Sluice__V1__AcquireOwnershipRequest *req,
                         Sluice__V1__AcquireOwnershipResponse *resp,
                         Sluice__V1__OwnerInfo *mine, Sluice__V1__OwnerInfo **other,
                         Sluice__V1__BrokerInfo **reg, sl_err *err) {
  sl_status st = sl_md_check_partition(req->partition, NULL, NULL, err);
  if (st != SL_OK) return st;
  if (req->session_id <= 0)
    return sl_err_set(err, SL_EINVAL, "session id %" PRId64 ": must be positive", req->session_id);
  if (req->broker == NULL) return sl_err_set(err, SL_EINVAL, "no broker given");
  if ((st = sl_md_check_segment("broker id", req->broker->id, err)) != SL_OK) return st;
  if ((st = registered_broker(md, req->broker->id, req->session_id, reg, err)) != SL_OK)
    return st;
  sl_md_key key;
  for (int i = 0; i < SL_MD_RETRIES; i++) {
    int64_t rev;
    st = read_owner(md, req->partition, &key, other, &rev, err);
    if (st == SL_OK) {
      /* Owned already; by us means a retried call that had succeeded. */
      resp->acquired = (*other)->session_id == req->session_id;
      resp->owner = *other;
      return SL_OK;
    }
    if (st != SL_ENOTFOUND) return st;
    st = try_acquire(md, req->partition, &key, *reg, req->session_id, mine, err);
    if (st == SL_OK) {
      resp->acquired = true;
      resp->owner = mine;
      sl_log(SL_LOG_INFO, "event=ownership_acquired partition=%s broker=%s epoch=%" PRIu64,
             req->partition, req->broker->id, mine->epoch);
      return SL_OK;
    }
    if (st != SL_EVERSION) return st;
  }
  return sl_err_set(err, SL_EVERSION, "partition %s: ownership keeps changing; try again",
                    req->partition);
}

SL_MD_HANDLER(acquire_ownership, AcquireOwnershipRequest) {
  sl_err err = SL_ERR_INIT;
  Sluice__V1__AcquireOwnershipResponse resp = SLUICE__V1__ACQUIRE_OWNERSHIP_RESPONSE__INIT;
  Sluice__V1__OwnerInfo mine = SLUICE__V1__OWNER_INFO__INIT;
  Sluice__V1__OwnerInfo *other = NULL;
  Sluice__V1__BrokerInfo *reg = NULL;
  sl_status st = acquire(ctx, req, &resp, &mine, &other, &reg, &err);
  if (st == SL_OK)
    sl_metadata_service_acquire_ownership_reply(call, &resp);
  else
    sl_md_fail(call, st, &err);
  if (other != NULL) protobuf_c_message_free_unpacked(&other->base, NULL);
  if (reg != NULL) protobuf_c_message_free_unpacked(&reg->base, NULL);
}

SL_MD_HANDLER(lookup_owner, LookupOwnerRequest) {
  sl_err err = SL_ERR_INIT;
  sl_md_key key;
  Sluice__V1__OwnerInfo *owner = NULL;
  sl_status st = sl_md_check_partition(req->partition, NULL, NULL, &err);
  if (st == SL_OK) st = read_owner(ctx, req->partition, &key, &owner, NULL, &err);
  if (st == SL_ENOTFOUND) st = sl_err_set(&err, st, "partition %s: no owner", req->partition);
  if (st != SL_OK) {
    sl_md_fail(call, st, &err);
    return;
  }
  sl_metadata_service_lookup_owner_reply(call, owner);
  protobuf_c_message_free_unpacked(&owner->base, NULL);
}

static sl_status release_once(sl_md_service *md, const Sluice__V1__ReleaseOwnershipRequest *req,
                              sl_err *err) {
  sl_md_key key;
  Sluice__V1__OwnerInfo *owner = NULL;
  int64_t rev = 0;
  sl_status st = read_owner(md, req->partition, &key, &owner, &rev, err);
  if (st == SL_ENOTFOUND) return sl_err_set(err, st, "partition %s: no owner", req->partition);
  if (st != SL_OK) return st;
  if (owner->session_id != req->session_id)
    st = sl_err_set(err, SL_EPRECOND,
                    "partition %s: owned by broker %s (session %" PRId64 "), not session %" PRId64,
                    req->partition, owner->broker_id, owner->session_id, req->session_id);
  else if (owner->epoch != req->epoch)
    st = sl_err_set(err, SL_ESTALE_EPOCH,
                    "partition %s: epoch %" PRIu64 " is not the current epoch %" PRIu64,
                    req->partition, req->epoch, owner->epoch);
  protobuf_c_message_free_unpacked(&owner->base, NULL);
  if (st != SL_OK) return st;
  st = sl_store_delete(md->store, key.s, key.len, rev, NULL, err);
  if (st == SL_ENOTFOUND) return SL_EVERSION; /* lapsed meanwhile: look again */
  return st == SL_EVERSION ? st : sl_md_store_status(st);
}

SL_MD_HANDLER(release_ownership, ReleaseOwnershipRequest) {
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_md_check_partition(req->partition, NULL, NULL, &err);
  if (st == SL_OK && req->session_id <= 0)
    st = sl_err_set(&err, SL_EINVAL, "session id %" PRId64 ": must be positive", req->session_id);
  for (int i = 0; st == SL_OK; i++) {
    st = release_once(ctx, req, &err);
    if (st != SL_EVERSION || i + 1 == SL_MD_RETRIES) break;
    st = SL_OK;
  }
  if (st == SL_EVERSION)
    st = sl_err_set(&err, st, "partition %s: ownership keeps changing; try again", req->partition);
  if (st != SL_OK) {
    sl_md_fail(call, st, &err);
    return;
  }
  sl_log(SL_LOG_INFO, "event=ownership_released partition=%s epoch=%" PRIu64, req->partition,
         req->epoch);
  Sluice__V1__ReleaseOwnershipResponse resp = SLUICE__V1__RELEASE_OWNERSHIP_RESPONSE__INIT;
  sl_metadata_service_release_ownership_reply(call, &resp);
}
