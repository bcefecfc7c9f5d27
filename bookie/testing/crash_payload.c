#include "bookie/testing/crash_payload.h"

#include <inttypes.h>
#include <stdio.h>

static uint64_t mix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return x;
}

uint32_t sl_crash_payload_len(uint64_t ledger, int64_t entry) {
  uint64_t h = mix(ledger * 1000003u + (uint64_t)entry);
  if (entry % 17 == 16) return (64u << 10) + (uint32_t)(h % (16u << 10));
  return (uint32_t)(h % 4097u);
}

void sl_crash_payload_fill(uint64_t ledger, int64_t entry, uint8_t *buf) {
  uint32_t len = sl_crash_payload_len(ledger, entry);
  uint64_t x = mix(ledger ^ ((uint64_t)entry << 20) ^ 0x5bd1e995u);
  for (uint32_t i = 0; i < len; i++) {
    if (i % 8 == 0) x = mix(x + i);
    buf[i] = (uint8_t)(x >> (8 * (i % 8)));
  }
}

void sl_crash_password(uint64_t ledger, char *buf, size_t n) {
  snprintf(buf, n, "crash-%" PRIu64, ledger);
}
