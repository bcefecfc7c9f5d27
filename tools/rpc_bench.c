/*
 * rpc-bench: throughput of the RPC runtime (common/rpc_*.h) over loopback,
 * client and server in this one process, against the echo service.
 *
 *   bazel run //tools:rpc-bench -- [--seconds N] [--payload BYTES] [--tls]
 *                                  [--threads N]  (server workers, default 2)
 *                                  [--astream-only]  (only the astream rows)
 *                                  [--astream K]  (only the astream row with
 *                                   K streams and --payload; for profiling)
 *                                  [--repeat N]  (astream rows: N runs each,
 *                                   alternating with the baseline; medians)
 *
 * Prints one line per measurement:
 *   unary_seq calls_per_s=...        blocking unary calls, one at a time
 *   unary_async64 calls_per_s=...    async unary calls, 64 in flight
 *   stream_seq msgs_per_s=...        bidi stream: send, wait for the echo
 *   stream_window64 msgs_per_s=...   bidi stream: up to 64 unanswered sends
 *   astreamK_w256 msgs_per_s=...     K async bidi streams (rpc_astream.h) on
 *                                    one serial, 256 unanswered each, 1 KiB
 *                                    and 64 KiB, K = 1 and 3; each printed
 *                                    beside grpc-core-baseline --astream
 *                                    doing the same work, with the ratios
 * each with cpu_us (process CPU per call or message) and switches (context
 * switches per call or message). Those two hold up when other work shares
 * the machine; the rates do not, so compare them first.
 *
 * Reference: //tools:grpc-core-baseline (tools/grpc_core_baseline.c) is the
 * same sequential unary and bidi ping-pongs on bare gRPC core, without this
 * runtime. Run both back to back with the same --threads and compare
 * unary_seq and stream_seq with baseline_unary_seq and baseline_stream_seq:
 * a gap there is ours, a drop in both is the machine.
 * Measured 2026-11-22 on the 2-core Firecracker VM, one server thread
 * (--threads 1), rates vary 2x from run to run, per-call figures do not:
 *   baseline_unary_seq  2.2-4.7k/s  ~230-370 us  3.2-3.4 switches
 *   unary_seq           2.8-3.7k/s  ~290-330 us  3.7-3.8 switches
 *   baseline_stream_seq 3.7-8.6k/s  ~130-220 us  3.0-3.3 switches
 *   stream_seq          5.1-7.0k/s  ~160-190 us  3.3 switches
 * The 12-16k sequential unary calls/s once measured on a similar 2-core
 * machine are not reachable on this VM today even by bare gRPC core. unary_seq's extra ~0.4 switches are its
 * RECV_CLOSE_ON_SERVER batch (baseline --close shows the same), which
 * on_done and cancellation need. With two server threads (the default)
 * both lose alike (~5-7 switches per call): a second thread blocked in its
 * queue becomes gRPC's poller for the other's calls, gRPC core's cost.
 * (Until 2026-12 the baseline re-sent one byte buffer, which gRPC empties on
 * send, so its stream rows after the first message moved empty messages;
 * it now makes a fresh buffer per send, as our runtime does.)
 *
 * Async stream rows, measured 2026-12-02 with --seconds 2 on the same VM
 * shared with other builds (rates swing 2-3x run to run; CPU per message
 * holds): 1 KiB 17-32k msgs/s at 36-52 cpu_us (baseline 30-41); 64 KiB
 * 1-6k msgs/s at 220-330 cpu_us (baseline 175-265); ratios 0.4-1.0, CPU
 * ratio 1.0-1.5.
 *
 * Where the time goes (perf record, 2026-12-02, --astream K): syscalls,
 * futex wake-ups and context switches per message match the baseline
 * (about 2 sendmsg, 0.1-0.2 recvmsg and epoll_wait, 0.4-0.5 switches); the
 * runtime's own functions and locks are 2-3% of the process. The rest of the
 * gap is work the baseline does not do: it moves opaque bytes, while our
 * client decodes every echo and the echo service decodes and re-encodes
 * every message (protobuf-c copies bytes fields), three payload copies and
 * allocations per message. At 64 KiB a message arrives in many slices and
 * used to be gathered into a fresh allocation on each side (gRPC's
 * readall), whose pages were faulted in each time: memmove was 18% of the
 * process. Gathering into a buffer kept per stream or call (rpc_int.h)
 * brought it to 13% (about 70 to 45 us per message). Comparing before and
 * after, or us and the baseline, needs --repeat: at load averages of 20-50
 * on 2 cores, single runs of the same binary differ 2x in CPU per message.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/rpc_astream.h"
#include "common/rpc_client.h"
#include "common/rpc_server.h"
#include "common/testdata/echo_service.h"
#include "tools/bench_util.h"

typedef Sluice__Test__EchoRequest echo_req;

enum { WINDOW = 64 };

static void die(const char *what, sl_status st, const sl_err *err) {
  fprintf(stderr, "rpc-bench: %s: %s\n", what, sl_err_msg(err, st));
  exit(1);
}

static echo_req make_req(size_t payload) {
  echo_req req = SLUICE__TEST__ECHO_REQUEST__INIT;
  req.payload.len = payload;
  req.payload.data = payload ? calloc(1, payload) : NULL;
  if (payload && req.payload.data == NULL) die("payload", SL_ENOMEM, NULL);
  return req;
}

/* ---- unary ---- */

static double unary_seq(sl_rpc_channel *ch, const echo_req *req, double seconds) {
  sl_err err = SL_ERR_INIT;
  long n = 0;
  double t0 = sl_bench_now_s(), t;
  do {
    for (int i = 0; i < 100; i++, n++) {
      ProtobufCMessage *resp;
      sl_status st = sl_rpc_unary(ch, &sl_echo_unary, &req->base, &resp, NULL, &err);
      if (st != SL_OK) die("unary", st, &err);
      protobuf_c_message_free_unpacked(resp, NULL);
    }
    t = sl_bench_now_s();
  } while (t - t0 < seconds);
  return (double)n / (t - t0);
}

typedef struct async_run {
  sl_rpc_channel *ch;
  const echo_req *req;
  double until;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  long done;
  int inflight;
  sl_status failed;
} async_run;

static void on_async(sl_status st, const char *details, ProtobufCMessage *resp, void *arg);

static sl_status start_async(async_run *r) {
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_rpc_unary_async(r->ch, &sl_echo_unary, &r->req->base, NULL, on_async, r, &err);
  if (st != SL_OK) fprintf(stderr, "rpc-bench: async start: %s\n", sl_err_msg(&err, st));
  return st;
}

/* Channel completion thread: count, then keep the window full until time
 * is up. */
static void on_async(sl_status st, const char *details, ProtobufCMessage *resp, void *arg) {
  async_run *r = arg;
  if (resp != NULL) protobuf_c_message_free_unpacked(resp, NULL);
  bool again = st == SL_OK && sl_bench_now_s() < r->until;
  if (again && start_async(r) != SL_OK) again = false;
  pthread_mutex_lock(&r->mu);
  r->done++;
  if (st != SL_OK) {
    r->failed = st;
    fprintf(stderr, "rpc-bench: async call: %s\n", details);
  }
  if (!again && --r->inflight == 0) pthread_cond_signal(&r->cv);
  pthread_mutex_unlock(&r->mu);
}

static double unary_async(sl_rpc_channel *ch, const echo_req *req, double seconds) {
  async_run r = {.ch = ch, .req = req, .failed = SL_OK};
  pthread_mutex_init(&r.mu, NULL);
  pthread_cond_init(&r.cv, NULL);
  double t0 = sl_bench_now_s();
  r.until = t0 + seconds;
  pthread_mutex_lock(&r.mu);
  for (int i = 0; i < WINDOW; i++) {
    if (start_async(&r) != SL_OK) die("async", SL_EINTERNAL, NULL);
    r.inflight++;
  }
  while (r.inflight > 0) pthread_cond_wait(&r.cv, &r.mu);
  pthread_mutex_unlock(&r.mu);
  double t = sl_bench_now_s();
  if (r.failed != SL_OK) die("async", r.failed, NULL);
  pthread_cond_destroy(&r.cv);
  pthread_mutex_destroy(&r.mu);
  return (double)r.done / (t - t0);
}

/* ---- async streams (rpc_astream.h) ---- */

/* K bidi streams sharing one serial (as a ledger writer's Qw bookie
 * streams would), each keeping AWINDOW messages unanswered. Every send is
 * the same sl_rpc_packed message, packed once, as the broker sends one
 * entry to each bookie; the baseline likewise reuses one byte buffer. */
enum { AWINDOW = 256, MAX_ASTREAMS = 3 };

typedef struct arun arun;
typedef struct astream_slot {
  arun *run;
  sl_rpc_astream *s;
  int in_flight;  /* sent, echo not yet received; serial only */
  bool closed;
} astream_slot;

struct arun {
  sl_rpc_packed *msg;
  double t0, t_end, seconds;
  long n;         /* echoes received before the time was up; serial only */
  bool stop;
  astream_slot slot[MAX_ASTREAMS];
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int ended;      /* under mu */
  sl_status failed;
};

static void refill(astream_slot *sl) {
  if (sl->run->stop) {
    if (sl->in_flight == 0 && !sl->closed) {
      sl->closed = true;
      sl_rpc_astream_close_send(sl->s);
    }
    return;
  }
  /* SL_EBUSY: on_writable calls back here. */
  while (sl->in_flight < AWINDOW && sl_rpc_astream_send_packed(sl->s, sl->run->msg) == SL_OK)
    sl->in_flight++;
}

static void arun_message(sl_rpc_astream *s, const ProtobufCMessage *msg, void *arg) {
  (void)s;
  (void)msg;
  astream_slot *sl = arg;
  arun *r = sl->run;
  sl->in_flight--;
  if (!r->stop && ++r->n % 256 == 0) {
    r->t_end = sl_bench_now_s();
    r->stop = r->t_end - r->t0 >= r->seconds;
  }
  refill(sl);
  if (r->stop)
    for (int i = 0; i < MAX_ASTREAMS; i++)
      if (r->slot[i].s != NULL) refill(&r->slot[i]);
}

static void arun_writable(sl_rpc_astream *s, void *arg) {
  (void)s;
  refill(arg);
}

static void arun_done(sl_rpc_astream *s, sl_status st, const char *details, void *arg) {
  (void)s;
  astream_slot *sl = arg;
  pthread_mutex_lock(&sl->run->mu);
  if (st != SL_OK) {
    sl->run->failed = st;
    fprintf(stderr, "rpc-bench: async stream: %s\n", details);
  }
  sl->run->ended++;
  pthread_cond_signal(&sl->run->cv);
  pthread_mutex_unlock(&sl->run->mu);
}

static double astreams(sl_rpc_channel *ch, const echo_req *req, double seconds, int k) {
  static const sl_rpc_astream_handler h = {
      .on_message = arun_message, .on_writable = arun_writable, .on_done = arun_done};
  sl_err err = SL_ERR_INIT;
  arun r = {.seconds = seconds, .failed = SL_OK};
  pthread_mutex_init(&r.mu, NULL);
  pthread_cond_init(&r.cv, NULL);
  sl_serial *serial;
  sl_status st = sl_serial_create(&serial, &err);
  if (st == SL_OK) st = sl_rpc_pack(&req->base, 0, &r.msg, &err);
  if (st != SL_OK) die("astream setup", st, &err);
  sl_rpc_call_opts o = {.serial = serial, .send_queue_max = AWINDOW};
  for (int i = 0; i < k; i++) {
    r.slot[i].run = &r;
    st = sl_rpc_astream_open(ch, &sl_echo_bidi, NULL, &o, &h, &r.slot[i], &r.slot[i].s, &err);
    if (st != SL_OK) die("astream open", st, &err);
  }
  r.t0 = sl_bench_now_s();
  for (int i = 0; i < k; i++) sl_serial_post(serial, (void (*)(void *))refill, &r.slot[i]);
  pthread_mutex_lock(&r.mu);
  while (r.ended < k) pthread_cond_wait(&r.cv, &r.mu);
  pthread_mutex_unlock(&r.mu);
  if (r.failed != SL_OK) die("astream", r.failed, NULL);
  for (int i = 0; i < k; i++) sl_rpc_astream_unref(r.slot[i].s);
  sl_rpc_packed_unref(r.msg);
  sl_serial_unref(serial);
  pthread_cond_destroy(&r.cv);
  pthread_mutex_destroy(&r.mu);
  return (double)r.n / (r.t_end - r.t0);
}

/* The same work on bare gRPC core: runs grpc-core-baseline --astream (built
 * next to this binary) and reads its rate and CPU per message. */
static bool baseline_astream(int k, size_t payload, int threads, double seconds,
                             double *rate, double *cpu_us) {
  char exe[4096], cmd[4200];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (n <= 0) return false;
  exe[n] = '\0';
  char *slash = strrchr(exe, '/');
  if (slash == NULL) return false;
  *slash = '\0';
  snprintf(cmd, sizeof(cmd),
           "'%s/grpc-core-baseline' --astream %d --streams %d --payload %zu --threads %d "
           "--seconds %g",
           exe, AWINDOW, k, payload, threads, seconds);
  FILE *f = popen(cmd, "r");
  if (f == NULL) return false;
  char line[512];
  bool ok = false;
  while (fgets(line, sizeof(line), f) != NULL) {
    const char *r = strstr(line, "msgs_per_s="), *c = strstr(line, "cpu_us=");
    if (strncmp(line, "baseline_astream", 16) == 0 && r != NULL && c != NULL) {
      *rate = atof(r + 11);
      *cpu_us = atof(c + 7);
      ok = true;
    }
  }
  return pclose(f) == 0 && ok;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Median of v[0..n) (sorts v). */
static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof(*v), cmp_double);
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

enum { MAX_REPEAT = 50 };

/* One async-stream row and its baseline beside it. With repeat > 1 the two
 * alternate (ours, baseline, ours, ...), so that each pair meets about the
 * same load from whatever else runs on the machine, and the row prints
 * medians: of the rates and CPU figures, and of the per-pair ratios. */
static void astream_row(sl_rpc_channel *ch, size_t payload, int k, int threads,
                        double seconds, int repeat) {
  echo_req req = make_req(payload);
  double rate[MAX_REPEAT], cpu[MAX_REPEAT], sw[MAX_REPEAT];
  double b_rate[MAX_REPEAT], b_cpu[MAX_REPEAT], ratio[MAX_REPEAT], cpu_ratio[MAX_REPEAT];
  bool have = true;
  for (int i = 0; i < repeat; i++) {
    sl_bench_usage u0 = sl_bench_usage_now();
    double t0 = sl_bench_now_s();
    rate[i] = astreams(ch, &req, seconds, k);
    double took = sl_bench_now_s() - t0;
    sl_bench_usage u1 = sl_bench_usage_now();
    cpu[i] = (u1.cpu_s - u0.cpu_s) * 1e6 / (rate[i] * took);
    sw[i] = (double)(u1.switches - u0.switches) / (rate[i] * took);
    have = have && baseline_astream(k, payload, threads, seconds, &b_rate[i], &b_cpu[i]);
    if (have) {
      ratio[i] = rate[i] / b_rate[i];
      cpu_ratio[i] = cpu[i] / b_cpu[i];
    }
  }
  printf("astream%d_w%d msgs_per_s=%.0f cpu_us=%.1f switches=%.1f payload=%zu threads=%d", k,
         AWINDOW, median(rate, repeat), median(cpu, repeat), median(sw, repeat), payload,
         threads);
  if (repeat > 1) printf(" runs=%d", repeat);
  if (have)
    printf(" | baseline msgs_per_s=%.0f cpu_us=%.1f | ratio=%.2f cpu_ratio=%.2f\n",
           median(b_rate, repeat), median(b_cpu, repeat), median(ratio, repeat),
           median(cpu_ratio, repeat));
  else
    printf(" | baseline unavailable (build //tools:grpc-core-baseline)\n");
  fflush(stdout);
  free(req.payload.data);
}

/* ---- streams ---- */

static sl_rpc_stream *open_bidi(sl_rpc_channel *ch) {
  sl_err err = SL_ERR_INIT;
  sl_rpc_stream *s;
  sl_status st = sl_rpc_stream_open(ch, &sl_echo_bidi, NULL, NULL, &s, &err);
  if (st != SL_OK) die("open", st, &err);
  return s;
}

static void recv_one(sl_rpc_stream *s) {
  sl_err err = SL_ERR_INIT;
  ProtobufCMessage *msg;
  sl_status st = sl_rpc_stream_recv(s, &msg, 10000, &err);
  if (st != SL_OK || msg == NULL) die("recv", st == SL_OK ? SL_EINTERNAL : st, &err);
  protobuf_c_message_free_unpacked(msg, NULL);
}

static void end_stream(sl_rpc_stream *s) {
  sl_err err = SL_ERR_INIT;
  ProtobufCMessage *msg;
  sl_status st = sl_rpc_stream_close_send(s, &err);
  if (st != SL_OK) die("close", st, &err);
  st = sl_rpc_stream_recv(s, &msg, 10000, &err);
  if (st != SL_OK || msg != NULL) die("stream end", st == SL_OK ? SL_EINTERNAL : st, &err);
  sl_rpc_stream_destroy(s);
}

static double stream_seq(sl_rpc_channel *ch, const echo_req *req, double seconds) {
  sl_rpc_stream *s = open_bidi(ch);
  sl_err err = SL_ERR_INIT;
  long n = 0;
  double t0 = sl_bench_now_s(), t;
  do {
    for (int i = 0; i < 100; i++, n++) {
      sl_status st = sl_rpc_stream_send(s, &req->base, 10000, &err);
      if (st != SL_OK) die("send", st, &err);
      recv_one(s);
    }
    t = sl_bench_now_s();
  } while (t - t0 < seconds);
  end_stream(s);
  return (double)n / (t - t0);
}

typedef struct window_run {
  sl_rpc_stream *s;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  long sent, received; /* under mu */
  bool stop;
} window_run;

/* Receives echoes while any are owed; sender and receiver share one cv. */
static void *window_receiver(void *arg) {
  window_run *w = arg;
  for (;;) {
    pthread_mutex_lock(&w->mu);
    while (w->received == w->sent && !w->stop) pthread_cond_wait(&w->cv, &w->mu);
    bool all = w->received == w->sent; /* and so stop is set */
    pthread_mutex_unlock(&w->mu);
    if (all) return NULL;
    recv_one(w->s);
    pthread_mutex_lock(&w->mu);
    w->received++;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
  }
}

static double stream_window(sl_rpc_channel *ch, const echo_req *req, double seconds) {
  window_run w = {.s = open_bidi(ch)};
  sl_err err = SL_ERR_INIT;
  pthread_mutex_init(&w.mu, NULL);
  pthread_cond_init(&w.cv, NULL);
  pthread_t t;
  if (pthread_create(&t, NULL, window_receiver, &w) != 0) die("thread", SL_ENOMEM, NULL);
  double t0 = sl_bench_now_s();
  for (;;) {
    pthread_mutex_lock(&w.mu);
    while (w.sent - w.received >= WINDOW) pthread_cond_wait(&w.cv, &w.mu);
    bool over = sl_bench_now_s() - t0 >= seconds;
    if (!over) w.sent++; /* counted before the send: the echo may beat us */
    pthread_cond_broadcast(&w.cv);
    pthread_mutex_unlock(&w.mu);
    if (over) break;
    sl_status st = sl_rpc_stream_send(w.s, &req->base, 10000, &err);
    if (st != SL_OK) die("send", st, &err);
  }
  pthread_mutex_lock(&w.mu);
  w.stop = true;
  pthread_cond_broadcast(&w.cv);
  while (w.received < w.sent) pthread_cond_wait(&w.cv, &w.mu);
  long n = w.received;
  pthread_mutex_unlock(&w.mu);
  double took = sl_bench_now_s() - t0;
  pthread_join(t, NULL);
  end_stream(w.s);
  pthread_cond_destroy(&w.cv);
  pthread_mutex_destroy(&w.mu);
  return (double)n / took;
}

/* ---- main ---- */

static char *read_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) return NULL;
  char *buf = calloc(1, 1 << 16);
  size_t n = buf ? fread(buf, 1, (1 << 16) - 1, f) : 0;
  fclose(f);
  if (n == 0) {
    free(buf);
    return NULL;
  }
  return buf;
}

/* Self-signed certificate for --tls, made with openssl in a temp dir. */
static void make_cert(char **cert, char **key) {
  char dir[] = "/tmp/rpc-bench-XXXXXX", cmd[512], path[128];
  if (mkdtemp(dir) == NULL) die("mkdtemp", SL_EIO, NULL);
  snprintf(cmd, sizeof(cmd),
           "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 "
           "-subj /CN=localhost -addext subjectAltName=IP:127.0.0.1,DNS:localhost "
           "-keyout %s/k.pem -out %s/c.pem 2>/dev/null",
           dir, dir);
  if (system(cmd) != 0) die("openssl", SL_EIO, NULL);
  snprintf(path, sizeof(path), "%s/c.pem", dir);
  *cert = read_file(path);
  remove(path);
  snprintf(path, sizeof(path), "%s/k.pem", dir);
  *key = read_file(path);
  remove(path);
  remove(dir);
  if (*cert == NULL || *key == NULL) die("certificate", SL_EIO, NULL);
}

int main(int argc, char **argv) {
  double seconds = 2;
  size_t payload = 16;
  bool tls = false;
  bool astream_only = false;
  int astream_k = 0; /* --astream K: just that row */
  int repeat = 1;
  int threads = 2;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc) {
      seconds = atof(argv[++i]);
    } else if (strcmp(argv[i], "--payload") == 0 && i + 1 < argc) {
      payload = (size_t)strtoul(argv[++i], NULL, 10);
    } else if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
      threads = atoi(argv[++i]);
    } else if (strcmp(argv[i], "--tls") == 0) {
      tls = true;
    } else if (strcmp(argv[i], "--astream-only") == 0) {
      astream_only = true;
    } else if (strcmp(argv[i], "--repeat") == 0 && i + 1 < argc) {
      repeat = atoi(argv[++i]);
      if (repeat < 1 || repeat > MAX_REPEAT) {
        fprintf(stderr, "rpc-bench: --repeat takes 1 to %d\n", MAX_REPEAT);
        return 2;
      }
    } else if (strcmp(argv[i], "--astream") == 0 && i + 1 < argc) {
      astream_k = atoi(argv[++i]);
      astream_only = true;
      if (astream_k < 1 || astream_k > MAX_ASTREAMS) {
        fprintf(stderr, "rpc-bench: --astream takes 1 to %d\n", MAX_ASTREAMS);
        return 2;
      }
    } else {
      fprintf(stderr, "usage: rpc-bench [--seconds N] [--payload BYTES] [--tls] [--threads N] "
                      "[--astream-only] [--astream K] [--repeat N]\n");
      return 2;
    }
  }
  if (seconds <= 0) seconds = 2;
  char *cert = NULL, *key = NULL;
  if (tls) make_cert(&cert, &key);

  sl_echo_stats stats;
  memset(&stats, 0, sizeof(stats));
  sl_rpc_server *srv;
  sl_err err = SL_ERR_INIT;
  sl_rpc_server_opts so = {.addr = "127.0.0.1:0", .n_threads = threads, .tls_cert_pem = cert,
                           .tls_key_pem = key};
  sl_status st = sl_echo_server_start(&so, &stats, &srv, &err);
  if (st != SL_OK) die("server", st, &err);
  char target[64];
  snprintf(target, sizeof(target), "127.0.0.1:%d", sl_rpc_server_port(srv));
  sl_rpc_channel *ch;
  sl_rpc_channel_opts co = {.target = target, .tls_root_pem = cert};
  st = sl_rpc_channel_create(&co, &ch, &err);
  if (st != SL_OK) die("channel", st, &err);

  echo_req req = make_req(payload);
  unary_seq(ch, &req, 0.2); /* connect and warm up */
  static const struct {
    const char *name, *unit;
    double (*run)(sl_rpc_channel *, const echo_req *, double);
  } runs[] = {{"unary_seq", "calls", unary_seq},
              {"unary_async64", "calls", unary_async},
              {"stream_seq", "msgs", stream_seq},
              {"stream_window64", "msgs", stream_window}};
  for (size_t i = 0; i < sizeof(runs) / sizeof(runs[0]) && !astream_only; i++) {
    sl_bench_usage u0 = sl_bench_usage_now();
    double t0 = sl_bench_now_s();
    double rate = runs[i].run(ch, &req, seconds);
    double took = sl_bench_now_s() - t0;
    printf("%s %s_per_s=%.0f payload=%zu tls=%d threads=%d", runs[i].name, runs[i].unit, rate,
           payload, tls, threads);
    sl_bench_usage_print(u0, rate * took);
    fflush(stdout);
  }

  /* The rows a broker lives on: one bookie stream, then three (Qw = 3),
   * small and large entries. */
  static const size_t kAPayloads[] = {1024, 64 * 1024};
  for (size_t p = 0; p < 2 && astream_k == 0; p++) {
    astream_row(ch, kAPayloads[p], 1, threads, seconds, repeat);
    astream_row(ch, kAPayloads[p], 3, threads, seconds, repeat);
  }
  if (astream_k > 0) astream_row(ch, payload, astream_k, threads, seconds, repeat);

  free(req.payload.data);
  sl_rpc_channel_destroy(ch);
  sl_rpc_server_destroy(srv);
  free(cert);
  free(key);
  return 0;
}
