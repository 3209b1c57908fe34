/* api_wechat.c -- WeChat login and binding (docs/OPERATIONS.md "WeChat set-up").
 *
 *   POST /api/v1/auth/wechat         {kind: "mini"|"web", code}: login throttle (client
 *                                    address) -> WeChat trades the code for an openid
 *                                    (wechat.h) -> gp_wechat_login: a bound openid gets a
 *                                    session, an unbound one a one-time bind ticket
 *   POST /api/v1/auth/wechat/bind    {ticket, phone, invite_code}: login throttle (phone and
 *                                    address) -> gp_wechat_bind: the invite was issued for the
 *                                    person with this phone -> binding and session
 *   POST /api/v1/people/{id}/invites staff issue a one-time invite code (shown once)
 *   DELETE /api/v1/me/wechat, DELETE /api/v1/people/{id}/wechat   unbinding
 *
 * Session tokens, bind tickets and invite codes are random here and reach PostgreSQL only as
 * SHA-256 hashes. A login makes one round trip: the server sends both a session hash and a
 * ticket hash, and gp_wechat_login uses the one that applies. */
#include "api.h"
#include "app.h"
#include "arena.h"
#include "config.h"
#include "crypto.h"
#include "db.h"
#include "http.h"
#include "log.h"
#include "login_throttle.h"
#include "wechat.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#define INVITE_LEN   16 /* base32 characters: 80 random bits */
#define INVITE_INPUT 40 /* what a person may type: groups, dashes, blanks */

/* A token as crypto_token makes them: CRYPTO_TOKEN_LEN of base64url. */
static bool token_shaped(const char *t)
{
    if (strlen(t) != CRYPTO_TOKEN_LEN)
        return false;
    for (const char *p = t; *p; p++)
        if (!(isalnum((unsigned char)*p) || *p == '-' || *p == '_'))
            return false;
    return true;
}

/* "\x<sha256 hex>" of s: the bytea parameter of a stored hash (arena). */
static const char *hash_param(struct req_ctx *rc, const char *s, size_t len)
{
    unsigned char d[32];
    char hex[65];
    crypto_sha256(s, len, d);
    crypto_hex(d, 32, hex);
    return arena_printf(rc->arena, "\\x%s", hex);
}

/* A fresh token and its hash parameter; false (after replying 500) when the CSPRNG fails. */
static bool new_token_or_reply(struct req_ctx *rc, char out[CRYPTO_TOKEN_LEN + 1],
                               const char **param)
{
    if (!crypto_token(out)) {
        http_reply_error(rc, ST_INTERNAL, NULL, NULL, "cannot create a token");
        return false;
    }
    *param = hash_param(rc, out, CRYPTO_TOKEN_LEN);
    return true;
}

static void reply_throttled(struct req_ctx *rc, enum login_throttle_verdict v, int retry_after_s)
{
    rlog_info(rc, "wechat login refused: too many attempts");
    http_reply_error_retry(rc, ST_RATE_LIMITED,
                           v == LOGIN_THROTTLE_SLOW ? "login_delayed" : "too_many_attempts",
                           retry_after_s, "too many login attempts; try again later");
}

/* The session part of a successful login or bind: {"person": principal} from SQL. */
static void reply_session(struct req_ctx *rc, const char *token, json_t *j)
{
    json_t *person = json_object_get(j, "person");
    if (!json_is_object(person)) {
        http_reply_error(rc, ST_INTERNAL, NULL, NULL, "cannot read the session");
        return;
    }
    json_t *body = api_session_body(token, person);
    json_object_set_new(body, "bound", json_true());
    http_reply_json(rc, 200, body);
}

/* ---------------------------------------------------------------------------------------- */
/* Login by code                                                                             */
/* ---------------------------------------------------------------------------------------- */

struct wx_login {
    enum wechat_kind kind;
    const char *code; /* points into rc->json */
    char session[CRYPTO_TOKEN_LEN + 1];
    char ticket[CRYPTO_TOKEN_LEN + 1];
    const char *session_param, *ticket_param;
};

static void login_db_cb(struct db_result *res, void *arg)
{
    struct req_ctx *rc = arg;
    struct wx_login *wl = rc->state;
    json_t *j = api_result_json_or_reply(rc, res, 200);
    if (!j)
        return;
    if (json_is_true(json_object_get(j, "bound"))) {
        rlog_info(rc, "wechat login ok person=%lld",
                  (long long)json_integer_value(
                      json_object_get(json_object_get(j, "person"), "person_id")));
        reply_session(rc, wl->session, j);
        json_decref(j);
        return;
    }
    json_t *body = json_pack("{s:b, s:s, s:O?}", "bound", 0, "bind_ticket", wl->ticket,
                             "expires_at", json_object_get(j, "expires_at"));
    json_decref(j);
    http_reply_json(rc, 200, body);
}

static void login_exchanged(const struct wechat_identity *id, void *arg)
{
    struct req_ctx *rc = arg;
    struct wx_login *wl = rc->state;
    const struct config *cfg = rc->app->cfg;
    if (id->st != ST_OK) {
        /* A refused code counts against the address; WeChat's weather does not. */
        if (id->st != ST_UNAUTHORIZED)
            login_throttle_success_addr(rc->app->login, rc->addr);
        rlog_info(rc, "wechat login failed: %s (errcode %ld)", id->code, id->errcode);
        if (id->st == ST_RATE_LIMITED || id->st == ST_UNAVAILABLE) {
            http_reply_error_retry(rc, id->st, id->code, id->retry_after_s,
                                   id->st == ST_RATE_LIMITED
                                       ? "wechat is limiting our requests; try again later"
                                       : "wechat cannot be reached; try again later");
            return;
        }
        http_reply_error(rc, id->st, id->code, id->st == ST_UNAUTHORIZED ? "code" : NULL, "%s",
                         id->st == ST_UNAUTHORIZED ? "the wechat code is invalid or was used"
                                                   : "wechat refuses this user");
        return;
    }
    login_throttle_success_addr(rc->app->login, rc->addr);
    const char *params[] = {
        id->app_id,
        id->openid,
        *id->unionid ? id->unionid : NULL,
        wl->session_param,
        api_i64(rc, cfg->session_ttl_s),
        rc->addr,
        wl->ticket_param,
        api_i64(rc, cfg->wechat_bind_ticket_ttl_s),
    };
    /* The ids are copied by db_query; id is valid during this callback only. */
    db_query(rc->app->db, "SELECT gp_wechat_login($1, $2, $3, $4::bytea, $5, $6, $7::bytea, $8)", 8,
             params, login_db_cb, rc);
}

static void login_throttled(enum login_throttle_verdict v, int retry_after_s, bool known, void *arg)
{
    struct req_ctx *rc = arg;
    struct wx_login *wl = rc->state;
    if (v != LOGIN_THROTTLE_ALLOW) {
        reply_throttled(rc, v, retry_after_s);
        return;
    }
    if (wechat_saturated(rc->app->wechat)) {
        login_throttle_success_addr(rc->app->login, rc->addr);
        http_reply_error_retry(rc, ST_UNAVAILABLE, "wechat_unavailable",
                               rc->app->cfg->wechat_unavailable_retry_after_s,
                               "too many wechat logins at once; try again later");
        return;
    }
    wechat_exchange(rc->app->wechat, wl->kind, wl->code, login_exchanged, rc);
}

/* A code as WeChat hands them out; anything else never reaches WeChat. */
static bool code_shaped(const char *s)
{
    for (const char *p = s; *p; p++)
        if (!(isalnum((unsigned char)*p) || *p == '-' || *p == '_'))
            return false;
    return *s != '\0';
}

void api_wechat_login(struct req_ctx *rc)
{
    static const char *const fields[] = {"kind", "code", NULL};
    if (!http_body_only_or_reply(rc, fields))
        return;
    struct jv_err e = {0};
    const char *kind = NULL, *code = NULL;
    if (!jv_str(rc->json, "kind", true, 1, 16, &kind, &e) ||
        !jv_str(rc->json, "code", true, 1, 128, &code, &e)) {
        http_reply_jv(rc, &e);
        return;
    }
    struct wx_login *wl = arena_alloc(rc->arena, sizeof *wl);
    if (!strcmp(kind, "mini")) {
        wl->kind = WECHAT_MINI;
    } else if (!strcmp(kind, "web")) {
        wl->kind = WECHAT_WEB;
    } else {
        http_reply_error(rc, ST_INVALID, "invalid_field", "kind", "kind must be mini or web");
        return;
    }
    if (!code_shaped(code)) {
        http_reply_error(rc, ST_INVALID, "invalid_field", "code",
                         "code must be letters, digits, '-' or '_'");
        return;
    }
    if (!wechat_enabled(rc->app->wechat, wl->kind)) {
        http_reply_error(rc, ST_FORBIDDEN, "wechat_not_enabled", "kind",
                         "this server has no wechat %s app", kind);
        return;
    }
    wl->code = code;
    if (!new_token_or_reply(rc, wl->session, &wl->session_param) ||
        !new_token_or_reply(rc, wl->ticket, &wl->ticket_param))
        return;
    rc->state = wl;
    login_throttle_check_addr(rc->app->login, rc->addr, login_throttled, rc);
}

/* ---------------------------------------------------------------------------------------- */
/* Binding with an invite code                                                               */
/* ---------------------------------------------------------------------------------------- */

struct wx_bind {
    const char *ticket_param, *phone, *invite_param;
    char session[CRYPTO_TOKEN_LEN + 1];
    const char *session_param;
};

static void bind_db_cb(struct db_result *res, void *arg)
{
    struct req_ctx *rc = arg;
    struct wx_bind *wb = rc->state;
    json_t *j = api_result_json_or_reply(rc, res, 200);
    if (!j)
        return;
    /* A refusal that must outlive the transaction (the ticket's attempt is counted) comes as
     * a value, not an exception: {"error": {"code", "message", "field"}}. */
    json_t *err = json_object_get(j, "error");
    if (err) {
        const char *code = json_string_value(json_object_get(err, "code"));
        const char *msg = json_string_value(json_object_get(err, "message"));
        const char *field = json_string_value(json_object_get(err, "field"));
        rlog_info(rc, "wechat bind refused: %s", code ? code : "?");
        http_reply_error(rc, ST_UNAUTHORIZED, code ? code : "invite_invalid", field, "%s",
                         msg ? msg : "the invite code does not fit");
        json_decref(j);
        return;
    }
    int64_t person = json_integer_value(json_object_get(json_object_get(j, "person"), "person_id"));
    struct login_throttle_req r = {.phone = wb->phone, .addr = rc->addr};
    login_throttle_success(rc->app->login, &r, false, NULL, person);
    rlog_info(rc, "wechat bound person=%lld", (long long)person);
    reply_session(rc, wb->session, j);
    json_decref(j);
}

static void bind_throttled(enum login_throttle_verdict v, int retry_after_s, bool known, void *arg)
{
    struct req_ctx *rc = arg;
    struct wx_bind *wb = rc->state;
    const struct config *cfg = rc->app->cfg;
    if (v != LOGIN_THROTTLE_ALLOW) {
        reply_throttled(rc, v, retry_after_s);
        return;
    }
    const char *params[] = {
        wb->ticket_param,  wb->phone,
        wb->invite_param,  api_i64(rc, cfg->wechat_bind_ticket_attempts),
        wb->session_param, api_i64(rc, cfg->session_ttl_s),
        rc->addr,
    };
    db_query(rc->app->db, "SELECT gp_wechat_bind($1::bytea, $2, $3::bytea, $4, $5::bytea, $6, $7)",
             7, params, bind_db_cb, rc);
}

/* The invite as typed: groups, dashes, blanks and lower case are forgiven; what is left must
 * be INVITE_LEN base32 characters. Writes the canonical form into out. */
static bool invite_normalize(const char *in, char out[INVITE_LEN + 1])
{
    size_t n = 0;
    for (const char *p = in; *p; p++) {
        char c = (char)toupper((unsigned char)*p);
        if (c == '-' || c == ' ')
            continue;
        if (!((c >= 'A' && c <= 'Z') || (c >= '2' && c <= '7')) || n == INVITE_LEN)
            return false;
        out[n++] = c;
    }
    out[n] = '\0';
    return n == INVITE_LEN;
}

void api_wechat_bind(struct req_ctx *rc)
{
    static const char *const fields[] = {"ticket", "phone", "invite_code", NULL};
    if (!http_body_only_or_reply(rc, fields))
        return;
    struct jv_err e = {0};
    const char *ticket = NULL, *phone = NULL, *invite = NULL;
    if (!jv_str(rc->json, "ticket", true, 1, 64, &ticket, &e) ||
        !jv_str(rc->json, "phone", true, 11, 11, &phone, &e) ||
        !jv_str(rc->json, "invite_code", true, 1, INVITE_INPUT, &invite, &e)) {
        http_reply_jv(rc, &e);
        return;
    }
    char canon[INVITE_LEN + 1];
    if (!invite_normalize(invite, canon)) {
        http_reply_error(rc, ST_INVALID, "invalid_field", "invite_code",
                         "an invite code is 16 letters and digits");
        return;
    }
    if (!token_shaped(ticket)) {
        http_reply_error(rc, ST_UNAUTHORIZED, "bind_ticket_invalid", "ticket",
                         "the bind ticket is unknown, expired or used; log in with wechat again");
        return;
    }
    struct wx_bind *wb = arena_alloc(rc->arena, sizeof *wb);
    wb->phone = phone;
    wb->ticket_param = hash_param(rc, ticket, strlen(ticket));
    wb->invite_param = hash_param(rc, canon, INVITE_LEN);
    if (!new_token_or_reply(rc, wb->session, &wb->session_param))
        return;
    rc->state = wb;
    /* As a password login: an invite code is a secret someone may try to guess. */
    struct login_throttle_req r = {.phone = phone, .addr = rc->addr};
    login_throttle_check(rc->app->login, &r, bind_throttled, rc);
}

/* ---------------------------------------------------------------------------------------- */
/* Invites and unbinding (staff, or the person)                                              */
/* ---------------------------------------------------------------------------------------- */

/* 80 random bits as 16 base32 characters, shown in groups of four ("ABCD-EFGH-JKLM-NPQR");
 * canon gets them without the dashes. */
static bool invite_new(char canon[INVITE_LEN + 1], char *shown)
{
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    unsigned char r[10];
    if (!crypto_random(r, sizeof r))
        return false;
    unsigned bits = 0, acc = 0;
    size_t n = 0;
    for (size_t i = 0; i < sizeof r; i++) {
        acc = (acc << 8) | r[i];
        bits += 8;
        while (bits >= 5) {
            canon[n++] = alphabet[(acc >> (bits - 5)) & 31];
            bits -= 5;
        }
    }
    canon[n] = '\0';
    size_t o = 0;
    for (size_t i = 0; i < INVITE_LEN; i++) {
        if (i && i % 4 == 0)
            shown[o++] = '-';
        shown[o++] = canon[i];
    }
    shown[o] = '\0';
    return true;
}

void api_wechat_invite_create(struct req_ctx *rc)
{
    static const char *const fields[] = {NULL};
    int64_t id;
    if (!http_param_id_or_reply(rc, 0, &id) || !http_body_only_or_reply(rc, fields))
        return;
    char canon[INVITE_LEN + 1];
    char *shown = api_secret_buf(rc, INVITE_LEN + INVITE_LEN / 4 + 1);
    if (!invite_new(canon, shown)) {
        http_reply_error(rc, ST_INTERNAL, NULL, NULL, "cannot create an invite code");
        return;
    }
    const char *params[] = {api_actor(rc), api_i64(rc, id), hash_param(rc, canon, INVITE_LEN),
                            api_i64(rc, rc->app->cfg->wechat_invite_ttl_s)};
    explicit_bzero(canon, sizeof canon);
    api_run_secret(rc, "SELECT gp_wechat_invite_create($1, $2, $3::bytea, $4)", 4, params, 201, 0,
                   "code", shown);
}

void api_wechat_unbind_me(struct req_ctx *rc)
{
    /* The caller's own session survives: they unbind from the phone they hold. */
    const char *params[] = {api_actor(rc), api_actor(rc), rc->principal.token_hash};
    api_write(rc, "SELECT body, effects FROM gp_wechat_unbind($1, $2, decode($3, 'hex'))", 3,
              params, 200);
}

void api_wechat_unbind_person(struct req_ctx *rc)
{
    int64_t id;
    if (!http_param_id_or_reply(rc, 0, &id))
        return;
    const char *params[] = {api_actor(rc), api_i64(rc, id), NULL};
    api_write(rc, "SELECT body, effects FROM gp_wechat_unbind($1, $2, $3)", 3, params, 200);
}
