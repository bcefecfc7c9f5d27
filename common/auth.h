/*
 * Token authentication (DESIGN.md §8): signed JWTs in the "authorization"
 * metadata, "Bearer <token>", checked by every Sluice server.
 *
 * A verifier holds the keys a cluster trusts: an HMAC secret (tokens signed
 * HS256) and/or a public key PEM (RSA: RS256; EC P-256: ES256). A token's
 * "alg" must match a configured key of that kind, so a token cannot pick a
 * weaker check than the operator set up ("none" is always refused, and an
 * HS256 token is refused when only a public key is configured: the public
 * key must never be usable as an HMAC secret).
 *
 * Claims: "sub" (the role, required, 1..SL_AUTH_ROLE_MAX-1 bytes of
 * [A-Za-z0-9._@:-]), "exp" and "nbf" (seconds since the epoch, optional;
 * checked with SL_AUTH_LEEWAY_S of clock skew allowed).
 *
 * Super-users: roles named in the verifier's super-user list hold every right
 * (the services present such a token to each other).
 *
 * Thread-safety: a verifier is immutable after create; verify from any
 * thread.
 */
#ifndef SL_COMMON_AUTH_H
#define SL_COMMON_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

#define SL_AUTH_ROLE_MAX 128     /* role buffer size, NUL included */
#define SL_AUTH_TOKEN_MAX 8192   /* longest "authorization" value accepted */
#define SL_AUTH_LEEWAY_S 30

typedef struct sl_auth sl_auth;

typedef struct sl_auth_opts {
  const char *secret_file;      /* HMAC secret (raw bytes, >= 32); NULL = none */
  const char *public_key_file;  /* PEM public key (RSA or EC P-256); NULL = none */
  const char *superusers;       /* comma-separated roles; NULL = none */
} sl_auth_opts;

/* Loads the keys. At least one of secret_file and public_key_file must be
 * set. SL_EINVAL (with the file named in err) for an unreadable file, a
 * secret shorter than 32 bytes, a PEM that is not an RSA or P-256 public
 * key, or a bad super-user list. */
sl_status sl_auth_create(const sl_auth_opts *opts, sl_auth **out, sl_err *err);
void sl_auth_destroy(sl_auth *a);

/* Checks an "authorization" metadata value (borrowed; NULL = absent) at
 * wall-clock time now_s. On success copies the role into role[SL_AUTH_ROLE_MAX].
 * SL_EUNAUTH with a reason a person reads ("no token", "malformed token",
 * "bad signature", "token expired", "algorithm RS256 not accepted", ...),
 * never the token itself. */
sl_status sl_auth_verify(const sl_auth *a, const char *authorization, int64_t now_s,
                         char *role, sl_err *err);

/* True when `role` is in the super-user list. */
bool sl_auth_is_superuser(const sl_auth *a, const char *role);

/* Mints an HS256 token for `role` signed with `secret` (len bytes), expiring
 * at exp_s (0 = no "exp" claim). Writes the bare token (no "Bearer ") into
 * out[cap]. SL_EINVAL for a bad role, SL_ETOOBIG if out is too small. */
sl_status sl_auth_sign_hs256(const uint8_t *secret, size_t len, const char *role,
                             int64_t exp_s, char *out, size_t cap, sl_err *err);

/* Reads a whole small file (secrets, tokens) into a NUL-terminated heap
 * buffer; trailing newlines are stripped when `trim` is set. *len excludes
 * the NUL. SL_EINVAL naming the file on failure. Caller frees. */
sl_status sl_auth_read_file(const char *path, bool trim, char **out, size_t *len,
                            sl_err *err);

#endif
