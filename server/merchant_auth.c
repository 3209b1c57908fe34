/* merchant_auth.c -- verifying signed merchant requests and signing their replies (the scheme
 * is in merchant_auth.h; docs/MERCHANTS.md has a worked example).
 *
 * The checks run cheapest first and in an order that leaks nothing: the header's shape, the
 * timestamp window, the key (Redis cache of the sealed secret, then PostgreSQL), the
 * signature (CRYPTO_memcmp), and only then the nonce, so that unsigned junk cannot burn
 * nonces or fill Redis. Each is one step of a small state machine driven by the kv and db
 * callbacks; every path ends in exactly one reply or in next(rc). */
#include "merchant_auth.h"
#include "app.h"
#include "arena.h"
#include "config.h"
#include "crypto.h"
#include "db.h"
#include "http.h"
#include "kv.h"
#include "log.h"
#include "merchant_crypto.h"
#include "ratelimit.h"
#include "router.h"

#include <event2/http.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------- */
/* Pure helpers                                                                              */
/* ---------------------------------------------------------------------------------------- */

static bool nonce_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_';
}

bool mauth_key_id_ok(const char *key_id)
{
    return mauth_key_id_ok_prefix(key_id, "mk_");
}

bool mauth_key_id_ok_prefix(const char *key_id, const char *prefix)
{
    if (!key_id || strlen(key_id) != MAUTH_KEY_ID_LEN || strlen(prefix) != 3 ||
        strncmp(key_id, prefix, 3) != 0)
        return false;
    for (const char *p = key_id + 3; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return false;
    return true;
}

/* One "name=value" item of the header; value ends at ',' or the end. */
static bool take_item(const char **p, const char *name, const char **val, size_t *vlen)
{
    size_t n = strlen(name);
    if (strncmp(*p, name, n) != 0 || (*p)[n] != '=')
        return false;
    *val = *p + n + 1;
    const char *end = strchr(*val, ',');
    *vlen = end ? (size_t)(end - *val) : strlen(*val);
    *p = end ? end + 1 : *val + *vlen;
    return true;
}

bool mauth_parse_header(const char *value, struct mauth_header *out, const char **code)
{
    return mauth_parse_header_prefix(value, "mk_", out, code);
}

bool mauth_parse_header_prefix(const char *value, const char *prefix, struct mauth_header *out,
                               const char **code)
{
    size_t slen = strlen(MAUTH_SCHEME);
    memset(out, 0, sizeof *out);
    *code = "missing_signature";
    if (!value || strncmp(value, MAUTH_SCHEME, slen) != 0 || value[slen] != ' ')
        return false;
    *code = "malformed_signature";
    const char *p = value + slen + 1;
    const char *v;
    size_t n;
    /* Fixed order, no spaces, no repeats: one canonical form to parse. */
    if (!take_item(&p, "key", &v, &n) || n != MAUTH_KEY_ID_LEN)
        return false;
    memcpy(out->key_id, v, n);
    out->key_id[n] = '\0';
    if (!mauth_key_id_ok_prefix(out->key_id, prefix))
        return false;
    if (!take_item(&p, "ts", &v, &n) || n == 0 || n > 12)
        return false;
    int64_t ts = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9' || (i == 0 && v[i] == '0' && n > 1))
            return false;
        ts = ts * 10 + (v[i] - '0');
    }
    out->ts = ts;
    if (!take_item(&p, "nonce", &v, &n) || n < MAUTH_NONCE_MIN || n > MAUTH_NONCE_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!nonce_char(v[i]))
            return false;
    memcpy(out->nonce, v, n);
    out->nonce[n] = '\0';
    if (!take_item(&p, "sig", &v, &n) || n != 64 || *p != '\0')
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((v[i] >= '0' && v[i] <= '9') || (v[i] >= 'a' && v[i] <= 'f')))
            return false;
    char hex[65];
    memcpy(hex, v, 64);
    hex[64] = '\0';
    return crypto_unhex(hex, out->sig, 32);
}

bool mauth_ts_ok(int64_t now, int64_t ts, int window_s)
{
    int64_t d;
    if (window_s < 0 || __builtin_sub_overflow(now, ts, &d) || d == INT64_MIN)
        return false;
    return (d < 0 ? -d : d) <= window_s;
}

static void hex_sha256(const void *data, size_t len, char out[65])
{
    unsigned char d[32];
    crypto_sha256(data, len, d);
    crypto_hex(d, 32, out);
}

char *mauth_string_to_sign(const char *key_id, const char *method, const char *uri, int64_t ts,
                           const char *nonce, const void *body, size_t body_len, size_t *len)
{
    char bh[65];
    hex_sha256(body ? body : "", body ? body_len : 0, bh);
    size_t cap = strlen(MAUTH_SCHEME) + strlen(key_id) + strlen(method) + strlen(uri) +
                 strlen(nonce) + 24 + 64 + 8;
    char *s = xmalloc(cap);
    int n = snprintf(s, cap, "%s\n%s\n%s\n%s\n%lld\n%s\n%s\n", MAUTH_SCHEME, key_id, method, uri,
                     (long long)ts, nonce, bh);
    ASSERT(n > 0 && (size_t)n < cap);
    *len = (size_t)n;
    return s;
}

char *mauth_response_string(const char *key_id, const char *request_nonce, int status, int64_t ts,
                            const void *body, size_t body_len, size_t *len)
{
    char bh[65];
    hex_sha256(body ? body : "", body ? body_len : 0, bh);
    size_t cap =
        strlen(MAUTH_RESPONSE_SCHEME) + strlen(key_id) + strlen(request_nonce) + 24 + 24 + 64 + 8;
    char *s = xmalloc(cap);
    int n = snprintf(s, cap, "%s\n%s\n%s\n%d\n%lld\n%s\n", MAUTH_RESPONSE_SCHEME, key_id,
                     request_nonce, status, (long long)ts, bh);
    ASSERT(n > 0 && (size_t)n < cap);
    *len = (size_t)n;
    return s;
}

void mauth_sign(const char *secret, size_t secret_len, const void *data, size_t len,
                unsigned char out[32])
{
    crypto_hmac_sha256(secret, secret_len, data, len, out);
}

bool mauth_sig_equal(const unsigned char a[32], const unsigned char b[32])
{
    return crypto_equal(a, b, 32); /* CRYPTO_memcmp: time independent of where they differ */
}

void mauth_authorization(const char *secret, size_t secret_len, const char *key_id,
                         const char *method, const char *uri, int64_t ts, const char *nonce,
                         const void *body, size_t body_len, char *out, size_t cap)
{
    size_t n;
    char *s = mauth_string_to_sign(key_id, method, uri, ts, nonce, body, body_len, &n);
    unsigned char sig[32];
    mauth_sign(secret, secret_len, s, n, sig);
    free(s);
    char hex[65];
    crypto_hex(sig, 32, hex);
    snprintf(out, cap, "%s key=%s,ts=%lld,nonce=%s,sig=%s", MAUTH_SCHEME, key_id, (long long)ts,
             nonce, hex);
}

void mauth_reply_signature(const char *secret, size_t secret_len, const char *key_id,
                           const char *request_nonce, int status, int64_t ts, const void *body,
                           size_t body_len, char *out, size_t cap)
{
    size_t n;
    char *s = mauth_response_string(key_id, request_nonce, status, ts, body, body_len, &n);
    unsigned char sig[32];
    mauth_sign(secret, secret_len, s, n, sig);
    free(s);
    char hex[65];
    crypto_hex(sig, 32, hex);
    snprintf(out, cap, "ts=%lld,sig=%s", (long long)ts, hex);
}

bool mauth_reply_verify(const char *secret, size_t secret_len, const char *key_id,
                        const char *request_nonce, int status, const char *header, int64_t now,
                        int window_s, const void *body, size_t body_len)
{
    if (!header || strncmp(header, "ts=", 3) != 0)
        return false;
    char *end;
    long long ts = strtoll(header + 3, &end, 10);
    if (end == header + 3 || strncmp(end, ",sig=", 5) != 0 || strlen(end + 5) != 64)
        return false;
    unsigned char got[32];
    if (!crypto_unhex(end + 5, got, 32) || !mauth_ts_ok(now, ts, window_s))
        return false;
    char want[96];
    mauth_reply_signature(secret, secret_len, key_id, request_nonce, status, ts, body, body_len,
                          want, sizeof want);
    unsigned char w[32];
    bool ok = crypto_unhex(strchr(want, ',') + 5, w, 32) && mauth_sig_equal(w, got);
    return ok;
}

/* ---------------------------------------------------------------------------------------- */
/* The request path                                                                          */
/* ---------------------------------------------------------------------------------------- */

/* The guard's own per-request state (rc->guard_state, arena): rc->state is the handler's. */
struct mauth_state {
    route_handler next;
    struct mauth_header h;
    char cache_key[40];            /* mkey:{<key id>} */
    char secret[MAUTH_SECRET_MAX]; /* the opened secret; wiped with the arena */
    size_t secret_len;
    bool write; /* not GET/HEAD: fail closed without the nonce store */
};

static void wipe_state(void *p)
{
    struct mauth_state *ms = p;
    mcrypto_wipe(ms->secret, sizeof ms->secret);
}

static void reply_401(struct req_ctx *rc, const char *code, const char *message)
{
    http_reply_error(rc, ST_UNAUTHORIZED, code, "Authorization", "%s", message);
}

static int64_t now_s(void)
{
    return common_wall_ms() / 1000;
}

/* The reply hook (http.c calls it with the final status and body): adds GP-Signature. */
static void sign_reply(struct req_ctx *rc, int code, const char *body, size_t len)
{
    struct mauth_state *ms = rc->reply_hook_arg;
    char value[96];
    mauth_reply_signature(ms->secret, ms->secret_len, ms->h.key_id, ms->h.nonce, code, now_s(),
                          body, len, value, sizeof value);
    http_set_header(rc, "GP-Signature", value);
}

static void rate_cb(enum status st, int retry_after_s, int remaining, void *arg)
{
    struct req_ctx *rc = arg;
    struct mauth_state *ms = rc->guard_state;
    if (st == ST_RATE_LIMITED) {
        http_reply_error_retry(rc, ST_RATE_LIMITED, "rate_limited", retry_after_s,
                               "too many requests from this merchant; slow down");
        return;
    }
    ms->next(rc);
}

static void admitted(struct req_ctx *rc)
{
    struct mauth_state *ms = rc->guard_state;
    const struct config *cfg = rc->app->cfg;
    if (ms->write && !rc->idem_key) {
        http_reply_error(rc, ST_INVALID, "missing_idempotency_key", "Idempotency-Key",
                         "merchant writes need an Idempotency-Key header");
        return;
    }
    /* Fail open: the nonce store already failed closed for writes, and PostgreSQL bounds
     * everything else. */
    const char *key =
        arena_printf(rc->arena, "rl:merchant:{%lld}", (long long)rc->principal.merchant_id);
    ratelimit_hit(rc->app->rl, key, cfg->merchant_rate_limit, cfg->merchant_rate_window_s,
                  RATELIMIT_FAIL_OPEN, rate_cb, rc);
}

/* SET NX answered: "OK" = first use, nil = seen before. */
static void nonce_cb(struct redisReply *reply, enum status st, void *arg)
{
    struct req_ctx *rc = arg;
    struct mauth_state *ms = rc->guard_state;
    if (st == ST_OK && reply && reply->type == REDIS_REPLY_NIL) {
        reply_401(rc, "nonce_reused", "this nonce was used before: sign every request anew");
        return;
    }
    if (st != ST_OK || !reply || reply->type != REDIS_REPLY_STATUS) {
        if (ms->write) {
            http_reply_error_retry(rc, ST_UNAVAILABLE, "nonce_store_unavailable", 1,
                                   "replay protection is unavailable; retry shortly");
            return;
        }
        rlog_warn(rc, "nonce store unavailable: read allowed without replay check");
    }
    admitted(rc);
}

/* The key is known: open its secret and check the signature. `refusal` is NULL for a usable
 * key, else the key's status ("revoked", "expired", "suspended"), which is said only to a
 * caller whose signature is right: whoever merely knows a key id learns nothing about its
 * merchant (a wrong signature answers bad_signature whatever the key's state). */
static void got_key(struct req_ctx *rc, int64_t merchant_id, const char *sealed,
                    const char *refusal)
{
    struct mauth_state *ms = rc->guard_state;
    const struct config *cfg = rc->app->cfg;
    unsigned char kek[32];
    if (!mcrypto_parse_kek(cfg->merchant_key_encryption_key, kek) ||
        !mcrypto_open(kek, ms->h.key_id, sealed, ms->secret, sizeof ms->secret, &ms->secret_len)) {
        mcrypto_wipe(kek, sizeof kek);
        rlog_error(rc, "cannot open the secret of merchant key %s (wrong key_encryption_key?)",
                   ms->h.key_id);
        http_reply_error(rc, ST_INTERNAL, NULL, NULL, "cannot verify the signature");
        return;
    }
    mcrypto_wipe(kek, sizeof kek);
    size_t n;
    char *sts = mauth_string_to_sign(ms->h.key_id, rc->method, evhttp_request_get_uri(rc->req),
                                     ms->h.ts, ms->h.nonce, rc->body, rc->body_len, &n);
    unsigned char want[32];
    mauth_sign(ms->secret, ms->secret_len, sts, n, want);
    free(sts);
    bool ok = mauth_sig_equal(want, ms->h.sig);
    mcrypto_wipe(want, sizeof want);
    if (!ok) {
        reply_401(rc, "bad_signature", "the signature does not match the request");
        return;
    }
    if (refusal) {
        if (!strcmp(refusal, "suspended"))
            http_reply_error(rc, ST_FORBIDDEN, "merchant_suspended", NULL,
                             "this merchant is suspended");
        else if (!strcmp(refusal, "expired"))
            reply_401(rc, "key_expired", "this merchant key has expired");
        else
            reply_401(rc, "key_revoked", "this merchant key has been revoked");
        return;
    }
    /* From here on the caller has proven it holds the secret: replies are signed. */
    rc->principal.merchant_id = merchant_id;
    snprintf(rc->principal.key_id, sizeof rc->principal.key_id, "%s", ms->h.key_id);
    rc->reply_hook = sign_reply;
    rc->reply_hook_arg = ms;
    char ttl[16];
    snprintf(ttl, sizeof ttl, "%d", cfg->merchant_nonce_ttl_s);
    const char *key = arena_printf(rc->arena, "mnonce:{%s}:%s", ms->h.key_id, ms->h.nonce);
    const char *argv[] = {"SET", key, "1", "NX", "EX", ttl};
    kv_command(rc->app->kv, nonce_cb, rc, 6, argv, NULL);
}

static void key_db_cb(struct db_result *res, void *arg)
{
    struct req_ctx *rc = arg;
    struct mauth_state *ms = rc->guard_state;
    if (db_result_status(res) != ST_OK) {
        http_reply_db(rc, res, 200);
        return;
    }
    const char *v = db_result_ntuples(res) ? db_result_value(res, 0, 0) : NULL;
    if (!v) {
        reply_401(rc, "unknown_key", "unknown merchant key");
        return;
    }
    json_t *j = json_loads(v, 0, NULL);
    const char *status = json_string_value(json_object_get(j, "status"));
    const char *sealed = json_string_value(json_object_get(j, "secret_ct"));
    json_t *mid = json_object_get(j, "merchant_id");
    if (!status || !sealed || !json_is_integer(mid)) {
        json_decref(j);
        http_reply_error(rc, ST_INTERNAL, NULL, NULL, "cannot read the merchant key");
        return;
    }
    if (strcmp(status, "active") != 0) {
        /* Not cached: a usable key's cache entry is the only kind there is. */
        const char *refusal = !strcmp(status, "suspended") ? "suspended"
                              : !strcmp(status, "expired") ? "expired"
                                                           : "revoked";
        char *sealed_copy = arena_strdup(rc->arena, sealed);
        int64_t merchant_id = json_integer_value(mid);
        json_decref(j);
        got_key(rc, merchant_id, sealed_copy, refusal);
        return;
    }
    /* Cache the sealed secret (never the secret) for a short while, and never beyond the
     * key's own end. */
    int ttl = rc->app->cfg->merchant_key_cache_ttl_s;
    json_t *jt = json_object_get(j, "ttl");
    if (json_is_integer(jt) && json_integer_value(jt) < ttl)
        ttl = (int)json_integer_value(jt);
    if (ttl > 0) {
        json_t *c =
            json_pack("{s:I, s:s}", "merchant_id", json_integer_value(mid), "secret_ct", sealed);
        char *text = json_dumps(c, JSON_COMPACT);
        char ttls[16];
        snprintf(ttls, sizeof ttls, "%d", ttl);
        const char *argv[] = {"SET", ms->cache_key, text, "EX", ttls};
        kv_command(rc->app->kv, NULL, NULL, 5, argv, NULL);
        free(text);
        json_decref(c);
    }
    char *sealed_copy = arena_strdup(rc->arena, sealed);
    int64_t merchant_id = json_integer_value(mid);
    json_decref(j);
    got_key(rc, merchant_id, sealed_copy, NULL);
}

static void key_from_db(struct req_ctx *rc)
{
    struct mauth_state *ms = rc->guard_state;
    const char *params[] = {ms->h.key_id};
    db_query(rc->app->db, "SELECT gp_merchant_key_lookup($1)", 1, params, key_db_cb, rc);
}

/* The reply is owned by hiredis: what we need is copied into the arena here. */
static void key_cache_cb(struct redisReply *reply, enum status st, void *arg)
{
    struct req_ctx *rc = arg;
    if (st == ST_OK && reply && reply->type == REDIS_REPLY_STRING) {
        json_t *j = json_loadb(reply->str, reply->len, 0, NULL);
        json_t *mid = json_object_get(j, "merchant_id");
        const char *sealed = json_string_value(json_object_get(j, "secret_ct"));
        if (json_is_integer(mid) && sealed) {
            int64_t merchant_id = json_integer_value(mid);
            char *copy = arena_strdup(rc->arena, sealed);
            json_decref(j);
            got_key(rc, merchant_id, copy, NULL);
            return;
        }
        json_decref(j);
    }
    key_from_db(rc); /* a miss, or Redis down: PostgreSQL is the truth */
}

/* Verifies the request's signature, nonce and rate limit, sets rc->principal.merchant_id and
 * key_id and the reply-signing hook, then calls next(rc); otherwise replies itself. */
static void merchant_check(struct req_ctx *rc, route_handler next)
{
    const struct config *cfg = rc->app->cfg;
    struct mauth_state *ms = arena_alloc(rc->arena, sizeof *ms);
    arena_on_free(rc->arena, wipe_state, ms);
    ms->next = next;
    ms->write = strcmp(rc->method, "GET") != 0 && strcmp(rc->method, "HEAD") != 0;
    const char *code;
    if (!mauth_parse_header(http_header(rc, "Authorization"), &ms->h, &code)) {
        reply_401(rc, code,
                  !strcmp(code, "missing_signature")
                      ? "this route needs Authorization: " MAUTH_SCHEME
                        " key=...,ts=...,nonce=...,sig=..."
                      : "malformed " MAUTH_SCHEME " authorization header");
        return;
    }
    if (!mauth_ts_ok(now_s(), ms->h.ts, cfg->merchant_signature_window_s)) {
        reply_401(rc, "timestamp_out_of_window",
                  "the request timestamp is too far from the server's clock");
        return;
    }
    snprintf(ms->cache_key, sizeof ms->cache_key, "mkey:{%s}", ms->h.key_id);
    rc->guard_state = ms;
    const char *argv[] = {"GET", ms->cache_key};
    kv_command(rc->app->kv, key_cache_cb, rc, 2, argv, NULL);
}

const struct route_guard merchant_auth_guard = {"merchant signature", merchant_check, false};

void merchant_auth_forget_key(struct app *app, const char *key_id)
{
    char key[40];
    snprintf(key, sizeof key, "mkey:{%s}", key_id);
    const char *argv[] = {"DEL", key};
    kv_command(app->kv, NULL, NULL, 2, argv, NULL);
}
