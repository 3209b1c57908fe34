/* merchant_auth.h -- signed merchant requests (the /merchant/v1 routes) and signed replies.
 *
 * A merchant holds an API key: a key id ("mk_" + 16 hex) and a secret ("sk_..."), shown once
 * when a street admin issues it. Every request carries
 *
 *   Authorization: GP1-HMAC-SHA256 key=<key id>,ts=<unix seconds>,nonce=<16-64 of
 *                  [A-Za-z0-9_-]>,sig=<64 lower-case hex>
 *
 * where sig = HMAC-SHA256(secret, string to sign) and the string to sign is seven lines, each
 * ending in "\n":
 *
 *   GP1-HMAC-SHA256 / key id / METHOD / path?query exactly as sent / ts / nonce /
 *   hex SHA-256 of the raw body (of "" when there is none)
 *
 * The server refuses (401, the code saying which check failed and nothing secret): a missing
 * or malformed header, a timestamp more than merchant.signature_window away from its clock,
 * an unknown, revoked or expired key, a wrong signature (compared with CRYPTO_memcmp), and a
 * nonce it has seen before (Redis SET NX for merchant.nonce_ttl, at least twice the window).
 * When Redis cannot be asked, write routes fail closed (503) and reads go on. Once the
 * signature is verified, every reply is signed with the same secret:
 *
 *   GP-Signature: ts=<unix seconds>,sig=<hex HMAC-SHA256(secret, response string)>
 *   response string: GP1-HMAC-SHA256-RESPONSE / key id / request nonce / status / ts /
 *                    hex SHA-256 of the reply body   (each line ending in "\n")
 *
 * Keys are looked up in PostgreSQL (gp_merchant_key_lookup) behind a short Redis cache of the
 * ciphertext ("mkey:{<key id>}"); the business SQL functions re-check the key in the same
 * statement as the operation, so a revocation is effective at once whatever the cache holds.
 * docs/MERCHANTS.md has a worked example; tests/unit/test_merchant_auth.c checks it. */
#ifndef GP_MERCHANT_AUTH_H
#define GP_MERCHANT_AUTH_H

#include "common.h"

struct app;
struct route_guard;

#define MAUTH_SCHEME          "GP1-HMAC-SHA256"
#define MAUTH_RESPONSE_SCHEME "GP1-HMAC-SHA256-RESPONSE"
#define MAUTH_KEY_ID_LEN      19 /* "mk_" + 16 hex */
#define MAUTH_NONCE_MIN       16
#define MAUTH_NONCE_MAX       64
#define MAUTH_SECRET_MAX      128

/* --- pure helpers (no I/O; unit-tested) --- */

struct mauth_header {
    char key_id[MAUTH_KEY_ID_LEN + 1];
    int64_t ts;
    char nonce[MAUTH_NONCE_MAX + 1];
    unsigned char sig[32];
};

/* Parses an Authorization value. On failure returns false and sets *code to
 * "missing_signature" (another scheme) or "malformed_signature". */
bool mauth_parse_header(const char *value, struct mauth_header *out, const char **code) MUSTCHECK;
/* The same for another kind of key id (prefix, 3 characters: "xp_" for exchange partners,
 * exchange.h): the scheme is shared, the key id's prefix says whose key it is. */
bool mauth_parse_header_prefix(const char *value, const char *prefix, struct mauth_header *out,
                               const char **code) MUSTCHECK;
/* |now - ts| <= window_s, without overflow for any int64 input. */
bool mauth_ts_ok(int64_t now, int64_t ts, int window_s);
/* "mk_" followed by 16 lower-case hex digits. */
bool mauth_key_id_ok(const char *key_id);
/* The string to sign (malloc'd, NUL-terminated; *len without the NUL). */
char *mauth_string_to_sign(const char *key_id, const char *method, const char *uri, int64_t ts,
                           const char *nonce, const void *body, size_t body_len, size_t *len);
/* The response string (malloc'd; *len without the NUL). */
char *mauth_response_string(const char *key_id, const char *request_nonce, int status, int64_t ts,
                            const void *body, size_t body_len, size_t *len);
/* HMAC-SHA256(secret, data). */
void mauth_sign(const char *secret, size_t secret_len, const void *data, size_t len,
                unsigned char out[32]);
/* prefix (3 characters) followed by 16 lower-case hex digits. */
bool mauth_key_id_ok_prefix(const char *key_id, const char *prefix);
/* The Authorization value of a signed request (the client side: exchange.c). */
void mauth_authorization(const char *secret, size_t secret_len, const char *key_id,
                         const char *method, const char *uri, int64_t ts, const char *nonce,
                         const void *body, size_t body_len, char *out, size_t cap);
/* The GP-Signature value of a reply: "ts=<ts>,sig=<hex>" (cap >= 96). */
void mauth_reply_signature(const char *secret, size_t secret_len, const char *key_id,
                           const char *request_nonce, int status, int64_t ts, const void *body,
                           size_t body_len, char *out, size_t cap);
/* Checks a reply's GP-Signature header (NULL = missing) against the request's key and nonce,
 * its status and body, and its timestamp against the window. */
bool mauth_reply_verify(const char *secret, size_t secret_len, const char *key_id,
                        const char *request_nonce, int status, const char *header, int64_t now,
                        int window_s, const void *body, size_t body_len);
/* Constant-time comparison of two 32-byte signatures (CRYPTO_memcmp). */
bool mauth_sig_equal(const unsigned char a[32], const unsigned char b[32]);

/* --- the request path --- */

/* The route guard of the /merchant/v1 routes (router.h; routes.c names it). It verifies the
 * request's signature, nonce and rate limit, sets rc->principal.merchant_id and key_id and the
 * reply-signing hook, then lets the request through. Otherwise it replies itself (401, 400
 * missing_idempotency_key on a write without Idempotency-Key, 403 for a suspended merchant,
 * 429 with Retry-After, 503) and stops. */
extern const struct route_guard merchant_auth_guard;

/* Drops a key from the Redis key cache (after a revocation or suspension); fire-and-forget. */
void merchant_auth_forget_key(struct app *app, const char *key_id);

#endif
