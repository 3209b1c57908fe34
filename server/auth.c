/* auth.c -- resolving a session token into a principal.
 *
 * Redis holds "sess:{<sha256 hex>}" -> principal JSON for at most SESSION_CACHE_TTL seconds; on
 * a miss, or when Redis is down (we fail open to PostgreSQL, which is the truth), the principal
 * comes from gp_session_principal() and is cached again. The short TTL bounds how long a
 * suspension or a role change takes to reach the route gates; the SQL functions re-check
 * roles on every business operation anyway. The same bound holds for the caller's area and
 * worker flag, which the claim gate uses to know the caller is in a task's scope (a person's
 * home unit never changes; a revoked worker role reaches the gate within the TTL).
 *
 * Cache misses are coalesced (struct auth_sessions): the misses waiting at a moment go to
 * PostgreSQL as one query over an array of token hashes, at most auth.session_batch_max per
 * query and auth.session_batches_in_flight such queries at a time; misses arriving meanwhile
 * wait for the next one. A storm of cold sessions (10,000 workers claiming at 08:00) thus
 * costs tens of queries, not one per request, and does not fill the pool's queue. Each waiting
 * request is answered exactly once, from its own row of the reply. */
#include "auth.h"
#include "app.h"
#include "arena.h"
#include "config.h"
#include "crypto.h"
#include "db.h"
#include "http.h"
#include "kv.h"
#include "log.h"
#include "router.h"

#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SESSION_CACHE_TTL 30
/* The longest cached principal: three integers, a flag and the area, with separators. */
#define CACHED_MAX (3 + 3 * 21 + 2 + sizeof((struct principal *)0)->area)

/* The guard's own per-request state (rc->guard_state, arena): rc->state is the handler's. */
struct auth_state {
    route_handler next;
    unsigned roles;      /* the caller must hold one of these; 0 = any person */
    char key[80];        /* sess:{<hex>} */
    char hash_param[70]; /* \x<hex>, the bytea parameter */
};

static const struct {
    const char *name;
    unsigned bit;
} role_names[] = {
    {"worker", ROLE_WORKER},
    {"volunteer", ROLE_VOLUNTEER},
    {"grid_staff", ROLE_GRID_STAFF},
    {"community_admin", ROLE_COMMUNITY_ADMIN},
    {"street_admin", ROLE_STREET_ADMIN},
    {"auditor", ROLE_AUDITOR},
    {"merchant_staff", ROLE_MERCHANT_STAFF},
};

unsigned auth_role_parse(const char *name)
{
    for (size_t i = 0; i < ARRAY_SIZE(role_names); i++)
        if (!strcmp(role_names[i].name, name))
            return role_names[i].bit;
    return 0;
}

/* The principal is known: the role gate of the route, then the handler. */
static void resolved(struct req_ctx *rc)
{
    struct auth_state *as = rc->guard_state;
    if (as->roles && !(rc->principal.roles & as->roles)) {
        http_reply_error(rc, ST_FORBIDDEN, "forbidden", NULL, "your roles do not allow this");
        return;
    }
    as->next(rc);
}

/* An org path as the claim gate compares it: ids joined by dots, nothing else. */
static bool area_ok(const char *s, size_t len)
{
    if (len == 0 || len >= sizeof((struct principal *)0)->area || s[0] == '.' || s[len - 1] == '.')
        return false;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '.' ? s[i + 1] == '.' : !(s[i] >= '0' && s[i] <= '9'))
            return false;
    }
    return true;
}

/* Sets the caller's area when it is well formed; otherwise it stays unknown (and the claim
 * gate never answers for this caller). */
static void set_area(struct req_ctx *rc, const char *s, size_t len, bool worker)
{
    if (!s || !area_ok(s, len))
        return;
    memcpy(rc->principal.area, s, len);
    rc->principal.area[len] = '\0';
    rc->principal.worker = worker;
}

/* Fills the principal from the JSON of gp_session_principal() (the database path, once per
 * cache fill); *ttl gets the seconds the session has left. False when malformed. */
static bool principal_from_json(struct req_ctx *rc, const char *text, long long *ttl)
{
    json_t *j = json_loads(text, 0, NULL);
    if (!j)
        return false;
    json_t *pid = json_object_get(j, "person_id");
    json_t *unit = json_object_get(j, "unit_id");
    json_t *roles = json_object_get(j, "roles");
    bool ok = json_is_integer(pid) && json_is_integer(unit) && json_is_array(roles);
    if (ok) {
        rc->principal.person_id = json_integer_value(pid);
        rc->principal.unit_id = json_integer_value(unit);
        size_t i;
        json_t *r;
        json_array_foreach(roles, i, r)
        {
            const char *name = json_string_value(json_object_get(r, "role"));
            if (name)
                rc->principal.roles |= auth_role_parse(name);
        }
        *ttl = json_integer_value(json_object_get(j, "ttl"));
        json_t *area = json_object_get(j, "area");
        set_area(rc, json_string_value(area), json_string_length(area),
                 json_is_true(json_object_get(j, "worker")));
    }
    json_decref(j);
    return ok;
}

/* A non-negative decimal of 1..18 digits at s (what principal_found writes); -1 otherwise.
 * *end is the first byte after the digits. */
static long long cached_int(char *s, char **end)
{
    long long v = 0;
    int n = 0;
    while (s[n] >= '0' && s[n] <= '9' && n < 18)
        v = v * 10 + (s[n++] - '0');
    *end = s + n;
    return n ? v : -1;
}

/* The cached form is "p2:<person>:<unit>:<role bits>:<worker 0|1>:<area>" (area may be
 * empty): every authenticated request reads it, so it is parsed with strtoll rather than as
 * JSON. Anything else (an older format, a corrupted value) counts as a miss. */
static bool principal_from_cache(struct req_ctx *rc, const char *s, size_t len)
{
    char buf[CACHED_MAX];
    if (len < 3 || len >= sizeof buf || memcmp(s, "p2:", 3) != 0)
        return false;
    memcpy(buf, s, len);
    buf[len] = '\0';
    char *end;
    long long pid = cached_int(buf + 3, &end);
    if (*end != ':' || pid <= 0)
        return false;
    long long unit = cached_int(end + 1, &end);
    if (*end != ':' || unit <= 0)
        return false;
    long long roles = cached_int(end + 1, &end);
    if (*end != ':' || roles < 0 || (end[1] != '0' && end[1] != '1') || end[2] != ':')
        return false;
    bool worker = end[1] == '1';
    const char *area = end + 3;
    size_t area_len = strlen(area);
    if (area_len && !area_ok(area, area_len))
        return false;
    rc->principal.person_id = pid;
    rc->principal.unit_id = unit;
    rc->principal.roles = (unsigned)roles;
    set_area(rc, area, area_len, worker);
    return true;
}

/* The answer of PostgreSQL for one request: v is its gp_session_principal() (NULL: none). */
static void principal_found(struct req_ctx *rc, const char *v)
{
    struct auth_state *as = rc->guard_state;
    if (!v) {
        http_reply_error(rc, ST_UNAUTHORIZED, "invalid_token", "Authorization",
                         "session token is unknown, expired or revoked");
        return;
    }
    long long left = 0;
    if (!principal_from_json(rc, v, &left)) {
        http_reply_error(rc, ST_INTERNAL, NULL, NULL, "cannot read session");
        return;
    }
    /* Never cache a session beyond its own expiry. */
    char ttl[24], cached[CACHED_MAX];
    snprintf(ttl, sizeof ttl, "%lld",
             left > 0 && left < SESSION_CACHE_TTL ? left : SESSION_CACHE_TTL);
    snprintf(cached, sizeof cached, "p2:%lld:%lld:%u:%d:%s", (long long)rc->principal.person_id,
             (long long)rc->principal.unit_id, rc->principal.roles, rc->principal.worker ? 1 : 0,
             rc->principal.area);
    const char *argv[] = {"SET", as->key, cached, "EX", ttl};
    kv_command(rc->app->kv, NULL, NULL, 5, argv, NULL);
    resolved(rc);
}

static void db_principal_cb(struct db_result *res, void *arg)
{
    struct req_ctx *rc = arg;
    if (db_result_status(res) != ST_OK) {
        http_reply_db(rc, res, 200);
        return;
    }
    principal_found(rc, db_result_ntuples(res) ? db_result_value(res, 0, 0) : NULL);
}

/* ---------------------------------------------------------------- coalesced misses */

struct auth_sessions {
    struct app *app;
    struct event *flush;    /* zero-timeout: send what is pending */
    struct req_ctx **queue; /* misses not yet sent, oldest first (a ring) */
    size_t head, len, cap;
    int inflight; /* batch queries running */
    int batch_max, inflight_max;
    unsigned long long misses, lookups; /* counters for /metrics: misses queued, queries sent */
};

/* One batch query in flight: its requests, in the order of the reply's rows. */
struct session_batch {
    struct auth_sessions *as;
    int n;
    struct req_ctx *rcs[];
};

/* The principals of an array of token hashes (hex), one row per element, in its order; NULL
 * where the session is unknown, expired, revoked or its person is not active. */
static const char BATCH_SQL[] =
    "SELECT gp_session_principal(pg_catalog.decode(t.h, 'hex')) "
    "FROM pg_catalog.unnest($1::text[]) WITH ORDINALITY AS t(h, i) ORDER BY t.i";

static void batch_cb(struct db_result *res, void *arg)
{
    struct session_batch *b = arg;
    struct auth_sessions *as = b->as;
    as->inflight--;
    if (as->len)
        event_active(as->flush, EV_TIMEOUT, 0);
    bool ok = db_result_status(res) == ST_OK;
    if (ok && db_result_ntuples(res) != b->n) {
        log_error("session batch: %d rows for %d tokens", db_result_ntuples(res), b->n);
        ok = false;
    }
    for (int i = 0; i < b->n; i++) {
        struct req_ctx *rc = b->rcs[i];
        if (db_result_status(res) != ST_OK)
            http_reply_db(rc, res, 200);
        else if (!ok)
            http_reply_error(rc, ST_INTERNAL, NULL, NULL, "cannot read session");
        else
            principal_found(rc, db_result_value(res, i, 0));
    }
    free(b);
}

static void flush_cb(evutil_socket_t fd, short what, void *arg)
{
    struct auth_sessions *as = arg;
    while (as->len && as->inflight < as->inflight_max) {
        int n = as->len < (size_t)as->batch_max ? (int)as->len : as->batch_max;
        struct session_batch *b = xmalloc(sizeof *b + (size_t)n * sizeof b->rcs[0]);
        b->as = as;
        b->n = n;
        /* "{<hex>,<hex>,...}": 64 hex digits and a separator each */
        char *param = xmalloc((size_t)n * 65 + 3), *p = param;
        *p++ = '{';
        for (int i = 0; i < n; i++) {
            struct req_ctx *rc = as->queue[as->head];
            as->head = (as->head + 1) % as->cap;
            as->len--;
            b->rcs[i] = rc;
            if (i)
                *p++ = ',';
            memcpy(p, rc->principal.token_hash, 64);
            p += 64;
        }
        *p++ = '}';
        *p = '\0';
        as->inflight++;
        as->lookups++;
        const char *params[] = {param};
        db_query(as->app->db, BATCH_SQL, 1, params, batch_cb, b); /* copies the parameter */
        free(param);
    }
}

struct auth_sessions *auth_sessions_new(struct app *app)
{
    struct auth_sessions *as = xcalloc(1, sizeof *as);
    as->app = app;
    as->batch_max = app->cfg->session_batch_max;
    as->inflight_max = app->cfg->session_batches_in_flight;
    as->flush = event_new(app->base, -1, 0, flush_cb, as);
    return as;
}

void auth_sessions_stats(const struct auth_sessions *as, unsigned long long *misses,
                         unsigned long long *lookups)
{
    *misses = as ? as->misses : 0;
    *lookups = as ? as->lookups : 0;
}

void auth_sessions_free(struct auth_sessions *as)
{
    if (!as)
        return;
    if (as->len) /* the loop has ended: nobody can be answered any more */
        log_warn("session batch: %zu requests still waiting at exit", as->len);
    event_free(as->flush);
    free(as->queue);
    free(as);
}

static void miss(struct auth_sessions *as, struct req_ctx *rc)
{
    if (as->len == as->cap) {
        size_t cap = as->cap ? as->cap * 2 : 64;
        struct req_ctx **q = xmalloc(cap * sizeof *q);
        for (size_t i = 0; i < as->len; i++)
            q[i] = as->queue[(as->head + i) % as->cap];
        free(as->queue);
        as->queue = q;
        as->head = 0;
        as->cap = cap;
    }
    as->queue[(as->head + as->len) % as->cap] = rc;
    as->len++;
    as->misses++;
    /* Sent once the loop has read what else arrived in the same turn (or when a batch in
     * flight comes back, if all are busy). */
    if (as->inflight < as->inflight_max)
        event_active(as->flush, EV_TIMEOUT, 0);
}

static void kv_principal_cb(struct redisReply *reply, enum status st, void *arg)
{
    struct req_ctx *rc = arg;
    struct auth_state *as = rc->guard_state;
    if (st == ST_OK && reply && reply->type == REDIS_REPLY_STRING &&
        principal_from_cache(rc, reply->str, reply->len)) {
        resolved(rc);
        return;
    }
    /* Miss, or Redis unavailable: PostgreSQL decides (fail open to the truth). */
    if (rc->app->sessions) {
        miss(rc->app->sessions, rc);
        return;
    }
    const char *params[] = {as->hash_param};
    db_query(rc->app->db, "SELECT gp_session_principal($1::bytea)", 1, params, db_principal_cb, rc);
}

static bool token_ok(const char *t)
{
    if (strlen(t) != CRYPTO_TOKEN_LEN)
        return false;
    for (const char *p = t; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '_'))
            return false;
    return true;
}

/* Resolves the request's session token into rc->principal, then resolved(). */
static void session_resolve(struct req_ctx *rc, route_handler next, unsigned roles)
{
    const char *h = http_header(rc, "Authorization");
    if (!h) {
        http_reply_error(rc, ST_UNAUTHORIZED, "missing_token", "Authorization",
                         "this route needs Authorization: Bearer <session token>");
        return;
    }
    if (strncmp(h, "Bearer ", 7) != 0 || !token_ok(h + 7)) {
        http_reply_error(rc, ST_UNAUTHORIZED, "invalid_token", "Authorization",
                         "malformed session token");
        return;
    }
    struct auth_state *as = arena_alloc(rc->arena, sizeof *as);
    as->next = next;
    as->roles = roles;
    unsigned char d[32];
    crypto_sha256(h + 7, CRYPTO_TOKEN_LEN, d);
    crypto_hex(d, 32, rc->principal.token_hash);
    /* "sess:{<hex>}" and "\\x<hex>", without a printf on every request */
    _Static_assert(sizeof as->key >= 6 + 64 + 2 && sizeof as->hash_param >= 2 + 65, "key sizes");
    memcpy(as->key, "sess:{", 6);
    memcpy(as->key + 6, rc->principal.token_hash, 64);
    memcpy(as->key + 70, "}", 2);
    memcpy(as->hash_param, "\\x", 2);
    memcpy(as->hash_param + 2, rc->principal.token_hash, 65);
    rc->guard_state = as;
    const char *argv[] = {"GET", as->key};
    kv_command(rc->app->kv, kv_principal_cb, rc, 2, argv, NULL);
}

static void session_check(struct req_ctx *rc, route_handler next)
{
    session_resolve(rc, next, 0);
}

/* Every /audit/v1 route but the proof of one transaction (which a worker may ask about their
 * own) is for auditors and street admins. */
static void auditor_check(struct req_ctx *rc, route_handler next)
{
    session_resolve(rc, next, ROLE_AUDITOR | ROLE_STREET_ADMIN);
}

const struct route_guard auth_guard_session = {"session", session_check, false};
const struct route_guard auth_guard_auditor = {"auditor", auditor_check, false};

void auth_session_forget_hash(struct app *app, const char *token_hash_hex)
{
    char key[80];
    snprintf(key, sizeof key, "sess:{%s}", token_hash_hex);
    const char *argv[] = {"DEL", key};
    kv_command(app->kv, NULL, NULL, 2, argv, NULL);
}

void auth_session_forget(struct req_ctx *rc)
{
    auth_session_forget_hash(rc->app, rc->principal.token_hash);
}
