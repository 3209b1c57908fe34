/* sweeps.h -- the table of periodic sweeps the janitor runs (sweeps.c). Each is one SQL
 * function returning jsonb; on_result pushes what changed into Redis and returns true when the
 * batch was full (run again at once). */
#ifndef GP_SWEEPS_H
#define GP_SWEEPS_H

#include "common.h"

struct app;
struct config;

struct sweep_def {
    const char *name;
    const char *sql;  /* static; $1 = batch size when takes_batch */
    bool takes_batch;
    int (*interval_ms)(const struct config *cfg);
    bool (*on_result)(struct app *app, const char *json);
};

extern const struct sweep_def sweep_defs[];
extern const size_t sweep_defs_count;

#endif
