/* replica.h -- reads from a streaming read replica with bounded staleness (database.replica_url;
 * docs/OPERATIONS.md, "Read replica").
 *
 * Routes marked ROUTE_READ_REPLICA in routes.c (statements, boards, dashboards, exports: one
 * read-only statement each) run on a second pool connected to the replica, unless:
 *   - the replica is behind by more than database.replica_max_lag, or has not answered the
 *     last polls: everything goes to the primary until it caught up;
 *   - the caller wrote within database.replica_own_writes_window and the replica has not yet
 *     applied the primary's WAL as of that write: the caller reads the primary ("read your
 *     own writes", across instances, through a per-person mark in Redis).
 *
 * The lag is measured by LSN, polled asynchronously every database.replica_poll_interval: each
 * tick samples the primary's pg_current_wal_lsn() (with the time it was asked) and the
 * replica's pg_last_wal_replay_lsn(); the replica holds everything the primary had at the time
 * of the newest sample whose LSN it has replayed ("applied as of"), and the lag is now minus
 * that time. An idle primary keeps the lag at one poll interval at most; a replica that stopped
 * replaying (paused, delayed, disconnected) ages by the clock, polled or not. */
#ifndef GP_REPLICA_H
#define GP_REPLICA_H

#include "common.h"

struct app;
struct db_pool;
struct replica;

/* NULL when database.replica_url is empty (everything reads the primary). Starts connecting
 * and polling at once; *ok is false on a configuration error (logged). */
struct replica *replica_new(struct app *app, bool *ok);
void replica_free(struct replica *r);
/* Stops the poll timer (shutdown); the pool stays until replica_free. */
void replica_stop(struct replica *r);

/* Chooses the pool of one read of a replica route by `person_id` (0 = anonymous): calls
 * cb(arg, pool) once, never from inside this call when it needs Redis. */
typedef void (*replica_pool_cb)(void *arg, struct db_pool *pool);
void replica_choose(struct replica *r, int64_t person_id, replica_pool_cb cb, void *arg);

/* A write by person_id is about to run: marks it "in progress" in Redis and calls done(arg)
 * once the mark is stored (or failed: logged, the write goes on). */
void replica_write_begin(struct replica *r, int64_t person_id, void (*done)(void *arg), void *arg);
/* The write's reply is about to go out (its commit, if any, is done): stamps the mark with the
 * time, so that the person's reads go back to the replica once it applied that far. */
void replica_write_end(struct replica *r, int64_t person_id);

/* For the request log and tests: is `pool` the replica's? */
bool replica_is_pool(const struct replica *r, const struct db_pool *pool);
/* Current lag in ms (-1 when unknown: down or never polled). */
int64_t replica_lag_ms(const struct replica *r);

#endif
