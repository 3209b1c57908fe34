/* replica.c -- the read replica's pool, its lag poll and the per-person write marks. Contracts
 * and the lag measure: replica.h. */
#include "replica.h"
#include "app.h"
#include "config.h"
#include "db.h"
#include "kv.h"
#include "log.h"
#include "sql_build.h"

#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SAMPLES 256 /* primary (time, LSN) samples kept: 256 polls back */

struct sample {
    int64_t t_ms; /* wall clock when the primary was asked */
    uint64_t lsn;
};

struct replica {
    struct app *app;
    struct db_pool *pool;
    struct event *tick;
    int max_lag_ms, window_ms, poll_ms;
    struct sample samples[SAMPLES]; /* ring; n valid, newest at head - 1 */
    int head, n;
    bool primary_pending, replica_pending;
    int64_t asked_ms; /* when the pending primary sample was asked */
    int64_t
        applied_as_of; /* wall ms: the replica holds the primary's WAL as of then; 0 = unknown */
    int64_t last_answer_ms; /* wall ms of the replica's last good poll answer */
    bool warned_primary;    /* the URL names a primary: said once */
    bool was_fresh;         /* for logging the transitions */
};

static bool parse_lsn(const char *s, uint64_t *out)
{
    unsigned hi, lo;
    if (!s || sscanf(s, "%X/%X", &hi, &lo) != 2)
        return false;
    *out = ((uint64_t)hi << 32) | lo;
    return true;
}

int64_t replica_lag_ms(const struct replica *r)
{
    if (!r || !r->applied_as_of)
        return -1;
    /* No answer for 3 polls: the replica counts as down (a crash, a network cut). */
    int64_t now = common_wall_ms();
    if (now - r->last_answer_ms > 3 * (int64_t)r->poll_ms)
        return -1;
    int64_t lag = now - r->applied_as_of;
    return lag < 0 ? 0 : lag;
}

static bool fresh(struct replica *r)
{
    int64_t lag = replica_lag_ms(r);
    bool ok = lag >= 0 && lag <= r->max_lag_ms;
    if (ok != r->was_fresh) {
        r->was_fresh = ok;
        if (ok)
            log_info("read replica within database.replica_max_lag (lag %" PRId64
                     " ms): replica routes read it",
                     lag);
        else
            log_warn("read replica %s: replica routes read the primary",
                     lag < 0 ? "not answering" : "lags more than database.replica_max_lag");
    }
    return ok;
}

static void primary_cb(struct db_result *res, void *arg)
{
    struct replica *r = arg;
    r->primary_pending = false;
    uint64_t lsn;
    if (db_result_status(res) != ST_OK || !parse_lsn(db_result_value(res, 0, 0), &lsn))
        return;
    r->samples[r->head] = (struct sample){r->asked_ms, lsn};
    r->head = (r->head + 1) % SAMPLES;
    if (r->n < SAMPLES)
        r->n++;
}

static void replica_cb(struct db_result *res, void *arg)
{
    struct replica *r = arg;
    r->replica_pending = false;
    uint64_t replayed;
    const char *v = db_result_status(res) == ST_OK ? db_result_value(res, 0, 0) : NULL;
    if (!parse_lsn(v, &replayed)) {
        if (db_result_status(res) == ST_OK && !r->warned_primary) { /* NULL: not in recovery */
            r->warned_primary = true;
            log_warn("database.replica_url is not a replica in recovery "
                     "(pg_last_wal_replay_lsn() is NULL): replica routes read the primary");
        }
        return;
    }
    r->last_answer_ms = common_wall_ms();
    /* The newest primary sample the replica has replayed past. */
    for (int i = 1; i <= r->n; i++) {
        const struct sample *s = &r->samples[(r->head - i + SAMPLES) % SAMPLES];
        if (s->lsn <= replayed) {
            if (s->t_ms > r->applied_as_of)
                r->applied_as_of = s->t_ms;
            break;
        }
    }
    (void)fresh(r);
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    struct replica *r = arg;
    if (r->app->stopping)
        return;
    /* The replica is asked after the primary's sample of this tick went out, so its answer
     * can only be compared with samples that are older than it. */
    if (!r->primary_pending) {
        r->primary_pending = true;
        r->asked_ms = common_wall_ms();
        db_query(r->app->db, "SELECT pg_current_wal_lsn()::text", 0, NULL, primary_cb, r);
    }
    if (!r->replica_pending) {
        r->replica_pending = true;
        db_query(r->pool, "SELECT pg_last_wal_replay_lsn()::text", 0, NULL, replica_cb, r);
    }
    struct timeval tv = {r->poll_ms / 1000, (r->poll_ms % 1000) * 1000};
    evtimer_add(r->tick, &tv);
}

struct replica *replica_new(struct app *app, bool *ok)
{
    const struct config *cfg = app->cfg;
    *ok = true;
    if (!*cfg->db_replica_url)
        return NULL;
    if (cfg->db_replica_own_writes_window_ms < cfg->db_replica_max_lag_ms) {
        log_error("database.replica_own_writes_window must be at least database.replica_max_lag "
                  "(a person's reads after the window rely on the lag bound alone)");
        *ok = false;
        return NULL;
    }
    struct replica *r = xcalloc(1, sizeof *r);
    r->app = app;
    r->max_lag_ms = cfg->db_replica_max_lag_ms;
    r->window_ms = cfg->db_replica_own_writes_window_ms;
    r->poll_ms = cfg->db_replica_poll_interval_ms;
    struct db_pool_config dc = {
        .conninfo = cfg->db_replica_url,
        .size = cfg->db_replica_pool_size,
        .queue_max = cfg->db_queue_max,
        .queue_timeout_ms = cfg->db_queue_timeout_ms,
        .statement_timeout_ms = cfg->db_statement_timeout_ms,
        .search_path = SQL_BUILD_SEARCH_PATH,
        .connect_timeout_ms = cfg->db_connect_timeout_ms,
        .reconnect_max_ms = cfg->db_reconnect_max_ms,
        .retries = cfg->db_retries,
    };
    r->pool = db_pool_new(app->base, &dc);
    r->tick = evtimer_new(app->base, tick_cb, r);
    tick_cb(-1, 0, r);
    log_info("read replica configured: max lag %d ms, polled every %d ms", r->max_lag_ms,
             r->poll_ms);
    return r;
}

void replica_stop(struct replica *r)
{
    if (r && r->tick)
        evtimer_del(r->tick);
}

void replica_free(struct replica *r)
{
    if (!r)
        return;
    if (r->tick)
        event_free(r->tick);
    db_pool_free(r->pool); /* fails the pending polls: their callbacks only touch r */
    free(r);
}

bool replica_is_pool(const struct replica *r, const struct db_pool *pool)
{
    return r && pool == r->pool;
}

/* ---- routing ---- */

struct choice {
    struct replica *r;
    replica_pool_cb cb;
    void *arg;
};

static void mark_key(char *buf, size_t cap, int64_t person_id)
{
    snprintf(buf, cap, "rw:{%" PRId64 "}", person_id);
}

static void choose_cb(struct redisReply *reply, enum status st, void *arg)
{
    struct choice c = *(struct choice *)arg;
    free(arg);
    struct db_pool *pool = c.r->app->db;
    if (st == ST_OK && reply && reply->type == REDIS_REPLY_NIL) {
        pool = c.r->pool; /* no recent write */
    } else if (st == ST_OK && reply && reply->type == REDIS_REPLY_STRING) {
        /* "0": a write in progress; otherwise the wall ms its reply went out. */
        char *end;
        long long t = strtoll(reply->str, &end, 10);
        if (*end == '\0' && t > 0 && c.r->applied_as_of >= t && fresh(c.r))
            pool = c.r->pool;
    } /* Redis down or a strange value: the primary, which is always right */
    c.cb(c.arg, pool);
}

void replica_choose(struct replica *r, int64_t person_id, replica_pool_cb cb, void *arg)
{
    if (!fresh(r)) {
        cb(arg, r->app->db);
        return;
    }
    if (person_id <= 0) {
        cb(arg, r->pool);
        return;
    }
    struct choice *c = xmalloc(sizeof *c);
    *c = (struct choice){r, cb, arg};
    char key[48];
    mark_key(key, sizeof key, person_id);
    const char *argv[] = {"GET", key};
    kv_command(r->app->kv, choose_cb, c, 2, argv, NULL);
}

struct begin {
    void (*done)(void *arg);
    void *arg;
};

static void begin_cb(struct redisReply *reply, enum status st, void *arg)
{
    struct begin b = *(struct begin *)arg;
    free(arg);
    if (st != ST_OK)
        log_warn("could not mark a write for the read replica routing (Redis: %s): this "
                 "person's next reads may lag behind it",
                 status_code(st));
    b.done(b.arg);
}

static void set_mark(struct replica *r, int64_t person_id, const char *value, kv_cb cb, void *arg)
{
    char key[48], px[24];
    mark_key(key, sizeof key, person_id);
    snprintf(px, sizeof px, "%d", r->window_ms);
    const char *argv[] = {"SET", key, value, "PX", px};
    kv_command(r->app->kv, cb, arg, 5, argv, NULL);
}

void replica_write_begin(struct replica *r, int64_t person_id, void (*done)(void *arg), void *arg)
{
    struct begin *b = xmalloc(sizeof *b);
    *b = (struct begin){done, arg};
    set_mark(r, person_id, "0", begin_cb, b);
}

static void end_cb(struct redisReply *reply, enum status st, void *arg)
{
    (void)reply;
    (void)st;
    (void)arg; /* a lost stamp leaves "0" until the window ends: reads stay on the primary */
}

void replica_write_end(struct replica *r, int64_t person_id)
{
    char value[24];
    snprintf(value, sizeof value, "%" PRId64, common_wall_ms());
    set_mark(r, person_id, value, end_cb, NULL);
}
