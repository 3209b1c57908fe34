/* webhook.c -- merchant webhook deliveries: resolve, check the address, POST over TLS to the
 * checked address, report to PostgreSQL (webhook.h has the contract).
 *
 * Owns: the client SSL_CTX, the evdns resolver and one struct delivery per event in flight,
 * kept on a list so that a shutdown can cancel them. A delivery is freed only by finish(),
 * which runs from the loop (a DNS or db callback, or the after_send timer) and never inside a
 * libevent HTTP callback: the connection is freed from the timer, after the request's own
 * callback returned (libevent frees the request after that callback). */
#include "webhook.h"
#include "app.h"
#include "config.h"
#include "db.h"
#include "log.h"
#include "merchant_crypto.h"
#include "metrics.h"
#include "netaddr.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/util.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#define URL_MAX 500

/* ---------------------------------------------------------------------------------------- */
/* URL check (pure)                                                                          */
/* ---------------------------------------------------------------------------------------- */

bool webhook_url_check(const char *url, bool allow_private, const char **code)
{
    *code = "invalid_webhook_url";
    if (!url || strlen(url) > URL_MAX)
        return false;
    for (const char *p = url; *p; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
            return false;
    struct evhttp_uri *u = evhttp_uri_parse_with_flags(url, 0);
    if (!u)
        return false;
    const char *scheme = evhttp_uri_get_scheme(u), *host = evhttp_uri_get_host(u);
    int port = evhttp_uri_get_port(u);
    bool ok = scheme && !strcasecmp(scheme, "https") && host && *host &&
              !evhttp_uri_get_userinfo(u) && !evhttp_uri_get_fragment(u) &&
              (port == -1 || (port > 0 && port <= 65535));
    if (ok) {
        /* The host as the resolver reads it: "0x7f000001" and "127.1" are 127.0.0.1. A name
         * is checked again after resolution, at every delivery (address_refused). */
        struct sockaddr_storage ss;
        switch (netaddr_parse_host(host, &ss)) {
        case NETADDR_HOST_INVALID:
            ok = false;
            break;
        case NETADDR_HOST_LITERAL:
            *code = "webhook_url_not_allowed";
            ok = netaddr_allowed(netaddr_classify((struct sockaddr *)&ss), allow_private);
            break;
        case NETADDR_HOST_LOCAL_NAME:
            *code = "webhook_url_not_allowed";
            ok = allow_private;
            break;
        case NETADDR_HOST_NAME:
            break;
        }
    }
    evhttp_uri_free(u);
    return ok;
}

/* ---------------------------------------------------------------------------------------- */
/* Deliveries                                                                                */
/* ---------------------------------------------------------------------------------------- */

enum step { D_RESOLVE, D_SEND, D_REPORT };

struct delivery {
    struct webhooks *w;
    struct delivery *prev, *next;
    enum step step;
    int64_t id;
    int attempt;
    int64_t merchant_id;
    char event_id[80];
    char host[256];
    bool literal; /* host is an IP address (in any spelling inet_aton or inet_pton reads) */
    int port;
    char *path; /* path and query, as in the URL */
    char *body;
    size_t body_len;
    char secret[160];
    size_t secret_len;
    struct sockaddr_storage addr;
    struct evdns_getaddrinfo_request *dns;
    bool dns_done; /* the resolver's callback ran (perhaps inside evdns_getaddrinfo) */
    struct evhttp_connection *conn;
    bool sent; /* the request's callback ran */
    struct event *after_send;
    bool ok;
    int status;
    char error[160];
};

struct webhooks {
    struct app *app;
    SSL_CTX *ssl_ctx;
    struct evdns_base *dns;
    struct delivery *head;
    int inflight;
    bool stopping;
    void (*idle)(void *);
    void *idle_arg;
};

static void maybe_idle(struct webhooks *w)
{
    if (w->stopping && w->idle && w->inflight == 0) {
        void (*idle)(void *) = w->idle;
        w->idle = NULL;
        idle(w->idle_arg);
    }
}

static void finish(struct delivery *d)
{
    struct webhooks *w = d->w;
    if (d->prev)
        d->prev->next = d->next;
    else
        w->head = d->next;
    if (d->next)
        d->next->prev = d->prev;
    if (d->conn)
        evhttp_connection_free(d->conn); /* pending requests are freed without callbacks */
    if (d->after_send)
        event_free(d->after_send);
    mcrypto_wipe(d->secret, sizeof d->secret);
    free(d->path);
    free(d->body);
    free(d);
    w->inflight--;
    maybe_idle(w);
}

static void report_cb(struct db_result *res, void *arg)
{
    struct delivery *d = arg;
    if (db_result_status(res) != ST_OK)
        log_warn("webhook %s: cannot record the attempt: %s", d->event_id,
                 db_result_log_detail(res));
    finish(d);
}

static void report(struct delivery *d)
{
    const struct config *cfg = d->w->app->cfg;
    d->step = D_REPORT;
    metrics_count(d->w->app->metrics, d->ok ? "webhook_delivered" : "webhook_attempt_failed", 1);
    if (!d->ok)
        log_info("webhook %s attempt %d failed: %s (status %d)", d->event_id, d->attempt, d->error,
                 d->status);
    char id[24], attempt[16], status[16], backoff[16], retry_for[16];
    snprintf(id, sizeof id, "%lld", (long long)d->id);
    snprintf(attempt, sizeof attempt, "%d", d->attempt);
    snprintf(status, sizeof status, "%d", d->status);
    snprintf(backoff, sizeof backoff, "%d", cfg->merchant_webhook_backoff_s);
    snprintf(retry_for, sizeof retry_for, "%d", cfg->merchant_webhook_retry_for_s);
    const char *params[] = {id,
                            attempt,
                            d->ok ? "true" : "false",
                            d->status ? status : NULL,
                            d->ok ? NULL : d->error,
                            backoff,
                            retry_for};
    db_query(d->w->app->db, "SELECT gp_webhook_result($1, $2, $3::boolean, $4, $5, $6, $7)", 7,
             params, report_cb, d);
}

static void fail(struct delivery *d, const char *what, const char *detail)
{
    d->ok = false;
    snprintf(d->error, sizeof d->error, "%s%s%s", what, detail ? ": " : "", detail ? detail : "");
    report(d);
}

/* After the request's callback returned: free the connection, then report. */
static void after_send_cb(evutil_socket_t fd, short what, void *arg)
{
    struct delivery *d = arg;
    if (!d->ok && d->status == 0 && d->conn) {
        struct bufferevent *bev = evhttp_connection_get_bufferevent(d->conn);
        SSL *ssl = bev ? bufferevent_openssl_get_ssl(bev) : NULL;
        long v = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
        unsigned long e = bev ? bufferevent_get_openssl_error(bev) : 0;
        if (v != X509_V_OK) {
            snprintf(d->error, sizeof d->error, "tls: certificate not trusted: %s",
                     X509_verify_cert_error_string(v));
        } else if (e) {
            char buf[120];
            ERR_error_string_n(e, buf, sizeof buf);
            snprintf(d->error, sizeof d->error, "tls: %s", buf);
        }
    }
    if (!d->ok && !*d->error)
        snprintf(d->error, sizeof d->error, "%s", d->status ? "non-2xx status" : "no response");
    evhttp_connection_free(d->conn);
    d->conn = NULL;
    report(d);
}

static void http_error_cb(enum evhttp_request_error err, void *arg)
{
    struct delivery *d = arg;
    const char *what = err == EVREQ_HTTP_TIMEOUT          ? "timeout"
                       : err == EVREQ_HTTP_EOF            ? "connection closed"
                       : err == EVREQ_HTTP_INVALID_HEADER ? "invalid response header"
                       : err == EVREQ_HTTP_BUFFER_ERROR   ? "connection or tls failure"
                       : err == EVREQ_HTTP_DATA_TOO_LONG  ? "response too long"
                                                          : "request cancelled";
    snprintf(d->error, sizeof d->error, "%s", what);
}

/* libevent's request callback (once): req is NULL on failure. Nothing is freed here. */
static void http_done_cb(struct evhttp_request *req, void *arg)
{
    struct delivery *d = arg;
    d->sent = true;
    d->status = req ? evhttp_request_get_response_code(req) : 0;
    d->ok = d->status >= 200 && d->status < 300;
    struct timeval now = {0, 0};
    evtimer_add(d->after_send, &now);
}

static void send_to_addr(struct delivery *d)
{
    struct webhooks *w = d->w;
    const struct config *cfg = w->app->cfg;
    struct event_base *base = w->app->base;
    char ip[INET6_ADDRSTRLEN];
    if (!netaddr_format((struct sockaddr *)&d->addr, ip, sizeof ip)) {
        fail(d, "bad address", NULL);
        return;
    }
    d->step = D_SEND;
    SSL *ssl = SSL_new(w->ssl_ctx);
    X509_VERIFY_PARAM *vp = SSL_get0_param(ssl);
    if (d->literal) {
        X509_VERIFY_PARAM_set1_ip_asc(vp, ip);
    } else {
        SSL_set_tlsext_host_name(ssl, d->host);
        X509_VERIFY_PARAM_set_hostflags(vp, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        X509_VERIFY_PARAM_set1_host(vp, d->host, 0);
    }
    /* The bufferevent owns the SSL (freed with it), the connection owns the bufferevent.
     * The connection gets the checked address as an IP literal (and no evdns base), so
     * nothing resolves the name again between the check and the connect: the address is
     * pinned. The Host header and the certificate check still use the URL's host. */
    struct bufferevent *bev = bufferevent_openssl_socket_new(
        base, -1, ssl, BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    if (!bev) {
        SSL_free(ssl);
        fail(d, "cannot create the tls stream", NULL);
        return;
    }
    bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    d->conn = evhttp_connection_base_bufferevent_new(base, NULL, bev, ip, (ev_uint16_t)d->port);
    evhttp_connection_set_timeout(d->conn, cfg->merchant_webhook_timeout_s);
    evhttp_connection_set_retries(d->conn, 0);
    evhttp_connection_set_max_body_size(d->conn, 64 * 1024);
    evhttp_connection_set_max_headers_size(d->conn, 16 * 1024);

    struct evhttp_request *req = evhttp_request_new(http_done_cb, d);
    evhttp_request_set_error_cb(req, http_error_cb);
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    char hostport[300], sig[128];
    if (d->port == 443)
        snprintf(hostport, sizeof hostport, "%s", d->host);
    else
        snprintf(hostport, sizeof hostport, "%s:%d", d->host, d->port);
    mcrypto_webhook_signature(d->secret, d->secret_len, common_wall_ms() / 1000, d->body,
                              d->body_len, sig, sizeof sig);
    evhttp_add_header(h, "Host", hostport);
    evhttp_add_header(h, "Content-Type", "application/json; charset=utf-8");
    evhttp_add_header(h, "User-Agent", "gridpoints-webhooks/1");
    evhttp_add_header(h, "Gridpoints-Event-Id", d->event_id);
    evhttp_add_header(h, "Gridpoints-Signature", sig);
    evhttp_add_header(h, "Connection", "close");
    evbuffer_add(evhttp_request_get_output_buffer(req), d->body, d->body_len);
    if (evhttp_make_request(d->conn, req, EVHTTP_REQ_POST, d->path) != 0) {
        /* Only a failure to create the socket gets here; the request was not queued. */
        evhttp_request_free(req);
        fail(d, "cannot connect", NULL);
    }
}

/* True (logged) when policy refuses sa: the delivery then fails like any other attempt and is
 * retried with back-off (the name may resolve elsewhere later). */
static bool address_refused(struct delivery *d, const struct sockaddr *sa)
{
    enum netaddr_kind kind = netaddr_classify(sa);
    if (netaddr_allowed(kind, d->w->app->cfg->merchant_webhook_allow_private))
        return false;
    char ip[INET6_ADDRSTRLEN];
    netaddr_format(sa, ip, sizeof ip);
    log_warn("webhook %s attempt %d: host %s is %s, a %s address: refused", d->event_id, d->attempt,
             d->host, ip, netaddr_kind_name(kind));
    return true;
}

/* Sends to sa, an address that passed address_refused. */
static void send_pinned(struct delivery *d, const struct sockaddr *sa, socklen_t len)
{
    memcpy(&d->addr, sa, len);
    if (d->addr.ss_family == AF_INET)
        ((struct sockaddr_in *)&d->addr)->sin_port = htons((uint16_t)d->port);
    else
        ((struct sockaddr_in6 *)&d->addr)->sin6_port = htons((uint16_t)d->port);
    send_to_addr(d);
}

static void dns_cb(int result, struct evutil_addrinfo *res, void *arg)
{
    struct delivery *d = arg;
    d->dns = NULL;
    d->dns_done = true;
    if (d->w->stopping || result == EVUTIL_EAI_CANCEL) {
        if (res)
            evutil_freeaddrinfo(res);
        finish(d); /* not reported: the lease runs out and the event is retried */
        return;
    }
    if (result != 0 || !res) {
        fail(d, "dns", evutil_gai_strerror(result));
        return;
    }
    /* Every address must pass: a name that resolves to one public and one private address
     * is refused, so that no answer order can reach an internal host. */
    const struct evutil_addrinfo *first = NULL;
    for (const struct evutil_addrinfo *ai = res; ai; ai = ai->ai_next) {
        if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
            continue;
        if (address_refused(d, ai->ai_addr)) {
            evutil_freeaddrinfo(res);
            fail(d, "address_not_allowed", NULL);
            return;
        }
        if (!first)
            first = ai;
    }
    if (!first) {
        evutil_freeaddrinfo(res);
        fail(d, "dns: no address", NULL);
        return;
    }
    struct sockaddr_storage ss;
    socklen_t len = (socklen_t)first->ai_addrlen;
    memcpy(&ss, first->ai_addr, len);
    evutil_freeaddrinfo(res);
    send_pinned(d, (struct sockaddr *)&ss, len);
}

/* Parses one claimed item into a new delivery and starts it. */
static void start(struct webhooks *w, json_t *item)
{
    const struct config *cfg = w->app->cfg;
    const char *url = json_string_value(json_object_get(item, "url"));
    const char *sealed = json_string_value(json_object_get(item, "secret_ct"));
    const char *body = json_string_value(json_object_get(item, "body"));
    const char *event_id = json_string_value(json_object_get(item, "event_id"));
    json_t *id = json_object_get(item, "id"), *attempt = json_object_get(item, "attempt"),
           *mid = json_object_get(item, "merchant_id");
    if (!json_is_integer(id) || !json_is_integer(attempt) || !json_is_integer(mid) || !body ||
        !event_id) {
        log_warn("webhook sweep: malformed item skipped");
        return;
    }
    struct delivery *d = xcalloc(1, sizeof *d);
    d->w = w;
    d->id = json_integer_value(id);
    d->attempt = (int)json_integer_value(attempt);
    d->merchant_id = json_integer_value(mid);
    snprintf(d->event_id, sizeof d->event_id, "%s", event_id);
    d->body = xstrdup(body);
    d->body_len = strlen(body);
    d->after_send = evtimer_new(w->app->base, after_send_cb, d);
    d->next = w->head;
    if (w->head)
        w->head->prev = d;
    w->head = d;
    w->inflight++;

    if (!url || !sealed) {
        fail(d, "webhook removed", NULL);
        return;
    }
    unsigned char kek[32];
    char aad[48];
    snprintf(aad, sizeof aad, "webhook:%lld", (long long)d->merchant_id);
    bool opened = mcrypto_parse_kek(cfg->merchant_key_encryption_key, kek) &&
                  mcrypto_open(kek, aad, sealed, d->secret, sizeof d->secret, &d->secret_len);
    mcrypto_wipe(kek, sizeof kek);
    if (!opened) {
        log_error("webhook %s: cannot open the webhook secret of merchant %lld", d->event_id,
                  (long long)d->merchant_id);
        fail(d, "cannot open the webhook secret", NULL);
        return;
    }
    struct evhttp_uri *u = evhttp_uri_parse_with_flags(url, 0);
    const char *host = u ? evhttp_uri_get_host(u) : NULL;
    const char *scheme = u ? evhttp_uri_get_scheme(u) : NULL;
    if (!host || !*host || !scheme || strcasecmp(scheme, "https") != 0 ||
        strlen(host) >= sizeof d->host) {
        if (u)
            evhttp_uri_free(u);
        fail(d, "invalid url", NULL);
        return;
    }
    snprintf(d->host, sizeof d->host, "%s", host);
    d->port = evhttp_uri_get_port(u) > 0 ? evhttp_uri_get_port(u) : 443;
    const char *path = evhttp_uri_get_path(u), *query = evhttp_uri_get_query(u);
    size_t plen = (path && *path ? strlen(path) : 1) + (query ? strlen(query) + 1 : 0) + 1;
    d->path = xmalloc(plen);
    snprintf(d->path, plen, "%s%s%s", path && *path ? path : "/", query ? "?" : "",
             query ? query : "");
    evhttp_uri_free(u);

    /* The host is read as at registration (webhook_url_check): the policy may have changed
     * since, and a URL stored by an older version was checked by older rules. */
    struct sockaddr_storage ss;
    switch (netaddr_parse_host(d->host, &ss)) {
    case NETADDR_HOST_INVALID:
        fail(d, "invalid url", NULL);
        return;
    case NETADDR_HOST_LITERAL:
        d->literal = true;
        if (address_refused(d, (struct sockaddr *)&ss)) {
            fail(d, "address_not_allowed", NULL);
            return;
        }
        send_pinned(d, (struct sockaddr *)&ss,
                    ss.ss_family == AF_INET ? sizeof(struct sockaddr_in)
                                            : sizeof(struct sockaddr_in6));
        return;
    case NETADDR_HOST_LOCAL_NAME:
        if (!cfg->merchant_webhook_allow_private) {
            log_warn("webhook %s attempt %d: host %s is a local name: refused", d->event_id,
                     d->attempt, d->host);
            fail(d, "address_not_allowed", NULL);
            return;
        }
        break;
    case NETADDR_HOST_NAME:
        break;
    }
    d->step = D_RESOLVE;
    struct evutil_addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    /* The callback may run inside this call (hosts file, cache): it sets dns_done then. */
    struct evdns_getaddrinfo_request *r =
        evdns_getaddrinfo(w->dns, d->host, NULL, &hints, dns_cb, d);
    if (r && !d->dns_done)
        d->dns = r;
}

int webhooks_deliver(struct webhooks *w, json_t *claimed)
{
    if (!w || w->stopping)
        return 0;
    json_t *items = json_object_get(claimed, "items");
    size_t i;
    json_t *item;
    int n = 0;
    json_array_foreach(items, i, item)
    {
        start(w, item);
        n++;
    }
    return n;
}

int webhooks_inflight(const struct webhooks *w)
{
    return w ? w->inflight : 0;
}

struct webhooks *webhooks_new(struct app *app)
{
    const struct config *cfg = app->cfg;
    struct webhooks *w = xcalloc(1, sizeof *w);
    w->app = app;
    w->ssl_ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(w->ssl_ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(w->ssl_ctx, SSL_VERIFY_PEER, NULL);
    int ok = *cfg->merchant_webhook_ca_file
                 ? SSL_CTX_load_verify_locations(w->ssl_ctx, cfg->merchant_webhook_ca_file, NULL)
                 : SSL_CTX_set_default_verify_paths(w->ssl_ctx);
    if (ok != 1) {
        char buf[200];
        ERR_error_string_n(ERR_get_error(), buf, sizeof buf);
        log_error("merchant.webhook_ca_file \"%s\": cannot load CA certificates: %s",
                  cfg->merchant_webhook_ca_file, buf);
        SSL_CTX_free(w->ssl_ctx);
        free(w);
        return NULL;
    }
    /* Reads /etc/resolv.conf and /etc/hosts once, at start-up (before the loop runs). */
    w->dns = evdns_base_new(app->base,
                            EVDNS_BASE_INITIALIZE_NAMESERVERS | EVDNS_BASE_DISABLE_WHEN_INACTIVE);
    if (!w->dns)
        w->dns = evdns_base_new(app->base, 0); /* no resolv.conf: IP literals only */
    /* Entries added to (not replacing) the system's; answered before any DNS query, and
     * checked like any other answer. */
    if (w->dns && *cfg->merchant_webhook_hosts_file &&
        evdns_base_load_hosts(w->dns, cfg->merchant_webhook_hosts_file) != 0) {
        log_error("merchant.webhook_hosts_file \"%s\": cannot read it",
                  cfg->merchant_webhook_hosts_file);
        evdns_base_free(w->dns, 0);
        SSL_CTX_free(w->ssl_ctx);
        free(w);
        return NULL;
    }
    return w;
}

void webhooks_stop(struct webhooks *w, void (*idle)(void *arg), void *arg)
{
    w->stopping = true;
    w->idle = idle;
    w->idle_arg = arg;
    struct delivery *d = w->head, *next;
    for (; d; d = next) {
        next = d->next;
        if (d->step == D_RESOLVE && d->dns) {
            evdns_getaddrinfo_cancel(d->dns); /* dns_cb finishes it (now or on the loop) */
        } else if (d->step == D_SEND && !d->sent) {
            finish(d); /* frees the connection and its request, without callbacks */
        }
        /* D_SEND with the answer in (after_send pending) and D_REPORT finish by themselves. */
    }
    maybe_idle(w);
}

void webhooks_free(struct webhooks *w)
{
    if (!w)
        return;
    /* Normally nothing is left. After a forced shutdown a cancelled resolution or a pending
     * after_send timer may be (the loop stopped before they ran): the resolver goes first,
     * without calling back, then what is left is dropped; the events stay leased and are
     * retried. Reports in flight were failed by db_pool_free, which runs before this. */
    w->idle = NULL;
    if (w->dns)
        evdns_base_free(w->dns, 0);
    while (w->head) {
        w->head->dns = NULL;
        finish(w->head);
    }
    SSL_CTX_free(w->ssl_ctx);
    free(w);
}
