/* cli.h -- operator commands that run outside the event loop and may block: migrations,
 * first admin, demo data. They talk to PostgreSQL with blocking libpq over
 * database.admin_url (falling back to database.url). Each returns a process exit code. */
#ifndef GP_CLI_H
#define GP_CLI_H

#include "common.h"

#include <stdbool.h>

struct config;
struct pg_conn; /* libpq's PGconn */

/* One transaction under an advisory lock (two migrators never interleave): drops the schema
 * of the API functions, applies database.sql_dir/migrations/NNNN_*.sql files not yet recorded
 * in schema_migrations, loads database.sql_dir/functions/NN_*.sql whole into a new schema and
 * records their hash in schema_functions. Refuses, before connecting, an sql_dir whose last
 * migration or function hash is not the one this build was made with. */
int cli_migrate(const struct config *cfg);
/* check-config: what `serve` checks before it opens a socket (the files the configuration
 * names: TLS, audit key, CA files, web.dir, evidence.dir), without opening one or connecting
 * anywhere. 0 and "configuration OK: PATH" on stdout, or 2 and one line per problem. */
int cli_check_config(const struct config *cfg, const char *path);
/* create-admin --phone P --name N --street S (password from GRIDPOINTS_ADMIN_PASSWORD). */
int cli_create_admin(const struct config *cfg, int argc, char **argv);
/* demo-data [--credentials FILE]: the demo street of seeds/002, loaded once. */
int cli_demo_data(const struct config *cfg, int argc, char **argv);
/* rebuild-cache [--dry-run]: compare Redis balances and rankings with the ledger, fix (or with
 * --dry-run only report) every difference, one line each. */
int cli_rebuild_cache(const struct config *cfg, int argc, char **argv);
/* audit-keygen [--if-missing] / audit-rotate-key (rotate = true): a new Ed25519 key in
 * audit.key_file (0600), its public half registered in audit_keys with an audit_log row. A
 * rotation closes the old key's validity (old checkpoints still verify with it) and keeps the
 * old file as <key_file>.<key id>.retired; running servers sign with the key they loaded at
 * start-up, so restart them. */
int cli_audit_keygen(const struct config *cfg, int argc, char **argv, bool rotate);
/* audit-pubkey: the checkpoint keys as JSON, the document GET
 * /.well-known/gridpoints/checkpoint-keys serves and `verify --pubkey` reads. */
int cli_audit_pubkey(const struct config *cfg);
/* audit-verify --full [--wait SECONDS]: the next verification pass is a full one (from log
 * index 0, docs/AUDIT.md §4); --wait polls until it has ended and prints its outcome (0 clean,
 * 1 an alarm or the time ran out, 2 usage). */
int cli_audit_verify(const struct config *cfg, int argc, char **argv);
/* export [--unit ID] [--from T] [--to T] [--format jsonl|csv] [--out FILE]: the sealed
 * ledger in log order with its checkpoints, streamed with a server-side cursor (constant
 * memory). Without --unit/--from/--to the export is complete (the verifier recomputes every
 * root); with them each transaction carries its inclusion proof. */
int cli_export(const struct config *cfg, int argc, char **argv);
/* verify --export FILE --pubkey FILE, or --proofs FILE --pubkey FILE: the offline verifier
 * (cli_verify.c); no configuration or database is used. 0 = verified, 1 = a bad entry (the
 * first is reported with its line), 2 = usage or unreadable input. */
int cli_verify(int argc, char **argv);
/* The version of a migration file name NNNN_name.sql ([0-9]{4}_[a-z0-9_]+\.sql, from 0001),
 * or -1 for any other name. */
int cli_migration_version(const char *name);

/* Shared by the commands: the value after `name` in argv, or NULL; whether `name` is present;
 * a blocking connection over database.admin_url (falling back to database.url), or NULL
 * after logging why. */
const char *cli_opt(int argc, char **argv, const char *name);
bool cli_flag(int argc, char **argv, const char *name);
struct pg_conn *cli_connect_admin(const struct config *cfg);

#endif
