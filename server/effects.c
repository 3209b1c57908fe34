/* effects.c -- post-commit cache updates read from SQL responses. */
#include "effects.h"
#include "app.h"
#include "ledger.h"
#include "log.h"
#include "task_gate.h"

#include <stdlib.h>

static void apply_award(struct app *app, json_t *award)
{
    if (!json_is_object(award))
        return;
    char *text = json_dumps(award, JSON_COMPACT);
    if (!text)
        return;
    if (ledger_cache_apply_award(app->ledger, text) < 0)
        log_warn("award without the fields the cache needs: not cached");
    free(text);
}

static void apply_gate(struct app *app, json_t *g)
{
    json_t *t = json_object_get(g, "task_id"), *u = json_object_get(g, "unit_id"),
           *f = json_object_get(g, "free_slots"), *ver = json_object_get(g, "slots_version");
    /* Without the task's unit the gate could not check a caller's scope (task_gate.h). */
    if (json_is_integer(t) && json_is_integer(u) && json_is_integer(f) && json_is_integer(ver))
        task_gate_set(app->gate, json_integer_value(t), json_integer_value(u),
                      json_integer_value(f), json_integer_value(ver));
}

void effects_apply(struct app *app, json_t *body)
{
    if (!json_is_object(body))
        return;
    json_t *v, *e;
    size_t i;
    if ((v = json_object_get(body, "gate")) && json_is_object(v))
        apply_gate(app, v);
    if ((v = json_object_get(body, "slots")) && json_is_array(v)) {
        json_array_foreach(v, i, e) apply_gate(app, e);
    }
    /* A worker's state at the top level (an adjustment's receipt, a balance read). */
    if (json_is_integer(json_object_get(body, "worker_id")) &&
        json_is_integer(json_object_get(body, "version")) &&
        json_is_integer(json_object_get(body, "available")))
        ledger_cache_put(app->ledger, json_integer_value(json_object_get(body, "worker_id")),
                         json_integer_value(json_object_get(body, "available")),
                         json_integer_value(json_object_get(body, "pending")),
                         json_integer_value(json_object_get(body, "version")));
    if ((v = json_object_get(body, "award")))
        apply_award(app, v);
    if ((v = json_object_get(body, "awards")) && json_is_array(v)) {
        json_array_foreach(v, i, e) apply_award(app, e);
    }
    if (((v = json_object_get(body, "balances")) && json_is_array(v)) ||
        ((v = json_object_get(body, "touched")) && json_is_array(v))) {
        json_array_foreach(v, i, e)
        {
            json_t *w = json_object_get(e, "worker_id"), *a = json_object_get(e, "available"),
                   *p = json_object_get(e, "pending"), *ver = json_object_get(e, "version");
            if (json_is_integer(w) && json_is_integer(a) && json_is_integer(ver))
                ledger_cache_put(app->ledger, json_integer_value(w), json_integer_value(a),
                                 json_is_integer(p) ? json_integer_value(p) : 0,
                                 json_integer_value(ver));
        }
    }
}
