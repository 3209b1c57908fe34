/* login_throttle.c -- the login throttle's Redis scripts and the two-step check.
 *
 * Owns: the struct login_throttle (kv, config, script handles; the scripts themselves are the
 * kv's) and one struct check per check in flight, freed when its callback has run. */
#include "login_throttle.h"
#include "config.h"
#include "crypto.h"
#include "kv.h"
#include "log.h"

#include <hiredis/hiredis.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The address counter. KEYS[1] login:addr:{<addr>}; ARGV[1] limit, ARGV[2] window ms.
 * Returns {0, 0} allowed or {1, ms left}. Every attempt counts, refused ones too; the TTL is
 * set on the first hit only (a counter found without one gets it again). */
static const char addr_lua[] = "local n = redis.call('INCR', KEYS[1])\n"
                               "local ttl = redis.call('PTTL', KEYS[1])\n"
                               "if n == 1 or ttl < 0 then\n"
                               "  redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
                               "  ttl = tonumber(ARGV[2])\n"
                               "end\n"
                               "if n > tonumber(ARGV[1]) then return {1, ttl} end\n"
                               "return {0, 0}\n";

/* The phone's counters, one hash slot. KEYS[1] the device key, KEYS[2] the (phone, address)
 * pair, KEYS[3] the (phone, device) pair, KEYS[4] the phone's slow-down hash {n = failures,
 * t = ms of the last attempt let through}. ARGV[1] "1" when a device token was presented,
 * ARGV[2] pair limit, ARGV[3] pair window ms, ARGV[4] free failures per phone, ARGV[5] phone
 * window ms, ARGV[6] first delay ms, ARGV[7] delay ceiling ms.
 * Returns {verdict, ms to wait, known device}: verdict 0 allowed, 1 pair, 3 slowed.
 *
 * The attempt is counted when it is let through, not when the password turns out wrong:
 * counting afterwards would let a burst of concurrent attempts all pass the check. The time
 * comes from Redis (TIME), the one clock all instances share. A refused attempt changes
 * nothing, so hammering cannot push the owner's next turn further away. */
static const char check_lua[] =
    "local known = ARGV[1] == '1' and redis.call('EXISTS', KEYS[1]) == 1\n"
    "local pair = KEYS[2]\n"
    "if known then pair = KEYS[3] end\n"
    "local k = 0\n"
    "if known then k = 1 end\n"
    "local n = tonumber(redis.call('GET', pair) or '0') or 0\n"
    "if n >= tonumber(ARGV[2]) then\n"
    "  local ttl = redis.call('PTTL', pair)\n"
    "  if ttl < 0 then\n"
    "    redis.call('PEXPIRE', pair, ARGV[3])\n"
    "    ttl = tonumber(ARGV[3])\n"
    "  end\n"
    "  return {1, ttl, k}\n"
    "end\n"
    "if not known then\n"
    "  local t = redis.call('TIME')\n"
    "  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "  local f = tonumber(redis.call('HGET', KEYS[4], 'n') or '0') or 0\n"
    "  local free = tonumber(ARGV[4])\n"
    "  if f >= free then\n"
    "    local last = tonumber(redis.call('HGET', KEYS[4], 't') or '0') or 0\n"
    "    local cap = tonumber(ARGV[7])\n"
    "    local d = cap\n"
    "    if f - free < 40 then d = math.min(cap, tonumber(ARGV[6]) * 2 ^ (f - free)) end\n"
    "    local wait = last + d - now\n"
    "    if wait > 0 then return {3, math.ceil(wait), 0} end\n"
    "  end\n"
    "  redis.call('HINCRBY', KEYS[4], 'n', 1)\n"
    "  redis.call('HSET', KEYS[4], 't', now)\n"
    "  redis.call('PEXPIRE', KEYS[4], ARGV[5])\n"
    "end\n"
    "if redis.call('INCR', pair) == 1 or redis.call('PTTL', pair) < 0 then\n"
    "  redis.call('PEXPIRE', pair, ARGV[3])\n"
    "end\n"
    "return {0, 0, k}\n";

/* A success takes its attempt back. KEYS[1] the pair that was counted, KEYS[2] the phone's
 * slow-down hash, KEYS[3] the device key to remember; ARGV[1] "1" when the device was known
 * (the phone was not counted then), ARGV[2] "1" to remember the device, ARGV[3] the person
 * id, ARGV[4] the device TTL ms. The phone's failures are uncounted, not reset: an attacker
 * hammering the phone must not get a fresh allowance whenever its owner logs in. */
static const char success_lua[] =
    "redis.call('DEL', KEYS[1])\n"
    "if ARGV[1] ~= '1' then\n"
    "  local f = tonumber(redis.call('HGET', KEYS[2], 'n') or '0') or 0\n"
    "  if f > 0 then redis.call('HINCRBY', KEYS[2], 'n', -1) end\n"
    "end\n"
    "if ARGV[2] == '1' then redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[4]) end\n"
    "return 1\n";

/* KEYS[1] login:addr:{<addr>}: the success was not a failure of that address. */
static const char addr_undo_lua[] = "local n = tonumber(redis.call('GET', KEYS[1]) or '0') or 0\n"
                                    "if n > 0 then redis.call('DECR', KEYS[1]) end\n"
                                    "return 1\n";

struct login_throttle {
    struct kv *kv;
    const struct config *cfg;
    struct kv_script *addr, *check, *success, *addr_undo; /* owned by kv */
};

/* Key lengths: a 32-hex phone tag, an address of < 64 bytes, a 64-hex device hash. */
#define KEY_MAX 192

struct keys {
    char addr[KEY_MAX];      /* login:addr:{<addr>} */
    char dev[KEY_MAX];       /* login:{<ph>}:dev:<device hash> */
    char pair_addr[KEY_MAX]; /* login:{<ph>}:fa:<addr> */
    char pair_dev[KEY_MAX];  /* login:{<ph>}:fd:<device hash> */
    char slow[KEY_MAX];      /* login:{<ph>}:slow */
};

struct check {
    struct login_throttle *lt;
    login_throttle_cb cb;
    void *arg;
    bool has_device;
    struct keys k;
};

/* The phone goes into keys as the first 128 bits of its SHA-256: a Redis dump then holds no
 * phone numbers, and a phone with braces in it cannot split its keys over hash slots. */
static void make_keys(const struct login_throttle_req *r, struct keys *k)
{
    unsigned char d[32];
    char ph[33];
    crypto_sha256(r->phone, strlen(r->phone), d);
    crypto_hex(d, 16, ph);
    const char *dev = r->device_hash ? r->device_hash : "";
    snprintf(k->addr, sizeof k->addr, "login:addr:{%s}", r->addr);
    snprintf(k->dev, sizeof k->dev, "login:{%s}:dev:%s", ph, dev);
    snprintf(k->pair_addr, sizeof k->pair_addr, "login:{%s}:fa:%s", ph, r->addr);
    snprintf(k->pair_dev, sizeof k->pair_dev, "login:{%s}:fd:%s", ph, dev);
    snprintf(k->slow, sizeof k->slow, "login:{%s}:slow", ph);
}

struct login_throttle *login_throttle_new(struct kv *kv, const struct config *cfg)
{
    struct login_throttle *lt = xcalloc(1, sizeof *lt);
    lt->kv = kv;
    lt->cfg = cfg;
    lt->addr = kv_script_new(kv, addr_lua);
    lt->check = kv_script_new(kv, check_lua);
    lt->success = kv_script_new(kv, success_lua);
    lt->addr_undo = kv_script_new(kv, addr_undo_lua);
    return lt;
}

void login_throttle_free(struct login_throttle *lt)
{
    free(lt);
}

static int ms_to_retry_s(long long ms)
{
    long long s = (ms + 999) / 1000;
    if (s < 1)
        s = 1; /* the wait is ending right now; Retry-After: 0 would invite a spin */
    return s > INT32_MAX ? INT32_MAX : (int)s;
}

/* Reads {int, int[, int]} from a script; false for anything else. The reply belongs to
 * hiredis and is read here, inside the callback, only (STYLE 24). */
static bool read_ints(const struct redisReply *reply, size_t n, long long *out)
{
    if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements != n)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (reply->element[i]->type != REDIS_REPLY_INTEGER)
            return false;
        out[i] = reply->element[i]->integer;
    }
    return true;
}

/* A wrong answer (a key of another type, a script error) is worth an error line; an outage
 * is already logged and counted by kv. Either way the login goes on (fail open). */
static void log_script_failure(const struct redisReply *reply, enum status st, const char *what)
{
    if (st == ST_UNAVAILABLE)
        return;
    log_error("login throttle %s script failed: %.200s", what,
              reply && reply->type == REDIS_REPLY_ERROR ? reply->str : "unexpected reply");
}

static void finish(struct check *c, enum login_throttle_verdict v, int retry_after_s, bool known)
{
    login_throttle_cb cb = c->cb;
    void *arg = c->arg;
    free(c);
    cb(v, retry_after_s, known, arg);
}

static void check_cb(struct redisReply *reply, enum status st, void *arg)
{
    struct check *c = arg;
    long long v[3];
    if (st != ST_OK || !read_ints(reply, 3, v)) {
        log_script_failure(reply, st, "check");
        finish(c, LOGIN_THROTTLE_ALLOW, 0, false);
        return;
    }
    bool known = v[2] == 1;
    if (v[0] == 1)
        finish(c, LOGIN_THROTTLE_PAIR, ms_to_retry_s(v[1]), known);
    else if (v[0] == 3)
        finish(c, LOGIN_THROTTLE_SLOW, ms_to_retry_s(v[1]), known);
    else
        finish(c, LOGIN_THROTTLE_ALLOW, 0, known);
}

static void addr_cb(struct redisReply *reply, enum status st, void *arg)
{
    struct check *c = arg;
    long long v[2];
    if (st != ST_OK || !read_ints(reply, 2, v)) {
        /* Redis is away (or broken): the phone's script would fare no better. */
        log_script_failure(reply, st, "address");
        finish(c, LOGIN_THROTTLE_ALLOW, 0, false);
        return;
    }
    if (v[0] == 1) {
        finish(c, LOGIN_THROTTLE_ADDR, ms_to_retry_s(v[1]), false);
        return;
    }
    const struct config *cfg = c->lt->cfg;
    char limit[24], window[24], free_n[24], phone_window[24], delay[24], delay_max[24];
    snprintf(limit, sizeof limit, "%d", cfg->login_limit_per_pair);
    snprintf(window, sizeof window, "%lld", (long long)cfg->login_window_s * 1000);
    snprintf(free_n, sizeof free_n, "%d", cfg->login_phone_free);
    snprintf(phone_window, sizeof phone_window, "%lld",
             (long long)cfg->login_phone_window_s * 1000);
    snprintf(delay, sizeof delay, "%d", cfg->login_phone_delay_ms);
    snprintf(delay_max, sizeof delay_max, "%d", cfg->login_phone_delay_max_ms);
    const char *argv[] = {
        c->k.dev, c->k.pair_addr, c->k.pair_dev, c->k.slow,    c->has_device ? "1" : "0",
        limit,    window,         free_n,        phone_window, delay,
        delay_max};
    kv_eval(c->lt->kv, c->lt->check, 4, (int)ARRAY_SIZE(argv), argv, check_cb, c);
}

void login_throttle_check(struct login_throttle *lt, const struct login_throttle_req *r,
                          login_throttle_cb cb, void *arg)
{
    ASSERT(r && r->phone && r->addr && cb);
    struct check *c = xcalloc(1, sizeof *c);
    c->lt = lt;
    c->cb = cb;
    c->arg = arg;
    c->has_device = r->device_hash != NULL;
    make_keys(r, &c->k);

    /* The address first: one address spraying many phones is stopped before it costs the
     * phones' counters anything. */
    char limit[24], window[24];
    snprintf(limit, sizeof limit, "%d", lt->cfg->login_limit_per_addr);
    snprintf(window, sizeof window, "%lld", (long long)lt->cfg->login_window_s * 1000);
    const char *argv[] = {c->k.addr, limit, window};
    kv_eval(lt->kv, lt->addr, 1, (int)ARRAY_SIZE(argv), argv, addr_cb, c);
}

/* The address counter alone: its verdict is the whole verdict. */
static void addr_only_cb(struct redisReply *reply, enum status st, void *arg)
{
    struct check *c = arg;
    long long v[2];
    if (st != ST_OK || !read_ints(reply, 2, v)) {
        log_script_failure(reply, st, "address");
        finish(c, LOGIN_THROTTLE_ALLOW, 0, false);
        return;
    }
    if (v[0] == 1)
        finish(c, LOGIN_THROTTLE_ADDR, ms_to_retry_s(v[1]), false);
    else
        finish(c, LOGIN_THROTTLE_ALLOW, 0, false);
}

void login_throttle_check_addr(struct login_throttle *lt, const char *addr, login_throttle_cb cb,
                               void *arg)
{
    ASSERT(addr && cb);
    struct check *c = xcalloc(1, sizeof *c);
    c->lt = lt;
    c->cb = cb;
    c->arg = arg;
    snprintf(c->k.addr, sizeof c->k.addr, "login:addr:{%s}", addr);
    char limit[24], window[24];
    snprintf(limit, sizeof limit, "%d", lt->cfg->login_limit_per_addr);
    snprintf(window, sizeof window, "%lld", (long long)lt->cfg->login_window_s * 1000);
    const char *argv[] = {c->k.addr, limit, window};
    kv_eval(lt->kv, lt->addr, 1, (int)ARRAY_SIZE(argv), argv, addr_only_cb, c);
}

static void success_cb(struct redisReply *reply, enum status st, void *arg)
{
    if (st == ST_OK && reply && reply->type == REDIS_REPLY_INTEGER)
        return;
    log_script_failure(reply, st, (const char *)arg);
}

void login_throttle_success(struct login_throttle *lt, const struct login_throttle_req *r,
                            bool known_device, const char *remember_device_hash, int64_t person_id)
{
    ASSERT(r && r->phone && r->addr);
    struct keys k, remember;
    make_keys(r, &k);
    const char *remember_key = k.dev;
    if (remember_device_hash) {
        struct login_throttle_req rr = *r;
        rr.device_hash = remember_device_hash;
        make_keys(&rr, &remember);
        remember_key = remember.dev;
    }
    char person[24], ttl[24];
    snprintf(person, sizeof person, "%lld", (long long)person_id);
    snprintf(ttl, sizeof ttl, "%lld", (long long)lt->cfg->login_device_ttl_s * 1000);
    const char *argv[] = {
        known_device ? k.pair_dev : k.pair_addr, k.slow, remember_key, known_device ? "1" : "0",
        remember_device_hash ? "1" : "0",        person, ttl};
    kv_eval(lt->kv, lt->success, 3, (int)ARRAY_SIZE(argv), argv, success_cb, (void *)"success");

    const char *undo[] = {k.addr};
    kv_eval(lt->kv, lt->addr_undo, 1, 1, undo, success_cb, (void *)"address undo");
}

void login_throttle_success_addr(struct login_throttle *lt, const char *addr)
{
    ASSERT(addr);
    char key[KEY_MAX];
    snprintf(key, sizeof key, "login:addr:{%s}", addr);
    const char *undo[] = {key};
    kv_eval(lt->kv, lt->addr_undo, 1, 1, undo, success_cb, (void *)"address undo");
}
