#include "common/crc32c.h"

#include <pthread.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define SL_CRC32C_X86 1
#include <cpuid.h>
#endif

#define POLY 0x82F63B78u /* 0x1EDC6F41 bit-reversed */

/* table[k][b]: CRC of byte b followed by k zero bytes (slicing-by-8). */
static uint32_t table[8][256];
static bool use_hw;
static pthread_once_t init_once = PTHREAD_ONCE_INIT;

static void init_tables(void) {
  for (uint32_t b = 0; b < 256; b++) {
    uint32_t c = b;
    for (int i = 0; i < 8; i++) c = (c >> 1) ^ (POLY & (0u - (c & 1u)));
    table[0][b] = c;
  }
  for (uint32_t b = 0; b < 256; b++) {
    for (int k = 1; k < 8; k++) {
      uint32_t prev = table[k - 1][b];
      table[k][b] = (prev >> 8) ^ table[0][prev & 0xFF];
    }
  }
#ifdef SL_CRC32C_X86
  unsigned a, bx, c, d;
  use_hw = __get_cpuid(1, &a, &bx, &c, &d) && (c & bit_SSE4_2) != 0;
#endif
}

static void ensure_init(void) {
  /* pthread_once cannot fail with a valid once-control and init routine. */
  (void)pthread_once(&init_once, init_tables);
}

static uint64_t load64le(const uint8_t *p) {
  uint64_t v;
  memcpy(&v, p, sizeof(v)); /* unaligned-safe */
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  v = __builtin_bswap64(v);
#endif
  return v;
}

uint32_t sl_crc32c_sw_extend(uint32_t crc, const void *buf, size_t len) {
  ensure_init();
  const uint8_t *p = buf;
  uint32_t c = ~crc;
  while (len > 0 && ((uintptr_t)p & 7) != 0) {
    c = (c >> 8) ^ table[0][(c ^ *p++) & 0xFF];
    len--;
  }
  while (len >= 8) {
    uint64_t w = load64le(p) ^ c;
    c = table[7][w & 0xFF] ^ table[6][(w >> 8) & 0xFF] ^
        table[5][(w >> 16) & 0xFF] ^ table[4][(w >> 24) & 0xFF] ^
        table[3][(w >> 32) & 0xFF] ^ table[2][(w >> 40) & 0xFF] ^
        table[1][(w >> 48) & 0xFF] ^ table[0][w >> 56];
    p += 8;
    len -= 8;
  }
  while (len-- > 0) c = (c >> 8) ^ table[0][(c ^ *p++) & 0xFF];
  return ~c;
}

#ifdef SL_CRC32C_X86
__attribute__((target("sse4.2"))) static uint32_t hw_extend(uint32_t crc,
                                                            const uint8_t *p,
                                                            size_t len) {
  uint64_t c = ~crc;
  while (len > 0 && ((uintptr_t)p & 7) != 0) {
    c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
    len--;
  }
  while (len >= 8) {
    uint64_t w;
    memcpy(&w, p, sizeof(w));
    c = __builtin_ia32_crc32di(c, w);
    p += 8;
    len -= 8;
  }
  while (len-- > 0) c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
  return ~(uint32_t)c;
}
#endif

uint32_t sl_crc32c_hw_extend(uint32_t crc, const void *buf, size_t len) {
#ifdef SL_CRC32C_X86
  ensure_init();
  if (use_hw) return hw_extend(crc, buf, len);
#endif
  /* Misuse (no SSE4.2): stay correct rather than execute an illegal
   * instruction. */
  return sl_crc32c_sw_extend(crc, buf, len);
}

bool sl_crc32c_hw_available(void) {
  ensure_init();
  return use_hw;
}

uint32_t sl_crc32c_extend(uint32_t crc, const void *buf, size_t len) {
  ensure_init();
#ifdef SL_CRC32C_X86
  if (use_hw) return hw_extend(crc, buf, len);
#endif
  return sl_crc32c_sw_extend(crc, buf, len);
}

uint32_t sl_crc32c(const void *buf, size_t len) {
  return sl_crc32c_extend(0, buf, len);
}

uint32_t sl_entry_crc(uint64_t ledger, int64_t entry, const void *payload,
                      size_t len) {
  uint8_t ids[16];
  uint64_t e = (uint64_t)entry;
  for (int i = 0; i < 8; i++) {
    ids[i] = (uint8_t)(ledger >> (8 * i));
    ids[8 + i] = (uint8_t)(e >> (8 * i));
  }
  return sl_crc32c_extend(sl_crc32c(ids, sizeof(ids)), payload, len);
}
