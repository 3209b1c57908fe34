/* janitor.c -- start-up schema check and periodic sweeps.
 *
 * Each sweep is a SQL function returning jsonb; a sweep that returned a full batch runs again
 * on the next loop turn so a backlog (say, after every instance was down for an hour) drains
 * at full speed, and otherwise waits for its interval. At most one call per sweep is in flight
 * per instance. */
#include "janitor.h"
#include "audit.h"
#include "app.h"
#include "common.h"
#include "config.h"
#include "db.h"
#include "log.h"
#include "metrics.h"
#include "sql_build.h"
#include "sweeps.h"

#include <event2/event.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct sweep {
    struct janitor *j;
    const struct sweep_def *def;
    struct event *timer;
    bool running;
    int64_t cursor; /* where a paged sweep continues; 0 = from the start */
};

struct janitor {
    struct app *app;
    int *exit_code;
    struct event *schema_timer;
    bool schema_checked, schema_running, stopped;
    struct sweep sweeps[16];
    int nsweeps;
    void (*idle)(void *);
    void *idle_arg;
};

static int pending(const struct janitor *j)
{
    int n = j->schema_running ? 1 : 0;
    for (int i = 0; i < j->nsweeps; i++)
        n += j->sweeps[i].running ? 1 : 0;
    return n;
}

static void maybe_idle(struct janitor *j)
{
    if (j->stopped && j->idle && pending(j) == 0) {
        void (*idle)(void *) = j->idle;
        j->idle = NULL;
        idle(j->idle_arg);
    }
}

static void arm(struct sweep *s, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(s->timer, &tv);
}

static void sweep_cb(struct db_result *res, void *arg)
{
    struct sweep *s = arg;
    struct janitor *j = s->j;
    s->running = false;
    s->cursor = 0;
    metrics_sweep(j->app->metrics, s->def->name, db_result_status(res) == ST_OK);
    if (db_result_status(res) == ST_OK) {
        json_t *reply = j->stopped ? NULL : db_result_json(res);
        if (reply)
            s->cursor = s->def->on_result(j->app, reply);
        json_decref(reply);
    } else if (!j->stopped) {
        /* An outage is expected now and then (warn); anything else is a bug (error). */
        if (db_result_status(res) == ST_UNAVAILABLE)
            log_warn("sweep %s failed: %s", s->def->name, db_result_log_detail(res));
        else
            log_error("sweep %s failed: %s", s->def->name, db_result_log_detail(res));
    }
    if (j->stopped) {
        maybe_idle(j);
        return;
    }
    arm(s, s->cursor ? 0 : s->def->interval_ms(j->app->cfg));
}

static void sweep_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct sweep *s = arg;
    struct janitor *j = s->j;
    if (j->stopped || s->running)
        return;
    s->running = true;
    char batch[16], cursor[24];
    snprintf(batch, sizeof batch, "%d", j->app->cfg->timer_batch_size);
    snprintf(cursor, sizeof cursor, "%lld", (long long)s->cursor);
    const char *params[] = {batch, s->cursor ? cursor : NULL};
    char args[256];
    if (s->def->args) {
        s->def->args(j->app->cfg, args, sizeof args);
        params[1] = args;
    }
    db_query(j->app->db, s->def->sql, s->def->nparams, params, sweep_cb, s);
}

static void start_sweeps(struct janitor *j)
{
    ASSERT(sweep_defs_count <= ARRAY_SIZE(j->sweeps)); /* never drop a sweep silently */
    for (size_t i = 0; i < sweep_defs_count && j->nsweeps < (int)ARRAY_SIZE(j->sweeps); i++) {
        struct sweep *s = &j->sweeps[j->nsweeps++];
        s->j = j;
        s->def = &sweep_defs[i];
        s->timer = evtimer_new(j->app->base, sweep_timer_cb, s);
        arm(s, 0);
    }
}

/* The start-up check: the database must be at exactly the migration version and hold exactly
 * the function files this build was made with (gen/sql_build.h). Two queries, so that a table
 * a database lacks is an answer, not a parse error: the version first (schema_migrations), and
 * once it matches, the hash (schema_functions, created by migration 0012). Anything else than
 * an outage ends the server with a line saying what to do. */
static void schema_timer_cb(evutil_socket_t fd, short what, void *arg);

static void schema_refuse(struct janitor *j, const char *what)
{
    log_error("%s: run `gridpointsd migrate` with this build first", what);
    *j->exit_code = 1;
    raise(SIGTERM);
}

/* Whether res is an answer, or an error to retry after an outage (then true, retry set). */
static bool schema_answer(struct janitor *j, struct db_result *res, bool *retry)
{
    *retry = false;
    j->schema_running = false;
    if (j->stopped) {
        maybe_idle(j);
        *retry = true;
        return false;
    }
    if (db_result_status(res) == ST_OK)
        return true;
    const char *state = db_result_sqlstate(res);
    if (state && !strcmp(state, "42P01")) /* undefined_table: never migrated (that far) */
        return false;
    /* PostgreSQL not reachable yet: requests get 503 meanwhile; ask again shortly. Any other
     * failure (privileges, a broken schema) is worth a line each time. */
    if (db_result_status(res) != ST_UNAVAILABLE)
        log_warn("cannot read the schema version: %s", db_result_log_detail(res));
    struct timeval tv = {1, 0};
    evtimer_add(j->schema_timer, &tv);
    *retry = true;
    return false;
}

/* The last start-up check (audit.h): the signed history is not behind a published checkpoint. */
static void history_cb(void *arg, const char *refusal, bool retry)
{
    struct janitor *j = arg;
    j->schema_running = false;
    if (j->stopped) {
        maybe_idle(j);
        return;
    }
    if (retry) {
        struct timeval tv = {1, 0};
        evtimer_add(j->schema_timer, &tv);
        return;
    }
    if (refusal) {
        log_error("%s", refusal);
        *j->exit_code = 1;
        raise(SIGTERM);
        return;
    }
    j->schema_checked = true;
    j->app->started = true;
    start_sweeps(j);
}

static void hash_cb(struct db_result *res, void *arg)
{
    struct janitor *j = arg;
    bool retry;
    bool ok = schema_answer(j, res, &retry);
    if (retry)
        return;
    const char *have = ok && db_result_ntuples(res) ? db_result_value(res, 0, 0) : NULL;
    if (!have || strcmp(have, SQL_BUILD_FUNCTIONS_HASH) != 0) {
        char what[200];
        snprintf(what, sizeof what,
                 "the database holds SQL functions with hash %.12s but this build needs %.12s",
                 have ? have : "(none)", SQL_BUILD_FUNCTIONS_HASH);
        schema_refuse(j, what);
        return;
    }
    log_info("database schema at version %d, functions %.12s", SQL_BUILD_MIGRATION_VERSION, have);
    j->schema_running = true;
    audit_history_check(j->app->audit, history_cb, j);
}

static void schema_cb(struct db_result *res, void *arg)
{
    struct janitor *j = arg;
    bool retry;
    bool ok = schema_answer(j, res, &retry);
    if (retry)
        return;
    const char *v = ok && db_result_ntuples(res) ? db_result_value(res, 0, 0) : NULL;
    int have = v ? atoi(v) : 0;
    if (have != SQL_BUILD_MIGRATION_VERSION) {
        char what[200];
        snprintf(what, sizeof what, "database schema is at version %d but this build needs %d",
                 have, SQL_BUILD_MIGRATION_VERSION);
        schema_refuse(j, what);
        return;
    }
    j->schema_running = true;
    db_query(j->app->db, "SELECT hash FROM schema_functions", 0, NULL, hash_cb, j);
}

static void schema_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct janitor *j = arg;
    if (j->stopped)
        return;
    j->schema_running = true;
    db_query(j->app->db, "SELECT coalesce(max(version), 0) FROM schema_migrations", 0, NULL,
             schema_cb, j);
}

struct janitor *janitor_new(struct app *app, int *exit_code)
{
    struct janitor *j = xcalloc(1, sizeof *j);
    j->app = app;
    j->exit_code = exit_code;
    j->schema_timer = evtimer_new(app->base, schema_timer_cb, j);
    struct timeval tv = {0, 0};
    evtimer_add(j->schema_timer, &tv);
    return j;
}

void janitor_stop(struct janitor *j, void (*idle)(void *arg), void *arg)
{
    j->stopped = true;
    j->idle = idle;
    j->idle_arg = arg;
    evtimer_del(j->schema_timer);
    for (int i = 0; i < j->nsweeps; i++)
        evtimer_del(j->sweeps[i].timer);
    maybe_idle(j);
}

void janitor_free(struct janitor *j)
{
    if (!j)
        return;
    event_free(j->schema_timer);
    for (int i = 0; i < j->nsweeps; i++)
        event_free(j->sweeps[i].timer);
    free(j);
}
