/*
 * Ensemble placement: which bookies a new ledger, or a replacement in an
 * ensemble change, goes to. Pure: the caller hands in the candidates (from
 * ListBookies) and what is already taken; no I/O, deterministic.
 *
 * Rules, in order
 *  1. Never a read-only bookie, an excluded id or an id already in the
 *     ensemble (`taken`).
 *  2. Spread over racks: each pick goes to a rack with the fewest bookies of
 *     the ensemble so far (taken ones count), so with enough racks every
 *     bookie is on its own rack, and otherwise racks fill evenly. Bookies
 *     with no rack share the rack "".
 *  3. Among equals: the least used (fewest writer handles of this client on
 *     it), then the most free bytes, then the smallest id.
 */
#ifndef SL_BROKER_LEDGER_PLACEMENT_H
#define SL_BROKER_LEDGER_PLACEMENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

typedef struct sl_placement_bookie {
  const char *id;        /* borrowed for the call */
  const char *rack;      /* NULL = "" */
  bool read_only;
  uint64_t free_bytes;
  uint32_t usage;        /* writer handles of this client on it */
} sl_placement_bookie;

/*
 * Picks `want` bookies out of cands[0 .. n) and writes their indices to
 * out[0 .. want), in pick order. `exclude` (ids never to use) and `taken`
 * (ids already in the ensemble, whose racks count for rule 2) are arrays of
 * n_exclude and n_taken ids (borrowed; may be NULL when the count is 0).
 * Errors: SL_EUNAVAIL ("ledger: 2 usable bookies, need 3"), nothing written.
 */
sl_status sl_placement_pick(const sl_placement_bookie *cands, size_t n,
                            const char *const *exclude, size_t n_exclude,
                            const sl_placement_bookie *taken, size_t n_taken,
                            size_t want, size_t *out, sl_err *err);

#endif
