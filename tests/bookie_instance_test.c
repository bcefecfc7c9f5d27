/*
 * A bookie's instance id (BookKeeper's cookie) across restarts of a real
 * sluice-bookie: the same id after a restart, a new one after its disk was
 * wiped (in GetInfo, in its registration and in every "not found" answer,
 * so that recovery cannot take a wiped bookie's "not found" as proof), and
 * no start at all when only its journal dir was wiped.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "metadata.slrpc.h"
#include "tests/bookie_testlib.h"
#include "tests/proc.h"

static const char *const args[] = {"--registration_ttl", "2", NULL};

static char *instance_of(sl_rpc_channel *ch) {
  Sluice__V1__GetInfoResponse *info = sl_bktest_info(ch);
  char *id = strdup(info->instance_id);
  protobuf_c_message_free_unpacked(&info->base, NULL);
  assert_int_equal(strlen(id), 32);
  return id;
}

typedef struct reg_ctx {
  sl_cluster *c;
  const char *want; /* instance id the registration must show */
} reg_ctx;

/* The metadata service lists bookie-0 with the wanted instance id. */
static bool registered_as(void *arg) {
  reg_ctx *x = arg;
  sl_rpc_channel *md = sl_bktest_channel(sl_cluster_addr(x->c, SL_NODE_METADATA, 0));
  Sluice__V1__ListBookiesRequest q = SLUICE__V1__LIST_BOOKIES_REQUEST__INIT;
  Sluice__V1__ListBookiesResponse *r = NULL;
  sl_rpc_call_opts o = {.timeout_ms = 2000, .wait_for_ready = true};
  sl_status st = sl_metadata_service_list_bookies(md, &q, &r, &o, NULL);
  sl_rpc_channel_destroy(md);
  if (st != SL_OK) return false;
  bool ok = false;
  for (size_t i = 0; i < r->n_bookies; i++) {
    if (strcmp(r->bookies[i]->id, sl_cluster_id(x->c, SL_NODE_BOOKIE, 0)) == 0)
      ok = strcmp(r->bookies[i]->instance_id, x->want) == 0;
  }
  protobuf_c_message_free_unpacked(&r->base, NULL);
  return ok;
}

static void await_registered(sl_cluster *c, const char *instance) {
  reg_ctx x = {c, instance};
  if (!sl_bktest_poll(registered_as, &x, 10000))
    fail_msg("bookie-0 not registered with instance %s", instance);
}

static char *data_dir(sl_cluster *c, const char *sub) {
  char *p = malloc(1024);
  snprintf(p, 1024, "%s/%s%s%s", sl_cluster_dir(c), sl_cluster_id(c, SL_NODE_BOOKIE, 0),
           sub[0] ? "/" : "", sub);
  return p;
}

static bool log_contains(const char *path, const char *needle) {
  FILE *f = fopen(path, "r");
  assert_non_null(f);
  char line[4096];
  bool found = false;
  while (!found && fgets(line, sizeof(line), f) != NULL) found = strstr(line, needle) != NULL;
  fclose(f);
  return found;
}

static void test_bookie_instance__wiped_disk_is_a_new_instance(void **state) {
  (void)state;
  sl_cluster *c = sl_bktest_cluster("bookie_instance", 1, args);
  sl_rpc_channel *ch = sl_bktest_bookie_channel(c, 0);
  sl_bktest_write(ch, 1, 0, 10, 1024, 1);
  char *first = instance_of(ch);
  await_registered(c, first);

  /* A restart keeps the instance (and the data). */
  sl_err err = SL_ERR_INIT;
  sl_rpc_channel_destroy(ch);
  assert_int_equal(sl_cluster_stop_node(c, SL_NODE_BOOKIE, 0, &err), SL_OK);
  assert_int_equal(sl_cluster_restart(c, SL_NODE_BOOKIE, 0, &err), SL_OK);
  ch = sl_bktest_bookie_channel(c, 0);
  char *again = instance_of(ch);
  assert_string_equal(again, first);
  sl_bktest_check_entry(ch, 1, 9, 1024);

  /* Disk wiped, restarted under the same name: a new instance, and its
   * answers say so. */
  sl_rpc_channel_destroy(ch);
  assert_int_equal(sl_cluster_kill9(c, SL_NODE_BOOKIE, 0, &err), SL_OK);
  char *dir = data_dir(c, "");
  assert_int_equal(sl_proc_rmtree(dir, NULL), SL_OK);
  assert_int_equal(sl_cluster_restart(c, SL_NODE_BOOKIE, 0, &err), SL_OK);
  ch = sl_bktest_bookie_channel(c, 0);
  char *second = instance_of(ch);
  assert_string_not_equal(second, first);
  await_registered(c, second);
  /* Recovery's fencing read: found=false from a fenced bookie, but from a
   * new instance, so it proves nothing about entry 5. */
  Sluice__V1__ReadEntryResponse *r = NULL;
  assert_int_equal(sl_bktest_read(ch, 1, 5, true, 2, &r, &err), SL_OK);
  assert_false(r->found);
  assert_true(r->fenced);
  assert_string_equal(r->instance_id, second);
  assert_int_equal(r->last_entry_id, -1);
  protobuf_c_message_free_unpacked(&r->base, NULL);
  Sluice__V1__ReadEntriesRequest q = SLUICE__V1__READ_ENTRIES_REQUEST__INIT;
  q.ledger_id = 1;
  q.first_entry_id = 0;
  q.last_entry_id = 9;
  sl_rpc_stream *s = NULL;
  assert_int_equal(sl_bookie_service_read_entries_open(ch, &q, NULL, &s, &err), SL_OK);
  Sluice__V1__ReadEntriesResponse *m = NULL;
  assert_int_equal(sl_bookie_service_read_entries_recv(s, &m, 10000, &err), SL_OK);
  assert_non_null(m);
  assert_int_equal(m->n_entries, 0);
  assert_false(m->found);
  assert_int_equal(m->missing_entry_id, 0);
  assert_string_equal(m->instance_id, second);
  protobuf_c_message_free_unpacked(&m->base, NULL);
  sl_rpc_stream_destroy(s);

  /* Only the journal dir wiped: the bookie refuses to start. */
  sl_bktest_write(ch, 2, 0, 5, 1024, 1);
  sl_rpc_channel_destroy(ch);
  assert_int_equal(sl_cluster_stop_node(c, SL_NODE_BOOKIE, 0, &err), SL_OK);
  char *journal = data_dir(c, "journal");
  assert_int_equal(sl_proc_rmtree(journal, NULL), SL_OK);
  assert_int_not_equal(sl_cluster_restart(c, SL_NODE_BOOKIE, 0, &err), SL_OK);
  assert_false(sl_cluster_running(c, SL_NODE_BOOKIE, 0));
  assert_true(log_contains(sl_cluster_log(c, SL_NODE_BOOKIE, 0),
                           "journal dir has no instance id"));
  free(journal);
  free(dir);
  free(first);
  free(again);
  free(second);
  sl_bktest_cluster_destroy(c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_bookie_instance__wiped_disk_is_a_new_instance),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
