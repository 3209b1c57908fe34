/* ledger.c -- cached balances and rankings in Redis, rebuilt from the ledger in PostgreSQL.
 *
 * Owns the Redis keys bal:{w} and rank:{u}:<period> and the Lua scripts that guard them (see
 * ledger.h). The ledger itself -- accounts, postings, budgets, timers -- lives in SQL
 * (sql/0003_ledger.sql); this module only mirrors what those functions return. */
#include "ledger.h"

#include "app.h"
#include "db.h"
#include "kv.h"
#include "log.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Versions and points travel as decimal strings; Lua compares versions as doubles, exact up to
 * 2^53 -- far beyond any account's number of postings. A stored version that is not a number
 * never blocks a put (tonumber() gives nil). An equal version only refreshes the TTL: the same
 * version always means the same balances. */
const char ledger_lua_balance_put[] =
    "local cur = tonumber(redis.call('HGET', KEYS[1], 'v'))\n"
    "if cur and cur >= tonumber(ARGV[3]) then\n"
    "  if cur == tonumber(ARGV[3]) then redis.call('EXPIRE', KEYS[1], ARGV[4]) end\n"
    "  return 0\n"
    "end\n"
    "redis.call('HSET', KEYS[1], 'a', ARGV[1], 'p', ARGV[2], 'v', ARGV[3])\n"
    "redis.call('EXPIRE', KEYS[1], ARGV[4])\n"
    "return 1\n";

/* Compare-and-set on the exact stored version string, for the rebuild: it may have to lower a
 * version (a ledger restored from backup) or fix a corrupt entry, but never over a write that
 * happened after it looked. */
const char ledger_lua_balance_cas[] =
    "local cur = redis.call('HGET', KEYS[1], 'v')\n"
    "if (cur or '') ~= ARGV[1] then return 0 end\n"
    "redis.call('DEL', KEYS[1])\n"
    "redis.call('HSET', KEYS[1], 'a', ARGV[2], 'p', ARGV[3], 'v', ARGV[4])\n"
    "redis.call('EXPIRE', KEYS[1], ARGV[5])\n"
    "return 1\n";

/* rank = 1 + members with a higher score (ties share a rank, as in gp_rank); the marker "-"
 * (score -inf) is never counted by ZCOUNT and is subtracted from ZCARD. */
const char ledger_lua_rank_get[] =
    "if not redis.call('ZSCORE', KEYS[1], '-') then return false end\n"
    "local s = redis.call('ZSCORE', KEYS[1], ARGV[1]) or '0'\n"
    "local above = redis.call('ZCOUNT', KEYS[1], '(' .. s, '+inf')\n"
    "return {tonumber(s), above + 1, redis.call('ZCARD', KEYS[1]) - 1}\n";

/* GT: a concurrent award committed after the board was read from PostgreSQL keeps its higher
 * total. Earnings never decrease, so GT never keeps a wrong value except for a worker who
 * moved to another unit (fixed by the rebuild). */
const char ledger_lua_rank_fill[] = "for i = 1, #ARGV, 2 do\n"
                                    "  redis.call('ZADD', KEYS[1], 'GT', ARGV[i + 1], ARGV[i])\n"
                                    "end\n"
                                    "redis.call('ZADD', KEYS[1], '-inf', '-')\n"
                                    "return 1\n";

const char ledger_lua_rank_cas[] = "local cur = redis.call('ZSCORE', KEYS[1], ARGV[1])\n"
                                   "if (cur or '') ~= ARGV[2] then return 0 end\n"
                                   "if ARGV[3] == '' then redis.call('ZREM', KEYS[1], ARGV[1])\n"
                                   "else redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1]) end\n"
                                   "return 1\n";

struct ledger_cache {
    struct kv *kv;
    struct kv_script *balance_put; /* owned by kv */
    struct kv_script *rank_get;
    struct kv_script *rank_fill;
};

struct ledger_cache *ledger_cache_new(struct kv *kv)
{
    struct ledger_cache *lc = xcalloc(1, sizeof(*lc));
    lc->kv = kv;
    lc->balance_put = kv_script_new(kv, ledger_lua_balance_put);
    lc->rank_get = kv_script_new(kv, ledger_lua_rank_get);
    lc->rank_fill = kv_script_new(kv, ledger_lua_rank_fill);
    return lc;
}

void ledger_cache_free(struct ledger_cache *lc)
{
    free(lc);
}

/* ------------------------------------------------------------------------------------------ */
/* helpers */

bool ledger_period_valid(const char *p)
{
    if (!p)
        return false;
    if (strcmp(p, "all") == 0)
        return true;
    if (strlen(p) != 7 || p[4] != '-')
        return false;
    for (int i = 0; i < 7; i++) {
        if (i != 4 && (p[i] < '0' || p[i] > '9'))
            return false;
    }
    int month = (p[5] - '0') * 10 + (p[6] - '0');
    return month >= 1 && month <= 12;
}

int ledger_balance_key(char *buf, size_t cap, int64_t worker_id)
{
    return snprintf(buf, cap, "bal:{%" PRId64 "}", worker_id);
}

int ledger_rank_key(char *buf, size_t cap, int64_t unit_id, const char *period)
{
    return snprintf(buf, cap, "rank:{%" PRId64 "}:%s", unit_id, period);
}

/* Strict decimal int64 (what PostgreSQL and our scripts write); false on anything else. */
static bool parse_i64(const char *s, size_t len, int64_t *out)
{
    char buf[32];
    if (!s || len == 0 || len >= sizeof(buf))
        return false;
    memcpy(buf, s, len);
    buf[len] = '\0';
    char *end;
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    if (errno || *end != '\0')
        return false;
    *out = (int64_t)v;
    return true;
}

static bool reply_i64(const struct redisReply *r, int64_t *out)
{
    if (!r)
        return false;
    if (r->type == REDIS_REPLY_INTEGER) {
        *out = (int64_t)r->integer;
        return true;
    }
    if (r->type == REDIS_REPLY_STRING)
        return parse_i64(r->str, r->len, out);
    return false;
}

/* An integer member of a JSON object; false when absent or not an integer. */
static bool json_i64(const json_t *obj, const char *key, int64_t *out)
{
    const json_t *v = json_object_get(obj, key);
    if (!json_is_integer(v))
        return false;
    *out = (int64_t)json_integer_value(v);
    return true;
}

/* ------------------------------------------------------------------------------------------ */
/* balances */

struct put_then {
    void (*changed)(void *arg);
    void *arg;
};

static void put_then_cb(struct redisReply *r, enum status st, void *arg)
{
    struct put_then *pt = arg;
    if (st == ST_OK && r && r->type == REDIS_REPLY_INTEGER && r->integer == 1)
        pt->changed(pt->arg);
    free(pt);
}

void ledger_cache_put(struct ledger_cache *lc, int64_t worker_id, int64_t available,
                      int64_t pending, int64_t version)
{
    ledger_cache_put_then(lc, worker_id, available, pending, version, NULL, NULL);
}

void ledger_cache_put_then(struct ledger_cache *lc, int64_t worker_id, int64_t available,
                           int64_t pending, int64_t version, void (*changed)(void *arg), void *arg)
{
    if (worker_id <= 0 || available < 0 || pending < 0 || version < 0) {
        log_warn("ledger: refusing to cache worker=%" PRId64 " available=%" PRId64
                 " pending=%" PRId64 " version=%" PRId64,
                 worker_id, available, pending, version);
        return;
    }
    char key[48], a[24], p[24], v[24], ttl[16];
    ledger_balance_key(key, sizeof(key), worker_id);
    snprintf(a, sizeof(a), "%" PRId64, available);
    snprintf(p, sizeof(p), "%" PRId64, pending);
    snprintf(v, sizeof(v), "%" PRId64, version);
    snprintf(ttl, sizeof(ttl), "%d", LEDGER_BALANCE_TTL_S);
    const char *argv[] = {key, a, p, v, ttl};
    struct put_then *pt = NULL;
    if (changed) {
        pt = xcalloc(1, sizeof *pt);
        pt->changed = changed;
        pt->arg = arg;
    }
    kv_eval(lc->kv, lc->balance_put, 1, (int)ARRAY_SIZE(argv), argv, pt ? put_then_cb : NULL, pt);
}

/* One balance object; false when it lacks the fields. */
static bool put_balance_json(struct ledger_cache *lc, const json_t *o)
{
    int64_t w, a, p, v;
    if (!json_is_object(o) || !json_i64(o, "worker_id", &w) || !json_i64(o, "pending", &p) ||
        !json_i64(o, "version", &v))
        return false;
    if (!json_i64(o, "available", &a) && !json_i64(o, "balance", &a))
        return false;
    ledger_cache_put(lc, w, a, p, v);
    return true;
}

static int put_balance_array(struct ledger_cache *lc, const json_t *arr)
{
    size_t i;
    const json_t *o;
    int n = 0;
    json_array_foreach(arr, i, o)
    {
        if (!put_balance_json(lc, o))
            return -1;
        n++;
    }
    return n;
}

int ledger_cache_put_json(struct ledger_cache *lc, const char *json)
{
    json_error_t err;
    json_t *root = json ? json_loads(json, JSON_DECODE_ANY, &err) : NULL;
    int n = -1;
    if (!root)
        goto done;
    if (json_is_array(root)) {
        n = put_balance_array(lc, root);
    } else if (json_is_object(root)) {
        const json_t *list = json_object_get(root, "touched");
        if (!list)
            list = json_object_get(root, "items");
        if (json_is_array(list))
            n = put_balance_array(lc, list);
        else
            n = put_balance_json(lc, root) ? 1 : -1;
    }
done:
    if (n < 0)
        log_warn("ledger: unexpected balance JSON, cache not updated");
    json_decref(root);
    return n;
}

/* One gp_task_award result: balance and rankings. */
static bool apply_award(struct ledger_cache *lc, const json_t *o)
{
    int64_t w, month, total;
    const json_t *units = json_object_get(o, "rank_units");
    const char *period = json_string_value(json_object_get(o, "period"));
    if (!put_balance_json(lc, o) || !json_i64(o, "worker_id", &w) ||
        !json_i64(o, "earned_month", &month) || !json_i64(o, "earned_total", &total) ||
        !json_is_array(units) || !period)
        return false;
    int64_t ids[8];
    int n = 0;
    size_t i;
    const json_t *u;
    json_array_foreach(units, i, u)
    {
        if (!json_is_integer(u) || n == (int)ARRAY_SIZE(ids))
            return false;
        ids[n++] = (int64_t)json_integer_value(u);
    }
    ledger_rank_put(lc, w, ids, n, period, month);
    ledger_rank_put(lc, w, ids, n, "all", total);
    return true;
}

int ledger_cache_apply_award(struct ledger_cache *lc, const char *award_json)
{
    json_error_t err;
    json_t *root = award_json ? json_loads(award_json, JSON_DECODE_ANY, &err) : NULL;
    int n = -1;
    if (json_is_object(root)) {
        n = apply_award(lc, root) ? 1 : -1;
    } else if (json_is_array(root)) {
        size_t i;
        const json_t *o;
        n = 0;
        json_array_foreach(root, i, o)
        {
            if (!apply_award(lc, o)) {
                n = -1;
                break;
            }
            n++;
        }
    }
    if (n < 0)
        log_warn("ledger: unexpected award JSON, cache not updated");
    json_decref(root);
    return n;
}

struct get_op {
    ledger_balance_cb cb;
    void *arg;
    int64_t worker_id;
};

static void get_reply_cb(struct redisReply *r, enum status st, void *arg)
{
    struct get_op op = *(struct get_op *)arg;
    free(arg);
    if (st != ST_OK || !r) { /* down, timeout, or an error reply: fall back to PostgreSQL */
        op.cb(ST_UNAVAILABLE, NULL, op.arg);
        return;
    }
    struct ledger_balance b = {.worker_id = op.worker_id};
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
        !reply_i64(r->element[0], &b.available) || !reply_i64(r->element[1], &b.pending) ||
        !reply_i64(r->element[2], &b.version)) {
        op.cb(ST_NOT_FOUND, NULL, op.arg); /* a miss, or a malformed entry the next put fixes */
        return;
    }
    op.cb(ST_OK, &b, op.arg);
}

void ledger_cache_get(struct ledger_cache *lc, int64_t worker_id, ledger_balance_cb cb, void *arg)
{
    struct get_op *op = xmalloc(sizeof(*op));
    *op = (struct get_op){.cb = cb, .arg = arg, .worker_id = worker_id};
    char key[48];
    ledger_balance_key(key, sizeof(key), worker_id);
    const char *argv[] = {"HMGET", key, "a", "p", "v"};
    kv_command(lc->kv, get_reply_cb, op, (int)ARRAY_SIZE(argv), argv, NULL);
}

/* ------------------------------------------------------------------------------------------ */
/* rankings */

void ledger_rank_put(struct ledger_cache *lc, int64_t worker_id, const int64_t *unit_ids,
                     int nunits, const char *period, int64_t points)
{
    if (!ledger_period_valid(period) || worker_id <= 0 || points < 0) {
        log_warn("ledger: refusing rank put worker=%" PRId64 " points=%" PRId64, worker_id, points);
        return;
    }
    char member[24], score[24], key[64];
    snprintf(member, sizeof(member), "%" PRId64, worker_id);
    snprintf(score, sizeof(score), "%" PRId64, points);
    /* One command per key: the keys of different units live in different cluster slots. */
    for (int i = 0; i < nunits; i++) {
        ledger_rank_key(key, sizeof(key), unit_ids[i], period);
        const char *argv[] = {"ZADD", key, "GT", score, member};
        kv_command(lc->kv, NULL, NULL, (int)ARRAY_SIZE(argv), argv, NULL);
    }
}

struct rank_op {
    ledger_rank_cb cb;
    void *arg;
    struct ledger_rank r;
};

static void rank_reply_cb(struct redisReply *rep, enum status st, void *arg)
{
    struct rank_op op = *(struct rank_op *)arg;
    free(arg);
    if (st != ST_OK || !rep) {
        op.cb(ST_UNAVAILABLE, NULL, op.arg);
        return;
    }
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 3 ||
        !reply_i64(rep->element[0], &op.r.points) || !reply_i64(rep->element[1], &op.r.rank) ||
        !reply_i64(rep->element[2], &op.r.total)) {
        op.cb(ST_NOT_FOUND, NULL, op.arg); /* nil: no complete board */
        return;
    }
    op.cb(ST_OK, &op.r, op.arg);
}

/* Delivers ST_INVALID from the event loop, never from inside ledger_rank_get: a harmless
 * script call whose reply is ignored carries the callback there. */
static void rank_invalid_cb(struct redisReply *rep, enum status st, void *arg)
{
    struct rank_op op = *(struct rank_op *)arg;
    free(arg);
    op.cb(ST_INVALID, NULL, op.arg);
}

void ledger_rank_get(struct ledger_cache *lc, int64_t worker_id, int64_t unit_id,
                     const char *period, ledger_rank_cb cb, void *arg)
{
    struct rank_op *op = xcalloc(1, sizeof(*op));
    op->cb = cb;
    op->arg = arg;
    op->r.worker_id = worker_id;
    op->r.unit_id = unit_id;
    if (!ledger_period_valid(period)) {
        const char *argv[] = {"PING"};
        kv_command(lc->kv, rank_invalid_cb, op, 1, argv, NULL);
        return;
    }
    snprintf(op->r.period, sizeof(op->r.period), "%s", period);
    char key[64], member[24];
    ledger_rank_key(key, sizeof(key), unit_id, period);
    snprintf(member, sizeof(member), "%" PRId64, worker_id);
    const char *argv[] = {key, member};
    kv_eval(lc->kv, lc->rank_get, 1, 2, argv, rank_reply_cb, op);
}

void ledger_rank_fill(struct ledger_cache *lc, int64_t unit_id, const char *period, int n,
                      const int64_t *workers, const int64_t *points)
{
    if (!ledger_period_valid(period) || n < 0)
        return;
    /* keys + 2 strings per member, formatted into one block */
    int argc = 1 + 2 * n;
    const char **argv = xcalloc((size_t)argc, sizeof(*argv));
    char *buf = xmalloc((size_t)n * 48 + 64);
    char *p = buf;
    p += ledger_rank_key(p, 64, unit_id, period) + 1;
    argv[0] = buf;
    for (int i = 0; i < n; i++) {
        argv[1 + 2 * i] = p;
        p += snprintf(p, 24, "%" PRId64, workers[i]) + 1;
        argv[2 + 2 * i] = p;
        p += snprintf(p, 24, "%" PRId64, points[i]) + 1;
    }
    kv_eval(lc->kv, lc->rank_fill, 1, argc, argv, NULL, NULL); /* copies the arguments */
    free(buf);
    free(argv);
}

/* ------------------------------------------------------------------------------------------ */
/* background steps */

struct step_op {
    struct app *app;
    ledger_step_cb cb;
    void *arg;
    int64_t cursor;  /* reconcile: where this page started */
    int batch;       /* sweep: batch size asked */
    int64_t unit_id; /* rank build */
    char period[LEDGER_PERIOD_MAX];
};

/* The reply of a one-row function, parsed; NULL on failure or anything else. */
static json_t *first_json(struct db_result *res)
{
    return db_result_ntuples(res) == 1 ? db_result_json(res) : NULL;
}

static void reconcile_cb(struct db_result *res, void *arg)
{
    struct step_op *op = arg;
    enum status st = db_result_status(res);
    int64_t next = 0;
    int n = 0;
    json_t *root = first_json(res);
    if (root) {
        const json_t *items = json_object_get(root, "items");
        const char *cursor = json_string_value(json_object_get(root, "next_cursor"));
        if (json_is_array(items)) {
            n = put_balance_array(op->app->ledger, items);
            if (cursor && !parse_i64(cursor, strlen(cursor), &next))
                next = 0;
        }
        if (n < 0 || !json_is_array(items)) {
            log_warn("ledger: unexpected gp_ledger_snapshot result");
            st = ST_INTERNAL;
            n = 0;
        }
        json_decref(root);
    } else if (st == ST_OK) {
        st = ST_INTERNAL;
    }
    if (st != ST_OK) {
        log_warn("ledger: reconcile step after=%" PRId64 " failed: %s", op->cursor,
                 db_result_log_detail(res));
        next = op->cursor;
    }
    op->cb(st, next, n, op->arg);
    free(op);
}

void ledger_reconcile_step(struct app *app, int64_t after, int limit, ledger_step_cb cb, void *arg)
{
    static const char sql[] = "SELECT gp_ledger_snapshot($1::bigint, $2::int)::text";
    struct step_op *op = xcalloc(1, sizeof(*op));
    *op = (struct step_op){.app = app, .cb = cb, .arg = arg, .cursor = after};
    char a[24], l[16];
    snprintf(a, sizeof(a), "%" PRId64, after);
    snprintf(l, sizeof(l), "%d", limit);
    const char *params[] = {a, l};
    db_query(app->db, sql, 2, params, reconcile_cb, op);
}

static void sweep_cb(struct db_result *res, void *arg)
{
    struct step_op *op = arg;
    enum status st = db_result_status(res);
    int n = 0;
    int64_t more = 0;
    json_t *root = first_json(res);
    if (root) {
        int64_t vested = 0, expired = 0, skipped = 0;
        if (!json_i64(root, "vested", &vested) || !json_i64(root, "expired", &expired) ||
            put_balance_array(op->app->ledger, json_object_get(root, "touched")) < 0) {
            log_warn("ledger: unexpected gp_ledger_sweep result");
            st = ST_INTERNAL;
        } else {
            json_i64(root, "skipped", &skipped);
            n = (int)(vested + expired);
            more = (vested >= op->batch || expired >= op->batch) ? 1 : 0;
            if (n > 0)
                log_info("ledger: sweep vested=%" PRId64 " expired=%" PRId64 " skipped=%" PRId64,
                         vested, expired, skipped);
        }
        json_decref(root);
    } else if (st == ST_OK) {
        st = ST_INTERNAL;
    } else {
        log_warn("ledger: sweep failed: %s", db_result_log_detail(res));
    }
    op->cb(st, more, n, op->arg);
    free(op);
}

void ledger_sweep_step(struct app *app, int batch, ledger_step_cb cb, void *arg)
{
    static const char sql[] = "SELECT gp_ledger_sweep($1::int)::text";
    struct step_op *op = xcalloc(1, sizeof(*op));
    *op = (struct step_op){.app = app, .cb = cb, .arg = arg, .batch = batch};
    char b[16];
    snprintf(b, sizeof(b), "%d", batch);
    const char *params[] = {b};
    db_query(app->db, sql, 1, params, sweep_cb, op);
}

static void rank_build_cb(struct db_result *res, void *arg)
{
    struct step_op *op = arg;
    enum status st = db_result_status(res);
    int n = 0;
    json_t *root = first_json(res);
    if (root) {
        const json_t *items = json_object_get(root, "items");
        if (!json_is_array(items)) {
            st = ST_INTERNAL;
        } else {
            size_t cnt = json_array_size(items), i;
            int64_t *w = xcalloc(cnt ? cnt : 1, sizeof(*w));
            int64_t *pts = xcalloc(cnt ? cnt : 1, sizeof(*pts));
            const json_t *it;
            json_array_foreach(items, i, it)
            {
                const json_t *a = json_array_get(it, 0), *b = json_array_get(it, 1);
                if (!json_is_integer(a) || !json_is_integer(b)) {
                    st = ST_INTERNAL;
                    break;
                }
                w[n] = (int64_t)json_integer_value(a);
                pts[n] = (int64_t)json_integer_value(b);
                n++;
            }
            if (st == ST_OK)
                ledger_rank_fill(op->app->ledger, op->unit_id, op->period, n, w, pts);
            free(w);
            free(pts);
        }
        json_decref(root);
    } else if (st == ST_OK) {
        st = ST_INTERNAL;
    }
    if (st != ST_OK) {
        log_warn("ledger: rank build unit=%" PRId64 " period=%s failed", op->unit_id, op->period);
        n = 0;
    }
    op->cb(st, 0, n, op->arg);
    free(op);
}

/* Invalid input is reported from the event loop like every other outcome: the query still
 * runs (it is read-only and returns an empty board), then the callback says ST_INVALID. */
static void rank_build_invalid_cb(struct db_result *res, void *arg)
{
    struct step_op *op = arg;
    op->cb(ST_INVALID, 0, 0, op->arg);
    free(op);
}

void ledger_rank_build(struct app *app, int64_t unit_id, const char *period, ledger_step_cb cb,
                       void *arg)
{
    static const char sql[] = "SELECT gp_rank_board($1::bigint, $2::text)::text";
    struct step_op *op = xcalloc(1, sizeof(*op));
    *op = (struct step_op){.app = app, .cb = cb, .arg = arg, .unit_id = unit_id};
    bool valid = ledger_period_valid(period);
    snprintf(op->period, sizeof(op->period), "%s", valid ? period : "all");
    char u[24];
    snprintf(u, sizeof(u), "%" PRId64, unit_id);
    const char *params[] = {u, op->period};
    db_query(app->db, sql, 2, params, valid ? rank_build_cb : rank_build_invalid_cb, op);
}
