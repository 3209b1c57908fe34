/* httpc.c -- outbound HTTPS calls: resolve, check the addresses, TLS to the pinned address,
 * one request, one callback from the loop (httpc.h has the contract).
 *
 * Owns: the client SSL_CTX, the evdns resolver and one struct httpc_call per call, kept on a
 * list so that a shutdown can fail or drop them. Every way a call ends goes through
 * complete(), which only records the outcome and arms the call's zero timer; done_cb() then
 * frees the connection (never inside libevent's HTTP callbacks: libevent frees the request
 * after its own callback returned) and calls back. A resolution cannot be taken back at once
 * (evdns reports its cancellation later, on the loop), so a call given up while resolving
 * stays allocated, callback already delivered, until the resolver's callback arrives. */
#include "httpc.h"
#include "log.h"
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
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#define MAX_HEADERS_SIZE (16 * 1024)

enum step { C_RESOLVE, C_SEND, C_DONE };

struct httpc_call {
    struct httpc *c;
    struct httpc_call *prev, *next;
    enum step step;
    httpc_cb cb;
    void *arg;
    bool delivered; /* the callback ran, or will not (cancelled) */
    bool spent;     /* done_cb ran: only a pending resolution still holds the call */
    char *label;
    enum evhttp_cmd_type cmd;
    char host[256];
    bool literal; /* host is an IP address (in any spelling inet_aton or inet_pton reads) */
    int port;
    char *path; /* path and query, as in the URL */
    char **headers;
    char *body;
    size_t body_len;
    size_t max_response;
    int timeout_ms;
    enum httpc_policy policy;
    struct sockaddr_storage addr;
    struct evdns_getaddrinfo_request *dns;
    bool dns_pending; /* the resolver still owes its callback (perhaps a cancellation) */
    struct evhttp_connection *conn;
    struct event *deadline, *done_ev;
    enum evhttp_request_error http_err;
    bool has_http_err;
    /* the outcome, set by complete() */
    enum httpc_outcome outcome;
    int status;
    char *resp;
    size_t resp_len;
    char *want_header; /* the response header to capture (httpc_request.want_header) */
    char *header;      /* ... its value */
    char error[200];
};

struct httpc {
    struct event_base *base;
    SSL_CTX *ssl_ctx;
    struct evdns_base *dns;
    struct httpc_call *head;
    int inflight;
};

static void unlink_free(struct httpc_call *call)
{
    struct httpc *c = call->c;
    if (call->prev)
        call->prev->next = call->next;
    else
        c->head = call->next;
    if (call->next)
        call->next->prev = call->prev;
    if (call->conn)
        evhttp_connection_free(call->conn); /* pending requests are freed without callbacks */
    if (call->deadline)
        event_free(call->deadline);
    if (call->done_ev)
        event_free(call->done_ev);
    if (call->headers) {
        for (char **h = call->headers; *h; h++)
            free(*h);
        free(call->headers);
    }
    free(call->label);
    free(call->path);
    free(call->body);
    free(call->resp);
    free(call->want_header);
    free(call->header);
    free(call);
}

/* Records how the call ended and arms its zero timer; the first outcome wins. */
static void complete(struct httpc_call *call, enum httpc_outcome outcome, const char *fmt, ...)
    PRINTF_LIKE(3, 4);
static void complete(struct httpc_call *call, enum httpc_outcome outcome, const char *fmt, ...)
{
    if (call->step == C_DONE)
        return;
    call->step = C_DONE;
    call->outcome = outcome;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(call->error, sizeof call->error, fmt, ap);
    va_end(ap);
    evtimer_del(call->deadline);
    if (call->dns_pending && call->dns) {
        evdns_getaddrinfo_cancel(call->dns); /* dns_cb follows on the loop */
        call->dns = NULL;
    }
    struct timeval now = {0, 0};
    evtimer_add(call->done_ev, &now);
}

static void done_cb(evutil_socket_t fd, short what, void *arg)
{
    struct httpc_call *call = arg;
    struct httpc *c = call->c;
    if (call->conn) {
        evhttp_connection_free(call->conn);
        call->conn = NULL;
    }
    call->spent = true;
    if (!call->delivered) {
        call->delivered = true;
        c->inflight--;
        struct httpc_response r = {
            .outcome = call->outcome,
            .status = call->outcome == HTTPC_RESPONSE ? call->status : 0,
            .body = call->resp ? call->resp : "",
            .body_len = call->resp_len,
            .error = call->error,
            .header = call->outcome == HTTPC_RESPONSE ? call->header : NULL,
        };
        call->cb(&r, call->arg);
    }
    if (!call->dns_pending)
        unlink_free(call);
}

static void deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    complete(arg, HTTPC_TIMEOUT, "timeout");
}

/* ---------------------------------------------------------------------------------------- */
/* Sending                                                                                   */
/* ---------------------------------------------------------------------------------------- */

static void http_error_cb(enum evhttp_request_error err, void *arg)
{
    struct httpc_call *call = arg;
    call->http_err = err;
    call->has_http_err = true;
}

/* Why a connection failed without a response: the TLS verdict when there is one. */
static void failure_text(struct httpc_call *call, char *out, size_t cap)
{
    struct bufferevent *bev = call->conn ? evhttp_connection_get_bufferevent(call->conn) : NULL;
    SSL *ssl = bev ? bufferevent_openssl_get_ssl(bev) : NULL;
    long v = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;
    unsigned long e = bev ? bufferevent_get_openssl_error(bev) : 0;
    if (v != X509_V_OK) {
        snprintf(out, cap, "tls: certificate not trusted: %s", X509_verify_cert_error_string(v));
        return;
    }
    if (e) {
        char buf[120];
        ERR_error_string_n(e, buf, sizeof buf);
        snprintf(out, cap, "tls: %s", buf);
        return;
    }
    enum evhttp_request_error err = call->http_err;
    const char *what = !call->has_http_err                ? "no response"
                       : err == EVREQ_HTTP_EOF            ? "connection closed"
                       : err == EVREQ_HTTP_INVALID_HEADER ? "invalid response header"
                       : err == EVREQ_HTTP_BUFFER_ERROR   ? "connection or tls failure"
                       : err == EVREQ_HTTP_DATA_TOO_LONG  ? "response too long"
                                                          : "request cancelled";
    snprintf(out, cap, "%s", what);
}

/* libevent's request callback (once): req is NULL on failure. Nothing is freed here. */
static void http_done_cb(struct evhttp_request *req, void *arg)
{
    struct httpc_call *call = arg;
    if (call->step != C_SEND)
        return;
    int status = req ? evhttp_request_get_response_code(req) : 0;
    if (status <= 0) {
        if (call->has_http_err && call->http_err == EVREQ_HTTP_TIMEOUT) {
            complete(call, HTTPC_TIMEOUT, "timeout");
            return;
        }
        char why[160];
        failure_text(call, why, sizeof why);
        complete(call, HTTPC_FAILED, "%s", why);
        return;
    }
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    if (len > call->max_response) {
        complete(call, HTTPC_FAILED, "response too long");
        return;
    }
    call->resp = xmalloc(len + 1);
    evbuffer_copyout(in, call->resp, len);
    call->resp[len] = '\0';
    call->resp_len = len;
    call->status = status;
    if (call->want_header) {
        const char *h =
            evhttp_find_header(evhttp_request_get_input_headers(req), call->want_header);
        if (h)
            call->header = xstrdup(h);
    }
    complete(call, HTTPC_RESPONSE, "%s", "");
}

static void send_to_addr(struct httpc_call *call)
{
    struct httpc *c = call->c;
    char ip[INET6_ADDRSTRLEN];
    if (!netaddr_format((struct sockaddr *)&call->addr, ip, sizeof ip)) {
        complete(call, HTTPC_FAILED, "bad address");
        return;
    }
    call->step = C_SEND;
    SSL *ssl = SSL_new(c->ssl_ctx);
    X509_VERIFY_PARAM *vp = SSL_get0_param(ssl);
    if (call->literal) {
        X509_VERIFY_PARAM_set1_ip_asc(vp, ip);
    } else {
        SSL_set_tlsext_host_name(ssl, call->host);
        X509_VERIFY_PARAM_set_hostflags(vp, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        X509_VERIFY_PARAM_set1_host(vp, call->host, 0);
    }
    /* The bufferevent owns the SSL (freed with it), the connection owns the bufferevent.
     * The connection gets the checked address as an IP literal (and no evdns base), so
     * nothing resolves the name again between the check and the connect: the address is
     * pinned. The Host header and the certificate check still use the URL's host. */
    struct bufferevent *bev =
        bufferevent_openssl_socket_new(c->base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
                                       BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    if (!bev) {
        SSL_free(ssl);
        complete(call, HTTPC_FAILED, "cannot create the tls stream");
        return;
    }
    bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    call->conn =
        evhttp_connection_base_bufferevent_new(c->base, NULL, bev, ip, (ev_uint16_t)call->port);
    /* evhttp's own timeout backs up the call's deadline (which also covers resolution). */
    struct timeval tv = {call->timeout_ms / 1000, (call->timeout_ms % 1000) * 1000};
    evhttp_connection_set_timeout_tv(call->conn, &tv);
    evhttp_connection_set_retries(call->conn, 0);
    evhttp_connection_set_max_body_size(call->conn, (ev_ssize_t)call->max_response);
    evhttp_connection_set_max_headers_size(call->conn, MAX_HEADERS_SIZE);

    struct evhttp_request *req = evhttp_request_new(http_done_cb, call);
    evhttp_request_set_error_cb(req, http_error_cb);
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    char hostport[300];
    if (call->port == 443)
        snprintf(hostport, sizeof hostport, "%s", call->host);
    else
        snprintf(hostport, sizeof hostport, "%s:%d", call->host, call->port);
    evhttp_add_header(h, "Host", hostport);
    for (char **p = call->headers; p && p[0] && p[1]; p += 2)
        evhttp_add_header(h, p[0], p[1]);
    evhttp_add_header(h, "Connection", "close");
    if (call->body)
        evbuffer_add(evhttp_request_get_output_buffer(req), call->body, call->body_len);
    if (evhttp_make_request(call->conn, req, call->cmd, call->path) != 0) {
        /* Only a failure to create the socket gets here; the request was not queued. */
        evhttp_request_free(req);
        complete(call, HTTPC_FAILED, "cannot connect");
    }
}

/* True (logged) when the call's policy refuses sa. */
static bool address_refused(struct httpc_call *call, const struct sockaddr *sa)
{
    if (call->policy == HTTPC_ANY_ADDRESS)
        return false;
    enum netaddr_kind kind = netaddr_classify(sa);
    if (netaddr_allowed(kind, call->policy == HTTPC_PRIVATE_ALSO))
        return false;
    char ip[INET6_ADDRSTRLEN];
    netaddr_format(sa, ip, sizeof ip);
    log_warn("%s: host %s is %s, a %s address: refused", call->label, call->host, ip,
             netaddr_kind_name(kind));
    return true;
}

/* Sends to sa, an address that passed address_refused. */
static void send_pinned(struct httpc_call *call, const struct sockaddr *sa, socklen_t len)
{
    memcpy(&call->addr, sa, len);
    if (call->addr.ss_family == AF_INET)
        ((struct sockaddr_in *)&call->addr)->sin_port = htons((uint16_t)call->port);
    else
        ((struct sockaddr_in6 *)&call->addr)->sin6_port = htons((uint16_t)call->port);
    send_to_addr(call);
}

static void dns_cb(int result, struct evutil_addrinfo *res, void *arg)
{
    struct httpc_call *call = arg;
    call->dns = NULL;
    call->dns_pending = false;
    if (call->step != C_RESOLVE) {
        /* Given up meanwhile (deadline, cancel, shutdown): this was the last hold on it. */
        if (res)
            evutil_freeaddrinfo(res);
        if (call->spent)
            unlink_free(call);
        return;
    }
    if (result != 0 || !res) {
        if (res)
            evutil_freeaddrinfo(res);
        complete(call, HTTPC_DNS, "dns: %s", evutil_gai_strerror(result));
        return;
    }
    /* Every address must pass: a name that resolves to one public and one private address
     * is refused, so that no answer order can reach an internal host. */
    const struct evutil_addrinfo *first = NULL;
    for (const struct evutil_addrinfo *ai = res; ai; ai = ai->ai_next) {
        if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
            continue;
        if (address_refused(call, ai->ai_addr)) {
            evutil_freeaddrinfo(res);
            complete(call, HTTPC_REFUSED, "address_not_allowed");
            return;
        }
        if (!first)
            first = ai;
    }
    if (!first) {
        evutil_freeaddrinfo(res);
        complete(call, HTTPC_DNS, "dns: no address");
        return;
    }
    struct sockaddr_storage ss;
    socklen_t len = (socklen_t)first->ai_addrlen;
    memcpy(&ss, first->ai_addr, len);
    evutil_freeaddrinfo(res);
    send_pinned(call, (struct sockaddr *)&ss, len);
}

/* Reads the URL into the call; false when it is not https://host[:port][/path][?query]. */
static bool parse_url(struct httpc_call *call, const char *url)
{
    struct evhttp_uri *u = url ? evhttp_uri_parse_with_flags(url, 0) : NULL;
    const char *host = u ? evhttp_uri_get_host(u) : NULL;
    const char *scheme = u ? evhttp_uri_get_scheme(u) : NULL;
    int port = u ? evhttp_uri_get_port(u) : -1;
    bool ok = host && *host && scheme && !strcasecmp(scheme, "https") &&
              strlen(host) < sizeof call->host && !evhttp_uri_get_userinfo(u) &&
              (port == -1 || (port > 0 && port <= 65535));
    if (ok) {
        snprintf(call->host, sizeof call->host, "%s", host);
        call->port = port > 0 ? port : 443;
        const char *path = evhttp_uri_get_path(u), *query = evhttp_uri_get_query(u);
        size_t plen = (path && *path ? strlen(path) : 1) + (query ? strlen(query) + 1 : 0) + 1;
        call->path = xmalloc(plen);
        snprintf(call->path, plen, "%s%s%s", path && *path ? path : "/", query ? "?" : "",
                 query ? query : "");
    }
    if (u)
        evhttp_uri_free(u);
    return ok;
}

static void start(struct httpc_call *call, const char *url)
{
    if (!parse_url(call, url)) {
        complete(call, HTTPC_BAD_URL, "invalid url");
        return;
    }
    /* The host as the resolver reads it: "0x7f000001" and "127.1" are 127.0.0.1. */
    struct sockaddr_storage ss;
    switch (netaddr_parse_host(call->host, &ss)) {
    case NETADDR_HOST_INVALID:
        complete(call, HTTPC_BAD_URL, "invalid url");
        return;
    case NETADDR_HOST_LITERAL:
        call->literal = true;
        if (address_refused(call, (struct sockaddr *)&ss)) {
            complete(call, HTTPC_REFUSED, "address_not_allowed");
            return;
        }
        send_pinned(call, (struct sockaddr *)&ss,
                    ss.ss_family == AF_INET ? sizeof(struct sockaddr_in)
                                            : sizeof(struct sockaddr_in6));
        return;
    case NETADDR_HOST_LOCAL_NAME:
        if (call->policy != HTTPC_ANY_ADDRESS && call->policy != HTTPC_PRIVATE_ALSO) {
            log_warn("%s: host %s is a local name: refused", call->label, call->host);
            complete(call, HTTPC_REFUSED, "address_not_allowed");
            return;
        }
        break;
    case NETADDR_HOST_NAME:
        break;
    }
    if (!call->c->dns) {
        complete(call, HTTPC_DNS, "dns: no resolver");
        return;
    }
    struct evutil_addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_protocol = IPPROTO_TCP;
    /* The callback may run inside this call (hosts file, cache): it clears dns_pending then. */
    call->dns_pending = true;
    struct evdns_getaddrinfo_request *r =
        evdns_getaddrinfo(call->c->dns, call->host, NULL, &hints, dns_cb, call);
    if (call->dns_pending)
        call->dns = r;
}

struct httpc_call *httpc_send(struct httpc *c, const struct httpc_request *r, httpc_cb cb,
                              void *arg)
{
    ASSERT(c && r && cb && r->timeout_ms > 0);
    struct httpc_call *call = xcalloc(1, sizeof *call);
    call->c = c;
    call->cb = cb;
    call->arg = arg;
    call->step = C_RESOLVE;
    call->label = xstrdup(r->log_label ? r->log_label : "outbound call");
    call->cmd = r->method && !strcmp(r->method, "POST") ? EVHTTP_REQ_POST : EVHTTP_REQ_GET;
    call->max_response = r->max_response;
    call->timeout_ms = r->timeout_ms;
    call->policy = r->policy;
    if (r->want_header)
        call->want_header = xstrdup(r->want_header);
    if (r->body) {
        call->body = xmalloc(r->body_len + 1);
        memcpy(call->body, r->body, r->body_len);
        call->body[r->body_len] = '\0';
        call->body_len = r->body_len;
    }
    size_t n = 0;
    while (r->headers && r->headers[n] && r->headers[n + 1])
        n += 2;
    if (n) {
        call->headers = xcalloc(n + 1, sizeof *call->headers);
        for (size_t i = 0; i < n; i++)
            call->headers[i] = xstrdup(r->headers[i]);
    }
    call->deadline = evtimer_new(c->base, deadline_cb, call);
    call->done_ev = evtimer_new(c->base, done_cb, call);
    call->next = c->head;
    if (c->head)
        c->head->prev = call;
    c->head = call;
    c->inflight++;
    struct timeval tv = {r->timeout_ms / 1000, (r->timeout_ms % 1000) * 1000};
    evtimer_add(call->deadline, &tv);
    start(call, r->url);
    return call;
}

void httpc_cancel(struct httpc_call *call)
{
    if (!call || call->delivered)
        return;
    call->delivered = true;
    call->c->inflight--;
    complete(call, HTTPC_CANCELLED, "cancelled"); /* no-op when already complete */
}

void httpc_fail_all(struct httpc *c)
{
    for (struct httpc_call *call = c->head; call; call = call->next)
        complete(call, HTTPC_CANCELLED, "cancelled");
}

int httpc_inflight(const struct httpc *c)
{
    return c ? c->inflight : 0;
}

struct httpc *httpc_new(struct event_base *base, const struct httpc_config *cfg)
{
    struct httpc *c = xcalloc(1, sizeof *c);
    c->base = base;
    c->ssl_ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(c->ssl_ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(c->ssl_ctx, SSL_VERIFY_PEER, NULL);
    bool own_ca = cfg->ca_file && *cfg->ca_file;
    int ok = own_ca ? SSL_CTX_load_verify_locations(c->ssl_ctx, cfg->ca_file, NULL)
                    : SSL_CTX_set_default_verify_paths(c->ssl_ctx);
    if (ok != 1) {
        char buf[200];
        ERR_error_string_n(ERR_get_error(), buf, sizeof buf);
        log_error("%s \"%s\": cannot load CA certificates: %s",
                  cfg->ca_key ? cfg->ca_key : "ca_file", own_ca ? cfg->ca_file : "(system)", buf);
        SSL_CTX_free(c->ssl_ctx);
        free(c);
        return NULL;
    }
    /* Reads /etc/resolv.conf and /etc/hosts once, at start-up (before the loop runs). */
    c->dns =
        evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS | EVDNS_BASE_DISABLE_WHEN_INACTIVE);
    if (!c->dns)
        c->dns = evdns_base_new(base, 0); /* no resolv.conf: IP literals and hosts only */
    /* Entries added to (not replacing) the system's; answered before any DNS query, and
     * checked like any other answer. */
    if (c->dns && cfg->hosts_file && *cfg->hosts_file &&
        evdns_base_load_hosts(c->dns, cfg->hosts_file) != 0) {
        log_error("%s \"%s\": cannot read it", cfg->hosts_key ? cfg->hosts_key : "hosts_file",
                  cfg->hosts_file);
        evdns_base_free(c->dns, 0);
        SSL_CTX_free(c->ssl_ctx);
        free(c);
        return NULL;
    }
    return c;
}

void httpc_free(struct httpc *c)
{
    if (!c)
        return;
    /* The resolver goes first, without calling back; then every call left is dropped. */
    if (c->dns)
        evdns_base_free(c->dns, 0);
    while (c->head)
        unlink_free(c->head);
    SSL_CTX_free(c->ssl_ctx);
    free(c);
}
