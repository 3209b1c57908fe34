/* api_merchant.c -- partner merchants over HTTP (SPEC §3 merchant/offer/redemption, §5
 * /merchant/v1; docs/MERCHANTS.md):
 *
 *   /api/v1/merchants/...          street admins onboard, key, suspend and settle merchants
 *   /merchant/v1/...               the merchant's own signed API (merchant_auth.h): offers,
 *                                  vouchers at the counter, charges, refunds, statements,
 *                                  webhooks
 *   /api/v1/console/merchants/...  merchant staff with a session: their merchant's console
 *   /api/v1/mall, vouchers, paycodes, charges   workers: browse, order, pay at the till
 *
 * The rules live in sql/0005_merchants.sql; here we check shapes, make and seal the secrets
 * (they never reach SQL in the clear), sign pay codes, and push post-commit effects (worker
 * balances) to Redis. A merchant never sees a worker's balance: the "balances" a function
 * returns for the cache are taken out of the reply. */
#include "api.h"
#include "app.h"
#include "arena.h"
#include "config.h"
#include "crypto.h"
#include "db.h"
#include "effects.h"
#include "http.h"
#include "log.h"
#include "merchant_auth.h"
#include "merchant_crypto.h"
#include "webhook.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------- */
/* Shared helpers                                                                            */
/* ---------------------------------------------------------------------------------------- */

enum mflag {
    M_EFFECTS = 1 << 0,     /* push worker balances found in the reply to Redis */
    M_STRIP = 1 << 1,       /* drop "balances" from the reply (merchant-facing replies) */
    M_FORGET_KEYS = 1 << 2, /* drop "key_ids" (and "key_id") of the reply from the key cache */
};

struct mquery_state {
    int code;
    unsigned flags;
    const char *extra_name; /* a field added to a successful reply (a secret shown once) */
    char *extra_value;      /* malloc'd; wiped and freed with the arena */
};

static void wipe_extra(void *p)
{
    struct mquery_state *qs = p;
    if (qs->extra_value) {
        mcrypto_wipe(qs->extra_value, strlen(qs->extra_value));
        free(qs->extra_value);
    }
}

static void mquery_cb(struct db_result *res, void *arg)
{
    struct req_ctx *rc = arg;
    struct mquery_state *qs = rc->state;
    const char *v = db_result_status(res) == ST_OK && db_result_ntuples(res) > 0
                        ? db_result_value(res, 0, 0)
                        : NULL;
    json_t *j = v ? json_loads(v, 0, NULL) : NULL;
    if (!j) {
        http_reply_db(rc, res, qs->code);
        return;
    }
    if (qs->flags & M_EFFECTS)
        effects_apply(rc->app, j);
    if (qs->flags & M_STRIP)
        json_object_del(j, "balances");
    if (qs->flags & M_FORGET_KEYS) {
        size_t i;
        json_t *k;
        json_array_foreach(json_object_get(j, "key_ids"), i, k)
        {
            if (json_is_string(k))
                merchant_auth_forget_key(rc->app, json_string_value(k));
        }
        json_object_del(j, "key_ids");
        if (json_is_string(json_object_get(j, "key_id")))
            merchant_auth_forget_key(rc->app, json_string_value(json_object_get(j, "key_id")));
    }
    /* A replayed idempotent write answers what it answered the first time, which never held
     * the secret: it is shown once. */
    if (qs->extra_name && !json_is_true(json_object_get(j, "idempotent_replay")))
        json_object_set_new(j, qs->extra_name, json_string(qs->extra_value));
    http_reply_json(rc, qs->code, j);
}

static struct mquery_state *mstate(struct req_ctx *rc, int code, unsigned flags)
{
    struct mquery_state *qs = arena_alloc(rc->arena, sizeof *qs);
    qs->code = code;
    qs->flags = flags;
    rc->state = qs;
    return qs;
}

static void mquery(struct req_ctx *rc, const char *sql, int n, const char *const *params, int code,
                   unsigned flags)
{
    mstate(rc, code, flags);
    db_query(rc->app->db, sql, n, params, mquery_cb, rc);
}

/* CSV text from a function returning text. */
static void csv_cb(struct db_result *res, void *arg)
{
    struct req_ctx *rc = arg;
    const char *v = db_result_status(res) == ST_OK && db_result_ntuples(res) > 0
                        ? db_result_value(res, 0, 0)
                        : NULL;
    if (!v) {
        http_reply_db(rc, res, 200);
        return;
    }
    http_set_header(rc, "Content-Disposition", "attachment; filename=\"statement.csv\"");
    http_reply_raw(rc, 200, "text/csv; charset=utf-8", v, strlen(v));
}

static const struct api_qspec page_specs[] = {{"cursor", API_Q_STR}};

/* ?format=json (default) or csv. */
static bool format_csv_or_reply(struct req_ctx *rc, bool *csv)
{
    const char *f = http_query(rc, "format");
    *csv = f && !strcmp(f, "csv");
    if (f && !*csv && strcmp(f, "json") != 0) {
        http_reply_error(rc, ST_INVALID, "invalid_query", "format", "format is json or csv");
        return false;
    }
    return true;
}

static const char *key_param(struct req_ctx *rc)
{
    return rc->principal.key_id;
}

/* The idempotency triple of a merchant write ("merchant:<id>", key, hash). */
static void idem(struct req_ctx *rc, const char **principal, const char **key, const char **hash)
{
    api_idem_params(rc, principal, key, hash);
}

/* ---------------------------------------------------------------------------------------- */
/* Statements and settlements, for the three kinds of callers                                */
/* ---------------------------------------------------------------------------------------- */

/* Who reads: an admin/auditor of the street, the merchant itself, or its staff. Each SQL text
 * resolves the merchant (and with it the caller's right to read it) inside the statement. */
enum who { W_ADMIN, W_MERCHANT, W_CONSOLE };

static const char *const sql_statement[] = {
    [W_ADMIN] = "SELECT gp_m_statement((gp_merchant_require($1::bigint, $2::bigint, 'read')).id, "
                "$3::timestamptz, $4::timestamptz, $5::bigint, $6::int)",
    [W_MERCHANT] = "SELECT gp_m_statement((gp_mrc_principal($1)).id, $2::timestamptz, "
                   "$3::timestamptz, $4::bigint, $5::int)",
    [W_CONSOLE] = "SELECT gp_m_statement((gp_merchant_for_staff($1::bigint, $2::bigint)).id, "
                  "$3::timestamptz, $4::timestamptz, $5::bigint, $6::int)",
};
static const char *const sql_statement_csv[] = {
    [W_ADMIN] =
        "SELECT gp_m_statement_csv((gp_merchant_require($1::bigint, $2::bigint, 'read')).id, "
        "$3::timestamptz, $4::timestamptz)",
    [W_MERCHANT] = "SELECT gp_m_statement_csv((gp_mrc_principal($1)).id, $2::timestamptz, "
                   "$3::timestamptz)",
    [W_CONSOLE] = "SELECT gp_m_statement_csv((gp_merchant_for_staff($1::bigint, $2::bigint)).id, "
                  "$3::timestamptz, $4::timestamptz)",
};
static const char *const sql_settlements[] = {
    [W_ADMIN] = "SELECT gp_m_settlements((gp_merchant_require($1::bigint, $2::bigint, 'read')).id, "
                "$3::jsonb)",
    [W_MERCHANT] = "SELECT gp_m_settlements((gp_mrc_principal($1)).id, $2::jsonb)",
    [W_CONSOLE] = "SELECT gp_m_settlements((gp_merchant_for_staff($1::bigint, $2::bigint)).id, "
                  "$3::jsonb)",
};
static const char *const sql_settlement_get[] = {
    [W_ADMIN] =
        "SELECT gp_m_settlement_get((gp_merchant_require($1::bigint, $2::bigint, 'read')).id, "
        "$3::bigint, $4::bigint, $5::int)",
    [W_MERCHANT] = "SELECT gp_m_settlement_get((gp_mrc_principal($1)).id, $2::bigint, $3::bigint, "
                   "$4::int)",
    [W_CONSOLE] = "SELECT gp_m_settlement_get((gp_merchant_for_staff($1::bigint, $2::bigint)).id, "
                  "$3::bigint, $4::bigint, $5::int)",
};
static const char *const sql_settlement_csv[] = {
    [W_ADMIN] =
        "SELECT gp_m_settlement_csv((gp_merchant_require($1::bigint, $2::bigint, 'read')).id, "
        "$3::bigint)",
    [W_MERCHANT] = "SELECT gp_m_settlement_csv((gp_mrc_principal($1)).id, $2::bigint)",
    [W_CONSOLE] = "SELECT gp_m_settlement_csv((gp_merchant_for_staff($1::bigint, $2::bigint)).id, "
                  "$3::bigint)",
};

/* Fills the leading parameters that name the merchant: (key id) or (actor, merchant id from
 * path parameter 0). Returns how many, or -1 after replying. */
static int who_params(struct req_ctx *rc, enum who who, const char **params)
{
    if (who == W_MERCHANT) {
        params[0] = key_param(rc);
        return 1;
    }
    int64_t id;
    if (!http_param_id_or_reply(rc, 0, &id))
        return -1;
    params[0] = api_actor(rc);
    params[1] = api_i64(rc, id);
    return 2;
}

static void statement(struct req_ctx *rc, enum who who)
{
    const char *params[8];
    const char *from, *to, *after;
    int limit;
    bool csv;
    int n = who_params(rc, who, params);
    if (n < 0 || !http_query_time_or_reply(rc, "from", &from) ||
        !http_query_time_or_reply(rc, "to", &to) || !format_csv_or_reply(rc, &csv))
        return;
    params[n++] = from;
    params[n++] = to;
    if (csv) {
        db_query(rc->app->db, sql_statement_csv[who], n, params, csv_cb, rc);
        return;
    }
    if (!api_cursor_or_reply(rc, &after) || !http_page_limit_or_reply(rc, &limit))
        return;
    params[n++] = after;
    params[n++] = api_i64(rc, limit);
    mquery(rc, sql_statement[who], n, params, 200, 0);
}

static void settlements(struct req_ctx *rc, enum who who)
{
    const char *params[4];
    int n = who_params(rc, who, params);
    if (n < 0)
        return;
    const char *args = api_query_args_or_reply(rc, page_specs, ARRAY_SIZE(page_specs));
    if (!args)
        return;
    params[n++] = args;
    mquery(rc, sql_settlements[who], n, params, 200, 0);
}

static void settlement_get(struct req_ctx *rc, enum who who)
{
    const char *params[8], *after;
    int limit;
    bool csv;
    int64_t sid;
    int n = who_params(rc, who, params);
    if (n < 0 || !http_param_id_or_reply(rc, who == W_MERCHANT ? 0 : 1, &sid) ||
        !format_csv_or_reply(rc, &csv))
        return;
    params[n++] = api_i64(rc, sid);
    if (csv) {
        db_query(rc->app->db, sql_settlement_csv[who], n, params, csv_cb, rc);
        return;
    }
    if (!api_cursor_or_reply(rc, &after) || !http_page_limit_or_reply(rc, &limit))
        return;
    params[n++] = after;
    params[n++] = api_i64(rc, limit);
    mquery(rc, sql_settlement_get[who], n, params, 200, 0);
}

/* ---------------------------------------------------------------------------------------- */
/* /api/v1/merchants: street admins                                                          */
/* ---------------------------------------------------------------------------------------- */

void api_merchant_create(struct req_ctx *rc)
{
    const char *principal, *key, *hash;
    api_idem_params(rc, &principal, &key, &hash);
    const char *params[] = {api_actor(rc), api_json_text(rc, rc->json), principal, key, hash};
    mquery(rc, "SELECT gp_merchant_create($1, $2::jsonb, $3, $4, $5)", 5, params, 201, 0);
}

void api_merchant_list(struct req_ctx *rc)
{
    static const struct api_qspec specs[] = {
        {"status", API_Q_STR}, {"unit_id", API_Q_INT}, {"cursor", API_Q_STR}};
    const char *args = api_query_args_or_reply(rc, specs, ARRAY_SIZE(specs));
    if (!args)
        return;
    const char *params[] = {api_actor(rc), args};
    mquery(rc, "SELECT gp_merchant_list($1, $2::jsonb)", 2, params, 200, 0);
}

void api_merchant_get(struct req_ctx *rc)
{
    int64_t id;
    if (!http_param_id_or_reply(rc, 0, &id))
        return;
    const char *params[] = {api_actor(rc), api_i64(rc, id)};
    mquery(rc, "SELECT gp_merchant_get($1, $2)", 2, params, 200, 0);
}

void api_merchant_update(struct req_ctx *rc)
{
    int64_t id;
    if (!http_param_id_or_reply(rc, 0, &id))
        return;
    const char *params[] = {api_actor(rc), api_i64(rc, id), api_json_text(rc, rc->json)};
    mquery(rc, "SELECT gp_merchant_update($1, $2, $3::jsonb)", 3, params, 200, 0);
}

static void set_status(struct req_ctx *rc, const char *status)
{
    static const char *const fields[] = {"reason", NULL};
    struct jv_err e = {0};
    int64_t id;
    const char *reason;
    if (!http_param_id_or_reply(rc, 0, &id) || !http_body_only_or_reply(rc, fields))
        return;
    if (!jv_str(rc->json, "reason", true, 1, 500, &reason, &e)) {
        http_reply_jv(rc, &e);
        return;
    }
    const char *params[] = {api_actor(rc), api_i64(rc, id), status, reason};
    mquery(rc, "SELECT gp_merchant_set_status($1, $2, $3, $4)", 4, params, 200, M_FORGET_KEYS);
}

void api_merchant_suspend(struct req_ctx *rc)
{
    set_status(rc, "suspended");
}

void api_merchant_reinstate(struct req_ctx *rc)
{
    set_status(rc, "active");
}

/* A new key: the server makes the key id and the secret, seals the secret, and shows it
 * once. With "rotate", the merchant's other keys stop after "overlap_s" (default a day). */
void api_merchant_key_create(struct req_ctx *rc)
{
    static const char *const fields[] = {"rotate", "overlap_s", NULL};
    struct jv_err e = {0};
    int64_t id, overlap = 86400;
    bool rotate = false;
    if (!http_param_id_or_reply(rc, 0, &id) || !http_body_only_or_reply(rc, fields))
        return;
    if (!jv_bool(rc->json, "rotate", false, &rotate, &e) ||
        !jv_i64(rc->json, "overlap_s", false, 0, 30 * 86400, &overlap, &e)) {
        http_reply_jv(rc, &e);
        return;
    }
    char hex[17], token[CRYPTO_TOKEN_LEN + 1], kid[MAUTH_KEY_ID_LEN + 1];
    unsigned char kek[32];
    char *sealed = NULL;
    if (!crypto_random_hex(hex, 8) || !crypto_token(token) ||
        !mcrypto_parse_kek(rc->app->cfg->merchant_key_encryption_key, kek)) {
        http_reply_error(rc, ST_INTERNAL, NULL, NULL, "cannot make a key");
        return;
    }
    snprintf(kid, sizeof kid, "mk_%s", hex);
    struct mquery_state *qs = mstate(rc, 201, 0);
    arena_on_free(rc->arena, wipe_extra, qs);
    qs->extra_name = "secret";
    qs->extra_value = xmalloc(4 + CRYPTO_TOKEN_LEN);
    snprintf(qs->extra_value, 4 + CRYPTO_TOKEN_LEN, "sk_%s", token);
    mcrypto_wipe(token, sizeof token);
    bool ok = mcrypto_seal(kek, kid, qs->extra_value, strlen(qs->extra_value), &sealed);
    mcrypto_wipe(kek, sizeof kek);
    if (!ok) {
        http_reply_error(rc, ST_INTERNAL, NULL, NULL, "cannot make a key");
        return;
    }
    const char *params[] = {api_actor(rc),
                            api_i64(rc, id),
                            arena_strdup(rc->arena, kid),
                            arena_strdup(rc->arena, sealed),
                            rotate ? "true" : "false",
                            api_i64(rc, overlap)};
    free(sealed);
    db_query(rc->app->db, "SELECT gp_merchant_key_create($1, $2, $3, $4, $5::boolean, $6)", 6,
             params, mquery_cb, rc);
}

void api_merchant_key_revoke(struct req_ctx *rc)
{
    int64_t id;
    if (!http_param_id_or_reply(rc, 0, &id))
        return;
    if (!mauth_key_id_ok(rc->params.values[1])) {
        http_reply_error(rc, ST_NOT_FOUND, "key_not_found", "key_id", "key not found");
        return;
    }
    const char *params[] = {api_actor(rc), api_i64(rc, id), rc->params.values[1]};
    mquery(rc, "SELECT gp_merchant_key_revoke($1, $2, $3)", 3, params, 200, M_FORGET_KEYS);
}

void api_merchant_staff_add(struct req_ctx *rc)
{
    static const char *const fields[] = {"person_id", NULL};
    struct jv_err e = {0};
    int64_t id, person;
    if (!http_param_id_or_reply(rc, 0, &id) || !http_body_only_or_reply(rc, fields))
        return;
    if (!jv_i64(rc->json, "person_id", true, 1, INT64_MAX, &person, &e)) {
        http_reply_jv(rc, &e);
        return;
    }
    const char *params[] = {api_actor(rc), api_i64(rc, id), api_i64(rc, person)};
    mquery(rc, "SELECT gp_merchant_staff($1, $2, $3, true)", 3, params, 200, 0);
}

void api_merchant_staff_remove(struct req_ctx *rc)
{
    int64_t id, person;
    if (!http_param_id_or_reply(rc, 0, &id) || !http_param_id_or_reply(rc, 1, &person))
        return;
    const char *params[] = {api_actor(rc), api_i64(rc, id), api_i64(rc, person)};
    mquery(rc, "SELECT gp_merchant_staff($1, $2, $3, false)", 3, params, 200, 0);
}

void api_merchant_statement(struct req_ctx *rc)
{
    statement(rc, W_ADMIN);
}

void api_merchant_settlements(struct req_ctx *rc)
{
    settlements(rc, W_ADMIN);
}

void api_merchant_settlement_get(struct req_ctx *rc)
{
    settlement_get(rc, W_ADMIN);
}

/* Closes the open period: {"until": RFC 3339} or {"month": "YYYY-MM"} or {} (until now). */
void api_merchant_settle(struct req_ctx *rc)
{
    static const char *const fields[] = {"until", "month", NULL};
    struct jv_err e = {0};
    int64_t id;
    const char *until = NULL, *month = NULL;
    if (!http_param_id_or_reply(rc, 0, &id) || !http_body_only_or_reply(rc, fields))
        return;
    if (!jv_time(rc->json, "until", false, &until, &e) ||
        !jv_str(rc->json, "month", false, 7, 7, &month, &e)) {
        http_reply_jv(rc, &e);
        return;
    }
    if (until && month) {
        http_reply_error(rc, ST_INVALID, "invalid_request", "month",
                         "give until or month, not both");
        return;
    }
    const char *principal, *key, *hash;
    api_idem_params(rc, &principal, &key, &hash);
    const char *params[] = {api_actor(rc), api_i64(rc, id), until, month, principal, key, hash};
    mquery(rc, "SELECT gp_settlement_close($1, $2, $3::timestamptz, $4, $5, $6, $7)", 7, params,
           201, 0);
}

/* ---------------------------------------------------------------------------------------- */
/* /merchant/v1: the merchant's signed API                                                   */
/* ---------------------------------------------------------------------------------------- */

void api_mrc_me(struct req_ctx *rc)
{
    const char *params[] = {key_param(rc)};
    mquery(rc, "SELECT gp_mrc_me($1)", 1, params, 200, 0);
}

void api_mrc_offer_create(struct req_ctx *rc)
{
    const char *principal, *key, *hash;
    idem(rc, &principal, &key, &hash);
    const char *params[] = {key_param(rc),
                            api_json_text(rc, rc->json),
                            api_i64(rc, rc->app->cfg->merchant_voucher_ttl_s),
                            principal,
                            key,
                            hash};
    mquery(rc, "SELECT gp_mrc_offer_create($1, $2::jsonb, $3, $4, $5, $6)", 6, params, 201, 0);
}

void api_mrc_offer_list(struct req_ctx *rc)
{
    static const struct api_qspec specs[] = {{"status", API_Q_STR}, {"cursor", API_Q_STR}};
    const char *args = api_query_args_or_reply(rc, specs, ARRAY_SIZE(specs));
    if (!args)
        return;
    const char *params[] = {key_param(rc), args};
    mquery(rc, "SELECT gp_m_offers((gp_mrc_principal($1)).id, $2::jsonb)", 2, params, 200, 0);
}

void api_mrc_offer_get(struct req_ctx *rc)
{
    int64_t id;
    if (!http_param_id_or_reply(rc, 0, &id))
        return;
    const char *params[] = {key_param(rc), api_i64(rc, id)};
    mquery(rc, "SELECT gp_mrc_offer_get($1, $2)", 2, params, 200, 0);
}

void api_mrc_offer_update(struct req_ctx *rc)
{
    int64_t id;
    if (!http_param_id_or_reply(rc, 0, &id))
        return;
    const char *principal, *key, *hash;
    idem(rc, &principal, &key, &hash);
    const char *params[] = {
        key_param(rc), api_i64(rc, id), api_json_text(rc, rc->json), principal, key, hash};
    mquery(rc, "SELECT gp_mrc_offer_update($1, $2, $3::jsonb, $4, $5, $6)", 6, params, 200, 0);
}

void api_mrc_voucher_get(struct req_ctx *rc)
{
    const char *params[] = {key_param(rc), rc->params.values[0]};
    mquery(rc, "SELECT gp_mrc_voucher_get($1, $2)", 2, params, 200, 0);
}

void api_mrc_voucher_capture(struct req_ctx *rc)
{
    static const char *const fields[] = {NULL};
    if (!http_body_only_or_reply(rc, fields))
        return;
    const char *principal, *key, *hash;
    idem(rc, &principal, &key, &hash);
    const char *params[] = {key_param(rc), rc->params.values[0], principal, key, hash};
    mquery(rc, "SELECT gp_mrc_voucher_capture($1, $2, $3, $4, $5)", 5, params, 200,
           M_EFFECTS | M_STRIP);
}

static void refund(struct req_ctx *rc, const char *kind)
{
    static const char *const fields[] = {"amount", "reason", NULL};
    if (!http_body_only_or_reply(rc, fields))
        return;
    const char *principal, *key, *hash;
    idem(rc, &principal, &key, &hash);
    const char *params[] = {key_param(rc),
                            kind,
                            rc->params.values[0],
                            api_json_text(rc, rc->json),
                            api_i64(rc, rc->app->cfg->merchant_refund_window_s),
                            principal,
                            key,
                            hash};
    mquery(rc, "SELECT gp_mrc_refund($1, $2, $3, $4::jsonb, $5, $6, $7, $8)", 8, params, 201,
           M_EFFECTS | M_STRIP);
}

void api_mrc_voucher_refund(struct req_ctx *rc)
{
    refund(rc, "voucher");
}

void api_mrc_charge_refund(struct req_ctx *rc)
{
    int64_t id;
    if (!http_param_id_or_reply(rc, 0, &id))
        return;
    refund(rc, "charge");
}

/* {"paycode": what the worker's app shows, "amount": points, "memo"?}. The pay code's own
 * signature is checked here; PostgreSQL decides whether it is still usable. */
void api_mrc_charge(struct req_ctx *rc)
{
    static const char *const fields[] = {"paycode", "amount", "memo", NULL};
    struct jv_err e = {0};
    const char *code, *memo = NULL;
    int64_t amount;
    if (!http_body_only_or_reply(rc, fields))
        return;
    if (!jv_str(rc->json, "paycode", true, 1, MCRYPTO_PAYCODE_MAX, &code, &e) ||
        !jv_i64(rc->json, "amount", true, 1, 1000000000, &amount, &e) ||
        !jv_str(rc->json, "memo", false, 0, 200, &memo, &e)) {
        http_reply_jv(rc, &e);
        return;
    }
    char nonce[MCRYPTO_NONCE_HEX_LEN + 1];
    int64_t worker, exp;
    if (!mcrypto_paycode_check(rc->app->cfg->merchant_paycode_secret, code, nonce, &worker, &exp)) {
        http_reply_error(rc, ST_INVALID, "invalid_paycode", "paycode",
                         "this is not a pay code issued by this service");
        return;
    }
    const char *principal, *key, *hash;
    idem(rc, &principal, &key, &hash);
    const char *params[] = {key_param(rc),
                            arena_strdup(rc->arena, nonce),
                            api_i64(rc, worker),
                            api_i64(rc, amount),
                            memo,
                            principal,
                            key,
                            hash};
    mquery(rc, "SELECT gp_mrc_charge($1, $2, $3, $4, $5, $6, $7, $8)", 8, params, 201,
           M_EFFECTS | M_STRIP);
}

void api_mrc_charge_get(struct req_ctx *rc)
{
    int64_t id;
    if (!http_param_id_or_reply(rc, 0, &id))
        return;
    const char *params[] = {key_param(rc), api_i64(rc, id)};
    mquery(rc, "SELECT gp_mrc_charge_get($1, $2)", 2, params, 200, 0);
}

void api_mrc_statement(struct req_ctx *rc)
{
    statement(rc, W_MERCHANT);
}

void api_mrc_settlements(struct req_ctx *rc)
{
    settlements(rc, W_MERCHANT);
}

void api_mrc_settlement_get(struct req_ctx *rc)
{
    settlement_get(rc, W_MERCHANT);
}

/* {"url": "https://..."}: checked against the address policy, with a new signing secret
 * (sealed; shown once). */
void api_mrc_webhook_set(struct req_ctx *rc)
{
    static const char *const fields[] = {"url", NULL};
    struct jv_err e = {0};
    const char *url, *code;
    if (!http_body_only_or_reply(rc, fields))
        return;
    if (!jv_str(rc->json, "url", true, 1, 500, &url, &e)) {
        http_reply_jv(rc, &e);
        return;
    }
    if (!webhook_url_check(url, rc->app->cfg->merchant_webhook_allow_private, &code)) {
        http_reply_error(
            rc, ST_INVALID, code, "url",
            !strcmp(code, "webhook_url_not_allowed")
                ? "webhooks must point at a public address, not at a loopback, private, "
                  "link-local, multicast or reserved one (in any spelling) or a local name"
                : "the webhook URL must be https://host[:port]/path, without credentials");
        return;
    }
    char token[CRYPTO_TOKEN_LEN + 1], aad[48];
    unsigned char kek[32];
    char *sealed = NULL;
    if (!crypto_token(token) ||
        !mcrypto_parse_kek(rc->app->cfg->merchant_key_encryption_key, kek)) {
        http_reply_error(rc, ST_INTERNAL, NULL, NULL, "cannot make a webhook secret");
        return;
    }
    struct mquery_state *qs = mstate(rc, 200, 0);
    arena_on_free(rc->arena, wipe_extra, qs);
    qs->extra_name = "secret";
    qs->extra_value = xmalloc(8 + CRYPTO_TOKEN_LEN);
    snprintf(qs->extra_value, 8 + CRYPTO_TOKEN_LEN, "whsec_%s", token);
    mcrypto_wipe(token, sizeof token);
    snprintf(aad, sizeof aad, "webhook:%lld", (long long)rc->principal.merchant_id);
    bool ok = mcrypto_seal(kek, aad, qs->extra_value, strlen(qs->extra_value), &sealed);
    mcrypto_wipe(kek, sizeof kek);
    if (!ok) {
        http_reply_error(rc, ST_INTERNAL, NULL, NULL, "cannot make a webhook secret");
        return;
    }
    const char *principal, *key, *hash;
    idem(rc, &principal, &key, &hash);
    const char *params[] = {key_param(rc), url, arena_strdup(rc->arena, sealed),
                            principal,     key, hash};
    free(sealed);
    db_query(rc->app->db, "SELECT gp_mrc_webhook_set($1, $2, $3, $4, $5, $6)", 6, params, mquery_cb,
             rc);
}

void api_mrc_webhook_delete(struct req_ctx *rc)
{
    const char *principal, *key, *hash;
    idem(rc, &principal, &key, &hash);
    const char *params[] = {key_param(rc), principal, key, hash};
    mquery(rc, "SELECT gp_mrc_webhook_set($1, NULL, NULL, $2, $3, $4)", 4, params, 200, 0);
}

void api_mrc_webhook_events(struct req_ctx *rc)
{
    const char *args = api_query_args_or_reply(rc, page_specs, ARRAY_SIZE(page_specs));
    if (!args)
        return;
    const char *params[] = {key_param(rc), args};
    mquery(rc, "SELECT gp_m_events((gp_mrc_principal($1)).id, $2::jsonb)", 2, params, 200, 0);
}

/* ---------------------------------------------------------------------------------------- */
/* /api/v1/console/merchants: merchant staff with a session                                  */
/* ---------------------------------------------------------------------------------------- */

void api_console_merchants(struct req_ctx *rc)
{
    const char *params[] = {api_actor(rc)};
    mquery(rc, "SELECT gp_console_merchants($1)", 1, params, 200, 0);
}

void api_console_offers(struct req_ctx *rc)
{
    static const struct api_qspec specs[] = {{"status", API_Q_STR}, {"cursor", API_Q_STR}};
    int64_t id;
    if (!http_param_id_or_reply(rc, 0, &id))
        return;
    const char *args = api_query_args_or_reply(rc, specs, ARRAY_SIZE(specs));
    if (!args)
        return;
    const char *params[] = {api_actor(rc), api_i64(rc, id), args};
    mquery(rc, "SELECT gp_m_offers((gp_merchant_for_staff($1, $2)).id, $3::jsonb)", 3, params, 200,
           0);
}

void api_console_statement(struct req_ctx *rc)
{
    statement(rc, W_CONSOLE);
}

void api_console_settlements(struct req_ctx *rc)
{
    settlements(rc, W_CONSOLE);
}

void api_console_settlement_get(struct req_ctx *rc)
{
    settlement_get(rc, W_CONSOLE);
}

/* ---------------------------------------------------------------------------------------- */
/* Workers: the points mall, vouchers, pay codes, charges                                    */
/* ---------------------------------------------------------------------------------------- */

void api_mall_offers(struct req_ctx *rc)
{
    static const struct api_qspec specs[] = {
        {"merchant_id", API_Q_INT}, {"in_stock", API_Q_BOOL}, {"cursor", API_Q_STR}};
    const char *args = api_query_args_or_reply(rc, specs, ARRAY_SIZE(specs));
    if (!args)
        return;
    const char *params[] = {api_actor(rc), args};
    mquery(rc, "SELECT gp_mall_offers($1, $2::jsonb)", 2, params, 200, 0);
}

void api_mall_offer_get(struct req_ctx *rc)
{
    int64_t id;
    if (!http_param_id_or_reply(rc, 0, &id))
        return;
    const char *params[] = {api_actor(rc), api_i64(rc, id)};
    mquery(rc, "SELECT gp_mall_offer_get($1, $2)", 2, params, 200, 0);
}

void api_mall_order(struct req_ctx *rc)
{
    static const char *const fields[] = {NULL};
    int64_t id;
    if (!http_param_id_or_reply(rc, 0, &id) || !http_body_only_or_reply(rc, fields))
        return;
    const char *principal, *key, *hash;
    api_idem_params(rc, &principal, &key, &hash);
    const char *params[] = {api_actor(rc), api_i64(rc, id), principal, key, hash};
    mquery(rc, "SELECT gp_mall_order($1, $2, $3, $4, $5)", 5, params, 201, M_EFFECTS);
}

void api_voucher_list(struct req_ctx *rc)
{
    static const struct api_qspec specs[] = {{"state", API_Q_STR}, {"cursor", API_Q_STR}};
    const char *args = api_query_args_or_reply(rc, specs, ARRAY_SIZE(specs));
    if (!args)
        return;
    const char *params[] = {api_actor(rc), args};
    mquery(rc, "SELECT gp_vouchers_mine($1, $2::jsonb)", 2, params, 200, 0);
}

void api_voucher_get(struct req_ctx *rc)
{
    int64_t id;
    if (!http_param_id_or_reply(rc, 0, &id))
        return;
    const char *params[] = {api_actor(rc), api_i64(rc, id)};
    mquery(rc, "SELECT gp_voucher_get($1, $2)", 2, params, 200, 0);
}

void api_voucher_cancel(struct req_ctx *rc)
{
    static const char *const fields[] = {NULL};
    int64_t id;
    if (!http_param_id_or_reply(rc, 0, &id) || !http_body_only_or_reply(rc, fields))
        return;
    const char *params[] = {api_actor(rc), api_i64(rc, id)};
    mquery(rc, "SELECT gp_voucher_cancel($1, $2)", 2, params, 200, M_EFFECTS);
}

/* The row is made first (its expiry by the database clock), then the code is signed. */
static void paycode_cb(struct db_result *res, void *arg)
{
    struct req_ctx *rc = arg;
    const char *v = db_result_status(res) == ST_OK && db_result_ntuples(res) > 0
                        ? db_result_value(res, 0, 0)
                        : NULL;
    json_t *j = v ? json_loads(v, 0, NULL) : NULL;
    if (!j) {
        http_reply_db(rc, res, 201);
        return;
    }
    const char *nonce = json_string_value(json_object_get(j, "nonce"));
    json_t *w = json_object_get(j, "worker_id"), *exp = json_object_get(j, "exp");
    char code[MCRYPTO_PAYCODE_MAX];
    if (!nonce || !json_is_integer(w) || !json_is_integer(exp) ||
        !mcrypto_paycode_make(rc->app->cfg->merchant_paycode_secret, nonce, json_integer_value(w),
                              json_integer_value(exp), code, sizeof code)) {
        json_decref(j);
        http_reply_error(rc, ST_INTERNAL, NULL, NULL, "cannot sign the pay code");
        return;
    }
    json_t *out =
        json_pack("{s:s, s:s, s:O, s:i}", "paycode", code, "qr_payload", code, "expires_at",
                  json_object_get(j, "expires_at"), "ttl_s", rc->app->cfg->merchant_paycode_ttl_s);
    json_decref(j);
    http_reply_json(rc, 201, out);
}

void api_paycode_create(struct req_ctx *rc)
{
    static const char *const fields[] = {NULL};
    if (!http_body_only_or_reply(rc, fields))
        return;
    char nonce[MCRYPTO_NONCE_HEX_LEN + 1];
    if (!crypto_random_hex(nonce, MCRYPTO_NONCE_HEX_LEN / 2)) {
        http_reply_error(rc, ST_INTERNAL, NULL, NULL, "cannot make a pay code");
        return;
    }
    const char *params[] = {api_actor(rc), arena_strdup(rc->arena, nonce),
                            api_i64(rc, rc->app->cfg->merchant_paycode_ttl_s)};
    db_query(rc->app->db, "SELECT gp_paycode_issue($1, $2, $3)", 3, params, paycode_cb, rc);
}

void api_charge_list(struct req_ctx *rc)
{
    const char *args = api_query_args_or_reply(rc, page_specs, ARRAY_SIZE(page_specs));
    if (!args)
        return;
    const char *params[] = {api_actor(rc), args};
    mquery(rc, "SELECT gp_charges_mine($1, $2::jsonb)", 2, params, 200, 0);
}
