/* kv.h -- asynchronous Redis client (hiredis async + its libevent adapter).
 *
 * Redis holds only what can be rebuilt from PostgreSQL: cached balances, rankings, nonces,
 * rate-limit counters, claim gates, session cache. So every caller decides what a failure
 * means for it -- fail open (carry on without Redis) or fail closed (refuse) -- and kv never
 * decides for it.
 *
 * Contract: kv_command()/kv_eval() call their callback exactly once -- with the reply, or with
 * reply == NULL and st == ST_UNAVAILABLE when Redis is down, on command timeout, on a lost
 * connection and at kv_free() -- and never from inside the call itself. A NULL callback
 * means fire-and-forget. The reply is owned by hiredis and valid only inside the callback:
 * copy what you need. A Redis error reply (REDIS_REPLY_ERROR) is delivered as a reply with
 * st == ST_INTERNAL. */
#ifndef GP_KV_H
#define GP_KV_H

#include "common.h"
#include "status.h"

struct event_base;
struct redisReply;
struct kv;
struct kv_script;

typedef void (*kv_cb)(struct redisReply *reply, enum status st, void *arg);

struct kv_config {
    const char *host; /* host, or NULL with unix_path set */
    int port;
    const char *unix_path; /* unix socket path or NULL */
    const char *user;      /* ACL user for AUTH user password (Redis 6+), or NULL */
    const char *password;  /* AUTH password or NULL; sent first on every (re)connect */
    int db;                /* SELECT n after connecting */
    int connect_timeout_ms;
    int command_timeout_ms;
    int reconnect_max_ms; /* ceiling of the exponential reconnect back-off */
};

struct kv_stats {
    bool up;
    uint64_t commands, errors, timeouts, reconnects;
    int pending;
};

/* Starts connecting at once; never fails. Strings in cfg are copied. */
struct kv *kv_new(struct event_base *base, const struct kv_config *cfg);
/* Fails every pending command (callbacks fire with ST_UNAVAILABLE) and frees. */
void kv_free(struct kv *kv);
/* Forced shutdown: fails every pending command (ST_UNAVAILABLE), stops reconnecting, and makes
 * later commands fail on the next loop turn. The kv stays allocated until kv_free. */
void kv_shutdown(struct kv *kv);
bool kv_is_up(const struct kv *kv);
void kv_get_stats(const struct kv *kv, struct kv_stats *out);

/* Sends argv (binary safe; argvlen may be NULL for C strings). Arguments are copied. */
void kv_command(struct kv *kv, kv_cb cb, void *arg, int argc, const char *const *argv,
                const size_t *argvlen);

/* A Lua script known by its SHA-1. Created once at start-up, freed by kv_free. */
struct kv_script *kv_script_new(struct kv *kv, const char *lua);
/* EVALSHA, falling back to EVAL (which also loads it) on NOSCRIPT -- e.g. after a Redis
 * restart or SCRIPT FLUSH. argv = keys then args. */
void kv_eval(struct kv *kv, const struct kv_script *script, int nkeys, int argc,
             const char *const *argv, kv_cb cb, void *arg);

#endif
