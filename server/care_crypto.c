/* care_crypto.c -- sealing, lookup hashes and masks of the residents' personal data
 * (care_crypto.h). */
#include "care_crypto.h"
#include "config.h"
#include "crypto.h"
#include "merchant_crypto.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool care_keys_derive(const struct config *cfg, struct care_keys *k)
{
    unsigned char kek[32];
    if (!mcrypto_parse_kek(cfg->merchant_key_encryption_key, kek)) {
        mcrypto_wipe(kek, sizeof kek);
        return false;
    }
    static const char seal_info[] = "gridpoints/care/seal/v1";
    static const char lookup_info[] = "gridpoints/care/lookup/v1";
    crypto_hmac_sha256(kek, sizeof kek, seal_info, strlen(seal_info), k->seal);
    crypto_hmac_sha256(kek, sizeof kek, lookup_info, strlen(lookup_info), k->lookup);
    mcrypto_wipe(kek, sizeof kek);
    return true;
}

void care_keys_wipe(struct care_keys *k)
{
    mcrypto_wipe(k, sizeof *k);
}

static void aad_of(const char *field, char *aad, size_t cap)
{
    /* the field names are short constants; a truncated AAD would be a different key */
    int n = snprintf(aad, cap, "care:%s", field);
    ASSERT(n > 0 && (size_t)n < cap);
}

bool care_seal(const struct care_keys *k, const char *field, const char *value, char **out)
{
    size_t n = strlen(value);
    if (n > CARE_FIELD_MAX)
        return false;
    char aad[64];
    aad_of(field, aad, sizeof aad);
    return mcrypto_seal(k->seal, aad, value, n, out);
}

bool care_open(const struct care_keys *k, const char *field, const char *sealed, char *out,
               size_t cap)
{
    char aad[64];
    aad_of(field, aad, sizeof aad);
    return mcrypto_open(k->seal, aad, sealed, out, cap, NULL);
}

void care_lookup_hash(const struct care_keys *k, const char *field, const char *value, char hex[65])
{
    char norm[128];
    size_t n = 0;
    bool phone = strcmp(field, "phone") == 0;
    for (const char *p = value; *p && n + 1 < sizeof norm; p++) {
        char c = *p;
        if (phone ? (c < '0' || c > '9') : (c == ' ' || c == '-'))
            continue;
        norm[n++] = (c >= 'a' && c <= 'z') ? (char)(c - 'a' + 'A') : c;
    }
    norm[n] = '\0';
    char buf[192];
    int len = snprintf(buf, sizeof buf, "%s:%s", field, norm);
    unsigned char d[32];
    crypto_hmac_sha256(k->lookup, sizeof k->lookup, buf, (size_t)len, d);
    crypto_hex(d, sizeof d, hex);
    mcrypto_wipe(buf, sizeof buf);
    mcrypto_wipe(norm, sizeof norm);
}

/* Bytes of the UTF-8 sequence starting with c (1 for a stray continuation byte). */
static size_t u8len(unsigned char c)
{
    return c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
}

/* Copies the first `keep` code points of s to out; returns the bytes written. */
static size_t copy_points(const char *s, size_t keep, char *out, size_t cap)
{
    size_t i = 0, o = 0;
    for (size_t cp = 0; cp < keep && s[i]; cp++) {
        size_t l = u8len((unsigned char)s[i]);
        for (size_t j = 0; j < l && s[i]; j++) {
            if (o + 1 < cap)
                out[o++] = s[i];
            i++;
        }
    }
    out[o] = '\0';
    return o;
}

static size_t count_points(const char *s)
{
    size_t n = 0;
    for (size_t i = 0; s[i];) {
        i += u8len((unsigned char)s[i]);
        n++;
    }
    return n;
}

static void stars(char *out, size_t cap, size_t o, size_t n)
{
    for (size_t i = 0; i < n && o + 1 < cap; i++)
        out[o++] = '*';
    out[o < cap ? o : cap - 1] = '\0';
}

void care_mask(const char *field, const char *value, char *out, size_t cap)
{
    size_t n = count_points(value);
    if (cap == 0)
        return;
    if (!strcmp(field, "phone") && n >= 8) {
        size_t len = strlen(value); /* phones are ASCII (checked on the way in) */
        snprintf(out, cap, "%.3s****%s", value, value + len - 4);
        return;
    }
    size_t keep = !strcmp(field, "address") ? 6 : 1;
    if (keep >= n)
        keep = n > 1 ? n - 1 : 0;
    size_t o = copy_points(value, keep, out, cap);
    stars(out, cap, o, !strcmp(field, "name") && n > 1 ? n - 1 : 4);
}

static bool ends_with(const char *s, const char *suffix, size_t *prefix)
{
    size_t n = strlen(s), m = strlen(suffix);
    if (n <= m || strcmp(s + n - m, suffix) != 0)
        return false;
    *prefix = n - m;
    return true;
}

int care_open_json(const struct care_keys *k, json_t *j)
{
    int failed = 0;
    if (json_is_array(j)) {
        size_t i;
        json_t *v;
        json_array_foreach(j, i, v) failed += care_open_json(k, v);
        return failed;
    }
    if (!json_is_object(j))
        return 0;
    const char *key;
    json_t *v;
    void *tmp;
    json_t *add = json_object();
    json_object_foreach_safe(j, tmp, key, v)
    {
        size_t pre;
        bool masked = ends_with(key, "_sealed_masked", &pre);
        if (!masked && !ends_with(key, "_sealed", &pre)) {
            failed += care_open_json(k, v);
            continue;
        }
        char field[64];
        snprintf(field, sizeof field, "%.*s", (int)(pre < 63 ? pre : 63), key);
        char *plain = xmalloc(CARE_FIELD_MAX + 1);
        json_t *out = json_null();
        if (json_is_string(v) &&
            care_open(k, field, json_string_value(v), plain, CARE_FIELD_MAX + 1)) {
            if (masked) {
                char m[256];
                care_mask(field, plain, m, sizeof m);
                out = json_string(m);
            } else {
                out = json_string(plain);
            }
            if (!out)
                out = json_null();
        } else {
            failed++;
        }
        mcrypto_wipe(plain, CARE_FIELD_MAX + 1);
        free(plain);
        json_object_set_new(add, field, out);
        json_object_del(j, key);
    }
    json_object_update(j, add);
    json_decref(add);
    return failed;
}
