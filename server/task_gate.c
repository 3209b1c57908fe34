/* task_gate.c -- the Redis claim gate (see task_gate.h for why it is safe). */
#include "task_gate.h"
#include "kv.h"
#include "log.h"

#include <hiredis/hiredis.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>

/* The gate lives an hour after its last write: a task nobody claims for an hour does not need
 * a storm filter, and the next claim recreates it from PostgreSQL's answer. */
#define GATE_TTL_S "3600"

/* KEYS[1] gate. Returns 1 (taken), 0 (full), -1 (unknown). */
static const char take_lua[] = "local f = redis.call('HGET', KEYS[1], 'f')\n"
                               "if not f then return -1 end\n"
                               "if tonumber(f) <= 0 then return 0 end\n"
                               "redis.call('HINCRBY', KEYS[1], 'f', -1)\n"
                               "return 1\n";

/* KEYS[1] gate, ARGV free, version, ttl. An equal version is PostgreSQL's count for that very
 * row state, so it may overwrite decrements taken by requests since: they will each write
 * their own answer back. */
static const char set_lua[] = "local v = redis.call('HGET', KEYS[1], 'v')\n"
                              "if v and tonumber(v) > tonumber(ARGV[2]) then return 0 end\n"
                              "redis.call('HSET', KEYS[1], 'f', ARGV[1], 'v', ARGV[2])\n"
                              "redis.call('EXPIRE', KEYS[1], ARGV[3])\n"
                              "return 1\n";

/* KEYS[1] gate, ARGV free, version, ttl: only when the gate does not exist. */
static const char seed_lua[] = "if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end\n"
                               "redis.call('HSET', KEYS[1], 'f', ARGV[1], 'v', ARGV[2])\n"
                               "redis.call('EXPIRE', KEYS[1], ARGV[3])\n"
                               "return 1\n";

struct task_gate {
    struct kv *kv;
    struct kv_script *take, *set, *seed;
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
    g->seed = kv_script_new(kv, seed_lua);
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

void task_gate_take(struct task_gate *g, int64_t task, task_gate_cb cb, void *arg)
{
    char key[48];
    snprintf(key, sizeof key, "gate:{%lld}", (long long)task);
    struct take_req *t = xmalloc(sizeof *t);
    t->cb = cb;
    t->arg = arg;
    const char *argv[] = {key};
    kv_eval(g->kv, g->take, 1, 1, argv, take_cb, t);
}

static void put(struct task_gate *g, const struct kv_script *script, int64_t task,
                int64_t free_slots, int64_t version)
{
    char key[48], f[24], v[24];
    snprintf(key, sizeof key, "gate:{%lld}", (long long)task);
    snprintf(f, sizeof f, "%lld", (long long)(free_slots < 0 ? 0 : free_slots));
    snprintf(v, sizeof v, "%lld", (long long)version);
    const char *argv[] = {key, f, v, GATE_TTL_S};
    kv_eval(g->kv, script, 1, 4, argv, NULL, NULL);
}

void task_gate_set(struct task_gate *g, int64_t task, int64_t free_slots, int64_t version)
{
    put(g, g->set, task, free_slots, version);
}

void task_gate_seed(struct task_gate *g, int64_t task, int64_t free_slots, int64_t version)
{
    put(g, g->seed, task, free_slots, version);
}

static void set_one(struct task_gate *g, json_t *o)
{
    json_t *t = json_object_get(o, "task_id");
    json_t *f = json_object_get(o, "free_slots");
    json_t *v = json_object_get(o, "slots_version");
    if (json_is_integer(t) && json_is_integer(f) && json_is_integer(v))
        task_gate_set(g, json_integer_value(t), json_integer_value(f), json_integer_value(v));
}

void task_gate_set_json(struct task_gate *g, const char *json_text)
{
    json_t *j = json_loads(json_text, 0, NULL);
    if (!j)
        return;
    if (json_is_array(j)) {
        size_t i;
        json_t *o;
        json_array_foreach(j, i, o) set_one(g, o);
    } else {
        set_one(g, j);
    }
    json_decref(j);
}
