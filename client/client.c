/* libsluice client: options, channels per broker, the lookup cache. */
#include "client/client_int.h"

#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "broker.slrpc.h"
#include "common/clock.h"

#define SL_CLIENT_DEFAULT_URL "127.0.0.1:6650"

typedef struct chan {
  char *address;
  sl_rpc_channel *ch;
} chan;

typedef struct cached {
  char *topic;
  sl_lookup l;
  uint64_t epoch;               /* owner's epoch when l.n == 1, else 0 */
} cached;

struct sl_client {
  char *url;
  char *authorization;
  char *tls_ca, *tls_cert, *tls_key;
  int timeout_ms;
  pthread_mutex_t mu;
  chan *chans;
  size_t n_chans;
  cached *cache;
  size_t n_cache;
};

static sl_status read_file(const char *path, char **out, sl_err *err) {
  *out = NULL;
  if (path == NULL) return SL_OK;
  FILE *f = fopen(path, "rb");
  if (f == NULL) return sl_err_set(err, SL_EINVAL, "%s: cannot read (check the path)", path);
  size_t cap = 4096, len = 0;
  char *buf = malloc(cap);
  while (buf != NULL) {
    len += fread(buf + len, 1, cap - len - 1, f);
    if (len < cap - 1) break;
    char *q = realloc(buf, cap * 2);
    if (q == NULL) {
      free(buf);
      buf = NULL;
      break;
    }
    buf = q;
    cap *= 2;
  }
  bool bad = ferror(f);
  fclose(f);
  if (buf == NULL) return sl_err_set(err, SL_ENOMEM, "%s: out of memory", path);
  if (bad) {
    free(buf);
    return sl_err_set(err, SL_EINVAL, "%s: read error", path);
  }
  buf[len] = '\0';
  *out = buf;
  return SL_OK;
}

sl_status sl_client_create(const sl_client_opts *opts, sl_client **out, sl_err *err) {
  sl_client_opts none = SL_CLIENT_OPTS_INIT;
  if (opts == NULL) opts = &none;
  const char *url = opts->url;
  if (url == NULL || *url == '\0') url = getenv("SLUICE_URL");
  if (url == NULL || *url == '\0') url = SL_CLIENT_DEFAULT_URL;
  if (strchr(url, ':') == NULL)
    return sl_err_set(err, SL_EINVAL, "url %s: expected HOST:PORT", url);
  if (opts->timeout_ms < 0) return sl_err_set(err, SL_EINVAL, "timeout must be >= 0");
  sl_client *c = calloc(1, sizeof(*c));
  if (c == NULL) return sl_err_set(err, SL_ENOMEM, "client: out of memory");
  pthread_mutex_init(&c->mu, NULL);
  c->timeout_ms = opts->timeout_ms > 0 ? opts->timeout_ms : 10000;
  sl_status st = SL_ENOMEM;
  c->url = strdup(url);
  if (c->url == NULL) goto out_free;
  if (opts->token != NULL) {
    size_t n = strlen(opts->token) + 8;
    c->authorization = malloc(n);
    if (c->authorization == NULL) goto out_free;
    snprintf(c->authorization, n, "Bearer %s", opts->token);
  }
  if ((st = read_file(opts->tls_ca_file, &c->tls_ca, err)) != SL_OK) goto out_free;
  if ((st = read_file(opts->tls_cert_file, &c->tls_cert, err)) != SL_OK) goto out_free;
  if ((st = read_file(opts->tls_key_file, &c->tls_key, err)) != SL_OK) goto out_free;
  *out = c;
  return SL_OK;
out_free:
  if (st == SL_ENOMEM) sl_err_set(err, SL_ENOMEM, "client: out of memory");
  sl_client_destroy(c);
  return st;
}

void sl_lookup_free(sl_lookup *l) {
  if (l == NULL) return;
  for (size_t i = 0; i < l->n; i++) {
    free(l->partition ? l->partition[i] : NULL);
    free(l->address ? l->address[i] : NULL);
  }
  free(l->partition);
  free(l->address);
  memset(l, 0, sizeof(*l));
}

void sl_client_destroy(sl_client *c) {
  if (c == NULL) return;
  for (size_t i = 0; i < c->n_chans; i++) {
    sl_rpc_channel_destroy(c->chans[i].ch);
    free(c->chans[i].address);
  }
  for (size_t i = 0; i < c->n_cache; i++) {
    free(c->cache[i].topic);
    sl_lookup_free(&c->cache[i].l);
  }
  free(c->chans);
  free(c->cache);
  free(c->url);
  free(c->authorization);
  free(c->tls_ca);
  free(c->tls_cert);
  free(c->tls_key);
  pthread_mutex_destroy(&c->mu);
  free(c);
}

const char *sl_client_url(const sl_client *c) { return c->url; }
int sl_client_timeout_ms(const sl_client *c) { return c->timeout_ms; }

sl_rpc_call_opts sl_client_call_opts(const sl_client *c) {
  sl_rpc_call_opts o = {0};
  o.timeout_ms = c->timeout_ms;
  o.wait_for_ready = true;
  return o;
}

bool sl_client_permanent(sl_status st) {
  return st == SL_EINVAL || st == SL_ENOTFOUND || st == SL_EDELETED || st == SL_EPERM ||
         st == SL_EUNAUTH || st == SL_ETOOBIG || st == SL_EUNIMPL || st == SL_EEXIST ||
         st == SL_EBUSY || st == SL_EPRECOND;
}

sl_status sl_client_channel(sl_client *c, const char *address, sl_rpc_channel **out,
                            sl_err *err) {
  if (address == NULL) address = c->url;
  pthread_mutex_lock(&c->mu);
  for (size_t i = 0; i < c->n_chans; i++) {
    if (strcmp(c->chans[i].address, address) == 0) {
      *out = c->chans[i].ch;
      pthread_mutex_unlock(&c->mu);
      return SL_OK;
    }
  }
  sl_status st = SL_ENOMEM;
  chan *v = realloc(c->chans, (c->n_chans + 1) * sizeof(*v));
  if (v == NULL) goto out_unlock;
  c->chans = v;
  chan *n = &c->chans[c->n_chans];
  n->address = strdup(address);
  if (n->address == NULL) goto out_unlock;
  sl_rpc_channel_opts co = {0};
  co.target = address;
  co.tls_root_pem = c->tls_ca;
  co.tls_cert_pem = c->tls_cert;
  co.tls_key_pem = c->tls_key;
  co.authorization = c->authorization;
  st = sl_rpc_channel_create(&co, &n->ch, err);
  if (st != SL_OK) {
    free(n->address);
    pthread_mutex_unlock(&c->mu);
    return sl_err_wrap(err, st, "broker %s", address);
  }
  c->n_chans++;
  *out = n->ch;
  pthread_mutex_unlock(&c->mu);
  return SL_OK;
out_unlock:
  pthread_mutex_unlock(&c->mu);
  return sl_err_set(err, SL_ENOMEM, "client: out of memory");
}

static bool name_part_ok(const char *s, size_t n) {
  if (n == 0 || n > 255) return false;
  for (size_t i = 0; i < n; i++)
    if (!isalnum((unsigned char)s[i]) && s[i] != '-' && s[i] != '_' && s[i] != '.') return false;
  return true;
}

sl_status sl_topic_name_check(const char *name, sl_err *err) {
  const char *slash = name ? strchr(name, '/') : NULL;
  if (slash == NULL || !name_part_ok(name, (size_t)(slash - name)) ||
      !name_part_ok(slash + 1, strlen(slash + 1)))
    return sl_err_set(err, SL_EINVAL,
                      "topic %s: bad name; use NAMESPACE/TOPIC with letters, digits, '-', "
                      "'_' or '.' (e.g. public/orders)",
                      name ? name : "(none)");
  return SL_OK;
}

void sl_client_forget(sl_client *c, const char *topic) {
  pthread_mutex_lock(&c->mu);
  for (size_t i = 0; i < c->n_cache; i++) {
    if (strcmp(c->cache[i].topic, topic) == 0) {
      free(c->cache[i].topic);
      sl_lookup_free(&c->cache[i].l);
      c->cache[i] = c->cache[--c->n_cache];
      break;
    }
  }
  pthread_mutex_unlock(&c->mu);
}

static sl_status lookup_copy(const sl_lookup *from, sl_lookup *to) {
  memset(to, 0, sizeof(*to));
  to->partitions = from->partitions;
  to->partition = calloc(from->n ? from->n : 1, sizeof(char *));
  to->address = calloc(from->n ? from->n : 1, sizeof(char *));
  if (to->partition == NULL || to->address == NULL) goto out_oom;
  for (size_t i = 0; i < from->n; i++) {
    to->n = i + 1;
    to->partition[i] = strdup(from->partition[i]);
    to->address[i] = strdup(from->address[i]);
    if (to->partition[i] == NULL || to->address[i] == NULL) goto out_oom;
  }
  return SL_OK;
out_oom:
  sl_lookup_free(to);
  return SL_ENOMEM;
}

/* Asks a broker (the url) for the owners of topic; *epoch is the owner's
 * epoch when there is one owner. */
static sl_status lookup_remote(sl_client *c, const char *topic, sl_lookup *out, uint64_t *epoch,
                               sl_err *err) {
  sl_rpc_channel *ch;
  sl_status st = sl_client_channel(c, NULL, &ch, err);
  if (st != SL_OK) return st;
  Sluice__V1__LookupRequest req = SLUICE__V1__LOOKUP_REQUEST__INIT;
  req.topic = (char *)topic;
  Sluice__V1__LookupResponse *r = NULL;
  sl_rpc_call_opts o = sl_client_call_opts(c);
  st = sl_broker_service_lookup(ch, &req, &r, &o, err);
  if (st != SL_OK) return sl_err_wrap(err, st, "lookup %s at %s", topic, c->url);
  memset(out, 0, sizeof(*out));
  out->partitions = r->partitions;
  out->partition = calloc(r->n_owners ? r->n_owners : 1, sizeof(char *));
  out->address = calloc(r->n_owners ? r->n_owners : 1, sizeof(char *));
  st = SL_OK;
  if (out->partition == NULL || out->address == NULL) st = SL_ENOMEM;
  for (size_t i = 0; st == SL_OK && i < r->n_owners; i++) {
    const Sluice__V1__PartitionOwner *o2 = r->owners[i];
    /* A structured redirect names the owner to use. */
    const char *addr = o2->redirect && o2->redirect->broker_address[0]
                           ? o2->redirect->broker_address
                           : o2->broker_address;
    out->n = i + 1;
    out->partition[i] = strdup(o2->partition);
    out->address[i] = strdup(addr);
    if (out->partition[i] == NULL || out->address[i] == NULL) st = SL_ENOMEM;
  }
  if (st == SL_OK && out->n == 0)
    st = sl_err_set(err, SL_EINTERNAL, "lookup %s: broker returned no owner", topic);
  *epoch = r->n_owners == 1 ? r->owners[0]->epoch : 0;
  protobuf_c_message_free_unpacked(&r->base, NULL);
  if (st == SL_ENOMEM) sl_err_set(err, st, "lookup %s: out of memory", topic);
  if (st != SL_OK) sl_lookup_free(out);
  return st;
}

sl_status sl_client_lookup(sl_client *c, const char *topic, bool refresh, sl_lookup *out,
                           sl_err *err) {
  memset(out, 0, sizeof(*out));
  if (!refresh) {
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < c->n_cache; i++) {
      if (strcmp(c->cache[i].topic, topic) == 0) {
        sl_status st = lookup_copy(&c->cache[i].l, out);
        pthread_mutex_unlock(&c->mu);
        if (st != SL_OK) return sl_err_set(err, st, "lookup %s: out of memory", topic);
        return SL_OK;
      }
    }
    pthread_mutex_unlock(&c->mu);
  }
  sl_lookup fresh;
  uint64_t epoch = 0;
  sl_status st = lookup_remote(c, topic, &fresh, &epoch, err);
  if (st != SL_OK) return st;
  if (lookup_copy(&fresh, out) != SL_OK) {
    sl_lookup_free(&fresh);
    return sl_err_set(err, SL_ENOMEM, "lookup %s: out of memory", topic);
  }
  sl_client_forget(c, topic);
  pthread_mutex_lock(&c->mu);
  cached *v = realloc(c->cache, (c->n_cache + 1) * sizeof(*v));
  char *name = strdup(topic);
  if (v != NULL) c->cache = v;
  if (v != NULL && name != NULL) {
    c->cache[c->n_cache].topic = name;
    c->cache[c->n_cache].l = fresh;
    c->cache[c->n_cache].epoch = epoch;
    c->n_cache++;
  } else {
    /* The answer is good; only the cache missed it. */
    free(name);
    sl_lookup_free(&fresh);
  }
  pthread_mutex_unlock(&c->mu);
  return SL_OK;
}

sl_status sl_client_owner(sl_client *c, const char *partition, bool refresh, char **address,
                          sl_err *err) {
  /* A partition is looked up by its own name so that a stale owner of one
   * partition does not make us ask for all of them. */
  sl_lookup l;
  sl_status st = sl_client_lookup(c, partition, refresh, &l, err);
  if (st != SL_OK) return st;
  *address = strdup(l.address[0]);
  sl_lookup_free(&l);
  if (*address == NULL) return sl_err_set(err, SL_ENOMEM, "lookup %s: out of memory", partition);
  return SL_OK;
}

void sl_client_redirect(sl_client *c, const char *partition, const char *address,
                        uint64_t epoch) {
  if (epoch == 0 || address == NULL || *address == '\0') {
    sl_client_forget(c, partition);
    return;
  }
  pthread_mutex_lock(&c->mu);
  cached *e = NULL;
  for (size_t i = 0; i < c->n_cache && e == NULL; i++)
    if (strcmp(c->cache[i].topic, partition) == 0) e = &c->cache[i];
  if (e != NULL && e->l.n == 1 && e->epoch > epoch) {
    pthread_mutex_unlock(&c->mu); /* stale: we already follow a newer owner */
    return;
  }
  char *a = strdup(address);
  if (e == NULL) {
    cached *v = realloc(c->cache, (c->n_cache + 1) * sizeof(*v));
    if (v != NULL) {
      c->cache = v;
      e = &c->cache[c->n_cache];
      memset(e, 0, sizeof(*e));
      e->topic = strdup(partition);
      e->l.partition = calloc(1, sizeof(char *));
      e->l.address = calloc(1, sizeof(char *));
      if (e->topic && e->l.partition && e->l.address &&
          (e->l.partition[0] = strdup(partition)) != NULL) {
        e->l.n = 1;
        c->n_cache++;
      } else {
        free(e->topic);
        free(e->l.partition);
        free(e->l.address);
        e = NULL;
      }
    }
  }
  if (e == NULL || a == NULL || e->l.n != 1) {
    /* Out of memory, or a partitioned topic's entry: look it up again. */
    free(a);
    pthread_mutex_unlock(&c->mu);
    sl_client_forget(c, partition);
    return;
  }
  free(e->l.address[0]);
  e->l.address[0] = a;
  e->epoch = epoch;
  pthread_mutex_unlock(&c->mu);
}

uint64_t sl_client_random(void) {
  uint64_t v;
  if (getrandom(&v, sizeof(v), GRND_NONBLOCK) == (ssize_t)sizeof(v)) return v;
  /* No entropy yet (early boot): time and address still differ by process. */
  return (uint64_t)sl_clock_mono_ns() ^ ((uint64_t)sl_clock_wall_ms() << 20) ^ (uint64_t)(uintptr_t)&v;
}

void sl_client_gen_name(char *buf, size_t n, const char *prefix) {
  snprintf(buf, n, "%s-%lld-%016llx", prefix, (long long)sl_clock_wall_ms(),
           (unsigned long long)sl_client_random());
}
