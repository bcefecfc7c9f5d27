#include "bookie/ledger_storage.h"

#include <stdlib.h>

void sl_ledger_entry_release(sl_ledger_entry *e) {
  if (e == NULL) return;
  if (e->free_ != NULL) e->free_(e->base_);
  *e = (sl_ledger_entry)SL_LEDGER_ENTRY_INIT;
}

sl_status sl_ledger_storage_write(sl_ledger_storage *ls, const sl_ls_op *ops,
                                  size_t n, const sl_journal_pos *checkpoint,
                                  sl_err *err) {
  SL_ASSERT(ls != NULL && (ops != NULL || n == 0));
  return ls->ops->write(ls, ops, n, checkpoint, err);
}

sl_status sl_ledger_storage_get_entry(sl_ledger_storage *ls, uint64_t ledger,
                                      int64_t entry, sl_ledger_entry *out,
                                      sl_err *err) {
  SL_ASSERT(ls != NULL && out != NULL);
  return ls->ops->get_entry(ls, ledger, entry, out, err);
}

sl_status sl_ledger_storage_scan_meta(sl_ledger_storage *ls, sl_ledger_meta_cb cb,
                                      void *arg, sl_err *err) {
  SL_ASSERT(ls != NULL && cb != NULL);
  return ls->ops->scan_meta(ls, cb, arg, err);
}

sl_status sl_ledger_storage_get_checkpoint(sl_ledger_storage *ls,
                                           sl_journal_pos *out, sl_err *err) {
  SL_ASSERT(ls != NULL && out != NULL);
  return ls->ops->get_checkpoint(ls, out, err);
}

void sl_ledger_storage_close(sl_ledger_storage *ls) {
  if (ls != NULL) ls->ops->close(ls);
}

void sl_ledger_storage_stats_get(sl_ledger_storage *ls, sl_ledger_storage_stats *out) {
  SL_ASSERT(ls != NULL && out != NULL);
  *out = (sl_ledger_storage_stats){0};
  if (ls->ops->stats != NULL) ls->ops->stats(ls, out);
}

sl_status sl_ledger_storage_gc(sl_ledger_storage *ls, sl_err *err) {
  SL_ASSERT(ls != NULL);
  return ls->ops->gc != NULL ? ls->ops->gc(ls, err) : SL_OK;
}
