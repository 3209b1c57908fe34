/* merchant_crypto.h -- the server-side secrets of the merchant module: sealing of stored
 * secrets, pay code tokens and webhook signatures. Pure functions over OpenSSL 3.
 *
 * Sealing: merchant API and webhook secrets must be recoverable by the server (it verifies
 * and makes HMACs with them), so they are stored encrypted, never as a one-way hash. AES-256-
 * GCM under merchant.key_encryption_key (64 hex digits, from the environment), a random
 * 96-bit IV per secret, and associated data naming what the secret belongs to (the key id, or
 * "webhook:<merchant id>"), so that a ciphertext copied onto another row does not open. Stored
 * form: "v1." + hex(iv | ciphertext | tag). The database and Redis only ever hold that.
 *
 * Pay codes: "gpc1.<nonce>.<worker id>.<exp>.<mac>", nonce = 32 hex digits (the row of
 * gp_paycode_issue that makes it single-use), exp = unix seconds, mac = the first 16 bytes of
 * HMAC-SHA256(merchant.paycode_secret, "gpc1.<nonce>.<worker id>.<exp>") in hex. Every
 * instance shares the secret, so a code verifies anywhere; the database decides use and
 * expiry.
 *
 * Webhooks: "Gridpoints-Signature: t=<unix>,v1=<hex HMAC-SHA256(webhook secret,
 * "<t>.<raw body>")>" (the Stripe scheme). */
#ifndef GP_MERCHANT_CRYPTO_H
#define GP_MERCHANT_CRYPTO_H

#include "common.h"

#define MCRYPTO_KEK_HEX_LEN   64
#define MCRYPTO_PAYCODE_MAX   96
#define MCRYPTO_NONCE_HEX_LEN 32

/* Parses merchant.key_encryption_key (exactly 64 hex digits). */
bool mcrypto_parse_kek(const char *hex, unsigned char kek[32]) MUSTCHECK;
/* Encrypts pt; *out is malloc'd ("v1.<hex>"). False only when OpenSSL fails. */
bool mcrypto_seal(const unsigned char kek[32], const char *aad, const void *pt, size_t n,
                  char **out) MUSTCHECK;
/* Decrypts and authenticates; writes at most cap-1 bytes plus a NUL. False on any mismatch
 * (wrong key, wrong aad, tampering, malformed, too long). */
bool mcrypto_open(const unsigned char kek[32], const char *aad, const char *sealed, char *out,
                  size_t cap, size_t *outlen) MUSTCHECK;

/* Builds a pay code into out (MCRYPTO_PAYCODE_MAX bytes). */
bool mcrypto_paycode_make(const char *secret, const char *nonce, int64_t worker, int64_t exp,
                          char *out, size_t cap) MUSTCHECK;
/* Parses a pay code and verifies its MAC in constant time; false on anything else. */
bool mcrypto_paycode_check(const char *secret, const char *code,
                           char nonce[MCRYPTO_NONCE_HEX_LEN + 1], int64_t *worker,
                           int64_t *exp) MUSTCHECK;

/* The value of the Gridpoints-Signature header for a webhook body sent at time t. */
void mcrypto_webhook_signature(const char *secret, size_t secret_len, int64_t t, const void *body,
                               size_t len, char *out, size_t cap);

struct config;
/* Checks what serving merchants needs: merchant.key_encryption_key (64 hex digits) and
 * merchant.paycode_secret (at least 32 characters), both normally from the environment. */
bool mcrypto_config_check(const struct config *cfg, char *why, size_t len) MUSTCHECK;

/* Overwrites a secret in memory (OPENSSL_cleanse). */
void mcrypto_wipe(void *p, size_t n);

#endif
