/*
 * sluice-metadata while etcd is down: every call that needs etcd fails with
 * UNAVAILABLE within its deadline (the service's --store_timeout_ms bounds
 * each store call), and once etcd is back the same process serves again.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include "tests/metadata_cluster.h"
#include "tests/metadata_util.h"

#define P "public/outage"
#define DEADLINE_MS 3000

typedef struct fixture {
  sl_cluster *c;
  sl_rpc_channel *ch;
  int64_t session;
  uint64_t epoch;
  int64_t cursor_version;
} fixture;

static int setup(void **state) {
  static const char *const args[] = {"--store_timeout_ms", "1000", NULL};
  fixture *f = calloc(1, sizeof(*f));
  f->c = mdt_cluster_start("mdoutage", 1, false, args);
  f->ch = mdt_cluster_connect(f->c, 0);
  f->session = mdt_open_broker(f->ch, "b1", 30);
  Sluice__V1__AcquireOwnershipResponse *r = mdt_acquire(f->ch, P, "b1", f->session);
  f->epoch = r->owner->epoch;
  protobuf_c_message_free_unpacked(&r->base, NULL);
  sl_err err = SL_ERR_INIT;
  mdt_expect(mdt_st_update_cursor(f->ch, P, "s", 1, 0, f->epoch, &f->cursor_version, &err),
             SL_OK, &err);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  sl_rpc_channel_destroy(f->ch);
  sl_cluster_destroy(f->c);
  free(f);
  return 0;
}

/* One call of each kind that needs etcd; returns its status. */
static sl_status call(fixture *f, int which, sl_err *err) {
  sl_rpc_call_opts o = mdt_opts(DEADLINE_MS);
  ProtobufCMessage *resp = NULL;
  sl_status st;
  switch (which) {
    case 0: {
      Sluice__V1__GetCursorRequest r = SLUICE__V1__GET_CURSOR_REQUEST__INIT;
      r.partition = P;
      r.subscription = "s";
      st = sl_metadata_service_get_cursor(f->ch, &r, (Sluice__V1__CursorResponse **)&resp, &o,
                                          err);
      break;
    }
    case 1:
      return mdt_st_update_cursor(f->ch, P, "s", 2, f->cursor_version, f->epoch, NULL, err);
    case 2: {
      Sluice__V1__KeepAliveRequest r = SLUICE__V1__KEEP_ALIVE_REQUEST__INIT;
      r.session_id = f->session;
      st = sl_metadata_service_keep_alive(f->ch, &r, (Sluice__V1__KeepAliveResponse **)&resp,
                                          &o, err);
      break;
    }
    case 3: {
      Sluice__V1__LookupOwnerRequest r = SLUICE__V1__LOOKUP_OWNER_REQUEST__INIT;
      r.partition = P;
      st = sl_metadata_service_lookup_owner(f->ch, &r, (Sluice__V1__OwnerInfo **)&resp, &o, err);
      break;
    }
    case 4: {
      Sluice__V1__ListBookiesRequest r = SLUICE__V1__LIST_BOOKIES_REQUEST__INIT;
      st = sl_metadata_service_list_bookies(f->ch, &r, (Sluice__V1__ListBookiesResponse **)&resp,
                                            &o, err);
      break;
    }
    case 5: {
      Sluice__V1__CreateNamespaceRequest r = SLUICE__V1__CREATE_NAMESPACE_REQUEST__INIT;
      r.name = "during-outage";
      st = sl_metadata_service_create_namespace(f->ch, &r, (Sluice__V1__Namespace **)&resp, &o,
                                                err);
      break;
    }
    default: {
      int64_t s = 0;
      return mdt_st_open_broker(f->ch, "b9", 0, &s, err);
    }
  }
  if (resp != NULL) protobuf_c_message_free_unpacked(resp, NULL);
  return st;
}
#define N_CALLS 7

static void test_metadata_outage__unavailable_then_back(void **state) {
  fixture *f = *state;
  sl_err err = SL_ERR_INIT;
  for (int i = 0; i < N_CALLS - 2; i++) mdt_expect(call(f, i == 1 ? 0 : i, &err), SL_OK, &err);

  mdt_etcd_kill9(f->c);
  for (int i = 0; i < N_CALLS; i++) {
    long long t0 = mdt_now_ms();
    sl_status st = call(f, i, &err);
    long long took = mdt_now_ms() - t0;
    if (st != SL_EUNAVAIL)
      fail_msg("call %d with etcd down: %s (%s), want unavailable", i, sl_status_str(st),
               sl_err_msg(&err, st));
    assert_true(took < DEADLINE_MS);
  }
  /* A watch opened now ends with UNAVAILABLE too, not silence. */
  Sluice__V1__WatchRequest wr = SLUICE__V1__WATCH_REQUEST__INIT;
  sl_rpc_stream *w = NULL;
  mdt_expect(sl_metadata_service_watch_open(f->ch, &wr, NULL, &w, &err), SL_OK, &err);
  Sluice__V1__WatchEvent *ev = NULL;
  mdt_expect(sl_metadata_service_watch_recv(w, &ev, DEADLINE_MS, &err), SL_EUNAVAIL, &err);
  sl_rpc_stream_destroy(w);

  /* etcd returns: the same service process works again. */
  mdt_etcd_restart(f->c);
  long long deadline = mdt_now_ms() + 20000;
  sl_status st;
  do {
    st = call(f, 0, &err);
    if (st != SL_OK) {
      struct timespec ts = {0, 50 * 1000 * 1000};
      nanosleep(&ts, NULL);
    }
  } while (st != SL_OK && mdt_now_ms() < deadline);
  mdt_expect(st, SL_OK, &err);
  /* The session survived (an etcd restart renews leases), the CAS works,
   * and ownership is still ours. */
  for (int i = 1; i < N_CALLS - 1; i++) mdt_expect(call(f, i, &err), SL_OK, &err);
  int64_t entry = 0;
  mdt_expect(mdt_st_get_cursor(f->ch, P, "s", &entry, NULL, &err), SL_OK, &err);
  assert_int_equal(entry, 2);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_metadata_outage__unavailable_then_back, setup,
                                      teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
