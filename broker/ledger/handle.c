/*
 * Handle life: creation, references, destroy, getters and stats. The handle
 * is freed at its last reference; streams, metadata calls, reads and the
 * caller each hold one.
 */
#include <stdlib.h>
#include <string.h>

#include "broker/ledger/ledger_int.h"

sl_status sl_lh_create(sl_ledger_client *c, sl_serial *serial,
                       Sluice__V1__LedgerInfo *info, int64_t version,
                       sl_ledger_state state, sl_ledger **out, sl_err *err) {
  sl_ledger *lh = calloc(1, sizeof(*lh));
  if (!lh) goto out_nomem;
  if (info->password.len) {
    lh->password = malloc(info->password.len);
    if (!lh->password) goto out_free;
    memcpy(lh->password, info->password.data, info->password.len);
    lh->password_len = info->password.len;
  }
  if (serial) {
    sl_serial_ref(serial);
    lh->serial = serial;
  } else {
    sl_status st = sl_serial_create(&lh->serial, err);
    if (st != SL_OK) {
      free(lh->password);
      free(lh);
      return st;
    }
  }
  lh->client = c;
  sl_lc_handle_made(c);
  atomic_init(&lh->refs, 1);
  lh->id = info->ledger_id;
  lh->q = (sl_quorum){info->ensemble_size, info->write_quorum, info->ack_quorum};
  lh->epoch = info->owner_epoch;
  lh->info = info;
  lh->version = version;
  atomic_init(&lh->state, (int)state);
  int64_t end = info->state == SLUICE__V1__LEDGER_STATE__LEDGER_STATE_CLOSED
                    ? info->last_entry_id
                    : -1;
  atomic_init(&lh->lac, end);
  atomic_init(&lh->last_entry, end);
  atomic_init(&lh->next_entry, 0);
  *out = lh;
  return SL_OK;
out_free:
  free(lh);
out_nomem:
  protobuf_c_message_free_unpacked(&info->base, NULL);
  return sl_err_set(err, SL_ENOMEM, "ledger: out of memory");
}

void sl_lh_ref(sl_ledger *lh) { atomic_fetch_add(&lh->refs, 1); }

void sl_lh_unref(sl_ledger *lh) {
  if (!lh || atomic_fetch_sub(&lh->refs, 1) != 1) return;
  sl_lh_writer_release(lh);
  sl_ledger_client *c = lh->client;
  if (lh->info) protobuf_c_message_free_unpacked(&lh->info->base, NULL);
  free(lh->password);
  sl_serial_unref(lh->serial);
  free(lh);
  sl_lc_handle_gone(c);
}

size_t sl_lh_segment_of(const Sluice__V1__LedgerInfo *info, int64_t entry) {
  size_t seg = 0;
  for (size_t i = 1; i < info->n_ensembles; i++)
    if (info->ensembles[i]->first_entry <= entry) seg = i;
  return seg;
}

void sl_lh_set_info(sl_ledger *lh, Sluice__V1__LedgerInfo *info,
                    int64_t version) {
  if (lh->info) protobuf_c_message_free_unpacked(&lh->info->base, NULL);
  lh->info = info;
  lh->version = version;
}

Sluice__V1__LedgerInfo *sl_lh_info_dup(const Sluice__V1__LedgerInfo *info) {
  size_t n = protobuf_c_message_get_packed_size(&info->base);
  uint8_t *buf = malloc(n ? n : 1);
  if (!buf) return NULL;
  protobuf_c_message_pack(&info->base, buf);
  Sluice__V1__LedgerInfo *copy = sluice__v1__ledger_info__unpack(NULL, n, buf);
  free(buf);
  return copy;
}

static void destroy_run(void *arg) {
  sl_ledger *lh = arg;
  lh->destroyed = true;
  sl_lh_writer_stop(lh, SL_ECANCELED, "ledger: handle destroyed");
  sl_lh_unref(lh);
}

void sl_ledger_destroy(sl_ledger *lh) {
  if (!lh) return;
  /* The caller's reference goes to the posted item. */
  sl_serial_post(lh->serial, destroy_run, lh);
}

uint64_t sl_ledger_id(const sl_ledger *lh) { return lh->id; }
int64_t sl_ledger_lac(const sl_ledger *lh) {
  return atomic_load(&((sl_ledger *)lh)->lac);
}
int64_t sl_ledger_last_entry(const sl_ledger *lh) {
  sl_ledger *m = (sl_ledger *)lh;
  return atomic_load(&m->state) == SL_LEDGER_CLOSED ? atomic_load(&m->last_entry)
                                                    : atomic_load(&m->lac);
}
sl_serial *sl_ledger_serial(const sl_ledger *lh) { return lh->serial; }

uint64_t sl_ledger_ensemble_changes(const sl_ledger *lh) {
  return atomic_load(&((sl_ledger *)lh)->ensemble_changes);
}

void sl_ledger_stats_get(const sl_ledger *lh, sl_ledger_stats *out) {
  sl_ledger *m = (sl_ledger *)lh;
  out->state = (sl_ledger_state)atomic_load(&m->state);
  out->lac = atomic_load(&m->lac);
  out->next_entry = atomic_load(&m->next_entry);
  out->pending_appends = atomic_load(&m->pending_count);
  out->pending_bytes = atomic_load(&m->pending_bytes);
  out->ensemble_changes = atomic_load(&m->ensemble_changes);
  out->bytes_appended = atomic_load(&m->bytes_appended);
}
