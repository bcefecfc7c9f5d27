/*
 * Managed-ledger lists (managed-ledgers/<partition>) and subscription
 * cursors (cursors/<partition>/<subscription>).
 *
 * Invariants
 *   1. Every update is a CAS on the version the caller read (0 = create)
 *      in one txn with a compare on the partition's epoch key, and carries
 *      the caller's epoch, which must be the partition's current one. So a
 *      broker that lost ownership can no longer move a cursor or change the
 *      ledger list, even if it still believes it owns the partition.
 *   2. Stored lists have strictly increasing ledger ids; stored acked
 *      ranges are sorted, non-overlapping, and each ledger has at most one
 *      AckedRanges.
 *   3. A list update adds no ledger at or below the stored list's last one
 *      (positions are ordered by ledger id, so a partition's message ids
 *      never go backwards), and none at all once the list is terminated;
 *      terminated never goes back to false.
 *   4. Deleting a cursor is guarded by the epoch like updating it.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "metadata/md_names.h"
#include "metadata/service_int.h"

#define MAX_LEDGERS 1000000
#define MAX_PROPERTIES 1024
#define MAX_PROPERTY_BYTES (64 * 1024)

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* The first id listed twice, or 0. */
static uint64_t first_duplicate(uint64_t *ids, size_t n) {
  qsort(ids, n, sizeof(*ids), cmp_u64);
  for (size_t i = 1; i < n; i++)
    if (ids[i] == ids[i - 1]) return ids[i];
  return 0;
}

/* ---- managed ledgers ---- */

static sl_status check_properties(const Sluice__V1__ManagedLedgerInfo *ml, sl_err *err) {
  if (ml->n_properties > MAX_PROPERTIES)
    return sl_err_set(err, SL_EINVAL, "managed ledger %s: %zu properties, limit is %d",
                      ml->partition, ml->n_properties, MAX_PROPERTIES);
  size_t bytes = 0;
  for (size_t i = 0; i < ml->n_properties; i++) {
    const Sluice__V1__KeyValue *kv = ml->properties[i];
    const char *k = kv->key ? kv->key : "", *v = kv->value ? kv->value : "";
    if (k[0] == '\0')
      return sl_err_set(err, SL_EINVAL, "managed ledger %s: property %zu has an empty key",
                        ml->partition, i);
    bytes += strlen(k) + strlen(v); /* each below the gRPC message limit */
    if (bytes > MAX_PROPERTY_BYTES)
      return sl_err_set(err, SL_EINVAL, "managed ledger %s: properties exceed %d bytes",
                        ml->partition, MAX_PROPERTY_BYTES);
    for (size_t j = 0; j < i; j++)
      if (strcmp(ml->properties[j]->key ? ml->properties[j]->key : "", k) == 0)
        return sl_err_set(err, SL_EINVAL, "managed ledger %s: property %s given twice",
                          ml->partition, k);
  }
  return SL_OK;
}

/* Invariant 2 for a list. */
static sl_status check_ledger_list(const Sluice__V1__ManagedLedgerInfo *ml, sl_err *err) {
  if (ml->n_ledgers > MAX_LEDGERS)
    return sl_err_set(err, SL_EINVAL, "managed ledger %s: %zu ledgers, limit is %d",
                      ml->partition, ml->n_ledgers, MAX_LEDGERS);
  for (size_t i = 0; i < ml->n_ledgers; i++) {
    const Sluice__V1__LedgerRef *r = ml->ledgers[i];
    if (r->ledger_id == 0)
      return sl_err_set(err, SL_EINVAL, "managed ledger %s: ledger %zu has id 0", ml->partition,
                        i);
    if (r->entries < 0)
      return sl_err_set(err, SL_EINVAL, "managed ledger %s: ledger %" PRIu64 " has %" PRId64
                        " entries", ml->partition, r->ledger_id, r->entries);
    if (i > 0 && r->ledger_id <= ml->ledgers[i - 1]->ledger_id)
      return sl_err_set(err, SL_EINVAL, "managed ledger %s: ledger %" PRIu64 " follows ledger %"
                        PRIu64 "; ids must increase along the list", ml->partition,
                        r->ledger_id, ml->ledgers[i - 1]->ledger_id);
  }
  return check_properties(ml, err);
}

static bool lists_ledger(const Sluice__V1__ManagedLedgerInfo *ml, uint64_t id) {
  for (size_t i = 0; i < ml->n_ledgers; i++)
    if (ml->ledgers[i]->ledger_id == id) return true;
  return false;
}

/* Invariant 3, against the stored list. */
static sl_status check_growth(const Sluice__V1__ManagedLedgerInfo *cur,
                              const Sluice__V1__ManagedLedgerInfo *ml, sl_err *err) {
  uint64_t last = cur->n_ledgers > 0 ? cur->ledgers[cur->n_ledgers - 1]->ledger_id : 0;
  if (cur->terminated && !ml->terminated)
    return sl_err_set(err, SL_EPRECOND, "managed ledger %s: terminated; it stays terminated",
                      ml->partition);
  for (size_t i = 0; i < ml->n_ledgers; i++) {
    uint64_t id = ml->ledgers[i]->ledger_id;
    if (lists_ledger(cur, id)) continue;
    if (cur->terminated)
      return sl_err_set(err, SL_EPRECOND, "managed ledger %s: terminated; ledger %" PRIu64
                        " cannot be added", ml->partition, id);
    if (id <= last)
      return sl_err_set(err, SL_EINVAL, "managed ledger %s: ledger %" PRIu64 " is below the "
                        "partition's last ledger %" PRIu64 "; ids must increase",
                        ml->partition, id, last);
  }
  return SL_OK;
}

static sl_status read_managed(sl_md_service *md, const char *partition,
                              Sluice__V1__ManagedLedgerInfo **out, int64_t *version,
                              sl_err *err) {
  sl_md_key key;
  sl_status st = sl_md_check_partition(partition, NULL, NULL, err);
  if (st != SL_OK) return st;
  sl_md_key_fmt(&key, "managed-ledgers/%s", partition);
  st = sl_md_read(md, &key, &sluice__v1__managed_ledger_info__descriptor,
                  (ProtobufCMessage **)out, version, NULL, err);
  if (st == SL_ENOTFOUND)
    return sl_err_set(err, st, "managed ledger %s: not found (never written)", partition);
  return st;
}

SL_MD_HANDLER(get_managed_ledger, GetManagedLedgerRequest) {
  sl_err err = SL_ERR_INIT;
  Sluice__V1__ManagedLedgerResponse resp = SLUICE__V1__MANAGED_LEDGER_RESPONSE__INIT;
  sl_status st = read_managed(ctx, req->partition, &resp.info, &resp.version, &err);
  if (st != SL_OK) {
    sl_md_fail(call, st, &err);
    return;
  }
  sl_metadata_service_get_managed_ledger_reply(call, &resp);
  protobuf_c_message_free_unpacked(&resp.info->base, NULL);
}

static sl_status update_managed(sl_md_service *md,
                                const Sluice__V1__UpdateManagedLedgerRequest *req,
                                Sluice__V1__ManagedLedgerInfo *ml, int64_t *version,
                                sl_err *err) {
  if (req->info == NULL) return sl_err_set(err, SL_EINVAL, "update managed ledger: no info given");
  *ml = *req->info; /* shallow; only the epoch changes */
  sl_status st = sl_md_check_partition(ml->partition, NULL, NULL, err);
  if (st != SL_OK) return st;
  if (req->expected_version < 0)
    return sl_err_set(err, SL_EINVAL, "managed ledger %s: negative expected_version",
                      ml->partition);
  if ((st = check_ledger_list(ml, err)) != SL_OK) return st;
  sl_md_epoch guard;
  if ((st = sl_md_epoch_check(md, ml->partition, req->epoch, &guard, err)) != SL_OK) return st;
  if (req->expected_version > 0) {
    Sluice__V1__ManagedLedgerInfo *cur = NULL;
    int64_t cur_version = 0;
    if ((st = read_managed(md, ml->partition, &cur, &cur_version, err)) != SL_OK) return st;
    if (cur_version != req->expected_version)
      st = sl_err_set(err, SL_EVERSION, "managed ledger %s: version %" PRId64 " is not the "
                      "current one; re-read and retry", ml->partition, req->expected_version);
    else
      st = check_growth(cur, ml, err);
    protobuf_c_message_free_unpacked(&cur->base, NULL);
    if (st != SL_OK) return st;
  }
  ml->epoch = req->epoch;
  char what[SL_MD_PARTITION_MAX + 32];
  snprintf(what, sizeof(what), "managed ledger %s", ml->partition);
  sl_md_key key;
  sl_md_key_fmt(&key, "managed-ledgers/%s", ml->partition);
  return sl_md_cas(md, what, &key, &ml->base, req->expected_version, &guard, version, err);
}

SL_MD_HANDLER(update_managed_ledger, UpdateManagedLedgerRequest) {
  sl_err err = SL_ERR_INIT;
  Sluice__V1__ManagedLedgerInfo ml;
  Sluice__V1__ManagedLedgerResponse resp = SLUICE__V1__MANAGED_LEDGER_RESPONSE__INIT;
  sl_status st = update_managed(ctx, req, &ml, &resp.version, &err);
  if (st != SL_OK) {
    sl_md_fail(call, st, &err);
    return;
  }
  resp.info = &ml;
  sl_metadata_service_update_managed_ledger_reply(call, &resp);
}

/* ---- cursors ---- */

/* Invariant 2 for one ledger's ranges (see AckedRanges in metadata.proto). */
static sl_status check_ranges(const char *what, const Sluice__V1__AckedRanges *r,
                              sl_err *err) {
  if (r->ledger_id == 0) return sl_err_set(err, SL_EINVAL, "%s: acked ranges in ledger 0", what);
  if (r->n_bounds % 2 != 0)
    return sl_err_set(err, SL_EINVAL, "%s: ledger %" PRIu64 ": odd number of range bounds",
                      what, r->ledger_id);
  uint64_t pos = 0;
  for (size_t i = 0; i < r->n_bounds; i++) {
    uint64_t d = r->bounds[i];
    /* Gaps between ranges (odd i > 0 is a range length; even i > 0 a gap)
     * must be at least 1, or two ranges would overlap or touch. */
    if (i > 0 && i % 2 == 0 && d == 0)
      return sl_err_set(err, SL_EINVAL, "%s: ledger %" PRIu64 ": ranges overlap at bound %zu",
                        what, r->ledger_id, i);
    if (d > (uint64_t)INT64_MAX - pos)
      return sl_err_set(err, SL_EINVAL, "%s: ledger %" PRIu64 ": range bound %zu out of range",
                        what, r->ledger_id, i);
    pos += d;
  }
  return SL_OK;
}

static sl_status check_cursor(const Sluice__V1__CursorInfo *c, char *what, size_t what_cap,
                              sl_err *err) {
  sl_status st = sl_md_check_partition(c->partition, NULL, NULL, err);
  if (st == SL_OK) st = sl_md_check_segment("subscription", c->subscription, err);
  if (st != SL_OK) return st;
  snprintf(what, what_cap, "cursor %s/%s", c->partition, c->subscription);
  if ((int)c->type < 0 || c->type > SLUICE__V1__SUBSCRIPTION_TYPE__SUBSCRIPTION_TYPE_KEY_SHARED)
    return sl_err_set(err, SL_EINVAL, "%s: unknown subscription type %d", what, (int)c->type);
  if (c->mark_delete != NULL && c->mark_delete->entry_id < -1)
    return sl_err_set(err, SL_EINVAL, "%s: mark-delete entry %" PRId64 " below -1", what,
                      c->mark_delete->entry_id);
  uint64_t *ids = sl_xmalloc((c->n_acked + 1) * sizeof(*ids));
  for (size_t i = 0; i < c->n_acked && st == SL_OK; i++) {
    ids[i] = c->acked[i]->ledger_id;
    st = check_ranges(what, c->acked[i], err);
  }
  uint64_t dup = st == SL_OK ? first_duplicate(ids, c->n_acked) : 0;
  if (dup != 0)
    st = sl_err_set(err, SL_EINVAL, "%s: ledger %" PRIu64 " has two sets of acked ranges", what,
                    dup);
  free(ids);
  return st;
}

static sl_status read_cursor(sl_md_service *md, const char *partition, const char *sub,
                             Sluice__V1__CursorInfo **out, int64_t *version, sl_err *err) {
  sl_status st = sl_md_check_partition(partition, NULL, NULL, err);
  if (st == SL_OK) st = sl_md_check_segment("subscription", sub, err);
  if (st != SL_OK) return st;
  sl_md_key key;
  sl_md_key_fmt(&key, "cursors/%s/%s", partition, sub);
  st = sl_md_read(md, &key, &sluice__v1__cursor_info__descriptor, (ProtobufCMessage **)out,
                  version, NULL, err);
  if (st == SL_ENOTFOUND) return sl_err_set(err, st, "cursor %s/%s: not found", partition, sub);
  return st;
}

SL_MD_HANDLER(get_cursor, GetCursorRequest) {
  sl_err err = SL_ERR_INIT;
  Sluice__V1__CursorResponse resp = SLUICE__V1__CURSOR_RESPONSE__INIT;
  sl_status st = read_cursor(ctx, req->partition, req->subscription, &resp.info, &resp.version,
                             &err);
  if (st != SL_OK) {
    sl_md_fail(call, st, &err);
    return;
  }
  sl_metadata_service_get_cursor_reply(call, &resp);
  protobuf_c_message_free_unpacked(&resp.info->base, NULL);
}

static sl_status update_cursor(sl_md_service *md, const Sluice__V1__UpdateCursorRequest *req,
                               int64_t *version, sl_err *err) {
  const Sluice__V1__CursorInfo *c = req->info;
  char what[SL_MD_PARTITION_MAX + SL_MD_NAME_MAX + 16];
  if (c == NULL) return sl_err_set(err, SL_EINVAL, "update cursor: no info given");
  sl_status st = check_cursor(c, what, sizeof(what), err);
  if (st != SL_OK) return st;
  if (req->expected_version < 0)
    return sl_err_set(err, SL_EINVAL, "%s: negative expected_version", what);
  sl_md_epoch guard;
  if ((st = sl_md_epoch_check(md, c->partition, req->epoch, &guard, err)) != SL_OK) return st;
  sl_md_key key;
  sl_md_key_fmt(&key, "cursors/%s/%s", c->partition, c->subscription);
  return sl_md_cas(md, what, &key, &c->base, req->expected_version, &guard, version, err);
}

SL_MD_HANDLER(update_cursor, UpdateCursorRequest) {
  sl_err err = SL_ERR_INIT;
  Sluice__V1__CursorResponse resp = SLUICE__V1__CURSOR_RESPONSE__INIT;
  sl_status st = update_cursor(ctx, req, &resp.version, &err);
  if (st != SL_OK) {
    sl_md_fail(call, st, &err);
    return;
  }
  resp.info = req->info;
  sl_metadata_service_update_cursor_reply(call, &resp);
}

/* Invariant 4. */
static sl_status delete_cursor(sl_md_service *md, const Sluice__V1__DeleteCursorRequest *req,
                               sl_err *err) {
  sl_status st = sl_md_check_partition(req->partition, NULL, NULL, err);
  if (st == SL_OK) st = sl_md_check_segment("subscription", req->subscription, err);
  if (st != SL_OK) return st;
  sl_md_epoch guard;
  if ((st = sl_md_epoch_check(md, req->partition, req->epoch, &guard, err)) != SL_OK) return st;
  char what[SL_MD_PARTITION_MAX + SL_MD_NAME_MAX + 16];
  snprintf(what, sizeof(what), "cursor %s/%s", req->partition, req->subscription);
  sl_md_key key;
  sl_md_key_fmt(&key, "cursors/%s/%s", req->partition, req->subscription);
  return sl_md_write(md, what, &key, NULL, SL_STORE_REV_EXISTS, &guard, NULL, NULL, err);
}

SL_MD_HANDLER(delete_cursor, DeleteCursorRequest) {
  sl_err err = SL_ERR_INIT;
  sl_status st = delete_cursor(ctx, req, &err);
  if (st != SL_OK) {
    sl_md_fail(call, st, &err);
    return;
  }
  Sluice__V1__DeleteCursorResponse resp = SLUICE__V1__DELETE_CURSOR_RESPONSE__INIT;
  sl_metadata_service_delete_cursor_reply(call, &resp);
}

SL_MD_HANDLER(list_cursors, ListCursorsRequest) {
  sl_err err = SL_ERR_INIT;
  sl_md_list l = {0};
  sl_status st = sl_md_check_partition(req->partition, NULL, NULL, &err);
  if (st == SL_OK) {
    sl_md_key prefix;
    sl_md_key_fmt(&prefix, "cursors/%s/", req->partition);
    st = sl_md_list_read(ctx, &prefix, &sluice__v1__cursor_info__descriptor, &l, &err);
  }
  if (st != SL_OK) {
    sl_md_fail(call, st, &err);
    return;
  }
  Sluice__V1__ListCursorsResponse resp = SLUICE__V1__LIST_CURSORS_RESPONSE__INIT;
  resp.n_cursors = l.n;
  resp.cursors = (Sluice__V1__CursorInfo **)l.msgs;
  sl_metadata_service_list_cursors_reply(call, &resp);
  sl_md_list_release(&l);
}
