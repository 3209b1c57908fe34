/* effects.h -- what must reach Redis after a committed change: PostgreSQL answers with the new
 * state, and these functions push it into the caches (claim gates, balances, rankings).
 *
 * All are fire-and-forget and guarded by versions inside Redis, so applying the same effect
 * twice, or an old one late, never makes a cache go backwards; the reconciler repairs what a
 * crash between commit and push left behind. */
#ifndef GP_EFFECTS_H
#define GP_EFFECTS_H

#include <jansson.h>

struct app;

/* Looks at a response body from our SQL functions and applies what it finds:
 *   "gate": {task_id, unit_id, free_slots, slots_version} -> claim gate
 *   "slots": [gate, ...]                                   -> claim gates
 *   "award": {worker_id, balance, version, ...}     -> balance cache and rankings
 *   "awards": [award, ...]                          -> likewise
 *   {worker_id, available, pending, version} at the top level -> balance cache
 *   "balances" or "touched": [{worker_id, available, pending, version}, ...] -> balance cache
 * Nested one level under "assignment"/"result" is not searched: functions put them on top. */
void effects_apply(struct app *app, json_t *body);

#endif
