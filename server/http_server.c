/* http_server.c -- the listeners of the HTTP front: evhttp instances with every limit set,
 * TLS, accept pausing at the connection limit, and the connection guard around every
 * connection.
 *
 * libevent's defaults are unbounded (RELIABILITY §5.1): we set header and body limits, a
 * timeout, the allowed methods and the default content type; the guard (http_guard.c) refuses
 * ambiguous framing (Content-Length together with Transfer-Encoding, any coding other than
 * plain chunked) before libevent's parser sees it; and connections are capped through the
 * open-file limit, pausing accept when it is reached. Each parsed request is handed to the
 * request side (http.c) together with where it arrived. */
#include "http_server.h"
#include "app.h"
#include "config.h"
#include "http.h"
#include "http_guard.h"
#include "log.h"
#include "router.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <string.h>
#include <sys/resource.h>

#define MAX_LISTENERS 4

struct listener {
    struct http_server *hs;
    struct evhttp *http;
    struct evhttp_bound_socket *bound;
    struct event *resume;      /* re-enables accept after EMFILE */
    struct http_origin origin; /* metrics-only, loopback: what guards may ask about */
};

struct http_server {
    struct http_core core; /* the request side's counters and request ids (http.h) */
    struct listener ls[MAX_LISTENERS];
    int nls;
    SSL_CTX *ssl_ctx;
    struct http_guard *guard; /* framing, deadlines and the per-address cap, every listener */
    bool drained;
    void (*on_drained)(void *);
    void *drained_arg;
};

/* A shutdown may finish once no request is running and every reply has left the socket:
 * exiting the loop right after evhttp_send_reply would drop replies still in the buffer. */
static void check_drained(struct http_server *hs)
{
    const struct http_core *c = &hs->core;
    if (c->stopping && !hs->drained && c->inflight == 0 && c->writing == 0 && hs->on_drained) {
        hs->drained = true;
        hs->on_drained(hs->drained_arg);
    }
}

static void core_settled(struct http_core *core)
{
    check_drained(core->server);
}

static void request_cb(struct evhttp_request *req, void *arg)
{
    struct listener *l = arg;
    http_request_run(&l->hs->core, &l->origin, req);
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
        if (router_body_limit(&routes_table[i], cfg) > max)
            max = router_body_limit(&routes_table[i], cfg);
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
    return router_body_limit(route, cfg);
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
    const struct config *cfg = hs->core.app->cfg;
    char host[128];
    int port;
    if (!split_hostport(hostport, host, sizeof host, &port)) {
        log_error("invalid listen address \"%s\": expected host:port", hostport);
        return false;
    }
    struct listener *l = &hs->ls[hs->nls];
    l->hs = hs;
    l->http = evhttp_new(hs->core.app->base);
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
    l->origin.loopback = bound_to_loopback(evhttp_bound_socket_get_fd(l->bound));
    l->resume = evtimer_new(hs->core.app->base, resume_cb, l);
    hs->nls++;
    log_info("listening on %s%s", hostport, tls ? " (TLS)" : "");
    return true;
}

static bool setup_tls(struct http_server *hs)
{
    const struct config *cfg = hs->core.app->cfg;
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
    hs->core.app = app;
    hs->core.server = hs;
    hs->core.on_settled = core_settled;
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
        hs->ls[hs->nls - 1].origin.metrics_only = true;
    }
    return hs;
fail:
    http_server_free(hs);
    return NULL;
}

void http_server_stop_accepting(struct http_server *hs)
{
    if (hs->core.stopping)
        return;
    hs->core.stopping = true;
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
    return hs->core.inflight;
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
    ASSERT(hs->core.inflight == 0);
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
