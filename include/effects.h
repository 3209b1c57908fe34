/* effects.h -- what must reach Redis after a committed change. A SQL function whose commit
 * changes cached state returns it separately from its reply body (sql/functions/00_helpers.sql,
 * gp_reply; docs/CONVENTIONS.md, "Effects"), and this is the one place that applies it: the
 * handlers (api_write), the claim path and the janitor's sweeps all come here. The body is
 * never looked at.
 *
 * All are fire-and-forget and guarded by versions inside Redis, so applying the same effect
 * twice, or an old one late, never makes a cache go backwards; the reconciler repairs what a
 * crash between commit and push left behind. */
#ifndef GP_EFFECTS_H
#define GP_EFFECTS_H

#include <jansson.h>

struct app;

/* Applies an effects object (borrowed; NULL or anything but an object does nothing):
 *   "balances": [{worker_id, available, pending, version}, ...] -> balance cache
 *   "awards": [{worker_id, available, pending, version, earned_month, earned_total,
 *               rank_units, period}, ...]                        -> balance cache and rankings
 *   "gates": [{task_id, unit_id, free_slots, slots_version}, ...] -> claim gates
 *   "gate_won": {task_id, unit_id, free_slots, slots_version, worker_id} -> the gate of a
 *               claim PostgreSQL granted (task_gate_won)
 *   "forget_keys": [key_id, ...]                                  -> merchant key cache
 *   "drop_sessions": [token hash hex, ...]                        -> session cache
 * Members of the wrong type are skipped with a warning. */
void effects_apply(struct app *app, json_t *effects);
/* effects_apply on the effects column's text (parsed here, once); NULL does nothing. */
void effects_apply_text(struct app *app, const char *text);

#endif
