/* api_audit.c -- /audit/v1 (auditors and street admins, read-only, scoped to their subtree by
 * the SQL functions of sql/0006_audit.sql), the public checkpoint key and latest checkpoint
 * under /.well-known/gridpoints/, and the public points board. See docs/AUDIT.md. */
#include "api.h"
#include "app.h"
#include "arena.h"
#include "config.h"
#include "db.h"
#include "http.h"
#include "ledger.h"

#include <stdio.h>
#include <string.h>

/* Every /audit/v1 route but the proof of one transaction (which a worker may ask about their
 * own) is for auditors and street admins: routes.c gives them the auditor guard (auth.h), so
 * the role is checked before these handlers run; the SQL re-checks the scope of each object. */

/* The unit whose subtree is read: ?unit_id=, else the caller's home unit. */
static bool unit_or_reply(struct req_ctx *rc, const char **out)
{
    int64_t unit = 0;
    if (!http_query_i64_or_reply(rc, "unit_id", 1, INT64_MAX, &unit))
        return false;
    *out = api_i64(rc, unit ? unit : rc->principal.unit_id);
    return true;
}

static bool id_query_or_reply(struct req_ctx *rc, const char *key, json_t *args)
{
    int64_t v = 0;
    if (!http_query_i64_or_reply(rc, key, 1, INT64_MAX, &v))
        return false;
    if (v)
        json_object_set_new(args, key, json_integer(v));
    return true;
}

/* Adds the common list arguments (limit, after cursor, from, to) to args. */
static bool list_args_or_reply(struct req_ctx *rc, json_t *args)
{
    struct api_page page;
    const char *from, *to;
    if (!api_page_or_reply(rc, API_CURSOR_ID, &page) ||
        !http_query_time_or_reply(rc, "from", &from) || !http_query_time_or_reply(rc, "to", &to))
        return false;
    json_object_set_new(args, "limit", json_integer(page.limit));
    if (page.cursor)
        json_object_set_new(args, "after", json_string(page.cursor));
    if (from)
        json_object_set_new(args, "from", json_string(from));
    if (to)
        json_object_set_new(args, "to", json_string(to));
    return true;
}

static const char *args_text(struct req_ctx *rc, json_t *args)
{
    const char *t = api_json_text(rc, args);
    json_decref(args);
    return t;
}

void api_audit_status(struct req_ctx *rc)
{
    const char *params[] = {api_actor(rc)};
    api_query(rc, "SELECT gp_audit_status($1)", 1, params, 200);
}

void api_audit_checkpoints(struct req_ctx *rc)
{
    struct api_page page;
    if (!api_page_or_reply(rc, API_CURSOR_ID, &page))
        return;
    const char *params[] = {api_actor(rc), page.cursor, api_i64(rc, page.limit)};
    api_query(rc, "SELECT gp_audit_checkpoints($1, $2::bigint, $3)", 3, params, 200);
}

void api_audit_consistency(struct req_ctx *rc)
{
    int64_t from = 0, to = 0;
    if (!http_query_i64_or_reply(rc, "from", 1, INT64_MAX, &from) ||
        !http_query_i64_or_reply(rc, "to", 1, INT64_MAX, &to))
        return;
    if (!from) {
        http_reply_error(rc, ST_INVALID, "invalid_query", "from",
                         "from (a checkpoint size) is required");
        return;
    }
    const char *params[] = {api_actor(rc), api_i64(rc, from), to ? api_i64(rc, to) : NULL};
    api_query(rc, "SELECT gp_audit_consistency($1, $2::bigint, $3::bigint)", 3, params, 200);
}

void api_audit_txn_search(struct req_ctx *rc)
{
    const char *unit;
    const char *kind = http_query(rc, "kind");
    json_t *args = json_object();
    if (!unit_or_reply(rc, &unit) || !id_query_or_reply(rc, "account_id", args) ||
        !list_args_or_reply(rc, args)) {
        json_decref(args);
        return;
    }
    if (kind) {
        if (strlen(kind) > 16 || strspn(kind, "abcdefghijklmnopqrstuvwxyz_") != strlen(kind)) {
            json_decref(args);
            http_reply_error(rc, ST_INVALID, "invalid_query", "kind", "unknown transaction kind");
            return;
        }
        json_object_set_new(args, "kind", json_string(kind));
    }
    const char *params[] = {api_actor(rc), unit, args_text(rc, args)};
    api_query(rc, "SELECT gp_audit_txn_search($1, $2, $3::jsonb)", 3, params, 200);
}

void api_audit_txn_proof(struct req_ctx *rc)
{
    int64_t id, size = 0;
    if (!http_param_id_or_reply(rc, 0, &id) ||
        !http_query_i64_or_reply(rc, "checkpoint", 1, INT64_MAX, &size))
        return;
    const char *params[] = {api_actor(rc), api_i64(rc, id), size ? api_i64(rc, size) : NULL};
    api_query(rc, "SELECT gp_audit_txn_proof($1, $2, $3::bigint)", 3, params, 200);
}

void api_audit_statement(struct req_ctx *rc)
{
    int64_t worker;
    json_t *args = json_object();
    if (!http_param_id_or_reply(rc, 0, &worker) || !list_args_or_reply(rc, args)) {
        json_decref(args);
        return;
    }
    const char *proofs = http_query(rc, "proofs");
    if (proofs && strcmp(proofs, "true") && strcmp(proofs, "false")) {
        json_decref(args);
        http_reply_error(rc, ST_INVALID, "invalid_query", "proofs", "proofs must be true or false");
        return;
    }
    json_object_set_new(args, "proofs", json_boolean(proofs && !strcmp(proofs, "true")));
    const char *format = http_query(rc, "format");
    if (format && strcmp(format, "json") && strcmp(format, "xlsx")) {
        json_decref(args);
        http_reply_error(rc, ST_INVALID, "invalid_query", "format", "format must be json or xlsx");
        return;
    }
    if (format && !strcmp(format, "xlsx")) {
        json_t *f = json_object_get(args, "from"), *t = json_object_get(args, "to");
        const char *xp[] = {api_actor(rc),
                            api_i64(rc, worker),
                            NULL,
                            f ? arena_strdup(rc->arena, json_string_value(f)) : NULL,
                            t ? arena_strdup(rc->arena, json_string_value(t)) : NULL,
                            api_i64(rc, rc->app->cfg->console_export_max_rows)};
        json_decref(args);
        char name[64];
        snprintf(name, sizeof name, "statement-%lld.xlsx", (long long)worker);
        api_xlsx(rc,
                 "SELECT gp_statement_xlsx($1, $2, $3, $4::timestamptz, $5::timestamptz, $6::int)",
                 6, xp, name);
        return;
    }
    const char *params[] = {api_actor(rc), api_i64(rc, worker), args_text(rc, args)};
    api_query(rc, "SELECT gp_audit_statement($1, $2, $3::jsonb)", 3, params, 200);
}

void api_audit_trial_balance(struct req_ctx *rc)
{
    const char *unit;
    if (!unit_or_reply(rc, &unit))
        return;
    const char *params[] = {api_actor(rc), unit};
    api_query(rc, "SELECT gp_audit_trial_balance($1, $2)", 2, params, 200);
}

void api_audit_budget_use(struct req_ctx *rc)
{
    const char *unit;
    struct api_page page;
    if (!unit_or_reply(rc, &unit) || !api_page_or_reply(rc, API_CURSOR_ID, &page))
        return;
    const char *params[] = {api_actor(rc), unit, page.cursor, api_i64(rc, page.limit)};
    api_query(rc, "SELECT gp_audit_budget_use($1, $2, $3::bigint, $4)", 4, params, 200);
}

void api_audit_log(struct req_ctx *rc)
{
    const char *unit;
    json_t *args = json_object();
    if (!unit_or_reply(rc, &unit) || !id_query_or_reply(rc, "actor_id", args) ||
        !list_args_or_reply(rc, args)) {
        json_decref(args);
        return;
    }
    static const char *const texts[] = {"action", "object_type", "object_id"};
    for (size_t i = 0; i < ARRAY_SIZE(texts); i++) {
        const char *v = http_query(rc, texts[i]);
        if (!v)
            continue;
        if (strlen(v) > 64) {
            json_decref(args);
            http_reply_error(rc, ST_INVALID, "invalid_query", texts[i], "%s is too long", texts[i]);
            return;
        }
        json_object_set_new(args, texts[i], json_string(v));
    }
    const char *params[] = {api_actor(rc), unit, args_text(rc, args)};
    api_query(rc, "SELECT gp_audit_log_search($1, $2, $3::jsonb)", 3, params, 200);
}

void api_audit_anomalies(struct req_ctx *rc)
{
    const char *unit, *from, *to;
    if (!unit_or_reply(rc, &unit) || !http_query_time_or_reply(rc, "from", &from) ||
        !http_query_time_or_reply(rc, "to", &to))
        return;
    const char *rule = http_query(rc, "rule");
    if (rule &&
        (strlen(rule) > 32 || strspn(rule, "abcdefghijklmnopqrstuvwxyz_") != strlen(rule))) {
        http_reply_error(rc, ST_INVALID, "invalid_rule", "rule", "unknown anomaly rule");
        return;
    }
    const struct config *cfg = rc->app->cfg;
    json_t *args = json_object();
    if (from)
        json_object_set_new(args, "from", json_string(from));
    if (to)
        json_object_set_new(args, "to", json_string(to));
    if (rule)
        json_object_set_new(args, "rule", json_string(rule));
    json_t *thresholds =
        json_pack("{s:i, s:i, s:i}", "max_completions_per_day", cfg->audit_anomaly_max_completions,
                  "min_report_after_claim_s", cfg->audit_anomaly_min_report_s,
                  "shared_device_workers", cfg->audit_anomaly_shared_workers);
    const char *params[] = {api_actor(rc), unit, args_text(rc, args), args_text(rc, thresholds)};
    api_query(rc, "SELECT gp_audit_anomalies($1, $2, $3::jsonb, $4::jsonb)", 4, params, 200);
}

/* ---- exports: text bodies (JSON Lines or CSV) ---- */

struct text_state {
    const char *content_type;
};

static void text_cb(struct db_result *res, void *arg)
{
    struct req_ctx *rc = arg;
    struct text_state *ts = rc->state;
    const char *v = db_result_status(res) == ST_OK && db_result_ntuples(res) > 0
                        ? db_result_value(res, 0, 0)
                        : NULL;
    if (!v) {
        if (db_result_status(res) == ST_OK)
            http_reply_error(rc, ST_NOT_FOUND, "not_found", NULL, "nothing to show yet");
        else
            http_reply_db(rc, res, 200);
        return;
    }
    http_reply_raw(rc, 200, ts->content_type, v, strlen(v));
}

static void text_query(struct req_ctx *rc, const char *content_type, const char *sql, int n,
                       const char *const *params)
{
    struct text_state *ts = arena_alloc(rc->arena, sizeof *ts);
    ts->content_type = content_type;
    rc->state = ts;
    db_query(rc->db, sql, n, params, text_cb, rc);
}

void api_audit_export(struct req_ctx *rc)
{
    const char *unit, *from, *to;
    int64_t anchor = 0;
    struct api_page page;
    /* Batches of an export stream, not pages of a list: their own default and maximum. */
    if (!unit_or_reply(rc, &unit) || !http_query_time_or_reply(rc, "from", &from) ||
        !http_query_time_or_reply(rc, "to", &to) ||
        !api_page_sized_or_reply(rc, API_CURSOR_ID, 500, 5000, &page) ||
        !http_query_i64_or_reply(rc, "checkpoint", 1, INT64_MAX, &anchor))
        return;
    const char *format = http_query(rc, "format");
    if (!format)
        format = "jsonl";
    if (strcmp(format, "jsonl") && strcmp(format, "csv") && strcmp(format, "xlsx")) {
        http_reply_error(rc, ST_INVALID, "invalid_query", "format",
                         "format must be jsonl, csv or xlsx");
        return;
    }
    if (!strcmp(format, "xlsx")) {
        /* the whole range as one workbook, as the CSV's rows (api_export.c) */
        const char *xp[] = {api_actor(rc),
                            unit,
                            from,
                            to,
                            anchor ? api_i64(rc, anchor) : NULL,
                            api_i64(rc, rc->app->cfg->console_export_max_rows)};
        api_xlsx(rc,
                 "SELECT gp_audit_export_xlsx($1, $2, $3::timestamptz, $4::timestamptz, "
                 "$5::bigint, $6::int)",
                 6, xp, "ledger-export.xlsx");
        return;
    }
    const char *params[] = {api_actor(rc), unit,
                            from,          to,
                            page.cursor,   api_i64(rc, page.limit),
                            format,        anchor ? api_i64(rc, anchor) : NULL};
    text_query(rc,
               strcmp(format, "csv") ? "application/x-ndjson; charset=utf-8"
                                     : "text/csv; charset=utf-8",
               "SELECT gp_audit_export_page($1, $2, $3::timestamptz, $4::timestamptz, $5::bigint, "
               "$6, $7, $8::bigint)",
               8, params);
}

/* ---- public ---- */

void api_audit_keys(struct req_ctx *rc)
{
    api_query(rc, "SELECT gp_audit_keys_json()", 0, NULL, 200);
}

void api_audit_latest_checkpoint(struct req_ctx *rc)
{
    text_query(rc, "text/plain; charset=utf-8", "SELECT gp_audit_latest_note()", 0, NULL);
}

void api_points_board(struct req_ctx *rc)
{
    int64_t grid;
    if (!http_param_id_or_reply(rc, 0, &grid))
        return;
    const char *month = http_query(rc, "month");
    if (!month || !ledger_period_valid(month) || !strcmp(month, "all")) {
        http_reply_error(rc, ST_INVALID, "invalid_query", "month", "month must be YYYY-MM");
        return;
    }
    const char *params[] = {api_i64(rc, grid), month};
    api_query(rc, "SELECT gp_points_board($1, $2)", 2, params, 200);
}
