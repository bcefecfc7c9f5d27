/*
 * The cursor ports of a subscription (subscription.h) wired to a durable
 * cursor (cursor.h): where reading starts, which messages are acked, and
 * acks whose callback runs once they are durable (the ack receipts of the
 * Consume stream).
 *
 * A cumulative ack names a message; the cursor acks whole entries, so the
 * entry that holds it is acked in full (its later batch messages too), as
 * a consumer acking cumulatively has received them in order.
 */
#ifndef SL_BROKER_SUBSCRIPTION_CURSOR_H
#define SL_BROKER_SUBSCRIPTION_CURSOR_H

#include "broker/cursor.h"
#include "broker/subscription.h"

/* Sets p->cursor_ctx to c and fills read_start, is_acked, ack and ack_cumulative
 * (the other ports are left as they are). c is retained: it must outlive
 * the subscription, and both are used on the cursor's serial. */
void sl_sub_cursor_ports(sl_cursor *c, sl_sub_ports *p);

#endif
