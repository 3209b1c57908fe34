/* task_gate.c -- the Redis claim gate (see task_gate.h for why it is safe). */
#include "task_gate.h"
#include "kv.h"
#include "log.h"

#include <hiredis/hiredis.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The gate lives an hour after its last write: a task nobody claims for an hour does not need
 * a storm filter, and the next claim recreates it from PostgreSQL's answer. */
#define GATE_TTL_S "3600"

/* KEYS[1] gate, ARGV[1] the caller's area wrapped in dots (".1.5.12."), ARGV[2] the caller.
 * Returns 1 (taken), 0 (full), -1 (unknown: no gate, no unit, caller outside the task's area,
 * or a caller who holds a slot). The scope test comes first: nothing below it may depend on a
 * task the caller cannot see. */
static const char take_lua[] = "local g = redis.call('HMGET', KEYS[1], 'f', 'u')\n"
                               "if not g[1] or not g[2] then return -1 end\n"
                               "if not string.find(ARGV[1], '.' .. g[2] .. '.', 1, true) then\n"
                               "  return -1\n"
                               "end\n"
                               "if redis.call('HEXISTS', KEYS[1], 'h' .. ARGV[2]) == 1 then\n"
                               "  return -1\n"
                               "end\n"
                               "if tonumber(g[1]) <= 0 then return 0 end\n"
                               "redis.call('HINCRBY', KEYS[1], 'f', -1)\n"
                               "return 1\n";

/* KEYS[1] gate, ARGV free, version, ttl, unit. An equal version is PostgreSQL's count for that
 * very row state, so it may overwrite decrements taken by requests since: they will each
 * write their own answer back. */
static const char set_lua[] =
    "local v = redis.call('HGET', KEYS[1], 'v')\n"
    "if v and tonumber(v) > tonumber(ARGV[2]) then return 0 end\n"
    "redis.call('HSET', KEYS[1], 'f', ARGV[1], 'v', ARGV[2], 'u', ARGV[4])\n"
    "redis.call('EXPIRE', KEYS[1], ARGV[3])\n"
    "return 1\n";

/* KEYS[1] gate, ARGV free, version, ttl, unit, holder: marks the holder; writes the count
 * only when the gate has no unit (none at all, or one written before gates had units): no
 * claim took a unit from such a gate, so no claim in flight can be counted twice. */
static const char won_lua[] = "redis.call('HSET', KEYS[1], 'h' .. ARGV[5], '1')\n"
                              "if redis.call('HEXISTS', KEYS[1], 'u') == 0 then\n"
                              "  redis.call('HSET', KEYS[1], 'f', ARGV[1], 'v', ARGV[2], 'u', "
                              "ARGV[4])\n"
                              "end\n"
                              "redis.call('EXPIRE', KEYS[1], ARGV[3])\n"
                              "return 1\n";

struct task_gate {
    struct kv *kv;
    struct kv_script *take, *set, *won;
};

struct take_req {
    task_gate_cb cb;
    void *arg;
};

struct task_gate *task_gate_new(struct kv *kv)
{
    struct task_gate *g = xcalloc(1, sizeof *g);
    g->kv = kv;
    g->take = kv_script_new(kv, take_lua);
    g->set = kv_script_new(kv, set_lua);
    g->won = kv_script_new(kv, won_lua);
    return g;
}

void task_gate_free(struct task_gate *g)
{
    free(g); /* the scripts belong to the kv */
}

static void take_cb(struct redisReply *reply, enum status st, void *arg)
{
    struct take_req *t = arg;
    enum task_gate_answer a = TASK_GATE_UNKNOWN;
    if (st == ST_OK && reply && reply->type == REDIS_REPLY_INTEGER)
        a = reply->integer == 1   ? TASK_GATE_PASS
            : reply->integer == 0 ? TASK_GATE_FULL
                                  : TASK_GATE_UNKNOWN;
    task_gate_cb cb = t->cb;
    void *carg = t->arg;
    free(t);
    cb(a, carg);
}

void task_gate_take(struct task_gate *g, int64_t task, const char *area, int64_t caller,
                    task_gate_cb cb, void *arg)
{
    char key[48], who[24];
    snprintf(key, sizeof key, "gate:{%lld}", (long long)task);
    snprintf(who, sizeof who, "%lld", (long long)caller);
    /* Dots on both sides, so that unit 5 matches ".5." and never ".15." or ".51.". */
    char *dotted = xmalloc(strlen(area ? area : "") + 3);
    sprintf(dotted, ".%s.", area ? area : "");
    struct take_req *t = xmalloc(sizeof *t);
    t->cb = cb;
    t->arg = arg;
    const char *argv[] = {key, dotted, who};
    kv_eval(g->kv, g->take, 1, 3, argv, take_cb, t);
    free(dotted);
}

static void put(struct task_gate *g, const struct kv_script *script, int64_t task, int64_t unit,
                int64_t free_slots, int64_t version, int64_t holder)
{
    char key[48], f[24], v[24], u[24], h[24];
    snprintf(key, sizeof key, "gate:{%lld}", (long long)task);
    snprintf(f, sizeof f, "%lld", (long long)(free_slots < 0 ? 0 : free_slots));
    snprintf(v, sizeof v, "%lld", (long long)version);
    snprintf(u, sizeof u, "%lld", (long long)unit);
    snprintf(h, sizeof h, "%lld", (long long)holder);
    const char *argv[] = {key, f, v, GATE_TTL_S, u, h};
    kv_eval(g->kv, script, 1, holder ? 6 : 5, argv, NULL, NULL);
}

void task_gate_set(struct task_gate *g, int64_t task, int64_t unit, int64_t free_slots,
                   int64_t version)
{
    put(g, g->set, task, unit, free_slots, version, 0);
}

void task_gate_won(struct task_gate *g, int64_t task, int64_t unit, int64_t free_slots,
                   int64_t version, int64_t holder)
{
    put(g, g->won, task, unit, free_slots, version, holder);
}

static void set_one(struct task_gate *g, json_t *o)
{
    json_t *t = json_object_get(o, "task_id");
    json_t *u = json_object_get(o, "unit_id");
    json_t *f = json_object_get(o, "free_slots");
    json_t *v = json_object_get(o, "slots_version");
    if (json_is_integer(t) && json_is_integer(u) && json_is_integer(f) && json_is_integer(v))
        task_gate_set(g, json_integer_value(t), json_integer_value(u), json_integer_value(f),
                      json_integer_value(v));
}

void task_gate_set_json(struct task_gate *g, json_t *j)
{
    if (json_is_array(j)) {
        size_t i;
        json_t *o;
        json_array_foreach(j, i, o) set_one(g, o);
    } else {
        set_one(g, j);
    }
}
