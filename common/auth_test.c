#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include "common/auth.h"

/* Keys are generated once for the whole run; files live in one temp dir. */
#define MAX_FILES 32
static struct {
  char dir[512];
  char *files[MAX_FILES];
  int n_files;
  const char *secret_path; /* SECRET plus a newline */
  const char *rsa_path, *ec_path;
  EVP_PKEY *rsa, *rsa2, *ec, *ec2;
} g;

static const char SECRET[] = "0123456789abcdefghijklmnopqrstuvwxyz"; /* 36 bytes */
static const char HS_HEADER[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
static const int64_t NOW = 1700000000;

enum kind { HS, RS, ES, NONE };

/* ---- fixture ---- */

static const char *write_file(const char *name, const void *data, size_t len) {
  assert_true(g.n_files < MAX_FILES);
  char *path = malloc(strlen(g.dir) + strlen(name) + 2);
  assert_non_null(path);
  sprintf(path, "%s/%s", g.dir, name);
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(data, 1, len, f), len);
  assert_int_equal(fclose(f), 0);
  g.files[g.n_files++] = path;
  return path;
}

static const char *write_str(const char *name, const char *s) {
  return write_file(name, s, strlen(s));
}

/* The PEM of a key, public (SubjectPublicKeyInfo) or private (PKCS#8). */
static char *pem_of(EVP_PKEY *k, bool private_key) {
  BIO *b = BIO_new(BIO_s_mem());
  assert_non_null(b);
  if (private_key) {
    assert_int_equal(PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL), 1);
  } else {
    assert_int_equal(PEM_write_bio_PUBKEY(b, k), 1);
  }
  char *data;
  long n = BIO_get_mem_data(b, &data);
  char *s = malloc((size_t)n + 1);
  assert_non_null(s);
  memcpy(s, data, (size_t)n);
  s[n] = '\0';
  BIO_free(b);
  return s;
}

static const char *write_key(const char *name, EVP_PKEY *k, bool private_key) {
  char *pem = pem_of(k, private_key);
  const char *path = write_str(name, pem);
  free(pem);
  return path;
}

static int group_setup(void **state) {
  (void)state;
  const char *base = getenv("TEST_TMPDIR") ? getenv("TEST_TMPDIR") : "/tmp";
  snprintf(g.dir, sizeof(g.dir), "%s/auth_test.XXXXXX", base);
  if (mkdtemp(g.dir) == NULL) return -1;
  g.rsa = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
  g.rsa2 = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
  g.ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
  g.ec2 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
  if (!g.rsa || !g.rsa2 || !g.ec || !g.ec2) return -1;
  g.secret_path = write_str("secret", "0123456789abcdefghijklmnopqrstuvwxyz\n");
  g.rsa_path = write_key("rsa.pub", g.rsa, false);
  g.ec_path = write_key("ec.pub", g.ec, false);
  return 0;
}

static int group_teardown(void **state) {
  (void)state;
  for (int i = 0; i < g.n_files; i++) {
    unlink(g.files[i]);
    free(g.files[i]);
  }
  rmdir(g.dir);
  EVP_PKEY_free(g.rsa);
  EVP_PKEY_free(g.rsa2);
  EVP_PKEY_free(g.ec);
  EVP_PKEY_free(g.ec2);
  return 0;
}

static sl_auth *create(const char *secret, const char *pub, const char *supers) {
  sl_auth_opts o = {.secret_file = secret, .public_key_file = pub, .superusers = supers};
  sl_auth *a = NULL;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_auth_create(&o, &a, &err);
  if (st != SL_OK) fail_msg("sl_auth_create: %s", sl_err_msg(&err, st));
  return a;
}

static void expect_create_fails(const sl_auth_opts *o, const char *want) {
  sl_auth *a = NULL;
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_auth_create(o, &a, &err);
  if (st != SL_EINVAL || strstr(err.msg, want) == NULL) {
    fail_msg("create: got %d \"%s\", want EINVAL \"%s\"", st, err.msg, want);
  }
  assert_null(a);
}

/* ---- building tokens the way another issuer would (OpenSSL's codec) ---- */

static char *b64url(const uint8_t *in, size_t n) {
  char *out = malloc(4 * (n / 3 + 1) + 1);
  assert_non_null(out);
  int m = EVP_EncodeBlock((unsigned char *)out, in, (int)n);
  while (m > 0 && out[m - 1] == '=') m--;
  out[m] = '\0';
  for (char *p = out; *p; p++) {
    if (*p == '+') *p = '-';
    if (*p == '/') *p = '_';
  }
  return out;
}

static size_t pkey_sign(EVP_PKEY *k, const char *msg, uint8_t *sig, size_t cap) {
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  size_t n = cap;
  assert_int_equal(EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, k), 1);
  assert_int_equal(EVP_DigestSign(ctx, sig, &n, (const uint8_t *)msg, strlen(msg)), 1);
  EVP_MD_CTX_free(ctx);
  return n;
}

/* DER ECDSA signature to JWS's r||s. */
static void der_to_raw(const uint8_t *der, size_t n, uint8_t raw[64]) {
  ECDSA_SIG *s = d2i_ECDSA_SIG(NULL, &der, (long)n);
  assert_non_null(s);
  assert_int_equal(BN_bn2binpad(ECDSA_SIG_get0_r(s), raw, 32), 32);
  assert_int_equal(BN_bn2binpad(ECDSA_SIG_get0_s(s), raw + 32, 32), 32);
  ECDSA_SIG_free(s);
}

/* "Bearer <header>.<payload>.<signature>" signed as `kind` says; for ES,
 * sig_len other than 64 cuts or pads the raw signature, and -1 sends it
 * DER-encoded. hs_key NULL means SECRET. Caller frees. */
static char *jwt_full(const char *header, const char *payload, enum kind kind,
                      EVP_PKEY *k, const char *hs_key, int sig_len) {
  char *h = b64url((const uint8_t *)header, strlen(header));
  char *p = b64url((const uint8_t *)payload, strlen(payload));
  char *msg = malloc(strlen(h) + strlen(p) + 2);
  assert_non_null(msg);
  sprintf(msg, "%s.%s", h, p);
  uint8_t sig[1024] = {0}, raw[80] = {0};
  size_t n = 0;
  if (kind == HS) {
    const char *key = hs_key ? hs_key : SECRET;
    unsigned m = 0;
    HMAC(EVP_sha256(), key, (int)strlen(key), (const uint8_t *)msg, strlen(msg), sig, &m);
    n = m;
  } else if (kind == RS) {
    n = pkey_sign(k, msg, sig, sizeof(sig));
  } else if (kind == ES) {
    n = pkey_sign(k, msg, sig, sizeof(sig));
    if (sig_len >= 0) {
      der_to_raw(sig, n, raw);
      memcpy(sig, raw, sizeof(raw));
      n = (size_t)sig_len;
    }
  }
  char *s = b64url(sig, n);
  char *out = malloc(strlen(msg) + strlen(s) + 9);
  assert_non_null(out);
  sprintf(out, "Bearer %s.%s", msg, s);
  free(h);
  free(p);
  free(msg);
  free(s);
  return out;
}

static char *jwt(const char *header, const char *payload, enum kind kind, EVP_PKEY *k) {
  return jwt_full(header, payload, kind, k, NULL, 64);
}

static void expect_ok(const sl_auth *a, const char *authz, int64_t now, const char *role) {
  char got[SL_AUTH_ROLE_MAX] = "";
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_auth_verify(a, authz, now, got, &err);
  if (st != SL_OK) fail_msg("verify: %s", sl_err_msg(&err, st));
  assert_string_equal(got, role);
}

/* Refused with SL_EUNAUTH, a message holding `want`, no role written, and
 * no piece of the token quoted back. */
static void expect_refused(const sl_auth *a, const char *authz, int64_t now,
                           const char *want) {
  char got[SL_AUTH_ROLE_MAX] = "untouched";
  sl_err err = SL_ERR_INIT;
  sl_status st = sl_auth_verify(a, authz, now, got, &err);
  if (st != SL_EUNAUTH || strstr(err.msg, want) == NULL) {
    fail_msg("verify: got %d \"%s\", want EUNAUTH \"%s\"", st, err.msg, want);
  }
  assert_string_equal(got, "untouched");
  const char *dot = authz ? strrchr(authz, '.') : NULL;
  if (dot != NULL && strlen(dot + 1) >= 8) {
    char tail[9];
    memcpy(tail, dot + 1, 8);
    tail[8] = '\0';
    assert_null(strstr(err.msg, tail));
  }
}

/* ---- cases ---- */

static void test_auth__hs256_round_trip(void **state) {
  (void)state;
  sl_auth *a = create(g.secret_path, NULL, NULL);
  char tok[512], authz[600];
  sl_err err = SL_ERR_INIT;
  assert_int_equal(sl_auth_sign_hs256((const uint8_t *)SECRET, strlen(SECRET),
                                      "svc.broker-1@ns:x_y", NOW + 60, tok, sizeof(tok), &err),
                   SL_OK);
  assert_null(strchr(tok, ' '));
  snprintf(authz, sizeof(authz), "Bearer %s", tok);
  expect_ok(a, authz, NOW, "svc.broker-1@ns:x_y");
  /* The scheme is case-insensitive and extra spaces are tolerated. */
  snprintf(authz, sizeof(authz), "bEARER   %s", tok);
  expect_ok(a, authz, NOW, "svc.broker-1@ns:x_y");

  /* An independent encoder and HMAC produce the very same token. */
  char payload[128];
  snprintf(payload, sizeof(payload), "{\"sub\":\"svc.broker-1@ns:x_y\",\"exp\":%lld}",
           (long long)(NOW + 60));
  char *ref = jwt(HS_HEADER, payload, HS, NULL);
  assert_string_equal(ref + 7, tok);
  free(ref);

  /* Without exp the token never expires. */
  assert_int_equal(sl_auth_sign_hs256((const uint8_t *)SECRET, strlen(SECRET), "r", 0, tok,
                                      sizeof(tok), &err),
                   SL_OK);
  snprintf(authz, sizeof(authz), "Bearer %s", tok);
  expect_ok(a, authz, INT64_C(1) << 40, "r");
  sl_auth_destroy(a);
}

static void test_auth__missing_token(void **state) {
  (void)state;
  sl_auth *a = create(g.secret_path, NULL, NULL);
  expect_refused(a, NULL, NOW, "no token");
  expect_refused(a, "", NOW, "no token");
  expect_refused(a, "Bearer ", NOW, "no token");
  expect_refused(a, "Bearer    ", NOW, "no token");
  sl_auth_destroy(a);
}

static void test_auth__not_bearer(void **state) {
  (void)state;
  sl_auth *a = create(g.secret_path, NULL, NULL);
  char tok[512], authz[600];
  assert_int_equal(sl_auth_sign_hs256((const uint8_t *)SECRET, strlen(SECRET), "r", 0, tok,
                                      sizeof(tok), NULL),
                   SL_OK);
  const char *schemes[] = {"Basic ", "Token ", "Bearer\t", "Bearerx ", "", "Bear "};
  for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++) {
    snprintf(authz, sizeof(authz), "%s%s", schemes[i], tok);
    expect_refused(a, authz, NOW, "not a bearer token");
  }
  sl_auth_destroy(a);
}

static void test_auth__bad_signature(void **state) {
  (void)state;
  sl_auth *a = create(g.secret_path, NULL, NULL);
  char *t = jwt(HS_HEADER, "{\"sub\":\"alice\"}", HS, NULL);
  expect_ok(a, t, NOW, "alice");
  char *sig = strrchr(t, '.') + 1;
  sig[0] = sig[0] == 'A' ? 'B' : 'A';
  expect_refused(a, t, NOW, "bad signature");
  free(t);

  /* A changed payload no longer matches its signature. */
  t = jwt(HS_HEADER, "{\"sub\":\"alice\"}", HS, NULL);
  char *pl = strchr(t, '.') + 1;
  pl[2] = pl[2] == 'A' ? 'B' : 'A';
  expect_refused(a, t, NOW, "bad signature");
  free(t);

  /* Signed with another secret, or with the signature cut short. */
  t = jwt_full(HS_HEADER, "{\"sub\":\"alice\"}", HS, NULL,
               "another-secret-of-at-least-32-bytes!", 64);
  expect_refused(a, t, NOW, "bad signature");
  free(t);
  t = jwt(HS_HEADER, "{\"sub\":\"alice\"}", HS, NULL);
  t[strlen(t) - 4] = '\0';
  expect_refused(a, t, NOW, "bad signature");
  free(t);
  /* The right MAC followed by more bytes is not the right MAC. */
  char *ok = jwt(HS_HEADER, "{\"sub\":\"alice\"}", HS, NULL);
  t = malloc(strlen(ok) + 5);
  assert_non_null(t);
  sprintf(t, "%sAAAA", ok);
  expect_refused(a, t, NOW, "bad signature");
  free(t);
  free(ok);
  sl_auth_destroy(a);
}

static void test_auth__alg_none_refused(void **state) {
  (void)state;
  /* Refused whatever keys are configured: with no public key there is no
   * public-key algorithm for "none" to be mistaken for. */
  sl_auth *a = create(g.secret_path, NULL, NULL);
  char *t = jwt("{\"alg\":\"none\",\"typ\":\"JWT\"}", "{\"sub\":\"alice\"}", NONE, NULL);
  expect_refused(a, t, NOW, "algorithm none not accepted");
  sl_auth_destroy(a);
  a = create(g.secret_path, g.rsa_path, NULL);
  expect_refused(a, t, NOW, "algorithm none not accepted");
  free(t);
  t = jwt("{\"alg\":\"HS512\"}", "{\"sub\":\"alice\"}", HS, NULL);
  expect_refused(a, t, NOW, "algorithm HS512 not accepted");
  free(t);
  t = jwt("{\"alg\":\"hs256\"}", "{\"sub\":\"alice\"}", HS, NULL);
  expect_refused(a, t, NOW, "algorithm hs256 not accepted");
  free(t);

  /* A hostile alg is quoted short and printable only. */
  t = jwt("{\"alg\":\"\\n\\u0007AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\"}", "{\"sub\":\"a\"}",
          HS, NULL);
  sl_err err = SL_ERR_INIT;
  char role[SL_AUTH_ROLE_MAX];
  assert_int_equal(sl_auth_verify(a, t, NOW, role, &err), SL_EUNAUTH);
  assert_string_equal(err.msg, "token: algorithm ??AAAAAAAAAAAAAA... not accepted");
  free(t);

  t = jwt("{\"typ\":\"JWT\"}", "{\"sub\":\"alice\"}", HS, NULL);
  expect_refused(a, t, NOW, "no alg");
  free(t);
  t = jwt("{\"alg\":256}", "{\"sub\":\"alice\"}", HS, NULL);
  expect_refused(a, t, NOW, "no alg");
  free(t);
  sl_auth_destroy(a);
}

static void test_auth__typ_and_crit(void **state) {
  (void)state;
  sl_auth *a = create(g.secret_path, NULL, NULL);
  char *t = jwt("{\"alg\":\"HS256\",\"typ\":\"jwt\",\"kid\":\"k1\"}", "{\"sub\":\"a\"}", HS,
                NULL);
  expect_ok(a, t, NOW, "a");
  free(t);
  t = jwt("{\"alg\":\"HS256\",\"typ\":\"JOSE\"}", "{\"sub\":\"a\"}", HS, NULL);
  expect_refused(a, t, NOW, "typ is not jwt");
  free(t);
  t = jwt("{\"alg\":\"HS256\",\"typ\":1}", "{\"sub\":\"a\"}", HS, NULL);
  expect_refused(a, t, NOW, "typ is not jwt");
  free(t);
  t = jwt("{\"alg\":\"HS256\",\"crit\":[\"exp\"]}", "{\"sub\":\"a\"}", HS, NULL);
  expect_refused(a, t, NOW, "critical");
  free(t);
  sl_auth_destroy(a);
}

/* The public key's PEM must never work as an HMAC secret. */
static void test_auth__hs256_refused_with_public_key_only(void **state) {
  (void)state;
  sl_auth *a = create(NULL, g.rsa_path, NULL);
  char *pem = pem_of(g.rsa, false);
  char *t = jwt_full(HS_HEADER, "{\"sub\":\"mallory\"}", HS, NULL, pem, 64);
  expect_refused(a, t, NOW, "algorithm HS256 not accepted");
  free(t);
  t = jwt(HS_HEADER, "{\"sub\":\"mallory\"}", HS, NULL);
  expect_refused(a, t, NOW, "algorithm HS256 not accepted");
  free(t);
  free(pem);
  sl_auth_destroy(a);
}

static void test_auth__rs256(void **state) {
  (void)state;
  sl_auth *a = create(NULL, g.rsa_path, NULL);
  char *t = jwt("{\"alg\":\"RS256\",\"typ\":\"JWT\"}", "{\"sub\":\"bob\"}", RS, g.rsa);
  expect_ok(a, t, NOW, "bob");
  free(t);
  t = jwt("{\"alg\":\"RS256\"}", "{\"sub\":\"bob\"}", RS, g.rsa2);
  expect_refused(a, t, NOW, "bad signature");
  free(t);
  /* An RSA key serves RS256 only. */
  t = jwt("{\"alg\":\"ES256\"}", "{\"sub\":\"bob\"}", ES, g.ec);
  expect_refused(a, t, NOW, "algorithm ES256 not accepted");
  free(t);
  sl_auth_destroy(a);
}

static void test_auth__es256(void **state) {
  (void)state;
  sl_auth *a = create(g.secret_path, g.ec_path, NULL);
  char *t = jwt("{\"alg\":\"ES256\",\"typ\":\"JWT\"}", "{\"sub\":\"carol\"}", ES, g.ec);
  expect_ok(a, t, NOW, "carol");
  free(t);
  t = jwt("{\"alg\":\"ES256\"}", "{\"sub\":\"carol\"}", ES, g.ec2);
  expect_refused(a, t, NOW, "bad signature");
  free(t);
  /* The secret still serves HS256 beside the EC key; RS256 has no key. */
  t = jwt(HS_HEADER, "{\"sub\":\"carol\"}", HS, NULL);
  expect_ok(a, t, NOW, "carol");
  free(t);
  t = jwt("{\"alg\":\"RS256\"}", "{\"sub\":\"carol\"}", RS, g.rsa);
  expect_refused(a, t, NOW, "algorithm RS256 not accepted");
  free(t);
  sl_auth_destroy(a);
}

static void test_auth__es256_wrong_signature_length(void **state) {
  (void)state;
  sl_auth *a = create(NULL, g.ec_path, NULL);
  const char *h = "{\"alg\":\"ES256\"}", *p = "{\"sub\":\"carol\"}";
  int lens[] = {0, 32, 63, 65, 72, -1 /* DER, as OpenSSL emits it */};
  for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
    char *t = jwt_full(h, p, ES, g.ec, NULL, lens[i]);
    expect_refused(a, t, NOW, "bad signature");
    free(t);
  }
  char *t = jwt_full(h, p, ES, g.ec, NULL, 64);
  expect_ok(a, t, NOW, "carol");
  free(t);
  sl_auth_destroy(a);
}

static void test_auth__expiry_with_leeway(void **state) {
  (void)state;
  sl_auth *a = create(g.secret_path, NULL, NULL);
  char tok[512], authz[600];
  assert_int_equal(sl_auth_sign_hs256((const uint8_t *)SECRET, strlen(SECRET), "r", NOW, tok,
                                      sizeof(tok), NULL),
                   SL_OK);
  snprintf(authz, sizeof(authz), "Bearer %s", tok);
  expect_ok(a, authz, NOW, "r");
  expect_ok(a, authz, NOW + SL_AUTH_LEEWAY_S, "r");
  expect_refused(a, authz, NOW + SL_AUTH_LEEWAY_S + 1, "token: expired");

  char payload[128];
  snprintf(payload, sizeof(payload), "{\"sub\":\"r\",\"nbf\":%lld}", (long long)NOW);
  char *t = jwt(HS_HEADER, payload, HS, NULL);
  expect_ok(a, t, NOW, "r");
  expect_ok(a, t, NOW - SL_AUTH_LEEWAY_S, "r");
  expect_refused(a, t, NOW - SL_AUTH_LEEWAY_S - 1, "token: not yet valid");
  free(t);

  t = jwt(HS_HEADER, "{\"sub\":\"r\",\"exp\":\"1700000000\"}", HS, NULL);
  expect_refused(a, t, NOW, "exp is not a number");
  free(t);
  t = jwt(HS_HEADER, "{\"sub\":\"r\",\"nbf\":null}", HS, NULL);
  expect_refused(a, t, NOW, "nbf is not a number");
  free(t);
  sl_auth_destroy(a);
}

static void test_auth__sub_rules(void **state) {
  (void)state;
  sl_auth *a = create(g.secret_path, NULL, NULL);
  char *t = jwt(HS_HEADER, "{\"name\":\"alice\"}", HS, NULL);
  expect_refused(a, t, NOW, "no sub claim");
  free(t);
  const char *bad[] = {"{\"sub\":\"a b\"}", "{\"sub\":\"x/y\"}", "{\"sub\":\"\"}",
                       "{\"sub\":42}", "{\"sub\":\"caf\\u00e9\"}", "{\"sub\":[\"a\"]}"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    t = jwt(HS_HEADER, bad[i], HS, NULL);
    expect_refused(a, t, NOW, "sub is not a valid role");
    free(t);
  }
  /* An escaped NUL must not shorten "admin\0x" to "admin". */
  t = jwt(HS_HEADER, "{\"sub\":\"admin\\u0000x\"}", HS, NULL);
  expect_refused(a, t, NOW, "token: malformed");
  free(t);

  char longest[SL_AUTH_ROLE_MAX], payload[SL_AUTH_ROLE_MAX + 32];
  memset(longest, 'r', SL_AUTH_ROLE_MAX - 1);
  longest[SL_AUTH_ROLE_MAX - 1] = '\0';
  snprintf(payload, sizeof(payload), "{\"sub\":\"%s\"}", longest);
  t = jwt(HS_HEADER, payload, HS, NULL);
  expect_ok(a, t, NOW, longest);
  free(t);
  snprintf(payload, sizeof(payload), "{\"sub\":\"%sr\"}", longest);
  t = jwt(HS_HEADER, payload, HS, NULL);
  expect_refused(a, t, NOW, "sub is not a valid role");
  free(t);
  sl_auth_destroy(a);
}

static void test_auth__malformed(void **state) {
  (void)state;
  sl_auth *a = create(g.secret_path, NULL, NULL);
  char *good = jwt(HS_HEADER, "{\"sub\":\"a\"}", HS, NULL);
  expect_ok(a, good, NOW, "a");
  char buf[1024];
  const char *sig = strrchr(good, '.') + 1;
  const char *pl = strchr(good, '.') + 1;
  size_t hlen = (size_t)(pl - 1 - (good + 7));

  /* Padding, the standard alphabet, and stray characters in each part. */
  snprintf(buf, sizeof(buf), "%s=", good);
  expect_refused(a, buf, NOW, "bad base64url in signature");
  snprintf(buf, sizeof(buf), "Bearer %.*s+.%s", (int)hlen, good + 7, pl);
  expect_refused(a, buf, NOW, "bad base64url in header");
  int hp = (int)(sig - 1 - good - 7); /* "header.payload" */
  snprintf(buf, sizeof(buf), "Bearer %.*s/.%s", hp, good + 7, sig);
  expect_refused(a, buf, NOW, "bad base64url in payload");
  snprintf(buf, sizeof(buf), "Bearer %.*s!.%s", hp, good + 7, sig);
  expect_refused(a, buf, NOW, "bad base64url in payload");
  /* The same bytes spelled with set padding bits ("e30" vs "e31" is {}). */
  snprintf(buf, sizeof(buf), "Bearer e31.e30.%s", sig);
  expect_refused(a, buf, NOW, "bad base64url in header");
  /* One character past a multiple of four encodes no whole byte. */
  snprintf(buf, sizeof(buf), "Bearer A.e30.%s", sig);
  expect_refused(a, buf, NOW, "bad base64url in header");

  /* Not three parts. */
  snprintf(buf, sizeof(buf), "Bearer %.*s", hp, good + 7);
  expect_refused(a, buf, NOW, "not three dot-separated parts");
  snprintf(buf, sizeof(buf), "%s.xyz", good);
  expect_refused(a, buf, NOW, "not three dot-separated parts");
  expect_refused(a, "Bearer ...", NOW, "not three dot-separated parts");
  expect_refused(a, "Bearer ..", NOW, "header is not a json object");
  free(good);

  /* Correctly signed, but the payload is not a JSON object. */
  const char *payloads[] = {"not json", "[\"sub\",\"a\"]", "\"a\"", "{\"sub\":\"a\"} x",
                            "{\"sub\":\"a\""};
  for (size_t i = 0; i < sizeof(payloads) / sizeof(payloads[0]); i++) {
    char *t = jwt(HS_HEADER, payloads[i], HS, NULL);
    expect_refused(a, t, NOW, "payload is not a json object");
    free(t);
  }
  char *t = jwt("alg=HS256", "{\"sub\":\"a\"}", HS, NULL);
  expect_refused(a, t, NOW, "header is not a json object");
  free(t);
  sl_auth_destroy(a);
}

static void test_auth__oversized_authorization(void **state) {
  (void)state;
  sl_auth *a = create(g.secret_path, NULL, NULL);
  char *big = malloc(SL_AUTH_TOKEN_MAX + 2);
  assert_non_null(big);
  memcpy(big, "Bearer ", 7);
  memset(big + 7, 'A', SL_AUTH_TOKEN_MAX + 1 - 7);
  big[SL_AUTH_TOKEN_MAX + 1] = '\0';
  expect_refused(a, big, NOW, "too long");
  /* At exactly the limit the value is read (and found malformed). */
  big[SL_AUTH_TOKEN_MAX] = '\0';
  expect_refused(a, big, NOW, "not three dot-separated parts");
  free(big);
  sl_auth_destroy(a);
}

static void test_auth__short_secret_refused(void **state) {
  (void)state;
  sl_auth_opts o = {.secret_file = write_str("short", "0123456789abcdef0123456789abcde\n")};
  expect_create_fails(&o, "too short (31 bytes");
  /* Trailing \r\n are trimmed before the length is counted. */
  o.secret_file = write_str("short_crlf", "0123456789abcdef0123456789abcde\r\n\r\n");
  expect_create_fails(&o, "too short (31 bytes");
  o.secret_file = "/nonexistent/secret";
  expect_create_fails(&o, "/nonexistent/secret");
  sl_auth_opts none = {0};
  expect_create_fails(&none, "neither");
  expect_create_fails(NULL, "neither");

  /* 32 bytes is enough, and the trimmed bytes are the key. */
  o.secret_file = write_str("exact", "0123456789abcdef0123456789abcdef\n");
  sl_auth *a = create(o.secret_file, NULL, NULL);
  char tok[512], authz[600];
  assert_int_equal(sl_auth_sign_hs256((const uint8_t *)"0123456789abcdef0123456789abcdef",
                                      32, "r", 0, tok, sizeof(tok), NULL),
                   SL_OK);
  snprintf(authz, sizeof(authz), "Bearer %s", tok);
  expect_ok(a, authz, NOW, "r");
  sl_auth_destroy(a);
}

static void test_auth__bad_public_key_refused(void **state) {
  (void)state;
  sl_auth_opts o = {.public_key_file = write_key("rsa.key", g.rsa, true)};
  expect_create_fails(&o, "not a pem public key");
  o.public_key_file = write_str("garbage.pem", "-----BEGIN PUBLIC KEY-----\nAAAA\n");
  expect_create_fails(&o, "not a pem public key");
  o.public_key_file = g.secret_path;
  expect_create_fails(&o, "not a pem public key");
  o.public_key_file = "/nonexistent/key.pem";
  expect_create_fails(&o, "cannot open");

  EVP_PKEY *small = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)1024);
  EVP_PKEY *p384 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
  EVP_PKEY *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
  assert_true(small && p384 && ed);
  o.public_key_file = write_key("small.pub", small, false);
  expect_create_fails(&o, "rsa key of 1024 bits");
  o.public_key_file = write_key("p384.pub", p384, false);
  expect_create_fails(&o, "not on curve p-256");
  o.public_key_file = write_key("ed.pub", ed, false);
  expect_create_fails(&o, "not an rsa or ec key");
  /* A bad key spoils the whole verifier, even beside a good secret. */
  o.secret_file = g.secret_path;
  expect_create_fails(&o, "not an rsa or ec key");
  EVP_PKEY_free(small);
  EVP_PKEY_free(p384);
  EVP_PKEY_free(ed);
}

static void test_auth__superusers(void **state) {
  (void)state;
  sl_auth *a = create(g.secret_path, NULL, " broker ,bookie,\tsvc@x:y ");
  assert_true(sl_auth_is_superuser(a, "broker"));
  assert_true(sl_auth_is_superuser(a, "bookie"));
  assert_true(sl_auth_is_superuser(a, "svc@x:y"));
  assert_false(sl_auth_is_superuser(a, "broke"));
  assert_false(sl_auth_is_superuser(a, "brokers"));
  assert_false(sl_auth_is_superuser(a, " broker "));
  assert_false(sl_auth_is_superuser(a, "client"));
  assert_false(sl_auth_is_superuser(a, NULL));
  sl_auth_destroy(a);

  a = create(g.secret_path, NULL, NULL);
  assert_false(sl_auth_is_superuser(a, "broker"));
  sl_auth_destroy(a);
  a = create(g.secret_path, NULL, "  ");
  assert_false(sl_auth_is_superuser(a, ""));
  sl_auth_destroy(a);
  assert_false(sl_auth_is_superuser(NULL, "broker"));

  char too_long[SL_AUTH_ROLE_MAX + 8];
  memset(too_long, 'x', SL_AUTH_ROLE_MAX);
  too_long[SL_AUTH_ROLE_MAX] = '\0';
  const char *bad[] = {"a,,b", "a,", ",a", "a b,c", "x/y", too_long};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    sl_auth_opts o = {.secret_file = g.secret_path, .superusers = bad[i]};
    expect_create_fails(&o, "superusers: bad role");
  }
}

static void test_auth__sign_checks(void **state) {
  (void)state;
  char tok[512];
  sl_err err = SL_ERR_INIT;
  const uint8_t *s = (const uint8_t *)SECRET;
  assert_int_equal(sl_auth_sign_hs256(s, strlen(SECRET), "r", NOW, tok, sizeof(tok), &err),
                   SL_OK);
  size_t n = strlen(tok);
  char small[512];
  memset(small, 'z', sizeof(small));
  assert_int_equal(sl_auth_sign_hs256(s, strlen(SECRET), "r", NOW, small, 10, &err),
                   SL_ETOOBIG);
  assert_int_equal(sl_auth_sign_hs256(s, strlen(SECRET), "r", NOW, small, n, &err),
                   SL_ETOOBIG);
  assert_int_equal(small[0], 'z'); /* nothing written on failure */
  assert_int_equal(sl_auth_sign_hs256(s, strlen(SECRET), "r", NOW, small, n + 1, &err),
                   SL_OK);
  assert_string_equal(small, tok);

  assert_int_equal(sl_auth_sign_hs256(s, strlen(SECRET), "a b", 0, tok, sizeof(tok), &err),
                   SL_EINVAL);
  assert_non_null(strstr(err.msg, "bad role"));
  assert_int_equal(sl_auth_sign_hs256(s, strlen(SECRET), "", 0, tok, sizeof(tok), &err),
                   SL_EINVAL);
  assert_int_equal(sl_auth_sign_hs256(s, strlen(SECRET), NULL, 0, tok, sizeof(tok), &err),
                   SL_EINVAL);
  assert_int_equal(sl_auth_sign_hs256(NULL, 0, "r", 0, tok, sizeof(tok), &err), SL_EINVAL);
  assert_int_equal(sl_auth_sign_hs256(s, strlen(SECRET), "r", -5, tok, sizeof(tok), &err),
                   SL_EINVAL);
}

static void test_auth__read_file(void **state) {
  (void)state;
  char *s = NULL;
  size_t n = 0;
  sl_err err = SL_ERR_INIT;
  const char *p = write_file("nl", "tok\0en\r\n\n", 9);
  assert_int_equal(sl_auth_read_file(p, true, &s, &n, &err), SL_OK);
  assert_int_equal(n, 6);
  assert_memory_equal(s, "tok\0en", 7);
  free(s);
  assert_int_equal(sl_auth_read_file(p, false, &s, &n, &err), SL_OK);
  assert_int_equal(n, 9);
  free(s);

  const size_t mib = 1024 * 1024;
  char *big = malloc(mib + 1);
  assert_non_null(big);
  memset(big, 'x', mib + 1);
  p = write_file("mib", big, mib);
  assert_int_equal(sl_auth_read_file(p, true, &s, &n, &err), SL_OK);
  assert_int_equal(n, mib);
  free(s);
  p = write_file("mib1", big, mib + 1);
  s = NULL;
  assert_int_equal(sl_auth_read_file(p, true, &s, &n, &err), SL_EINVAL);
  assert_null(s);
  assert_non_null(strstr(err.msg, "too large"));
  assert_non_null(strstr(err.msg, p));
  free(big);

  assert_int_equal(sl_auth_read_file("/nonexistent/f", true, &s, &n, &err), SL_EINVAL);
  assert_non_null(strstr(err.msg, "/nonexistent/f"));
  assert_int_equal(sl_auth_read_file(g.dir, true, &s, &n, &err), SL_EINVAL);
}

static void test_auth__destroy_null(void **state) {
  (void)state;
  sl_auth_destroy(NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_auth__hs256_round_trip),
      cmocka_unit_test(test_auth__missing_token),
      cmocka_unit_test(test_auth__not_bearer),
      cmocka_unit_test(test_auth__bad_signature),
      cmocka_unit_test(test_auth__alg_none_refused),
      cmocka_unit_test(test_auth__typ_and_crit),
      cmocka_unit_test(test_auth__hs256_refused_with_public_key_only),
      cmocka_unit_test(test_auth__rs256),
      cmocka_unit_test(test_auth__es256),
      cmocka_unit_test(test_auth__es256_wrong_signature_length),
      cmocka_unit_test(test_auth__expiry_with_leeway),
      cmocka_unit_test(test_auth__sub_rules),
      cmocka_unit_test(test_auth__malformed),
      cmocka_unit_test(test_auth__oversized_authorization),
      cmocka_unit_test(test_auth__short_secret_refused),
      cmocka_unit_test(test_auth__bad_public_key_refused),
      cmocka_unit_test(test_auth__superusers),
      cmocka_unit_test(test_auth__sign_checks),
      cmocka_unit_test(test_auth__read_file),
      cmocka_unit_test(test_auth__destroy_null),
  };
  return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
