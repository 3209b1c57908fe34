/* effects.c -- post-commit cache updates, read from the effects a SQL function returned. */
#include "effects.h"
#include "app.h"
#include "auth.h"
#include "ledger.h"
#include "log.h"
#include "merchant_auth.h"
#include "task_gate.h"

#include <stdlib.h>

static void apply_award(struct app *app, json_t *award)
{
    char *text = json_is_object(award) ? json_dumps(award, JSON_COMPACT) : NULL;
    if (!text || ledger_cache_apply_award(app->ledger, text) < 0)
        log_warn("effects: an award without the fields the cache needs: not cached");
    free(text);
}

static void apply_balance(struct app *app, json_t *b)
{
    json_t *w = json_object_get(b, "worker_id"), *a = json_object_get(b, "available"),
           *p = json_object_get(b, "pending"), *ver = json_object_get(b, "version");
    if (!json_is_integer(w) || !json_is_integer(a) || !json_is_integer(ver)) {
        log_warn("effects: a balance without worker_id, available and version: not cached");
        return;
    }
    ledger_cache_put(app->ledger, json_integer_value(w), json_integer_value(a),
                     json_is_integer(p) ? json_integer_value(p) : 0, json_integer_value(ver));
}

/* The four integers of a gate; false when one is missing. */
static bool gate_fields(json_t *g, json_int_t out[4])
{
    static const char *const names[] = {"task_id", "unit_id", "free_slots", "slots_version"};
    for (int i = 0; i < 4; i++) {
        json_t *v = json_object_get(g, names[i]);
        if (!json_is_integer(v))
            return false;
        out[i] = json_integer_value(v);
    }
    return true;
}

static void apply_gate(struct app *app, json_t *g)
{
    json_int_t f[4];
    /* Without the task's unit the gate could not check a caller's scope (task_gate.h). */
    if (!gate_fields(g, f)) {
        log_warn("effects: a gate without task_id, unit_id, free_slots and slots_version");
        return;
    }
    task_gate_set(app->gate, f[0], f[1], f[2], f[3]);
}

/* A claim PostgreSQL granted: task_gate_won writes the count only to a gate that has no unit
 * yet, so an idempotent replay's older count cannot overwrite the stored one. */
static void apply_gate_won(struct app *app, json_t *g)
{
    json_int_t f[4];
    json_t *w = json_object_get(g, "worker_id");
    if (!gate_fields(g, f) || !json_is_integer(w)) {
        log_warn("effects: a won gate without its fields or worker_id");
        return;
    }
    task_gate_won(app->gate, f[0], f[1], f[2], f[3], json_integer_value(w));
}

static void forget_key(struct app *app, json_t *k)
{
    if (json_is_string(k))
        merchant_auth_forget_key(app, json_string_value(k));
}

static void drop_session(struct app *app, json_t *h)
{
    if (json_is_string(h))
        auth_session_forget_hash(app, json_string_value(h));
}

/* Each element of the array effects[name] through fn. */
static void each(struct app *app, json_t *effects, const char *name,
                 void (*fn)(struct app *, json_t *))
{
    json_t *list = json_object_get(effects, name), *e;
    size_t i;
    if (!list)
        return;
    if (!json_is_array(list)) {
        log_warn("effects: \"%s\" is not an array", name);
        return;
    }
    json_array_foreach(list, i, e) fn(app, e);
}

void effects_apply(struct app *app, json_t *effects)
{
    if (!json_is_object(effects))
        return;
    each(app, effects, "gates", apply_gate);
    each(app, effects, "balances", apply_balance);
    each(app, effects, "awards", apply_award);
    each(app, effects, "forget_keys", forget_key);
    each(app, effects, "drop_sessions", drop_session);
    json_t *won = json_object_get(effects, "gate_won");
    if (won)
        apply_gate_won(app, won);
}

void effects_apply_text(struct app *app, const char *text)
{
    if (!text)
        return;
    json_error_t err;
    json_t *effects = json_loads(text, 0, &err);
    if (!effects)
        log_warn("effects: not JSON: %s", err.text);
    effects_apply(app, effects);
    json_decref(effects);
}
