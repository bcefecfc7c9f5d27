#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "broker/consume_batch.h"

/* Fills m (and its id and property) as message number i, payload `len`
 * bytes of 'a' + i % 26 in buf. */
static void fill(Sluice__V1__Message *m, Sluice__V1__MessageId *id, Sluice__V1__KeyValue *kv,
                 Sluice__V1__KeyValue **kvs, uint8_t *buf, size_t len, int i) {
  sluice__v1__message__init(m);
  sluice__v1__message_id__init(id);
  sluice__v1__key_value__init(kv);
  id->ledger_id = 7;
  id->entry_id = i;
  id->batch_index = i % 3;
  id->batch_size = 3;
  memset(buf, 'a' + i % 26, len);
  m->id = id;
  m->payload.data = buf;
  m->payload.len = len;
  m->key = i % 2 ? "odd" : "even";
  kv->key = "n";
  kv->value = i % 2 ? "1" : "0";
  kvs[0] = kv;
  m->properties = kvs;
  m->n_properties = 1;
  m->producer_name = "p";
  m->sequence_id = (uint64_t)i;
  m->redelivery_count = (uint32_t)i;
}

/* Packs r as the broker sends it and decodes it as any client does. */
static Sluice__V1__ConsumeResponse *round_trip(const Sluice__V1__ConsumeResponse *r,
                                               size_t *len) {
  *len = sluice__v1__consume_response__get_packed_size(r);
  uint8_t *wire = malloc(*len);
  assert_non_null(wire);
  assert_int_equal(sluice__v1__consume_response__pack(r, wire), *len);
  Sluice__V1__ConsumeResponse *out = sluice__v1__consume_response__unpack(NULL, *len, wire);
  free(wire);
  assert_non_null(out);
  return out;
}

/* Every message comes back in order and intact, including after a reset
 * that reuses the memory; the size foretold is the size sent. */
static void test_consume_batch__round_trip_in_order(void **state) {
  (void)state;
  sl_cbatch b = SL_CBATCH_INIT;
  uint8_t buf[300];
  for (int round = 0; round < 2; round++) {
    int n = round == 0 ? 40 : 3; /* 40 grows the arrays past 16 */
    size_t want = 0;
    for (int i = 0; i < n; i++) {
      Sluice__V1__Message m;
      Sluice__V1__MessageId id;
      Sluice__V1__KeyValue kv, *kvs[1];
      fill(&m, &id, &kv, kvs, buf, (size_t)(i * 7) % sizeof(buf), i);
      want = sl_cbatch_bytes_with(&b, &m);
      sl_cbatch_add(&b, &m);
    }
    assert_int_equal(sl_cbatch_count(&b), n);
    Sluice__V1__ConsumeResponse r = SLUICE__V1__CONSUME_RESPONSE__INIT;
    sl_cbatch_response(&b, &r);
    size_t len;
    Sluice__V1__ConsumeResponse *got = round_trip(&r, &len);
    assert_int_equal(len, want); /* invariant 2: exact for a response */
    assert_int_equal(got->kind_case, SLUICE__V1__CONSUME_RESPONSE__KIND_MESSAGE_BATCH);
    assert_int_equal(got->message_batch->n_messages, n);
    for (int i = 0; i < n; i++) {
      const Sluice__V1__Message *m = got->message_batch->messages[i];
      size_t plen = (size_t)(i * 7) % sizeof(buf);
      assert_int_equal(m->id->entry_id, i);
      assert_int_equal(m->id->batch_index, i % 3);
      assert_int_equal(m->id->batch_size, 3);
      assert_int_equal(m->payload.len, plen);
      for (size_t k = 0; k < plen; k++) assert_int_equal(m->payload.data[k], 'a' + i % 26);
      assert_string_equal(m->key, i % 2 ? "odd" : "even");
      assert_int_equal(m->n_properties, 1);
      assert_string_equal(m->properties[0]->value, i % 2 ? "1" : "0");
      assert_int_equal(m->sequence_id, i);
      assert_int_equal(m->redelivery_count, i);
    }
    sluice__v1__consume_response__free_unpacked(got, NULL);
    sl_cbatch_reset(&b);
    assert_int_equal(sl_cbatch_count(&b), 0);
  }
  sl_cbatch_release(&b);
}

/* A message whose length needs a multi-byte varint (over 127 and over
 * 16383 bytes) frames correctly, next to small ones. */
static void test_consume_batch__large_message_framing(void **state) {
  (void)state;
  sl_cbatch b = SL_CBATCH_INIT;
  static uint8_t big[70000];
  size_t sizes[] = {0, 200, 20000, 70000, 1};
  for (int i = 0; i < 5; i++) {
    Sluice__V1__Message m;
    Sluice__V1__MessageId id;
    Sluice__V1__KeyValue kv, *kvs[1];
    fill(&m, &id, &kv, kvs, big, sizes[i], i);
    sl_cbatch_add(&b, &m);
  }
  Sluice__V1__ConsumeResponse r = SLUICE__V1__CONSUME_RESPONSE__INIT;
  sl_cbatch_response(&b, &r);
  size_t len;
  Sluice__V1__ConsumeResponse *got = round_trip(&r, &len);
  assert_int_equal(got->message_batch->n_messages, 5);
  for (int i = 0; i < 5; i++) {
    assert_int_equal(got->message_batch->messages[i]->payload.len, sizes[i]);
    assert_int_equal(got->message_batch->messages[i]->id->entry_id, i);
  }
  sluice__v1__consume_response__free_unpacked(got, NULL);
  /* A big batch's buffer is not kept for the next one (an idle consumer
   * holds no more than SL_CBATCH_KEEP_BYTES). */
  sl_cbatch_reset(&b);
  assert_int_equal(b.buf.cap, 0);
  Sluice__V1__Message m;
  Sluice__V1__MessageId id;
  Sluice__V1__KeyValue kv, *kvs[1];
  fill(&m, &id, &kv, kvs, big, 10, 9);
  sl_cbatch_add(&b, &m);
  sl_cbatch_response(&b, &r);
  got = round_trip(&r, &len);
  assert_int_equal(got->message_batch->n_messages, 1);
  assert_int_equal(got->message_batch->messages[0]->id->entry_id, 9);
  sluice__v1__consume_response__free_unpacked(got, NULL);
  sl_cbatch_release(&b);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_consume_batch__round_trip_in_order),
      cmocka_unit_test(test_consume_batch__large_message_framing),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
