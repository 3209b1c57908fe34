/* cli_rebuild.c -- `gridpointsd rebuild-cache`: compare Redis with the ledger and fix it.
 *
 * BLOCKING by design (libpq PQexecParams, hiredis redisCommandArgv): this runs in the CLI, never
 * on the server's event loop; the blocking-call check exempts files named cli_*. See
 * cli_rebuild.h for what it compares and how it fixes without overwriting concurrent writes. */
#include "cli_rebuild.h"

#include "common.h"
#include "ledger.h"

#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define CAS_ATTEMPTS 3

struct rb {
    PGconn *pg;
    redisContext *rc;
    FILE *out;
    const struct ledger_rebuild_opts *o;
    const char *verb; /* "fix" or "diff" (dry run) */
    int64_t *workers; /* workers with accounts, ascending (pages come in id order) */
    size_t nworkers, capworkers;
    long bal_checked, bal_fixed, boards, members, rank_fixed;
    bool failed;
};

/* A worker's cached or ledger state. */
struct bal {
    bool present; /* redis: the key exists; ledger: the worker has accounts */
    bool wellformed;
    int64_t a, p, v;
    char vstr[32]; /* redis: the stored version string, "" when absent (the CAS expectation) */
};

/* One member of a ranking board. */
struct member {
    int64_t worker;
    int64_t points;    /* ledger */
    double score;      /* redis */
    char scorestr[40]; /* redis, exact, for the CAS */
};

static void fail(struct rb *b, const char *fmt, ...) PRINTF_LIKE(2, 3);
static void fail(struct rb *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(b->out, "rebuild-cache: error: ");
    vfprintf(b->out, fmt, ap);
    fputc('\n', b->out);
    va_end(ap);
    b->failed = true;
}

/* ------------------------------------------------------------------------------------------ */
/* PostgreSQL */

/* Runs a one-value query and parses the value as JSON; NULL on error (reported). */
static json_t *pg_json(struct rb *b, const char *sql, int n, const char *const *params)
{
    PGresult *res = PQexecParams(b->pg, sql, n, NULL, params, NULL, NULL, 0);
    json_t *j = NULL;
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        fail(b, "%s", PQerrorMessage(b->pg));
    } else {
        json_error_t err;
        j = json_loads(PQgetvalue(res, 0, 0), JSON_DECODE_ANY, &err);
        if (!j)
            fail(b, "unexpected JSON from %s", sql);
    }
    PQclear(res);
    return j;
}

static bool json_i64(const json_t *o, const char *key, int64_t *out)
{
    const json_t *v = json_object_get(o, key);
    if (!json_is_integer(v))
        return false;
    *out = (int64_t)json_integer_value(v);
    return true;
}

static bool ledger_item(const json_t *it, int64_t *w, struct bal *s)
{
    memset(s, 0, sizeof(*s));
    s->present = s->wellformed = true;
    return json_i64(it, "worker_id", w) && json_i64(it, "available", &s->a) &&
           json_i64(it, "pending", &s->p) && json_i64(it, "version", &s->v);
}

/* The worker's ledger state now (outside the page being compared). */
static bool ledger_fresh(struct rb *b, int64_t w, struct bal *s)
{
    char after[24];
    snprintf(after, sizeof(after), "%" PRId64, w - 1);
    const char *params[] = {after, "1"};
    json_t *j = pg_json(b, "SELECT gp_ledger_snapshot($1::bigint, $2::int)::text", 2, params);
    if (!j)
        return false;
    const json_t *it = json_array_get(json_object_get(j, "items"), 0);
    int64_t got = 0;
    memset(s, 0, sizeof(*s));
    s->wellformed = true;
    if (it && !(ledger_item(it, &got, s) && got == w)) {
        memset(s, 0, sizeof(*s)); /* the next worker, or nothing: none for w */
        s->wellformed = true;
    }
    json_decref(j);
    return true;
}

/* ------------------------------------------------------------------------------------------ */
/* Redis */

static redisReply *rcmd(struct rb *b, int argc, const char **argv)
{
    redisReply *r = redisCommandArgv(b->rc, argc, argv, NULL);
    if (!r) {
        fail(b, "redis: %s", b->rc->errstr);
        return NULL;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        fail(b, "redis: %s", r->str);
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

static bool parse_i64(const char *s, int64_t *out)
{
    char *end;
    if (!s || !*s)
        return false;
    long long v = strtoll(s, &end, 10);
    if (*end)
        return false;
    *out = (int64_t)v;
    return true;
}

static bool redis_balance(struct rb *b, int64_t w, struct bal *s)
{
    char key[48];
    ledger_balance_key(key, sizeof(key), w);
    const char *argv[] = {"HMGET", key, "a", "p", "v"};
    redisReply *r = rcmd(b, 5, argv);
    if (!r)
        return false;
    memset(s, 0, sizeof(*s));
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 3) {
        redisReply **e = r->element;
        s->present = e[0]->type != REDIS_REPLY_NIL || e[1]->type != REDIS_REPLY_NIL ||
                     e[2]->type != REDIS_REPLY_NIL;
        if (e[2]->type == REDIS_REPLY_STRING)
            snprintf(s->vstr, sizeof(s->vstr), "%s", e[2]->str);
        s->wellformed = e[0]->type == REDIS_REPLY_STRING && e[1]->type == REDIS_REPLY_STRING &&
                        e[2]->type == REDIS_REPLY_STRING && parse_i64(e[0]->str, &s->a) &&
                        parse_i64(e[1]->str, &s->p) && parse_i64(e[2]->str, &s->v);
    }
    freeReplyObject(r);
    return true;
}

/* 1 applied, 0 lost the race, -1 error. */
static int eval_int(struct rb *b, const char *script, int argc, const char **args)
{
    const char *argv[16];
    ASSERT(argc + 3 <= (int)ARRAY_SIZE(argv));
    argv[0] = "EVAL";
    argv[1] = script;
    argv[2] = "1";
    memcpy(argv + 3, args, (size_t)argc * sizeof(*args));
    redisReply *r = rcmd(b, argc + 3, argv);
    if (!r)
        return -1;
    int rv = r->type == REDIS_REPLY_INTEGER ? (int)r->integer : -1;
    freeReplyObject(r);
    return rv;
}

static void fmt_bal(char *buf, size_t cap, const struct bal *s, bool redis)
{
    if (!s->present)
        snprintf(buf, cap, redis ? "missing" : "none");
    else if (!s->wellformed)
        snprintf(buf, cap, "malformed(v=%s)", s->vstr[0] ? s->vstr : "-");
    else
        snprintf(buf, cap, "a:%" PRId64 ",p:%" PRId64 ",v:%" PRId64, s->a, s->p, s->v);
}

/* ------------------------------------------------------------------------------------------ */
/* balances */

static bool same_balance(const struct bal *r, const struct bal *l)
{
    if (!l->present) /* no accounts: what gp_balance reports is a:0,p:0,v:0 (or nothing cached) */
        return !r->present || (r->wellformed && r->a == 0 && r->p == 0 && r->v == 0);
    return r->present && r->wellformed && r->a == l->a && r->p == l->p && r->v == l->v;
}

/* Compares one worker and fixes it; l is the ledger state from the page (fresh == false). */
static void check_balance(struct rb *b, int64_t w, struct bal l)
{
    bool fresh = false;
    b->bal_checked++;
    for (int attempt = 0; attempt < CAS_ATTEMPTS && !b->failed; attempt++) {
        struct bal r;
        if (!redis_balance(b, w, &r))
            return;
        if (same_balance(&r, &l))
            return;
        if (!fresh && r.present && r.wellformed && r.v > l.v) {
            /* Redis ahead of our snapshot: a commit during the run, or a ledger restored from
             * an older backup. Ask the ledger again before calling it a difference. */
            if (!ledger_fresh(b, w, &l))
                return;
            fresh = true;
            attempt--;
            continue;
        }
        char rs[96], ls[96];
        fmt_bal(rs, sizeof(rs), &r, true);
        fmt_bal(ls, sizeof(ls), &l, false);
        if (b->o->dry_run) {
            fprintf(b->out, "%s balance worker=%" PRId64 " redis=%s ledger=%s\n", b->verb, w, rs,
                    ls);
            b->bal_fixed++;
            return;
        }
        char key[48], a[24], p[24], v[24], ttl[16];
        ledger_balance_key(key, sizeof(key), w);
        snprintf(a, sizeof(a), "%" PRId64, l.present ? l.a : 0);
        snprintf(p, sizeof(p), "%" PRId64, l.present ? l.p : 0);
        snprintf(v, sizeof(v), "%" PRId64, l.present ? l.v : 0);
        snprintf(ttl, sizeof(ttl), "%d", LEDGER_BALANCE_TTL_S);
        const char *args[] = {key, r.vstr, a, p, v, ttl};
        int rv = eval_int(b, ledger_lua_balance_cas, 6, args);
        if (rv < 0)
            return;
        if (rv == 1) {
            fprintf(b->out, "%s balance worker=%" PRId64 " redis=%s ledger=%s\n", b->verb, w, rs,
                    ls);
            b->bal_fixed++;
            return;
        }
        fresh = false; /* written meanwhile: look again, the ledger may have moved too */
    }
    if (!b->failed)
        fprintf(b->out, "skip balance worker=%" PRId64 " (changing during the run)\n", w);
}

static bool known_worker(const struct rb *b, int64_t w)
{
    size_t lo = 0, hi = b->nworkers;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (b->workers[mid] == w)
            return true;
        if (b->workers[mid] < w)
            lo = mid + 1;
        else
            hi = mid;
    }
    return false;
}

static void rebuild_balances(struct rb *b)
{
    int64_t after = 0;
    char page[16];
    snprintf(page, sizeof(page), "%d", b->o->page_size > 0 ? b->o->page_size : 1000);
    for (;;) {
        char a[24];
        snprintf(a, sizeof(a), "%" PRId64, after);
        const char *params[] = {a, page};
        json_t *j = pg_json(b, "SELECT gp_ledger_snapshot($1::bigint, $2::int)::text", 2, params);
        if (!j)
            return;
        const json_t *items = json_object_get(j, "items");
        size_t i;
        const json_t *it;
        json_array_foreach(items, i, it)
        {
            int64_t w;
            struct bal l;
            if (!ledger_item(it, &w, &l)) {
                fail(b, "unexpected item in gp_ledger_snapshot");
                break;
            }
            if (b->nworkers == b->capworkers) {
                b->capworkers = b->capworkers ? 2 * b->capworkers : 1024;
                b->workers = xrealloc(b->workers, b->capworkers * sizeof(*b->workers));
            }
            b->workers[b->nworkers++] = w;
            check_balance(b, w, l);
            if (b->failed)
                break;
        }
        const char *next = json_string_value(json_object_get(j, "next_cursor"));
        bool more = next && parse_i64(next, &after) && !b->failed;
        json_decref(j);
        if (!more)
            return;
    }
}

/* bal:{w} keys of workers the ledger has no accounts for. */
static void rebuild_orphan_balances(struct rb *b)
{
    char cursor[32] = "0";
    do {
        const char *argv[] = {"SCAN", cursor, "MATCH", "bal:{*", "COUNT", "1000"};
        redisReply *r = rcmd(b, 6, argv);
        if (!r)
            return;
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
            freeReplyObject(r);
            fail(b, "unexpected SCAN reply");
            return;
        }
        snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
        const redisReply *keys = r->element[1];
        for (size_t i = 0; i < keys->elements && !b->failed; i++) {
            int64_t w;
            char id[32];
            const char *k = keys->element[i]->str;
            size_t len = strlen(k);
            if (len < 7 || len - 6 >= sizeof(id) || k[len - 1] != '}')
                continue;
            memcpy(id, k + 5, len - 6);
            id[len - 6] = '\0';
            if (!parse_i64(id, &w) || known_worker(b, w))
                continue;
            struct bal none = {.wellformed = true};
            check_balance(b, w, none);
        }
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0 && !b->failed);
}

/* ------------------------------------------------------------------------------------------ */
/* rankings */

struct board_key {
    int64_t unit;
    char period[LEDGER_PERIOD_MAX];
};

static int cmp_key(const void *x, const void *y)
{
    const struct board_key *a = x, *b = y;
    if (a->unit != b->unit)
        return a->unit < b->unit ? -1 : 1;
    return strcmp(a->period, b->period);
}

static int cmp_member(const void *x, const void *y)
{
    const struct member *a = x, *b = y;
    return a->worker < b->worker ? -1 : a->worker > b->worker;
}

/* The ledger's board; NULL on error. *n members, sorted by worker. */
static struct member *ledger_board(struct rb *b, const struct board_key *k, size_t *n)
{
    char u[24];
    snprintf(u, sizeof(u), "%" PRId64, k->unit);
    const char *params[] = {u, k->period};
    json_t *j = pg_json(b, "SELECT gp_rank_board($1::bigint, $2::text)::text", 2, params);
    if (!j)
        return NULL;
    const json_t *items = json_object_get(j, "items");
    *n = json_array_size(items);
    struct member *m = xcalloc(*n ? *n : 1, sizeof(*m));
    for (size_t i = 0; i < *n; i++) {
        const json_t *it = json_array_get(items, i);
        m[i].worker = (int64_t)json_integer_value(json_array_get(it, 0));
        m[i].points = (int64_t)json_integer_value(json_array_get(it, 1));
    }
    json_decref(j);
    qsort(m, *n, sizeof(*m), cmp_member);
    return m;
}

static const struct member *find_member(const struct member *m, size_t n, int64_t w)
{
    struct member key = {.worker = w};
    return bsearch(&key, m, n, sizeof(*m), cmp_member);
}

/* CAS one member from its observed score to the ledger's points ("" = remove). */
static void fix_member(struct rb *b, const char *key, const struct board_key *k, int64_t w,
                       const char *observed, const char *want)
{
    if (!b->o->dry_run) {
        char member[24];
        snprintf(member, sizeof(member), "%" PRId64, w);
        const char *args[] = {key, member, observed, want};
        int rv = eval_int(b, ledger_lua_rank_cas, 4, args);
        if (rv != 1) {
            if (rv == 0)
                fprintf(b->out,
                        "skip rank unit=%" PRId64 " period=%s worker=%" PRId64
                        " (changing during the run)\n",
                        k->unit, k->period, w);
            return;
        }
    }
    fprintf(b->out, "%s rank unit=%" PRId64 " period=%s worker=%" PRId64 " redis=%s ledger=%s\n",
            b->verb, k->unit, k->period, w, observed[0] ? observed : "missing",
            want[0] ? want : "none");
    b->rank_fixed++;
}

static void check_board(struct rb *b, const struct board_key *k)
{
    char key[64];
    ledger_rank_key(key, sizeof(key), k->unit, k->period);
    size_t nl = 0;
    struct member *l = ledger_board(b, k, &nl);
    if (!l)
        return;
    b->boards++;
    b->members += (long)nl;

    const char *argv[] = {"ZRANGE", key, "0", "-1", "WITHSCORES"};
    redisReply *r = rcmd(b, 5, argv);
    if (!r) {
        free(l);
        return;
    }
    size_t nr = r->type == REDIS_REPLY_ARRAY ? r->elements / 2 : 0;
    if (nr == 0 && !b->o->dry_run) {
        /* No board at all (e.g. after FLUSHALL): build it in one script call, one line. */
        const char **args = xcalloc(1 + 2 * nl, sizeof(*args));
        char *buf = xmalloc(nl * 48 + 1);
        char *p = buf;
        args[0] = key;
        for (size_t i = 0; i < nl; i++) {
            args[1 + 2 * i] = p;
            p += sprintf(p, "%" PRId64, l[i].worker) + 1;
            args[2 + 2 * i] = p;
            p += sprintf(p, "%" PRId64, l[i].points) + 1;
        }
        const char **full = xcalloc(3 + 2 * nl + 1, sizeof(*full));
        full[0] = "EVAL";
        full[1] = ledger_lua_rank_fill;
        full[2] = "1";
        memcpy(full + 3, args, (1 + 2 * nl) * sizeof(*args));
        redisReply *fr = rcmd(b, (int)(4 + 2 * nl), full);
        if (fr) {
            fprintf(b->out, "%s rank unit=%" PRId64 " period=%s board=missing members=%zu\n",
                    b->verb, k->unit, k->period, nl);
            b->rank_fixed++;
            freeReplyObject(fr);
        }
        free(full);
        free(buf);
        free(args);
        freeReplyObject(r);
        free(l);
        return;
    }

    bool marker = false;
    struct member *rm = xcalloc(nr ? nr : 1, sizeof(*rm));
    size_t nrm = 0;
    char(*junk)[64] = xcalloc(nr ? nr : 1, sizeof(*junk)); /* members that are not worker ids */
    size_t njunk = 0;
    for (size_t i = 0; i < nr; i++) {
        const char *m = r->element[2 * i]->str, *s = r->element[2 * i + 1]->str;
        int64_t w;
        if (strcmp(m, "-") == 0) {
            marker = true;
        } else if (parse_i64(m, &w)) {
            rm[nrm].worker = w;
            rm[nrm].score = strtod(s, NULL);
            snprintf(rm[nrm].scorestr, sizeof(rm[nrm].scorestr), "%s", s);
            nrm++;
        } else {
            snprintf(junk[njunk++], sizeof(junk[0]), "%s", m);
        }
    }
    freeReplyObject(r);
    qsort(rm, nrm, sizeof(*rm), cmp_member);

    /* Redis ahead of the ledger (a higher score, or a member the board does not have): maybe
     * an award committed since the board was read. Read the board again once before calling
     * anything a difference; the CAS below covers what happens after that. */
    bool ahead = false;
    for (size_t i = 0; i < nl && !ahead; i++) {
        const struct member *x = find_member(rm, nrm, l[i].worker);
        ahead = x && x->score > (double)l[i].points;
    }
    for (size_t i = 0; i < nrm && !ahead; i++)
        ahead = !find_member(l, nl, rm[i].worker);
    if (ahead) {
        size_t n2;
        struct member *l2 = ledger_board(b, k, &n2);
        if (l2) {
            free(l);
            l = l2;
            nl = n2;
        }
    }
    /* ledger members missing or different in Redis */
    for (size_t i = 0; i < nl && !b->failed; i++) {
        const struct member *x = find_member(rm, nrm, l[i].worker);
        if (x && x->score == (double)l[i].points)
            continue;
        char want[24];
        snprintf(want, sizeof(want), "%" PRId64, l[i].points);
        fix_member(b, key, k, l[i].worker, x ? x->scorestr : "", want);
    }
    /* Redis members the ledger does not have on this board */
    for (size_t i = 0; i < nrm && !b->failed; i++) {
        if (!find_member(l, nl, rm[i].worker))
            fix_member(b, key, k, rm[i].worker, rm[i].scorestr, "");
    }
    for (size_t i = 0; i < njunk && !b->failed; i++) {
        if (!b->o->dry_run) {
            const char *zargv[] = {"ZREM", key, junk[i]};
            redisReply *zr = rcmd(b, 3, zargv);
            if (!zr)
                break;
            freeReplyObject(zr);
        }
        fprintf(b->out, "%s rank unit=%" PRId64 " period=%s member=%s redis=junk ledger=none\n",
                b->verb, k->unit, k->period, junk[i]);
        b->rank_fixed++;
    }
    if (!marker && !b->failed) {
        if (!b->o->dry_run) {
            const char *zargv[] = {"ZADD", key, "-inf", "-"};
            redisReply *zr = rcmd(b, 4, zargv);
            if (zr)
                freeReplyObject(zr);
        }
        if (!b->failed) {
            fprintf(b->out, "%s rank unit=%" PRId64 " period=%s board=incomplete\n", b->verb,
                    k->unit, k->period);
            b->rank_fixed++;
        }
    }
    free(junk);
    free(rm);
    free(l);
}

static void rebuild_rankings(struct rb *b)
{
    struct board_key *keys = NULL;
    size_t n = 0, cap = 0;

    PGresult *res = PQexecParams(b->pg, "SELECT unit_id, period FROM gp_rank_keys()", 0, NULL, NULL,
                                 NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        fail(b, "%s", PQerrorMessage(b->pg));
        PQclear(res);
        return;
    }
    for (int i = 0; i < PQntuples(res); i++) {
        if (n == cap) {
            cap = cap ? 2 * cap : 256;
            keys = xrealloc(keys, cap * sizeof(*keys));
        }
        if (!parse_i64(PQgetvalue(res, i, 0), &keys[n].unit))
            continue;
        snprintf(keys[n].period, sizeof(keys[n].period), "%s", PQgetvalue(res, i, 1));
        n++;
    }
    PQclear(res);

    /* boards that exist only in Redis (a worker moved away, a unit without earners, junk) */
    char cursor[32] = "0";
    do {
        const char *argv[] = {"SCAN", cursor, "MATCH", "rank:{*", "COUNT", "1000"};
        redisReply *r = rcmd(b, 6, argv);
        if (!r)
            break;
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
            freeReplyObject(r);
            fail(b, "unexpected SCAN reply");
            break;
        }
        snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
        const redisReply *ks = r->element[1];
        for (size_t i = 0; i < ks->elements; i++) {
            char unit[32], period[16];
            int64_t u;
            if (sscanf(ks->element[i]->str, "rank:{%31[0-9]}:%15s", unit, period) != 2 ||
                !parse_i64(unit, &u) || !ledger_period_valid(period))
                continue; /* ledger_period_valid: at most 7 characters */
            if (n == cap) {
                cap = cap ? 2 * cap : 256;
                keys = xrealloc(keys, cap * sizeof(*keys));
            }
            keys[n].unit = u;
            memcpy(keys[n].period, period, strlen(period) + 1);
            n++;
        }
        freeReplyObject(r);
    } while (strcmp(cursor, "0") != 0 && !b->failed);

    if (n > 1) /* keys is NULL when Redis holds no board: qsort(NULL, 0) is undefined */
        qsort(keys, n, sizeof(*keys), cmp_key);
    for (size_t i = 0; i < n && !b->failed; i++) {
        if (i > 0 && cmp_key(&keys[i - 1], &keys[i]) == 0)
            continue;
        check_board(b, &keys[i]);
    }
    free(keys);
}

/* ------------------------------------------------------------------------------------------ */

static redisContext *redis_connect(struct rb *b)
{
    const struct ledger_rebuild_opts *o = b->o;
    int ms = o->timeout_ms > 0 ? o->timeout_ms : 5000;
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    redisContext *c = o->redis_unix_path
                          ? redisConnectUnixWithTimeout(o->redis_unix_path, tv)
                          : redisConnectWithTimeout(o->redis_host ? o->redis_host : "127.0.0.1",
                                                    o->redis_port, tv);
    if (!c || c->err) {
        fail(b, "cannot connect to redis: %s", c ? c->errstr : "out of memory");
        if (c)
            redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, tv);
    b->rc = c;
    if (o->redis_password) {
        /* Not through rcmd: its message would not say that the password is the problem. */
        const char *argv[] = {"AUTH", o->redis_user ? o->redis_user : o->redis_password,
                              o->redis_password};
        redisReply *r = redisCommandArgv(c, o->redis_user ? 3 : 2, argv, NULL);
        if (!r || r->type == REDIS_REPLY_ERROR) {
            fail(b,
                 "redis AUTH refused, check the password in redis.url or redis.password "
                 "(GRIDPOINTS_REDIS_PASSWORD): %.100s",
                 r ? r->str : c->errstr);
            if (r)
                freeReplyObject(r);
            goto err;
        }
        freeReplyObject(r);
    }
    if (o->redis_db) {
        char db[16];
        snprintf(db, sizeof(db), "%d", o->redis_db);
        const char *argv[] = {"SELECT", db};
        redisReply *r = rcmd(b, 2, argv);
        if (!r)
            goto err;
        freeReplyObject(r);
    }
    return c;
err:
    redisFree(c);
    b->rc = NULL;
    return NULL;
}

int ledger_rebuild_cache_opts(struct pg_conn *blocking_conn, const struct ledger_rebuild_opts *opts,
                              FILE *report)
{
    struct rb b = {.pg = blocking_conn, .out = report, .o = opts};
    b.verb = opts->dry_run ? "diff" : "fix";
    if (PQstatus(b.pg) != CONNECTION_OK) {
        fail(&b, "no database connection: %s", PQerrorMessage(b.pg));
        return -1;
    }
    if (!redis_connect(&b))
        return -1;
    rebuild_balances(&b);
    if (!b.failed)
        rebuild_orphan_balances(&b);
    if (!b.failed)
        rebuild_rankings(&b);
    redisFree(b.rc);
    free(b.workers);
    long total = b.bal_fixed + b.rank_fixed;
    fprintf(report,
            "rebuild-cache: %s; balances checked=%ld %s=%ld; rank boards=%ld members=%ld %s=%ld; "
            "total %s=%ld\n",
            b.failed ? "FAILED" : (opts->dry_run ? "dry run" : "done"), b.bal_checked,
            opts->dry_run ? "differ" : "fixed", b.bal_fixed, b.boards, b.members,
            opts->dry_run ? "differ" : "fixed", b.rank_fixed,
            opts->dry_run ? "differences" : "fixes", total);
    fflush(report);
    return b.failed ? -1 : (int)(total > INT32_MAX ? INT32_MAX : total);
}

int ledger_rebuild_cache(struct pg_conn *blocking_conn, const char *redis_host, int redis_port,
                         int redis_db, FILE *report)
{
    struct ledger_rebuild_opts o = {
        .redis_host = redis_host, .redis_port = redis_port, .redis_db = redis_db};
    return ledger_rebuild_cache_opts(blocking_conn, &o, report);
}
