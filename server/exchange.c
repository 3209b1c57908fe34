/* exchange.c -- signed calls to partner schemes and the two timers that make them (exchange.h;
 * the protocol is docs/EXCHANGE.md). */
#include "exchange.h"
#include "app.h"
#include "config.h"
#include "crypto.h"
#include "db.h"
#include "effects.h"
#include "httpc.h"
#include "log.h"
#include "merchant_auth.h"
#include "merchant_crypto.h"
#include "metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------- */
/* One signed call                                                                           */
/* ---------------------------------------------------------------------------------------- */

struct xcall {
    struct exchange *x;
    struct xcall *prev, *next; /* every call in flight (exchange_free frees what is left) */
    struct httpc_call *call;
    char key_id[MAUTH_KEY_ID_LEN + 1];
    char nonce[40];
    char secret[MAUTH_SECRET_MAX];
    size_t secret_len;
    exchange_cb cb;
    void *arg;
};

enum job_kind { JOB_TRANSFER, JOB_RECON };

struct job {
    struct exchange *x;
    struct job *prev, *next;
    enum job_kind kind;
    struct xcall *call; /* the call in flight; NULL once the report went to PostgreSQL */
    int64_t id;         /* transfer row id, or partner id */
    int attempt;
    bool query;
    char transfer_id[80];
    char day[16];
};

struct exchange {
    struct app *app;
    struct httpc *http;
    struct xcall *calls;
    struct job *head;
    int inflight;
    bool stopping;
    void (*idle)(void *);
    void *idle_arg;
};

static void xcall_free(struct xcall *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else if (c->x->calls == c)
        c->x->calls = c->next;
    if (c->next)
        c->next->prev = c->prev;
    mcrypto_wipe(c->secret, sizeof c->secret);
    free(c);
}

/* The reply of a call: verified only with a good GP-Signature over status and body. */
static void sent_cb(const struct httpc_response *r, void *arg)
{
    struct xcall *c = arg;
    const struct config *cfg = c->x->app->cfg;
    struct exchange_reply rep = {.error = r->error};
    json_t *body = NULL;
    if (r->outcome == HTTPC_RESPONSE) {
        rep.status = r->status;
        if (mauth_reply_verify(c->secret, c->secret_len, c->key_id, c->nonce, r->status, r->header,
                               common_wall_ms() / 1000, cfg->exchange_signature_window_s, r->body,
                               r->body_len)) {
            rep.verified = true;
            body = json_loadb(r->body, r->body_len, 0, NULL);
            rep.body = body;
            rep.error = "";
        } else {
            rep.error = r->header ? "bad reply signature" : "unsigned reply";
        }
    }
    c->call = NULL;
    exchange_cb cb = c->cb;
    void *cb_arg = c->arg;
    xcall_free(c);
    cb(&rep, cb_arg);
    json_decref(body);
}

static struct xcall *start_call(struct exchange *x, json_t *info, const char *method,
                                const char *path, const char *body, const char *label,
                                exchange_cb cb, void *arg)
{
    const struct config *cfg = x->app->cfg;
    const char *base = json_string_value(json_object_get(info, "base_url"));
    const char *key_id = json_string_value(json_object_get(info, "key_id"));
    const char *sealed = json_string_value(json_object_get(info, "secret_ct"));
    if (!base || !key_id || !sealed || strlen(key_id) != MAUTH_KEY_ID_LEN)
        return NULL;
    struct xcall *c = xcalloc(1, sizeof *c);
    c->x = x;
    c->cb = cb;
    c->arg = arg;
    snprintf(c->key_id, sizeof c->key_id, "%s", key_id);
    unsigned char kek[32];
    bool opened = mcrypto_parse_kek(cfg->merchant_key_encryption_key, kek) &&
                  mcrypto_open(kek, key_id, sealed, c->secret, sizeof c->secret, &c->secret_len);
    mcrypto_wipe(kek, sizeof kek);
    if (!opened || !crypto_random_hex(c->nonce, 16)) {
        log_error("%s: cannot open the partner key %s (wrong key_encryption_key?)", label, key_id);
        xcall_free(c);
        return NULL;
    }
    /* The signed URI is the path as sent: the base URL's own path (if any) and ours. */
    const char *host = strstr(base, "://");
    const char *prefix = host ? strchr(host + 3, '/') : NULL;
    size_t blen = strlen(base);
    while (blen && base[blen - 1] == '/')
        blen--;
    size_t plen = prefix ? (size_t)(base + blen - prefix) : 0;
    if (prefix && prefix > base + blen)
        plen = 0;
    char *url = xmalloc(blen + strlen(path) + 1);
    memcpy(url, base, blen);
    strcpy(url + blen, path);
    char *uri = xmalloc(plen + strlen(path) + 1);
    if (plen)
        memcpy(uri, prefix, plen);
    strcpy(uri + plen, path);
    size_t body_len = body ? strlen(body) : 0;
    char auth[256];
    mauth_authorization(c->secret, c->secret_len, c->key_id, method, uri, common_wall_ms() / 1000,
                        c->nonce, body, body_len, auth, sizeof auth);
    const char *headers[] = {"Content-Type",
                             "application/json; charset=utf-8",
                             "User-Agent",
                             "gridpoints-exchange/1",
                             "Authorization",
                             auth,
                             NULL};
    struct httpc_request req = {
        .method = method,
        .url = url,
        .headers = headers,
        .body = body,
        .body_len = body_len,
        .timeout_ms = cfg->exchange_timeout_s * 1000,
        .max_response = 4 << 20,
        .policy = cfg->exchange_allow_private ? HTTPC_PRIVATE_ALSO : HTTPC_PUBLIC_ONLY,
        .log_label = label,
        .want_header = "GP-Signature",
    };
    c->next = x->calls;
    if (x->calls)
        x->calls->prev = c;
    x->calls = c;
    c->call = httpc_send(x->http, &req, sent_cb, c);
    free(url);
    free(uri);
    return c;
}

bool exchange_call(struct exchange *x, json_t *info, const char *method, const char *path,
                   const char *body, const char *label, exchange_cb cb, void *arg)
{
    return x && start_call(x, info, method, path, body, label, cb, arg) != NULL;
}

/* ---------------------------------------------------------------------------------------- */
/* Timer jobs                                                                                */
/* ---------------------------------------------------------------------------------------- */

static void maybe_idle(struct exchange *x)
{
    if (x->stopping && x->idle && x->inflight == 0) {
        void (*idle)(void *) = x->idle;
        x->idle = NULL;
        idle(x->idle_arg);
    }
}

static void job_finish(struct job *j)
{
    struct exchange *x = j->x;
    if (j->prev)
        j->prev->next = j->next;
    else
        x->head = j->next;
    if (j->next)
        j->next->prev = j->prev;
    if (j->call) {
        httpc_cancel(j->call->call); /* its callback will not run */
        xcall_free(j->call);
    }
    free(j);
    x->inflight--;
    maybe_idle(x);
}

static struct job *job_new(struct exchange *x, enum job_kind kind)
{
    struct job *j = xcalloc(1, sizeof *j);
    j->x = x;
    j->kind = kind;
    j->next = x->head;
    if (x->head)
        x->head->prev = j;
    x->head = j;
    x->inflight++;
    return j;
}

static void transfer_reported(struct db_result *res, void *arg)
{
    struct job *j = arg;
    if (db_result_status(res) != ST_OK) {
        log_warn("exchange transfer %s: cannot record the attempt: %s", j->transfer_id,
                 db_result_log_detail(res));
    } else if (db_result_ntuples(res) == 1) {
        effects_apply_text(j->x->app, db_result_value(res, 0, 1));
        json_t *b = db_result_json(res);
        const char *st = json_string_value(json_object_get(b, "state"));
        if (st && strcmp(st, "pending") != 0) {
            log_info("exchange transfer %s: %s", j->transfer_id, st);
            metrics_count(j->x->app->metrics,
                          !strcmp(st, "completed") ? "exchange_transfers_completed"
                                                   : "exchange_transfers_rejected",
                          1);
        }
        json_decref(b);
    }
    job_finish(j);
}

static void transfer_report(struct job *j, const char *state, const char *reason, const char *error)
{
    const struct config *cfg = j->x->app->cfg;
    char id[24], attempt[16], backoff[16], backoff_max[16];
    snprintf(id, sizeof id, "%lld", (long long)j->id);
    snprintf(attempt, sizeof attempt, "%d", j->attempt);
    snprintf(backoff, sizeof backoff, "%d", cfg->exchange_backoff_s);
    snprintf(backoff_max, sizeof backoff_max, "%d", cfg->exchange_backoff_max_s);
    if (!state)
        log_info("exchange transfer %s %s %d: no answer (%s): stays pending", j->transfer_id,
                 j->query ? "status query" : "attempt", j->attempt, error);
    const char *params[] = {id, attempt, state, reason, state ? NULL : error, backoff, backoff_max};
    db_query(j->x->app->db,
             "SELECT body, effects FROM gp_xchg_out_result($1, $2, $3, $4, $5, $6, $7)", 7, params,
             transfer_reported, j);
}

static void transfer_answered(const struct exchange_reply *r, void *arg)
{
    struct job *j = arg;
    j->call = NULL;
    if (!r->verified) {
        transfer_report(j, NULL, NULL, r->error);
        return;
    }
    const char *tid = json_string_value(json_object_get(r->body, "transfer_id"));
    const char *state = json_string_value(json_object_get(r->body, "state"));
    const char *reason = json_string_value(json_object_get(r->body, "reason"));
    if (r->status == 200 && tid && !strcmp(tid, j->transfer_id) && state &&
        (!strcmp(state, "accepted") || !strcmp(state, "rejected"))) {
        char rbuf[64];
        snprintf(rbuf, sizeof rbuf, "%s", reason ? reason : "");
        transfer_report(j, state, reason ? rbuf : NULL, NULL);
        return;
    }
    char why[120];
    const char *code =
        json_string_value(json_object_get(json_object_get(r->body, "error"), "code"));
    snprintf(why, sizeof why, "status %d%s%s", r->status, code ? " " : "", code ? code : "");
    if (r->status >= 400 && r->status < 500)
        log_warn("exchange transfer %s: the partner refused the call: %s", j->transfer_id, why);
    transfer_report(j, NULL, NULL, why);
}

int exchange_transfers_run(struct exchange *x, json_t *claimed)
{
    if (!x || x->stopping)
        return 0;
    size_t i;
    json_t *item;
    int n = 0;
    json_array_foreach(json_object_get(claimed, "items"), i, item)
    {
        json_t *id = json_object_get(item, "id"), *attempt = json_object_get(item, "attempt");
        const char *tid = json_string_value(json_object_get(item, "transfer_id"));
        const char *action = json_string_value(json_object_get(item, "action"));
        const char *body = json_string_value(json_object_get(item, "body"));
        if (!json_is_integer(id) || !json_is_integer(attempt) || !tid || !action || !body) {
            log_warn("exchange sweep: malformed item skipped");
            continue;
        }
        struct job *j = job_new(x, JOB_TRANSFER);
        j->id = json_integer_value(id);
        j->attempt = (int)json_integer_value(attempt);
        j->query = !strcmp(action, "query");
        snprintf(j->transfer_id, sizeof j->transfer_id, "%s", tid);
        char path[160], label[160];
        if (j->query)
            snprintf(path, sizeof path, "/exchange/v1/transfers/%s/status", tid);
        else
            snprintf(path, sizeof path, "/exchange/v1/transfers");
        snprintf(label, sizeof label, "exchange transfer %s %s %d", tid,
                 j->query ? "status query" : "attempt", j->attempt);
        j->call = start_call(x, item, "POST", path, body, label, transfer_answered, j);
        if (!j->call)
            transfer_report(j, NULL, NULL, "cannot sign the request");
        n++;
    }
    return n;
}

static void recon_reported(struct db_result *res, void *arg)
{
    struct job *j = arg;
    if (db_result_status(res) != ST_OK) {
        log_warn("exchange reconciliation of partner %lld day %s failed: %s", (long long)j->id,
                 j->day, db_result_log_detail(res));
    } else {
        json_t *b = db_result_json(res);
        json_int_t n = json_array_size(json_object_get(b, "mismatches"));
        const char *err = json_string_value(json_object_get(b, "error"));
        if (err)
            log_warn("exchange reconciliation of partner %lld day %s: %s", (long long)j->id, j->day,
                     err);
        else if (n)
            log_warn("exchange reconciliation of partner %lld day %s: %lld mismatches",
                     (long long)j->id, j->day, (long long)n);
        else
            log_info("exchange reconciliation of partner %lld day %s: clean", (long long)j->id,
                     j->day);
        json_decref(b);
    }
    job_finish(j);
}

static void recon_answered(const struct exchange_reply *r, void *arg)
{
    struct job *j = arg;
    j->call = NULL;
    json_t *transfers =
        r->verified && r->status == 200 ? json_object_get(r->body, "transfers") : NULL;
    char pid[24], why[120];
    snprintf(pid, sizeof pid, "%lld", (long long)j->id);
    if (!json_is_array(transfers))
        snprintf(why, sizeof why, "statement not fetched: %s",
                 r->verified ? "unexpected reply" : r->error);
    char *text = json_is_array(transfers) ? json_dumps(transfers, JSON_COMPACT) : NULL;
    const char *params[] = {pid, j->day, text, text ? NULL : why};
    db_query(j->x->app->db, "SELECT gp_xchg_recon_done($1, $2::date, $3::jsonb, $4)", 4, params,
             recon_reported, j);
    free(text);
}

int exchange_recon_run(struct exchange *x, json_t *claimed)
{
    if (!x || x->stopping)
        return 0;
    size_t i;
    json_t *item;
    int n = 0;
    json_array_foreach(json_object_get(claimed, "items"), i, item)
    {
        json_t *pid = json_object_get(item, "partner_id");
        const char *day = json_string_value(json_object_get(item, "day"));
        if (!json_is_integer(pid) || !day || strlen(day) != 10)
            continue;
        struct job *j = job_new(x, JOB_RECON);
        j->id = json_integer_value(pid);
        snprintf(j->day, sizeof j->day, "%s", day);
        char path[80], label[80];
        snprintf(path, sizeof path, "/exchange/v1/statements/%s", day);
        snprintf(label, sizeof label, "exchange statement %s of partner %lld", day,
                 (long long)j->id);
        j->call = start_call(x, item, "GET", path, NULL, label, recon_answered, j);
        if (!j->call) {
            struct exchange_reply r = {.error = "cannot sign the request"};
            recon_answered(&r, j);
        }
        n++;
    }
    return n;
}

int exchange_inflight(const struct exchange *x)
{
    return x ? x->inflight : 0;
}

struct exchange *exchange_new(struct app *app)
{
    const struct config *cfg = app->cfg;
    struct httpc_config hc = {
        .ca_file = cfg->exchange_ca_file,
        .hosts_file = cfg->exchange_hosts_file,
        .ca_key = "exchange.ca_file",
        .hosts_key = "exchange.hosts_file",
    };
    struct httpc *http = httpc_new(app->base, &hc);
    if (!http)
        return NULL;
    struct exchange *x = xcalloc(1, sizeof *x);
    x->app = app;
    x->http = http;
    return x;
}

void exchange_stop(struct exchange *x, void (*idle)(void *arg), void *arg)
{
    x->stopping = true;
    x->idle = idle;
    x->idle_arg = arg;
    struct job *j = x->head, *next;
    for (; j; j = next) {
        next = j->next;
        if (j->call)
            job_finish(j); /* the row stays leased and is tried again after the lease */
    }
    maybe_idle(x);
}

void exchange_free(struct exchange *x)
{
    if (!x)
        return;
    x->idle = NULL;
    while (x->head)
        job_finish(x->head);
    /* Calls of handlers still in flight (a forced shutdown): their requests are gone. */
    while (x->calls) {
        httpc_cancel(x->calls->call);
        xcall_free(x->calls);
    }
    httpc_free(x->http);
    free(x);
}
