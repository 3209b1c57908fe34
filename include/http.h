/* http.h -- the request side of the HTTP front: the request context, dispatch through the
 * route table (its guard, then its handler), the request access helpers and the only
 * functions that send replies. The listeners, TLS and connection limits that feed it are
 * http_server.h.
 *
 * Every request gets one struct req_ctx, passed as the argument of every async callback it
 * causes. Every path ends in exactly one http_reply_* call, which sends the reply (or frees
 * the request if the client went away meanwhile: libevent detaches it), logs the access line,
 * records metrics and frees the context. Never touch rc after replying, and never touch the
 * evhttp connection after an await. This module knows no auth scheme: a route's guard
 * (router.h) decides who reaches its handler. */
#ifndef GP_HTTP_H
#define GP_HTTP_H

#include "common.h"
#include "jv.h"
#include "principal.h"
#include "router.h"
#include "status.h"

#include <event2/keyvalq_struct.h>
#include <time.h>

struct app;
struct arena;
struct db_result;
struct evhttp_request;
struct http_server;

/* What the request side shares with the listeners that feed it: one per server, owned by
 * http_server.c, updated by http.c. A shutdown waits until both counters are zero. */
struct http_core {
    struct app *app;
    struct http_server *server; /* the owner (opaque here), handed to handlers as rc->server */
    int inflight;               /* requests between accept and reply */
    int writing;                /* replies queued but not yet written out */
    bool stopping;              /* shutting down: new requests get 503, replies close */
    char rid_prefix[9];         /* random per process, for request ids */
    uint64_t rid_counter;
    char date[40]; /* the Date header's text, of the second date_at (send_and_finish) */
    time_t date_at;
    /* Called when a counter dropped while stopping: the owner checks whether it is drained. */
    void (*on_settled)(struct http_core *core);
};

/* Where a request arrived: facts about its listener, for the guards that depend on them. */
struct http_origin {
    bool metrics_only; /* server.metrics_listen: serves /metrics and nothing else */
    bool loopback;     /* bound to 127/8 or ::1 (from the socket, not the spelling) */
};

struct req_ctx {
    struct app *app;
    struct http_core *core;
    struct http_server *server; /* the listeners' owner (http_server.h) */
    struct http_origin origin;
    struct evhttp_request *req; /* owned by libevent; invalid after the reply */
    struct arena *arena;        /* freed with the context */
    const struct route *route;
    struct router_params params;
    const char *method;
    char *path;             /* arena */
    struct evkeyvalq query; /* parsed query string */
    const char *body;       /* raw body (arena, NUL-terminated) */
    size_t body_len;
    json_t *json;         /* parsed body object ({} when empty), freed with the context */
    const char *idem_key; /* Idempotency-Key header or NULL (arena) */
    char rid[40];         /* request id, echoed in X-Request-Id */
    char addr[64];        /* client address */
    struct principal principal;
    int64_t start_us;       /* common_mono_us() when the request began */
    void *state;            /* the handler's own state (arena); guards never touch it */
    void *guard_state;      /* the route guard's own state (arena), e.g. the session lookup */
    struct db_pool *db;     /* where the handler's reads go: app->db, or the replica (replica.h) */
    bool write_marked;      /* replica_write_begin ran: replica_write_end at the reply */
    bool cache_control_set; /* http_set_header gave a Cache-Control (not the API's no-store) */
    /* Called with the final status and body just before the reply is sent, to add headers
     * (merchant_auth signs replies to verified merchant requests with it). */
    void (*reply_hook)(struct req_ctx *rc, int code, const char *body, size_t len);
    void *reply_hook_arg;
};

/* Takes one request from a listener (evhttp's callback, http_server.c) through the framing
 * verdict, routing, the route's guard, body parsing and its handler to exactly one reply. */
void http_request_run(struct http_core *core, const struct http_origin *origin,
                      struct evhttp_request *req);

/* --- replies: exactly one per request --- */
/* Sends body (a new reference, stolen) as JSON. */
void http_reply_json(struct req_ctx *rc, int code, json_t *body);
/* Sends text that already is JSON (e.g. a jsonb column) without re-encoding it. */
void http_reply_json_text(struct req_ctx *rc, int code, const char *json, size_t len);
void http_reply_raw(struct req_ctx *rc, int code, const char *content_type, const char *data,
                    size_t len);
/* Sends len bytes at data without copying them: they must stay valid until the HTTP server is
 * freed (the in-memory web files of static.c). content_type NULL sends none (a 304). A
 * Cache-Control set with http_set_header before replaces the API's no-store. */
void http_reply_borrowed(struct req_ctx *rc, int code, const char *content_type, const void *data,
                         size_t len);
/* The SPEC §5 error body; adds Retry-After to 429 and 503 (retry_after_s, or 1 when 0). */
void http_reply_error(struct req_ctx *rc, enum status st, const char *code, const char *field,
                      const char *fmt, ...) PRINTF_LIKE(5, 6);
void http_reply_error_retry(struct req_ctx *rc, enum status st, const char *code, int retry_after_s,
                            const char *message);
void http_reply_jv(struct req_ctx *rc, const struct jv_err *e);
/* A database result: on success replies `code` with the JSON text in row 0 column 0 (404 when
 * there is no row or it is NULL); on failure the classified error. */
void http_reply_db(struct req_ctx *rc, struct db_result *res, int code);

/* --- request access helpers; the *_or_reply ones reply themselves and return false --- */
const char *http_header(struct req_ctx *rc, const char *name);
/* Adds a response header (before the reply). */
void http_set_header(struct req_ctx *rc, const char *name, const char *value);
const char *http_query(struct req_ctx *rc, const char *key);
/* Is the request's Content-Type application/json (for routes that take raw bytes and parse
 * JSON themselves, with their own limits)? */
bool http_content_is_json(struct req_ctx *rc);
bool http_query_i64_or_reply(struct req_ctx *rc, const char *key, int64_t min, int64_t max,
                             int64_t *out) MUSTCHECK;
/* An RFC 3339 query parameter: *out = its text, or NULL when absent; 400 when malformed. */
bool http_query_time_or_reply(struct req_ctx *rc, const char *key, const char **out) MUSTCHECK;
/* Path parameter idx as a positive id; 404 when it is not one. */
bool http_param_id_or_reply(struct req_ctx *rc, int idx, int64_t *out) MUSTCHECK;
/* Refuses unknown body fields (400) and replies; see jv_only. */
bool http_body_only_or_reply(struct req_ctx *rc, const char *const *allowed) MUSTCHECK;
/* Hex SHA-256 over method, path, query and body: what an idempotency key is bound to. */
void http_request_hash(struct req_ctx *rc, char out[65]);
/* "person:<id>", or "merchant:<id>" for a signed merchant request (arena): the scope of the
 * caller's idempotency keys. */
const char *http_idem_principal(struct req_ctx *rc);

/* Request-scoped log lines: prefixed with rid, route and person. */
void rlog(struct req_ctx *rc, int level, const char *fmt, ...) PRINTF_LIKE(3, 4);
#define rlog_info(rc, ...)                                                                         \
    do {                                                                                           \
        if (log_min_level <= LOG_LEVEL_INFO)                                                       \
            rlog(rc, LOG_LEVEL_INFO, __VA_ARGS__);                                                 \
    } while (0)
#define rlog_warn(rc, ...)                                                                         \
    do {                                                                                           \
        if (log_min_level <= LOG_LEVEL_WARN)                                                       \
            rlog(rc, LOG_LEVEL_WARN, __VA_ARGS__);                                                 \
    } while (0)
#define rlog_error(rc, ...) rlog(rc, LOG_LEVEL_ERROR, __VA_ARGS__)

#endif
