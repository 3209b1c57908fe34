/* metrics.h -- in-process counters rendered in the Prometheus text format at /metrics.
 *
 * Per-instance only: Prometheus sums instances. Requests are counted by route pattern (not by
 * raw path, which would explode cardinality) and status code; latency goes into one histogram
 * per route. */
#ifndef GP_METRICS_H
#define GP_METRICS_H

#include "common.h"

struct metrics;
struct evbuffer;

struct metrics *metrics_new(void);
void metrics_free(struct metrics *m);
/* `route` must have static storage (a pattern from the table, or "unmatched"). */
void metrics_observe(struct metrics *m, const char *method, const char *route, int status,
                     double seconds);
/* Counts a named event ("timer_expired", "claim_gate_rejected" ...). `name` static. */
void metrics_count(struct metrics *m, const char *name, uint64_t n);
/* Appends the request metrics; the caller appends gauges (pools, redis) itself. */
void metrics_render(const struct metrics *m, struct evbuffer *out);

#endif
