/* api_mrc_admin.c -- /api/v1/merchants: street admins onboard, key, suspend and settle
 * partner merchants (SPEC §3; docs/MERCHANTS.md). Secrets are made and sealed here; they
 * never reach SQL in the clear and are shown once. */
#include "api.h"
#include "api_mrc.h"
#include "app.h"
#include "arena.h"
#include "config.h"
#include "crypto.h"
#include "db.h"
#include "http.h"
#include "merchant_auth.h"
#include "merchant_crypto.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void api_merchant_create(struct req_ctx *rc)
{
    const char *principal, *key, *hash;
    api_idem_params(rc, &principal, &key, &hash);
    const char *params[] = {api_actor(rc), api_json_text(rc, rc->json), principal, key, hash};
    api_query(rc, "SELECT gp_merchant_create($1, $2::jsonb, $3, $4, $5)", 5, params, 201);
}

void api_merchant_list(struct req_ctx *rc)
{
    static const struct api_qspec specs[] = {{"status", API_Q_STR}, {"unit_id", API_Q_INT}};
    const char *args = api_query_args_or_reply(rc, specs, ARRAY_SIZE(specs));
    if (!args)
        return;
    const char *params[] = {api_actor(rc), args};
    api_query(rc, "SELECT gp_merchant_list($1, $2::jsonb)", 2, params, 200);
}

void api_merchant_get(struct req_ctx *rc)
{
    int64_t id;
    if (!http_param_id_or_reply(rc, 0, &id))
        return;
    const char *params[] = {api_actor(rc), api_i64(rc, id)};
    api_query(rc, "SELECT gp_merchant_get($1, $2)", 2, params, 200);
}

void api_merchant_update(struct req_ctx *rc)
{
    int64_t id;
    if (!http_param_id_or_reply(rc, 0, &id))
        return;
    const char *params[] = {api_actor(rc), api_i64(rc, id), api_json_text(rc, rc->json)};
    api_query(rc, "SELECT gp_merchant_update($1, $2, $3::jsonb)", 3, params, 200);
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
    api_write(rc, "SELECT body, effects FROM gp_merchant_set_status($1, $2, $3, $4)", 4, params,
              200);
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
    char *secret = api_secret_buf(rc, 4 + CRYPTO_TOKEN_LEN);
    snprintf(secret, 4 + CRYPTO_TOKEN_LEN, "sk_%s", token);
    mcrypto_wipe(token, sizeof token);
    bool ok = mcrypto_seal(kek, kid, secret, strlen(secret), &sealed);
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
    api_run_secret(rc, "SELECT gp_merchant_key_create($1, $2, $3, $4, $5::boolean, $6)", 6, params,
                   201, 0, "secret", secret);
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
    api_write(rc, "SELECT body, effects FROM gp_merchant_key_revoke($1, $2, $3)", 3, params, 200);
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
    api_query(rc, "SELECT gp_merchant_staff($1, $2, $3, true)", 3, params, 200);
}

void api_merchant_staff_remove(struct req_ctx *rc)
{
    int64_t id, person;
    if (!http_param_id_or_reply(rc, 0, &id) || !http_param_id_or_reply(rc, 1, &person))
        return;
    const char *params[] = {api_actor(rc), api_i64(rc, id), api_i64(rc, person)};
    api_query(rc, "SELECT gp_merchant_staff($1, $2, $3, false)", 3, params, 200);
}

void api_merchant_statement(struct req_ctx *rc)
{
    api_mrc_statement_for(rc, API_MRC_ADMIN);
}

void api_merchant_settlements(struct req_ctx *rc)
{
    api_mrc_settlements_for(rc, API_MRC_ADMIN);
}

void api_merchant_settlement_get(struct req_ctx *rc)
{
    api_mrc_settlement_get_for(rc, API_MRC_ADMIN);
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
    api_query(rc, "SELECT gp_settlement_close($1, $2, $3::timestamptz, $4, $5, $6, $7)", 7, params,
              201);
}
