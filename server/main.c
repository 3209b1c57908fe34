/* main.c -- gridpointsd: parses the command line, loads the config, and either runs an
 * operator command (cli.c) or wires the long-lived objects together and serves.
 *
 * Shutdown (SIGTERM/SIGINT): stop accepting, let in-flight requests finish (every async
 * operation under them has its own timeout, so they do), then free everything in reverse order
 * of creation. A second signal, or server.shutdown_timeout, forces the database and Redis
 * clients to fail what they still hold, which completes the remaining requests with 503. */
#include "api.h"
#include "app.h"
#include "audit.h"
#include "auth.h"
#include "cli.h"
#include "config.h"
#include "db.h"
#include "evidence_store.h"
#include "exchange.h"
#include "http_server.h"
#include "janitor.h"
#include "kv.h"
#include "ledger.h"
#include "task_gate.h"
#include "log.h"
#include "merchant_crypto.h"
#include "metrics.h"
#include "login_throttle.h"
#include "ratelimit.h"
#include "replica.h"
#include "sql_build.h"
#include "static.h"
#include "version.h"
#include "webhook.h"
#include "wechat.h"
#include "workpool.h"

#include <event2/event.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct server {
    struct app app;
    struct http_server *http;
    struct janitor *janitor;
    struct event *sigterm, *sigint, *deadline, *drain;
    int parts_running; /* the HTTP server and the janitor; the loop exits when both are idle */
    int exit_code;
};

/* The commands, their synopsis and what they do: `gridpointsd --help` lists them, `gridpointsd
 * help CMD` and `gridpointsd CMD --help` show one. */
static const struct command_help {
    const char *name, *synopsis, *summary, *details;
} commands[] = {
    {"serve", "serve", "run the server (the default command)",
     "Serves HTTP on server.listen (and tls_listen, metrics_listen) until SIGTERM or SIGINT,\n"
     "then drains in-flight requests (server.shutdown_timeout). Refuses to start when the\n"
     "database's schema is not the one this build needs (run `migrate`).\n"},
    {"migrate", "migrate", "apply pending migrations, re-create the SQL functions",
     "One transaction over database.admin_url: applies the migrations of database.sql_dir not\n"
     "yet applied and re-creates every SQL function. Safe to run again.\n"},
    {"check-config", "check-config",
     "validate the configuration (and the files it names) without starting",
     "Reads the configuration like `serve` does -- every key, its type and bounds, the\n"
     "listen addresses, the Redis URL -- and the files it names (TLS certificate and key,\n"
     "audit key, CA files, web.dir, evidence.dir), without opening a socket or connecting\n"
     "anywhere. Prints \"configuration OK\" and exits 0, or one line per problem on stderr\n"
     "and exits 2.\n"},
    {"create-admin", "create-admin --phone P --name N --street S", "create a street and its admin",
     "The password comes from GRIDPOINTS_ADMIN_PASSWORD (at least 8 characters). Prints the\n"
     "new ids as one JSON line.\n"},
    {"demo-data", "demo-data [--credentials FILE]", "load the demo street once; print its logins",
     "Loads the demo street of seeds/ unless it is there already; --credentials writes its\n"
     "logins to FILE (0600) instead of stdout.\n"},
    {"rebuild-cache", "rebuild-cache [--dry-run]",
     "rebuild Redis balances and rankings from the ledger",
     "Compares every cached balance and ranking with the ledger and fixes each difference,\n"
     "one line each; --dry-run only reports them.\n"},
    {"audit-keygen", "audit-keygen [--if-missing]",
     "create the checkpoint signing key (audit.key_file)",
     "Writes a new Ed25519 key to audit.key_file (0600) and registers its public half;\n"
     "--if-missing does nothing when the file exists.\n"},
    {"audit-rotate-key", "audit-rotate-key",
     "replace the signing key; old checkpoints still verify",
     "The old key file is kept as <key_file>.<key id>.retired. Restart the servers: they sign\n"
     "with the key they loaded at start-up.\n"},
    {"audit-pubkey", "audit-pubkey", "print the checkpoint public keys (JSON)",
     "The document GET /.well-known/gridpoints/checkpoint-keys serves and `verify --pubkey`\n"
     "reads.\n"},
    {"audit-verify", "audit-verify --full [--wait SECONDS]",
     "request a full verification pass of the sealed log",
     "Verification passes are incremental: each re-derives the transactions sealed since the\n"
     "last clean pass. --full makes the next pass re-derive the whole log from index 0 (a\n"
     "server holding the signing key runs it, audit.verify_batch leaves per round); --wait\n"
     "waits up to SECONDS for it and prints its outcome: exit 0 clean, 1 an alarm or timeout.\n"},
    {"export", "export [--unit ID] [--from T] [--to T] [--format jsonl|csv] [--out FILE]",
     "stream the sealed ledger with its checkpoints",
     "Without --unit/--from/--to the export is complete (the verifier recomputes every root);\n"
     "with them each transaction carries its inclusion proof.\n"},
    {"verify", "verify --export FILE --pubkey FILE | --proofs FILE --pubkey FILE",
     "check an export or proofs offline (no database)",
     "Recomputes the roots of an export (or checks inclusion proofs) against the signed\n"
     "checkpoints and the public keys of FILE.\n"},
    {"print-config", "print-config", "print the effective configuration",
     "Every key with its value after the file and the environment (GRIDPOINTS_<SECTION>_<KEY>)\n"
     "were read; secrets are masked.\n"},
    {"version", "version", "print the version (as --version does)", ""},
    {"help", "help [COMMAND]", "show this help, or the help of COMMAND", ""},
};

static const struct command_help *command_find(const char *name)
{
    for (size_t i = 0; i < ARRAY_SIZE(commands); i++)
        if (!strcmp(commands[i].name, name))
            return &commands[i];
    return NULL;
}

static void usage(FILE *out)
{
    fprintf(out, "usage: gridpointsd [-c CONFIG] [COMMAND [ARGS]]\n"
                 "       gridpointsd --help | --version | help COMMAND | COMMAND --help\n"
                 "options:\n"
                 "  -c, --config FILE     the configuration file (default: built-in defaults;\n"
                 "                        GRIDPOINTS_<SECTION>_<KEY> variables override both)\n"
                 "  -h, --help            show this help and exit\n"
                 "  -V, --version         show the version and exit\n"
                 "commands:\n");
    for (size_t i = 0; i < ARRAY_SIZE(commands); i++) {
        const struct command_help *c = &commands[i];
        if (strlen(c->synopsis) <= 20)
            fprintf(out, "  %-20s  %s\n", c->synopsis, c->summary);
        else
            fprintf(out, "  %s\n  %-20s  %s\n", c->synopsis, "", c->summary);
    }
}

static void command_usage(const struct command_help *c)
{
    printf("usage: gridpointsd [-c CONFIG] %s\n\n%s.\n", c->synopsis, c->summary);
    if (*c->details)
        printf("\n%s", c->details);
}

static void part_idle_cb(void *arg)
{
    struct server *s = arg;
    if (--s->parts_running == 0)
        event_base_loopexit(s->app.base, NULL);
}

/* Forces completion: pending database and Redis work fails now, and with it the requests. */
static void force_cb(evutil_socket_t fd, short what, void *arg)
{
    struct server *s = arg;
    log_warn("shutdown deadline reached with %d requests in flight: failing pending work",
             http_server_inflight(s->http));
    db_pool_shutdown(s->app.db);
    kv_shutdown(s->app.kv);
    wechat_fail_all(s->app.wechat);
    /* The failures above complete every request on the next loop turns. A reply whose write
     * failed (client gone mid-write) never reports back; do not wait for it forever. */
    struct timeval last = {1, 0};
    event_base_loopexit(s->app.base, &last);
}

/* The drain delay is over (or there was none): close the listeners, finish in-flight requests
 * within server.shutdown_timeout. */
static void drain_cb(evutil_socket_t fd, short what, void *arg)
{
    struct server *s = arg;
    struct timeval tv = {s->app.cfg->shutdown_timeout_ms / 1000,
                         (s->app.cfg->shutdown_timeout_ms % 1000) * 1000};
    evtimer_add(s->deadline, &tv);
    http_server_stop_accepting(s->http);
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
    struct server *s = arg;
    if (s->app.stopping) {
        if (evtimer_pending(s->drain, NULL)) { /* a second signal ends the drain delay */
            evtimer_del(s->drain);
            drain_cb(-1, 0, s);
        }
        force_cb(-1, 0, s);
        return;
    }
    log_info("received %s: shutting down (%d requests in flight)",
             sig == SIGTERM ? "SIGTERM" : "SIGINT", http_server_inflight(s->http));
    s->app.stopping = 1; /* /readyz answers 503 from now on, replies close their connection */
    s->parts_running = 4;
    janitor_stop(s->janitor, part_idle_cb, s);
    replica_stop(s->app.replica);
    webhooks_stop(s->app.webhooks, part_idle_cb, s);
    if (s->app.exchange)
        exchange_stop(s->app.exchange, part_idle_cb, s);
    else
        s->parts_running--;
    int drain = s->app.cfg->drain_delay_ms;
    if (drain > 0) {
        /* Still serving while a load balancer's health check notices /readyz (docs/OPERATIONS.md,
         * "Several instances behind a load balancer"); then the ordinary drain. */
        log_info("draining: listeners close in %d ms", drain);
        struct timeval tv = {drain / 1000, (drain % 1000) * 1000};
        evtimer_add(s->drain, &tv);
        return;
    }
    drain_cb(-1, 0, s);
}

static int serve(const struct config *cfg)
{
    struct server s = {0};
    struct app *app = &s.app;
    app->cfg = cfg;
    struct event_config *ecfg = event_config_new();
    app->base = event_base_new_with_config(ecfg);
    event_config_free(ecfg);
    if (!app->base) {
        log_error("cannot create the event base");
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);

    app->metrics = metrics_new();
    /* The web apps are read (and compressed) before any connection is opened: this takes
     * seconds for a large build under the sanitizers, and the connect deadlines of the
     * PostgreSQL and Redis clients run from their creation, not from the loop's start. */
    char why_web[PATH_MAX + 200];
    app->web = static_load(cfg, why_web, sizeof why_web); /* reads web.dir: start-up file I/O */
    if (!app->web) {
        log_error("%s", why_web);
        metrics_free(app->metrics);
        event_base_free(app->base);
        return 1;
    }
    struct db_pool_config dc = {
        .conninfo = cfg->database_url,
        .size = cfg->db_pool_size,
        .queue_max = cfg->db_queue_max,
        .queue_timeout_ms = cfg->db_queue_timeout_ms,
        .statement_timeout_ms = cfg->db_statement_timeout_ms,
        .search_path = SQL_BUILD_SEARCH_PATH,
        .connect_timeout_ms = cfg->db_connect_timeout_ms,
        .reconnect_max_ms = cfg->db_reconnect_max_ms,
        .retries = cfg->db_retries,
    };
    app->db = db_pool_new(app->base, &dc);
    app->sessions = auth_sessions_new(app);

    struct config_redis cr;
    char why_redis[200];
    if (!config_redis(cfg, &cr, why_redis, sizeof why_redis)) {
        log_error("%s", why_redis); /* config_load checked it already; never quotes the URL */
        db_pool_free(app->db);
        auth_sessions_free(app->sessions);
        static_free(app->web);
        metrics_free(app->metrics);
        event_base_free(app->base);
        return 1;
    }
    struct kv_config kc = {
        .host = *cr.unix_path ? NULL : cr.host,
        .port = cr.port,
        .unix_path = *cr.unix_path ? cr.unix_path : NULL,
        .user = cr.user,
        .password = cr.password,
        .db = cr.db,
        .connect_timeout_ms = cfg->redis_connect_timeout_ms,
        .command_timeout_ms = cfg->redis_command_timeout_ms,
        .reconnect_max_ms = cfg->redis_reconnect_max_ms,
    };
    app->kv = kv_new(app->base, &kc); /* copies the strings */
    explicit_bzero(&cr, sizeof cr);
    app->rl = ratelimit_new(app->kv);
    app->login = login_throttle_new(app->kv, cfg);
    app->ledger = ledger_cache_new(app->kv);
    app->gate = task_gate_new(app->kv);
    app->wp = workpool_new(app->base, cfg->worker_threads);
    app->audit = audit_new(app); /* reads the checkpoint key: start-up file I/O */
    if (!app->audit) {
        s.exit_code = 1;
        goto teardown;
    }
    char why[200];
    if (!mcrypto_config_check(cfg, why, sizeof why)) {
        log_error("%s", why);
        s.exit_code = 1;
        goto teardown;
    }
    app->webhooks = webhooks_new(app); /* loads CA certificates and resolv.conf: start-up I/O */
    if (!app->webhooks) {
        s.exit_code = 1;
        goto teardown;
    }
    /* the exchange client loads its CA file: start-up I/O; NULL when exchange.enabled is off */
    app->exchange = cfg->exchange_enabled ? exchange_new(app) : NULL;
    if (cfg->exchange_enabled && !app->exchange) {
        s.exit_code = 1;
        goto teardown;
    }
    app->wechat = wechat_new(app->base, cfg); /* checks [wechat], loads its CA file */
    if (!app->wechat) {
        s.exit_code = 1;
        goto teardown;
    }

    char why_evidence[512];
    app->evidence = evidence_store_dir_new(cfg->evidence_dir, why_evidence, sizeof why_evidence);
    if (!app->evidence) { /* creates evidence.dir: start-up file I/O */
        log_error("%s", why_evidence);
        s.exit_code = 1;
        goto teardown;
    }

    bool replica_ok;
    app->replica = replica_new(app, &replica_ok); /* NULL without database.replica_url */
    if (!replica_ok) {
        s.exit_code = 1;
        goto teardown;
    }

    s.http = http_server_new(app);
    if (!s.http) {
        s.exit_code = 1;
        goto teardown;
    }
    http_server_on_drained(s.http, part_idle_cb, &s);
    s.janitor = janitor_new(app, &s.exit_code);
    s.sigterm = evsignal_new(app->base, SIGTERM, signal_cb, &s);
    s.sigint = evsignal_new(app->base, SIGINT, signal_cb, &s);
    s.deadline = evtimer_new(app->base, force_cb, &s);
    s.drain = evtimer_new(app->base, drain_cb, &s);
    evsignal_add(s.sigterm, NULL);
    evsignal_add(s.sigint, NULL);
    log_info("gridpointsd %s started (pid %d)", GRIDPOINTS_VERSION, (int)getpid());

    event_base_dispatch(app->base);
    log_info("event loop stopped; releasing resources");

teardown:
    /* Reverse order of creation. Nothing is in flight any more: the loop only exits once the
     * HTTP server drained, or on a start-up failure before anything was sent. */
    janitor_free(s.janitor);
    if (s.deadline)
        event_free(s.deadline);
    if (s.drain)
        event_free(s.drain);
    if (s.sigterm)
        event_free(s.sigterm);
    if (s.sigint)
        event_free(s.sigint);
    http_server_free(s.http);
    static_free(app->web); /* after the HTTP server: replies borrow its bytes */
    workpool_free(app->wp);
    evidence_store_free(app->evidence); /* after the pool: its jobs use the store */
    task_gate_free(app->gate);
    ledger_cache_free(app->ledger);
    login_throttle_free(app->login);
    ratelimit_free(app->rl);
    /* The pool first: a background query's callback may still push to Redis; nothing that
     * Redis answers chains into the pool once the HTTP server has drained. */
    db_pool_free(app->db);
    auth_sessions_free(app->sessions); /* after the pool: a failing batch answers its requests */
    replica_free(app->replica);   /* after the primary's pool: its lag poll calls back into it */
    webhooks_free(app->webhooks); /* after the pool (reports call back), before the base */
    exchange_free(app->exchange); /* likewise */
    wechat_free(app->wechat);     /* after the HTTP server drained: no exchange left */
    audit_free(app->audit); /* after the pool: a checkpoint store in flight calls back into it */
    kv_free(app->kv);
    metrics_free(app->metrics);
    event_base_free(app->base);
    libevent_global_shutdown();
    log_info("bye (exit %d)", s.exit_code);
    return s.exit_code;
}

static void print_line(const char *line, void *arg)
{
    printf("%s\n", line);
}

/* Whether the command's own arguments ask for its help. */
static bool wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
            return true;
    return false;
}

int main(int argc, char **argv)
{
    static const struct option options[] = {
        {"config", required_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    const char *config_path = NULL;
    int opt;
    /* "+": options end at the command; what follows belongs to the command. */
    while ((opt = getopt_long(argc, argv, "+c:hV", options, NULL)) != -1) {
        switch (opt) {
        case 'c':
            config_path = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("gridpointsd %s\n", GRIDPOINTS_VERSION);
            return 0;
        default: /* getopt said what was wrong */
            fprintf(stderr, "see gridpointsd --help\n");
            return 2;
        }
    }
    int i = optind;
    const char *cmd = i < argc ? argv[i] : "serve";
    if (!strcmp(cmd, "help")) {
        if (i + 1 >= argc || !strcmp(argv[i + 1], "--help") || !strcmp(argv[i + 1], "-h")) {
            usage(stdout);
            return 0;
        }
        const struct command_help *c = command_find(argv[i + 1]);
        if (!c) {
            fprintf(stderr, "gridpointsd: no command \"%s\" (see gridpointsd --help)\n",
                    argv[i + 1]);
            return 2;
        }
        command_usage(c);
        return 0;
    }
    const struct command_help *known = command_find(cmd);
    if (!known) {
        fprintf(stderr, "gridpointsd: no command \"%s\" (see gridpointsd --help)\n", cmd);
        return 2;
    }
    if (i < argc && wants_help(argc - i, argv + i)) {
        command_usage(known);
        return 0;
    }
    if (!strcmp(cmd, "version")) {
        printf("gridpointsd %s\n", GRIDPOINTS_VERSION);
        return 0;
    }
    struct config cfg;
    char err[512];
    if (!config_load(&cfg, config_path, err, sizeof err)) {
        fprintf(stderr, "gridpointsd: %s\n", err);
        config_free(&cfg);
        return 2;
    }
    int lvl = log_level_parse(cfg.log_level);
    if (lvl < 0) {
        fprintf(stderr, "gridpointsd: log.level must be debug, info, warn or error\n");
        config_free(&cfg);
        return 2;
    }
    log_min_level = (enum log_level)lvl;
    log_hook_libevent();

    int rc;
    if (!strcmp(cmd, "serve"))
        rc = serve(&cfg);
    else if (!strcmp(cmd, "migrate"))
        rc = cli_migrate(&cfg);
    else if (!strcmp(cmd, "create-admin"))
        rc = cli_create_admin(&cfg, argc - i, argv + i);
    else if (!strcmp(cmd, "demo-data"))
        rc = cli_demo_data(&cfg, argc - i, argv + i);
    else if (!strcmp(cmd, "rebuild-cache"))
        rc = cli_rebuild_cache(&cfg, argc - i, argv + i);
    else if (!strcmp(cmd, "audit-keygen"))
        rc = cli_audit_keygen(&cfg, argc - i, argv + i, false);
    else if (!strcmp(cmd, "audit-rotate-key"))
        rc = cli_audit_keygen(&cfg, argc - i, argv + i, true);
    else if (!strcmp(cmd, "audit-pubkey"))
        rc = cli_audit_pubkey(&cfg);
    else if (!strcmp(cmd, "audit-verify"))
        rc = cli_audit_verify(&cfg, argc - i, argv + i);
    else if (!strcmp(cmd, "export"))
        rc = cli_export(&cfg, argc - i, argv + i);
    else if (!strcmp(cmd, "verify"))
        rc = cli_verify(argc - i, argv + i);
    else if (!strcmp(cmd, "check-config"))
        rc = cli_check_config(&cfg, config_path);
    else if (!strcmp(cmd, "print-config")) {
        config_dump(&cfg, print_line, NULL);
        rc = 0;
    } else {
        usage(stderr);
        rc = 2;
    }
    config_free(&cfg);
    return rc;
}
