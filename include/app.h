/* app.h -- the long-lived objects of one server process, created in main() and destroyed in
 * reverse order at shutdown (STYLE §26). Passed to domain functions explicitly; there are no
 * other globals holding state. */
#ifndef GP_APP_H
#define GP_APP_H

#include <stdbool.h>

struct config;
struct event_base;
struct db_pool;
struct kv;
struct ratelimit;
struct login_throttle;
struct workpool;
struct metrics;
struct ledger_cache;
struct task_gate;
struct audit;
struct webhooks;
struct exchange;
struct wechat;
struct evidence_store;
struct static_files;
struct replica;
struct auth_sessions;

struct app {
    const struct config *cfg;
    struct event_base *base;
    struct db_pool *db;
    struct kv *kv;
    struct ratelimit *rl;
    struct login_throttle *login; /* login throttling and known devices */
    struct workpool *wp;          /* CPU-heavy work off the loop (password hashing) */
    struct metrics *metrics;
    struct ledger_cache *ledger; /* Redis balance/ranking scripts */
    struct task_gate *gate;      /* Redis claim gate */
    struct audit *audit;         /* checkpoint signing key and the sealer's state */
    struct webhooks *webhooks;   /* merchant webhook deliveries in flight */
    struct wechat *wechat;       /* WeChat login client (wechat.h); NULL = no WeChat */
    struct static_files *web;    /* the browser apps, in memory (static.c); NULL = none */
    volatile int stopping;       /* set once shutdown began: background sweeps stop */
    /* The janitor's start-up checks passed (migration version, functions hash, signed history
     * not behind a published checkpoint): until then /readyz answers 503 "starting", so that no
     * balancer or harness sends work to an instance that may still refuse to run. */
    bool started;
    /* evidence photos' bytes (evidence_store.h) */
    struct evidence_store *evidence;
    /* calls to partner schemes (exchange.h); NULL when exchange.enabled is off */
    struct exchange *exchange;
    struct replica *replica; /* read replica routing (replica.h); NULL = none */
    /* session cache misses coalesced into batched lookups (auth.h); NULL = one query each */
    struct auth_sessions *sessions;
};

#endif
