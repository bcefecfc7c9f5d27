/*
 * A tiny authoritative DNS server for tests (test-only): UDP on 127.0.0.1,
 * one name, a fixed list of IPv4 addresses.
 *
 * Why: a test of "a DNS name with several addresses" needs such a name, and
 * the machine's /etc/hosts gives localhost one address only (and tests must
 * not edit it). gRPC's DNS resolver takes the server from the target's
 * authority, "dns://127.0.0.1:<stub port>/<name>:<port>", so a channel
 * resolves the name through real DNS queries to this stub.
 *
 * Answers
 *   A for `name` (any letter case): the addresses, in the order given, TTL 1.
 *   Any other type for `name` (AAAA, TXT, ...): no records (NOERROR).
 *   Any other name: NXDOMAIN. Malformed packets: no reply.
 *
 * Threads: one thread of its own serves queries until sl_dns_stub_stop.
 */
#ifndef SL_COMMON_TESTDATA_DNS_STUB_H
#define SL_COMMON_TESTDATA_DNS_STUB_H

#include <stddef.h>

#include "common/status.h"

typedef struct sl_dns_stub sl_dns_stub;

/* Starts serving `name` (copied; at most 253 characters) with `n` (1 to 8)
 * dotted IPv4 addresses (copied). SL_EINVAL for a bad name or address,
 * SL_EIO if the socket or thread cannot be made. */
sl_status sl_dns_stub_start(const char *name, const char *const *addrs, size_t n,
                            sl_dns_stub **out, sl_err *err);

/* The UDP port it serves on (127.0.0.1). */
int sl_dns_stub_port(const sl_dns_stub *d);

/* A queries for `name` answered so far. Any thread. */
long sl_dns_stub_a_queries(const sl_dns_stub *d);

/* Stops the thread, closes the socket, frees. NULL is a no-op. */
void sl_dns_stub_stop(sl_dns_stub *d);

#endif
