/* api_mrc_console.c -- /api/v1/console/merchants: merchant staff with a session read
 * their merchant's offers, statement and settlements (docs/MERCHANTS.md). */
#include "api.h"
#include "api_mrc.h"
#include "http.h"

void api_console_merchants(struct req_ctx *rc)
{
    const char *params[] = {api_actor(rc)};
    api_query(rc, "SELECT gp_console_merchants($1)", 1, params, 200);
}

void api_console_offers(struct req_ctx *rc)
{
    static const struct api_qspec specs[] = {{"status", API_Q_STR}};
    int64_t id;
    if (!http_param_id_or_reply(rc, 0, &id))
        return;
    const char *args = api_query_args_or_reply(rc, specs, ARRAY_SIZE(specs));
    if (!args)
        return;
    const char *params[] = {api_actor(rc), api_i64(rc, id), args};
    api_query(rc, "SELECT gp_m_offers((gp_merchant_for_staff($1, $2)).id, $3::jsonb)", 3, params,
              200);
}

void api_console_statement(struct req_ctx *rc)
{
    api_mrc_statement_for(rc, API_MRC_CONSOLE);
}

void api_console_settlements(struct req_ctx *rc)
{
    api_mrc_settlements_for(rc, API_MRC_CONSOLE);
}

void api_console_settlement_get(struct req_ctx *rc)
{
    api_mrc_settlement_get_for(rc, API_MRC_CONSOLE);
}
