/*
 * Encryption of entry payloads at rest (DESIGN.md §8, optional): what a
 * bookie journals and stores is AES-256-GCM ciphertext; what it answers
 * reads with is the plaintext, so brokers and re-replication see no
 * difference.
 *
 * The nonce is derived from the entry's place, (ledger, entry): the first
 * 12 bytes of SHA-256 over a label and both ids. So
 *  1. a resend of an entry seals to the very same bytes, which the store's
 *     duplicate check compares (bookie_store.h invariant 4);
 *  2. one key never seals two different plaintexts under one nonce: the
 *     store never holds two payloads under one (ledger, entry) (invariant 4
 *     again; a repair rewrites the same payload), and ledger ids are never
 *     reused (DESIGN.md §2) within a cluster. A key must not be shared by
 *     bookies of different clusters.
 * The ids are also the additional data, so a ciphertext read back under
 * another (ledger, entry) fails to open rather than returning wrong bytes.
 *
 * Thread-safety: immutable after create; seal and open from any thread.
 */
#ifndef SL_BOOKIE_ENTRY_CRYPT_H
#define SL_BOOKIE_ENTRY_CRYPT_H

#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

#define SL_ENTRY_CRYPT_OVERHEAD 16 /* the GCM tag, appended */
#define SL_ENTRY_CRYPT_FINGERPRINT_LEN 65 /* hex SHA-256 + NUL */

typedef struct sl_entry_crypt sl_entry_crypt;

/* Reads the key: a file of 32 raw bytes, or of 64 hex digits (a trailing
 * newline allowed). SL_EINVAL naming the file otherwise. */
sl_status sl_entry_crypt_create(const char *key_file, sl_entry_crypt **out, sl_err *err);
void sl_entry_crypt_destroy(sl_entry_crypt *c);

/* A fingerprint of the key (not the key): what a store records to refuse
 * opening with another key. */
void sl_entry_crypt_fingerprint(const sl_entry_crypt *c,
                                char out[SL_ENTRY_CRYPT_FINGERPRINT_LEN]);

/* out[len + SL_ENTRY_CRYPT_OVERHEAD] <- seal(in[len]). SL_EINTERNAL if
 * OpenSSL fails. */
sl_status sl_entry_crypt_seal(const sl_entry_crypt *c, uint64_t ledger, int64_t entry,
                              const void *in, size_t len, uint8_t *out, sl_err *err);

/* out[len - SL_ENTRY_CRYPT_OVERHEAD] <- open(in[len]). SL_ECORRUPT when
 * the tag does not verify (wrong key, place or bytes) or len is too short. */
sl_status sl_entry_crypt_open(const sl_entry_crypt *c, uint64_t ledger, int64_t entry,
                              const void *in, size_t len, uint8_t *out, sl_err *err);

#endif
