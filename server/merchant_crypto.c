/* merchant_crypto.c -- sealing of stored merchant secrets (AES-256-GCM), pay code tokens and
 * webhook signatures; see merchant_crypto.h for the formats and why. */
#include "merchant_crypto.h"
#include "config.h"
#include "crypto.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define IV_LEN      12
#define TAG_LEN     16
#define SEAL_PREFIX "v1."

/* AES-256-GCM fetched from the provider once (crypto.c says why: naming EVP_aes_256_gcm() in
 * EVP_*Init_ex fetches it again on every signed merchant request). Shared read-only, made on
 * first use, lives until the process exits. */
static pthread_once_t gcm_once = PTHREAD_ONCE_INIT;
static EVP_CIPHER *gcm;

static void fetch_gcm(void)
{
    gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
    ASSERT(gcm != NULL); /* the default provider always has it */
}

static const EVP_CIPHER *aes_gcm(void)
{
    pthread_once(&gcm_once, fetch_gcm);
    return gcm;
}

bool mcrypto_config_check(const struct config *cfg, char *why, size_t len)
{
    unsigned char kek[32];
    bool ok = mcrypto_parse_kek(cfg->merchant_key_encryption_key, kek);
    OPENSSL_cleanse(kek, sizeof kek);
    if (!ok) {
        snprintf(why, len,
                 "merchant.key_encryption_key must be 64 hex digits (set "
                 "GRIDPOINTS_MERCHANT_KEY_ENCRYPTION_KEY, e.g. from `openssl rand -hex 32`)");
        return false;
    }
    if (strlen(cfg->merchant_paycode_secret) < 32) {
        snprintf(why, len,
                 "merchant.paycode_secret must be at least 32 characters, the same on "
                 "every instance (set GRIDPOINTS_MERCHANT_PAYCODE_SECRET)");
        return false;
    }
    return true;
}

void mcrypto_wipe(void *p, size_t n)
{
    OPENSSL_cleanse(p, n);
}

static bool is_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f') ||
              (s[i] >= 'A' && s[i] <= 'F')))
            return false;
    return true;
}

bool mcrypto_parse_kek(const char *hex, unsigned char kek[32])
{
    return hex && strlen(hex) == MCRYPTO_KEK_HEX_LEN && crypto_unhex(hex, kek, 32);
}

bool mcrypto_seal(const unsigned char kek[32], const char *aad, const void *pt, size_t n,
                  char **out)
{
    if (n > 4096)
        return false;
    size_t raw_len = IV_LEN + n + TAG_LEN;
    unsigned char *raw = xmalloc(raw_len);
    bool ok = false;
    int len = 0;
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (!ctx || !crypto_random(raw, IV_LEN))
        goto done;
    if (EVP_EncryptInit_ex(ctx, aes_gcm(), NULL, kek, raw) != 1 ||
        EVP_EncryptUpdate(ctx, NULL, &len, (const unsigned char *)aad, (int)strlen(aad)) != 1 ||
        EVP_EncryptUpdate(ctx, raw + IV_LEN, &len, pt, (int)n) != 1 ||
        EVP_EncryptFinal_ex(ctx, raw + IV_LEN + len, &len) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, TAG_LEN, raw + IV_LEN + n) != 1)
        goto done;
    *out = xmalloc(strlen(SEAL_PREFIX) + 2 * raw_len + 1);
    strcpy(*out, SEAL_PREFIX);
    crypto_hex(raw, raw_len, *out + strlen(SEAL_PREFIX));
    ok = true;
done:
    EVP_CIPHER_CTX_free(ctx);
    mcrypto_wipe(raw, raw_len);
    free(raw);
    return ok;
}

bool mcrypto_open(const unsigned char kek[32], const char *aad, const char *sealed, char *out,
                  size_t cap, size_t *outlen)
{
    size_t plen = strlen(SEAL_PREFIX);
    if (!sealed || strncmp(sealed, SEAL_PREFIX, plen) != 0)
        return false;
    const char *hex = sealed + plen;
    size_t hlen = strlen(hex);
    if (hlen % 2 || hlen / 2 < IV_LEN + TAG_LEN || hlen / 2 - IV_LEN - TAG_LEN >= cap ||
        !is_hex(hex, hlen))
        return false;
    size_t raw_len = hlen / 2, n = raw_len - IV_LEN - TAG_LEN;
    unsigned char *raw = xmalloc(raw_len);
    bool ok = false;
    int len = 0;
    EVP_CIPHER_CTX *ctx = NULL;
    if (!crypto_unhex(hex, raw, raw_len))
        goto done;
    ctx = EVP_CIPHER_CTX_new();
    if (!ctx || EVP_DecryptInit_ex(ctx, aes_gcm(), NULL, kek, raw) != 1 ||
        EVP_DecryptUpdate(ctx, NULL, &len, (const unsigned char *)aad, (int)strlen(aad)) != 1 ||
        EVP_DecryptUpdate(ctx, (unsigned char *)out, &len, raw + IV_LEN, (int)n) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG_LEN, raw + IV_LEN + n) != 1 ||
        EVP_DecryptFinal_ex(ctx, (unsigned char *)out + len, &len) != 1) {
        mcrypto_wipe(out, cap);
        goto done;
    }
    out[n] = '\0';
    if (outlen)
        *outlen = n;
    ok = true;
done:
    EVP_CIPHER_CTX_free(ctx);
    mcrypto_wipe(raw, raw_len);
    free(raw);
    return ok;
}

/* The signed part of a pay code and its MAC (16 bytes, hex). */
static void paycode_mac(const char *secret, const char *signed_part, size_t n, char hex[33])
{
    unsigned char d[32];
    crypto_hmac_sha256(secret, strlen(secret), signed_part, n, d);
    crypto_hex(d, 16, hex);
    mcrypto_wipe(d, sizeof d);
}

bool mcrypto_paycode_make(const char *secret, const char *nonce, int64_t worker, int64_t exp,
                          char *out, size_t cap)
{
    if (strlen(nonce) != MCRYPTO_NONCE_HEX_LEN || !is_hex(nonce, MCRYPTO_NONCE_HEX_LEN) ||
        worker <= 0 || exp <= 0)
        return false;
    char part[MCRYPTO_PAYCODE_MAX], mac[33];
    int n =
        snprintf(part, sizeof part, "gpc1.%s.%lld.%lld", nonce, (long long)worker, (long long)exp);
    if (n < 0 || (size_t)n >= sizeof part)
        return false;
    paycode_mac(secret, part, (size_t)n, mac);
    int m = snprintf(out, cap, "%s.%s", part, mac);
    return m > 0 && (size_t)m < cap;
}

/* A decimal without sign or leading zeros, 1..18 digits. */
static bool parse_pos(const char *s, size_t n, int64_t *out)
{
    if (n == 0 || n > 18 || s[0] == '0')
        return false;
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

bool mcrypto_paycode_check(const char *secret, const char *code,
                           char nonce[MCRYPTO_NONCE_HEX_LEN + 1], int64_t *worker, int64_t *exp)
{
    size_t len = code ? strlen(code) : 0;
    if (len < 5 || len >= MCRYPTO_PAYCODE_MAX || strncmp(code, "gpc1.", 5) != 0)
        return false;
    const char *p = code + 5;
    const char *d1 = strchr(p, '.');
    if (!d1 || d1 - p != MCRYPTO_NONCE_HEX_LEN)
        return false;
    const char *d2 = strchr(d1 + 1, '.');
    const char *d3 = d2 ? strchr(d2 + 1, '.') : NULL;
    if (!d2 || !d3 || strchr(d3 + 1, '.'))
        return false;
    int64_t w, e;
    if (!parse_pos(d1 + 1, (size_t)(d2 - d1 - 1), &w) ||
        !parse_pos(d2 + 1, (size_t)(d3 - d2 - 1), &e))
        return false;
    for (const char *c = p; c < d1; c++)
        if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f')))
            return false;
    const char *given = d3 + 1;
    if (strlen(given) != 32 || !is_hex(given, 32))
        return false;
    char mac[33];
    paycode_mac(secret, code, (size_t)(d3 - code), mac);
    unsigned char a[16], b[16];
    if (!crypto_unhex(mac, a, 16) || !crypto_unhex(given, b, 16))
        return false;
    if (!crypto_equal(a, b, 16))
        return false;
    memcpy(nonce, p, MCRYPTO_NONCE_HEX_LEN);
    nonce[MCRYPTO_NONCE_HEX_LEN] = '\0';
    *worker = w;
    *exp = e;
    return true;
}

void mcrypto_webhook_signature(const char *secret, size_t secret_len, int64_t t, const void *body,
                               size_t len, char *out, size_t cap)
{
    char ts[24];
    int tn = snprintf(ts, sizeof ts, "%lld.", (long long)t);
    unsigned char *buf = xmalloc((size_t)tn + len + 1);
    memcpy(buf, ts, (size_t)tn);
    memcpy(buf + tn, body, len);
    unsigned char d[32];
    crypto_hmac_sha256(secret, secret_len, buf, (size_t)tn + len, d);
    free(buf);
    char hex[65];
    crypto_hex(d, 32, hex);
    snprintf(out, cap, "t=%lld,v1=%s", (long long)t, hex);
}
