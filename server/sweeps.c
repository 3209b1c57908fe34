/* sweeps.c -- the periodic sweeps and what each does with its result. */
#include "sweeps.h"
#include "app.h"
#include "audit.h"
#include "config.h"
#include "effects.h"
#include "evidence.h"
#include "ledger.h"
#include "exchange.h"
#include "log.h"
#include "metrics.h"
#include "webhook.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>

static int every_sweep_interval(const struct config *cfg)
{
    return cfg->timer_sweep_interval_ms;
}

static int every_minute(const struct config *cfg)
{
    return 60000;
}

static int every_reconcile_interval(const struct config *cfg)
{
    return cfg->reconcile_interval_s * 1000;
}

static int64_t idem_pruned(struct app *app, json_t *j)
{
    bool full = json_is_true(json_object_get(j, "full"));
    json_int_t n = json_integer_value(json_object_get(j, "pruned"));
    if (n > 0) {
        metrics_count(app->metrics, "idempotency_keys_pruned", (uint64_t)n);
        log_info("pruned %lld expired idempotency records", (long long)n);
    }
    return full;
}

static void count(struct app *app, json_t *j, const char *key, const char *metric)
{
    json_int_t n = json_integer_value(json_object_get(j, key));
    if (n > 0)
        metrics_count(app->metrics, metric, (uint64_t)n);
}

/* gp_timers_sweep: claim expiry, auto-approval, task close, reservation release. Its effects
 * (awards, claim gates) go to Redis; per-task errors are logged (the sweep itself goes
 * on: one bad task must not stall every other timer). */
static int64_t timers_swept(struct app *app, json_t *j)
{
    effects_apply(app, json_object_get(j, "effects"));
    count(app, j, "expired", "timer_claims_expired");
    count(app, j, "approved", "timer_reports_auto_approved");
    count(app, j, "closed", "timer_tasks_closed");
    count(app, j, "released", "timer_reservations_released");
    json_t *errors = json_object_get(j, "errors");
    size_t i;
    json_t *e;
    json_array_foreach(errors, i, e)
    {
        log_warn("timer sweep: task %lld failed: %s (%s)",
                 (long long)json_integer_value(json_object_get(e, "task_id")),
                 json_string_value(json_object_get(e, "message")),
                 json_string_value(json_object_get(e, "sqlstate")));
    }
    bool more = json_is_true(json_object_get(j, "more"));
    return more;
}

/* How long one gp_timers_sweep call may hold task rows before it commits (timers.sweep_hold). */
static void timers_sweep_args(const struct config *cfg, char *buf, size_t len)
{
    snprintf(buf, len, "%d", cfg->timer_sweep_hold_ms);
}

/* gp_ledger_sweep: pending points vest after the objection period, lots expire. */
static int64_t ledger_swept(struct app *app, json_t *j)
{
    effects_apply(app, json_object_get(j, "effects"));
    count(app, j, "vested", "timer_points_vested");
    count(app, j, "expired", "timer_points_expired");
    json_int_t done = json_integer_value(json_object_get(j, "vested")) +
                      json_integer_value(json_object_get(j, "expired"));
    return done >= app->cfg->timer_batch_size ? 1 : 0;
}

static void repaired(void *arg)
{
    struct app *app = arg;
    metrics_count(app->metrics, "reconcile_balances_repaired", 1);
}

/* One page of gp_ledger_snapshot: every worker balance, put into Redis under the version guard
 * (so a page read before a newer commit cannot overwrite it). Repairs what a crash between a
 * commit and its post-commit push left stale, and refills a flushed Redis. */
static int64_t reconciled(struct app *app, json_t *j)
{
    json_t *items = json_object_get(j, "items"), *b;
    size_t i;
    /* Each is a "balances" effect (effects.c), put with a count of those Redis lacked. */
    json_array_foreach(items, i, b)
    {
        json_t *w = json_object_get(b, "worker_id"), *a = json_object_get(b, "available"),
               *p = json_object_get(b, "pending"), *v = json_object_get(b, "version");
        if (!json_is_integer(w) || !json_is_integer(a) || !json_is_integer(v)) {
            log_warn("reconcile: a balance without worker_id, available and version");
            continue;
        }
        ledger_cache_put_then(app->ledger, json_integer_value(w), json_integer_value(a),
                              json_is_integer(p) ? json_integer_value(p) : 0, json_integer_value(v),
                              repaired, app);
    }
    metrics_count(app->metrics, "reconciled_balances", json_array_size(items));
    const char *next = json_string_value(json_object_get(j, "next_cursor"));
    int64_t cursor = next ? strtoll(next, NULL, 10) : 0;
    return cursor > 0 ? cursor : 0;
}

/* gp_merchant_sweep: vouchers past their expiry give their points back (and pay codes a day
 * past theirs are pruned); the workers' new balances go to Redis. */
static int64_t merchant_swept(struct app *app, json_t *j)
{
    effects_apply(app, json_object_get(j, "effects"));
    count(app, j, "expired", "timer_vouchers_expired");
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(j, "errors"), i, e)
    {
        log_warn("voucher sweep: voucher %lld failed: %s (%s)",
                 (long long)json_integer_value(json_object_get(e, "voucher_id")),
                 json_string_value(json_object_get(e, "message")),
                 json_string_value(json_object_get(e, "sqlstate")));
    }
    bool more = json_is_true(json_object_get(j, "more"));
    return more;
}

/* gp_webhook_claim: leased webhook events, delivered by webhook.c. A full batch is claimed
 * again at once unless many deliveries are still in flight. */
static int64_t webhooks_claimed(struct app *app, json_t *j)
{
    webhooks_deliver(app->webhooks, j);
    bool more = json_is_true(json_object_get(j, "more"));
    return more && webhooks_inflight(app->webhooks) < 64;
}

static int every_ops_gauges_interval(const struct config *cfg)
{
    return cfg->ops_gauges_interval_ms;
}

/* gp_ops_gauges: what the alerting rules watch that only the database knows. */
static int64_t ops_gauges_read(struct app *app, json_t *j)
{
    static const char *const names[] = {"timer_lag_seconds", "audit_checkpoint_age_seconds"};
    for (size_t i = 0; i < ARRAY_SIZE(names); i++)
        metrics_gauge(app->metrics, names[i], json_number_value(json_object_get(j, names[i])));
    metrics_gauge(app->metrics, "audit_checkpoint_timestamp_seconds",
                  json_number_value(json_object_get(j, "audit_checkpoint_at")));
    metrics_gauge(app->metrics, "audit_alarm",
                  json_is_true(json_object_get(j, "audit_alarm")) ? 1 : 0);
    metrics_gauge(app->metrics, "ops_gauges_timestamp_seconds", (double)common_wall_ms() / 1000.0);
    return 0;
}

/* gp_xchg_claim: pending transfers out whose timer is due, sent again or asked about by
 * exchange.c (exchange.h). */
static int64_t exchange_claimed(struct app *app, json_t *j)
{
    exchange_transfers_run(app->exchange, j);
    bool more = json_is_true(json_object_get(j, "more"));
    return more && exchange_inflight(app->exchange) < 64;
}

static void exchange_claim_args(const struct config *cfg, char *buf, size_t len)
{
    snprintf(buf, len, "{\"lease_s\": %d, \"enabled\": %s}", cfg->exchange_timeout_s + 5,
             cfg->exchange_enabled ? "true" : "false");
}

/* gp_xchg_recon_claim: partners whose next statement day is due for reconciliation. */
static int64_t exchange_recon_claimed(struct app *app, json_t *j)
{
    exchange_recon_run(app->exchange, j);
    return 0;
}

static void exchange_recon_args(const struct config *cfg, char *buf, size_t len)
{
    snprintf(buf, len, "{\"lag_s\": %d, \"lease_s\": %d, \"enabled\": %s}",
             cfg->exchange_recon_lag_s, cfg->exchange_timeout_s + 5,
             cfg->exchange_enabled ? "true" : "false");
}

/* gp_care_sweep: due care visits past their grace escalate to grid staff (once each), and the
 * sealed data of residents removed longer than care.retention ago is purged (docs/CARE.md). */
static void care_sweep_args(const struct config *cfg, char *buf, size_t len)
{
    snprintf(buf, len, "{\"retention_s\":%d}", cfg->care_retention_s);
}

static int64_t care_swept(struct app *app, json_t *j)
{
    count(app, j, "escalated", "care_visits_escalated");
    count(app, j, "purged", "care_residents_purged");
    json_int_t esc = json_integer_value(json_object_get(j, "escalated"));
    json_int_t purged = json_integer_value(json_object_get(j, "purged"));
    if (esc > 0 || purged > 0)
        log_info("care sweep: %lld overdue visits escalated, %lld removed residents purged",
                 (long long)esc, (long long)purged);
    return json_is_true(json_object_get(j, "more"));
}

/* gp_dash_fold: the dashboard's counters, folded from the queued events and the committed
 * ledger off the hot transactions (docs/DASHBOARD.md); a full batch goes on at once. */
static int every_dashboard_fold_interval(const struct config *cfg)
{
    return cfg->console_dashboard_fold_interval_ms;
}

static void dashboard_fold_args(const struct config *cfg, char *buf, size_t len)
{
    snprintf(buf, len, "%d", cfg->console_dashboard_fold_batch);
}

static int64_t dashboard_folded(struct app *app, json_t *j)
{
    count(app, j, "events", "dashboard_events_folded");
    count(app, j, "txns", "dashboard_txns_folded");
    if (json_is_true(json_object_get(j, "rebuilt")))
        log_info("dashboard: counters rebuilt from the base tables");
    return json_is_true(json_object_get(j, "more"));
}

const struct sweep_def sweep_defs[] = {
    {"timers", "SELECT gp_timers_sweep($1, $2::int)", 2, every_sweep_interval, timers_swept,
     timers_sweep_args},
    {"ledger", "SELECT gp_ledger_sweep($1)", 1, every_sweep_interval, ledger_swept, NULL},
    {"reconcile", "SELECT gp_ledger_snapshot($2::bigint, $1)", 2, every_reconcile_interval,
     reconciled, NULL},
    {"idempotency_prune", "SELECT gp_idem_prune($1)", 1, every_minute, idem_pruned, NULL},
    /* the audit sealer: seals, verifies, offers checkpoints to sign (audit.c) */
    {"audit_seal", "SELECT gp_audit_seal_sweep($1, $2::jsonb)", 2, every_sweep_interval,
     audit_sealed, audit_seal_args},
    {"vouchers", "SELECT gp_merchant_sweep($1)", 1, every_sweep_interval, merchant_swept, NULL},
    {"webhooks", "SELECT gp_webhook_claim($1)", 1, every_sweep_interval, webhooks_claimed, NULL},
    /* evidence past its retention: claimed here, removed from the store by evidence.c */
    {"evidence", "SELECT gp_evidence_sweep($1, $2::jsonb)", 2, every_sweep_interval, evidence_swept,
     evidence_sweep_args},
    {"ops_gauges", "SELECT gp_ops_gauges()", 0, every_ops_gauges_interval, ops_gauges_read, NULL},
    /* points exchange with partner schemes (exchange.h): transfers out, daily reconciliation */
    {"exchange", "SELECT gp_xchg_claim($1, $2::jsonb)", 2, every_sweep_interval, exchange_claimed,
     exchange_claim_args},
    {"exchange_recon", "SELECT gp_xchg_recon_claim($1, $2::jsonb)", 2, every_sweep_interval,
     exchange_recon_claimed, exchange_recon_args},
    /* care visits: overdue escalation and retention (docs/CARE.md) */
    {"care", "SELECT gp_care_sweep($1, $2::jsonb)", 2, every_sweep_interval, care_swept,
     care_sweep_args},
    /* the dashboard's counters, off the hot transactions (docs/DASHBOARD.md) */
    {"dashboard", "SELECT gp_dash_fold(coalesce($2::int, $1::int))", 2,
     every_dashboard_fold_interval, dashboard_folded, dashboard_fold_args},
};
const size_t sweep_defs_count = sizeof sweep_defs / sizeof sweep_defs[0];
