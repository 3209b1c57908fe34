/* http.c -- the request side of the HTTP front: request contexts, dispatch through the route
 * table (guard, then handler), request access helpers and replies.
 *
 * The listeners that feed it are http_server.c. Who may reach a handler is the route's guard
 * (router.h): this file calls it through the table and includes no auth module. */
#include "http.h"
#include "app.h"
#include "arena.h"
#include "config.h"
#include "crypto.h"
#include "db.h"
#include "http_guard.h"
#include "log.h"
#include "metrics.h"
#include "replica.h"
#include "utf8.h"

#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/util.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <time.h>
#include <unistd.h>

static void dispatch(struct req_ctx *rc);

static const char *method_name(enum evhttp_cmd_type t)
{
    switch (t) {
    case EVHTTP_REQ_GET:
        return "GET";
    case EVHTTP_REQ_POST:
        return "POST";
    case EVHTTP_REQ_HEAD:
        return "HEAD";
    case EVHTTP_REQ_PUT:
        return "PUT";
    case EVHTTP_REQ_DELETE:
        return "DELETE";
    case EVHTTP_REQ_OPTIONS:
        return "OPTIONS";
    case EVHTTP_REQ_TRACE:
        return "TRACE";
    case EVHTTP_REQ_CONNECT:
        return "CONNECT";
    case EVHTTP_REQ_PATCH:
        return "PATCH";
    }
    return "UNKNOWN";
}

/* ---------------------------------------------------------------------------------------- */
/* Logging                                                                                   */
/* ---------------------------------------------------------------------------------------- */

static void log_ctx(struct req_ctx *rc, char *buf, size_t cap)
{
    buf[0] = '\0';
    log_kv(buf, cap, "rid", rc->rid);
    if (rc->principal.person_id) {
        char id[24];
        *common_put_dec(id, rc->principal.person_id) = '\0';
        log_kv(buf, cap, "person", id);
    }
    if (rc->principal.merchant_id) {
        char id[24];
        snprintf(id, sizeof id, "%lld", (long long)rc->principal.merchant_id);
        log_kv(buf, cap, "merchant", id);
    }
    log_kv(buf, cap, "route", rc->route ? rc->route->pattern : "unmatched");
}

void rlog(struct req_ctx *rc, int level, const char *fmt, ...)
{
    char ctx[256], msg[768];
    log_ctx(rc, ctx, sizeof ctx);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    log_write((enum log_level)level, ctx, "%s", msg);
}

/* ---------------------------------------------------------------------------------------- */
/* Replies                                                                                   */
/* ---------------------------------------------------------------------------------------- */

static void rc_free(struct req_ctx *rc)
{
    evhttp_clear_headers(&rc->query);
    if (rc->json)
        json_decref(rc->json);
    arena_free(rc->arena);
    free(rc);
}

/* A counter dropped: while stopping, the owner checks whether the shutdown may finish (it
 * must wait until every reply has left the socket, not only until it was queued). */
static void settled(struct http_core *core)
{
    if (core->stopping && core->on_settled)
        core->on_settled(core);
}

/* One reply on its way out. Exactly one of two callbacks ends it: libevent's on-complete
 * (the bytes are out), or the connection's close callback (the write failed or the client
 * went away first; libevent then frees the request without calling on-complete). */
struct pending_write {
    struct http_core *core;
};

static void write_done(struct pending_write *pw)
{
    struct http_core *core = pw->core;
    free(pw);
    core->writing--;
    settled(core);
}

static void conn_closed_cb(struct evhttp_connection *conn, void *arg)
{
    write_done(arg);
}

static void written_cb(struct evhttp_request *req, void *arg)
{
    /* The connection may live on (keep-alive) or close right after: either way this reply is
     * done, so its close callback must not count it again. */
    struct evhttp_connection *conn = evhttp_request_get_connection(req);
    if (conn)
        evhttp_connection_set_closecb(conn, NULL, NULL);
    write_done(arg);
}

/* Sends the buffer, logs, counts, frees the context; then checks whether a shutdown waits. */
static void send_and_finish(struct req_ctx *rc, int code, struct evbuffer *body)
{
    struct http_core *core = rc->core;
    struct evkeyvalq *out = evhttp_request_get_output_headers(rc->req);
    evhttp_add_header(out, "X-Request-Id", rc->rid);
    /* API replies are never cached; a handler that may be cached (static.c) sets its own. */
    if (!rc->cache_control_set)
        evhttp_add_header(out, "Cache-Control", "no-store");
    evhttp_add_header(out, "X-Content-Type-Options", "nosniff");
    /* evhttp formats the Date of every HTTP/1.1 reply anew (gmtime and a printf) unless one is
     * given; the text changes once a second, so it is formatted once a second and given (no
     * handler sets a Date). HTTP/1.0 replies carry it too (RFC 9110 §6.6.1: an origin server
     * with a clock sends it). */
    time_t now = time(NULL);
    if (now != core->date_at) {
        struct tm tm;
        int n = gmtime_r(&now, &tm) ? evutil_date_rfc1123(core->date, sizeof core->date, &tm) : -1;
        if (n > 0 && (size_t)n < sizeof core->date)
            core->date_at = now;
        else
            core->date[0] = '\0';
    }
    if (core->date[0])
        evhttp_add_header(out, "Date", core->date);
    if (core->stopping || core->app->stopping) /* draining: the client reconnects elsewhere */
        evhttp_add_header(out, "Connection", "close");
    if (rc->write_marked) /* before the bytes leave: the next read of this person sees it */
        replica_write_end(rc->app->replica, rc->principal.person_id);
    if (rc->reply_hook) {
        size_t len = evbuffer_get_length(body);
        rc->reply_hook(rc, code, (const char *)evbuffer_pullup(body, -1), len);
    }
    /* A request whose client left was detached by libevent (no connection): its reply is
     * dropped at once. Otherwise we learn when the bytes are out. Reading the connection
     * pointer is safe here: the request itself is alive until we send. */
    struct evhttp_connection *conn = evhttp_request_get_connection(rc->req);
    if (conn) {
        struct pending_write *pw = xmalloc(sizeof *pw);
        pw->core = core;
        core->writing++;
        evhttp_request_set_on_complete_cb(rc->req, written_cb, pw);
        evhttp_connection_set_closecb(conn, conn_closed_cb, pw);
    }
    /* After this call the request belongs to libevent again (it frees it, also when the client
     * is gone and the request was detached). */
    if (evhttp_request_get_command(rc->req) == EVHTTP_REQ_HEAD && code != 304) {
        /* libevent 2.1 would send a HEAD reply's body, without a length: send the length of
         * the body a GET would get, and no body. */
        char len[24];
        snprintf(len, sizeof len, "%zu", evbuffer_get_length(body));
        evhttp_add_header(out, "Content-Length", len);
        evbuffer_drain(body, evbuffer_get_length(body));
    }
    struct evbuffer *own = evhttp_request_get_output_buffer(rc->req);
    http_guard_batch_begin(); /* the reply's pieces go to the socket in one move */
    evhttp_send_reply(rc->req, code, NULL, body == own ? NULL : body);
    http_guard_batch_end();
    rc->req = NULL;

    int64_t micros = common_mono_us() - rc->start_us;
    /* A path no route matches (404) or a method its route lacks (405) counts as "unmatched":
     * raw paths never become labels. The method is one of method_name's static names. */
    const char *route = rc->route ? rc->route->pattern : "unmatched";
    const char *method = rc->route ? rc->route->method : rc->method ? rc->method : "OTHER";
    metrics_observe(rc->app->metrics, method, route, code, micros);
    if (log_min_level <= LOG_LEVEL_INFO) {
        char ctx[512], tmp[32];
        log_ctx(rc, ctx, sizeof ctx);
        log_kv(ctx, sizeof ctx, "event", "request");
        log_kv(ctx, sizeof ctx, "method", rc->method);
        log_kv(ctx, sizeof ctx, "path", rc->path ? rc->path : "");
        /* the access line of every request: no printf-family call */
        *common_put_dec(tmp, code) = '\0';
        log_kv(ctx, sizeof ctx, "status", tmp);
        long long tenths = (micros < 0 ? 0 : micros + 50) / 100; /* ms, one decimal */
        char *e = common_put_dec(tmp, tenths / 10);
        *e++ = '.';
        *e++ = (char)('0' + tenths % 10);
        *e = '\0';
        log_kv(ctx, sizeof ctx, "ms", tmp);
        log_kv(ctx, sizeof ctx, "addr", rc->addr);
        if (replica_is_pool(rc->app->replica, rc->db))
            log_kv(ctx, sizeof ctx, "db", "replica");
        log_write_text(LOG_LEVEL_INFO, ctx, "done");
    }
    rc_free(rc);
    core->inflight--;
    settled(core);
}

void http_reply_raw(struct req_ctx *rc, int code, const char *content_type, const char *data,
                    size_t len)
{
    /* straight into the request's own output buffer: no buffer of our own to make and free */
    struct evbuffer *b = evhttp_request_get_output_buffer(rc->req);
    evbuffer_add(b, data, len);
    evhttp_add_header(evhttp_request_get_output_headers(rc->req), "Content-Type", content_type);
    send_and_finish(rc, code, b);
}

void http_reply_borrowed(struct req_ctx *rc, int code, const char *content_type, const void *data,
                         size_t len)
{
    struct evbuffer *b = evbuffer_new();
    if (len)
        evbuffer_add_reference(b, data, len, NULL, NULL);
    if (content_type)
        evhttp_add_header(evhttp_request_get_output_headers(rc->req), "Content-Type", content_type);
    send_and_finish(rc, code, b);
    evbuffer_free(b);
}

void http_reply_json_text(struct req_ctx *rc, int code, const char *json, size_t len)
{
    http_reply_raw(rc, code, "application/json; charset=utf-8", json, len);
}

/* The reply when a body cannot be encoded: fixed bytes, so that this path cannot fail. */
static const char reply_500[] =
    "{\"error\":{\"code\":\"internal\",\"message\":\"the reply could not be encoded\"}}";

void http_reply_json(struct req_ctx *rc, int code, json_t *body)
{
    /* Texts that reach a body are made valid UTF-8 before they get here (reply_error_body,
     * utf8_sanitize), so a failure is our bug, never the client's: answer, log, carry on. */
    char *s = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!s) {
        rlog_error(rc, "cannot encode the %d reply as JSON (%s): answering 500", code,
                   body ? "invalid UTF-8 or an unserialisable value" : "no body");
        http_reply_json_text(rc, 500, reply_500, sizeof reply_500 - 1);
        return;
    }
    http_reply_json_text(rc, code, s, strlen(s));
    free(s);
}

static void reply_error_body(struct req_ctx *rc, enum status st, const char *code,
                             const char *field, const char *message, int retry_after_s)
{
    int http = status_http(st);
    /* Code, field and message may quote what the client sent (an unknown field's name, a
     * parser's view of the bad bytes) or a database error: each is made valid UTF-8 and bounded
     * here, so that encoding the reply cannot fail on them. */
    char c[64], f[128], m[512];
    const char *cs = code && *code ? code : status_code(st);
    utf8_sanitize(c, sizeof c, cs, strlen(cs));
    utf8_sanitize(f, sizeof f, field ? field : "", field ? strlen(field) : 0);
    utf8_sanitize(m, sizeof m, message ? message : "", message ? strlen(message) : 0);
    json_t *err = json_object();
    json_object_set_new(err, "code", json_string(c));
    json_object_set_new(err, "message", json_string(m));
    if (*f)
        json_object_set_new(err, "field", json_string(f));
    json_object_set_new(err, "request_id", json_string(rc->rid));
    struct evkeyvalq *out = evhttp_request_get_output_headers(rc->req);
    if (http == 429 || http == 503) {
        char ra[16];
        snprintf(ra, sizeof ra, "%d", retry_after_s > 0 ? retry_after_s : 1);
        evhttp_add_header(out, "Retry-After", ra);
    }
    if (http == 500)
        rlog_error(rc, "replying 500 %s: %s", code ? code : status_code(st), message);
    else if (http >= 502)
        rlog_warn(rc, "replying %d %s: %s", http, code ? code : status_code(st), message);
    http_reply_json(rc, http, json_pack("{s:o}", "error", err));
}

void http_reply_error(struct req_ctx *rc, enum status st, const char *code, const char *field,
                      const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    reply_error_body(rc, st, code, field, msg, 0);
}

void http_reply_error_retry(struct req_ctx *rc, enum status st, const char *code, int retry_after_s,
                            const char *message)
{
    reply_error_body(rc, st, code, NULL, message, retry_after_s);
}

void http_reply_jv(struct req_ctx *rc, const struct jv_err *e)
{
    reply_error_body(rc, e->st == ST_OK ? ST_INVALID : e->st, e->code, e->field, e->message, 0);
}

void http_reply_db(struct req_ctx *rc, struct db_result *res, int code)
{
    enum status st = db_result_status(res);
    if (st != ST_OK) {
        if (st == ST_INTERNAL)
            rlog_error(rc, "database: %s", db_result_log_detail(res));
        else if (st == ST_UNAVAILABLE)
            rlog_warn(rc, "database: %s", db_result_log_detail(res));
        reply_error_body(rc, st, db_result_error_code(res), db_result_error_field(res),
                         db_result_error_message(res), 1);
        return;
    }
    const char *v = db_result_ntuples(res) > 0 ? db_result_value(res, 0, 0) : NULL;
    if (!v) {
        reply_error_body(rc, ST_NOT_FOUND, NULL, NULL, "not found", 0);
        return;
    }
    http_reply_json_text(rc, code, v, strlen(v));
}

/* ---------------------------------------------------------------------------------------- */
/* Request access                                                                            */
/* ---------------------------------------------------------------------------------------- */

const char *http_header(struct req_ctx *rc, const char *name)
{
    return evhttp_find_header(evhttp_request_get_input_headers(rc->req), name);
}

void http_set_header(struct req_ctx *rc, const char *name, const char *value)
{
    if (strcasecmp(name, "Cache-Control") == 0)
        rc->cache_control_set = true;
    evhttp_add_header(evhttp_request_get_output_headers(rc->req), name, value);
}

const char *http_query(struct req_ctx *rc, const char *key)
{
    return evhttp_find_header(&rc->query, key);
}

bool http_query_i64_or_reply(struct req_ctx *rc, const char *key, int64_t min, int64_t max,
                             int64_t *out)
{
    const char *v = http_query(rc, key);
    if (!v)
        return true;
    if (!jv_parse_i64(v, min, max, out)) {
        http_reply_error(rc, ST_INVALID, "invalid_query", key,
                         "query parameter %s must be an integer between %lld and %lld", key,
                         (long long)min, (long long)max);
        return false;
    }
    return true;
}

bool http_query_time_or_reply(struct req_ctx *rc, const char *key, const char **out)
{
    *out = http_query(rc, key);
    if (!*out || (strlen(*out) <= 40 && jv_is_time(*out)))
        return true;
    http_reply_error(rc, ST_INVALID, "invalid_query", key,
                     "query parameter %s must be an RFC 3339 time with a zone", key);
    return false;
}

bool http_param_id_or_reply(struct req_ctx *rc, int idx, int64_t *out)
{
    if (idx >= rc->params.n || !jv_parse_i64(rc->params.values[idx], 1, INT64_MAX, out)) {
        http_reply_error(rc, ST_NOT_FOUND, "not_found", NULL, "not found");
        return false;
    }
    return true;
}

bool http_body_only_or_reply(struct req_ctx *rc, const char *const *allowed)
{
    struct jv_err e = {0};
    if (!jv_only(rc->json, allowed, &e)) {
        http_reply_jv(rc, &e);
        return false;
    }
    return true;
}

void http_request_hash(struct req_ctx *rc, char out[65])
{
    const char *uri = evhttp_request_get_uri(rc->req);
    size_t ulen = strlen(uri), mlen = strlen(rc->method);
    char *buf = arena_alloc(rc->arena, mlen + ulen + rc->body_len + 3);
    size_t n = 0;
    memcpy(buf + n, rc->method, mlen), n += mlen, buf[n++] = '\n';
    memcpy(buf + n, uri, ulen), n += ulen, buf[n++] = '\n';
    memcpy(buf + n, rc->body, rc->body_len), n += rc->body_len;
    unsigned char d[32];
    crypto_sha256(buf, n, d);
    crypto_hex(d, 32, out);
}

const char *http_idem_principal(struct req_ctx *rc)
{
    if (rc->principal.merchant_id)
        return arena_printf(rc->arena, "merchant:%lld", (long long)rc->principal.merchant_id);
    return arena_printf(rc->arena, "person:%lld", (long long)rc->principal.person_id);
}

/* ---------------------------------------------------------------------------------------- */
/* Dispatch                                                                                  */
/* ---------------------------------------------------------------------------------------- */

static bool token_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.';
}

static void set_request_id(struct req_ctx *rc)
{
    const char *given = http_header(rc, "X-Request-Id");
    if (given) {
        size_t n = strlen(given);
        bool ok = n >= 1 && n < sizeof rc->rid;
        for (size_t i = 0; ok && i < n; i++)
            ok = token_char(given[i]);
        if (ok) {
            memcpy(rc->rid, given, n + 1);
            return;
        }
    }
    /* A random per-process prefix and a counter: unique across instances and restarts for
     * all practical purposes, without a CSPRNG call on every request. Request ids are labels
     * for logs, not secrets. */
    struct http_core *core = rc->core;
    if (!core->rid_prefix[0] && !crypto_random_hex(core->rid_prefix, 4))
        snprintf(core->rid_prefix, sizeof core->rid_prefix, "%08x", (unsigned)getpid());
    /* "<prefix><counter in hex, at least 8 digits>", as "%s%08llx" would print it */
    size_t n = strlen(core->rid_prefix);
    memcpy(rc->rid, core->rid_prefix, n);
    char hex[16];
    int d = 0;
    for (uint64_t v = ++core->rid_counter; v || d < 8; v >>= 4)
        hex[d++] = "0123456789abcdef"[v & 15];
    while (d)
        rc->rid[n++] = hex[--d];
    rc->rid[n] = '\0';
}

static void set_client_addr(struct req_ctx *rc)
{
    const char *fwd = rc->app->cfg->trust_proxy ? http_header(rc, "X-Forwarded-For") : NULL;
    if (fwd) {
        /* The last hop appended by our proxy is the one we can trust. */
        const char *last = strrchr(fwd, ',');
        last = last ? last + 1 : fwd;
        while (*last == ' ' || *last == '\t')
            last++;
        /* Only an address goes into logs, rate-limit keys and sessions: anything else in the
         * header (a name, garbage, bytes that are not UTF-8) falls back to the peer. */
        size_t n = strspn(last, "0123456789abcdefABCDEF:.");
        if (n > 0 && n < sizeof rc->addr && last[n + strspn(last + n, " \t")] == '\0') {
            memcpy(rc->addr, last, n);
            rc->addr[n] = '\0';
            return;
        }
    }
    char *host = NULL;
    ev_uint16_t port = 0;
    struct evhttp_connection *conn = evhttp_request_get_connection(rc->req);
    if (conn)
        evhttp_connection_get_peer(conn, &host, &port);
    const char *a = host ? host : "unknown";
    size_t n = strnlen(a, sizeof rc->addr - 1);
    memcpy(rc->addr, a, n);
    rc->addr[n] = '\0';
}

/* Parses the query into *out. Names and values are percent-decoded, so they could hold any
 * byte: refuse NUL (it would cut a value short in C) and anything that is not UTF-8, so that
 * every handler may pass them on to JSON and SQL as they are. */
static bool query_ok(const char *q, struct evkeyvalq *out)
{
    if (strstr(q, "%00") || evhttp_parse_query_str(q, out) != 0)
        return false;
    for (struct evkeyval *kv = out->tqh_first; kv; kv = kv->next.tqe_next)
        if (!utf8_is_valid(kv->key, strlen(kv->key)) ||
            !utf8_is_valid(kv->value, strlen(kv->value)))
            return false;
    return true;
}

static bool content_type_json(const char *ct)
{
    if (!ct)
        return false;
    while (*ct == ' ')
        ct++;
    size_t n = strlen("application/json");
    return strncasecmp(ct, "application/json", n) == 0 &&
           (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ');
}

bool http_content_is_json(struct req_ctx *rc)
{
    return content_type_json(http_header(rc, "Content-Type"));
}

static void read_body(struct req_ctx *rc);

void http_request_run(struct http_core *core, const struct http_origin *origin,
                      struct evhttp_request *req)
{
    struct req_ctx *rc = xcalloc(1, sizeof *rc);
    rc->app = core->app;
    rc->db = core->app->db;
    rc->core = core;
    rc->server = core->server;
    rc->origin = *origin;
    rc->req = req;
    rc->arena = arena_new();
    rc->start_us = common_mono_us();
    rc->method = method_name(evhttp_request_get_command(req));
    TAILQ_INIT(&rc->query);
    core->inflight++;
    set_request_id(rc);
    set_client_addr(rc);

    /* The connection guard refused what the client sent and stands this request in for it. */
    const struct http_guard_verdict *v = http_guard_verdict(http_header(rc, HTTP_GUARD_HEADER));
    if (v) {
        rc->path = arena_strdup(rc->arena, "(refused)");
        evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
        if (v->st == ST_RATE_LIMITED)
            http_reply_error_retry(rc, v->st, v->code, 1, v->message);
        else
            http_reply_error(rc, v->st, v->code, NULL, "%s", v->message);
        return;
    }

    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    rc->path = arena_strdup(rc->arena, path && *path ? path : "/");
    const char *q = uri ? evhttp_uri_get_query(uri) : NULL;
    if (q && !query_ok(q, &rc->query)) {
        http_reply_error(rc, ST_INVALID, "invalid_query", NULL,
                         "malformed query string (bad escape, NUL or invalid UTF-8)");
        return;
    }
    if (core->stopping) {
        http_reply_error_retry(rc, ST_UNAVAILABLE, "shutting_down", 1, "server is shutting down");
        return;
    }

    if (rc->origin.metrics_only && strcmp(rc->path, "/metrics") != 0) {
        http_reply_error(rc, ST_NOT_FOUND, "route_not_found", NULL, "no such route");
        return;
    }
    char allow[64];
    const struct route *route;
    /* HEAD is GET without the body (RFC 9110 §9.3.2): same route, same handler. */
    const char *as = strcmp(rc->method, "HEAD") == 0 ? "GET" : rc->method;
    switch (router_match(routes_table, routes_count, as, rc->path, &route, &rc->params, allow,
                         sizeof allow)) {
    case ROUTER_NOT_FOUND:
        http_reply_error(rc, ST_NOT_FOUND, "route_not_found", NULL, "no such route");
        return;
    case ROUTER_METHOD_NOT_ALLOWED:
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", allow);
        http_reply_error(rc, ST_METHOD_NOT_ALLOWED, NULL, NULL, "method %s not allowed here",
                         rc->method);
        return;
    case ROUTER_MATCH:
        break;
    }
    rc->route = route;
    if (route->guard && route->guard->before_body) {
        route->guard->check(rc, read_body);
        return;
    }
    read_body(rc);
}

/* The body, its JSON and the Idempotency-Key; then the route's guard (unless it ran before the
 * body) and the handler. */
static void read_body(struct req_ctx *rc)
{
    const struct route *route = rc->route;
    const struct config *cfg = rc->app->cfg;
    struct evbuffer *in = evhttp_request_get_input_buffer(rc->req);
    size_t len = evbuffer_get_length(in);
    size_t max_body = router_body_limit(route, cfg);
    if (len > max_body) {
        http_reply_error(rc, ST_TOO_LARGE, NULL, NULL, "request body exceeds %zu bytes", max_body);
        return;
    }
    char *body = arena_alloc(rc->arena, len + 1);
    evbuffer_remove(in, body, len);
    body[len] = '\0';
    rc->body = body;
    rc->body_len = len;
    /* A raw body (ROUTE_BODY_RAW) stays bytes for its handler, whatever its Content-Type. */
    if (route->body.kind == ROUTE_BODY_JSON && max_body != 0) {
        if (len == 0) {
            rc->json = json_object();
        } else {
            if (!content_type_json(http_header(rc, "Content-Type"))) {
                http_reply_error(rc, ST_UNSUPPORTED_MEDIA, NULL, "Content-Type",
                                 "request body must be application/json");
                return;
            }
            struct jv_err e = {0};
            if (!jv_parse(body, len, cfg->json_max_depth, cfg->json_max_items, &rc->json, &e)) {
                http_reply_jv(rc, &e);
                return;
            }
        }
    }
    const char *idem = http_header(rc, "Idempotency-Key");
    if (idem) {
        size_t n = strlen(idem);
        bool ok = n >= 1 && n <= 255;
        for (size_t i = 0; ok && i < n; i++)
            ok = idem[i] > 0x20 && idem[i] < 0x7f;
        if (!ok) {
            http_reply_error(rc, ST_INVALID, "invalid_idempotency_key", "Idempotency-Key",
                             "Idempotency-Key must be 1 to 255 visible ASCII characters");
            return;
        }
        rc->idem_key = arena_strdup(rc->arena, idem);
    }
    if (route->guard && !route->guard->before_body) {
        route->guard->check(rc, dispatch);
        return;
    }
    dispatch(rc);
}

static void run_handler(void *arg)
{
    struct req_ctx *rc = arg;
    rc->route->handler(rc);
}

static void replica_chosen(void *arg, struct db_pool *pool)
{
    struct req_ctx *rc = arg;
    rc->db = pool;
    rc->route->handler(rc);
}

/* With a read replica (replica.h): replica routes choose their pool; a person's writes mark
 * them so that their own reads follow their writes. */
static void dispatch(struct req_ctx *rc)
{
    struct replica *replica = rc->app->replica;
    if (replica && (rc->route->flags & ROUTE_READ_REPLICA)) {
        replica_choose(replica, rc->principal.person_id, replica_chosen, rc);
        return;
    }
    if (replica && rc->principal.person_id > 0 && strcmp(rc->method, "GET") != 0 &&
        strcmp(rc->method, "HEAD") != 0) {
        rc->write_marked = true;
        replica_write_begin(replica, rc->principal.person_id, run_handler, rc);
        return;
    }
    rc->route->handler(rc);
}
