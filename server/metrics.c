/* metrics.c -- a small table of (method, route, status) counters and per-route latency
 * histograms, the event counters and gauges of the table below, and the janitor's sweeps.
 * Keys point at static strings, so lookups compare pointers first. */
#include "metrics.h"
#include "sql_build.h"
#include "version.h"

#include <event2/buffer.h>
#include <stdlib.h>
#include <string.h>

/* Upper bounds in microseconds (rendered in seconds, the Prometheus convention): a cached read
 * takes a few hundred microseconds, so the first buckets are below one millisecond. */
static const int64_t buckets_us[] = {100,     250,     500,     1000,    2500,   5000,
                                     10000,   25000,   50000,   100000,  250000, 500000,
                                     1000000, 2500000, 5000000, 10000000};
#define NBUCKETS   (sizeof buckets_us / sizeof buckets_us[0])
#define MAX_SERIES 512
#define MAX_EXTRA  16
#define MAX_SWEEPS 24

/* One line per event name: the metric it is counted in, its label (or NULL) and HELP. Lines of
 * one metric stay together (HELP and TYPE are written once, at its first line). */
struct counter_def {
    const char *event, *metric, *label, *help;
};

#define TIMER_HELP    "Durable timers fired by this instance's sweeps, by timer."
#define EVIDENCE_HELP "Evidence photo uploads stored, by result (new file or bytes sent again)."
#define WEBHOOK_HELP  "Webhook delivery attempts, by result."
static const struct counter_def counter_defs[] = {
    {"claim_gate_refused", "gridpoints_claim_gate_refused_total", NULL,
     "Claims refused by the Redis claim gate (no free slot) without a database round trip."},
    {"timer_claims_expired", "gridpoints_timer_events_total", "timer=\"claims_expired\"",
     TIMER_HELP},
    {"timer_reports_auto_approved", "gridpoints_timer_events_total",
     "timer=\"reports_auto_approved\"", TIMER_HELP},
    {"timer_tasks_closed", "gridpoints_timer_events_total", "timer=\"tasks_closed\"", TIMER_HELP},
    {"timer_reservations_released", "gridpoints_timer_events_total",
     "timer=\"reservations_released\"", TIMER_HELP},
    {"timer_points_vested", "gridpoints_timer_events_total", "timer=\"points_vested\"", TIMER_HELP},
    {"timer_points_expired", "gridpoints_timer_events_total", "timer=\"points_expired\"",
     TIMER_HELP},
    {"timer_vouchers_expired", "gridpoints_timer_events_total", "timer=\"vouchers_expired\"",
     TIMER_HELP},
    {"idempotency_keys_pruned", "gridpoints_idempotency_keys_pruned_total", NULL,
     "Expired idempotency records deleted."},
    {"reconciled_balances", "gridpoints_reconcile_balances_checked_total", NULL,
     "Worker balances the reconciler read from the ledger and compared with Redis."},
    {"reconcile_balances_repaired", "gridpoints_reconcile_balances_repaired_total", NULL,
     "Balances the reconciler found missing or behind in Redis and rewrote."},
    {"audit_transactions_sealed", "gridpoints_audit_transactions_sealed_total", NULL,
     "Ledger transactions sealed into the audit log."},
    {"audit_checkpoints_signed", "gridpoints_audit_checkpoints_signed_total", NULL,
     "Audit checkpoints signed by this instance."},
    {"evidence_stored", "gridpoints_evidence_uploads_total", "result=\"stored\"", EVIDENCE_HELP},
    {"evidence_restored", "gridpoints_evidence_uploads_total", "result=\"restored\"",
     EVIDENCE_HELP},
    {"evidence_deleted", "gridpoints_evidence_deleted_total", NULL,
     "Evidence photos removed at the end of their retention."},
    {"webhook_delivered", "gridpoints_webhook_attempts_total", "result=\"delivered\"",
     WEBHOOK_HELP},
    {"webhook_attempt_failed", "gridpoints_webhook_attempts_total", "result=\"failed\"",
     WEBHOOK_HELP},
    {"care_visits_escalated", "gridpoints_care_visits_escalated_total", NULL,
     "Overdue care visits escalated to grid staff (docs/CARE.md)."},
    {"care_residents_purged", "gridpoints_care_residents_purged_total", NULL,
     "Removed residents whose sealed data was purged after care.retention."},
    {"dashboard_events_folded", "gridpoints_dashboard_folded_total", "source=\"events\"",
     "What the dashboard sweep counted into the dashboard's counters, by source (queued events, "
     "ledger transactions)."},
    {"dashboard_txns_folded", "gridpoints_dashboard_folded_total", "source=\"txns\"",
     "What the dashboard sweep counted into the dashboard's counters, by source (queued events, "
     "ledger transactions)."},
};
#define NCOUNTERS (sizeof counter_defs / sizeof counter_defs[0])

/* Gauges read from the database by the janitor's "ops_gauges" sweep (gp_ops_gauges). */
struct gauge_def {
    const char *name, *metric, *help;
};
static const struct gauge_def gauge_defs[] = {
    {"timer_lag_seconds", "gridpoints_timer_lag_seconds",
     "How long the most overdue durable timer (claim expiry, auto-approval, task close, "
     "vesting) has been due; 0 when none is due."},
    {"audit_checkpoint_age_seconds", "gridpoints_audit_checkpoint_age_seconds",
     "Age of the newest signed audit checkpoint while ledger transactions wait for one; 0 when "
     "every transaction is under a checkpoint."},
    {"audit_checkpoint_timestamp_seconds", "gridpoints_audit_checkpoint_timestamp_seconds",
     "Time of the newest signed audit checkpoint (Unix seconds; 0 = none yet)."},
    {"audit_alarm", "gridpoints_audit_alarm",
     "1 while the audit log's tamper alarm stands (docs/AUDIT.md), else 0."},
    {"ops_gauges_timestamp_seconds", "gridpoints_ops_gauges_timestamp_seconds",
     "When the gauges above were last read from the database (Unix seconds)."},
};
#define NGAUGES (sizeof gauge_defs / sizeof gauge_defs[0])

struct series {
    const char *method, *route;
    int status;
    uint64_t count;
};

struct hist {
    const char *method, *route;
    uint64_t b[NBUCKETS];
    uint64_t count;
    uint64_t sum_us;
};

struct extra_counter {
    const char *name;
    uint64_t n;
};

struct sweep_stat {
    const char *name;
    uint64_t ok, failed;
    double last_ok; /* Unix seconds */
};

struct metrics {
    struct series series[MAX_SERIES];
    int nseries;
    struct hist hists[MAX_SERIES];
    int nhists;
    uint64_t counters[NCOUNTERS];
    struct extra_counter extra[MAX_EXTRA];
    int nextra;
    double gauges[NGAUGES];
    struct sweep_stat sweeps[MAX_SWEEPS];
    int nsweeps;
};

struct metrics *metrics_new(void)
{
    return xcalloc(1, sizeof(struct metrics));
}

void metrics_free(struct metrics *m)
{
    free(m);
}

static bool same(const char *a, const char *b)
{
    return a == b || !strcmp(a, b);
}

void metrics_observe(struct metrics *m, const char *method, const char *route, int status,
                     int64_t micros)
{
    if (micros < 0)
        micros = 0;
    struct series *s = NULL;
    for (int i = 0; i < m->nseries; i++)
        if (m->series[i].status == status && same(m->series[i].route, route) &&
            same(m->series[i].method, method)) {
            s = &m->series[i];
            break;
        }
    if (!s && m->nseries < MAX_SERIES) {
        s = &m->series[m->nseries++];
        s->method = method;
        s->route = route;
        s->status = status;
    }
    if (s)
        s->count++;

    struct hist *h = NULL;
    for (int i = 0; i < m->nhists; i++)
        if (same(m->hists[i].route, route) && same(m->hists[i].method, method)) {
            h = &m->hists[i];
            break;
        }
    if (!h && m->nhists < MAX_SERIES) {
        h = &m->hists[m->nhists++];
        h->method = method;
        h->route = route;
    }
    if (!h)
        return;
    for (size_t i = 0; i < NBUCKETS; i++)
        if (micros <= buckets_us[i])
            h->b[i]++;
    h->count++;
    h->sum_us += (uint64_t)micros;
}

void metrics_count(struct metrics *m, const char *name, uint64_t n)
{
    for (size_t i = 0; i < NCOUNTERS; i++)
        if (same(counter_defs[i].event, name)) {
            m->counters[i] += n;
            return;
        }
    for (int i = 0; i < m->nextra; i++)
        if (same(m->extra[i].name, name)) {
            m->extra[i].n += n;
            return;
        }
    if (m->nextra < MAX_EXTRA) {
        m->extra[m->nextra].name = name;
        m->extra[m->nextra].n = n;
        m->nextra++;
    }
}

void metrics_gauge(struct metrics *m, const char *name, double value)
{
    for (size_t i = 0; i < NGAUGES; i++)
        if (same(gauge_defs[i].name, name)) {
            m->gauges[i] = value;
            return;
        }
}

void metrics_sweep(struct metrics *m, const char *name, bool ok)
{
    struct sweep_stat *s = NULL;
    for (int i = 0; i < m->nsweeps; i++)
        if (same(m->sweeps[i].name, name))
            s = &m->sweeps[i];
    if (!s && m->nsweeps < MAX_SWEEPS) {
        s = &m->sweeps[m->nsweeps++];
        s->name = name;
    }
    if (!s)
        return;
    if (ok) {
        s->ok++;
        s->last_ok = (double)common_wall_ms() / 1000.0;
    } else {
        s->failed++;
    }
}

static void render_seconds(struct evbuffer *out, int64_t us)
{
    evbuffer_add_printf(out, "%lld.%06lld", (long long)(us / 1000000), (long long)(us % 1000000));
}

static void render_requests(const struct metrics *m, struct evbuffer *out)
{
    evbuffer_add_printf(out, "# HELP gridpoints_http_requests_total HTTP requests by method, route "
                             "pattern (\"unmatched\": no route) and status.\n"
                             "# TYPE gridpoints_http_requests_total counter\n");
    for (int i = 0; i < m->nseries; i++)
        evbuffer_add_printf(
            out, "gridpoints_http_requests_total{method=\"%s\",route=\"%s\",status=\"%d\"} %llu\n",
            m->series[i].method, m->series[i].route, m->series[i].status,
            (unsigned long long)m->series[i].count);
    evbuffer_add_printf(out,
                        "# HELP gridpoints_http_request_duration_seconds Time from the request's "
                        "head to its reply, measured in microseconds.\n"
                        "# TYPE gridpoints_http_request_duration_seconds histogram\n");
    for (int i = 0; i < m->nhists; i++) {
        const struct hist *h = &m->hists[i];
        for (size_t b = 0; b < NBUCKETS; b++) {
            evbuffer_add_printf(out,
                                "gridpoints_http_request_duration_seconds_bucket{method=\"%s\","
                                "route=\"%s\",le=\"",
                                h->method, h->route);
            render_seconds(out, buckets_us[b]);
            evbuffer_add_printf(out, "\"} %llu\n", (unsigned long long)h->b[b]);
        }
        evbuffer_add_printf(
            out,
            "gridpoints_http_request_duration_seconds_bucket{method=\"%s\",route=\"%s\",le=\"+"
            "Inf\"} %llu\n"
            "gridpoints_http_request_duration_seconds_sum{method=\"%s\",route=\"%s\"} ",
            h->method, h->route, (unsigned long long)h->count, h->method, h->route);
        render_seconds(out, (int64_t)h->sum_us);
        evbuffer_add_printf(
            out,
            "\ngridpoints_http_request_duration_seconds_count{method=\"%s\",route=\"%s\"} %llu\n",
            h->method, h->route, (unsigned long long)h->count);
    }
}

static void render_events(const struct metrics *m, struct evbuffer *out)
{
    for (size_t i = 0; i < NCOUNTERS; i++) {
        const struct counter_def *d = &counter_defs[i];
        if (i == 0 || strcmp(counter_defs[i - 1].metric, d->metric) != 0)
            evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s counter\n", d->metric, d->help,
                                d->metric);
        evbuffer_add_printf(out, "%s%s%s%s %llu\n", d->metric, d->label ? "{" : "",
                            d->label ? d->label : "", d->label ? "}" : "",
                            (unsigned long long)m->counters[i]);
    }
    /* Names not (yet) in the table still show, each as its own metric. */
    for (int i = 0; i < m->nextra; i++)
        evbuffer_add_printf(out,
                            "# HELP gridpoints_%s_total Events counted as \"%s\".\n"
                            "# TYPE gridpoints_%s_total counter\ngridpoints_%s_total %llu\n",
                            m->extra[i].name, m->extra[i].name, m->extra[i].name, m->extra[i].name,
                            (unsigned long long)m->extra[i].n);
    for (size_t i = 0; i < NGAUGES; i++)
        evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s gauge\n%s %.3f\n", gauge_defs[i].metric,
                            gauge_defs[i].help, gauge_defs[i].metric, gauge_defs[i].metric,
                            m->gauges[i]);
}

static void render_sweeps(const struct metrics *m, struct evbuffer *out)
{
    evbuffer_add_printf(out, "# HELP gridpoints_sweep_runs_total Runs of the janitor's periodic "
                             "sweeps, by sweep and result.\n"
                             "# TYPE gridpoints_sweep_runs_total counter\n");
    for (int i = 0; i < m->nsweeps; i++)
        evbuffer_add_printf(out,
                            "gridpoints_sweep_runs_total{sweep=\"%s\",result=\"ok\"} %llu\n"
                            "gridpoints_sweep_runs_total{sweep=\"%s\",result=\"failed\"} %llu\n",
                            m->sweeps[i].name, (unsigned long long)m->sweeps[i].ok,
                            m->sweeps[i].name, (unsigned long long)m->sweeps[i].failed);
    evbuffer_add_printf(out,
                        "# HELP gridpoints_sweep_last_success_timestamp_seconds When each sweep "
                        "last answered (Unix seconds; 0 = not yet).\n"
                        "# TYPE gridpoints_sweep_last_success_timestamp_seconds gauge\n");
    for (int i = 0; i < m->nsweeps; i++)
        evbuffer_add_printf(out,
                            "gridpoints_sweep_last_success_timestamp_seconds{sweep=\"%s\"} %.3f\n",
                            m->sweeps[i].name, m->sweeps[i].last_ok);
}

void metrics_render(const struct metrics *m, struct evbuffer *out)
{
    evbuffer_add_printf(out,
                        "# HELP gridpoints_build_info The build: release, SQL function hash and "
                        "migration version it needs (always 1).\n"
                        "# TYPE gridpoints_build_info gauge\n"
                        "gridpoints_build_info{version=\"%s\",sql_hash=\"%.12s\",migration=\"%d\"} "
                        "1\n",
                        GRIDPOINTS_VERSION, SQL_BUILD_FUNCTIONS_HASH, SQL_BUILD_MIGRATION_VERSION);
    render_requests(m, out);
    render_events(m, out);
    render_sweeps(m, out);
}
