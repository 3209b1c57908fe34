/* api_exchange.c -- the routes of the points exchange (api_exchange.h; docs/EXCHANGE.md). */
#include "api_exchange.h"
#include "api.h"
#include "app.h"
#include "arena.h"
#include "config.h"
#include "crypto.h"
#include "db.h"
#include "exchange.h"
#include "http.h"
#include "kv.h"
#include "log.h"
#include "merchant_auth.h"
#include "merchant_crypto.h"
#include "router.h"

#include <ctype.h>
#include <event2/http.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define XP_PREFIX "xp_"

/* ---------------------------------------------------------------------------------------- */
/* The partner signature guard                                                               */
/* ---------------------------------------------------------------------------------------- */

struct xg_state {
    route_handler next;
    struct mauth_header h;
    char secret[MAUTH_SECRET_MAX];
    size_t secret_len;
    int64_t partner_id;
    bool write;
};

static void xg_wipe(void *p)
{
    struct xg_state *g = p;
    mcrypto_wipe(g->secret, sizeof g->secret);
}

static int64_t now_s(void)
{
    return common_wall_ms() / 1000;
}

static void xg_401(struct req_ctx *rc, const char *code, const char *message)
{
    http_reply_error(rc, ST_UNAUTHORIZED, code, "Authorization", "%s", message);
}

static void xg_sign_reply(struct req_ctx *rc, int code, const char *body, size_t len)
{
    struct xg_state *g = rc->reply_hook_arg;
    char value[96];
    mauth_reply_signature(g->secret, g->secret_len, g->h.key_id, g->h.nonce, code, now_s(), body,
                          len, value, sizeof value);
    http_set_header(rc, "GP-Signature", value);
}

static void xg_nonce_cb(struct redisReply *reply, enum status st, void *arg)
{
    struct req_ctx *rc = arg;
    struct xg_state *g = rc->guard_state;
    if (st == ST_OK && reply && reply->type == REDIS_REPLY_NIL) {
        xg_401(rc, "nonce_reused", "this nonce was used before: sign every request anew");
        return;
    }
    if (st != ST_OK || !reply || reply->type != REDIS_REPLY_STATUS) {
        if (g->write) {
            http_reply_error_retry(rc, ST_UNAVAILABLE, "nonce_store_unavailable", 1,
                                   "replay protection is unavailable; retry shortly");
            return;
        }
        rlog_warn(rc, "nonce store unavailable: read allowed without replay check");
    }
    g->next(rc);
}

static void xg_key_cb(struct db_result *res, void *arg)
{
    struct req_ctx *rc = arg;
    struct xg_state *g = rc->guard_state;
    const struct config *cfg = rc->app->cfg;
    if (db_result_status(res) != ST_OK) {
        http_reply_db(rc, res, 200);
        return;
    }
    json_t *j = db_result_json(res);
    const char *sealed = json_string_value(json_object_get(j, "secret_ct"));
    json_t *pid = json_object_get(j, "partner_id");
    if (!sealed || !json_is_integer(pid)) {
        json_decref(j);
        xg_401(rc, "unknown_key", "unknown partner key");
        return;
    }
    g->partner_id = json_integer_value(pid);
    unsigned char kek[32];
    bool opened =
        mcrypto_parse_kek(cfg->merchant_key_encryption_key, kek) &&
        mcrypto_open(kek, g->h.key_id, sealed, g->secret, sizeof g->secret, &g->secret_len);
    mcrypto_wipe(kek, sizeof kek);
    json_decref(j);
    if (!opened) {
        rlog_error(rc, "cannot open the secret of partner key %s (wrong key_encryption_key?)",
                   g->h.key_id);
        http_reply_error(rc, ST_INTERNAL, NULL, NULL, "cannot verify the signature");
        return;
    }
    size_t n;
    char *sts = mauth_string_to_sign(g->h.key_id, rc->method, evhttp_request_get_uri(rc->req),
                                     g->h.ts, g->h.nonce, rc->body, rc->body_len, &n);
    unsigned char want[32];
    mauth_sign(g->secret, g->secret_len, sts, n, want);
    free(sts);
    bool ok = mauth_sig_equal(want, g->h.sig);
    mcrypto_wipe(want, sizeof want);
    if (!ok) {
        xg_401(rc, "bad_signature", "the signature does not match the request");
        return;
    }
    rc->reply_hook = xg_sign_reply;
    rc->reply_hook_arg = g;
    char ttl[16];
    snprintf(ttl, sizeof ttl, "%d", cfg->exchange_nonce_ttl_s);
    const char *key = arena_printf(rc->arena, "xnonce:{%s}:%s", g->h.key_id, g->h.nonce);
    const char *argv[] = {"SET", key, "1", "NX", "EX", ttl};
    kv_command(rc->app->kv, xg_nonce_cb, rc, 6, argv, NULL);
}

/* The exchange is off on this server (exchange.enabled = false): its routes answer 404. */
static bool exchange_on_or_reply(struct req_ctx *rc)
{
    if (rc->app->exchange)
        return true;
    http_reply_error(rc, ST_NOT_FOUND, "exchange_disabled", NULL,
                     "the points exchange is not enabled on this server");
    return false;
}

static void partner_check(struct req_ctx *rc, route_handler next)
{
    if (!exchange_on_or_reply(rc))
        return;
    struct xg_state *g = arena_alloc(rc->arena, sizeof *g);
    memset(g, 0, sizeof *g);
    arena_on_free(rc->arena, xg_wipe, g);
    g->next = next;
    g->write = strcmp(rc->method, "GET") != 0 && strcmp(rc->method, "HEAD") != 0;
    const char *code;
    if (!mauth_parse_header_prefix(http_header(rc, "Authorization"), XP_PREFIX, &g->h, &code)) {
        xg_401(rc, code,
               !strcmp(code, "missing_signature") ? "this route needs Authorization: " MAUTH_SCHEME
                                                    " key=xp_...,ts=...,nonce=...,sig=..."
                                                  : "malformed " MAUTH_SCHEME
                                                    " authorization header");
        return;
    }
    if (!mauth_ts_ok(now_s(), g->h.ts, rc->app->cfg->exchange_signature_window_s)) {
        xg_401(rc, "timestamp_out_of_window",
               "the request timestamp is too far from the server's clock");
        return;
    }
    rc->guard_state = g;
    const char *params[] = {g->h.key_id};
    db_query(rc->app->db, "SELECT gp_xchg_partner_by_key($1)", 1, params, xg_key_cb, rc);
}

const struct route_guard exchange_partner_guard = {"partner signature", partner_check, false};

static const char *partner_param(struct req_ctx *rc)
{
    struct xg_state *g = rc->guard_state;
    return api_i64(rc, g->partner_id);
}

/* ---------------------------------------------------------------------------------------- */
/* Partner-facing routes                                                                     */
/* ---------------------------------------------------------------------------------------- */

void api_xp_transfer_in(struct req_ctx *rc)
{
    const char *params[] = {partner_param(rc), api_json_text(rc, rc->json)};
    api_write(rc, "SELECT body, effects FROM gp_xchg_transfer_in($1, $2::jsonb, false)", 2, params,
              200);
}

void api_xp_transfer_status(struct req_ctx *rc)
{
    const char *tid = json_string_value(json_object_get(rc->json, "transfer_id"));
    if (!tid || strcmp(tid, rc->params.values[0]) != 0) {
        http_reply_error(rc, ST_INVALID, "invalid_field", "transfer_id",
                         "the body must be the transfer whose status is asked");
        return;
    }
    const char *params[] = {partner_param(rc), api_json_text(rc, rc->json)};
    api_write(rc, "SELECT body, effects FROM gp_xchg_transfer_in($1, $2::jsonb, true)", 2, params,
              200);
}

/* The hex SHA-256 of a link code, upper-cased first (codes are shown in capitals). */
static const char *code_hash(struct req_ctx *rc, const char *code)
{
    char up[64];
    size_t n = strlen(code);
    for (size_t i = 0; i < n && i < sizeof up - 1; i++)
        up[i] = (char)toupper((unsigned char)code[i]);
    up[n < sizeof up - 1 ? n : sizeof up - 1] = '\0';
    unsigned char d[32];
    crypto_sha256(up, strlen(up), d);
    char *hex = arena_alloc(rc->arena, 65);
    crypto_hex(d, 32, hex);
    return hex;
}

void api_xp_link_confirm(struct req_ctx *rc)
{
    static const char *const fields[] = {"code", "account", NULL};
    struct jv_err e = {0};
    const char *code, *account;
    if (!http_body_only_or_reply(rc, fields))
        return;
    if (!jv_str(rc->json, "code", true, 4, 32, &code, &e) ||
        !jv_str(rc->json, "account", true, 1, 64, &account, &e)) {
        http_reply_jv(rc, &e);
        return;
    }
    const char *params[] = {partner_param(rc), code_hash(rc, code), account};
    api_query(rc, "SELECT gp_xchg_link_confirm($1, $2, $3)", 3, params, 200);
}

/* YYYY-MM-DD of a real day. */
static bool day_ok(const char *s)
{
    if (!s || strlen(s) != 10 || s[4] != '-' || s[7] != '-')
        return false;
    for (int i = 0; i < 10; i++)
        if (i != 4 && i != 7 && !isdigit((unsigned char)s[i]))
            return false;
    struct tm tm = {0};
    tm.tm_year = atoi(s) - 1900;
    tm.tm_mon = atoi(s + 5) - 1;
    tm.tm_mday = atoi(s + 8);
    if (tm.tm_year < 70 || tm.tm_year > 1100 || tm.tm_mon < 0 || tm.tm_mon > 11 || tm.tm_mday < 1 ||
        tm.tm_mday > 31)
        return false;
    int mon = tm.tm_mon, mday = tm.tm_mday;
    time_t t = timegm(&tm);
    struct tm back;
    gmtime_r(&t, &back);
    return back.tm_mon == mon && back.tm_mday == mday;
}

void api_xp_statement(struct req_ctx *rc)
{
    const char *day = rc->params.values[0];
    if (!day_ok(day)) {
        http_reply_error(rc, ST_INVALID, "invalid_day", "day", "the day must be YYYY-MM-DD");
        return;
    }
    const char *params[] = {partner_param(rc), day};
    api_query(rc, "SELECT gp_xchg_statement($1, $2::date)", 2, params, 200);
}

/* ---------------------------------------------------------------------------------------- */
/* Street admins                                                                             */
/* ---------------------------------------------------------------------------------------- */

static bool https_url_ok(const char *u)
{
    if (strncmp(u, "https://", 8) != 0 || strlen(u) < 9 || strlen(u) > 300)
        return false;
    for (const char *p = u; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == '#' || *p == '?' || *p == '@' || *p == '\\')
            return false;
    return true;
}

static bool partner_code_ok(const char *c)
{
    size_t n = strlen(c);
    if (n < 1 || n > 32 || !(islower((unsigned char)c[0]) || isdigit((unsigned char)c[0])))
        return false;
    return strspn(c, "abcdefghijklmnopqrstuvwxyz0123456789_-") == n;
}

static bool seal_or_reply(struct req_ctx *rc, const char *key_id, const char *secret,
                          const char **out)
{
    unsigned char kek[32];
    char *sealed = NULL;
    bool ok = mcrypto_parse_kek(rc->app->cfg->merchant_key_encryption_key, kek) &&
              mcrypto_seal(kek, key_id, secret, strlen(secret), &sealed);
    mcrypto_wipe(kek, sizeof kek);
    if (!ok) {
        http_reply_error(rc, ST_INTERNAL, NULL, NULL, "cannot seal the key");
        return false;
    }
    *out = arena_strdup(rc->arena, sealed);
    free(sealed);
    return true;
}

void api_xchg_partner_create(struct req_ctx *rc)
{
    static const char *const fields[] = {"unit_id",
                                         "code",
                                         "name",
                                         "base_url",
                                         "out_key_id",
                                         "out_secret",
                                         "in_key_id",
                                         "in_secret",
                                         "rate_num",
                                         "rate_den",
                                         "worker_daily_limit",
                                         "partner_daily_limit",
                                         "enabled",
                                         NULL};
    struct jv_err e = {0};
    int64_t unit, num, den, wlim, plim;
    const char *code, *name, *url, *okid, *osec, *ikid, *isec;
    bool enabled = true;
    if (!http_body_only_or_reply(rc, fields))
        return;
    if (!jv_i64(rc->json, "unit_id", true, 1, INT64_MAX, &unit, &e) ||
        !jv_str(rc->json, "code", true, 1, 32, &code, &e) ||
        !jv_str(rc->json, "name", true, 1, 100, &name, &e) ||
        !jv_str(rc->json, "base_url", true, 9, 300, &url, &e) ||
        !jv_str(rc->json, "out_key_id", true, 19, 19, &okid, &e) ||
        !jv_str(rc->json, "out_secret", true, 16, 120, &osec, &e) ||
        !jv_str(rc->json, "in_key_id", true, 19, 19, &ikid, &e) ||
        !jv_str(rc->json, "in_secret", true, 16, 120, &isec, &e) ||
        !jv_i64(rc->json, "rate_num", true, 1, 1000000, &num, &e) ||
        !jv_i64(rc->json, "rate_den", true, 1, 1000000, &den, &e) ||
        !jv_i64(rc->json, "worker_daily_limit", true, 1, 1000000000000LL, &wlim, &e) ||
        !jv_i64(rc->json, "partner_daily_limit", true, 1, 1000000000000LL, &plim, &e) ||
        !jv_bool(rc->json, "enabled", false, &enabled, &e)) {
        http_reply_jv(rc, &e);
        return;
    }
    const char *bad = !partner_code_ok(code)                     ? "code"
                      : !https_url_ok(url)                       ? "base_url"
                      : !mauth_key_id_ok_prefix(okid, XP_PREFIX) ? "out_key_id"
                      : !mauth_key_id_ok_prefix(ikid, XP_PREFIX) ? "in_key_id"
                      : !strcmp(okid, ikid)                      ? "in_key_id"
                                                                 : NULL;
    if (bad) {
        http_reply_error(rc, ST_INVALID, "invalid_field", bad, "invalid %s", bad);
        return;
    }
    const char *oct, *ict;
    if (!seal_or_reply(rc, okid, osec, &oct) || !seal_or_reply(rc, ikid, isec, &ict))
        return;
    json_t *args = json_pack("{s:I, s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:b}", "unit_id",
                             (json_int_t)unit, "code", code, "name", name, "base_url", url,
                             "out_key_id", okid, "in_key_id", ikid, "rate_num", (json_int_t)num,
                             "rate_den", (json_int_t)den, "worker_daily_limit", (json_int_t)wlim,
                             "partner_daily_limit", (json_int_t)plim, "enabled", enabled);
    const char *params[] = {api_actor(rc), api_json_text(rc, args), oct, ict};
    json_decref(args);
    api_query(rc, "SELECT gp_xchg_partner_create($1, $2::jsonb, $3, $4)", 4, params, 201);
}

void api_xchg_partner_list(struct req_ctx *rc)
{
    const char *params[] = {api_actor(rc)};
    api_query(rc, "SELECT gp_xchg_partner_list($1)", 1, params, 200);
}

void api_xchg_partner_get(struct req_ctx *rc)
{
    int64_t id;
    if (!http_param_id_or_reply(rc, 0, &id))
        return;
    const char *params[] = {api_actor(rc), api_i64(rc, id)};
    api_query(rc, "SELECT gp_xchg_partner_get($1, $2)", 2, params, 200);
}

void api_xchg_partner_update(struct req_ctx *rc)
{
    static const char *const fields[] = {"enabled", "base_url", "worker_daily_limit",
                                         "partner_daily_limit", NULL};
    struct jv_err e = {0};
    int64_t id, wlim = 0, plim = 0;
    const char *url = NULL;
    bool enabled;
    if (!http_param_id_or_reply(rc, 0, &id) || !http_body_only_or_reply(rc, fields))
        return;
    if (!jv_bool(rc->json, "enabled", false, &enabled, &e) ||
        !jv_str(rc->json, "base_url", false, 9, 300, &url, &e) ||
        !jv_i64(rc->json, "worker_daily_limit", false, 1, 1000000000000LL, &wlim, &e) ||
        !jv_i64(rc->json, "partner_daily_limit", false, 1, 1000000000000LL, &plim, &e)) {
        http_reply_jv(rc, &e);
        return;
    }
    if (url && !https_url_ok(url)) {
        http_reply_error(rc, ST_INVALID, "invalid_field", "base_url", "invalid base_url");
        return;
    }
    const char *params[] = {api_actor(rc), api_i64(rc, id), api_json_text(rc, rc->json)};
    api_query(rc, "SELECT gp_xchg_partner_update($1, $2, $3::jsonb)", 3, params, 200);
}

/* An admin's reconciliation of one day: fetch the partner's statement, compare, reply. */
struct recon_state {
    int64_t partner;
    const char *day;
};

static void recon_fetched(const struct exchange_reply *r, void *arg)
{
    struct req_ctx *rc = arg;
    struct recon_state *st = rc->state;
    json_t *transfers =
        r->verified && r->status == 200 ? json_object_get(r->body, "transfers") : NULL;
    const char *err = NULL;
    if (!json_is_array(transfers))
        err = arena_printf(rc->arena, "statement not fetched: %s",
                           r->verified ? "unexpected reply" : r->error);
    const char *params[] = {api_i64(rc, st->partner), st->day,
                            json_is_array(transfers) ? api_json_text(rc, transfers) : NULL, err};
    api_query(rc, "SELECT gp_xchg_reconcile($1, $2::date, $3::jsonb, $4)", 4, params, 200);
}

static void recon_prepared(struct db_result *res, void *arg)
{
    struct req_ctx *rc = arg;
    struct recon_state *st = rc->state;
    json_t *info = api_result_json_or_reply(rc, res, 200);
    if (!info)
        return;
    char path[64], label[96];
    snprintf(path, sizeof path, "/exchange/v1/statements/%s", st->day);
    snprintf(label, sizeof label, "%s exchange statement %s", rc->rid, st->day);
    bool ok = exchange_call(rc->app->exchange, info, "GET", path, NULL, label, recon_fetched, rc);
    json_decref(info);
    if (!ok)
        http_reply_error(rc, ST_INTERNAL, NULL, NULL, "cannot sign the request");
}

void api_xchg_reconcile(struct req_ctx *rc)
{
    static const char *const fields[] = {"day", NULL};
    struct jv_err e = {0};
    int64_t id;
    const char *day;
    if (!exchange_on_or_reply(rc))
        return;
    if (!http_param_id_or_reply(rc, 0, &id) || !http_body_only_or_reply(rc, fields))
        return;
    if (!jv_str(rc->json, "day", true, 10, 10, &day, &e)) {
        http_reply_jv(rc, &e);
        return;
    }
    if (!day_ok(day)) {
        http_reply_error(rc, ST_INVALID, "invalid_field", "day", "the day must be YYYY-MM-DD");
        return;
    }
    struct recon_state *st = arena_alloc(rc->arena, sizeof *st);
    st->partner = id;
    st->day = arena_strdup(rc->arena, day);
    rc->state = st;
    const char *params[] = {api_actor(rc), api_i64(rc, id)};
    db_query(rc->app->db, "SELECT gp_xchg_recon_prepare($1, $2)", 2, params, recon_prepared, rc);
}

void api_xchg_reconciliations(struct req_ctx *rc)
{
    int64_t id;
    if (!http_param_id_or_reply(rc, 0, &id))
        return;
    const char *params[] = {api_actor(rc), api_i64(rc, id)};
    api_query(rc, "SELECT gp_xchg_reconciliations($1, $2)", 2, params, 200);
}

void api_xchg_settle(struct req_ctx *rc)
{
    static const char *const fields[] = {"from", "to", NULL};
    struct jv_err e = {0};
    int64_t id;
    const char *from, *to;
    if (!http_param_id_or_reply(rc, 0, &id) || !http_body_only_or_reply(rc, fields))
        return;
    if (!jv_time(rc->json, "from", true, &from, &e) || !jv_time(rc->json, "to", true, &to, &e)) {
        http_reply_jv(rc, &e);
        return;
    }
    const char *params[] = {api_actor(rc), api_i64(rc, id), from, to};
    api_query(rc, "SELECT gp_xchg_settle($1, $2, $3::timestamptz, $4::timestamptz)", 4, params,
              201);
}

void api_xchg_settlements(struct req_ctx *rc)
{
    int64_t id;
    if (!http_param_id_or_reply(rc, 0, &id))
        return;
    const char *params[] = {api_actor(rc), api_i64(rc, id)};
    api_query(rc, "SELECT gp_xchg_settlements($1, $2)", 2, params, 200);
}

/* ---------------------------------------------------------------------------------------- */
/* Workers                                                                                   */
/* ---------------------------------------------------------------------------------------- */

void api_xchg_link_code_create(struct req_ctx *rc)
{
    static const char *const fields[] = {"partner_id", NULL};
    struct jv_err e = {0};
    int64_t partner;
    if (!exchange_on_or_reply(rc))
        return;
    if (!http_body_only_or_reply(rc, fields))
        return;
    if (!jv_i64(rc->json, "partner_id", true, 1, INT64_MAX, &partner, &e)) {
        http_reply_jv(rc, &e);
        return;
    }
    char hex[13];
    if (!crypto_random_hex(hex, 6)) {
        http_reply_error(rc, ST_INTERNAL, NULL, NULL, "cannot make a code");
        return;
    }
    char *code = api_secret_buf(rc, 16);
    for (int i = 0; i < 12; i++)
        code[i] = (char)toupper((unsigned char)hex[i]);
    code[12] = '\0';
    mcrypto_wipe(hex, sizeof hex);
    const char *params[] = {api_actor(rc), api_i64(rc, partner), code_hash(rc, code),
                            api_i64(rc, rc->app->cfg->exchange_link_code_ttl_s)};
    api_run_secret(rc, "SELECT gp_xchg_link_code_create($1, $2, $3, $4)", 4, params, 201, 0, "code",
                   code);
}

void api_xchg_link_list(struct req_ctx *rc)
{
    const char *params[] = {api_actor(rc)};
    api_query(rc, "SELECT gp_xchg_links($1)", 1, params, 200);
}

struct link_state {
    int64_t partner;
    const char *code;
    const char *local_ref;
};

static void link_confirmed(const struct exchange_reply *r, void *arg)
{
    struct req_ctx *rc = arg;
    struct link_state *ls = rc->state;
    if (!r->verified || r->status >= 500) {
        rlog_warn(rc, "link confirmation: no answer from the partner (%s, status %d)", r->error,
                  r->status);
        http_reply_error_retry(rc, ST_UNAVAILABLE, "partner_unavailable", 5,
                               "the partner scheme did not answer; try again");
        return;
    }
    const char *account = json_string_value(json_object_get(r->body, "account"));
    if (r->status != 200 || !account || strlen(account) > 64 || !*account) {
        const char *code =
            json_string_value(json_object_get(json_object_get(r->body, "error"), "code"));
        if (r->status == 404)
            http_reply_error(rc, ST_NOT_FOUND, "link_code_not_found", "code",
                             "the partner does not know this code, or it was used or expired");
        else if (r->status == 409)
            http_reply_error(rc, ST_CONFLICT, "already_linked", "code",
                             "the partner account is already linked");
        else
            http_reply_error(rc, ST_INVALID, "link_refused", "code",
                             "the partner refused the link (%s)", code ? code : "no reason");
        return;
    }
    const char *params[] = {api_actor(rc), api_i64(rc, ls->partner), ls->local_ref,
                            arena_strdup(rc->arena, account)};
    api_query(rc, "SELECT gp_xchg_link_finish($1, $2, $3, $4)", 4, params, 201);
}

static void link_prepared(struct db_result *res, void *arg)
{
    struct req_ctx *rc = arg;
    struct link_state *ls = rc->state;
    json_t *info = api_result_json_or_reply(rc, res, 200);
    if (!info)
        return;
    ls->local_ref =
        arena_strdup(rc->arena, json_string_value(json_object_get(info, "local_ref")) ?: "");
    json_t *body = json_pack("{s:s, s:s}", "code", ls->code, "account", ls->local_ref);
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    char label[96];
    snprintf(label, sizeof label, "%s exchange link confirm", rc->rid);
    bool ok = exchange_call(rc->app->exchange, info, "POST", "/exchange/v1/links/confirm", text,
                            label, link_confirmed, rc);
    free(text);
    json_decref(info);
    if (!ok)
        http_reply_error(rc, ST_INTERNAL, NULL, NULL, "cannot sign the request");
}

void api_xchg_link_create(struct req_ctx *rc)
{
    static const char *const fields[] = {"partner_id", "code", NULL};
    struct jv_err e = {0};
    int64_t partner;
    const char *code;
    if (!exchange_on_or_reply(rc))
        return;
    if (!http_body_only_or_reply(rc, fields))
        return;
    if (!jv_i64(rc->json, "partner_id", true, 1, INT64_MAX, &partner, &e) ||
        !jv_str(rc->json, "code", true, 4, 32, &code, &e)) {
        http_reply_jv(rc, &e);
        return;
    }
    if (strspn(code, "0123456789ABCDEFabcdef") != strlen(code)) {
        http_reply_error(rc, ST_INVALID, "invalid_field", "code", "a link code is hex digits");
        return;
    }
    struct link_state *ls = arena_alloc(rc->arena, sizeof *ls);
    ls->partner = partner;
    ls->code = arena_strdup(rc->arena, code);
    rc->state = ls;
    const char *params[] = {api_actor(rc), api_i64(rc, partner)};
    db_query(rc->app->db, "SELECT gp_xchg_link_prepare($1, $2)", 2, params, link_prepared, rc);
}

void api_xchg_link_delete(struct req_ctx *rc)
{
    int64_t id;
    if (!http_param_id_or_reply(rc, 0, &id))
        return;
    const char *params[] = {api_actor(rc), api_i64(rc, id)};
    api_query(rc, "SELECT gp_xchg_unlink($1, $2)", 2, params, 200);
}

void api_xchg_transfer_create(struct req_ctx *rc)
{
    static const char *const fields[] = {"partner_id", "amount", NULL};
    struct jv_err e = {0};
    int64_t partner, amount;
    if (!exchange_on_or_reply(rc))
        return;
    if (!http_body_only_or_reply(rc, fields))
        return;
    if (!jv_i64(rc->json, "partner_id", true, 1, INT64_MAX, &partner, &e) ||
        !jv_i64(rc->json, "amount", true, 1, 1000000000000LL, &amount, &e)) {
        http_reply_jv(rc, &e);
        return;
    }
    const char *principal, *key, *hash;
    api_idem_params(rc, &principal, &key, &hash);
    const char *cfg =
        arena_printf(rc->arena, "{\"send_for_s\": %d}", rc->app->cfg->exchange_send_for_s);
    const char *params[] = {
        api_actor(rc), api_i64(rc, partner), api_i64(rc, amount), cfg, principal, key, hash};
    api_write(rc,
              "SELECT body, effects FROM gp_xchg_transfer_out($1, $2, $3, $4::jsonb, $5, $6, $7)",
              7, params, 202);
}

void api_xchg_transfer_list(struct req_ctx *rc)
{
    struct api_page page;
    if (!api_page_or_reply(rc, API_CURSOR_ID, &page))
        return;
    const char *params[] = {api_actor(rc), page.cursor, api_i64(rc, page.limit)};
    api_query(rc, "SELECT gp_xchg_transfers($1, $2, $3)", 3, params, 200);
}

void api_xchg_transfer_get(struct req_ctx *rc)
{
    int64_t id;
    if (!http_param_id_or_reply(rc, 0, &id))
        return;
    const char *params[] = {api_actor(rc), api_i64(rc, id)};
    api_query(rc, "SELECT gp_xchg_transfer_get($1, $2)", 2, params, 200);
}

/* ---------------------------------------------------------------------------------------- */
/* Auditors                                                                                  */
/* ---------------------------------------------------------------------------------------- */

void api_audit_xchg_mismatches(struct req_ctx *rc)
{
    int64_t unit = 0;
    if (!http_query_i64_or_reply(rc, "unit_id", 1, INT64_MAX, &unit))
        return;
    const char *params[] = {api_actor(rc), api_i64(rc, unit ? unit : rc->principal.unit_id)};
    api_query(rc, "SELECT gp_xchg_audit_mismatches($1, $2)", 2, params, 200);
}
