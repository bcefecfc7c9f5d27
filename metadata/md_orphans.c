/*
 * Orphan ledgers: the rule by which the auditor (md_auditor.c) tells that
 * a ledger of a partition can never be used, so it may be tombstoned.
 *
 * A broker creates a ledger (owner_epoch = its epoch) and only then names
 * it in the partition's list (or, for a cursor ledger, in a cursor); it
 * appends nothing before that write (broker/managed_ledger.h). A crash, a
 * failed list write or a lost ownership between the two leaves a ledger
 * nobody names: its record and whatever its bookies hold would stay
 * forever, because only a tombstone frees them (md_ledgers.c, invariant 8).
 *
 * The rule: ledger L of partition P, created at epoch E, is an orphan when
 * P's epoch is now above E and neither P's list nor any cursor of P names
 * L.
 *
 * Why that is safe:
 *   1. Every write that can name L (list or cursor) is a txn comparing P's
 *      epoch key with the writer's epoch (md_cursors.c, invariant 1), and
 *      brokers only ever name ledgers they created themselves, at their own
 *      epoch (a new owner recovers only what the list already names). So
 *      once P's epoch is above E, no write names L any more.
 *   2. The epoch is read before the list and the cursors, so these reads
 *      show every write that ever named L and is still in place.
 *   3. Epochs of a partition never go down, not even across a topic's
 *      deletion and re-creation (md_namespaces.c, invariant 3), so "above
 *      E" stays true.
 * A ledger whose epoch is still current is left alone, even if no list
 * names it yet: its owner may be between the two steps. It is collected
 * after the partition's next change of owner.
 *
 * Costs: one check reads P's epoch once per pass, and P's list and
 * cursors once per pass only if P has a ledger of an older epoch.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "common/map.h"
#include "metadata/md_names.h"
#include "metadata/service_int.h"

typedef struct part {
  bool valid;      /* a partition name the service accepts */
  uint64_t epoch;  /* read first (point 2) */
  bool loaded;     /* named holds the list's and the cursors' ledgers */
  uint64_t *named; /* sorted */
  size_t n_named;
} part;

struct sl_md_orphans {
  sl_md_service *md;
  sl_map parts; /* partition -> part *, heap */
};

sl_md_orphans *sl_md_orphans_new(sl_md_service *md) {
  sl_md_orphans *o = sl_xcalloc(1, sizeof(*o));
  o->md = md;
  sl_map_init(&o->parts);
  return o;
}

static void part_free(void *v) {
  part *p = v;
  free(p->named);
  free(p);
}

void sl_md_orphans_free(sl_md_orphans *o) {
  if (o == NULL) return;
  sl_map_release(&o->parts, part_free);
  free(o);
}

static int cmp_u64(const void *x, const void *y) {
  uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
  return a < b ? -1 : a > b;
}

static void add_named(part *p, size_t *cap, uint64_t id) {
  if (p->n_named == *cap) {
    *cap = *cap ? 2 * *cap : 16;
    p->named = sl_xrealloc(p->named, *cap * sizeof(*p->named));
  }
  p->named[p->n_named++] = id;
}

/* The ledgers partition's list and cursors name (point 2: after the
 * epoch). A record that does not decode fails the check: it may name L. */
static sl_status load_named(sl_md_orphans *o, const char *partition, part *p, sl_err *err) {
  size_t cap = 0;
  free(p->named); /* a failed load left a part */
  p->named = NULL;
  p->n_named = 0;
  sl_md_key key;
  sl_md_key_fmt(&key, "managed-ledgers/%s", partition);
  ProtobufCMessage *m = NULL;
  sl_status st = sl_md_read(o->md, &key, &sluice__v1__managed_ledger_info__descriptor, &m,
                            NULL, NULL, err);
  if (st == SL_OK) {
    const Sluice__V1__ManagedLedgerInfo *ml = (const Sluice__V1__ManagedLedgerInfo *)m;
    for (size_t i = 0; i < ml->n_ledgers; i++) add_named(p, &cap, ml->ledgers[i]->ledger_id);
    protobuf_c_message_free_unpacked(m, NULL);
  } else if (st != SL_ENOTFOUND) {
    return st;
  }
  sl_md_list cursors = {0};
  sl_md_key_fmt(&key, "cursors/%s/", partition);
  st = sl_md_list_read(o->md, &key, &sluice__v1__cursor_info__descriptor, &cursors, err);
  if (st != SL_OK) return st;
  for (size_t i = 0; i < cursors.n; i++) {
    const Sluice__V1__CursorInfo *c = (const Sluice__V1__CursorInfo *)cursors.msgs[i];
    if (c->ack_ledger != NULL && c->ack_ledger->ledger_id != 0)
      add_named(p, &cap, c->ack_ledger->ledger_id);
  }
  sl_md_list_release(&cursors);
  if (p->n_named > 0) qsort(p->named, p->n_named, sizeof(*p->named), cmp_u64);
  p->loaded = true;
  return SL_OK;
}

static sl_status part_of(sl_md_orphans *o, const char *partition, part **out, sl_err *err) {
  part *p = sl_map_get(&o->parts, partition);
  if (p == NULL) {
    p = sl_xcalloc(1, sizeof(*p));
    p->valid = sl_md_check_partition(partition, NULL, NULL, NULL) == SL_OK;
    if (p->valid) {
      sl_md_epoch ep;
      sl_status st = sl_md_epoch_read(o->md, partition, &ep, err);
      if (st != SL_OK) {
        free(p);
        return st;
      }
      p->epoch = ep.epoch;
    }
    sl_status st = sl_map_put(&o->parts, partition, p, NULL);
    SL_ASSERT(st == SL_OK); /* servers abort on out-of-memory */
  }
  *out = p;
  return SL_OK;
}

sl_status sl_md_orphan_check(sl_md_orphans *o, uint64_t id, const Sluice__V1__LedgerInfo *l,
                             bool *orphan, sl_err *err) {
  *orphan = false;
  if (l->partition == NULL || l->partition[0] == '\0') return SL_OK; /* nobody's */
  part *p;
  sl_status st = part_of(o, l->partition, &p, err);
  if (st != SL_OK || !p->valid || l->owner_epoch >= p->epoch) return st;
  if (!p->loaded && (st = load_named(o, l->partition, p, err)) != SL_OK) return st;
  *orphan = p->n_named == 0 ||
            bsearch(&id, p->named, p->n_named, sizeof(*p->named), cmp_u64) == NULL;
  return SL_OK;
}
