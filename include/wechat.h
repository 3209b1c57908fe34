/* wechat.h -- the WeChat login client: trades a login code for the user's openid (and
 * unionid when WeChat gives one), asynchronously, through the outbound client (httpc.h).
 *
 * Two WeChat apps, two contracts, one answer:
 *   WECHAT_MINI  a mini-program's wx.login code: GET <api_base>/sns/jscode2session?appid=
 *                &secret=&js_code=&grant_type=authorization_code, with wechat.mini_app_id and
 *                wechat.mini_app_secret
 *   WECHAT_WEB   web OAuth in WeChat's browser (snsapi_base, an official account): GET
 *                <api_base>/sns/oauth2/access_token?appid=&secret=&code=&grant_type=
 *                authorization_code, with wechat.app_id and wechat.app_secret
 * A kind whose app id is empty is disabled. The secrets travel only in those URLs, which are
 * never logged; the session_key and access_token WeChat returns are read past and dropped.
 *
 * WeChat's answers become a status and a stable code (wechat_classify):
 *   errcode 40029, 40163 (invalid or used code)       ST_UNAUTHORIZED  wechat_code_invalid
 *   errcode 45011 (rate limit)                        ST_RATE_LIMITED  wechat_rate_limited
 *   errcode 40226 (a user WeChat flags as high risk)  ST_FORBIDDEN     wechat_user_blocked
 *   errcode -1 (system busy), any other errcode, a timeout, a dropped connection, a non-200
 *   status, a reply that is not JSON or has no valid openid
 *                                                     ST_UNAVAILABLE   wechat_unavailable
 * Never ST_INTERNAL: nothing WeChat (or a client's code) does is our bug. */
#ifndef GP_WECHAT_H
#define GP_WECHAT_H

#include "common.h"
#include "status.h"

struct config;
struct event_base;
struct wechat;

enum wechat_kind { WECHAT_MINI, WECHAT_WEB };

#define WECHAT_ID_MAX 128 /* longest openid / unionid we accept */

struct wechat_identity {
    enum status st;     /* ST_OK: openid is set */
    const char *code;   /* the reply's error code when not ST_OK (static string) */
    int retry_after_s;  /* with ST_RATE_LIMITED and ST_UNAVAILABLE */
    const char *app_id; /* the app the code belongs to (owned by the client) */
    char openid[WECHAT_ID_MAX + 1];
    char unionid[WECHAT_ID_MAX + 1]; /* "" when WeChat gave none */
    long errcode;                    /* WeChat's errcode, 0 when none (for logs) */
    const char *detail;              /* what went wrong, for logs ("" on success) */
};

/* Called exactly once per wechat_exchange, from the loop, never inside wechat_exchange. */
typedef void (*wechat_cb)(const struct wechat_identity *id, void *arg);

/* Checks the [wechat] settings and creates the client (TLS context, resolver). NULL (logged)
 * when they are inconsistent (an app id without its secret, an api_base that is not an https
 * URL) or the CA file cannot be read. Start-up I/O: call before the loop runs. */
struct wechat *wechat_new(struct event_base *base, const struct config *cfg);
/* NULL allowed (a server built without the client: every kind disabled). */
bool wechat_enabled(const struct wechat *w, enum wechat_kind kind);
/* Calls in flight have reached wechat.max_inflight: refuse new logins for now (503). */
bool wechat_saturated(const struct wechat *w);
/* Trades code (1..128 bytes of [A-Za-z0-9_-], checked by the caller) for an identity. kind
 * must be enabled. */
void wechat_exchange(struct wechat *w, enum wechat_kind kind, const char *code, wechat_cb cb,
                     void *arg);
/* Forced shutdown: every exchange in flight ends now with ST_UNAVAILABLE. NULL allowed. */
void wechat_fail_all(struct wechat *w);
/* NULL allowed; after the HTTP server drained (no exchange left to call back). */
void wechat_free(struct wechat *w);

/* Pure: reads one WeChat reply into out (st, code, openid, unionid, errcode, detail; not
 * retry_after_s nor app_id). got_response: a complete HTTP response arrived with this status
 * and body; otherwise the call failed (timeout, connection) and body is ignored. */
void wechat_classify(bool got_response, int http_status, const char *body, size_t len,
                     struct wechat_identity *out);

#endif
