/* AES-256-GCM for entry payloads at rest. See entry_crypt.h. */
#include "bookie/entry_crypt.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#define KEY_BYTES 32
#define NONCE_BYTES 12
#define FILE_MAX 256

struct sl_entry_crypt {
  uint8_t key[KEY_BYTES];
};

static int hex_val(char ch) {
  if (ch >= '0' && ch <= '9') return ch - '0';
  if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
  return -1;
}

/* 32 raw bytes, or 64 hex digits with an optional trailing newline. */
static bool parse_key(const uint8_t *buf, size_t n, uint8_t key[KEY_BYTES]) {
  if (n == KEY_BYTES) {
    memcpy(key, buf, KEY_BYTES);
    return true;
  }
  while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) n--;
  if (n != 2 * KEY_BYTES) return false;
  for (size_t i = 0; i < KEY_BYTES; i++) {
    int hi = hex_val((char)buf[2 * i]), lo = hex_val((char)buf[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    key[i] = (uint8_t)(hi << 4 | lo);
  }
  return true;
}

sl_status sl_entry_crypt_create(const char *key_file, sl_entry_crypt **out, sl_err *err) {
  *out = NULL;
  FILE *f = fopen(key_file, "rb");
  if (f == NULL) return sl_err_set(err, SL_EINVAL, "encryption key %s: cannot open", key_file);
  uint8_t buf[FILE_MAX];
  size_t n = fread(buf, 1, sizeof(buf), f);
  bool too_long = n == sizeof(buf);
  fclose(f);
  sl_entry_crypt *c = sl_xcalloc(1, sizeof(*c));
  bool ok = !too_long && parse_key(buf, n, c->key);
  OPENSSL_cleanse(buf, sizeof(buf));
  if (!ok) {
    sl_entry_crypt_destroy(c);
    return sl_err_set(err, SL_EINVAL, "encryption key %s: want 32 raw bytes or 64 hex digits",
                      key_file);
  }
  *out = c;
  return SL_OK;
}

void sl_entry_crypt_destroy(sl_entry_crypt *c) {
  if (c == NULL) return;
  OPENSSL_cleanse(c->key, sizeof(c->key));
  free(c);
}

static void put_be64(uint8_t *p, uint64_t v) {
  for (int i = 7; i >= 0; i--, v >>= 8) p[i] = (uint8_t)v;
}

/* The additional data: both ids, big-endian. */
static void place(uint64_t ledger, int64_t entry, uint8_t ad[16]) {
  put_be64(ad, ledger);
  put_be64(ad + 8, (uint64_t)entry);
}

static bool nonce_of(const uint8_t ad[16], uint8_t nonce[NONCE_BYTES]) {
  static const char label[] = "sluice-entry-nonce";
  uint8_t digest[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  bool ok = md != NULL && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1 &&
            EVP_DigestUpdate(md, label, sizeof(label) - 1) == 1 &&
            EVP_DigestUpdate(md, ad, 16) == 1 && EVP_DigestFinal_ex(md, digest, &n) == 1;
  EVP_MD_CTX_free(md);
  if (ok) memcpy(nonce, digest, NONCE_BYTES);
  return ok;
}

void sl_entry_crypt_fingerprint(const sl_entry_crypt *c,
                                char out[SL_ENTRY_CRYPT_FINGERPRINT_LEN]) {
  static const char label[] = "sluice-key-fingerprint";
  uint8_t digest[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  bool ok = md != NULL && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1 &&
            EVP_DigestUpdate(md, label, sizeof(label) - 1) == 1 &&
            EVP_DigestUpdate(md, c->key, KEY_BYTES) == 1 &&
            EVP_DigestFinal_ex(md, digest, &n) == 1 && n == 32;
  EVP_MD_CTX_free(md);
  SL_ASSERT(ok); /* SHA-256 does not fail on a working OpenSSL */
  for (unsigned int i = 0; i < 32; i++) snprintf(out + 2 * i, 3, "%02x", digest[i]);
}

/* One GCM pass; `seal` picks the direction. The tag goes after the data. */
static bool gcm(const sl_entry_crypt *c, bool seal, uint64_t ledger, int64_t entry,
                const uint8_t *in, size_t len, uint8_t *out) {
  uint8_t ad[16], nonce[NONCE_BYTES];
  place(ledger, entry, ad);
  if (!nonce_of(ad, nonce) || len > INT32_MAX) return false;
  size_t data = seal ? len : len - SL_ENTRY_CRYPT_OVERHEAD;
  EVP_CIPHER_CTX *x = EVP_CIPHER_CTX_new();
  int n = 0;
  bool ok = x != NULL &&
            (seal ? EVP_EncryptInit_ex(x, EVP_aes_256_gcm(), NULL, c->key, nonce)
                  : EVP_DecryptInit_ex(x, EVP_aes_256_gcm(), NULL, c->key, nonce)) == 1;
  ok = ok && (seal ? EVP_EncryptUpdate(x, NULL, &n, ad, sizeof(ad))
                   : EVP_DecryptUpdate(x, NULL, &n, ad, sizeof(ad))) == 1;
  ok = ok && (data == 0 || (seal ? EVP_EncryptUpdate(x, out, &n, in, (int)data)
                                 : EVP_DecryptUpdate(x, out, &n, in, (int)data)) == 1);
  if (ok && !seal)
    ok = EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_GCM_SET_TAG, SL_ENTRY_CRYPT_OVERHEAD,
                             (void *)(in + data)) == 1;
  ok = ok && (seal ? EVP_EncryptFinal_ex(x, out + data, &n)
                   : EVP_DecryptFinal_ex(x, out + data, &n)) == 1;
  if (ok && seal)
    ok = EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_GCM_GET_TAG, SL_ENTRY_CRYPT_OVERHEAD, out + data) == 1;
  EVP_CIPHER_CTX_free(x);
  return ok;
}

sl_status sl_entry_crypt_seal(const sl_entry_crypt *c, uint64_t ledger, int64_t entry,
                              const void *in, size_t len, uint8_t *out, sl_err *err) {
  if (!gcm(c, true, ledger, entry, in, len, out))
    return sl_err_set(err, SL_EINTERNAL, "ledger %" PRIu64 " entry %" PRId64 ": encryption "
                      "failed", ledger, entry);
  return SL_OK;
}

sl_status sl_entry_crypt_open(const sl_entry_crypt *c, uint64_t ledger, int64_t entry,
                              const void *in, size_t len, uint8_t *out, sl_err *err) {
  if (len < SL_ENTRY_CRYPT_OVERHEAD || !gcm(c, false, ledger, entry, in, len, out))
    return sl_err_set(err, SL_ECORRUPT, "ledger %" PRIu64 " entry %" PRId64 ": stored bytes "
                      "do not decrypt (another key, or damaged)", ledger, entry);
  return SL_OK;
}
