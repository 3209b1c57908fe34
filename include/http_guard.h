/* http_guard.h -- strict HTTP/1.1 framing, slow-client deadlines and a per-address connection
 * cap, in front of libevent's parser.
 *
 * evhttp's parser is lenient (bare LF, obs-fold, control bytes, whitespace before the colon,
 * missing Host) and answers its own errors in HTML; it also has one idle timeout that a client
 * trickling a byte every few seconds never trips. The guard is a bufferevent filter between
 * the connection's transport (socket or TLS) and evhttp. It reads each request (head, then
 * body by Content-Length or chunked framing) into a buffer of its own, checks it against RFC
 * 9112 and the configured limits, and hands evhttp only complete requests that passed.
 *
 * When a request fails, the guard discards the connection's input from there on and hands
 * evhttp, in place of the request, a fixed GET whose HTTP_GUARD_HEADER names the verdict and
 * which asks for Connection: close. The HTTP layer answers that request like any other (JSON
 * error body, request id, access log, metrics), and evhttp closes the connection once the
 * reply is out. Clients cannot forge the verdict: a request carrying HTTP_GUARD_HEADER is
 * itself refused by the guard. */
#ifndef GP_HTTP_GUARD_H
#define GP_HTTP_GUARD_H

#include "common.h"
#include "status.h"

struct bufferevent;
struct event_base;
struct http_guard;

#define HTTP_GUARD_HEADER "X-Gp-Guard"

/* The largest body a request for method + path may carry (the route's limit). */
typedef size_t (*http_guard_body_limit_fn)(const char *method, const char *path, void *arg);

struct http_guard_config {
    size_t max_header_size; /* request line + header fields; also bounds trailers */
    int head_timeout_ms;    /* from a request's first byte to the end of its head */
    int body_timeout_ms;    /* from the end of the head to the end of the body */
    int max_conns_per_addr; /* open connections from one peer address; 0 = no cap */
    http_guard_body_limit_fn body_limit;
    void *body_limit_arg;
};

struct http_guard_verdict {
    enum status st;
    const char *code;    /* machine code of the error body */
    const char *message; /* what went wrong, for the client */
};

/* Strings in cfg are not used; the struct is copied. */
struct http_guard *http_guard_new(struct event_base *base, const struct http_guard_config *cfg);
/* Call after every connection it wrapped was freed (evhttp_free does that). */
void http_guard_free(struct http_guard *g);

/* Wraps a new connection's transport (a bufferevent whose fd evhttp sets right after this
 * returns) and returns the bufferevent evhttp should use; freeing it frees the transport.
 * Meant to be called from evhttp's bevcb. */
struct bufferevent *http_guard_wrap(struct http_guard *g, struct bufferevent *transport);

/* The verdict a HTTP_GUARD_HEADER value names, or NULL when it names none. */
const struct http_guard_verdict *http_guard_verdict(const char *header_value);

/* Between begin and end, what evhttp writes to the guarded connections stays in their
 * output buffers, and end hands each connection's output to its transport in one move instead
 * of one move per piece (evhttp writes a reply's status line and every header field
 * separately). Around evhttp_send_reply; pairs nest; the event loop's thread only. */
void http_guard_batch_begin(void);
void http_guard_batch_end(void);

/* Counters for /metrics. */
struct http_guard_stats {
    uint64_t refused;  /* requests refused for framing, size or method */
    uint64_t timeouts; /* connections closed by the head or body deadline */
    uint64_t capped;   /* connections refused by the per-address cap */
    int open;          /* connections open now */
};
void http_guard_get_stats(const struct http_guard *g, struct http_guard_stats *out);

#endif
