/* sweeps.h -- the table of periodic sweeps the janitor runs (sweeps.c). Each is one SQL
 * function returning jsonb (read with db_result_json); on_result pushes what changed into Redis and
 * returns the cursor to continue from at once (a full batch, or the next page of a paged sweep), or
 * 0 to wait for the next interval. */
#ifndef GP_SWEEPS_H
#define GP_SWEEPS_H

#include "common.h"

#include <jansson.h>

struct app;
struct config;

struct sweep_def {
    const char *name;
    const char *sql; /* static; $1 = batch size, $2 = cursor (NULL on a fresh round) */
    int nparams;     /* 0, 1 or 2 */
    int (*interval_ms)(const struct config *cfg);
    int64_t (*on_result)(struct app *app, json_t *reply); /* parsed by the janitor; borrowed */
    /* Optional: when set, $2 is this text (settings the SQL needs) instead of the cursor. */
    void (*args)(const struct config *cfg, char *buf, size_t len);
};

extern const struct sweep_def sweep_defs[];
extern const size_t sweep_defs_count;

#endif
