/* api_mrc.c -- what the merchant handlers share (api_mrc_admin.c, api_mrc_signed.c,
 * api_mrc_console.c; SPEC §3, §5; docs/MERCHANTS.md): statements and settlements, read by
 * three kinds of callers. The rules live in sql/0005_merchants.sql; the query path is
 * api_core.c's (api_run). */
#include "api_mrc.h"
#include "app.h"
#include "db.h"
#include "http.h"

#include <string.h>

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
    const char *from, *to;
    struct api_page page;
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
    if (!api_page_or_reply(rc, API_CURSOR_ID, &page))
        return;
    params[n++] = page.cursor;
    params[n++] = api_i64(rc, page.limit);
    api_query(rc, sql_statement[who], n, params, 200);
}

void api_mrc_settlements_for(struct req_ctx *rc, enum api_mrc_who who)
{
    const char *params[4];
    int n = who_params(rc, who, params);
    if (n < 0)
        return;
    const char *args = api_query_args_or_reply(rc, NULL, 0);
    if (!args)
        return;
    params[n++] = args;
    api_query(rc, sql_settlements[who], n, params, 200);
}

void api_mrc_settlement_get_for(struct req_ctx *rc, enum api_mrc_who who)
{
    const char *params[8];
    struct api_page page;
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
    if (!api_page_or_reply(rc, API_CURSOR_ID, &page))
        return;
    params[n++] = page.cursor;
    params[n++] = api_i64(rc, page.limit);
    api_query(rc, sql_settlement_get[who], n, params, 200);
}
