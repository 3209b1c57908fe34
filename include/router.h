/* router.h -- matching a method and path against the route table.
 *
 * Patterns are literal segments and {name} parameters ("/api/v1/tasks/{id}/claim"). A
 * parameter matches one non-empty segment of [A-Za-z0-9_.-], at most ROUTER_MAX_PARAM_LEN
 * bytes, so no decoding or traversal games reach a handler. A pattern may end in the wildcard
 * "/{*}" ("/app/{*}"): it matches the prefix with or without its slash ("/app", "/app/") and
 * every path below it, of any depth; nothing is captured, the handler reads rc->path and makes
 * its own checks (static.c). The table itself lives in routes.c: it is the one place that lists
 * the API. */
#ifndef GP_ROUTER_H
#define GP_ROUTER_H

#include "common.h"

#define ROUTER_MAX_PARAMS    4
#define ROUTER_MAX_PARAM_LEN 64

struct config;
struct req_ctx;
typedef void (*route_handler)(struct req_ctx *rc);

/* What a route takes as its request body. */
enum route_body_kind {
    ROUTE_BODY_JSON, /* application/json, parsed into rc->json (an empty body is {}) */
    ROUTE_BODY_RAW,  /* the bytes as sent, in rc->body; the handler checks what they are */
};

/* A route's body: its kind and its limit, which the connection guard enforces (413) before
 * the body is read. */
struct route_body {
    enum route_body_kind kind;
    int max; /* bytes; 0 = no body allowed; -1 = server.max_body_size */
    /* When set, the limit in bytes comes from the configuration instead (evidence.max_size). */
    int (*max_of)(const struct config *cfg);
};
/* A JSON body of at most max bytes (0 = none, -1 = server.max_body_size). */
#define ROUTE_JSON(max)                                                                            \
    {                                                                                              \
        ROUTE_BODY_JSON, (max), NULL                                                               \
    }
/* Raw bytes up to max_of(cfg). */
#define ROUTE_RAW(max_of)                                                                          \
    {                                                                                              \
        ROUTE_BODY_RAW, 0, (max_of)                                                                \
    }

/* Who may reach a route's handler. The HTTP core calls check(rc, next) once the request is
 * read; the guard either lets the request through by calling next(rc) (at once or from an
 * async callback) or replies itself and does not call next. It keeps its per-request state in
 * rc->guard_state (arena), never in rc->state, which is the handler's alone. The core knows
 * guards only through this struct: the auth modules define them (auth.h, merchant_auth.h,
 * api.h for /metrics) and routes.c names one per route, so the core includes no auth module. */
struct route_guard {
    const char *name; /* "session", "merchant signature", ... */
    void (*check)(struct req_ctx *rc, route_handler next);
    /* Runs right after the route matched, before the body is read and the Idempotency-Key is
     * checked (a route without a body whose refusal comes first: /metrics). Otherwise it runs
     * last, with the body read and parsed (a signature covers the body). */
    bool before_body;
};

struct route {
    const char *method; /* "GET", "POST", ... */
    const char *pattern;
    route_handler handler;
    const struct route_guard *guard; /* NULL: public */
    struct route_body body;          /* its kind and limit */
    const char *summary;             /* one line, also used by the OpenAPI check */
    unsigned flags;                  /* ROUTE_* below; 0 for most routes */
};

/* One read-only statement that may run on the read replica (replica.h): statements, boards,
 * dashboards, exports. Its handler reads through rc->db (api_query, ...), never writes. */
#define ROUTE_READ_REPLICA 1u

enum router_result { ROUTER_MATCH, ROUTER_NOT_FOUND, ROUTER_METHOD_NOT_ALLOWED };

struct router_params {
    int n;
    char values[ROUTER_MAX_PARAMS][ROUTER_MAX_PARAM_LEN + 1];
};

/* Looks `path` (no query string) up in `routes`; fills *out and params on a match. When the
 * path exists with other methods, returns ROUTER_METHOD_NOT_ALLOWED and writes them,
 * comma-separated, into allow. */
enum router_result router_match(const struct route *routes, size_t nroutes, const char *method,
                                const char *path, const struct route **out,
                                struct router_params *params, char *allow, size_t allowlen);

/* The most bytes `route` takes as its body under cfg (0 = none). */
size_t router_body_limit(const struct route *route, const struct config *cfg);

/* The application's table (routes.c). */
extern const struct route routes_table[];
extern const size_t routes_count;

#endif
