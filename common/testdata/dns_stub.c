/* A tiny DNS server for tests (dns_stub.h); message layout per RFC 1035. */
#include "common/testdata/dns_stub.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_ADDRS 8
#define HEADER 12
#define TYPE_A 1
#define CLASS_IN 1
#define RCODE_NXDOMAIN 3

struct sl_dns_stub {
  char name[254];
  struct in_addr addrs[MAX_ADDRS];
  size_t n_addrs;
  int fd;
  int wake[2]; /* a byte on wake[1] stops the thread */
  int port;
  pthread_t thread;
  atomic_long a_queries;
};

static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }

static void put16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)(v >> 8);
  p[1] = (uint8_t)v;
}

/* Reads the question's name (uncompressed labels, as resolvers send it)
 * from q[HEADER..n) into `name` as dotted text; returns the offset after
 * QTYPE and QCLASS, or 0 if malformed. */
static size_t parse_question(const uint8_t *q, size_t n, char *name, size_t cap) {
  size_t at = HEADER, len = 0;
  while (at < n && q[at] != 0) {
    size_t l = q[at++];
    if (l > 63 || at + l > n || len + l + 2 > cap) return 0;
    if (len > 0) name[len++] = '.';
    memcpy(name + len, q + at, l);
    len += l;
    at += l;
  }
  name[len] = '\0';
  if (at + 5 > n) return 0; /* the root label, QTYPE, QCLASS */
  return at + 5;
}

/* Builds the reply to query q (n bytes) in r (cap bytes); returns its
 * length, or 0 for no reply. */
static size_t answer(sl_dns_stub *d, const uint8_t *q, size_t n, uint8_t *r, size_t cap) {
  char name[256];
  if (n < HEADER || (q[2] & 0x80) != 0 || get16(q + 4) != 1) return 0; /* one question */
  size_t qend = parse_question(q, n, name, sizeof(name));
  if (qend == 0 || qend + 16 * MAX_ADDRS > cap) return 0;
  uint16_t qtype = get16(q + qend - 4), qclass = get16(q + qend - 2);
  bool ours = strcasecmp(name, d->name) == 0;
  size_t n_ans = ours && qtype == TYPE_A && qclass == CLASS_IN ? d->n_addrs : 0;
  if (n_ans > 0) atomic_fetch_add(&d->a_queries, 1);
  memcpy(r, q, qend); /* id, then the question as asked */
  r[2] = (uint8_t)(0x84 | (q[2] & 0x01)); /* response, authoritative, RD echoed */
  r[3] = (uint8_t)(0x80 | (ours ? 0 : RCODE_NXDOMAIN)); /* recursion available */
  put16(r + 6, (uint16_t)n_ans);
  put16(r + 8, 0);
  put16(r + 10, 0); /* the query's EDNS record is not echoed */
  size_t at = qend;
  for (size_t i = 0; i < n_ans; i++) {
    put16(r + at, 0xC000 | HEADER); /* name: pointer to the question's */
    put16(r + at + 2, TYPE_A);
    put16(r + at + 4, CLASS_IN);
    put16(r + at + 6, 0);
    put16(r + at + 8, 1); /* TTL 1 s */
    put16(r + at + 10, 4);
    memcpy(r + at + 12, &d->addrs[i], 4);
    at += 16;
  }
  return at;
}

static void *serve(void *arg) {
  sl_dns_stub *d = arg;
  uint8_t q[512], r[1024];
  for (;;) {
    struct pollfd p[2] = {{.fd = d->fd, .events = POLLIN}, {.fd = d->wake[0], .events = POLLIN}};
    if (poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return NULL;
    }
    if (p[1].revents != 0) return NULL;
    struct sockaddr_storage from;
    socklen_t flen = sizeof(from);
    ssize_t n = recvfrom(d->fd, q, sizeof(q), 0, (struct sockaddr *)&from, &flen);
    if (n <= 0) continue;
    size_t len = answer(d, q, (size_t)n, r, sizeof(r));
    if (len > 0) sendto(d->fd, r, len, 0, (struct sockaddr *)&from, flen);
  }
}

sl_status sl_dns_stub_start(const char *name, const char *const *addrs, size_t n,
                            sl_dns_stub **out, sl_err *err) {
  *out = NULL;
  if (name == NULL || name[0] == '\0' || strlen(name) > 253 || n == 0 || n > MAX_ADDRS)
    return sl_err_set(err, SL_EINVAL, "dns stub: bad name or address count");
  sl_dns_stub *d = calloc(1, sizeof(*d));
  if (d == NULL) return sl_err_set(err, SL_ENOMEM, "dns stub: out of memory");
  strcpy(d->name, name);
  sl_status st = SL_OK;
  for (size_t i = 0; i < n; i++) {
    if (inet_pton(AF_INET, addrs[i], &d->addrs[i]) != 1) {
      st = sl_err_set(err, SL_EINVAL, "dns stub: %s is not an IPv4 address", addrs[i]);
      goto out_free;
    }
  }
  d->n_addrs = n;
  d->fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (d->fd < 0) {
    st = sl_err_set(err, SL_EIO, "dns stub: socket: %s", strerror(errno));
    goto out_free;
  }
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t slen = sizeof(sa);
  if (bind(d->fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
      getsockname(d->fd, (struct sockaddr *)&sa, &slen) != 0) {
    st = sl_err_set(err, SL_EIO, "dns stub: bind: %s", strerror(errno));
    goto out_close;
  }
  d->port = ntohs(sa.sin_port);
  if (pipe2(d->wake, O_CLOEXEC) != 0) {
    st = sl_err_set(err, SL_EIO, "dns stub: pipe: %s", strerror(errno));
    goto out_close;
  }
  atomic_init(&d->a_queries, 0);
  if (pthread_create(&d->thread, NULL, serve, d) != 0) {
    st = sl_err_set(err, SL_EIO, "dns stub: cannot start thread");
    goto out_close_pipe;
  }
  *out = d;
  return SL_OK;

out_close_pipe:
  close(d->wake[0]);
  close(d->wake[1]);
out_close:
  close(d->fd);
out_free:
  free(d);
  return st;
}

int sl_dns_stub_port(const sl_dns_stub *d) { return d->port; }

long sl_dns_stub_a_queries(const sl_dns_stub *d) {
  return atomic_load(&((sl_dns_stub *)d)->a_queries);
}

void sl_dns_stub_stop(sl_dns_stub *d) {
  if (d == NULL) return;
  ssize_t w;
  do {
    w = write(d->wake[1], "x", 1);
  } while (w < 0 && errno == EINTR);
  pthread_join(d->thread, NULL);
  close(d->wake[0]);
  close(d->wake[1]);
  close(d->fd);
  free(d);
}
