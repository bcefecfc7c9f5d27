#include "broker/ledger/placement.h"

#include <stdlib.h>
#include <string.h>

static const char *rack_of(const sl_placement_bookie *b) {
  return b->rack ? b->rack : "";
}

static bool id_in(const char *id, const char *const *ids, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(id, ids[i]) == 0) return true;
  return false;
}

static bool id_taken(const char *id, const sl_placement_bookie *taken,
                     size_t n) {
  for (size_t i = 0; i < n; i++)
    if (strcmp(id, taken[i].id) == 0) return true;
  return false;
}

/* Bookies of the ensemble so far on `rack`: the taken ones and the picks. */
static size_t rack_load(const char *rack, const sl_placement_bookie *cands,
                        const size_t *picked, size_t n_picked,
                        const sl_placement_bookie *taken, size_t n_taken) {
  size_t load = 0;
  for (size_t i = 0; i < n_taken; i++)
    if (strcmp(rack, rack_of(&taken[i])) == 0) load++;
  for (size_t i = 0; i < n_picked; i++)
    if (strcmp(rack, rack_of(&cands[picked[i]])) == 0) load++;
  return load;
}

/* Rule 3: true if a goes before b. */
static bool better(const sl_placement_bookie *a, const sl_placement_bookie *b) {
  if (a->usage != b->usage) return a->usage < b->usage;
  if (a->free_bytes != b->free_bytes) return a->free_bytes > b->free_bytes;
  return strcmp(a->id, b->id) < 0;
}

sl_status sl_placement_pick(const sl_placement_bookie *cands, size_t n,
                            const char *const *exclude, size_t n_exclude,
                            const sl_placement_bookie *taken, size_t n_taken,
                            size_t want, size_t *out, sl_err *err) {
  bool *usable = calloc(n ? n : 1, sizeof(*usable));
  if (!usable) return sl_err_set(err, SL_ENOMEM, "ledger: placement");
  size_t n_usable = 0;
  for (size_t i = 0; i < n; i++) {
    /* A duplicate id in the list (two registrations seen) is used once. */
    bool dup = false;
    for (size_t j = 0; j < i && !dup; j++)
      dup = usable[j] && strcmp(cands[j].id, cands[i].id) == 0;
    usable[i] = !dup && !cands[i].read_only &&
                !id_in(cands[i].id, exclude, n_exclude) &&
                !id_taken(cands[i].id, taken, n_taken);
    n_usable += usable[i];
  }
  if (n_usable < want) {
    free(usable);
    return sl_err_set(err, SL_EUNAVAIL,
                      "ledger: %zu usable bookies, need %zu", n_usable, want);
  }
  for (size_t k = 0; k < want; k++) {
    size_t best = n, best_load = 0;
    for (size_t i = 0; i < n; i++) {
      if (!usable[i]) continue;
      size_t load = rack_load(rack_of(&cands[i]), cands, out, k, taken, n_taken);
      if (best == n || load < best_load ||
          (load == best_load && better(&cands[i], &cands[best]))) {
        best = i;
        best_load = load;
      }
    }
    out[k] = best;
    usable[best] = false;
  }
  free(usable);
  return SL_OK;
}
