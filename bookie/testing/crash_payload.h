/*
 * Payloads for the storage crash test: the bytes of (ledger, entry) follow
 * from the ids alone, so the test can check what the child acknowledged
 * without the child sending the bytes.
 */
#ifndef SL_BOOKIE_TESTING_CRASH_PAYLOAD_H
#define SL_BOOKIE_TESTING_CRASH_PAYLOAD_H

#include <stddef.h>
#include <stdint.h>

#define SL_CRASH_PAYLOAD_MAX (80u << 10)

/* Mostly 0..4 KiB, every 17th entry 64..80 KiB. */
uint32_t sl_crash_payload_len(uint64_t ledger, int64_t entry);

/* Fills buf (at least sl_crash_payload_len bytes). */
void sl_crash_payload_fill(uint64_t ledger, int64_t entry, uint8_t *buf);

/* The ledger's password, which every add and fence of the child sends
 * ("crash-<ledger>", NUL-terminated in buf, at most n bytes). */
void sl_crash_password(uint64_t ledger, char *buf, size_t n);

#endif
