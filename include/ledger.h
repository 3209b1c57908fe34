/* ledger.h -- the Redis side of the points ledger: cached worker balances and rankings.
 *
 * PostgreSQL is the truth (sql/0003_ledger.sql, docs/LEDGER.md); everything here can be lost
 * and rebuilt. After a transaction that changed a worker's balance commits, the caller puts
 * the worker's (available, pending, version) -- as returned by the SQL function it called --
 * into Redis. The put is applied by a Lua script only when the stored version is older (or
 * absent), so puts that arrive out of order, a reader's stale fallback value, or the
 * reconciler can never overwrite a newer balance (RELIABILITY §2.4 rule 5). version is the sum
 * of the versions of the worker's two accounts (available and pending), which grows by one
 * with every posting to either.
 *
 * Keys (hash-tagged for Redis Cluster):
 *   bal:{<worker>}            hash {a: available, p: pending, v: version}, TTL 1 day
 *   rank:{<unit>}:<period>    sorted set worker -> points earned in period ('YYYY-MM' or 'all')
 *                             in the unit's subtree; the member "-" (score -inf) marks a board
 *                             that was built complete from PostgreSQL (ledger_rank_fill). Without
 *                             it a board is incomplete and ledger_rank_get reports a miss.
 *
 * Contracts: every function taking a callback calls it exactly once and never from inside the
 * call itself (they inherit kv's and db's guarantees); puts are fire-and-forget and never
 * fail the caller. No function here decides fail-open or fail-closed: a get reports
 * ST_NOT_FOUND (miss) or ST_UNAVAILABLE (Redis down) and the caller falls back to PostgreSQL
 * (gp_balance, gp_rank) and then puts what it read. In-flight operations do not reference the
 * ledger_cache, so it may be freed before or after kv_free. */
#ifndef GP_LEDGER_H
#define GP_LEDGER_H

#include "common.h"
#include "status.h"

struct kv;
struct app;
struct ledger_cache;

#define LEDGER_BALANCE_TTL_S 86400
#define LEDGER_PERIOD_MAX    8 /* "YYYY-MM" or "all", with the NUL */

struct ledger_balance {
    int64_t worker_id;
    int64_t available; /* spendable points */
    int64_t pending;   /* earned during an objection period, not yet spendable */
    int64_t version;   /* see the header comment */
};

/* bal is valid only inside the callback and only when st == ST_OK. */
typedef void (*ledger_balance_cb)(enum status st, const struct ledger_balance *bal, void *arg);

struct ledger_rank {
    int64_t worker_id;
    int64_t unit_id;
    char period[LEDGER_PERIOD_MAX];
    int64_t points; /* 0 when the worker earned nothing in the period */
    int64_t rank;   /* 1 + number of workers with more points */
    int64_t total;  /* number of workers with points on the board */
};

/* r is valid only inside the callback and only when st == ST_OK. */
typedef void (*ledger_rank_cb)(enum status st, const struct ledger_rank *r, void *arg);

/* For the background steps: st, a cursor to continue from (0 = done) and how many items the
 * step handled. */
typedef void (*ledger_step_cb)(enum status st, int64_t next_cursor, int count, void *arg);

/* Registers the Lua scripts with kv (kv owns and frees them). Never fails. */
struct ledger_cache *ledger_cache_new(struct kv *kv);
/* NULL is allowed. */
void ledger_cache_free(struct ledger_cache *lc);

/* Fire-and-forget, after commit: stores the worker's balance unless Redis already holds the
 * same or a newer version. Negative or absurd values are refused (logged, not sent). */
void ledger_cache_put(struct ledger_cache *lc, int64_t worker_id, int64_t available,
                      int64_t pending, int64_t version);
/* ledger_cache_put that calls changed(arg) once Redis answered that it wrote (the entry was
 * missing or older): the reconciler counts its repairs with it. Not called otherwise. */
void ledger_cache_put_then(struct ledger_cache *lc, int64_t worker_id, int64_t available,
                           int64_t pending, int64_t version, void (*changed)(void *arg), void *arg);

/* Puts every worker balance found in the JSON text returned by a ledger SQL function: one
 * object {worker_id, available|balance, pending, version} (gp_balance, gp_task_award,
 * gp_adjust), an array of them (gp_task_award_many), or an object holding such an array under
 * "touched" (gp_ledger_sweep) or "items" (gp_ledger_snapshot). Returns how many were put, -1
 * when the text is not JSON of one of these shapes. */
int ledger_cache_put_json(struct ledger_cache *lc, const char *json) MUSTCHECK;

/* After an award committed: ledger_cache_put_json plus the ranking updates (rank_units x
 * {period: earned_month, 'all': earned_total}) for the result of gp_task_award or
 * gp_task_award_many. Returns the number of awards applied, -1 on unexpected JSON. */
int ledger_cache_apply_award(struct ledger_cache *lc, const char *award_json) MUSTCHECK;

/* Reads bal:{worker}. cb gets ST_OK with the balance, ST_NOT_FOUND on a miss (or a malformed
 * entry), ST_UNAVAILABLE when Redis is down, slow or answers an error. */
void ledger_cache_get(struct ledger_cache *lc, int64_t worker_id, ledger_balance_cb cb, void *arg);

/* Fire-and-forget: ZADD GT (absolute, idempotent, never lowers a score) of the worker's points
 * to rank:{unit}:<period> for each of the units (the worker's street, community and grid:
 * "rank_units" of gp_task_award). An invalid period is refused (logged). */
void ledger_rank_put(struct ledger_cache *lc, int64_t worker_id, const int64_t *unit_ids,
                     int nunits, const char *period, int64_t points);

/* The worker's rank on the board of unit and period. ST_NOT_FOUND when the board is missing or
 * incomplete (then use gp_rank and rebuild it with ledger_rank_build), ST_UNAVAILABLE when
 * Redis is down, ST_INVALID for an invalid period. */
void ledger_rank_get(struct ledger_cache *lc, int64_t worker_id, int64_t unit_id,
                     const char *period, ledger_rank_cb cb, void *arg);

/* Fire-and-forget: merges a complete board read from PostgreSQL (gp_rank_board) into
 * rank:{unit}:<period> with ZADD GT and marks it complete. */
void ledger_rank_fill(struct ledger_cache *lc, int64_t unit_id, const char *period, int n,
                      const int64_t *workers, const int64_t *points);

/* --- background steps on the event loop (db + kv); for the janitor --- */

/* One page of the reconciler: reads gp_ledger_snapshot(after, limit) and puts every balance
 * (the version guard makes this safe against concurrent commits). cb gets the cursor for the
 * next page, 0 after the last one. */
void ledger_reconcile_step(struct app *app, int64_t after, int limit, ledger_step_cb cb, void *arg);

/* One round of the durable ledger timers: gp_ledger_sweep(batch) (vesting of pending points,
 * expiry of lots; FOR UPDATE SKIP LOCKED, so every instance may run it), then puts the touched
 * balances. cb's count is vested + expired; next_cursor is 1 when a full batch was done (run
 * again soon), 0 otherwise. */
void ledger_sweep_step(struct app *app, int batch, ledger_step_cb cb, void *arg);

/* Builds rank:{unit}:<period> from gp_rank_board; cb's count is the number of members. */
void ledger_rank_build(struct app *app, int64_t unit_id, const char *period, ledger_step_cb cb,
                       void *arg);

/* --- shared with the CLI rebuild (server/cli_rebuild.c) --- */

/* "YYYY-MM" with a valid month, or "all". */
bool ledger_period_valid(const char *period);
/* Formats the keys; return snprintf's value. */
int ledger_balance_key(char *buf, size_t cap, int64_t worker_id);
int ledger_rank_key(char *buf, size_t cap, int64_t unit_id, const char *period);

/* The Lua scripts (Redis >= 6.2 for ZADD GT):
 *   balance_put:  KEYS bal:{w}; ARGV a, p, v, ttl -> 1 applied, 0 stored version is newer/equal
 *   balance_cas:  KEYS bal:{w}; ARGV expected_v ("" = absent), a, p, v, ttl -> 1 applied, 0 the
 *                 stored version is not the expected one (someone wrote meanwhile)
 *   rank_get:     KEYS rank key; ARGV worker -> nil (no complete board) or {points, rank, total}
 *   rank_fill:    KEYS rank key; ARGV worker, points, ... -> 1
 *   rank_cas:     KEYS rank key; ARGV worker, expected score ("" = absent), new points ("" =
 *                 remove) -> 1 applied, 0 changed meanwhile */
extern const char ledger_lua_balance_put[];
extern const char ledger_lua_balance_cas[];
extern const char ledger_lua_rank_get[];
extern const char ledger_lua_rank_fill[];
extern const char ledger_lua_rank_cas[];

#endif
