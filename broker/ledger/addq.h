/*
 * The writer's queue of pending adds: entries appended and not yet reported,
 * in entry order, each with the slots that acknowledged it. Pure data
 * structure (no I/O, no locks); the writer owns one and touches it only on
 * its serial.
 *
 * Invariants
 *  1. Entries are consecutive: the queue holds first .. first + len - 1,
 *     pushed in that order and popped only from the front.
 *  2. An ack counts only from a slot of the entry's write set
 *     (sl_quorum_write_set); others are ignored.
 *  3. sl_addq_forget_slot() drops a slot's acks from every pending entry, so
 *     a replaced bookie's acks never complete an entry of the new segment.
 */
#ifndef SL_BROKER_LEDGER_ADDQ_H
#define SL_BROKER_LEDGER_ADDQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "broker/ledger/quorum.h"
#include "common/status.h"

typedef struct sl_addq_item {
  int64_t entry;
  uint64_t acked;    /* slots that acknowledged it */
  int64_t sent_ms;   /* when it was last sent (add timeouts) */
  void *data;        /* the writer's request; not owned by the queue */
} sl_addq_item;

typedef struct sl_addq {
  sl_quorum q;
  sl_addq_item *ring;
  size_t cap;
  size_t head;       /* ring index of the front */
  size_t len;
  int64_t first;     /* entry id at the front (the next one when empty) */
} sl_addq;

/* An empty queue whose first entry will be first_entry. */
void sl_addq_init(sl_addq *q, const sl_quorum *quorum, int64_t first_entry);

/* Frees the ring (not the items' data). */
void sl_addq_release(sl_addq *q);

/* Appends the next entry (id sl_addq_next()). SL_ENOMEM if the ring cannot
 * grow; the queue is then unchanged. */
sl_status sl_addq_push(sl_addq *q, void *data, int64_t now_ms);

/* The id the next push gets. */
int64_t sl_addq_next(const sl_addq *q);

/* The pending entry, or NULL if it is not in the queue. */
sl_addq_item *sl_addq_get(sl_addq *q, int64_t entry);

/* The front item or NULL. */
sl_addq_item *sl_addq_front(sl_addq *q);

/* Records slot's ack of entry (invariant 2). False if the entry is not
 * pending or the slot is not in its write set. */
bool sl_addq_ack(sl_addq *q, int64_t entry, uint32_t slot);

/* True if the front entry has its Qa acks. */
bool sl_addq_front_complete(const sl_addq *q);

/* Removes the front item and returns its data. The queue must not be empty. */
void *sl_addq_pop(sl_addq *q);

/* Invariant 3. */
void sl_addq_forget_slot(sl_addq *q, uint32_t slot);

#endif
