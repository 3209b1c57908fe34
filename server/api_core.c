/* api_core.c -- health, readiness, metrics, login, logout and /me. */
#include "api.h"
#include "app.h"
#include "arena.h"
#include "auth.h"
#include "config.h"
#include "crypto.h"
#include "db.h"
#include "effects.h"
#include "http.h"
#include "http_server.h"
#include "kv.h"
#include "log.h"
#include "login_throttle.h"
#include "merchant_auth.h"
#include "metrics.h"
#include "ratelimit.h"
#include "workpool.h"

#include <event2/buffer.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---------------------------------------------------------------------------------------- */
/* Shared helpers                                                                            */
/* ---------------------------------------------------------------------------------------- */

/* The state of api_run (rc->state until the reply). */
struct run_state {
    int code;
    unsigned post;
    /* A read on the replica that failed before reaching SQL is run once more on the primary. */
    const char *sql;
    int nparams;
    const char **params;
    const char *secret_name;
    const char *secret; /* api_secret_buf: wiped and freed with the arena */
};

static void wipe_free(void *p)
{
    explicit_bzero(p, strlen(p));
    free(p);
}

char *api_secret_buf(struct req_ctx *rc, size_t size)
{
    char *s = xcalloc(1, size);
    arena_on_free(rc->arena, wipe_free, s);
    return s;
}

static void run_cb(struct db_result *res, void *arg)
{
    struct req_ctx *rc = arg;
    struct run_state *rs = rc->state;
    if (rc->db != rc->app->db && db_result_status(res) == ST_UNAVAILABLE &&
        !*db_result_sqlstate(res)) {
        rlog(rc, LOG_LEVEL_WARN, "the read replica failed this read (%s): reading the primary",
             db_result_log_detail(res));
        rc->db = rc->app->db;
        db_query(rc->db, rs->sql, rs->nparams, rs->params, run_cb, rc);
        return;
    }
    /* A write answers SELECT body, effects (gp_reply): the effects column is applied after the
     * commit and is the only part read here; the body goes out as the database wrote it. */
    if ((rs->post & API_EFFECTS) && db_result_status(res) == ST_OK)
        effects_apply_text(rc->app, db_result_value(res, 0, 1));
    json_t *j = rs->secret_name ? db_result_json(res) : NULL;
    if (!j) {
        http_reply_db(rc, res, rs->code);
        return;
    }
    /* A replayed idempotent write answers what it answered the first time, which never held
     * the secret: it is shown once. */
    if (!json_is_true(json_object_get(j, "idempotent_replay")))
        json_object_set_new(j, rs->secret_name, json_string(rs->secret));
    http_reply_json(rc, rs->code, j);
}

void api_run(struct req_ctx *rc, const char *sql, int nparams, const char *const *params,
             int success_code, unsigned post)
{
    api_run_secret(rc, sql, nparams, params, success_code, post, NULL, NULL);
}

void api_run_secret(struct req_ctx *rc, const char *sql, int nparams, const char *const *params,
                    int success_code, unsigned post, const char *name, const char *secret)
{
    struct run_state *rs = arena_alloc(rc->arena, sizeof *rs);
    rs->code = success_code;
    rs->post = post;
    rs->secret_name = name;
    rs->secret = secret;
    rs->sql = sql;
    if (rc->db != rc->app->db) { /* kept for the retry on the primary */
        rs->nparams = nparams;
        rs->params = arena_alloc(rc->arena, sizeof *rs->params * (size_t)(nparams + 1));
        for (int i = 0; i < nparams; i++)
            rs->params[i] = params[i] ? arena_strdup(rc->arena, params[i]) : NULL;
    }
    rc->state = rs;
    db_query(rc->db, sql, nparams, params, run_cb, rc);
}

json_t *api_result_json_or_reply(struct req_ctx *rc, struct db_result *res, int success_code)
{
    json_t *j = db_result_json(res);
    if (j)
        return j;
    if (db_result_status(res) != ST_OK || !db_result_value(res, 0, 0))
        http_reply_db(rc, res, success_code); /* the error, or 404 for no row */
    else
        http_reply_error(rc, ST_INTERNAL, NULL, NULL, "cannot read the database's reply");
    return NULL;
}

void api_query(struct req_ctx *rc, const char *sql, int nparams, const char *const *params,
               int success_code)
{
    api_run(rc, sql, nparams, params, success_code, 0);
}

void api_write(struct req_ctx *rc, const char *sql, int nparams, const char *const *params,
               int success_code)
{
    api_run(rc, sql, nparams, params, success_code, API_EFFECTS);
}

const char *api_json_text(struct req_ctx *rc, json_t *j)
{
    /* The request's own body, as parsed: its bytes are that JSON already (read_body NUL-ends
     * them; jv_parse refused duplicate keys, NULs, bad escapes and out-of-range numbers, so
     * PostgreSQL reads the same document), and a write's body is not serialized a second time.
     * Handlers never modify rc->json in place (they copy it first). */
    if (j == rc->json && rc->body_len > 0 && rc->body)
        return rc->body;
    /* An invariant, not input checking: j is the parsed body or built from it and from query
     * values, and request_cb has refused bodies and queries that are not UTF-8, so every string
     * in j is valid and json_dumps cannot fail. */
    char *s = json_dumps(j, JSON_COMPACT);
    ASSERT(s != NULL);
    const char *out = arena_strdup(rc->arena, s);
    free(s);
    return out;
}

const char *api_actor(struct req_ctx *rc)
{
    return api_i64(rc, rc->principal.person_id);
}

void api_idem_params(struct req_ctx *rc, const char **principal, const char **key,
                     const char **hash)
{
    char *h = arena_alloc(rc->arena, 65);
    http_request_hash(rc, h);
    *principal = http_idem_principal(rc);
    *key = rc->idem_key;
    *hash = h;
}

const char *api_i64(struct req_ctx *rc, int64_t v)
{
    return arena_printf(rc->arena, "%lld", (long long)v);
}

static json_t *query_value(const char *v, enum api_qtype type)
{
    int64_t iv;
    double dv;
    char *end;
    switch (type) {
    case API_Q_STR:
        return jv_utf8_len(v) <= 200 ? json_string(v) : NULL;
    case API_Q_INT:
        return jv_parse_i64(v, 1, INT64_MAX, &iv) ? json_integer(iv) : NULL;
    case API_Q_NUM:
        dv = strtod(v, &end);
        return *v && !*end && dv == dv ? json_real(dv) : NULL;
    case API_Q_BOOL:
        return !strcmp(v, "true") || !strcmp(v, "false") ? json_boolean(!strcmp(v, "true")) : NULL;
    }
    return NULL;
}

const char *api_query_args_or_reply(struct req_ctx *rc, const struct api_qspec *specs, size_t n)
{
    struct api_page page;
    if (!api_page_or_reply(rc, API_CURSOR_KEY, &page))
        return NULL;
    json_t *args = json_pack("{s:i}", "limit", page.limit);
    if (page.cursor)
        json_object_set_new(args, "cursor", json_string(page.cursor));
    for (size_t i = 0; i < n; i++) {
        const char *v = http_query(rc, specs[i].name);
        if (!v)
            continue;
        json_t *jv = query_value(v, specs[i].type);
        if (!jv) {
            json_decref(args);
            http_reply_error(rc, ST_INVALID, "invalid_query", specs[i].name,
                             "query parameter %s has an invalid value", specs[i].name);
            return NULL;
        }
        json_object_set_new(args, specs[i].name, jv);
    }
    const char *text = api_json_text(rc, args);
    json_decref(args);
    return text;
}

bool api_page_sized_or_reply(struct req_ctx *rc, enum api_cursor kind, int default_limit,
                             int max_limit, struct api_page *page)
{
    int64_t limit = default_limit, id;
    page->cursor = NULL;
    if (!http_query_i64_or_reply(rc, "limit", 1, max_limit, &limit))
        return false;
    page->limit = (int)limit;
    const char *c = http_query(rc, "cursor");
    if (!c)
        return true;
    bool ok = kind == API_CURSOR_ID ? jv_parse_i64(c, 1, INT64_MAX, &id)
                                    : jv_utf8_len(c) <= API_CURSOR_KEY_MAX;
    if (!ok) {
        http_reply_error(rc, ST_INVALID, "invalid_cursor", "cursor", "malformed cursor");
        return false;
    }
    page->cursor = c;
    return true;
}

bool api_page_or_reply(struct req_ctx *rc, enum api_cursor kind, struct api_page *page)
{
    const struct config *cfg = rc->app->cfg;
    return api_page_sized_or_reply(rc, kind, cfg->page_size_default, cfg->page_size_max, page);
}

/* ---------------------------------------------------------------------------------------- */
/* Health                                                                                    */
/* ---------------------------------------------------------------------------------------- */

void api_healthz(struct req_ctx *rc)
{
    static const char ok[] = "{\"status\":\"ok\"}";
    http_reply_json_text(rc, 200, ok, sizeof ok - 1);
}

struct ready_state {
    int pending;
    bool db_ok, kv_ok;
};

static void ready_finish(struct req_ctx *rc)
{
    struct ready_state *rs = rc->state;
    if (--rs->pending > 0)
        return;
    bool ok = rs->db_ok && rs->kv_ok;
    json_t *body =
        json_pack("{s:s, s:{s:s, s:s}}", "status", ok ? "ok" : "unavailable", "checks", "postgres",
                  rs->db_ok ? "ok" : "down", "redis", rs->kv_ok ? "ok" : "down");
    if (!ok)
        http_set_header(rc, "Retry-After", "1");
    http_reply_json(rc, ok ? 200 : 503, body);
}

static void ready_db_cb(struct db_result *res, void *arg)
{
    struct req_ctx *rc = arg;
    ((struct ready_state *)rc->state)->db_ok = db_result_status(res) == ST_OK;
    ready_finish(rc);
}

static void ready_kv_cb(struct redisReply *reply, enum status st, void *arg)
{
    struct req_ctx *rc = arg;
    ((struct ready_state *)rc->state)->kv_ok = st == ST_OK;
    ready_finish(rc);
}

void api_readyz(struct req_ctx *rc)
{
    if (rc->app->stopping) { /* draining (server.drain_delay): the balancer takes us out */
        http_set_header(rc, "Retry-After", "1");
        static const char draining[] = "{\"status\":\"draining\"}";
        http_reply_json_text(rc, 503, draining, sizeof draining - 1);
        return;
    }
    if (!rc->app->started) { /* the start-up checks (app.h) have not passed yet */
        http_set_header(rc, "Retry-After", "1");
        static const char starting[] = "{\"status\":\"starting\"}";
        http_reply_json_text(rc, 503, starting, sizeof starting - 1);
        return;
    }
    struct ready_state *rs = arena_alloc(rc->arena, sizeof *rs);
    rs->pending = 2;
    rc->state = rs;
    db_query(rc->app->db, "SELECT 1", 0, NULL, ready_db_cb, rc);
    const char *argv[] = {"PING"};
    kv_command(rc->app->kv, ready_kv_cb, rc, 1, argv, NULL);
}

/* Who may read /metrics (docs/OPERATIONS.md, "Access to /metrics"):
 *  - with server.metrics_listen set, only requests on that listener (404 elsewhere, as if
 *    the route did not exist);
 *  - with server.metrics_token set, only requests with "Authorization: Bearer <token>"
 *    (401 otherwise), on whichever listener serves it;
 *  - with neither, requests on a listener bound to loopback, unless server.trust_proxy says a
 *    proxy forwards outside traffic to it (403 otherwise). */
static bool metrics_allowed_or_reply(struct req_ctx *rc)
{
    const struct config *cfg = rc->app->cfg;
    bool on_metrics_listener = rc->origin.metrics_only, on_loopback = rc->origin.loopback;
    if (*cfg->metrics_listen && !on_metrics_listener) {
        http_reply_error(rc, ST_NOT_FOUND, "route_not_found", NULL, "no such route");
        return false;
    }
    if (*cfg->metrics_token) {
        const char *h = http_header(rc, "Authorization");
        if (!h || strncasecmp(h, "Bearer ", 7) != 0) {
            http_set_header(rc, "WWW-Authenticate", "Bearer realm=\"metrics\"");
            http_reply_error(rc, ST_UNAUTHORIZED, "missing_token", "Authorization",
                             "/metrics needs Authorization: Bearer <server.metrics_token>");
            return false;
        }
        /* Digests of equal length: the comparison reveals neither content nor length. */
        unsigned char want[32], got[32];
        crypto_sha256(cfg->metrics_token, strlen(cfg->metrics_token), want);
        crypto_sha256(h + 7, strlen(h + 7), got);
        if (!crypto_equal(want, got, sizeof want)) {
            http_set_header(rc, "WWW-Authenticate",
                            "Bearer realm=\"metrics\", error=\"invalid_token\"");
            http_reply_error(rc, ST_UNAUTHORIZED, "invalid_token", "Authorization",
                             "wrong metrics token");
            return false;
        }
        return true;
    }
    if (on_metrics_listener || (on_loopback && !cfg->trust_proxy))
        return true;
    http_reply_error(rc, ST_FORBIDDEN, "metrics_forbidden", NULL,
                     "/metrics is served here only with server.metrics_token; or set "
                     "server.metrics_listen");
    return false;
}

static void metrics_check(struct req_ctx *rc, route_handler next)
{
    if (metrics_allowed_or_reply(rc))
        next(rc);
}

/* Before the body: a refusal here comes before any complaint about the request itself. */
const struct route_guard api_guard_metrics = {"metrics", metrics_check, true};

void api_metrics(struct req_ctx *rc)
{
    struct app *app = rc->app;
    struct evbuffer *b = evbuffer_new();
    metrics_render(app->metrics, b);
    http_server_render_metrics(rc->server, b);
    struct db_pool_stats ds;
    db_pool_get_stats(app->db, &ds);
    struct kv_stats ks;
    kv_get_stats(app->kv, &ks);
    unsigned long long sess_misses, sess_lookups;
    auth_sessions_stats(app->sessions, &sess_misses, &sess_lookups);
    /* HELP and TYPE on each (promtool check metrics runs over this in tests/api). */
    const struct {
        const char *name, *type, *help;
        unsigned long long value;
    } rows[] = {
        {"db_pool_size", "gauge", "PostgreSQL connections the pool may open.", ds.size},
        {"db_pool_connected", "gauge", "PostgreSQL connections open now.", ds.connected},
        {"db_pool_in_use", "gauge", "PostgreSQL connections running a query now.", ds.in_use},
        {"db_pool_waiting", "gauge", "Queries waiting for a free connection.", ds.waiting},
        {"db_queries_total", "counter", "Queries sent to PostgreSQL.", ds.queries},
        {"db_errors_total", "counter", "Queries that failed (any error).", ds.errors},
        {"db_retries_total", "counter", "Queries run again after a serialization failure.",
         ds.retries},
        {"db_timeouts_total", "counter",
         "Queries that timed out: waiting for a connection or by the statement timeout.",
         ds.timeouts},
        {"db_rejected_total", "counter",
         "Queries refused at once: wait queue full or PostgreSQL known to be down.", ds.rejected},
        {"session_misses_total", "counter",
         "Requests whose session was not in Redis (looked up in PostgreSQL).", sess_misses},
        {"session_lookups_total", "counter",
         "Queries that looked up missed sessions (several misses per query when they coincide).",
         sess_lookups},
        {"redis_up", "gauge", "1 while the Redis connection is up, else 0.", ks.up ? 1 : 0},
        {"redis_pending", "gauge", "Redis commands sent and not answered yet.", ks.pending},
        {"redis_commands_total", "counter", "Commands sent to Redis.", ks.commands},
        {"redis_errors_total", "counter", "Redis commands that failed.", ks.errors},
        {"redis_timeouts_total", "counter", "Redis commands that timed out.", ks.timeouts},
        {"redis_reconnects_total", "counter", "Reconnections to Redis.", ks.reconnects},
        {"workpool_pending", "gauge",
         "Jobs queued for the worker threads (password hashing, file writes).",
         workpool_pending(app->wp)},
    };
    for (size_t i = 0; i < ARRAY_SIZE(rows); i++)
        evbuffer_add_printf(
            b, "# HELP gridpoints_%s %s\n# TYPE gridpoints_%s %s\ngridpoints_%s %llu\n",
            rows[i].name, rows[i].help, rows[i].name, rows[i].type, rows[i].name, rows[i].value);
    size_t len = evbuffer_get_length(b);
    char *text = arena_alloc(rc->arena, len + 1);
    evbuffer_remove(b, text, len);
    evbuffer_free(b);
    http_reply_raw(rc, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
}

/* ---------------------------------------------------------------------------------------- */
/* Login: throttle -> look up the phone -> verify the password off the loop -> session.       */
/* ---------------------------------------------------------------------------------------- */

/* The throttle (include/login_throttle.h) runs before the lookup and answers alike for phones
 * that exist and phones that do not, so its 429s tell nobody which numbers are registered. */
enum login_step { LOGIN_THROTTLE, LOGIN_LOOKUP, LOGIN_VERIFY, LOGIN_SESSION };

struct login_state {
    enum login_step step;
    const char *phone;
    const char *device_token; /* as presented (points into the request's JSON), or NULL */
    char device_hash[65];     /* hex SHA-256 of device_token */
    bool known_device;        /* the throttle recognised device_token for this phone */
    char *password;    /* heap copy the worker thread reads; wiped and freed with the arena */
    char *stored_hash; /* heap copy for the worker thread; freed with the arena */
    int64_t person_id;
    bool verified;
    char token[CRYPTO_TOKEN_LEN + 1];
    char new_device[CRYPTO_TOKEN_LEN + 1]; /* a device token issued by this login, or "" */
    char hash_param[70];
};

/* A hash of a password nobody knows, verified when the phone is unknown so that an unknown
 * phone costs the same time as a wrong password. Its iteration count follows the config. */
static const char *dummy_hash(struct req_ctx *rc)
{
    return arena_printf(rc->arena,
                        "pbkdf2-sha256$%d$AAAAAAAAAAAAAAAAAAAAAA==$"
                        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
                        rc->app->cfg->pbkdf2_iterations);
}

static void login_step(struct req_ctx *rc);

static void login_throttle_req_of(struct req_ctx *rc, struct login_throttle_req *r)
{
    struct login_state *ls = rc->state;
    r->phone = ls->phone;
    r->addr = rc->addr;
    r->device_hash = ls->device_token ? ls->device_hash : NULL;
}

static void login_throttle_done(enum login_throttle_verdict v, int retry_after_s, bool known_device,
                                void *arg)
{
    struct req_ctx *rc = arg;
    struct login_state *ls = rc->state;
    switch (v) {
    case LOGIN_THROTTLE_ALLOW:
        /* Also when Redis is down: login throttling fails open (see login_throttle.h). */
        ls->known_device = known_device;
        ls->step = LOGIN_LOOKUP;
        login_step(rc);
        return;
    case LOGIN_THROTTLE_SLOW:
        rlog_info(rc, "login slowed down for a phone");
        http_reply_error_retry(rc, ST_RATE_LIMITED, "login_delayed", retry_after_s,
                               "too many failed logins for this phone; try again after "
                               "Retry-After seconds");
        return;
    case LOGIN_THROTTLE_PAIR:
    case LOGIN_THROTTLE_ADDR:
        rlog_info(rc, "login refused: too many failures (%s)",
                  v == LOGIN_THROTTLE_PAIR ? "phone and client" : "client address");
        http_reply_error_retry(rc, ST_RATE_LIMITED, "too_many_attempts", retry_after_s,
                               "too many login attempts; try again later");
        return;
    }
}

static void login_lookup_cb(struct db_result *res, void *arg)
{
    struct req_ctx *rc = arg;
    struct login_state *ls = rc->state;
    if (db_result_status(res) != ST_OK) {
        http_reply_db(rc, res, 200);
        return;
    }
    const char *stored = dummy_hash(rc);
    if (db_result_ntuples(res) == 1 && !strcmp(db_result_value(res, 0, 2), "active")) {
        jv_parse_i64(db_result_value(res, 0, 0), 1, INT64_MAX, &ls->person_id);
        stored = db_result_value(res, 0, 1);
    }
    ls->stored_hash = xstrdup(stored);
    arena_on_free(rc->arena, free, ls->stored_hash);
    ls->step = LOGIN_VERIFY;
    login_step(rc);
}

static void verify_work(void *arg)
{
    struct login_state *ls = ((struct req_ctx *)arg)->state;
    ls->verified = crypto_password_verify(ls->password, ls->stored_hash);
}

/* A correct password: take the attempt back from the throttle and remember the device -- the
 * one presented when the throttle knew it (its expiry starts again), else a new one. */
static void login_succeeded(struct req_ctx *rc)
{
    struct login_state *ls = rc->state;
    struct login_throttle_req r;
    login_throttle_req_of(rc, &r);
    const char *remember = NULL;
    char new_hash[65];
    if (ls->known_device) {
        remember = ls->device_hash;
    } else if (crypto_token(ls->new_device)) {
        unsigned char d[32];
        crypto_sha256(ls->new_device, CRYPTO_TOKEN_LEN, d);
        crypto_hex(d, 32, new_hash);
        remember = new_hash;
    } else {
        ls->new_device[0] = '\0'; /* no randomness: log in without a device token */
    }
    login_throttle_success(rc->app->login, &r, ls->known_device, remember, ls->person_id);
}

static void verify_done(void *arg, bool cancelled)
{
    struct req_ctx *rc = arg;
    struct login_state *ls = rc->state;
    if (cancelled) {
        http_reply_error_retry(rc, ST_UNAVAILABLE, "shutting_down", 1, "server is shutting down");
        return;
    }
    if (!ls->verified || ls->person_id == 0) {
        rlog_info(rc, "login failed for a phone");
        http_reply_error(rc, ST_UNAUTHORIZED, "invalid_credentials", NULL,
                         "wrong phone or password");
        return;
    }
    login_succeeded(rc);
    ls->step = LOGIN_SESSION;
    login_step(rc);
}

json_t *api_session_body(const char *token, json_t *principal)
{
    json_t *body =
        json_pack("{s:s, s:s, s:O?, s:O}", "token", token, "token_type", "Bearer", "expires_at",
                  json_object_get(principal, "expires_at"), "person", principal);
    ASSERT(body != NULL); /* token is base64url, principal an object */
    return body;
}

static void login_session_cb(struct db_result *res, void *arg)
{
    struct req_ctx *rc = arg;
    struct login_state *ls = rc->state;
    json_t *principal = api_result_json_or_reply(rc, res, 200);
    if (!principal)
        return;
    json_t *body = api_session_body(ls->token, principal);
    json_decref(principal);
    /* The presented token when it is known (it passed jv_str, so it is valid UTF-8). */
    const char *device = ls->known_device ? ls->device_token : ls->new_device;
    if (device && *device)
        json_object_set_new(body, "device_token", json_string(device));
    rlog_info(rc, "login ok person=%lld known_device=%d", (long long)ls->person_id,
              ls->known_device ? 1 : 0);
    http_reply_json(rc, 200, body);
}

static void login_step(struct req_ctx *rc)
{
    struct login_state *ls = rc->state;
    const struct config *cfg = rc->app->cfg;
    switch (ls->step) {
    case LOGIN_THROTTLE: {
        struct login_throttle_req r;
        login_throttle_req_of(rc, &r);
        login_throttle_check(rc->app->login, &r, login_throttle_done, rc);
        return;
    }
    case LOGIN_LOOKUP: {
        const char *params[] = {ls->phone};
        db_query(rc->app->db, "SELECT * FROM gp_login_lookup($1)", 1, params, login_lookup_cb, rc);
        return;
    }
    case LOGIN_VERIFY:
        workpool_submit(rc->app->wp, verify_work, verify_done, rc);
        return;
    case LOGIN_SESSION: {
        unsigned char d[32];
        char hex[65];
        if (!crypto_token(ls->token)) {
            http_reply_error(rc, ST_INTERNAL, NULL, NULL, "cannot create a session token");
            return;
        }
        crypto_sha256(ls->token, CRYPTO_TOKEN_LEN, d);
        crypto_hex(d, 32, hex);
        snprintf(ls->hash_param, sizeof ls->hash_param, "\\x%s", hex);
        const char *params[] = {ls->hash_param, api_i64(rc, ls->person_id),
                                api_i64(rc, cfg->session_ttl_s), rc->addr};
        db_query(rc->app->db, "SELECT gp_session_create($1::bytea, $2, $3, $4)", 4, params,
                 login_session_cb, rc);
        return;
    }
    }
}

void api_login(struct req_ctx *rc)
{
    static const char *const fields[] = {"phone", "password", "device_token", NULL};
    if (!http_body_only_or_reply(rc, fields))
        return;
    struct jv_err e = {0};
    const char *phone = NULL, *password = NULL, *device = NULL;
    if (!jv_str(rc->json, "phone", true, 11, 11, &phone, &e) ||
        !jv_str(rc->json, "password", true, 1, 128, &password, &e) ||
        !jv_str(rc->json, "device_token", false, 1, 64, &device, &e)) {
        http_reply_jv(rc, &e);
        return;
    }
    struct login_state *ls = arena_alloc(rc->arena, sizeof *ls);
    ls->phone = phone;
    /* Any string is accepted as a device token: one we never issued (or that expired) is
     * simply not known, and the login goes on as from a new device. */
    ls->device_token = device;
    if (device) {
        unsigned char d[32];
        crypto_sha256(device, strlen(device), d);
        crypto_hex(d, 32, ls->device_hash);
    }
    /* The worker thread must not read the request's JSON (the loop owns it), so it gets a copy,
     * which every path releases through the arena. */
    ls->password = xstrdup(password);
    arena_on_free(rc->arena, wipe_free, ls->password);
    rc->state = ls;
    login_step(rc);
}

/* ---------------------------------------------------------------------------------------- */
/* Logout and /me                                                                            */
/* ---------------------------------------------------------------------------------------- */

void api_logout(struct req_ctx *rc)
{
    auth_session_forget(rc);
    const char *params[] = {arena_printf(rc->arena, "\\x%s", rc->principal.token_hash)};
    api_query(rc, "SELECT gp_session_revoke($1::bytea)", 1, params, 200);
}

void api_me(struct req_ctx *rc)
{
    const char *params[] = {api_i64(rc, rc->principal.person_id)};
    api_query(rc, "SELECT gp_me($1)", 1, params, 200);
}
