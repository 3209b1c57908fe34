/* webhook.c -- merchant webhook deliveries: the URL policy, a signed POST through the
 * outbound client (httpc.h: resolve, check every address, TLS to the checked address), the
 * report to PostgreSQL (webhook.h has the contract).
 *
 * Owns: its own httpc client (the webhook CA and hosts files) and one struct delivery per
 * event in flight, kept on a list so that a shutdown can drop them. A delivery is freed only
 * by finish(), which runs from the loop (httpc's callback chain, a db callback, or the stop). */
#include "webhook.h"
#include "app.h"
#include "config.h"
#include "db.h"
#include "httpc.h"
#include "log.h"
#include "merchant_crypto.h"
#include "metrics.h"
#include "netaddr.h"

#include <event2/http.h>
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

enum step { D_SEND, D_REPORT };

struct delivery {
    struct webhooks *w;
    struct delivery *prev, *next;
    enum step step;
    int64_t id;
    int attempt;
    int64_t merchant_id;
    char event_id[80];
    char secret[160];
    size_t secret_len;
    struct httpc_call *call; /* D_SEND: the POST in flight (resolution included) */
    bool ok;
    int status;
    char error[200];
};

struct webhooks {
    struct app *app;
    struct httpc *http; /* our own client: the webhook CA file and hosts file */
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
    if (d->call)
        httpc_cancel(d->call); /* its callback will not run */
    mcrypto_wipe(d->secret, sizeof d->secret);
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

static void fail(struct delivery *d, const char *what)
{
    d->ok = false;
    snprintf(d->error, sizeof d->error, "%s", what);
    report(d);
}

/* The POST's outcome (httpc.h), from the loop: a 2xx delivered it; anything else, a 3xx
 * included (redirects are not followed), is a failed attempt. */
static void sent_cb(const struct httpc_response *r, void *arg)
{
    struct delivery *d = arg;
    d->call = NULL;
    d->status = r->status;
    d->ok = r->outcome == HTTPC_RESPONSE && r->status >= 200 && r->status < 300;
    if (d->ok) {
        report(d);
        return;
    }
    fail(d, r->outcome == HTTPC_RESPONSE ? "non-2xx status" : r->error);
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
    d->next = w->head;
    if (w->head)
        w->head->prev = d;
    w->head = d;
    w->inflight++;

    if (!url || !sealed) {
        fail(d, "webhook removed");
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
        fail(d, "cannot open the webhook secret");
        return;
    }
    char sig[128], label[160];
    size_t body_len = strlen(body);
    mcrypto_webhook_signature(d->secret, d->secret_len, common_wall_ms() / 1000, body, body_len,
                              sig, sizeof sig);
    const char *headers[] = {"Content-Type",
                             "application/json; charset=utf-8",
                             "User-Agent",
                             "gridpoints-webhooks/1",
                             "Gridpoints-Event-Id",
                             d->event_id,
                             "Gridpoints-Signature",
                             sig,
                             NULL};
    snprintf(label, sizeof label, "webhook %s attempt %d", d->event_id, d->attempt);
    /* The host is read and every resolved address checked at each attempt, as at registration
     * (webhook_url_check): the policy may have changed since, and a URL stored by an older
     * version was checked by older rules. */
    struct httpc_request req = {
        .method = "POST",
        .url = url,
        .headers = headers,
        .body = body,
        .body_len = body_len,
        .timeout_ms = cfg->merchant_webhook_timeout_s * 1000,
        .max_response = 64 * 1024,
        .policy = cfg->merchant_webhook_allow_private ? HTTPC_PRIVATE_ALSO : HTTPC_PUBLIC_ONLY,
        .log_label = label,
    };
    d->step = D_SEND;
    d->call = httpc_send(w->http, &req, sent_cb, d);
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
    struct httpc_config hc = {
        .ca_file = cfg->merchant_webhook_ca_file,
        .hosts_file = cfg->merchant_webhook_hosts_file,
        .ca_key = "merchant.webhook_ca_file",
        .hosts_key = "merchant.webhook_hosts_file",
    };
    struct httpc *http = httpc_new(app->base, &hc); /* start-up I/O: CA file, resolv.conf */
    if (!http)
        return NULL;
    struct webhooks *w = xcalloc(1, sizeof *w);
    w->app = app;
    w->http = http;
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
        /* A POST in flight is dropped (its event stays leased and is retried after the
         * lease); a report already sent to PostgreSQL finishes by itself. */
        if (d->step == D_SEND)
            finish(d);
    }
    maybe_idle(w);
}

void webhooks_free(struct webhooks *w)
{
    if (!w)
        return;
    /* Normally nothing is left. After a forced shutdown a delivery may be (the loop stopped
     * before its call ended): it is dropped; its event stays leased and is retried. Reports
     * in flight were failed by db_pool_free, which runs before this. */
    w->idle = NULL;
    while (w->head)
        finish(w->head);
    httpc_free(w->http);
    free(w);
}
