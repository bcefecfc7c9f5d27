/*
 * What the producer, consumer and admin modules share inside libsluice:
 * the client's channels (one per broker address, kept until the client is
 * destroyed) and its call options.
 */
#ifndef SL_CLIENT_CLIENT_INT_H
#define SL_CLIENT_CLIENT_INT_H

#include "client/sluice.h"
#include "common/rpc_client.h"

/* The channel to `address` (NULL = the client's url), created on first use;
 * borrowed, valid until sl_client_destroy. */
sl_status sl_client_channel(sl_client *c, const char *address, sl_rpc_channel **out,
                            sl_err *err);

/* Call options with the client's timeout and wait_for_ready. */
sl_rpc_call_opts sl_client_call_opts(const sl_client *c);
int sl_client_timeout_ms(const sl_client *c);

/* Drops the cached owners of `topic` (a topic or a partition name, as
 * looked up). */
void sl_client_forget(sl_client *c, const char *topic);

/* Follows a structured redirect for one partition: its cached owner
 * becomes `address` (epoch 0 or no address: forgotten, so the next use
 * looks it up). A redirect older than the cached owner's epoch is stale
 * and ignored. */
void sl_client_redirect(sl_client *c, const char *partition, const char *address,
                        uint64_t epoch);

/* A partition's owner, looked up again when `refresh`: heap strings. */
sl_status sl_client_owner(sl_client *c, const char *partition, bool refresh,
                          char **address, sl_err *err);

/* Permanent failures: retrying the same request elsewhere cannot help. */
bool sl_client_permanent(sl_status st);

/* Random bits from the kernel, for generated names and the first
 * partition of a producer. */
uint64_t sl_client_random(void);

/* "<prefix>-<wall ms>-<16 hex digits of sl_client_random()>" into buf. The
 * random part is what keeps names apart: unseeded rand() gives every
 * process the same sequence (and a fork its parent's), so two producers
 * started in the same millisecond got one name, and with deduplication on
 * the broker would take the second's messages for the first's resends. */
void sl_client_gen_name(char *buf, size_t n, const char *prefix);

#endif
