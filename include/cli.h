/* cli.h -- operator commands that run outside the event loop and may block: migrations,
 * first admin, demo data. They talk to PostgreSQL with blocking libpq over
 * database.admin_url (falling back to database.url). Each returns a process exit code. */
#ifndef GP_CLI_H
#define GP_CLI_H

struct config;

/* Applies sql/NNNN_*.sql files not yet recorded in schema_migrations, each in its own
 * transaction, under an advisory lock so that two migrators never interleave. */
int cli_migrate(const struct config *cfg);
/* create-admin --phone P --name N --street S (password from GRIDPOINTS_ADMIN_PASSWORD). */
int cli_create_admin(const struct config *cfg, int argc, char **argv);
/* demo-data [--credentials FILE]: the demo street of seeds/002, loaded once. */
int cli_demo_data(const struct config *cfg, int argc, char **argv);
/* rebuild-cache [--dry-run]: compare Redis balances and rankings with the ledger, fix (or with
 * --dry-run only report) every difference, one line each. */
int cli_rebuild_cache(const struct config *cfg, int argc, char **argv);
/* The highest migration number found in migrations_dir (what this build expects). */
int cli_schema_expected(const struct config *cfg);

#endif
