/* wechat.c -- the WeChat login client: one outbound GET per login code, its reply classified
 * (wechat.h has the contract and the error mapping).
 *
 * Owns: its own httpc client (wechat.ca_file) and one struct exchange per call in flight,
 * freed when its callback has run. The app ids and secrets stay in the config (which outlives
 * the client); the URLs that carry a secret are built on the heap, wiped and freed as soon as
 * httpc copied them, and never logged. */
#include "wechat.h"
#include "config.h"
#include "httpc.h"
#include "log.h"

#include <event2/http.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define RESPONSE_MAX (16 * 1024)

struct exchange {
    struct wechat *w;
    struct exchange *prev, *next;
    enum wechat_kind kind;
    wechat_cb cb;
    void *arg;
};

struct wechat {
    const struct config *cfg;
    struct httpc *http;
    struct exchange *head; /* in flight: freed by wechat_free if the loop stopped first */
    char base[512];        /* wechat.api_base without a trailing '/' */
};

static void exchange_unlink(struct exchange *x)
{
    if (x->prev)
        x->prev->next = x->next;
    else
        x->w->head = x->next;
    if (x->next)
        x->next->prev = x->prev;
}

/* An id as WeChat issues them: 1..WECHAT_ID_MAX of [A-Za-z0-9_-]. */
static bool id_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > WECHAT_ID_MAX)
        return false;
    for (const char *p = s; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '_'))
            return false;
    return true;
}

static void unavailable(struct wechat_identity *out, const char *detail)
{
    out->st = ST_UNAVAILABLE;
    out->code = "wechat_unavailable";
    out->detail = detail;
}

void wechat_classify(bool got_response, int http_status, const char *body, size_t len,
                     struct wechat_identity *out)
{
    out->st = ST_OK;
    out->code = NULL;
    out->errcode = 0;
    out->detail = "";
    out->openid[0] = out->unionid[0] = '\0';
    if (!got_response) {
        unavailable(out, "no reply");
        return;
    }
    if (http_status != 200) {
        unavailable(out, http_status >= 500 ? "server error status" : "unexpected status");
        return;
    }
    json_t *j = json_loadb(body ? body : "", len, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(j)) {
        json_decref(j);
        unavailable(out, "reply is not a JSON object");
        return;
    }
    json_t *ec = json_object_get(j, "errcode");
    long errcode = json_is_integer(ec) ? (long)json_integer_value(ec) : 0;
    if (ec && !json_is_integer(ec)) {
        json_decref(j);
        unavailable(out, "errcode is not a number");
        return;
    }
    out->errcode = errcode;
    if (errcode != 0) {
        json_decref(j);
        switch (errcode) {
        case 40029: /* invalid code */
        case 40163: /* code already used */
            out->st = ST_UNAUTHORIZED;
            out->code = "wechat_code_invalid";
            out->detail = "code refused";
            return;
        case 45011: /* API minute-quota reached */
            out->st = ST_RATE_LIMITED;
            out->code = "wechat_rate_limited";
            out->detail = "rate limited";
            return;
        case 40226: /* a user WeChat holds as high risk */
            out->st = ST_FORBIDDEN;
            out->code = "wechat_user_blocked";
            out->detail = "user blocked by wechat";
            return;
        case -1: /* system busy */
            unavailable(out, "system busy");
            return;
        default:
            unavailable(out, "unexpected errcode");
            return;
        }
    }
    const char *openid = json_string_value(json_object_get(j, "openid"));
    json_t *uj = json_object_get(j, "unionid");
    const char *unionid = json_string_value(uj);
    if (!id_ok(openid) || (uj && !json_is_null(uj) && !id_ok(unionid))) {
        json_decref(j);
        unavailable(out, "reply without a valid openid");
        return;
    }
    snprintf(out->openid, sizeof out->openid, "%s", openid);
    if (unionid)
        snprintf(out->unionid, sizeof out->unionid, "%s", unionid);
    json_decref(j);
}

/* Misconfiguration that only the operator can fix; everything else is WeChat's weather. */
static bool config_errcode(long errcode)
{
    return errcode == 40013 || errcode == 40125 || errcode == 41002 || errcode == 41004 ||
           errcode == 40164 || errcode == 48001;
}

static const char *app_id_of(const struct wechat *w, enum wechat_kind kind)
{
    return kind == WECHAT_MINI ? w->cfg->wechat_mini_app_id : w->cfg->wechat_app_id;
}

static void exchanged_cb(const struct httpc_response *r, void *arg)
{
    struct exchange *x = arg;
    const struct config *cfg = x->w->cfg;
    struct wechat_identity id;
    wechat_classify(r->outcome == HTTPC_RESPONSE, r->status, r->body, r->body_len, &id);
    id.app_id = app_id_of(x->w, x->kind);
    id.retry_after_s = id.st == ST_RATE_LIMITED ? cfg->wechat_rate_limit_retry_after_s
                                                : cfg->wechat_unavailable_retry_after_s;
    const char *what = x->kind == WECHAT_MINI ? "jscode2session" : "oauth2/access_token";
    if (r->outcome != HTTPC_RESPONSE) {
        log_warn("wechat %s: %s", what, r->error);
        id.detail = r->error;
    } else if (id.st == ST_UNAVAILABLE && config_errcode(id.errcode)) {
        log_error("wechat %s: errcode %ld: check wechat.%s and its secret", what, id.errcode,
                  x->kind == WECHAT_MINI ? "mini_app_id" : "app_id");
    } else if (id.st == ST_UNAVAILABLE) {
        log_warn("wechat %s: %s (status %d, errcode %ld)", what, id.detail, r->status, id.errcode);
    }
    wechat_cb cb = x->cb;
    void *cb_arg = x->arg;
    exchange_unlink(x);
    free(x);
    cb(&id, cb_arg);
}

void wechat_exchange(struct wechat *w, enum wechat_kind kind, const char *code, wechat_cb cb,
                     void *arg)
{
    ASSERT(wechat_enabled(w, kind) && cb);
    const struct config *cfg = w->cfg;
    const char *app_id = app_id_of(w, kind);
    const char *secret = kind == WECHAT_MINI ? cfg->wechat_mini_app_secret : cfg->wechat_app_secret;
    char *e_app = evhttp_uriencode(app_id, -1, 0);
    char *e_secret = evhttp_uriencode(secret, -1, 0);
    char *e_code = evhttp_uriencode(code, -1, 0);
    ASSERT(e_app && e_secret && e_code);
    size_t n = strlen(w->base) + strlen(e_app) + strlen(e_secret) + strlen(e_code) + 128;
    char *url = xmalloc(n);
    if (kind == WECHAT_MINI)
        snprintf(url, n,
                 "%s/sns/jscode2session?appid=%s&secret=%s&js_code=%s"
                 "&grant_type=authorization_code",
                 w->base, e_app, e_secret, e_code);
    else
        snprintf(url, n,
                 "%s/sns/oauth2/access_token?appid=%s&secret=%s&code=%s"
                 "&grant_type=authorization_code",
                 w->base, e_app, e_secret, e_code);
    explicit_bzero(e_secret, strlen(e_secret));
    free(e_app);
    free(e_secret);
    free(e_code);
    struct exchange *x = xcalloc(1, sizeof *x);
    x->w = w;
    x->kind = kind;
    x->cb = cb;
    x->arg = arg;
    x->next = w->head;
    if (w->head)
        w->head->prev = x;
    w->head = x;
    static const char *const headers[] = {"Accept", "application/json", "User-Agent",
                                          "gridpoints-wechat/1", NULL};
    struct httpc_request req = {
        .method = "GET",
        .url = url,
        .headers = headers,
        .timeout_ms = cfg->wechat_timeout_ms,
        .max_response = RESPONSE_MAX,
        .policy = HTTPC_ANY_ADDRESS, /* the operator chose api_base, not a client */
        .log_label = kind == WECHAT_MINI ? "wechat jscode2session" : "wechat oauth2/access_token",
    };
    httpc_send(w->http, &req, exchanged_cb, x);
    explicit_bzero(url, strlen(url));
    free(url);
}

bool wechat_enabled(const struct wechat *w, enum wechat_kind kind)
{
    return w && *app_id_of(w, kind);
}

bool wechat_saturated(const struct wechat *w)
{
    return w && httpc_inflight(w->http) >= w->cfg->wechat_max_inflight;
}

void wechat_fail_all(struct wechat *w)
{
    if (w)
        httpc_fail_all(w->http);
}

/* An app id and its secret come together; both are printable ASCII without blanks. */
static bool app_ok(const char *id_key, const char *id, const char *secret_key, const char *secret)
{
    if (!*id && !*secret)
        return true;
    if (!*id || !*secret) {
        log_error("wechat.%s and wechat.%s must be set together (the secret from the "
                  "environment: GRIDPOINTS_WECHAT_%s)",
                  id_key, secret_key,
                  !strcmp(secret_key, "app_secret") ? "APP_SECRET" : "MINI_APP_SECRET");
        return false;
    }
    if (!id_ok(id) || strlen(id) > 64) {
        log_error("wechat.%s: not an app id", id_key);
        return false;
    }
    for (const char *p = secret; *p; p++) {
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f) {
            log_error("wechat.%s: unexpected characters", secret_key);
            return false;
        }
    }
    return true;
}

struct wechat *wechat_new(struct event_base *base, const struct config *cfg)
{
    if (!app_ok("app_id", cfg->wechat_app_id, "app_secret", cfg->wechat_app_secret) ||
        !app_ok("mini_app_id", cfg->wechat_mini_app_id, "mini_app_secret",
                cfg->wechat_mini_app_secret))
        return NULL;
    /* https with a host, perhaps a path prefix (a forward proxy), nothing else. */
    const char *api_base = cfg->wechat_api_base;
    struct evhttp_uri *u = evhttp_uri_parse_with_flags(api_base, 0);
    const char *scheme = u ? evhttp_uri_get_scheme(u) : NULL;
    const char *host = u ? evhttp_uri_get_host(u) : NULL;
    bool ok = scheme && !strcasecmp(scheme, "https") && host && *host &&
              !evhttp_uri_get_userinfo(u) && !evhttp_uri_get_query(u) &&
              !evhttp_uri_get_fragment(u) && strlen(api_base) < sizeof((struct wechat *)0)->base;
    if (u)
        evhttp_uri_free(u);
    if (!ok) {
        log_error("wechat.api_base \"%s\": must be an https URL without query or user", api_base);
        return NULL;
    }
    struct httpc_config hc = {
        .ca_file = cfg->wechat_ca_file,
        .ca_key = "wechat.ca_file",
    };
    struct httpc *http = httpc_new(base, &hc);
    if (!http)
        return NULL;
    struct wechat *w = xcalloc(1, sizeof *w);
    w->cfg = cfg;
    w->http = http;
    snprintf(w->base, sizeof w->base, "%s", api_base);
    size_t n = strlen(w->base);
    while (n > 0 && w->base[n - 1] == '/')
        w->base[--n] = '\0';
    return w;
}

void wechat_free(struct wechat *w)
{
    if (!w)
        return;
    httpc_free(w->http); /* drops calls left without their callbacks */
    while (w->head) {
        struct exchange *x = w->head;
        exchange_unlink(x);
        free(x);
    }
    free(w);
}
