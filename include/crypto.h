/* crypto.h -- the few primitives the service needs, all through OpenSSL 3:
 * CSPRNG tokens, SHA-256, HMAC-SHA256, constant-time comparison, PBKDF2 password hashes.
 * Pure functions, safe to call from the worker pool's threads. */
#ifndef GP_CRYPTO_H
#define GP_CRYPTO_H

#include "common.h"

#define CRYPTO_TOKEN_LEN    43 /* base64url of 32 random bytes, no padding */
#define CRYPTO_HASH_HEX_LEN 64

/* Fills out with `n` bytes from the CSPRNG; false only if OpenSSL's RNG failed. */
bool crypto_random(void *out, size_t n) MUSTCHECK;
/* A new session token: CRYPTO_TOKEN_LEN chars + NUL. */
bool crypto_token(char out[CRYPTO_TOKEN_LEN + 1]) MUSTCHECK;
/* Random lower-case hex of 2*nbytes chars + NUL (request ids). */
bool crypto_random_hex(char *out, size_t nbytes) MUSTCHECK;

void crypto_sha256(const void *data, size_t len, unsigned char out[32]);
void crypto_hmac_sha256(const void *key, size_t keylen, const void *data, size_t len,
                        unsigned char out[32]);
/* The one hex encoder: lower case, NUL-terminated. */
void crypto_hex(const unsigned char *in, size_t n, char *out /* 2n+1 */);
/* The value of one hex digit (either case), or -1. */
int crypto_hexval(char c);
/* Decodes exactly 2n hex chars into n bytes; false on bad input. */
bool crypto_unhex(const char *in, unsigned char *out, size_t n);
/* The one base64 (RFC 4648 §4, with padding), through OpenSSL's EVP_EncodeBlock and
 * EVP_DecodeBlock. out needs 4 * ((n + 2) / 3) + 1 bytes; returns the length written. */
size_t crypto_b64_encode(const void *in, size_t n, char *out);
/* Decodes exactly len chars of canonical base64: the standard alphabet, padding required and
 * only at the end, no whitespace. False on bad input or when more than max bytes would
 * result; then out and *outlen are untouched. */
bool crypto_b64_decode(const char *in, size_t len, void *out, size_t max, size_t *outlen) MUSTCHECK;
/* Constant-time equality of two equal-length buffers (CRYPTO_memcmp). */
bool crypto_equal(const void *a, const void *b, size_t n);

/* Stored form: "pbkdf2-sha256$<iterations>$<salt b64>$<hash b64>". out must hold 160 bytes. */
bool crypto_password_hash(const char *password, int iterations, char *out, size_t outlen) MUSTCHECK;
/* Recomputes with the stored parameters and compares in constant time. */
bool crypto_password_verify(const char *password, const char *stored);

#endif
