/* api_mrc.c -- what the merchant handlers share (api_mrc_admin.c, api_mrc_signed.c,
 * api_mrc_console.c, api_mall.c; SPEC §3, §5; docs/MERCHANTS.md): the query path that pushes
 * post-commit effects (worker balances) to Redis, strips what a merchant must not see and
 * forgets revoked keys; and statements and settlements, read by three kinds of callers.
 *
 * The rules live in sql/0005_merchants.sql. A merchant never sees a worker's balance: the
 * "balances" a function returns for the cache are taken out of the reply. */
#include "api.h"
#include "api_mrc.h"
#include "app.h"
#include "arena.h"
#include "db.h"
#include "effects.h"
#include "http.h"
#include "merchant_auth.h"
#include "merchant_crypto.h"

#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------- */
/* Shared helpers                                                                         */
/* ---------------------------------------------------------------------------------------- */
void api_mrc_wipe_extra(void *p)
{
    struct api_mrc_state *qs = p;
    if (qs->extra_value) {
        mcrypto_wipe(qs->extra_value, strlen(qs->extra_value));
        free(qs->extra_value);
    }
}

void api_mrc_query_cb(struct db_result *res, void *arg)
{
    struct req_ctx *rc = arg;
    struct api_mrc_state *qs = rc->state;
    const char *v = db_result_status(res) == ST_OK && db_result_ntuples(res) > 0
                        ? db_result_value(res, 0, 0)
                        : NULL;
    json_t *j = v ? json_loads(v, 0, NULL) : NULL;
    if (!j) {
        http_reply_db(rc, res, qs->code);
        return;
    }
    if (qs->flags & API_MRC_EFFECTS)
        effects_apply(rc->app, j);
    if (qs->flags & API_MRC_STRIP)
        json_object_del(j, "balances");
    if (qs->flags & API_MRC_FORGET_KEYS) {
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

struct api_mrc_state *api_mrc_state_new(struct req_ctx *rc, int code, unsigned flags)
{
    struct api_mrc_state *qs = arena_alloc(rc->arena, sizeof *qs);
    qs->code = code;
    qs->flags = flags;
    rc->state = qs;
    return qs;
}

void api_mrc_query(struct req_ctx *rc, const char *sql, int n, const char *const *params, int code,
                   unsigned flags)
{
    api_mrc_state_new(rc, code, flags);
    db_query(rc->app->db, sql, n, params, api_mrc_query_cb, rc);
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

const struct api_qspec api_mrc_page_specs[1] = {{"cursor", API_Q_STR}};

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

/* ---------------------------------------------------------------------------------------- */
/* Statements and settlements, for the three kinds of callers                             */
/* ---------------------------------------------------------------------------------------- */

static const char *const sql_statement[] = {
    [API_MRC_ADMIN] =
        "SELECT gp_m_statement((gp_merchant_require($1::bigint, $2::bigint, 'read')).id, "
        "$3::timestamptz, $4::timestamptz, $5::bigint, $6::int)",
    [API_MRC_MERCHANT] = "SELECT gp_m_statement((gp_mrc_principal($1)).id, $2::timestamptz, "
                         "$3::timestamptz, $4::bigint, $5::int)",
    [API_MRC_CONSOLE] = "SELECT gp_m_statement((gp_merchant_for_staff($1::bigint, $2::bigint)).id, "
                        "$3::timestamptz, $4::timestamptz, $5::bigint, $6::int)",
};
static const char *const sql_statement_csv[] = {
    [API_MRC_ADMIN] =
        "SELECT gp_m_statement_csv((gp_merchant_require($1::bigint, $2::bigint, 'read')).id, "
        "$3::timestamptz, $4::timestamptz)",
    [API_MRC_MERCHANT] = "SELECT gp_m_statement_csv((gp_mrc_principal($1)).id, $2::timestamptz, "
                         "$3::timestamptz)",
    [API_MRC_CONSOLE] =
        "SELECT gp_m_statement_csv((gp_merchant_for_staff($1::bigint, $2::bigint)).id, "
        "$3::timestamptz, $4::timestamptz)",
};
static const char *const sql_settlements[] = {
    [API_MRC_ADMIN] =
        "SELECT gp_m_settlements((gp_merchant_require($1::bigint, $2::bigint, 'read')).id, "
        "$3::jsonb)",
    [API_MRC_MERCHANT] = "SELECT gp_m_settlements((gp_mrc_principal($1)).id, $2::jsonb)",
    [API_MRC_CONSOLE] =
        "SELECT gp_m_settlements((gp_merchant_for_staff($1::bigint, $2::bigint)).id, "
        "$3::jsonb)",
};
static const char *const sql_settlement_get[] = {
    [API_MRC_ADMIN] =
        "SELECT gp_m_settlement_get((gp_merchant_require($1::bigint, $2::bigint, 'read')).id, "
        "$3::bigint, $4::bigint, $5::int)",
    [API_MRC_MERCHANT] =
        "SELECT gp_m_settlement_get((gp_mrc_principal($1)).id, $2::bigint, $3::bigint, "
        "$4::int)",
    [API_MRC_CONSOLE] =
        "SELECT gp_m_settlement_get((gp_merchant_for_staff($1::bigint, $2::bigint)).id, "
        "$3::bigint, $4::bigint, $5::int)",
};
static const char *const sql_settlement_csv[] = {
    [API_MRC_ADMIN] =
        "SELECT gp_m_settlement_csv((gp_merchant_require($1::bigint, $2::bigint, 'read')).id, "
        "$3::bigint)",
    [API_MRC_MERCHANT] = "SELECT gp_m_settlement_csv((gp_mrc_principal($1)).id, $2::bigint)",
    [API_MRC_CONSOLE] =
        "SELECT gp_m_settlement_csv((gp_merchant_for_staff($1::bigint, $2::bigint)).id, "
        "$3::bigint)",
};

/* Fills the leading parameters that name the merchant: (key id) or (actor, merchant id from
 * path parameter 0). Returns how many, or -1 after replying. */
static int who_params(struct req_ctx *rc, enum api_mrc_who who, const char **params)
{
    if (who == API_MRC_MERCHANT) {
        params[0] = rc->principal.key_id;
        return 1;
    }
    int64_t id;
    if (!http_param_id_or_reply(rc, 0, &id))
        return -1;
    params[0] = api_actor(rc);
    params[1] = api_i64(rc, id);
    return 2;
}

void api_mrc_statement_for(struct req_ctx *rc, enum api_mrc_who who)
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
    api_mrc_query(rc, sql_statement[who], n, params, 200, 0);
}

void api_mrc_settlements_for(struct req_ctx *rc, enum api_mrc_who who)
{
    const char *params[4];
    int n = who_params(rc, who, params);
    if (n < 0)
        return;
    const char *args =
        api_query_args_or_reply(rc, api_mrc_page_specs, ARRAY_SIZE(api_mrc_page_specs));
    if (!args)
        return;
    params[n++] = args;
    api_mrc_query(rc, sql_settlements[who], n, params, 200, 0);
}

void api_mrc_settlement_get_for(struct req_ctx *rc, enum api_mrc_who who)
{
    const char *params[8], *after;
    int limit;
    bool csv;
    int64_t sid;
    int n = who_params(rc, who, params);
    if (n < 0 || !http_param_id_or_reply(rc, who == API_MRC_MERCHANT ? 0 : 1, &sid) ||
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
    api_mrc_query(rc, sql_settlement_get[who], n, params, 200, 0);
}
