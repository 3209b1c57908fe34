/* api_mall.c -- workers and the partner merchants: the points mall, vouchers, pay codes
 * and charges (SPEC §3; docs/MERCHANTS.md). Pay codes are signed here after the database
 * made their row. */
#include "api.h"
#include "api_mrc.h"
#include "app.h"
#include "arena.h"
#include "config.h"
#include "crypto.h"
#include "db.h"
#include "http.h"
#include "merchant_crypto.h"

#include <stdlib.h>
#include <string.h>

void api_mall_offers(struct req_ctx *rc)
{
    static const struct api_qspec specs[] = {{"merchant_id", API_Q_INT}, {"in_stock", API_Q_BOOL}};
    const char *args = api_query_args_or_reply(rc, specs, ARRAY_SIZE(specs));
    if (!args)
        return;
    const char *params[] = {api_actor(rc), args};
    api_query(rc, "SELECT gp_mall_offers($1, $2::jsonb)", 2, params, 200);
}

void api_mall_offer_get(struct req_ctx *rc)
{
    int64_t id;
    if (!http_param_id_or_reply(rc, 0, &id))
        return;
    const char *params[] = {api_actor(rc), api_i64(rc, id)};
    api_query(rc, "SELECT gp_mall_offer_get($1, $2)", 2, params, 200);
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
    api_write(rc, "SELECT body, effects FROM gp_mall_order($1, $2, $3, $4, $5)", 5, params, 201);
}

void api_voucher_list(struct req_ctx *rc)
{
    static const struct api_qspec specs[] = {{"state", API_Q_STR}};
    const char *args = api_query_args_or_reply(rc, specs, ARRAY_SIZE(specs));
    if (!args)
        return;
    const char *params[] = {api_actor(rc), args};
    api_query(rc, "SELECT gp_vouchers_mine($1, $2::jsonb)", 2, params, 200);
}

void api_voucher_get(struct req_ctx *rc)
{
    int64_t id;
    if (!http_param_id_or_reply(rc, 0, &id))
        return;
    const char *params[] = {api_actor(rc), api_i64(rc, id)};
    api_query(rc, "SELECT gp_voucher_get($1, $2)", 2, params, 200);
}

void api_voucher_cancel(struct req_ctx *rc)
{
    static const char *const fields[] = {NULL};
    int64_t id;
    if (!http_param_id_or_reply(rc, 0, &id) || !http_body_only_or_reply(rc, fields))
        return;
    const char *params[] = {api_actor(rc), api_i64(rc, id)};
    api_write(rc, "SELECT body, effects FROM gp_voucher_cancel($1, $2)", 2, params, 200);
}

/* The row is made first (its expiry by the database clock), then the code is signed. */
static void paycode_cb(struct db_result *res, void *arg)
{
    struct req_ctx *rc = arg;
    json_t *j = api_result_json_or_reply(rc, res, 201);
    if (!j)
        return;
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
    const char *args = api_query_args_or_reply(rc, NULL, 0);
    if (!args)
        return;
    const char *params[] = {api_actor(rc), args};
    api_query(rc, "SELECT gp_charges_mine($1, $2::jsonb)", 2, params, 200);
}
