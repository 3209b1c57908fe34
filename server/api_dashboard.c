/* api_dashboard.c -- the street dashboard (一屏统揽, issue 14): GET /api/v1/dashboard reads the
 * per-day subtree counters that the `dashboard` sweep folds from the events
 * (sql/migrations/0021_dashboard_rollups.sql, gp_dash_fold) through gp_dashboard
 * (sql/functions/90_dashboard.sql), which checks the caller's scope (404). */
#include "api.h"
#include "app.h"
#include "config.h"
#include "http.h"

void api_dashboard(struct req_ctx *rc)
{
    const struct config *cfg = rc->app->cfg;
    int64_t unit = 0, days = 0;
    if (!http_query_i64_or_reply(rc, "unit_id", 1, INT64_MAX, &unit) ||
        !http_query_i64_or_reply(rc, "days", 1, cfg->console_dashboard_max_days, &days))
        return;
    const char *params[] = {
        api_actor(rc), unit ? api_i64(rc, unit) : NULL,
        api_i64(rc, days ? days
                         : (cfg->console_dashboard_max_days < 30 ? cfg->console_dashboard_max_days
                                                                 : 30)),
        api_i64(rc, cfg->console_dashboard_refresh_s)};
    api_query(rc, "SELECT gp_dashboard($1, $2::bigint, $3::int, $4::int)", 4, params, 200);
}

/* The public board's pickers: streets, or the communities of a street, or the grids of a
 * community (no session; names only). */
void api_public_units(struct req_ctx *rc)
{
    int64_t parent = 0;
    if (!http_query_i64_or_reply(rc, "parent_id", 1, INT64_MAX, &parent))
        return;
    const char *params[] = {parent ? api_i64(rc, parent) : NULL};
    api_query(rc, "SELECT gp_public_units($1::bigint)", 1, params, 200);
}
