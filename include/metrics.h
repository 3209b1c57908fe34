/* metrics.h -- in-process counters rendered in the Prometheus text format at /metrics.
 *
 * Per-instance only: Prometheus sums instances. Requests are counted by route pattern (not by
 * raw path, which would explode cardinality; a path that matches no route is "unmatched") and
 * status code; latency, measured in microseconds, goes into one histogram per route. Every
 * metric has HELP and TYPE (`promtool check metrics` runs on a live server in the tests);
 * the list of metrics and what each is for: docs/OPERATIONS.md, "Metrics". */
#ifndef GP_METRICS_H
#define GP_METRICS_H

#include "common.h"

struct metrics;
struct evbuffer;

struct metrics *metrics_new(void);
void metrics_free(struct metrics *m);
/* `route` must have static storage (a pattern from the table, or "unmatched"). */
void metrics_observe(struct metrics *m, const char *method, const char *route, int status,
                     int64_t micros);
/* Counts an event ("timer_claims_expired", "claim_gate_refused" ...). `name` static. Each
 * name has its own metric, name and HELP in the table of metrics.c; a name missing there is
 * still counted, as gridpoints_<name>_total. */
void metrics_count(struct metrics *m, const char *name, uint64_t n);
/* Sets a gauge of the table in metrics.c ("timer_lag_seconds" ...). `name` static. */
void metrics_gauge(struct metrics *m, const char *name, double value);
/* One run of the janitor's sweep `name` (static) ended; ok = it answered. */
void metrics_sweep(struct metrics *m, const char *name, bool ok);
/* Appends the request metrics, the events, the gauges and the build; the caller appends the
 * gauges it reads from elsewhere (pools, redis) itself. */
void metrics_render(const struct metrics *m, struct evbuffer *out);

#endif
