/* cli.c -- blocking operator commands: migrate, create-admin, demo-data.
 *
 * Blocking libpq is fine here: these run before or instead of the server, never on the
 * event loop (STYLE anti-pattern 1 is about the loop). */
#include "cli.h"
#include "cli_care.h"
#include "cli_rebuild.h"
#include "common.h"
#include "config.h"
#include "crypto.h"
#include "log.h"
#include "sql_build.h"

#include <dirent.h>
#include <fcntl.h>
#include <errno.h>
#include <libpq-fe.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *admin_url(const struct config *cfg)
{
    return *cfg->database_admin_url ? cfg->database_admin_url : cfg->database_url;
}

static void notice_ignore(void *arg, const char *message)
{
}

PGconn *cli_connect_admin(const struct config *cfg)
{
    PGconn *c = PQconnectdb(admin_url(cfg));
    if (PQstatus(c) != CONNECTION_OK) {
        log_error("cannot connect to PostgreSQL: %s", PQerrorMessage(c));
        PQfinish(c);
        return NULL;
    }
    PQsetNoticeProcessor(c, notice_ignore, NULL); /* "schema gp does not exist, skipping" */
    /* The API functions live in their own schema (sql/functions, loaded by `migrate`); the
     * commands call them by their plain names, as the server does. */
    PGresult *r = PQexec(c, "SELECT pg_catalog.set_config('search_path', '" SQL_BUILD_SEARCH_PATH
                            "', false)");
    bool ok = PQresultStatus(r) == PGRES_TUPLES_OK;
    if (!ok)
        log_error("cannot set search_path: %s", PQresultErrorMessage(r));
    PQclear(r);
    if (!ok) {
        PQfinish(c);
        return NULL;
    }
    return c;
}

static bool exec_ok(PGconn *c, const char *sql, const char *what)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    bool ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    if (!ok)
        log_error("%s failed: %s", what, PQresultErrorMessage(r));
    PQclear(r);
    return ok;
}

/* ---------------------------------------------------------------------------------------- */
/* migrate                                                                                   */
/* ---------------------------------------------------------------------------------------- */

/* sql_dir holds two kinds of files (STYLE.md 38b):
 *   migrations/NNNN_name.sql  tables, indexes, constraints, trigger functions, backfills:
 *                             immutable once released, each applied once, in number order;
 *   functions/NN_name.sql     the API functions, loaded whole into the schema SQL_BUILD_SCHEMA
 *                             on every run, in name order.
 * One run is one transaction under the migration lock: drop the function schema, apply the
 * pending migrations, create the schema, load the function files, record their hash in
 * schema_functions. So a numbered migration never sees (and cannot call) a re-creatable
 * function, and a failed run changes nothing. */

struct sql_file {
    int version; /* migrations: NNNN; functions: 0 */
    char name[256];
    char *text; /* functions only (hashed, then loaded) */
    size_t len;
};

static int cmp_migration(const void *a, const void *b)
{
    return ((const struct sql_file *)a)->version - ((const struct sql_file *)b)->version;
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(((const struct sql_file *)a)->name, ((const struct sql_file *)b)->name);
}

/* Whether name[from..len-4) is [a-z0-9_]+ and the name ends in ".sql". */
static bool sql_name_tail_ok(const char *name, size_t from)
{
    size_t len = strlen(name);
    if (len < from + 5 || strcmp(name + len - 4, ".sql") != 0)
        return false;
    for (size_t i = from; i < len - 4; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
            return false;
    }
    return true;
}

/* The version of a migration file name of the form NNNN_name.sql (four digits, then lower-case
 * letters, digits and '_'), or -1. sscanf("%4d") took "+001_x.sql" and " 001_x.sql" for
 * version 1, which is how two files could claim one version without anyone noticing. */
int cli_migration_version(const char *name)
{
    if (strlen(name) < 10 || name[4] != '_' || !sql_name_tail_ok(name, 5))
        return -1;
    int v = 0;
    for (int i = 0; i < 4; i++) {
        if (name[i] < '0' || name[i] > '9')
            return -1;
        v = v * 10 + (name[i] - '0');
    }
    return v > 0 ? v : -1;
}

/* NN_name.sql: two digits (the load order), then [a-z0-9_]+. */
static bool function_file_name_ok(const char *name)
{
    return name[0] >= '0' && name[0] <= '9' && name[1] >= '0' && name[1] <= '9' && name[2] == '_' &&
           sql_name_tail_ok(name, 3);
}

/* Lists the *.sql files of dir (migrations: by number, functions: by name); returns the count,
 * or -1 after logging why (a *.sql file with another name, two migrations with one number, too
 * many files): a file that is silently skipped or applied under the wrong number is worse than
 * not migrating. Files not ending in .sql (a README) are ignored. */
static int list_sql(const char *dir, bool migrations, struct sql_file *out, int max)
{
    DIR *d = opendir(dir);
    if (!d) {
        log_error("cannot open the sql directory %s: %s", dir, strerror(errno));
        return -1;
    }
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len < 4 || strcmp(e->d_name + len - 4, ".sql") != 0)
            continue;
        int v = migrations                         ? cli_migration_version(e->d_name)
                : function_file_name_ok(e->d_name) ? 0
                                                   : -1;
        if (v < 0 || len >= sizeof out[n].name) {
            if (migrations)
                log_error("migration file %s/%s is not named NNNN_name.sql (four digits from "
                          "0001, then a-z, 0-9 and _): rename it",
                          dir, e->d_name);
            else
                log_error("function file %s/%s is not named NN_name.sql (two digits, then a-z, "
                          "0-9 and _): rename it",
                          dir, e->d_name);
            closedir(d);
            return -1;
        }
        if (n == max) {
            log_error("more than %d files in %s", max, dir);
            closedir(d);
            return -1;
        }
        out[n] = (struct sql_file){.version = v};
        snprintf(out[n].name, sizeof out[n].name, "%s", e->d_name);
        n++;
    }
    closedir(d);
    qsort(out, (size_t)n, sizeof *out, migrations ? cmp_migration : cmp_name);
    for (int i = 1; migrations && i < n; i++)
        if (out[i].version == out[i - 1].version) {
            log_error("two migrations share number %04d: %s and %s", out[i].version,
                      out[i - 1].name, out[i].name);
            return -1;
        }
    return n;
}

/* The whole file, NUL-terminated, its length in *len; NULL (errno set) when unreadable. */
static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 1 << 16, got = 0, r;
    char *buf = xmalloc(cap);
    while ((r = fread(buf + got, 1, cap - got - 1, f)) > 0) {
        got += r;
        if (cap - got - 1 == 0)
            buf = xrealloc(buf, cap *= 2);
    }
    bool bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        errno = EIO;
        return NULL;
    }
    buf[got] = '\0';
    if (len)
        *len = got;
    return buf;
}

/* SHA-256 (hex) of the function files as scripts/sql-build-header.sh computes it: each file,
 * in name order, as name NUL decimal-size NUL bytes. */
static void functions_hash(const struct sql_file *f, int n, char out[65])
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (!md)
        abort();
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    for (int i = 0; i < n; i++) {
        char size[32];
        int sl = snprintf(size, sizeof size, "%zu", f[i].len);
        EVP_DigestUpdate(md, f[i].name, strlen(f[i].name) + 1);
        EVP_DigestUpdate(md, size, (size_t)sl + 1);
        EVP_DigestUpdate(md, f[i].text, f[i].len);
    }
    unsigned char d[32];
    EVP_DigestFinal_ex(md, d, NULL);
    EVP_MD_CTX_free(md);
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", d[i]);
}

/* Everything a run needs from sql_dir, checked against this build before it connects. */
struct sql_tree {
    struct sql_file mig[512];
    int nmig;
    struct sql_file fn[100];
    int nfn;
    char hash[65];
};

static void sql_tree_free(struct sql_tree *t)
{
    for (int i = 0; i < t->nfn; i++)
        free(t->fn[i].text);
    free(t);
}

static struct sql_tree *sql_tree_read(const char *sql_dir)
{
    struct sql_tree *t = xcalloc(1, sizeof *t);
    char dir[600];
    snprintf(dir, sizeof dir, "%s/migrations", sql_dir);
    t->nmig = list_sql(dir, true, t->mig, (int)ARRAY_SIZE(t->mig));
    if (t->nmig < 0)
        goto fail;
    int top = t->nmig ? t->mig[t->nmig - 1].version : 0;
    if (top != SQL_BUILD_MIGRATION_VERSION) {
        /* A migrate of an older build (or a newer sql/) would leave a database that this
         * build's server refuses: stop before anything is changed. */
        log_error("%s ends at migration %04d but this build was made with %04d: use the sql "
                  "directory of this build (database.sql_dir)",
                  dir, top, SQL_BUILD_MIGRATION_VERSION);
        goto fail;
    }
    snprintf(dir, sizeof dir, "%s/functions", sql_dir);
    int n = list_sql(dir, false, t->fn, (int)ARRAY_SIZE(t->fn));
    if (n < 0)
        goto fail;
    for (; t->nfn < n; t->nfn++) {
        char path[900];
        snprintf(path, sizeof path, "%s/%s", dir, t->fn[t->nfn].name);
        t->fn[t->nfn].text = read_file(path, &t->fn[t->nfn].len);
        if (!t->fn[t->nfn].text) {
            log_error("cannot read %s: %s", path, strerror(errno));
            goto fail;
        }
    }
    functions_hash(t->fn, t->nfn, t->hash);
    if (strcmp(t->hash, SQL_BUILD_FUNCTIONS_HASH) != 0) {
        log_error("the function files in %s (hash %.12s) are not the ones this build was made "
                  "with (%.12s): use the sql directory of this build (database.sql_dir)",
                  dir, t->hash, SQL_BUILD_FUNCTIONS_HASH);
        goto fail;
    }
    return t;
fail:
    sql_tree_free(t);
    return NULL;
}

/* Whether anything but what the function files create depends on the function schema or on
 * one of its objects: DROP SCHEMA ... CASCADE would take it along. The files create functions
 * and composite types (each with its array type and its pg_class row), so those may depend
 * on the schema and on each other; anything else that does (a view on a function, a column of
 * one of the types, a table someone created in the schema) is logged, and nothing is
 * dropped. */
static bool function_schema_droppable(PGconn *c)
{
    static const char sql[] =
        "WITH s AS (SELECT oid FROM pg_catalog.pg_namespace WHERE nspname = $1), "
        "own (classid, objid) AS ("
        " SELECT 'pg_catalog.pg_proc'::pg_catalog.regclass, p.oid FROM pg_catalog.pg_proc p, s "
        "  WHERE p.pronamespace = s.oid "
        " UNION ALL SELECT 'pg_catalog.pg_type'::pg_catalog.regclass, t.oid "
        "  FROM pg_catalog.pg_type t, s WHERE t.typnamespace = s.oid "
        " UNION ALL SELECT 'pg_catalog.pg_class'::pg_catalog.regclass, r.oid "
        "  FROM pg_catalog.pg_class r, s WHERE r.relnamespace = s.oid AND r.relkind = 'c') "
        "SELECT pg_catalog.pg_describe_object(d.classid, d.objid, d.objsubid) || ' depends on ' "
        "|| pg_catalog.pg_describe_object(d.refclassid, d.refobjid, d.refobjsubid) "
        "FROM pg_catalog.pg_depend d, s "
        "WHERE ((d.refclassid = 'pg_catalog.pg_namespace'::pg_catalog.regclass "
        "        AND d.refobjid = s.oid) "
        "       OR (d.refclassid, d.refobjid) IN (SELECT classid, objid FROM own)) "
        "  AND (d.classid, d.objid) NOT IN (SELECT classid, objid FROM own) "
        "ORDER BY 1";
    const char *p[] = {SQL_BUILD_SCHEMA};
    PGresult *r = PQexecParams(c, sql, 1, NULL, p, NULL, NULL, 0);
    bool ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 0;
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        log_error("cannot read what depends on schema %s: %s", SQL_BUILD_SCHEMA,
                  PQresultErrorMessage(r));
    for (int i = 0; PQresultStatus(r) == PGRES_TUPLES_OK && i < PQntuples(r); i++)
        log_error("%s: schema %s holds only what sql/functions creates, which `migrate` "
                  "re-creates; move it out or drop it, then migrate again",
                  PQgetvalue(r, i, 0), SQL_BUILD_SCHEMA);
    PQclear(r);
    return ok;
}

static bool exec_params_ok(PGconn *c, const char *sql, int n, const char *const *p,
                           const char *what)
{
    PGresult *r = PQexecParams(c, sql, n, NULL, p, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(r);
    bool ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    if (!ok)
        log_error("%s failed: %s", what, PQresultErrorMessage(r));
    PQclear(r);
    return ok;
}

/* The body of one run, inside its transaction; false after logging what failed. */
static bool migrate_in_tx(PGconn *c, const struct config *cfg, const struct sql_tree *t,
                          int *applied)
{
    if (!function_schema_droppable(c) ||
        !exec_ok(c, "DROP SCHEMA IF EXISTS " SQL_BUILD_SCHEMA " CASCADE",
                 "dropping the function schema") ||
        !exec_ok(c, "SET LOCAL search_path = public", "SET search_path"))
        return false;
    for (int i = 0; i < t->nmig; i++) {
        char v[16];
        snprintf(v, sizeof v, "%d", t->mig[i].version);
        const char *p[] = {v, t->mig[i].name};
        PGresult *r = PQexecParams(c, "SELECT 1 FROM public.schema_migrations WHERE version = $1",
                                   1, NULL, p, NULL, NULL, 0);
        bool done = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
        PQclear(r);
        if (done)
            continue;
        char path[900];
        snprintf(path, sizeof path, "%s/migrations/%s", cfg->sql_dir, t->mig[i].name);
        char *sql = read_file(path, NULL);
        if (!sql) {
            log_error("cannot read %s: %s", path, strerror(errno));
            return false;
        }
        /* SET CONSTRAINTS ALL IMMEDIATE: deferred checks fire at the end of each migration,
         * as its own COMMIT once did, so the next one may ALTER the tables it wrote. */
        bool ok = exec_ok(c, sql, t->mig[i].name) &&
                  exec_ok(c, "SET CONSTRAINTS ALL IMMEDIATE", t->mig[i].name) &&
                  exec_params_ok(
                      c, "INSERT INTO public.schema_migrations (version, name) VALUES ($1, $2)", 2,
                      p, "recording the migration");
        free(sql);
        if (!ok)
            return false;
        log_info("applied migration %s", t->mig[i].name);
        (*applied)++;
    }
    if (!exec_ok(c, "CREATE SCHEMA " SQL_BUILD_SCHEMA, "creating the function schema") ||
        !exec_ok(c, "GRANT USAGE ON SCHEMA " SQL_BUILD_SCHEMA " TO gp_app",
                 "granting the function schema") ||
        !exec_ok(c, "SET LOCAL search_path = " SQL_BUILD_SEARCH_PATH, "SET search_path"))
        return false;
    for (int i = 0; i < t->nfn; i++)
        if (!exec_ok(c, t->fn[i].text, t->fn[i].name))
            return false;
    const char *h[] = {t->hash};
    return exec_params_ok(
        c,
        "INSERT INTO public.schema_functions (hash) VALUES ($1) ON CONFLICT (id) DO "
        "UPDATE SET hash = EXCLUDED.hash, loaded_at = now()",
        1, h, "recording the function hash");
}

int cli_migrate(const struct config *cfg)
{
    struct sql_tree *t = sql_tree_read(cfg->sql_dir);
    if (!t)
        return 1;
    PGconn *c = cli_connect_admin(cfg);
    if (!c) {
        sql_tree_free(t);
        return 1;
    }
    int rc = 1, applied = 0;
    if (!exec_ok(c, "SELECT pg_advisory_lock(727274)", "taking the migration lock") ||
        !exec_ok(c,
                 "CREATE TABLE IF NOT EXISTS public.schema_migrations (version int PRIMARY KEY, "
                 "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())",
                 "creating schema_migrations") ||
        !exec_ok(c, "BEGIN", "BEGIN"))
        goto out;
    if (!migrate_in_tx(c, cfg, t, &applied) || !exec_ok(c, "COMMIT", "COMMIT")) {
        exec_ok(c, "ROLLBACK", "ROLLBACK");
        log_error("migrate failed; nothing was changed");
        goto out;
    }
    log_info("schema is at version %d (%d migration%s applied now); %d function files loaded "
             "into schema %s (hash %.12s)",
             SQL_BUILD_MIGRATION_VERSION, applied, applied == 1 ? "" : "s", t->nfn,
             SQL_BUILD_SCHEMA, t->hash);
    rc = 0;
out:
    PQfinish(c);
    sql_tree_free(t);
    return rc;
}

/* ---------------------------------------------------------------------------------------- */
/* create-admin                                                                              */
/* ---------------------------------------------------------------------------------------- */

const char *cli_opt(int argc, char **argv, const char *name)
{
    for (int i = 0; i + 1 < argc; i++)
        if (!strcmp(argv[i], name))
            return argv[i + 1];
    return NULL;
}

bool cli_flag(int argc, char **argv, const char *name)
{
    for (int i = 0; i < argc; i++)
        if (!strcmp(argv[i], name))
            return true;
    return false;
}

int cli_create_admin(const struct config *cfg, int argc, char **argv)
{
    const char *phone = cli_opt(argc, argv, "--phone");
    const char *name = cli_opt(argc, argv, "--name");
    const char *street = cli_opt(argc, argv, "--street");
    const char *password = getenv("GRIDPOINTS_ADMIN_PASSWORD");
    if (!phone || !name || !street) {
        fprintf(stderr, "usage: gridpointsd create-admin --phone P --name N --street S\n"
                        "       (the password comes from GRIDPOINTS_ADMIN_PASSWORD)\n");
        return 2;
    }
    if (!password || strlen(password) < 8) {
        fprintf(stderr,
                "GRIDPOINTS_ADMIN_PASSWORD must hold a password of at least 8 characters\n");
        return 2;
    }
    char hash[160];
    if (!crypto_password_hash(password, cfg->pbkdf2_iterations, hash, sizeof hash)) {
        log_error("cannot hash the password");
        return 1;
    }
    PGconn *c = cli_connect_admin(cfg);
    if (!c)
        return 1;
    /* One statement: the street (reused when it exists), the person and the grant. */
    static const char sql[] =
        "WITH s AS (INSERT INTO org_units (level, name) VALUES ('street', $3) "
        "           ON CONFLICT ((coalesce(parent_id, 0)), name) DO UPDATE SET name = "
        "EXCLUDED.name "
        "           RETURNING id), "
        "p AS (INSERT INTO persons (phone, name, unit_id, password_hash) "
        "      SELECT $1, $2, s.id, $4 FROM s RETURNING id, unit_id), "
        "g AS (INSERT INTO role_grants (person_id, role, unit_id) "
        "      SELECT id, 'street_admin', unit_id FROM p RETURNING person_id) "
        "SELECT json_build_object('person_id', p.id, 'unit_id', p.unit_id) FROM p, g";
    const char *p[] = {phone, name, street, hash};
    PGresult *r = PQexecParams(c, sql, 4, NULL, p, NULL, NULL, 0);
    int rc = 0;
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        log_error("cannot create the admin: %s", PQresultErrorMessage(r));
        rc = 1;
    } else {
        printf("%s\n", PQgetvalue(r, 0, 0));
    }
    PQclear(r);
    PQfinish(c);
    return rc;
}

/* ---------------------------------------------------------------------------------------- */
/* demo-data                                                                                 */
/* ---------------------------------------------------------------------------------------- */

/* The demo street of seeds/002 (a Chengdu street office): 8 communities, 100 grids, 624
 * micro-grids, ~1,200 workers and volunteers with tags, staff at every level. Set-based SQL
 * so that it loads in about a second. Every demo account of one kind shares one generated
 * password (hashing 1,200 distinct passwords would take minutes and teaches nothing). */
static const char demo_sql[] =
    "WITH street AS (INSERT INTO org_units (level, name) VALUES ('street', '锦江区示范街道') "
    "RETURNING id), "
    "comms AS (INSERT INTO org_units (parent_id, level, name) "
    "          SELECT street.id, 'community', c.n FROM street, unnest(ARRAY['东风社区','锦华社区',"
    "          '莲花社区','书院社区','水井坊社区','合江亭社区','望平社区','春熙社区']) AS c(n) "
    "RETURNING id, name) "
    "SELECT (SELECT id FROM street)";

/* The street admin issues 10,000,000 points, grants 1,000,000 to each community and 50,000
 * to each grid; the grid staff of the first twelve grids publish a few tasks around Jinjiang
 * (lat 30.65, lng 104.08). */
static const char demo_activity_sql[] =
    "WITH a AS (SELECT id FROM persons WHERE phone = '13900000001'), "
    "i AS (SELECT gp_issue(a.id, $1::bigint, 10000000, 'demo issuance') AS r FROM a), "
    "c AS (SELECT gp_grant(a.id, $1::bigint, u.id, 1000000, 'demo grant') AS r "
    "      FROM a, i, org_units u WHERE u.parent_id = $1::bigint ORDER BY u.id), "
    "g AS (SELECT gp_grant(a.id, u.parent_id, u.id, 50000, 'demo grant') AS r "
    "      FROM a, (SELECT count(*) FROM c) cc, org_units u JOIN org_units p ON p.id = u.parent_id "
    "      WHERE p.parent_id = $1::bigint ORDER BY u.id), "
    "staff AS (SELECT s.id AS staff, s.unit_id AS grid, row_number() OVER (ORDER BY s.id) AS k "
    "      FROM persons s JOIN role_grants r ON r.person_id = s.id AND r.role = 'grid_staff' "
    "      JOIN org_units u ON u.id = s.unit_id JOIN org_units p ON p.id = u.parent_id "
    "      WHERE p.parent_id = $1::bigint), "
    "t AS (SELECT gp_task_publish(staff.staff, jsonb_build_object("
    "          'unit_id', staff.grid, 'title', x.title, 'category', x.category, "
    "          'description', x.title || '（示范任务）', 'reward', x.reward, 'slots', x.slots, "
    "          'required_tags', x.tags, 'lat', 30.65 + staff.k * 0.002, 'lng', 104.08 + x.n * "
    "0.001, "
    "          'geofence_m', 300, 'ends_at', to_char(now() + interval '7 days', "
    "'YYYY-MM-DD\"T\"HH24:MI:SSOF') || ':00', "
    "          'claim_ttl_s', 7200, 'review_window_s', 600)) AS r "
    "      FROM (SELECT count(*) FROM g) gg, staff, "
    "      (VALUES (1, '检查7号楼消防通道', 'fire_safety', 20, 3, '{}'::text[]), "
    "              (2, '走访独居老人', 'elderly_care', 30, 5, '{}'::text[]), "
    "              (3, '调解邻里纠纷', 'mediation', 50, 1, '{mediator}'::text[]), "
    "              (4, '垃圾分类宣传', 'garbage_sorting', 10, 10, '{}'::text[])) "
    "           AS x (n, title, category, reward, slots, tags) "
    "      WHERE staff.k <= 12) "
    "SELECT count(*) FROM t";

static int demo_exec(PGconn *c, const char *sql, int n, const char *const *p, char *out,
                     size_t outlen)
{
    PGresult *r = PQexecParams(c, sql, n, NULL, p, NULL, NULL, 0);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
        log_error("demo data: %s", PQresultErrorMessage(r));
        PQclear(r);
        return -1;
    }
    if (out && PQntuples(r) > 0)
        snprintf(out, outlen, "%s", PQgetvalue(r, 0, 0));
    PQclear(r);
    return 0;
}

int cli_demo_data(const struct config *cfg, int argc, char **argv)
{
    const char *cred_path = cli_opt(argc, argv, "--credentials");
    PGconn *c = cli_connect_admin(cfg);
    if (!c)
        return 1;
    char existing[32] = "";
    if (demo_exec(c, "SELECT id FROM org_units WHERE level = 'street' AND name = '锦江区示范街道'",
                  0, NULL, existing, sizeof existing) < 0) {
        PQfinish(c);
        return 1;
    }
    if (*existing) {
        printf("demo data already loaded (street id %s)\n", existing);
        /* a demo loaded before the care lists existed gets them now */
        if (!cli_demo_care_loaded(c, existing) &&
            (!exec_ok(c, "BEGIN", "BEGIN") || cli_demo_care(c, cfg, existing) < 0 ||
             !exec_ok(c, "COMMIT", "COMMIT"))) {
            exec_ok(c, "ROLLBACK", "ROLLBACK");
            PQfinish(c);
            return 1;
        }
        if (cred_path) {
            char *creds = read_file(cred_path, NULL);
            if (creds) {
                fputs(creds, stdout);
                free(creds);
            }
        }
        PQfinish(c);
        return 0;
    }

    char pw_admin[17], pw_staff[17], pw_worker[17];
    char h_admin[160], h_staff[160], h_worker[160];
    if (!crypto_random_hex(pw_admin, 8) || !crypto_random_hex(pw_staff, 8) ||
        !crypto_random_hex(pw_worker, 8) ||
        !crypto_password_hash(pw_admin, cfg->pbkdf2_iterations, h_admin, sizeof h_admin) ||
        !crypto_password_hash(pw_staff, cfg->pbkdf2_iterations, h_staff, sizeof h_staff) ||
        !crypto_password_hash(pw_worker, cfg->pbkdf2_iterations, h_worker, sizeof h_worker)) {
        log_error("cannot generate demo passwords");
        PQfinish(c);
        return 1;
    }
    char street[32] = "";
    int rc = 1;
    if (!exec_ok(c, "BEGIN", "BEGIN") || demo_exec(c, demo_sql, 0, NULL, street, sizeof street) < 0)
        goto fail;
    const char *sp[] = {street, h_admin, h_staff, h_worker};
    /* 100 grids spread over the 8 communities (13 or 12 each), 624 micro-grids spread over the
     * grids (6 or 7 each); then people. Phones: 139 + unit-kind digit + sequence. */
    static const char units_sql[] =
        "WITH c AS (SELECT id, row_number() OVER (ORDER BY id) AS k FROM org_units WHERE parent_id "
        "= $1::bigint), "
        "g AS (INSERT INTO org_units (parent_id, level, name) "
        "      SELECT c.id, 'grid', format('第%s网格', i) FROM generate_series(1, 100) i "
        "      JOIN c ON c.k = (i - 1) % 8 + 1 RETURNING id), "
        "gk AS (SELECT id, row_number() OVER (ORDER BY id) AS k FROM g) "
        "INSERT INTO org_units (parent_id, level, name) "
        "SELECT gk.id, 'micro_grid', format('微网格%s', i) FROM generate_series(1, 624) i "
        "JOIN gk ON gk.k = (i - 1) % 100 + 1";
    static const char people_sql[] =
        "WITH admin AS (INSERT INTO persons (phone, name, unit_id, password_hash) "
        "    VALUES ('13900000001', '街道管理员', $1::bigint, $2) RETURNING id, unit_id), "
        "ag AS (INSERT INTO role_grants (person_id, role, unit_id) "
        "    SELECT id, 'street_admin', unit_id FROM admin UNION ALL "
        "    SELECT id, 'auditor', unit_id FROM admin RETURNING 1), "
        "aud AS (INSERT INTO persons (phone, name, unit_id, password_hash) "
        "    VALUES ('13900000002', '审计员', $1::bigint, $3) RETURNING id, unit_id), "
        "audg AS (INSERT INTO role_grants (person_id, role, unit_id) SELECT id, 'auditor', unit_id "
        "FROM aud RETURNING 1), "
        "ca AS (INSERT INTO persons (phone, name, unit_id, password_hash) "
        "    SELECT '1391' || lpad((row_number() OVER (ORDER BY u.id))::text, 7, '0'), u.name || "
        "'管理员', u.id, $3 "
        "    FROM org_units u WHERE u.level = 'community' AND u.parent_id = $1::bigint RETURNING "
        "id, unit_id), "
        "cag AS (INSERT INTO role_grants (person_id, role, unit_id) SELECT id, 'community_admin', "
        "unit_id FROM ca RETURNING 1), "
        "gs AS (INSERT INTO persons (phone, name, unit_id, password_hash) "
        "    SELECT '1392' || lpad((row_number() OVER (ORDER BY u.id))::text, 7, '0'), u.name || "
        "'网格员', u.id, $3 "
        "    FROM org_units u JOIN org_units c ON c.id = u.parent_id "
        "    WHERE u.level = 'grid' AND c.parent_id = $1::bigint RETURNING id, unit_id), "
        "gsg AS (INSERT INTO role_grants (person_id, role, unit_id) SELECT id, 'grid_staff', "
        "unit_id FROM gs RETURNING 1), "
        "mg AS (SELECT u.id, row_number() OVER (ORDER BY u.id) AS k FROM org_units u "
        "    WHERE u.level = 'micro_grid' AND u.path <@ (SELECT path FROM org_units WHERE id = "
        "$1::bigint)), "
        "w AS (INSERT INTO persons (phone, name, unit_id, tags, password_hash) "
        "    SELECT '1393' || lpad(i::text, 7, '0'), "
        "           (ARRAY['王','李','张','刘','陈','杨','赵','黄','周','吴'])[i % 10 + 1] || "
        "           (ARRAY['秀英','建国','桂兰','志强','丽','军','芳','伟','敏','静','磊','洋'])[i "
        "% 12 + 1], "
        "           mg.id, "
        "           CASE i % 8 WHEN 0 THEN ARRAY['party_member'] WHEN 1 THEN ARRAY['mediator'] "
        "             WHEN 2 THEN ARRAY['first_aid'] WHEN 3 THEN "
        "ARRAY['building_head','party_member'] "
        "             WHEN 5 THEN ARRAY['volunteer_firefighter'] WHEN 7 THEN "
        "ARRAY['first_aid','mediator'] "
        "             ELSE ARRAY[]::text[] END, $4 "
        "    FROM generate_series(1, 1200) i JOIN mg ON mg.k = (i - 1) % 624 + 1 RETURNING id, "
        "unit_id, phone) "
        "INSERT INTO role_grants (person_id, role, unit_id) "
        "SELECT id, CASE WHEN right(phone, 1)::int % 4 = 0 THEN 'volunteer' ELSE 'worker' END, "
        "unit_id FROM w";
    if (demo_exec(c, units_sql, 1, sp, NULL, 0) < 0 || demo_exec(c, people_sql, 4, sp, NULL, 0) < 0)
        goto fail;
    /* Budgets down the tree and a few open tasks, through the same SQL functions the API
     * uses (so the demo ledger is an ordinary, auditable ledger). */
    if (demo_exec(c, demo_activity_sql, 1, sp, NULL, 0) < 0)
        goto fail;
    /* Care lists of the street (cli_care.c): a few percent of residents, sealed. */
    if (cli_demo_care(c, cfg, street) < 0)
        goto fail;
    /* A partner merchant of the street with a staff member who logs in to the console's
     * merchant screens (issue 14); its API keys are issued from the console. */
    static const char merchant_sql[] =
        "WITH a AS (SELECT id FROM persons WHERE phone = '13900000001'), "
        "m AS (SELECT (gp_merchant_create(a.id, jsonb_build_object('name', '锦华便民超市', "
        "'address', '锦华路 1 号', 'unit_id', $1::bigint, 'contact_name', '李经理', "
        "'contact_phone', '028-8888-0000')) ->> 'id')::bigint AS id FROM a), "
        "s AS (INSERT INTO persons (phone, name, unit_id, password_hash) "
        "    VALUES ('13940000001', '超市店员', $1::bigint, $2) RETURNING id) "
        "SELECT gp_merchant_staff(a.id, m.id, s.id, true) FROM a, m, s";
    const char *mp[] = {street, h_staff};
    if (demo_exec(c, merchant_sql, 2, mp, NULL, 0) < 0)
        goto fail;
    if (!exec_ok(c, "COMMIT", "COMMIT"))
        goto fail;

    char creds[1024];
    snprintf(creds, sizeof creds,
             "demo logins (phone / password):\n"
             "  street admin + auditor   13900000001 / %s\n"
             "  auditor                  13900000002 / %s\n"
             "  community admins         13910000001..13910000008 / %s\n"
             "  grid staff               13920000001..13920000100 / %s\n"
             "  workers and volunteers   13930000001..13930001200 / %s\n"
             "  merchant staff           13940000001 / %s\n",
             pw_admin, pw_staff, pw_staff, pw_staff, pw_worker, pw_staff);
    fputs(creds, stdout);
    if (cred_path) {
        /* Passwords: readable by the owner only (0600, whatever the umask), and a file that
         * exists is truncated and re-moded, never followed through a symlink. */
        int fd = open(cred_path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
        FILE *f = fd >= 0 && fchmod(fd, 0600) == 0 ? fdopen(fd, "w") : NULL;
        if (!f) {
            log_error("demo data: cannot write %s: %s", cred_path, strerror(errno));
            if (fd >= 0)
                close(fd);
        } else {
            fputs(creds, f);
            fclose(f);
            printf("demo logins written to %s (mode 0600)\n", cred_path);
        }
    }
    printf("demo street loaded (id %s)\n", street);
    rc = 0;
    PQfinish(c);
    return rc;
fail:
    exec_ok(c, "ROLLBACK", "ROLLBACK");
    PQfinish(c);
    return rc;
}

/* ---------------------------------------------------------------------------------------- */
/* rebuild-cache                                                                             */
/* ---------------------------------------------------------------------------------------- */

int cli_rebuild_cache(const struct config *cfg, int argc, char **argv)
{
    struct ledger_rebuild_opts o = {0};
    struct config_redis cr;
    char why[200];
    if (!config_redis(cfg, &cr, why, sizeof why)) {
        log_error("%s", why); /* never quotes the URL: it may hold a password */
        return 2;
    }
    o.redis_host = *cr.unix_path ? NULL : cr.host;
    o.redis_port = cr.port;
    o.redis_unix_path = *cr.unix_path ? cr.unix_path : NULL;
    o.redis_user = *cr.user ? cr.user : NULL;
    o.redis_password = *cr.password ? cr.password : NULL;
    o.redis_db = cr.db;
    o.dry_run = cli_flag(argc, argv, "--dry-run");
    o.timeout_ms = cfg->redis_command_timeout_ms > 5000 ? cfg->redis_command_timeout_ms : 5000;
    PGconn *c = cli_connect_admin(cfg);
    if (!c) {
        explicit_bzero(&cr, sizeof cr);
        return 1;
    }
    int fixed = ledger_rebuild_cache_opts((struct pg_conn *)c, &o, stdout);
    explicit_bzero(&cr, sizeof cr);
    PQfinish(c);
    return fixed < 0 ? 1 : 0;
}
