/* janitor.h -- everything the server does on its own clock: the start-up schema check and
 * the periodic sweeps (durable timers of the work loop and the ledger, cache reconciliation).
 *
 * Durable deadlines live in PostgreSQL and are judged by its clock; the janitor only decides
 * how often to ask. Every sweep claims its rows with FOR UPDATE SKIP LOCKED, so any number of
 * instances may run janitors at once and each timer still fires exactly once. */
#ifndef GP_JANITOR_H
#define GP_JANITOR_H

struct app;
struct janitor;

/* Starts the schema check at once and the sweeps once it passed. When the database's
 * migration version or SQL function hash is not the one this build was made with
 * (gen/sql_build.h), it logs why ("run `gridpointsd migrate`"), sets *exit_code to 1 and
 * raises SIGTERM. */
struct janitor *janitor_new(struct app *app, int *exit_code);
/* Starts no new work; calls idle(arg) once nothing it started is pending (maybe at once). */
void janitor_stop(struct janitor *j, void (*idle)(void *arg), void *arg);
/* NULL allowed. Call only after janitor_stop's idle callback (or if the loop never ran). */
void janitor_free(struct janitor *j);

#endif
