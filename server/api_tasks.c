/* api_tasks.c -- the work loop over HTTP: publish, discover, claim, check in, report, review.
 *
 * The SQL functions of sql/0004_tasks.sql validate the meaning of every argument (they know
 * the task's state and the caller's scope); here we check shapes, pass the body through as
 * jsonb, and push post-commit effects to Redis. A claim goes through two filters first: a
 * per-worker rate limit and the Redis claim gate, which turns storm losers away without a
 * database round trip (task_gate.h explains why that is safe). Neither may answer anything
 * about a task the caller cannot see: the rate limit counts the caller's claims whatever the
 * task, and the gate answers only for callers it knows to be in the task's area. */
#include "api.h"
#include "app.h"
#include "arena.h"
#include "config.h"
#include "db.h"
#include "effects.h"
#include "http.h"
#include "metrics.h"
#include "ratelimit.h"
#include "task_gate.h"

#include <stdio.h>
#include <string.h>

static const char *skew(struct req_ctx *rc)
{
    return arena_printf(rc->arena, "%d seconds", rc->app->cfg->report_future_skew_s);
}

/* The idempotency triple: principal, key (NULL when absent), request hash. */
void api_task_publish(struct req_ctx *rc)
{
    const char *principal, *key, *hash;
    api_idem_params(rc, &principal, &key, &hash);
    const char *params[] = {api_actor(rc), api_json_text(rc, rc->json), principal, key, hash};
    api_write(rc, "SELECT body, effects FROM gp_task_publish($1, $2::jsonb, $3, $4, $5)", 5, params,
              201);
}

void api_task_update(struct req_ctx *rc)
{
    int64_t id;
    if (!http_param_id_or_reply(rc, 0, &id))
        return;
    const char *params[] = {api_actor(rc), api_i64(rc, id), api_json_text(rc, rc->json)};
    api_write(rc, "SELECT body, effects FROM gp_task_update($1, $2, $3::jsonb)", 3, params, 200);
}

void api_task_cancel(struct req_ctx *rc)
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
    const char *params[] = {api_actor(rc), api_i64(rc, id), reason};
    api_write(rc, "SELECT body, effects FROM gp_task_cancel($1, $2, $3)", 3, params, 200);
}

void api_task_get(struct req_ctx *rc)
{
    int64_t id;
    if (!http_param_id_or_reply(rc, 0, &id))
        return;
    const char *params[] = {api_actor(rc), api_i64(rc, id)};
    api_query(rc, "SELECT gp_task_get($1, $2)", 2, params, 200);
}

void api_task_history(struct req_ctx *rc)
{
    int64_t id;
    if (!http_param_id_or_reply(rc, 0, &id))
        return;
    const char *args = api_query_args_or_reply(rc, NULL, 0);
    if (!args)
        return;
    const char *params[] = {api_actor(rc), api_i64(rc, id), args};
    api_query(rc, "SELECT gp_task_history($1, $2, $3::jsonb)", 3, params, 200);
}

static void list_call(struct req_ctx *rc, const char *sql, const struct api_qspec *specs, size_t n)
{
    const char *args = api_query_args_or_reply(rc, specs, n);
    if (!args)
        return;
    const char *params[] = {api_actor(rc), args};
    api_query(rc, sql, 2, params, 200);
}

void api_task_list(struct req_ctx *rc)
{
    static const struct api_qspec specs[] = {
        {"view", API_Q_STR},    {"status", API_Q_STR},   {"category", API_Q_STR},
        {"unit_id", API_Q_INT}, {"mine", API_Q_BOOL},    {"lat", API_Q_NUM},
        {"lng", API_Q_NUM},     {"radius_m", API_Q_NUM},
    };
    list_call(rc, "SELECT gp_task_list($1, $2::jsonb)", specs, ARRAY_SIZE(specs));
}

void api_assignment_list(struct req_ctx *rc)
{
    static const struct api_qspec specs[] = {{"state", API_Q_STR}, {"task_id", API_Q_INT}};
    list_call(rc, "SELECT gp_assignments_mine($1, $2::jsonb)", specs, ARRAY_SIZE(specs));
}

void api_review_queue(struct req_ctx *rc)
{
    static const struct api_qspec specs[] = {
        {"unit_id", API_Q_INT}, {"task_id", API_Q_INT}, {"flagged", API_Q_BOOL}};
    list_call(rc, "SELECT gp_review_queue($1, $2::jsonb)", specs, ARRAY_SIZE(specs));
}

void api_assignment_get(struct req_ctx *rc)
{
    int64_t id;
    if (!http_param_id_or_reply(rc, 0, &id))
        return;
    const char *params[] = {api_actor(rc), api_i64(rc, id)};
    api_query(rc, "SELECT gp_assignment_get($1, $2)", 2, params, 200);
}

void api_assignment_release(struct req_ctx *rc)
{
    int64_t id;
    if (!http_param_id_or_reply(rc, 0, &id))
        return;
    const char *params[] = {api_actor(rc), api_i64(rc, id)};
    api_write(rc, "SELECT body, effects FROM gp_assignment_release($1, $2)", 2, params, 200);
}

void api_assignment_checkin(struct req_ctx *rc)
{
    static const char *const fields[] = {"lat", "lng", "at", NULL};
    struct jv_err e = {0};
    int64_t id;
    double lat, lng;
    const char *at;
    if (!http_param_id_or_reply(rc, 0, &id) || !http_body_only_or_reply(rc, fields))
        return;
    if (!jv_f64(rc->json, "lat", true, -90, 90, &lat, &e) ||
        !jv_f64(rc->json, "lng", true, -180, 180, &lng, &e) ||
        !jv_time(rc->json, "at", true, &at, &e)) {
        http_reply_jv(rc, &e);
        return;
    }
    const char *params[] = {api_actor(rc), api_i64(rc, id), api_json_text(rc, rc->json), skew(rc)};
    api_query(rc, "SELECT gp_checkin($1, $2, $3::jsonb, $4::interval)", 4, params, 201);
}

static void decide(struct req_ctx *rc, bool approve)
{
    static const char *const fields[] = {"reason", NULL};
    struct jv_err e = {0};
    int64_t id;
    const char *reason = NULL;
    if (!http_param_id_or_reply(rc, 0, &id) || !http_body_only_or_reply(rc, fields))
        return;
    if (!jv_str(rc->json, "reason", !approve, 1, 500, &reason, &e)) {
        http_reply_jv(rc, &e);
        return;
    }
    const char *params[] = {api_actor(rc), api_i64(rc, id), approve ? "true" : "false", reason};
    api_write(rc, "SELECT body, effects FROM gp_report_decide($1, $2, $3::boolean, $4)", 4, params,
              200);
}

void api_assignment_approve(struct req_ctx *rc)
{
    decide(rc, true);
}

void api_assignment_reject(struct req_ctx *rc)
{
    decide(rc, false);
}

void api_report_submit(struct req_ctx *rc)
{
    const char *params[] = {api_actor(rc), api_json_text(rc, rc->json), skew(rc)};
    api_write(rc, "SELECT body, effects FROM gp_report_submit($1, $2::jsonb, $3::interval)", 3,
              params, 201);
}

/* ---------------------------------------------------------------------------------------- */
/* Claim: rate limit -> Redis gate -> PostgreSQL decides -> gate refreshed.                  */
/* ---------------------------------------------------------------------------------------- */

struct claim_state {
    int64_t task;
    /* the error PostgreSQL answered, replayed after the gate refresh */
    enum status st;
    char code[48], field[64], message[192];
};

static void claim_refreshed_cb(struct db_result *res, void *arg)
{
    struct req_ctx *rc = arg;
    struct claim_state *cs = rc->state;
    json_t *gates = db_result_json(res);
    if (gates)
        task_gate_set_json(rc->app->gate, gates);
    json_decref(gates);
    http_reply_error(rc, cs->st, cs->code, cs->field, "%s", cs->message);
}

static void claim_db_cb(struct db_result *res, void *arg)
{
    struct req_ctx *rc = arg;
    struct claim_state *cs = rc->state;
    enum status st = db_result_status(res);
    if (st == ST_OK) {
        /* The effects carry the gate PostgreSQL left ("gate_won"); the body goes out as is. */
        effects_apply_text(rc->app, db_result_value(res, 0, 1));
        http_reply_db(rc, res, 201);
        return;
    }
    if (st == ST_UNAVAILABLE || st == ST_INTERNAL) {
        http_reply_db(rc, res, 201);
        return;
    }
    /* The gate let this claim through and PostgreSQL refused it: the gate may be off by the
     * unit this request took, so write PostgreSQL's count back before answering. */
    cs->st = st;
    snprintf(cs->code, sizeof cs->code, "%s", db_result_error_code(res));
    snprintf(cs->field, sizeof cs->field, "%s", db_result_error_field(res));
    snprintf(cs->message, sizeof cs->message, "%s", db_result_error_message(res));
    const char *params[] = {api_i64(rc, cs->task)};
    db_query(rc->app->db, "SELECT gp_task_slots($1)", 1, params, claim_refreshed_cb, rc);
}

static void claim_gate_cb(enum task_gate_answer answer, void *arg)
{
    struct req_ctx *rc = arg;
    struct claim_state *cs = rc->state;
    /* FULL comes only for a caller in the task's area (task_gate.h): one who would see the
     * task with GET, so task_full tells them nothing they may not know. */
    if (answer == TASK_GATE_FULL) {
        metrics_count(rc->app->metrics, "claim_gate_refused", 1);
        http_reply_error(rc, ST_CONFLICT, "task_full", "task_id",
                         "every slot of this task is taken");
        return;
    }
    const char *principal, *key, *hash;
    api_idem_params(rc, &principal, &key, &hash);
    const char *params[] = {api_actor(rc), api_i64(rc, cs->task), principal, key, hash};
    db_query(rc->app->db, "SELECT body, effects FROM gp_task_claim($1, $2, $3, $4, $5)", 5, params,
             claim_db_cb, rc);
}

static void claim_limit_cb(enum status st, int retry_after_s, int remaining, void *arg)
{
    struct req_ctx *rc = arg;
    struct claim_state *cs = rc->state;
    if (st == ST_RATE_LIMITED) {
        http_reply_error_retry(rc, ST_RATE_LIMITED, "too_many_claims", retry_after_s,
                               "too many claims; try again later");
        return;
    }
    /* Only a worker whose area the session told us may ask the gate; for anyone else it
     * could not know that the task is in their scope, so PostgreSQL answers. */
    if (!rc->principal.worker || !rc->principal.area[0]) {
        claim_gate_cb(TASK_GATE_UNKNOWN, rc);
        return;
    }
    task_gate_take(rc->app->gate, cs->task, rc->principal.area, rc->principal.person_id,
                   claim_gate_cb, rc);
}

void api_task_claim(struct req_ctx *rc)
{
    static const char *const fields[] = {NULL};
    int64_t id;
    if (!http_param_id_or_reply(rc, 0, &id) || !http_body_only_or_reply(rc, fields))
        return;
    struct claim_state *cs = arena_alloc(rc->arena, sizeof *cs);
    cs->task = id;
    rc->state = cs;
    /* Fail open: without Redis the limit lapses, but PostgreSQL still decides every claim. */
    const char *key =
        arena_printf(rc->arena, "rl:claim:{%lld}", (long long)rc->principal.person_id);
    ratelimit_hit(rc->app->rl, key, rc->app->cfg->claim_rate_limit, 60, RATELIMIT_FAIL_OPEN,
                  claim_limit_cb, rc);
}
