/* api_ledger.c -- points: balances (Redis first), statements, ranks, budgets, grants,
 * adjustments, policies. The ledger's rules live in sql/0003_ledger.sql; see docs/LEDGER.md. */
#include "api.h"
#include "app.h"
#include "arena.h"
#include "config.h"
#include "db.h"
#include "effects.h"
#include "http.h"
#include "ledger.h"

#include <stdio.h>
#include <string.h>

/* {id} of /workers/{id}/...: a positive id, or "me". */
static bool worker_param_or_reply(struct req_ctx *rc, int64_t *out)
{
    if (rc->params.n > 0 && !strcmp(rc->params.values[0], "me")) {
        *out = rc->principal.person_id;
        return true;
    }
    return http_param_id_or_reply(rc, 0, out);
}

/* ---- balance: Redis first, the ledger on a miss or when Redis is down ---- */

struct balance_state {
    int64_t worker;
};

static void balance_from_ledger(struct req_ctx *rc)
{
    struct balance_state *bs = rc->state;
    const char *params[] = {api_actor(rc), api_i64(rc, bs->worker)};
    api_write(rc, "SELECT body, effects FROM gp_balance($1, $2)", 2, params,
              200); /* its effect refills the cache */
}

static char *put_text(char *p, const char *s)
{
    size_t n = strlen(s);
    memcpy(p, s, n);
    return p + n;
}

static void balance_cache_cb(enum status st, const struct ledger_balance *bal, void *arg)
{
    struct req_ctx *rc = arg;
    if (st != ST_OK) {
        balance_from_ledger(rc);
        return;
    }
    /* The hottest read: four integers written straight into the reply, no JSON tree and no
     * printf: {"worker_id":W,"available":A,"pending":P,"version":V,"source":"cache"} */
    char body[192], *p = body;
    p = put_text(p, "{\"worker_id\":");
    p = common_put_dec(p, bal->worker_id);
    p = put_text(p, ",\"available\":");
    p = common_put_dec(p, bal->available);
    p = put_text(p, ",\"pending\":");
    p = common_put_dec(p, bal->pending);
    p = put_text(p, ",\"version\":");
    p = common_put_dec(p, bal->version);
    p = put_text(p, ",\"source\":\"cache\"}");
    http_reply_json_text(rc, 200, body, (size_t)(p - body));
}

void api_balance(struct req_ctx *rc)
{
    int64_t worker;
    if (!worker_param_or_reply(rc, &worker))
        return;
    struct balance_state *bs = arena_alloc(rc->arena, sizeof *bs);
    bs->worker = worker;
    rc->state = bs;
    /* Only a worker's own balance comes from the cache; anyone else's read goes through the
     * ledger, whose function checks the reader's scope. */
    if (worker != rc->principal.person_id) {
        balance_from_ledger(rc);
        return;
    }
    ledger_cache_get(rc->app->ledger, worker, balance_cache_cb, rc);
}

void api_points(struct req_ctx *rc)
{
    int64_t worker;
    if (!worker_param_or_reply(rc, &worker))
        return;
    const char *params[] = {api_actor(rc), api_i64(rc, worker)};
    api_write(rc, "SELECT body, effects FROM gp_balance($1, $2)", 2, params, 200);
}

void api_statement(struct req_ctx *rc)
{
    int64_t worker;
    struct api_page page;
    const char *from, *to;
    const char *kind = http_query(rc, "kind");
    if (!worker_param_or_reply(rc, &worker) || !api_page_or_reply(rc, API_CURSOR_ID, &page) ||
        !http_query_time_or_reply(rc, "from", &from) || !http_query_time_or_reply(rc, "to", &to))
        return;
    if (kind &&
        (strlen(kind) > 16 || strspn(kind, "abcdefghijklmnopqrstuvwxyz_") != strlen(kind))) {
        http_reply_error(rc, ST_INVALID, "invalid_query", "kind", "unknown transaction kind");
        return;
    }
    const char *format = http_query(rc, "format");
    if (format && strcmp(format, "json") && strcmp(format, "xlsx")) {
        http_reply_error(rc, ST_INVALID, "invalid_query", "format", "format must be json or xlsx");
        return;
    }
    if (format && !strcmp(format, "xlsx")) {
        /* every posting of the window as one workbook (api_export.c) */
        const char *xp[] = {api_actor(rc),
                            api_i64(rc, worker),
                            kind,
                            from,
                            to,
                            api_i64(rc, rc->app->cfg->console_export_max_rows)};
        char name[64];
        snprintf(name, sizeof name, "statement-%lld.xlsx", (long long)worker);
        api_xlsx(rc,
                 "SELECT gp_statement_xlsx($1, $2, $3, $4::timestamptz, $5::timestamptz, $6::int)",
                 6, xp, name);
        return;
    }
    const char *params[] = {api_actor(rc), api_i64(rc, worker),    kind, from, to,
                            page.cursor,   api_i64(rc, page.limit)};
    api_query(rc, "SELECT gp_statement($1, $2, $3, $4::timestamptz, $5::timestamptz, $6, $7)", 7,
              params, 200);
}

/* ---- rank: the Redis board (kept fresh by the awards' effects), the ledger on a miss ---- */

struct rank_state {
    int64_t worker;
    const char *scope;
    const char *period;
    int64_t unit_id; /* the board's unit, from gp_rank_target */
    char level[16];
};

static void rank_from_ledger(struct req_ctx *rc)
{
    struct rank_state *rs = rc->state;
    const char *params[] = {api_actor(rc), api_i64(rc, rs->worker), rs->scope, rs->period};
    api_query(rc, "SELECT gp_rank($1, $2, $3, $4)", 4, params, 200);
}

static void rank_built(enum status st, int64_t next, int count, void *arg)
{
    (void)st, (void)next, (void)count, (void)arg; /* ledger.c logs a failed build */
}

static void rank_cache_cb(enum status st, const struct ledger_rank *r, void *arg)
{
    struct req_ctx *rc = arg;
    struct rank_state *rs = rc->state;
    if (st != ST_OK) {
        /* a missing or incomplete board: answer from the ledger and build the board */
        if (st == ST_NOT_FOUND)
            ledger_rank_build(rc->app, rs->unit_id, rs->period, rank_built, NULL);
        rank_from_ledger(rc);
        return;
    }
    /* A worker who earned nothing in the period has no rank (not 1, not total + 1). */
    json_t *rank = r->points > 0 ? json_integer(r->rank) : json_null();
    http_reply_json(rc, 200,
                    json_pack("{s:I, s:I, s:s, s:s, s:I, s:o, s:I, s:s}", "worker_id",
                              (json_int_t)r->worker_id, "unit_id", (json_int_t)r->unit_id, "level",
                              rs->level, "period", r->period, "points", (json_int_t)r->points,
                              "rank", rank, "total", (json_int_t)r->total, "source", "cache"));
}

static void rank_target_cb(struct db_result *res, void *arg)
{
    struct req_ctx *rc = arg;
    struct rank_state *rs = rc->state;
    json_t *j = api_result_json_or_reply(rc, res, 200);
    if (!j)
        return;
    json_t *unit = json_object_get(j, "unit_id");
    const char *level = json_string_value(json_object_get(j, "level"));
    if (!json_is_integer(unit) || !level) {
        json_decref(j);
        http_reply_error(rc, ST_INTERNAL, "internal", NULL, "unexpected rank target");
        return;
    }
    snprintf(rs->level, sizeof rs->level, "%s", level);
    rs->unit_id = (int64_t)json_integer_value(unit);
    json_decref(j);
    ledger_rank_get(rc->app->ledger, rs->worker, rs->unit_id, rs->period, rank_cache_cb, rc);
}

void api_rank(struct req_ctx *rc)
{
    int64_t worker;
    if (!worker_param_or_reply(rc, &worker))
        return;
    const char *scope = http_query(rc, "scope");
    const char *period = http_query(rc, "period");
    if (!scope)
        scope = "grid";
    if (strcmp(scope, "grid") && strcmp(scope, "community") && strcmp(scope, "street")) {
        http_reply_error(rc, ST_INVALID, "invalid_query", "scope",
                         "scope must be grid, community or street");
        return;
    }
    if (period && !ledger_period_valid(period)) {
        http_reply_error(rc, ST_INVALID, "invalid_query", "period",
                         "period must be YYYY-MM or all");
        return;
    }
    struct rank_state *rs = arena_alloc(rc->arena, sizeof *rs);
    *rs = (struct rank_state){.worker = worker, .scope = scope, .period = period ? period : "all"};
    rc->state = rs;
    /* The scope check and the board's unit come from PostgreSQL (a few index reads); the
     * rank itself from the board in Redis. */
    const char *params[] = {api_actor(rc), api_i64(rc, worker), scope, rs->period};
    db_query(rc->app->db, "SELECT gp_rank_target($1, $2, $3, $4)", 4, params, rank_target_cb, rc);
}

/* ---- budgets ---- */

void api_budgets(struct req_ctx *rc)
{
    int64_t unit = 0;
    struct api_page page;
    if (!http_query_i64_or_reply(rc, "unit_id", 1, INT64_MAX, &unit) ||
        !api_page_or_reply(rc, API_CURSOR_ID, &page))
        return;
    if (!unit)
        unit = rc->principal.unit_id;
    const char *params[] = {api_actor(rc), api_i64(rc, unit), page.cursor, api_i64(rc, page.limit)};
    api_query(rc, "SELECT gp_budgets($1, $2, $3, $4)", 4, params, 200);
}

void api_budget_issue(struct req_ctx *rc)
{
    static const char *const fields[] = {"unit_id", "amount", "memo", NULL};
    struct jv_err e = {0};
    int64_t unit, amount;
    const char *memo = NULL;
    if (!http_body_only_or_reply(rc, fields))
        return;
    if (!jv_i64(rc->json, "unit_id", true, 1, INT64_MAX, &unit, &e) ||
        !jv_i64(rc->json, "amount", true, 1, INT64_MAX, &amount, &e) ||
        !jv_str(rc->json, "memo", false, 0, 500, &memo, &e)) {
        http_reply_jv(rc, &e);
        return;
    }
    const char *principal, *key, *hash;
    api_idem_params(rc, &principal, &key, &hash);
    const char *params[] = {
        api_actor(rc), api_i64(rc, unit), api_i64(rc, amount), memo, principal, key, hash};
    api_query(rc, "SELECT gp_issue($1, $2, $3, $4, $5, $6, $7)", 7, params, 201);
}

void api_budget_grant(struct req_ctx *rc)
{
    static const char *const fields[] = {"from_unit_id", "to_unit_id", "amount", "memo", NULL};
    struct jv_err e = {0};
    int64_t from, to, amount;
    const char *memo = NULL;
    if (!http_body_only_or_reply(rc, fields))
        return;
    if (!jv_i64(rc->json, "from_unit_id", true, 1, INT64_MAX, &from, &e) ||
        !jv_i64(rc->json, "to_unit_id", true, 1, INT64_MAX, &to, &e) ||
        !jv_i64(rc->json, "amount", true, 1, INT64_MAX, &amount, &e) ||
        !jv_str(rc->json, "memo", false, 0, 500, &memo, &e)) {
        http_reply_jv(rc, &e);
        return;
    }
    const char *principal, *key, *hash;
    api_idem_params(rc, &principal, &key, &hash);
    const char *params[] = {api_actor(rc),
                            api_i64(rc, from),
                            api_i64(rc, to),
                            api_i64(rc, amount),
                            memo,
                            principal,
                            key,
                            hash};
    api_query(rc, "SELECT gp_grant($1, $2, $3, $4, $5, $6, $7, $8)", 8, params, 201);
}

void api_adjust(struct req_ctx *rc)
{
    static const char *const fields[] = {"worker_id", "amount", "reason", "category", NULL};
    /* The reason categories the public points board shows (the free-text reason it never
     * shows); docs/openapi.yaml lists the same. */
    static const char *const categories[] = {"correction", "objection", "bonus", "penalty",
                                             "other"};
    struct jv_err e = {0};
    int64_t worker, amount;
    const char *reason, *category = NULL;
    if (!http_body_only_or_reply(rc, fields))
        return;
    if (!jv_i64(rc->json, "worker_id", true, 1, INT64_MAX, &worker, &e) ||
        !jv_i64(rc->json, "amount", true, -INT64_MAX, INT64_MAX, &amount, &e) ||
        !jv_str(rc->json, "reason", true, 1, 500, &reason, &e) ||
        !jv_str(rc->json, "category", false, 1, 16, &category, &e)) {
        http_reply_jv(rc, &e);
        return;
    }
    bool known = category == NULL;
    for (size_t i = 0; !known && i < ARRAY_SIZE(categories); i++)
        known = strcmp(category, categories[i]) == 0;
    if (!known) {
        http_reply_error(rc, ST_INVALID, "invalid_field", "category",
                         "category must be correction, objection, bonus, penalty or other");
        return;
    }
    if (amount == 0) {
        http_reply_error(rc, ST_INVALID, "invalid_amount", "amount", "amount must not be zero");
        return;
    }
    const char *principal, *key, *hash;
    api_idem_params(rc, &principal, &key, &hash);
    const char *params[] = {
        api_actor(rc), api_i64(rc, worker),          api_i64(rc, amount), reason, principal, key,
        hash,          category ? category : "other"};
    api_write(rc, "SELECT body, effects FROM gp_adjust($1, $2, $3, $4, $5, $6, $7, $8)", 8, params,
              201);
}

void api_task_reservation(struct req_ctx *rc)
{
    int64_t id;
    struct api_page page;
    if (!http_param_id_or_reply(rc, 0, &id) || !api_page_or_reply(rc, API_CURSOR_ID, &page))
        return;
    const char *params[] = {api_actor(rc), api_i64(rc, id), page.cursor, api_i64(rc, page.limit)};
    api_query(rc, "SELECT gp_task_reservation($1, $2, $3, $4)", 4, params, 200);
}

void api_policy_get(struct req_ctx *rc)
{
    int64_t id;
    if (!http_param_id_or_reply(rc, 0, &id))
        return;
    const char *params[] = {api_actor(rc), api_i64(rc, id)};
    api_query(rc, "SELECT gp_policy_get($1, $2)", 2, params, 200);
}

void api_policy_set(struct req_ctx *rc)
{
    static const char *const fields[] = {"objection_period", "expiry", NULL};
    int64_t id;
    if (!http_param_id_or_reply(rc, 0, &id) || !http_body_only_or_reply(rc, fields))
        return;
    const char *params[] = {api_actor(rc), api_i64(rc, id), api_json_text(rc, rc->json)};
    api_query(rc, "SELECT gp_policy_set($1, $2, $3::jsonb)", 3, params, 200);
}
