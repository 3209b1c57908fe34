/* httpc.h -- outbound HTTPS requests on the event loop, never blocking it: the client that
 * merchant webhooks (webhook.h) and WeChat login (wechat.h) share.
 *
 * One call runs as a small state machine:
 *
 *   RESOLVE  the URL's host read as the resolver reads it (netaddr_parse_host: any IPv4
 *            spelling, bracketed IPv6, local names); a name goes through evdns (the client's
 *            hosts file first, if set). When the call has an address policy, EVERY address
 *            of the answer must pass it (netaddr.h): one refused address refuses the call
 *            (logged at warn with the address and its kind)
 *   SEND     evhttp over bufferevent_openssl to the checked address itself, as an IP literal
 *            (pinned: nothing resolves the name again), with the Host header, SNI and the
 *            certificate check for the URL's host; redirects are not followed
 *   DONE     the outcome is handed to the caller's callback from a zero timer on the loop,
 *            never from inside libevent's HTTP callbacks and never inside httpc_send, so the
 *            caller may free, reply or start another call from its callback
 *
 * The whole call, resolution included, has one deadline (timeout_ms); a slow or silent peer
 * ends as HTTPC_TIMEOUT, whatever it drips. The response body is bounded (max_response). */
#ifndef GP_HTTPC_H
#define GP_HTTPC_H

#include "common.h"

struct event_base;
struct httpc;
struct httpc_call;

struct httpc_config {
    const char *ca_file;    /* CA bundle (PEM); NULL or "" = the system's default store */
    const char *hosts_file; /* extra hosts file read at start-up; NULL or "" = none */
    const char *ca_key;     /* the config key naming ca_file, for start-up errors */
    const char *hosts_key;  /* likewise for hosts_file */
};

/* Which addresses a call may connect to (decided on the resolved address, never the name). */
enum httpc_policy {
    HTTPC_ANY_ADDRESS,  /* a URL the operator configured (WeChat's API base) */
    HTTPC_PUBLIC_ONLY,  /* netaddr_allowed(kind, false): a URL a merchant chose */
    HTTPC_PRIVATE_ALSO, /* netaddr_allowed(kind, true): the same, tests only */
};

enum httpc_outcome {
    HTTPC_RESPONSE,  /* a complete response arrived (any status; status and body are set) */
    HTTPC_REFUSED,   /* the address policy refused the host or one of its addresses */
    HTTPC_BAD_URL,   /* not https://host[:port]/..., or a host no resolver would accept */
    HTTPC_DNS,       /* the name did not resolve */
    HTTPC_TIMEOUT,   /* timeout_ms passed first */
    HTTPC_FAILED,    /* connect, TLS, a dropped connection, a malformed or too long reply */
    HTTPC_CANCELLED, /* httpc_fail_all (a forced shutdown) */
};

struct httpc_request {
    const char *method;         /* "GET" or "POST" */
    const char *url;            /* https://host[:port][/path][?query]; copied */
    const char *const *headers; /* name, value, name, value, ..., NULL; copied; may be NULL */
    const char *body;           /* copied; NULL = none */
    size_t body_len;
    int timeout_ms;      /* the whole call, >= 1 */
    size_t max_response; /* response body bytes; more is HTTPC_FAILED */
    enum httpc_policy policy;
    const char *log_label; /* prefix of the call's log lines ("webhook evt_1 attempt 2"); copied */
    const char *want_header; /* a response header to hand back (httpc_response.header); copied */
};

struct httpc_response {
    enum httpc_outcome outcome;
    int status;       /* HTTP status with HTTPC_RESPONSE, else 0 */
    const char *body; /* response body, NUL-terminated (valid during the callback only) */
    size_t body_len;
    const char *error; /* "" with a response, else a short text for logs and records
                        * ("timeout", "connection closed", "tls: ...", "address_not_allowed") */
    /* The value of httpc_request.want_header, NULL when absent. */
    const char *header;
};

/* Called exactly once per call unless the call is cancelled (httpc_cancel, httpc_free). */
typedef void (*httpc_cb)(const struct httpc_response *r, void *arg);

/* Creates the TLS context (TLS 1.2+, peer verified) and the resolver (resolv.conf and
 * /etc/hosts, then cfg->hosts_file). Start-up file I/O: call before the loop runs. NULL
 * (logged) when the CA file or the hosts file cannot be read. */
struct httpc *httpc_new(struct event_base *base, const struct httpc_config *cfg);

/* Starts a call; cb(response, arg) follows from the loop. Returns the call's handle, valid
 * until cb runs or httpc_cancel. */
struct httpc_call *httpc_send(struct httpc *c, const struct httpc_request *r, httpc_cb cb,
                              void *arg);
/* Abandons a call: its callback will not run. Not from inside that callback. */
void httpc_cancel(struct httpc_call *call);
/* Ends every call in flight with HTTPC_CANCELLED (callbacks from the loop, as usual). */
void httpc_fail_all(struct httpc *c);
/* Calls whose callback has not run yet. */
int httpc_inflight(const struct httpc *c);
/* NULL allowed. Calls still in flight are dropped without their callbacks. */
void httpc_free(struct httpc *c);

#endif
