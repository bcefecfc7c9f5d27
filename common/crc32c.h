/*
 * CRC32C (Castagnoli, polynomial 0x1EDC6F41, reflected 0x82F63B78): the
 * checksum of every Sluice entry and of every bookie journal record.
 *
 * The value is the standard one (iSCSI, ext4, leveldb): initial value and
 * final xor 0xFFFFFFFF, so sl_crc32c("123456789", 9) == 0xE3069283.
 *
 * On x86-64 CPUs with SSE4.2 (checked once with cpuid) the crc32 instruction
 * is used; elsewhere a slicing-by-8 table. Both give identical results.
 * All functions are thread-safe and never fail.
 */
#ifndef SL_COMMON_CRC32C_H
#define SL_COMMON_CRC32C_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* CRC32C of buf[0..len). `buf` may be NULL when len is 0. */
uint32_t sl_crc32c(const void *buf, size_t len);

/*
 * Continues a CRC: sl_crc32c_extend(sl_crc32c(a, n), b, m) equals the CRC of
 * the concatenation a||b. sl_crc32c_extend(0, buf, len) == sl_crc32c(buf, len).
 */
uint32_t sl_crc32c_extend(uint32_t crc, const void *buf, size_t len);

/*
 * The checksum of one ledger entry, defined here and nowhere else: CRC32C
 * over the 8-byte ledger id, then the 8-byte entry id (two's complement),
 * both little-endian, then the payload. Binding the ids into the checksum
 * means an entry's bytes never verify under another (ledger, entry): a
 * payload misfiled by a bug or a corrupt index fails its check. Writers put
 * it in AddEntryRequest.crc32c; bookies store it and check it on every read.
 * `payload` may be NULL when len is 0.
 */
uint32_t sl_entry_crc(uint64_t ledger, int64_t entry, const void *payload,
                      size_t len);

/* True if the hardware path is in use on this CPU. */
bool sl_crc32c_hw_available(void);

/* The two implementations, for tests and benchmarks. Same contract as
 * sl_crc32c_extend; sl_crc32c_hw_extend must only be called when
 * sl_crc32c_hw_available() is true. */
uint32_t sl_crc32c_sw_extend(uint32_t crc, const void *buf, size_t len);
uint32_t sl_crc32c_hw_extend(uint32_t crc, const void *buf, size_t len);

#endif
