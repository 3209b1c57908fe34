/* task_gate.h -- a counter in Redis that turns claim-storm losers away before they reach
 * PostgreSQL.
 *
 * PostgreSQL decides every claim (a conditional UPDATE on the task row plus a unique index);
 * this gate only filters. Key "gate:{<task>}" holds {free, v}: the task's free slots as of
 * the task row version v. A claim takes one unit from `free` before going to PostgreSQL and is
 * refused with task_full when none is left. Every answer from PostgreSQL about the task
 * (a refresh after a failed claim, a release, an expiry, a rejection) writes the absolute value
 * back, applied only when its version is not older than the stored one, so the gate converges
 * on the truth:
 *  - it may let through a claim PostgreSQL then refuses (PostgreSQL decides; harmless), and
 *  - once the requests in flight settle, it never refuses one PostgreSQL would accept, because
 *    the last write is PostgreSQL's own count at the newest version.
 * When Redis is down, or the gate is unknown (evicted, flushed), claims go straight to
 * PostgreSQL (fail open: exactness never depended on Redis).
 *
 * Scope before the fast path: the gate must never tell a caller anything about a task they may
 * not see (a worker of another street must get task_not_found, as for an id that does not
 * exist, never task_full). So the gate also holds the task's unit "u", and it answers only for
 * a caller whose area (the ids of their home unit and its ancestors, from the session
 * principal) contains that unit: exactly the workers the task reaches (gp_task_in_area). For
 * anyone else, or when the gate has no unit yet, it answers TASK_GATE_UNKNOWN and PostgreSQL
 * decides, with its own scope check; storm losers are workers of the task's area, so they are
 * still turned away here. A caller who won a slot is marked in the gate ("h<person>") and is
 * never refused by it either: their retry (an idempotent replay) or their next claim must reach
 * PostgreSQL, which answers with the stored reply or already_claimed. */
#ifndef GP_TASK_GATE_H
#define GP_TASK_GATE_H

#include "common.h"

#include <jansson.h>

struct kv;
struct task_gate;

enum task_gate_answer {
    TASK_GATE_PASS,    /* a unit was taken: go to PostgreSQL */
    TASK_GATE_FULL,    /* no free slot: refuse with task_full */
    TASK_GATE_UNKNOWN, /* no gate, caller not known to be in scope, or Redis unavailable: go
                          to PostgreSQL */
};

typedef void (*task_gate_cb)(enum task_gate_answer answer, void *arg);

struct task_gate *task_gate_new(struct kv *kv);
void task_gate_free(struct task_gate *g);
/* Callback exactly once, never re-entrantly. `area` is the caller's verified area ("1.5.12";
 * NULL or "" matches no unit, so the answer is TASK_GATE_UNKNOWN), `caller` their person id. */
void task_gate_take(struct task_gate *g, int64_t task, const char *area, int64_t caller,
                    task_gate_cb cb, void *arg);
/* Fire-and-forget, after a successful claim by `holder`: marks the holder, and creates the
 * gate with {free, v, unit} when there is none (or it has no unit yet). It never writes its
 * count back over a complete gate: that would hand out again the units that claims still in
 * flight have taken. */
void task_gate_won(struct task_gate *g, int64_t task, int64_t unit, int64_t free_slots,
                   int64_t version, int64_t holder);
/* Fire-and-forget: sets {free, v, unit} unless the stored v is newer. */
void task_gate_set(struct task_gate *g, int64_t task, int64_t unit, int64_t free_slots,
                   int64_t version);
/* Reads {"task_id","unit_id","free_slots","slots_version"} objects (one, or an array of them)
 * and sets each; ignores anything else. */
void task_gate_set_json(struct task_gate *g, json_t *j);

#endif
