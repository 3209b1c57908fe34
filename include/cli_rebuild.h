/* cli_rebuild.h -- `gridpointsd rebuild-cache`: rebuild Redis from the ledger, BLOCKING.
 *
 * For the CLI only (never on the server's event loop): it uses blocking libpq and blocking
 * hiredis, which is why it lives in server/cli_rebuild.c, a file the blocking-call check
 * exempts. The server itself converges through ledger_reconcile_step (ledger.h).
 *
 * What it does, in one pass:
 *   1. every worker with ledger accounts (gp_ledger_snapshot pages): compares bal:{w} with the
 *      ledger and fixes every difference -- missing, stale, corrupt, or ahead of the ledger
 *      (e.g. after a database restore) -- with a compare-and-set on the exact stored version,
 *      so a write that happens while it looks is never overwritten;
 *   2. every bal:{w} key of a worker without accounts: reset to (0, 0, v0) when not already so;
 *   3. every ranking board (gp_rank_keys, plus every rank:* key found in Redis): compares each
 *      member's points with gp_rank_board and fixes missing, wrong and extra members the same
 *      compare-and-set way, and marks the board complete.
 * A value where Redis is ahead of the snapshot is re-read from PostgreSQL before it is
 * "fixed", so a commit that happened during the run is not reported or undone.
 *
 * The report gets one line per fix ("fix balance worker=12 redis=a:0,p:0,v:3
 * ledger=a:10,p:0,v:4") and a summary line. */
#ifndef GP_CLI_REBUILD_H
#define GP_CLI_REBUILD_H

#include <stdbool.h>
#include <stdio.h>

struct pg_conn; /* libpq's PGconn */

struct ledger_rebuild_opts {
    const char *redis_host; /* host, or NULL with redis_unix_path */
    int redis_port;
    const char *redis_unix_path; /* or NULL */
    const char *redis_user;      /* ACL user for AUTH user password, or NULL */
    const char *redis_password;  /* AUTH, or NULL */
    int redis_db;
    int timeout_ms; /* connect and command timeout; 0 = 5000 */
    int page_size;  /* workers per gp_ledger_snapshot page; 0 = 1000 */
    bool dry_run;   /* report differences ("diff ..." lines), change nothing */
};

/* Returns the number of fixes (differences, with dry_run), or -1 on error (a message went to
 * the report). blocking_conn must be an open connection in blocking mode with SELECT on the
 * ledger tables and EXECUTE on the ledger read functions (gp_app is enough). */
int ledger_rebuild_cache(struct pg_conn *blocking_conn, const char *redis_host, int redis_port,
                         int redis_db, FILE *report);
int ledger_rebuild_cache_opts(struct pg_conn *blocking_conn, const struct ledger_rebuild_opts *opts,
                              FILE *report);

#endif
