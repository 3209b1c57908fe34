/* test_metrics.c -- the exposition metrics.c writes: histogram buckets at their microsecond
 * edges (rendered in seconds), sums kept in microseconds, one metric per kind of event with
 * HELP and TYPE once per metric, names missing from the table still rendered, gauges, sweeps
 * and the build. `promtool check metrics` runs over a live server's output in
 * tests/api/test_metrics.py; this checks the numbers. */
#include "metrics.h"

#include <event2/buffer.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static char *render(const struct metrics *m)
{
    struct evbuffer *b = evbuffer_new();
    metrics_render(m, b);
    size_t n = evbuffer_get_length(b);
    char *s = malloc(n + 1);
    evbuffer_remove(b, s, n);
    s[n] = '\0';
    evbuffer_free(b);
    return s;
}

static void has(const char *text, const char *line)
{
    if (!strstr(text, line))
        fail_msg("missing: %s\n--- in ---\n%s", line, text);
}

static int count(const char *text, const char *what)
{
    int n = 0;
    for (const char *p = text; (p = strstr(p, what)); p += strlen(what))
        n++;
    return n;
}

static void test_buckets_at_their_edges(void **state)
{
    struct metrics *m = metrics_new();
    metrics_observe(m, "GET", "/healthz", 200, 100);      /* exactly 100 us: le 0.0001 */
    metrics_observe(m, "GET", "/healthz", 200, 101);      /* just above: le 0.00025 */
    metrics_observe(m, "GET", "/healthz", 200, 999);      /* le 0.001 */
    metrics_observe(m, "GET", "/healthz", 200, 20000000); /* 20 s: only +Inf */
    metrics_observe(m, "GET", "unmatched", 404, 42);
    char *t = render(m);
    has(t, "gridpoints_http_request_duration_seconds_bucket{method=\"GET\",route=\"/healthz\","
           "le=\"0.000100\"} 1\n");
    has(t, "gridpoints_http_request_duration_seconds_bucket{method=\"GET\",route=\"/healthz\","
           "le=\"0.000250\"} 2\n");
    has(t, "gridpoints_http_request_duration_seconds_bucket{method=\"GET\",route=\"/healthz\","
           "le=\"0.000500\"} 2\n");
    has(t, "gridpoints_http_request_duration_seconds_bucket{method=\"GET\",route=\"/healthz\","
           "le=\"0.001000\"} 3\n");
    has(t, "gridpoints_http_request_duration_seconds_bucket{method=\"GET\",route=\"/healthz\","
           "le=\"10.000000\"} 3\n");
    has(t, "gridpoints_http_request_duration_seconds_bucket{method=\"GET\",route=\"/healthz\","
           "le=\"+Inf\"} 4\n");
    /* 100 + 101 + 999 + 20,000,000 us, to the microsecond */
    has(t, "gridpoints_http_request_duration_seconds_sum{method=\"GET\",route=\"/healthz\"} "
           "20.001200\n");
    has(t, "gridpoints_http_request_duration_seconds_count{method=\"GET\",route=\"/healthz\"} 4\n");
    has(t, "gridpoints_http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"} 4\n");
    has(t, "gridpoints_http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"} 1\n");
    has(t, "gridpoints_http_request_duration_seconds_sum{method=\"GET\",route=\"unmatched\"} "
           "0.000042\n");
    free(t);
    metrics_free(m);
}

static void test_one_metric_per_kind_of_event(void **state)
{
    struct metrics *m = metrics_new();
    metrics_count(m, "claim_gate_refused", 3);
    metrics_count(m, "timer_claims_expired", 2);
    metrics_count(m, "timer_points_vested", 5);
    metrics_count(m, "timer_claims_expired", 1);
    metrics_count(m, "reconcile_balances_repaired", 7);
    metrics_count(m, "something_new", 9); /* not in the table (yet) */
    metrics_gauge(m, "timer_lag_seconds", 12.5);
    metrics_gauge(m, "no_such_gauge", 1); /* ignored */
    metrics_sweep(m, "timers", true);
    metrics_sweep(m, "timers", false);
    metrics_sweep(m, "timers", true);
    char *t = render(m);
    has(t, "gridpoints_claim_gate_refused_total 3\n");
    has(t, "gridpoints_timer_events_total{timer=\"claims_expired\"} 3\n");
    has(t, "gridpoints_timer_events_total{timer=\"points_vested\"} 5\n");
    has(t, "gridpoints_timer_events_total{timer=\"vouchers_expired\"} 0\n"); /* from the start */
    has(t, "gridpoints_reconcile_balances_repaired_total 7\n");
    has(t, "# TYPE gridpoints_something_new_total counter\ngridpoints_something_new_total 9\n");
    has(t, "gridpoints_timer_lag_seconds 12.500\n");
    has(t, "gridpoints_sweep_runs_total{sweep=\"timers\",result=\"ok\"} 2\n");
    has(t, "gridpoints_sweep_runs_total{sweep=\"timers\",result=\"failed\"} 1\n");
    has(t, "gridpoints_build_info{version=\"");
    assert_null(strstr(t, "events_total{event="));
    /* HELP and TYPE once per metric, also for the labelled ones */
    assert_int_equal(count(t, "# TYPE gridpoints_timer_events_total counter\n"), 1);
    assert_int_equal(count(t, "# HELP gridpoints_timer_events_total "), 1);
    assert_int_equal(count(t, "# HELP "), count(t, "# TYPE "));
    free(t);
    metrics_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buckets_at_their_edges),
        cmocka_unit_test(test_one_metric_per_kind_of_event),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
