/*
 * Auto-recovery work (DESIGN.md §4; the contract is proto/metadata.proto,
 * "auto-recovery"): workers claim the auditor's work items and finish them.
 * The auditor itself, which writes the items, is md_auditor.c.
 *
 *   under-replicated/<ledger id>      UnderReplicated; written by the
 *                                     auditor only
 *   rereplication-claims/<ledger id>  the claiming node's id (text), bound
 *                                     to the worker's session lease
 *   auditor                           the auditing replica's id (text),
 *                                     bound to that replica's lease
 *
 * Invariants
 *   1. A claim is bound to the lease of the session that made it (the
 *      session id is the lease id), so it goes when that session closes,
 *      lapses or is taken over, and the item is free again.
 *   2. A claim is created only in a txn that finds the item at the revision
 *      the claimer read and no claim: of two racing claimers one wins, and
 *      the item handed out is the one stored at that moment.
 *   3. A claim exists only while its item does: it is created comparing the
 *      item, and every delete of an item (FinishRereplication done, the
 *      auditor) deletes the claim in the same txn.
 *   4. Only the claiming session ends a claim: FinishRereplication applies
 *      the holder rule, then compares the claim's lease with the session,
 *      and deletes at the revision it read.
 *   5. No answer names a session id: claims hold the node id.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "metadata/service_int.h"

bool sl_md_parse_id(const char *s, uint64_t *id) {
  if (s[0] < '1' || s[0] > '9') return false; /* ids start at 1, no leading 0 */
  uint64_t v = 0;
  for (; *s != '\0'; s++) {
    if (*s < '0' || *s > '9') return false;
    unsigned d = (unsigned)(*s - '0');
    if (v > (UINT64_MAX - d) / 10) return false;
    v = v * 10 + d;
  }
  *id = v;
  return true;
}

static sl_md_key item_key(uint64_t id) {
  sl_md_key k;
  sl_md_key_fmt(&k, SL_MD_ITEMS "%" PRIu64, id);
  return k;
}

static sl_md_key claim_key(uint64_t id) {
  sl_md_key k;
  sl_md_key_fmt(&k, SL_MD_CLAIMS "%" PRIu64, id);
  return k;
}

/* The ledger id a listed key names (the part after `prefix`); false for a
 * key that is not one of ours. */
static bool key_id(const sl_store_kv *kv, const sl_md_key *prefix, uint64_t *id) {
  return kv->key_len > prefix->len && sl_md_parse_id((const char *)kv->key + prefix->len, id);
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* The ledger ids of the claims, sorted. Caller frees *ids. */
static sl_status read_claims(sl_md_service *md, uint64_t **ids, size_t *n, sl_err *err) {
  sl_md_key prefix;
  sl_md_kvs l;
  sl_md_key_fmt(&prefix, SL_MD_CLAIMS);
  sl_status st = sl_md_kvs_read(md, &prefix, &l, err);
  if (st != SL_OK) return st;
  *ids = sl_xmalloc(l.n * sizeof(**ids) + 1);
  *n = 0;
  for (size_t i = 0; i < l.n; i++)
    if (key_id(&l.kvs[i], &prefix, &(*ids)[*n])) (*n)++;
  sl_md_kvs_release(&l);
  qsort(*ids, *n, sizeof(**ids), cmp_u64);
  return SL_OK;
}

static bool has_id(const uint64_t *ids, size_t n, uint64_t id) {
  return bsearch(&id, ids, n, sizeof(*ids), cmp_u64) != NULL;
}

/* Where a claim starts looking (the key it starts from, the index in a
 * page): items are handed out in random order (the contract), so one that
 * keeps failing does not starve the rest. Quality does not matter;
 * xorshift64 per thread, seeded from the clock. */
static size_t random_index(size_t n) {
  static __thread uint64_t x;
  if (x == 0) x = (uint64_t)sl_clock_mono_ns() | 1;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return (size_t)(x % n);
}

static sl_status no_session(const Sluice__V1__ClaimRereplicationRequest *req, sl_err *err) {
  bool broker = req->kind == SLUICE__V1__NODE_KIND__NODE_KIND_BROKER;
  return sl_err_set(err, SL_ENOTFOUND,
                    "%s %s: not registered (session expired or closed); open a new session",
                    broker ? "broker" : "bookie", req->node_id);
}

/* Invariant 2: claims the item in kv for the caller's session. SL_EVERSION:
 * the item changed or someone else claimed it first; try the next. */
static sl_status claim_one(sl_md_service *md, const Sluice__V1__ClaimRereplicationRequest *req,
                           uint64_t id, const sl_store_kv *kv, sl_err *err) {
  sl_md_key claim = claim_key(id);
  sl_store_cmp cmps[2] = {{kv->key, kv->key_len, kv->mod_revision},
                          {claim.s, claim.len, SL_STORE_REV_ABSENT}};
  sl_store_op op = {SL_STORE_OP_PUT, claim.s, claim.len, req->node_id, strlen(req->node_id),
                    req->session_id};
  sl_status st = sl_store_txn(md->store, cmps, 2, &op, 1, NULL, err);
  if (st == SL_ENOTFOUND) return no_session(req, err); /* the lease is gone */
  return st == SL_EVERSION ? st : sl_md_store_status(st);
}

/* Tries the unclaimed items from a random one on; *work stays NULL when
 * none could be claimed. */
static sl_status claim_any(sl_md_service *md, const Sluice__V1__ClaimRereplicationRequest *req,
                           const sl_md_kvs *items, const sl_md_key *prefix, const uint64_t *claimed,
                           size_t n_claimed, Sluice__V1__UnderReplicated **work, sl_err *err) {
  *work = NULL;
  size_t first = items->n > 0 ? random_index(items->n) : 0;
  for (size_t k = 0; k < items->n; k++) {
    const sl_store_kv *kv = &items->kvs[(first + k) % items->n];
    uint64_t id;
    if (!key_id(kv, prefix, &id) || has_id(claimed, n_claimed, id)) continue;
    ProtobufCMessage *m = NULL;
    sl_err uerr = SL_ERR_INIT;
    if (sl_md_unpack(kv, &sluice__v1__under_replicated__descriptor, &m, &uerr) != SL_OK) {
      /* Not claimable; the auditor rewrites it on its next pass. */
      sl_log(SL_LOG_WARN, "event=rereplication_item_corrupt ledger=%" PRIu64 " error=\"%s\"", id,
             uerr.msg);
      continue;
    }
    sl_status st = claim_one(md, req, id, kv, err);
    if (st == SL_OK) {
      *work = (Sluice__V1__UnderReplicated *)m;
      return SL_OK;
    }
    protobuf_c_message_free_unpacked(m, NULL);
    if (st != SL_EVERSION) return st;
  }
  return SL_OK;
}

/* Items read per page while looking for one to claim: a claim reads a page
 * or two, not every item (a lost bookie can leave tens of thousands). */
#define CLAIM_PAGE 64

static bool key_before(const sl_store_kv *kv, const sl_md_key *bound) {
  size_t n = kv->key_len < bound->len ? kv->key_len : bound->len;
  int c = memcmp(kv->key, bound->s, n);
  return c < 0 || (c == 0 && kv->key_len < bound->len);
}

/* Tries the items from `from` (NULL: the first) up to `to` (NULL: the
 * last), a page at a time, until one is claimed (*work set). */
static sl_status claim_range(sl_md_service *md, const Sluice__V1__ClaimRereplicationRequest *req,
                             const sl_md_key *prefix, const sl_md_key *from, const sl_md_key *to,
                             const uint64_t *claimed, size_t n_claimed,
                             Sluice__V1__UnderReplicated **work, sl_err *err) {
  uint8_t *start = NULL;
  size_t start_len = from ? from->len : 0;
  if (from) {
    start = sl_xmalloc(start_len);
    memcpy(start, from->s, start_len);
  }
  sl_status st = SL_OK;
  while (*work == NULL) {
    sl_store_range_result r;
    st = sl_store_range(md->store, prefix->s, prefix->len, start, start_len, CLAIM_PAGE, &r, err);
    if (st != SL_OK) {
      st = sl_md_store_status(st);
      break;
    }
    size_t n = r.n;
    while (to && n > 0 && !key_before(&r.kvs[n - 1], to)) n--;
    sl_md_kvs page = {r.kvs, n, r.revision};
    st = claim_any(md, req, &page, prefix, claimed, n_claimed, work, err);
    bool more = n == r.n && sl_md_next_page(&r, &start, &start_len);
    sl_store_range_result_release(&r);
    if (st != SL_OK || !more) break;
  }
  free(start);
  return st;
}

static sl_status claim(sl_md_service *md, const Sluice__V1__ClaimRereplicationRequest *req,
                       Sluice__V1__UnderReplicated **work, sl_err *err) {
  *work = NULL;
  sl_status st = sl_md_check_holder(md, req->kind, req->node_id, req->session_id, err);
  if (st != SL_OK) return st;
  uint64_t *claimed = NULL; /* one per busy worker: few */
  size_t n_claimed = 0;
  if ((st = read_claims(md, &claimed, &n_claimed, err)) != SL_OK) return st;
  /* Items are handed out in random order (the contract): from a random
   * key on to the last, then from the first up to it. */
  sl_md_key prefix, at;
  sl_md_key_fmt(&prefix, SL_MD_ITEMS);
  sl_md_key_fmt(&at, SL_MD_ITEMS "%zu", random_index(SIZE_MAX));
  st = claim_range(md, req, &prefix, &at, NULL, claimed, n_claimed, work, err);
  if (st == SL_OK && *work == NULL)
    st = claim_range(md, req, &prefix, NULL, &at, claimed, n_claimed, work, err);
  free(claimed);
  return st;
}

SL_MD_HANDLER(claim_rereplication, ClaimRereplicationRequest) {
  sl_err err = SL_ERR_INIT;
  Sluice__V1__UnderReplicated *work = NULL;
  sl_status st = claim(ctx, req, &work, &err);
  if (st != SL_OK) {
    sl_md_fail(call, st, &err);
    return;
  }
  Sluice__V1__ClaimRereplicationResponse resp = SLUICE__V1__CLAIM_REREPLICATION_RESPONSE__INIT;
  resp.claimed = work != NULL;
  resp.work = work;
  if (work != NULL)
    sl_log(SL_LOG_INFO, "event=rereplication_claimed ledger=%" PRIu64 " node=%s",
           work->ledger_id, req->node_id);
  sl_metadata_service_claim_rereplication_reply(call, &resp);
  if (work != NULL) protobuf_c_message_free_unpacked(&work->base, NULL);
}

static sl_status no_claim(uint64_t id, sl_err *err) {
  return sl_err_set(err, SL_ENOTFOUND, "ledger %" PRIu64 ": this session holds no claim on it"
                    " (it lapsed or was never made; the work may be another's now)", id);
}

/* Invariant 4; done also removes the item, in the same txn (invariant 3). */
static sl_status finish(sl_md_service *md, const Sluice__V1__FinishRereplicationRequest *req,
                        sl_err *err) {
  sl_status st = sl_md_check_holder(md, req->kind, req->node_id, req->session_id, err);
  if (st != SL_OK) return st;
  if (req->ledger_id == 0) return sl_err_set(err, SL_EINVAL, "ledger id 0: ids start at 1");
  sl_md_key claim = claim_key(req->ledger_id), item = item_key(req->ledger_id);
  sl_store_kv kv = {0};
  st = sl_store_get(md->store, claim.s, claim.len, &kv, err);
  if (st == SL_ENOTFOUND) return no_claim(req->ledger_id, err);
  if (st != SL_OK) return sl_md_store_status(st);
  int64_t lease = kv.lease, rev = kv.mod_revision;
  sl_store_kv_release(&kv);
  if (lease != req->session_id) return no_claim(req->ledger_id, err);
  sl_store_cmp cmp = {claim.s, claim.len, rev};
  sl_store_op ops[2] = {{SL_STORE_OP_DELETE, claim.s, claim.len, NULL, 0, 0},
                        {SL_STORE_OP_DELETE, item.s, item.len, NULL, 0, 0}};
  st = sl_store_txn(md->store, &cmp, 1, ops, req->done ? 2 : 1, NULL, err);
  /* The claim went meanwhile (lapsed, or its item was removed). */
  if (st == SL_EVERSION) return no_claim(req->ledger_id, err);
  return sl_md_store_status(st);
}

SL_MD_HANDLER(finish_rereplication, FinishRereplicationRequest) {
  sl_err err = SL_ERR_INIT;
  sl_status st = finish(ctx, req, &err);
  if (st != SL_OK) {
    sl_md_fail(call, st, &err);
    return;
  }
  sl_log(SL_LOG_INFO, "event=rereplication_finished ledger=%" PRIu64 " node=%s done=%d",
         req->ledger_id, req->node_id, (int)req->done);
  Sluice__V1__FinishRereplicationResponse resp = SLUICE__V1__FINISH_REREPLICATION_RESPONSE__INIT;
  sl_metadata_service_finish_rereplication_reply(call, &resp);
}

static int cmp_item(const void *a, const void *b) {
  const Sluice__V1__UnderReplicated *x = *(Sluice__V1__UnderReplicated *const *)a;
  const Sluice__V1__UnderReplicated *y = *(Sluice__V1__UnderReplicated *const *)b;
  return cmp_u64(&x->ledger_id, &y->ledger_id);
}

/* The auditor's id, "" if none; caller frees. */
static sl_status read_auditor(sl_md_service *md, char **id, sl_err *err) {
  sl_md_key key;
  sl_store_kv kv = {0};
  sl_md_key_fmt(&key, SL_MD_AUDITOR);
  sl_status st = sl_store_get(md->store, key.s, key.len, &kv, err);
  if (st == SL_ENOTFOUND) {
    *id = sl_xstrdup("");
    return SL_OK;
  }
  if (st != SL_OK) return sl_md_store_status(st);
  *id = sl_xstrdup((const char *)kv.value); /* NUL-terminated by the store */
  sl_store_kv_release(&kv);
  return SL_OK;
}

/* Keeps the claimed ids that name a listed item (items sorted by id): the
 * two lists are read one after the other, and a claim never outlives its
 * item (invariant 3), so a claim without one was removed in between. */
static size_t keep_listed(uint64_t *claimed, size_t n, const sl_md_list *items) {
  size_t kept = 0;
  for (size_t i = 0; i < n; i++) {
    Sluice__V1__UnderReplicated key = SLUICE__V1__UNDER_REPLICATED__INIT, *k = &key;
    key.ledger_id = claimed[i];
    if (bsearch(&k, items->msgs, items->n, sizeof(*items->msgs), cmp_item) != NULL)
      claimed[kept++] = claimed[i];
  }
  return kept;
}

SL_MD_HANDLER(list_under_replicated, ListUnderReplicatedRequest) {
  (void)req;
  sl_md_service *md = ctx;
  sl_err err = SL_ERR_INIT;
  sl_md_key prefix;
  sl_md_list items;
  uint64_t *claimed = NULL;
  size_t n_claimed = 0;
  char *auditor = NULL;
  sl_md_key_fmt(&prefix, SL_MD_ITEMS);
  sl_status st = read_claims(md, &claimed, &n_claimed, &err);
  if (st == SL_OK) st = read_auditor(md, &auditor, &err);
  if (st == SL_OK)
    st = sl_md_list_read(md, &prefix, &sluice__v1__under_replicated__descriptor, &items, &err);
  if (st != SL_OK) {
    free(claimed);
    free(auditor);
    sl_md_fail(call, st, &err);
    return;
  }
  /* Keys sort as text ("10" < "9"); the answer is by number. */
  qsort(items.msgs, items.n, sizeof(*items.msgs), cmp_item);
  Sluice__V1__ListUnderReplicatedResponse resp =
      SLUICE__V1__LIST_UNDER_REPLICATED_RESPONSE__INIT;
  resp.n_items = items.n;
  resp.items = (Sluice__V1__UnderReplicated **)items.msgs;
  resp.n_claimed = keep_listed(claimed, n_claimed, &items);
  resp.claimed = claimed;
  resp.auditor = auditor;
  sl_metadata_service_list_under_replicated_reply(call, &resp);
  /* items.versions and items.keys no longer match msgs after the sort,
   * but release only frees them one by one. */
  sl_md_list_release(&items);
  free(claimed);
  free(auditor);
}
