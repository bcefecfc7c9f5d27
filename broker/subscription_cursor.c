/* Cursor ports of a subscription. See subscription_cursor.h. */
#include "broker/subscription_cursor.h"

static sl_ml_pos pos_of(sl_msg_id id) {
  sl_ml_pos p = {id.ledger_id, id.entry_id};
  return p;
}

/* The oldest entry not fully acked, or the one after the mark-delete when
 * everything in the chain is (the read port moves on to the next ledger
 * from a position past a ledger's end). */
static sl_ml_pos read_start(void *ctx) {
  sl_cursor *c = ctx;
  sl_ml_pos md = sl_cursor_mark_delete(c), next;
  if (sl_cursor_next_unacked(c, md, &next)) return next;
  md.entry_id++;
  return md;
}

static bool is_acked(void *ctx, sl_msg_id id, int32_t batch_size) {
  sl_cursor *c = ctx;
  if (batch_size <= 1) return sl_cursor_is_acked(c, pos_of(id));
  return sl_cursor_is_batch_acked(c, pos_of(id), (uint32_t)id.batch_index);
}

static sl_status ack(void *ctx, sl_msg_id id, int32_t batch_size,
                     sl_sub_done_cb cb, void *arg, sl_err *err) {
  return sl_cursor_ack(ctx, pos_of(id), (uint32_t)id.batch_index,
                       batch_size > 0 ? (uint32_t)batch_size : 1, cb, arg, err);
}

static sl_status ack_cumulative(void *ctx, sl_msg_id id, sl_sub_done_cb cb,
                                void *arg, sl_err *err) {
  return sl_cursor_ack_cumulative(ctx, pos_of(id), cb, arg, err);
}

static sl_status ack_before(void *ctx, sl_ml_pos to, sl_sub_done_cb cb, void *arg,
                            sl_err *err) {
  return sl_cursor_ack_before(ctx, to, cb, arg, err);
}

void sl_sub_cursor_ports(sl_cursor *c, sl_sub_ports *p) {
  p->cursor_ctx = c;
  p->read_start = read_start;
  p->is_acked = is_acked;
  p->ack = ack;
  p->ack_cumulative = ack_cumulative;
  p->ack_before = ack_before;
}
