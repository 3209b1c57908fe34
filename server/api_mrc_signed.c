/* api_mrc_signed.c -- /merchant/v1: the merchant's own signed API (merchant_auth.h;
 * SPEC §5; docs/MERCHANTS.md): offers, vouchers at the counter, charges, refunds,
 * statements, webhooks. Pay codes are checked here; PostgreSQL decides whether they are
 * still usable. A merchant never sees a worker's balance: the gp_mrc_* functions leave it out
 * of the body and return it as an effect for the cache (docs/CONVENTIONS.md, "Effects"). */
#include "api.h"
#include "api_mrc.h"
#include "app.h"
#include "arena.h"
#include "config.h"
#include "crypto.h"
#include "db.h"
#include "http.h"
#include "merchant_crypto.h"
#include "webhook.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *key_param(struct req_ctx *rc)
{
    return rc->principal.key_id;
}

/* The idempotency triple of a merchant write ("merchant:<id>", key, hash). */
static void idem(struct req_ctx *rc, const char **principal, const char **key, const char **hash)
{
    api_idem_params(rc, principal, key, hash);
}

void api_mrc_me(struct req_ctx *rc)
{
    const char *params[] = {key_param(rc)};
    api_query(rc, "SELECT gp_mrc_me($1)", 1, params, 200);
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
    api_query(rc, "SELECT gp_mrc_offer_create($1, $2::jsonb, $3, $4, $5, $6)", 6, params, 201);
}

void api_mrc_offer_list(struct req_ctx *rc)
{
    static const struct api_qspec specs[] = {{"status", API_Q_STR}};
    const char *args = api_query_args_or_reply(rc, specs, ARRAY_SIZE(specs));
    if (!args)
        return;
    const char *params[] = {key_param(rc), args};
    api_query(rc, "SELECT gp_m_offers((gp_mrc_principal($1)).id, $2::jsonb)", 2, params, 200);
}

void api_mrc_offer_get(struct req_ctx *rc)
{
    int64_t id;
    if (!http_param_id_or_reply(rc, 0, &id))
        return;
    const char *params[] = {key_param(rc), api_i64(rc, id)};
    api_query(rc, "SELECT gp_mrc_offer_get($1, $2)", 2, params, 200);
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
    api_query(rc, "SELECT gp_mrc_offer_update($1, $2, $3::jsonb, $4, $5, $6)", 6, params, 200);
}

void api_mrc_voucher_get(struct req_ctx *rc)
{
    const char *params[] = {key_param(rc), rc->params.values[0]};
    api_query(rc, "SELECT gp_mrc_voucher_get($1, $2)", 2, params, 200);
}

void api_mrc_voucher_capture(struct req_ctx *rc)
{
    static const char *const fields[] = {NULL};
    if (!http_body_only_or_reply(rc, fields))
        return;
    const char *principal, *key, *hash;
    idem(rc, &principal, &key, &hash);
    const char *params[] = {key_param(rc), rc->params.values[0], principal, key, hash};
    api_query(rc, "SELECT gp_mrc_voucher_capture($1, $2, $3, $4, $5)", 5, params, 200);
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
    api_write(rc, "SELECT body, effects FROM gp_mrc_refund($1, $2, $3, $4::jsonb, $5, $6, $7, $8)",
              8, params, 201);
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
    api_write(rc, "SELECT body, effects FROM gp_mrc_charge($1, $2, $3, $4, $5, $6, $7, $8)", 8,
              params, 201);
}

void api_mrc_charge_get(struct req_ctx *rc)
{
    int64_t id;
    if (!http_param_id_or_reply(rc, 0, &id))
        return;
    const char *params[] = {key_param(rc), api_i64(rc, id)};
    api_query(rc, "SELECT gp_mrc_charge_get($1, $2)", 2, params, 200);
}

void api_mrc_statement(struct req_ctx *rc)
{
    api_mrc_statement_for(rc, API_MRC_MERCHANT);
}

void api_mrc_settlements(struct req_ctx *rc)
{
    api_mrc_settlements_for(rc, API_MRC_MERCHANT);
}

void api_mrc_settlement_get(struct req_ctx *rc)
{
    api_mrc_settlement_get_for(rc, API_MRC_MERCHANT);
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
    char *secret = api_secret_buf(rc, 8 + CRYPTO_TOKEN_LEN);
    snprintf(secret, 8 + CRYPTO_TOKEN_LEN, "whsec_%s", token);
    mcrypto_wipe(token, sizeof token);
    snprintf(aad, sizeof aad, "webhook:%lld", (long long)rc->principal.merchant_id);
    bool ok = mcrypto_seal(kek, aad, secret, strlen(secret), &sealed);
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
    api_run_secret(rc, "SELECT gp_mrc_webhook_set($1, $2, $3, $4, $5, $6)", 6, params, 200, 0,
                   "secret", secret);
}

void api_mrc_webhook_delete(struct req_ctx *rc)
{
    const char *principal, *key, *hash;
    idem(rc, &principal, &key, &hash);
    const char *params[] = {key_param(rc), principal, key, hash};
    api_query(rc, "SELECT gp_mrc_webhook_set($1, NULL, NULL, $2, $3, $4)", 4, params, 200);
}

void api_mrc_webhook_events(struct req_ctx *rc)
{
    const char *args = api_query_args_or_reply(rc, NULL, 0);
    if (!args)
        return;
    const char *params[] = {key_param(rc), args};
    api_query(rc, "SELECT gp_m_events((gp_mrc_principal($1)).id, $2::jsonb)", 2, params, 200);
}
