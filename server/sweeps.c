/* sweeps.c -- the periodic sweeps and what each does with its result. */
#include "sweeps.h"
#include "app.h"
#include "config.h"
#include "log.h"
#include "metrics.h"

#include <jansson.h>

static int every_minute(const struct config *cfg)
{
    return 60000;
}

static bool idem_pruned(struct app *app, const char *text)
{
    json_t *j = json_loads(text, 0, NULL);
    if (!j)
        return false;
    bool full = json_is_true(json_object_get(j, "full"));
    json_int_t n = json_integer_value(json_object_get(j, "pruned"));
    if (n > 0) {
        metrics_count(app->metrics, "idempotency_keys_pruned", (uint64_t)n);
        log_info("pruned %lld expired idempotency records", (long long)n);
    }
    json_decref(j);
    return full;
}

const struct sweep_def sweep_defs[] = {
    {"idempotency_prune", "SELECT gp_idem_prune($1)", true, every_minute, idem_pruned},
};
const size_t sweep_defs_count = sizeof sweep_defs / sizeof sweep_defs[0];
