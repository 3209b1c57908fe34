/* ratelimit.c -- fixed-window hit counters on top of kv_eval.
 *
 * Owns: the struct ratelimit (a kv pointer and the script handle, the script itself is the
 * kv's) and one small struct hit per call in flight, freed in its kv callback. */
#include "ratelimit.h"
#include "kv.h"
#include "log.h"

#include <hiredis/hiredis.h>

#include <stdio.h>
#include <stdlib.h>

/* KEYS[1] the counter, ARGV[1] the window in ms. Returns {hits in this window, ms left}.
 * The TTL is set on the first hit only, so hits do not stretch the window; a counter found
 * without TTL (someone SET it by hand, or PERSIST) gets one again instead of blocking for
 * ever. */
static const char hit_lua[] = "local n = redis.call('INCR', KEYS[1])\n"
                              "local ttl = redis.call('PTTL', KEYS[1])\n"
                              "if n == 1 or ttl < 0 then\n"
                              "  redis.call('PEXPIRE', KEYS[1], ARGV[1])\n"
                              "  ttl = tonumber(ARGV[1])\n"
                              "end\n"
                              "return {n, ttl}\n";

struct ratelimit {
    struct kv *kv;
    struct kv_script *script; /* owned by kv */
};

struct hit {
    ratelimit_cb cb;
    void *arg;
    int limit;
    enum ratelimit_on_down on_down;
};

struct ratelimit *ratelimit_new(struct kv *kv)
{
    struct ratelimit *rl = xcalloc(1, sizeof *rl);
    rl->kv = kv;
    rl->script = kv_script_new(kv, hit_lua);
    return rl;
}

void ratelimit_free(struct ratelimit *rl)
{
    free(rl);
}

static bool parse_reply(const struct redisReply *reply, long long *hits, long long *ttl_ms)
{
    if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != 2)
        return false;
    if (reply->element[0]->type != REDIS_REPLY_INTEGER ||
        reply->element[1]->type != REDIS_REPLY_INTEGER)
        return false;
    *hits = reply->element[0]->integer;
    *ttl_ms = reply->element[1]->integer;
    return true;
}

/* The reply belongs to hiredis and is read here, inside the callback, only (STYLE 24). */
static void hit_cb(struct redisReply *reply, enum status st, void *arg)
{
    struct hit h = *(struct hit *)arg;
    long long hits, ttl_ms;

    free(arg);
    if (st == ST_OK && parse_reply(reply, &hits, &ttl_ms)) {
        if (hits <= h.limit) {
            h.cb(ST_OK, 0, (int)(h.limit - hits), h.arg);
            return;
        }
        long long secs = (ttl_ms + 999) / 1000;
        if (secs < 1)
            secs = 1; /* the window is ending right now; Retry-After: 0 would invite a spin */
        if (secs > INT32_MAX)
            secs = INT32_MAX;
        h.cb(ST_RATE_LIMITED, (int)secs, 0, h.arg);
        return;
    }
    if (st != ST_UNAVAILABLE) {
        /* Not a Redis outage but a wrong answer (a key of another type, a script error):
         * worth an error line, and handled like an outage. */
        log_error("ratelimit script failed: %.200s",
                  reply && reply->type == REDIS_REPLY_ERROR ? reply->str : "unexpected reply");
    }
    if (h.on_down == RATELIMIT_FAIL_OPEN)
        h.cb(ST_OK, 0, -1, h.arg);
    else
        h.cb(ST_UNAVAILABLE, 1, -1, h.arg);
}

void ratelimit_hit(struct ratelimit *rl, const char *key, int limit, int window_s,
                   enum ratelimit_on_down on_down, ratelimit_cb cb, void *arg)
{
    ASSERT(key && cb && limit > 0 && window_s > 0);
    struct hit *h = xmalloc(sizeof *h);
    h->cb = cb;
    h->arg = arg;
    h->limit = limit;
    h->on_down = on_down;

    char window_ms[24];
    snprintf(window_ms, sizeof window_ms, "%lld", (long long)window_s * 1000);
    const char *argv[] = {key, window_ms};
    kv_eval(rl->kv, rl->script, 1, 2, argv, hit_cb, h);
}
