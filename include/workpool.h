/* workpool.h -- a few threads for CPU-heavy work (password hashing) so that the event loop
 * never stalls on it.
 *
 * A job's `work` runs on a pool thread and must touch nothing but its own argument; its `done`
 * runs afterwards on the event loop thread. `done` fires exactly once per submitted job,
 * including at workpool_free (after `work` ran, or with cancelled = true if it never started). */
#ifndef GP_WORKPOOL_H
#define GP_WORKPOOL_H

#include "common.h"

struct event_base;
struct workpool;

typedef void (*workpool_work_fn)(void *arg);
typedef void (*workpool_done_fn)(void *arg, bool cancelled);

struct workpool *workpool_new(struct event_base *base, int threads);
/* Cancels jobs not started (their done fires with cancelled = true), waits for running ones,
 * delivers their done, joins the threads and frees. */
void workpool_free(struct workpool *wp);
void workpool_submit(struct workpool *wp, workpool_work_fn work, workpool_done_fn done, void *arg);
/* Jobs queued or running, for /metrics. */
int workpool_pending(struct workpool *wp);

#endif
