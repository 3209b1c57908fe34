/* metrics.c -- a small open-addressing table of (method, route, status) counters and per-route
 * latency histograms. Keys point at static strings, so lookups compare pointers first. */
#include "metrics.h"

#include <event2/buffer.h>
#include <stdlib.h>
#include <string.h>

static const double buckets[] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                 0.1,   0.25,   0.5,   1,    2.5,   5};
#define NBUCKETS   (sizeof buckets / sizeof buckets[0])
#define MAX_SERIES 512
#define MAX_EVENTS 64

struct series {
    const char *method, *route;
    int status;
    uint64_t count;
};

struct hist {
    const char *method, *route;
    uint64_t b[NBUCKETS];
    uint64_t count;
    double sum;
};

struct event_counter {
    const char *name;
    uint64_t n;
};

struct metrics {
    struct series series[MAX_SERIES];
    int nseries;
    struct hist hists[MAX_SERIES];
    int nhists;
    struct event_counter events[MAX_EVENTS];
    int nevents;
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
                     double seconds)
{
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
        if (seconds <= buckets[i])
            h->b[i]++;
    h->count++;
    h->sum += seconds;
}

void metrics_count(struct metrics *m, const char *name, uint64_t n)
{
    for (int i = 0; i < m->nevents; i++)
        if (same(m->events[i].name, name)) {
            m->events[i].n += n;
            return;
        }
    if (m->nevents < MAX_EVENTS) {
        m->events[m->nevents].name = name;
        m->events[m->nevents].n = n;
        m->nevents++;
    }
}

void metrics_render(const struct metrics *m, struct evbuffer *out)
{
    evbuffer_add_printf(out,
                        "# HELP gridpoints_http_requests_total HTTP requests by route and status.\n"
                        "# TYPE gridpoints_http_requests_total counter\n");
    for (int i = 0; i < m->nseries; i++)
        evbuffer_add_printf(
            out, "gridpoints_http_requests_total{method=\"%s\",route=\"%s\",status=\"%d\"} %llu\n",
            m->series[i].method, m->series[i].route, m->series[i].status,
            (unsigned long long)m->series[i].count);
    evbuffer_add_printf(out, "# HELP gridpoints_http_request_duration_seconds Request latency.\n"
                             "# TYPE gridpoints_http_request_duration_seconds histogram\n");
    for (int i = 0; i < m->nhists; i++) {
        const struct hist *h = &m->hists[i];
        for (size_t b = 0; b < NBUCKETS; b++)
            evbuffer_add_printf(out,
                                "gridpoints_http_request_duration_seconds_bucket{method=\"%s\","
                                "route=\"%s\",le=\"%g\"} %llu\n",
                                h->method, h->route, buckets[b], (unsigned long long)h->b[b]);
        evbuffer_add_printf(
            out,
            "gridpoints_http_request_duration_seconds_bucket{method=\"%s\",route=\"%s\",le=\"+"
            "Inf\"} %llu\n"
            "gridpoints_http_request_duration_seconds_sum{method=\"%s\",route=\"%s\"} %.6f\n"
            "gridpoints_http_request_duration_seconds_count{method=\"%s\",route=\"%s\"} %llu\n",
            h->method, h->route, (unsigned long long)h->count, h->method, h->route, h->sum,
            h->method, h->route, (unsigned long long)h->count);
    }
    evbuffer_add_printf(out, "# HELP gridpoints_events_total Background and domain events.\n"
                             "# TYPE gridpoints_events_total counter\n");
    for (int i = 0; i < m->nevents; i++)
        evbuffer_add_printf(out, "gridpoints_events_total{event=\"%s\"} %llu\n", m->events[i].name,
                            (unsigned long long)m->events[i].n);
}
