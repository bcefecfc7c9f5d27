/*
 * sl_md_service lifecycle and the handler table (see service.h; the
 * handlers live in md_*.c, one file per concern).
 */
#include "metadata/service.h"

#include <stdlib.h>

#include "metadata/service_int.h"

sl_status sl_md_service_create(const sl_md_service_opts *opts, sl_md_service **out,
                               sl_err *err) {
  if (opts == NULL || opts->store == NULL)
    return sl_err_set(err, SL_EINVAL, "metadata service: no store");
  if (opts->default_ttl_s < 2 || opts->max_ttl_s < opts->default_ttl_s)
    return sl_err_set(err, SL_EINVAL,
                      "metadata service: need 2 <= default session ttl <= max ttl");
  if (opts->ledger_id_block < 1 || opts->ledger_id_block > (1u << 30))
    return sl_err_set(err, SL_EINVAL, "metadata service: ledger id block must be 1..2^30");
  if (opts->watch_buffer < 2)
    return sl_err_set(err, SL_EINVAL, "metadata service: watch buffer must be >= 2");
  sl_md_service *md = sl_xcalloc(1, sizeof(*md));
  md->opts = *opts;
  md->store = opts->store;
  pthread_mutex_init(&md->ids_lock, NULL);
  pthread_mutex_init(&md->epochs_lock, NULL);
  pthread_mutex_init(&md->watch_lock, NULL);
  pthread_cond_init(&md->watch_cond, NULL);
  *out = md;
  return SL_OK;
}

sl_status sl_md_service_register(sl_md_service *md, sl_rpc_server *srv, sl_err *err) {
  static const sl_metadata_service_handlers h = {
      .open_session = sl_md_open_session,
      .keep_alive = sl_md_keep_alive,
      .update_node = sl_md_update_node,
      .close_session = sl_md_close_session,
      .list_brokers = sl_md_list_brokers,
      .list_bookies = sl_md_list_bookies,
      .create_namespace = sl_md_create_namespace,
      .get_namespace = sl_md_get_namespace,
      .list_namespaces = sl_md_list_namespaces,
      .set_namespace_policies = sl_md_set_namespace_policies,
      .delete_namespace = sl_md_delete_namespace,
      .create_topic = sl_md_create_topic,
      .get_topic = sl_md_get_topic,
      .list_topics = sl_md_list_topics,
      .delete_topic = sl_md_delete_topic,
      .acquire_ownership = sl_md_acquire_ownership,
      .lookup_owner = sl_md_lookup_owner,
      .release_ownership = sl_md_release_ownership,
      .allocate_ledger_id = sl_md_allocate_ledger_id,
      .create_ledger = sl_md_create_ledger,
      .get_ledger = sl_md_get_ledger,
      .update_ledger = sl_md_update_ledger,
      .delete_ledger = sl_md_delete_ledger,
      .get_managed_ledger = sl_md_get_managed_ledger,
      .update_managed_ledger = sl_md_update_managed_ledger,
      .get_cursor = sl_md_get_cursor,
      .update_cursor = sl_md_update_cursor,
      .delete_cursor = sl_md_delete_cursor,
      .list_cursors = sl_md_list_cursors,
      .watch = sl_md_watch,
      .watch_writable = sl_md_watch_writable,
      .watch_done = sl_md_watch_done,
  };
  return sl_metadata_service_register(srv, &h, md, err);
}

void sl_md_service_destroy(sl_md_service *md) {
  if (md == NULL) return;
  /* Watch threads end once their call is done; the server is gone, so
   * every call is done. Wait for the threads to let go of the store. */
  pthread_mutex_lock(&md->watch_lock);
  while (md->n_watch_threads > 0) pthread_cond_wait(&md->watch_cond, &md->watch_lock);
  pthread_mutex_unlock(&md->watch_lock);
  pthread_cond_destroy(&md->watch_cond);
  pthread_mutex_destroy(&md->watch_lock);
  pthread_mutex_destroy(&md->ids_lock);
  for (size_t i = 0; i < SL_MD_EPOCH_CACHE; i++) free(md->epochs[i].partition);
  pthread_mutex_destroy(&md->epochs_lock);
  free(md);
}
