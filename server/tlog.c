/* tlog.c -- C2SP signed notes and checkpoints with Ed25519 (see tlog.h). */
#include "tlog.h"
#include "crypto.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char EM_DASH[] = "\xe2\x80\x94"; /* U+2014 */

bool tlog_name_valid(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > TLOG_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c <= ' ' || c == '+' || c == 0x7f)
            return false;
    }
    return true;
}

void tlog_key_id(const char *name, const uint8_t pub[32], uint8_t out[4])
{
    size_t n = strlen(name);
    uint8_t buf[TLOG_NAME_MAX + 2 + 32];
    ASSERT(n <= TLOG_NAME_MAX);
    memcpy(buf, name, n);
    buf[n] = '\n';
    buf[n + 1] = 0x01; /* the signed-note algorithm byte of Ed25519 */
    memcpy(buf + n + 2, pub, 32);
    uint8_t h[32];
    SHA256(buf, n + 2 + 32, h);
    memcpy(out, h, 4);
}

bool tlog_vkey_format(const char *name, const uint8_t pub[32], char *out, size_t outlen)
{
    if (!tlog_name_valid(name))
        return false;
    uint8_t id[4], raw[33];
    tlog_key_id(name, pub, id);
    raw[0] = 0x01;
    memcpy(raw + 1, pub, 32);
    char b64[64], hex[9];
    crypto_b64_encode(raw, sizeof raw, b64);
    crypto_hex(id, sizeof id, hex);
    int n = snprintf(out, outlen, "%s+%s+%s", name, hex, b64);
    return n > 0 && (size_t)n < outlen;
}

bool tlog_vkey_parse(const char *s, struct tlog_vkey *out)
{
    const char *p1 = strchr(s, '+');
    if (!p1)
        return false;
    const char *p2 = strchr(p1 + 1, '+');
    if (!p2 || p2 - p1 - 1 != 8)
        return false;
    size_t nl = (size_t)(p1 - s);
    if (nl == 0 || nl > TLOG_NAME_MAX)
        return false;
    memcpy(out->name, s, nl);
    out->name[nl] = '\0';
    if (!tlog_name_valid(out->name))
        return false;
    uint8_t id[4];
    char hexid[9];
    memcpy(hexid, p1 + 1, 8); /* crypto_unhex takes a whole string */
    hexid[8] = '\0';
    if (!crypto_unhex(hexid, id, sizeof id))
        return false;
    const char *b = p2 + 1;
    size_t bl = strcspn(b, " \t\r\n");
    uint8_t raw[40];
    size_t rl;
    if (!crypto_b64_decode(b, bl, raw, sizeof raw, &rl) || rl != 33 || raw[0] != 0x01)
        return false;
    memcpy(out->pub, raw + 1, 32);
    tlog_key_id(out->name, out->pub, out->key_id);
    if (memcmp(out->key_id, id, 4) != 0)
        return false; /* the hex id does not belong to this key */
    out->valid_from = INT64_MIN;
    out->valid_until = INT64_MAX;
    return true;
}

bool tlog_ed25519_public(struct evp_pkey_st *key, uint8_t pub[32])
{
    size_t len = 32;
    return EVP_PKEY_get_raw_public_key(key, pub, &len) == 1 && len == 32;
}

size_t tlog_checkpoint_body(const char *origin, uint64_t size, const uint8_t root[32],
                            const char *time, char *out, size_t outlen)
{
    char b64[48];
    crypto_b64_encode(root, 32, b64);
    int n = snprintf(out, outlen, "%s\n%llu\n%s\ntime %s\n", origin, (unsigned long long)size, b64,
                     time);
    return n > 0 && (size_t)n < outlen ? (size_t)n : 0;
}

bool tlog_note_sign(struct evp_pkey_st *key, const char *name, const char *body, char *out,
                    size_t outlen)
{
    uint8_t pub[32], sig[4 + 64];
    if (!tlog_name_valid(name) || !tlog_ed25519_public(key, pub))
        return false;
    tlog_key_id(name, pub, sig);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    size_t siglen = 64;
    bool ok = md && EVP_DigestSignInit(md, NULL, NULL, NULL, key) == 1 &&
              EVP_DigestSign(md, sig + 4, &siglen, (const uint8_t *)body, strlen(body)) == 1 &&
              siglen == 64;
    EVP_MD_CTX_free(md);
    if (!ok)
        return false;
    char b64[128];
    crypto_b64_encode(sig, sizeof sig, b64);
    int n = snprintf(out, outlen, "%s\n%s %s %s\n", body, EM_DASH, name, b64);
    return n > 0 && (size_t)n < outlen;
}

const char *tlog_verdict_str(enum tlog_verdict v)
{
    switch (v) {
    case TLOG_OK:
        return "ok";
    case TLOG_MALFORMED:
        return "malformed checkpoint note";
    case TLOG_UNKNOWN_KEY:
        return "not signed by a trusted key";
    case TLOG_BAD_SIGNATURE:
        return "bad signature";
    case TLOG_KEY_NOT_VALID:
        return "signed by a key outside its validity";
    }
    return "?";
}

static bool ed25519_verify(const uint8_t pub[32], const uint8_t *msg, size_t len,
                           const uint8_t sig[64])
{
    EVP_PKEY *pk = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, pub, 32);
    if (!pk)
        return false;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    bool ok = md && EVP_DigestVerifyInit(md, NULL, NULL, NULL, pk) == 1 &&
              EVP_DigestVerify(md, sig, 64, msg, len) == 1;
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(pk);
    return ok;
}

bool tlog_parse_time(const char *s, int64_t *out)
{
    int y, mo, d, h, mi, sec, used = 0;
    if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &sec, &used) != 6 ||
        used != 19)
        return false;
    const char *p = s + used;
    if (*p == '.') {
        p++;
        if (*p < '0' || *p > '9')
            return false;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    if (strcmp(p, "Z") != 0 || mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 ||
        sec > 60)
        return false;
    struct tm tm = {.tm_year = y - 1900,
                    .tm_mon = mo - 1,
                    .tm_mday = d,
                    .tm_hour = h,
                    .tm_min = mi,
                    .tm_sec = sec};
    *out = (int64_t)timegm(&tm);
    return true;
}

/* Splits the body "origin\nsize\nroot\ntime T\n" into *out. */
static bool parse_body(const char *body, size_t len, struct tlog_checkpoint *out)
{
    const char *lines[5];
    size_t lens[5];
    int n = 0;
    const char *p = body, *end = body + len;
    while (p < end && n < 5) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl)
            return false;
        lines[n] = p;
        lens[n] = (size_t)(nl - p);
        n++;
        p = nl + 1;
    }
    if (n != 4 || p != end)
        return false;
    if (lens[0] == 0 || lens[0] > TLOG_NAME_MAX)
        return false;
    memcpy(out->origin, lines[0], lens[0]);
    out->origin[lens[0]] = '\0';
    if (lens[1] == 0 || lens[1] > 19 || (lens[1] > 1 && lines[1][0] == '0'))
        return false;
    uint64_t size = 0;
    for (size_t i = 0; i < lens[1]; i++) {
        if (lines[1][i] < '0' || lines[1][i] > '9')
            return false;
        size = size * 10 + (uint64_t)(lines[1][i] - '0');
    }
    out->size = size;
    size_t rl;
    if (!crypto_b64_decode(lines[2], lens[2], out->root, 32, &rl) || rl != 32)
        return false;
    if (lens[3] < 6 || lens[3] - 5 >= sizeof out->time || memcmp(lines[3], "time ", 5) != 0)
        return false;
    memcpy(out->time, lines[3] + 5, lens[3] - 5);
    out->time[lens[3] - 5] = '\0';
    return tlog_parse_time(out->time, &out->time_s);
}

enum tlog_verdict tlog_note_verify(const char *note, size_t len, const struct tlog_vkey *keys,
                                   int nkeys, struct tlog_checkpoint *out, int *which)
{
    /* body = everything up to and including the first "\n\n"'s first newline */
    const char *sep = NULL;
    for (size_t i = 0; i + 1 < len; i++)
        if (note[i] == '\n' && note[i + 1] == '\n') {
            sep = note + i;
            break;
        }
    if (!sep || len > TLOG_NOTE_MAX * 8 || note[len - 1] != '\n')
        return TLOG_MALFORMED;
    size_t body_len = (size_t)(sep - note) + 1;
    if (!parse_body(note, body_len, out))
        return TLOG_MALFORMED;
    enum tlog_verdict best = TLOG_UNKNOWN_KEY;
    const char *p = sep + 2, *end = note + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t ll = (size_t)(nl - p);
        /* "— name base64" */
        if (ll < 5 || memcmp(p, EM_DASH, 3) != 0 || p[3] != ' ')
            return TLOG_MALFORMED;
        const char *name = p + 4;
        const char *sp = memchr(name, ' ', (size_t)(nl - name));
        if (!sp)
            return TLOG_MALFORMED;
        size_t nlen = (size_t)(sp - name);
        uint8_t sig[4 + 64 + 8];
        size_t sl;
        if (!crypto_b64_decode(sp + 1, (size_t)(nl - sp - 1), sig, sizeof sig, &sl) || sl < 4)
            return TLOG_MALFORMED;
        for (int k = 0; k < nkeys; k++) {
            if (strlen(keys[k].name) != nlen || memcmp(keys[k].name, name, nlen) != 0 ||
                memcmp(keys[k].key_id, sig, 4) != 0)
                continue;
            if (sl != 68 ||
                !ed25519_verify(keys[k].pub, (const uint8_t *)note, body_len, sig + 4)) {
                best = TLOG_BAD_SIGNATURE;
                continue;
            }
            if (out->time_s < keys[k].valid_from || out->time_s >= keys[k].valid_until) {
                if (best != TLOG_BAD_SIGNATURE)
                    best = TLOG_KEY_NOT_VALID;
                continue;
            }
            if (which)
                *which = k;
            return TLOG_OK;
        }
        p = nl + 1;
    }
    return best;
}
