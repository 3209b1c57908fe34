/* http.c -- evhttp listeners, limits, request contexts, dispatch and replies.
 *
 * libevent's defaults are unbounded (RELIABILITY §5.1): we set header and body limits, a
 * timeout, the allowed methods and the default content type, refuse ambiguous framing
 * (Content-Length together with Transfer-Encoding, any coding other than plain chunked), and
 * cap connections through the open-file limit, pausing accept when it is reached. */
#include "http.h"
#include "api.h"
#include "app.h"
#include "arena.h"
#include "config.h"
#include "crypto.h"
#include "db.h"
#include "http_guard.h"
#include "log.h"
#include "merchant_auth.h"
#include "metrics.h"
#include "utf8.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <sys/resource.h>
#include <unistd.h>

#define MAX_LISTENERS 4

struct listener {
    struct http_server *hs;
    struct evhttp *http;
    struct evhttp_bound_socket *bound;
    struct event *resume; /* re-enables accept after EMFILE */
    bool metrics_only;    /* server.metrics_listen: serves /metrics and nothing else */
    bool loopback;        /* bound to 127/8 or ::1 (from the socket, not the spelling) */
};

struct http_server {
    struct app *app;
    struct listener ls[MAX_LISTENERS];
    int nls;
    SSL_CTX *ssl_ctx;
    struct http_guard *guard; /* framing, deadlines and the per-address cap, every listener */
    int inflight;             /* requests between accept and reply */
    int writing;              /* replies queued but not yet written out */
    char rid_prefix[9];       /* random per process, for request ids */
    uint64_t rid_counter;
    bool stopping, drained;
    void (*on_drained)(void *);
    void *drained_arg;
};

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
        snprintf(id, sizeof id, "%lld", (long long)rc->principal.person_id);
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

/* A shutdown may finish once no request is running and every reply has left the socket:
 * exiting the loop right after evhttp_send_reply would drop replies still in the buffer. */
static void check_drained(struct http_server *hs)
{
    if (hs->stopping && !hs->drained && hs->inflight == 0 && hs->writing == 0 && hs->on_drained) {
        hs->drained = true;
        hs->on_drained(hs->drained_arg);
    }
}

/* One reply on its way out. Exactly one of two callbacks ends it: libevent's on-complete
 * (the bytes are out), or the connection's close callback (the write failed or the client
 * went away first; libevent then frees the request without calling on-complete). */
struct pending_write {
    struct http_server *hs;
};

static void write_done(struct pending_write *pw)
{
    struct http_server *hs = pw->hs;
    free(pw);
    hs->writing--;
    check_drained(hs);
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
    struct http_server *hs = rc->server;
    struct evkeyvalq *out = evhttp_request_get_output_headers(rc->req);
    evhttp_add_header(out, "X-Request-Id", rc->rid);
    evhttp_add_header(out, "Cache-Control", "no-store");
    evhttp_add_header(out, "X-Content-Type-Options", "nosniff");
    if (hs->stopping)
        evhttp_add_header(out, "Connection", "close");
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
        pw->hs = hs;
        hs->writing++;
        evhttp_request_set_on_complete_cb(rc->req, written_cb, pw);
        evhttp_connection_set_closecb(conn, conn_closed_cb, pw);
    }
    /* After this call the request belongs to libevent again (it frees it, also when the client
     * is gone and the request was detached). */
    if (evhttp_request_get_command(rc->req) == EVHTTP_REQ_HEAD) {
        /* libevent 2.1 would send a HEAD reply's body, without a length: send the length of
         * the body a GET would get, and no body. */
        char len[24];
        snprintf(len, sizeof len, "%zu", evbuffer_get_length(body));
        evhttp_add_header(out, "Content-Length", len);
        evbuffer_drain(body, evbuffer_get_length(body));
    }
    evhttp_send_reply(rc->req, code, NULL, body);
    rc->req = NULL;

    double secs = (double)(common_mono_ms() - rc->start_ms) / 1000.0;
    const char *route = rc->route ? rc->route->pattern : "unmatched";
    metrics_observe(rc->app->metrics, rc->route ? rc->route->method : "OTHER", route, code, secs);
    if (log_min_level <= LOG_LEVEL_INFO) {
        char ctx[512], tmp[32];
        log_ctx(rc, ctx, sizeof ctx);
        log_kv(ctx, sizeof ctx, "event", "request");
        log_kv(ctx, sizeof ctx, "method", rc->method);
        log_kv(ctx, sizeof ctx, "path", rc->path ? rc->path : "");
        snprintf(tmp, sizeof tmp, "%d", code);
        log_kv(ctx, sizeof ctx, "status", tmp);
        snprintf(tmp, sizeof tmp, "%.1f", secs * 1000);
        log_kv(ctx, sizeof ctx, "ms", tmp);
        log_kv(ctx, sizeof ctx, "addr", rc->addr);
        log_write(LOG_LEVEL_INFO, ctx, "%s", "done");
    }
    rc_free(rc);
    hs->inflight--;
    check_drained(hs);
}

void http_reply_raw(struct req_ctx *rc, int code, const char *content_type, const char *data,
                    size_t len)
{
    struct evbuffer *b = evbuffer_new();
    evbuffer_add(b, data, len);
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
    struct http_server *hs = rc->server;
    if (!hs->rid_prefix[0] && !crypto_random_hex(hs->rid_prefix, 4))
        snprintf(hs->rid_prefix, sizeof hs->rid_prefix, "%08x", (unsigned)getpid());
    snprintf(rc->rid, sizeof rc->rid, "%s%08llx", hs->rid_prefix,
             (unsigned long long)++hs->rid_counter);
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
    snprintf(rc->addr, sizeof rc->addr, "%s", host ? host : "unknown");
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

static void request_cb(struct evhttp_request *req, void *arg)
{
    struct listener *l = arg;
    struct http_server *hs = l->hs;
    struct app *app = hs->app;
    struct req_ctx *rc = xcalloc(1, sizeof *rc);
    rc->app = app;
    rc->server = hs;
    rc->req = req;
    rc->arena = arena_new();
    rc->start_ms = common_mono_ms();
    rc->method = method_name(evhttp_request_get_command(req));
    TAILQ_INIT(&rc->query);
    hs->inflight++;
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
    if (hs->stopping) {
        http_reply_error_retry(rc, ST_UNAVAILABLE, "shutting_down", 1, "server is shutting down");
        return;
    }

    if (l->metrics_only && strcmp(rc->path, "/metrics") != 0) {
        http_reply_error(rc, ST_NOT_FOUND, "route_not_found", NULL, "no such route");
        return;
    }
    char allow[64];
    const struct route *route;
    /* HEAD is GET without the body (RFC 9110 §9.3.2): same route, same handler. */
    const char *as = strcmp(rc->method, "HEAD") == 0 ? "GET" : rc->method;
    switch (router_match(routes_table, routes_count, as, rc->path, &route, &rc->params,
                         allow, sizeof allow)) {
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
    if (route->handler == api_metrics &&
        !api_metrics_allowed_or_reply(rc, l->metrics_only, l->loopback))
        return;

    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    int max_body = route->max_body < 0 ? app->cfg->max_body_size : route->max_body;
    if (len > (size_t)max_body) {
        http_reply_error(rc, ST_TOO_LARGE, NULL, NULL, "request body exceeds %d bytes", max_body);
        return;
    }
    char *body = arena_alloc(rc->arena, len + 1);
    evbuffer_remove(in, body, len);
    rc->body = body;
    rc->body_len = len;
    if (route->max_body != 0) {
        if (len == 0) {
            rc->json = json_object();
        } else {
            if (!content_type_json(http_header(rc, "Content-Type"))) {
                http_reply_error(rc, ST_UNSUPPORTED_MEDIA, NULL, "Content-Type",
                                 "request body must be application/json");
                return;
            }
            struct jv_err e = {0};
            if (!jv_parse(body, len, app->cfg->json_max_depth, app->cfg->json_max_items, &rc->json,
                          &e)) {
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
    if (route->auth == AUTH_SESSION) {
        auth_session_resolve(rc, dispatch);
        return;
    }
    if (route->auth == AUTH_MERCHANT) {
        merchant_auth_resolve(rc, dispatch);
        return;
    }
    dispatch(rc);
}

static void dispatch(struct req_ctx *rc)
{
    rc->route->handler(rc);
}

/* ---------------------------------------------------------------------------------------- */
/* Listeners                                                                                 */
/* ---------------------------------------------------------------------------------------- */

static void resume_cb(evutil_socket_t fd, short what, void *arg)
{
    struct listener *l = arg;
    evconnlistener_enable(evhttp_bound_socket_get_listener(l->bound));
}

/* accept() failing with EMFILE means we are at max_connections: pause accepting for a moment
 * instead of spinning on a listener that stays readable. */
static void accept_error_cb(struct evconnlistener *lev, void *arg)
{
    struct listener *l = arg;
    int err = EVUTIL_SOCKET_ERROR();
    log_warn("accept failed (%s): pausing new connections for 100 ms",
             evutil_socket_error_to_string(err));
    evconnlistener_disable(lev);
    struct timeval tv = {0, 100000};
    event_add(l->resume, &tv);
}

/* Every connection's transport (a socket, or TLS over it) is wrapped by the guard. */
static struct bufferevent *plain_bev_cb(struct event_base *base, void *arg)
{
    struct http_server *hs = arg;
    return http_guard_wrap(hs->guard, bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE));
}

static struct bufferevent *tls_bev_cb(struct event_base *base, void *arg)
{
    struct http_server *hs = arg;
    SSL *ssl = SSL_new(hs->ssl_ctx);
    return http_guard_wrap(hs->guard,
                           bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                                          BEV_OPT_CLOSE_ON_FREE));
}

/* The largest body any route takes: the guard refuses more per route, so evhttp's own limit
 * (and its HTML 413) is never reached. */
static size_t largest_body(const struct config *cfg)
{
    size_t max = (size_t)cfg->max_body_size;
    for (size_t i = 0; i < routes_count; i++)
        if (routes_table[i].max_body > 0 && (size_t)routes_table[i].max_body > max)
            max = (size_t)routes_table[i].max_body;
    return max;
}

static size_t route_body_limit(const char *method, const char *path, void *arg)
{
    const struct config *cfg = arg;
    const struct route *route;
    struct router_params params;
    char allow[64];
    if (router_match(routes_table, routes_count, method, path, &route, &params, allow,
                     sizeof allow) != ROUTER_MATCH)
        return (size_t)cfg->max_body_size;
    return route->max_body < 0 ? (size_t)cfg->max_body_size : (size_t)route->max_body;
}

static bool split_hostport(const char *s, char *host, size_t hostlen, int *port)
{
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s || (size_t)(colon - s) >= hostlen)
        return false;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    int64_t p;
    if (!jv_parse_i64(colon + 1, 0, 65535, &p))
        return false;
    *port = (int)p;
    return true;
}

/* Whether the socket listens on a loopback address only: read from the bound socket, so
 * that "127.1" or a name resolving to 127.0.0.1 count, and "0.0.0.0" does not. */
static bool bound_to_loopback(evutil_socket_t fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
        return false;
    if (ss.ss_family == AF_INET)
        return (ntohl(((struct sockaddr_in *)&ss)->sin_addr.s_addr) >> 24) == 127;
    if (ss.ss_family != AF_INET6)
        return false;
    const struct in6_addr *a = &((struct sockaddr_in6 *)&ss)->sin6_addr;
    return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
}

static bool add_listener(struct http_server *hs, const char *hostport, bool tls)
{
    const struct config *cfg = hs->app->cfg;
    char host[128];
    int port;
    if (!split_hostport(hostport, host, sizeof host, &port)) {
        log_error("invalid listen address \"%s\": expected host:port", hostport);
        return false;
    }
    struct listener *l = &hs->ls[hs->nls];
    l->hs = hs;
    l->http = evhttp_new(hs->app->base);
    /* The guard enforces the real limits with JSON replies; these only back them up, with
     * room for the guard's own stand-in requests. */
    evhttp_set_max_headers_size(l->http, (ev_ssize_t)cfg->max_header_size + 1024);
    evhttp_set_max_body_size(l->http, (ev_ssize_t)largest_body(cfg));
    int timeout_ms =
        cfg->read_timeout_ms > cfg->write_timeout_ms ? cfg->read_timeout_ms : cfg->write_timeout_ms;
    evhttp_set_timeout(l->http, (timeout_ms + 999) / 1000);
    evhttp_set_allowed_methods(l->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_PUT |
                                            EVHTTP_REQ_DELETE | EVHTTP_REQ_PATCH | EVHTTP_REQ_HEAD |
                                            EVHTTP_REQ_OPTIONS);
    evhttp_set_default_content_type(l->http, "application/json; charset=utf-8");
    evhttp_set_gencb(l->http, request_cb, l);
    evhttp_set_bevcb(l->http, tls ? tls_bev_cb : plain_bev_cb, hs);
    l->bound = evhttp_bind_socket_with_handle(l->http, host, (ev_uint16_t)port);
    if (!l->bound) {
        log_error("cannot listen on %s: %s", hostport, strerror(errno));
        evhttp_free(l->http);
        l->http = NULL;
        return false;
    }
    struct evconnlistener *lev = evhttp_bound_socket_get_listener(l->bound);
    evconnlistener_set_error_cb(lev, accept_error_cb);
    l->loopback = bound_to_loopback(evhttp_bound_socket_get_fd(l->bound));
    l->resume = evtimer_new(hs->app->base, resume_cb, l);
    hs->nls++;
    log_info("listening on %s%s", hostport, tls ? " (TLS)" : "");
    return true;
}

static bool setup_tls(struct http_server *hs)
{
    const struct config *cfg = hs->app->cfg;
    hs->ssl_ctx = SSL_CTX_new(TLS_server_method());
    SSL_CTX_set_min_proto_version(hs->ssl_ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(hs->ssl_ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    if (SSL_CTX_use_certificate_chain_file(hs->ssl_ctx, cfg->tls_cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(hs->ssl_ctx, cfg->tls_key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(hs->ssl_ctx) != 1) {
        char buf[256];
        ERR_error_string_n(ERR_get_error(), buf, sizeof buf);
        log_error("cannot load TLS certificate %s / key %s: %s", cfg->tls_cert, cfg->tls_key, buf);
        return false;
    }
    return true;
}

/* Caps connections through RLIMIT_NOFILE: max_connections plus a reserve for the database
 * pool, Redis, the worker pipe, logs and listeners. */
static void apply_connection_limit(const struct config *cfg)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    rlim_t want = (rlim_t)cfg->max_connections + (rlim_t)cfg->db_pool_size + 64;
    if (rl.rlim_max != RLIM_INFINITY && want > rl.rlim_max) {
        log_warn("server.max_connections=%d exceeds the open-file hard limit %llu; capped",
                 cfg->max_connections, (unsigned long long)rl.rlim_max);
        want = rl.rlim_max;
    }
    rl.rlim_cur = want;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
        log_warn("cannot set the open-file limit to %llu: %s", (unsigned long long)want,
                 strerror(errno));
}

struct http_server *http_server_new(struct app *app)
{
    const struct config *cfg = app->cfg;
    struct http_server *hs = xcalloc(1, sizeof *hs);
    hs->app = app;
    struct http_guard_config gc = {
        .max_header_size = (size_t)cfg->max_header_size,
        .head_timeout_ms = cfg->head_timeout_ms,
        .body_timeout_ms = cfg->body_timeout_ms,
        .max_conns_per_addr = cfg->max_connections_per_addr,
        .body_limit = route_body_limit,
        .body_limit_arg = (void *)cfg,
    };
    hs->guard = http_guard_new(app->base, &gc);
    apply_connection_limit(cfg);
    if (!add_listener(hs, cfg->listen, false))
        goto fail;
    if (*cfg->tls_listen) {
        if (!setup_tls(hs) || !add_listener(hs, cfg->tls_listen, true))
            goto fail;
    }
    if (*cfg->metrics_listen) {
        if (!add_listener(hs, cfg->metrics_listen, false))
            goto fail;
        hs->ls[hs->nls - 1].metrics_only = true;
    }
    return hs;
fail:
    http_server_free(hs);
    return NULL;
}

void http_server_stop_accepting(struct http_server *hs)
{
    if (hs->stopping)
        return;
    hs->stopping = true;
    for (int i = 0; i < hs->nls; i++) {
        if (hs->ls[i].bound) {
            evhttp_del_accept_socket(hs->ls[i].http, hs->ls[i].bound);
            hs->ls[i].bound = NULL;
        }
    }
    check_drained(hs);
}

void http_server_render_metrics(const struct http_server *hs, struct evbuffer *out)
{
    struct http_guard_stats gs;
    http_guard_get_stats(hs->guard, &gs);
    evbuffer_add_printf(
        out,
        "# HELP gridpoints_http_refused_total Requests refused for their framing, size or method.\n"
        "# TYPE gridpoints_http_refused_total counter\ngridpoints_http_refused_total %llu\n"
        "# HELP gridpoints_http_slow_closed_total Connections closed by the head or body "
        "deadline.\n"
        "# TYPE gridpoints_http_slow_closed_total counter\ngridpoints_http_slow_closed_total %llu\n"
        "# HELP gridpoints_http_capped_total Connections refused by the per-address cap.\n"
        "# TYPE gridpoints_http_capped_total counter\ngridpoints_http_capped_total %llu\n"
        "# HELP gridpoints_http_connections Open client connections.\n"
        "# TYPE gridpoints_http_connections gauge\ngridpoints_http_connections %d\n",
        (unsigned long long)gs.refused, (unsigned long long)gs.timeouts,
        (unsigned long long)gs.capped, gs.open);
}

int http_server_inflight(const struct http_server *hs)
{
    return hs->inflight;
}

void http_server_on_drained(struct http_server *hs, void (*cb)(void *arg), void *arg)
{
    hs->on_drained = cb;
    hs->drained_arg = arg;
}

void http_server_free(struct http_server *hs)
{
    if (!hs)
        return;
    ASSERT(hs->inflight == 0);
    for (int i = 0; i < hs->nls; i++) {
        if (hs->ls[i].resume)
            event_free(hs->ls[i].resume);
        if (hs->ls[i].http)
            evhttp_free(hs->ls[i].http);
    }
    if (hs->ssl_ctx)
        SSL_CTX_free(hs->ssl_ctx);
    http_guard_free(hs->guard); /* the last connection to go frees it, if any is still alive */
    free(hs);
}
