/* db.c -- the asynchronous PostgreSQL pool: N non-blocking libpq connections on the libevent
 * base, a bounded FIFO of waiting queries, per-connection prepared statements, retries of
 * serialization failures and the SQLSTATE -> enum status classification. Contracts: db.h.
 *
 * The module owns every PGconn, every PGresult it receives (each PQclear'd exactly once, either
 * here or by result_free() after the callback) and every struct db_query from db_query() until
 * its callback has returned.
 *
 * Shapes (PgBouncer's test/asynctest.c and SV_* states, hiredis' exactly-once callbacks):
 *   connection: BROKEN -> CONNECTING -> SETUP -> IDLE <-> ACTIVE, and back to BROKEN from any
 *               of them (closed, reconnect timer armed with jittered exponential back-off);
 *   query:      NEW -> WAITING (pool->waiting, wait timer) -> RUNNING (conn->query) -> done,
 *               or DEFERRED (pool->deferred: a failure to deliver on the next loop turn, or a
 *               40001/40P01 retry delay) -> WAITING again or done.
 *
 * Callbacks run from exactly four places: a finished statement in the connection's I/O callback,
 * a query's own timer, the pool's kick event and db_pool_free(). Nothing db_query() can reach
 * calls one: that is why conn_drop() defers the failure of the running query instead of
 * delivering it, and why the "PostgreSQL is down, fail the waiters" sweep runs from the kick. */
#include "db.h"
#include "log.h"

#include <event2/event.h>
#include <event2/event_struct.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#define STMT_CACHE_MAX   64   /* distinct statements prepared per connection; beyond: unnamed */
#define BACKOFF_START_MS 100  /* first reconnect delay after a failure */
#define GUARD_SLACK_MS   5000 /* client-side guard = statement_timeout + this */
#define RETRY_BASE_MS    5    /* 40001/40P01 re-run delay: 5, 10, 20 ... ms, jittered */

/* Runs after connecting, before the connection is usable. Parameterized so no SQL is formatted. */
/* search_path: the API functions live in their own schema (sql/functions); the pool sets the
 * path once per connection, in the same round trip as the timeout, so that every query calls
 * them by their plain names. NULL ($2) keeps the server's default. */
static const char SETUP_SQL[] =
    "SELECT pg_catalog.set_config('statement_timeout', $1, false), "
    "pg_catalog.set_config('search_path', coalesce($2, pg_catalog.current_setting('search_path')), "
    "false)";

enum conn_state {
    CONN_BROKEN = 0, /* closed; conn->timer reconnects after the back-off */
    CONN_CONNECTING, /* PQconnectPoll rounds; conn->timer is the connect timeout */
    CONN_SETUP,      /* connected, SETUP_SQL in flight; same timer */
    CONN_IDLE,       /* usable; watched for EV_READ so a server shutdown is noticed before use */
    CONN_ACTIVE,     /* running conn->query; conn->timer is the client-side guard */
};

enum exec_phase {
    PH_PREPARE, /* pipelined first use: waiting for the Parse result */
    PH_EXECUTE, /* waiting for the statement's results */
    PH_SYNC,    /* pipelined: waiting for PGRES_PIPELINE_SYNC */
};

enum query_where { Q_NEW, Q_WAITING, Q_DEFERRED, Q_RUNNING };

struct stmt {
    const char *sql; /* key: the caller's static string, compared by pointer */
    char name[16];   /* "s1", "s2" ... unique on this connection */
};

struct db_query {
    struct db_pool *pool;
    const char *sql;
    int nparams;
    char **params; /* our copies; NULL entries are SQL NULL */
    db_cb cb;
    void *arg;
    enum query_where where;
    TAILQ_ENTRY(db_query) link; /* in pool->waiting or pool->deferred */
    struct event timer;         /* wait timeout, retry delay or deferred failure */
    int retries_done;           /* 40001/40P01 re-runs so far */
    bool used_cache;            /* this run executed an already prepared statement */
    bool reprepared;            /* already re-prepared once after 26000 */
    enum status fail_st;        /* deferred failure: what to deliver */
    char *fail_detail;          /* deferred failure: log detail (owned) */
};

TAILQ_HEAD(query_list, db_query);

struct db_conn {
    struct db_pool *pool;
    int id; /* 1-based, for logs */
    enum conn_state state;
    PGconn *pg;
    struct event io;    /* one-shot, re-assigned on the CURRENT PQsocket() every time */
    struct event timer; /* meaning depends on state, see enum conn_state */
    bool flushing;      /* PQflush returned 1: wait for EV_WRITE as well */
    bool failed;        /* failed at least once since its last successful connect */
    int backoff_ms;     /* last reconnect back-off; 0 after a success */
    struct db_query *query;
    enum exec_phase phase;
    bool pipelined;        /* the running query is in pipeline mode (prepare + execute) */
    PGresult *result;      /* the running query's result so far; the first error wins */
    struct stmt preparing; /* added to the cache once the Parse succeeds */
    struct stmt cache[STMT_CACHE_MAX];
    int ncache;
    unsigned next_stmt;
};

struct db_pool {
    struct event_base *base;
    struct db_pool_config cfg; /* cfg.conninfo points at our copy */
    struct db_conn *conns;     /* cfg.size of them */
    struct query_list waiting; /* FIFO */
    int nwaiting;
    struct query_list deferred;
    struct event kick; /* zero-timeout: fail waiters when down, else dispatch */
    bool closing;      /* inside db_pool_free() */
    bool down;         /* last logged "every connection failed" state */
    uint64_t rng;
    struct db_pool_stats stats; /* counters; the gauges are computed on demand */
};

struct db_result {
    PGresult *pg; /* PQclear'd by result_free() after the callback */
    enum status st;
    char sqlstate[6];
    const char *code, *message, *field; /* static, or pointing into pg */
    char *detail;                       /* owned */
};

static void conn_io_cb(evutil_socket_t fd, short what, void *arg);
static void conn_drop(struct db_conn *c, enum status st, const char *why, bool failure);
static void start_query(struct db_conn *c, struct db_query *q);
static void dispatch(struct db_pool *pool);

/* ---------------------------------------------------------------- small helpers */

/* xorshift64*: jitter only, so quality does not matter, but rand() is shared global state. */
static uint32_t rnd(struct db_pool *pool)
{
    pool->rng ^= pool->rng >> 12;
    pool->rng ^= pool->rng << 25;
    pool->rng ^= pool->rng >> 27;
    return (uint32_t)((pool->rng * 0x2545F4914F6CDD1DULL) >> 32);
}

/* A delay in [ms/2, ms]: reconnecting connections and retrying queries must not march in step. */
static int jitter(struct db_pool *pool, int ms)
{
    if (ms <= 1)
        return ms;
    return ms / 2 + (int)(rnd(pool) % (uint32_t)(ms / 2 + 1));
}

static void timer_add_ms(struct event *ev, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(ev, &tv);
}

/* libpq messages end with a newline; the log wants one line. */
static char *trimmed_dup(const char *s)
{
    char *d = xstrdup(s ? s : "");
    size_t n = strlen(d);
    while (n > 0 && (d[n - 1] == '\n' || d[n - 1] == ' ' || d[n - 1] == '\r'))
        d[--n] = '\0';
    return d;
}

/* libpq's connection errors span lines ("...failed: Connection refused\n\tIs the server
 * running..."); a log line wants them on one, whitespace runs collapsed. */
static void one_line(char *dst, size_t cap, const char *src)
{
    size_t n = 0;
    for (const char *p = src; *p && n + 1 < cap; p++) {
        bool space = *p == '\n' || *p == '\t' || *p == '\r' || *p == ' ';
        if (space && (n == 0 || dst[n - 1] == ' '))
            continue;
        dst[n++] = space ? ' ' : *p;
    }
    while (n > 0 && dst[n - 1] == ' ')
        n--;
    dst[n] = '\0';
}

static bool result_is_ok(const PGresult *r)
{
    ExecStatusType es = PQresultStatus(r);
    return es == PGRES_COMMAND_OK || es == PGRES_TUPLES_OK;
}

static bool is_retryable(const char *sqlstate)
{
    return sqlstate && (strcmp(sqlstate, "40001") == 0 || strcmp(sqlstate, "40P01") == 0);
}

/* Pool down = every connection has failed since its last success. At startup nobody has
 * failed yet, so early queries wait for the first connections instead of bouncing. */
static bool known_down(const struct db_pool *pool)
{
    for (int i = 0; i < pool->cfg.size; i++)
        if (!pool->conns[i].failed)
            return false;
    return true;
}

static struct db_conn *find_idle(struct db_pool *pool)
{
    for (int i = 0; i < pool->cfg.size; i++)
        if (pool->conns[i].state == CONN_IDLE)
            return &pool->conns[i];
    return NULL;
}

static void kick(struct db_pool *pool)
{
    if (!pool->closing)
        timer_add_ms(&pool->kick, 0);
}

/* ---------------------------------------------------------------- results */

/* SQLSTATE -> status, per the table in db.h. Connection-class states (08xxx, 57P01-57P03:
 * server shutting down or not accepting connections) are "connection lost": ST_UNAVAILABLE. */
static enum status classify(const char *ss)
{
    if (strncmp(ss, "GP", 2) == 0)
        return status_from_sqlstate(ss);
    if (strcmp(ss, "23505") == 0)
        return ST_CONFLICT;
    if (strcmp(ss, "23514") == 0 || strcmp(ss, "23503") == 0 || strncmp(ss, "22", 2) == 0)
        return ST_INVALID;
    if (is_retryable(ss) || strcmp(ss, "57014") == 0 || strncmp(ss, "08", 2) == 0 ||
        strcmp(ss, "57P01") == 0 || strcmp(ss, "57P02") == 0 || strcmp(ss, "57P03") == 0)
        return ST_UNAVAILABLE;
    return ST_INTERNAL;
}

/* What a client may see for failures that are not our own GPxxx errors. */
static const char *generic_message(enum status st)
{
    if (st == ST_OK)
        return "";
    if (st == ST_UNAVAILABLE)
        return "database unavailable";
    if (st == ST_CONFLICT) /* outside GPxxx, only 23505 maps here */
        return "conflict with existing data";
    if (st == ST_INVALID)
        return "invalid value";
    return "internal error";
}

static struct db_result *result_failure(enum status st, const char *detail)
{
    struct db_result *r = xcalloc(1, sizeof *r);
    r->st = st;
    r->code = status_code(st);
    r->message = generic_message(st);
    r->field = "";
    r->detail = trimmed_dup(detail);
    return r;
}

/* Takes ownership of pg. tx_dirty: the connection was not PQTRANS_IDLE afterwards, so whatever
 * the statement did is about to be rolled back by dropping the connection: not a success. */
static struct db_result *result_from_pg(PGresult *pg, bool tx_dirty)
{
    struct db_result *r = xcalloc(1, sizeof *r);
    r->pg = pg;
    r->field = "";
    if (result_is_ok(pg) && !tx_dirty) {
        r->st = ST_OK;
        r->code = status_code(ST_OK);
        r->message = "";
        r->detail = xstrdup("");
        return r;
    }
    if (result_is_ok(pg)) {
        r->st = ST_INTERNAL;
        r->code = status_code(ST_INTERNAL);
        r->message = generic_message(ST_INTERNAL);
        r->detail = xstrdup("statement left a transaction open; connection dropped");
        return r;
    }
    const char *ss = PQresultErrorField(pg, PG_DIAG_SQLSTATE);
    snprintf(r->sqlstate, sizeof r->sqlstate, "%s", ss ? ss : "");
    r->st = ss ? classify(ss) : ST_INTERNAL;
    r->detail = trimmed_dup(PQresultErrorMessage(pg));
    if (*r->detail == '\0') {
        free(r->detail);
        r->detail = xstrdup(PQresStatus(PQresultStatus(pg)));
    }
    r->code = status_code(r->st);
    r->message = generic_message(r->st);
    if (strncmp(r->sqlstate, "GP", 2) == 0) {
        /* Our own SQL's errors carry client-safe text: HINT = code, MESSAGE, COLUMN = field. */
        const char *hint = PQresultErrorField(pg, PG_DIAG_MESSAGE_HINT);
        const char *primary = PQresultErrorField(pg, PG_DIAG_MESSAGE_PRIMARY);
        const char *column = PQresultErrorField(pg, PG_DIAG_COLUMN_NAME);
        if (hint && *hint)
            r->code = hint;
        if (primary && *primary)
            r->message = primary;
        if (column)
            r->field = column;
    }
    return r;
}

static void result_free(struct db_result *r)
{
    PQclear(r->pg); /* PQclear(NULL) is a no-op */
    free(r->detail);
    free(r);
}

/* ---------------------------------------------------------------- queries */

static void query_free(struct db_query *q)
{
    for (int i = 0; i < q->nparams; i++)
        free(q->params[i]);
    free(q->params);
    free(q->fail_detail);
    free(q);
}

/* Takes q out of whichever list holds it and disarms its timer (STYLE §7: always before free). */
static void query_unlink(struct db_query *q)
{
    struct db_pool *pool = q->pool;
    event_del(&q->timer);
    if (q->where == Q_WAITING) {
        TAILQ_REMOVE(&pool->waiting, q, link);
        pool->nwaiting--;
    } else if (q->where == Q_DEFERRED) {
        TAILQ_REMOVE(&pool->deferred, q, link);
    }
    q->where = Q_NEW;
}

/* The only place a callback is invoked. q and res are freed after it returns; the callback never
 * sees q, so it cannot free it under us, and it may call db_query() freely. */
static void finish(struct db_query *q, struct db_result *res)
{
    query_unlink(q);
    if (res->st != ST_OK)
        q->pool->stats.errors++;
    q->cb(res, q->arg);
    result_free(res);
    query_free(q);
}

static void fail_now(struct db_query *q, enum status st, const char *detail)
{
    finish(q, result_failure(st, detail));
}

static void deferred_fail_cb(evutil_socket_t fd, short what, void *arg)
{
    struct db_query *q = arg;
    fail_now(q, q->fail_st, q->fail_detail);
}

/* Failure delivered from the loop on its next turn: the caller may be db_query() itself. */
static void defer_fail(struct db_query *q, enum status st, const char *detail)
{
    struct db_pool *pool = q->pool;
    query_unlink(q);
    q->fail_st = st;
    free(q->fail_detail);
    q->fail_detail = trimmed_dup(detail);
    q->where = Q_DEFERRED;
    TAILQ_INSERT_TAIL(&pool->deferred, q, link);
    event_assign(&q->timer, pool->base, -1, 0, deferred_fail_cb, q);
    timer_add_ms(&q->timer, 0);
}

static void wait_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    struct db_query *q = arg;
    q->pool->stats.timeouts++;
    fail_now(q, ST_UNAVAILABLE, "timed out waiting for a database connection");
}

/* front: a query that already waited its turn (retry, send failure) goes back to the head. */
static void enqueue(struct db_query *q, bool front)
{
    struct db_pool *pool = q->pool;
    query_unlink(q);
    q->where = Q_WAITING;
    if (front)
        TAILQ_INSERT_HEAD(&pool->waiting, q, link);
    else
        TAILQ_INSERT_TAIL(&pool->waiting, q, link);
    pool->nwaiting++;
    event_assign(&q->timer, pool->base, -1, 0, wait_timeout_cb, q);
    if (pool->cfg.queue_timeout_ms > 0)
        timer_add_ms(&q->timer, pool->cfg.queue_timeout_ms);
}

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
    struct db_query *q = arg;
    struct db_pool *pool = q->pool;
    if (known_down(pool)) {
        fail_now(q, ST_UNAVAILABLE,
                 "postgres is unavailable (while retrying a serialization failure)");
        return;
    }
    enqueue(q, true);
    dispatch(pool);
}

static void schedule_retry(struct db_query *q)
{
    struct db_pool *pool = q->pool;
    int shift = q->retries_done < 6 ? q->retries_done : 6;
    query_unlink(q);
    q->where = Q_DEFERRED;
    TAILQ_INSERT_TAIL(&pool->deferred, q, link);
    event_assign(&q->timer, pool->base, -1, 0, retry_cb, q);
    timer_add_ms(&q->timer, jitter(pool, RETRY_BASE_MS << shift));
}

/* Hands waiting queries to idle connections, oldest first. Never invokes a callback: a send
 * failure requeues the query or defers its failure. Safe to re-enter from a callback. */
static void dispatch(struct db_pool *pool)
{
    struct db_query *q;
    struct db_conn *c;
    while (!pool->closing && (q = TAILQ_FIRST(&pool->waiting)) && (c = find_idle(pool))) {
        query_unlink(q);
        start_query(c, q);
    }
}

/* Zero-timeout pool event, armed whenever a connection drops: when PostgreSQL is known to be
 * down, fail every waiter now instead of letting each sit out queue_timeout_ms. */
static void kick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct db_pool *pool = arg;
    if (!known_down(pool)) {
        dispatch(pool);
        return;
    }
    if (!pool->down) {
        pool->down = true;
        log_warn("postgres unavailable: every connection failed, failing waiting queries");
    }
    /* Callbacks that resubmit see the pool down and get a deferred failure, not the queue. */
    struct db_query *q;
    while ((q = TAILQ_FIRST(&pool->waiting)))
        fail_now(q, ST_UNAVAILABLE, "postgres is unavailable");
}

/* ---------------------------------------------------------------- prepared statement cache */

static const struct stmt *cache_find(const struct db_conn *c, const char *sql)
{
    for (int i = 0; i < c->ncache; i++)
        if (c->cache[i].sql == sql)
            return &c->cache[i];
    return NULL;
}

static void cache_drop(struct db_conn *c, const char *sql)
{
    for (int i = 0; i < c->ncache; i++) {
        if (c->cache[i].sql == sql) {
            c->cache[i] = c->cache[--c->ncache];
            return;
        }
    }
}

/* ---------------------------------------------------------------- connections */

/* libpq's default notice processor prints to stderr; route notices to the debug log. */
static void notice_cb(void *arg, const PGresult *res)
{
    const struct db_conn *c = arg;
    const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    log_debug("postgres notice conn=%d: %s", c->id, msg ? msg : "");
}

/* Re-arms the one-shot I/O event on the connection's CURRENT socket (it may change between
 * PQconnectPoll rounds: asynctest.c, anti-pattern 2). event_del first: event_assign must never
 * touch a pending event. */
static void conn_watch(struct db_conn *c, short what)
{
    event_del(&c->io);
    int fd = PQsocket(c->pg);
    if (fd < 0) {
        conn_drop(c, ST_UNAVAILABLE, "connection has no socket", true);
        return;
    }
    event_assign(&c->io, c->pool->base, fd, what, conn_io_cb, c);
    event_add(&c->io, NULL);
}

static void conn_wait_input(struct db_conn *c)
{
    conn_watch(c, (short)(EV_READ | (c->flushing ? EV_WRITE : 0)));
}

/* False when the connection was dropped. PQflush > 0: more to send once writable. */
static bool conn_flush(struct db_conn *c)
{
    int r = PQflush(c->pg);
    if (r < 0) {
        conn_drop(c, ST_UNAVAILABLE, PQerrorMessage(c->pg), true);
        return false;
    }
    c->flushing = r > 0;
    return true;
}

/* Unregisters the events BEFORE PQfinish closes the socket under them. */
static void conn_close(struct db_conn *c)
{
    event_del(&c->io);
    event_del(&c->timer);
    PQclear(c->result);
    c->result = NULL;
    if (c->pg)
        PQfinish(c->pg);
    c->pg = NULL;
    c->flushing = false;
    c->ncache = 0; /* prepared statements die with the session */
    c->next_stmt = 0;
}

/* Closes the connection and schedules a reconnect. failure: PostgreSQL failed us (back-off,
 * counts toward "pool down"); otherwise we chose to reset it (reconnect at once). A running
 * query fails with st on the next loop turn -- never retried, it may have committed. */
static void conn_drop(struct db_conn *c, enum status st, const char *why, bool failure)
{
    struct db_pool *pool = c->pool;
    struct db_query *q = c->query;
    char reason[512]; /* why may live in PQerrorMessage(): copied before PQfinish */
    one_line(reason, sizeof reason, why && *why ? why : "unknown error");

    enum conn_state was = c->state;
    c->query = NULL;
    conn_close(c);
    c->state = CONN_BROKEN;

    int delay = 0;
    if (failure) {
        int cap = pool->cfg.reconnect_max_ms > 0 ? pool->cfg.reconnect_max_ms : BACKOFF_START_MS;
        c->backoff_ms = c->backoff_ms ? c->backoff_ms * 2 : BACKOFF_START_MS;
        if (c->backoff_ms > cap)
            c->backoff_ms = cap;
        delay = jitter(pool, c->backoff_ms);
        if (was == CONN_IDLE || was == CONN_ACTIVE)
            log_warn("postgres connection lost: %s (conn=%d reconnect_ms=%d)", reason, c->id,
                     delay);
        else if (!c->failed)
            log_warn("postgres connect failed: %s (conn=%d reconnect_ms=%d)", reason, c->id, delay);
        else
            log_debug("postgres connect failed again: %s (conn=%d reconnect_ms=%d)", reason, c->id,
                      delay);
        c->failed = true;
    } else {
        log_info("postgres connection reset: %s (conn=%d)", reason, c->id);
    }
    timer_add_ms(&c->timer, delay);

    if (q) {
        char detail[600];
        snprintf(detail, sizeof detail, "postgres connection lost during the query: %s", reason);
        defer_fail(q, st, detail);
    }
    kick(pool);
}

static void conn_connect(struct db_conn *c)
{
    struct db_pool *pool = c->pool;
    /* application_name first: a value in conninfo (expanded from dbname) may override it. */
    const char *const kw[] = {"application_name", "dbname", NULL};
    const char *const val[] = {"gridpointsd", pool->cfg.conninfo, NULL};

    c->state = CONN_CONNECTING;
    c->pg = PQconnectStartParams(kw, val, 1);
    if (pool->cfg.connect_timeout_ms > 0)
        timer_add_ms(&c->timer, pool->cfg.connect_timeout_ms);
    if (!c->pg) {
        conn_drop(c, ST_UNAVAILABLE, "out of memory starting a connection", true);
        return;
    }
    if (PQstatus(c->pg) == CONNECTION_BAD) {
        conn_drop(c, ST_UNAVAILABLE, PQerrorMessage(c->pg), true);
        return;
    }
    PQsetNoticeReceiver(c->pg, notice_cb, c);
    /* As if PQconnectPoll had returned PGRES_POLLING_WRITING (libpq docs, asynctest.c). */
    conn_watch(c, EV_WRITE);
}

static void conn_setup(struct db_conn *c)
{
    char ms[16];
    snprintf(ms, sizeof ms, "%d", c->pool->cfg.statement_timeout_ms);
    const char *const params[2] = {ms, c->pool->cfg.search_path};

    if (PQsetnonblocking(c->pg, 1) != 0 ||
        !PQsendQueryParams(c->pg, SETUP_SQL, 2, NULL, params, NULL, NULL, 0)) {
        conn_drop(c, ST_UNAVAILABLE, PQerrorMessage(c->pg), true);
        return;
    }
    c->state = CONN_SETUP;
    if (!conn_flush(c))
        return;
    conn_wait_input(c);
}

static void conn_ready(struct db_conn *c)
{
    struct db_pool *pool = c->pool;
    bool was_failed = c->failed;
    event_del(&c->timer); /* the connect timeout */
    c->state = CONN_IDLE;
    c->failed = false;
    c->backoff_ms = 0;
    log_info("postgres connection ready (conn=%d host=%s port=%s db=%s)", c->id, PQhost(c->pg),
             PQport(c->pg), PQdb(c->pg));
    if (pool->down) {
        pool->down = false;
        log_info("postgres available again");
    }
    /* PostgreSQL accepts connections again: the other connections still sleeping out their
     * back-off (up to reconnect_max) reconnect now, so that the whole pool serves within one
     * connect round trip instead of one connection carrying the load meanwhile. */
    if (was_failed) {
        for (int i = 0; i < pool->cfg.size; i++) {
            struct db_conn *o = &pool->conns[i];
            if (o != c && o->state == CONN_BROKEN && o->failed) {
                o->backoff_ms = 0;
                event_del(&o->timer);
                timer_add_ms(&o->timer, 0);
            }
        }
    }
    conn_watch(c, EV_READ);
    dispatch(pool);
}

static void conn_poll(struct db_conn *c)
{
    switch (PQconnectPoll(c->pg)) {
    case PGRES_POLLING_READING:
        conn_watch(c, EV_READ);
        return;
    case PGRES_POLLING_WRITING:
        conn_watch(c, EV_WRITE);
        return;
    case PGRES_POLLING_OK:
        conn_setup(c);
        return;
    default:
        conn_drop(c, ST_UNAVAILABLE, PQerrorMessage(c->pg), true);
        return;
    }
}

static void conn_setup_input(struct db_conn *c)
{
    while (!PQisBusy(c->pg)) {
        if (PQstatus(c->pg) == CONNECTION_BAD) {
            conn_drop(c, ST_UNAVAILABLE, PQerrorMessage(c->pg), true);
            return;
        }
        PGresult *r = PQgetResult(c->pg);
        if (!r) {
            conn_ready(c);
            return;
        }
        if (!result_is_ok(r)) {
            char why[512];
            snprintf(why, sizeof why, "could not set statement_timeout: %s",
                     PQresultErrorMessage(r));
            PQclear(r);
            conn_drop(c, ST_UNAVAILABLE, why, true);
            return;
        }
        PQclear(r);
    }
    conn_wait_input(c);
}

/* Nothing is expected on an idle connection; readable means the server is going away (FATAL
 * 57P01 on shutdown, then EOF) or sent an asynchronous message we drop. */
static void conn_idle_input(struct db_conn *c)
{
    PGresult *r;
    while (!PQisBusy(c->pg) && (r = PQgetResult(c->pg)))
        PQclear(r);
    if (PQstatus(c->pg) == CONNECTION_BAD) {
        conn_drop(c, ST_UNAVAILABLE, PQerrorMessage(c->pg), true);
        return;
    }
    conn_watch(c, EV_READ);
}

/* Back to IDLE after a statement -- unless it left a transaction open: such a connection is
 * dropped, never reused (STYLE §5; PgBouncer's "server got dirty"). */
static void conn_release(struct db_conn *c, bool dirty)
{
    if (dirty) {
        conn_drop(c, ST_INTERNAL, "statement left a transaction open", false);
        return;
    }
    c->state = CONN_IDLE;
    conn_watch(c, EV_READ);
}

/* The statement's results are all in (c->result). Decide: re-prepare (26000), retry (40001,
 * 40P01), or deliver. The connection is settled before the callback runs, so a db_query() from
 * inside the callback may reuse it at once; nothing touches c after the callback. */
static void query_done(struct db_conn *c)
{
    struct db_pool *pool = c->pool;
    struct db_query *q = c->query;
    if (PQstatus(c->pg) == CONNECTION_BAD) {
        conn_drop(c, ST_UNAVAILABLE, PQerrorMessage(c->pg), true);
        return;
    }
    PGresult *pg = c->result;
    c->query = NULL;
    c->result = NULL;
    event_del(&c->timer); /* the client-side guard */
    bool dirty = PQtransactionStatus(c->pg) != PQTRANS_IDLE;
    const char *ss = pg && !result_is_ok(pg) ? PQresultErrorField(pg, PG_DIAG_SQLSTATE) : NULL;

    if (!dirty && ss && strcmp(ss, "26000") == 0 && q->used_cache && !q->reprepared) {
        /* Our cached statement vanished (DISCARD ALL, a pooler in between): forget it and run
         * once more, which prepares it again. It never executed, so this is safe. */
        log_info("postgres prepared statement vanished, preparing it again (conn=%d)", c->id);
        PQclear(pg);
        cache_drop(c, q->sql);
        q->reprepared = true;
        c->state = CONN_IDLE;
        start_query(c, q);
        return;
    }
    if (!dirty && is_retryable(ss) && q->retries_done < pool->cfg.retries) {
        PQclear(pg);
        q->retries_done++;
        pool->stats.retries++;
        conn_release(c, dirty);
        schedule_retry(q);
        dispatch(pool);
        return;
    }

    struct db_result *res = pg ? result_from_pg(pg, dirty)
                               : result_failure(ST_INTERNAL, "statement returned no result");
    if (strcmp(res->sqlstate, "57014") == 0)
        pool->stats.timeouts++;
    conn_release(c, dirty);
    finish(q, res);
    dispatch(pool);
}

/* Keeps one result per statement: the last success, or the first error (a pipelined prepare's
 * error outranks the PGRES_PIPELINE_ABORTED that follows it). */
static void keep_result(struct db_conn *c, PGresult *r)
{
    if (!c->result) {
        c->result = r;
    } else if (!result_is_ok(c->result)) {
        PQclear(r);
    } else {
        PQclear(c->result);
        c->result = r;
    }
}

/* asynctest.c's loop: while !PQisBusy, PQgetResult until the command is complete. In pipeline
 * mode the sequence is: Parse result, NULL, statement results, NULL, PGRES_PIPELINE_SYNC. */
static void conn_active_input(struct db_conn *c)
{
    for (;;) {
        if (PQstatus(c->pg) == CONNECTION_BAD) {
            conn_drop(c, ST_UNAVAILABLE, PQerrorMessage(c->pg), true);
            return;
        }
        if (PQisBusy(c->pg)) {
            conn_wait_input(c);
            return;
        }
        PGresult *r = PQgetResult(c->pg);
        ExecStatusType es = r ? PQresultStatus(r) : PGRES_EMPTY_QUERY;
        if (es == PGRES_COPY_IN || es == PGRES_COPY_OUT || es == PGRES_COPY_BOTH) {
            /* PQgetResult would return the COPY state forever; not something we run. */
            PQclear(r);
            conn_drop(c, ST_INTERNAL, "statement started a COPY", false);
            return;
        }
        switch (c->phase) {
        case PH_PREPARE:
            if (!r) {
                c->phase = PH_EXECUTE;
            } else if (es == PGRES_COMMAND_OK) {
                PQclear(r);
                if (c->ncache < STMT_CACHE_MAX)
                    c->cache[c->ncache++] = c->preparing;
            } else {
                keep_result(c, r); /* the query's callback gets the prepare's error */
            }
            break;
        case PH_EXECUTE:
            if (r) {
                keep_result(c, r);
            } else if (c->pipelined) {
                c->phase = PH_SYNC;
            } else {
                query_done(c);
                return;
            }
            break;
        case PH_SYNC:
            if (!r) {
                conn_drop(c, ST_UNAVAILABLE, "pipeline ended without a sync", false);
                return;
            }
            if (es != PGRES_PIPELINE_SYNC) {
                keep_result(c, r);
                break;
            }
            PQclear(r);
            if (!PQexitPipelineMode(c->pg)) {
                conn_drop(c, ST_UNAVAILABLE, PQerrorMessage(c->pg), false);
                return;
            }
            query_done(c);
            return;
        }
    }
}

static void conn_io_cb(evutil_socket_t fd, short what, void *arg)
{
    struct db_conn *c = arg;
    if (c->state == CONN_CONNECTING) {
        conn_poll(c);
        return;
    }
    if ((what & EV_READ) && !PQconsumeInput(c->pg)) {
        conn_drop(c, ST_UNAVAILABLE, PQerrorMessage(c->pg), true);
        return;
    }
    PGnotify *n;
    while ((n = PQnotifies(c->pg)))
        PQfreemem(n);
    if (c->flushing && !conn_flush(c))
        return;
    switch (c->state) {
    case CONN_SETUP:
        conn_setup_input(c);
        return;
    case CONN_IDLE:
        conn_idle_input(c);
        return;
    case CONN_ACTIVE:
        conn_active_input(c);
        return;
    default:
        return;
    }
}

static void conn_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct db_conn *c = arg;
    switch (c->state) {
    case CONN_BROKEN:
        conn_connect(c);
        return;
    case CONN_CONNECTING:
    case CONN_SETUP:
        conn_drop(c, ST_UNAVAILABLE, "connect timed out", true);
        return;
    case CONN_ACTIVE:
        /* statement_timeout did not answer in time: the server or network is gone. */
        c->pool->stats.timeouts++;
        conn_drop(c, ST_UNAVAILABLE, "no answer within statement_timeout", true);
        return;
    case CONN_IDLE:
        return;
    }
}

/* Sends q on idle connection c. First use of a statement on this connection: one round trip in
 * pipeline mode (Parse + Bind/Execute + Sync); later uses: PQsendQueryPrepared. */
static void start_query(struct db_conn *c, struct db_query *q)
{
    struct db_pool *pool = c->pool;
    const char *const *params = (const char *const *)q->params;
    const struct stmt *st = cache_find(c, q->sql);
    int ok;

    c->query = q;
    q->where = Q_RUNNING;
    c->state = CONN_ACTIVE;
    c->result = NULL;
    q->used_cache = st != NULL;
    c->pipelined = false;
    c->phase = PH_EXECUTE;
    if (st) {
        ok = PQsendQueryPrepared(c->pg, st->name, q->nparams, params, NULL, NULL, 0);
    } else if (c->ncache == STMT_CACHE_MAX) {
        /* More distinct statements than we ever expect: run this one unnamed. */
        ok = PQsendQueryParams(c->pg, q->sql, q->nparams, NULL, params, NULL, NULL, 0);
    } else {
        c->pipelined = true;
        c->phase = PH_PREPARE;
        c->preparing.sql = q->sql;
        snprintf(c->preparing.name, sizeof c->preparing.name, "s%u", ++c->next_stmt);
        ok = PQenterPipelineMode(c->pg) &&
             PQsendPrepare(c->pg, c->preparing.name, q->sql, q->nparams, NULL) &&
             PQsendQueryPrepared(c->pg, c->preparing.name, q->nparams, params, NULL, NULL, 0) &&
             PQpipelineSync(c->pg);
    }
    if (!ok) {
        c->query = NULL;
        if (PQstatus(c->pg) == CONNECTION_BAD) {
            /* The Sync never reached the server, so nothing ran: another connection may. */
            enqueue(q, true);
            conn_drop(c, ST_UNAVAILABLE, PQerrorMessage(c->pg), true);
            return;
        }
        /* libpq refused the call itself (e.g. parameter count): this query's fault. The
         * half-built pipeline makes the connection unusable, so reset it too. */
        char why[512];
        snprintf(why, sizeof why, "could not send statement: %s", PQerrorMessage(c->pg));
        defer_fail(q, ST_INTERNAL, why);
        conn_drop(c, ST_INTERNAL, why, false);
        return;
    }
    if (pool->cfg.statement_timeout_ms > 0)
        timer_add_ms(&c->timer, pool->cfg.statement_timeout_ms + GUARD_SLACK_MS);
    if (!conn_flush(c))
        return;
    conn_wait_input(c);
}

/* ---------------------------------------------------------------- public API */

struct db_pool *db_pool_new(struct event_base *base, const struct db_pool_config *cfg)
{
    ASSERT(base && cfg && cfg->conninfo && cfg->size > 0);
    struct db_pool *pool = xcalloc(1, sizeof *pool);
    pool->base = base;
    pool->cfg = *cfg;
    pool->cfg.conninfo = xstrdup(cfg->conninfo);
    pool->cfg.search_path = cfg->search_path ? xstrdup(cfg->search_path) : NULL;
    pool->conns = xcalloc((size_t)cfg->size, sizeof *pool->conns);
    TAILQ_INIT(&pool->waiting);
    TAILQ_INIT(&pool->deferred);
    evtimer_assign(&pool->kick, base, kick_cb, pool);
    pool->rng =
        (uint64_t)common_wall_ms() ^ ((uint64_t)(uintptr_t)pool << 16) ^ 0x9E3779B97F4A7C15ULL;
    log_info("postgres pool starting (size=%d)", cfg->size);
    for (int i = 0; i < cfg->size; i++) {
        struct db_conn *c = &pool->conns[i];
        c->pool = pool;
        c->id = i + 1;
        c->state = CONN_BROKEN;
        /* Assigned once here so that event_del() is always valid on them. */
        event_assign(&c->io, base, -1, 0, conn_io_cb, c);
        evtimer_assign(&c->timer, base, conn_timer_cb, c);
        conn_connect(c);
    }
    return pool;
}

void db_pool_shutdown(struct db_pool *pool)
{
    if (pool->closing)
        return;
    pool->closing = true; /* dispatch() stops; db_query() defers from now on */
    event_del(&pool->kick);
    int failed = 0;
    for (int i = 0; i < pool->cfg.size; i++) {
        struct db_conn *c = &pool->conns[i];
        if (c->query) {
            struct db_query *q = c->query;
            c->query = NULL;
            defer_fail(q, ST_UNAVAILABLE, "pool is shutting down (query was running)");
            failed++;
        }
        conn_close(c);
        c->state = CONN_BROKEN;
    }
    struct db_query *q;
    while ((q = TAILQ_FIRST(&pool->waiting))) {
        defer_fail(q, ST_UNAVAILABLE, "pool is shutting down");
        failed++;
    }
    if (failed)
        log_warn("postgres pool shut down with %d queries pending: they fail with 503", failed);
}

void db_pool_free(struct db_pool *pool)
{
    if (!pool)
        return;
    /* Everything running or waiting moves to the deferred list, failed below right away
     * (the loop is not running any more to deliver it later). */
    db_pool_shutdown(pool);
    /* Loop until both lists stay empty: a callback may submit again, which lands in deferred. */
    for (;;) {
        struct db_query *q = TAILQ_FIRST(&pool->waiting);
        if (!q)
            q = TAILQ_FIRST(&pool->deferred);
        if (!q)
            break;
        if (q->fail_detail)
            fail_now(q, q->fail_st, q->fail_detail);
        else
            fail_now(q, ST_UNAVAILABLE, "pool is shutting down");
    }
    log_info("postgres pool closed");
    free(pool->conns);
    free((char *)pool->cfg.conninfo);
    free((char *)pool->cfg.search_path);
    free(pool);
}

void db_pool_get_stats(const struct db_pool *pool, struct db_pool_stats *out)
{
    *out = pool->stats;
    out->size = pool->cfg.size;
    out->connected = 0;
    out->in_use = 0;
    for (int i = 0; i < pool->cfg.size; i++) {
        enum conn_state s = pool->conns[i].state;
        out->connected += s == CONN_IDLE || s == CONN_ACTIVE;
        out->in_use += s == CONN_ACTIVE;
    }
    out->waiting = pool->nwaiting;
}

bool db_pool_is_up(const struct db_pool *pool)
{
    for (int i = 0; i < pool->cfg.size; i++)
        if (pool->conns[i].state == CONN_IDLE || pool->conns[i].state == CONN_ACTIVE)
            return true;
    return false;
}

void db_query(struct db_pool *pool, const char *sql, int nparams, const char *const *params,
              db_cb cb, void *arg)
{
    ASSERT(pool && sql && cb && nparams >= 0 && nparams <= 65535);
    ASSERT(nparams == 0 || params);
    struct db_query *q = xcalloc(1, sizeof *q);
    q->pool = pool;
    q->sql = sql;
    q->nparams = nparams;
    q->params = xcalloc((size_t)nparams, sizeof *q->params);
    for (int i = 0; i < nparams; i++)
        q->params[i] = params[i] ? xstrdup(params[i]) : NULL;
    q->cb = cb;
    q->arg = arg;
    q->where = Q_NEW;
    evtimer_assign(&q->timer, pool->base, deferred_fail_cb, q);
    pool->stats.queries++;

    if (pool->closing) {
        defer_fail(q, ST_UNAVAILABLE, "pool is shutting down");
        return;
    }
    struct db_conn *c;
    if (TAILQ_EMPTY(&pool->waiting) && (c = find_idle(pool))) {
        start_query(c, q); /* invokes no callback, even when the send fails */
        return;
    }
    if (known_down(pool)) {
        pool->stats.rejected++;
        defer_fail(q, ST_UNAVAILABLE, "postgres is unavailable");
        return;
    }
    if (pool->nwaiting >= pool->cfg.queue_max) {
        pool->stats.rejected++;
        defer_fail(q, ST_UNAVAILABLE, "database wait queue is full");
        return;
    }
    enqueue(q, false);
}

/* ---------------------------------------------------------------- result access */

enum status db_result_status(const struct db_result *res)
{
    return res->st;
}

const char *db_result_sqlstate(const struct db_result *res)
{
    return res->sqlstate;
}

const char *db_result_error_code(const struct db_result *res)
{
    return res->code;
}

const char *db_result_error_message(const struct db_result *res)
{
    return res->message;
}

const char *db_result_error_field(const struct db_result *res)
{
    return res->field;
}

const char *db_result_log_detail(const struct db_result *res)
{
    return res->detail;
}

int db_result_ntuples(const struct db_result *res)
{
    return res->pg ? PQntuples(res->pg) : 0;
}

int db_result_nfields(const struct db_result *res)
{
    return res->pg ? PQnfields(res->pg) : 0;
}

const char *db_result_value(const struct db_result *res, int row, int col)
{
    if (!res->pg || row < 0 || col < 0 || row >= PQntuples(res->pg) || col >= PQnfields(res->pg))
        return NULL;
    if (PQgetisnull(res->pg, row, col))
        return NULL;
    return PQgetvalue(res->pg, row, col);
}

json_t *db_result_json(const struct db_result *res)
{
    if (db_result_status(res) != ST_OK)
        return NULL;
    const char *v = db_result_value(res, 0, 0);
    return v ? json_loads(v, 0, NULL) : NULL;
}

struct pg_result *db_result_pg(const struct db_result *res)
{
    return res->pg;
}
