/* db.h -- asynchronous PostgreSQL pool on the libevent base (non-blocking libpq).
 *
 * The pool owns N connections in explicit states (connecting, idle, active, broken) and a
 * bounded FIFO of waiting queries. Every unit of work is ONE statement (a SELECT of a SQL
 * function, a CTE, or a single DML statement) run in its own implicit transaction, so the
 * pool can retry it safely on serialization failure (40001) or deadlock (40P01).
 *
 * Contract: db_query() calls its callback exactly once -- on success, on SQL error, on wait
 * timeout, when the queue is full, when PostgreSQL is down, and at db_pool_free() -- and never
 * from inside db_query() itself (a failure known at once is delivered from the event loop on
 * the next turn), so a caller never sees its callback run re-entrantly. */
#ifndef GP_DB_H
#define GP_DB_H

#include "common.h"
#include "status.h"

struct event_base;
struct db_pool;
struct db_result;
struct pg_result; /* libpq's PGresult */

typedef void (*db_cb)(struct db_result *res, void *arg);

struct db_pool_config {
    const char *conninfo;     /* libpq connection string or URI */
    int size;                 /* connections kept open */
    int queue_max;            /* waiting queries beyond which we answer ST_UNAVAILABLE at once */
    int queue_timeout_ms;     /* how long a query may wait for a connection */
    int statement_timeout_ms; /* SET statement_timeout on every connection */
    const char *search_path;  /* SET search_path on every connection; NULL = the server's */
    int connect_timeout_ms;   /* per connection attempt */
    int reconnect_max_ms;     /* ceiling of the exponential reconnect back-off */
    int retries;              /* re-runs on 40001/40P01 before giving up with ST_UNAVAILABLE */
};

struct db_pool_stats {
    int size;      /* configured */
    int connected; /* connections that are idle or active */
    int in_use;    /* active */
    int waiting;   /* queued queries */
    uint64_t queries, errors, retries, timeouts, rejected;
};

/* Starts connecting at once; never fails (connections come up in the background).
 * The config strings are copied. */
struct db_pool *db_pool_new(struct event_base *base, const struct db_pool_config *cfg);
/* Fails every waiting and running query with ST_UNAVAILABLE (their callbacks fire), closes the
 * connections and frees the pool. Call after the HTTP server stopped accepting. */
void db_pool_free(struct db_pool *pool);
/* Forced shutdown: fails every running and waiting query with ST_UNAVAILABLE on the next loop
 * turn, closes the connections, and makes later db_query() calls fail the same way. The pool
 * stays allocated until db_pool_free. */
void db_pool_shutdown(struct db_pool *pool);
void db_pool_get_stats(const struct db_pool *pool, struct db_pool_stats *out);
/* True when at least one connection is up. */
bool db_pool_is_up(const struct db_pool *pool);

/* Sends one parameterized statement. `sql` must be a string with static storage duration: it is
 * the key under which the statement is prepared once per connection. Parameters are text
 * (NULL = SQL NULL) and are copied before db_query returns. Results are text format. */
void db_query(struct db_pool *pool, const char *sql, int nparams, const char *const *params,
              db_cb cb, void *arg);

/* --- result access: valid only inside the callback; the pool frees it afterwards --- */

/* ST_OK, or the classified failure:
 *   GPxxx (our SQL functions' own errors)  -> status_from_sqlstate()
 *   23505 unique violation                 -> ST_CONFLICT
 *   23514 check, 23503 foreign key, 22xxx  -> ST_INVALID
 *   40001/40P01 after the retries          -> ST_UNAVAILABLE
 *   57014 statement timeout                -> ST_UNAVAILABLE
 *   connection lost, pool down, queue full or wait timeout -> ST_UNAVAILABLE
 *   anything else                          -> ST_INTERNAL */
enum status db_result_status(const struct db_result *res);
/* Five-character SQLSTATE, or "" when the failure was not from the server. */
const char *db_result_sqlstate(const struct db_result *res);
/* For GPxxx errors: the machine code our SQL put in HINT (e.g. "task_full"), the message it
 * put in MESSAGE and the field it put in COLUMN; all safe to show a client. For any other
 * error, code is the status's default, message is generic and field is "". Never NULL. */
const char *db_result_error_code(const struct db_result *res);
const char *db_result_error_message(const struct db_result *res);
const char *db_result_error_field(const struct db_result *res);
/* The server's full error text, for the log only (never for clients). Never NULL. */
const char *db_result_log_detail(const struct db_result *res);

int db_result_ntuples(const struct db_result *res);
int db_result_nfields(const struct db_result *res);
/* Text value; NULL for SQL NULL or out of range. */
const char *db_result_value(const struct db_result *res, int row, int col);
/* The one way to read a SQL function's jsonb reply: row 0 column 0 of a successful result,
 * parsed (an object or array), as a new reference the caller releases; NULL for a failed
 * query, no row, SQL NULL or text that is not JSON -- then reply with http_reply_db(). */
struct json_t *db_result_json(const struct db_result *res);
/* The PGresult itself (NULL on failures that did not come from the server). */
struct pg_result *db_result_pg(const struct db_result *res);

#endif
