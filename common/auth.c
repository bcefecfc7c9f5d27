/*
 * Token authentication: JWT (RFC 7519) in compact form, verified against
 * the keys the operator configured.
 *
 * Invariants:
 *  1. A token's "alg" picks the check only among the keys configured, and a
 *     key is used by exactly one algorithm: the secret by HS256, an RSA key
 *     by RS256, a P-256 key by ES256. "none" never passes.
 *  2. The signature is checked before the payload is parsed: claims from an
 *     unsigned or forged token are never read.
 *  3. Decoding is strict: base64url without padding, canonical (unused low
 *     bits zero), JSON with no NUL inside and nothing after it, so a valid
 *     token has no second spelling that also verifies.
 *  4. No message quotes the token or the secret; an "alg" or a role is
 *     quoted only sanitised (printable ASCII, cut short).
 *  5. A verifier never changes after sl_auth_create, so verify runs from any
 *     thread without a lock (EVP_PKEY is safe to share for verification).
 *
 * Memory: the servers are the users here, so allocation failures abort
 * (sl_xmalloc, STYLE.md). cJSON allocates with plain malloc; its failure
 * reads as a malformed token, which refuses the call, never admits it.
 */
#include "common/auth.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/objects.h>
#include <openssl/pem.h>

#define SECRET_MIN 32
#define RSA_BITS_MIN 2048
#define FILE_MAX (1024 * 1024)
#define SHOW_MAX 16 /* characters of an untrusted string quoted in a message */
#define ES256_SIG_LEN 64
#define ES256_DER_MAX 80

typedef enum alg { ALG_NONE, ALG_HS256, ALG_RS256, ALG_ES256 } alg;

struct sl_auth {
  uint8_t *secret; /* HMAC key, NULL when HS256 is not accepted */
  size_t secret_len;
  EVP_PKEY *pub;  /* NULL when no public key is configured */
  alg pub_alg;    /* ALG_RS256 or ALG_ES256 for pub, ALG_NONE without */
  char **supers;  /* super-user roles, each checked by role_ok */
  size_t n_supers;
};

/* ---- helpers ---- */

static bool role_char(unsigned char c) {
  return isalnum(c) || c == '.' || c == '_' || c == '@' || c == ':' || c == '-';
}

static bool role_ok(const char *s, size_t n) {
  if (n == 0 || n >= SL_AUTH_ROLE_MAX) return false;
  for (size_t i = 0; i < n; i++) {
    if (!role_char((unsigned char)s[i])) return false;
  }
  return true;
}

/* Copies at most SHOW_MAX printable ASCII characters of s[n] for a message;
 * anything else becomes '?', so an attacker cannot write into our logs. */
static const char *show(const char *s, size_t n, char out[SHOW_MAX + 4]) {
  size_t k = n < SHOW_MAX ? n : SHOW_MAX;
  for (size_t i = 0; i < k; i++) {
    unsigned char c = (unsigned char)s[i];
    out[i] = (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') ? (char)c : '?';
  }
  strcpy(out + k, n > SHOW_MAX ? "..." : "");
  return out;
}

static int b64url_val(unsigned char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '-') return 62;
  if (c == '_') return 63;
  return -1;
}

/* Decodes in[n] into out, which holds at least n * 3 / 4 bytes. False for a
 * character outside the alphabet (padding included), an impossible length,
 * or set bits after the last byte (a second spelling of the same bytes). */
static bool b64url_decode(const char *in, size_t n, uint8_t *out, size_t *out_len) {
  if (n % 4 == 1) return false;
  uint32_t acc = 0;
  int bits = 0;
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    int v = b64url_val((unsigned char)in[i]);
    if (v < 0) return false;
    acc = (acc << 6) | (uint32_t)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (uint8_t)(acc >> bits);
      acc &= (1u << bits) - 1;
    }
  }
  if (acc != 0) return false;
  *out_len = o;
  return true;
}

#define B64URL_LEN(n) (((n) * 4 + 2) / 3)

/* Writes B64URL_LEN(n) characters and a NUL; returns the length. */
static size_t b64url_encode(const uint8_t *in, size_t n, char *out) {
  static const char abc[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  uint32_t acc = 0;
  int bits = 0;
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    acc = (acc << 8) | in[i];
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out[o++] = abc[(acc >> bits) & 63];
    }
    acc &= (1u << bits) - 1;
  }
  if (bits > 0) out[o++] = abc[(acc << (6 - bits)) & 63];
  out[o] = '\0';
  return o;
}

/* Parses one JSON object from in[n]; NULL unless the whole input is exactly
 * one object with no NUL in it. */
static cJSON *parse_object(const uint8_t *in, size_t n) {
  /* An escaped NUL would cut a string short after parsing: "admin\u0000x"
   * would read as "admin". */
  if (memchr(in, '\0', n) != NULL || memmem(in, n, "\\u0000", 6) != NULL) return NULL;
  cJSON *j = cJSON_ParseWithOpts((const char *)in, NULL, true);
  if (j != NULL && !cJSON_IsObject(j)) {
    cJSON_Delete(j);
    return NULL;
  }
  return j;
}

/* ---- reading files and keys ---- */

sl_status sl_auth_read_file(const char *path, bool trim, char **out, size_t *len,
                            sl_err *err) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    return sl_err_set(err, SL_EINVAL, "file %s: cannot open (%s)", path, strerror(errno));
  }
  /* Read until EOF or past the limit rather than trust st_size: a pipe or
   * a file that grows has no honest size. */
  size_t cap = 4096, n = 0;
  char *buf = sl_xmalloc(cap);
  sl_status st = SL_OK;
  for (;;) {
    if (n + 1 >= cap) buf = sl_xrealloc(buf, cap *= 2);
    ssize_t r = read(fd, buf + n, cap - n - 1);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      st = sl_err_set(err, SL_EINVAL, "file %s: cannot read (%s)", path, strerror(errno));
      goto out_free;
    }
    if (r == 0) break;
    n += (size_t)r;
    if (n > FILE_MAX) {
      st = sl_err_set(err, SL_EINVAL, "file %s: too large (over 1 MiB)", path);
      goto out_free;
    }
  }
  while (trim && n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) n--;
  buf[n] = '\0';
  *out = buf;
  *len = n;
  close(fd);
  return SL_OK;

out_free:
  free(buf);
  close(fd);
  return st;
}

static sl_status load_secret(sl_auth *a, const char *path, sl_err *err) {
  char *s;
  size_t n;
  /* The secret is raw bytes, but a trailing newline is what every editor
   * and `echo` adds; it is trimmed so the file means what the operator
   * typed. A secret that needs a trailing '\n' byte cannot be expressed. */
  sl_status st = sl_auth_read_file(path, true, &s, &n, err);
  if (st != SL_OK) return sl_err_wrap(err, st, "auth secret");
  if (n < SECRET_MIN) {
    OPENSSL_clear_free(s, n + 1);
    return sl_err_set(err, SL_EINVAL,
                      "auth secret file %s: too short (%zu bytes, need at least %d)",
                      path, n, SECRET_MIN);
  }
  a->secret = (uint8_t *)s;
  a->secret_len = n;
  return SL_OK;
}

/* Which algorithm the key serves, or ALG_NONE with the reason in err. */
static alg key_alg(EVP_PKEY *k, const char *path, sl_err *err) {
  if (EVP_PKEY_get_base_id(k) == EVP_PKEY_RSA) {
    int bits = EVP_PKEY_get_bits(k);
    if (bits >= RSA_BITS_MIN) return ALG_RS256;
    sl_err_set(err, SL_EINVAL, "auth public key file %s: rsa key of %d bits (need %d)",
               path, bits, RSA_BITS_MIN);
    return ALG_NONE;
  }
  if (EVP_PKEY_get_base_id(k) == EVP_PKEY_EC) {
    char name[64];
    if (EVP_PKEY_get_group_name(k, name, sizeof(name), NULL) == 1) {
      int nid = OBJ_sn2nid(name);
      if (nid == NID_undef) nid = EC_curve_nist2nid(name);
      if (nid == NID_X9_62_prime256v1) return ALG_ES256;
    }
    sl_err_set(err, SL_EINVAL, "auth public key file %s: ec key is not on curve p-256",
               path);
    return ALG_NONE;
  }
  sl_err_set(err, SL_EINVAL, "auth public key file %s: not an rsa or ec key", path);
  return ALG_NONE;
}

static sl_status load_public_key(sl_auth *a, const char *path, sl_err *err) {
  BIO *bio = BIO_new_file(path, "r");
  if (bio == NULL) {
    ERR_clear_error();
    return sl_err_set(err, SL_EINVAL, "auth public key file %s: cannot open", path);
  }
  /* SubjectPublicKeyInfo only ("BEGIN PUBLIC KEY"): a private key or a
   * certificate here is a mistake worth stopping for. */
  EVP_PKEY *k = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
  BIO_free(bio);
  ERR_clear_error();
  if (k == NULL) {
    return sl_err_set(err, SL_EINVAL, "auth public key file %s: not a pem public key",
                      path);
  }
  alg al = key_alg(k, path, err);
  if (al == ALG_NONE) {
    EVP_PKEY_free(k);
    return SL_EINVAL;
  }
  a->pub = k;
  a->pub_alg = al;
  return SL_OK;
}

/* Splits "a, b,c" into a->supers; every item must be a valid role. An empty
 * or all-blank list means no super-users; an empty item is an error, since
 * "a,,b" is more likely a typo than a wish. */
static sl_status parse_superusers(sl_auth *a, const char *list, sl_err *err) {
  size_t items = 1;
  for (const char *p = list; *p; p++) items += *p == ',';
  if (strspn(list, " \t") == strlen(list)) return SL_OK;
  a->supers = sl_xcalloc(items, sizeof(*a->supers));
  for (const char *p = list;;) {
    p += strspn(p, " \t");
    size_t n = strcspn(p, ",");
    size_t k = n;
    while (k > 0 && (p[k - 1] == ' ' || p[k - 1] == '\t')) k--;
    if (!role_ok(p, k)) {
      char s[SHOW_MAX + 4];
      return sl_err_set(err, SL_EINVAL, "auth superusers: bad role \"%s\"", show(p, k, s));
    }
    char *r = sl_xmalloc(k + 1);
    memcpy(r, p, k);
    r[k] = '\0';
    a->supers[a->n_supers++] = r;
    if (p[n] == '\0') return SL_OK;
    p += n + 1;
  }
}

sl_status sl_auth_create(const sl_auth_opts *opts, sl_auth **out, sl_err *err) {
  if (opts == NULL || (opts->secret_file == NULL && opts->public_key_file == NULL)) {
    return sl_err_set(err, SL_EINVAL, "auth: neither a secret nor a public key file given");
  }
  sl_auth *a = sl_xcalloc(1, sizeof(*a));
  sl_status st = SL_OK;
  if (opts->secret_file != NULL) st = load_secret(a, opts->secret_file, err);
  if (st == SL_OK && opts->public_key_file != NULL) {
    st = load_public_key(a, opts->public_key_file, err);
  }
  if (st == SL_OK && opts->superusers != NULL) st = parse_superusers(a, opts->superusers, err);
  if (st != SL_OK) {
    sl_auth_destroy(a);
    return st;
  }
  *out = a;
  return SL_OK;
}

void sl_auth_destroy(sl_auth *a) {
  if (a == NULL) return;
  if (a->secret != NULL) OPENSSL_clear_free(a->secret, a->secret_len + 1);
  EVP_PKEY_free(a->pub);
  for (size_t i = 0; i < a->n_supers; i++) free(a->supers[i]);
  free(a->supers);
  free(a);
}

bool sl_auth_is_superuser(const sl_auth *a, const char *role) {
  if (a == NULL || role == NULL) return false;
  for (size_t i = 0; i < a->n_supers; i++) {
    if (strcmp(a->supers[i], role) == 0) return true;
  }
  return false;
}

/* ---- verification ---- */

/* The three parts of a token: text spans into the authorization value and
 * their decoded bytes (each NUL-terminated) in one heap buffer. */
typedef struct parts {
  const char *text[3];
  size_t text_len[3];
  uint8_t *bytes[3];
  size_t len[3];
  uint8_t *buf;
} parts;

enum { HEADER, PAYLOAD, SIGNATURE };
static const char *const part_name[] = {"header", "payload", "signature"};

/* Finds the token in "Bearer <token>"; *tok is NULL when none was given. */
static sl_status bearer(const char *authz, const char **tok, size_t *len, sl_err *err) {
  if (authz == NULL || authz[0] == '\0') return sl_err_set(err, SL_EUNAUTH, "no token");
  size_t n = strnlen(authz, SL_AUTH_TOKEN_MAX + 1);
  if (n > SL_AUTH_TOKEN_MAX) {
    return sl_err_set(err, SL_EUNAUTH, "authorization: too long (over %d bytes)",
                      SL_AUTH_TOKEN_MAX);
  }
  if (n < 7 || strncasecmp(authz, "bearer", 6) != 0 || authz[6] != ' ') {
    return sl_err_set(err, SL_EUNAUTH, "authorization: not a bearer token");
  }
  const char *t = authz + 6 + strspn(authz + 6, " ");
  if (*t == '\0') return sl_err_set(err, SL_EUNAUTH, "no token");
  *tok = t;
  *len = n - (size_t)(t - authz);
  return SL_OK;
}

static sl_status split(const char *tok, size_t n, parts *p, sl_err *err) {
  const char *d1 = memchr(tok, '.', n);
  const char *d2 = d1 ? memchr(d1 + 1, '.', n - (size_t)(d1 + 1 - tok)) : NULL;
  if (d2 == NULL || memchr(d2 + 1, '.', n - (size_t)(d2 + 1 - tok)) != NULL) {
    return sl_err_set(err, SL_EUNAUTH, "token: malformed (not three dot-separated parts)");
  }
  p->text[HEADER] = tok;
  p->text_len[HEADER] = (size_t)(d1 - tok);
  p->text[PAYLOAD] = d1 + 1;
  p->text_len[PAYLOAD] = (size_t)(d2 - d1 - 1);
  p->text[SIGNATURE] = d2 + 1;
  p->text_len[SIGNATURE] = n - (size_t)(d2 + 1 - tok);
  return SL_OK;
}

/* Decoded sizes sum to at most n, so n + 3 bytes hold all three parts. */
static sl_status decode(size_t n, parts *p, sl_err *err) {
  p->buf = sl_xmalloc(n + 3);
  uint8_t *w = p->buf;
  for (int i = 0; i < 3; i++) {
    if (!b64url_decode(p->text[i], p->text_len[i], w, &p->len[i])) {
      return sl_err_set(err, SL_EUNAUTH, "token: malformed (bad base64url in %s)",
                        part_name[i]);
    }
    p->bytes[i] = w;
    w[p->len[i]] = '\0';
    w += p->len[i] + 1;
  }
  return SL_OK;
}

static alg alg_named(const char *s) {
  if (strcmp(s, "HS256") == 0) return ALG_HS256;
  if (strcmp(s, "RS256") == 0) return ALG_RS256;
  if (strcmp(s, "ES256") == 0) return ALG_ES256;
  return ALG_NONE;
}

static bool alg_configured(const sl_auth *a, alg al) {
  if (al == ALG_HS256) return a->secret != NULL;
  return al != ALG_NONE && al == a->pub_alg;
}

static sl_status header_error(const cJSON *h, sl_err *err) {
  const cJSON *jalg = cJSON_GetObjectItemCaseSensitive(h, "alg");
  const cJSON *jtyp = cJSON_GetObjectItemCaseSensitive(h, "typ");
  if (!cJSON_IsString(jalg)) {
    return sl_err_set(err, SL_EUNAUTH, "token: malformed (no alg in header)");
  }
  if (jtyp != NULL && !(cJSON_IsString(jtyp) && strcasecmp(jtyp->valuestring, "JWT") == 0)) {
    return sl_err_set(err, SL_EUNAUTH, "token: malformed (typ is not jwt)");
  }
  /* RFC 7515 4.1.11: extensions we do not know must not be ignored. */
  if (cJSON_GetObjectItemCaseSensitive(h, "crit") != NULL) {
    return sl_err_set(err, SL_EUNAUTH, "token: unsupported critical header extension");
  }
  return SL_OK;
}

static sl_status check_header(const sl_auth *a, const parts *p, alg *out, sl_err *err) {
  cJSON *h = parse_object(p->bytes[HEADER], p->len[HEADER]);
  if (h == NULL) {
    return sl_err_set(err, SL_EUNAUTH, "token: malformed (header is not a json object)");
  }
  sl_status st = header_error(h, err);
  if (st == SL_OK) {
    const char *name = cJSON_GetObjectItemCaseSensitive(h, "alg")->valuestring;
    *out = alg_named(name);
    if (!alg_configured(a, *out)) {
      char s[SHOW_MAX + 4];
      st = sl_err_set(err, SL_EUNAUTH, "token: algorithm %s not accepted",
                      show(name, strlen(name), s));
    }
  }
  cJSON_Delete(h);
  return st;
}

static bool hs256_ok(const sl_auth *a, const uint8_t *msg, size_t n, const uint8_t *sig,
                     size_t sig_len) {
  uint8_t mac[EVP_MAX_MD_SIZE];
  unsigned mac_len = 0;
  if (HMAC(EVP_sha256(), a->secret, (int)a->secret_len, msg, n, mac, &mac_len) == NULL) {
    return false;
  }
  return sig_len == mac_len && CRYPTO_memcmp(mac, sig, mac_len) == 0;
}

/* JWS carries ES256 as raw r||s (RFC 7518 3.4); OpenSSL wants DER, at
 * most 72 bytes for two 32-byte integers. Returns the DER length, 0 on
 * failure. */
static size_t es256_der(const uint8_t *sig, uint8_t der[ES256_DER_MAX]) {
  ECDSA_SIG *es = ECDSA_SIG_new();
  BIGNUM *r = BN_bin2bn(sig, ES256_SIG_LEN / 2, NULL);
  BIGNUM *s = BN_bin2bn(sig + ES256_SIG_LEN / 2, ES256_SIG_LEN / 2, NULL);
  int n = 0;
  if (es != NULL && r != NULL && s != NULL && ECDSA_SIG_set0(es, r, s) == 1) {
    r = s = NULL; /* es owns them now */
    if (i2d_ECDSA_SIG(es, NULL) <= ES256_DER_MAX) n = i2d_ECDSA_SIG(es, &der);
  }
  BN_free(r);
  BN_free(s);
  ECDSA_SIG_free(es);
  return n > 0 ? (size_t)n : 0;
}

static bool pkey_ok(const sl_auth *a, const uint8_t *msg, size_t n, const uint8_t *sig,
                    size_t sig_len) {
  uint8_t der[ES256_DER_MAX];
  if (a->pub_alg == ALG_ES256) {
    if (sig_len != ES256_SIG_LEN || (sig_len = es256_der(sig, der)) == 0) return false;
    sig = der;
  }
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  /* RSA keys default to PKCS#1 v1.5 padding, which is what RS256 means. */
  bool ok = ctx != NULL &&
            EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, a->pub) == 1 &&
            EVP_DigestVerify(ctx, sig, sig_len, msg, n) == 1;
  EVP_MD_CTX_free(ctx);
  return ok;
}

static sl_status check_signature(const sl_auth *a, alg al, const parts *p, sl_err *err) {
  /* The signed bytes are the text "header.payload", as sent. */
  const uint8_t *msg = (const uint8_t *)p->text[HEADER];
  size_t n = p->text_len[HEADER] + 1 + p->text_len[PAYLOAD];
  bool ok = al == ALG_HS256
                ? hs256_ok(a, msg, n, p->bytes[SIGNATURE], p->len[SIGNATURE])
                : pkey_ok(a, msg, n, p->bytes[SIGNATURE], p->len[SIGNATURE]);
  /* A failed check leaves errors on this thread's OpenSSL queue, where the
   * next TLS call on the thread would find and misread them. */
  ERR_clear_error();
  return ok ? SL_OK : sl_err_set(err, SL_EUNAUTH, "token: bad signature");
}

/* A numeric claim: absent is fine (*present false), anything else but a
 * number is not. */
static sl_status time_claim(const cJSON *pl, const char *name, bool *present, double *v,
                            sl_err *err) {
  const cJSON *j = cJSON_GetObjectItemCaseSensitive(pl, name);
  *present = j != NULL;
  if (j == NULL) return SL_OK;
  if (!cJSON_IsNumber(j)) {
    return sl_err_set(err, SL_EUNAUTH, "token: malformed (%s is not a number)", name);
  }
  *v = j->valuedouble;
  return SL_OK;
}

static sl_status check_claims(const cJSON *pl, int64_t now_s, char *role, sl_err *err) {
  const cJSON *sub = cJSON_GetObjectItemCaseSensitive(pl, "sub");
  if (sub == NULL) return sl_err_set(err, SL_EUNAUTH, "token: no sub claim");
  if (!cJSON_IsString(sub) || !role_ok(sub->valuestring, strlen(sub->valuestring))) {
    return sl_err_set(err, SL_EUNAUTH, "token: sub is not a valid role");
  }
  bool has_exp, has_nbf;
  double exp = 0, nbf = 0;
  sl_status st = time_claim(pl, "exp", &has_exp, &exp, err);
  if (st == SL_OK) st = time_claim(pl, "nbf", &has_nbf, &nbf, err);
  if (st != SL_OK) return st;
  /* Doubles hold every second up to 2^53 exactly; the leeway absorbs
   * clock skew between the token's issuer and us. */
  if (has_exp && (double)now_s > exp + SL_AUTH_LEEWAY_S) {
    return sl_err_set(err, SL_EUNAUTH, "token: expired");
  }
  if (has_nbf && (double)now_s + SL_AUTH_LEEWAY_S < nbf) {
    return sl_err_set(err, SL_EUNAUTH, "token: not yet valid");
  }
  strcpy(role, sub->valuestring); /* role_ok bounded it below SL_AUTH_ROLE_MAX */
  return SL_OK;
}

sl_status sl_auth_verify(const sl_auth *a, const char *authorization, int64_t now_s,
                         char *role, sl_err *err) {
  SL_ASSERT(a != NULL && role != NULL);
  const char *tok = NULL;
  size_t n = 0;
  parts p = {0};
  alg al = ALG_NONE;
  sl_status st = bearer(authorization, &tok, &n, err);
  if (st == SL_OK) st = split(tok, n, &p, err);
  if (st == SL_OK) st = decode(n, &p, err);
  if (st == SL_OK) st = check_header(a, &p, &al, err);
  if (st == SL_OK) st = check_signature(a, al, &p, err);
  if (st != SL_OK) goto out_free;

  cJSON *pl = parse_object(p.bytes[PAYLOAD], p.len[PAYLOAD]);
  if (pl == NULL) {
    st = sl_err_set(err, SL_EUNAUTH, "token: malformed (payload is not a json object)");
    goto out_free;
  }
  st = check_claims(pl, now_s, role, err);
  cJSON_Delete(pl);

out_free:
  free(p.buf);
  return st;
}

/* ---- minting ---- */

sl_status sl_auth_sign_hs256(const uint8_t *secret, size_t len, const char *role,
                             int64_t exp_s, char *out, size_t cap, sl_err *err) {
  if (secret == NULL || len == 0 || len > INT32_MAX) {
    return sl_err_set(err, SL_EINVAL, "auth sign: no secret");
  }
  if (role == NULL || !role_ok(role, strlen(role))) {
    char s[SHOW_MAX + 4];
    return sl_err_set(err, SL_EINVAL, "auth sign: bad role \"%s\"",
                      role ? show(role, strlen(role), s) : "");
  }
  if (exp_s < 0) return sl_err_set(err, SL_EINVAL, "auth sign: negative exp");

  static const char header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
  char payload[SL_AUTH_ROLE_MAX + 64];
  /* role_ok admits no character JSON would need to escape. */
  int pn = exp_s ? snprintf(payload, sizeof(payload), "{\"sub\":\"%s\",\"exp\":%" PRId64 "}",
                            role, exp_s)
                 : snprintf(payload, sizeof(payload), "{\"sub\":\"%s\"}", role);
  char tok[B64URL_LEN(sizeof(header)) + B64URL_LEN(sizeof(payload)) + 48];
  size_t n = b64url_encode((const uint8_t *)header, sizeof(header) - 1, tok);
  tok[n++] = '.';
  n += b64url_encode((const uint8_t *)payload, (size_t)pn, tok + n);

  uint8_t mac[EVP_MAX_MD_SIZE];
  unsigned mac_len = 0;
  if (HMAC(EVP_sha256(), secret, (int)len, (const uint8_t *)tok, n, mac, &mac_len) == NULL) {
    ERR_clear_error();
    return sl_err_set(err, SL_EINTERNAL, "auth sign: hmac failed");
  }
  tok[n++] = '.';
  n += b64url_encode(mac, mac_len, tok + n);
  OPENSSL_cleanse(mac, sizeof(mac));
  if (n + 1 > cap) {
    return sl_err_set(err, SL_ETOOBIG, "auth sign: token of %zu bytes does not fit in %zu",
                      n, cap);
  }
  memcpy(out, tok, n + 1);
  return SL_OK;
}
