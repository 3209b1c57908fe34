/* http_guard.c -- strict HTTP/1.1 framing, slow-client deadlines and a per-address connection
 * cap, as a bufferevent filter in front of evhttp (see http_guard.h for the design).
 *
 * Owns: the per-address connection counts, and one struct guard_conn per connection (freed
 * with the connection's bufferevent, through the filter's free_context callback).
 *
 * The checks follow RFC 9112 and RELIABILITY.md §5.1: CRLF line ends only; no obs-fold; no
 * whitespace between a field name and its colon; no control bytes in names or values; a known
 * method, HTTP/1.0 or HTTP/1.1; exactly one Host in HTTP/1.1, and an absolute-form target only
 * for that host; at most one Content-Length of plain digits; Transfer-Encoding only as exactly
 * "chunked", never with Content-Length, never in HTTP/1.0; strict chunk framing. Everything the
 * guard passes is a strict subset of what evhttp parses, so the two never disagree on where a
 * message ends. */
#include "http_guard.h"
#include "crypto.h"
#include "log.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <unistd.h>

enum verdict {
    V_REQUEST_LINE,
    V_HEADER,
    V_OBS_FOLD,
    V_BARE_LF,
    V_HOST,
    V_OTHER_HOST,
    V_FRAMING,
    V_CHUNKED,
    V_RESERVED,
    V_URI_TOO_LONG,
    V_HEADERS_TOO_LARGE,
    V_BODY_TOO_LARGE,
    V_METHOD,
    V_VERSION,
    V_EXPECT,
    V_HEAD_TIMEOUT,
    V_BODY_TIMEOUT,
    V_TOO_MANY_CONNS,
    V__COUNT
};

static const struct http_guard_verdict verdicts[V__COUNT] = {
    [V_REQUEST_LINE] = {ST_INVALID, "malformed_request_line", "malformed request line"},
    [V_HEADER] = {ST_INVALID, "malformed_header",
                  "malformed header field (name, colon or a control byte in the value)"},
    [V_OBS_FOLD] = {ST_INVALID, "obs_fold", "folded header lines (obs-fold) are not accepted"},
    [V_BARE_LF] = {ST_INVALID, "bare_lf", "lines must end with CRLF"},
    [V_HOST] = {ST_INVALID, "bad_host", "an HTTP/1.1 request needs exactly one valid Host header"},
    [V_OTHER_HOST] = {ST_INVALID, "bad_host", "the request target names another host than Host"},
    [V_FRAMING] = {ST_INVALID, "bad_framing",
                   "ambiguous message framing (Content-Length / Transfer-Encoding)"},
    [V_CHUNKED] = {ST_INVALID, "bad_framing", "malformed chunked body"},
    [V_RESERVED] = {ST_INVALID, "malformed_header", "header " HTTP_GUARD_HEADER " is reserved"},
    [V_URI_TOO_LONG] = {ST_URI_TOO_LONG, "uri_too_long",
                        "request line exceeds server.max_header_size"},
    [V_HEADERS_TOO_LARGE] = {ST_HEADERS_TOO_LARGE, "headers_too_large",
                             "request header block exceeds server.max_header_size"},
    [V_BODY_TOO_LARGE] = {ST_TOO_LARGE, "body_too_large",
                          "request body exceeds this route's limit"},
    [V_METHOD] = {ST_NOT_IMPLEMENTED, "method_not_implemented", "request method not implemented"},
    /* 400, not 505: a client's bytes never earn a 5xx (501 for methods is issue 10's choice) */
    [V_VERSION] = {ST_INVALID, "http_version_not_supported",
                   "only HTTP/1.0 and HTTP/1.1 are supported"},
    [V_EXPECT] = {ST_EXPECTATION_FAILED, "expectation_failed",
                  "only Expect: 100-continue is supported"},
    [V_HEAD_TIMEOUT] = {ST_TIMEOUT, "request_timeout",
                        "request head not received within server.head_timeout"},
    [V_BODY_TIMEOUT] = {ST_TIMEOUT, "request_timeout",
                        "request body not received within server.body_timeout"},
    [V_TOO_MANY_CONNS] = {ST_RATE_LIMITED, "too_many_connections",
                          "too many open connections from this address"},
};

/* A step of the parser: more to do, need more bytes, or a verdict (FAIL(v)). */
#define STEP_MORE 1
#define STEP_NEED 0
#define FAIL(v)   (-1 - (int)(v))

#define ADDR_BUCKETS   1024
#define CHUNK_LINE_MAX 1024 /* chunk-size line with its extensions */
#define HOST_MAX       255
#define LINGER_MS      2000 /* at most this long without data, and at most head_timeout */

struct addr_count {
    struct addr_count *next;
    unsigned char key[16]; /* IPv6, or IPv4 mapped into it */
    int n;
};

/* A refused connection after evhttp let go of it: see linger_start. */
struct lingering {
    struct http_guard *g;
    TAILQ_ENTRY(lingering) link;
    evutil_socket_t fd;
    struct event *ev;
    size_t drained;
};

struct http_guard {
    struct event_base *base;
    struct http_guard_config cfg;
    struct addr_count *buckets[ADDR_BUCKETS];
    char *scratch; /* one head line at a time: max_header_size + 1 bytes */
    int refs;      /* 1 for the owner + 1 per connection: bufferevents may be finalised late */
    bool closing;  /* the owner let go: no new lingers */
    TAILQ_HEAD(, lingering) lingers;
    struct http_guard_stats stats;
};

enum gstate { G_HEAD, G_BODY, G_CHUNK_SIZE, G_CHUNK_DATA, G_CHUNK_END, G_TRAILER, G_DEAD };

struct guard_conn {
    struct http_guard *g;
    struct bufferevent *bev; /* the filter evhttp reads from */
    struct evbuffer *raw;    /* received and not yet checked */
    struct evbuffer *req;    /* the current request, checked so far */
    struct event *deadline;  /* head or body deadline */
    struct event *start;     /* runs once right after accept: the per-address cap */
    enum gstate state;
    bool started, counted, timing;
    bool flushing; /* output went to the transport; evhttp hears of it once it is drained */
    bool batched;  /* output held back until http_guard_batch_end (in the batch's list) */
    TAILQ_ENTRY(guard_conn) batch_link;
    int linger_fd;     /* a duplicate of the socket of a refused connection, or -1 */
    short eof_pending; /* the client's EOF, held back until the reply is out */
    /* the filter's own callbacks on the transport, which the guard's wrap */
    bufferevent_data_cb t_read, t_write;
    bufferevent_event_cb t_event;
    void *t_arg;
    unsigned char addr[16];
    size_t consumed;  /* bytes at the front of raw checked as head lines, not yet in req */
    size_t scanned;   /* bytes after those known to hold no LF */
    size_t head_size; /* bytes of the head (or of the trailers) so far */
    uint64_t left;    /* bytes of the body or of the chunk still to come */
    uint64_t body_size, body_limit;
    /* what the current head said */
    int nlines, nhost, ncl, nte;
    bool http11, absolute, expect_continue, is_head;
    uint64_t cl;
    char method[8];
    char path[256];
    char host[HOST_MAX + 1];
    char authority[HOST_MAX + 1];
};

const struct http_guard_verdict *http_guard_verdict(const char *value)
{
    if (!value || !*value)
        return NULL;
    int v = 0;
    for (const char *p = value; *p; p++) {
        if (*p < '0' || *p > '9' || v > V__COUNT)
            return NULL;
        v = v * 10 + (*p - '0');
    }
    return v < V__COUNT ? &verdicts[v] : NULL;
}

static void guard_unref(struct http_guard *g);

/* ---------------------------------------------------------------------------------------- */
/* Per-address counts                                                                        */
/* ---------------------------------------------------------------------------------------- */

static unsigned addr_hash(const unsigned char key[16])
{
    uint32_t h = 2166136261u;
    for (int i = 0; i < 16; i++)
        h = (h ^ key[i]) * 16777619u;
    return h % ADDR_BUCKETS;
}

static int addr_add(struct http_guard *g, const unsigned char key[16])
{
    struct addr_count **b = &g->buckets[addr_hash(key)];
    for (struct addr_count *a = *b; a; a = a->next)
        if (memcmp(a->key, key, 16) == 0)
            return ++a->n;
    struct addr_count *a = xcalloc(1, sizeof *a);
    memcpy(a->key, key, 16);
    a->n = 1;
    a->next = *b;
    *b = a;
    return 1;
}

static void addr_remove(struct http_guard *g, const unsigned char key[16])
{
    for (struct addr_count **p = &g->buckets[addr_hash(key)]; *p; p = &(*p)->next) {
        struct addr_count *a = *p;
        if (memcmp(a->key, key, 16) != 0)
            continue;
        if (--a->n == 0) {
            *p = a->next;
            free(a);
        }
        return;
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Character classes (RFC 9110 §5.6.2, RFC 3986)                                              */
/* ---------------------------------------------------------------------------------------- */

static bool is_tchar(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* A field value byte: HTAB, SP, VCHAR, obs-text. Everything else is a control byte. */
static bool is_field_byte(unsigned char c)
{
    return c == '\t' || (c >= 0x20 && c != 0x7f);
}

static bool is_host_char(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return true;
    return c && strchr("-._~%!$&'()*+,;=:[]", c) != NULL;
}

static bool name_is(const char *name, size_t len, const char *want)
{
    return strlen(want) == len && strncasecmp(name, want, len) == 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Refusal                                                                                   */
/* ---------------------------------------------------------------------------------------- */

/* Ends the connection's input: from here on every received byte is dropped, and evhttp gets
 * the fixed request that carries the verdict (Connection: close, so evhttp closes after the
 * reply). `to` is evhttp's input buffer. */
static void refuse(struct guard_conn *c, enum verdict v, struct evbuffer *to)
{
    c->state = G_DEAD;
    evutil_socket_t fd = bufferevent_getfd(c->bev);
    if (fd >= 0 && c->linger_fd < 0)
        c->linger_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0); /* -1 (no lingering) when out of fds */
    evbuffer_drain(c->raw, evbuffer_get_length(c->raw));
    evbuffer_drain(c->req, evbuffer_get_length(c->req));
    c->consumed = 0;
    event_del(c->deadline);
    c->timing = false;
    if (v == V_HEAD_TIMEOUT || v == V_BODY_TIMEOUT)
        c->g->stats.timeouts++;
    else if (v == V_TOO_MANY_CONNS)
        c->g->stats.capped++;
    else
        c->g->stats.refused++;
    evbuffer_add_printf(to,
                        "GET / HTTP/1.1\r\nHost: guard\r\nConnection: close\r\n" HTTP_GUARD_HEADER
                        ": %d\r\n\r\n",
                        (int)v);
}

/* Outside the filter callback, evhttp must be told that its input grew -- unless it is busy
 * with an earlier request (reading disabled): it looks at its input when it is done. */
static void deliver(struct guard_conn *c)
{
    if (bufferevent_get_enabled(c->bev) & EV_READ)
        bufferevent_trigger(c->bev, EV_READ, 0);
}

static void arm(struct guard_conn *c, int ms)
{
    if (ms <= 0)
        return;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    event_add(c->deadline, &tv);
    c->timing = true;
}

static void deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    struct guard_conn *c = arg;
    c->timing = false;
    if (c->state == G_DEAD)
        return;
    refuse(c, c->state == G_HEAD ? V_HEAD_TIMEOUT : V_BODY_TIMEOUT, bufferevent_get_input(c->bev));
    deliver(c);
}

/* Counts the connection against its peer address; false when that address is over the cap
 * (the connection is then refused). Runs once, right after accept or at the first bytes. */
static bool conn_start(struct guard_conn *c, struct evbuffer *to)
{
    if (c->started)
        return true;
    c->started = true;
    evutil_socket_t fd = bufferevent_getfd(c->bev);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (fd < 0 || getpeername(fd, (struct sockaddr *)&ss, &sl) != 0)
        return true;
    if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
        memset(c->addr, 0, 10);
        c->addr[10] = c->addr[11] = 0xff;
        memcpy(c->addr + 12, &in->sin_addr, 4);
    } else if (ss.ss_family == AF_INET6) {
        memcpy(c->addr, &((const struct sockaddr_in6 *)&ss)->sin6_addr, 16);
    } else {
        return true;
    }
    int n = addr_add(c->g, c->addr);
    c->counted = true;
    if (c->g->cfg.max_conns_per_addr > 0 && n > c->g->cfg.max_conns_per_addr) {
        refuse(c, V_TOO_MANY_CONNS, to);
        return false;
    }
    return true;
}

static void start_cb(evutil_socket_t fd, short what, void *arg)
{
    struct guard_conn *c = arg;
    if (!c->started && !conn_start(c, bufferevent_get_input(c->bev)))
        deliver(c);
}

/* ---------------------------------------------------------------------------------------- */
/* The parser                                                                                */
/* ---------------------------------------------------------------------------------------- */

static void reset_request(struct guard_conn *c)
{
    c->state = G_HEAD;
    c->consumed = c->scanned = c->head_size = 0;
    c->left = c->body_size = c->body_limit = c->cl = 0;
    c->nlines = c->nhost = c->ncl = c->nte = 0;
    c->http11 = c->absolute = c->expect_continue = c->is_head = false;
    c->method[0] = c->path[0] = c->host[0] = c->authority[0] = '\0';
}

/* Moves the head lines checked so far from raw to req, in one move rather than one per line. */
static void take_flush(struct guard_conn *c)
{
    if (c->consumed) {
        evbuffer_remove_buffer(c->raw, c->req, c->consumed);
        c->consumed = 0;
    }
}

/* Takes the next CRLF-terminated line of raw (when keep: into req, with the rest of the head
 * or trailers once they are whole) and returns it NUL-terminated, without its CRLF, in the
 * guard's scratch buffer. The line counts against *size, which may not pass
 * max. */
static int take_line(struct guard_conn *c, size_t *size, size_t max, enum verdict too_long,
                     bool keep, char **line, size_t *len)
{
    size_t have = evbuffer_get_length(c->raw) - c->consumed;
    if (c->scanned >= have)
        return STEP_NEED;
    /* Only the bytes that may still belong to this line are looked at (made contiguous if
     * they are not: with the lines before it, at most max_header_size + 1 bytes). */
    size_t room = *size < max ? max - *size + 1 : 1;
    size_t window = have < room ? have : room;
    if (c->scanned >= window)
        return FAIL(too_long); /* scanned all the room without an LF */
    const unsigned char *mem =
        evbuffer_pullup(c->raw, (ev_ssize_t)(c->consumed + window)) + c->consumed;
    const unsigned char *lf = memchr(mem + c->scanned, '\n', window - c->scanned);
    if (!lf) {
        c->scanned = window;
        return *size + have > max ? FAIL(too_long) : STEP_NEED;
    }
    size_t n = (size_t)(lf - mem);
    c->scanned = 0;
    if (*size + n + 1 > max)
        return FAIL(too_long);
    char *buf = c->g->scratch;
    memcpy(buf, mem, n);
    if (keep) {
        c->consumed += n + 1; /* moved to req with the rest of the head (take_flush) */
    } else {
        take_flush(c);
        evbuffer_drain(c->raw, n + 1);
    }
    *size += n + 1;
    if (n == 0 || buf[n - 1] != '\r')
        return FAIL(V_BARE_LF);
    buf[n - 1] = '\0';
    *line = buf;
    *len = n - 1;
    return STEP_MORE;
}

static const char *const methods[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"};

static int check_request_line(struct guard_conn *c, char *line, size_t len)
{
    size_t m = 0;
    while (m < len && is_tchar((unsigned char)line[m]))
        m++;
    if (m == 0 || m >= len || line[m] != ' ')
        return FAIL(V_REQUEST_LINE);
    size_t t0 = m + 1, t = t0;
    while (t < len && line[t] != ' ')
        t++;
    if (t == t0 || t >= len)
        return FAIL(V_REQUEST_LINE);
    const char *version = line + t + 1;
    size_t vlen = len - t - 1;
    if (vlen == 8 && memcmp(version, "HTTP/1.1", 8) == 0)
        c->http11 = true;
    else if (vlen == 8 && memcmp(version, "HTTP/1.0", 8) == 0)
        c->http11 = false;
    else if (vlen == 8 && memcmp(version, "HTTP/", 5) == 0 && version[5] >= '0' &&
             version[5] <= '9' && version[6] == '.' && version[7] >= '0' && version[7] <= '9')
        return FAIL(V_VERSION);
    else
        return FAIL(V_REQUEST_LINE);

    bool known = false;
    for (size_t i = 0; i < ARRAY_SIZE(methods) && !known; i++)
        known = strlen(methods[i]) == m && memcmp(methods[i], line, m) == 0;
    if (!known)
        return FAIL(V_METHOD);
    memcpy(c->method, line, m);
    c->method[m] = '\0';
    c->is_head = strcmp(c->method, "HEAD") == 0;

    char *target = line + t0;
    size_t tlen = t - t0;
    for (size_t i = 0; i < tlen; i++) {
        unsigned char ch = (unsigned char)target[i];
        if (ch <= 0x20 || ch >= 0x7f || ch == '#')
            return FAIL(V_REQUEST_LINE);
        if (ch == '%' &&
            (i + 2 >= tlen || crypto_hexval(target[i + 1]) < 0 || crypto_hexval(target[i + 2]) < 0))
            return FAIL(V_REQUEST_LINE);
    }
    target[tlen] = '\0';
    const char *path = target;
    if (target[0] != '/') {
        /* absolute-form: only for ourselves (checked against Host at the end of the head). */
        size_t skip;
        if (strncasecmp(target, "http://", 7) == 0)
            skip = 7;
        else if (strncasecmp(target, "https://", 8) == 0)
            skip = 8;
        else
            return FAIL(V_REQUEST_LINE);
        const char *a = target + skip;
        size_t alen = strcspn(a, "/?");
        if (alen == 0 || alen > HOST_MAX)
            return FAIL(V_REQUEST_LINE);
        memcpy(c->authority, a, alen);
        c->authority[alen] = '\0';
        c->absolute = true;
        path = a[alen] == '/' ? a + alen : "/";
    }
    /* evhttp parses the target with this very function and fails the connection in HTML when
     * it cannot: refuse first what it would refuse. */
    if (target[0] != '/' || target[1] == '/') {
        /* An origin-form target ("/..." but not "//...", no '#', checked above) is one that
         * parse always takes in its non-conformant mode (path up to '?', the query up to the
         * end, no scheme and no authority to check): only the others need the real parse. */
        struct evhttp_uri *u = evhttp_uri_parse_with_flags(target, EVHTTP_URI_NONCONFORMANT);
        if (!u)
            return FAIL(V_REQUEST_LINE);
        evhttp_uri_free(u);
    }
    size_t plen = strcspn(path, "?");
    if (plen >= sizeof c->path)
        plen = sizeof c->path - 1; /* matches no route: the default body limit applies */
    memcpy(c->path, path, plen);
    c->path[plen] = '\0';
    return STEP_MORE;
}

static int check_field(struct guard_conn *c, const char *line, size_t len, bool trailer)
{
    if (line[0] == ' ' || line[0] == '\t')
        return FAIL(V_OBS_FOLD);
    size_t n = 0;
    while (n < len && is_tchar((unsigned char)line[n]))
        n++;
    if (n == 0 || n >= len || line[n] != ':')
        return FAIL(V_HEADER);
    const char *v = line + n + 1, *end = line + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    for (const char *p = v; p < end; p++)
        if (!is_field_byte((unsigned char)*p))
            return FAIL(V_HEADER);
    size_t vlen = (size_t)(end - v);
    if (name_is(line, n, HTTP_GUARD_HEADER))
        return FAIL(V_RESERVED);
    if (trailer)
        return STEP_MORE;
    if (name_is(line, n, "Host")) {
        if (++c->nhost > 1 || vlen == 0 || vlen > HOST_MAX)
            return FAIL(V_HOST);
        for (size_t i = 0; i < vlen; i++)
            if (!is_host_char((unsigned char)v[i]))
                return FAIL(V_HOST);
        memcpy(c->host, v, vlen);
        c->host[vlen] = '\0';
    } else if (name_is(line, n, "Content-Length")) {
        if (++c->ncl > 1 || vlen == 0 || vlen > 18)
            return FAIL(V_FRAMING);
        uint64_t cl = 0;
        for (size_t i = 0; i < vlen; i++) {
            if (v[i] < '0' || v[i] > '9')
                return FAIL(V_FRAMING);
            cl = cl * 10 + (uint64_t)(v[i] - '0');
        }
        c->cl = cl;
    } else if (name_is(line, n, "Transfer-Encoding")) {
        if (++c->nte > 1 || vlen != 7 || strncasecmp(v, "chunked", 7) != 0)
            return FAIL(V_FRAMING);
    } else if (name_is(line, n, "Expect")) {
        if (vlen != 12 || strncasecmp(v, "100-continue", 12) != 0)
            return FAIL(V_EXPECT);
        c->expect_continue = true;
    }
    return STEP_MORE;
}

/* The head is complete: decide how the body is framed and how large it may be. */
static int end_of_head(struct guard_conn *c, struct evbuffer *dst)
{
    if (c->http11 ? c->nhost != 1 : c->nhost > 1)
        return FAIL(V_HOST);
    if (c->absolute && strcasecmp(c->authority, c->host) != 0)
        return FAIL(V_OTHER_HOST);
    if (c->nte && (c->ncl || !c->http11))
        return FAIL(V_FRAMING);
    /* evhttp reads no body for HEAD: a body there would be taken for the next request. */
    if (c->is_head && (c->nte || c->cl > 0))
        return FAIL(V_FRAMING);
    struct http_guard *g = c->g;
    if (!c->nte && c->cl == 0) {
        /* complete, no body (so no limit to look up): the caller forwards it */
        event_del(c->deadline);
        c->timing = false;
        return STEP_MORE;
    }
    c->body_limit =
        g->cfg.body_limit ? g->cfg.body_limit(c->method, c->path, g->cfg.body_limit_arg) : 0;
    if (c->ncl && c->cl > c->body_limit)
        return FAIL(V_BODY_TOO_LARGE);
    event_del(c->deadline);
    c->timing = false;
    c->state = c->nte ? G_CHUNK_SIZE : G_BODY;
    c->left = c->cl;
    c->scanned = 0;
    arm(c, g->cfg.body_timeout_ms);
    /* evhttp would answer 100 Continue only when the body is not already there, and the
     * guard hands it head and body together: so the guard says it, when nothing else is on
     * its way out to this client (evhttp is idle while the guard reads). */
    if (c->expect_continue && c->http11 && evbuffer_get_length(c->raw) == 0 &&
        evbuffer_get_length(dst) == 0) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        bufferevent_write(bufferevent_get_underlying(c->bev), cont, sizeof cont - 1);
    }
    return STEP_MORE;
}

static int step_head(struct guard_conn *c, struct evbuffer *dst, bool *complete)
{
    char *line;
    size_t len;
    int r = take_line(c, &c->head_size, c->g->cfg.max_header_size,
                      c->nlines == 0 ? V_URI_TOO_LONG : V_HEADERS_TOO_LARGE, true, &line, &len);
    if (r != STEP_MORE)
        return r;
    if (c->nlines++ == 0)
        return check_request_line(c, line, len);
    if (len > 0)
        return check_field(c, line, len, false);
    take_flush(c); /* the head is whole: raw holds only what follows it */
    r = end_of_head(c, dst);
    *complete = r == STEP_MORE && c->state == G_HEAD;
    return r;
}

static int step_chunk_size(struct guard_conn *c)
{
    size_t size = 0;
    char *line;
    size_t len;
    int r = take_line(c, &size, CHUNK_LINE_MAX, V_CHUNKED, false, &line, &len);
    if (r != STEP_MORE)
        return r;
    size_t i = 0;
    uint64_t n = 0;
    while (i < len && crypto_hexval(line[i]) >= 0) {
        if (i == 15)
            return FAIL(V_CHUNKED);
        n = n * 16 + (uint64_t)crypto_hexval(line[i++]);
    }
    if (i == 0)
        return FAIL(V_CHUNKED);
    /* chunk-ext: BWS ";" ..., no control bytes */
    size_t j = i;
    while (j < len && (line[j] == ' ' || line[j] == '\t'))
        j++;
    if (j < len && line[j] != ';')
        return FAIL(V_CHUNKED);
    for (; j < len; j++)
        if (!is_field_byte((unsigned char)line[j]))
            return FAIL(V_CHUNKED);
    /* evhttp knows no chunk extensions (RFC 9112 lets a recipient ignore them): it gets the
     * size alone. */
    evbuffer_add_printf(c->req, "%llx\r\n", (unsigned long long)n);
    if (n == 0) {
        c->state = G_TRAILER;
        c->head_size = 0;
        return STEP_MORE;
    }
    c->body_size += n;
    if (c->body_size > c->body_limit)
        return FAIL(V_BODY_TOO_LARGE);
    c->left = n;
    c->state = G_CHUNK_DATA;
    return STEP_MORE;
}

static int step(struct guard_conn *c, struct evbuffer *dst, bool *complete)
{
    switch (c->state) {
    case G_HEAD:
        if (!c->timing && c->nlines == 0 && evbuffer_get_length(c->raw) > 0)
            arm(c, c->g->cfg.head_timeout_ms);
        return step_head(c, dst, complete);
    case G_BODY:
    case G_CHUNK_DATA: {
        size_t have = evbuffer_get_length(c->raw);
        if (have == 0)
            return STEP_NEED;
        size_t n = have < c->left ? have : (size_t)c->left;
        evbuffer_remove_buffer(c->raw, c->req, n);
        c->left -= n;
        if (c->left > 0)
            return STEP_NEED;
        if (c->state == G_CHUNK_DATA)
            c->state = G_CHUNK_END;
        else
            *complete = true;
        return STEP_MORE;
    }
    case G_CHUNK_END: {
        char crlf[2];
        size_t have = evbuffer_get_length(c->raw);
        if (have == 0)
            return STEP_NEED;
        evbuffer_copyout(c->raw, crlf, have < 2 ? have : 2);
        if (crlf[0] == '\n')
            return FAIL(V_BARE_LF);
        if (crlf[0] != '\r' || (have >= 2 && crlf[1] != '\n'))
            return FAIL(V_CHUNKED);
        if (have < 2)
            return STEP_NEED;
        evbuffer_remove_buffer(c->raw, c->req, 2);
        c->state = G_CHUNK_SIZE;
        return STEP_MORE;
    }
    case G_CHUNK_SIZE:
        return step_chunk_size(c);
    case G_TRAILER: {
        char *line;
        size_t len;
        int r = take_line(c, &c->head_size, c->g->cfg.max_header_size, V_HEADERS_TOO_LARGE, true,
                          &line, &len);
        if (r != STEP_MORE)
            return r;
        if (len > 0)
            return check_field(c, line, len, true);
        take_flush(c);
        *complete = true;
        return STEP_MORE;
    }
    case G_DEAD:
        return STEP_NEED;
    }
    return STEP_NEED;
}

static enum bufferevent_filter_result in_filter(struct evbuffer *src, struct evbuffer *dst,
                                                ev_ssize_t limit, enum bufferevent_flush_mode mode,
                                                void *arg)
{
    struct guard_conn *c = arg;
    if (c->state != G_DEAD)
        (void)conn_start(c, dst);
    if (c->state == G_DEAD) {
        evbuffer_drain(src, evbuffer_get_length(src));
        return BEV_OK;
    }
    evbuffer_add_buffer(c->raw, src);
    for (;;) {
        bool complete = false;
        int r = step(c, dst, &complete);
        if (r < 0) {
            refuse(c, (enum verdict)(-1 - r), dst);
            break;
        }
        if (complete) {
            evbuffer_add_buffer(dst, c->req);
            event_del(c->deadline);
            c->timing = false;
            reset_request(c);
            continue;
        }
        if (r == STEP_NEED)
            break;
    }
    return BEV_OK;
}

/* Output. A filter tells evhttp that a reply is written as soon as the reply has moved to the
 * transport's buffer, and evhttp closes a Connection: close connection right then -- before
 * the socket has the bytes, so the reply would be lost. And a filter moves output only while
 * evhttp has writing enabled, which it enables after it queued the reply. So the guard moves
 * every byte to the transport at once (to_transport), never reports "written" through the
 * filter (BEV_NEED_MORE), and tells evhttp itself once the transport's buffer is empty, that is,
 * once the kernel (or TLS) has the bytes (transport_drained). */
static void to_transport(struct guard_conn *c, struct evbuffer *from)
{
    if (evbuffer_get_length(from) == 0)
        return;
    evbuffer_add_buffer(bufferevent_get_output(bufferevent_get_underlying(c->bev)), from);
    c->flushing = true;
}

/* The connections with output held back by http_guard_batch_begin. */
static struct {
    int depth;
    TAILQ_HEAD(, guard_conn) conns;
} batch = {0, TAILQ_HEAD_INITIALIZER(batch.conns)};

/* True when the output is held back (and the connection is in the batch's list). */
static bool batch_hold(struct guard_conn *c)
{
    if (batch.depth == 0)
        return false;
    if (!c->batched) {
        c->batched = true;
        TAILQ_INSERT_TAIL(&batch.conns, c, batch_link);
    }
    return true;
}

static void batch_drop(struct guard_conn *c)
{
    if (c->batched) {
        TAILQ_REMOVE(&batch.conns, c, batch_link);
        c->batched = false;
    }
}

void http_guard_batch_begin(void)
{
    batch.depth++;
}

void http_guard_batch_end(void)
{
    if (--batch.depth > 0)
        return;
    while (!TAILQ_EMPTY(&batch.conns)) {
        struct guard_conn *c = TAILQ_FIRST(&batch.conns);
        batch_drop(c);
        to_transport(c, bufferevent_get_output(c->bev));
    }
}

static enum bufferevent_filter_result out_filter(struct evbuffer *src, struct evbuffer *dst,
                                                 ev_ssize_t limit, enum bufferevent_flush_mode mode,
                                                 void *arg)
{
    if (!batch_hold(arg))
        to_transport(arg, src);
    return BEV_NEED_MORE;
}

static void output_added_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    if (info->n_added && !batch_hold(arg))
        to_transport(arg, buf);
}

static void transport_drained_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info,
                                 void *arg)
{
    struct guard_conn *c = arg;
    if (!info->n_deleted || !c->flushing || evbuffer_get_length(buf) != 0)
        return;
    c->flushing = false;
    bufferevent_trigger(c->bev, EV_WRITE, BEV_TRIG_DEFER_CALLBACKS);
    if (c->eof_pending) {
        /* deferred callbacks run write before event: evhttp completes the reply first */
        bufferevent_trigger_event(c->bev, c->eof_pending, BEV_TRIG_DEFER_CALLBACKS);
        c->eof_pending = 0;
    }
}

/* A client that sends its request and then half-closes (EOF) still gets its reply: evhttp
 * drops a connection on EOF, reply and all, so while a reply is on its way out the guard holds
 * the EOF back until the transport has drained. Errors pass at once. */
static void transport_event_cb(struct bufferevent *b, short what, void *arg)
{
    struct guard_conn *c = arg;
    if ((what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR) && c->flushing) {
        c->eof_pending = what;
        return;
    }
    c->t_event(b, what, c->t_arg);
}

static void transport_read_cb(struct bufferevent *b, void *arg)
{
    struct guard_conn *c = arg;
    c->t_read(b, c->t_arg);
}

static void transport_write_cb(struct bufferevent *b, void *arg)
{
    struct guard_conn *c = arg;
    c->t_write(b, c->t_arg);
}

/* Lingering close (RFC 9112 §9.6). evhttp closes a refused connection once the reply is out,
 * but the client may still be sending what we refused; closing a socket with unread input
 * makes the kernel answer RST, and an RST can destroy our reply in the client's buffers before
 * it read it. So the guard keeps a duplicate of the socket, sends FIN itself, and reads and
 * drops what still comes until the client closes, LINGER_MS pass without data, or too much
 * arrives. */
static void linger_end(struct lingering *l)
{
    TAILQ_REMOVE(&l->g->lingers, l, link);
    event_free(l->ev);
    evutil_closesocket(l->fd);
    free(l);
}

static void linger_cb(evutil_socket_t fd, short what, void *arg)
{
    struct lingering *l = arg;
    if (what & EV_TIMEOUT) {
        linger_end(l);
        return;
    }
    char buf[4096];
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n > 0) {
            l->drained += (size_t)n;
            if (l->drained > 4 * l->g->cfg.max_header_size) {
                linger_end(l);
                return;
            }
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return;
        linger_end(l); /* EOF or error */
        return;
    }
}

static void linger_start(struct http_guard *g, evutil_socket_t fd)
{
    if (g->closing) {
        evutil_closesocket(fd);
        return;
    }
    shutdown(fd, SHUT_WR); /* the reply is out (evhttp frees only after that): FIN now */
    struct lingering *l = xcalloc(1, sizeof *l);
    l->g = g;
    l->fd = fd;
    l->ev = event_new(g->base, fd, EV_READ | EV_PERSIST, linger_cb, l);
    int ms = g->cfg.head_timeout_ms < LINGER_MS ? g->cfg.head_timeout_ms : LINGER_MS;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    event_add(l->ev, &tv);
    TAILQ_INSERT_TAIL(&g->lingers, l, link);
}

static void conn_free(void *arg)
{
    struct guard_conn *c = arg;
    struct http_guard *g = c->g;
    batch_drop(c);
    if (c->linger_fd >= 0)
        linger_start(g, c->linger_fd);
    if (c->counted)
        addr_remove(g, c->addr);
    event_free(c->deadline);
    event_free(c->start);
    evbuffer_free(c->raw);
    evbuffer_free(c->req);
    free(c);
    g->stats.open--;
    guard_unref(g);
}

struct bufferevent *http_guard_wrap(struct http_guard *g, struct bufferevent *transport)
{
    struct guard_conn *c = xcalloc(1, sizeof *c);
    c->g = g;
    c->raw = evbuffer_new();
    c->req = evbuffer_new();
    c->deadline = evtimer_new(g->base, deadline_cb, c);
    c->start = event_new(g->base, -1, 0, start_cb, c);
    c->linger_fd = -1;
    reset_request(c);
    c->bev = bufferevent_filter_new(transport, in_filter, out_filter, BEV_OPT_CLOSE_ON_FREE,
                                    conn_free, c);
    if (!c->bev) {
        log_error("cannot create the connection filter: out of memory");
        abort();
    }
    bufferevent_getcb(transport, &c->t_read, &c->t_write, &c->t_event, &c->t_arg);
    bufferevent_setcb(transport, transport_read_cb, transport_write_cb, transport_event_cb, c);
    evbuffer_add_cb(bufferevent_get_output(c->bev), output_added_cb, c);
    evbuffer_add_cb(bufferevent_get_output(transport), transport_drained_cb, c);
    g->refs++;
    g->stats.open++;
    /* evhttp sets the socket right after this returns: count the peer on the next turn. */
    event_active(c->start, EV_TIMEOUT, 1);
    return c->bev;
}

struct http_guard *http_guard_new(struct event_base *base, const struct http_guard_config *cfg)
{
    struct http_guard *g = xcalloc(1, sizeof *g);
    g->base = base;
    g->cfg = *cfg;
    g->scratch = xmalloc(cfg->max_header_size + 1);
    g->refs = 1;
    TAILQ_INIT(&g->lingers);
    return g;
}

static void guard_unref(struct http_guard *g)
{
    if (--g->refs > 0)
        return;
    for (int i = 0; i < ADDR_BUCKETS; i++) {
        while (g->buckets[i]) {
            struct addr_count *a = g->buckets[i];
            g->buckets[i] = a->next;
            free(a);
        }
    }
    free(g->scratch);
    free(g);
}

void http_guard_free(struct http_guard *g)
{
    if (!g)
        return;
    g->closing = true; /* the owner lets go: end every linger now, start no new one */
    while (!TAILQ_EMPTY(&g->lingers))
        linger_end(TAILQ_FIRST(&g->lingers));
    guard_unref(g);
}

void http_guard_get_stats(const struct http_guard *g, struct http_guard_stats *out)
{
    *out = g->stats;
}
