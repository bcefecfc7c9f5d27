#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "bookie/journal.h"
#include "bookie/testing/test_util.h"
#include "common/crc32c.h"

/* Collects what on_durable hands back. */
typedef struct sink {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  uint64_t done;
  uint64_t failed;
  uint64_t batches;
  sl_journal_pos end;
} sink;

static void sink_init(sink *k) {
  memset(k, 0, sizeof(*k));
  pthread_mutex_init(&k->mu, NULL);
  pthread_cond_init(&k->cv, NULL);
}

static void sink_release(sink *k) {
  pthread_mutex_destroy(&k->mu);
  pthread_cond_destroy(&k->cv);
}

static void on_durable(sl_journal_req *batch, sl_status st, const char *msg,
                       sl_journal_pos end, void *arg) {
  (void)msg;
  sink *k = arg;
  uint64_t n = 0;
  for (sl_journal_req *r = batch; r != NULL; r = r->next) n++;
  pthread_mutex_lock(&k->mu);
  k->done += n;
  if (st != SL_OK) k->failed += n;
  k->batches++;
  k->end = end;
  pthread_cond_broadcast(&k->cv);
  pthread_mutex_unlock(&k->mu);
}

static void sink_wait(sink *k, uint64_t n) {
  pthread_mutex_lock(&k->mu);
  while (k->done < n) pthread_cond_wait(&k->cv, &k->mu);
  pthread_mutex_unlock(&k->mu);
}

static sl_journal_opts opts_for(const char *dir, sink *k) {
  sl_journal_opts o = SL_JOURNAL_OPTS_INIT;
  o.dir = dir;
  o.segment_bytes = 1u << 20;
  o.on_durable = on_durable;
  o.arg = k;
  return o;
}

/* Deterministic payload for record i. */
static uint32_t fill_payload(uint8_t *buf, int i) {
  uint32_t len = (uint32_t)((i * 37) % 700);
  for (uint32_t b = 0; b < len; b++) buf[b] = (uint8_t)(i * 13 + b * 7);
  return len;
}

static void make_req(sl_journal_req *r, uint8_t *buf, int i) {
  memset(r, 0, sizeof(*r));
  uint32_t len = fill_payload(buf, i);
  static const sl_journal_rec_type types[] = {SL_JOURNAL_ADD, SL_JOURNAL_ADD,
                                              SL_JOURNAL_FENCE, SL_JOURNAL_LAC,
                                              SL_JOURNAL_DELETE};
  r->rec.type = types[i % 5];
  r->rec.ledger = 1000u + (uint64_t)i % 7;
  r->rec.entry = i;
  r->rec.epoch = (uint64_t)i / 3;
  r->rec.lac = i - 1;
  if (r->rec.type == SL_JOURNAL_ADD) {
    r->rec.payload = buf;
    r->rec.len = len;
  }
  r->rec.payload_crc = r->rec.type == SL_JOURNAL_ADD
                           ? sl_entry_crc(r->rec.ledger, r->rec.entry, r->rec.payload, r->rec.len)
                           : sl_crc32c(r->rec.payload, r->rec.len);
}

/* Opens the journal in o and starts it writing after `after`. */
static sl_journal *open_started(const sl_journal_opts *o, sl_journal_pos after, sl_err *err) {
  sl_journal *j = NULL;
  assert_int_equal(sl_journal_open(o, &j, err), SL_OK);
  assert_int_equal(sl_journal_start(j, after, err), SL_OK);
  return j;
}

/* Writes n records (and waits for them); returns their reqs (caller frees). */
static sl_journal_req *write_records(const char *dir, int n, uint8_t (*bufs)[1024],
                                     sl_journal_pos after) {
  sink k;
  sink_init(&k);
  sl_journal_opts o = opts_for(dir, &k);
  sl_err err = SL_ERR_INIT;
  sl_journal *j = open_started(&o, after, &err);
  sl_journal_req *reqs = calloc((size_t)n, sizeof(*reqs));
  assert_non_null(reqs);
  for (int i = 0; i < n; i++) {
    make_req(&reqs[i], bufs[i], i);
    assert_int_equal(sl_journal_submit(j, &reqs[i], &err), SL_OK);
  }
  sink_wait(&k, (uint64_t)n);
  assert_int_equal(k.failed, 0);
  sl_journal_close(j);
  sink_release(&k);
  return reqs;
}

typedef struct collected {
  int n;
  sl_journal_record recs[256];
  uint8_t payloads[256][1024];
  uint8_t keys[256][SL_LEDGER_KEY_BYTES];
  sl_journal_pos pos[256];
} collected;

static sl_status collect(const sl_journal_record *r, sl_journal_pos pos, void *arg) {
  collected *c = arg;
  assert_true(c->n < 256);
  c->recs[c->n] = *r;
  if (r->len > 0) memcpy(c->payloads[c->n], r->payload, r->len);
  c->recs[c->n].payload = c->payloads[c->n];
  if (r->key != NULL) {
    memcpy(c->keys[c->n], r->key, SL_LEDGER_KEY_BYTES);
    c->recs[c->n].key = c->keys[c->n];
  }
  c->pos[c->n] = pos;
  c->n++;
  return SL_OK;
}

static sl_status replay_all(const char *dir, sl_journal_pos from, collected *c,
                            sl_journal_replay_stats *rs) {
  sink k;
  sink_init(&k);
  sl_journal_opts o = opts_for(dir, &k);
  sl_journal *j = NULL;
  assert_int_equal(sl_journal_open(&o, &j, NULL), SL_OK);
  memset(c, 0, sizeof(*c));
  sl_status st = sl_journal_replay(j, from, collect, c, rs, NULL);
  sl_journal_close(j);
  sink_release(&k);
  return st;
}

static void assert_same_record(const sl_journal_record *got, const sl_journal_req *want) {
  assert_int_equal(got->type, want->rec.type);
  assert_int_equal(got->ledger, want->rec.ledger);
  assert_int_equal(got->entry, want->rec.entry);
  assert_int_equal(got->epoch, want->rec.epoch);
  assert_int_equal(got->lac, want->rec.lac);
  assert_int_equal(got->len, want->rec.len);
  assert_int_equal(got->payload_crc, want->rec.payload_crc);
  if (got->len > 0) assert_memory_equal(got->payload, want->rec.payload, got->len);
  assert_int_equal(got->key != NULL, want->rec.key != NULL);
  if (got->key != NULL) assert_memory_equal(got->key, want->rec.key, SL_LEDGER_KEY_BYTES);
}

static char *segment_path(const char *dir, uint64_t id) {
  char *p = malloc(strlen(dir) + 32);
  assert_non_null(p);
  sprintf(p, "%s/%016" PRIx64 ".jnl", dir, id);
  return p;
}

static int count_segments(const char *dir) {
  DIR *d = opendir(dir);
  assert_non_null(d);
  int n = 0;
  struct dirent *de;
  while ((de = readdir(d)) != NULL) n += strstr(de->d_name, ".jnl") != NULL;
  closedir(d);
  return n;
}

/* Replays the whole journal in dir into a new collection (caller frees). */
static collected *replay_new(const char *dir, sl_journal_replay_stats *rs) {
  collected *c = malloc(sizeof(*c));
  assert_int_equal(replay_all(dir, (sl_journal_pos){0, 0}, c, rs), SL_OK);
  return c;
}

/* Writes n bytes at `at` of a segment file, as damage from outside would. */
static void pwrite_segment(const char *seg, const void *buf, size_t n, off_t at) {
  int fd = open(seg, O_RDWR);
  assert_true(fd >= 0);
  assert_int_equal(pwrite(fd, buf, n, at), (ssize_t)n);
  close(fd);
}

/* Flips the bits in `mask` of the byte at `at` of a segment file. */
static void flip_byte(const char *seg, off_t at, uint8_t mask) {
  int fd = open(seg, O_RDWR);
  assert_true(fd >= 0);
  uint8_t b;
  assert_int_equal(pread(fd, &b, 1, at), 1);
  b ^= mask;
  assert_int_equal(pwrite(fd, &b, 1, at), 1);
  close(fd);
}

static void put_le(uint8_t *p, uint64_t v, int n) {
  for (int i = 0; i < n; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* Writes segment `id` of dir as a bookie before format version 3 did: a
 * 32-byte header saying `version`, then the records of reqs (without keys),
 * each ADD with the CRC of its payload only. */
static void write_old_segment(const char *dir, uint64_t id, uint32_t version,
                              const sl_journal_req *reqs, int n) {
  char *seg = segment_path(dir, id);
  FILE *f = fopen(seg, "wb");
  assert_non_null(f);
  uint8_t h[48] = "SLJOURN1";
  put_le(h + 8, version, 4);
  put_le(h + 12, 32, 4);
  put_le(h + 16, id, 8);
  put_le(h + 28, sl_crc32c(h, 28), 4);
  assert_int_equal(fwrite(h, 1, 32, f), 32);
  for (int i = 0; i < n; i++) {
    const sl_journal_record *r = &reqs[i].rec;
    memset(h, 0, sizeof(h));
    put_le(h + 4, r->len, 4);
    h[8] = (uint8_t)r->type;
    put_le(h + 12, sl_crc32c(r->payload, r->len), 4);
    put_le(h + 16, r->ledger, 8);
    put_le(h + 24, (uint64_t)r->entry, 8);
    put_le(h + 32, r->epoch, 8);
    put_le(h + 40, (uint64_t)r->lac, 8);
    put_le(h, sl_crc32c(h + 4, 44), 4);
    assert_int_equal(fwrite(h, 1, 48, f), 48);
    if (r->len > 0) assert_int_equal(fwrite(r->payload, 1, r->len, f), r->len);
  }
  fclose(f);
  free(seg);
}

static void test_journal__write_replay(void **state) {
  (void)state;
  char *dir = sl_test_mkdtemp("jwr");
  static uint8_t bufs[100][1024];
  sl_journal_req *reqs = write_records(dir, 100, bufs, (sl_journal_pos){0, 0});
  sl_journal_replay_stats rs;
  collected *c = replay_new(dir, &rs);
  assert_int_equal(c->n, 100);
  assert_int_equal(rs.records, 100);
  assert_int_equal(rs.torn_tails, 0);
  for (int i = 0; i < 100; i++) {
    assert_same_record(&c->recs[i], &reqs[i]);
    assert_int_equal(sl_journal_pos_cmp(c->pos[i], reqs[i].pos), 0);
  }
  /* Replay from the middle returns only the later records. */
  assert_int_equal(replay_all(dir, reqs[60].pos, c, &rs), SL_OK);
  assert_int_equal(c->n, 40);
  assert_same_record(&c->recs[0], &reqs[60]);
  free(c);
  free(reqs);
  sl_test_rmdtemp(dir);
}

static void test_journal__torn_tail_truncated(void **state) {
  (void)state;
  char *dir = sl_test_mkdtemp("jtorn");
  static uint8_t bufs[20][1024];
  sl_journal_req *reqs = write_records(dir, 20, bufs, (sl_journal_pos){0, 0});
  /* Record 15 is an ADD with a payload; cut the file inside it. */
  assert_int_equal(reqs[15].rec.type, SL_JOURNAL_ADD);
  assert_true(reqs[15].rec.len > 10);
  char *seg = segment_path(dir, reqs[15].pos.segment);
  assert_int_equal(truncate(seg, (off_t)(reqs[15].pos.offset + SL_JOURNAL_RECORD_HEADER + 5)), 0);
  sl_journal_replay_stats rs;
  collected *c = replay_new(dir, &rs);
  assert_int_equal(c->n, 15);
  for (int i = 0; i < 15; i++) assert_same_record(&c->recs[i], &reqs[i]);
  assert_int_equal(rs.torn_tails, 1);
  /* Also cut inside a header. */
  assert_int_equal(truncate(seg, (off_t)(reqs[10].pos.offset + 20)), 0);
  assert_int_equal(replay_all(dir, (sl_journal_pos){0, 0}, c, &rs), SL_OK);
  assert_int_equal(c->n, 10);
  free(c);
  free(seg);
  free(reqs);
  sl_test_rmdtemp(dir);
}

static void test_journal__garbage_tail_and_restart(void **state) {
  (void)state;
  char *dir = sl_test_mkdtemp("jgarb");
  static uint8_t bufs[30][1024];
  sl_journal_req *reqs = write_records(dir, 30, bufs, (sl_journal_pos){0, 0});
  char *seg = segment_path(dir, reqs[29].pos.segment);
  /* Garbage where the next record would go (inside the preallocated space). */
  uint64_t tail = reqs[29].pos.offset + SL_JOURNAL_RECORD_HEADER + reqs[29].rec.len;
  uint8_t junk[300];
  for (size_t i = 0; i < sizeof(junk); i++) junk[i] = (uint8_t)(i * 31 + 7);
  pwrite_segment(seg, junk, sizeof(junk), (off_t)tail);
  /* And one flipped payload byte in record 25 (an ADD): it and everything
   * after it in this segment is dropped. */
  assert_int_equal(reqs[25].rec.type, SL_JOURNAL_ADD);
  flip_byte(seg, (off_t)(reqs[25].pos.offset + SL_JOURNAL_RECORD_HEADER + 1), 0x40);
  sl_journal_replay_stats rs;
  collected *c = replay_new(dir, &rs);
  assert_int_equal(c->n, 25);
  assert_int_equal(rs.torn_tails, 1);

  /* A restarted journal writes a new segment; both read back in order. */
  static uint8_t bufs2[10][1024];
  sl_journal_req *more = write_records(dir, 10, bufs2, rs.end);
  assert_true(more[0].pos.segment > reqs[29].pos.segment);
  assert_int_equal(replay_all(dir, (sl_journal_pos){0, 0}, c, &rs), SL_OK);
  assert_int_equal(c->n, 35);
  for (int i = 0; i < 25; i++) assert_same_record(&c->recs[i], &reqs[i]);
  for (int i = 0; i < 10; i++) assert_same_record(&c->recs[25 + i], &more[i]);
  free(more);
  free(c);
  free(seg);
  free(reqs);
  sl_test_rmdtemp(dir);
}

typedef struct adder_ctx {
  sl_journal *j;
  int count;
  atomic_int submitted; /* records submitted so far, all adders */
} adder_ctx;

typedef struct one_done {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool done;
} one_done;

/* on_durable for the group-commit test: each request's owner waits on it. */
static void signal_each(sl_journal_req *batch, sl_status st, const char *msg,
                        sl_journal_pos end, void *arg) {
  (void)msg;
  (void)end;
  sink *k = arg;
  uint64_t n = 0;
  while (batch != NULL) {
    sl_journal_req *next = batch->next;
    one_done *d = (one_done *)batch->rec.payload; /* the owner's waiter */
    pthread_mutex_lock(&d->mu);
    d->done = true;
    pthread_cond_signal(&d->cv);
    pthread_mutex_unlock(&d->mu);
    batch = next;
    n++;
  }
  pthread_mutex_lock(&k->mu);
  k->done += n;
  if (st != SL_OK) k->failed += n;
  k->batches++;
  pthread_mutex_unlock(&k->mu);
}

/* One synchronous adder: submit, wait for durability, repeat. */
static void *adder_main(void *arg) {
  adder_ctx *a = arg;
  one_done d;
  pthread_mutex_init(&d.mu, NULL);
  pthread_cond_init(&d.cv, NULL);
  for (int i = 0; i < a->count; i++) {
    sl_journal_req r;
    memset(&r, 0, sizeof(r));
    r.rec.type = SL_JOURNAL_ADD;
    r.rec.ledger = 1;
    r.rec.entry = i;
    r.rec.lac = -1;
    /* The payload is the waiter itself: any bytes will do. */
    r.rec.payload = &d;
    r.rec.len = (uint32_t)sizeof(d);
    r.rec.payload_crc = sl_entry_crc(1, i, &d, sizeof(d));
    d.done = false;
    if (sl_journal_submit(a->j, &r, NULL) != SL_OK) abort();
    atomic_fetch_add(&a->submitted, 1);
    pthread_mutex_lock(&d.mu);
    while (!d.done) pthread_cond_wait(&d.cv, &d.mu);
    pthread_mutex_unlock(&d.mu);
  }
  pthread_mutex_destroy(&d.mu);
  pthread_cond_destroy(&d.cv);
  return NULL;
}

static bool all_submitted_once(void *arg) {
  adder_ctx *a = arg;
  return atomic_load(&a->submitted) >= 32;
}

static void test_journal__group_commit_batches(void **state) {
  (void)state;
  enum { THREADS = 32, PER = 50 };
  char *dir = sl_test_mkdtemp("jgc");
  sink k;
  sink_init(&k);
  sl_journal_opts o = opts_for(dir, &k);
  o.on_durable = signal_each;
  static sl_test_gate gate = SL_TEST_GATE_INIT;
  o.sync_hook = sl_test_gate_hook;
  o.hook_arg = &gate;
  sl_journal *j = open_started(&o, (sl_journal_pos){0, 0}, NULL);
  pthread_t th[THREADS];
  adder_ctx a = {j, PER, 0};
  /* The first sync waits until every adder has a record queued behind it,
   * so the next batch must carry them together, however the threads are
   * scheduled (a sanitizer build on 2 cores serialises them otherwise). */
  sl_test_gate_set(&gate, true, false);
  for (int i = 0; i < THREADS; i++) assert_int_equal(pthread_create(&th[i], NULL, adder_main, &a), 0);
  sl_test_gate_wait_blocked(&gate);
  assert_true(sl_test_poll(all_submitted_once, &a, 30000));
  sl_test_gate_set(&gate, false, false);
  for (int i = 0; i < THREADS; i++) pthread_join(th[i], NULL);
  sl_journal_stats js;
  sl_journal_get_stats(j, &js);
  sl_journal_close(j);
  print_message("adds=%d syncs=%" PRIu64 " batches=%" PRIu64 "\n", THREADS * PER,
                js.syncs, js.batches);
  assert_int_equal(k.done, THREADS * PER);
  assert_int_equal(k.failed, 0);
  assert_int_equal(js.records, THREADS * PER);
  /* Each adder waits for its own sync, so without group commit there would
   * be one sync per add; the batch after the held sync alone saves at
   * least THREADS - 2 of them. */
  assert_true(js.syncs < (uint64_t)(THREADS * PER));
  assert_true((uint64_t)(THREADS * PER) - js.syncs >= THREADS - 2);
  sink_release(&k);
  sl_test_rmdtemp(dir);
}

static void test_journal__rotation_and_release(void **state) {
  (void)state;
  char *dir = sl_test_mkdtemp("jrot");
  sink k;
  sink_init(&k);
  sl_journal_opts o = opts_for(dir, &k);
  o.segment_bytes = 4096;
  sl_journal *j = open_started(&o, (sl_journal_pos){0, 0}, NULL);
  static uint8_t bufs[200][1024];
  static sl_journal_req reqs[200];
  for (int i = 0; i < 200; i++) {
    make_req(&reqs[i], bufs[i], i);
    assert_int_equal(sl_journal_submit(j, &reqs[i], NULL), SL_OK);
    if (i % 10 == 9) sink_wait(&k, (uint64_t)i + 1);
  }
  sink_wait(&k, 200);
  sl_journal_stats js;
  sl_journal_get_stats(j, &js);
  assert_true(js.segments_created > 5);
  assert_int_equal(count_segments(dir), (int)js.segments);
  for (int i = 1; i < 200; i++) assert_true(sl_journal_pos_cmp(reqs[i - 1].pos, reqs[i].pos) < 0);
  /* Release everything before record 150's segment. */
  sl_journal_pos cut = reqs[150].pos;
  assert_int_equal(sl_journal_release(j, cut, NULL), SL_OK);
  sl_journal_get_stats(j, &js);
  assert_true(js.segments_deleted > 0);
  assert_int_equal(count_segments(dir), (int)js.segments);
  /* Releasing past the tail never deletes the segment being written. */
  sl_journal_pos tail = sl_journal_tail(j);
  assert_int_equal(sl_journal_release(j, (sl_journal_pos){tail.segment + 5, 0}, NULL), SL_OK);
  assert_int_equal(count_segments(dir), 1);
  sl_journal_close(j);
  sl_journal_replay_stats rs;
  collected *c = replay_new(dir, &rs);
  /* Only the records of the last segment remain. */
  int first = 200 - c->n;
  assert_true(c->n > 0 && c->n < 50);
  for (int i = 0; i < c->n; i++) assert_same_record(&c->recs[i], &reqs[first + i]);
  assert_int_equal(reqs[first].pos.segment, tail.segment);
  free(c);
  sink_release(&k);
  sl_test_rmdtemp(dir);
}

static int fail_after;
static int fail_hook(int fd, void *arg) {
  (void)arg;
  if (__atomic_sub_fetch(&fail_after, 1, __ATOMIC_SEQ_CST) < 0) {
    errno = EIO;
    return -1;
  }
  return fdatasync(fd);
}

static void test_journal__sync_failure_is_sticky(void **state) {
  (void)state;
  char *dir = sl_test_mkdtemp("jfail");
  sink k;
  sink_init(&k);
  sl_journal_opts o = opts_for(dir, &k);
  o.sync_hook = fail_hook;
  fail_after = 2 + 1; /* segment creation: file + dir; then one good batch */
  sl_err err = SL_ERR_INIT;
  sl_journal *j = open_started(&o, (sl_journal_pos){0, 0}, NULL);
  static uint8_t bufs[3][1024];
  sl_journal_req r[3];
  make_req(&r[0], bufs[0], 0);
  assert_int_equal(sl_journal_submit(j, &r[0], NULL), SL_OK);
  sink_wait(&k, 1);
  assert_int_equal(k.failed, 0);
  make_req(&r[1], bufs[1], 1);
  assert_int_equal(sl_journal_submit(j, &r[1], NULL), SL_OK);
  sink_wait(&k, 2);
  assert_int_equal(k.failed, 1);
  /* FAILED: refused at once, even though syncs would work again. */
  fail_after = 1000;
  make_req(&r[2], bufs[2], 2);
  assert_int_equal(sl_journal_submit(j, &r[2], &err), SL_EIO);
  assert_non_null(strstr(err.msg, "fdatasync"));
  sl_journal_close(j);
  sink_release(&k);
  sl_test_rmdtemp(dir);
}

static void test_journal__bad_input(void **state) {
  (void)state;
  char *dir = sl_test_mkdtemp("jbad");
  sink k;
  sink_init(&k);
  sl_err err = SL_ERR_INIT;
  sl_journal *j = NULL;
  sl_journal_opts o = opts_for(dir, &k);
  o.dir = NULL;
  assert_int_equal(sl_journal_open(&o, &j, &err), SL_EINVAL);
  o = opts_for(dir, &k);
  o.segment_bytes = 100;
  assert_int_equal(sl_journal_open(&o, &j, &err), SL_EINVAL);
  o = opts_for(dir, &k);
  o.max_record_bytes = 1000;
  assert_int_equal(sl_journal_open(&o, &j, &err), SL_OK);
  sl_journal_req r;
  static uint8_t buf[2000];
  make_req(&r, buf, 1);
  assert_int_equal(sl_journal_submit(j, &r, &err), SL_EPRECOND); /* not started */
  assert_int_equal(sl_journal_start(j, (sl_journal_pos){0, 0}, &err), SL_OK);
  assert_int_equal(sl_journal_start(j, (sl_journal_pos){0, 0}, &err), SL_EPRECOND);
  assert_int_equal(sl_journal_replay(j, (sl_journal_pos){0, 0}, collect, NULL, NULL, &err),
                   SL_EPRECOND);
  r.rec.type = SL_JOURNAL_CHECKPOINT;
  assert_int_equal(sl_journal_submit(j, &r, &err), SL_EINVAL);
  r.rec.type = (sl_journal_rec_type)99;
  assert_int_equal(sl_journal_submit(j, &r, &err), SL_EINVAL);
  r.rec.type = SL_JOURNAL_ADD;
  r.rec.len = 1001;
  r.rec.payload = buf;
  assert_int_equal(sl_journal_submit(j, &r, &err), SL_ETOOBIG);
  r.rec.payload = NULL;
  r.rec.len = 5;
  assert_int_equal(sl_journal_submit(j, &r, &err), SL_EINVAL);
  assert_int_equal(sl_journal_submit(j, NULL, &err), SL_EINVAL);
  sl_journal_close(j);
  sl_journal_close(NULL);
  sink_release(&k);
  sl_test_rmdtemp(dir);
}

static void test_journal__checkpoint_marker(void **state) {
  (void)state;
  char *dir = sl_test_mkdtemp("jmark");
  sink k;
  sink_init(&k);
  sl_journal_opts o = opts_for(dir, &k);
  sl_journal *j = open_started(&o, (sl_journal_pos){0, 0}, NULL);
  static uint8_t bufs[4][1024];
  sl_journal_req r[4];
  for (int i = 0; i < 2; i++) {
    make_req(&r[i], bufs[i], i);
    assert_int_equal(sl_journal_submit(j, &r[i], NULL), SL_OK);
  }
  sink_wait(&k, 2);
  sl_journal_pos mark = sl_journal_tail(j);
  assert_int_equal(sl_journal_mark_checkpoint(j, mark, NULL), SL_OK);
  for (int i = 2; i < 4; i++) {
    make_req(&r[i], bufs[i], i);
    assert_int_equal(sl_journal_submit(j, &r[i], NULL), SL_OK);
  }
  sink_wait(&k, 4);
  sl_journal_close(j);
  sl_journal_replay_stats rs;
  collected *c = replay_new(dir, &rs);
  assert_int_equal(c->n, 4); /* the marker itself is not passed on */
  assert_true(rs.have_marker);
  assert_int_equal(sl_journal_pos_cmp(rs.marker, mark), 0);
  free(c);
  sink_release(&k);
  sl_test_rmdtemp(dir);
}

/* Records that carry a ledger key: the key reads back, the header CRC
 * covers it, and only adds and fences may carry one. */
static void test_journal__records_with_keys(void **state) {
  (void)state;
  char *dir = sl_test_mkdtemp("jkey");
  sink k;
  sink_init(&k);
  sl_journal_opts o = opts_for(dir, &k);
  sl_err err = SL_ERR_INIT;
  sl_journal *j = open_started(&o, (sl_journal_pos){0, 0}, NULL);
  enum { N = 40 };
  static uint8_t bufs[N][1024];
  static uint8_t keys[N][SL_LEDGER_KEY_BYTES];
  static sl_journal_req reqs[N];
  for (int i = 0; i < N; i++) {
    make_req(&reqs[i], bufs[i], i);
    bool keyed = (reqs[i].rec.type == SL_JOURNAL_ADD || reqs[i].rec.type == SL_JOURNAL_FENCE) &&
                 i % 3 != 1;
    if (keyed) {
      for (int b = 0; b < (int)SL_LEDGER_KEY_BYTES; b++) keys[i][b] = (uint8_t)(i * 7 + b);
      reqs[i].rec.key = keys[i];
    }
    assert_int_equal(sl_journal_submit(j, &reqs[i], NULL), SL_OK);
  }
  sink_wait(&k, N);
  assert_int_equal(k.failed, 0);
  for (int i = 1; i < N; i++) {
    assert_int_equal(reqs[i].pos.offset - reqs[i - 1].pos.offset,
                     sl_journal_record_bytes(&reqs[i - 1].rec));
  }
  /* A key on a LAC, delete or checkpoint record is refused. */
  sl_journal_req bad;
  static uint8_t badbuf[1024];
  make_req(&bad, badbuf, 3);
  assert_int_equal(bad.rec.type, SL_JOURNAL_LAC);
  bad.rec.key = keys[0];
  assert_int_equal(sl_journal_submit(j, &bad, &err), SL_EINVAL);
  assert_non_null(strstr(err.msg, "key"));
  sl_journal_close(j);

  sl_journal_replay_stats rs;
  collected *c = replay_new(dir, &rs);
  assert_int_equal(c->n, N);
  int keyed = 0;
  for (int i = 0; i < N; i++) {
    assert_same_record(&c->recs[i], &reqs[i]);
    keyed += c->recs[i].key != NULL;
  }
  assert_true(keyed > 5);
  /* One flipped key byte: that record and the rest of the segment are a
   * torn tail. */
  int victim = 20;
  while (reqs[victim].rec.key == NULL) victim++;
  char *seg = segment_path(dir, reqs[victim].pos.segment);
  flip_byte(seg, (off_t)(reqs[victim].pos.offset + SL_JOURNAL_RECORD_HEADER + 9), 0x01);
  assert_int_equal(replay_all(dir, (sl_journal_pos){0, 0}, c, &rs), SL_OK);
  assert_int_equal(c->n, victim);
  assert_int_equal(rs.torn_tails, 1);
  free(seg);
  free(c);
  sink_release(&k);
  sl_test_rmdtemp(dir);
}

/* Segments of format versions 1 and 2 (32-byte header, ADD records with a
 * payload-only CRC) still replay, their ADDs handed on with the entry
 * checksum; an unknown future version is not guessed at. */
static void test_journal__reads_old_segments(void **state) {
  (void)state;
  static uint8_t bufs[30][1024];
  static sl_journal_req reqs[30];
  for (int i = 0; i < 30; i++) make_req(&reqs[i], bufs[i], i);
  for (uint32_t version = 1; version <= 4; version++) {
    char *dir = sl_test_mkdtemp("jold");
    write_old_segment(dir, 1, version, reqs, 30);
    sl_journal_replay_stats rs;
    collected *c = replay_new(dir, &rs);
    assert_int_equal(c->n, version <= 2 ? 30 : 0);
    for (int i = 0; i < c->n; i++) assert_same_record(&c->recs[i], &reqs[i]);
    free(c);
    sl_test_rmdtemp(dir);
  }
}

/* sl_journal_bytes_after counts record bytes exactly, plus the header of
 * each later segment, while writing and after a reopen. */
static void test_journal__bytes_after(void **state) {
  (void)state;
  char *dir = sl_test_mkdtemp("jbytes");
  sink k;
  sink_init(&k);
  sl_journal_opts o = opts_for(dir, &k);
  o.segment_bytes = 4096;
  sl_journal *j = open_started(&o, (sl_journal_pos){0, 0}, NULL);
  sl_journal_pos start = sl_journal_tail(j);
  assert_int_equal(sl_journal_bytes_after(j, start), 0);
  assert_int_equal(sl_journal_bytes_after(j, (sl_journal_pos){0, 0}),
                   SL_JOURNAL_SEGMENT_HEADER);
  enum { N = 100 };
  static uint8_t bufs[N][1024];
  static uint8_t key[SL_LEDGER_KEY_BYTES];
  static sl_journal_req reqs[N];
  uint64_t records = 0;
  for (int i = 0; i < N; i++) {
    make_req(&reqs[i], bufs[i], i);
    if (reqs[i].rec.type == SL_JOURNAL_FENCE) reqs[i].rec.key = key;
    records += sl_journal_record_bytes(&reqs[i].rec);
    assert_int_equal(sl_journal_submit(j, &reqs[i], NULL), SL_OK);
    if (i % 10 == 9) sink_wait(&k, (uint64_t)i + 1);
  }
  sink_wait(&k, N);
  sl_journal_pos tail = sl_journal_tail(j);
  uint64_t later_headers = (tail.segment - start.segment) * SL_JOURNAL_SEGMENT_HEADER;
  assert_true(later_headers > 0);
  assert_int_equal(sl_journal_bytes_after(j, start), records + later_headers);
  assert_int_equal(sl_journal_bytes_after(j, tail), 0);
  assert_int_equal(sl_journal_bytes_after(j, (sl_journal_pos){tail.segment + 1, 0}), 0);
  for (int i = 1; i < N; i++) {
    uint64_t diff = sl_journal_bytes_after(j, reqs[i - 1].pos) -
                    sl_journal_bytes_after(j, reqs[i].pos);
    bool crossed = reqs[i].pos.segment != reqs[i - 1].pos.segment;
    assert_int_equal(diff, sl_journal_record_bytes(&reqs[i - 1].rec) +
                               (crossed ? SL_JOURNAL_SEGMENT_HEADER : 0));
  }
  uint64_t total = sl_journal_bytes_after(j, (sl_journal_pos){0, 0});
  uint64_t at50 = sl_journal_bytes_after(j, reqs[50].pos);
  sl_journal_close(j);
  /* After a reopen, replay measures the segments it reads. */
  assert_int_equal(sl_journal_open(&o, &j, NULL), SL_OK);
  assert_int_equal(sl_journal_bytes_after(j, (sl_journal_pos){0, 0}), 0);
  sl_journal_replay_stats rs;
  collected *c = malloc(sizeof(*c));
  memset(c, 0, sizeof(*c));
  assert_int_equal(sl_journal_replay(j, (sl_journal_pos){0, 0}, collect, c, &rs, NULL), SL_OK);
  assert_int_equal(sl_journal_bytes_after(j, (sl_journal_pos){0, 0}), total);
  assert_int_equal(sl_journal_bytes_after(j, reqs[50].pos), at50);
  free(c);
  sl_journal_close(j);
  sink_release(&k);
  sl_test_rmdtemp(dir);
}

/* Segments carry the writer's instance id; replay under another refuses. */
static void test_journal__instance_id_stamped(void **state) {
  (void)state;
  char *dir = sl_test_mkdtemp("jinst");
  static const uint8_t mine[SL_JOURNAL_INSTANCE_BYTES] = "0123456789abcdef";
  static const uint8_t other[SL_JOURNAL_INSTANCE_BYTES] = "fedcba9876543210";
  sink k;
  sink_init(&k);
  sl_journal_opts o = opts_for(dir, &k);
  o.instance_id = mine;
  sl_journal *j = open_started(&o, (sl_journal_pos){0, 0}, NULL);
  static uint8_t buf[1024];
  sl_journal_req r;
  make_req(&r, buf, 0);
  assert_int_equal(sl_journal_submit(j, &r, NULL), SL_OK);
  sink_wait(&k, 1);
  sl_journal_close(j);
  collected *c = malloc(sizeof(*c));
  assert_int_equal(sl_journal_open(&o, &j, NULL), SL_OK);
  memset(c, 0, sizeof(*c));
  assert_int_equal(sl_journal_replay(j, (sl_journal_pos){0, 0}, collect, c, NULL, NULL), SL_OK);
  assert_int_equal(c->n, 1);
  sl_journal_close(j);
  o.instance_id = other;
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_journal_open(&o, &j, NULL), SL_OK);
  assert_int_equal(sl_journal_replay(j, (sl_journal_pos){0, 0}, collect, c, NULL, &err),
                   SL_ECORRUPT);
  assert_non_null(strstr(err.msg, "of another bookie instance"));
  sl_journal_close(j);
  free(c);
  sink_release(&k);
  sl_test_rmdtemp(dir);
}

/* Bytes of [0, upto) of the file that its extent map marks unwritten
 * (allocated by fallocate, never written); -1 if the file system has no
 * extent map (FIEMAP). */
static int64_t unwritten_bytes(const char *path, uint64_t upto) {
  int fd = open(path, O_RDONLY);
  assert_true(fd >= 0);
  enum { MAX_EXT = 256 };
  struct fiemap *fm = calloc(1, sizeof(*fm) + MAX_EXT * sizeof(struct fiemap_extent));
  assert_non_null(fm);
  fm->fm_start = 0;
  fm->fm_length = upto;
  fm->fm_extent_count = MAX_EXT;
  int64_t n = -1;
  if (ioctl(fd, FS_IOC_FIEMAP, fm) == 0) {
    n = 0;
    for (uint32_t i = 0; i < fm->fm_mapped_extents; i++) {
      const struct fiemap_extent *e = &fm->fm_extents[i];
      if (!(e->fe_flags & FIEMAP_EXTENT_UNWRITTEN) || e->fe_logical >= upto) continue;
      uint64_t end = e->fe_logical + e->fe_length < upto ? e->fe_logical + e->fe_length : upto;
      n += (int64_t)(end - e->fe_logical);
    }
  }
  free(fm);
  close(fd);
  return n;
}

/* The journal writes zeros ahead of its records, so that a group commit's
 * fdatasync finds its blocks already written (no extent conversion, which
 * is a metadata write per commit); the rest of the segment stays merely
 * preallocated. */
static void test_journal__zeros_ahead_of_records(void **state) {
  (void)state;
  char *dir = sl_test_mkdtemp("jzero");
  sink k;
  sink_init(&k);
  sl_journal_opts o = opts_for(dir, &k);
  o.segment_bytes = 4u << 20;
  sl_journal *j = open_started(&o, (sl_journal_pos){0, 0}, NULL);
  static uint8_t bufs[50][1024];
  sl_journal_req reqs[50];
  for (int i = 0; i < 50; i++) {
    make_req(&reqs[i], bufs[i], i);
    assert_int_equal(sl_journal_submit(j, &reqs[i], NULL), SL_OK);
    sink_wait(&k, (uint64_t)i + 1); /* one group commit each */
  }
  pthread_mutex_lock(&k.mu);
  sl_journal_pos end = k.end;
  pthread_mutex_unlock(&k.mu);
  char path[4096];
  snprintf(path, sizeof(path), "%s/%016" PRIx64 ".jnl", dir, end.segment);
  int64_t ahead = unwritten_bytes(path, end.offset + (256u << 10));
  int64_t all = unwritten_bytes(path, o.segment_bytes);
  sl_journal_close(j);
  sink_release(&k);
  if (ahead < 0) {
    sl_test_rmdtemp(dir);
    skip(); /* no extent map here (tmpfs): nothing to see */
  }
  assert_int_equal(ahead, 0);
  assert_true(all >= (int64_t)(2u << 20)); /* zeroed only a little ahead */
  sl_test_rmdtemp(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_journal__write_replay),
      cmocka_unit_test(test_journal__torn_tail_truncated),
      cmocka_unit_test(test_journal__garbage_tail_and_restart),
      cmocka_unit_test(test_journal__group_commit_batches),
      cmocka_unit_test(test_journal__rotation_and_release),
      cmocka_unit_test(test_journal__sync_failure_is_sticky),
      cmocka_unit_test(test_journal__bad_input),
      cmocka_unit_test(test_journal__checkpoint_marker),
      cmocka_unit_test(test_journal__records_with_keys),
      cmocka_unit_test(test_journal__reads_old_segments),
      cmocka_unit_test(test_journal__instance_id_stamped),
      cmocka_unit_test(test_journal__bytes_after),
      cmocka_unit_test(test_journal__zeros_ahead_of_records),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
