/* Ack set: blocks of entry bitmaps per ledger, partial batches, and their
 * varint encoding (the design is in ack_set.h). */
#include "broker/ack_set.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define WORDS (SL_ACK_BLOCK / 64)
#define BITMAP_BYTES (SL_ACK_BLOCK / 8)
#define ENCODING_VERSION 1

enum { KIND_FULL = 0, KIND_BITMAP = 1, KIND_RUNS = 2 };

void sl_ack_set_init(sl_ack_set *s) { *s = (sl_ack_set)SL_ACK_SET_INIT; }

static void ledger_release(sl_ack_ledger *l) {
  for (size_t i = 0; i < l->n; i++) free(l->blocks[i].bits);
  free(l->blocks);
}

void sl_ack_set_release(sl_ack_set *s) {
  for (size_t i = 0; i < s->n_ledgers; i++) ledger_release(&s->ledgers[i]);
  for (size_t i = 0; i < s->n_batches; i++) free(s->batches[i].bits);
  free(s->ledgers);
  free(s->batches);
  sl_ack_set_init(s);
}

bool sl_ack_set_empty(const sl_ack_set *s) { return s->n_ledgers == 0 && s->n_batches == 0; }

/* ---- lookups ---- */

/* Index of the first ledger with id >= ledger_id. */
static size_t ledger_lower(const sl_ack_set *s, uint64_t ledger_id) {
  size_t lo = 0, hi = s->n_ledgers;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (s->ledgers[mid].ledger_id < ledger_id) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

static sl_ack_ledger *ledger_find(const sl_ack_set *s, uint64_t ledger_id) {
  size_t i = ledger_lower(s, ledger_id);
  return i < s->n_ledgers && s->ledgers[i].ledger_id == ledger_id ? &s->ledgers[i] : NULL;
}

static size_t block_lower(const sl_ack_ledger *l, uint64_t index) {
  size_t lo = 0, hi = l->n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (l->blocks[mid].index < index) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

static const sl_ack_block *block_find(const sl_ack_ledger *l, uint64_t index) {
  size_t i = block_lower(l, index);
  return i < l->n && l->blocks[i].index == index ? &l->blocks[i] : NULL;
}

static bool block_has(const sl_ack_block *b, uint32_t off) {
  return b->bits == NULL || (b->bits[off / 64] >> (off % 64) & 1);
}

/* Index of the first batch at or after (ledger, entry). */
static size_t batch_lower(const sl_ack_set *s, uint64_t ledger_id, int64_t entry_id) {
  size_t lo = 0, hi = s->n_batches;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    const sl_ack_batch *b = &s->batches[mid];
    if (b->ledger_id < ledger_id || (b->ledger_id == ledger_id && b->entry_id < entry_id))
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

static sl_ack_batch *batch_find(const sl_ack_set *s, uint64_t ledger_id, int64_t entry_id) {
  size_t i = batch_lower(s, ledger_id, entry_id);
  if (i < s->n_batches && s->batches[i].ledger_id == ledger_id &&
      s->batches[i].entry_id == entry_id)
    return &s->batches[i];
  return NULL;
}

bool sl_ack_set_has(const sl_ack_set *s, uint64_t ledger_id, int64_t entry_id) {
  const sl_ack_ledger *l = ledger_find(s, ledger_id);
  if (l == NULL || entry_id < 0) return false;
  const sl_ack_block *b = block_find(l, (uint64_t)entry_id / SL_ACK_BLOCK);
  return b != NULL && block_has(b, (uint64_t)entry_id % SL_ACK_BLOCK);
}

bool sl_ack_set_has_batch(const sl_ack_set *s, uint64_t ledger_id, int64_t entry_id,
                          uint32_t idx) {
  if (sl_ack_set_has(s, ledger_id, entry_id)) return true;
  const sl_ack_batch *b = batch_find(s, ledger_id, entry_id);
  return b != NULL && idx < b->size && (b->bits[idx / 64] >> (idx % 64) & 1);
}

bool sl_ack_set_partial(const sl_ack_set *s, uint64_t ledger_id, int64_t entry_id) {
  return batch_find(s, ledger_id, entry_id) != NULL;
}

/* ---- inserts ---- */

static sl_ack_ledger *ledger_get(sl_ack_set *s, uint64_t ledger_id) {
  size_t i = ledger_lower(s, ledger_id);
  if (i < s->n_ledgers && s->ledgers[i].ledger_id == ledger_id) return &s->ledgers[i];
  if (s->n_ledgers == s->cap_ledgers) {
    s->cap_ledgers = s->cap_ledgers ? 2 * s->cap_ledgers : 4;
    s->ledgers = sl_xrealloc(s->ledgers, s->cap_ledgers * sizeof(*s->ledgers));
  }
  memmove(&s->ledgers[i + 1], &s->ledgers[i], (s->n_ledgers - i) * sizeof(*s->ledgers));
  s->n_ledgers++;
  s->ledgers[i] = (sl_ack_ledger){.ledger_id = ledger_id};
  return &s->ledgers[i];
}

static sl_ack_block *block_get(sl_ack_ledger *l, uint64_t index) {
  size_t i = block_lower(l, index);
  if (i < l->n && l->blocks[i].index == index) return &l->blocks[i];
  if (l->n == l->cap) {
    l->cap = l->cap ? 2 * l->cap : 4;
    l->blocks = sl_xrealloc(l->blocks, l->cap * sizeof(*l->blocks));
  }
  memmove(&l->blocks[i + 1], &l->blocks[i], (l->n - i) * sizeof(*l->blocks));
  l->n++;
  l->blocks[i] = (sl_ack_block){.index = index, .bits = sl_xcalloc(WORDS, sizeof(uint64_t))};
  return &l->blocks[i];
}

static void batch_remove(sl_ack_set *s, size_t i) {
  free(s->batches[i].bits);
  memmove(&s->batches[i], &s->batches[i + 1], (s->n_batches - i - 1) * sizeof(*s->batches));
  s->n_batches--;
}

bool sl_ack_set_add(sl_ack_set *s, uint64_t ledger_id, int64_t entry_id) {
  SL_ASSERT(entry_id >= 0);
  size_t bi = batch_lower(s, ledger_id, entry_id);
  if (bi < s->n_batches && s->batches[bi].ledger_id == ledger_id &&
      s->batches[bi].entry_id == entry_id)
    batch_remove(s, bi);
  sl_ack_block *b = block_get(ledger_get(s, ledger_id), (uint64_t)entry_id / SL_ACK_BLOCK);
  uint32_t off = (uint64_t)entry_id % SL_ACK_BLOCK;
  if (block_has(b, off)) return false;
  b->bits[off / 64] |= (uint64_t)1 << (off % 64);
  s->entries++;
  if (++b->count == SL_ACK_BLOCK) {
    free(b->bits);
    b->bits = NULL;
  }
  return true;
}

sl_status sl_ack_set_add_batch(sl_ack_set *s, uint64_t ledger_id, int64_t entry_id,
                               uint32_t idx, uint32_t size, bool *complete, sl_err *err) {
  *complete = false;
  if (size == 0 || size > SL_ACK_MAX_BATCH || idx >= size)
    return sl_err_set(err, SL_EINVAL, "ack %" PRIu64 ":%" PRId64 ": batch index %u of size %u",
                      ledger_id, entry_id, idx, size);
  if (entry_id < 0)
    return sl_err_set(err, SL_EINVAL, "ack %" PRIu64 ":%" PRId64 ": negative entry", ledger_id,
                      entry_id);
  if (sl_ack_set_has(s, ledger_id, entry_id)) return SL_OK;
  size_t i = batch_lower(s, ledger_id, entry_id);
  sl_ack_batch *b = i < s->n_batches ? &s->batches[i] : NULL;
  if (b == NULL || b->ledger_id != ledger_id || b->entry_id != entry_id) {
    if (size == 1) {
      *complete = sl_ack_set_add(s, ledger_id, entry_id);
      return SL_OK;
    }
    if (s->n_batches == s->cap_batches) {
      s->cap_batches = s->cap_batches ? 2 * s->cap_batches : 4;
      s->batches = sl_xrealloc(s->batches, s->cap_batches * sizeof(*s->batches));
    }
    memmove(&s->batches[i + 1], &s->batches[i], (s->n_batches - i) * sizeof(*s->batches));
    s->n_batches++;
    b = &s->batches[i];
    *b = (sl_ack_batch){.ledger_id = ledger_id, .entry_id = entry_id, .size = size,
                        .bits = sl_xcalloc((size + 63) / 64, sizeof(uint64_t))};
  } else if (b->size != size) {
    return sl_err_set(err, SL_EINVAL, "ack %" PRIu64 ":%" PRId64 ": batch size %u, earlier "
                      "acks said %u", ledger_id, entry_id, size, b->size);
  }
  uint64_t bit = (uint64_t)1 << (idx % 64);
  if (b->bits[idx / 64] & bit) return SL_OK;
  b->bits[idx / 64] |= bit;
  if (++b->count == b->size) *complete = sl_ack_set_add(s, ledger_id, entry_id);
  return SL_OK;
}

/* ---- removal and scans ---- */

static uint64_t ledger_entries(const sl_ack_ledger *l) {
  uint64_t c = 0;
  for (size_t i = 0; i < l->n; i++) c += l->blocks[i].count;
  return c;
}

static void ledger_remove(sl_ack_set *s, size_t i) {
  s->entries -= ledger_entries(&s->ledgers[i]);
  ledger_release(&s->ledgers[i]);
  memmove(&s->ledgers[i], &s->ledgers[i + 1], (s->n_ledgers - i - 1) * sizeof(*s->ledgers));
  s->n_ledgers--;
}

/* Clears offsets 0..upto of the ledger's first block, if it is that block. */
static void clear_block_prefix(sl_ack_set *s, sl_ack_ledger *l, uint64_t index, uint32_t upto) {
  if (l->n == 0 || l->blocks[0].index != index) return;
  sl_ack_block *b = &l->blocks[0];
  if (b->bits == NULL) {
    b->bits = sl_xmalloc(WORDS * sizeof(uint64_t));
    memset(b->bits, 0xff, WORDS * sizeof(uint64_t));
  }
  for (uint32_t w = 0; w < upto / 64; w++) b->bits[w] = 0;
  uint32_t r = upto % 64;
  b->bits[upto / 64] &= r == 63 ? 0 : ~((UINT64_C(2) << r) - 1);
  uint32_t c = 0;
  for (uint32_t w = 0; w < WORDS; w++) c += (uint32_t)__builtin_popcountll(b->bits[w]);
  s->entries -= b->count - c;
  b->count = c;
  if (c > 0) return;
  free(b->bits);
  memmove(l->blocks, &l->blocks[1], (l->n - 1) * sizeof(*l->blocks));
  l->n--;
}

void sl_ack_set_drop_through(sl_ack_set *s, uint64_t ledger_id, int64_t entry_id) {
  size_t keep = batch_lower(s, ledger_id, entry_id + 1);
  if (keep > 0) {
    for (size_t i = 0; i < keep; i++) free(s->batches[i].bits);
    memmove(s->batches, &s->batches[keep], (s->n_batches - keep) * sizeof(*s->batches));
    s->n_batches -= keep;
  }

  while (s->n_ledgers > 0 && s->ledgers[0].ledger_id < ledger_id) ledger_remove(s, 0);
  sl_ack_ledger *l = ledger_find(s, ledger_id);
  if (l == NULL || entry_id < 0) return;
  uint64_t last_block = (uint64_t)entry_id / SL_ACK_BLOCK;
  size_t gone = 0;
  while (gone < l->n && l->blocks[gone].index < last_block) {
    s->entries -= l->blocks[gone].count;
    free(l->blocks[gone++].bits);
  }
  if (gone > 0) memmove(l->blocks, &l->blocks[gone], (l->n - gone) * sizeof(*l->blocks));
  l->n -= gone;
  clear_block_prefix(s, l, last_block, (uint64_t)entry_id % SL_ACK_BLOCK);
  if (l->n == 0) ledger_remove(s, (size_t)(l - s->ledgers));
}

/* Set bits of a block among offsets [lo, hi]. */
static uint32_t block_count(const sl_ack_block *b, uint32_t lo, uint32_t hi) {
  if (b->bits == NULL) return hi - lo + 1;
  if (lo == 0 && hi == SL_ACK_BLOCK - 1) return b->count;
  uint32_t c = 0;
  for (uint32_t off = lo; off <= hi; off++) c += block_has(b, off);
  return c;
}

uint64_t sl_ack_set_count_range(const sl_ack_set *s, uint64_t ledger_id, int64_t from,
                                int64_t to) {
  const sl_ack_ledger *l = ledger_find(s, ledger_id);
  if (l == NULL || to < from || to < 0) return 0;
  if (from < 0) from = 0;
  uint64_t first = (uint64_t)from / SL_ACK_BLOCK, last = (uint64_t)to / SL_ACK_BLOCK, c = 0;
  for (size_t i = block_lower(l, first); i < l->n && l->blocks[i].index <= last; i++) {
    const sl_ack_block *b = &l->blocks[i];
    uint32_t lo = b->index == first ? (uint64_t)from % SL_ACK_BLOCK : 0;
    uint32_t hi = b->index == last ? (uint64_t)to % SL_ACK_BLOCK : SL_ACK_BLOCK - 1;
    c += block_count(b, lo, hi);
  }
  return c;
}

int64_t sl_ack_set_next_gap(const sl_ack_set *s, uint64_t ledger_id, int64_t from) {
  const sl_ack_ledger *l = ledger_find(s, ledger_id);
  if (from < 0) from = 0;
  if (l == NULL) return from;
  uint64_t e = (uint64_t)from;
  for (size_t i = block_lower(l, e / SL_ACK_BLOCK); i < l->n; i++) {
    const sl_ack_block *b = &l->blocks[i];
    if (b->index != e / SL_ACK_BLOCK) return (int64_t)e; /* a missing block: a gap */
    if (b->bits != NULL) {
      for (uint32_t off = e % SL_ACK_BLOCK; off < SL_ACK_BLOCK; off++)
        if (!block_has(b, off)) return (int64_t)(b->index * SL_ACK_BLOCK + off);
    }
    e = (b->index + 1) * SL_ACK_BLOCK;
  }
  return (int64_t)e;
}

void sl_ack_set_merge(sl_ack_set *dst, const sl_ack_set *src) {
  for (size_t i = 0; i < src->n_ledgers; i++) {
    const sl_ack_ledger *l = &src->ledgers[i];
    for (size_t j = 0; j < l->n; j++) {
      const sl_ack_block *b = &l->blocks[j];
      for (uint32_t off = 0; off < SL_ACK_BLOCK; off++)
        if (block_has(b, off)) sl_ack_set_add(dst, l->ledger_id, (int64_t)(b->index * SL_ACK_BLOCK + off));
    }
  }
  for (size_t i = 0; i < src->n_batches; i++) {
    const sl_ack_batch *b = &src->batches[i];
    bool complete;
    for (uint32_t k = 0; k < b->size; k++)
      if (b->bits[k / 64] >> (k % 64) & 1)
        (void)sl_ack_set_add_batch(dst, b->ledger_id, b->entry_id, k, b->size, &complete, NULL);
  }
}

/* ---- encoding ---- */

void sl_ack_varint_put(sl_buf *out, uint64_t v) {
  uint8_t tmp[10];
  size_t n = 0;
  do {
    tmp[n] = (uint8_t)(v & 0x7f);
    v >>= 7;
    if (v != 0) tmp[n] |= 0x80;
    n++;
  } while (v != 0);
  sl_buf_append(out, tmp, n);
}

static size_t varint_len(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) v >>= 7, n++;
  return n;
}

/* Calls fn for each run [start, start+len) of set bits in the block. */
#define FOR_EACH_RUN(b, start, len, BODY)                                    \
  for (uint32_t start = 0, len; start < SL_ACK_BLOCK; start += len) {       \
    if (!block_has(b, start)) { len = 1; continue; }                         \
    len = 1;                                                                 \
    while (start + len < SL_ACK_BLOCK && block_has(b, start + len)) len++;  \
    BODY                                                                     \
  }

static void encode_block(const sl_ack_block *b, uint64_t prev_index, sl_buf *out) {
  sl_ack_varint_put(out, b->index - prev_index);
  if (b->bits == NULL) {
    sl_ack_varint_put(out, KIND_FULL);
    return;
  }
  /* A run starts at each set bit whose predecessor is clear; every run costs
   * at least 2 bytes, so many runs mean BITMAP without walking them. */
  size_t runs = 0, runs_bytes = 0;
  for (uint32_t w = 0; w < WORDS; w++) {
    uint64_t prev = w > 0 ? b->bits[w - 1] >> 63 : 0;
    runs += (size_t)__builtin_popcountll(b->bits[w] & ~(b->bits[w] << 1 | prev));
  }
  uint32_t end = 0;
  if (2 * runs < BITMAP_BYTES) {
    FOR_EACH_RUN(b, start, len, {
      runs_bytes += varint_len(start - end) + varint_len(len - 1);
      end = start + len;
    })
  }
  if (2 * runs >= BITMAP_BYTES || runs_bytes + varint_len(runs) >= BITMAP_BYTES) {
    sl_ack_varint_put(out, KIND_BITMAP);
    uint8_t bytes[BITMAP_BYTES];
    for (uint32_t i = 0; i < BITMAP_BYTES; i++) bytes[i] = (uint8_t)(b->bits[i / 8] >> (8 * (i % 8)));
    sl_buf_append(out, bytes, sizeof(bytes));
    return;
  }
  sl_ack_varint_put(out, KIND_RUNS);
  sl_ack_varint_put(out, runs);
  end = 0;
  FOR_EACH_RUN(b, start, len, {
    sl_ack_varint_put(out, start - end);
    sl_ack_varint_put(out, len - 1);
    end = start + len;
  })
}

void sl_ack_set_encode(const sl_ack_set *s, sl_buf *out) {
  sl_ack_varint_put(out, ENCODING_VERSION);
  sl_ack_varint_put(out, s->n_ledgers);
  uint64_t prev_ledger = 0;
  for (size_t i = 0; i < s->n_ledgers; i++) {
    const sl_ack_ledger *l = &s->ledgers[i];
    sl_ack_varint_put(out, l->ledger_id - prev_ledger);
    prev_ledger = l->ledger_id;
    sl_ack_varint_put(out, l->n);
    uint64_t prev_index = 0;
    for (size_t j = 0; j < l->n; j++) {
      encode_block(&l->blocks[j], prev_index, out);
      prev_index = l->blocks[j].index;
    }
  }
  sl_ack_varint_put(out, s->n_batches);
  prev_ledger = 0;
  int64_t prev_entry = 0;
  for (size_t i = 0; i < s->n_batches; i++) {
    const sl_ack_batch *b = &s->batches[i];
    if (b->ledger_id != prev_ledger) prev_entry = 0;
    sl_ack_varint_put(out, b->ledger_id - prev_ledger);
    sl_ack_varint_put(out, (uint64_t)(b->entry_id - prev_entry));
    sl_ack_varint_put(out, b->size);
    for (uint32_t k = 0; k < (b->size + 7) / 8; k++)
      sl_buf_append(out, &(uint8_t){(uint8_t)(b->bits[k / 8] >> (8 * (k % 8)))}, 1);
    prev_ledger = b->ledger_id;
    prev_entry = b->entry_id;
  }
}

typedef struct reader {
  const uint8_t *p, *end;
  bool bad;
} reader;

bool sl_ack_varint_get(const uint8_t **p, const uint8_t *end, uint64_t *v) {
  uint64_t x = 0;
  for (unsigned shift = 0; shift < 64 && *p < end; shift += 7) {
    uint8_t byte = *(*p)++;
    x |= (uint64_t)(byte & 0x7f) << shift;
    if (!(byte & 0x80)) {
      *v = x;
      return true;
    }
  }
  return false;
}

static uint64_t get_varint(reader *r) {
  uint64_t v = 0;
  if (!r->bad && !sl_ack_varint_get(&r->p, r->end, &v)) r->bad = true;
  return r->bad ? 0 : v;
}

static const uint8_t *get_bytes(reader *r, size_t n) {
  if ((size_t)(r->end - r->p) < n) {
    r->bad = true;
    return NULL;
  }
  const uint8_t *p = r->p;
  r->p += n;
  return p;
}

/* Entry ids stay below 2^62 so that block arithmetic cannot overflow. */
#define MAX_BLOCK_INDEX ((UINT64_C(1) << 62) / SL_ACK_BLOCK)

/* ORs a block's worth of bits into the set (decode's fast path). */
static void block_or(sl_ack_set *s, uint64_t ledger_id, uint64_t index, const uint64_t *words) {
  for (uint32_t w = 0; w < WORDS; w++) {
    if (words[w] == 0) continue;
    /* entries with a partial batch must leave the batch list (invariant 1) */
    for (uint32_t k = 0; k < 64; k++)
      if ((words[w] >> k & 1) && s->n_batches > 0)
        (void)sl_ack_set_add(s, ledger_id, (int64_t)(index * SL_ACK_BLOCK + w * 64 + k));
  }
  if (s->n_batches > 0) return; /* done bit by bit above */
  sl_ack_block *b = block_get(ledger_get(s, ledger_id), index);
  if (b->bits == NULL) return;
  uint32_t c = 0;
  for (uint32_t w = 0; w < WORDS; w++) {
    b->bits[w] |= words[w];
    c += (uint32_t)__builtin_popcountll(b->bits[w]);
  }
  s->entries += c - b->count;
  b->count = c;
  if (c == SL_ACK_BLOCK) {
    free(b->bits);
    b->bits = NULL;
  } else if (c == 0) {
    /* all-zero words: drop the empty block again (invariant 2) */
    sl_ack_ledger *l = ledger_find(s, ledger_id);
    size_t i = (size_t)(b - l->blocks);
    free(b->bits);
    memmove(&l->blocks[i], &l->blocks[i + 1], (l->n - i - 1) * sizeof(*l->blocks));
    if (--l->n == 0) ledger_remove(s, (size_t)(l - s->ledgers));
  }
}

static void set_bits(uint64_t *words, uint32_t from, uint32_t to) {
  for (uint32_t off = from; off < to; off++) words[off / 64] |= (uint64_t)1 << (off % 64);
}

static void decode_block(sl_ack_set *s, reader *r, uint64_t ledger_id, uint64_t index) {
  uint64_t kind = get_varint(r);
  uint64_t words[WORDS] = {0};
  if (kind == KIND_FULL) {
    memset(words, 0xff, sizeof(words));
  } else if (kind == KIND_BITMAP) {
    const uint8_t *bytes = get_bytes(r, BITMAP_BYTES);
    for (uint32_t i = 0; bytes != NULL && i < BITMAP_BYTES; i++)
      words[i / 8] |= (uint64_t)bytes[i] << (8 * (i % 8));
  } else if (kind == KIND_RUNS) {
    uint64_t n = get_varint(r), end = 0;
    for (uint64_t i = 0; i < n && !r->bad; i++) {
      uint64_t gap = get_varint(r), len = get_varint(r) + 1;
      if (gap > SL_ACK_BLOCK || len > SL_ACK_BLOCK || end + gap + len > SL_ACK_BLOCK) {
        r->bad = true;
        break;
      }
      set_bits(words, (uint32_t)(end + gap), (uint32_t)(end + gap + len));
      end += gap + len;
    }
  } else {
    r->bad = true;
  }
  if (!r->bad) block_or(s, ledger_id, index, words);
}

static void decode_ledgers(sl_ack_set *s, reader *r) {
  uint64_t n = get_varint(r), ledger_id = 0;
  for (uint64_t i = 0; i < n && !r->bad; i++) {
    uint64_t d = get_varint(r);
    if ((i > 0 && d == 0) || d > UINT64_MAX - ledger_id) r->bad = true;
    ledger_id += d;
    uint64_t blocks = get_varint(r), index = 0;
    if (ledger_id == 0 || blocks == 0) r->bad = true;
    for (uint64_t j = 0; j < blocks && !r->bad; j++) {
      uint64_t di = get_varint(r);
      if ((j > 0 && di == 0) || di >= MAX_BLOCK_INDEX - index) {
        r->bad = true;
        break;
      }
      index += di;
      decode_block(s, r, ledger_id, index);
    }
  }
}

static void decode_batches(sl_ack_set *s, reader *r) {
  uint64_t n = get_varint(r), ledger_id = 0, entry = 0;
  for (uint64_t i = 0; i < n && !r->bad; i++) {
    uint64_t dl = get_varint(r), de = get_varint(r), size = get_varint(r);
    if (dl != 0) entry = 0;
    if (dl > UINT64_MAX - ledger_id || de > MAX_BLOCK_INDEX * SL_ACK_BLOCK - entry ||
        size < 2 || size > SL_ACK_MAX_BATCH) {
      r->bad = true;
      break;
    }
    ledger_id += dl;
    entry += de;
    const uint8_t *bytes = get_bytes(r, (size + 7) / 8);
    for (uint32_t k = 0; bytes != NULL && k < size; k++) {
      bool complete;
      if (bytes[k / 8] >> (k % 8) & 1)
        (void)sl_ack_set_add_batch(s, ledger_id, (int64_t)entry, k, (uint32_t)size, &complete,
                                   NULL);
    }
  }
}

sl_status sl_ack_set_decode(sl_ack_set *s, const void *data, size_t len, sl_err *err) {
  reader r = {.p = data, .end = (const uint8_t *)data + len};
  if (len == 0) return SL_OK; /* an empty set may be stored as nothing */
  if (get_varint(&r) != ENCODING_VERSION)
    return sl_err_set(err, SL_ECORRUPT, "ack set: unknown encoding version");
  decode_ledgers(s, &r);
  if (!r.bad) decode_batches(s, &r);
  if (r.bad || r.p != r.end)
    return sl_err_set(err, SL_ECORRUPT, "ack set: malformed at byte %zu of %zu",
                      (size_t)(r.p - (const uint8_t *)data), len);
  return SL_OK;
}
